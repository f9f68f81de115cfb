//! The payment webhook's envelope (docs/api.md "Payments"): the signature, the timestamp, and
//! the two events a provider sends. Everything here is a pure function of the request.
//!
//! `Onair-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>` — several
//! `v1` entries may be given (while the provider rotates its secret); one must verify. The
//! timestamp bounds replays: a request older than the tolerance is refused, and a newer replay
//! carries a payment id that was already recorded.

use crate::auth::{MAX_IDENTITY_BYTES, MAX_ROOM_BYTES};
use crate::error::{AppError, ErrorCode};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// The header's name.
pub const SIGNATURE_HEADER: &str = "onair-signature";
/// Longest signature header we read.
const MAX_HEADER_BYTES: usize = 1024;
/// Longest payment or refund id.
pub const MAX_ID_BYTES: usize = 128;
/// Longest display name a payment may carry, in characters.
const MAX_NAME_CHARS: usize = 64;

/// Check the signature of `body` at `now` (unix seconds).
pub fn verify(secret: &[u8], header: Option<&str>, body: &[u8], now: i64, tolerance_secs: u64) -> Result<(), AppError> {
    let bad = |why: &str| AppError::new(ErrorCode::BadSignature, why.to_owned());
    let header = header.ok_or_else(|| bad("the Onair-Signature header is missing"))?;
    if header.len() > MAX_HEADER_BYTES {
        return Err(bad("the Onair-Signature header is too long"));
    }
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let t = t.ok_or_else(|| bad("the Onair-Signature header has no t=<unix seconds>"))?;
    if signatures.is_empty() {
        return Err(bad("the Onair-Signature header has no v1=<hex>"));
    }
    // Signatures first: an unsigned request learns nothing about our clock.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| AppError::internal("the webhook secret is not usable", e))?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let ok = signatures.iter().any(|s| hex::decode(s).is_ok_and(|sig| mac.clone().verify_slice(&sig).is_ok()));
    if !ok {
        return Err(bad("the signature does not match the body"));
    }
    if now.abs_diff(t) > tolerance_secs {
        return Err(AppError::new(
            ErrorCode::StaleTimestamp,
            format!("the signed timestamp is more than {tolerance_secs} s from the server's clock (a replay, or a clock to fix)"),
        ));
    }
    Ok(())
}

/// The header a provider sends for `body` at `t` (tests and docs use it).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// What the provider tells us.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A viewer paid for a badge tier in a room's live.
    Payment {
        id: String,
        room: String,
        identity: String,
        #[serde(default)]
        name: Option<String>,
        tier: u8,
        /// When given, must be the tier's price.
        #[serde(default)]
        amount_minor: Option<i64>,
        #[serde(default)]
        currency: Option<String>,
        /// When given, must be the room's live now.
        #[serde(default)]
        live_id: Option<String>,
    },
    /// A payment was refunded: its badge goes.
    Refund { id: String, payment: String },
}

fn id(field: &str, v: &str) -> Result<(), AppError> {
    if v.is_empty() || v.len() > MAX_ID_BYTES || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::new(ErrorCode::BadMessage, format!("{field} must be 1-{MAX_ID_BYTES} printable ASCII characters")));
    }
    Ok(())
}

/// Parse and check an event's fields (not yet against the rooms or the store).
pub fn parse(body: &[u8]) -> Result<Event, AppError> {
    let event: Event =
        serde_json::from_slice(body).map_err(|e| AppError::new(ErrorCode::BadMessage, format!("not a payment or refund event: {e}")))?;
    match &event {
        Event::Payment { id: pid, room, identity, name, .. } => {
            id("id", pid)?;
            if room.is_empty() || room.len() > MAX_ROOM_BYTES || identity.is_empty() || identity.len() > MAX_IDENTITY_BYTES {
                return Err(AppError::new(ErrorCode::BadMessage, "room and identity must be 1-128 bytes"));
            }
            if let Some(n) = name {
                crate::live::chat::text::clean_comment(n, MAX_NAME_CHARS)
                    .map_err(|e| AppError::new(ErrorCode::BadMessage, format!("name: {}", e.message)))?;
            }
        }
        Event::Refund { id: rid, payment } => {
            id("id", rid)?;
            id("payment", payment)?;
        }
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec-test-0123456789";

    #[test]
    fn a_signed_body_verifies_and_nothing_else_does() {
        let body = br#"{"type":"refund","id":"r1","payment":"p1"}"#;
        let h = sign(SECRET, 1_000, body);
        assert!(verify(SECRET, Some(&h), body, 1_000, 300).is_ok());
        assert!(verify(SECRET, Some(&h), body, 1_300, 300).is_ok());
        let code = |r: Result<(), AppError>| r.err().map(|e| e.code);
        assert_eq!(code(verify(SECRET, Some(&h), body, 1_301, 300)), Some(ErrorCode::StaleTimestamp));
        assert_eq!(code(verify(SECRET, Some(&h), body, 699, 300)), Some(ErrorCode::StaleTimestamp));
        assert_eq!(code(verify(b"another-secret-xxxxxx", Some(&h), body, 1_000, 300)), Some(ErrorCode::BadSignature));
        assert_eq!(
            code(verify(SECRET, Some(&h), br#"{"type":"refund","id":"r1","payment":"p2"}"#, 1_000, 300)),
            Some(ErrorCode::BadSignature)
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = h.replace("t=1000", "t=1100");
        assert_eq!(code(verify(SECRET, Some(&moved), body, 1_100, 300)), Some(ErrorCode::BadSignature));
        for junk in ["", "t=1000", "v1=00", "t=x,v1=00", "t=1000,v1=zz", &"a".repeat(2000)] {
            assert_eq!(code(verify(SECRET, Some(junk), body, 1_000, 300)), Some(ErrorCode::BadSignature), "{junk:?}");
        }
        assert_eq!(code(verify(SECRET, None, body, 1_000, 300)), Some(ErrorCode::BadSignature));
        // Rotation: one good v1 among others is enough.
        let v1 = h.split("v1=").nth(1).unwrap_or_default();
        assert!(verify(SECRET, Some(&format!("t=1000,v1=deadbeef,v1={v1}")), body, 1_000, 300).is_ok());
    }

    #[test]
    fn events_are_checked() {
        let ok = parse(br#"{"type":"payment","id":"pay_1","room":"r","identity":"ann","tier":2,"extra":"ignored"}"#);
        assert!(matches!(ok, Ok(Event::Payment { tier: 2, .. })));
        for bad in [
            &br#"{"type":"payment","id":"","room":"r","identity":"ann","tier":2}"#[..],
            br#"{"type":"payment","id":"a b","room":"r","identity":"ann","tier":2}"#,
            br#"{"type":"payment","id":"p","room":"","identity":"ann","tier":2}"#,
            br#"{"type":"payment","id":"p","room":"r","identity":"ann","tier":2,"name":"a\u202eb"}"#,
            br#"{"type":"payment","id":"p","room":"r","identity":"ann","tier":900}"#,
            br#"{"type":"gift","id":"p"}"#,
            br#"{"type":"refund","id":"r"}"#,
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(parse(bad).err().map(|e| e.code), Some(ErrorCode::BadMessage), "{}", String::from_utf8_lossy(bad));
        }
    }
}
