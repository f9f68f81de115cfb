//! Stream keys in a small JSON file, shared by the server and the `onair stream-key` command, so
//! a key minted from the command line works at once (the server re-reads the file when it
//! changes). Only the store (`crate::store::Store`) sees this module: the file's format stays here.
//!
//! A key is minted for one room, shown once, and stored only as its SHA-256 hash; verification
//! compares hashes in constant time. Keys carry 256 random bits, so a fast hash is enough:
//! there is nothing to brute-force.

use crate::error::{AppError, ErrorCode};
use crate::store::keys::{KeyView, MintedKey, REVOKED_KEY, UNKNOWN_KEY};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// Prefix of every key (lets a leaked key be recognised by secret scanners).
const PREFIX: &str = "onair_";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct StoredKey {
    pub id: String,
    pub room: String,
    pub label: String,
    /// Hex SHA-256 of the whole key.
    pub hash: String,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

#[derive(Default)]
struct Inner {
    keys: Vec<StoredKey>,
    modified: Option<SystemTime>,
}

pub(super) struct StreamKeys {
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
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

fn unreadable(detail: String) -> AppError {
    AppError::internal("could not read the stream keys", detail)
}

fn unwritable(detail: String) -> AppError {
    AppError::internal("could not store the stream keys", detail)
}

fn view(k: &StoredKey) -> KeyView {
    KeyView { id: k.id.clone(), room: k.room.clone(), label: k.label.clone(), created_at: k.created_at, revoked_at: k.revoked_at }
}

impl StreamKeys {
    /// A store backed by `path` (created on the first mint), or in memory only.
    pub fn open(path: Option<PathBuf>) -> Result<Self, AppError> {
        let store = Self { path, inner: Mutex::new(Inner::default()) };
        store.reload(true)?;
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-read the file if it changed since we last read or wrote it.
    fn reload(&self, force: bool) -> Result<(), AppError> {
        let Some(path) = &self.path else { return Ok(()) };
        let modified = match std::fs::metadata(path) {
            Ok(m) => m.modified().ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(unreadable(format!("reading {}: {e}", path.display()))),
        };
        let mut inner = self.lock();
        if !force && modified.is_some() && inner.modified == modified {
            return Ok(());
        }
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(format!("reading {}: {e}", path.display())))?;
        inner.keys = serde_json::from_str(&text).map_err(|e| unreadable(format!("{}: {e}", path.display())))?;
        inner.modified = modified;
        Ok(())
    }

    fn save(&self, inner: &mut Inner) -> Result<(), AppError> {
        let Some(path) = &self.path else { return Ok(()) };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| unwritable(format!("creating {}: {e}", dir.display())))?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&inner.keys).map_err(|e| unwritable(format!("serialising the keys: {e}")))?;
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let written = |e: std::io::Error| unwritable(format!("writing {}: {e}", tmp.display()));
            let mut f = opts.open(&tmp).map_err(written)?;
            f.write_all(text.as_bytes()).map_err(written)?;
            f.sync_all().map_err(written)?;
        }
        std::fs::rename(&tmp, path).map_err(|e| unwritable(format!("writing {}: {e}", path.display())))?;
        inner.modified = std::fs::metadata(path).ok().and_then(|m| m.modified().ok());
        Ok(())
    }

    /// Mint a key for `room`. The returned key is not stored anywhere.
    pub fn mint(&self, room: &str, label: &str) -> Result<MintedKey, AppError> {
        self.reload(false)?;
        let id = hex(&rand::random::<[u8; 6]>());
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let key = format!("{PREFIX}{id}_{secret}");
        let stored = StoredKey {
            id,
            room: room.to_owned(),
            label: if label.is_empty() { "Studio".into() } else { label.to_owned() },
            hash: hex(&hash(&key)),
            created_at: now_secs(),
            revoked_at: None,
        };
        let view = view(&stored);
        let mut inner = self.lock();
        inner.keys.push(stored);
        self.save(&mut inner)?;
        Ok(MintedKey { key, view })
    }

    /// Revoke key `id` (of `room`, when given). False if there is no such key.
    pub fn revoke(&self, room: Option<&str>, id: &str) -> Result<bool, AppError> {
        self.reload(false)?;
        let mut inner = self.lock();
        let Some(k) = inner.keys.iter_mut().find(|k| k.id == id && room.is_none_or(|r| r == k.room)) else {
            return Ok(false);
        };
        if k.revoked_at.is_none() {
            k.revoked_at = Some(now_secs());
        }
        self.save(&mut inner)?;
        Ok(true)
    }

    pub fn list(&self, room: Option<&str>) -> Vec<KeyView> {
        if let Err(e) = self.reload(false) {
            tracing::warn!("stream keys: {e}");
        }
        self.lock().keys.iter().filter(|k| room.is_none_or(|r| r == k.room)).map(view).collect()
    }

    /// Check a presented key. The hash comparison runs in constant time, and an unknown id
    /// costs the same hash as a known one. A key that is not ours (wrong, mistyped, from another
    /// server) and a revoked one are both `bad_stream_key`, with different sentences.
    pub fn verify(&self, presented: &str) -> Result<KeyView, AppError> {
        if let Err(e) = self.reload(false) {
            tracing::warn!("stream keys: {e}");
        }
        let digest = hash(presented);
        let id = presented.strip_prefix(PREFIX).and_then(|rest| rest.split_once('_')).map(|(id, _)| id).unwrap_or("");
        let inner = self.lock();
        let found = inner.keys.iter().find(|k| k.id == id);
        let stored = found.and_then(|k| unhex(&k.hash)).unwrap_or([0xa5; 32]);
        let equal: bool = stored.ct_eq(&digest).into();
        match found {
            Some(k) if equal => {
                if k.revoked_at.is_some() {
                    Err(AppError::new(ErrorCode::BadStreamKey, REVOKED_KEY))
                } else {
                    Ok(view(k))
                }
            }
            _ => Err(AppError::new(ErrorCode::BadStreamKey, UNKNOWN_KEY)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_verify_revoke_and_share_through_the_file() {
        let dir = std::env::temp_dir().join(format!("onair-keys-{}", rand::random::<u32>()));
        let path = dir.join("keys.json");
        let a = StreamKeys::open(Some(path.clone())).expect("open");
        let k = a.mint("room1", "OBS").expect("mint");
        assert!(k.key.starts_with("onair_"));
        let text = std::fs::read_to_string(&path).expect("file");
        // The secret is everything after the id: base64url, so it may itself contain '_' (taking
        // the piece up to the next '_' made this check flaky: a short piece is often in the file).
        let secret = k.key.splitn(3, '_').nth(2).expect("secret");
        assert_eq!(secret.len(), 43, "32 random bytes, base64url");
        assert!(!text.contains(secret), "the secret is not stored");
        assert_eq!(a.verify(&k.key).expect("valid").room, "room1");
        // Tampered, truncated, other id, empty: unknown.
        let mut tampered = k.key.clone();
        tampered.pop();
        tampered.push('x');
        for bad in [tampered.as_str(), &k.key[..k.key.len() - 1], "onair_000000000000_abc", "", "live"] {
            assert_eq!(a.verify(bad).map_err(|e| e.message), Err(UNKNOWN_KEY.to_owned()), "{bad}");
        }
        // A second store (the CLI) revokes; the first sees it.
        let b = StreamKeys::open(Some(path.clone())).expect("open again");
        assert!(b.revoke(Some("room1"), &k.view.id).expect("revoke"));
        assert!(!b.revoke(Some("other"), &k.view.id).expect("revoke in another room"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(a.verify(&k.key).map_err(|e| e.message), Err(REVOKED_KEY.to_owned()));
        assert_eq!(a.list(Some("room1")).len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
