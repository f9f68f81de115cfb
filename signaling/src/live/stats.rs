//! Figures: `get_stats` (how one viewer's subscriptions are served) and `/api/stats` (the node).

use crate::app::AppState;
use crate::error::AppError;
use crate::live::ctx::Ctx;
use crate::protocol::ServerMsg;

/// `get_stats`: the SFU's view of the asker's subscriptions.
pub async fn subscriber(ctx: &Ctx<'_>) -> Result<ServerMsg, AppError> {
    Ok(stats_msg(ctx.app.sfu.subscriber_stats(ctx.id).await?))
}

/// The `stats` reply for the SFU's view of one viewer (also a cascade edge's, cluster/edge.rs).
pub fn stats_msg(s: sfu::SubscriberStats) -> ServerMsg {
    ServerMsg::Stats { bandwidth_bps: s.bandwidth_bps, twcc_feedback: s.twcc_feedback, path: s.path, tracks: s.tracks }
}

/// The body of `GET /api/stats` (docs/protocol.md §1).
pub fn node(app: &AppState) -> serde_json::Value {
    serde_json::json!({
        "uptime_secs": app.started.elapsed().as_secs(),
        "rooms": app.rooms.len(),
        "sfu": app.sfu.stats(),
        "studio": app.studio.feeds(),
    })
}
