//! The payment provider's webhook (signaling/src/live/commerce/payments.rs): the
//! `Onair-Signature` header (`verify`: `t=…,v1=<hex HMAC-SHA256>`, replay window) and the event
//! body (`parse`: payment or refund, every field checked).
//! Input: `[header length][header][body]`.
//! Invariants: never panics; a header we did not sign never verifies a body; a body signed with
//! our secret verifies within the window and not outside it, and fails with another secret; an
//! event that parses has ids of 1-128 printable ASCII characters, room and identity of 1-128
//! bytes, and a display name that passes the comment rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::error::ErrorCode;
use signaling::live::commerce::payments::{Event, parse, sign, verify};

const SECRET: &[u8] = b"whsec-fuzz-0123456789";
const NOW: i64 = 1_800_000_000;
const TOLERANCE: u64 = 300;

fn id_ok(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
}

fuzz_target!(|data: &[u8]| {
    let [hlen, rest @ ..] = data else { return };
    let (header, body) = rest.split_at(usize::from(*hlen).min(rest.len()));
    let Ok(header) = std::str::from_utf8(header) else { return };

    // An arbitrary header: it can only verify if it carries a valid HMAC, which the fuzzer
    // cannot forge (it would have to find SHA-256 collisions).
    if let Ok(()) = verify(SECRET, Some(header), body, NOW, TOLERANCE) {
        let ours = sign(SECRET, NOW, body);
        let v1 = ours.split("v1=").nth(1).unwrap_or_default();
        assert!(header.contains(v1) || header.to_ascii_lowercase().contains(v1), "verified without our signature: {header:?}");
    }
    // Our own signature: inside the window, at its edges, outside it, and with another secret.
    let t = NOW - i64::from(*hlen) * 3;
    let signed = sign(SECRET, t, body);
    let within = NOW.abs_diff(t) <= TOLERANCE;
    let r = verify(SECRET, Some(&signed), body, NOW, TOLERANCE).err().map(|e| e.code);
    assert_eq!(r, if within { None } else { Some(ErrorCode::StaleTimestamp) });
    let r = verify(b"another-secret", Some(&signed), body, NOW, TOLERANCE).err().map(|e| e.code);
    assert_eq!(r, Some(ErrorCode::BadSignature));

    match parse(body) {
        Ok(Event::Payment { id, room, identity, name, .. }) => {
            assert!(id_ok(&id));
            assert!((1..=128).contains(&room.len()) && (1..=128).contains(&identity.len()));
            if let Some(n) = name {
                assert!(signaling::live::chat::text::clean_comment(&n, 64).is_ok());
            }
        }
        Ok(Event::Refund { id, payment }) => assert!(id_ok(&id) && id_ok(&payment)),
        Err(e) => assert_eq!(e.code, ErrorCode::BadMessage),
    }
});
