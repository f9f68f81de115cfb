//! The packet the router shares between workers, and what it learns from the payload once at
//! ingest (so each forwarder does not parse it again).

use crate::ids::TrackId;
use crate::media::codec::{self, Codec};
use bytes::Bytes;
use std::time::Instant;

/// One received RTP packet, shared (`Arc`) by every worker that forwards it. Header extensions
/// and CSRCs are stripped at ingest: their ids are negotiated per leg, so each subscriber leg
/// adds its own, and an empty header clones without allocating.
#[derive(Debug)]
pub struct MediaPacket {
    pub track: TrackId,
    /// Simulcast layer (0 = lowest; 0 for a track without simulcast).
    pub layer: u8,
    pub header: rtc::rtp::header::Header,
    pub payload: Bytes,
    pub keyframe: bool,
    /// Frame height, when this packet starts a key frame that says it (VP8).
    pub frame_height: Option<u16>,
    /// The VP8 temporal layer, when the payload descriptor carries one.
    pub temporal: Option<codec::Vp8Temporal>,
    /// When the packet arrived (for forwarding-delay metrics).
    pub received: Instant,
}

impl MediaPacket {
    /// A received packet of `layer` of `track`, with the keyframe flag, the frame height of a
    /// VP8 keyframe and the VP8 temporal layer read from its payload.
    pub fn inspect(track: TrackId, layer: u8, codec: Codec, header: rtc::rtp::header::Header, payload: Bytes, received: Instant) -> Self {
        let keyframe = codec.is_keyframe_start(&payload);
        let vp8 = codec == Codec::Vp8;
        let frame_height = if keyframe && vp8 { codec::vp8_keyframe_size(&payload).map(|(_, h)| h) } else { None };
        let temporal = if vp8 { codec::vp8_temporal(&payload) } else { None };
        MediaPacket { track, layer, header, payload, keyframe, frame_height, temporal, received }
    }
}
