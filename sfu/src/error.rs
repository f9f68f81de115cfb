//! Errors of the media plane. Callers (signaling) map them to stable client error codes.

use thiserror::Error;

/// What can go wrong when signaling asks the SFU to do something.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SfuError {
    /// The SDP could not be parsed or applied (bad offer/answer, wrong state).
    #[error("session description rejected: {0}")]
    BadSdp(String),
    /// An ICE candidate could not be parsed or added.
    #[error("ICE candidate rejected: {0}")]
    BadCandidate(String),
    /// The participant has no session of that kind (never published, or already gone).
    #[error("no such session")]
    NoSession,
    /// A worker's command queue is full; try again later.
    #[error("media plane busy")]
    Busy,
    /// The media plane is shutting down.
    #[error("media plane stopped")]
    Stopped,
    /// A limit was reached (too many tracks, too many sessions).
    #[error("limit reached: {0}")]
    Limit(&'static str),
    /// Binding the UDP port or building the DTLS certificate failed at start-up.
    #[error("media plane failed to start: {0}")]
    Startup(String),
}
