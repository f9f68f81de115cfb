//! Lives announced ahead (docs/api.md "Scheduled lives"): the rules of a schedule (title,
//! description, a start in the future and at most `schedule.max_days_ahead` away, the profile),
//! what the API and the upcoming page show of one, its calendar file, the reminders fired as
//! webhooks, and the link to the room's live when the host goes on air.

use crate::app::AppState;
use crate::error::{AppError, ErrorCode};
use crate::store::{ScheduleRow, unix_ms};
use serde_json::{Value, json};

pub const MAX_TITLE_CHARS: usize = 120;
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
pub const MAX_DESCRIPTION_LINES: usize = 40;

/// A title: one line, NFC, no control or direction-changing characters.
pub fn clean_title(raw: &str) -> Result<String, AppError> {
    super::chat::text::clean_comment(raw, MAX_TITLE_CHARS)
        .map_err(|e| AppError::new(ErrorCode::BadMessage, format!("title: {}", e.message)))
}

/// A description: lines cleaned as a title is (blank lines kept), at most
/// [`MAX_DESCRIPTION_LINES`] lines and [`MAX_DESCRIPTION_CHARS`] characters.
pub fn clean_description(raw: &str) -> Result<String, AppError> {
    let bad = |m: String| AppError::new(ErrorCode::BadMessage, format!("description: {m}"));
    let raw = raw.replace("\r\n", "\n");
    if raw.split('\n').count() > MAX_DESCRIPTION_LINES {
        return Err(bad(format!("at most {MAX_DESCRIPTION_LINES} lines")));
    }
    let mut lines = Vec::new();
    for line in raw.split('\n') {
        if line.trim().is_empty() {
            lines.push(String::new());
        } else {
            lines.push(super::chat::text::clean_comment(line, MAX_DESCRIPTION_CHARS).map_err(|e| bad(e.message))?);
        }
    }
    let text = lines.join("\n").trim_matches('\n').to_owned();
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(bad(format!("at most {MAX_DESCRIPTION_CHARS} characters")));
    }
    Ok(text)
}

/// A start (unix seconds) must be in the future and at most `max_days` ahead; returns unix ms.
pub fn check_start(starts_at_secs: i64, now_ms: i64, max_days: u32) -> Result<i64, AppError> {
    let at = starts_at_secs.saturating_mul(1000);
    if at <= now_ms {
        return Err(AppError::new(ErrorCode::BadTime, "starts_at is in the past: a live is scheduled ahead"));
    }
    if at > now_ms + max_days as i64 * 86_400_000 {
        return Err(AppError::new(ErrorCode::BadTime, format!("starts_at is more than {max_days} days ahead")));
    }
    Ok(at)
}

/// What anyone sees of a scheduled live (the API, the upcoming page, webhooks).
pub fn view(s: &ScheduleRow) -> Value {
    json!({
        "id": s.id,
        "room": s.room,
        "title": s.title,
        "description": s.description,
        "starts_at": s.starts_at / 1000,
        "starts_at_iso": crate::hooks::rfc3339(s.starts_at),
        "profile": s.profile,
        "state": s.state,
        "live_id": s.live_id,
        "banner_url": s.banner_version.map(|v| format!("/media/schedules/{}/banner?v={v}", s.id)),
        "page_url": format!("/upcoming/{}", s.id),
        "calendar_url": format!("/upcoming/{}/calendar.ics", s.id),
        "created_at": s.created_at / 1000,
        "updated_at": s.updated_at / 1000,
    })
}

/// The schedule with its subscribers, for a webhook that notifies them.
fn with_subscribers(s: &ScheduleRow, subscribers: Vec<String>) -> Value {
    let mut v = view(s);
    v["subscribers"] = json!(subscribers);
    v
}

/// RFC 5545 text: backslash, semicolon, comma and newlines escaped.
fn ics_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace(';', "\\;").replace(',', "\\,").replace('\n', "\\n")
}

/// Fold a content line at 75 octets (RFC 5545 §3.1), never inside a character.
fn fold(line: &str) -> String {
    let mut out = String::new();
    let mut width = 0;
    for c in line.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out.push_str("\r\n");
    out
}

fn ics_time(ms: i64) -> String {
    // 2026-11-27T01:30:00.000Z → 20261127T013000Z
    let iso = crate::hooks::rfc3339(ms);
    format!("{}Z", iso[..19].replace(['-', ':'], ""))
}

/// The live as a calendar event (`.ics`), an hour long unless it ended; `base` is the public
/// origin the page link starts with.
pub fn ics(s: &ScheduleRow, base: &str, now_ms: i64) -> String {
    let mut out =
        String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Onair//Scheduled lives//EN\r\nCALSCALE:GREGORIAN\r\nMETHOD:PUBLISH\r\n");
    out.push_str("BEGIN:VEVENT\r\n");
    let url = format!("{base}/upcoming/{}", s.id);
    for line in [
        format!("UID:{}@onair", s.id),
        format!("DTSTAMP:{}", ics_time(now_ms)),
        format!("DTSTART:{}", ics_time(s.starts_at)),
        format!("DTEND:{}", ics_time(s.starts_at + 3_600_000)),
        format!("SUMMARY:{}", ics_text(&s.title)),
        format!("DESCRIPTION:{}", ics_text(format!("{}\n\n{url}", s.description).trim_start_matches('\n'))),
        format!("URL:{url}"),
        format!("STATUS:{}", if s.state == "cancelled" { "CANCELLED" } else { "CONFIRMED" }),
        format!("SEQUENCE:{}", (s.updated_at - s.created_at).max(0) / 1000),
    ] {
        out.push_str(&fold(&line));
    }
    out.push_str("BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:Live soon\r\nTRIGGER:-PT15M\r\nEND:VALARM\r\n");
    out.push_str("END:VEVENT\r\nEND:VCALENDAR\r\n");
    out
}

/// Fire the reminders that are due (the server's one-second tick): `live_reminder` with who
/// asked to be reminded, `when` = `soon` or `now`.
pub async fn tick(app: &AppState) {
    let early = app.config.schedule.reminder_minutes as i64 * 60_000;
    let due = match app.store.due_reminders(unix_ms(), early).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("scheduled lives: {e}");
            return;
        }
    };
    for d in due {
        let subscribers = app.store.reminders(&d.schedule.id).await.unwrap_or_else(|e| {
            tracing::error!(schedule = %d.schedule.id, "reminders: {e}");
            Vec::new()
        });
        tracing::info!(schedule = %d.schedule.id, when = d.when, subscribers = subscribers.len(), "live reminder");
        let minutes_left = ((d.schedule.starts_at - unix_ms()).max(0) + 59_999) / 60_000;
        let mut data = with_subscribers(&d.schedule, subscribers);
        data["when"] = json!(d.when);
        data["minutes_left"] = json!(minutes_left);
        app.hooks.emit("live_reminder", json!({ "schedule": data }));
    }
}

/// The room's live went on air: link the scheduled live it is — whose profile the live takes
/// unless the host's token named one (`token_named_profile`) —, and tell the platform.
pub async fn on_started(
    app: &AppState,
    room: &str,
    running: &std::sync::Mutex<super::room::Room>,
    live_id: &str,
    profile: &str,
    token_named_profile: bool,
) {
    let mut profile = profile.to_owned();
    let c = &app.config.schedule;
    let schedule =
        match app.store.link_schedule(room, live_id, unix_ms(), c.early_minutes as i64 * 60_000, c.late_minutes as i64 * 60_000).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%room, "linking a scheduled live: {e}");
                None
            }
        };
    if let Some(s) = &schedule {
        tracing::info!(%room, live = %live_id, schedule = %s.id, "the scheduled live is on air");
        if let Some(p) = s.profile.as_deref().filter(|_| !token_named_profile) {
            // The room's lock is released before the SFU is called (docs/architecture.md §6.1).
            let adopted = super::room::lock(running).adopt_profile(p);
            if let Some((fallback, members)) = adopted {
                tracing::info!(%room, profile = p, "the live takes its schedule's profile");
                for m in members {
                    if let Err(e) = app.sfu.set_audio_only_fallback(m, fallback) {
                        tracing::warn!(participant = %m, "audio-only fallback: {e}");
                    }
                }
                profile = p.to_owned();
            }
        }
    }
    app.hooks.emit(
        "live_started",
        json!({ "room": room, "live_id": live_id, "profile": profile, "started_at": unix_ms() / 1000, "schedule": schedule.as_ref().map(view) }),
    );
}

/// The room's live ended (its room was closed).
pub async fn on_ended(app: &AppState, room: &str, live_id: &str, profile: &str) {
    let schedule = match app.store.end_schedule(live_id, unix_ms()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%room, "ending a scheduled live: {e}");
            None
        }
    };
    app.hooks.emit(
        "live_ended",
        json!({ "room": room, "live_id": live_id, "profile": profile, "ended_at": unix_ms() / 1000, "schedule": schedule.as_ref().map(view) }),
    );
}

/// A cancelled live: the webhook carries its subscribers, for the platform to tell them.
pub async fn on_cancelled(app: &AppState, s: &ScheduleRow) -> Result<(), AppError> {
    let subscribers = app.store.reminders(&s.id).await?;
    app.hooks.emit("live_cancelled", json!({ "schedule": with_subscribers(s, subscribers) }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> ScheduleRow {
        ScheduleRow {
            id: "s_1".into(),
            room: "r".into(),
            title: "Spring drop; live, with friends".into(),
            description:
                "Line one\n\nA very long second line that goes on and on so that the folded content line passes seventy-five octets — é"
                    .into(),
            starts_at: 1_795_743_000_000,
            profile: None,
            state: "scheduled".into(),
            live_id: None,
            banner_version: None,
            created_by: "host".into(),
            created_at: 1_795_700_000_000,
            updated_at: 1_795_700_000_000,
        }
    }

    #[test]
    fn start_times() {
        let now = 1_795_700_000_000;
        assert_eq!(check_start(now / 1000 + 60, now, 90).ok(), Some(now + 60_000));
        for bad in [now / 1000, now / 1000 - 1, now / 1000 + 90 * 86_400 + 1, i64::MIN, i64::MAX] {
            assert_eq!(check_start(bad, now, 90).err().map(|e| e.code), Some(ErrorCode::BadTime), "{bad}");
        }
        assert!(check_start(now / 1000 + 90 * 86_400, now, 90).is_ok());
    }

    #[test]
    fn texts() {
        assert_eq!(clean_title("  Spring   drop ").ok().as_deref(), Some("Spring drop"));
        assert!(clean_title("a\nb").is_err());
        assert!(clean_title(&"x".repeat(MAX_TITLE_CHARS + 1)).is_err());
        assert!(clean_title("\u{202e}evil").is_err());
        assert_eq!(clean_description("\r\none\r\n\r\ntwo  words\n").ok().as_deref(), Some("one\n\ntwo words"));
        assert!(clean_description(&"a\n".repeat(MAX_DESCRIPTION_LINES + 1)).is_err());
        assert!(clean_description(&"y".repeat(MAX_DESCRIPTION_CHARS + 1)).is_err());
        assert!(clean_description("tab\there").is_err());
        assert_eq!(clean_description("").ok().as_deref(), Some(""));
    }

    #[test]
    fn calendar_file() {
        let ics = ics(&row(), "http://127.0.0.1:8080", 1_795_700_000_000);
        assert!(ics.starts_with("BEGIN:VCALENDAR\r\n") && ics.ends_with("END:VCALENDAR\r\n"));
        assert!(ics.contains("DTSTART:20261127T013000Z\r\n"), "{ics}");
        assert!(ics.contains("DTEND:20261127T023000Z\r\n"));
        assert!(ics.contains("SUMMARY:Spring drop\\; live\\, with friends\r\n"));
        assert!(ics.contains("URL:http://127.0.0.1:8080/upcoming/s_1\r\n"));
        for line in ics.split("\r\n") {
            assert!(line.len() <= 75, "unfolded line: {line:?}");
        }
        // Unfolded, the description is whole again.
        let unfolded = ics.replace("\r\n ", "");
        assert!(unfolded.contains("DESCRIPTION:Line one\\n\\nA very long second line"), "{unfolded}");
        assert!(unfolded.contains("— é\\n\\nhttp://127.0.0.1:8080/upcoming/s_1\r\n"));
    }
}
