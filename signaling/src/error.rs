//! The one error type of the signaling layer: [`AppError`], a stable machine code
//! ([`ErrorCode`], whose [`ErrorCode::as_str`] is the wire form) and the sentence a client may see.
//! What a client may not see (paths, I/O errors) goes in `detail`, which only the log shows.
//! `anyhow` is left to start-up (config, binding, the binary).

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
    /// A stream key that is unknown, mistyped, from another server, or revoked (RTMP publish;
    /// never sent over the WebSocket).
    BadStreamKey,
    /// The stream key is already streaming (RTMP publish; never sent over the WebSocket).
    StreamKeyInUse,
    /// The comment is empty, or has control or direction-changing characters, or stacked accents.
    BadComment,
    /// The comment is longer than `chat.max_comment_chars` characters.
    CommentTooLong,
    /// A moderator turned comments off.
    CommentsOff,
    /// Slow mode: wait `retry_after_ms` before the next comment.
    SlowMode,
    /// A moderator timed you out: no comments until `retry_after_ms` has passed.
    TimedOut,
    /// Banned from this live: kicked, and refused on every rejoin.
    Banned,
    /// A webhook's signature does not verify (HTTP API only).
    BadSignature,
    /// A webhook's signed timestamp is too far from the server's clock (HTTP API only).
    StaleTimestamp,
    /// The request contradicts what is stored (a payment id reused for another payment).
    Conflict,
    /// No such badge tier.
    UnknownTier,
    /// A URL that is not http(s), or malformed.
    BadUrl,
    /// An upload that is not a PNG, JPEG, WebP or GIF image, or too large.
    BadImage,
    /// The server is not configured for this (the payment webhook without a secret).
    NotConfigured,
    /// A scheduled start in the past, or further ahead than `schedule.max_days_ahead`.
    BadTime,
    /// The node is draining (shutting down): it takes no new participants; try another node
    /// or later. Sent at join, with close code 1012.
    Draining,
    /// Many nodes: the room's live runs on another node, and this door cannot send the client
    /// there (an RTMP encoder): the message names the node.
    WrongNode,
}

impl ErrorCode {
    /// The code as clients see it (the same string serde writes).
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            TokenMissing => "token_missing",
            TokenMalformed => "token_malformed",
            TokenBadSignature => "token_bad_signature",
            TokenAlgorithm => "token_algorithm",
            TokenExpired => "token_expired",
            TokenNotYetValid => "token_not_yet_valid",
            TokenWrongRoom => "token_wrong_room",
            TokenInvalidRole => "token_invalid_role",
            TokenInvalidClaims => "token_invalid_claims",
            BadMessage => "bad_message",
            UnsupportedVersion => "unsupported_version",
            MessageTooLarge => "message_too_large",
            RateLimited => "rate_limited",
            NotJoined => "not_joined",
            AlreadyJoined => "already_joined",
            NotAllowed => "not_allowed",
            StageFull => "stage_full",
            RoomNotLive => "room_not_live",
            RoomEnded => "room_ended",
            RoomFull => "room_full",
            BadSdp => "bad_sdp",
            BadCandidate => "bad_candidate",
            NotFound => "not_found",
            ServerBusy => "server_busy",
            Internal => "internal",
            BadStreamKey => "bad_stream_key",
            StreamKeyInUse => "stream_key_in_use",
            BadComment => "bad_comment",
            CommentTooLong => "comment_too_long",
            CommentsOff => "comments_off",
            SlowMode => "slow_mode",
            TimedOut => "timed_out",
            Banned => "banned",
            BadSignature => "bad_signature",
            StaleTimestamp => "stale_timestamp",
            Conflict => "conflict",
            UnknownTier => "unknown_tier",
            BadUrl => "bad_url",
            BadImage => "bad_image",
            NotConfigured => "not_configured",
            BadTime => "bad_time",
            Draining => "draining",
            WrongNode => "wrong_node",
        }
    }
}

impl ErrorCode {
    /// The HTTP status of this refusal in the server API (docs/api.md).
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            TokenMissing | TokenMalformed | TokenBadSignature | TokenAlgorithm | TokenExpired | TokenNotYetValid | TokenInvalidClaims
            | TokenInvalidRole | BadSignature | StaleTimestamp => 401,
            NotAllowed | TokenWrongRoom | Banned => 403,
            NotFound | RoomNotLive => 404,
            Conflict | RoomEnded | StageFull | StreamKeyInUse | WrongNode => 409,
            MessageTooLarge => 413,
            UnknownTier | BadUrl | BadImage | BadComment | CommentTooLong | BadTime => 422,
            RateLimited | SlowMode | TimedOut => 429,
            Internal => 500,
            ServerBusy | RoomFull | NotConfigured | Draining => 503,
            _ => 400,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal or failure: its code, the sentence the client sees, and what only the log sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppError {
    pub code: ErrorCode,
    /// For the client: says what to do, never names internals.
    pub message: String,
    /// For the log only (an I/O error, a path): never sent to a client.
    pub detail: Option<String>,
    /// When the same request can succeed again (rate limits, slow mode, time-outs), in ms.
    pub retry_after_ms: Option<u64>,
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), detail: None, retry_after_ms: None }
    }

    /// The same refusal, saying when to retry.
    pub fn retry_after(self, ms: u64) -> Self {
        Self { retry_after_ms: Some(ms), ..self }
    }

    /// A failure on our side: the client gets `message`, the log also gets `detail`.
    pub fn internal(message: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self { code: ErrorCode::Internal, message: message.into(), detail: Some(detail.to_string()), retry_after_ms: None }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for AppError {}

impl From<sfu::SfuError> for AppError {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire codes, byte for byte (docs/protocol.md §10): `as_str` and serde agree on each.
    #[test]
    fn wire_codes_are_stable() {
        use ErrorCode::*;
        let all = [
            (TokenMissing, "token_missing"),
            (TokenMalformed, "token_malformed"),
            (TokenBadSignature, "token_bad_signature"),
            (TokenAlgorithm, "token_algorithm"),
            (TokenExpired, "token_expired"),
            (TokenNotYetValid, "token_not_yet_valid"),
            (TokenWrongRoom, "token_wrong_room"),
            (TokenInvalidRole, "token_invalid_role"),
            (TokenInvalidClaims, "token_invalid_claims"),
            (BadMessage, "bad_message"),
            (UnsupportedVersion, "unsupported_version"),
            (MessageTooLarge, "message_too_large"),
            (RateLimited, "rate_limited"),
            (NotJoined, "not_joined"),
            (AlreadyJoined, "already_joined"),
            (NotAllowed, "not_allowed"),
            (StageFull, "stage_full"),
            (RoomNotLive, "room_not_live"),
            (RoomEnded, "room_ended"),
            (RoomFull, "room_full"),
            (BadSdp, "bad_sdp"),
            (BadCandidate, "bad_candidate"),
            (NotFound, "not_found"),
            (ServerBusy, "server_busy"),
            (Internal, "internal"),
            (BadStreamKey, "bad_stream_key"),
            (StreamKeyInUse, "stream_key_in_use"),
            (BadComment, "bad_comment"),
            (CommentTooLong, "comment_too_long"),
            (CommentsOff, "comments_off"),
            (SlowMode, "slow_mode"),
            (TimedOut, "timed_out"),
            (Banned, "banned"),
            (BadSignature, "bad_signature"),
            (StaleTimestamp, "stale_timestamp"),
            (Conflict, "conflict"),
            (UnknownTier, "unknown_tier"),
            (BadUrl, "bad_url"),
            (BadImage, "bad_image"),
            (NotConfigured, "not_configured"),
            (Draining, "draining"),
            (WrongNode, "wrong_node"),
        ];
        for (code, wire) in all {
            assert_eq!(code.as_str(), wire);
            assert_eq!(serde_json::to_value(code).ok(), Some(serde_json::Value::String(wire.into())));
        }
    }

    #[test]
    fn detail_reaches_the_log_only() {
        let e = AppError::internal("could not store the stream key", "disk full");
        assert_eq!(e.to_string(), "internal: could not store the stream key (disk full)");
        assert_eq!(AppError::new(ErrorCode::StageFull, "full").to_string(), "stage_full: full");
    }
}
