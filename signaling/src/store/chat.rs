//! The live room's conversation in the store: lives, comments, reaction totals, each identity's
//! moderation state, reports and the audit log. The running room keeps its working copy in
//! memory ([`LiveState`], loaded when the room opens); every change is written here first.

use super::{Store, db, unix_ms};
use crate::error::AppError;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::{BTreeMap, HashMap};

/// Who may see a comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Everyone.
    Public,
    /// Its author was restricted (shadow): the author only.
    Restricted,
    /// It matched a blocked word: the author only, who is not told.
    Blocked,
}

impl Visibility {
    fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Restricted => "restricted",
            Visibility::Blocked => "blocked",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "public" => Visibility::Public,
            "restricted" => Visibility::Restricted,
            _ => Visibility::Blocked,
        }
    }
}

/// A stored comment.
#[derive(Clone, Debug, PartialEq)]
pub struct CommentRow {
    pub id: i64,
    pub identity: String,
    pub name: String,
    /// The author's role when they wrote it (wire form: `host`, `cohost`, ...).
    pub role: String,
    pub body: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub visibility: Visibility,
}

/// One identity's moderation state in one live.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberFlags {
    /// `Some(true)`: appointed moderator; `Some(false)`: a moderator token no longer moderates;
    /// `None`: as the token says.
    pub moderator: Option<bool>,
    pub banned: bool,
    pub restricted: bool,
    /// Unix milliseconds until which the identity may not comment.
    pub timeout_until: Option<i64>,
}

/// One change to an identity's moderation state.
#[derive(Clone, Copy, Debug)]
pub enum Flag {
    Moderator(Option<bool>),
    Banned(bool),
    Restricted(bool),
    Timeout(Option<i64>),
}

impl MemberFlags {
    pub fn apply(&mut self, flag: Flag) {
        match flag {
            Flag::Moderator(m) => self.moderator = m,
            Flag::Banned(b) => self.banned = b,
            Flag::Restricted(r) => self.restricted = r,
            Flag::Timeout(t) => self.timeout_until = t,
        }
    }
}

/// A viewer's report of a comment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportRow {
    pub id: i64,
    pub comment: i64,
    pub reporter: String,
    pub reason: String,
    pub at: i64,
}

/// One line of the audit log: who did what to whom, when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    pub at: i64,
}

/// A live as a room opens it: its settings and the working copy of its conversation.
#[derive(Clone, Debug)]
pub struct LiveState {
    pub id: String,
    pub comments_enabled: bool,
    pub slow_mode_secs: u32,
    /// `None`: the server's default list.
    pub blocked_words: Option<Vec<String>>,
    pub members: HashMap<String, MemberFlags>,
    /// The last comments not deleted, oldest first.
    pub recent: Vec<CommentRow>,
    pub reactions: BTreeMap<String, u64>,
    pub open_reports: Vec<ReportRow>,
}

impl LiveState {
    /// A live that just began: comments on, no slow mode, the default words, nothing said yet.
    pub fn fresh(id: String) -> Self {
        Self {
            id,
            comments_enabled: true,
            slow_mode_secs: 0,
            blocked_words: None,
            members: HashMap::new(),
            recent: Vec::new(),
            reactions: BTreeMap::new(),
            open_reports: Vec::new(),
        }
    }
}

fn comment(row: &AnyRow) -> CommentRow {
    CommentRow {
        id: row.get("id"),
        identity: row.get("identity"),
        name: row.get("name"),
        role: row.get("role"),
        body: row.get("body"),
        created_at: row.get("created_at"),
        visibility: Visibility::parse(row.get("visibility")),
    }
}

fn report(row: &AnyRow) -> ReportRow {
    ReportRow {
        id: row.get("id"),
        comment: row.get("comment_id"),
        reporter: row.get("reporter"),
        reason: row.get("reason"),
        at: row.get("created_at"),
    }
}

const COMMENT_COLUMNS: &str = "id, identity, name, role, body, created_at, visibility";

impl Store {
    /// The live of `room` that has not ended (after a restart: the same live, with its bans and
    /// comments), or a new one.
    pub async fn open_live(&self, room: &str, history: usize) -> Result<LiveState, AppError> {
        let e = "could not open the live";
        let row = sqlx::query("SELECT id, CAST(comments_enabled AS INTEGER) AS comments_enabled, slow_mode_secs, blocked_words FROM lives WHERE room = $1 AND ended_at IS NULL ORDER BY created_at DESC LIMIT 1")
            .bind(room)
            .fetch_optional(&self.pool)
            .await
            .map_err(db(e))?;
        let Some(row) = row else {
            let id = format!("{:x}", self.next_id());
            sqlx::query("INSERT INTO lives (id, room, created_at) VALUES ($1, $2, $3)")
                .bind(&id)
                .bind(room)
                .bind(unix_ms())
                .execute(&self.pool)
                .await
                .map_err(db(e))?;
            return Ok(LiveState::fresh(id));
        };
        let id: String = row.get("id");
        let blocked_words = row
            .get::<Option<String>, _>("blocked_words")
            .map(|w| {
                serde_json::from_str::<Vec<String>>(&w).map_err(|err| AppError::internal(e, format!("live {id}: blocked words: {err}")))
            })
            .transpose()?;
        let members = sqlx::query("SELECT identity, moderator, CAST(banned AS INTEGER) AS banned, CAST(restricted AS INTEGER) AS restricted, timeout_until FROM members WHERE live_id = $1")
            .bind(&id)
            .fetch_all(&self.pool)
            .await
            .map_err(db(e))?
            .iter()
            .map(|r| {
                let moderator = r.get::<Option<String>, _>("moderator").map(|m| m == "granted");
                let flags = MemberFlags {
                    moderator,
                    banned: r.get::<i64, _>("banned") != 0,
                    restricted: r.get::<i64, _>("restricted") != 0,
                    timeout_until: r.get("timeout_until"),
                };
                (r.get::<String, _>("identity"), flags)
            })
            .collect();
        let mut recent: Vec<CommentRow> = sqlx::query(&format!(
            "SELECT {COMMENT_COLUMNS} FROM comments WHERE live_id = $1 AND deleted_at IS NULL ORDER BY id DESC LIMIT $2"
        ))
        .bind(&id)
        .bind(history as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db(e))?
        .iter()
        .map(comment)
        .collect();
        recent.reverse();
        let reactions = sqlx::query("SELECT emoji, total FROM reactions WHERE live_id = $1")
            .bind(&id)
            .fetch_all(&self.pool)
            .await
            .map_err(db(e))?
            .iter()
            .map(|r| (r.get::<String, _>("emoji"), r.get::<i64, _>("total") as u64))
            .collect();
        let open_reports = self.open_reports(&id).await?;
        Ok(LiveState {
            id,
            comments_enabled: row.get::<i64, _>("comments_enabled") != 0,
            slow_mode_secs: row.get::<i64, _>("slow_mode_secs") as u32,
            blocked_words,
            members,
            recent,
            reactions,
            open_reports,
        })
    }

    /// The live ended: a room of that name opens a new one next time.
    pub async fn end_live(&self, live: &str) -> Result<(), AppError> {
        sqlx::query("UPDATE lives SET ended_at = $1 WHERE id = $2 AND ended_at IS NULL")
            .bind(unix_ms())
            .bind(live)
            .execute(&self.pool)
            .await
            .map_err(db("could not end the live"))?;
        Ok(())
    }

    pub async fn add_comment(&self, live: &str, c: &CommentRow) -> Result<(), AppError> {
        sqlx::query("INSERT INTO comments (id, live_id, identity, name, role, body, created_at, visibility) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(c.id)
            .bind(live)
            .bind(&c.identity)
            .bind(&c.name)
            .bind(&c.role)
            .bind(&c.body)
            .bind(c.created_at)
            .bind(c.visibility.as_str())
            .execute(&self.pool)
            .await
            .map_err(db("could not store the comment"))?;
        Ok(())
    }

    /// A comment of `live`, deleted or not, with whether it was deleted.
    pub async fn comment(&self, live: &str, id: i64) -> Result<Option<(CommentRow, bool)>, AppError> {
        let row = sqlx::query(&format!("SELECT {COMMENT_COLUMNS}, deleted_at FROM comments WHERE live_id = $1 AND id = $2"))
            .bind(live)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("could not read the comment"))?;
        Ok(row.map(|r| (comment(&r), r.get::<Option<i64>, _>("deleted_at").is_some())))
    }

    /// Mark a comment deleted (it stays for the audit log); its open reports are resolved.
    pub async fn delete_comment(&self, live: &str, id: i64, by: &str) -> Result<bool, AppError> {
        let e = "could not delete the comment";
        let now = unix_ms();
        let done =
            sqlx::query("UPDATE comments SET deleted_at = $1, deleted_by = $2 WHERE live_id = $3 AND id = $4 AND deleted_at IS NULL")
                .bind(now)
                .bind(by)
                .bind(live)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(db(e))?;
        sqlx::query("UPDATE reports SET resolved_at = $1, resolved_by = $2, resolution = 'deleted' WHERE live_id = $3 AND comment_id = $4 AND resolved_at IS NULL")
            .bind(now)
            .bind(by)
            .bind(live)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db(e))?;
        Ok(done.rows_affected() > 0)
    }

    /// Change one moderation flag of `identity` in `live`.
    pub async fn set_flag(&self, live: &str, identity: &str, flag: Flag) -> Result<(), AppError> {
        let (column, text, boolean, time) = match flag {
            Flag::Moderator(m) => ("moderator", m.map(|g| if g { "granted" } else { "revoked" }), None, None),
            Flag::Banned(b) => ("banned", None, Some(b), None),
            Flag::Restricted(r) => ("restricted", None, Some(r), None),
            Flag::Timeout(t) => ("timeout_until", None, None, t),
        };
        // The column name comes from the match above, never from input.
        let sql = format!(
            "INSERT INTO members (live_id, identity, {column}) VALUES ($1, $2, $3) ON CONFLICT (live_id, identity) DO UPDATE SET {column} = excluded.{column}"
        );
        let q = sqlx::query(&sql).bind(live).bind(identity);
        let q = match flag {
            Flag::Moderator(_) => q.bind(text),
            Flag::Banned(_) | Flag::Restricted(_) => q.bind(boolean.unwrap_or(false)),
            Flag::Timeout(_) => q.bind(time),
        };
        q.execute(&self.pool).await.map_err(db("could not store the moderation change"))?;
        Ok(())
    }

    pub async fn save_chat_settings(
        &self,
        live: &str,
        comments_enabled: bool,
        slow_mode_secs: u32,
        blocked_words: Option<&[String]>,
    ) -> Result<(), AppError> {
        let words = blocked_words.map(|w| serde_json::to_string(w).unwrap_or_else(|_| "[]".into()));
        sqlx::query("UPDATE lives SET comments_enabled = $1, slow_mode_secs = $2, blocked_words = $3 WHERE id = $4")
            .bind(comments_enabled)
            .bind(slow_mode_secs as i64)
            .bind(words)
            .bind(live)
            .execute(&self.pool)
            .await
            .map_err(db("could not store the chat settings"))?;
        Ok(())
    }

    /// Add a window's reactions to the live's totals.
    pub async fn add_reactions(&self, live: &str, counts: &[(String, u64)]) -> Result<(), AppError> {
        let mut tx = self.pool.begin().await.map_err(db("could not store the reactions"))?;
        for (emoji, n) in counts {
            sqlx::query("INSERT INTO reactions (live_id, emoji, total) VALUES ($1, $2, $3) ON CONFLICT (live_id, emoji) DO UPDATE SET total = reactions.total + excluded.total")
                .bind(live)
                .bind(emoji)
                .bind(*n as i64)
                .execute(&mut *tx)
                .await
                .map_err(db("could not store the reactions"))?;
        }
        tx.commit().await.map_err(db("could not store the reactions"))?;
        Ok(())
    }

    pub async fn add_report(&self, live: &str, r: &ReportRow) -> Result<(), AppError> {
        sqlx::query("INSERT INTO reports (id, live_id, comment_id, reporter, reason, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(r.id)
            .bind(live)
            .bind(r.comment)
            .bind(&r.reporter)
            .bind(&r.reason)
            .bind(r.at)
            .execute(&self.pool)
            .await
            .map_err(db("could not store the report"))?;
        Ok(())
    }

    /// Close a report (`dismissed`, or `deleted` with its comment). False if it was not open.
    pub async fn resolve_report(&self, live: &str, id: i64, by: &str, resolution: &str) -> Result<bool, AppError> {
        let done = sqlx::query(
            "UPDATE reports SET resolved_at = $1, resolved_by = $2, resolution = $3 WHERE live_id = $4 AND id = $5 AND resolved_at IS NULL",
        )
        .bind(unix_ms())
        .bind(by)
        .bind(resolution)
        .bind(live)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db("could not store the report"))?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn open_reports(&self, live: &str) -> Result<Vec<ReportRow>, AppError> {
        let rows = sqlx::query(
            "SELECT id, comment_id, reporter, reason, created_at FROM reports WHERE live_id = $1 AND resolved_at IS NULL ORDER BY id",
        )
        .bind(live)
        .fetch_all(&self.pool)
        .await
        .map_err(db("could not read the reports"))?;
        Ok(rows.iter().map(report).collect())
    }

    pub async fn audit(&self, live: &str, e: &AuditEntry) -> Result<(), AppError> {
        sqlx::query("INSERT INTO audit_log (id, live_id, actor, action, target, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(e.id)
            .bind(live)
            .bind(&e.actor)
            .bind(&e.action)
            .bind(&e.target)
            .bind(&e.detail)
            .bind(e.at)
            .execute(&self.pool)
            .await
            .map_err(db("could not write the audit log"))?;
        Ok(())
    }

    /// The live's audit log, newest first, at most `limit` lines.
    pub async fn audit_log(&self, live: &str, limit: usize) -> Result<Vec<AuditEntry>, AppError> {
        let rows =
            sqlx::query("SELECT id, actor, action, target, detail, created_at FROM audit_log WHERE live_id = $1 ORDER BY id DESC LIMIT $2")
                .bind(live)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(db("could not read the audit log"))?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                id: r.get("id"),
                actor: r.get("actor"),
                action: r.get("action"),
                target: r.get("target"),
                detail: r.get("detail"),
                at: r.get("created_at"),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// What a live keeps survives closing and reopening the database file: comments (deleted
    /// ones left out of the history), flags, settings, totals, open reports; an ended live
    /// gives way to a new one.
    #[tokio::test]
    async fn a_live_survives_reopening_the_database() {
        let dir = std::env::temp_dir().join(format!("onair-chat-{}", rand::random::<u32>()));
        let mut c = Config::default();
        c.store.url = format!("sqlite:{}", dir.join("onair.db").display());
        c.rtmp.keys_file = String::new();
        let s = Store::open(&c).await.expect("open");
        let live = s.open_live("r", 50).await.expect("live");
        let mk = |s: &Store, body: &str, v| CommentRow {
            id: s.next_id(),
            identity: "v1".into(),
            name: "V".into(),
            role: "viewer".into(),
            body: body.into(),
            created_at: unix_ms(),
            visibility: v,
        };
        let (a, b, hidden) =
            (mk(&s, "first", Visibility::Public), mk(&s, "second", Visibility::Public), mk(&s, "shh", Visibility::Blocked));
        for c in [&a, &b, &hidden] {
            s.add_comment(&live.id, c).await.expect("comment");
        }
        assert!(s.delete_comment(&live.id, a.id, "h").await.expect("delete"));
        assert!(!s.delete_comment(&live.id, a.id, "h").await.expect("delete twice"));
        s.set_flag(&live.id, "bad", Flag::Banned(true)).await.expect("ban");
        s.set_flag(&live.id, "bad", Flag::Timeout(Some(123))).await.expect("timeout");
        s.set_flag(&live.id, "mod", Flag::Moderator(Some(true))).await.expect("mod");
        s.save_chat_settings(&live.id, false, 30, Some(&["spam".to_owned()])).await.expect("settings");
        s.add_reactions(&live.id, &[("❤️".into(), 5)]).await.expect("reactions");
        s.add_reactions(&live.id, &[("❤️".into(), 2), ("🔥".into(), 1)]).await.expect("reactions");
        let r = ReportRow { id: s.next_id(), comment: b.id, reporter: "v2".into(), reason: "spam".into(), at: unix_ms() };
        s.add_report(&live.id, &r).await.expect("report");
        s.close().await;

        let s = Store::open(&c).await.expect("reopen");
        let again = s.open_live("r", 50).await.expect("same live");
        assert_eq!(again.id, live.id);
        assert_eq!(again.recent.iter().map(|c| c.body.as_str()).collect::<Vec<_>>(), ["second", "shh"]);
        assert_eq!(again.recent[1].visibility, Visibility::Blocked);
        assert_eq!(again.members["bad"], MemberFlags { moderator: None, banned: true, restricted: false, timeout_until: Some(123) });
        assert_eq!(again.members["mod"].moderator, Some(true));
        assert_eq!((again.comments_enabled, again.slow_mode_secs, again.blocked_words.clone()), (false, 30, Some(vec!["spam".to_owned()])));
        assert_eq!(again.reactions, BTreeMap::from([("❤️".to_owned(), 7), ("🔥".to_owned(), 1)]));
        assert_eq!(again.open_reports, vec![r.clone()]);
        assert!(s.resolve_report(&live.id, r.id, "h", "dismissed").await.expect("resolve"));
        assert!(s.open_reports(&live.id).await.expect("reports").is_empty());
        s.end_live(&live.id).await.expect("end");
        let next = s.open_live("r", 50).await.expect("next live");
        assert_ne!(next.id, live.id);
        assert!(next.members.is_empty() && next.recent.is_empty());
        s.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
