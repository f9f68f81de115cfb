//! The media engine: many WebRTC peers (viewers and synthetic publishers) on one thread, on the
//! sans-IO `rtc` stack. One UDP socket per peer (the SFU tells peers apart by address), readiness
//! from mio, timers in a heap: a peer costs nothing while it has nothing to do, so one core drives
//! thousands. Received packets are measured in place: sequence numbers, the 16-byte stamp.

use crate::payload::{self, Stamp};
use crate::twcc;
use bytes::BytesMut;
use hdrhistogram::Histogram;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::header::Header;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::sansio::Protocol;
use rtc::shared::marshal::{MarshalSize, Unmarshal};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use rustc_hash::FxHashMap;
use sfu::client::KeyTap;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const WAKE: Token = Token(usize::MAX);
/// Datagrams read from one socket per readiness event before moving on (fairness).
const READ_BURST: usize = 64;
const HEIGHTS: [u16; 3] = [180, 360, 720];
const VIDEO_PT: u8 = 96;
const OPUS_PT: u8 = 111;

pub type Reply<T> = oneshot::Sender<Result<T, String>>;

/// What the signaling side asks of the engine.
pub enum Cmd {
    /// A server offer for viewer `id` (the first creates the peer); reply: our answer.
    Offer {
        id: u64,
        sdp: String,
        started: Instant,
        reply: Reply<String>,
    },
    /// Create publisher `id`; reply: our offer.
    Publish {
        id: u64,
        spec: PublisherSpec,
        reply: Reply<String>,
    },
    /// The server's answer to publisher `id`.
    Answer {
        id: u64,
        sdp: String,
        reply: Reply<()>,
    },
    /// Dynacast: publisher `id` should send layers up to `max` only.
    Layers {
        id: u64,
        max: u8,
    },
    Close {
        id: u64,
    },
    /// Viewer `id`'s network changed: a new socket (a new local port) replaces the old one, and
    /// nothing leaves until the server's ICE-restart offer is answered from the new address.
    /// Reply: the new address.
    Move {
        id: u64,
        reply: Reply<SocketAddr>,
    },
    /// Viewer `id` was joined afresh (its resume was refused): a new peer connection on its
    /// socket; its figures and recovery watch go on.
    Reset {
        id: u64,
    },
    /// Drop `loss` (0..=1) of the datagrams to and from `who` until `until`.
    Impair {
        who: Who,
        loss: f64,
        until: Instant,
    },
    /// Watch `who`'s recovery: the first frame each shows that was sent at or after `since_us`
    /// (the [`payload::now_us`] clock).
    Watch {
        who: Who,
        since_us: u64,
    },
    /// The watched viewers: time from the watch's start to recovery, if it came.
    Recoveries {
        reply: Reply<Vec<Recovery>>,
    },
    /// The delay histogram since the last `Measure` (or the window's start), and the viewers'
    /// expected and received packet counts so far; the histogram restarts.
    Measure {
        reply: Reply<Measure>,
    },
    /// Viewer `id`'s QoE report now (its freezes since the last report drained).
    Qoe {
        id: u64,
        reply: Reply<QoeNow>,
    },
    /// What the server says of viewer `id` as it leaves (its `stats`): the transport-wide CC
    /// reports it got from the viewer, and its estimate toward it (`None`: none from feedback).
    ServerView {
        id: u64,
        twcc_feedback: u64,
        estimate_bps: Option<u64>,
    },
    /// A publisher sending plain RTP (no WebRTC) to a server's RTP input, e.g. a Janus
    /// streaming mountpoint: one video layer (the top rate) and audio.
    RawPublisher {
        spec: PublisherSpec,
        audio_to: SocketAddr,
        video_to: SocketAddr,
        reply: Reply<()>,
    },
}

/// One watched viewer's recovery.
#[derive(Clone, Copy, Debug)]
pub struct Recovery {
    pub id: u64,
    pub recovered: Option<Duration>,
    /// How long ago its last video packet came (`None`: never, or it left).
    pub video_age: Option<Duration>,
}

/// Whom an impairment or a watch applies to.
#[derive(Clone, Debug)]
pub enum Who {
    Viewers,
    Publishers,
    Ids(Vec<u64>),
}

impl Who {
    fn has(&self, id: u64, publisher: bool) -> bool {
        match self {
            Who::Viewers => !publisher,
            Who::Publishers => publisher,
            Who::Ids(ids) => ids.contains(&id),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct PublisherSpec {
    /// Bits per second of the three layers (q, h, f).
    pub rates: [u32; 3],
    pub keyframe_every: Duration,
    /// Pace video as browsers do (libwebrtc's pacer: packets leave no faster than this factor
    /// times the layers' rate, 2.5 by default there) instead of sending a frame's packets at once.
    pub pace: Option<f64>,
}

/// A video packet waiting for its publisher's pacer; built, and stamped, when it leaves.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Paced {
    at: Instant,
    layer: u8,
    key: bool,
    first: bool,
    marker: bool,
    size: usize,
    seq: u16,
    ts: u32,
}

/// A publisher's video pacer: each packet leaves when the previous one's bits have gone at
/// the pacing rate, or at once without one.
#[derive(Default)]
struct Pacer {
    queue: std::collections::VecDeque<Paced>,
    free: Option<Instant>,
}

impl Pacer {
    /// Queue `p` (its `at` is set here) for a pacing rate of `bps` (`None`: no pacing).
    fn push(&mut self, now: Instant, bps: Option<f64>, mut p: Paced) {
        p.at = now;
        if let Some(bps) = bps.filter(|b| *b > 0.0) {
            let at = self.free.map_or(now, |f| f.max(now));
            // 12 bytes of RTP header besides the payload; the rest of the headers are alike for all.
            self.free = Some(at + Duration::from_secs_f64((p.size + 12) as f64 * 8.0 / bps));
            p.at = at;
        }
        self.queue.push_back(p);
    }

    /// The packets due at `now`, in order.
    fn due(&mut self, now: Instant) -> impl Iterator<Item = Paced> + '_ {
        std::iter::from_fn(move || if self.queue.front()?.at <= now { self.queue.pop_front() } else { None })
    }

    fn next(&self) -> Option<Instant> {
        self.queue.front().map(|p| p.at)
    }
}

/// One viewer's outcome.
#[derive(Clone, Debug, Default)]
pub struct ViewerResult {
    pub connected: bool,
    /// WebSocket connect → the server's first offer reached the engine.
    pub offer: Option<Duration>,
    /// WebSocket connect → ICE and DTLS done.
    pub media_connected: Option<Duration>,
    pub first_rtp: Option<Duration>,
    pub first_keyframe: Option<Duration>,
    pub packets: u64,
    pub bytes: u64,
    /// RTP packets it opened itself (a lean viewer, once DTLS was done).
    pub lean_packets: u64,
    /// The server's view as the viewer left: TWCC reports it got, its estimate toward it.
    pub server_view: Option<(u64, Option<u64>)>,
    pub expected: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// RFC 3550 interarrival jitter, averaged over the viewer's streams (ms).
    pub jitter_ms: f64,
    /// Video packets per simulcast layer.
    pub layers: [u64; 3],
    /// The layer of the last video packet.
    pub last_layer: Option<u8>,
    /// What a player would report (docs/operations.md "KPIs"), from the frames' arrival.
    pub qoe: Qoe,
    /// A publisher's peer (not a viewer).
    pub publisher: bool,
    /// How long the viewer was there (WebSocket connect → close).
    pub watch: Duration,
}

/// A viewer's QoE as a player reports it, measured on whole frames (a frame is complete at its
/// marker bit). A freeze is a gap between frames longer than max(3 × the mean frame interval,
/// the mean + 150 ms) — the definition Chromium's `freezeCount` uses.
#[derive(Clone, Debug, Default)]
pub struct Qoe {
    pub frames: u64,
    pub freezes: u64,
    pub freeze_ms: u64,
    /// Freezes that ended and were not reported yet: how long each lasted.
    pub recoveries_ms: Vec<u64>,
    /// Every freeze's length, for the run's own figures.
    pub all_recoveries_ms: Vec<u64>,
    last_frame: Option<Instant>,
    mean_interval_ms: f64,
}

impl Qoe {
    /// A complete frame arrived at `now`.
    pub fn frame(&mut self, now: Instant) {
        if let Some(last) = self.last_frame {
            let gap = now.saturating_duration_since(last).as_secs_f64() * 1000.0;
            if self.frames >= 10 {
                let limit = (3.0 * self.mean_interval_ms).max(self.mean_interval_ms + 150.0);
                if gap > limit {
                    self.freezes += 1;
                    self.freeze_ms += gap as u64;
                    if self.recoveries_ms.len() < 20 {
                        self.recoveries_ms.push(gap as u64);
                    }
                    self.all_recoveries_ms.push(gap as u64);
                }
            }
            // A freeze does not move the mean (Chromium keeps it over regular frames).
            if self.frames < 10 || gap <= (3.0 * self.mean_interval_ms).max(self.mean_interval_ms + 150.0) {
                self.mean_interval_ms =
                    if self.mean_interval_ms == 0.0 { gap } else { self.mean_interval_ms + (gap - self.mean_interval_ms) / 16.0 };
            }
        }
        self.frames += 1;
        self.last_frame = Some(now);
    }
}

/// What [`Cmd::Qoe`] answers: the report to send now (recoveries drained).
#[derive(Clone, Debug, Default)]
pub struct QoeNow {
    pub first_frame_ms: Option<u64>,
    pub frames: u64,
    pub freezes: u64,
    pub freeze_ms: u64,
    pub recoveries_ms: Vec<u64>,
    pub layer: Option<u8>,
    pub watch_ms: u64,
}

/// What [`Cmd::Measure`] answers.
#[derive(Clone, Debug)]
pub struct Measure {
    pub delay: Histogram<u64>,
    /// Packets every viewer's sequence numbers say were sent to it so far, and those received.
    pub expected: u64,
    pub received: u64,
}

/// One second of the run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Sample {
    pub t: f64,
    pub packets_per_s: u64,
    pub mbit_per_s: f64,
    pub delay_p50_ms: f64,
    pub delay_p99_ms: f64,
    pub viewers_receiving: u64,
}

/// Shared with the reporting side while the engine runs.
#[derive(Default)]
pub struct Live {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub connected: AtomicU64,
    pub published_packets: AtomicU64,
    pub samples: Mutex<Vec<Sample>>,
    pub stop: AtomicBool,
}

pub struct Engine {
    tx: Sender<Cmd>,
    waker: Arc<Waker>,
    pub live: Arc<Live>,
    thread: Option<std::thread::JoinHandle<HashMap<u64, ViewerResult>>>,
}

impl Engine {
    /// Start the engine thread. `local_ip` is the address peers bind and advertise.
    /// `lean_viewers`: viewers open the server's SRTP themselves and write their own
    /// transport-wide CC feedback once DTLS is done, instead of handing each datagram to rtc
    /// (see [`LeanRx`]).
    pub fn start(local_ip: IpAddr, lean_viewers: bool) -> anyhow::Result<Engine> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (tx, rx) = channel();
        let live = Arc::new(Live::default());
        let l = live.clone();
        let thread = std::thread::Builder::new()
            .name("loadtest-media".into())
            .spawn(move || Loop::new(poll, rx, l, local_ip, lean_viewers).run())?;
        Ok(Engine { tx, waker, live, thread: Some(thread) })
    }

    pub fn send(&self, cmd: Cmd) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Stop and collect every viewer's result.
    pub fn finish(mut self) -> HashMap<u64, ViewerResult> {
        self.live.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

#[derive(Default)]
struct StreamStats {
    base: Option<u64>,
    highest: u64,
    received: u64,
    seen: Seen,
    transit: Option<f64>,
    jitter: f64,
    /// Video only: the frames a decoder could show.
    chain: Option<crate::fault::Chain>,
}

/// The extended sequence numbers a stream received lately, a bit each for the last
/// [`Seen::WINDOW`]: a duplicate is told from a first arrival without a hash per packet. A
/// number older than the window counts as a first arrival.
#[derive(Default)]
struct Seen {
    bits: Vec<u64>,
    highest: Option<u64>,
}

impl Seen {
    const WINDOW: u64 = 4096;

    /// Note `ext`; whether it is new.
    fn insert(&mut self, ext: u64) -> bool {
        if self.bits.is_empty() {
            self.bits = vec![0; (Self::WINDOW / 64) as usize];
        }
        let bit = |e: u64| ((e % Self::WINDOW / 64) as usize, 1u64 << (e % 64));
        match self.highest {
            Some(h) if ext + Self::WINDOW <= h => return true,
            Some(h) if ext > h => {
                // Forget what the window leaves behind: the numbers it now reuses.
                for e in (h + 1)..=ext.min(h + Self::WINDOW) {
                    let (w, m) = bit(e);
                    self.bits[w] &= !m;
                }
                if ext >= h + Self::WINDOW {
                    self.bits.fill(0);
                }
                self.highest = Some(ext);
            }
            Some(_) => {}
            None => self.highest = Some(ext),
        }
        let (w, m) = bit(ext);
        let new = self.bits[w] & m == 0;
        self.bits[w] |= m;
        new
    }
}

/// A viewer's recovery being watched.
struct Watch {
    since_us: u64,
    /// `since_us` on the engine's clock.
    since: Instant,
    recovered: Option<Duration>,
}

struct PublisherState {
    spec: PublisherSpec,
    video: RTCRtpSenderId,
    audio: RTCRtpSenderId,
    ssrcs: [u32; 3],
    audio_ssrc: u32,
    seq: [u16; 4],
    ts: [u32; 4],
    mid_ext: Option<(u8, String)>,
    rid_ext: Option<u8>,
    max_layer: u8,
    want_key: [bool; 3],
    last_key: [Option<Instant>; 3],
    counter: u32,
    next_video: Instant,
    next_audio: Instant,
    pacer: Pacer,
}

struct RawPublisher {
    socket: std::net::UdpSocket,
    spec: PublisherSpec,
    audio_to: SocketAddr,
    video_to: SocketAddr,
    ssrcs: [u32; 2],
    seq: [u16; 2],
    ts: [u32; 2],
    counter: u32,
    last_key: Option<Instant>,
    next_video: Instant,
    next_audio: Instant,
    pacer: Pacer,
}

struct Peer {
    pc: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    connected: bool,
    failed: bool,
    deadline: Option<Instant>,
    started: Instant,
    result: ViewerResult,
    streams: FxHashMap<u32, StreamStats>,
    publisher: Option<PublisherState>,
    /// Moved to a new socket, waiting for the ICE restart: nothing leaves.
    offline: bool,
    /// Datagrams both ways are dropped with this probability until the instant.
    impair: Option<(f64, Instant)>,
    watch: Option<Watch>,
    last_video: Option<Instant>,
    /// A lean viewer's crypto provider, which tells it the server's SRTP master keys.
    tap: Option<Arc<KeyTap>>,
    /// What the server's last offer said a lean viewer needs.
    offered: Offered,
    /// A lean viewer's own receive path, once DTLS is done.
    lean: Option<LeanRx>,
}

impl Peer {
    /// Whether the harness's relay drops this datagram.
    fn dropped(&mut self, now: Instant) -> bool {
        match self.impair {
            Some((_, until)) if now >= until => {
                self.impair = None;
                false
            }
            Some((loss, _)) => rand::random::<f64>() < loss,
            None => false,
        }
    }
}

struct Loop {
    poll: Poll,
    rx: Receiver<Cmd>,
    live: Arc<Live>,
    local_ip: IpAddr,
    /// Viewers receive on the lean path ([`LeanRx`]).
    lean_viewers: bool,
    peers: FxHashMap<u64, Peer>,
    /// Viewers that have left, with their final figures.
    done: HashMap<u64, ViewerResult>,
    /// Watched viewers that left before they recovered.
    gone: Vec<u64>,
    raw: Vec<RawPublisher>,
    /// Ids of the WebRTC publishers (a handful), so the loop never scans every viewer.
    publishers: Vec<u64>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    buf: Vec<u8>,
    meter: Meter,
    last_sample: Instant,
    began: Instant,
}

pub fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s, 3 significant digits: constant bounds, valid by construction.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid") // cannot fail: constant, valid bounds
}

/// A plain RTP packet (RFC 3550 fixed header, no extensions).
fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + payload.len());
    v.push(0x80);
    v.push(pt | if marker { 0x80 } else { 0 });
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn ctx(local: SocketAddr, peer: SocketAddr) -> TransportContext {
    TransportContext { local_addr: local, peer_addr: peer, ecn: None, transport_protocol: TransportProtocol::UDP }
}

fn new_pc(local: SocketAddr, tap: Option<Arc<KeyTap>>) -> Result<RTCPeerConnection, String> {
    let mut me = MediaEngine::default();
    me.register_default_codecs().map_err(|e| e.to_string())?;
    // rtc's interceptors consume inbound RTCP; the SFU's feedback interceptor hands PLI/FIR on
    // to the application, so a synthetic publisher answers keyframe requests like a browser.
    let reg = register_default_interceptors(Registry::new(), &mut me)
        .map_err(|e| e.to_string())?
        .with(rtc::interceptor::Slot::from(sfu::client::KEYFRAME_FEEDBACK_SLOT), sfu::client::KeyframeFeedback::default());
    // ICE checks every 50 ms, as Chrome paces them before a pair works (rtc's default is 200 ms,
    // which would add up to 200 ms to every join). A restart forgets the old address: a viewer
    // restarts ICE only after its network changed (Cmd::Move).
    let mut setting = SettingEngineBuilder::new()
        .with_ice_connection_attempts(Some(Duration::from_millis(50)), Some(28))
        .with_discard_local_candidates_during_ice_restart(true);
    if let Some(tap) = tap {
        // A lean viewer's own context has the AES-128 profiles (the tap notes AES-128 keys):
        // rtc's default list also has AES-256-GCM, which Janus picks. Onair's lean send path
        // offers these two only, so both servers encrypt alike.
        use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
        setting = setting.with_crypto_provider(tap).with_srtp_protection_profiles(vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        ]);
    }
    let setting = setting.build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(setting)
        .with_media_engine(me)
        .with_interceptor_registry(reg)
        .build(Instant::now())
        .map_err(|e| e.to_string())?;
    pc.add_local_candidate(sfu::client::host_candidate(local)?).map_err(|e| e.to_string())?;
    Ok(pc)
}

/// One RTP packet's fields as a viewer measures them, from rtc's path or the lean one.
struct Rtp<'a> {
    ssrc: u32,
    seq: u16,
    pt: u8,
    marker: bool,
    payload: &'a [u8],
}

/// The delay histograms and counters of the current second (and, for the delay, since the last
/// `Measure`).
struct Meter {
    second: Histogram<u64>,
    total: Histogram<u64>,
    packets: u64,
    bytes: u64,
}

/// A viewer received `rtp` at `now` (`arrived_us` on the payload clock): its figures, the run's.
fn on_rtp(p: &mut Peer, meter: &mut Meter, live: &Live, rtp: Rtp<'_>, now: Instant, arrived_us: u64) {
    // Viewers negotiate rtc's default payload types: Opus is 111.
    let video = rtp.pt != OPUS_PT;
    let stamp = payload::parse(video, rtp.payload);
    let r = &mut p.result;
    r.packets += 1;
    r.bytes += rtp.payload.len() as u64;
    let elapsed = now.saturating_duration_since(p.started);
    r.first_rtp.get_or_insert(elapsed);
    let s = p.streams.entry(rtp.ssrc).or_default();
    let seq = rtp.seq;
    let ext = match s.base {
        None => {
            let e = (1u64 << 32) + u64::from(seq);
            s.base = Some(e);
            s.highest = e;
            e
        }
        Some(_) => {
            let diff = seq.wrapping_sub(s.highest as u16) as i16 as i64;
            (s.highest as i64 + diff).max(0) as u64
        }
    };
    if s.seen.insert(ext) {
        s.received += 1;
    } else {
        r.duplicates += 1;
    }
    s.highest = s.highest.max(ext);
    if let Some(Stamp { layer, keyframe, sent_us, .. }) = stamp {
        let delay = arrived_us.saturating_sub(sent_us).max(1);
        let _ = meter.second.record(delay.min(60_000_000));
        let _ = meter.total.record(delay.min(60_000_000));
        // RFC 3550 jitter in 90 kHz units from send/arrival times.
        let transit = delay as f64 * 0.09;
        if let Some(prev) = s.transit {
            s.jitter += ((transit - prev).abs() - s.jitter) / 16.0;
        }
        s.transit = Some(transit);
        if rtp.pt != OPUS_PT {
            if let Some(c) = r.layers.get_mut(layer as usize) {
                *c += 1;
            }
            r.last_layer = Some(layer);
            if keyframe {
                r.first_keyframe.get_or_insert(elapsed);
            }
            // A frame is whole at its marker; before the first keyframe, none shows.
            if rtp.marker && r.first_keyframe.is_some() {
                r.qoe.frame(now);
            }
            p.last_video = Some(now);
            // What a decoder would show (loss leaves it frozen until repaired).
            let key_start = keyframe && rtp.payload.first().is_some_and(|b| b & 0x10 != 0);
            let shown = s.chain.get_or_insert_with(Default::default).push(ext, rtp.marker, key_start, sent_us);
            if let (Some(sent), Some(w)) = (shown, p.watch.as_mut())
                && w.recovered.is_none()
                && sent >= w.since_us
            {
                w.recovered = Some(now.saturating_duration_since(w.since));
            }
        }
    }
    meter.packets += 1;
    meter.bytes += rtp.payload.len() as u64;
    live.packets.fetch_add(1, Ordering::Relaxed);
    live.bytes.fetch_add(rtp.payload.len() as u64, Ordering::Relaxed);
}

/// A crypto provider (rtc's) that notes the SRTP master keys, for a lean viewer.
fn new_tap() -> Result<Arc<KeyTap>, String> {
    Ok(KeyTap::new(rtc::crypto::default_provider().map_err(|e| e.to_string())?))
}

/// What a lean viewer reads from the server's offer.
#[derive(Debug, Default, PartialEq)]
struct Offered {
    /// The transport-wide CC header extension's id.
    twcc_ext: Option<u8>,
    /// RTX payload types: their packets (retransmissions, probes) count for the feedback and
    /// are not measured, as rtc's path folds them into their stream.
    rtx_pts: Vec<u8>,
}

impl Offered {
    fn parse(sdp: &str) -> Self {
        let mut o = Offered::default();
        for l in sdp.lines() {
            if let Some(rest) = l.strip_prefix("a=extmap:")
                && let Some((id, uri)) = rest.split_once(' ')
                && uri.trim() == TWCC_URI
            {
                o.twcc_ext = id.split('/').next().and_then(|i| i.parse().ok());
            } else if let Some(rest) = l.strip_prefix("a=rtpmap:")
                && let Some((pt, codec)) = rest.split_once(' ')
                && codec.trim().to_ascii_lowercase().starts_with("rtx/")
                && let Ok(pt) = pt.parse()
                && !o.rtx_pts.contains(&pt)
            {
                o.rtx_pts.push(pt);
            }
        }
        o
    }
}

const TWCC_URI: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
/// Datagrams a lean viewer's context fails to open before any opened, after which it leaves
/// the viewer to rtc (a profile it does not know).
const LEAN_GIVE_UP: u32 = 8;

/// A lean viewer's receive path (`--lean-viewers`). rtc's receive path costs the harness more
/// per packet than the server spends sending it (its interceptors, its copies of each message),
/// so a harness core runs out before a server core does. Once DTLS is done, the viewer opens the
/// server's SRTP with rtc's own context built from the master keys its tap noted, measures the
/// packet in place, and reports the transport-wide numbers itself ([`twcc::Arrivals`], through
/// rtc's RTCP path); STUN, DTLS and SRTCP still go to rtc. What it leaves out: NACKs and
/// receiver reports of the media (the loss column shows whether anything was lost).
struct LeanRx {
    srtp: Context,
    arrivals: twcc::Arrivals,
    sender_ssrc: u32,
    media_ssrc: u32,
    next_report: Instant,
    opened: u64,
    failed: u32,
}

impl LeanRx {
    fn new(tap: &KeyTap, now: Instant) -> Option<Self> {
        let m = tap.remote_master()?;
        let profile = if m.aead { ProtectionProfile::AeadAes128Gcm } else { ProtectionProfile::Aes128CmHmacSha1_80 };
        let provider = rtc::crypto::default_provider().ok()?;
        let srtp = Context::new(&m.key, &m.salt, profile, None, None, provider.crypto()).ok()?;
        Some(LeanRx {
            srtp,
            arrivals: twcc::Arrivals::default(),
            sender_ssrc: rand::random(),
            media_ssrc: 0,
            next_report: now + twcc::INTERVAL,
            opened: 0,
            failed: 0,
        })
    }
}

/// An RTP (not RTCP, RFC 5761 §4) packet, by its first two bytes.
fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && d[0] >> 6 == 2 && !(192..=223).contains(&d[1])
}

/// A lean viewer's RTP datagram: whether the lean path took it (else it goes to rtc).
fn lean_rx(p: &mut Peer, meter: &mut Meter, live: &Live, datagram: &[u8], now: Instant) -> bool {
    if p.lean.is_none() {
        // The keys exist once DTLS is done; until then rtc takes everything.
        if !p.connected {
            return false;
        }
        p.lean = p.tap.as_deref().and_then(|t| LeanRx::new(t, now));
    }
    let Some(l) = p.lean.as_mut() else { return false };
    let plain = match l.srtp.decrypt_rtp(datagram) {
        Ok(plain) => plain,
        Err(_) if l.opened == 0 => {
            l.failed += 1;
            if l.failed >= LEAN_GIVE_UP {
                eprintln!("a lean viewer cannot open the server's SRTP: rtc's path takes its packets");
                p.lean = None;
                p.tap = None;
            }
            return false;
        }
        // A replay or a forgery: dropped, as rtc's context drops them.
        Err(_) => return true,
    };
    l.opened += 1;
    p.result.lean_packets += 1;
    let Ok(header) = Header::unmarshal(&mut &plain[..]) else { return true };
    let arrived_us = payload::now_us();
    if let Some(e) = p.offered.twcc_ext.and_then(|id| header.get_extension(id))
        && let [a, b, ..] = e[..]
    {
        l.arrivals.record(u16::from_be_bytes([a, b]), arrived_us);
        l.media_ssrc = header.ssrc;
    }
    let start = header.marshal_size();
    let pad = if header.padding { plain.last().map_or(0, |b| usize::from(*b)) } else { 0 };
    let end = plain.len().saturating_sub(pad);
    // Padding only (a probe) or a retransmission: counted in the feedback above, nothing to show.
    if start >= end || p.offered.rtx_pts.contains(&header.payload_type) {
        return true;
    }
    let rtp =
        Rtp { ssrc: header.ssrc, seq: header.sequence_number, pt: header.payload_type, marker: header.marker, payload: &plain[start..end] };
    on_rtp(p, meter, live, rtp, now, arrived_us);
    true
}

/// A lean viewer's transport-wide CC reports, due now: written through rtc's RTCP path (SRTCP).
/// When the next are due.
fn send_report(p: &mut Peer, now: Instant) -> Option<Instant> {
    let l = p.lean.as_mut()?;
    l.next_report = now + twcc::INTERVAL;
    let next = l.next_report;
    let reports: Vec<Box<dyn rtc::rtcp::Packet>> =
        l.arrivals.feedback(l.sender_ssrc, l.media_ssrc).into_iter().map(|f| Box::new(f) as Box<dyn rtc::rtcp::Packet>).collect();
    let first = p.pc.get_receivers().next();
    if !reports.is_empty()
        && let Some(id) = first
        && let Some(mut receiver) = p.pc.rtp_receiver(id)
        && let Err(e) = receiver.write_rtcp(now, reports)
    {
        eprintln!("a lean viewer's transport-wide CC report: {e}");
    }
    Some(next)
}

/// A viewer's final figures: loss from sequence gaps, jitter averaged over its streams.
fn finalize(mut p: Peer) -> ViewerResult {
    p.result.connected = p.connected && !p.failed;
    p.result.publisher = p.publisher.is_some();
    p.result.watch = p.started.elapsed();
    let (mut expected, mut lost, mut jitter) = (0u64, 0u64, 0f64);
    for s in p.streams.values() {
        if let Some(base) = s.base {
            let e = s.highest - base + 1;
            expected += e;
            lost += e.saturating_sub(s.received);
            jitter += s.jitter;
        }
    }
    p.result.expected = expected;
    p.result.lost = lost;
    p.result.jitter_ms = if p.streams.is_empty() { 0.0 } else { jitter / p.streams.len() as f64 / 90.0 };
    p.result
}

impl Loop {
    fn new(poll: Poll, rx: Receiver<Cmd>, live: Arc<Live>, local_ip: IpAddr, lean_viewers: bool) -> Self {
        let now = Instant::now();
        Loop {
            poll,
            rx,
            live,
            local_ip,
            lean_viewers,
            peers: FxHashMap::default(),
            done: HashMap::new(),
            gone: Vec::new(),
            raw: Vec::new(),
            publishers: Vec::new(),
            timers: BinaryHeap::new(),
            buf: vec![0u8; 2048],
            meter: Meter { second: histogram(), total: histogram(), packets: 0, bytes: 0 },
            last_sample: now,
            began: now,
        }
    }

    fn run(mut self) -> HashMap<u64, ViewerResult> {
        let mut events = Events::with_capacity(1024);
        while !self.live.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut wait = Duration::from_millis(10);
            if let Some(Reverse((t, _))) = self.timers.peek() {
                wait = wait.min(t.saturating_duration_since(now));
            }
            for s in self.publishers.iter().filter_map(|id| self.peers.get(id)?.publisher.as_ref()) {
                let next = s.pacer.next().map_or(s.next_video, |p| p.min(s.next_video));
                wait = wait.min(next.min(s.next_audio).saturating_duration_since(now));
            }
            for r in &self.raw {
                let next = r.pacer.next().map_or(r.next_video, |p| p.min(r.next_video));
                wait = wait.min(next.min(r.next_audio).saturating_duration_since(now));
            }
            if self.poll.poll(&mut events, Some(wait)).is_err() {
                continue;
            }
            let ready: Vec<u64> = events.iter().filter(|e| e.token() != WAKE).map(|e| e.token().0 as u64).collect();
            for id in ready {
                self.read(id);
            }
            while let Ok(cmd) = self.rx.try_recv() {
                self.command(cmd);
            }
            self.fire_timers();
            self.publish_media();
            self.sample();
        }
        let mut results = std::mem::take(&mut self.done);
        for (id, p) in std::mem::take(&mut self.peers) {
            if p.publisher.is_none() {
                results.insert(id, finalize(p));
            }
        }
        results
    }

    /// A peer on a socket of its own; `lean`: a viewer on the lean path ([`LeanRx`]).
    fn add_peer(&mut self, id: u64, started: Instant, lean: bool) -> Result<(), String> {
        let mut socket = UdpSocket::bind(SocketAddr::new(self.local_ip, 0)).map_err(|e| format!("bind: {e}"))?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        self.poll.registry().register(&mut socket, Token(id as usize), Interest::READABLE).map_err(|e| e.to_string())?;
        let tap = lean.then(new_tap).transpose()?;
        let pc = new_pc(local, tap.clone())?;
        self.peers.insert(
            id,
            Peer {
                pc,
                socket,
                local,
                connected: false,
                failed: false,
                deadline: None,
                started,
                result: ViewerResult::default(),
                streams: FxHashMap::default(),
                publisher: None,
                offline: false,
                impair: None,
                watch: None,
                last_video: None,
                tap,
                offered: Offered::default(),
                lean: None,
            },
        );
        Ok(())
    }

    fn command(&mut self, cmd: Cmd) {
        let now = Instant::now();
        match cmd {
            Cmd::Offer { id, sdp, started, reply } => {
                if !self.peers.contains_key(&id)
                    && let Err(e) = self.add_peer(id, started, self.lean_viewers)
                {
                    let _ = reply.send(Err(e));
                    return;
                }
                let r = self.peers.get_mut(&id).ok_or_else(|| "no peer".to_string()).and_then(|p| {
                    p.result.offer.get_or_insert(now.saturating_duration_since(p.started));
                    if p.tap.is_some() {
                        p.offered = Offered::parse(&sdp);
                    }
                    let offer = RTCSessionDescription::offer(sdp).map_err(|e| e.to_string())?;
                    p.pc.set_remote_description(now, offer).map_err(|e| e.to_string())?;
                    if p.offline {
                        // The restart offer: rtc restarted ICE and forgot the old address;
                        // the new socket's is our candidate now.
                        p.pc.add_local_candidate(sfu::client::host_candidate(p.local)?).map_err(|e| e.to_string())?;
                        p.offline = false;
                    }
                    let answer = p.pc.create_answer(None).map_err(|e| e.to_string())?;
                    p.pc.set_local_description(now, answer).map_err(|e| e.to_string())?;
                    p.pc.local_description().map(|d| d.sdp).ok_or_else(|| "no local description".to_string())
                });
                let _ = reply.send(r);
                self.pump(id, now);
            }
            Cmd::Publish { id, spec, reply } => {
                if let Err(e) = self.add_peer(id, now, false) {
                    let _ = reply.send(Err(e));
                    return;
                }
                self.publishers.push(id);
                let r = self.peers.get_mut(&id).ok_or_else(|| "no peer".to_string()).and_then(|p| {
                    let vp8 = RTCRtpCodec {
                        mime_type: "video/VP8".into(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: String::new(),
                        rtcp_feedback: vec![],
                    };
                    let opus = RTCRtpCodec {
                        mime_type: "audio/opus".into(),
                        clock_rate: 48_000,
                        channels: 2,
                        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                        rtcp_feedback: vec![],
                    };
                    let ssrcs: [u32; 3] = [rand::random(), rand::random(), rand::random()];
                    let rids = ["q", "h", "f"];
                    let codings = (0..3)
                        .map(|i| RTCRtpEncodingParameters {
                            rtp_coding_parameters: RTCRtpCodingParameters {
                                rid: rids[i].into(),
                                ssrc: Some(ssrcs[i]),
                                ..Default::default()
                            },
                            codec: vp8.clone(),
                            active: true,
                            ..Default::default()
                        })
                        .collect();
                    let video =
                        p.pc.add_track(MediaStreamTrack::new("lt".into(), "lt-video".into(), "video".into(), RtpCodecKind::Video, codings))
                            .map_err(|e| e.to_string())?;
                    let audio_ssrc: u32 = rand::random();
                    let audio =
                        p.pc.add_track(MediaStreamTrack::new(
                            "lt".into(),
                            "lt-audio".into(),
                            "audio".into(),
                            RtpCodecKind::Audio,
                            vec![RTCRtpEncodingParameters {
                                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(audio_ssrc), ..Default::default() },
                                codec: opus,
                                active: true,
                                ..Default::default()
                            }],
                        ))
                        .map_err(|e| e.to_string())?;
                    let offer = p.pc.create_offer(None).map_err(|e| e.to_string())?;
                    p.pc.set_local_description(now, offer).map_err(|e| e.to_string())?;
                    p.publisher = Some(PublisherState {
                        spec,
                        video,
                        audio,
                        ssrcs,
                        audio_ssrc,
                        seq: [rand::random(), rand::random(), rand::random(), rand::random()],
                        ts: [rand::random(), rand::random(), rand::random(), rand::random()],
                        mid_ext: None,
                        rid_ext: None,
                        max_layer: 2,
                        want_key: [true; 3],
                        last_key: [None; 3],
                        counter: 0,
                        next_video: now,
                        next_audio: now,
                        pacer: Pacer::default(),
                    });
                    p.pc.local_description().map(|d| d.sdp).ok_or_else(|| "no local description".to_string())
                });
                let _ = reply.send(r);
                self.pump(id, now);
            }
            Cmd::Answer { id, sdp, reply } => {
                let r = self.peers.get_mut(&id).ok_or_else(|| "no peer".to_string()).and_then(|p| {
                    let ext = |uri: &str| -> Option<u8> {
                        sdp.lines().find_map(|l| {
                            let rest = l.strip_prefix("a=extmap:")?;
                            let (id, u) = rest.split_once(' ')?;
                            (u.trim() == uri).then(|| id.split('/').next()?.parse().ok())?
                        })
                    };
                    // The video m-line's mid (the first m-line with simulcast).
                    let mut mid = None;
                    let mut current = None;
                    for l in sdp.lines() {
                        if l.starts_with("m=") {
                            current = Some(l.starts_with("m=video"));
                        } else if let Some(m) = l.strip_prefix("a=mid:")
                            && current == Some(true)
                            && mid.is_none()
                        {
                            mid = Some(m.trim().to_owned());
                        }
                    }
                    if let Some(s) = p.publisher.as_mut() {
                        s.mid_ext = ext("urn:ietf:params:rtp-hdrext:sdes:mid").zip(mid);
                        s.rid_ext = ext("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id");
                    }
                    let answer = RTCSessionDescription::answer(sdp.clone()).map_err(|e| e.to_string())?;
                    p.pc.set_remote_description(now, answer).map_err(|e| e.to_string())
                });
                let _ = reply.send(r);
                self.pump(id, now);
            }
            Cmd::Layers { id, max } => {
                if let Some(s) = self.peers.get_mut(&id).and_then(|p| p.publisher.as_mut()) {
                    if max > s.max_layer {
                        for l in (s.max_layer as usize + 1)..=(max as usize).min(2) {
                            s.want_key[l] = true;
                        }
                    }
                    s.max_layer = max.min(2);
                }
            }
            Cmd::RawPublisher { spec, audio_to, video_to, reply } => {
                let r = std::net::UdpSocket::bind(SocketAddr::new(self.local_ip, 0)).map_err(|e| e.to_string()).map(|socket| {
                    self.raw.push(RawPublisher {
                        socket,
                        spec,
                        audio_to,
                        video_to,
                        ssrcs: [rand::random(), rand::random()],
                        seq: [rand::random(), rand::random()],
                        ts: [rand::random(), rand::random()],
                        counter: 0,
                        last_key: None,
                        next_video: now,
                        next_audio: now,
                        pacer: Pacer::default(),
                    });
                });
                let _ = reply.send(r);
            }
            Cmd::Qoe { id, reply } => {
                let r = match self.peers.get_mut(&id) {
                    Some(p) => {
                        let r = &mut p.result;
                        Ok(QoeNow {
                            first_frame_ms: r.first_keyframe.map(|d| d.as_millis() as u64),
                            frames: r.qoe.frames,
                            freezes: r.qoe.freezes,
                            freeze_ms: r.qoe.freeze_ms,
                            recoveries_ms: std::mem::take(&mut r.qoe.recoveries_ms),
                            layer: r.last_layer,
                            watch_ms: now.saturating_duration_since(p.started).as_millis() as u64,
                        })
                    }
                    None => Err("no such viewer".to_string()),
                };
                let _ = reply.send(r);
            }
            Cmd::Measure { reply } => {
                let (mut expected, mut received) = (0u64, 0u64);
                for p in self.peers.values().filter(|p| p.publisher.is_none()) {
                    for s in p.streams.values() {
                        if let Some(base) = s.base {
                            expected += s.highest - base + 1;
                            received += s.received;
                        }
                    }
                }
                for r in self.done.values() {
                    expected += r.expected;
                    received += r.expected - r.lost;
                }
                let _ = reply.send(Ok(Measure { delay: self.meter.total.clone(), expected, received }));
                self.meter.total.reset();
            }
            Cmd::Move { id, reply } => {
                let r = match self.peers.get_mut(&id) {
                    None => Err("no such viewer".to_string()),
                    Some(p) => {
                        UdpSocket::bind(SocketAddr::new(self.local_ip, 0)).map_err(|e| format!("bind: {e}")).and_then(|mut socket| {
                            let local = socket.local_addr().map_err(|e| e.to_string())?;
                            let registry = self.poll.registry();
                            registry.register(&mut socket, Token(id as usize), Interest::READABLE).map_err(|e| e.to_string())?;
                            let _ = registry.deregister(&mut p.socket);
                            // The old socket closes here: what the server sends to it is gone.
                            p.socket = socket;
                            p.local = local;
                            p.offline = true;
                            Ok(local)
                        })
                    }
                };
                let _ = reply.send(r);
            }
            Cmd::Reset { id } => {
                if let Some(p) = self.peers.get_mut(&id) {
                    let tap = if p.tap.is_some() || (self.lean_viewers && p.publisher.is_none()) { new_tap().ok() } else { None };
                    match new_pc(p.local, tap.clone()) {
                        Ok(pc) => {
                            let _ = std::mem::replace(&mut p.pc, pc).close();
                            p.tap = tap;
                            p.lean = None;
                            p.offline = false;
                            p.deadline = None;
                        }
                        Err(e) => eprintln!("viewer {id}: a new peer connection: {e}"),
                    }
                }
            }
            Cmd::ServerView { id, twcc_feedback, estimate_bps } => {
                if let Some(p) = self.peers.get_mut(&id) {
                    p.result.server_view = Some((twcc_feedback, estimate_bps));
                }
            }
            Cmd::Impair { who, loss, until } => {
                for (id, p) in self.peers.iter_mut() {
                    if who.has(*id, p.publisher.is_some()) {
                        p.impair = Some((loss.clamp(0.0, 1.0), until));
                    }
                }
            }
            Cmd::Watch { who, since_us } => {
                let since = now.checked_sub(Duration::from_micros(payload::now_us().saturating_sub(since_us))).unwrap_or(now);
                for (id, p) in self.peers.iter_mut() {
                    if p.publisher.is_none() && who.has(*id, false) {
                        p.watch = Some(Watch { since_us, since, recovered: None });
                    }
                }
                // A viewer that already left cannot recover: it is watched as lost.
                if let Who::Ids(ids) = &who {
                    for id in ids.iter().filter(|id| !self.peers.contains_key(id)) {
                        self.gone.push(*id);
                    }
                }
            }
            Cmd::Recoveries { reply } => {
                let mut v: Vec<Recovery> = self
                    .peers
                    .iter()
                    .filter_map(|(id, p)| {
                        let w = p.watch.as_ref()?;
                        Some(Recovery {
                            id: *id,
                            recovered: w.recovered,
                            video_age: p.last_video.map(|t| now.saturating_duration_since(t)),
                        })
                    })
                    .collect();
                v.extend(self.gone.iter().map(|id| Recovery { id: *id, recovered: None, video_age: None }));
                let _ = reply.send(Ok(v));
            }
            Cmd::Close { id } => {
                self.publishers.retain(|p| *p != id);
                if let Some(mut p) = self.peers.remove(&id) {
                    let _ = p.pc.close();
                    let _ = self.poll.registry().deregister(&mut p.socket);
                    if p.watch.as_ref().is_some_and(|w| w.recovered.is_none()) {
                        self.gone.push(id);
                    }
                    if p.publisher.is_none() {
                        self.done.insert(id, finalize(p));
                    }
                }
            }
        }
    }

    fn read(&mut self, id: u64) {
        let now = Instant::now();
        let Some(p) = self.peers.get_mut(&id) else { return };
        // A lean viewer's media never reaches rtc: nothing to drain after it.
        let mut to_rtc = false;
        for _ in 0..READ_BURST {
            match p.socket.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    if p.dropped(now) {
                        continue;
                    }
                    let datagram = &self.buf[..n];
                    if p.tap.is_some() && is_rtp(datagram) {
                        let opened = p.lean.is_some();
                        if lean_rx(p, &mut self.meter, &self.live, datagram, now) {
                            if !opened && let Some(l) = &p.lean {
                                self.timers.push(Reverse((l.next_report, id)));
                            }
                            continue;
                        }
                    }
                    let msg = TaggedBytesMut { now, transport: ctx(p.local, from), message: BytesMut::from(&self.buf[..n]) };
                    let _ = p.pc.handle_read(msg);
                    to_rtc = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        if to_rtc {
            self.pump(id, now);
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(p) = self.peers.get_mut(&id) else { continue };
            let due = p.deadline.is_some_and(|d| d <= now);
            if due {
                p.deadline = None;
                let _ = p.pc.handle_timeout(now);
            }
            let report = p.lean.as_ref().is_some_and(|l| l.next_report <= now);
            if report && let Some(next) = send_report(p, now) {
                self.timers.push(Reverse((next, id)));
            }
            if due || report {
                self.pump(id, now);
            }
        }
    }

    /// Drain a peer: datagrams out, events, received media (measured), timer.
    fn pump(&mut self, id: u64, now: Instant) {
        let Some(p) = self.peers.get_mut(&id) else { return };
        while let Some(out) = p.pc.poll_write() {
            // A moved viewer's old address is gone; the relay drops what an impairment says.
            if p.offline || p.dropped(now) {
                continue;
            }
            let _ = p.socket.send_to(&out.message, out.transport.peer_addr);
        }
        while let Some(ev) = p.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = ev {
                match s {
                    RTCPeerConnectionState::Connected if !p.connected => {
                        p.connected = true;
                        p.failed = false;
                        p.result.media_connected = Some(now.saturating_duration_since(p.started));
                        if p.publisher.is_none() {
                            self.live.connected.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Connected again after an ICE restart.
                    RTCPeerConnectionState::Connected => p.failed = false,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => p.failed = true,
                    _ => {}
                }
            }
        }
        let arrived_us = payload::now_us();
        while let Some(TaggedRTCMessage { message, .. }) = p.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(_, packet) => {
                    let h = &packet.header;
                    let rtp = Rtp { ssrc: h.ssrc, seq: h.sequence_number, pt: h.payload_type, marker: h.marker, payload: &packet.payload };
                    on_rtp(p, &mut self.meter, &self.live, rtp, now, arrived_us);
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    if let Some(s) = p.publisher.as_mut() {
                        for pkt in packets {
                            let wants_key = pkt.as_any().is::<PictureLossIndication>() || pkt.as_any().is::<FullIntraRequest>();
                            if wants_key {
                                for d in pkt.destination_ssrc() {
                                    if let Some(l) = s.ssrcs.iter().position(|x| *x == d) {
                                        s.want_key[l] = true;
                                    }
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let next = p.pc.poll_timeout();
        if next != p.deadline {
            p.deadline = next;
            if let Some(t) = next {
                self.timers.push(Reverse((t, id)));
            }
        }
    }

    /// Plain-RTP publishers: the top layer and audio, straight to the server's RTP ports.
    fn publish_raw(&mut self) {
        let now = Instant::now();
        for r in &mut self.raw {
            let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
            while r.next_video <= now {
                r.next_video += Duration::from_micros(33_333);
                let key = r.last_key.is_none_or(|t| now.duration_since(t) >= r.spec.keyframe_every);
                if key {
                    r.last_key = Some(now);
                }
                let frame_bytes = (r.spec.rates[2] / 8 / 30) as usize;
                let n = frame_bytes.div_ceil(1100).max(1);
                let bps = r.spec.pace.map(|f| f * r.spec.rates[2] as f64);
                for i in 0..n {
                    let size = (frame_bytes / n).max(40);
                    let (seq, ts) = (r.seq[0], r.ts[0]);
                    r.pacer.push(now, bps, Paced { at: now, layer: 2, key, first: i == 0, marker: i + 1 == n, size, seq, ts });
                    r.seq[0] = r.seq[0].wrapping_add(1);
                }
                r.ts[0] = r.ts[0].wrapping_add(3000);
            }
            for v in r.pacer.due(now) {
                r.counter = r.counter.wrapping_add(1);
                let stamp = Stamp { layer: v.layer, keyframe: v.key, sent_us: payload::now_us(), counter: r.counter };
                let body = payload::video(v.first, &stamp, HEIGHTS[2], v.size);
                out.push((r.video_to, rtp(VIDEO_PT, v.marker, v.seq, v.ts, r.ssrcs[0], &body)));
            }
            while r.next_audio <= now {
                r.next_audio += Duration::from_millis(20);
                r.counter = r.counter.wrapping_add(1);
                let stamp = Stamp { layer: 0, keyframe: false, sent_us: payload::now_us(), counter: r.counter };
                out.push((r.audio_to, rtp(OPUS_PT, false, r.seq[1], r.ts[1], r.ssrcs[1], &payload::audio(&stamp, 120))));
                r.seq[1] = r.seq[1].wrapping_add(1);
                r.ts[1] = r.ts[1].wrapping_add(960);
            }
            for (to, pkt) in out {
                if r.socket.send_to(&pkt, to).is_ok() {
                    self.live.published_packets.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Synthetic publishers: a frame per layer every 33 ms, an audio packet every 20 ms.
    fn publish_media(&mut self) {
        self.publish_raw();
        let now = Instant::now();
        for id in self.publishers.clone() {
            let Some(p) = self.peers.get_mut(&id).filter(|p| p.connected) else { continue };
            let Some(s) = p.publisher.as_mut() else { continue };
            let mut out: Vec<(RTCRtpSenderId, rtc::rtp::Packet)> = Vec::new();
            while s.next_video <= now {
                s.next_video += Duration::from_micros(33_333);
                for l in 0..3usize {
                    if l as u8 > s.max_layer {
                        continue;
                    }
                    let key = s.want_key[l] || s.last_key[l].is_none_or(|t| now.duration_since(t) >= s.spec.keyframe_every);
                    if key {
                        s.want_key[l] = false;
                        s.last_key[l] = Some(now);
                    }
                    let frame_bytes = (s.spec.rates[l] / 8 / 30) as usize;
                    let n = frame_bytes.div_ceil(1100).max(1);
                    // The pacing rate covers the layers being sent, as libwebrtc's covers its target.
                    let bps = s.spec.pace.map(|f| f * s.spec.rates[..=s.max_layer.min(2) as usize].iter().sum::<u32>() as f64);
                    for i in 0..n {
                        let size = (frame_bytes / n).max(40);
                        let (seq, ts) = (s.seq[l], s.ts[l]);
                        s.pacer.push(now, bps, Paced { at: now, layer: l as u8, key, first: i == 0, marker: i + 1 == n, size, seq, ts });
                        s.seq[l] = s.seq[l].wrapping_add(1);
                    }
                    s.ts[l] = s.ts[l].wrapping_add(3000);
                }
            }
            for v in s.pacer.due(now) {
                let l = v.layer as usize;
                s.counter = s.counter.wrapping_add(1);
                let stamp = Stamp { layer: v.layer, keyframe: v.key, sent_us: payload::now_us(), counter: s.counter };
                let body = payload::video(v.first, &stamp, HEIGHTS[l], v.size);
                let mut pkt = rtc::rtp::Packet { header: Default::default(), payload: body };
                pkt.header.version = 2;
                pkt.header.payload_type = VIDEO_PT;
                pkt.header.ssrc = s.ssrcs[l];
                pkt.header.sequence_number = v.seq;
                pkt.header.timestamp = v.ts;
                pkt.header.marker = v.marker;
                if let (Some((mid_id, mid)), Some(rid_id)) = (&s.mid_ext, s.rid_ext) {
                    let _ = pkt.header.set_extension(*mid_id, bytes::Bytes::from(mid.clone().into_bytes()));
                    let _ = pkt.header.set_extension(rid_id, bytes::Bytes::from_static(["q", "h", "f"][l].as_bytes()));
                }
                out.push((s.video, pkt));
            }
            while s.next_audio <= now {
                s.next_audio += Duration::from_millis(20);
                s.counter = s.counter.wrapping_add(1);
                let stamp = Stamp { layer: 0, keyframe: false, sent_us: payload::now_us(), counter: s.counter };
                let mut pkt = rtc::rtp::Packet { header: Default::default(), payload: payload::audio(&stamp, 120) };
                pkt.header.version = 2;
                pkt.header.payload_type = OPUS_PT;
                pkt.header.ssrc = s.audio_ssrc;
                pkt.header.sequence_number = s.seq[3];
                pkt.header.timestamp = s.ts[3];
                s.seq[3] = s.seq[3].wrapping_add(1);
                s.ts[3] = s.ts[3].wrapping_add(960);
                out.push((s.audio, pkt));
            }
            for (sender, pkt) in out {
                if let Some(mut snd) = p.pc.rtp_sender(sender)
                    && snd.write_rtp(now, pkt).is_ok()
                {
                    self.live.published_packets.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.pump(id, now);
        }
    }

    fn sample(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_sample);
        if dt < Duration::from_secs(1) {
            return;
        }
        let receiving = self.peers.values().filter(|p| p.publisher.is_none() && p.connected && p.result.packets > 0).count() as u64;
        let sample = Sample {
            t: now.duration_since(self.began).as_secs_f64(),
            packets_per_s: (self.meter.packets as f64 / dt.as_secs_f64()) as u64,
            mbit_per_s: self.meter.bytes as f64 * 8.0 / dt.as_secs_f64() / 1e6,
            delay_p50_ms: self.meter.second.value_at_quantile(0.5) as f64 / 1000.0,
            delay_p99_ms: self.meter.second.value_at_quantile(0.99) as f64 / 1000.0,
            viewers_receiving: receiving,
        };
        self.live.samples.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
        self.meter.second.reset();
        self.meter.packets = 0;
        self.meter.bytes = 0;
        self.last_sample = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lean_viewer_reads_the_twcc_extension_and_rtx_types_from_the_offer() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                   a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n\
                   a=rtpmap:98 H264/90000\r\na=rtpmap:99 RTX/90000\r\na=rtpmap:97 rtx/90000\r\n\
                   a=extmap:3/sendonly http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n";
        assert_eq!(Offered::parse(sdp), Offered { twcc_ext: Some(3), rtx_pts: vec![97, 99] });
        assert_eq!(
            Offered::parse(
                "v=0\r\na=extmap:x http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\na=rtpmap:300 rtx/90000\r\n"
            ),
            Offered::default(),
            "garbage is ignored"
        );
        // RTP, not RTCP (RFC 5761), not STUN or DTLS, and whole.
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 96;
        assert!(is_rtp(&rtp));
        rtp[1] = 200;
        assert!(!is_rtp(&rtp), "a sender report");
        rtp[1] = 0x80 | 96;
        assert!(is_rtp(&rtp), "a marker bit");
        assert!(!is_rtp(&rtp[..11]));
        assert!(!is_rtp(&[22u8; 40]), "DTLS");
        assert!(!is_rtp(&[0u8; 40]), "STUN");
    }

    #[test]
    fn seen_tells_duplicates_within_its_window_and_forgets_what_it_leaves() {
        let mut s = Seen::default();
        assert!(s.insert(100));
        assert!(!s.insert(100), "a duplicate");
        assert!(s.insert(99), "late, first time");
        assert!(!s.insert(99));
        assert!(s.insert(105), "ahead, past a gap");
        assert!(s.insert(101), "the gap filled");
        assert!(!s.insert(105));
        // 100 + WINDOW reuses 100's bit: it must read as new, and 100 is now out of the window.
        assert!(s.insert(100 + Seen::WINDOW));
        assert!(!s.insert(100 + Seen::WINDOW));
        assert!(s.insert(100), "older than the window: counted as first");
        assert!(!s.insert(105), "still within the window");
        // A jump past the whole window forgets everything.
        assert!(s.insert(10 * Seen::WINDOW));
        assert!(s.insert(10 * Seen::WINDOW - 1));
        assert!(!s.insert(10 * Seen::WINDOW - 1));
    }

    fn packet(size: usize, seq: u16) -> Paced {
        let now = Instant::now();
        Paced { at: now, layer: 2, key: false, first: seq == 0, marker: false, size, seq, ts: 0 }
    }

    #[test]
    fn the_pacer_spaces_packets_at_its_rate_and_none_sends_at_once() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        // 988 + 12 bytes at 8 Mbit/s: one packet a millisecond.
        let mut p = Pacer::default();
        for seq in 0..3 {
            p.push(t0, Some(8_000_000.0), packet(988, seq));
        }
        let seqs = |p: &mut Pacer, at: Instant| p.due(at).map(|v| v.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&mut p, t0), vec![0]);
        assert_eq!(seqs(&mut p, t0 + ms), vec![1]);
        // A frame queued while the pacer is busy waits behind the last one.
        p.push(t0 + ms / 2, Some(8_000_000.0), packet(988, 3));
        assert_eq!(p.next(), Some(t0 + 2 * ms));
        assert_eq!(seqs(&mut p, t0 + 2 * ms), vec![2]);
        assert_eq!(seqs(&mut p, t0 + 3 * ms - Duration::from_micros(1)), Vec::<u16>::new());
        assert_eq!(seqs(&mut p, t0 + 3 * ms), vec![3]);
        // Idle past its free time: the next packet leaves when it is queued.
        p.push(t0 + 10 * ms, Some(8_000_000.0), packet(988, 4));
        assert_eq!(p.next(), Some(t0 + 10 * ms));
        // Without a rate, everything is due at once.
        let mut q = Pacer::default();
        for seq in 0..4 {
            q.push(t0, None, packet(988, seq));
        }
        assert_eq!(seqs(&mut q, t0), vec![0, 1, 2, 3]);
        assert_eq!(q.next(), None);
    }
}
