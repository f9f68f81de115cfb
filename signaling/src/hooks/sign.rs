//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): the receiver checks
//! `webhook-signature` = `v1,` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")),
//! where the key is the base64 after `whsec_` in the secret (or the secret's own bytes when it
//! has no such prefix). [`verify`] is what a receiver does; the tests use it on what Onair sent.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The key bytes of a configured secret; `None` when a `whsec_` secret is not base64.
pub fn key(secret: &str) -> Option<Vec<u8>> {
    match secret.strip_prefix("whsec_") {
        Some(b64) => STANDARD.decode(b64.trim()).ok().filter(|k| !k.is_empty()),
        None => Some(secret.as_bytes().to_vec()),
    }
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// The `webhook-signature` header's value.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1,{}", STANDARD.encode(mac(key, id, timestamp, body)))
}

/// Why a delivery does not verify.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `v1` signature in the header matches.
    BadSignature,
    /// The timestamp is further than the tolerance from `now` (a replay, or a wrong clock).
    Stale,
}

/// A receiver's check: one of the space-separated signatures in `header` is ours, and the
/// timestamp is within `tolerance_secs` of `now` (unix seconds).
pub fn verify(key: &[u8], id: &str, timestamp: i64, body: &[u8], header: &str, now: i64, tolerance_secs: i64) -> Result<(), Refusal> {
    if (now - timestamp).abs() > tolerance_secs {
        return Err(Refusal::Stale);
    }
    let expected = mac(key, id, timestamp, body);
    let ok = header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|sig| bool::from(sig.ct_eq(&expected)));
    if ok { Ok(()) } else { Err(Refusal::BadSignature) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_test_vector() {
        // The example of the Standard Webhooks specification (its reference libraries' tests).
        let key = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("base64 secret");
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(verify(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, &format!("v1,bm9wZQ== {sig}"), 1614265330, 300), Ok(()));
        assert_eq!(verify(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b"{}", &sig, 1614265330, 300), Err(Refusal::BadSignature));
        assert_eq!(verify(&key, "msg_other", 1614265330, body, &sig, 1614265330, 300), Err(Refusal::BadSignature));
        assert_eq!(verify(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, &sig, 1614265330 + 301, 300), Err(Refusal::Stale));
        assert_eq!(verify(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, "v2,xyz", 1614265330, 300), Err(Refusal::BadSignature));
    }

    #[test]
    fn secrets() {
        assert_eq!(key("whsec_!!!"), None);
        assert_eq!(key("whsec_"), None);
        assert_eq!(key("plain-secret").as_deref(), Some(&b"plain-secret"[..]));
    }
}
