//! Transport-wide sequence numbers and the send history, for every packet a subscriber leg sends
//! — RTX included.
//!
//! rtc's `TwccSenderInterceptor` and `CongestionControlInterceptor` know a stream by its media
//! SSRC only, so the RTX retransmissions its NACK responder sends leave unnumbered and unrecorded:
//! invisible to feedback, and to the estimator exactly when the path is lossy. Probes are RTX
//! packets too (see `PeerSession::probe`). This interceptor takes both jobs at rtc's TWCC-sender
//! slot and knows each stream by its media and its RTX SSRC; the estimator (`bwe.rs`) gets the
//! resolved reports from rtc's own `History`.

use crate::bwe::SharedBwe;
use rtc::interceptor::{
    History, Interceptor, Packet, Slot, StreamInfo, TaggedPacket, convert_twcc,
};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtp::extension::transport_cc_extension::TransportCcExtension;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::{Marshal, MarshalSize};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Where it sits: rtc's TWCC-sender slot, wire-ward of everything that produces packets.
pub const SLOT: Slot = Slot::TwccSender;
/// The extension's URI in SDP.
pub const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
/// Packets without feedback after this long are forgotten.
const PRUNE_HORIZON: Duration = Duration::from_secs(2);

pub struct TransportCc {
    bwe: SharedBwe,
    /// SSRC (media or RTX) → the extension id negotiated for its stream.
    streams: HashMap<u32, u8>,
    next_seq: u16,
    history: History,
    last_now: Option<Instant>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl TransportCc {
    pub fn new(bwe: SharedBwe) -> Self {
        Self {
            bwe,
            streams: HashMap::new(),
            next_seq: 0,
            history: History::new(),
            last_now: None,
            reads: VecDeque::new(),
            writes: VecDeque::new(),
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
            let mut fed = false;
            for p in packets {
                if let Some(fb) = p.as_any().downcast_ref::<TransportLayerCc>() {
                    for ack in convert_twcc(fb) {
                        self.history.on_twcc_feedback(msg.now, ack);
                    }
                    fed = true;
                }
            }
            if fed {
                let reports = self.history.take_reports();
                self.bwe.lock().on_reports(msg.now, &reports);
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(p) = &mut msg.message.packet
            && let Some(&ext) = self.streams.get(&p.header.ssrc)
        {
            let seq = self.next_seq;
            self.next_seq = seq.wrapping_add(1);
            if let Ok(data) = (TransportCcExtension {
                transport_sequence: seq,
            })
            .marshal()
                && p.header.set_extension(ext, data.freeze()).is_ok()
            {
                self.history.add_outgoing(
                    p.header.ssrc,
                    p.header.sequence_number,
                    true,
                    seq,
                    p.marshal_size(),
                    msg.now,
                );
            }
            self.last_now = Some(msg.now);
        }
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.history
            .prune_before(now.checked_sub(PRUNE_HORIZON).unwrap_or(now));
        self.last_now = Some(now);
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        // Prune while packets are outstanding; idle otherwise.
        if self.history.is_empty() {
            None
        } else {
            self.last_now.map(|t| t + Duration::from_millis(500))
        }
    }
}

impl Interceptor for TransportCc {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let Some(ext) = info
            .rtp_header_extensions
            .iter()
            .find(|e| e.uri == TRANSPORT_CC_URI)
            .map(|e| e.id as u8)
        else {
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
