//! A browser's WebSocket connection: wait for `join`, enter the room through the one join path
//! ([`live::join`]), then relay until the connection ends — client messages through the
//! transport's limits to the dispatcher, the room's broadcasts and the SFU's events to the
//! client. Framing, limits and close codes are `transport`'s; what messages mean, `live`'s.

use crate::app::AppState;
use crate::error::{AppError, ErrorCode};
use crate::live::ctx::Ctx;
use crate::live::dispatch::{Outcome, dispatch};
use crate::live::join::{self, Pass, Seat};
use crate::live::resume::{self, Parked};
use crate::live::room::{self, OutboxReader};
use crate::protocol::{Candidate, ClientMsg, PROTOCOL_VERSION, ServerMsg, Target};
use crate::transport::limits::{Admit, Heartbeat, Limits};
use crate::transport::websocket::{
    CLOSE_AUTH, CLOSE_CLIENT_RECONNECTING, CLOSE_KICKED, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_REDIRECT, CLOSE_RESTART, CLOSE_SLOW,
    CLOSE_TOO_BIG, Recv, Socket, WsMessage as Message,
};
use sfu::{Events, SfuEvent};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// SFU events queued for one connection (besides its track announcements, never dropped).
const QUEUE: usize = 512;
/// Queued room messages written with one flush, at most.
const BATCH: usize = 64;

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

/// Just the `type` of a client message.
#[derive(serde::Deserialize)]
struct MessageType {
    #[serde(rename = "type")]
    kind: String,
}

/// Parse one text frame, enforcing the size limit.
#[doc(hidden)] // public for the fuzz target `signal_decode` (fuzz/)
pub fn parse(text: &str, max: usize) -> Result<ClientMsg, AppError> {
    if text.len() > max {
        return Err(AppError::new(ErrorCode::MessageTooLarge, format!("messages are limited to {max} bytes")));
    }
    // A message is a JSON object. serde would also read an internally tagged enum from an
    // array whose first element is the tag (`["join","…"]`), a form the protocol does not have
    // (found by the signal_decode fuzz target).
    if !text.trim_start().starts_with('{') {
        return Err(AppError::new(ErrorCode::BadMessage, "not a valid message: a message is a JSON object with a \"type\""));
    }
    serde_json::from_str(text).map_err(|e| {
        // serde's sentence names the field or type at fault; it never echoes the input.
        AppError::new(ErrorCode::BadMessage, format!("not a valid message: {e}"))
    })
}

/// What `join` asked for: the token, the room (or the URL's), and a resume token.
struct JoinAsk {
    token: String,
    room: Option<String>,
    resume: Option<String>,
}

/// Wait for `join` and return what it asks for. A refusal comes with
/// the close code to send: 1009 for a message or frame too large (or framing the WebSocket
/// layer refused), 4001 for everything else.
async fn wait_for_join(
    socket: &mut Socket,
    app: &AppState,
    url_token: Option<String>,
    url_room: Option<String>,
) -> Result<JoinAsk, (AppError, u16)> {
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
                Recv::Closed(_) | Recv::Gone => return Err(auth(AppError::new(ErrorCode::NotJoined, "connection closed before join"))),
            }
        }
    };
    let msg = tokio::time::timeout(deadline, wait)
        .await
        .map_err(|_| auth(AppError::new(ErrorCode::NotJoined, "send join within the join timeout")))??;
    let ClientMsg::Join { token, room, protocol, resume } = msg else {
        return Err(auth(AppError::new(ErrorCode::NotJoined, "the first message must be join")));
    };
    if let Some(v) = protocol
        && v != PROTOCOL_VERSION
    {
        return Err(auth(AppError::new(ErrorCode::UnsupportedVersion, format!("this server speaks protocol {PROTOCOL_VERSION}"))));
    }
    // A resume token is 32 hex digits; anything else is no resume (and a fresh join).
    let resume = resume.filter(|r| r.len() == 32 && r.bytes().all(|b| b.is_ascii_hexdigit()));
    Ok(JoinAsk { token: token.or(url_token).unwrap_or_default(), room: room.or(url_room), resume })
}

/// The whole life of one connection.
///
/// `edge`: the connection came from a cascade edge for one of its viewers (the node's id and
/// its signature, checked once the room is known): the member's media is served there.
pub async fn run(
    mut socket: Socket,
    app: AppState,
    url_token: Option<String>,
    url_room: Option<String>,
    peer: String,
    edge: Option<(String, String)>,
) {
    // The join's trace: from the socket's first message to `joined` sent (docs/operations.md).
    let span =
        tracing::info_span!("join", %peer, room = tracing::field::Empty, identity = tracing::field::Empty, outcome = tracing::field::Empty);
    let guest = async {
        match wait_for_join(&mut socket, &app, url_token, url_room).await {
            Ok(ask) => join::authenticate(&app, Pass::Token { token: &ask.token, room: ask.room.as_deref() })
                .await
                .map(|g| (g, ask.resume, ask.token))
                .map_err(|e| (e, CLOSE_AUTH)),
            Err(refusal) => Err(refusal),
        }
    }
    .instrument(span.clone())
    .await;
    let (guest, resume, token) = match guest {
        Ok(g) => g,
        Err((e, code)) => {
            span.record("outcome", e.code.as_str());
            metrics::counter!("onair_joins_total", "stage" => "failed", "reason" => e.code.as_str()).increment(1);
            tracing::info!(%peer, code = %e.code, "join refused: {}", e.message);
            refuse(socket, e, code).await;
            return;
        }
    };
    // A member connection from a cascade edge, signed by a node of this cluster.
    let secret = app.cluster.as_ref().and_then(|c| c.cascade_secret());
    let edge = edge.filter(|(node, sig)| {
        let ok = secret
            .is_some_and(|s| crate::cluster::cascade::verify(s, &crate::cluster::cascade::member_what(&guest.claims.room, node), sig));
        if !ok {
            metrics::counter!("onair_cascade_refused_total", "what" => "member").increment(1);
            tracing::warn!(%peer, "a member connection claims a cascade edge without a valid signature: joined as any other");
        }
        ok
    });
    // Many nodes: the room's live may be placed on another node (cluster/): this node serves a
    // viewer as an edge of it, or sends the participant there.
    let elsewhere = if edge.is_some() { None } else { join::elsewhere(&app, &guest.claims.room).await };
    if let Some(node) = elsewhere {
        if crate::cluster::edge::serves(&app, guest.claims.role) {
            let door = crate::cluster::edge::Door { token, room: guest.claims.room.clone(), resume };
            crate::cluster::edge::serve(socket, app, node, door).instrument(span).await;
            return;
        }
        metrics::counter!("onair_joins_total", "stage" => "redirected", "reason" => "").increment(1);
        tracing::info!(%peer, room = %guest.claims.room, node = %node.id, "join sent to the node that holds the room");
        let msg = ServerMsg::Redirect { url: node.ws_url(), node: node.id, room: guest.claims.room.clone() };
        let _ = send(&mut socket, &msg).await;
        socket.close(CLOSE_REDIRECT, "redirect").await;
        return;
    }
    if app.draining.get().is_some() {
        let e = AppError::new(ErrorCode::Draining, "this server is shutting down: join again in a moment (or on another server)");
        metrics::counter!("onair_joins_total", "stage" => "failed", "reason" => e.code.as_str()).increment(1);
        tracing::info!(%peer, "join refused: draining");
        refuse(socket, e, CLOSE_RESTART).await;
        return;
    }
    socket.set_write_timeout(Duration::from_secs(app.config.limits.write_timeout_secs));
    let (out_tx, mut out_rx) = room::outbox(app.config.limits.outbox_messages);
    let (ev_tx, mut ev_rx) = sfu::event_channel(QUEUE);
    span.record("room", guest.claims.room.as_str());
    span.record("identity", guest.claims.identity.as_str());
    let resume_token = resume::new_token();
    // A resume takes the participant over, as it is; otherwise (no token, an unknown or expired
    // one, or the participant gone meanwhile) this is a fresh join.
    let resumed = match &resume {
        Some(r) if app.config.limits.resume_grace_secs > 0 => take_over(&app, r, &guest, out_tx.clone(), ev_tx.clone()).await,
        _ => None,
    };
    let (id, room, claims, reply, subscribe) = match resumed {
        Some(t) => {
            metrics::counter!("onair_resumes_total", "outcome" => "resumed").increment(1);
            tracing::info!(%peer, participant = %t.parked.id, identity = %t.parked.claims.identity, "resumed");
            let Some(ServerMsg::Resync { participant, room, participants, tracks, chat, profile }) = t.msgs.first().cloned() else {
                unreachable!("Room::state_for starts with a resync")
            };
            let reply = ServerMsg::Joined {
                protocol: PROTOCOL_VERSION,
                participant,
                room,
                participants,
                tracks,
                chat,
                profile,
                resume_token: Some(resume_token.clone()),
                resumed: true,
            };
            let mut after = t.msgs;
            after.remove(0);
            (t.parked.id, t.parked.room, t.parked.claims, reply, Err(after))
        }
        None => {
            if resume.is_some() {
                metrics::counter!("onair_resumes_total", "outcome" => "joined_afresh").increment(1);
            }
            let joined = match join::join(&app, &guest, Seat::Later, out_tx, ev_tx).instrument(span.clone()).await {
                Ok(j) => j,
                Err(e) => {
                    span.record("outcome", e.code.as_str());
                    metrics::counter!("onair_joins_total", "stage" => "failed", "reason" => e.code.as_str()).increment(1);
                    tracing::info!(%peer, room = %guest.claims.room, code = %e.code, "join refused: {}", e.message);
                    refuse(socket, e, CLOSE_POLICY).await;
                    return;
                }
            };
            let (id, mut snapshot) = (joined.id, joined.snapshot);
            if let Some((node, _)) = &edge {
                // Its media is the edge's: subscribed there, never here.
                room::lock(&joined.room).set_media_elsewhere(id);
                snapshot.subscribe.clear();
                tracing::info!(participant = %id, edge = %node, "member served by a cascade edge");
            }
            tracing::info!(%peer, participant = %id, identity = %guest.claims.identity, room = %guest.claims.room, role = ?guest.claims.role, "joined");
            let reply = ServerMsg::Joined {
                protocol: PROTOCOL_VERSION,
                participant: snapshot.me,
                room: snapshot.room,
                participants: snapshot.participants,
                tracks: snapshot.tracks,
                chat: Box::new(snapshot.chat),
                profile: Box::new(snapshot.profile),
                resume_token: (app.config.limits.resume_grace_secs > 0).then(|| resume_token.clone()),
                resumed: false,
            };
            (id, joined.room, guest.claims.clone(), reply, Ok(snapshot.subscribe))
        }
    };
    // A cascade edge's member connection is one of the edge's viewers, counted there.
    if edge.is_none() {
        metrics::counter!("onair_joins_total", "stage" => "signal_connected", "reason" => "").increment(1);
    }
    let stop = app.resumes.serve(&resume_token, &claims);
    let mut sent = send(&mut socket, &reply).instrument(span.clone()).await;
    span.record("outcome", if sent { "joined" } else { "connection_lost" });
    drop(span);
    match subscribe {
        // A fresh participant is subscribed to every track in the room.
        Ok(tracks) => {
            if let Err(e) = app.sfu.subscribe_all(id, tracks) {
                tracing::warn!(participant = %id, "subscribe on join: {e}");
            }
        }
        // A resumed one keeps its subscriptions; it hears the stage's state that concerns it.
        Err(after) => {
            for m in &after {
                sent = sent && send(&mut socket, m).await;
            }
        }
    }
    let end = if !sent {
        End::lost("connection lost")
    } else {
        let ctx = Ctx { app: &app, id, room: &room, claims: &claims };
        let limits = Limits::new(app.config.limits.messages_per_second, app.config.limits.message_burst, Instant::now());
        Connection { ctx, limits, resyncs: Vec::new() }.serve(&mut socket, &mut out_rx, &mut ev_rx, &stop).await
    };
    let grace = app.config.limits.resume_grace_secs;
    // A live that ended has nothing to resume: a connection that drops after the end (a client
    // gone before it read `room_ended`) leaves at once, so the room closes now, not a grace later.
    let ended = room::lock(&room).state() == crate::protocol::RoomState::Ended;
    if end.resumable && grace > 0 && !ended {
        tracing::info!(participant = %id, reason = %end.reason, "connection dropped: the participant waits {grace} s for a resume");
        app.resumes.park(&resume_token, Parked { id, room: room.clone(), claims: claims.clone() });
        room::lock(&room).connection_away(id, grace);
        let (app, token) = (app.clone(), resume_token.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(grace)).await;
            if let Some(p) = app.resumes.expire(&token) {
                metrics::counter!("onair_resumes_total", "outcome" => "expired").increment(1);
                tracing::info!(participant = %p.id, "not resumed within {grace} s: left");
                join::leave(&app, p.id, &p.room, &format!("connection lost (not back within {grace} s)"));
            }
        });
    } else {
        app.resumes.forget(&resume_token);
        tracing::info!(participant = %id, reason = %end.reason, "left");
        join::leave(&app, id, &room, &end.reason);
    }
    // Closed last: the linger (up to two seconds) must not keep the seat or the tracks.
    match end.close {
        Some(code) => socket.close(code, &end.reason).await,
        None => socket.finish().await,
    }
}

/// A participant taken over by a resume, and what it needs to hear to be current.
struct TakenOver {
    parked: Parked,
    msgs: Vec<ServerMsg>,
}

/// Take the participant of resume token `r` for this connection: its room messages go to
/// `outbox`, its SFU events to `events` from now on, and the SFU tells its state again.
async fn take_over(app: &AppState, r: &str, guest: &join::Guest, outbox: room::Outbox, events: sfu::EventSink) -> Option<TakenOver> {
    let parked = app.resumes.take(r, &guest.claims).await?;
    let msgs = {
        let mut r = room::lock(&parked.room);
        let msgs = r.reattach(parked.id, outbox);
        if msgs.is_some() {
            r.connection_back(parked.id);
        }
        msgs
    };
    let Some(msgs) = msgs.filter(|m| matches!(m.first(), Some(ServerMsg::Resync { .. }))) else {
        // Gone from the room meanwhile, banned, or the live ended: the rest of it goes too (a
        // fresh join says why).
        join::leave(app, parked.id, &parked.room, "not resumed: no longer in the room");
        return None;
    };
    if let Err(e) = app.sfu.attach(parked.id, events).and_then(|()| app.sfu.resync(parked.id)) {
        tracing::warn!(participant = %parked.id, "resume: the media plane lost the participant: {e}");
        join::leave(app, parked.id, &parked.room, "not resumed: media sessions gone");
        return None;
    }
    Some(TakenOver { parked, msgs })
}

/// How a connection ended: why, the close code to send (none when the client closed or the
/// connection is gone), and whether its participant waits for a resume.
struct End {
    reason: String,
    close: Option<u16>,
    resumable: bool,
}

impl End {
    /// The connection went away without `leave`: the participant may come back.
    fn lost(reason: &str) -> End {
        End { reason: reason.into(), close: None, resumable: true }
    }

    /// Ended on purpose (left, removed, refused, too slow): the participant leaves.
    fn closed(reason: String, code: u16) -> End {
        End { reason, close: Some(code), resumable: false }
    }
}

struct Connection<'a> {
    ctx: Ctx<'a>,
    limits: Limits,
    /// When this connection needed a resync, within the last minute.
    resyncs: Vec<Instant>,
}

/// What to do after handling one input.
enum Flow {
    Continue,
    Close(u16, String),
    /// The connection is gone (a write failed): the participant may resume.
    Lost,
}

impl Connection<'_> {
    /// Relay until the connection ends, or `stop` fires (a resume took the participant over).
    async fn serve(&mut self, socket: &mut Socket, out_rx: &mut OutboxReader, ev_rx: &mut Events, stop: &tokio::sync::Notify) -> End {
        let end = tokio::select! {
            end = self.relay(socket, out_rx, ev_rx) => end,
            () = stop.notified() => End { reason: "resumed on another connection".into(), close: Some(CLOSE_NORMAL), resumable: true },
        };
        if socket.stalled() {
            let secs = self.ctx.app.config.limits.write_timeout_secs;
            metrics::counter!("onair_ws_slow_closes_total", "why" => "stalled").increment(1);
            return End::closed(format!("too slow: the client read nothing for {secs} s"), CLOSE_SLOW);
        }
        end
    }

    async fn relay(&mut self, socket: &mut Socket, out_rx: &mut OutboxReader, ev_rx: &mut Events) -> End {
        let mut heartbeat = Heartbeat::new(Duration::from_secs(self.ctx.app.config.limits.idle_timeout_secs), Instant::now());
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
                        // The client closes to reconnect (4000): it means to resume.
                        Recv::Closed(Some(CLOSE_CLIENT_RECONNECTING)) => return End::lost("reconnecting"),
                        // Any other close frame: the client is done (a page closed sends one).
                        Recv::Closed(_) => return End { reason: "connection closed".into(), close: None, resumable: false },
                        // No close frame: the network went; the participant may come back.
                        Recv::Gone => return End::lost("connection lost"),
                        Recv::Refused(e) => {
                            // tungstenite refuses frames over the hard cap here.
                            tracing::info!(participant = %self.ctx.id, "websocket error: {e}");
                            let _ = send(socket, &ServerMsg::error(&frame_refused())).await;
                            return End::closed("frame too large or malformed".into(), CLOSE_TOO_BIG);
                        }
                    }
                }
                Some(first) = out_rx.recv() => {
                    // Write out everything already queued (a fan-out tick's comments, say) with
                    // one flush: one wake-up and one write for the lot.
                    let mut next = Some(first);
                    let mut close = None;
                    let mut sent = 0;
                    while let Some(out) = next.take() {
                        close = match &*out.msg {
                            ServerMsg::RoomEnded { .. } => Some((CLOSE_NORMAL, "room ended")),
                            ServerMsg::Kicked { .. } => Some((CLOSE_KICKED, "banned")),
                            _ => None,
                        };
                        if !socket.feed(out.text).await { return End::lost("connection lost"); }
                        sent += 1;
                        if close.is_none() && sent < BATCH {
                            next = out_rx.try_recv();
                        }
                    }
                    if !socket.flush().await { return End::lost("connection lost"); }
                    match close {
                        Some((code, reason)) => Flow::Close(code, reason.into()),
                        None => Flow::Continue,
                    }
                }
                Some(ev) = ev_rx.recv() => self.on_sfu_event(socket, ev).await,
                _ = ping.tick() => match heartbeat.tick(Instant::now()) {
                    // Silence: most likely the network went (a phone between networks). The
                    // participant may come back on a new connection.
                    Err(reason) => return End { reason: reason.into(), close: Some(CLOSE_POLICY), resumable: true },
                    Ok(()) => {
                        let _ = socket.ping().await;
                        Flow::Continue
                    }
                },
            };
            match flow {
                Flow::Close(code, reason) => return End::closed(reason, code),
                Flow::Lost => return End::lost("connection lost"),
                Flow::Continue => {}
            }
            let (room_lag, media_lag) = (out_rx.needs_resync(), ev_rx.take_lag());
            if room_lag || media_lag {
                match self.resync(socket, out_rx, room_lag, media_lag).await {
                    Flow::Close(code, reason) => return End::closed(reason, code),
                    Flow::Lost => return End::lost("connection lost"),
                    Flow::Continue => {}
                }
            }
        }
    }

    /// Messages for this client were dropped (its queue was full): send it the room as it is
    /// now and ask the SFU for its state again — or, when that keeps happening, cut it.
    async fn resync(&mut self, socket: &mut Socket, out_rx: &OutboxReader, room_lag: bool, media_lag: bool) -> Flow {
        let now = Instant::now();
        self.resyncs.retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        self.resyncs.push(now);
        let max = self.ctx.app.config.limits.max_resyncs_per_minute as usize;
        if self.resyncs.len() > max {
            metrics::counter!("onair_ws_slow_closes_total", "why" => "resyncs").increment(1);
            tracing::info!(participant = %self.ctx.id, "too slow: more than {max} resyncs in a minute");
            return Flow::Close(CLOSE_SLOW, format!("too slow: messages were dropped more than {max} times in a minute"));
        }
        metrics::counter!("onair_ws_resyncs_total").increment(1);
        tracing::info!(participant = %self.ctx.id, "queue overflowed: resync");
        // The room's part once everything queued before the overflow has been written
        // (`needs_resync`); the SFU's when its events were dropped (those after are newer).
        if room_lag {
            let (msgs, ended) = {
                let r = room::lock(self.ctx.room);
                (r.resync(self.ctx.id, out_rx), r.state() == crate::protocol::RoomState::Ended)
            };
            let Some(msgs) = msgs else {
                return Flow::Close(CLOSE_POLICY, "removed from the room".into());
            };
            if matches!(msgs.first(), Some(ServerMsg::Kicked { .. })) {
                let _ = send(socket, &msgs[0]).await;
                return Flow::Close(CLOSE_KICKED, "banned".into());
            }
            for m in &msgs {
                if !send(socket, m).await {
                    return Flow::Lost;
                }
            }
            if ended {
                return Flow::Close(CLOSE_NORMAL, "room ended".into());
            }
        }
        if media_lag && let Err(e) = self.ctx.app.sfu.resync(self.ctx.id) {
            tracing::debug!(participant = %self.ctx.id, "resync of the media sessions: {e}");
        }
        Flow::Continue
    }

    async fn on_bad(&mut self, socket: &mut Socket, e: AppError) -> Flow {
        tracing::debug!(participant = %self.ctx.id, "bad message: {e}");
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
        let msg = match parse(text, self.ctx.app.config.limits.max_message_bytes) {
            Ok(m) => m,
            Err(e) => {
                metrics::counter!("onair_ws_messages_total", "type" => "invalid").increment(1);
                return self.on_bad(socket, e).await;
            }
        };
        metrics::counter!("onair_ws_messages_total", "type" => msg.kind()).increment(1);
        match dispatch(&self.ctx, msg).await {
            Ok(Outcome::Done) => Flow::Continue,
            Ok(Outcome::Reply(reply)) => {
                send(socket, &reply).await;
                Flow::Continue
            }
            Ok(Outcome::Leave) => Flow::Close(CLOSE_NORMAL, "left".into()),
            Err(e) => {
                if e.code == ErrorCode::Internal {
                    tracing::error!(participant = %self.ctx.id, "request failed: {e}");
                } else {
                    tracing::debug!(participant = %self.ctx.id, "request refused: {e}");
                }
                // Say which message was refused: it parsed, so its `type` is there.
                let kind = serde_json::from_str::<MessageType>(text).map(|t| t.kind).unwrap_or_default();
                let _ = send(socket, &ServerMsg::error_for(&e, &kind)).await;
                Flow::Continue
            }
        }
    }

    async fn on_sfu_event(&mut self, socket: &mut Socket, ev: SfuEvent) -> Flow {
        let Some(ev) = join::on_track_event(self.ctx.app, self.ctx.room, ev) else { return Flow::Continue };
        let Some(msg) = client_msg(self.ctx.id, ev) else { return Flow::Continue };
        if !send(socket, &msg).await {
            return Flow::Lost;
        }
        Flow::Continue
    }
}

/// What the client hears of an SFU event about its own connections (`None`: nothing; track
/// announcements are the room's).
pub(crate) fn client_msg(participant: sfu::ParticipantId, ev: SfuEvent) -> Option<ServerMsg> {
    Some(match ev {
        SfuEvent::SubscriberOffer(sdp) => ServerMsg::Offer { sdp },
        SfuEvent::LocalCandidate(role, c) => ServerMsg::Candidate {
            target: role.into(),
            // rtc leaves sdpMid empty; browsers reject "" but accept an m-line index. The
            // server's one candidate serves every m-line (BUNDLE), so index 0 is right.
            candidate: Candidate {
                candidate: c.candidate,
                sdp_mid: c.sdp_mid.filter(|m| !m.is_empty()),
                sdp_m_line_index: c.sdp_mline_index.or(Some(0)),
                username_fragment: c.username_fragment,
            },
        },
        SfuEvent::LayersWanted(track, max_layer) => ServerMsg::Layers { track, max_layer },
        SfuEvent::AudioOnly(active) => ServerMsg::AudioOnly { active, reason: "bandwidth".into() },
        SfuEvent::Connection(role, state) => {
            if role == sfu::SessionRole::Subscriber && state == sfu::ConnState::Connected {
                metrics::counter!("onair_joins_total", "stage" => "media_connected", "reason" => "").increment(1);
            }
            ServerMsg::ConnectionState { target: Target::from(role), state }
        }
        SfuEvent::SessionClosed(role, reason) => {
            // Tell the client: it must start that connection afresh (a new publish offer,
            // or a new subscriber connection for the next server offer).
            tracing::info!(%participant, ?role, %reason, "media session closed");
            ServerMsg::ConnectionState { target: Target::from(role), state: sfu::ConnState::Closed }
        }
        SfuEvent::TrackPublished(_) | SfuEvent::TrackUnpublished(_) => return None, // the room's
        // Only a cascade edge's relay participant opens relayed tracks; no page does.
        SfuEvent::KeyframeWanted(..) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_objects_are_messages() {
        assert_eq!(parse(r#"{"type":"ping"}"#, 1024).map(|m| m.kind()).ok(), Some("ping"));
        assert_eq!(parse(" \n{\"type\":\"leave\"}", 1024).map(|m| m.kind()).ok(), Some("leave"));
        // The fuzzer's find: serde reads a tagged enum from an array whose first element is the tag.
        for text in [r#"["join","an"]"#, r#"["ping"]"#, r#" ["leave"]"#, "\"ping\"", "null", "7", ""] {
            let e = parse(text, 1024).err().map(|e| e.code);
            assert_eq!(e, Some(ErrorCode::BadMessage), "{text:?}");
        }
    }
}
