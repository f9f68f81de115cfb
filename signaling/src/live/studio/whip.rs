//! WHIP (RFC 9725): a studio feed over WebRTC. OBS (30+), ffmpeg and browser publishers POST
//! an SDP offer with a stream key as the bearer token; the feed takes a seat like an RTMP one
//! (the same keys, the same seat rules) and publishes through the SFU's publisher session.
//!
//! ```text
//! POST   /whip/{room}             offer → 201, Location /whip/{room}/{resource}, ETag, answer
//! PATCH  /whip/{room}/{resource}  If-Match: the ETag → trickled candidates (204)
//!                                 If-Match: *        → ICE restart (200, our new fragment, ETag)
//! DELETE /whip/{room}/{resource}  the feed ends (200)
//! OPTIONS on both                 CORS preflight (browser publishers on other origins)
//! GET on both                     204 (RFC 9725 §4.1)
//! ```
//!
//! A second POST with a key whose WHIP feed is live takes over (the encoder lost its session
//! and starts again); a key streaming over RTMP is refused with 409. The feed ends on DELETE,
//! when its connection closes, when it stays failed past `rtmp.grace_secs`, on revocation, when
//! the host takes it off stage, or when the room ends (docs/whip-whep.md).

use super::sdpfrag::{self, Frag};
use crate::api::{bearer, read_body};
use crate::app::AppState;
use crate::error::{AppError, ErrorCode};
use crate::live::join::{self, Joined, Pass, Seat};
use crate::live::room::lock;
use crate::live::studio::feeds::{Feed, WhipIce, plock};
use crate::live::studio::lifecycle::{end_feed, feed_outbox};
use crate::protocol::{ServerMsg, StudioState};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sfu::{ConnState, SessionRole, SfuError, SfuEvent};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest SDP offer accepted (bytes): a four-layer simulcast offer from Chrome is ~8 KB.
pub const MAX_OFFER_BYTES: usize = 64 * 1024;

pub(crate) const SDP: &str = "application/sdp";
pub(crate) const FRAG: &str = "application/trickle-ice-sdpfrag";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/whip/{room}", post(create).options(preflight).get(no_content))
        .route("/whip/{room}/{resource}", axum::routing::patch(update).delete(remove).options(preflight).get(no_content))
        .layer(axum::middleware::map_response(cors))
}

/// Every WHIP response may be read by a page of another origin (the key is a bearer token, no
/// cookie is involved), headers included.
pub(crate) async fn cors(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Location, ETag, Link, Accept-Patch"));
    res
}

/// Many nodes: the room's live is on `node`; the client posts its offer there (RFC 9725 §4.5:
/// 307 keeps the method and the body). `path` is this endpoint's path (`/whip/<room>`).
pub(crate) fn redirect(node: &crate::cluster::NodeRecord, path: &str) -> Response {
    let location = format!("{}{path}", node.url.trim_end_matches('/'));
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, v)]).into_response(),
        // A node URL that is no header value is the operator's typo: say so rather than guess.
        Err(_) => Refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("node {} has an unusable cluster.url", node.id)).into_response(),
    }
}

/// GET on an endpoint or a session: 2xx and no content (RFC 9725 §4.1).
pub(crate) async fn no_content() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// OPTIONS: the CORS preflight of a browser publisher, and `Accept-Post` (RFC 9725 §4.2).
pub(crate) async fn preflight() -> Response {
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, PATCH, DELETE, OPTIONS"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Authorization, Content-Type, If-Match"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    h.insert("accept-post", HeaderValue::from_static(SDP));
    h.insert("accept-patch", HeaderValue::from_static(FRAG));
    res
}

/// A WHIP refusal: an HTTP status (RFC 9725 names most of them) and a plain-text reason.
pub(crate) struct Refusal(pub StatusCode, pub String);

impl From<AppError> for Refusal {
    fn from(e: AppError) -> Self {
        let status = match e.code {
            ErrorCode::BadStreamKey => StatusCode::UNAUTHORIZED,
            // An offer we cannot take: well-formed HTTP, unusable content.
            ErrorCode::BadSdp | ErrorCode::BadCandidate => StatusCode::UNPROCESSABLE_ENTITY,
            code => StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("WHIP: {e}");
        }
        Refusal(status, format!("{}: {}", e.code, e.message))
    }
}

impl From<SfuError> for Refusal {
    fn from(e: SfuError) -> Self {
        AppError::from(e).into()
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        tracing::debug!(status = %self.0, "WHIP refused: {}", self.1);
        let mut res = (self.0, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.1).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        res
    }
}

pub(crate) fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, message.into())
}

/// The request's content type is `want` (parameters aside), or 415.
pub(crate) fn content_type(headers: &HeaderMap, want: &str) -> Result<(), Refusal> {
    let got = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let base = got.split(';').next().unwrap_or("").trim();
    if base.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("the body must be {want}")))
    }
}

pub(crate) async fn text_body(body: Body, limit: usize) -> Result<String, Refusal> {
    let bytes = read_body(body, limit).await?;
    String::from_utf8(bytes.to_vec()).map_err(|_| refuse(StatusCode::BAD_REQUEST, "the body is not UTF-8 text"))
}

pub(crate) fn etag() -> String {
    format!("\"{}\"", hex::encode(rand::random::<[u8; 8]>()))
}

/// `Link: <url>; rel="ice-server"` for each configured STUN/TURN server (RFC 9725 §4.6), on a
/// 201 (the values were checked when the config was loaded).
pub(crate) fn ice_server_links(app: &AppState, headers: &mut HeaderMap) {
    for link in app.config.rtc.ice_servers.iter().flat_map(|s| s.links()) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            headers.append(header::LINK, v);
        }
    }
}

/// `POST /whip/{room}`: the offer, with the stream key as the bearer token.
async fn create(State(app): State<AppState>, Path(room): Path<String>, headers: HeaderMap, body: Body) -> Response {
    match open(&app, &room, &headers, body).await {
        Ok(res) => res,
        Err(r) => r.into_response(),
    }
}

async fn open(app: &AppState, room_name: &str, headers: &HeaderMap, body: Body) -> Result<Response, Refusal> {
    let key = bearer(headers).map_err(|e| Refusal(StatusCode::UNAUTHORIZED, e.message))?.to_owned();
    content_type(headers, SDP)?;
    let offer = text_body(body, MAX_OFFER_BYTES).await?;
    let guest = join::authenticate(app, Pass::StreamKey(&key)).await?;
    let key = guest.stream_key.clone().ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "unknown stream key"))?;
    if key.room != room_name {
        return Err(refuse(StatusCode::FORBIDDEN, "this stream key is for another room"));
    }
    if let Some(node) = join::elsewhere(app, room_name).await {
        return Ok(redirect(&node, &format!("/whip/{}", urlencoding_path(room_name))));
    }
    // One feed per key: a WHIP feed still there is taken over (its encoder starts again), an
    // RTMP one keeps the key.
    let existing = plock(&app.studio.feeds).get(&key.id).cloned();
    if let Some(old) = existing {
        if old.whip.is_none() {
            return Err(AppError::new(ErrorCode::StreamKeyInUse, "this key is streaming over RTMP").into());
        }
        end_feed(app, &old, "replaced by a new WHIP session");
    }

    let (out_tx, out_rx) = crate::live::room::outbox(256);
    let (ev_tx, ev_rx) = sfu::event_channel(64);
    let Joined { id: participant, room, .. } = join::join(app, &guest, Seat::Now, out_tx, ev_tx).await.map_err(|e| match e.code {
        ErrorCode::StageFull => AppError { message: format!("{}; free a seat and retry", e.message), ..e },
        _ => e,
    })?;
    let answer = match app.sfu.publish(participant, offer.clone()).await {
        Ok(answer) => answer,
        Err(e) => {
            join::leave(app, participant, &room, "WHIP offer refused");
            return Err(e.into());
        }
    };
    let resource = hex::encode(rand::random::<[u8; 16]>());
    let tag = etag();
    let feed = Feed::new(&key, participant, room.clone(), None, Some((resource.clone(), WhipIce { etag: tag.clone(), offer })));
    {
        let mut feeds = plock(&app.studio.feeds);
        if feeds.contains_key(&key.id) {
            drop(feeds);
            join::leave(app, participant, &room, "another session took the key");
            return Err(AppError::new(ErrorCode::StreamKeyInUse, "another session started with this key at the same time").into());
        }
        feeds.insert(key.id.clone(), feed.clone());
    }
    tokio::spawn(feed_outbox(app.clone(), feed.clone(), out_rx));
    tokio::spawn(whip_events(app.clone(), feed.clone(), ev_rx));
    tracing::info!(room = %feed.room_name, participant = %participant, key = %feed.key_id, "WHIP feed opened");

    let location = format!("/whip/{}/{resource}", urlencoding_path(room_name));
    let mut res = (StatusCode::CREATED, answer).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    h.insert(header::LOCATION, HeaderValue::from_str(&location).map_err(|_| refuse(StatusCode::BAD_REQUEST, "room name"))?);
    h.insert(header::ETAG, HeaderValue::from_str(&tag).map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "etag"))?);
    h.insert("accept-patch", HeaderValue::from_static(FRAG));
    ice_server_links(app, h);
    Ok(res)
}

/// A room name as one path segment.
pub(crate) fn urlencoding_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The SFU's word about a WHIP feed: its tracks go to the room; its connection's state is the
/// feed's; a closed session, or one failed for longer than the grace, ends the feed.
async fn whip_events(app: AppState, feed: Arc<Feed>, mut rx: sfu::Events) {
    while let Some(ev) = rx.recv().await {
        match join::on_track_event(&app, &feed.room, ev) {
            Some(SfuEvent::SessionClosed(SessionRole::Publisher, reason)) => {
                end_feed(&app, &feed, &format!("the WHIP connection closed ({reason})"));
                return;
            }
            Some(SfuEvent::Connection(SessionRole::Publisher, state)) => on_connection(&app, &feed, state),
            _ => {}
        }
    }
}

fn on_connection(app: &AppState, feed: &Arc<Feed>, state: ConnState) {
    let connected = state == ConnState::Connected;
    let was = std::mem::replace(&mut *plock(&feed.connected), connected);
    let generation = feed.generation.fetch_add(1, Ordering::SeqCst) + 1;
    if connected && !was {
        tracing::info!(room = %feed.room_name, participant = %feed.participant, "WHIP feed live");
        lock(&feed.room).broadcast_all(ServerMsg::StudioState { participant: feed.participant, state: StudioState::Live, reason: None });
    } else if !connected && was {
        let grace = Duration::from_secs(app.config.rtmp.grace_secs);
        lock(&feed.room).broadcast_all(ServerMsg::StudioState {
            participant: feed.participant,
            state: StudioState::Reconnecting,
            reason: Some(format!("the WHIP connection was lost; the seat is held for {} s", grace.as_secs())),
        });
        let (app, feed) = (app.clone(), feed.clone());
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if feed.generation.load(Ordering::SeqCst) == generation && !*plock(&feed.connected) {
                end_feed(&app, &feed, "the WHIP connection did not come back within the grace period");
            }
        });
    }
}

/// The WHIP feed at `/whip/{room}/{resource}`, when the bearer token is its stream key.
async fn resource_feed(app: &AppState, room: &str, resource: &str, headers: &HeaderMap) -> Result<Arc<Feed>, Refusal> {
    let key = bearer(headers).map_err(|e| Refusal(StatusCode::UNAUTHORIZED, e.message))?.to_owned();
    let feed = plock(&app.studio.feeds)
        .values()
        .find(|f| f.room_name == room && f.whip.as_ref().is_some_and(|(r, _)| r == resource))
        .cloned()
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no such WHIP session (it ended, or never was)"))?;
    let guest = join::authenticate(app, Pass::StreamKey(&key)).await?;
    if guest.stream_key.as_ref().map(|k| &k.id) != Some(&feed.key_id) {
        return Err(refuse(StatusCode::FORBIDDEN, "this session belongs to another stream key"));
    }
    Ok(feed)
}

/// `PATCH /whip/{room}/{resource}`: trickled candidates, or an ICE restart.
async fn update(State(app): State<AppState>, Path((room, resource)): Path<(String, String)>, headers: HeaderMap, body: Body) -> Response {
    match patch(&app, &room, &resource, &headers, body).await {
        Ok(res) => res,
        Err(r) => r.into_response(),
    }
}

async fn patch(app: &AppState, room: &str, resource: &str, headers: &HeaderMap, body: Body) -> Result<Response, Refusal> {
    let feed = resource_feed(app, room, resource, headers).await?;
    content_type(headers, FRAG)?;
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or_else(|| refuse(StatusCode::PRECONDITION_REQUIRED, "If-Match is required: the ETag, or * for an ICE restart"))?
        .to_owned();
    let text = text_body(body, sdpfrag::MAX_FRAG_BYTES).await?;
    let frag = sdpfrag::parse(&text).map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
    let Some((_, ice)) = &feed.whip else { return Err(refuse(StatusCode::NOT_FOUND, "not a WHIP session")) };
    if if_match == "*" {
        return restart(app, &feed, ice, frag).await;
    }
    let current = plock(ice).etag.clone();
    if !etag_matches(&if_match, &current) {
        return Err(refuse(StatusCode::PRECONDITION_FAILED, "the ETag is not the ICE session's (an ICE restart changed it)"));
    }
    add_candidates(app, feed.participant, SessionRole::Publisher, &frag).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Hand a fragment's candidates to one of `participant`'s sessions (WHIP: its publisher
/// session; WHEP: its subscriber session).
pub(crate) async fn add_candidates(app: &AppState, participant: sfu::ParticipantId, role: SessionRole, frag: &Frag) -> Result<(), Refusal> {
    for c in &frag.candidates {
        let init = sfu::RTCIceCandidateInit {
            candidate: c.candidate.clone(),
            sdp_mid: c.mid.clone(),
            sdp_mline_index: Some(c.mline),
            username_fragment: frag.ufrag.clone(),
            ..Default::default()
        };
        app.sfu.add_candidate(participant, role, init).await?;
    }
    Ok(())
}

/// Whether an `If-Match` value names the ICE session's entity tag (weak or strong, one of a list).
pub(crate) fn etag_matches(if_match: &str, current: &str) -> bool {
    if_match.split(',').map(|t| t.trim().trim_start_matches("W/")).any(|t| t == current)
}

/// An ICE restart's new credentials in a fragment (both are needed).
pub(crate) fn restart_credentials(frag: &Frag) -> Result<(&str, &str), Refusal> {
    match (&frag.ufrag, &frag.pwd) {
        (Some(ufrag), Some(pwd)) => Ok((ufrag, pwd)),
        _ => Err(refuse(StatusCode::BAD_REQUEST, "an ICE restart needs a=ice-ufrag and a=ice-pwd")),
    }
}

/// The 200 answering an ICE restart: our new credentials and candidate as a fragment of
/// `answer`, and the new ICE session's `tag`.
pub(crate) fn restart_reply(answer: &str, tag: &str) -> Result<Response, Refusal> {
    let mut res = (StatusCode::OK, sdpfrag::answer_frag(answer)).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(FRAG));
    h.insert(header::ETAG, HeaderValue::from_str(tag).map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "etag"))?);
    Ok(res)
}

/// An ICE restart: the session's offer again with the client's new credentials; our answer's
/// new credentials and candidate go back as a fragment, with a new ETag.
async fn restart(app: &AppState, feed: &Feed, ice: &Mutex<WhipIce>, frag: Frag) -> Result<Response, Refusal> {
    let (ufrag, pwd) = restart_credentials(&frag)?;
    let offer = sdpfrag::restart_offer(&plock(ice).offer, ufrag, pwd);
    let answer = app.sfu.publish(feed.participant, offer.clone()).await?;
    add_candidates(app, feed.participant, SessionRole::Publisher, &frag).await?;
    let tag = etag();
    *plock(ice) = WhipIce { etag: tag.clone(), offer };
    tracing::info!(room = %feed.room_name, participant = %feed.participant, "WHIP ICE restart");
    restart_reply(&answer, &tag)
}

/// `DELETE /whip/{room}/{resource}`: the encoder is done.
async fn remove(State(app): State<AppState>, Path((room, resource)): Path<(String, String)>, headers: HeaderMap) -> Response {
    match resource_feed(&app, &room, &resource, &headers).await {
        Ok(feed) => {
            end_feed(&app, &feed, "the encoder ended the WHIP session");
            StatusCode::OK.into_response()
        }
        Err(r) => r.into_response(),
    }
}
