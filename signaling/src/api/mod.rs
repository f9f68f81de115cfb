//! The server API under `/api/v1` (docs/api.md): JSON over HTTP for the platform's backend
//! (the API key), the host's page (its room token), and the payment provider (a signed webhook).
//! Handlers here are HTTP plumbing only: they authenticate, read the body within its limit and
//! call the feature (`live::commerce`), which does the work.

pub mod archive;
pub mod lives;
pub mod payments;
pub mod products;
pub mod rooms;
pub mod schedule;
pub mod webhooks;

use crate::app::AppState;
use crate::auth::Role;
use crate::error::{AppError, ErrorCode};
use crate::live::chat::moderates;
use crate::live::room::lock;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use subtle::ConstantTimeEq;

/// Largest JSON body of the API.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/payments", post(payments::webhook))
        .route("/api/v1/rooms/{room}/products", get(products::list).post(products::create))
        .route("/api/v1/rooms/{room}/products/{id}", get(products::get).patch(products::update).delete(products::delete))
        .route("/api/v1/rooms/{room}/products/{id}/image", put(products::upload_image))
        .route("/api/v1/lives/{live}/supporters", get(lives::supporters))
        .route("/api/v1/tokens", post(rooms::mint_token))
        .route("/api/v1/rooms", get(rooms::list))
        .route("/api/v1/rooms/{room}/end", post(rooms::end))
        .route("/api/v1/rooms/{room}/stream-keys", get(rooms::keys).post(rooms::create_key))
        .route("/api/v1/rooms/{room}/stream-keys/{id}", axum::routing::delete(rooms::revoke_key))
        .route("/api/v1/schedules", get(schedule::list).post(schedule::create))
        .route("/api/v1/schedules/{id}", get(schedule::get).patch(schedule::update).delete(schedule::cancel))
        .route("/api/v1/schedules/{id}/start", post(schedule::start))
        .route("/api/v1/schedules/{id}/banner", put(schedule::upload_banner))
        .route("/api/v1/schedules/{id}/reminder", post(schedule::remind).delete(schedule::unremind))
        .route("/api/v1/webhooks/deliveries", get(webhooks::list))
        .route("/api/v1/webhooks/deliveries/{id}", get(webhooks::get))
        .route("/api/v1/webhooks/deliveries/{id}/retry", post(webhooks::retry))
        .route("/api/v1/webhooks/test", post(webhooks::test))
        .route("/api/v1/rooms/{room}/archive", get(archive::list_room))
        .route("/api/v1/archive", get(archive::list_all))
        .route("/api/v1/archive/{id}", get(archive::get).delete(archive::delete))
        .route("/api/v1/archive/{id}/files/{name}", get(archive::file))
        .route("/media/products/{id}", get(products::image))
        .route("/media/schedules/{id}/banner", get(schedule::banner))
        .route("/upcoming/{id}", get(|| async { crate::assets::page("upcoming.html") }))
        .route("/upcoming/{id}/calendar.ics", get(schedule::calendar))
}

/// An API refusal: the status of its code and `{"error": {"code", "message"}}`.
pub struct ApiError(pub AppError);

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        if e.code == ErrorCode::Internal {
            tracing::error!("server API: {e}");
        } else {
            tracing::debug!("server API refused: {e}");
        }
        let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        let mut error = serde_json::json!({ "code": e.code, "message": e.message });
        if let Some(ms) = e.retry_after_ms {
            error["retry_after_ms"] = ms.into();
        }
        let mut res = (status, axum::Json(serde_json::json!({ "error": error }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// Who is calling.
#[derive(Debug, PartialEq)]
pub enum Caller {
    /// The platform's backend, with the API key: every room.
    Server,
    /// A host or moderator of the room, with their room token.
    Staff { identity: String, role: Role },
}

impl Caller {
    /// The API key, or the room's host (not a moderator): for the live's own controls.
    pub fn require_host(&self, what: &str) -> Result<(), AppError> {
        match self {
            Caller::Server | Caller::Staff { role: Role::Host, .. } => Ok(()),
            Caller::Staff { .. } => Err(AppError::new(ErrorCode::NotAllowed, format!("only the server key and the host {what}"))),
        }
    }

    pub fn require_server(&self, what: &str) -> Result<(), AppError> {
        match self {
            Caller::Server => Ok(()),
            Caller::Staff { .. } => Err(AppError::new(ErrorCode::NotAllowed, format!("only the server key {what}"))),
        }
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, AppError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| AppError::new(ErrorCode::TokenMissing, "Authorization: Bearer <API key or room token> is required"))?;
    let value = value.to_str().map_err(|_| AppError::new(ErrorCode::TokenMalformed, "the Authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(AppError::new(ErrorCode::TokenMalformed, "the Authorization header must be `Bearer <token>`")),
    }
}

/// The API key, or a room token of a host or moderator of `room` (a moderator appointed
/// during the live counts; one whose moderation was taken away does not).
pub fn authorize(app: &AppState, headers: &HeaderMap, room: &str) -> Result<Caller, AppError> {
    let token = bearer(headers)?;
    let key = app.config.api.key.as_bytes();
    if !key.is_empty() && bool::from(token.as_bytes().ct_eq(key)) {
        return Ok(Caller::Server);
    }
    let claims = app.auth.verify(token, Some(room))?;
    let role = match app.rooms.get(room) {
        Some(r) => lock(&r).chat.effective_role(&claims.identity, claims.role),
        None => claims.role,
    };
    if moderates(role) || role == Role::Host {
        Ok(Caller::Staff { identity: claims.identity, role })
    } else {
        Err(AppError::new(ErrorCode::NotAllowed, "only the server key, the host and moderators may do this"))
    }
}

/// The API key and nothing else (`what`: the refusal's words).
pub fn authorize_server(app: &AppState, headers: &HeaderMap, what: &str) -> Result<(), AppError> {
    let token = bearer(headers)?;
    let key = app.config.api.key.as_bytes();
    if !key.is_empty() && bool::from(token.as_bytes().ct_eq(key)) {
        Ok(())
    } else {
        Err(AppError::new(ErrorCode::NotAllowed, format!("only the server key {what}")))
    }
}

/// Read a request body of at most `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, AppError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| AppError::new(ErrorCode::MessageTooLarge, format!("the body is larger than {limit} bytes, or was cut off")))
}

/// Parse a JSON body of at most [`MAX_JSON_BYTES`].
pub async fn json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, AppError> {
    let bytes = read_body(body, MAX_JSON_BYTES).await?;
    serde_json::from_slice(&bytes).map_err(|e| AppError::new(ErrorCode::BadMessage, format!("the body is not the JSON expected: {e}")))
}

pub fn ok<T: serde::Serialize>(status: StatusCode, body: &T) -> ApiResult {
    Ok((status, axum::Json(body)).into_response())
}
