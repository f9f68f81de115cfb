//! Player QoE (docs/protocol.md §15, docs/operations.md): pages and the loadtest's viewers
//! report what their players saw every ~10 s; the live adds it up into the KPIs the dashboard
//! and `/metrics` show, kept in the store when the live ends. And *Report a problem*.

pub mod state;

pub use state::{Client, Kpis, LiveQoe, QoeReport, Startup};

use crate::error::{AppError, ErrorCode};
use crate::live::chat::text::clean_comment;
use crate::live::ctx::Ctx;
use crate::live::room::lock;
use crate::protocol::ServerMsg;
use crate::store::{ProblemRow, unix_ms};
use std::time::Instant;

/// The tags of *Report a problem* (the operations guide's).
pub const PROBLEM_TAGS: [&str; 5] = ["startup", "buffering", "audio", "access", "embed"];
/// Longest problem description, in characters; largest context, in bytes of JSON.
const MAX_PROBLEM_CHARS: usize = 300;
const MAX_CONTEXT_BYTES: usize = 2048;
/// Problem reports one participant may file.
pub const MAX_PROBLEMS_PER_PARTICIPANT: usize = 5;

/// `qoe`: take a report, count it in the live and in the metrics.
pub fn report(ctx: &Ctx<'_>, client: Client, r: QoeReport) -> Result<(), AppError> {
    let (profile, delta) = {
        let mut room = lock(ctx.room);
        let profile = room.profile().name.clone();
        let delta = room.qoe.report(ctx.id, &profile, client, r, Instant::now())?;
        (profile, delta)
    };
    crate::observe::qoe(&profile, client, &delta);
    Ok(())
}

/// `report_problem`: keep it with the reporter's last QoE and the page's context.
pub async fn problem(ctx: &Ctx<'_>, tag: String, text: Option<String>, context: Option<serde_json::Value>) -> Result<ServerMsg, AppError> {
    let Some(tag) = PROBLEM_TAGS.iter().find(|t| **t == tag) else {
        return Err(AppError::new(ErrorCode::BadMessage, format!("tag must be one of {}", PROBLEM_TAGS.join(", "))));
    };
    let text = match text.as_deref().map(str::trim) {
        None | Some("") => String::new(),
        Some(t) => clean_comment(t, MAX_PROBLEM_CHARS)?,
    };
    let context = context.unwrap_or(serde_json::Value::Null);
    if !(context.is_object() || context.is_null()) || context.to_string().len() > MAX_CONTEXT_BYTES {
        return Err(AppError::new(ErrorCode::BadMessage, format!("context must be a JSON object of at most {MAX_CONTEXT_BYTES} bytes")));
    }
    let (live, qoe) = {
        let mut room = lock(ctx.room);
        if !room.qoe.note_problem(ctx.id, MAX_PROBLEMS_PER_PARTICIPANT) {
            return Err(AppError::new(ErrorCode::RateLimited, format!("at most {MAX_PROBLEMS_PER_PARTICIPANT} reports per visit")));
        }
        let qoe = room.qoe.last(ctx.id).map(|q| serde_json::to_value(q).unwrap_or_default()).unwrap_or_default();
        (room.chat.live_id.clone(), qoe)
    };
    let row = ProblemRow {
        id: ctx.app.store.next_id(),
        live_id: live,
        room: ctx.claims.room.clone(),
        identity: ctx.claims.identity.clone(),
        tag: (*tag).to_owned(),
        text,
        qoe,
        context,
        at: unix_ms(),
    };
    ctx.app.store.add_problem(&row).await?;
    metrics::counter!("onair_problem_reports_total", "tag" => *tag).increment(1);
    tracing::info!(room = %row.room, identity = %row.identity, tag = %row.tag, "problem reported");
    Ok(ServerMsg::ProblemReported { id: row.id })
}
