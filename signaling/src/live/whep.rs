//! WHEP: a live room played by a standard WebRTC player (the WHEP draft, the playback sibling
//! of RFC 9725). The player POSTs an SDP offer with a room token as the bearer token; it joins
//! the room as a viewer (`kind: "player"`) and the SFU answers with its subscriber session.
//!
//! ```text
//! POST   /whep/{room}             offer → 201, Location /whep/{room}/{resource}, ETag, answer
//! PATCH  /whep/{room}/{resource}  trickled candidates (204); If-Match: * → ICE restart (200)
//! DELETE /whep/{room}/{resource}  the player leaves (200)
//! OPTIONS on both                 CORS preflight;  GET/HEAD on both → 204
//! ```
//!
//! **What a standard player sees of the stage.** WHEP has no offer from the server, so the
//! m-lines the player offered are all it will ever have. Each is a slot: the i-th audio m-line
//! carries the i-th stage seat's audio, the i-th video m-line its video (the host first, then
//! the seats in the order they were taken). When the stage changes, the slots follow within a
//! keyframe, each under its SSRC: a player with one audio and one video m-line (most of them)
//! shows the host, or whoever holds the first seat when there is no host; a player that offers
//! five of each (the embed page) shows the whole stage. Slots with no seat send nothing.
//!
//! The player leaves on DELETE, when its connection closes or stays down past
//! `limits.resume_grace_secs`, when it is banned, or when the room ends.

use crate::api::bearer;
use crate::app::AppState;
use crate::auth::{Claims, Role};
use crate::live::join::{self, Joined, Pass, Seat};
use crate::live::room::{OutboxReader, Room, lock};
use crate::live::studio::feeds::WhipIce;
use crate::live::studio::sdpfrag::{self, Frag};
use crate::live::studio::whip::{
    FRAG, MAX_OFFER_BYTES, Refusal, SDP, add_candidates, content_type, cors, etag, etag_matches, ice_server_links, no_content, preflight,
    refuse, restart_credentials, restart_reply, text_body, urlencoding_path,
};
use crate::protocol::{ParticipantKind, ServerMsg};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sfu::{ConnState, ParticipantId, SessionRole, SfuEvent};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/whep/{room}", post(create).options(preflight).get(no_content))
        .route("/whep/{room}/{resource}", axum::routing::patch(update).delete(remove).options(preflight).get(no_content))
        .layer(axum::middleware::map_response(cors))
        .route("/embed/{room}", axum::routing::get(embed))
}

/// The embed page's template versions (`/embed/{room}?v=1`; no `v` is the newest). A page
/// that asks for a version this server does not have gets 404, not another template.
pub const EMBED_VERSIONS: &[&str] = &["1"];

/// `GET /embed/{room}?v=1`: the player page for iframes, framed only by the room's allowed
/// origins (`embed.rooms`).
async fn embed(State(app): State<AppState>, Path(room): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    let refused = |status: StatusCode, why: &'static str| {
        let mut res = (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], why).into_response();
        res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("frame-ancestors 'none'"));
        res
    };
    let version = q.get("v").map_or(EMBED_VERSIONS[EMBED_VERSIONS.len() - 1], String::as_str);
    if !EMBED_VERSIONS.contains(&version) {
        return refused(StatusCode::NOT_FOUND, "no such embed version (v=1 is current)");
    }
    let Some(policy) = app.config.embed.room(&room) else {
        return refused(StatusCode::NOT_FOUND, "this room is not embeddable");
    };
    let ancestors = if policy.allowed_origins.is_empty() { "'none'".to_owned() } else { policy.allowed_origins.join(" ") };
    let mut res = crate::assets::page("embed.html");
    // The origins were checked when the config was loaded (`config::is_plain_origin`).
    match HeaderValue::from_str(&format!("frame-ancestors {ancestors}")) {
        Ok(csp) => {
            res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, csp);
        }
        Err(_) => return refused(StatusCode::INTERNAL_SERVER_ERROR, "embed.rooms has an origin that is not one"),
    }
    res.headers_mut().insert("x-onair-embed-version", HeaderValue::from_static("1"));
    res
}

/// A WHEP player in its room.
pub struct Player {
    pub participant: ParticipantId,
    pub room_name: String,
    /// The token's identity: PATCH and DELETE must come with a token of the same.
    identity: String,
    /// A public embed's player, with no token: its session URL is all it has.
    anonymous: bool,
    room: Arc<Mutex<Room>>,
    resource: String,
    ice: Mutex<WhipIce>,
    /// Bumped by every connection change, so a stale grace timer does nothing.
    generation: AtomicUsize,
    connected: Mutex<bool>,
}

/// The players on this node, by resource id.
#[derive(Default)]
pub struct Players {
    by_resource: Mutex<HashMap<String, Arc<Player>>>,
}

impl Players {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Player>>> {
        self.by_resource.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many players are connected to this node.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

fn plock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `POST /whep/{room}`: the offer, with a room token as the bearer token.
async fn create(State(app): State<AppState>, Path(room): Path<String>, headers: HeaderMap, body: Body) -> Response {
    match open(&app, &room, &headers, body).await {
        Ok(res) => res,
        Err(r) => r.into_response(),
    }
}

async fn open(app: &AppState, room_name: &str, headers: &HeaderMap, body: Body) -> Result<Response, Refusal> {
    // A public embed's room plays without a token (`embed.rooms.<room>.public`), once it is
    // live: an anonymous player never opens a room.
    let anonymous = headers.get(header::AUTHORIZATION).is_none() && app.config.embed.room(room_name).is_some_and(|e| e.public);
    let token = if anonymous { None } else { Some(bearer(headers).map_err(|e| Refusal(StatusCode::UNAUTHORIZED, e.message))?.to_owned()) };
    content_type(headers, SDP)?;
    let offer = text_body(body, MAX_OFFER_BYTES).await?;
    if let Some(node) = join::elsewhere(app, room_name).await {
        return Ok(crate::live::studio::whip::redirect(&node, &format!("/whep/{}", urlencoding_path(room_name))));
    }
    let mut guest = match &token {
        Some(token) => join::authenticate(app, Pass::Token { token, room: Some(room_name) }).await?,
        None => {
            if !app.rooms.get(room_name).is_some_and(|r| lock(&r).is_live()) {
                return Err(refuse(StatusCode::NOT_FOUND, "this room is not live"));
            }
            anonymous_guest(room_name)
        }
    };
    if guest.claims.room != room_name {
        return Err(refuse(StatusCode::FORBIDDEN, "this token is for another room"));
    }
    guest.kind = ParticipantKind::Player;

    let (out_tx, out_rx) = crate::live::room::outbox(256);
    let (ev_tx, ev_rx) = sfu::event_channel(64);
    let Joined { id: participant, room, .. } = join::join(app, &guest, Seat::Later, out_tx, ev_tx).await?;
    let stage = lock(&room).stage_tracks();
    let answer = match app.sfu.watch(participant, offer.clone(), stage).await {
        Ok(answer) => answer,
        Err(e) => {
            join::leave(app, participant, &room, "WHEP offer refused");
            return Err(e.into());
        }
    };
    let resource = hex::encode(rand::random::<[u8; 16]>());
    let tag = etag();
    let player = Arc::new(Player {
        participant,
        room_name: room_name.to_owned(),
        identity: guest.claims.identity.clone(),
        anonymous,
        room: room.clone(),
        resource: resource.clone(),
        ice: Mutex::new(WhipIce { etag: tag.clone(), offer }),
        generation: AtomicUsize::new(0),
        connected: Mutex::new(false),
    });
    app.players.lock().insert(resource.clone(), player.clone());
    // The stage may have changed between the snapshot above and the outbox task's start: one
    // more look once the task listens.
    tokio::spawn(player_outbox(app.clone(), player.clone(), out_rx));
    tokio::spawn(player_events(app.clone(), player.clone(), ev_rx));
    follow_stage(app, &player);
    tracing::info!(room = %room_name, %participant, identity = %guest.claims.identity, "WHEP player joined");

    let location = format!("/whep/{}/{resource}", urlencoding_path(room_name));
    let mut res = (StatusCode::CREATED, answer).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    h.insert(header::LOCATION, HeaderValue::from_str(&location).map_err(|_| refuse(StatusCode::BAD_REQUEST, "room name"))?);
    h.insert(header::ETAG, HeaderValue::from_str(&tag).map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "etag"))?);
    h.insert("accept-patch", HeaderValue::from_static(FRAG));
    ice_server_links(app, h);
    Ok(res)
}

/// The player's slots carry the stage as it is now.
fn follow_stage(app: &AppState, player: &Player) {
    let stage = lock(&player.room).stage_tracks();
    if let Err(e) = app.sfu.set_slots(player.participant, stage) {
        tracing::debug!(participant = %player.participant, "set_slots: {e}");
    }
}

/// The player leaves its room (once; later calls do nothing).
fn end_player(app: &AppState, player: &Arc<Player>, reason: &str) {
    let removed = {
        let mut players = app.players.lock();
        match players.get(&player.resource) {
            Some(p) if Arc::ptr_eq(p, player) => players.remove(&player.resource).is_some(),
            _ => false,
        }
    };
    if !removed {
        return;
    }
    player.generation.fetch_add(1, Ordering::SeqCst);
    tracing::info!(room = %player.room_name, participant = %player.participant, %reason, "WHEP player left");
    join::leave(app, player.participant, &player.room, reason);
}

/// What the room tells the player's participant: a stage change moves its slots; a ban or the
/// end of the room ends it. Chat and the rest are not for a standard player.
async fn player_outbox(app: AppState, player: Arc<Player>, mut rx: OutboxReader) {
    while let Some(out) = rx.recv().await {
        match &*out.msg {
            ServerMsg::RoomEnded { reason } => return end_player(&app, &player, reason),
            ServerMsg::Kicked { reason, .. } => return end_player(&app, &player, reason),
            ServerMsg::TrackPublished { .. }
            | ServerMsg::TrackUnpublished { .. }
            | ServerMsg::RoomUpdate { .. }
            | ServerMsg::ParticipantLeft { .. } => follow_stage(&app, &player),
            _ => {}
        }
        if rx.needs_resync() {
            // Messages were dropped (a burst beyond the queue): the end, a ban or a stage change
            // may be among them. The room says where things stand.
            let (ended, banned) = {
                let r = lock(&player.room);
                let kicked = r.resync(player.participant, &rx).is_some_and(|m| matches!(m.first(), Some(ServerMsg::Kicked { .. })));
                (r.state() == crate::protocol::RoomState::Ended, kicked)
            };
            if ended || banned {
                return end_player(&app, &player, if ended { "the room ended" } else { "banned" });
            }
            follow_stage(&app, &player);
        }
    }
}

/// The SFU's word about the player's connection: closed ends it; down for longer than the
/// resume grace (failed at once when there is none) ends it too.
async fn player_events(app: AppState, player: Arc<Player>, mut rx: sfu::Events) {
    while let Some(ev) = rx.recv().await {
        match ev {
            SfuEvent::SessionClosed(SessionRole::Subscriber, reason) => {
                return end_player(&app, &player, &format!("the WHEP connection closed ({reason})"));
            }
            SfuEvent::Connection(SessionRole::Subscriber, state) => on_connection(&app, &player, state),
            _ => {}
        }
        if rx.take_lag() {
            // Only connection states matter here, and the next one says where it stands.
            tracing::debug!(participant = %player.participant, "WHEP player's events lagged");
        }
    }
}

fn on_connection(app: &AppState, player: &Arc<Player>, state: ConnState) {
    let connected = state == ConnState::Connected;
    let was = std::mem::replace(&mut *plock(&player.connected), connected);
    let generation = player.generation.fetch_add(1, Ordering::SeqCst) + 1;
    if connected {
        if !was {
            tracing::info!(room = %player.room_name, participant = %player.participant, "WHEP player connected");
        }
        return;
    }
    let grace = Duration::from_secs(app.config.limits.resume_grace_secs);
    if state == ConnState::Failed && grace.is_zero() {
        return end_player(app, player, "the WHEP connection failed");
    }
    let (app, player) = (app.clone(), player.clone());
    tokio::spawn(async move {
        tokio::time::sleep(grace.max(Duration::from_secs(1))).await;
        if player.generation.load(Ordering::SeqCst) == generation && !*plock(&player.connected) {
            end_player(&app, &player, "the WHEP connection did not come back");
        }
    });
}

/// An anonymous viewer of a public embed: a random identity of its own.
fn anonymous_guest(room: &str) -> join::Guest {
    let claims = Claims {
        identity: format!("embed:{}", hex::encode(rand::random::<[u8; 6]>())),
        name: "Embed viewer".into(),
        room: room.to_owned(),
        role: Role::Viewer,
        exp: u64::MAX,
        profile: None,
    };
    join::Guest { claims, kind: ParticipantKind::Player, stream_key: None }
}

/// The player at `/whep/{room}/{resource}`, when the bearer token is a token of its identity
/// for its room (an anonymous player's session URL, an unguessable 128-bit id, is its only
/// credential).
async fn resource_player(app: &AppState, room: &str, resource: &str, headers: &HeaderMap) -> Result<Arc<Player>, Refusal> {
    let player = app
        .players
        .lock()
        .get(resource)
        .filter(|p| p.room_name == room)
        .cloned()
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no such WHEP session (it ended, or never was)"))?;
    if player.anonymous {
        return Ok(player);
    }
    let token = bearer(headers).map_err(|e| Refusal(StatusCode::UNAUTHORIZED, e.message))?.to_owned();
    let guest = join::authenticate(app, Pass::Token { token: &token, room: Some(room) }).await?;
    if guest.claims.identity != player.identity {
        return Err(refuse(StatusCode::FORBIDDEN, "this session belongs to another identity"));
    }
    Ok(player)
}

/// `PATCH /whep/{room}/{resource}`: trickled candidates, or an ICE restart (`If-Match: *`).
async fn update(State(app): State<AppState>, Path((room, resource)): Path<(String, String)>, headers: HeaderMap, body: Body) -> Response {
    match patch(&app, &room, &resource, &headers, body).await {
        Ok(res) => res,
        Err(r) => r.into_response(),
    }
}

async fn patch(app: &AppState, room: &str, resource: &str, headers: &HeaderMap, body: Body) -> Result<Response, Refusal> {
    let player = resource_player(app, room, resource, headers).await?;
    content_type(headers, FRAG)?;
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::trim).map(str::to_owned);
    let text = text_body(body, sdpfrag::MAX_FRAG_BYTES).await?;
    let frag = sdpfrag::parse(&text).map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
    match if_match.as_deref() {
        Some("*") => return restart(app, &player, frag).await,
        // Trickle without If-Match is taken (players such as whip-whep's send none); with one,
        // it must be the ICE session's.
        Some(tags) => {
            let current = plock(&player.ice).etag.clone();
            if !etag_matches(tags, &current) {
                return Err(refuse(StatusCode::PRECONDITION_FAILED, "the ETag is not the ICE session's (an ICE restart changed it)"));
            }
        }
        None => {}
    }
    add_candidates(app, player.participant, SessionRole::Subscriber, &frag).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// An ICE restart: the session's offer again with the player's new credentials; our answer's
/// new credentials and candidate go back as a fragment, with a new ETag.
async fn restart(app: &AppState, player: &Player, frag: Frag) -> Result<Response, Refusal> {
    let (ufrag, pwd) = restart_credentials(&frag)?;
    let offer = sdpfrag::restart_offer(&plock(&player.ice).offer, ufrag, pwd);
    let stage = lock(&player.room).stage_tracks();
    let answer = app.sfu.watch(player.participant, offer.clone(), stage).await?;
    add_candidates(app, player.participant, SessionRole::Subscriber, &frag).await?;
    let tag = etag();
    *plock(&player.ice) = WhipIce { etag: tag.clone(), offer };
    tracing::info!(room = %player.room_name, participant = %player.participant, "WHEP ICE restart");
    restart_reply(&answer, &tag)
}

/// `DELETE /whep/{room}/{resource}`: the player is done.
async fn remove(State(app): State<AppState>, Path((room, resource)): Path<(String, String)>, headers: HeaderMap) -> Response {
    match resource_player(&app, &room, &resource, &headers).await {
        Ok(player) => {
            end_player(&app, &player, "the player ended the WHEP session");
            StatusCode::OK.into_response()
        }
        Err(r) => r.into_response(),
    }
}
