//! Scheduled lives and their "Remind me" subscribers (issue #14).

use super::{Store, db};
use crate::error::AppError;
use sqlx::Row;
use sqlx::any::AnyRow;

/// A live announced ahead.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleRow {
    pub id: String,
    pub room: String,
    pub title: String,
    pub description: String,
    /// Unix milliseconds.
    pub starts_at: i64,
    pub profile: Option<String>,
    /// `scheduled`, `starting`, `live`, `ended` or `cancelled`.
    pub state: String,
    pub live_id: Option<String>,
    /// The banner's version when one was uploaded (its URL names it).
    pub banner_version: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str =
    "id, room, title, description, starts_at, profile, state, live_id, banner_type, banner_version, created_by, created_at, updated_at";

fn schedule(r: &AnyRow) -> ScheduleRow {
    let banner: Option<String> = r.get("banner_type");
    ScheduleRow {
        id: r.get("id"),
        room: r.get("room"),
        title: r.get("title"),
        description: r.get("description"),
        starts_at: r.get("starts_at"),
        profile: r.get("profile"),
        state: r.get("state"),
        live_id: r.get("live_id"),
        banner_version: banner.map(|_| r.get("banner_version")),
        created_by: r.get("created_by"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

/// Reminders that are due: which schedule, and which reminder.
#[derive(Clone, Debug, PartialEq)]
pub struct DueReminder {
    pub schedule: ScheduleRow,
    /// `soon` (`schedule.reminder_minutes` before) or `now` (at the start).
    pub when: &'static str,
}

/// Upcoming lives: not started, not cancelled.
pub const UPCOMING: [&str; 2] = ["scheduled", "starting"];

impl Store {
    pub async fn add_schedule(&self, s: &ScheduleRow) -> Result<(), AppError> {
        sqlx::query(
            "INSERT INTO scheduled_lives (id, room, title, description, starts_at, profile, state, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(&s.id)
        .bind(&s.room)
        .bind(&s.title)
        .bind(&s.description)
        .bind(s.starts_at)
        .bind(&s.profile)
        .bind(&s.state)
        .bind(&s.created_by)
        .bind(s.created_at)
        .execute(&self.pool)
        .await
        .map_err(db("could not keep the scheduled live"))?;
        Ok(())
    }

    pub async fn schedule(&self, id: &str) -> Result<Option<ScheduleRow>, AppError> {
        let q = format!("SELECT {COLUMNS} FROM scheduled_lives WHERE id = $1");
        let row = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await.map_err(db("could not read scheduled lives"))?;
        Ok(row.as_ref().map(schedule))
    }

    /// Scheduled lives, soonest first: of one room or all, upcoming only or every state.
    pub async fn schedules(&self, room: Option<&str>, upcoming_only: bool, limit: usize) -> Result<Vec<ScheduleRow>, AppError> {
        let q = format!(
            "SELECT {COLUMNS} FROM scheduled_lives WHERE ($1 IS NULL OR room = $1) AND ($2 = 0 OR state IN ('scheduled', 'starting')) ORDER BY starts_at, id LIMIT $3"
        );
        let rows = sqlx::query(&q)
            .bind(room)
            .bind(i64::from(upcoming_only))
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db("could not read scheduled lives"))?;
        Ok(rows.iter().map(schedule).collect())
    }

    /// How many upcoming lives `room` has.
    pub async fn upcoming_count(&self, room: &str) -> Result<i64, AppError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM scheduled_lives WHERE room = $1 AND state IN ('scheduled', 'starting')")
            .bind(room)
            .fetch_one(&self.pool)
            .await
            .map_err(db("could not read scheduled lives"))
    }

    /// Change what a host may change while the live is upcoming. A new start time re-arms the
    /// reminders. False when it is no longer upcoming.
    pub async fn update_schedule(&self, s: &ScheduleRow, time_changed: bool, now: i64) -> Result<bool, AppError> {
        let done = sqlx::query(
            "UPDATE scheduled_lives SET title = $1, description = $2, starts_at = $3, profile = $4, updated_at = $5, reminded_early = (reminded_early AND $6 = 0), reminded_start = (reminded_start AND $6 = 0) WHERE id = $7 AND state IN ('scheduled', 'starting')",
        )
        .bind(&s.title)
        .bind(&s.description)
        .bind(s.starts_at)
        .bind(&s.profile)
        .bind(now)
        .bind(i64::from(time_changed))
        .bind(&s.id)
        .execute(&self.pool)
        .await
        .map_err(db("could not update the scheduled live"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Move an upcoming live to `state` (`starting`, `cancelled`). False when it was not upcoming.
    pub async fn set_schedule_state(&self, id: &str, state: &str, now: i64) -> Result<bool, AppError> {
        let done =
            sqlx::query("UPDATE scheduled_lives SET state = $1, updated_at = $2 WHERE id = $3 AND state IN ('scheduled', 'starting')")
                .bind(state)
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(db("could not update the scheduled live"))?;
        Ok(done.rows_affected() == 1)
    }

    /// The room's live `live_id` went on air: the scheduled live it is — one the host started
    /// (`starting`), else the soonest upcoming one whose start is within [`early`, `late`] of
    /// `now` — becomes `live` with it.
    pub async fn link_schedule(
        &self,
        room: &str,
        live_id: &str,
        now: i64,
        early_ms: i64,
        late_ms: i64,
    ) -> Result<Option<ScheduleRow>, AppError> {
        let e = "could not link the scheduled live";
        let q = format!(
            "SELECT {COLUMNS} FROM scheduled_lives WHERE room = $1 AND (state = 'starting' OR (state = 'scheduled' AND starts_at <= $2 AND starts_at >= $3)) ORDER BY (state = 'starting') DESC, starts_at LIMIT 1"
        );
        let Some(row) =
            sqlx::query(&q).bind(room).bind(now + early_ms).bind(now - late_ms).fetch_optional(&self.pool).await.map_err(db(e))?
        else {
            return Ok(None);
        };
        let mut s = schedule(&row);
        let done = sqlx::query(
            "UPDATE scheduled_lives SET state = 'live', live_id = $1, updated_at = $2 WHERE id = $3 AND state IN ('scheduled', 'starting')",
        )
        .bind(live_id)
        .bind(now)
        .bind(&s.id)
        .execute(&self.pool)
        .await
        .map_err(db(e))?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        s.state = "live".into();
        s.live_id = Some(live_id.to_owned());
        Ok(Some(s))
    }

    /// The scheduled live that `live_id` was, which ended now.
    pub async fn end_schedule(&self, live_id: &str, now: i64) -> Result<Option<ScheduleRow>, AppError> {
        let q = format!("SELECT {COLUMNS} FROM scheduled_lives WHERE live_id = $1 AND state = 'live'");
        let Some(row) = sqlx::query(&q).bind(live_id).fetch_optional(&self.pool).await.map_err(db("could not read scheduled lives"))?
        else {
            return Ok(None);
        };
        sqlx::query("UPDATE scheduled_lives SET state = 'ended', updated_at = $1 WHERE live_id = $2 AND state = 'live'")
            .bind(now)
            .bind(live_id)
            .execute(&self.pool)
            .await
            .map_err(db("could not end the scheduled live"))?;
        let mut s = schedule(&row);
        s.state = "ended".into();
        Ok(Some(s))
    }

    /// Keep a banner; returns its new version.
    pub async fn set_banner(&self, id: &str, content_type: &str, bytes: &[u8], now: i64) -> Result<i64, AppError> {
        sqlx::query(
            "UPDATE scheduled_lives SET banner = $1, banner_type = $2, banner_version = banner_version + 1, updated_at = $3 WHERE id = $4",
        )
        .bind(bytes)
        .bind(content_type)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db("could not keep the banner"))?;
        sqlx::query_scalar("SELECT banner_version FROM scheduled_lives WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(db("could not keep the banner"))
    }

    pub async fn banner(&self, id: &str) -> Result<Option<(String, Vec<u8>)>, AppError> {
        let row = sqlx::query("SELECT banner_type, banner FROM scheduled_lives WHERE id = $1 AND banner IS NOT NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("could not read the banner"))?;
        Ok(row.map(|r| (r.get("banner_type"), r.get("banner"))))
    }

    /// "Remind me": true when `identity` was not subscribed yet.
    pub async fn add_reminder(&self, id: &str, identity: &str, now: i64) -> Result<bool, AppError> {
        let done =
            sqlx::query("INSERT INTO schedule_reminders (schedule_id, identity, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(id)
                .bind(identity)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(db("could not keep the reminder"))?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn remove_reminder(&self, id: &str, identity: &str) -> Result<bool, AppError> {
        let done = sqlx::query("DELETE FROM schedule_reminders WHERE schedule_id = $1 AND identity = $2")
            .bind(id)
            .bind(identity)
            .execute(&self.pool)
            .await
            .map_err(db("could not remove the reminder"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Who asked to be reminded, in the order they asked.
    pub async fn reminders(&self, id: &str) -> Result<Vec<String>, AppError> {
        sqlx::query_scalar("SELECT identity FROM schedule_reminders WHERE schedule_id = $1 ORDER BY created_at, identity")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(db("could not read reminders"))
    }

    pub async fn reminded(&self, id: &str, identity: &str) -> Result<bool, AppError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schedule_reminders WHERE schedule_id = $1 AND identity = $2")
            .bind(id)
            .bind(identity)
            .fetch_one(&self.pool)
            .await
            .map_err(db("could not read reminders"))?;
        Ok(n > 0)
    }

    /// Reminders due at `now` (each marked sent as it is returned): `soon` when the start is
    /// within `early_ms` — skipped when the start itself has passed —, then `now` at the start.
    pub async fn due_reminders(&self, now: i64, early_ms: i64) -> Result<Vec<DueReminder>, AppError> {
        let e = "could not read due reminders";
        let q = format!(
            "SELECT {COLUMNS} FROM scheduled_lives WHERE state IN ('scheduled', 'starting') AND ((reminded_early = FALSE AND starts_at <= $1) OR (reminded_start = FALSE AND starts_at <= $2)) ORDER BY starts_at LIMIT 100"
        );
        let rows = sqlx::query(&q).bind(now + early_ms).bind(now).fetch_all(&self.pool).await.map_err(db(e))?;
        let mut due = Vec::new();
        for r in &rows {
            let s = schedule(r);
            let started = s.starts_at <= now;
            let when = if started { "now" } else { "soon" };
            // Reaching the start marks both: a live scheduled 5 minutes ahead gets one reminder
            // per threshold, never a "soon" after its start.
            let q = if started {
                "UPDATE scheduled_lives SET reminded_early = TRUE, reminded_start = TRUE WHERE id = $1 AND reminded_start = FALSE"
            } else {
                "UPDATE scheduled_lives SET reminded_early = TRUE WHERE id = $1 AND reminded_early = FALSE"
            };
            let done = sqlx::query(q).bind(&s.id).execute(&self.pool).await.map_err(db(e))?;
            if done.rows_affected() == 1 {
                due.push(DueReminder { schedule: s, when });
            }
        }
        Ok(due)
    }
}
