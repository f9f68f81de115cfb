//! `POST /api/v1/payments`: the payment provider's webhook (docs/api.md "Payments").

use super::{ApiResult, MAX_JSON_BYTES, ok, read_body};
use crate::app::AppState;
use crate::error::{AppError, ErrorCode};
use crate::live::commerce::{EventOutcome, on_event, payments};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

pub async fn webhook(State(app): State<AppState>, headers: HeaderMap, body: Body) -> ApiResult {
    let secret = app.config.commerce.webhook_secret.as_bytes();
    if secret.is_empty() {
        return Err(AppError::new(ErrorCode::NotConfigured, "payments are off: commerce.webhook_secret is not set").into());
    }
    let body = read_body(body, MAX_JSON_BYTES).await?;
    let signature = headers.get(payments::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let now = crate::store::unix_ms() / 1000;
    payments::verify(secret, signature, &body, now, app.config.commerce.webhook_tolerance_secs)?;
    let event = payments::parse(&body)?;
    // On a cluster a badge is granted (or taken back) where the live runs (its members hear it
    // there): the provider's call goes to that node as it came, signature and all.
    if let Some(cluster) = &app.cluster
        && !headers.contains_key(crate::cluster::forward::FORWARDED)
    {
        // A refund names its payment; the payment names the room.
        let room = match &event {
            payments::Event::Payment { room, .. } => room.clone(),
            payments::Event::Refund { payment, .. } => app.store.payment(payment).await?.map(|p| p.room).unwrap_or_default(),
        };
        match cluster.owner(&room).await {
            Ok(Some(node)) => return Ok(cluster.relay(&node, axum::http::Method::POST, "/api/v1/payments", &headers, body).await),
            Ok(None) => {}
            Err(e) => crate::cluster::redis_error("owner", &e),
        }
    }
    let outcome = on_event(&app, event).await?;
    tracing::info!(?outcome, "payment webhook");
    match outcome {
        EventOutcome::Granted { payment, live_id, badge } => {
            ok(StatusCode::CREATED, &serde_json::json!({ "status": "granted", "payment": payment, "live_id": live_id, "badge": badge }))
        }
        EventOutcome::Refunded { payment, live_id, identity, badge } => ok(
            StatusCode::OK,
            &serde_json::json!({ "status": "refunded", "payment": payment, "live_id": live_id, "identity": identity, "badge": badge }),
        ),
        EventOutcome::Duplicate { id } => ok(StatusCode::OK, &serde_json::json!({ "status": "duplicate", "id": id })),
    }
}
