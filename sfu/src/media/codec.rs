//! Payload inspection the router needs: is this RTP packet the start of a keyframe?
//! Every function is total over arbitrary bytes.

/// The codecs the SFU forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Opus,
    Vp8,
    Vp9,
    H264,
    Other,
}

impl Codec {
    /// From an SDP MIME type such as `video/VP8`.
    pub fn from_mime(mime: &str) -> Self {
        let sub = mime.rsplit('/').next().unwrap_or("");
        match sub.to_ascii_lowercase().as_str() {
            "opus" => Codec::Opus,
            "vp8" => Codec::Vp8,
            "vp9" => Codec::Vp9,
            "h264" => Codec::H264,
            _ => Codec::Other,
        }
    }

    /// Whether a new subscriber can start on this packet.
    pub fn is_keyframe_start(self, payload: &[u8]) -> bool {
        match self {
            Codec::Vp8 => vp8_is_keyframe(payload),
            Codec::Vp9 => vp9_is_keyframe(payload),
            Codec::H264 => h264_is_keyframe(payload),
            Codec::Opus | Codec::Other => true,
        }
    }
}

/// RFC 7741: payload descriptor, then (at partition start) the VP8 frame header whose
/// lowest bit is 0 for a key frame.
pub fn vp8_is_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let start_of_partition = b0 & 0x10 != 0;
    let partition_id = b0 & 0x07;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut at = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(at) else { return false };
        at += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            let Some(&pid) = p.get(at) else { return false };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    p.get(at).is_some_and(|h| h & 0x01 == 0)
}

/// What a VP8 payload descriptor says about temporal scalability (RFC 7741 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vp8Temporal {
    /// Temporal layer index (TID), 0 = base.
    pub tid: u8,
    /// The packet starts a frame (S bit set, partition 0).
    pub frame_start: bool,
}

/// The temporal layer of a VP8 packet, when its descriptor carries one (the T bit).
pub fn vp8_temporal(p: &[u8]) -> Option<Vp8Temporal> {
    let &b0 = p.first()?;
    if b0 & 0x80 == 0 {
        return None;
    }
    let x = *p.get(1)?;
    if x & 0x20 == 0 {
        return None;
    }
    let mut at = 2;
    if x & 0x80 != 0 {
        at += if p.get(at)? & 0x80 != 0 { 2 } else { 1 };
    }
    if x & 0x40 != 0 {
        at += 1;
    }
    let t = *p.get(at)?;
    Some(Vp8Temporal { tid: t >> 6, frame_start: b0 & 0x10 != 0 && b0 & 0x07 == 0 })
}

/// The frame size in a VP8 key frame's first packet (RFC 6386 §9.1: after the 3-byte frame tag,
/// the start code 9d 01 2a, then 14-bit width and height, little-endian).
pub fn vp8_keyframe_size(p: &[u8]) -> Option<(u16, u16)> {
    if !vp8_is_keyframe(p) {
        return None;
    }
    let b0 = *p.first()?;
    let mut at = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(at)?;
        at += 1;
        if x & 0x80 != 0 {
            at += if p.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1;
        }
        if x & 0x30 != 0 {
            at += 1;
        }
    }
    let h = p.get(at..at + 10)?;
    if h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([h[6], h[7]]) & 0x3fff;
    let ht = u16::from_le_bytes([h[8], h[9]]) & 0x3fff;
    (w > 0 && ht > 0).then_some((w, ht))
}

/// draft-ietf-payload-vp9: P (inter-picture) bit clear and B (start of frame) set, in the
/// lowest spatial layer.
pub fn vp9_is_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let inter_picture = b0 & 0x40 != 0;
    let begins_frame = b0 & 0x08 != 0;
    !inter_picture && begins_frame
}

/// RFC 6184: an IDR slice or SPS, alone, inside a STAP-A, or at the start of an FU-A.
pub fn h264_is_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        5 | 7 => true,
        24 => {
            let mut at = 1;
            while at + 2 < p.len() {
                let size = u16::from_be_bytes([p[at], p[at + 1]]) as usize;
                let Some(&nal) = p.get(at + 2) else { return false };
                if matches!(nal & 0x1f, 5 | 7) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        28 => p.get(1).is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == 5),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8() {
        assert!(vp8_is_keyframe(&[0x10, 0x00]));
        assert!(!vp8_is_keyframe(&[0x10, 0x01]));
        assert!(!vp8_is_keyframe(&[0x00, 0x00])); // not a partition start
        // X, I with 15-bit picture id, then keyframe header.
        assert!(vp8_is_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x00]));
        assert!(!vp8_is_keyframe(&[0x90, 0x80, 0x81]));
        assert!(!vp8_is_keyframe(&[]));
    }

    #[test]
    fn vp8_temporal_layer() {
        // X; I (7-bit picture id), L (TL0PICIDX), T: TID 2, Y; start of partition 0.
        assert_eq!(vp8_temporal(&[0x90, 0xe0, 0x05, 0x11, 0xa0, 0x00]), Some(Vp8Temporal { tid: 2, frame_start: true }));
        // 15-bit picture id, no L; TID 1; a continuation packet.
        assert_eq!(vp8_temporal(&[0x80, 0xa0, 0x81, 0x23, 0x40, 0x00]), Some(Vp8Temporal { tid: 1, frame_start: false }));
        // No T bit, no X bit, truncated.
        assert_eq!(vp8_temporal(&[0x90, 0x80, 0x05, 0x00]), None);
        assert_eq!(vp8_temporal(&[0x10, 0x00]), None);
        assert_eq!(vp8_temporal(&[0x90, 0xe0, 0x05]), None);
    }

    #[test]
    fn vp8_size() {
        // Descriptor 0x10, frame tag (key frame), start code, 1280 x 720.
        let p = [0x10, 0x50, 0x2d, 0x01, 0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02, 0xaa];
        assert_eq!(vp8_keyframe_size(&p), Some((1280, 720)));
        assert_eq!(vp8_keyframe_size(&p[..9]), None);
        let mut bad = p;
        bad[5] = 0;
        assert_eq!(vp8_keyframe_size(&bad), None);
    }

    #[test]
    fn h264() {
        assert!(h264_is_keyframe(&[0x65, 0]));
        assert!(h264_is_keyframe(&[0x67, 0]));
        assert!(!h264_is_keyframe(&[0x41, 0]));
        assert!(h264_is_keyframe(&[0x78, 0, 2, 0x67, 0x42]));
        assert!(!h264_is_keyframe(&[0x78, 0, 2, 0x41, 0x42]));
        assert!(h264_is_keyframe(&[0x7c, 0x85]));
        assert!(!h264_is_keyframe(&[0x7c, 0x05]));
        assert!(!h264_is_keyframe(&[0x78, 0xff]));
    }

    #[test]
    fn total_on_random_input() {
        use rand::Rng;
        let mut rng = rand::rng();
        for _ in 0..20_000 {
            let n = rng.random_range(0..12);
            let v: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            for c in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Opus] {
                let _ = c.is_keyframe_start(&v);
            }
            let _ = vp8_keyframe_size(&v);
            let _ = vp8_temporal(&v);
        }
    }
}
