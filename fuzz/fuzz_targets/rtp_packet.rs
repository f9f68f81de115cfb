//! An RTP packet on its way through the SFU: rtc parses it (after SRTP), the worker strips the
//! publisher's extensions and CSRCs (worker/pump.rs), `MediaPacket::inspect` reads the payload
//! (keyframe, VP8 frame size and temporal layer), and each subscriber leg rewrites SSRC,
//! sequence number, timestamp and payload type and adds its transport-wide sequence number
//! (session/subscriber.rs, bwe/twcc.rs) before rtc marshals it again.
//! Invariants: never panics; the rewritten packet marshals, and parses back to the same header
//! fields, extension and payload (rewrite then parse round trip).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rtc::rtp::extension::transport_cc_extension::TransportCcExtension;
use rtc::shared::marshal::{Marshal, Unmarshal};
use sfu::fuzzing::Codec;
use sfu::{MediaPacket, TrackId};
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    // [codec][transport-cc extension id][ssrc, seq, ts, pt of the leg (11 bytes)][RTP packet]
    let [codec, ext_id, leg @ ..] = data else { return };
    let Some((leg, wire)) = leg.split_at_checked(11) else { return };
    let codec = [Codec::Vp8, Codec::H264, Codec::Vp9, Codec::Opus, Codec::Other][*codec as usize % 5];
    let mut buf = wire;
    let Ok(mut packet) = rtc::rtp::Packet::unmarshal(&mut buf) else { return };

    // What the worker does to every received packet (worker/pump.rs).
    packet.header.extension = false;
    packet.header.extensions.clear();
    packet.header.extension_profile = 0;
    packet.header.extensions_padding = 0;
    packet.header.csrc.clear();
    let pkt = MediaPacket::inspect(TrackId(1), 0, codec, packet.header, packet.payload, Instant::now());
    if let Some(h) = pkt.frame_height {
        assert!(pkt.keyframe && h > 0 && h <= 0x3fff);
    }
    if let Some(t) = pkt.temporal {
        assert!(t.tid <= 3);
    }

    // What a subscriber leg does to it.
    let mut header = pkt.header.clone();
    header.ssrc = u32::from_be_bytes([leg[0], leg[1], leg[2], leg[3]]);
    header.sequence_number = u16::from_be_bytes([leg[4], leg[5]]);
    header.timestamp = u32::from_be_bytes([leg[6], leg[7], leg[8], leg[9]]);
    header.payload_type = leg[10] & 0x7f;
    let id = 1 + ext_id % 14;
    let transport_seq = header.sequence_number ^ 0x5555;
    let Ok(ext) = (TransportCcExtension { transport_sequence: transport_seq }).marshal() else { return };
    header.set_extension(id, ext.freeze()).expect("a one-byte extension on a clean header");
    let out = rtc::rtp::Packet { header, payload: pkt.payload.clone() };
    let bytes = out.marshal().expect("a rewritten packet marshals");

    // What the viewer parses.
    let back = rtc::rtp::Packet::unmarshal(&mut &bytes[..]).expect("the rewritten packet parses");
    assert_eq!(back.header.ssrc, out.header.ssrc);
    assert_eq!(back.header.sequence_number, out.header.sequence_number);
    assert_eq!(back.header.timestamp, out.header.timestamp);
    assert_eq!(back.header.payload_type, out.header.payload_type);
    assert_eq!(back.header.marker, out.header.marker);
    assert_eq!(back.payload, out.payload, "the payload arrives as it was received");
    let got = back.header.get_extension(id).map(|mut b: Bytes| TransportCcExtension::unmarshal(&mut b).map(|e| e.transport_sequence));
    assert!(matches!(got, Some(Ok(s)) if s == transport_seq), "transport-cc number lost: {got:?}");
});
