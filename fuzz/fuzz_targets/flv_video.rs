//! A studio feed's video, as the RTMP bridge reads it (sfu/src/ingest/mod.rs `Bridge::on_video`):
//! each RTMP video message is an FLV video tag body (`flv::parse_video`); a configuration
//! record (`flv::parse_avc_config`) gives the NAL length size and SPS/PPS; frames are split
//! into NAL units (`flv::split_nalus`), B-frames are told by `h264::slice_type`, and access
//! units are packetized to RTP payloads (`h264::packetize`, RFC 6184 mode 1).
//! Input: RTMP video message bodies, each `[length: u16][body]`.
//! Invariants: never panics; every payload fits `MAX_PAYLOAD` and is a single NAL unit (types
//! 1-23) or an FU-A fragment; depacketizing the payloads gives back exactly the NAL units sent
//! (parameter sets first when added in front of an IDR); a parsed configuration has SPS and PPS
//! of 1..=1024 bytes and a length size of 1, 2 or 4.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sfu::ingest::flv::{self, AvcConfig, VideoTag};
use sfu::ingest::h264::{self, MAX_PAYLOAD};

/// RFC 6184 depacketization of single NAL unit and FU-A payloads.
fn depacketize(payloads: &[Bytes]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut fu: Option<Vec<u8>> = None;
    for p in payloads {
        let kind = p[0] & 0x1f;
        match kind {
            1..=23 => {
                assert!(fu.is_none(), "a single NAL unit inside an FU-A run");
                out.push(p.to_vec());
            }
            28 => {
                let h = *p.get(1).expect("an FU-A has its FU header");
                let (start, end) = (h & 0x80 != 0, h & 0x40 != 0);
                if start {
                    assert!(fu.is_none(), "an FU-A starts inside another");
                    fu = Some(vec![(p[0] & 0xe0) | (h & 0x1f)]);
                }
                let nal = fu.as_mut().expect("an FU-A continues a run that never started");
                nal.extend_from_slice(&p[2..]);
                if end {
                    out.extend(fu.take());
                }
            }
            _ => panic!("payload of NAL type {kind} is neither a NAL unit nor FU-A"),
        }
    }
    assert!(fu.is_none(), "an FU-A run without its end");
    out
}

fuzz_target!(|data: &[u8]| {
    let mut avc: Option<AvcConfig> = None;
    let mut payloads = Vec::new();
    let mut rest = data;
    while let [l0, l1, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*l0, *l1])).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        let Ok(tag) = flv::parse_video(body) else { continue };
        let data = match tag {
            VideoTag::Ignore => continue,
            VideoTag::AvcConfig(rec) => {
                if let Ok(c) = flv::parse_avc_config(rec) {
                    assert!(matches!(c.nal_length_size, 1 | 2 | 4));
                    assert!(!c.sps.is_empty() && !c.pps.is_empty());
                    assert!(c.sps.iter().chain(&c.pps).all(|s| (1..=1024).contains(&s.len())));
                    let _ = h264::profile_level_id(&c.sps[0]);
                    avc = Some(c);
                }
                continue;
            }
            VideoTag::AvcNalus { data, .. } => data,
        };
        let Some(c) = &avc else { continue };
        let Ok(nalus) = flv::split_nalus(data, c.nal_length_size) else { continue };
        assert!(nalus.iter().all(|n| !n.is_empty()), "split_nalus never yields an empty NAL unit");
        if nalus.is_empty() || nalus.iter().any(|n| h264::slice_type(n) == Some(1)) {
            continue;
        }
        payloads.clear();
        let au = h264::packetize(&nalus, &c.sps, &c.pps, MAX_PAYLOAD, &mut payloads);
        assert!(payloads.iter().all(|p| !p.is_empty() && p.len() <= MAX_PAYLOAD));
        // What went in, in order: parameter sets in front of an IDR that lacks them, then the
        // NAL units a decoder needs.
        let mut expected: Vec<Vec<u8>> = Vec::new();
        if au.parameter_sets_added {
            expected.extend(c.sps.iter().chain(&c.pps).cloned());
        }
        expected.extend(nalus.iter().filter(|n| !matches!(n[0] & 0x1f, 0 | 9 | 24..=31)).map(|n| n.to_vec()));
        assert_eq!(depacketize(&payloads), expected, "depacketizing gives back the access unit");
        let _ = payloads.iter().map(|p| sfu::fuzzing::h264_is_keyframe(p)).count();
    }
});
