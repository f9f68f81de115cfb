//! The handle signaling holds: typed commands into the workers, events back per participant.

use crate::config::SfuConfig;
use crate::error::SfuError;
use crate::forward::selector::Quality;
use crate::ids::{ParticipantId, SessionKey, SessionRole, TrackId};
use crate::net::demux::{DemuxTable, Route};
use crate::session::SessionFactory;
use crate::worker::routing::MediaPacket;
use crate::worker::{self, Command, WorkerMsg};
use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use dashmap::DashMap;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use serde::Serialize;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

/// A published track's codec, as negotiated with its publisher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CodecInfo {
    pub mime_type: String,
    pub clock_rate: u32,
    pub channels: u16,
    pub fmtp: String,
}

/// A published track.
#[derive(Clone, Debug, Serialize)]
pub struct TrackInfo {
    pub id: TrackId,
    pub publisher: ParticipantId,
    pub kind: MediaKind,
    pub codec: CodecInfo,
}

/// Peer connection states signaling cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnState {
    Connected,
    Disconnected,
    Failed,
    Closed,
}

/// What the SFU tells signaling about one participant.
#[derive(Clone, Debug)]
pub enum SfuEvent {
    /// One of the participant's tracks started arriving.
    TrackPublished(TrackInfo),
    /// One of the participant's tracks is gone (session closed or track ended).
    TrackUnpublished(TrackId),
    /// A new offer for the participant's subscriber connection; send it to the client.
    SubscriberOffer(String),
    /// Our ICE candidate for one of the participant's connections (also inside the SDP).
    LocalCandidate(SessionRole, RTCIceCandidateInit),
    /// Connection state of one of the participant's sessions changed.
    Connection(SessionRole, ConnState),
    /// A session was closed by the SFU (ICE failure, timeout, bad input).
    SessionClosed(SessionRole, String),
    /// Dynacast: of this simulcast track the participant publishes, layers above this one are
    /// not wanted by anybody now; the client should pause them (and resume them when this rises).
    LayersWanted(TrackId, u8),
}

/// One subscribed track as the SFU forwards it (also the wire form in the `stats` message).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct TrackStats {
    pub track: TrackId,
    /// Layer being forwarded (0 = lowest); `None` before the first frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<u8>,
    /// The highest layer allowed now (quality choice, video size, bandwidth).
    pub max_layer: u8,
    /// The highest VP8 temporal layer allowed now (2 = full frame rate; lower only when the
    /// bandwidth is short and the publisher sends temporal layers).
    pub max_temporal: u8,
    /// This track's share of the viewer's bandwidth estimate (bits/s), once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_bps: Option<u64>,
    pub packets: u64,
    pub bytes: u64,
    /// Arrival rates of the publisher's layers (bits/s; nominal until measured).
    pub layer_bps: [u64; 3],
}

/// A subscriber's view of its subscriptions.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SubscriberStats {
    /// Send-side bandwidth estimate toward this viewer (bits/s), once feedback produced one.
    pub bandwidth_bps: Option<u64>,
    /// Transport-wide congestion control feedback packets the viewer has sent.
    pub twcc_feedback: u64,
    /// What the estimator sees of the path toward this viewer.
    pub path: Option<PathStats>,
    pub tracks: Vec<TrackStats>,
}

/// The path toward a viewer, as the bandwidth estimator measures it from feedback.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct PathStats {
    /// Queueing delay above the smallest one-way delay seen (ms).
    pub queue_delay_ms: f64,
    /// Share of packets lost over the last half second.
    pub loss: f64,
    /// Probe clusters sent so far.
    pub probes: u64,
}

/// Where a participant's events go. Workers never block on it: a full sink drops the event
/// and logs it.
pub type EventSink = mpsc::Sender<SfuEvent>;

/// Counters for operators and tests.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SfuStats {
    pub participants: usize,
    pub sessions: usize,
    pub tracks: usize,
    pub demux_sessions: usize,
    pub demux_addresses: usize,
    pub datagrams_in: u64,
    pub datagrams_dropped: u64,
    pub rtp_in: u64,
    pub rtp_out: u64,
    pub bytes_out: u64,
    pub keyframe_requests: u64,
    pub plis_sent: u64,
    pub session_errors: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub participants: AtomicUsize,
    pub sessions: AtomicUsize,
    pub tracks: AtomicUsize,
    pub demux_sessions: AtomicUsize,
    pub demux_addresses: AtomicUsize,
    pub datagrams_in: AtomicU64,
    pub datagrams_dropped: AtomicU64,
    pub rtp_in: AtomicU64,
    pub rtp_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub plis_sent: AtomicU64,
    pub session_errors: AtomicU64,
}

/// Changes to the receive thread's demux table.
pub(crate) enum DemuxCtl {
    Register(String, Route),
    Remove(SessionKey),
}

pub(crate) struct Shared {
    pub config: SfuConfig,
    pub socket: UdpSocket,
    pub local_addr: SocketAddr,
    pub workers: Vec<Sender<WorkerMsg>>,
    /// Per worker: STUN and DTLS datagrams, handled before queued media so joins and ICE
    /// checks do not wait behind a fan-out backlog.
    pub urgent: Vec<Sender<WorkerMsg>>,
    pub participants: DashMap<ParticipantId, usize>,
    pub tracks: DashMap<TrackId, usize>,
    pub demux: Sender<DemuxCtl>,
    pub counters: Counters,
    pub stop: AtomicBool,
    pub factory: SessionFactory,
}

impl Shared {
    pub(crate) fn send_to_worker(&self, worker: usize, msg: WorkerMsg) -> Result<(), SfuError> {
        let tx = self.workers.get(worker).ok_or(SfuError::Stopped)?;
        tx.try_send(msg).map_err(|e| match e {
            TrySendError::Full(_) => SfuError::Busy,
            TrySendError::Disconnected(_) => SfuError::Stopped,
        })
    }
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
        let n = if config.workers == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { config.workers };
        let mut worker_rx = Vec::new();
        let mut urgent = Vec::new();
        let mut workers = Vec::new();
        for _ in 0..n {
            let (tx, rx) = bounded(config.queue_capacity);
            workers.push(tx);
            let (utx, urx) = bounded(config.queue_capacity.min(4096));
            urgent.push(utx);
            worker_rx.push((rx, urx));
        }
        let (demux_tx, demux_rx) = bounded(config.queue_capacity);
        let shared = Arc::new(Shared {
            factory: SessionFactory::new(local_addr)?.with_policy(config.layers),
            config,
            socket,
            local_addr,
            workers,
            urgent,
            participants: DashMap::new(),
            tracks: DashMap::new(),
            demux: demux_tx,
            counters: Counters::default(),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        for (i, (rx, urx)) in worker_rx.into_iter().enumerate() {
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sfu-worker-{i}"))
                    .spawn(move || worker::run(i, shared, rx, urx))
                    .map_err(|e| SfuError::Startup(e.to_string()))?,
            );
        }
        {
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("sfu-recv".into())
                    .spawn(move || recv_loop(shared, demux_rx))
                    .map_err(|e| SfuError::Startup(e.to_string()))?,
            );
        }
        tracing::info!(%local_addr, workers = n, "media plane listening (UDP)");
        Ok(Sfu { shared, threads: Arc::new(std::sync::Mutex::new(threads)) })
    }

    /// The address advertised in ICE candidates (advertised IP, bound port).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Register a participant and where its events go. Must precede other calls for it.
    pub fn add_participant(&self, participant: ParticipantId, events: EventSink) -> Result<(), SfuError> {
        // Least-loaded would need counts per worker; participants are spread round-robin by id.
        let worker = (participant.0 as usize) % self.shared.workers.len();
        self.shared.participants.insert(participant, worker);
        if let Err(e) = self.shared.send_to_worker(worker, WorkerMsg::Command(Command::AddParticipant { participant, events })) {
            self.shared.participants.remove(&participant);
            return Err(e);
        }
        Ok(())
    }

    fn command(&self, participant: ParticipantId, cmd: Command) -> Result<(), SfuError> {
        let worker = *self.shared.participants.get(&participant).ok_or(SfuError::NoSession)?;
        self.shared.send_to_worker(worker, WorkerMsg::Command(cmd))
    }

    async fn ask<T>(
        &self,
        participant: ParticipantId,
        make: impl FnOnce(oneshot::Sender<Result<T, SfuError>>) -> Command,
    ) -> Result<T, SfuError> {
        let (tx, rx) = oneshot::channel();
        self.command(participant, make(tx))?;
        rx.await.map_err(|_| SfuError::Stopped)?
    }

    /// Apply a publisher's SDP offer (first publish or renegotiation); returns the answer.
    pub async fn publish(&self, participant: ParticipantId, offer: String) -> Result<String, SfuError> {
        self.ask(participant, |reply| Command::Publish { participant, offer, reply }).await
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
        self.command(participant, Command::Subscribe { participant, tracks })
    }

    /// Stop forwarding `track` to `participant`.
    pub fn unsubscribe(&self, participant: ParticipantId, track: TrackId) -> Result<(), SfuError> {
        self.command(participant, Command::Unsubscribe { participant, track })
    }

    /// Apply the client's answer to our last subscriber offer.
    pub async fn subscriber_answer(&self, participant: ParticipantId, answer: String) -> Result<(), SfuError> {
        self.ask(participant, |reply| Command::SubscriberAnswer { participant, answer, reply }).await
    }

    /// A trickled candidate from the client for one of its connections.
    pub async fn add_candidate(
        &self,
        participant: ParticipantId,
        role: SessionRole,
        candidate: RTCIceCandidateInit,
    ) -> Result<(), SfuError> {
        self.ask(participant, |reply| Command::Candidate { key: SessionKey { participant, role }, candidate, reply }).await
    }

    /// The viewer renders `track` at this height (device pixels, 0 = hidden): the layer cap
    /// follows it.
    pub fn set_video_size(&self, participant: ParticipantId, track: TrackId, height: u32) -> Result<(), SfuError> {
        self.command(participant, Command::VideoSize { participant, track, height })
    }

    /// The viewer's quality choice (auto / high / medium / low), for one track or all.
    pub fn set_quality(&self, participant: ParticipantId, track: Option<TrackId>, quality: Quality) -> Result<(), SfuError> {
        self.command(participant, Command::Quality { participant, track, quality })
    }

    /// Current layer, cap and estimate per subscribed track.
    pub async fn subscriber_stats(&self, participant: ParticipantId) -> Result<SubscriberStats, SfuError> {
        self.ask(participant, |reply| Command::Stats { participant, reply }).await
    }

    /// Publish tracks fed in-process (the RTMP bridge) for `participant`, which must have been
    /// added. Each becomes a [`SfuEvent::TrackPublished`] like a browser's track; feed packets
    /// with [`Sfu::ingest`]. They stay published until the participant is removed.
    pub async fn open_ingest(&self, participant: ParticipantId, tracks: Vec<(MediaKind, CodecInfo)>) -> Result<Vec<TrackInfo>, SfuError> {
        self.ask(participant, |reply| Command::OpenIngest { participant, tracks, reply }).await
    }

    /// One RTP packet of an ingest track. Never blocks: a full worker queue drops it (counted).
    pub fn ingest(&self, participant: ParticipantId, packet: MediaPacket) -> Result<(), SfuError> {
        let worker = *self.shared.participants.get(&participant).ok_or(SfuError::NoSession)?;
        let r = self.shared.send_to_worker(worker, WorkerMsg::Ingest(participant, packet));
        if r.is_err() {
            self.shared.counters.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Close a participant's sessions; its tracks are unpublished everywhere.
    pub fn remove_participant(&self, participant: ParticipantId) {
        if let Some((_, worker)) = self.shared.participants.remove(&participant) {
            let _ = self.shared.send_to_worker(worker, WorkerMsg::Command(Command::RemoveParticipant { participant }));
        }
    }

    /// Ask the publisher of `track` for a keyframe of `layer` (throttled).
    pub fn request_keyframe(&self, track: TrackId, layer: u8) {
        if let Some(w) = self.shared.tracks.get(&track).map(|w| *w) {
            let _ = self.shared.send_to_worker(w, WorkerMsg::KeyframeRequest(track, layer));
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SfuStats {
        let c = &self.shared.counters;
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
            plis_sent: c.plis_sent.load(Ordering::Relaxed),
            session_errors: c.session_errors.load(Ordering::Relaxed),
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

/// Largest datagram we accept; anything longer is truncated by the kernel and dropped here.
const MAX_DATAGRAM: usize = 1500;

fn recv_loop(shared: Arc<Shared>, ctl: Receiver<DemuxCtl>) {
    let mut table = DemuxTable::default();
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let c = &shared.counters;
    while !shared.stop.load(Ordering::Relaxed) {
        for msg in ctl.try_iter() {
            match msg {
                DemuxCtl::Register(ufrag, route) => table.register(ufrag, route),
                DemuxCtl::Remove(key) => table.remove(key),
            }
            c.demux_sessions.store(table.sessions(), Ordering::Relaxed);
            c.demux_addresses.store(table.addresses(), Ordering::Relaxed);
        }
        let (n, from) = match shared.socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => {
                // ICMP port unreachable and the like surface here on Linux; keep serving.
                tracing::trace!("udp recv: {e}");
                continue;
            }
        };
        c.datagrams_in.fetch_add(1, Ordering::Relaxed);
        if n == 0 || n > MAX_DATAGRAM {
            c.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Some(route) = table.route(from, &buf[..n]) else {
            c.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        c.demux_addresses.store(table.addresses(), Ordering::Relaxed);
        let msg = WorkerMsg::Datagram { session: route.session, from, data: BytesMut::from(&buf[..n]), at: Instant::now() };
        // RFC 7983: STUN is 0-3, DTLS 20-63; media and RTCP (128-191) keep their FIFO order.
        let urgent = matches!(buf[0], 0..=3 | 20..=63);
        let sent = if urgent {
            shared.urgent.get(route.worker).is_some_and(|tx| tx.try_send(msg).is_ok())
        } else {
            shared.send_to_worker(route.worker, msg).is_ok()
        };
        if !sent {
            c.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
