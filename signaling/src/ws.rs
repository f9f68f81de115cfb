//! One WebSocket session: join, then relay between the client, its room and the SFU.

use crate::AppState;
use crate::auth::Claims;
use crate::error::{ErrorCode, AppError};
use crate::protocol::{Candidate, ClientMsg, PROTOCOL_VERSION, ServerMsg, Target};
use crate::live::room::{Room, lock};
use crate::transport::limits::{Admit, Heartbeat, Limits};
use crate::transport::websocket::{CLOSE_AUTH, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG, Recv, Socket, WsMessage as Message};
use sfu::{ParticipantId, SfuEvent};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Longest candidate string accepted.
const MAX_CANDIDATE_BYTES: usize = 1024;
async fn send(socket: &mut Socket, msg: &ServerMsg) -> bool {
    socket.send_json(msg).await
}

/// Tell the client why, then close with `close_code` (and linger: see `transport::websocket`).
async fn refuse(mut socket: Socket, e: AppError, close_code: u16) {
    let _ = send(&mut socket, &ServerMsg::error(&e)).await;
    socket.close(close_code, &e.message).await;
}

/// The WebSocket layer refused a frame: over the 1 MiB hard cap, or not valid WebSocket framing.
fn frame_refused() -> AppError {
    AppError::new(ErrorCode::BadMessage, "frame refused: larger than 1 MiB or not valid WebSocket framing")
}

/// Parse one text frame, enforcing the size limit.
fn parse(text: &str, max: usize) -> Result<ClientMsg, AppError> {
    if text.len() > max {
        return Err(AppError::new(ErrorCode::MessageTooLarge, format!("messages are limited to {max} bytes")));
    }
    serde_json::from_str(text).map_err(|e| {
        // serde's sentence names the field or type at fault; it never echoes the input.
        AppError::new(ErrorCode::BadMessage, format!("not a valid message: {e}"))
    })
}

/// Wait for `join` (or use the token from the URL) and check it. A refusal comes with the close
/// code to send: 1009 for a message or frame too large (or framing the WebSocket layer refused),
/// 4001 for everything else.
async fn authenticate(
    socket: &mut Socket,
    app: &AppState,
    url_token: Option<String>,
    url_room: Option<String>,
) -> Result<Claims, (AppError, u16)> {
    let auth = |e: AppError| (e, CLOSE_AUTH);
    let max = app.config.limits.max_message_bytes;
    let deadline = Duration::from_secs(app.config.limits.join_timeout_secs);
    let wait = async {
        loop {
            match socket.recv().await {
                Recv::Message(Message::Text(t)) => {
                    return parse(t.as_str(), max).map_err(|e| {
                        let code = if matches!(e.code, ErrorCode::MessageTooLarge) { CLOSE_TOO_BIG } else { CLOSE_AUTH };
                        (e, code)
                    });
                }
                Recv::Message(Message::Binary(_)) => {
                    return Err(auth(AppError::new(ErrorCode::BadMessage, "binary frames are not part of the protocol")));
                }
                Recv::Message(_) => continue, // ping/pong
                Recv::Refused(e) => {
                    tracing::debug!("websocket error before join: {e}");
                    return Err((frame_refused(), CLOSE_TOO_BIG));
                }
                Recv::Closed => return Err(auth(AppError::new(ErrorCode::NotJoined, "connection closed before join"))),
            }
        }
    };
    let msg = tokio::time::timeout(deadline, wait)
        .await
        .map_err(|_| auth(AppError::new(ErrorCode::NotJoined, "send join within the join timeout")))??;
    let ClientMsg::Join { token, room, protocol } = msg else {
        return Err(auth(AppError::new(ErrorCode::NotJoined, "the first message must be join")));
    };
    if let Some(v) = protocol
        && v != PROTOCOL_VERSION
    {
        return Err(auth(AppError::new(ErrorCode::UnsupportedVersion, format!("this server speaks protocol {PROTOCOL_VERSION}"))));
    }
    let token = token.or(url_token).unwrap_or_default();
    app.auth.verify(&token, room.as_deref().or(url_room.as_deref())).map_err(auth)
}

/// The whole life of one connection.
pub async fn run(mut socket: Socket, app: AppState, url_token: Option<String>, url_room: Option<String>, peer: String) {
    let claims = match authenticate(&mut socket, &app, url_token, url_room).await {
        Ok(c) => c,
        Err((e, code)) => {
            tracing::info!(%peer, code = ?e.code, "join refused: {}", e.message);
            refuse(socket, e, code).await;
            return;
        }
    };
    let id = ParticipantId::next();
    let (out_tx, mut out_rx) = mpsc::channel::<ServerMsg>(512);
    let (ev_tx, mut ev_rx) = mpsc::channel::<SfuEvent>(512);
    let room = app.rooms.get_or_create(&claims.room);
    let snapshot = {
        let mut r = lock(&room);
        r.join(id, &claims, out_tx.clone())
    };
    let snapshot = match snapshot {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(%peer, room = %claims.room, code = ?e.code, "join refused: {}", e.message);
            refuse(socket, e, CLOSE_POLICY).await;
            return;
        }
    };
    if let Err(e) = app.sfu.add_participant(id, ev_tx) {
        lock(&room).leave(id, "server busy");
        refuse(socket, e.into(), CLOSE_POLICY).await;
        return;
    }
    tracing::info!(%peer, participant = %id, identity = %claims.identity, room = %claims.room, role = ?claims.role, "joined");
    let joined = ServerMsg::Joined {
        protocol: PROTOCOL_VERSION,
        participant: snapshot.me,
        room: snapshot.room,
        participants: snapshot.participants,
        tracks: snapshot.tracks,
    };
    let mut session = Session {
        app: app.clone(),
        id,
        room: room.clone(),
        claims,
        limits: Limits::new(app.config.limits.messages_per_second, app.config.limits.message_burst, Instant::now()),
    };
    let (reason, close_code) = if !send(&mut socket, &joined).await {
        ("connection lost".to_owned(), None)
    } else {
        if let Err(e) = app.sfu.subscribe_all(id, snapshot.subscribe) {
            tracing::warn!(participant = %id, "subscribe on join: {e}");
        }
        session.serve(&mut socket, &mut out_rx, &mut ev_rx).await
    };
    tracing::info!(participant = %id, %reason, "left");
    lock(&room).leave(id, &reason);
    app.sfu.remove_participant(id);
    // Closed last: the linger (up to two seconds) must not keep the seat or the tracks.
    match close_code {
        Some(code) => socket.close(code, &reason).await,
        None => socket.finish().await,
    }
}

struct Session {
    app: AppState,
    id: ParticipantId,
    room: Arc<Mutex<Room>>,
    claims: Claims,
    limits: Limits,
}

/// What to do after handling one input.
enum Flow {
    Continue,
    Close(u16, String),
}

impl Session {
    /// Relay until the connection ends. Returns why, and the close code to send (none when the
    /// client closed or the connection is gone).
    async fn serve(
        &mut self,
        socket: &mut Socket,
        out_rx: &mut mpsc::Receiver<ServerMsg>,
        ev_rx: &mut mpsc::Receiver<SfuEvent>,
    ) -> (String, Option<u16>) {
        let mut heartbeat = Heartbeat::new(Duration::from_secs(self.app.config.limits.idle_timeout_secs), Instant::now());
        let mut ping = tokio::time::interval(heartbeat.ping_interval());
        ping.tick().await;
        loop {
            let flow = tokio::select! {
                incoming = socket.recv() => {
                    heartbeat.heard(Instant::now());
                    match incoming {
                        Recv::Message(Message::Text(t)) => self.on_text(socket, t.as_str()).await,
                        Recv::Message(Message::Binary(_)) => self.on_bad(socket, AppError::new(ErrorCode::BadMessage, "binary frames are not part of the protocol")).await,
                        Recv::Message(_) => Flow::Continue,
                        Recv::Closed => return ("connection closed".into(), None),
                        Recv::Refused(e) => {
                            // tungstenite refuses frames over the hard cap here.
                            tracing::info!(participant = %self.id, "websocket error: {e}");
                            let _ = send(socket, &ServerMsg::error(&frame_refused())).await;
                            return ("frame too large or malformed".into(), Some(CLOSE_TOO_BIG));
                        }
                    }
                }
                Some(msg) = out_rx.recv() => {
                    let ended = matches!(msg, ServerMsg::RoomEnded { .. });
                    if !send(socket, &msg).await { return ("connection lost".into(), None); }
                    if ended { Flow::Close(CLOSE_NORMAL, "room ended".into()) } else { Flow::Continue }
                }
                Some(ev) = ev_rx.recv() => self.on_sfu_event(socket, ev).await,
                _ = ping.tick() => match heartbeat.tick(Instant::now()) {
                    Err(reason) => Flow::Close(CLOSE_POLICY, reason.into()),
                    Ok(()) => {
                        let _ = socket.ping().await;
                        Flow::Continue
                    }
                },
            };
            if let Flow::Close(code, reason) = flow {
                return (reason, Some(code));
            }
        }
    }

    async fn on_bad(&mut self, socket: &mut Socket, e: AppError) -> Flow {
        tracing::debug!(participant = %self.id, "bad message: {e}");
        let _ = send(socket, &ServerMsg::error(&e)).await;
        match self.limits.malformed() {
            Some(reason) => Flow::Close(CLOSE_POLICY, reason.into()),
            None => Flow::Continue,
        }
    }

    async fn on_text(&mut self, socket: &mut Socket, text: &str) -> Flow {
        match self.limits.admit(Instant::now()) {
            Admit::Pass => {}
            Admit::Drop { notify } => {
                if notify {
                    let e = AppError::new(ErrorCode::RateLimited, "too many messages; this one was dropped");
                    let _ = send(socket, &ServerMsg::error(&e)).await;
                }
                return Flow::Continue;
            }
            Admit::Close(reason) => return Flow::Close(CLOSE_POLICY, reason.into()),
        }
        let msg = match parse(text, self.app.config.limits.max_message_bytes) {
            Ok(m) => m,
            Err(e) => return self.on_bad(socket, e).await,
        };
        match self.on_message(socket, msg).await {
            Ok(flow) => flow,
            Err(e) => {
                if e.code == ErrorCode::Internal {
                    tracing::error!(participant = %self.id, "request failed: {e}");
                } else {
                    tracing::debug!(participant = %self.id, "request refused: {e}");
                }
                let _ = send(socket, &ServerMsg::error(&e)).await;
                Flow::Continue
            }
        }
    }

    async fn on_message(&mut self, socket: &mut Socket, msg: ClientMsg) -> Result<Flow, AppError> {
        let sfu = &self.app.sfu;
        match msg {
            ClientMsg::Join { .. } => Err(AppError::new(ErrorCode::AlreadyJoined, "already joined")),
            ClientMsg::Publish { sdp } => {
                let newly_seated = lock(&self.room).reserve_seat(self.id)?;
                match sfu.publish(self.id, sdp).await {
                    Ok(answer) => {
                        send(socket, &ServerMsg::Answer { sdp: answer }).await;
                        Ok(Flow::Continue)
                    }
                    Err(e) => {
                        // A failed renegotiation keeps the seat of a publisher already on stage.
                        if newly_seated {
                            lock(&self.room).release_seat(self.id);
                        }
                        Err(e.into())
                    }
                }
            }
            ClientMsg::Answer { sdp } => {
                sfu.subscriber_answer(self.id, sdp).await?;
                Ok(Flow::Continue)
            }
            ClientMsg::Candidate { target, candidate } => {
                if candidate.candidate.len() > MAX_CANDIDATE_BYTES {
                    return Err(AppError::new(ErrorCode::BadCandidate, "candidate too long"));
                }
                let init = sfu_candidate(candidate);
                sfu.add_candidate(self.id, target.into(), init).await?;
                Ok(Flow::Continue)
            }
            ClientMsg::Mute { track, muted } => {
                lock(&self.room).set_muted(self.id, track, muted)?;
                Ok(Flow::Continue)
            }
            ClientMsg::Leave => Ok(Flow::Close(CLOSE_NORMAL, "left".into())),
            ClientMsg::EndRoom => {
                lock(&self.room).end(Some(self.id), "the host ended the live")?;
                tracing::info!(room = %self.claims.room, "room ended by host");
                Ok(Flow::Continue) // the room_ended broadcast closes every connection, ours too
            }
            ClientMsg::Ping { ts } => {
                send(socket, &ServerMsg::Pong { ts }).await;
                Ok(Flow::Continue)
            }
            ClientMsg::VideoSize { track, width: _, height } => {
                sfu.set_video_size(self.id, track, height.min(16_384))?;
                Ok(Flow::Continue)
            }
            ClientMsg::Quality { track, quality } => {
                sfu.set_quality(self.id, track, quality)?;
                Ok(Flow::Continue)
            }
            ClientMsg::CreateStreamKey { label } => {
                self.require_host()?;
                let label = label.unwrap_or_default();
                if label.len() > 64 || label.chars().any(char::is_control) {
                    return Err(AppError::new(ErrorCode::BadMessage, "label: at most 64 printable bytes"));
                }
                let minted =
                    self.app.store.mint_stream_key(&self.claims.room, &label).map_err(|e| AppError::internal("could not store the stream key", e))?;
                tracing::info!(room = %self.claims.room, id = %minted.view.id, "stream key minted");
                send(
                    socket,
                    &ServerMsg::StreamKey {
                        id: minted.view.id,
                        key: minted.key,
                        server_url: self.app.studio.server_url(&self.app.config.rtmp),
                        label: minted.view.label,
                    },
                )
                .await;
                Ok(Flow::Continue)
            }
            ClientMsg::ListStreamKeys => {
                self.require_host()?;
                send(socket, &ServerMsg::StreamKeys { keys: self.app.store.stream_keys(Some(&self.claims.room)) }).await;
                Ok(Flow::Continue)
            }
            ClientMsg::RevokeStreamKey { id } => {
                self.require_host()?;
                let found = self
                    .app
                    .store
                    .revoke_stream_key(Some(&self.claims.room), &id)
                    .map_err(|e| AppError::internal("could not store the revocation", e))?;
                if !found {
                    return Err(AppError::new(ErrorCode::NotFound, "no such stream key in this room"));
                }
                tracing::info!(room = %self.claims.room, %id, "stream key revoked");
                self.app.studio.end_revoked(&self.app, &id);
                send(socket, &ServerMsg::StreamKeyRevoked { id }).await;
                Ok(Flow::Continue)
            }
            ClientMsg::GetStats => {
                let stats = sfu.subscriber_stats(self.id).await?;
                send(
                    socket,
                    &ServerMsg::Stats {
                        bandwidth_bps: stats.bandwidth_bps,
                        twcc_feedback: stats.twcc_feedback,
                        path: stats.path,
                        tracks: stats.tracks,
                    },
                )
                .await;
                Ok(Flow::Continue)
            }
        }
    }

    fn require_host(&self) -> Result<(), AppError> {
        if self.claims.role != crate::auth::Role::Host {
            return Err(AppError::new(ErrorCode::NotAllowed, "only the host manages stream keys"));
        }
        Ok(())
    }

    async fn on_sfu_event(&mut self, socket: &mut Socket, ev: SfuEvent) -> Flow {
        let msg = match ev {
            SfuEvent::TrackPublished(info) => {
                track_published(&self.app, &self.room, info);
                None
            }
            SfuEvent::TrackUnpublished(track) => {
                lock(&self.room).remove_track(track);
                None
            }
            SfuEvent::SubscriberOffer(sdp) => Some(ServerMsg::Offer { sdp }),
            SfuEvent::LocalCandidate(role, c) => Some(ServerMsg::Candidate {
                target: role.into(),
                // rtc leaves sdpMid empty; browsers reject "" but accept an m-line index. The
                // server's one candidate serves every m-line (BUNDLE), so index 0 is right.
                candidate: Candidate {
                    candidate: c.candidate,
                    sdp_mid: c.sdp_mid.filter(|m| !m.is_empty()),
                    sdp_m_line_index: c.sdp_mline_index.or(Some(0)),
                    username_fragment: c.username_fragment,
                },
            }),
            SfuEvent::LayersWanted(track, max_layer) => Some(ServerMsg::Layers { track, max_layer }),
            SfuEvent::Connection(role, state) => Some(ServerMsg::ConnectionState { target: Target::from(role), state }),
            SfuEvent::SessionClosed(role, reason) => {
                // Tell the client: it must start that connection afresh (a new publish offer,
                // or a new subscriber connection for the next server offer).
                tracing::info!(participant = %self.id, ?role, %reason, "media session closed");
                Some(ServerMsg::ConnectionState { target: Target::from(role), state: sfu::ConnState::Closed })
            }
        };
        if let Some(msg) = msg
            && !send(socket, &msg).await
        {
            return Flow::Close(CLOSE_NORMAL, "connection lost".into());
        }
        Flow::Continue
    }
}

/// A publisher's track started: announce it and subscribe everyone else in the room.
pub(crate) fn track_published(app: &AppState, room: &Mutex<Room>, info: sfu::TrackInfo) {
    let subscribers = lock(room).add_track(info.clone());
    for p in subscribers {
        if let Err(e) = app.sfu.subscribe(p, info.clone()) {
            tracing::warn!(participant = %p, "subscribe: {e}");
        }
    }
}

fn sfu_candidate(c: Candidate) -> rtc_candidate::RTCIceCandidateInit {
    rtc_candidate::RTCIceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_m_line_index,
        username_fragment: c.username_fragment,
        ..Default::default()
    }
}

mod rtc_candidate {
    pub use sfu::RTCIceCandidateInit;
}
