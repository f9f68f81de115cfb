//! Recording: one publisher's audio and video into fragmented MP4 as the packets arrive,
//! without decoding or transcoding anything.
//!
//! ```text
//!  worker (per packet): Published.tap ──try_send──► bounded queue ──► recorder thread
//!     recorder thread: per (track, layer) frames.rs reorders, waits ≤ MAX_WAIT for
//!     retransmissions, cuts frames, depacketizes ──► the best layer ──► fmp4.rs: samples
//!     with times from the server's clock ──► a moof+mdat per ~second, appended to the file
//! ```
//!
//! The worker only clones an `Arc` into a queue; a full queue drops the packet and counts it
//! (the recorder then waits for the next keyframe), so a slow disk never slows forwarding.
//! Times: each (track, layer) maps RTP time to the server's clock through an anchor taken from
//! the earliest-arriving frame seen so far (so network jitter does not move frames later), and
//! audio and video of a publisher share that clock. Simulcast: the highest layer seen in the last
//! second is recorded; a switch happens at a keyframe of the new layer (asked for), the file's
//! frame size then changes in-band. A track added once the file's header is written starts a
//! new file (`-part2.mp4`, …); so does a new video codec.

pub mod fmp4;
pub mod frames;

use crate::api::{MediaKind, TrackInfo};
use crate::handle::Sfu;
use crate::ids::TrackId;
use crate::media::codec::Codec;
use crate::media::packet::MediaPacket;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError, bounded, unbounded};
use fmp4::{FileSummary, Fmp4File, VideoCodec};
use frames::{Frame, FrameAssembler};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the worker calls with every packet of a tapped track (see [`Sfu::tap`]).
#[derive(Clone)]
pub struct Tap(Arc<TapFn>);

type TapFn = dyn Fn(&Arc<MediaPacket>) + Send + Sync;

impl Tap {
    pub fn new(f: impl Fn(&Arc<MediaPacket>) + Send + Sync + 'static) -> Self {
        Tap(Arc::new(f))
    }

    /// Hand one packet over (must not block).
    pub fn send(&self, p: &Arc<MediaPacket>) {
        (self.0)(p)
    }
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tap")
    }
}

/// Packets (and commands) queued for a recorder at most: ~2 s of a 2.5 Mbit/s publisher.
pub const QUEUE: usize = 8192;
/// How often held packets are looked at (frames complete, holes given up, fragments written).
const TICK: Duration = Duration::from_millis(20);
/// A layer that sent nothing for this long is not a candidate any more.
const LAYER_STALE: Duration = Duration::from_millis(1000);
/// How long a file waits for the best layer's first keyframe before it starts on a lower one.
const START_WAIT: Duration = Duration::from_millis(500);
/// At most one keyframe request per track per this (the SFU throttles per layer too).
const KEYFRAME_EVERY: Duration = Duration::from_millis(1000);

/// Control, on a queue of its own that never blocks the caller (signaling's threads, under the
/// archive's lock); read before every packet, so a track's `Add` (sent before its tap is
/// installed) is always seen before its first packet.
enum Msg {
    Add(TrackInfo),
    Remove(TrackId),
    Stop,
}

/// One file of a recording, as it ended.
#[derive(Clone, Debug, Default)]
pub struct Part {
    pub path: PathBuf,
    pub bytes: u64,
    pub video_frames: u64,
    pub audio_frames: u64,
    pub video_codec: Option<&'static str>,
    pub width: Option<u16>,
    pub height: Option<u16>,
    /// Unix milliseconds of the file's zero and of its last sample's end.
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub error: Option<String>,
}

/// What a recorder wrote.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub parts: Vec<Part>,
    /// Packets the worker could not queue (the recorder fell behind).
    pub dropped_packets: u64,
    /// Packets given up after waiting for the holes before them.
    pub given_up_packets: u64,
}

/// A publisher's recording: its thread and the taps that feed it.
pub struct Recorder {
    tx: Sender<Msg>,
    packets: Sender<Arc<MediaPacket>>,
    sfu: Sfu,
    tapped: Vec<TrackId>,
    dropped: Arc<AtomicU64>,
    thread: Option<JoinHandle<Summary>>,
}

impl Recorder {
    /// Start recording into `<base>.mp4` (later parts `<base>-part2.mp4`, …). No file exists
    /// until the first fragment is written.
    pub fn start(sfu: &Sfu, base: PathBuf) -> std::io::Result<Recorder> {
        let (tx, rx) = unbounded();
        let (packets, packets_rx) = bounded(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let worker_sfu = sfu.clone();
        let thread = std::thread::Builder::new().name("onair-recorder".into()).spawn(move || run(rx, packets_rx, worker_sfu, base))?;
        Ok(Recorder { tx, packets, sfu: sfu.clone(), tapped: Vec::new(), dropped, thread: Some(thread) })
    }

    /// Record `track` too (its publisher's other track, or one published later).
    pub fn add_track(&mut self, track: &TrackInfo) {
        if self.tapped.contains(&track.id) {
            return;
        }
        // The track is announced before its first packet can be queued behind it.
        if self.tx.send(Msg::Add(track.clone())).is_err() {
            return;
        }
        let (tx, dropped) = (self.packets.clone(), self.dropped.clone());
        let tap = Tap::new(move |p: &Arc<MediaPacket>| {
            if let Err(TrySendError::Full(_)) = tx.try_send(p.clone()) {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        });
        self.sfu.tap(track.id, Some(tap));
        self.tapped.push(track.id);
    }

    /// Stop recording `track` (it was unpublished).
    pub fn remove_track(&mut self, track: TrackId) {
        if let Some(i) = self.tapped.iter().position(|t| *t == track) {
            self.tapped.swap_remove(i);
            self.sfu.tap(track, None);
            let _ = self.tx.send(Msg::Remove(track));
        }
    }

    pub fn tracks(&self) -> &[TrackId] {
        &self.tapped
    }

    /// Stop: untap, write what is held, close the file. Blocks until the thread is done (a
    /// fragment's write at most): call it off the async runtime.
    pub fn stop(mut self) -> Summary {
        for t in self.tapped.drain(..) {
            self.sfu.tap(t, None);
        }
        let _ = self.tx.send(Msg::Stop);
        let mut summary = self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default();
        summary.dropped_packets = self.dropped.load(Ordering::Relaxed);
        summary
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for t in self.tapped.drain(..) {
            self.sfu.tap(t, None);
        }
        let _ = self.tx.send(Msg::Stop);
    }
}

/// One simulcast layer (or the only stream) of a track being recorded.
struct LayerIn {
    frames: FrameAssembler,
    /// RTP time ↔ server clock: the frame that arrived earliest for its RTP time.
    anchor: Option<(u64, Instant)>,
    last_seen: Instant,
    /// A frame was lost: nothing from this layer until its next keyframe.
    waiting_key: bool,
}

struct TrackIn {
    info: TrackInfo,
    codec: Codec,
    clock: u32,
    layers: BTreeMap<u8, LayerIn>,
    /// The layer going into the file.
    current: Option<u8>,
    last_key_request: Option<Instant>,
    /// When the first keyframe of any layer came: a lower layer starts the file only if the best
    /// one's keyframe (asked for when the tap started) has not come within `START_WAIT`.
    first_key: Option<Instant>,
}

impl TrackIn {
    /// The server-clock time of a frame of `layer`; the anchor moves earlier when a frame
    /// arrives earlier than it predicts.
    fn time_of(&mut self, layer: u8, f: &Frame) -> Instant {
        let clock = u64::from(self.clock.max(1));
        let Some(l) = self.layers.get_mut(&layer) else { return f.at };
        let (ts0, at0) = *l.anchor.get_or_insert((f.ts, f.at));
        let predicted = if f.ts >= ts0 {
            at0 + Duration::from_nanos((f.ts - ts0).saturating_mul(1_000_000_000) / clock)
        } else {
            at0.checked_sub(Duration::from_nanos((ts0 - f.ts).saturating_mul(1_000_000_000) / clock)).unwrap_or(at0)
        };
        if f.at < predicted {
            l.anchor = Some((f.ts, f.at));
            return f.at;
        }
        predicted
    }

    /// The best layer still sending.
    fn target(&self, now: Instant) -> Option<u8> {
        self.layers.iter().rev().find(|(_, l)| now.saturating_duration_since(l.last_seen) < LAYER_STALE).map(|(k, _)| *k)
    }
}

struct State {
    sfu: Sfu,
    base: PathBuf,
    tracks: HashMap<TrackId, TrackIn>,
    /// The tracks in the file: at most one of each kind.
    video: Option<TrackId>,
    audio: Option<TrackId>,
    file: Option<Fmp4File>,
    parts: Vec<Part>,
    given_up: u64,
    clock: (Instant, i64),
}

fn run(rx: Receiver<Msg>, packets: Receiver<Arc<MediaPacket>>, sfu: Sfu, base: PathBuf) -> Summary {
    let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let mut st = State {
        sfu,
        base,
        tracks: HashMap::new(),
        video: None,
        audio: None,
        file: None,
        parts: Vec::new(),
        given_up: 0,
        clock: (Instant::now(), unix_now),
    };
    let mut last_tick = Instant::now();
    let mut frames = Vec::new();
    'run: loop {
        // Control first: a track's `Add` is queued before its first packet can be.
        loop {
            match rx.try_recv() {
                Ok(Msg::Add(t)) => st.add(t, Instant::now()),
                Ok(Msg::Remove(t)) => st.remove(t, Instant::now(), &mut frames),
                Ok(Msg::Stop) | Err(TryRecvError::Disconnected) => break 'run,
                Err(TryRecvError::Empty) => break,
            }
        }
        match packets.recv_timeout(TICK) {
            Ok(p) => st.packet(p),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if now.saturating_duration_since(last_tick) >= TICK {
            last_tick = now;
            st.tick(now, false, &mut frames);
        }
    }
    // What was queued before the taps came off.
    while let Ok(p) = packets.try_recv() {
        st.packet(p);
    }
    let now = Instant::now();
    st.tick(now, true, &mut frames);
    st.close_file();
    let given_up = st.given_up + st.tracks.values().flat_map(|t| t.layers.values()).map(|l| l.frames.given_up).sum::<u64>();
    Summary { parts: st.parts, dropped_packets: 0, given_up_packets: given_up }
}

impl State {
    fn video_codec(c: Codec) -> Option<VideoCodec> {
        match c {
            Codec::Vp8 => Some(VideoCodec::Vp8),
            Codec::H264 => Some(VideoCodec::H264),
            _ => None,
        }
    }

    fn add(&mut self, info: TrackInfo, now: Instant) {
        let codec = Codec::from_mime(&info.codec.mime_type);
        let video = info.kind == MediaKind::Video;
        if (video && Self::video_codec(codec).is_none()) || (!video && codec != Codec::Opus) {
            tracing::warn!(track = %info.id, mime = %info.codec.mime_type, "not recorded: no MP4 mapping for this codec here");
            return;
        }
        let slot = if video { &mut self.video } else { &mut self.audio };
        if slot.is_some() {
            tracing::info!(track = %info.id, "not recorded: the publisher's first track of this kind is");
            return;
        }
        *slot = Some(info.id);
        let clock = info.codec.clock_rate.max(1);
        self.tracks.insert(
            info.id,
            TrackIn { info, codec, clock, layers: BTreeMap::new(), current: None, last_key_request: None, first_key: None },
        );
        let vc = if video { Self::video_codec(codec) } else { None };
        match self.file.as_mut() {
            Some(f) if !f.started() => f.add_track(vc),
            Some(f) => {
                let fits = if video { f.has_video() && f.summary.video_codec == vc } else { f.has_audio() };
                if !fits {
                    // A kind (or codec) the started file does not have: a new file.
                    self.close_file();
                    self.open_file(now);
                }
            }
            None => self.open_file(now),
        }
    }

    fn open_file(&mut self, now: Instant) {
        let n = self.parts.len() + 1;
        let name = if n == 1 { format!("{}.mp4", self.base.display()) } else { format!("{}-part{n}.mp4", self.base.display()) };
        let video = self.video.and_then(|t| self.tracks.get(&t)).and_then(|t| Self::video_codec(t.codec));
        self.file = Some(Fmp4File::new(&PathBuf::from(name), video, self.audio.is_some(), now));
        // Fresh timelines: each track's anchors restart with the file.
        for t in self.tracks.values_mut() {
            t.current = None;
            t.first_key = None;
            for l in t.layers.values_mut() {
                l.waiting_key = true;
            }
        }
    }

    fn close_file(&mut self) {
        let Some(mut f) = self.file.take() else { return };
        let s = f.finish();
        if s.bytes == 0 && s.error.is_none() {
            // Nothing was written (no keyframe ever came): no file, no part.
            return;
        }
        let part = self.part(s);
        self.parts.push(part);
    }

    fn part(&self, s: FileSummary) -> Part {
        let unix = |t: Option<Instant>| {
            t.map(|t| {
                let (i0, u0) = self.clock;
                if t >= i0 { u0 + (t - i0).as_millis() as i64 } else { u0 - (i0 - t).as_millis() as i64 }
            })
        };
        Part {
            path: s.path,
            bytes: s.bytes,
            video_frames: s.video_frames,
            audio_frames: s.audio_frames,
            video_codec: s.video_codec.map(VideoCodec::name),
            width: s.width,
            height: s.height,
            started_ms: unix(s.start),
            ended_ms: unix(s.end),
            error: s.error,
        }
    }

    fn remove(&mut self, track: TrackId, now: Instant, frames: &mut Vec<(TrackId, u8, Frame)>) {
        // What it still holds goes in first.
        self.drain_track(track, now, true, frames);
        self.write_frames(now, frames);
        if let Some(t) = self.tracks.remove(&track) {
            self.given_up += t.layers.values().map(|l| l.frames.given_up).sum::<u64>();
        }
        if self.video == Some(track) {
            self.video = None;
        }
        if self.audio == Some(track) {
            self.audio = None;
        }
        if self.tracks.is_empty() {
            self.close_file();
        }
    }

    fn packet(&mut self, p: Arc<MediaPacket>) {
        let Some(t) = self.tracks.get_mut(&p.track) else { return };
        let codec = t.codec;
        let l = t.layers.entry(p.layer).or_insert_with(|| LayerIn {
            frames: FrameAssembler::new(codec),
            anchor: None,
            last_seen: p.received,
            waiting_key: true,
        });
        l.last_seen = l.last_seen.max(p.received);
        l.frames.push(p);
    }

    fn drain_track(&mut self, track: TrackId, now: Instant, flush: bool, out: &mut Vec<(TrackId, u8, Frame)>) {
        let Some(t) = self.tracks.get_mut(&track) else { return };
        let mut buf = Vec::new();
        for (layer, l) in t.layers.iter_mut() {
            l.frames.drain(now, flush, &mut buf);
            out.extend(buf.drain(..).map(|f| (track, *layer, f)));
        }
    }

    fn tick(&mut self, now: Instant, flush: bool, frames: &mut Vec<(TrackId, u8, Frame)>) {
        let ids: Vec<TrackId> = self.tracks.keys().copied().collect();
        for id in ids {
            self.drain_track(id, now, flush, frames);
        }
        self.write_frames(now, frames);
        if let Some(f) = self.file.as_mut() {
            f.maybe_flush(false);
        }
    }

    /// Frames into the file: audio as it comes, video from the chosen layer.
    fn write_frames(&mut self, now: Instant, frames: &mut Vec<(TrackId, u8, Frame)>) {
        // Frames of several layers and tracks in the order they were captured.
        frames.sort_by_key(|(_, _, f)| f.at);
        let mut key_requests: Vec<(TrackId, u8)> = Vec::new();
        for (track, layer, f) in frames.drain(..) {
            let Some(t) = self.tracks.get_mut(&track) else { continue };
            let Some(file) = self.file.as_mut() else { continue };
            if t.info.kind == MediaKind::Audio {
                let at = t.time_of(layer, &f);
                file.audio_frame(at, f.data, now);
                continue;
            }
            let target = t.target(now);
            let Some(l) = t.layers.get_mut(&layer) else { continue };
            if f.keyframe {
                l.waiting_key = false;
            } else if f.after_loss {
                l.waiting_key = true;
            }
            if f.keyframe && t.first_key.is_none() {
                t.first_key = Some(now);
            }
            let take = if t.current == Some(layer) {
                !l.waiting_key
            } else if f.keyframe && t.current.is_none() {
                // The file's first frame: the best layer's, unless it is slow to come.
                target.is_none_or(|tg| layer >= tg) || t.first_key.is_some_and(|k| now.saturating_duration_since(k) >= START_WAIT)
            } else if f.keyframe {
                // Up to the best layer, or away from one that stopped.
                let current_stale =
                    t.current.and_then(|c| t.layers.get(&c)).is_none_or(|c| now.saturating_duration_since(c.last_seen) >= LAYER_STALE);
                let up = t.current.is_none_or(|c| layer > c) && target.is_none_or(|tg| layer <= tg);
                up || current_stale
            } else {
                false
            };
            if take {
                t.current = Some(layer);
                let at = t.time_of(layer, &f);
                file.video_frame(at, f.keyframe, f.data);
            }
            // Ask for what is missing: the best layer's keyframe, or the current one's after loss.
            let wanted = match (t.current, target) {
                (Some(c), Some(tg)) if tg > c => Some(tg),
                (Some(c), _) if t.layers.get(&c).is_some_and(|l| l.waiting_key) => Some(c),
                (None, Some(tg)) => Some(tg),
                _ => None,
            };
            if let Some(w) = wanted
                && t.last_key_request.is_none_or(|at| now.saturating_duration_since(at) >= KEYFRAME_EVERY)
            {
                t.last_key_request = Some(now);
                key_requests.push((track, w));
            }
        }
        for (track, layer) in key_requests {
            self.sfu.request_keyframe(track, layer);
        }
    }
}
