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

/// Reads Exp-Golomb codes from an RBSP (emulation-prevention bytes already removed).
pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    pub fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    /// ue(v)
    pub fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    /// se(v)
    pub fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        Some(if k % 2 == 1 { k.div_ceil(2) as i32 } else { -((k / 2) as i32) })
    }

    pub fn position(&self) -> usize {
        self.pos
    }
}

/// Remove emulation-prevention bytes (00 00 03 → 00 00) from the first `limit` bytes.
pub fn rbsp(nal: &[u8], limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len().min(limit));
    let mut zeros = 0;
    for &b in nal.iter().take(limit) {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// The slice_type of a coded slice NAL unit (0/5 P, 1/6 B, 2/7 I, 3/8 SP, 4/9 SI).
pub fn slice_type(nal: &[u8]) -> Option<u32> {
    if !matches!(nal.first()? & 0x1f, NAL_SLICE | NAL_IDR) {
        return None;
    }
    let r = rbsp(nal.get(1..)?, 16);
    let mut br = BitReader::new(&r);
    br.ue()?; // first_mb_in_slice
    br.ue().map(|t| t % 5)
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
        assert!(crate::media::codec::h264_is_keyframe(&out[0]));
        // Inline parameter sets are not doubled; delimiters are dropped.
        let mut out = Vec::new();
        let au = packetize(&[&[0x09, 0xf0], &sps[0], &pps[0], &[0x65, 1]], &sps, &pps, MAX_PAYLOAD, &mut out);
        assert!(au.idr && !au.parameter_sets_added);
        assert_eq!(out.len(), 3);
        // A disposable (nal_ref_idc 0) slice is flagged.
        let au = packetize(&[&[0x01, 9, 9]], &sps, &pps, MAX_PAYLOAD, &mut Vec::new());
        assert!(au.disposable && !au.idr);
        assert_eq!(profile_level_id(&sps[0]).as_deref(), Some("42c01f"));
        // first_mb_in_slice 0 (1), slice_type 1 = B (010), 6 = B (00111), 0 = P (1).
        assert_eq!(slice_type(&[0x01, 0b1010_0000]), Some(1));
        assert_eq!(slice_type(&[0x01, 0b1001_1100]), Some(1));
        assert_eq!(slice_type(&[0x41, 0b1100_0000]), Some(0));
        assert_eq!(slice_type(&[0x67, 0x42]), None);
        assert_eq!(rbsp(&[0, 0, 3, 1, 0, 0, 3], 16), vec![0, 0, 1, 0, 0]);
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
