//! The handle signaling holds: typed commands into the workers, events back per participant.

use crate::api::{CodecInfo, EventSink, MediaKind, SfuStats, SubscriberStats, TrackInfo};
use crate::config::SfuConfig;
use crate::error::SfuError;
use crate::forward::selector::Quality;
use crate::ids::{ParticipantId, SessionKey, SessionRole, TrackId};
use crate::media::packet::MediaPacket;
use crate::net::demux::DemuxCtl;
use crate::net::recv::RecvLoop;
use crate::session::SessionFactory;
use crate::worker::core::Core;
use crate::worker::msg::{Command, Input, ReplyTo, WorkerMsg};
use crate::worker::plane::{Counters, Plane};
use crate::worker::{self, Io, Queues};
use crossbeam_channel::{Sender, TrySendError, bounded, unbounded};
use dashmap::DashMap;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

struct Shared {
    plane: Arc<Plane>,
    /// Per worker: media (bounded, lossy) and control (never dropped) queues.
    media: Vec<Sender<WorkerMsg>>,
    control: Vec<Sender<WorkerMsg>>,
    /// Which worker each participant lives on.
    participants: DashMap<ParticipantId, usize>,
    stop: Arc<AtomicBool>,
}

/// Handle to a running media plane. Cheap to clone; dropping the last handle does not stop it,
/// [`Sfu::shutdown`] does.
#[derive(Clone)]
pub struct Sfu {
    shared: Arc<Shared>,
    threads: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Sfu {
    /// Bind the UDP port and start the receive thread and the workers.
    pub fn start(config: SfuConfig) -> Result<Sfu, SfuError> {
        let socket = UdpSocket::bind(config.bind).map_err(|e| SfuError::Startup(format!("bind {}: {e}", config.bind)))?;
        socket.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| SfuError::Startup(e.to_string()))?;
        let (rcvbuf, sndbuf) = crate::net::batch::grow_buffers(&socket);
        tracing::info!(rcvbuf, sndbuf, "media socket buffers (bytes, as the kernel counts them)");
        let bound = socket.local_addr().map_err(|e| SfuError::Startup(e.to_string()))?;
        let local_addr = SocketAddr::new(config.advertise_ip, bound.port());
        let socket = Arc::new(socket);
        let n = if config.workers == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { config.workers };
        let (mut media, mut control, mut urgent, mut queues) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let (mtx, mrx) = bounded(config.queue_capacity);
            let (ctx, crx) = unbounded();
            let (utx, urx) = bounded(config.queue_capacity.min(4096));
            media.push(mtx);
            control.push(ctx);
            urgent.push(utx);
            queues.push(Queues { urgent: urx, control: crx, media: mrx });
        }
        // Unbounded: a lost registration would strand a session, a lost removal leak one.
        let (demux_tx, demux_rx) = unbounded::<DemuxCtl>();
        let stop = Arc::new(AtomicBool::new(false));
        let plane = Arc::new(Plane {
            factory: SessionFactory::new(local_addr)?.with_policy(config.layers).with_lean(config.lean_send_path),
            config,
            local_addr,
            workers: n,
            tracks: DashMap::new(),
            counters: Counters::default(),
            delays: Default::default(),
        });
        let mut threads = Vec::new();
        let rt = plane.config.realtime_priority;
        for (i, q) in queues.into_iter().enumerate() {
            let core = Core::new(i, plane.clone());
            let io =
                Io { socket: socket.clone(), media: media.clone(), control: control.clone(), demux: demux_tx.clone(), stop: stop.clone() };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sfu-worker-{i}"))
                    .spawn(move || {
                        realtime(rt);
                        worker::run(core, io, q)
                    })
                    .map_err(|e| SfuError::Startup(e.to_string()))?,
            );
        }
        {
            let recv = RecvLoop { socket, media: media.clone(), urgent, ctl: demux_rx, stop: stop.clone() };
            let plane = plane.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("sfu-recv".into())
                    .spawn(move || {
                        realtime(rt);
                        recv.run(&plane.counters)
                    })
                    .map_err(|e| SfuError::Startup(e.to_string()))?,
            );
        }
        tracing::info!(%local_addr, workers = n, "media plane listening (UDP)");
        let shared = Arc::new(Shared { plane, media, control, participants: DashMap::new(), stop });
        Ok(Sfu { shared, threads: Arc::new(std::sync::Mutex::new(threads)) })
    }

    /// The address advertised in ICE candidates (advertised IP, bound port).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.plane.local_addr
    }

    /// Register a participant and where its events go. Must precede other calls for it.
    pub fn add_participant(&self, participant: ParticipantId, events: EventSink) -> Result<(), SfuError> {
        self.join(participant, events, false)
    }

    /// Register a standard player (WHEP): like [`Sfu::add_participant`], but its subscriber
    /// session comes from its own offer ([`Sfu::watch`]) and follows the stage
    /// ([`Sfu::set_slots`]); [`Sfu::subscribe`] does nothing for it.
    pub fn add_player(&self, participant: ParticipantId, events: EventSink) -> Result<(), SfuError> {
        self.join(participant, events, true)
    }

    fn join(&self, participant: ParticipantId, events: EventSink, player: bool) -> Result<(), SfuError> {
        // Least-loaded would need counts per worker; participants are spread round-robin by id.
        let worker = (participant.0 as usize) % self.shared.plane.workers;
        self.shared.participants.insert(participant, worker);
        if let Err(e) = self.control(worker, WorkerMsg::Join(participant, events, player)) {
            self.shared.participants.remove(&participant);
            return Err(e);
        }
        Ok(())
    }

    /// The participant's signaling connection was replaced (a resumed session): its events go
    /// to `events` from now on. Its sessions, tracks and subscriptions are untouched; call
    /// [`Sfu::resync`] after to hear what the old sink missed.
    pub fn attach(&self, participant: ParticipantId, events: EventSink) -> Result<(), SfuError> {
        let worker = *self.shared.participants.get(&participant).ok_or(SfuError::NoSession)?;
        self.control(worker, WorkerMsg::Attach(participant, events))
    }

    /// A message on a worker's control queue. The queue itself never drops; signaling is told
    /// `Busy` when a worker has fallen this far behind, rather than piling up more.
    fn control(&self, worker: usize, msg: WorkerMsg) -> Result<(), SfuError> {
        let tx = self.shared.control.get(worker).ok_or(SfuError::Stopped)?;
        if tx.len() >= self.shared.plane.config.queue_capacity {
            return Err(SfuError::Busy);
        }
        tx.send(msg).map_err(|_| SfuError::Stopped)
    }

    fn command(&self, participant: ParticipantId, cmd: Command, reply: Option<ReplyTo>) -> Result<(), SfuError> {
        let worker = *self.shared.participants.get(&participant).ok_or(SfuError::NoSession)?;
        self.control(worker, WorkerMsg::Command(cmd, reply))
    }

    async fn ask<T>(
        &self,
        participant: ParticipantId,
        cmd: Command,
        reply: fn(oneshot::Sender<Result<T, SfuError>>) -> ReplyTo,
    ) -> Result<T, SfuError> {
        let (tx, rx) = oneshot::channel();
        self.command(participant, cmd, Some(reply(tx)))?;
        rx.await.map_err(|_| SfuError::Stopped)?
    }

    /// Apply a publisher's SDP offer (first publish or renegotiation); returns the answer.
    pub async fn publish(&self, participant: ParticipantId, offer: String) -> Result<String, SfuError> {
        self.ask(participant, Command::Publish { participant, offer }, ReplyTo::Sdp).await
    }

    /// Start forwarding `track` to `participant` (an offer follows as an event).
    pub fn subscribe(&self, participant: ParticipantId, track: TrackInfo) -> Result<(), SfuError> {
        self.subscribe_all(participant, vec![track])
    }

    /// Start forwarding several tracks to `participant` with one offer (a viewer joining a room).
    pub fn subscribe_all(&self, participant: ParticipantId, tracks: Vec<TrackInfo>) -> Result<(), SfuError> {
        if tracks.is_empty() {
            return Ok(());
        }
        self.command(participant, Command::Subscribe { participant, tracks }, None)
    }

    /// Stop forwarding `track` to `participant`.
    pub fn unsubscribe(&self, participant: ParticipantId, track: TrackId) -> Result<(), SfuError> {
        self.command(participant, Command::Unsubscribe { participant, track }, None)
    }

    /// Apply the client's answer to our last subscriber offer.
    pub async fn subscriber_answer(&self, participant: ParticipantId, answer: String) -> Result<(), SfuError> {
        self.ask(participant, Command::SubscriberAnswer { participant, answer }, ReplyTo::Done).await
    }

    /// A WHEP player's offer (RFC 9725's sibling for playback): answered by `participant`'s
    /// subscriber session, whose offered audio and video m-lines become slots carrying
    /// `stage`'s tracks in stage order (the i-th audio m-line the i-th audio track, and so on).
    /// A later offer on the same session (an ICE restart) renegotiates it. The player never
    /// gets an offer from us: when the stage changes, call [`Sfu::set_slots`].
    pub async fn watch(&self, participant: ParticipantId, offer: String, stage: Vec<TrackInfo>) -> Result<String, SfuError> {
        self.ask(participant, Command::Watch { participant, offer, stage }, ReplyTo::Sdp).await
    }

    /// The stage of a WHEP player's room changed: its slots carry `stage`'s tracks (in stage
    /// order) from now on, each slot under its SSRC, the new source from a keyframe. Slots past
    /// the stage's tracks send nothing. No effect on a page's session.
    pub fn set_slots(&self, participant: ParticipantId, stage: Vec<TrackInfo>) -> Result<(), SfuError> {
        self.command(participant, Command::SetSlots { participant, stage }, None)
    }

    /// The client's network changed (it noticed its path gone): restart ICE on its subscriber
    /// connection. A [`SfuEvent::SubscriberOffer`](crate::SfuEvent::SubscriberOffer) with new ICE
    /// credentials follows (after the answer to one still out), then our candidate again. The
    /// publisher connection restarts from the client's side: its next offer has new credentials.
    pub async fn restart_ice(&self, participant: ParticipantId) -> Result<(), SfuError> {
        self.ask(participant, Command::RestartIce { participant }, ReplyTo::Done).await
    }

    /// A trickled candidate from the client for one of its connections.
    pub async fn add_candidate(
        &self,
        participant: ParticipantId,
        role: SessionRole,
        candidate: RTCIceCandidateInit,
    ) -> Result<(), SfuError> {
        self.ask(participant, Command::Candidate { key: SessionKey { participant, role }, candidate }, ReplyTo::Done).await
    }

    /// The viewer renders `track` at this height (device pixels, 0 = hidden): the layer cap
    /// follows it.
    pub fn set_video_size(&self, participant: ParticipantId, track: TrackId, height: u32) -> Result<(), SfuError> {
        self.command(participant, Command::VideoSize { participant, track, height }, None)
    }

    /// The viewer's quality choice (auto / high / medium / low), for one track or all.
    pub fn set_quality(&self, participant: ParticipantId, track: Option<TrackId>, quality: Quality) -> Result<(), SfuError> {
        self.command(participant, Command::Quality { participant, track, quality }, None)
    }

    /// Whether the viewer falls back to audio only when its path cannot carry the lowest video
    /// layer ([`SfuEvent::AudioOnly`](crate::SfuEvent::AudioOnly) tells it; thresholds in
    /// [`SfuConfig::fallback`]). On for every participant unless turned off here; turning it off
    /// while its video is paused resumes the video at once.
    pub fn set_audio_only_fallback(&self, participant: ParticipantId, enabled: bool) -> Result<(), SfuError> {
        self.command(participant, Command::AudioOnlyFallback { participant, enabled }, None)
    }

    /// The participant's reader missed events ([`crate::api::Events::take_lag`]): send again
    /// what they carried — a subscriber offer still unanswered, connection states, the audio-only
    /// state, the layers wanted of its simulcast tracks. Events after this call are newer.
    pub fn resync(&self, participant: ParticipantId) -> Result<(), SfuError> {
        self.command(participant, Command::Resync { participant }, None)
    }

    /// Current layer, cap and estimate per subscribed track.
    pub async fn subscriber_stats(&self, participant: ParticipantId) -> Result<SubscriberStats, SfuError> {
        self.ask(participant, Command::Stats { participant }, ReplyTo::Stats).await
    }

    /// Publish tracks fed in-process (the RTMP bridge) for `participant`, which must have been
    /// added. Each becomes a [`SfuEvent::TrackPublished`](crate::SfuEvent::TrackPublished) like a browser's track; feed packets
    /// with [`Sfu::ingest`]. They stay published until the participant is removed.
    pub async fn open_ingest(&self, participant: ParticipantId, tracks: Vec<(MediaKind, CodecInfo)>) -> Result<Vec<TrackInfo>, SfuError> {
        self.ask(participant, Command::OpenIngest { participant, tracks }, ReplyTo::Tracks).await
    }

    /// One RTP packet of an ingest track. Never blocks: a full worker queue drops it (counted).
    pub fn ingest(&self, participant: ParticipantId, packet: MediaPacket) -> Result<(), SfuError> {
        let worker = *self.shared.participants.get(&participant).ok_or(SfuError::NoSession)?;
        let tx = self.shared.media.get(worker).ok_or(SfuError::Stopped)?;
        tx.try_send(WorkerMsg::Input(Input::Ingest(participant, packet))).map_err(|e| {
            self.shared.plane.counters.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            match e {
                TrySendError::Full(_) => SfuError::Busy,
                TrySendError::Disconnected(_) => SfuError::Stopped,
            }
        })
    }

    /// Close a participant's sessions; its tracks are unpublished everywhere.
    pub fn remove_participant(&self, participant: ParticipantId) {
        if let Some((_, worker)) = self.shared.participants.remove(&participant) {
            // Straight onto the control queue, even when it is long: a leaving participant's
            // sessions must close.
            if let Some(tx) = self.shared.control.get(worker) {
                let _ = tx.send(WorkerMsg::Command(Command::RemoveParticipant { participant }, None));
            }
        }
    }

    /// End what `participant` publishes (its publisher session, its ingest tracks): taken off
    /// stage. It keeps watching.
    pub fn stop_publishing(&self, participant: ParticipantId) -> Result<(), SfuError> {
        self.command(participant, Command::StopPublishing { participant }, None)
    }

    /// Ask the publisher of `track` for a keyframe of every layer it sends (throttled per layer).
    pub fn request_keyframes(&self, track: TrackId) {
        if let Some(w) = self.shared.plane.owner(track) {
            let _ = self.control(w, WorkerMsg::Input(Input::KeyframeRequest(track, crate::worker::keyframes::ALL_LAYERS)));
        }
    }

    /// Ask the publisher of `track` for a keyframe of `layer` (throttled).
    pub fn request_keyframe(&self, track: TrackId, layer: u8) {
        if let Some(w) = self.shared.plane.owner(track) {
            let _ = self.control(w, WorkerMsg::Input(Input::KeyframeRequest(track, layer)));
        }
    }

    /// Hand every packet of `track` (every simulcast layer, as received) to `tap` on the
    /// publisher's worker thread, or stop (`None`). While tapped the publisher is asked for
    /// every layer, and for keyframes when the tap starts. The tap must not block: it runs on
    /// the per-packet path ([`crate::record::Recorder`] queues and counts what it drops).
    pub fn tap(&self, track: TrackId, tap: Option<crate::record::Tap>) {
        if let Some(w) = self.shared.plane.owner(track) {
            let _ = self.control(w, WorkerMsg::Input(Input::Tap(track, tap)));
        }
    }

    /// Cascade, origin: relay every packet of `track` of layers up to `leg.max_layer` to an
    /// edge (`crate::relay`). A leg with the same id is replaced. The publisher is asked for
    /// those layers and for keyframes.
    pub fn relay_to(&self, track: TrackId, leg: crate::worker::relays::RelayOut) {
        if let Some(w) = self.shared.plane.owner(track) {
            let _ = self.control(w, WorkerMsg::Input(Input::RelayCtl(crate::worker::relays::RelayCtl::Start(track, leg))));
        }
    }

    /// Cascade, origin: the edge's viewers want layers up to `max_layer` of `track` now.
    pub fn relay_layers(&self, track: TrackId, leg: u32, max_layer: u8) {
        if let Some(w) = self.shared.plane.owner(track) {
            let _ = self.control(w, WorkerMsg::Input(Input::RelayCtl(crate::worker::relays::RelayCtl::Layers(track, leg, max_layer))));
        }
    }

    /// Cascade, origin: stop relaying `track` on `leg`.
    pub fn stop_relay(&self, track: TrackId, leg: u32) {
        if let Some(w) = self.shared.plane.owner(track) {
            let _ = self.control(w, WorkerMsg::Input(Input::RelayCtl(crate::worker::relays::RelayCtl::Stop(track, leg))));
        }
    }

    /// Cascade, edge: publish tracks relayed from the origin for `participant` (which must
    /// have been added), under the origin's track ids. Each becomes a
    /// [`SfuEvent::TrackPublished`](crate::SfuEvent::TrackPublished); its viewers' keyframe
    /// requests come back as [`SfuEvent::KeyframeWanted`](crate::SfuEvent::KeyframeWanted) and
    /// their layer demand as [`SfuEvent::LayersWanted`](crate::SfuEvent::LayersWanted), for
    /// signaling to pass to the origin.
    pub async fn open_relay(
        &self,
        participant: ParticipantId,
        tracks: Vec<crate::worker::relays::RelayTrack>,
    ) -> Result<Vec<TrackInfo>, SfuError> {
        self.ask(participant, Command::OpenRelay { participant, tracks }, ReplyTo::Tracks).await
    }

    /// Cascade, edge: a relayed track ended at the origin.
    pub fn close_relay_track(&self, participant: ParticipantId, track: TrackId) -> Result<(), SfuError> {
        self.command(participant, Command::CloseRelayTrack { participant, track }, None)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SfuStats {
        let c = &self.shared.plane.counters;
        SfuStats {
            participants: c.participants.load(Ordering::Relaxed),
            sessions: c.sessions.load(Ordering::Relaxed),
            tracks: c.tracks.load(Ordering::Relaxed),
            demux_sessions: c.demux_sessions.load(Ordering::Relaxed),
            demux_addresses: c.demux_addresses.load(Ordering::Relaxed),
            datagrams_in: c.datagrams_in.load(Ordering::Relaxed),
            datagrams_dropped: c.datagrams_dropped.load(Ordering::Relaxed),
            rtp_in: c.rtp_in.load(Ordering::Relaxed),
            rtp_out: c.rtp_out.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
            keyframe_requests: c.keyframe_requests.load(Ordering::Relaxed),
            keyframe_replays: c.keyframe_replays.load(Ordering::Relaxed),
            plis_sent: c.plis_sent.load(Ordering::Relaxed),
            session_errors: c.session_errors.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            nacked: crate::metrics::NACKED.load(Ordering::Relaxed),
            retransmitted: crate::metrics::RETRANSMITTED.load(Ordering::Relaxed),
            firs_received: crate::metrics::FIRS_RECEIVED.load(Ordering::Relaxed),
            layer_switches: crate::metrics::LAYER_SWITCHES.load(Ordering::Relaxed),
            forwarding_delay: {
                let mut s = crate::metrics::DelaySnapshot::default();
                for h in self.shared.plane.delays.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                    h.add_to(&mut s);
                }
                s
            },
        }
    }

    /// Stop every thread and wait for them (bounded by the 100 ms socket and queue timeouts).
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Put the calling thread under SCHED_RR at `priority` (0: leave it alone). A refusal (no
/// CAP_SYS_NICE) is logged and the thread runs as usual.
fn realtime(priority: u8) {
    if priority == 0 {
        return;
    }
    let param = libc::sched_param { sched_priority: i32::from(priority.min(99)) };
    // SAFETY: `param` is a valid sched_param for the call's duration; pid 0 is this thread.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) };
    if r != 0 {
        let name = std::thread::current().name().unwrap_or("sfu").to_owned();
        tracing::warn!(thread = %name, priority, "rtc.realtime_priority: not allowed ({}); the default scheduler is used", std::io::Error::last_os_error());
    }
}
