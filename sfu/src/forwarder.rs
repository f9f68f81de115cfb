//! Per-subscriber-track forwarding: where a viewer's stream starts, and the header rewrite that
//! makes it one continuous stream (constant SSRC, contiguous sequence numbers, monotonic
//! timestamps) whatever the publisher does.

use crate::codec::Codec;
use crate::ids::TrackId;
use std::time::Instant;

/// Sequence number and timestamp rewriting for one outgoing stream.
///
/// Output = input − offset (wrapping). A switch to a new source (a later issue's simulcast layer
/// change, or a publisher that restarted) re-anchors the offsets so the output continues at
/// `last + 1`; packets older than the switch point are dropped, never sent out of range.
#[derive(Clone, Debug)]
pub struct RtpMunger {
    anchored: bool,
    seq_offset: u16,
    ts_offset: u32,
    /// Extended (wrap-counting) input sequence number of the anchor packet, and the highest seen.
    /// Comparing extended numbers keeps "older than the anchor" meaningful for any stream length;
    /// a 16-bit comparison would flip after 32,768 packets and drop half the stream.
    start_ext: u64,
    highest_ext: u64,
    /// Highest output sequence number and the timestamp sent with it.
    last_seq: u16,
    last_ts: u32,
}

impl RtpMunger {
    /// A munger whose first output packet will carry `first_seq` and `first_ts`.
    pub fn new(first_seq: u16, first_ts: u32) -> Self {
        Self {
            anchored: false,
            seq_offset: 0,
            ts_offset: 0,
            start_ext: 0,
            highest_ext: 0,
            last_seq: first_seq.wrapping_sub(1),
            last_ts: first_ts.wrapping_sub(1),
        }
    }

    /// Start (or switch) at this input packet: it gets `last_seq + 1` and a timestamp at least
    /// `ts_gap` (≥ 1) after the last one sent.
    pub fn anchor(&mut self, in_seq: u16, in_ts: u32, ts_gap: u32) {
        let out_seq = self.last_seq.wrapping_add(1);
        let out_ts = self.last_ts.wrapping_add(ts_gap.max(1));
        self.seq_offset = in_seq.wrapping_sub(out_seq);
        self.ts_offset = in_ts.wrapping_sub(out_ts);
        // Start well above zero so packets from just before the anchor extend below it.
        self.start_ext = (1 << 32) + in_seq as u64;
        self.highest_ext = self.start_ext;
        self.anchored = true;
    }

    /// The extended form of `seq`, taken as the nearest to the highest seen.
    fn extend(&mut self, seq: u16) -> u64 {
        let diff = seq.wrapping_sub(self.highest_ext as u16) as i16 as i64;
        let ext = (self.highest_ext as i64 + diff).max(0) as u64;
        self.highest_ext = self.highest_ext.max(ext);
        ext
    }

    /// Whether [`anchor`](Self::anchor) has been called.
    pub fn is_anchored(&self) -> bool {
        self.anchored
    }

    /// The output (sequence number, timestamp) for an input packet of the current source, or
    /// `None` if it precedes the anchor point (or nothing is anchored yet).
    pub fn rewrite(&mut self, in_seq: u16, in_ts: u32) -> Option<(u16, u32)> {
        if !self.anchored || self.extend(in_seq) < self.start_ext {
            return None;
        }
        let seq = in_seq.wrapping_sub(self.seq_offset);
        let ts = in_ts.wrapping_sub(self.ts_offset);
        if (seq.wrapping_sub(self.last_seq) as i16) > 0 {
            self.last_seq = seq;
            self.last_ts = ts;
        }
        Some((seq, ts))
    }
}

/// One subscriber's view of one published track.
#[derive(Debug)]
pub struct Forwarder {
    pub track: TrackId,
    pub codec: Codec,
    /// SSRC the subscriber sees (fixed for the life of the forwarder).
    pub ssrc: u32,
    /// Payload type negotiated with the subscriber for this codec; `None` until negotiated.
    pub payload_type: Option<u8>,
    pub munger: RtpMunger,
    /// Video only: nothing is sent until a keyframe starts the stream.
    pub waiting_for_keyframe: bool,
    pub last_keyframe_request: Option<Instant>,
    pub packets: u64,
    pub bytes: u64,
}

/// What to do with an incoming packet for one subscriber.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it with this sequence number and timestamp.
    Send { seq: u16, ts: u32 },
    /// Drop it (waiting for a keyframe, stale, or not negotiated yet).
    Drop,
}

impl Forwarder {
    pub fn new(track: TrackId, codec: Codec, ssrc: u32) -> Self {
        Self {
            track,
            codec,
            ssrc,
            payload_type: None,
            munger: RtpMunger::new(rand::random(), rand::random()),
            waiting_for_keyframe: !matches!(codec, Codec::Opus | Codec::Other),
            last_keyframe_request: None,
            packets: 0,
            bytes: 0,
        }
    }

    /// Decide on one packet of the track. `keyframe` is the router's verdict on its payload.
    pub fn handle(&mut self, seq: u16, ts: u32, keyframe: bool) -> Verdict {
        if self.payload_type.is_none() {
            return Verdict::Drop;
        }
        if !self.munger.is_anchored() {
            if self.waiting_for_keyframe && !keyframe {
                return Verdict::Drop;
            }
            self.waiting_for_keyframe = false;
            self.munger.anchor(seq, ts, 1);
        }
        match self.munger.rewrite(seq, ts) {
            Some((seq, ts)) => Verdict::Send { seq, ts },
            None => Verdict::Drop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn waits_for_keyframe_then_continues() {
        let mut f = Forwarder::new(TrackId(1), Codec::Vp8, 7);
        f.payload_type = Some(96);
        assert_eq!(f.handle(10, 1000, false), Verdict::Drop);
        let Verdict::Send { seq: s0, ts: t0 } = f.handle(11, 4000, true) else { panic!() };
        let Verdict::Send { seq: s1, ts: t1 } = f.handle(12, 7000, false) else { panic!() };
        assert_eq!(s1, s0.wrapping_add(1));
        assert_eq!(t1.wrapping_sub(t0), 3000);
        // A packet from before the anchor is dropped, a retransmission after it passes.
        assert_eq!(f.handle(10, 1000, false), Verdict::Drop);
        assert_eq!(f.handle(11, 4000, true), Verdict::Send { seq: s0, ts: t0 });
    }

    #[test]
    fn audio_starts_at_once_but_not_before_negotiation() {
        let mut f = Forwarder::new(TrackId(1), Codec::Opus, 7);
        assert_eq!(f.handle(1, 1, false), Verdict::Drop);
        f.payload_type = Some(111);
        assert!(matches!(f.handle(2, 2, false), Verdict::Send { .. }));
    }

    #[test]
    fn long_streams_pass_whole_across_many_wraps() {
        let mut m = RtpMunger::new(5, 5);
        m.anchor(60_000, 0, 1);
        let mut prev = None;
        for i in 0..300_000u32 {
            let (s, _) = m.rewrite(60_000u16.wrapping_add(i as u16), i * 3000).expect("every packet passes");
            if let Some(p) = prev {
                assert_eq!(s, u16::wrapping_add(p, 1));
            }
            prev = Some(s);
        }
    }

    proptest! {
        /// Whatever sources the munger is switched between, and wherever their numbers wrap,
        /// in-order input gives contiguous sequence numbers and monotonic timestamps out.
        #[test]
        fn switches_keep_output_continuous(
            start in any::<(u16, u32)>(),
            segments in prop::collection::vec((any::<u16>(), any::<u32>(), 1u16..200, 1u32..6000), 1..40),
        ) {
            let mut m = RtpMunger::new(start.0, start.1);
            let mut prev: Option<(u16, u32)> = None;
            for (seq0, ts0, count, step) in segments {
                m.anchor(seq0, ts0, step);
                for i in 0..count {
                    let out = m.rewrite(seq0.wrapping_add(i), ts0.wrapping_add(step * i as u32));
                    let (s, t) = out.expect("in-order packet after anchor");
                    if let Some((ps, pt)) = prev {
                        prop_assert_eq!(s, ps.wrapping_add(1));
                        let dt = t.wrapping_sub(pt);
                        prop_assert!(dt > 0 && dt < 0x8000_0000, "timestamp went back: {} -> {}", pt, t);
                    } else {
                        prop_assert_eq!(s, start.0);
                    }
                    prev = Some((s, t));
                }
            }
        }
    }
}
