//! The webhook delivery log over HTTP (docs/api.md "Webhooks"), for the API key: what was sent,
//! how each delivery went, a failed one sent again, and a test event.

use super::{ApiResult, authorize_server, ok};
use crate::app::AppState;
use crate::error::{AppError, ErrorCode};
use crate::store::unix_ms;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    event: Option<String>,
    /// Page on: the last id of the previous page.
    before: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/webhooks/deliveries`: newest first.
pub async fn list(State(app): State<AppState>, Query(q): Query<ListQuery>, headers: HeaderMap) -> ApiResult {
    authorize_server(&app, &headers, "reads the webhook log")?;
    if q.state.as_deref().is_some_and(|s| !["pending", "delivered", "failed"].contains(&s)) {
        return Err(AppError::new(ErrorCode::BadMessage, "state must be pending, delivered or failed").into());
    }
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let rows = app.store.deliveries(q.state.as_deref(), q.event.as_deref(), q.before.as_deref(), limit).await?;
    ok(StatusCode::OK, &serde_json::json!({ "enabled": !app.config.webhooks.url.is_empty(), "deliveries": rows }))
}

/// `GET /api/v1/webhooks/deliveries/{id}`.
pub async fn get(State(app): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    authorize_server(&app, &headers, "reads the webhook log")?;
    let d = app.store.delivery(&id).await?.ok_or_else(|| AppError::new(ErrorCode::NotFound, "no such delivery"))?;
    ok(StatusCode::OK, &d)
}

/// `POST /api/v1/webhooks/deliveries/{id}/retry`: a failed delivery, sent again from now.
pub async fn retry(State(app): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    authorize_server(&app, &headers, "retries webhooks")?;
    if !app.store.redeliver(&id, unix_ms()).await? {
        return match app.store.delivery(&id).await? {
            None => Err(AppError::new(ErrorCode::NotFound, "no such delivery").into()),
            Some(d) => Err(AppError::new(ErrorCode::Conflict, format!("the delivery is {}; only failed ones are retried", d.state)).into()),
        };
    }
    app.hooks.wake();
    ok(StatusCode::ACCEPTED, &serde_json::json!({ "id": id, "state": "pending" }))
}

/// `POST /api/v1/webhooks/test`: a `test` event, to check the receiver and its verification.
pub async fn test(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    authorize_server(&app, &headers, "sends test webhooks")?;
    if app.config.webhooks.url.is_empty() {
        return Err(AppError::new(ErrorCode::NotConfigured, "webhooks are off: webhooks.url is not set").into());
    }
    app.hooks.emit("test", serde_json::json!({ "message": "a test event from Onair" }));
    ok(StatusCode::ACCEPTED, &serde_json::json!({ "queued": app.hooks.wants("test") }))
}
