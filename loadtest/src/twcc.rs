//! Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01)
//! as a lean viewer writes it: the engine opens the server's SRTP itself instead of handing
//! each datagram to rtc (`engine.rs`, `--lean-viewers`), so rtc's TWCC receiver never sees the
//! packets and this takes its place — the arrival of every transport-wide number, reported
//! every [`INTERVAL`] as rtc's does, so the server's estimator gets what a browser sends.
//!
//! Each report covers the numbers from the first one not yet reported to the highest received,
//! in run-length chunks (a run per stretch of one symbol: received with a small delta, with a
//! large one, or not received); arrival times are kept in 250 µs ticks from one clock, so the
//! deltas never drift. A packet that comes after its number was reported is left out, as
//! rtc's recorder does.

use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc, TransportLayerCc,
};
use std::time::Duration;

/// How often a viewer reports (rtc's TWCC receiver's default).
pub const INTERVAL: Duration = Duration::from_millis(100);
/// The most numbers one report covers (a report stays near a datagram's size); the rest go in
/// the next one, sent at once.
pub const MAX_STATUSES: usize = 1000;
/// Arrivals held between reports at most: past it the oldest are dropped (a viewer that is not
/// reporting — never at the rates the harness runs).
const MAX_HELD: usize = 16_384;
/// A run-length chunk counts at most 2^13 − 1 packets.
const MAX_RUN: u16 = 8191;
/// Tick of the deltas (µs) and of the reference time (µs).
const TICK_US: i64 = 250;
const REFERENCE_US: i64 = 64_000;

/// One viewer's received transport-wide numbers since its last report.
#[derive(Debug, Default)]
pub struct Arrivals {
    /// (unwrapped number, arrival in µs on the caller's clock), in arrival order.
    held: Vec<(i64, i64)>,
    /// The highest number so far, unwrapped.
    highest: Option<i64>,
    /// The first number the next report starts at.
    next: Option<i64>,
    count: u8,
}

impl Arrivals {
    /// A packet with transport-wide number `seq` arrived at `arrival_us`.
    pub fn record(&mut self, seq: u16, arrival_us: u64) {
        let unwrapped = match self.highest {
            None => i64::from(seq),
            Some(h) => h + i64::from(seq.wrapping_sub(h as u16) as i16),
        };
        self.highest = Some(self.highest.map_or(unwrapped, |h| h.max(unwrapped)));
        if self.next.is_some_and(|n| unwrapped < n) {
            return;
        }
        if self.held.len() >= MAX_HELD {
            self.held.remove(0);
        }
        self.held.push((unwrapped, arrival_us as i64));
    }

    /// The reports for everything received since the last call (none if nothing was).
    pub fn feedback(&mut self, sender_ssrc: u32, media_ssrc: u32) -> Vec<TransportLayerCc> {
        let mut held = std::mem::take(&mut self.held);
        held.sort_unstable_by_key(|a| a.0);
        held.dedup_by_key(|a| a.0);
        if let Some(n) = self.next {
            held.retain(|a| a.0 >= n);
        }
        let mut out = Vec::new();
        let mut rest = &held[..];
        while let Some(&(first, _)) = rest.first() {
            let base = self.next.unwrap_or(first).max(first - MAX_STATUSES as i64 / 2);
            let (fb, used) = self.report(base, rest, sender_ssrc, media_ssrc);
            self.next = Some(rest[used - 1].0 + 1);
            out.push(fb);
            rest = &rest[used..];
        }
        out
    }

    /// One report from `base` over the first arrivals of `rest` it has room for (at least one);
    /// how many it took.
    fn report(&mut self, base: i64, rest: &[(i64, i64)], sender_ssrc: u32, media_ssrc: u32) -> (TransportLayerCc, usize) {
        let reference = rest[0].1.div_euclid(REFERENCE_US);
        let mut prev_tick = reference * (REFERENCE_US / TICK_US);
        let mut symbols: Vec<SymbolTypeTcc> = Vec::new();
        let mut deltas = Vec::new();
        let mut used = 0;
        for &(seq, arrival) in rest {
            let statuses = (seq - base + 1) as usize;
            if used > 0 && statuses > MAX_STATUSES {
                break;
            }
            let tick = arrival.div_euclid(TICK_US);
            let delta = tick - prev_tick;
            let symbol = if (0..=255).contains(&delta) {
                SymbolTypeTcc::PacketReceivedSmallDelta
            } else if (i64::from(i16::MIN)..=i64::from(i16::MAX)).contains(&delta) {
                SymbolTypeTcc::PacketReceivedLargeDelta
            } else if used > 0 {
                // Too far from the last: the next report starts with it.
                break;
            } else {
                // The first of a report is never past a reference tick's range.
                SymbolTypeTcc::PacketReceivedLargeDelta
            };
            let missing = (seq - base - symbols.len() as i64).max(0) as usize;
            symbols.extend(std::iter::repeat_n(SymbolTypeTcc::PacketNotReceived, missing));
            symbols.push(symbol);
            deltas.push(RecvDelta { type_tcc_packet: symbol, delta: delta.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) * TICK_US });
            prev_tick = tick;
            used += 1;
        }
        let mut chunks: Vec<PacketStatusChunk> = Vec::new();
        let mut i = 0;
        while i < symbols.len() {
            let s = symbols[i];
            let run = symbols[i..].iter().take(MAX_RUN as usize).take_while(|x| **x == s).count();
            chunks.push(PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: s,
                run_length: run as u16,
            }));
            i += run;
        }
        let fb = TransportLayerCc {
            sender_ssrc,
            media_ssrc,
            base_sequence_number: base as u16,
            packet_status_count: symbols.len() as u16,
            reference_time: (reference as u32) & 0x00ff_ffff,
            fb_pkt_count: self.count,
            packet_chunks: chunks,
            recv_deltas: deltas,
        };
        self.count = self.count.wrapping_add(1);
        (fb, used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::{Marshal, Unmarshal};

    /// What a report says, read back from its wire form as the server reads it: per number,
    /// its arrival in µs from the reference time (None: not received).
    fn decode(fb: &TransportLayerCc) -> Vec<(u16, Option<i64>)> {
        let wire = fb.marshal().expect("marshal");
        let back = TransportLayerCc::unmarshal(&mut &wire[..]).expect("unmarshal");
        let mut at = i64::from(back.reference_time) * REFERENCE_US;
        let mut deltas = back.recv_deltas.iter();
        let mut out = Vec::new();
        let mut seq = back.base_sequence_number;
        for c in &back.packet_chunks {
            let PacketStatusChunk::RunLengthChunk(r) = c else { panic!("only run-length chunks") };
            for _ in 0..r.run_length {
                if out.len() == back.packet_status_count as usize {
                    break;
                }
                let got = match r.packet_status_symbol {
                    SymbolTypeTcc::PacketNotReceived => None,
                    _ => {
                        at += deltas.next().expect("a delta per received packet").delta;
                        Some(at)
                    }
                };
                out.push((seq, got));
                seq = seq.wrapping_add(1);
            }
        }
        assert_eq!(out.len(), back.packet_status_count as usize);
        assert!(deltas.next().is_none(), "no delta left over");
        out
    }

    #[test]
    fn a_report_gives_every_number_its_arrival_and_the_gaps_as_lost() {
        let mut a = Arrivals::default();
        // 65530 .. 5 across the wrap, 65533 and 2 lost, one 100 ms gap (a large delta), one
        // packet out of order.
        let mut sent = Vec::new();
        let mut t = 1_000_000u64;
        for s in (65530u16..=65535).chain(0..=5) {
            t += if s == 0 { 100_000 } else { 1_000 };
            if s != 65533 && s != 2 {
                sent.push((s, t));
            }
        }
        sent.swap(3, 4);
        for &(s, t) in &sent {
            a.record(s, t);
        }
        let fbs = a.feedback(1, 2);
        assert_eq!(fbs.len(), 1);
        let got = decode(&fbs[0]);
        assert_eq!(got.len(), 12);
        assert_eq!(got[0].0, 65530);
        for (seq, at) in got {
            match sent.iter().find(|x| x.0 == seq) {
                Some(&(_, t)) => {
                    let at = at.expect("received");
                    assert!((at - t as i64).abs() < TICK_US, "{seq}: {at} against {t}");
                }
                None => assert_eq!(at, None, "{seq} was lost"),
            }
        }
        // Nothing new: no report. A late packet whose number was reported: left out.
        assert!(a.feedback(1, 2).is_empty());
        a.record(65533, t + 1000);
        assert!(a.feedback(1, 2).is_empty());
        // The next report starts where the last ended, with the gap before it as lost.
        a.record(8, t + 2000);
        let got = decode(&a.feedback(1, 2)[0]);
        assert_eq!(got.iter().map(|x| (x.0, x.1.is_some())).collect::<Vec<_>>(), vec![(6, false), (7, false), (8, true)]);
        assert_eq!(a.feedback(1, 2).len(), 0);
    }

    #[test]
    fn long_stretches_split_into_reports_and_far_arrivals_start_a_new_one() {
        let mut a = Arrivals::default();
        let n = MAX_STATUSES as u16 * 2 + 10;
        for s in 0..n {
            a.record(s, 5_000_000 + u64::from(s) * 100);
        }
        // Past the largest delta (8.2 s): the next report starts with it.
        a.record(n, 5_000_000 + 20_000_000);
        let fbs = a.feedback(1, 2);
        assert_eq!(fbs.len(), 4, "three for the stretch, one for the far packet");
        let counts: Vec<u8> = fbs.iter().map(|f| f.fb_pkt_count).collect();
        assert_eq!(counts, vec![0, 1, 2, 3]);
        let mut all = Vec::new();
        for fb in &fbs {
            assert!(fb.packet_status_count as usize <= MAX_STATUSES);
            all.extend(decode(fb));
        }
        assert_eq!(all.len(), n as usize + 1);
        assert!(all.iter().enumerate().all(|(i, x)| x.0 == i as u16 && x.1.is_some()), "each number once, in order, received");
        let last = all.last().and_then(|x| x.1).expect("the far packet");
        assert!((last - 25_000_000).abs() < TICK_US);
    }

    #[test]
    fn held_arrivals_are_bounded() {
        let mut a = Arrivals::default();
        for i in 0..(MAX_HELD as u64 + 100) {
            a.record(i as u16, 1_000_000 + i);
        }
        assert_eq!(a.held.len(), MAX_HELD);
    }
}
