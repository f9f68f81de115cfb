//! Scheduled lives over HTTP (docs/api.md "Scheduled lives"): the platform's backend (API key)
//! and the room's host (its room token) create, change, start and cancel them and upload a
//! banner; anyone reads an upcoming live, its banner and its calendar file; a viewer with a
//! token of the room asks to be reminded.

use super::{ApiResult, authorize, bearer, json, ok, read_body};
use crate::app::AppState;
use crate::auth::{Claims, MAX_ROOM_BYTES};
use crate::error::{AppError, ErrorCode};
use crate::live::room::lock;
use crate::live::schedule::{self, check_start, clean_description, clean_title, view};
use crate::protocol::RoomState;
use crate::store::{ScheduleRow, unix_ms};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    room: String,
    title: String,
    #[serde(default)]
    description: String,
    /// Unix seconds.
    starts_at: i64,
    #[serde(default)]
    profile: Option<String>,
}

fn check_profile(app: &AppState, profile: &Option<String>) -> Result<(), AppError> {
    match profile {
        Some(p) if !app.config.profiles.contains_key(p) => Err(AppError::new(ErrorCode::BadMessage, format!("no live profile {p:?}"))),
        _ => Ok(()),
    }
}

async fn find(app: &AppState, id: &str) -> Result<ScheduleRow, AppError> {
    if id.len() > 64 {
        return Err(AppError::new(ErrorCode::NotFound, "no such scheduled live"));
    }
    app.store.schedule(id).await?.ok_or_else(|| AppError::new(ErrorCode::NotFound, "no such scheduled live"))
}

/// `POST /api/v1/schedules` (API key or the room's host).
pub async fn create(State(app): State<AppState>, headers: HeaderMap, body: Body) -> ApiResult {
    let req: CreateRequest = json(body).await?;
    if req.room.is_empty() || req.room.len() > MAX_ROOM_BYTES {
        return Err(AppError::new(ErrorCode::BadMessage, "room must be 1-128 bytes").into());
    }
    let caller = authorize(&app, &headers, &req.room)?;
    caller.require_host("schedule lives")?;
    let now = unix_ms();
    let s = ScheduleRow {
        id: format!("s_{}", app.store.next_id()),
        room: req.room,
        title: clean_title(&req.title)?,
        description: clean_description(&req.description)?,
        starts_at: check_start(req.starts_at, now, app.config.schedule.max_days_ahead)?,
        profile: req.profile,
        state: "scheduled".into(),
        live_id: None,
        banner_version: None,
        created_by: match &caller {
            super::Caller::Server => "server".into(),
            super::Caller::Staff { identity, .. } => identity.clone(),
        },
        created_at: now,
        updated_at: now,
    };
    check_profile(&app, &s.profile)?;
    let max = app.config.schedule.max_per_room;
    if app.store.upcoming_count(&s.room).await? >= max as i64 {
        return Err(AppError::new(ErrorCode::Conflict, format!("the room has {max} upcoming lives already")).into());
    }
    app.store.add_schedule(&s).await?;
    tracing::info!(room = %s.room, schedule = %s.id, starts_at = s.starts_at, "live scheduled");
    app.hooks.emit("live_scheduled", serde_json::json!({ "schedule": view(&s) }));
    ok(StatusCode::CREATED, &view(&s))
}

#[derive(Deserialize)]
pub struct ListQuery {
    room: Option<String>,
    /// `upcoming` (default) or `all` (past and cancelled too: API key or the host).
    #[serde(default)]
    state: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/schedules?room=R`: a room's upcoming lives (public); every room's and past
/// ones with the API key or the room's host.
pub async fn list(State(app): State<AppState>, Query(q): Query<ListQuery>, headers: HeaderMap) -> ApiResult {
    let all = match q.state.as_deref() {
        None | Some("upcoming") => false,
        Some("all") => true,
        Some(other) => return Err(AppError::new(ErrorCode::BadMessage, format!("state must be upcoming or all, not {other:?}")).into()),
    };
    match &q.room {
        None => super::authorize_server(&app, &headers, "lists every room's lives")?,
        Some(room) if all => authorize(&app, &headers, room)?.require_host("lists past lives")?,
        Some(_) => {}
    }
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let rows = app.store.schedules(q.room.as_deref(), !all, limit).await?;
    ok(StatusCode::OK, &serde_json::json!({ "schedules": rows.iter().map(view).collect::<Vec<_>>() }))
}

/// The claims of a room token in `Authorization`, if one is there and valid for `room`.
fn token_of(app: &AppState, headers: &HeaderMap, room: &str) -> Option<Claims> {
    let token = bearer(headers).ok()?;
    app.auth.verify(token, Some(room)).ok()
}

/// `GET /api/v1/schedules/{id}`: public. With a room token, `reminded` says whether its
/// identity asked to be reminded; the API key and the host also get `subscribers`.
pub async fn get(State(app): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    let s = find(&app, &id).await?;
    let mut v = view(&s);
    let subscribers = app.store.reminders(&s.id).await?;
    v["reminders"] = subscribers.len().into();
    if authorize(&app, &headers, &s.room).is_ok_and(|c| c.require_host("").is_ok()) {
        v["subscribers"] = serde_json::json!(subscribers);
    }
    if let Some(claims) = token_of(&app, &headers, &s.room) {
        v["reminded"] = subscribers.contains(&claims.identity).into();
    }
    ok(StatusCode::OK, &v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    title: Option<String>,
    description: Option<String>,
    starts_at: Option<i64>,
    /// `null` goes back to the room's default profile.
    #[serde(default, deserialize_with = "present")]
    profile: Option<Option<String>>,
}

/// A field that is there, even as `null` (`Some(None)`), told from one that is not (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    <Option<String> as Deserialize>::deserialize(d).map(Some)
}

/// `PATCH /api/v1/schedules/{id}` (API key or the host): while it is upcoming.
pub async fn update(State(app): State<AppState>, Path(id): Path<String>, headers: HeaderMap, body: Body) -> ApiResult {
    let mut s = find(&app, &id).await?;
    authorize(&app, &headers, &s.room)?.require_host("change scheduled lives")?;
    let req: UpdateRequest = json(body).await?;
    let now = unix_ms();
    if let Some(t) = &req.title {
        s.title = clean_title(t)?;
    }
    if let Some(d) = &req.description {
        s.description = clean_description(d)?;
    }
    let mut time_changed = false;
    if let Some(at) = req.starts_at {
        let at = check_start(at, now, app.config.schedule.max_days_ahead)?;
        time_changed = at != s.starts_at;
        s.starts_at = at;
    }
    if let Some(p) = req.profile {
        s.profile = p;
        check_profile(&app, &s.profile)?;
    }
    if !app.store.update_schedule(&s, time_changed, now).await? {
        return Err(AppError::new(ErrorCode::Conflict, format!("the live is {} and can no longer be changed", s.state)).into());
    }
    s.updated_at = now;
    app.hooks.emit("live_updated", serde_json::json!({ "schedule": view(&s), "time_changed": time_changed }));
    ok(StatusCode::OK, &view(&s))
}

/// `DELETE /api/v1/schedules/{id}` (API key or the host): cancel an upcoming live; the
/// `live_cancelled` webhook names who asked to be reminded.
pub async fn cancel(State(app): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    let mut s = find(&app, &id).await?;
    authorize(&app, &headers, &s.room)?.require_host("cancel scheduled lives")?;
    let now = unix_ms();
    if !app.store.set_schedule_state(&s.id, "cancelled", now).await? {
        return Err(AppError::new(ErrorCode::Conflict, format!("the live is {} and can no longer be cancelled", s.state)).into());
    }
    s.state = "cancelled".into();
    s.updated_at = now;
    tracing::info!(room = %s.room, schedule = %s.id, "scheduled live cancelled");
    schedule::on_cancelled(&app, &s).await?;
    ok(StatusCode::OK, &view(&s))
}

/// `POST /api/v1/schedules/{id}/start` (API key or the host): this is the live the host goes
/// on air with — now, if the room is live, or when the host goes live.
pub async fn start(State(app): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    let mut s = find(&app, &id).await?;
    authorize(&app, &headers, &s.room)?.require_host("start scheduled lives")?;
    let now = unix_ms();
    if !app.store.set_schedule_state(&s.id, "starting", now).await? {
        return Err(AppError::new(ErrorCode::Conflict, format!("the live is {} and cannot be started", s.state)).into());
    }
    s.state = "starting".into();
    // A room already on air takes it at once (no lock is held across the store's await).
    let on_air = app.rooms.get(&s.room).and_then(|r| {
        let r = lock(&r);
        matches!(r.state(), RoomState::Live | RoomState::Held).then(|| r.chat.live_id.clone())
    });
    if let Some(live) = on_air
        && let Some(linked) = app.store.link_schedule(&s.room, &live, now, 0, 0).await?
    {
        s = linked;
        tracing::info!(room = %s.room, schedule = %s.id, %live, "the scheduled live is on air");
    }
    ok(StatusCode::OK, &view(&s))
}

/// `PUT /api/v1/schedules/{id}/banner` (API key or the host): a PNG, JPEG, WebP or GIF of at
/// most `schedule.max_banner_bytes`.
pub async fn upload_banner(State(app): State<AppState>, Path(id): Path<String>, headers: HeaderMap, body: Body) -> ApiResult {
    let mut s = find(&app, &id).await?;
    authorize(&app, &headers, &s.room)?.require_host("upload banners")?;
    let declared = super::products::declared_type(&headers);
    let bytes = read_body(body, app.config.schedule.max_banner_bytes).await?;
    let sniffed = crate::live::commerce::catalog::sniff_image(&bytes)
        .ok_or_else(|| AppError::new(ErrorCode::BadImage, "the banner must be a PNG, JPEG, WebP or GIF file"))?;
    if declared != sniffed {
        return Err(AppError::new(ErrorCode::BadImage, format!("the body is {sniffed}, but Content-Type says {declared:?}")).into());
    }
    let now = unix_ms();
    s.banner_version = Some(app.store.set_banner(&s.id, sniffed, &bytes, now).await?);
    s.updated_at = now;
    ok(StatusCode::OK, &view(&s))
}

/// `GET /media/schedules/{id}/banner`: public, cached for good (its URL names its version).
pub async fn banner(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    match app.store.banner(&id).await {
        Ok(Some((content_type, bytes))) => super::products::image_response(&content_type, bytes),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => super::ApiError(e).into_response(),
    }
}

/// `POST /api/v1/schedules/{id}/reminder`: "Remind me", for the identity of a token of the room.
pub async fn remind(State(app): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    let s = find(&app, &id).await?;
    let claims = app.auth.verify(bearer(&headers)?, Some(&s.room))?;
    if !crate::store::UPCOMING.contains(&s.state.as_str()) {
        return Err(AppError::new(ErrorCode::Conflict, format!("the live is {}: nothing to remind", s.state)).into());
    }
    let new = app.store.add_reminder(&s.id, &claims.identity, unix_ms()).await?;
    ok(
        if new { StatusCode::CREATED } else { StatusCode::OK },
        &serde_json::json!({ "schedule": s.id, "identity": claims.identity, "reminded": true }),
    )
}

/// `DELETE /api/v1/schedules/{id}/reminder`: no reminder after all.
pub async fn unremind(State(app): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    let s = find(&app, &id).await?;
    let claims = app.auth.verify(bearer(&headers)?, Some(&s.room))?;
    app.store.remove_reminder(&s.id, &claims.identity).await?;
    ok(StatusCode::OK, &serde_json::json!({ "schedule": s.id, "identity": claims.identity, "reminded": false }))
}

/// `GET /upcoming/{id}/calendar.ics`: the live as a calendar event.
pub async fn calendar(State(app): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    let s = find(&app, &id).await?;
    let host =
        headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| h.chars().all(|c| c.is_ascii_graphic())).unwrap_or("localhost");
    let scheme = match headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()) {
        Some("https") => "https",
        _ => "http",
    };
    let body = schedule::ics(&s, &format!("{scheme}://{host}"), unix_ms());
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/calendar; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}.ics\"", s.id)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}
