//! Stable error codes sent to clients, and the error type of the signaling layer.

use serde::{Deserialize, Serialize};

/// Every error a client can receive. The string form is part of the protocol: never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No token in the join message or the URL.
    TokenMissing,
    /// Not a JWT (wrong segment count, bad base64 or JSON, too long).
    TokenMalformed,
    /// The signature does not verify with the configured secret.
    TokenBadSignature,
    /// `alg` is `none` or not the configured algorithm.
    TokenAlgorithm,
    /// `exp` has passed.
    TokenExpired,
    /// `nbf` is in the future.
    TokenNotYetValid,
    /// The token is for another room than the one asked for.
    TokenWrongRoom,
    /// `role` is not host, cohost, moderator or viewer.
    TokenInvalidRole,
    /// A claim is missing, empty or too long (identity, room, name, exp).
    TokenInvalidClaims,
    /// The frame is not a valid protocol message (bad JSON, unknown type, binary frame).
    BadMessage,
    /// The client speaks a protocol version this server does not.
    UnsupportedVersion,
    /// The message is larger than the configured limit.
    MessageTooLarge,
    /// Too many messages per second.
    RateLimited,
    /// The first message must be `join`.
    NotJoined,
    /// `join` was sent twice.
    AlreadyJoined,
    /// The participant's role does not allow this.
    NotAllowed,
    /// All co-host seats (4 publishers) are taken.
    StageFull,
    /// The host has not started the room yet.
    RoomNotLive,
    /// The room has ended.
    RoomEnded,
    /// The room holds as many participants as configured.
    RoomFull,
    /// The SDP offer or answer was rejected.
    BadSdp,
    /// The ICE candidate was rejected.
    BadCandidate,
    /// No such track or session.
    NotFound,
    /// The server is overloaded; retry later.
    ServerBusy,
    /// Something went wrong on our side; details are in the server log.
    Internal,
}

/// An error with its code and the sentence the client sees.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct SignalError {
    pub code: ErrorCode,
    pub message: String,
}

impl SignalError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl From<sfu::SfuError> for SignalError {
    fn from(e: sfu::SfuError) -> Self {
        use sfu::SfuError::*;
        let code = match &e {
            BadSdp(_) => ErrorCode::BadSdp,
            BadCandidate(_) => ErrorCode::BadCandidate,
            NoSession => ErrorCode::NotFound,
            Busy | Limit(_) => ErrorCode::ServerBusy,
            Stopped | Startup(_) => ErrorCode::Internal,
        };
        Self::new(code, e.to_string())
    }
}
