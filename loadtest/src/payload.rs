//! Synthetic media. Every RTP payload carries a 16-byte stamp — which layer, key frame or not,
//! when it was sent, a counter — right after the codec's own header, so a viewer measures delay
//! and layers by reading 16 bytes in place, without copying or decoding.
//!
//! Video payloads are VP8-shaped (RFC 7741 descriptor, frame tag, and on key frames the start
//! code and frame size), so the SFU's key-frame and size detection work on them as on a browser's.

use bytes::{BufMut, Bytes, BytesMut};
use std::sync::OnceLock;
use std::time::Instant;

const MAGIC: [u8; 2] = *b"OL";
pub const STAMP_LEN: usize = 16;

/// Microseconds since the process's media epoch (publisher and viewers share it).
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub layer: u8,
    pub keyframe: bool,
    pub sent_us: u64,
    pub counter: u32,
}

fn put_stamp(b: &mut BytesMut, s: &Stamp) {
    b.put_slice(&MAGIC);
    b.put_u8(s.layer);
    b.put_u8(u8::from(s.keyframe));
    b.put_u64_le(s.sent_us);
    b.put_u32_le(s.counter);
}

fn read_stamp(p: &[u8]) -> Option<Stamp> {
    let s = p.get(..STAMP_LEN)?;
    if s[..2] != MAGIC {
        return None;
    }
    Some(Stamp {
        layer: s[2],
        keyframe: s[3] != 0,
        sent_us: u64::from_le_bytes(s[4..12].try_into().ok()?),
        counter: u32::from_le_bytes(s[12..16].try_into().ok()?),
    })
}

/// One VP8-shaped packet of a frame: the first carries the frame tag (and on key frames the
/// start code and the frame size). `size` is the payload size wanted (at least the headers).
pub fn video(first: bool, stamp: &Stamp, height: u16, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(32));
    b.put_u8(if first { 0x10 } else { 0x00 });
    if first && stamp.keyframe {
        let w = height * 16 / 9;
        b.put_slice(&[0x50, 0x2d, 0x01, 0x9d, 0x01, 0x2a]);
        b.put_u16_le(w);
        b.put_u16_le(height);
    } else if first {
        b.put_slice(&[0x51, 0x2d, 0x01]);
    }
    put_stamp(&mut b, stamp);
    if b.len() < size {
        b.resize(size, 0xab);
    }
    b.freeze()
}

pub fn audio(stamp: &Stamp, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(STAMP_LEN));
    put_stamp(&mut b, stamp);
    if b.len() < size {
        b.resize(size, 0x55);
    }
    b.freeze()
}

/// The stamp of a received payload (video: after the VP8 descriptor and frame header).
pub fn parse(video: bool, p: &[u8]) -> Option<Stamp> {
    if !video {
        return read_stamp(p);
    }
    let first = *p.first()? & 0x10 != 0;
    let at = if !first {
        1
    } else if p.get(1)? & 0x01 == 0 {
        11
    } else {
        4
    };
    read_stamp(p.get(at..)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_the_sfu_sees_key_frames() {
        let s = Stamp { layer: 2, keyframe: true, sent_us: 123_456_789, counter: 42 };
        let key = video(true, &s, 720, 1100);
        assert_eq!(key.len(), 1100);
        assert_eq!(parse(true, &key), Some(s));
        assert!(sfu::client::vp8_is_keyframe(&key));
        assert_eq!(sfu::client::vp8_keyframe_size(&key), Some((1280, 720)));
        let delta = Stamp { keyframe: false, ..s };
        let p = video(true, &delta, 720, 900);
        assert!(!sfu::client::vp8_is_keyframe(&p));
        assert_eq!(parse(true, &p), Some(delta));
        let cont = video(false, &delta, 720, 900);
        assert_eq!(parse(true, &cont), Some(delta));
        assert_eq!(parse(false, &audio(&s, 100)), Some(s));
        assert_eq!(parse(true, &[0x10, 0x50]), None);
        assert_eq!(parse(false, b"garbage that is long enough"), None);
    }
}
