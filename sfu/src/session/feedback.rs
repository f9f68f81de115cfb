//! The interceptor that lets what the SFU needs out of the interceptor chain.
//!
//! `rtc`'s interceptor chain ends inbound RTCP before the application unless an interceptor marks
//! a packet `DeliverToApplication`. The SFU must see PLI and FIR from viewers to relay them to the
//! publisher; receiver reports and NACKs stay inside the chain (the NACK responder answers those
//! from its packet cache). On a subscriber connection it also counts the TWCC feedback that
//! reaches the estimator (`bwe/`, driven by rtc's congestion-control interceptor) and hands it
//! any REMB, the fallback estimate of a viewer that sends no TWCC.

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack, nack_pairs_from_sequence_numbers};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Position in the chain: application-most, like rtc's own `rtcp-processing` example.
pub const KEYFRAME_FEEDBACK_SLOT: usize = 14_000;

#[derive(Default)]
pub struct KeyframeFeedback {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
    /// The subscriber connection's estimator (REMB goes there).
    bwe: Option<crate::bwe::SharedBwe>,
    /// Transport-wide congestion control feedback packets seen (diagnostics).
    twcc_feedback: Option<Arc<AtomicU64>>,
}

impl KeyframeFeedback {
    /// On a subscriber connection: REMB goes to `bwe`, TWCC feedback packets are counted into
    /// `twcc_feedback`.
    pub fn with_estimator(bwe: crate::bwe::SharedBwe, twcc_feedback: Arc<AtomicU64>) -> Self {
        Self { bwe: Some(bwe), twcc_feedback: Some(twcc_feedback), ..Self::default() }
    }
}

fn asks_for_keyframe(p: &[Box<dyn rtc::rtcp::Packet>]) -> bool {
    p.iter().any(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>())
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeFeedback {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let (Some(bwe), Packet::Rtcp(packets)) = (&self.bwe, &msg.message.packet) {
            for p in packets {
                if let Some(remb) = p.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                    bwe.lock().on_remb(msg.now, remb.bitrate as f64);
                }
            }
        }
        if let (Some(count), Packet::Rtcp(packets)) = (&self.twcc_feedback, &msg.message.packet) {
            let n = packets.iter().filter(|p| p.as_any().is::<TransportLayerCc>()).count();
            if n > 0 {
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        // A viewer's NACKs, as the guard let them through, also go to the worker: the send path
        // of our own answers them (session/lean.rs); rtc's responder has nothing of its to resend.
        let nacks =
            self.bwe.is_some() && matches!(&msg.message.packet, Packet::Rtcp(p) if p.iter().any(|p| p.as_any().is::<TransportLayerNack>()));
        if let Packet::Rtcp(packets) = &msg.message.packet
            && (nacks || asks_for_keyframe(packets))
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    crate::queued_polls!();
}

impl Interceptor for KeyframeFeedback {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Position of [`NackGuard`]: wire-ward of rtc's NACK responder (4_000), so the responder only
/// sees what the guard lets through.
pub const NACK_GUARD_SLOT: usize = 3_500;
/// A packet retransmitted this recently is not retransmitted again (a NACK repeated before the
/// first answer could arrive).
pub const RESEND_GAP: Duration = Duration::from_millis(100);
/// A packet is retransmitted at most this many times (a receiver that keeps NACKing what it
/// already recovered costs nothing after that).
pub const MAX_RESENDS: u8 = 3;
/// Share of the bandwidth estimate retransmissions may take, and the floor (packets/s).
pub const RTX_SHARE: f64 = 0.5;
pub const RTX_MIN_PPS: f64 = 20.0;
/// Bytes assumed per retransmitted packet, to turn the share into packets.
const RTX_PACKET_BYTES: f64 = 1100.0;
/// Retransmissions may burst this long's worth of the budget.
const RTX_BURST: Duration = Duration::from_millis(250);

/// Keeps a viewer's NACKs from turning into a retransmission storm: on a congested path every
/// loss is NACKed, every retransmission adds to the congestion, and rtc's responder would answer
/// each NACK (and each repeat of it) in full. The guard answers a sequence number at most once per
/// [`RESEND_GAP`], and retransmissions at most at [`RTX_SHARE`] of the bandwidth estimate.
pub struct NackGuard {
    bwe: crate::bwe::SharedBwe,
    /// Recent retransmissions, indexed by seq; allocated at the first NACK answered (16 KiB):
    /// a viewer on a clean path never sends one.
    resent: Option<Box<[Resent; 512]>>,
    tokens: f64,
    refilled: Option<Instant>,
    /// Sequence numbers refused (stats, tests).
    pub refused: Arc<AtomicU64>,
    /// Streams whose NACKs the responder answers (video); NACKs for others (audio: nothing is
    /// kept to resend) pass untouched and cost nothing.
    answered: std::collections::HashSet<u32>,
    /// The viewer's video is paused (audio-only fallback): its NACKs are not answered at all.
    /// The stream restarts at a keyframe, so repairs of what came before would only load the
    /// path that could not carry the video in the first place. Probes still go out.
    video_paused: Arc<AtomicBool>,
    /// The viewer's media goes out on the lean path: a probe due with this RTCP is handed to the
    /// worker (`Bwe::probe_ready`) instead of to rtc's NACK responder, which is not in the chain.
    lean: bool,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

/// (ssrc, seq, when, how often) of one retransmitted packet.
type Resent = (u32, u16, Option<Instant>, u8);

impl NackGuard {
    pub fn new(bwe: crate::bwe::SharedBwe) -> Self {
        Self {
            bwe,
            resent: None,
            tokens: RTX_MIN_PPS,
            refilled: None,
            refused: Arc::default(),
            answered: Default::default(),
            video_paused: Arc::default(),
            lean: false,
            reads: VecDeque::new(),
            writes: VecDeque::new(),
        }
    }

    /// For a session on the lean path (see `lean`).
    pub fn with_lean(mut self, lean: bool) -> Self {
        self.lean = lean;
        self
    }

    /// Share the flag that says the viewer's video is paused (see `video_paused`).
    pub fn with_video_paused(mut self, paused: Arc<AtomicBool>) -> Self {
        self.video_paused = paused;
        self
    }

    /// Whether `seq` of `ssrc` may be retransmitted now; takes a token if so.
    fn allow(&mut self, ssrc: u32, seq: u16, now: Instant, pps: f64) -> bool {
        let last = self.refilled.replace(now).unwrap_or(now);
        let burst = (pps * RTX_BURST.as_secs_f64()).max(1.0);
        self.tokens = (self.tokens + pps * now.duration_since(last).as_secs_f64()).min(burst);
        let slot = &mut self.resent.get_or_insert_with(|| Box::new([(0, 0, None, 0); 512]))[seq as usize % 512];
        let count = if slot.0 == ssrc && slot.1 == seq && slot.2.is_some() {
            if slot.3 >= MAX_RESENDS || slot.2.is_some_and(|t| now.duration_since(t) < RESEND_GAP) {
                return false;
            }
            slot.3
        } else {
            0
        };
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        *slot = (ssrc, seq, Some(now), count + 1);
        true
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for NackGuard {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        let now = msg.now;
        if let Packet::Rtcp(packets) = &mut msg.message.packet
            && packets.iter().any(|p| p.as_any().is::<TransportLayerNack>())
        {
            let estimate = self.bwe.lock().estimate();
            let pps = (estimate * RTX_SHARE / (8.0 * RTX_PACKET_BYTES)).max(RTX_MIN_PPS);
            let paused = self.video_paused.load(Ordering::Relaxed);
            let mut kept_packets: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::with_capacity(packets.len());
            for p in packets.drain(..) {
                let Some(nack) = p.as_any().downcast_ref::<TransportLayerNack>().filter(|n| self.answered.contains(&n.media_ssrc)) else {
                    kept_packets.push(p);
                    continue;
                };
                // Newest first: when the budget is short, the losses a receiver can still use win.
                let seqs: Vec<u16> = nack.nacks.iter().flat_map(|p| p.packet_list()).collect();
                crate::metrics::NACKED.fetch_add(seqs.len() as u64, Ordering::Relaxed);
                let mut kept = Vec::with_capacity(seqs.len());
                for &seq in seqs.iter().rev() {
                    if !paused && self.allow(nack.media_ssrc, seq, now, pps) {
                        kept.push(seq);
                    } else {
                        self.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::trace!(seq, ssrc = nack.media_ssrc, estimate, "nack refused");
                    }
                }
                kept.reverse();
                crate::metrics::RETRANSMITTED.fetch_add(kept.len() as u64, Ordering::Relaxed);
                if !kept.is_empty() {
                    kept_packets.push(Box::new(TransportLayerNack {
                        sender_ssrc: nack.sender_ssrc,
                        media_ssrc: nack.media_ssrc,
                        nacks: nack_pairs_from_sequence_numbers(&kept),
                    }));
                }
            }
            *packets = kept_packets;
        }
        // A probe waiting to go out: a NACK of our own for the responder, answered at once with
        // one train of RTX packets that all leave at this instant (see Subscriber::probe); on
        // the lean path the worker sends the train, right after this read.
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            let mut bwe = self.bwe.lock();
            if self.lean {
                bwe.probe_ready();
            } else if let Some((media_ssrc, seqs, target)) = bwe.take_probe_request() {
                let n = seqs.len();
                let nacks = seqs.into_iter().map(|packet_id| NackPair { packet_id, lost_packets: 0 }).collect();
                packets.push(Box::new(TransportLayerNack { sender_ssrc: 0, media_ssrc, nacks }));
                bwe.probe_sent(now, target, n);
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    crate::queued_polls!();
}

impl Interceptor for NackGuard {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if info.rtcp_feedback.iter().any(|f| f.typ == "nack" && f.parameter.is_empty()) {
            self.answered.insert(info.ssrc);
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.answered.remove(&info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_and_floods_are_refused() {
        let bwe = crate::bwe::SharedBwe::new(crate::bwe::Bwe::new(400_000.0, 50_000.0, 1e9, Instant::now()));
        let mut g = NackGuard::new(bwe);
        let t0 = Instant::now();
        let pps = 200_000.0 * RTX_SHARE / (8.0 * RTX_PACKET_BYTES); // ≈ 11 packets/s
        assert!(g.allow(1, 10, t0, pps));
        // The same packet NACKed again within the gap: not resent; after it: resent.
        assert!(!g.allow(1, 10, t0 + Duration::from_millis(50), pps));
        assert!(g.allow(1, 10, t0 + Duration::from_millis(160), pps));
        // At most MAX_RESENDS times in all.
        assert!(g.allow(1, 10, t0 + Duration::from_millis(400), pps));
        assert!(!g.allow(1, 10, t0 + Duration::from_millis(800), pps));
        // A flood of 1000 NACKed packets at once gets the burst budget, not 1000 retransmissions.
        let t1 = t0 + Duration::from_secs(2);
        let allowed = (0..1000u16).filter(|s| g.allow(1, 1000 + s, t1, pps)).count();
        assert!((1..=4).contains(&allowed), "{allowed} of 1000 allowed at once");
        // Over one more second, about the rate.
        let later = (0..1000u16).filter(|s| g.allow(1, 3000 + s, t1 + Duration::from_millis(*s as u64), pps)).count();
        assert!((8..=16).contains(&later), "{later} in a second at {pps:.1} packets/s");
    }
}
