//! Payload inspection (media/codec.rs): whether an RTP payload starts a keyframe (VP8, VP9,
//! H.264 single NAL, STAP-A, FU-A), the VP8 temporal layer, and the frame size of a VP8 key
//! frame — read once per received packet from the publisher's bytes.
//! Invariants: never panics; a VP8 frame size is only read from a keyframe and is 1..=16383 in
//! each dimension; a temporal layer id is 0..=3; audio and unknown codecs always start; the
//! answer depends only on the payload (asking twice, or through `Codec`, agrees).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu::fuzzing::{Codec, h264_is_keyframe, vp8_is_keyframe, vp8_keyframe_size, vp8_temporal, vp9_is_keyframe};

fuzz_target!(|p: &[u8]| {
    let vp8 = vp8_is_keyframe(p);
    assert_eq!(Codec::Vp8.is_keyframe_start(p), vp8);
    assert_eq!(Codec::Vp9.is_keyframe_start(p), vp9_is_keyframe(p));
    assert_eq!(Codec::H264.is_keyframe_start(p), h264_is_keyframe(p));
    assert!(Codec::Opus.is_keyframe_start(p) && Codec::Other.is_keyframe_start(p));
    if let Some((w, h)) = vp8_keyframe_size(p) {
        assert!(vp8, "a size from a packet that is not a keyframe");
        assert!((1..=0x3fff).contains(&w) && (1..=0x3fff).contains(&h));
    }
    if let Some(t) = vp8_temporal(p) {
        assert!(t.tid <= 3);
        assert_eq!(vp8_temporal(p), Some(t));
        // A packet that starts a frame is a partition-0 start, as the keyframe check reads it.
        if vp8 {
            assert!(t.frame_start);
        }
    }
    for mime in ["video/VP8", "video/vp9", "video/H264", "audio/opus"] {
        let c = Codec::from_mime(mime);
        assert_ne!(c, Codec::Other, "{mime}");
    }
});
