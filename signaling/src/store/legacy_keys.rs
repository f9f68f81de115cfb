//! Stream keys of an older Onair kept them in a JSON file (`rtmp.keys_file`). On start the
//! store imports such a file once — keys keep working, revoked ones stay revoked — and renames
//! it to `<name>.imported` so it is neither read again nor lost.

use super::Store;
use crate::error::AppError;
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct FileKey {
    id: String,
    room: String,
    label: String,
    /// Hex SHA-256 of the whole key.
    hash: String,
    created_at: u64,
    #[serde(default)]
    revoked_at: Option<u64>,
}

/// Import `path` when it exists. A file that is not a keys file is left where it is and the
/// server does not start: guessing would lose keys.
pub(super) async fn import(store: &Store, path: &Path) -> Result<usize, AppError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(AppError::internal("could not read the old stream-keys file", format!("{}: {e}", path.display()))),
    };
    let keys: Vec<FileKey> = serde_json::from_str(&text)
        .map_err(|e| AppError::internal("the old stream-keys file is not valid", format!("{}: {e}", path.display())))?;
    let bad_hash = |k: &FileKey| k.hash.len() != 64 || !k.hash.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(k) = keys.iter().find(|k| bad_hash(k)) {
        return Err(AppError::internal(
            "the old stream-keys file is not valid",
            format!("{}: key {} has no SHA-256", path.display(), k.id),
        ));
    }
    let mut tx = store.pool.begin().await.map_err(|e| AppError::internal("could not import the stream keys", e))?;
    for k in &keys {
        sqlx::query("INSERT INTO stream_keys (id, room, label, hash, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING")
            .bind(&k.id)
            .bind(&k.room)
            .bind(&k.label)
            .bind(k.hash.to_ascii_lowercase())
            .bind(k.created_at as i64)
            .bind(k.revoked_at.map(|t| t as i64))
            .execute(&mut *tx)
            .await
            .map_err(|e| AppError::internal("could not import the stream keys", e))?;
    }
    tx.commit().await.map_err(|e| AppError::internal("could not import the stream keys", e))?;
    let mut done = path.as_os_str().to_owned();
    done.push(".imported");
    std::fs::rename(path, &done)
        .map_err(|e| AppError::internal("could not set the old stream-keys file aside", format!("{}: {e}", path.display())))?;
    tracing::info!(keys = keys.len(), file = %path.display(), "stream keys imported into the store");
    Ok(keys.len())
}

#[cfg(test)]
mod tests {
    use super::super::keys::{hash, hex};
    use super::*;
    use crate::config::Config;

    /// A file written by the previous version (its format, byte for byte) is imported: the key
    /// verifies, the revoked one stays revoked, the file is set aside, a second start is a no-op.
    #[tokio::test]
    async fn an_old_keys_file_is_imported_once() {
        let dir = std::env::temp_dir().join(format!("onair-import-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("stream-keys.json");
        let live = "onair_a1b2c3d4e5f6_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
        let gone = "onair_ffffffffffff_GFEDCBA0123456789abcdefghijklmnopqrstuvwxyz";
        let text = format!(
            r#"[
  {{ "id": "a1b2c3d4e5f6", "room": "studio", "label": "OBS", "hash": "{}", "created_at": 1700000000 }},
  {{ "id": "ffffffffffff", "room": "studio", "label": "Old", "hash": "{}", "created_at": 1700000001, "revoked_at": 1700000100 }}
]"#,
            hex(&hash(live)),
            hex(&hash(gone))
        );
        std::fs::write(&file, text).expect("write");
        let mut c = Config::default();
        c.store.url = format!("sqlite:{}", dir.join("onair.db").display());
        c.rtmp.keys_file = file.display().to_string();
        let store = Store::open(&c).await.expect("open imports");
        let imported = store.verify_stream_key(live).await.expect("imported key verifies");
        assert_eq!((imported.label.as_str(), imported.seat), ("OBS", super::super::KeySeat::Cohost));
        assert_eq!(store.verify_stream_key(gone).await.map_err(|e| e.message), Err(super::super::REVOKED_KEY.to_owned()));
        assert!(!file.exists() && dir.join("stream-keys.json.imported").exists());
        store.close().await;
        let again = Store::open(&c).await.expect("second start");
        assert_eq!(again.stream_keys(None).await.expect("list").len(), 2);
        again.close().await;
        // A file that is not a keys file stops the start and stays.
        std::fs::write(&file, "{not json").expect("write");
        assert!(Store::open(&c).await.is_err());
        assert!(file.exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
