//! Media payloads: what the SFU reads inside RTP (codec headers, keyframes, temporal layers).

pub mod codec;
pub mod packet;
pub mod simulcast;
