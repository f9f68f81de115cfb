//! A live's record: its supporters and totals, during and after the live.

use super::{ApiResult, authorize, ok};
use crate::app::AppState;
use crate::error::{AppError, ErrorCode};
use crate::live::commerce::{state::totals, supporter_view};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

/// `GET /api/v1/lives/{live}/supporters`.
pub async fn supporters(State(app): State<AppState>, Path(live): Path<String>, headers: HeaderMap) -> ApiResult {
    let row = app.store.live(&live).await?.ok_or_else(|| AppError::new(ErrorCode::NotFound, "no such live"))?;
    authorize(&app, &headers, &row.room)?;
    let payments = app.store.payments_of(&row.id).await?;
    let config = &app.config.commerce;
    let supporters: Vec<_> = payments.iter().filter(|p| p.refunded_at.is_none()).map(|p| supporter_view(config, p)).collect();
    let totals = totals(&config.currency, payments.iter());
    ok(
        StatusCode::OK,
        &serde_json::json!({
            "live_id": row.id,
            "room": row.room,
            "created_at": row.created_at,
            "ended_at": row.ended_at,
            "supporters": supporters,
            "totals": totals,
        }),
    )
}
