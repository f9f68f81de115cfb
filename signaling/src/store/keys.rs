//! Stream keys: minted for one room, shown once, kept only as their SHA-256 hash; verification
//! compares hashes in constant time. Keys carry 256 random bits, so a fast hash is enough:
//! there is nothing to brute-force. The `onair stream-key` command and the server share the
//! database, so a key minted from the command line works at once.

use super::{Store, db, unix_ms};
use crate::error::{AppError, ErrorCode};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use subtle::ConstantTimeEq;

/// What an encoder is told when its key is not ours (docs/protocol.md §12).
pub const UNKNOWN_KEY: &str = "stream key refused: unknown key";
/// What an encoder is told when its key was revoked.
pub const REVOKED_KEY: &str = "stream key refused: this key was revoked";

/// Prefix of every key (lets a leaked key be recognised by secret scanners).
const PREFIX: &str = "onair_";

/// The seat a key's encoder takes.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeySeat {
    /// A co-host's seat, in a live the host started.
    #[default]
    Cohost,
    /// The host's seat: the encoder starts the live by itself, and its drop holds the live.
    Host,
}

impl KeySeat {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySeat::Cohost => "cohost",
            KeySeat::Host => "host",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cohost" => Some(KeySeat::Cohost),
            "host" => Some(KeySeat::Host),
            _ => None,
        }
    }
}

/// A key as listed: everything but the hash. Times are unix seconds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KeyView {
    pub id: String,
    pub room: String,
    pub label: String,
    #[serde(default)]
    pub seat: KeySeat,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

/// A freshly minted key: the only time the secret exists outside the encoder.
#[derive(Clone, Debug)]
pub struct MintedKey {
    pub key: String,
    pub view: KeyView,
}

pub(super) fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn now_secs() -> u64 {
    (unix_ms() / 1000) as u64
}

fn view(row: &sqlx::any::AnyRow) -> KeyView {
    KeyView {
        id: row.get("id"),
        room: row.get("room"),
        label: row.get("label"),
        seat: KeySeat::parse(row.get("seat")).unwrap_or_default(),
        created_at: row.get::<i64, _>("created_at") as u64,
        revoked_at: row.get::<Option<i64>, _>("revoked_at").map(|t| t as u64),
    }
}

impl Store {
    /// Mint a stream key for `room`; the secret in the result is kept nowhere.
    pub async fn mint_stream_key(&self, room: &str, label: &str, seat: KeySeat) -> Result<MintedKey, AppError> {
        let id = hex(&rand::random::<[u8; 6]>());
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let key = format!("{PREFIX}{id}_{secret}");
        let view = KeyView {
            id,
            room: room.to_owned(),
            label: if label.is_empty() { "Studio".into() } else { label.to_owned() },
            seat,
            created_at: now_secs(),
            revoked_at: None,
        };
        sqlx::query("INSERT INTO stream_keys (id, room, label, hash, created_at, seat) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&view.id)
            .bind(&view.room)
            .bind(&view.label)
            .bind(hex(&hash(&key)))
            .bind(view.created_at as i64)
            .bind(seat.as_str())
            .execute(&self.pool)
            .await
            .map_err(db("could not store the stream key"))?;
        Ok(MintedKey { key, view })
    }

    /// The stream keys of `room` (all rooms with `None`), without secrets, oldest first.
    pub async fn stream_keys(&self, room: Option<&str>) -> Result<Vec<KeyView>, AppError> {
        let rows = sqlx::query(
            "SELECT id, room, label, seat, created_at, revoked_at FROM stream_keys WHERE $1 IS NULL OR room = $1 ORDER BY created_at, id",
        )
        .bind(room)
        .fetch_all(&self.pool)
        .await
        .map_err(db("could not read the stream keys"))?;
        Ok(rows.iter().map(view).collect())
    }

    /// Revoke key `id` (of `room`, when given). False if there is no such key.
    pub async fn revoke_stream_key(&self, room: Option<&str>, id: &str) -> Result<bool, AppError> {
        let done = sqlx::query("UPDATE stream_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND ($3 IS NULL OR room = $3)")
            .bind(now_secs() as i64)
            .bind(id)
            .bind(room)
            .execute(&self.pool)
            .await
            .map_err(db("could not store the revocation"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Check a key an encoder presents: its view, or `bad_stream_key` (unknown or revoked). The
    /// hash comparison runs in constant time, and an unknown id costs the same hash as a known
    /// one. A key that is not ours (wrong, mistyped, from another server) and a revoked one
    /// are both `bad_stream_key`, with different sentences.
    pub async fn verify_stream_key(&self, presented: &str) -> Result<KeyView, AppError> {
        let digest = hash(presented);
        let id = presented.strip_prefix(PREFIX).and_then(|rest| rest.split_once('_')).map(|(id, _)| id).unwrap_or("");
        let row = sqlx::query("SELECT id, room, label, seat, hash, created_at, revoked_at FROM stream_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("could not check the stream key"))?;
        let stored = row.as_ref().and_then(|r| unhex(r.get::<&str, _>("hash"))).unwrap_or([0xa5; 32]);
        let equal: bool = stored.ct_eq(&digest).into();
        match row {
            Some(r) if equal => {
                let k = view(&r);
                if k.revoked_at.is_some() { Err(AppError::new(ErrorCode::BadStreamKey, REVOKED_KEY)) } else { Ok(k) }
            }
            _ => Err(AppError::new(ErrorCode::BadStreamKey, UNKNOWN_KEY)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    pub(crate) async fn memory_store() -> Store {
        let mut c = Config::default();
        c.store.url = "sqlite::memory:".into();
        c.rtmp.keys_file = String::new();
        Store::open(&c).await.expect("in-memory store")
    }

    #[tokio::test]
    async fn mint_verify_revoke() {
        let store = memory_store().await;
        let k = store.mint_stream_key("room1", "OBS", KeySeat::Cohost).await.expect("mint");
        let h = store.mint_stream_key("room1", "Producer", KeySeat::Host).await.expect("mint");
        assert_eq!(store.verify_stream_key(&h.key).await.expect("valid").seat, KeySeat::Host);
        assert!(k.key.starts_with("onair_"));
        // The secret is everything after the id: base64url, so it may itself contain '_'.
        let secret = k.key.splitn(3, '_').nth(2).expect("secret");
        assert_eq!(secret.len(), 43, "32 random bytes, base64url");
        let hashes: Vec<String> = sqlx::query_scalar("SELECT hash FROM stream_keys").fetch_all(&store.pool).await.expect("read");
        assert!(hashes.iter().all(|h| !h.contains(secret) && h.len() == 64), "only the hash is stored");
        assert_eq!(store.verify_stream_key(&k.key).await.expect("valid").room, "room1");
        let mut tampered = k.key.clone();
        tampered.pop();
        tampered.push('x');
        for bad in [tampered.as_str(), &k.key[..k.key.len() - 1], "onair_000000000000_abc", "", "live"] {
            assert_eq!(store.verify_stream_key(bad).await.map_err(|e| e.message), Err(UNKNOWN_KEY.to_owned()), "{bad}");
        }
        assert!(!store.revoke_stream_key(Some("other"), &k.view.id).await.expect("revoke in another room"));
        assert!(store.revoke_stream_key(Some("room1"), &k.view.id).await.expect("revoke"));
        assert_eq!(store.verify_stream_key(&k.key).await.map_err(|e| e.message), Err(REVOKED_KEY.to_owned()));
        let listed = store.stream_keys(Some("room1")).await.expect("list");
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().any(|k| k.id == k.id && k.revoked_at.is_some() && k.seat == KeySeat::Cohost));
        assert!(store.stream_keys(Some("other")).await.expect("list").is_empty());
    }

    #[test]
    fn ids_increase_and_stay_exact_in_javascript() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let store = rt.block_on(memory_store());
        let ids: Vec<i64> = (0..5000).map(|_| store.next_id()).collect();
        assert!(ids.windows(2).all(|w| w[1] > w[0]));
        assert!(ids.iter().all(|&i| i < (1i64 << 53)));
    }
}
