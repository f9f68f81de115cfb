//! From RTP packets back to frames, for the recorder: a small reorder buffer per (track,
//! layer) that waits for late and retransmitted packets (the publisher's NACKs refill it as
//! they refill the forwarders' streams), gives up on a hole after [`MAX_WAIT`], and turns each
//! complete frame's payloads into the codec's bitstream with rtc's depacketizers (VP8 without
//! its payload descriptors, H.264 as length-prefixed NAL units, Opus as is).

use crate::media::codec::Codec;
use crate::media::packet::MediaPacket;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Depacketizer;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a missing packet is waited for before the frames around it are given up.
pub const MAX_WAIT: Duration = Duration::from_millis(400);
/// Packets held at most (a burst of a few frames of a high layer); past it the oldest hole is
/// given up at once.
pub const MAX_HELD: usize = 2048;

/// One assembled frame.
#[derive(Debug)]
pub struct Frame {
    /// Extended (unwrapped) RTP timestamp.
    pub ts: u64,
    /// When its first packet arrived.
    pub at: Instant,
    pub keyframe: bool,
    /// Something was lost between the previous frame handed out and this one.
    pub after_loss: bool,
    pub data: Vec<u8>,
}

/// Unwraps a 16- or 32-bit RTP counter into a monotonic-ish 64-bit one.
#[derive(Debug, Default)]
struct Unwrap {
    last: Option<u64>,
}

impl Unwrap {
    fn extend(&mut self, value: u64, bits: u32) -> u64 {
        let span = 1u64 << bits;
        let Some(last) = self.last else {
            // Start far from zero so a value just before the first one stays positive.
            let v = span * 16 + value;
            self.last = Some(v);
            return v;
        };
        let base = last & !(span - 1);
        let candidates = [base.wrapping_sub(span).wrapping_add(value), base + value, base + span + value];
        let best = candidates.into_iter().min_by_key(|c| c.abs_diff(last)).unwrap_or(base + value);
        if best > last {
            self.last = Some(best);
        }
        best
    }
}

/// Reorders one RTP stream and cuts it into frames.
pub struct FrameAssembler {
    codec: Codec,
    held: BTreeMap<u64, Arc<MediaPacket>>,
    seq: Unwrap,
    ts: Unwrap,
    /// The next sequence number to hand out.
    next: Option<u64>,
    /// Loss since the last frame handed out.
    lost: bool,
    /// Packets given up (holes and incomplete frames), for the summary.
    pub given_up: u64,
}

impl FrameAssembler {
    pub fn new(codec: Codec) -> Self {
        Self { codec, held: BTreeMap::new(), seq: Unwrap::default(), ts: Unwrap::default(), next: None, lost: false, given_up: 0 }
    }

    /// Take a packet (any order; duplicates and packets older than what was handed out are
    /// dropped).
    pub fn push(&mut self, pkt: Arc<MediaPacket>) {
        let seq = self.seq.extend(u64::from(pkt.header.sequence_number), 16);
        if self.next.is_some_and(|n| seq < n) {
            return;
        }
        self.held.entry(seq).or_insert(pkt);
        if self.held.len() > MAX_HELD
            && let Some((&first, _)) = self.held.first_key_value()
        {
            // Too much held behind a hole: give the hole up now.
            if self.next.is_some_and(|n| n < first) {
                self.given_up += first - self.next.unwrap_or(first);
                self.next = Some(first);
                self.lost = true;
            }
        }
    }

    /// Hand out every frame that is complete, or whose wait is over; `flush` gives up on every
    /// hole at once (the end of the recording).
    pub fn drain(&mut self, now: Instant, flush: bool, out: &mut Vec<Frame>) {
        // Bounded: each pass either hands a frame out, skips a hole, or stops.
        for _ in 0..=self.held.len() * 2 + 1 {
            let Some((&first_held, first_pkt)) = self.held.first_key_value() else { return };
            let next = *self.next.get_or_insert(first_held);
            let expired = |p: &MediaPacket| flush || now.saturating_duration_since(p.received) >= MAX_WAIT;
            if first_held > next {
                // A hole before the oldest packet held.
                if expired(first_pkt) {
                    self.given_up += first_held - next;
                    self.next = Some(first_held);
                    self.lost = true;
                    continue;
                }
                return;
            }
            // `first_held == next` (older ones were never inserted).
            match self.frame_end(next) {
                Some(end) => {
                    if let Some(f) = self.emit(next, end) {
                        out.push(f);
                    }
                }
                None => {
                    let first = &self.held[&next];
                    if !expired(first) {
                        return;
                    }
                    // An incomplete frame whose wait is over: give it up.
                    let ts = first.header.timestamp;
                    let mut end = next;
                    while self.held.get(&(end + 1)).is_some_and(|p| p.header.timestamp == ts) {
                        end += 1;
                    }
                    for s in next..=end {
                        self.held.remove(&s);
                    }
                    self.given_up += end - next + 1;
                    self.next = Some(end + 1);
                    self.lost = true;
                }
            }
        }
    }
}

impl FrameAssembler {
    /// The last sequence number of the frame starting at `start`, when it is all here.
    fn frame_end(&self, start: u64) -> Option<u64> {
        let first = self.held.get(&start)?;
        if self.codec == Codec::Opus || self.codec == Codec::Other {
            return Some(start);
        }
        let ts = first.header.timestamp;
        let mut s = start;
        // At most MAX_HELD packets are held, so this ends.
        loop {
            let p = self.held.get(&s)?;
            if p.header.timestamp != ts {
                // The next frame began: this one ended at the packet before (its marker lost
                // in the sender, or a sender that sets none).
                return Some(s - 1);
            }
            if p.header.marker {
                return Some(s);
            }
            s += 1;
        }
    }
}

impl FrameAssembler {
    /// Take the packets `start..=end` out as one frame.
    fn emit(&mut self, start: u64, end: u64) -> Option<Frame> {
        let packets: Vec<Arc<MediaPacket>> = (start..=end).filter_map(|s| self.held.remove(&s)).collect();
        self.next = Some(end + 1);
        let first = packets.first()?;
        let ts = self.ts.extend(u64::from(first.header.timestamp), 32);
        let keyframe = first.keyframe;
        let at = first.received;
        let data = depacketize(self.codec, &packets);
        let after_loss = std::mem::take(&mut self.lost);
        match data {
            Some(data) if !data.is_empty() => Some(Frame { ts, at, keyframe, after_loss, data }),
            _ => {
                // Not a frame the codec can read: a hole for whoever decodes after it.
                self.lost = true;
                None
            }
        }
    }
}

/// The codec bitstream of one frame's payloads (`None`: a payload that does not parse). Runs
/// on the recorder's thread over what a publisher sent; a panic in a depacketizer (rtc's H.264
/// one indexed past a STAP-A's end, found by the `record_stream` fuzz target) is caught and
/// counts as a lost frame.
pub fn depacketize(codec: Codec, packets: &[Arc<MediaPacket>]) -> Option<Vec<u8>> {
    std::panic::catch_unwind(|| depacketize_inner(codec, packets)).ok().flatten()
}

fn depacketize_inner(codec: Codec, packets: &[Arc<MediaPacket>]) -> Option<Vec<u8>> {
    let mut data = Vec::with_capacity(packets.iter().map(|p| p.payload.len()).sum::<usize>() + 16);
    match codec {
        Codec::Vp8 => {
            for p in packets {
                let mut d = Vp8Packet::default();
                data.extend_from_slice(&d.depacketize(&p.payload).ok()?);
            }
        }
        Codec::H264 => {
            let mut fu: Option<Vec<u8>> = None;
            for p in packets {
                h264_to_avcc(&p.payload, &mut fu, &mut data)?;
            }
        }
        Codec::Opus | Codec::Vp9 | Codec::Other => {
            for p in packets {
                data.extend_from_slice(&p.payload);
            }
        }
    }
    Some(data)
}

/// One H.264 RTP payload (RFC 6184: a single NAL unit, STAP-A, or FU-A) appended to `out` as
/// length-prefixed (4-byte) NAL units; `fu` holds a fragmented unit between packets. `None`: a
/// payload that does not parse (a STAP-A length past its end, an FU-A without its start, an
/// unsupported type).
pub fn h264_to_avcc(payload: &[u8], fu: &mut Option<Vec<u8>>, out: &mut Vec<u8>) -> Option<()> {
    let put = |out: &mut Vec<u8>, nal: &[u8]| {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    };
    let header = *payload.first()?;
    match header & 0x1f {
        0 | 25..=27 | 29..=31 => None,
        24 => {
            // STAP-A: 16-bit sizes, each followed by its unit.
            let mut rest = payload.get(1..)?;
            while !rest.is_empty() {
                let size = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
                let nal = rest.get(2..2 + size).filter(|n| !n.is_empty())?;
                put(out, nal);
                rest = &rest[2 + size..];
            }
            Some(())
        }
        28 => {
            let fu_header = *payload.get(1)?;
            let body = payload.get(2..)?;
            let (start, end) = (fu_header & 0x80 != 0, fu_header & 0x40 != 0);
            if start {
                let mut nal = Vec::with_capacity(body.len() * 4 + 1);
                nal.push((header & 0xe0) | (fu_header & 0x1f));
                nal.extend_from_slice(body);
                *fu = Some(nal);
            } else {
                fu.as_mut()?.extend_from_slice(body);
            }
            if end {
                let nal = fu.take()?;
                put(out, &nal);
            }
            Some(())
        }
        _ => {
            put(out, payload);
            Some(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TrackId;
    use bytes::Bytes;

    fn avcc(payloads: &[&[u8]]) -> Option<Vec<u8>> {
        let (mut fu, mut out) = (None, Vec::new());
        for p in payloads {
            h264_to_avcc(p, &mut fu, &mut out)?;
        }
        Some(out)
    }

    #[test]
    fn h264_payloads_become_length_prefixed_units_and_broken_ones_are_refused() {
        // A single unit; a STAP-A of SPS and PPS; an FU-A in three pieces.
        assert_eq!(avcc(&[&[0x65, 1, 2]]), Some(vec![0, 0, 0, 3, 0x65, 1, 2]));
        assert_eq!(avcc(&[&[0x78, 0, 2, 0x67, 9, 0, 1, 0x68]]), Some(vec![0, 0, 0, 2, 0x67, 9, 0, 0, 0, 1, 0x68]));
        assert_eq!(avcc(&[&[0x7c, 0x85, 1], &[0x7c, 0x05, 2], &[0x7c, 0x45, 3]]), Some(vec![0, 0, 0, 4, 0x65, 1, 2, 3]));
        // The fuzz target's finding: a STAP-A ending one byte into a size (rtc's depacketizer
        // indexed past the end and panicked on the recorder's thread).
        assert_eq!(avcc(&[&[0x78, 0, 2, 0x67, 9, 0]]), None);
        assert_eq!(avcc(&[&[0x78, 0, 9, 0x67]]), None, "a size past the end");
        assert_eq!(avcc(&[&[0x7c, 0x05, 2]]), None, "an FU-A without its start");
        assert_eq!(avcc(&[&[0x7d, 0x85, 1]]), None, "FU-B is not supported");
        assert_eq!(avcc(&[&[]]), None);
    }

    /// A VP8 packet: descriptor (S bit on a frame's first packet), then three payload bytes
    /// (rtc's depacketizer wants four at least).
    fn vp8(seq: u16, ts: u32, first: bool, marker: bool, at: Instant) -> Arc<MediaPacket> {
        let header = rtc::rtp::header::Header { sequence_number: seq, timestamp: ts, marker, ..Default::default() };
        let payload = Bytes::from(vec![if first { 0x10 } else { 0x00 }, seq as u8, 0xaa, 0xbb]);
        Arc::new(MediaPacket::inspect(TrackId(1), 0, Codec::Vp8, header, payload, at))
    }

    #[test]
    fn packets_out_of_order_become_frames_in_order() {
        let t0 = Instant::now();
        let mut a = FrameAssembler::new(Codec::Vp8);
        // Three frames of two packets, across the sequence wrap, shuffled.
        let seqs = [65534u16, 65535, 0, 1, 2, 3];
        let order = [1usize, 0, 3, 5, 2, 4];
        for i in order {
            let frame = i / 2;
            a.push(vp8(seqs[i], 3000 * frame as u32, i % 2 == 0, i % 2 == 1, t0));
        }
        let mut out = Vec::new();
        a.drain(t0, false, &mut out);
        assert_eq!(out.len(), 3);
        let data: Vec<Vec<u8>> = out.iter().map(|f| f.data.iter().copied().filter(|b| *b != 0xaa && *b != 0xbb).collect()).collect();
        assert_eq!(data, vec![vec![254, 255], vec![0, 1], vec![2, 3]], "payloads without descriptors, in order");
        assert_eq!(out[0].data.len(), 6);
        assert_eq!(out[2].ts - out[0].ts, 6000);
        assert!(out.iter().all(|f| !f.after_loss));
    }

    #[test]
    fn a_hole_is_waited_for_then_given_up() {
        let t0 = Instant::now();
        let mut a = FrameAssembler::new(Codec::Vp8);
        a.push(vp8(10, 0, true, false, t0));
        a.push(vp8(11, 0, false, true, t0));
        a.push(vp8(12, 3000, true, false, t0)); // 13, the end of this frame, is lost
        a.push(vp8(14, 6000, true, false, t0));
        a.push(vp8(15, 6000, false, true, t0));
        let mut out = Vec::new();
        a.drain(t0 + MAX_WAIT / 2, false, &mut out);
        assert_eq!(out.len(), 1, "the frame with a hole waits for a retransmission");
        // A retransmission in time would complete it; none comes: given up after MAX_WAIT.
        a.drain(t0 + MAX_WAIT, false, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].ts - out[0].ts, 6000, "the incomplete frame is skipped");
        assert!(out[1].after_loss, "the next frame says something was lost");
        assert_eq!(a.given_up, 2);
        // A late packet of what was given up is ignored.
        a.push(vp8(13, 3000, false, true, t0));
        a.drain(t0 + MAX_WAIT, true, &mut out);
        assert_eq!(out.len(), 2);
    }
}
