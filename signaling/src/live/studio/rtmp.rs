//! One encoder's RTMP connection: handshake, `connect` and `publish` (the key goes through the
//! one join path, `live::join`), then FLV messages into the feed's `sfu::ingest::Bridge` until
//! the encoder leaves, a newer connection takes over, or the server cuts it. Refusals reach the
//! encoder as RTMP statuses (docs/protocol.md §12).

use crate::app::AppState;
use crate::auth::Role;
use crate::error::{AppError, ErrorCode};
use crate::live::join::{self, Guest, Joined, Pass, Seat};
use crate::live::room::lock;
use crate::live::studio::feeds::{Feed, plock};
use crate::live::studio::lifecycle::{end_feed, feed_events, feed_outbox};
use crate::protocol::{ServerMsg, StudioState};
use crate::store::{self, KeyView};
use crate::transport::rtmp_guard::ChunkGuard;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
use sfu::ingest::{Bridge, Notice};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How often a live feed logs its bridge delay.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How often a live feed's figures in `/api/stats` are refreshed (and when its connection ends).
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// After a refusal, how long the connection waits for the encoder to read it and hang up, and
/// how much of what it still sends is read (and dropped) meanwhile.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);
const REFUSAL_DRAIN_BYTES: usize = 1 << 20;

/// RTMP status codes a refusal is sent with (ffmpeg and OBS show them next to the message).
const CONNECT_REJECTED: &str = "NetConnection.Connect.Rejected";
const PUBLISH_BAD_NAME: &str = "NetStream.Publish.BadName";
const PUBLISH_REJECTED: &str = "NetStream.Publish.Rejected";
const PLAY_FAILED: &str = "NetStream.Play.Failed";

/// The status a refused publish is sent with: the key's own problems are a bad name, the room's
/// (stage full, not live, ended, full, media plane busy) a rejection.
fn publish_status(e: &AppError) -> &'static str {
    match e.code {
        ErrorCode::BadStreamKey | ErrorCode::StreamKeyInUse => PUBLISH_BAD_NAME,
        _ => PUBLISH_REJECTED,
    }
}

/// How a connection goes on; `Break` carries why it ends (for the log).
type Step<T = ()> = ControlFlow<String, T>;

fn accept(session: &mut ServerSession, request_id: u32) -> Step<Vec<ServerSessionResult>> {
    match session.accept_request(request_id) {
        Ok(results) => ControlFlow::Continue(results),
        Err(e) => ControlFlow::Break(format!("accept: {e:?}")),
    }
}

pub(super) struct Connection {
    app: AppState,
    stream: TcpStream,
    peer: SocketAddr,
    feed: Option<Arc<Feed>>,
    bridge: Option<Bridge>,
    generation: usize,
    last_stats: Instant,
}

impl Connection {
    pub(super) fn new(app: AppState, stream: TcpStream, peer: SocketAddr) -> Self {
        Self { app, stream, peer, feed: None, bridge: None, generation: 0, last_stats: Instant::now() }
    }

    async fn write(&mut self, bytes: &[u8]) -> Step {
        match self.stream.write_all(bytes).await {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(format!("write: {e}")),
        }
    }

    #[tracing::instrument(name = "studio.feed", level = "info", skip_all, fields(peer = %self.peer))]
    pub(super) async fn run(mut self) -> String {
        let reason = self.serve().await;
        self.release();
        reason
    }

    async fn serve(&mut self) -> String {
        let cfg = self.app.config.rtmp.clone();
        let setup_deadline = Instant::now() + Duration::from_secs(cfg.handshake_timeout_secs);
        let mut buf = vec![0u8; 64 * 1024];
        // Handshake (C0/C1/C2 ↔ S0/S1/S2).
        let mut hs = Handshake::new(PeerType::Server);
        let leftover = loop {
            let n = match tokio::time::timeout_at(setup_deadline.into(), self.stream.read(&mut buf)).await {
                Err(_) => return "handshake timed out".into(),
                Ok(Ok(0)) => return "closed during handshake".into(),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return format!("read: {e}"),
            };
            match hs.process_bytes(&buf[..n]) {
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    if let ControlFlow::Break(why) = self.write(&response_bytes).await {
                        return why;
                    }
                }
                Ok(HandshakeProcessResult::Completed { response_bytes, remaining_bytes }) => {
                    if let ControlFlow::Break(why) = self.write(&response_bytes).await {
                        return why;
                    }
                    break remaining_bytes;
                }
                Err(e) => {
                    tracing::info!(peer = %self.peer, "RTMP handshake refused: {e:?}");
                    return "bad handshake".into();
                }
            }
        };
        let mut config = ServerSessionConfig::new();
        config.chunk_size = 4096;
        let (mut session, results) = match ServerSession::new(config) {
            Ok(s) => s,
            Err(e) => return format!("session: {e:?}"),
        };
        let mut guard = ChunkGuard::new(cfg.max_chunk_size, cfg.max_message_bytes);
        if let ControlFlow::Break(why) = self.handle_results(&mut session, results).await {
            return why;
        }
        let mut pending = leftover;
        let mut last_log = Instant::now();
        loop {
            if let Some(feed) = &self.feed
                && feed.generation.load(Ordering::SeqCst) != self.generation
            {
                return "cut by the server (key revoked, room ended, or a newer connection)".into();
            }
            if !pending.is_empty() {
                let arrived = Instant::now();
                if let Err(v) = guard.check(&pending) {
                    tracing::warn!(peer = %self.peer, "RTMP stream refused: {v}");
                    return format!("refused: {v}");
                }
                let results = match catch_unwind(AssertUnwindSafe(|| session.handle_input(&pending))) {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        tracing::info!(peer = %self.peer, "RTMP protocol error: {e:?}");
                        return "protocol error".into();
                    }
                    Err(_) => {
                        tracing::warn!(peer = %self.peer, "RTMP parser panicked on this input; connection closed");
                        return "protocol error".into();
                    }
                };
                if let ControlFlow::Break(why) = self.handle_results_at(&mut session, results, arrived).await {
                    return why;
                }
            }
            if last_log.elapsed() >= LOG_INTERVAL {
                last_log = Instant::now();
                self.log_delay();
            }
            let timeout = if self.bridge.is_some() { Instant::now() + Duration::from_secs(cfg.idle_timeout_secs) } else { setup_deadline };
            let feed = self.feed.clone();
            let kicked = async {
                match &feed {
                    Some(f) => f.kick.notified().await,
                    None => std::future::pending().await,
                }
            };
            let n = tokio::select! {
                r = tokio::time::timeout_at(timeout.into(), self.stream.read(&mut buf)) => match r {
                    Err(_) => return if self.bridge.is_some() { "no data from the encoder".into() } else { "publish not started in time".into() },
                    Ok(Ok(0)) => return "encoder disconnected".into(),
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => return format!("read: {e}"),
                },
                _ = kicked => return "cut by the server (key revoked, room ended, or a newer connection)".into(),
            };
            pending = buf[..n].to_vec();
        }
    }

    fn log_delay(&mut self) {
        if let (Some(bridge), Some(feed)) = (self.bridge.as_mut(), self.feed.as_ref()) {
            let (v, a) = bridge.take_recent();
            tracing::info!(
                room = %feed.room_name, participant = %feed.participant,
                video_p50_us = v.p50_us, video_p99_us = v.p99_us, audio_p50_us = a.p50_us, audio_p99_us = a.p99_us,
                "studio feed: time inside the bridge (RTMP in -> RTP out) over the last 10 s"
            );
        }
    }

    async fn handle_results(&mut self, session: &mut ServerSession, results: Vec<ServerSessionResult>) -> Step {
        self.handle_results_at(session, results, Instant::now()).await
    }

    async fn handle_results_at(&mut self, session: &mut ServerSession, results: Vec<ServerSessionResult>, arrived: Instant) -> Step {
        let mut notices = Vec::new();
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(p) => self.write(&p.bytes).await?,
                ServerSessionResult::RaisedEvent(ev) => self.on_event(session, ev, arrived, &mut notices).await?,
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        if !notices.is_empty() {
            self.notify(notices);
        }
        // Stats (six histogram quantiles) are published at most once a second, not per read.
        if self.last_stats.elapsed() >= STATS_INTERVAL
            && let (Some(bridge), Some(feed)) = (&self.bridge, &self.feed)
        {
            self.last_stats = Instant::now();
            *plock(&feed.stats) = bridge.stats();
        }
        ControlFlow::Continue(())
    }

    /// Send the encoder `status` and the error's message, and close; returns the reason for the log.
    async fn refuse(&mut self, session: &mut ServerSession, request_id: u32, status: &'static str, e: AppError) -> String {
        match session.reject_request(request_id, status, &e.message) {
            Ok(results) => {
                for r in results {
                    if let ServerSessionResult::OutboundResponse(p) = r {
                        let _ = self.write(&p.bytes).await;
                    }
                }
            }
            Err(e) => tracing::debug!("reject_request: {e:?}"),
        }
        let _ = self.stream.flush().await;
        // Close gently: FIN after the refusal, then read what the encoder still sends until it
        // hangs up. Closing a socket with unread input sends a reset, and an encoder still
        // writing (ffmpeg sends its next commands without waiting) then reports "Broken pipe"
        // instead of the reason.
        let _ = self.stream.shutdown().await;
        let deadline = tokio::time::Instant::now() + REFUSAL_LINGER;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < REFUSAL_DRAIN_BYTES {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
        format!("refused: {}", e.message)
    }

    async fn on_event(&mut self, session: &mut ServerSession, ev: ServerSessionEvent, arrived: Instant, notices: &mut Vec<Notice>) -> Step {
        let cfg = &self.app.config.rtmp;
        match ev {
            ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                let app_name = app_name.trim_end_matches('/');
                if app_name.len() > cfg.max_name_bytes || app_name != cfg.app {
                    tracing::info!(peer = %self.peer, app = %app_name.chars().take(64).collect::<String>(), "RTMP connect refused: unknown application");
                    let hint = format!("unknown application; publish to {}", self.app.studio.server_url(cfg));
                    return ControlFlow::Break(
                        self.refuse(session, request_id, CONNECT_REJECTED, AppError::new(ErrorCode::NotFound, hint)).await,
                    );
                }
                let results = accept(session, request_id)?;
                Box::pin(self.handle_results(session, results)).await?;
            }
            ServerSessionEvent::PublishStreamRequested { request_id, stream_key, .. } => {
                if self.bridge.is_some() {
                    let e = AppError::new(ErrorCode::StreamKeyInUse, "this connection is already publishing");
                    return ControlFlow::Break(self.refuse(session, request_id, PUBLISH_BAD_NAME, e).await);
                }
                match self.authorize(&stream_key).await {
                    Ok(()) => {
                        let results = accept(session, request_id)?;
                        Box::pin(self.handle_results(session, results)).await?;
                    }
                    Err(e) => {
                        tracing::warn!(peer = %self.peer, "studio feed refused: {e}");
                        let status = publish_status(&e);
                        return ControlFlow::Break(self.refuse(session, request_id, status, e).await);
                    }
                }
            }
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                let e = AppError::new(ErrorCode::NotAllowed, "Onair takes RTMP input only; watch in the browser");
                return ControlFlow::Break(self.refuse(session, request_id, PLAY_FAILED, e).await);
            }
            ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                if let Some(bridge) = self.bridge.as_mut()
                    && let Err(e) = bridge.on_video(&data, timestamp.value, arrived, notices)
                {
                    bridge.count_error();
                    tracing::debug!(peer = %self.peer, "video message dropped: {e}");
                }
            }
            ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                if let Some(bridge) = self.bridge.as_mut()
                    && let Err(e) = bridge.on_audio(&data, timestamp.value, arrived, notices)
                {
                    bridge.count_error();
                    tracing::debug!(peer = %self.peer, "audio message dropped: {e}");
                }
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                tracing::info!(
                    peer = %self.peer,
                    encoder = ?metadata.encoder, width = ?metadata.video_width, height = ?metadata.video_height,
                    fps = ?metadata.video_frame_rate, video_kbps = ?metadata.video_bitrate_kbps, audio_kbps = ?metadata.audio_bitrate_kbps,
                    "studio feed metadata"
                );
            }
            ServerSessionEvent::PublishStreamFinished { .. } => return ControlFlow::Break("encoder stopped publishing".into()),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    /// Tell the host (and the log) what the encoder should change.
    fn notify(&self, notices: Vec<Notice>) {
        let Some(feed) = &self.feed else { return };
        for n in notices {
            let code = match &n {
                Notice::Bframes => "bframes",
                Notice::KeyframeInterval { .. } => "keyframe_interval",
                Notice::Unsupported { .. } => "unsupported",
            };
            let message = n.message();
            tracing::warn!(room = %feed.room_name, participant = %feed.participant, code, "studio feed: {message}");
            lock(&feed.room)
                .send_to_role(Role::Host, ServerMsg::StudioNotice { participant: feed.participant, code: code.into(), message });
        }
    }

    /// Check the key and take (or resume) the feed's seat and tracks.
    async fn authorize(&mut self, stream_key: &str) -> Result<(), AppError> {
        let guest = join::authenticate(&self.app, Pass::StreamKey(stream_key)).await?;
        let key = guest.stream_key.clone().ok_or_else(|| AppError::new(ErrorCode::BadStreamKey, store::UNKNOWN_KEY))?;
        let existing = plock(&self.app.studio.feeds).get(&key.id).cloned();
        let feed = match existing {
            Some(feed) if feed.whip.is_some() => {
                return Err(AppError::new(ErrorCode::StreamKeyInUse, "this key is publishing over WHIP"));
            }
            Some(feed) => feed,
            None => self.open_feed(&guest, &key).await?,
        };
        // Take the bridge; a connection still holding it (a half-dead TCP) is cut first.
        let generation = feed.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut bridge = None;
        for _ in 0..40 {
            if let Some(b) = plock(&feed.bridge).take() {
                bridge = Some(b);
                break;
            }
            feed.kick.notify_waiters();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let Some(mut bridge) = bridge else {
            return Err(AppError::new(ErrorCode::StreamKeyInUse, "this key is streaming on another connection"));
        };
        bridge.connected();
        let stats = bridge.stats();
        let resumed = stats.connections > 1;
        *plock(&feed.stats) = stats;
        *plock(&feed.connected) = true;
        self.generation = generation;
        self.bridge = Some(bridge);
        self.feed = Some(feed.clone());
        tracing::info!(peer = %self.peer, room = %feed.room_name, participant = %feed.participant, key = %feed.key_id, resumed, "studio feed live");
        lock(&feed.room).broadcast_all(ServerMsg::StudioState { participant: feed.participant, state: StudioState::Live, reason: None });
        Ok(())
    }

    /// First publish with this key: join the room as a co-host, take a seat, open the tracks.
    async fn open_feed(&mut self, guest: &Guest, key: &KeyView) -> Result<Arc<Feed>, AppError> {
        let app = &self.app;
        let (out_tx, out_rx) = crate::live::room::outbox(256);
        let (ev_tx, ev_rx) = sfu::event_channel(64);
        let media_plane = |e: AppError| AppError { message: format!("media plane: {}", e.message), ..e };
        // An encoder cannot be sent elsewhere: its operator is told where the live is.
        if let Some(node) = join::elsewhere(app, &guest.claims.room).await {
            return Err(AppError::new(
                ErrorCode::WrongNode,
                format!("this room's live is on node {} ({}): stream to that node", node.id, node.url),
            ));
        }
        let Joined { id: participant, room, .. } = join::join(app, guest, Seat::Now, out_tx, ev_tx).await.map_err(|e| match e.code {
            ErrorCode::StageFull => AppError { message: format!("{}; free a seat and retry", e.message), ..e },
            ErrorCode::ServerBusy | ErrorCode::Internal => media_plane(e),
            _ => e,
        })?;
        // Route the SFU's events before opening tracks, so TrackPublished reaches the room.
        tokio::spawn(feed_events(app.clone(), room.clone(), ev_rx));
        let bridge = match Bridge::open(app.sfu.clone(), participant).await {
            Ok((b, _)) => b,
            Err(e) => {
                join::leave(app, participant, &room, "studio feed failed");
                return Err(media_plane(e.into()));
            }
        };
        let feed = Feed::new(key, participant, room.clone(), Some(bridge), None);
        plock(&app.studio.feeds).insert(key.id.clone(), feed.clone());
        tokio::spawn(feed_outbox(app.clone(), feed.clone(), out_rx));
        Ok(feed)
    }

    /// The connection ends: give the bridge back and start the grace period.
    fn release(&mut self) {
        let (Some(feed), Some(bridge)) = (self.feed.take(), self.bridge.take()) else { return };
        *plock(&feed.stats) = bridge.stats();
        *plock(&feed.bridge) = Some(bridge);
        if feed.generation.load(Ordering::SeqCst) != self.generation {
            return; // a newer connection took over (or the key was revoked: it ends the feed below)
        }
        *plock(&feed.connected) = false;
        lock(&feed.room).broadcast_all(ServerMsg::StudioState {
            participant: feed.participant,
            state: StudioState::Reconnecting,
            reason: Some(format!("encoder disconnected; the seat is held for {} s", self.app.config.rtmp.grace_secs)),
        });
        let app = self.app.clone();
        let generation = self.generation;
        let grace = Duration::from_secs(app.config.rtmp.grace_secs);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if feed.generation.load(Ordering::SeqCst) == generation && !*plock(&feed.connected) {
                end_feed(&app, &feed, "the encoder did not come back within the grace period");
            }
        });
    }
}
