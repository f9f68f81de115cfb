//! Per-subscriber-track forwarding: where a viewer's stream starts, and the header rewrite that
//! makes it one continuous stream (constant SSRC, contiguous sequence numbers, monotonic
//! timestamps) whatever the publisher does.

use crate::forward::munger::RtpMunger;
use crate::forward::selector::{BandwidthCap, LayerRates, Quality, size_cap};
use crate::ids::TrackId;
use crate::media::codec::{Codec, Vp8Temporal};
use crate::media::simulcast::MAX_LAYERS;
use std::time::{Duration, Instant};

/// A layer not heard from for this long counts as stopped, and the forwarder falls back.
pub const LAYER_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a new viewer that has not reported its video size is kept from raising demand.
pub const DEMAND_GRACE: Duration = Duration::from_millis(1000);

/// One subscriber's view of one published track: which layer it forwards, and where the stream
/// it sees starts. Layer switches happen only at a keyframe of the new layer.
#[derive(Debug)]
pub struct Forwarder {
    track: TrackId,
    codec: Codec,
    /// SSRC the subscriber sees (fixed for the life of the forwarder).
    ssrc: u32,
    /// Payload type negotiated with the subscriber for this codec; `None` until negotiated.
    payload_type: Option<u8>,
    munger: RtpMunger,
    /// RTP clock rate, to turn wall-clock gaps into timestamp gaps at a switch.
    clock_rate: u32,
    /// The layer being forwarded; `None` until the first (key)frame.
    current: Option<u8>,
    /// The highest layer this subscriber should get (bandwidth and size caps set it).
    max_layer: u8,
    last_seen: [Option<Instant>; MAX_LAYERS],
    last_sent: Option<Instant>,
    last_keyframe_request: Option<Instant>,
    packets: u64,
    bytes: u64,
    /// What each layer costs, as measured on arrival.
    rates: LayerRates,
    /// Frame heights of the layers, from their keyframes (VP8).
    heights: [Option<u32>; MAX_LAYERS],
    /// The viewer's quality choice and the height it renders this video at.
    quality: Quality,
    wanted_height: Option<u32>,
    /// Bandwidth cap with hysteresis.
    bandwidth: BandwidthCap,
    created: Instant,
    /// VP8 temporal layers: the highest the bandwidth allows, and the one in effect (it follows
    /// the allowed one down at the next frame, up at the next base-layer frame, so every frame
    /// forwarded has its references).
    max_temporal: u8,
    temporal: u8,
    /// This track's share of the viewer's bandwidth estimate at the last allocation (bits/s).
    share_bps: Option<f64>,
    /// The frame being passed or dropped: its timestamp, and whether it is dropped.
    frame: Option<(u32, bool)>,
    /// Video paused by the audio-only fallback: nothing is forwarded, rates are still measured,
    /// and the stream starts again at a keyframe when it resumes (see `set_paused`).
    paused: bool,
}

/// VP8 temporal layers a stream may have (TID 0..=2).
pub const MAX_TEMPORAL: u8 = 2;

/// What to do with an incoming packet for one subscriber.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it with this sequence number and timestamp.
    Send { seq: u16, ts: u32 },
    /// Drop it (another layer, waiting for a keyframe, stale, or not negotiated yet).
    Drop,
}

impl Forwarder {
    pub fn new(track: TrackId, codec: Codec, ssrc: u32, clock_rate: u32, now: Instant) -> Self {
        Self {
            track,
            codec,
            ssrc,
            payload_type: None,
            munger: RtpMunger::new(rand::random(), rand::random()),
            clock_rate: clock_rate.max(1),
            current: None,
            max_layer: MAX_LAYERS as u8 - 1,
            last_seen: [None; MAX_LAYERS],
            last_sent: None,
            last_keyframe_request: None,
            packets: 0,
            bytes: 0,
            rates: LayerRates::default(),
            heights: [None; MAX_LAYERS],
            quality: Quality::Auto,
            wanted_height: None,
            bandwidth: BandwidthCap::default(),
            created: now,
            max_temporal: MAX_TEMPORAL,
            temporal: MAX_TEMPORAL,
            share_bps: None,
            frame: None,
            paused: false,
        }
    }

    /// What this viewer asks of the publisher (dynacast). A page reports its video sizes right
    /// after joining; until it has (or for a grace period, for clients that never do), a new
    /// viewer does not wake paused layers it may not need.
    pub fn demand(&self, now: Instant) -> Option<u8> {
        if self.is_audio() {
            return None;
        }
        if self.wanted_height.is_none() && now.duration_since(self.created) < DEMAND_GRACE {
            return Some(self.max_layer.min(self.current.unwrap_or(0)));
        }
        Some(self.max_layer)
    }

    /// The highest layer the viewer wants, from its quality choice and rendered size
    /// (bandwidth aside).
    pub fn wanted_layer(&self) -> u8 {
        self.quality.cap().min(size_cap(self.wanted_height, self.heights))
    }

    /// The layer the viewer would get with bandwidth to spare: the highest layer it wants that
    /// the publisher has sent since this subscription began — arriving now or paused by
    /// dynacast because nobody could afford it (a track without simulcast has only layer 0).
    pub fn wanted_known_layer(&self) -> u8 {
        let wanted = self.wanted_layer();
        (0..=wanted).rev().find(|&l| self.last_seen[l as usize].is_some()).unwrap_or(0)
    }

    /// Set the cap from what the viewer wants and, if known, the bandwidth share of this track.
    pub fn apply_caps(&mut self, share_bps: Option<f64>, now: Instant) {
        self.share_bps = share_bps;
        let wanted = self.wanted_layer();
        let Some(share) = share_bps else {
            self.max_layer = wanted;
            self.max_temporal = MAX_TEMPORAL;
            return;
        };
        // A layer stays while its base temporal layer fits: frame rate goes before resolution.
        let temporal = self.rates.temporal_rates();
        let floors = [temporal[0][0], temporal[1][0], temporal[2][0]];
        self.max_layer = wanted.min(self.bandwidth.update_with_floors(share, self.rates.rates(), floors, now));
        let cumulative = temporal[self.max_layer as usize];
        let up = self.max_temporal;
        self.max_temporal = (0..=MAX_TEMPORAL)
            .rev()
            .find(|&t| {
                // A little headroom to climb, none to stay.
                let factor = if t > up { 1.1 } else { 1.0 };
                cumulative[t as usize] * factor <= share
            })
            .unwrap_or(0);
    }

    pub fn is_audio(&self) -> bool {
        matches!(self.codec, Codec::Opus)
    }

    fn is_video(&self) -> bool {
        !matches!(self.codec, Codec::Opus)
    }

    fn alive(&self, layer: usize, now: Instant) -> bool {
        self.last_seen[layer].is_some_and(|t| now.duration_since(t) <= LAYER_TIMEOUT)
    }

    /// The layer this subscriber should be on: the highest arriving layer within its cap, else
    /// the lowest arriving layer above it (better too much than a black tile).
    pub fn target(&self, now: Instant) -> Option<u8> {
        let cap = (self.max_layer as usize).min(MAX_LAYERS - 1);
        (0..=cap).rev().find(|&l| self.alive(l, now)).or_else(|| (cap + 1..MAX_LAYERS).find(|&l| self.alive(l, now))).map(|l| l as u8)
    }

    /// The layer a keyframe is needed on, if the subscriber waits for one (a start or a switch).
    pub fn wants_keyframe(&self, now: Instant) -> Option<u8> {
        if !self.is_video() || self.payload_type.is_none() || self.paused {
            return None;
        }
        match (self.current, self.target(now)) {
            (None, None) => Some(0),
            (cur, Some(t)) if cur != Some(t) => Some(t),
            _ => None,
        }
    }

    /// Note that a packet of `layer` arrived (without forwarding anything).
    pub fn observe(&mut self, layer: u8, now: Instant) {
        if let Some(seen) = self.last_seen.get_mut(layer as usize) {
            *seen = Some(now);
        }
    }

    /// Account a packet of `layer`: its size for the layer's rate, its frame height if it says.
    #[cfg(test)]
    pub fn measure(&mut self, layer: u8, bytes: usize, frame_height: Option<u16>, now: Instant) {
        self.measure_temporal(layer, bytes, frame_height, None, now);
    }

    /// [`measure`](Self::measure), with the packet's VP8 temporal layer if it has one.
    pub fn measure_temporal(&mut self, layer: u8, bytes: usize, frame_height: Option<u16>, tid: Option<u8>, now: Instant) {
        self.rates.record_temporal(layer, bytes, tid, now);
        if let (Some(h), Some(slot)) = (frame_height, self.heights.get_mut(layer as usize)) {
            *slot = Some(h as u32);
        }
    }

    /// Decide on one packet of the track. `keyframe` is the router's verdict on its payload.
    #[cfg(test)]
    pub fn handle(&mut self, layer: u8, seq: u16, ts: u32, keyframe: bool, now: Instant) -> Verdict {
        self.handle_temporal(layer, seq, ts, keyframe, None, now)
    }

    /// Whether a packet of the current layer falls to the temporal cap (see `max_temporal`).
    fn drops_temporal(&mut self, t: Vp8Temporal, ts: u32, keyframe: bool) -> bool {
        if t.frame_start {
            if self.max_temporal < self.temporal || (self.max_temporal > self.temporal && (keyframe || t.tid == 0)) {
                self.temporal = self.max_temporal;
            }
            let drop = t.tid > self.temporal && !keyframe;
            self.frame = Some((ts, drop));
            return drop;
        }
        match self.frame {
            Some((frame_ts, drop)) if frame_ts == ts => drop,
            _ => t.tid > self.temporal,
        }
    }

    /// [`handle`](Self::handle), with the packet's VP8 temporal layer if it has one.
    pub fn handle_temporal(
        &mut self,
        layer: u8,
        seq: u16,
        ts: u32,
        keyframe: bool,
        temporal: Option<Vp8Temporal>,
        now: Instant,
    ) -> Verdict {
        self.observe(layer, now);
        if self.payload_type.is_none() || self.paused {
            return Verdict::Drop;
        }
        if self.current != Some(layer) {
            // Switch only onto the target layer, and for video only at its keyframe; until then
            // the current layer keeps flowing. A viewer that has nothing yet starts on the first
            // keyframe of any allowed layer (a fast first frame), and climbs to the target after.
            let starting = self.current.is_none() && layer <= self.max_layer;
            let switch = (starting || self.target(now) == Some(layer)) && (keyframe || !self.is_video());
            if !switch {
                tracing::trace!(track = %self.track, layer, current = ?self.current, target = ?self.target(now), keyframe, max = self.max_layer, "packet held back");
                return Verdict::Drop;
            }
            let gap = self.last_sent.map(|t| (now.duration_since(t).as_secs_f64() * self.clock_rate as f64) as u32).unwrap_or(1);
            self.munger.anchor(seq, ts, gap);
            if self.current.is_some() {
                crate::metrics::LAYER_SWITCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            self.current = Some(layer);
            self.frame = None;
        }
        if let Some(t) = temporal
            && self.drops_temporal(t, ts, keyframe)
        {
            self.munger.skip(seq);
            return Verdict::Drop;
        }
        match self.munger.rewrite(seq, ts) {
            Some((seq, ts)) => {
                self.last_sent = Some(now);
                Verdict::Send { seq, ts }
            }
            None => {
                tracing::trace!(track = %self.track, seq, "packet before the anchor");
                Verdict::Drop
            }
        }
    }
}

impl Forwarder {
    pub fn track(&self) -> TrackId {
        self.track
    }

    /// The RTP clock rate of the track forwarded.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// The SSRC the subscriber sees.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The layer being forwarded, once the stream has started.
    pub fn current(&self) -> Option<u8> {
        self.current
    }

    /// The layers a video stream that has not started yet may start on, best first (the target,
    /// then any allowed one from the highest: see `handle_temporal`); empty when it has started,
    /// is paused, is audio or has no payload type yet.
    pub fn start_layers(&self, now: Instant) -> Vec<u8> {
        if self.current.is_some() || !self.is_video() || self.payload_type.is_none() || self.paused {
            return Vec::new();
        }
        let allowed = (0..=self.max_layer.min(MAX_LAYERS as u8 - 1)).rev();
        self.target(now).into_iter().chain(allowed).collect()
    }

    /// The payload type the subscriber accepted for this codec.
    pub fn payload_type(&self) -> Option<u8> {
        self.payload_type
    }

    pub fn set_payload_type(&mut self, pt: Option<u8>) {
        self.payload_type = pt;
    }

    /// Bytes forwarded so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// What each layer costs (bits/s), as measured on arrival.
    pub fn layer_rates(&self) -> [f64; MAX_LAYERS] {
        self.rates.rates()
    }

    /// What a layer costs (bits/s) once measured; `None` while it has not been.
    pub fn measured_rate(&self, layer: u8) -> Option<f64> {
        self.rates.measured(layer)
    }

    /// How the bandwidth cap climbs (the viewer's layer policy).
    pub fn with_bandwidth(mut self, cap: BandwidthCap) -> Self {
        self.bandwidth = cap;
        self
    }

    /// The height the viewer renders this video at (device pixels; 0 = hidden).
    pub fn set_wanted_height(&mut self, height: u32) {
        self.wanted_height = Some(height);
    }

    pub fn set_quality(&mut self, quality: Quality) {
        self.quality = quality;
    }

    /// Pause (audio-only fallback) or resume this video track. Paused, nothing is forwarded and
    /// no keyframe is asked for; the munger keeps its place. Resumed, the stream starts again
    /// like a new one — at the first keyframe of an allowed layer, asked for at once — and the
    /// munger re-anchors there: sequence numbers continue at the last sent + 1, timestamps jump
    /// by the time the pause lasted.
    pub fn set_paused(&mut self, paused: bool) {
        if !self.is_video() || self.paused == paused {
            return;
        }
        self.paused = paused;
        self.current = None;
        self.frame = None;
        if !paused {
            self.last_keyframe_request = None;
        }
    }

    /// Carry another published track from now on (a WHEP slot whose stage seat changed hands):
    /// the viewer keeps this SSRC and sees one stream. The new source starts like a layer
    /// switch — at its first keyframe (any packet for audio), with sequence numbers going on
    /// from the last one sent and the timestamp moved on by the time between — and what was
    /// measured of the old source (layers, rates, sizes, temporal state) is forgotten. The
    /// viewer's own settings (size, quality, bandwidth cap, a pause) stay. The payload type is
    /// the caller's to set for the new codec.
    pub fn retarget(&mut self, track: TrackId, codec: Codec, clock_rate: u32, now: Instant) {
        let mut next = Forwarder::new(track, codec, self.ssrc, clock_rate, now);
        next.munger = self.munger.clone();
        next.last_sent = self.last_sent;
        next.quality = self.quality;
        next.wanted_height = self.wanted_height;
        next.bandwidth = self.bandwidth.clone();
        next.share_bps = self.share_bps;
        next.max_layer = self.max_layer;
        next.paused = self.paused && next.is_video();
        next.payload_type = self.payload_type;
        *self = next;
    }

    /// A packet of `bytes` payload went out.
    pub fn sent(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }

    /// The layer to ask a keyframe of now, if this subscriber waits for one and has not asked
    /// within `spacing` (marked as asked).
    pub fn keyframe_to_ask(&mut self, now: Instant, spacing: Duration) -> Option<u8> {
        let layer = self.wants_keyframe(now)?;
        if self.last_keyframe_request.is_some_and(|t| now.duration_since(t) < spacing) {
            return None;
        }
        self.last_keyframe_request = Some(now);
        Some(layer)
    }
}

impl Forwarder {
    /// What `stats` replies show of this track.
    pub fn stats(&self) -> crate::api::TrackStats {
        crate::api::TrackStats {
            track: self.track,
            layer: self.current,
            max_layer: self.max_layer,
            max_temporal: self.max_temporal,
            budget_bps: self.share_bps.map(|b| b as u64),
            packets: self.packets,
            bytes: self.bytes,
            layer_bps: self.rates.rates().map(|r| r as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn video() -> Forwarder {
        let mut f = Forwarder::new(TrackId(1), Codec::Vp8, 7, 90_000, Instant::now());
        f.payload_type = Some(96);
        f
    }

    #[test]
    fn waits_for_keyframe_then_continues() {
        let now = Instant::now();
        let mut f = video();
        assert_eq!(f.handle(0, 10, 1000, false, now), Verdict::Drop);
        assert_eq!(f.wants_keyframe(now), Some(0));
        let Verdict::Send { seq: s0, ts: t0 } = f.handle(0, 11, 4000, true, now) else { panic!() };
        let Verdict::Send { seq: s1, ts: t1 } = f.handle(0, 12, 7000, false, now) else { panic!() };
        assert_eq!(s1, s0.wrapping_add(1));
        assert_eq!(t1.wrapping_sub(t0), 3000);
        assert_eq!(f.wants_keyframe(now), None);
        // A packet from before the anchor is dropped, a retransmission after it passes.
        assert_eq!(f.handle(0, 10, 1000, false, now), Verdict::Drop);
        assert_eq!(f.handle(0, 11, 4000, true, now), Verdict::Send { seq: s0, ts: t0 });
    }

    #[test]
    fn a_retargeted_forwarder_goes_on_from_a_keyframe_of_the_new_track() {
        let t0 = Instant::now();
        let mut f = video();
        let Verdict::Send { seq: s0, ts: t } = f.handle(0, 500, 90_000, true, t0) else { panic!() };
        let Verdict::Send { seq: s1, ts: t1 } = f.handle(0, 501, 93_000, false, t0) else { panic!() };
        assert_eq!((s1, t1.wrapping_sub(t)), (s0.wrapping_add(1), 3000));
        let later = t0 + Duration::from_millis(100);
        f.retarget(TrackId(2), Codec::Vp8, 90_000, later);
        assert_eq!(f.track(), TrackId(2));
        assert_eq!(f.ssrc(), 7, "the viewer keeps the SSRC");
        assert_eq!(f.payload_type(), Some(96));
        // The new source's numbers are unrelated to the old one's; its first packets wait
        // for a keyframe, and a keyframe is wanted.
        assert_eq!(f.handle(0, 40_000, 5, false, later), Verdict::Drop);
        assert_eq!(f.wants_keyframe(later), Some(0));
        let Verdict::Send { seq: s2, ts: t2 } = f.handle(0, 40_001, 3005, true, later) else { panic!() };
        assert_eq!(s2, s1.wrapping_add(1), "sequence numbers go on");
        assert_eq!(t2.wrapping_sub(t1), 9000, "the timestamp moves on by the 100 ms between");
        let Verdict::Send { seq: s3, ts: t3 } = f.handle(0, 40_002, 6005, false, later) else { panic!() };
        assert_eq!((s3, t3.wrapping_sub(t2)), (s2.wrapping_add(1), 3000));
    }

    #[test]
    fn audio_starts_at_once_but_not_before_negotiation() {
        let now = Instant::now();
        let mut f = Forwarder::new(TrackId(1), Codec::Opus, 7, 48_000, Instant::now());
        assert_eq!(f.handle(0, 1, 1, false, now), Verdict::Drop);
        f.payload_type = Some(111);
        assert!(matches!(f.handle(0, 2, 2, false, now), Verdict::Send { .. }));
        assert_eq!(f.wants_keyframe(now), None);
    }

    #[test]
    fn climbs_to_the_top_layer_at_its_keyframe_and_falls_back_when_it_stops() {
        let t0 = Instant::now();
        let mut f = video();
        // Low layer starts first.
        assert!(matches!(f.handle(0, 100, 0, true, t0), Verdict::Send { .. }));
        // The high layer appears: low keeps flowing until a high keyframe.
        assert_eq!(f.handle(2, 5000, 777, false, t0), Verdict::Drop);
        assert_eq!(f.wants_keyframe(t0), Some(2));
        let Verdict::Send { seq: a, .. } = f.handle(0, 101, 3000, false, t0) else { panic!("low continues") };
        let Verdict::Send { seq: b, .. } = f.handle(2, 5001, 780, true, t0) else { panic!("switch at keyframe") };
        assert_eq!(b, a.wrapping_add(1), "contiguous across the switch");
        assert_eq!(f.current, Some(2));
        assert_eq!(f.handle(0, 102, 6000, true, t0), Verdict::Drop, "low is no longer forwarded");
        // The high layer stops; after the timeout the low layer is the target again.
        let later = t0 + LAYER_TIMEOUT + Duration::from_millis(100);
        assert_eq!(f.handle(0, 103, 9000, false, later), Verdict::Drop);
        assert_eq!(f.wants_keyframe(later), Some(0));
        assert!(matches!(f.handle(0, 104, 12000, true, later), Verdict::Send { .. }));
        // A cap keeps it low even when high returns.
        f.max_layer = 0;
        assert_eq!(f.handle(2, 5100, 9999, true, later), Verdict::Drop);
        assert_eq!(f.current, Some(0));
    }

    #[test]
    fn a_paused_track_sends_nothing_and_resumes_at_a_keyframe_where_it_stopped() {
        let t0 = Instant::now();
        let mut f = video();
        let Verdict::Send { seq: s0, ts: t0_out } = f.handle(0, 100, 0, true, t0) else { panic!("starts") };
        f.set_paused(true);
        // Nothing passes, keyframes included, and none is asked for.
        for i in 1..60u16 {
            let at = t0 + Duration::from_millis(33 * i as u64);
            assert_eq!(f.handle(0, 100 + i, 3000 * i as u32, i % 10 == 0, at), Verdict::Drop);
            assert_eq!(f.wants_keyframe(at), None);
        }
        assert_eq!(f.current(), None);
        // Resumed 2 s in: a keyframe is wanted (and may be asked for at once); delta frames wait.
        let at = t0 + Duration::from_secs(2);
        f.set_paused(false);
        assert_eq!(f.keyframe_to_ask(at, Duration::from_secs(1)), Some(0));
        assert_eq!(f.handle(0, 161, 183_000, false, at), Verdict::Drop);
        let Verdict::Send { seq, ts } = f.handle(0, 162, 186_000, true, at) else { panic!("resumes at the keyframe") };
        assert_eq!(seq, s0.wrapping_add(1), "sequence numbers continue where they stopped");
        assert_eq!(ts.wrapping_sub(t0_out), 180_000, "timestamps jump by the pause (2 s at 90 kHz)");
    }

    fn vp8t(tid: u8, frame_start: bool) -> Option<Vp8Temporal> {
        Some(Vp8Temporal { tid, frame_start })
    }

    #[test]
    fn temporal_layers_drop_whole_frames_without_gaps() {
        let now = Instant::now();
        let mut f = video();
        // L1T3: TIDs 0 2 1 2 0 2 1 2 …, two packets a frame; frame 0 is a keyframe.
        let tids = [0u8, 2, 1, 2];
        let mut out = Vec::new();
        let mut seq = 100u16;
        for frame in 0..24u32 {
            if frame == 2 {
                f.max_temporal = 0; // bandwidth short: base layer only, from the next frame
            }
            if frame == 13 {
                f.max_temporal = 2; // back: from the next base-layer frame (16)
            }
            let tid = tids[frame as usize % 4];
            for i in 0..2u16 {
                let v = f.handle_temporal(0, seq, frame * 3000, frame == 0 && i == 0, vp8t(tid, i == 0), now);
                if let Verdict::Send { seq: s, .. } = v {
                    out.push((s, frame, tid));
                }
                seq = seq.wrapping_add(1);
            }
        }
        for w in out.windows(2) {
            assert_eq!(w[1].0, w[0].0.wrapping_add(1), "contiguous: {w:?}");
        }
        let frames: Vec<u32> = out.iter().filter(|(_, _, _)| true).map(|&(_, fr, _)| fr).collect();
        // Frames 0, 1 whole; then only TID 0 (4, 8, 12); from 16 on everything again.
        let mut expected: Vec<u32> = vec![0, 1, 4, 8, 12];
        expected.extend(16..24);
        let mut seen: Vec<u32> = frames.clone();
        seen.dedup();
        assert_eq!(seen, expected);
        assert_eq!(frames.len(), seen.len() * 2, "every forwarded frame whole");
    }

    #[test]
    fn frame_rate_goes_before_resolution() {
        let t0 = Instant::now();
        let mut f = video();
        // Three layers at 150 k / 500 k / 1.5 M, each half TID 0, a quarter TID 1, a quarter
        // TID 2, measured over two one-second windows.
        let rates = [150_000.0f64, 500_000.0, 1_500_000.0];
        for ms in (0..2100u64).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            for l in 0..3u8 {
                // Every 10 ms a frame; TIDs 0 2 1 2, base frames twice as large: 40 % of the
                // bytes in TID 0, 60 % up to TID 1.
                let tid = [0u8, 2, 1, 2][(ms / 10 % 4) as usize];
                let weight = if tid == 0 { 2.0 } else { 1.0 };
                let bytes = (rates[l as usize] / 8.0 / 100.0 * weight / 1.25) as usize;
                f.measure_temporal(l, bytes, None, Some(tid), now);
            }
        }
        let now = t0 + Duration::from_millis(2200);
        let top = f.rates.temporal_rates()[2];
        assert!((top[0] / top[2] - 0.4).abs() < 0.05 && (top[1] / top[2] - 0.6).abs() < 0.05, "{top:?}");
        f.apply_caps(Some(3e6), now);
        assert_eq!((f.max_layer, f.max_temporal), (2, 2));
        // 1.2 M: the top layer without its top temporal layer (900 k), not the middle layer.
        f.apply_caps(Some(1.2e6), now);
        assert_eq!((f.max_layer, f.max_temporal), (2, 1));
        // 700 k: top layer, base temporal layer only (600 k).
        f.apply_caps(Some(700e3), now);
        assert_eq!((f.max_layer, f.max_temporal), (2, 0));
        // 560 k: the top layer's base no longer fits: the middle layer, whole (500 k + 10 %).
        f.apply_caps(Some(560e3), now);
        assert_eq!((f.max_layer, f.max_temporal), (1, 2));
        // A stream without temporal layers never sheds frame rate: it drops a layer.
        let mut g = video();
        for ms in (0..2100u64).step_by(10) {
            for l in 0..3u8 {
                g.measure(l, (rates[l as usize] / 8.0 / 100.0) as usize, None, t0 + Duration::from_millis(ms));
            }
        }
        g.apply_caps(Some(1.2e6), now);
        assert_eq!((g.max_layer, g.max_temporal), (1, 2));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Three simulcast layers arrive interleaved in random order, with random keyframes,
        /// layers that stop and start, and a cap that moves: whatever the forwarder forwards is
        /// one stream — sequence numbers contiguous, timestamps never going back.
        #[test]
        fn forwarded_stream_stays_continuous_across_random_layer_switches(
            events in prop::collection::vec((0u8..3, any::<bool>(), 0u8..6, 0u8..3), 1..400),
        ) {
            let t0 = Instant::now();
            let mut f = Forwarder::new(TrackId(1), Codec::Vp8, 7, 90_000, Instant::now());
            f.payload_type = Some(96);
            // Each layer is its own in-order stream with its own numbering.
            let mut seq = [1000u16, 30_000, 65_000];
            let mut ts = [5u32, 4_000_000_000, 77];
            let mut prev: Option<(u16, u32)> = None;
            for (i, (layer, key, step_ms, cap)) in events.into_iter().enumerate() {
                let now = t0 + Duration::from_millis(i as u64 * step_ms as u64 * 40);
                f.max_layer = cap;
                let l = layer as usize;
                seq[l] = seq[l].wrapping_add(1);
                ts[l] = ts[l].wrapping_add(3000);
                if let Verdict::Send { seq: s, ts: t } = f.handle(layer, seq[l], ts[l], key, now) {
                    if let Some((ps, pt)) = prev {
                        prop_assert_eq!(s, ps.wrapping_add(1), "contiguous");
                        prop_assert!(t.wrapping_sub(pt) < 0x8000_0000, "timestamp went back: {} -> {}", pt, t);
                    }
                    prev = Some((s, t));
                }
            }
        }

        /// One layer with VP8 temporal layers: frames of 1–3 packets with random TIDs, random
        /// keyframes and a temporal cap that moves: the output has contiguous sequence numbers,
        /// timestamps that never go back, and frames leave whole or not at all.
        #[test]
        fn temporal_drops_keep_the_stream_contiguous(
            frames in prop::collection::vec((0u8..3, 1u16..4, any::<bool>(), 0u8..3), 1..300),
        ) {
            let now = Instant::now();
            let mut f = video();
            let mut seq = 65_000u16;
            let mut prev: Option<(u16, u32)> = None;
            let mut sent_per_frame: HashMap<u32, (u16, u16)> = HashMap::new();
            for (i, (tid, packets, key, cap)) in frames.into_iter().enumerate() {
                f.max_temporal = cap;
                let ts = i as u32 * 3000;
                let key = key && i % 7 == 0;
                let tid = if key { 0 } else { tid };
                for p in 0..packets {
                    let s = seq;
                    seq = seq.wrapping_add(1);
                    if let Verdict::Send { seq: o, ts: t } = f.handle_temporal(0, s, ts, key && p == 0, vp8t(tid, p == 0), now) {
                        if let Some((ps, pt)) = prev {
                            prop_assert_eq!(o, ps.wrapping_add(1), "contiguous");
                            prop_assert!(t.wrapping_sub(pt) < 0x8000_0000);
                        }
                        prev = Some((o, t));
                        let e = sent_per_frame.entry(ts).or_insert((0, packets));
                        e.0 += 1;
                    }
                }
                if let Some(&(n, total)) = sent_per_frame.get(&ts) {
                    prop_assert_eq!(n, total, "a frame that arrived whole leaves whole or not at all");
                }
            }
        }

    }
}
