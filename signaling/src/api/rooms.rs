//! Rooms from the platform's backend (docs/api.md "Rooms and tokens"): mint room tokens, list
//! the rooms on this node, end a live, and a room's stream keys.

use super::{ApiResult, authorize, json, ok};
use crate::app::AppState;
use crate::auth::{MAX_IDENTITY_BYTES, MAX_ROOM_BYTES, Role};
use crate::error::{AppError, ErrorCode};
use crate::live::room::lock;
use crate::store::KeySeat;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

/// Longest token lifetime the API mints.
const MAX_TTL_SECS: u64 = 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    room: String,
    identity: String,
    #[serde(default)]
    name: Option<String>,
    role: String,
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    profile: Option<String>,
}

/// `POST /api/v1/tokens`: a room token. The API key mints any role; a host's token mints
/// co-host, moderator and viewer tokens of its own room.
pub async fn mint_token(State(app): State<AppState>, headers: HeaderMap, body: Body) -> ApiResult {
    let req: TokenRequest = json(body).await?;
    if req.room.is_empty() || req.room.len() > MAX_ROOM_BYTES || req.identity.is_empty() || req.identity.len() > MAX_IDENTITY_BYTES {
        return Err(AppError::new(ErrorCode::BadMessage, "room and identity must be 1-128 bytes").into());
    }
    let role = Role::parse(&req.role)
        .ok_or_else(|| AppError::new(ErrorCode::TokenInvalidRole, "role must be host, cohost, moderator or viewer"))?;
    let caller = authorize(&app, &headers, &req.room)?;
    if role == Role::Host {
        caller.require_server("mint host tokens")?;
    } else {
        caller.require_host("mint tokens")?;
    }
    let ttl = req.ttl_secs.unwrap_or(3600);
    if !(60..=MAX_TTL_SECS).contains(&ttl) {
        return Err(AppError::new(ErrorCode::BadMessage, format!("ttl_secs must be 60..={MAX_TTL_SECS}")).into());
    }
    if req.profile.as_ref().is_some_and(|p| !app.config.profiles.contains_key(p)) {
        return Err(AppError::new(ErrorCode::BadMessage, "no such live profile").into());
    }
    let name = match req.name.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(n) => Some(
            crate::live::chat::text::clean_comment(n, 64)
                .map_err(|e| AppError::new(ErrorCode::BadMessage, format!("name: {}", e.message)))?,
        ),
    };
    let token = app.auth.mint_with_profile(&req.room, &req.identity, name.as_deref(), role, ttl, req.profile.as_deref())?;
    let expires_at = crate::store::unix_ms() / 1000 + ttl as i64;
    ok(StatusCode::CREATED, &serde_json::json!({ "token": token, "expires_at": expires_at }))
}

/// `GET /api/v1/rooms`: the rooms open on this node, or on every node of a cluster (API key).
pub async fn list(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    // The key only: no room token is scoped to every room.
    super::authorize_server(&app, &headers, "lists rooms")?;
    let mut rooms: Vec<serde_json::Value> = app
        .rooms
        .all()
        .iter()
        .map(|r| {
            let r = lock(r);
            let roles = r.role_counts();
            serde_json::json!({
                "room": r.name,
                "live_id": r.chat.live_id,
                "state": r.state(),
                "started_at": r.info().started_at,
                "profile": r.profile().name,
                "participants": r.len(),
                "viewers": roles.iter().filter(|(role, _)| *role == Role::Viewer).map(|(_, n)| n).sum::<u64>(),
                "on_stage": r.on_stage().iter().map(|p| serde_json::json!({"identity": p.identity, "name": p.name, "kind": p.kind})).collect::<Vec<_>>(),
            })
        })
        .collect();
    // On a cluster: every node's rooms, each with its node; nodes that did not answer are named.
    let mut unreachable = Vec::new();
    if let Some(cluster) = &app.cluster
        && !headers.contains_key(crate::cluster::forward::FORWARDED)
    {
        for room in &mut rooms {
            room["node"] = cluster.id().into();
        }
        for (node, answer) in cluster.ask_others("/api/v1/rooms", &headers).await {
            match answer {
                Ok(mut v) => {
                    for mut room in v["rooms"].as_array_mut().map(std::mem::take).unwrap_or_default() {
                        room["node"] = node.clone().into();
                        rooms.push(room);
                    }
                }
                Err(e) => {
                    tracing::warn!(%node, "cluster: listing its rooms: {e}");
                    unreachable.push(node);
                }
            }
        }
    }
    rooms.sort_by(|a, b| a["room"].as_str().cmp(&b["room"].as_str()));
    if app.cluster.is_some() {
        unreachable.sort();
        return ok(StatusCode::OK, &serde_json::json!({ "rooms": rooms, "unreachable": unreachable }));
    }
    ok(StatusCode::OK, &serde_json::json!({ "rooms": rooms }))
}

/// `POST /api/v1/rooms/{room}/end`: end the live for everyone (API key or the host).
pub async fn end(State(app): State<AppState>, Path(room): Path<String>, headers: HeaderMap) -> ApiResult {
    authorize(&app, &headers, &room)?.require_host("end the live")?;
    let running = app.rooms.get(&room).ok_or_else(|| AppError::new(ErrorCode::NotFound, "no such room on this node"))?;
    lock(&running).end(None, "the live was ended")?;
    tracing::info!(%room, "room ended through the server API");
    ok(StatusCode::OK, &serde_json::json!({ "room": room, "ended": true }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    seat: KeySeat,
}

/// `GET /api/v1/rooms/{room}/stream-keys` (API key or the host): without secrets.
pub async fn keys(State(app): State<AppState>, Path(room): Path<String>, headers: HeaderMap) -> ApiResult {
    authorize(&app, &headers, &room)?.require_host("manage stream keys")?;
    ok(StatusCode::OK, &serde_json::json!({ "keys": app.store.stream_keys(Some(&room)).await? }))
}

/// `POST /api/v1/rooms/{room}/stream-keys`: mint a key (shown only in this answer).
pub async fn create_key(State(app): State<AppState>, Path(room): Path<String>, headers: HeaderMap, body: Body) -> ApiResult {
    authorize(&app, &headers, &room)?.require_host("manage stream keys")?;
    let req: KeyRequest = json(body).await?;
    let label = req.label.unwrap_or_default();
    if label.len() > 64 || label.chars().any(char::is_control) {
        return Err(AppError::new(ErrorCode::BadMessage, "label: at most 64 printable bytes").into());
    }
    let minted = app.store.mint_stream_key(&room, &label, req.seat).await?;
    tracing::info!(%room, id = %minted.view.id, "stream key minted through the server API");
    ok(
        StatusCode::CREATED,
        &serde_json::json!({
            "id": minted.view.id,
            "key": minted.key,
            "server_url": app.studio.server_url(&app.config.rtmp),
            "label": minted.view.label,
            "seat": minted.view.seat,
        }),
    )
}

/// `DELETE /api/v1/rooms/{room}/stream-keys/{id}`: revoke it and cut the feed streaming with it.
pub async fn revoke_key(State(app): State<AppState>, Path((room, id)): Path<(String, String)>, headers: HeaderMap) -> ApiResult {
    authorize(&app, &headers, &room)?.require_host("manage stream keys")?;
    if !app.store.revoke_stream_key(Some(&room), &id).await? {
        return Err(AppError::new(ErrorCode::NotFound, "no such stream key in this room").into());
    }
    crate::live::studio::end_revoked(&app, &id);
    Ok(axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT))
}
