//! Signed download links: `/api/v1/archive/{id}/files/{name}?exp=<unix s>&sig=<hex>`, where
//! `sig` is HMAC-SHA256 over `{id}/{name}:{exp}` with a key derived from the server's secret.
//! A `<video src>` or a download link then works without an `Authorization` header, for
//! `archive.link_secs`, and only for that one file.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub struct Links {
    key: [u8; 32],
    ttl_secs: u64,
}

impl Links {
    pub fn new(secret: &str, ttl_secs: u64) -> Self {
        let key: [u8; 32] = Sha256::new().chain_update(b"onair archive links\0").chain_update(secret.as_bytes()).finalize().into();
        Self { key, ttl_secs }
    }

    fn sign(&self, id: &str, name: &str, exp: u64) -> String {
        // An HMAC takes a key of any length: `new_from_slice` cannot fail here.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else { return String::new() };
        mac.update(format!("{id}/{name}:{exp}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A link valid from now for the configured time.
    pub fn url(&self, id: &str, name: &str) -> String {
        let exp = crate::store::unix_ms() as u64 / 1000 + self.ttl_secs;
        format!("/api/v1/archive/{id}/files/{name}?exp={exp}&sig={}", self.sign(id, name, exp))
    }

    /// Whether `sig` signs this file until `exp`, and `exp` is not past.
    pub fn verify(&self, id: &str, name: &str, exp: u64, sig: &str) -> bool {
        let now = crate::store::unix_ms() as u64 / 1000;
        exp >= now && bool::from(self.sign(id, name, exp).as_bytes().ct_eq(sig.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_for_one_file_until_it_expires() {
        let l = Links::new("secret", 60);
        let url = l.url("arc_1", "01-ann.mp4");
        let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
        let exp: u64 = q.split('&').find_map(|p| p.strip_prefix("exp=")).and_then(|v| v.parse().ok()).unwrap_or(0);
        let sig = q.split('&').find_map(|p| p.strip_prefix("sig=")).unwrap_or("");
        assert!(l.verify("arc_1", "01-ann.mp4", exp, sig));
        assert!(!l.verify("arc_1", "02-bob.mp4", exp, sig), "another file");
        assert!(!l.verify("arc_2", "01-ann.mp4", exp, sig), "another entry");
        assert!(!l.verify("arc_1", "01-ann.mp4", exp + 1, sig), "a longer life");
        assert!(!Links::new("other", 60).verify("arc_1", "01-ann.mp4", exp, sig), "another server's secret");
        let past = crate::store::unix_ms() as u64 / 1000 - 1;
        assert!(!l.verify("arc_1", "01-ann.mp4", past, &l.sign("arc_1", "01-ann.mp4", past)), "expired");
    }
}
