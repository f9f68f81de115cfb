//! H.264 access units (from RTMP's AVCC framing) to RTP payloads, RFC 6184 packetization
//! mode 1: a NAL unit that fits goes alone (single NAL unit packet), a larger one is cut into
//! FU-A fragments. SPS and PPS go out in front of every IDR, so a viewer joining at any
//! keyframe can decode it.

use bytes::{BufMut, Bytes, BytesMut};

/// Largest RTP payload we produce: fits a 1500-byte MTU after IP/UDP/RTP/SRTP headers and
/// the header extensions each subscriber leg adds.
pub const MAX_PAYLOAD: usize = 1150;

const NAL_SLICE: u8 = 1;
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const FU_A: u8 = 28;

/// What one access unit held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessUnit {
    pub idr: bool,
    /// SPS/PPS were inserted (the encoder did not send them in band).
    pub parameter_sets_added: bool,
    /// A slice with nal_ref_idc 0 (a disposable frame: B-frames of most encoders).
    pub disposable: bool,
}

/// Packetize one access unit. `sps`/`pps` are the latest parameter sets from the
/// configuration record. Appends payloads to `out` in order; the caller sets the marker bit
/// on the last one.
pub fn packetize(nalus: &[&[u8]], sps: &[Vec<u8>], pps: &[Vec<u8>], max: usize, out: &mut Vec<Bytes>) -> AccessUnit {
    let mut au = AccessUnit::default();
    let has = |t: u8| nalus.iter().any(|n| n[0] & 0x1f == t);
    au.idr = has(NAL_IDR);
    au.disposable = nalus.iter().any(|n| matches!(n[0] & 0x1f, NAL_SLICE) && n[0] & 0x60 == 0);
    if au.idr && !(has(NAL_SPS) && has(NAL_PPS)) {
        au.parameter_sets_added = true;
        for set in sps.iter().chain(pps) {
            push_nal(set, max, out);
        }
    }
    for nal in nalus {
        // Access unit delimiters carry nothing a WebRTC decoder needs; types 0 and 24-31 are
        // unspecified in a bitstream and would read as RTP aggregation/fragmentation headers.
        if matches!(nal[0] & 0x1f, NAL_AUD | 0 | 24..=31) {
            continue;
        }
        push_nal(nal, max, out);
    }
    au
}

fn push_nal(nal: &[u8], max: usize, out: &mut Vec<Bytes>) {
    if nal.is_empty() {
        return;
    }
    if nal.len() <= max {
        out.push(Bytes::copy_from_slice(nal));
        return;
    }
    let header = nal[0];
    let indicator = (header & 0xe0) | FU_A;
    let kind = header & 0x1f;
    let body = &nal[1..];
    let chunk = max.saturating_sub(2).max(1);
    let count = body.len().div_ceil(chunk);
    for (i, part) in body.chunks(chunk).enumerate() {
        let mut fu = kind;
        if i == 0 {
            fu |= 0x80;
        }
        if i + 1 == count {
            fu |= 0x40;
        }
        let mut b = BytesMut::with_capacity(part.len() + 2);
        b.put_u8(indicator);
        b.put_u8(fu);
        b.put_slice(part);
        out.push(b.freeze());
    }
}

/// `profile-level-id` from an SPS (profile_idc, constraint flags, level_idc).
pub fn profile_level_id(sps: &[u8]) -> Option<String> {
    let b = sps.get(1..4)?;
    Some(format!("{:02x}{:02x}{:02x}", b[0], b[1], b[2]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reassemble RTP payloads into NAL units the way a receiver does.
    fn depacketize(payloads: &[Bytes]) -> Vec<Vec<u8>> {
        let mut nals = Vec::new();
        let mut partial: Option<Vec<u8>> = None;
        for p in payloads {
            if p[0] & 0x1f == FU_A {
                if p[1] & 0x80 != 0 {
                    partial = Some(vec![(p[0] & 0xe0) | (p[1] & 0x1f)]);
                }
                if let Some(n) = partial.as_mut() {
                    n.extend_from_slice(&p[2..]);
                }
                if p[1] & 0x40 != 0 {
                    nals.extend(partial.take());
                }
            } else {
                nals.push(p.to_vec());
            }
        }
        nals
    }

    #[test]
    fn parameter_sets_precede_an_idr_without_them() {
        let sps = vec![vec![0x67, 0x42, 0xc0, 0x1f]];
        let pps = vec![vec![0x68, 0xce]];
        let idr = vec![0x65; 3000];
        let mut out = Vec::new();
        let au = packetize(&[&idr], &sps, &pps, MAX_PAYLOAD, &mut out);
        assert!(au.idr && au.parameter_sets_added);
        let nals = depacketize(&out);
        assert_eq!(nals, vec![sps[0].clone(), pps[0].clone(), idr]);
        assert!(out.iter().all(|p| p.len() <= MAX_PAYLOAD));
        assert!(crate::codec::h264_is_keyframe(&out[0]));
        // Inline parameter sets are not doubled; delimiters are dropped.
        let mut out = Vec::new();
        let au = packetize(&[&[0x09, 0xf0], &sps[0], &pps[0], &[0x65, 1]], &sps, &pps, MAX_PAYLOAD, &mut out);
        assert!(au.idr && !au.parameter_sets_added);
        assert_eq!(out.len(), 3);
        // A disposable (nal_ref_idc 0) slice is flagged.
        let au = packetize(&[&[0x01, 9, 9]], &sps, &pps, MAX_PAYLOAD, &mut Vec::new());
        assert!(au.disposable && !au.idr);
        assert_eq!(profile_level_id(&sps[0]).as_deref(), Some("42c01f"));
    }

    proptest! {
        #[test]
        fn fragments_reassemble_exactly(lens in proptest::collection::vec(1usize..5000, 1..6), max in 3usize..1400) {
            let nals: Vec<Vec<u8>> = lens.iter().enumerate().map(|(i, &n)| {
                let mut v: Vec<u8> = (0..n).map(|j| (j * 7 + i) as u8).collect();
                v[0] = 0x41; // non-IDR slice, nal_ref_idc 2
                v
            }).collect();
            let refs: Vec<&[u8]> = nals.iter().map(|n| n.as_slice()).collect();
            let mut out = Vec::new();
            packetize(&refs, &[], &[], max, &mut out);
            prop_assert!(out.iter().all(|p| p.len() <= max.max(3)));
            prop_assert_eq!(depacketize(&out), nals);
        }
    }
}
