//! Sequence number and timestamp rewriting for one outgoing stream.

/// Sequence number and timestamp rewriting for one outgoing stream.
///
/// Output = input − offset (wrapping). A switch to a new source (a simulcast layer change, or a
/// publisher that restarted) re-anchors the offsets so the output continues at `last + 1`;
/// packets older than the switch point are dropped, never sent out of range. A packet the
/// forwarder leaves out on purpose (a frame of a dropped VP8 temporal layer) is [`skip`]ped: the
/// packets after it shift down by one, so the receiver sees no gap, and a late retransmission of
/// an earlier packet still gets the number it had.
///
/// [`skip`]: RtpMunger::skip
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
    /// (first extended input number, offset from there on), oldest first; the last is current.
    /// Empty until anchored. Bounded by [`MAX_SHIFTS`]: older input is dropped.
    shifts: std::collections::VecDeque<(u64, u16)>,
    /// Extended numbers of recently skipped packets (a retransmission of one is skipped again).
    skipped: std::collections::VecDeque<u64>,
    /// Highest extended input number given an output number so far.
    numbered_ext: u64,
}

/// Offset changes (skips) a munger remembers, and skipped packets.
const MAX_SHIFTS: usize = 64;
const MAX_SKIPPED: usize = 256;

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
            shifts: Default::default(),
            skipped: Default::default(),
            numbered_ext: 0,
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
        self.shifts.clear();
        self.shifts.push_back((self.start_ext, self.seq_offset));
        self.skipped.clear();
        self.numbered_ext = 0;
    }

    /// Leave this input packet out of the stream: if nothing after it has been numbered yet, the
    /// packets that follow close the gap.
    pub fn skip(&mut self, in_seq: u16) {
        if !self.anchored {
            return;
        }
        let ext = self.extend(in_seq);
        if ext < self.start_ext || self.skipped.contains(&ext) {
            return;
        }
        if self.skipped.len() >= MAX_SKIPPED {
            self.skipped.pop_front();
        }
        self.skipped.push_back(ext);
        if ext > self.numbered_ext {
            // Every number after `ext` moves down by one — those of shifts made by skips of later
            // packets too: skips come out of order when packets of a dropped temporal layer are
            // reordered on the way in (a shift appended after a later one gave two packets the
            // same number: found by the `rtp_munger` fuzz target). The shifts stay in order.
            let at = ext + 1;
            let base = self.offset_at(at).unwrap_or(self.seq_offset);
            for shift in self.shifts.iter_mut().filter(|(from, _)| *from >= at) {
                shift.1 = shift.1.wrapping_add(1);
            }
            if !self.shifts.iter().any(|(from, _)| *from == at) {
                let mut i = self.shifts.iter().position(|(from, _)| *from > at).unwrap_or(self.shifts.len());
                if self.shifts.len() >= MAX_SHIFTS {
                    self.shifts.pop_front();
                    i = i.saturating_sub(1);
                    if let Some(&(from, _)) = self.shifts.front() {
                        self.start_ext = from;
                    }
                }
                self.shifts.insert(i, (at, base.wrapping_add(1)));
            }
            self.seq_offset = self.shifts.back().map_or(self.seq_offset, |&(_, offset)| offset);
        }
    }

    /// The offset in effect for an extended input number (`None`: older than remembered).
    fn offset_at(&self, ext: u64) -> Option<u16> {
        match self.shifts.back() {
            Some(&(from, offset)) if ext >= from => Some(offset),
            _ => self.shifts.iter().rev().find(|(from, _)| ext >= *from).map(|&(_, o)| o),
        }
    }

    /// The extended form of `seq`, taken as the nearest to the highest seen.
    fn extend(&mut self, seq: u16) -> u64 {
        let diff = seq.wrapping_sub(self.highest_ext as u16) as i16 as i64;
        let ext = (self.highest_ext as i64 + diff).max(0) as u64;
        self.highest_ext = self.highest_ext.max(ext);
        ext
    }

    /// The output (sequence number, timestamp) for an input packet of the current source, or
    /// `None` if it precedes the anchor point (or nothing is anchored yet).
    pub fn rewrite(&mut self, in_seq: u16, in_ts: u32) -> Option<(u16, u32)> {
        if !self.anchored {
            return None;
        }
        let ext = self.extend(in_seq);
        if ext < self.start_ext || (!self.skipped.is_empty() && self.skipped.contains(&ext)) {
            return None;
        }
        let seq = in_seq.wrapping_sub(self.offset_at(ext)?);
        self.numbered_ext = self.numbered_ext.max(ext);
        let ts = in_ts.wrapping_sub(self.ts_offset);
        if (seq.wrapping_sub(self.last_seq) as i16) > 0 {
            self.last_seq = seq;
            self.last_ts = ts;
        }
        Some((seq, ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_late_retransmission_keeps_its_number_after_skips() {
        let mut m = RtpMunger::new(500, 0);
        m.anchor(10, 0, 1);
        let (a, _) = m.rewrite(10, 0).unwrap();
        let (b, _) = m.rewrite(11, 0).unwrap();
        m.skip(12);
        m.skip(13);
        let (c, _) = m.rewrite(14, 3000).unwrap();
        assert_eq!((a, b, c), (500, 501, 502), "the gap is closed");
        // The publisher retransmits 11 (lost on its way to us, say): same number as before.
        assert_eq!(m.rewrite(11, 0), Some((501, 0)));
        // A retransmission of a skipped packet stays out.
        assert_eq!(m.rewrite(13, 0), None);
        // A packet skipped after later ones were numbered cannot close its gap: left out only.
        m.skip(15);
        let (d, _) = m.rewrite(16, 6000).unwrap();
        assert_eq!(d, 503);
        assert_eq!(m.rewrite(14, 3000), Some((502, 3000)));
    }

    /// Found by the `rtp_munger` fuzz target: skips arriving out of order (13, then 11) gave 12
    /// the number 10 had.
    #[test]
    fn skips_out_of_order_close_every_gap_without_reusing_a_number() {
        let mut m = RtpMunger::new(100, 0);
        m.anchor(10, 0, 1);
        assert_eq!(m.rewrite(10, 0).map(|r| r.0), Some(100));
        m.skip(13);
        m.skip(11);
        assert_eq!(m.rewrite(12, 0).map(|r| r.0), Some(101));
        assert_eq!(m.rewrite(14, 0).map(|r| r.0), Some(102));
        assert_eq!(m.rewrite(15, 0).map(|r| r.0), Some(103));
        assert_eq!(m.rewrite(10, 0).map(|r| r.0), Some(100), "a retransmission keeps its number");
        assert_eq!((m.rewrite(11, 0), m.rewrite(13, 0)), (None, None), "skipped packets stay out");
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
        #![proptest_config(ProptestConfig::with_cases(3000))]
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
