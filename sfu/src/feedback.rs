//! The interceptor that lets what the SFU needs out of the interceptor chain.
//!
//! `rtc`'s interceptor chain ends inbound RTCP before the application unless an interceptor marks
//! a packet `DeliverToApplication`. The SFU must see PLI and FIR from viewers to relay them to the
//! publisher; receiver reports and NACKs stay inside the chain (the NACK responder answers those
//! from its packet cache). On a subscriber connection it also reads the bandwidth estimate that
//! the congestion controller (GCC over TWCC feedback) attaches to the feedback it consumed, and
//! publishes it through a shared atomic the worker reads.

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Position in the chain: application-most, like rtc's own `rtcp-processing` example.
pub const KEYFRAME_FEEDBACK_SLOT: usize = 14_000;

#[derive(Default)]
pub struct KeyframeFeedback {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
    /// Where the latest target bitrate (bits/s) goes, if anyone listens.
    estimate: Option<Arc<AtomicU64>>,
    /// Transport-wide congestion control feedback packets seen (diagnostics).
    twcc_feedback: Option<Arc<AtomicU64>>,
}

impl KeyframeFeedback {
    /// Also publish the congestion controller's estimate into `estimate`, and count the TWCC
    /// feedback packets that fed it into `twcc_feedback`.
    pub fn with_estimate(estimate: Arc<AtomicU64>, twcc_feedback: Arc<AtomicU64>) -> Self {
        Self { estimate: Some(estimate), twcc_feedback: Some(twcc_feedback), ..Self::default() }
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
        if let Some(estimate) = &self.estimate
            && let Some(Attribute::TargetBitrateChanged { bits_per_second }) =
                msg.message.get(&Attribute::TargetBitrateChanged { bits_per_second: 0.0 })
        {
            estimate.store(bits_per_second.max(0.0) as u64, Ordering::Relaxed);
        }
        if let (Some(count), Packet::Rtcp(packets)) = (&self.twcc_feedback, &msg.message.packet) {
            let n = packets.iter().filter(|p| p.as_any().is::<TransportLayerCc>()).count();
            if n > 0 {
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        if let Packet::Rtcp(packets) = &msg.message.packet
            && asks_for_keyframe(packets)
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl Interceptor for KeyframeFeedback {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
