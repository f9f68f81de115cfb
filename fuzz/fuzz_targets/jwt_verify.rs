//! JWT verification (`signaling::auth::Authenticator::verify`), the door of every join and of
//! the server API. Two halves: the raw input as a token, and the input as the claims of a token
//! correctly signed with the server's secret (so the claim checks after the signature are reached).
//! Invariants: never panics; a token signed with another secret never verifies; whatever
//! verifies satisfies the claim limits (identity and room 1-128 bytes of printable text, name at
//! most 128, the room asked for, a profile of 1-64 `[A-Za-z0-9_-]`).
#![no_main]

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use signaling::auth::{Authenticator, Claims, MAX_IDENTITY_BYTES, MAX_NAME_BYTES, MAX_ROOM_BYTES};
use std::sync::OnceLock;

const SECRET: &str = "fuzz-secret-0123456789abcdef";

fn auth() -> &'static Authenticator {
    static A: OnceLock<Authenticator> = OnceLock::new();
    A.get_or_init(|| Authenticator::new(SECRET, "HS256", 5).expect("HS256 is supported"))
}

fn check(c: &Claims, room: Option<&str>) {
    let printable = |s: &str, max: usize| !s.trim().is_empty() && s.len() <= max && !s.chars().any(char::is_control);
    assert!(printable(&c.identity, MAX_IDENTITY_BYTES), "identity {:?}", c.identity);
    assert!(printable(&c.room, MAX_ROOM_BYTES), "room {:?}", c.room);
    assert!(c.name.len() <= MAX_NAME_BYTES.max(MAX_IDENTITY_BYTES) && !c.name.chars().any(char::is_control));
    if let Some(r) = room {
        assert_eq!(c.room, r);
    }
    if let Some(p) = &c.profile {
        assert!(!p.is_empty() && p.len() <= 64 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // 1. The bytes as a token (a client can send anything).
    if let Ok(c) = auth().verify(text, None) {
        check(&c, None);
    }
    // 2. The bytes as the claims of a well-signed token.
    let Ok(claims) = serde_json::from_str::<serde_json::Value>(text) else { return };
    let room = claims.get("room").and_then(|r| r.as_str()).map(str::to_owned);
    for (key, alg) in [(SECRET, Algorithm::HS256), ("another-secret", Algorithm::HS256), (SECRET, Algorithm::HS384)] {
        let Ok(token) = jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(key.as_bytes())) else { return };
        let verified = auth().verify(&token, room.as_deref());
        if key != SECRET || alg != Algorithm::HS256 {
            assert!(verified.is_err(), "a token signed with another key or algorithm verified");
        } else if let Ok(c) = verified {
            check(&c, room.as_deref());
        }
    }
});
