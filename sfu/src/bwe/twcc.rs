//! Transport-wide sequence numbers and the send history, for every packet a subscriber leg sends
//! — RTX included.
//!
//! rtc's `TwccSenderInterceptor` and `CongestionControlInterceptor` know a stream by its media
//! SSRC only, so the RTX retransmissions its NACK responder sends leave unnumbered and unrecorded:
//! invisible to feedback, and to the estimator exactly when the path is lossy. Probes are RTX
//! packets too (see `PeerSession::probe`). This interceptor takes both jobs at rtc's TWCC-sender
//! slot and knows each stream by its media and its RTX SSRC.
//!
//! The numbering and the ring are a [`TwccLog`] shared with the send path of our own
//! (`session/lean.rs`), which numbers the forwarded media, retransmissions and probes it sends
//! outside rtc's chain; this interceptor numbers what rtc still sends and resolves the feedback.
//!
//! The send history is a ring indexed by transport sequence number: a slot written per packet,
//! read once when feedback names it. rtc's `History` (three maps per packet, pruned on a timer)
//! cost ≈ 0.6–0.8 µs per forwarded packet (docs/benchmarks.md); the ring costs a store.

use crate::bwe::{Sent, SharedBwe};
use rtc::interceptor::{Interceptor, Packet, Slot, StreamInfo, TaggedPacket, convert_twcc};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtp::extension::transport_cc_extension::TransportCcExtension;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::{Marshal, MarshalSize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where it sits: rtc's TWCC-sender slot, wire-ward of everything that produces packets.
pub const SLOT: Slot = Slot::TwccSender;
/// The extension's URI in SDP.
pub const TRANSPORT_CC_URI: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
/// Packets remembered: 1024 × 12 bytes (12 KiB per viewer). At 250 packets/s (2.5 Mbit/s) that
/// is 4 s, at 1,000 packets/s one second — far longer than a feedback round (≈ 100 ms).
pub const RING: usize = 1024;

/// One sent packet: its transport sequence number, size, departure (µs since the session's
/// epoch, wrapping every 71 minutes — only differences under that are used), and whether it still
/// awaits feedback.
#[derive(Clone, Copy, Default)]
struct Slot12 {
    seq: u16,
    size: u16,
    sent_us: u32,
    pending: bool,
}

/// The numbering and the send history of one subscriber leg, shared by the two paths that send
/// on it: rtc's interceptor chain ([`TransportCc`], for what rtc still sends) and the send path
/// of our own (`session::lean`, for forwarded media, retransmissions and probes). Both run on
/// the session's worker thread: the lock is never contended.
pub struct TwccLog {
    next_seq: u16,
    ring: Box<[Slot12; RING]>,
    epoch: Instant,
    reports: Vec<Sent>,
}

impl TwccLog {
    pub fn new() -> Self {
        Self { next_seq: 0, ring: Box::new([Slot12::default(); RING]), epoch: Instant::now(), reports: Vec::new() }
    }

    fn micros(&self, t: Instant) -> u32 {
        t.saturating_duration_since(self.epoch).as_micros() as u32
    }

    /// The next transport sequence number, for a packet of `size` bytes (RTP, before SRTP)
    /// leaving at `at`: recorded as sent.
    pub fn number(&mut self, size: usize, at: Instant) -> u16 {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        self.record(seq, size, at);
        seq
    }

    /// Record a departure under transport sequence number `seq`.
    pub fn record(&mut self, seq: u16, size: usize, at: Instant) {
        let sent_us = self.micros(at);
        self.ring[seq as usize % RING] = Slot12 { seq, size: size.min(u16::MAX as usize) as u16, sent_us, pending: true };
    }

    /// Resolve one feedback packet into reports (send order).
    fn resolve(&mut self, fb: &TransportLayerCc, now: Instant) -> &[Sent] {
        let now_us = self.micros(now);
        self.reports.clear();
        for ack in convert_twcc(fb) {
            let slot = &mut self.ring[ack.sequence_number as usize % RING];
            if !slot.pending || slot.seq != ack.sequence_number {
                continue; // never sent, already reported, or overwritten
            }
            slot.pending = false;
            let age = Duration::from_micros(now_us.wrapping_sub(slot.sent_us) as u64);
            self.reports.push(Sent {
                departure: now.checked_sub(age).unwrap_or(now),
                arrival: ack.arrival.filter(|_| ack.arrived),
                size: slot.size as usize,
            });
        }
        &self.reports
    }
}

impl Default for TwccLog {
    fn default() -> Self {
        Self::new()
    }
}

/// [`TwccLog`] as both paths hold it.
#[derive(Clone, Default)]
pub struct SharedTwcc(pub Arc<Mutex<TwccLog>>);

impl SharedTwcc {
    /// The log, whatever a panicking holder left behind (its state stays usable).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, TwccLog> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct TransportCc {
    bwe: SharedBwe,
    /// SSRC (media or RTX) → the extension id negotiated for its stream.
    streams: HashMap<u32, u8>,
    log: SharedTwcc,
    /// One feedback's reports, copied out of the log before the estimator is locked (the lean
    /// path takes the two the other way round: the estimator, then the log, for a probe).
    reports: Vec<Sent>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl TransportCc {
    pub fn new(bwe: SharedBwe, log: SharedTwcc) -> Self {
        Self { bwe, streams: HashMap::new(), log, reports: Vec::new(), reads: VecDeque::new(), writes: VecDeque::new() }
    }

    /// Resolve one feedback packet into reports and hand them to the estimator.
    pub fn on_feedback(&mut self, fb: &TransportLayerCc, now: Instant) {
        self.reports.clear();
        self.reports.extend_from_slice(self.log.lock().resolve(fb, now));
        if !self.reports.is_empty() {
            self.bwe.lock().on_reports(now, &self.reports);
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for TransportCc {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for p in packets {
                if let Some(fb) = p.as_any().downcast_ref::<TransportLayerCc>() {
                    self.on_feedback(fb, msg.now);
                }
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(p) = &mut msg.message.packet
            && let Some(&ext) = self.streams.get(&p.header.ssrc)
        {
            let mut log = self.log.lock();
            let seq = log.next_seq;
            log.next_seq = seq.wrapping_add(1);
            if let Ok(data) = (TransportCcExtension { transport_sequence: seq }).marshal()
                && p.header.set_extension(ext, data.freeze()).is_ok()
            {
                let size = p.marshal_size();
                log.record(seq, size, msg.now);
            }
        }
        self.writes.push_back(msg);
        Ok(())
    }

    crate::queued_polls!();
}

impl Interceptor for TransportCc {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let Some(ext) = info.rtp_header_extensions.iter().find(|e| e.uri == TRANSPORT_CC_URI).map(|e| e.id as u8) else {
            return;
        };
        self.streams.insert(info.ssrc, ext);
        if let Some(rtx) = info.ssrc_rtx {
            self.streams.insert(rtx, ext);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
        if let Some(rtx) = info.ssrc_rtx {
            self.streams.remove(&rtx);
        }
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
        PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc,
    };

    #[test]
    fn feedback_resolves_each_recorded_packet_once() {
        let t0 = Instant::now();
        let mut cc = TwccLog::new();
        for s in 0..10u16 {
            cc.record(65_530u16.wrapping_add(s), 1000, t0 + Duration::from_millis(s as u64));
        }
        // Feedback for 65530..=65535, 0..=3 (wrapping): all received, 1 ms apart.
        let fb = TransportLayerCc {
            base_sequence_number: 65_530,
            packet_status_count: 10,
            reference_time: 0,
            packet_chunks: vec![PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: SymbolTypeTcc::PacketReceivedSmallDelta,
                run_length: 10,
            })],
            recv_deltas: (0..10).map(|_| RecvDelta { type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta, delta: 1000 }).collect(),
            ..Default::default()
        };
        let now = t0 + Duration::from_millis(50);
        let reports = cc.resolve(&fb, now);
        assert_eq!(reports.len(), 10);
        assert!(reports.windows(2).all(|w| w[1].departure > w[0].departure), "send order");
        assert!(reports.iter().all(|r| r.arrival.is_some() && r.size == 1000));
        // The same feedback again (a duplicate RTCP): nothing new.
        assert!(cc.resolve(&fb, now).is_empty());
        // Numbers never sent are ignored.
        let mut other = fb.clone();
        other.base_sequence_number = 100;
        assert!(cc.resolve(&other, now).is_empty());
    }
}
