//! Transport: framing and limits of the two doors into the server, no features.

pub mod rtmp_guard;
pub mod websocket;
