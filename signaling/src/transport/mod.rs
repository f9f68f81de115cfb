//! Transport: framing and limits of the two doors into the server, and nothing of what the
//! messages mean.
//!
//! - [`websocket`]: the upgrade, frame size caps, close codes, and a close that reaches the client.
//! - [`limits`]: a WebSocket connection's message rate, misbehaviour counts and idle watch.
//! - [`rtmp_guard`]: RTMP chunk framing checked against our limits before the parser sees it.

pub mod limits;
pub mod rtmp_guard;
pub mod websocket;
