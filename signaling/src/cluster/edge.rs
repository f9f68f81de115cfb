//! A viewer served by an edge (cluster/cascade.rs): its media here, its room at the origin.
//!
//! The viewer's connection is carried to the origin as a member connection of its own (signed:
//! the origin then subscribes it to nothing), and everything passes through unchanged but for
//! the subscriber connection's messages, which this node answers from its relayed tracks:
//! `answer`, `candidate` for the subscriber, `ice_restart`, `video_size`, `quality` and
//! `get_stats`. The SFU's events about that connection (`offer`, `candidate`,
//! `connection_state`, `layers`, `audio_only`) are this node's. A publish goes to the origin
//! (the viewer invited on stage publishes there). Either side closing ends both; the relay
//! ending (the origin gone) closes the viewer's connection with 1012, and the page joins again.

use crate::app::AppState;
use crate::cluster::NodeRecord;
use crate::cluster::cascade::{self, EdgeRoom, Relayed};
use crate::error::{AppError, ErrorCode};
use crate::live::media::{candidate_init, clamp_height};
use crate::protocol::{ClientMsg, PROTOCOL_VERSION, ServerMsg, Target};
use crate::transport::limits::{Admit, Heartbeat, Limits};
use crate::transport::websocket::{
    CLOSE_CLIENT_RECONNECTING, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_REDIRECT, CLOSE_RESTART, Recv, Socket, WsMessage,
};
use futures_util::{SinkExt, StreamExt};
use sfu::{ParticipantId, SessionRole, TrackId};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite;

/// What the viewer asked for at the door.
pub struct Door {
    pub token: String,
    pub room: String,
    pub resume: Option<String>,
}

/// Whether this node serves `room`'s viewer as an edge of its live on `origin` (the cascade is
/// on, the node does not drain, the participant only watches).
pub fn serves(app: &AppState, role: crate::auth::Role) -> bool {
    role == crate::auth::Role::Viewer && app.draining.get().is_none() && app.cluster.as_ref().and_then(|c| c.cascade_secret()).is_some()
}

/// Serve one viewer as an edge. When the relay cannot start, the viewer is redirected to the
/// origin (as without a cascade).
pub async fn serve(mut socket: Socket, app: AppState, origin: NodeRecord, door: Door) {
    let Some(cluster) = app.cluster.clone() else { return };
    let Some(secret) = cluster.cascade_secret().map(<[u8]>::to_vec) else { return };
    let room = door.room.clone();
    let edge = match cascade::ensure(&app, &secret, &room, &origin) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(%room, "cascade: no relay: {e}");
            return redirect(socket, &origin, &room).await;
        }
    };
    let served = serve_with(&mut socket, &app, &secret, cluster.id(), &origin, &door, &edge).await;
    edge.release();
    match served {
        Ok(Some((code, reason))) => socket.close(code, &reason).await,
        Ok(None) => socket.finish().await,
        Err(Fallback) => redirect(socket, &origin, &room).await,
    }
}

/// The relay or the origin did not start: send the viewer to the origin instead.
struct Fallback;

async fn redirect(mut socket: Socket, origin: &NodeRecord, room: &str) {
    metrics::counter!("onair_joins_total", "stage" => "redirected", "reason" => "").increment(1);
    let msg = ServerMsg::Redirect { url: origin.ws_url(), node: origin.id.clone(), room: room.to_owned() };
    let _ = socket.send_json(&msg).await;
    socket.close(CLOSE_REDIRECT, "redirect").await;
}

/// The relayed tracks the viewer (`me` at the origin) is sent, each under its publisher at the
/// origin: the stream id of the viewer's offer (msid) is the participant the room names, as on
/// the origin (the page puts a stream's audio and video in that participant's tile).
fn wanted(tracks: &Option<Vec<Relayed>>, me: ParticipantId) -> Vec<sfu::TrackInfo> {
    tracks
        .iter()
        .flatten()
        .filter(|r| r.origin_publisher != me)
        .map(|r| sfu::TrackInfo { publisher: r.origin_publisher, ..r.info.clone() })
        .collect()
}

/// How the viewer's connection ends: the close to send (None: it is gone), or a fallback.
async fn serve_with(
    socket: &mut Socket,
    app: &AppState,
    secret: &[u8],
    me_node: &str,
    origin: &NodeRecord,
    door: &Door,
    edge: &Arc<EdgeRoom>,
) -> Result<Option<(u16, String)>, Fallback> {
    // The relay's first word from the origin (the stage), bounded.
    let mut tracks = edge.tracks.clone();
    let ready = matches!(tokio::time::timeout(cascade::CONNECT, tracks.wait_for(Option::is_some)).await, Ok(Ok(_)));
    if !ready {
        metrics::counter!("onair_cascade_errors_total", "op" => "relay_start").increment(1);
        return Err(Fallback);
    }
    // The member connection at the origin.
    let url = format!("{}/ws", cascade::internal_ws(origin));
    let headers =
        [(cascade::HEADER, cascade::sign(secret, &cascade::member_what(&door.room, me_node))), ("x-onair-edge", me_node.to_owned())];
    let Ok(mut up) = cascade::connect(&url, &headers).await else {
        metrics::counter!("onair_cascade_errors_total", "op" => "member").increment(1);
        return Err(Fallback);
    };
    let join =
        serde_json::json!({ "type": "join", "token": door.token, "room": door.room, "protocol": PROTOCOL_VERSION, "resume": door.resume });
    if up.send(tungstenite::Message::text(join.to_string())).await.is_err() {
        return Err(Fallback);
    }
    // The origin's answer to the join: `joined` (passed on), or a refusal (passed on, closed).
    let first = loop {
        match tokio::time::timeout(Duration::from_secs(10), up.next()).await {
            Ok(Some(Ok(tungstenite::Message::Text(t)))) => break t,
            Ok(Some(Ok(tungstenite::Message::Close(c)))) => {
                return Ok(Some(c.map(|c| (u16::from(c.code), c.reason.to_string())).unwrap_or((CLOSE_NORMAL, String::new()))));
            }
            Ok(Some(Ok(_))) => continue,
            _ => return Err(Fallback),
        }
    };
    let mut joined: serde_json::Value = serde_json::from_str(first.as_str()).unwrap_or_default();
    let me = joined.get("participant").and_then(|p| p.get("id")).and_then(|id| serde_json::from_value::<ParticipantId>(id.clone()).ok());
    // A resume: the origin kept the member (its seat, its place in the room), but this node's
    // media session for it is new — the client must build a new subscriber connection, as after
    // a fresh join, not restart the old one's ICE.
    let first = if joined.get("resumed") == Some(&serde_json::Value::Bool(true)) {
        joined["resumed"] = serde_json::Value::Bool(false);
        joined.to_string()
    } else {
        first.to_string()
    };
    if !socket.send_text(first).await {
        return Ok(None);
    }
    let Some(me) = me else {
        // A refusal: the origin closes next, with its code.
        return Ok(Some(match tokio::time::timeout(Duration::from_secs(3), up.next()).await {
            Ok(Some(Ok(tungstenite::Message::Close(Some(c))))) => (u16::from(c.code), c.reason.to_string()),
            _ => (CLOSE_POLICY, "refused".into()),
        }));
    };
    metrics::counter!("onair_joins_total", "stage" => "signal_connected", "reason" => "").increment(1);
    metrics::counter!("onair_cascade_viewers_total").increment(1);
    // The viewer's media here.
    let id = ParticipantId::next();
    let (ev_tx, mut events) = sfu::event_channel(512);
    if app.sfu.add_participant(id, ev_tx).is_err() {
        let _ = up.close(None).await;
        return Ok(Some((CLOSE_RESTART, "server busy".into())));
    }
    tracing::info!(room = %door.room, participant = %id, origin = %origin.id, "viewer served here as an edge of the live");
    let mut subscribed: HashSet<TrackId> = HashSet::new();
    let first_tracks = wanted(&tracks.borrow_and_update(), me);
    subscribed.extend(first_tracks.iter().map(|t| t.id));
    if let Err(e) = app.sfu.subscribe_all(id, first_tracks) {
        tracing::warn!(participant = %id, "edge: subscribe on join: {e}");
    }
    let max = app.config.limits.max_message_bytes;
    // The viewer's connection is watched here as on the origin: pinged, closed when silent.
    let mut heartbeat = Heartbeat::new(Duration::from_secs(app.config.limits.idle_timeout_secs), Instant::now());
    let mut ping = tokio::time::interval(heartbeat.ping_interval());
    ping.tick().await;
    let mut limits = Limits::new(app.config.limits.messages_per_second, app.config.limits.message_burst, Instant::now());
    let end = loop {
        tokio::select! {
            m = socket.recv() => {
                heartbeat.heard(Instant::now());
                match m {
                Recv::Message(WsMessage::Text(t)) => {
                    match limits.admit(Instant::now()) {
                        Admit::Pass => {}
                        Admit::Drop { notify } => {
                            if notify {
                                let e = AppError::new(ErrorCode::RateLimited, "too many messages: slow down");
                                let _ = socket.send_json(&ServerMsg::error(&e)).await;
                            }
                            continue;
                        }
                        Admit::Close(reason) => break Some((CLOSE_POLICY, reason.to_owned())),
                    }
                    let local = match crate::ws::parse(t.as_str(), max) {
                        Ok(msg) => local(app, id, msg).await,
                        Err(_) => None, // the origin answers it
                    };
                    match local {
                        Some(Ok(Some(reply))) => {
                            if !socket.send_json(&reply).await {
                                break None;
                            }
                        }
                        Some(Ok(None)) => {}
                        Some(Err((e, kind))) => {
                            if !socket.send_json(&ServerMsg::error_for(&e, &kind)).await {
                                break None;
                            }
                        }
                        None => {
                            if up.send(tungstenite::Message::text(t.as_str())).await.is_err() {
                                break Some((CLOSE_RESTART, "the live's node went away: join again".into()));
                            }
                        }
                    }
                }
                Recv::Message(WsMessage::Binary(_)) => {
                    let e = AppError::new(ErrorCode::BadMessage, "binary frames are not part of the protocol");
                    let _ = socket.send_json(&ServerMsg::error(&e)).await;
                }
                Recv::Message(_) => {}
                // A client that means to come back (4000), or whose network went (no close
                // frame): the origin keeps its member for a resume, as for a direct connection.
                Recv::Closed(Some(CLOSE_CLIENT_RECONNECTING)) | Recv::Gone => {
                    close_upstream(&mut up, CLOSE_CLIENT_RECONNECTING).await;
                    break None;
                }
                Recv::Closed(_) => {
                    close_upstream(&mut up, CLOSE_NORMAL).await;
                    break None;
                }
                Recv::Refused(_) => {
                    close_upstream(&mut up, CLOSE_NORMAL).await;
                    break Some((crate::transport::websocket::CLOSE_TOO_BIG, "frame refused".into()));
                }
                }
            },
            _ = ping.tick() => match heartbeat.tick(Instant::now()) {
                Err(reason) => {
                    close_upstream(&mut up, CLOSE_CLIENT_RECONNECTING).await;
                    break Some((CLOSE_POLICY, reason.to_owned()));
                }
                Ok(()) => {
                    let _ = socket.ping().await;
                }
            },
            m = up.next() => match m {
                Some(Ok(tungstenite::Message::Text(t))) => {
                    if !socket.send_text(t.to_string()).await {
                        let _ = up.close(None).await;
                        break None;
                    }
                }
                Some(Ok(tungstenite::Message::Close(c))) => {
                    break Some(c.map(|c| (u16::from(c.code), c.reason.to_string())).unwrap_or((CLOSE_NORMAL, String::new())));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break Some((CLOSE_RESTART, "the live's node went away: join again".into())),
            },
            r = tracks.changed() => {
                if r.is_err() {
                    let _ = up.close(None).await;
                    break Some((CLOSE_RESTART, "the live's relay ended: join again".into()));
                }
                let now = wanted(&tracks.borrow_and_update(), me);
                subscribed.retain(|t| now.iter().any(|n| n.id == *t));
                let new: Vec<sfu::TrackInfo> = now.into_iter().filter(|t| !subscribed.contains(&t.id)).collect();
                subscribed.extend(new.iter().map(|t| t.id));
                if let Err(e) = app.sfu.subscribe_all(id, new) {
                    tracing::warn!(participant = %id, "edge: subscribe: {e}");
                }
            }
            ev = events.recv() => {
                let Some(ev) = ev else { break Some((CLOSE_RESTART, "media plane stopped".into())) };
                if let Some(msg) = crate::ws::client_msg(id, ev)
                    && !socket.send_json(&msg).await
                {
                    let _ = up.close(None).await;
                    break None;
                }
                if events.take_lag() {
                    let _ = app.sfu.resync(id);
                }
            }
        }
    };
    app.sfu.remove_participant(id);
    Ok(end)
}

/// Close the member connection at the origin with `code` (4000: the member may resume).
async fn close_upstream(up: &mut cascade::Upstream, code: u16) {
    let frame = tungstenite::protocol::CloseFrame { code: code.into(), reason: "".into() };
    let _ = up.close(Some(frame)).await;
}

/// A message this node answers itself (the viewer's subscriber connection); `None`: the
/// origin's. The reply to send, or the refusal and the message's type.
async fn local(app: &AppState, id: ParticipantId, msg: ClientMsg) -> Option<Result<Option<ServerMsg>, (AppError, String)>> {
    let kind = msg.kind();
    let done = |r: Result<(), sfu::SfuError>| r.map(|()| None).map_err(AppError::from);
    let r = match msg {
        ClientMsg::Answer { sdp } => done(app.sfu.subscriber_answer(id, sdp).await),
        ClientMsg::IceRestart => done(app.sfu.restart_ice(id).await),
        ClientMsg::Candidate { target: Target::Subscriber, candidate } => match candidate_init(candidate) {
            Ok(init) => done(app.sfu.add_candidate(id, SessionRole::Subscriber, init).await),
            Err(e) => Err(e),
        },
        ClientMsg::VideoSize { track, width: _, height } => done(app.sfu.set_video_size(id, track, clamp_height(height))),
        ClientMsg::Quality { track, quality } => done(app.sfu.set_quality(id, track, quality)),
        ClientMsg::GetStats => app.sfu.subscriber_stats(id).await.map(|s| Some(crate::live::stats::stats_msg(s))).map_err(AppError::from),
        _ => return None,
    };
    Some(r.map_err(|e| (e, kind.to_owned())))
}
