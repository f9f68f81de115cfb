//! The RTCP a viewer sends us, as the SFU reads it: rtc parses the compound packet (after
//! SRTCP), then our interceptors take what they need — PLI/FIR become keyframe requests and REMB
//! an estimate (session/feedback.rs `KeyframeFeedback`), NACKs pass the retransmission guard
//! (`NackGuard`), transport-wide feedback resolves the send history (bwe/twcc.rs `TransportCc`)
//! into the bandwidth estimator.
//! Invariants: never panics; the guard only ever lets through sequence numbers the viewer asked
//! for, for the stream it named; the estimate stays a finite, positive number within its bounds;
//! the packet is delivered to the application exactly when PLI or FIR was there, or a NACK the
//! guard let through (the lean send path answers those in the worker).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtc::interceptor::{Attribute, AttributedPacket, Interceptor, Packet, RTCPFeedback, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use sfu::fuzzing::{Bwe, KeyframeFeedback, NackGuard, SharedBwe, SharedTwcc, TransportCc};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

const MIN_BPS: f64 = 50_000.0;
const MAX_BPS: f64 = 50_000_000.0;

fn tagged(now: Instant, packets: Vec<Box<dyn rtc::rtcp::Packet>>) -> TaggedPacket {
    TaggedPacket { now, transport: TransportContext::default(), message: AttributedPacket::new(Packet::Rtcp(packets)) }
}

fn nacks(p: &Packet) -> HashMap<u32, HashSet<u16>> {
    let mut out: HashMap<u32, HashSet<u16>> = HashMap::new();
    if let Packet::Rtcp(packets) = p {
        for n in packets.iter().filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>()) {
            out.entry(n.media_ssrc).or_default().extend(n.nacks.iter().flat_map(|p| p.packet_list()));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let bwe = SharedBwe::new(Bwe::new(1_000_000.0, MIN_BPS, MAX_BPS, t0));
    let mut keyframes = KeyframeFeedback::with_estimator(bwe.clone(), Arc::new(AtomicU64::new(0)));
    let mut guard = NackGuard::new(bwe.clone());
    let log = SharedTwcc::default();
    let mut cc = TransportCc::new(bwe.clone(), log.clone());
    // Streams the guard answers: SSRCs 1 and 2 (video, NACK negotiated).
    for ssrc in [1, 2] {
        let nack = RTCPFeedback { typ: "nack".into(), parameter: String::new() };
        guard.bind_local_stream(&StreamInfo { ssrc, rtcp_feedback: vec![nack], ..Default::default() });
    }
    // A send history the feedback can name: transport numbers 0..200, 1 ms apart.
    for seq in 0..200u16 {
        log.lock().record(seq, 1000 + usize::from(seq), t0 + Duration::from_millis(u64::from(seq)));
    }
    // Datagrams: [milliseconds since the last][length (2 bytes)][compound RTCP], repeated.
    let mut now = t0 + Duration::from_millis(200);
    let mut rest = data;
    while let [dt, l0, l1, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*l0, *l1])).min(tail.len());
        let (datagram, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(*dt));
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &datagram[..]) else { continue };
        let wants_keyframe = packets.iter().any(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>());

        // Wire-ward first: the guard, then TWCC, then the keyframe interceptor (slot order).
        let asked = nacks(&Packet::Rtcp(packets.iter().map(|p| p.cloned()).collect()));
        guard.handle_read(tagged(now, packets)).expect("the guard takes any RTCP");
        let msg = guard.poll_read().expect("the guard passes the packet on");
        let passed = nacks(&msg.message.packet);
        for (ssrc, seqs) in &passed {
            let wanted = asked.get(ssrc).cloned().unwrap_or_default();
            assert!(seqs.is_subset(&wanted), "the guard let through numbers nobody asked for: {seqs:?} of {wanted:?}");
        }
        cc.handle_read(msg).expect("TWCC takes any RTCP");
        let msg = cc.poll_read().expect("TWCC passes the packet on");
        // On a viewer's connection NACKs the guard let through go to the worker too (the lean
        // send path answers them), as keyframe requests do.
        let has_nack = matches!(&msg.message.packet, Packet::Rtcp(p) if p.iter().any(|p| p.as_any().is::<TransportLayerNack>()));
        keyframes.handle_read(msg).expect("the keyframe interceptor takes any RTCP");
        let msg = keyframes.poll_read().expect("the keyframe interceptor passes the packet on");
        assert_eq!(msg.message.has(&Attribute::DeliverToApplication), wants_keyframe || has_nack);

        let estimate = bwe.lock().estimate();
        assert!(estimate.is_finite() && (MIN_BPS..=MAX_BPS).contains(&estimate), "estimate {estimate}");
    }
});
