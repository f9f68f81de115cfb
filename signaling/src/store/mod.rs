//! The one boundary to persistence. Features call [`Store`] and get domain types back
//! ([`KeyView`], [`MintedKey`]) or an [`AppError`]; what lies behind it is nobody else's
//! business. Today that is the stream-keys JSON file (`keys_file`, private to this module);
//! a database (sqlx/SQLite) will take its place behind the same methods.
//!
//! Calls may block briefly (a file read or an atomic rewrite): never call the store while
//! holding a room or feed lock (docs/architecture.md §6.1).

mod keys;
mod keys_file;

pub use keys::{KeyView, MintedKey, REVOKED_KEY, UNKNOWN_KEY};

use crate::config::Config;
use crate::error::AppError;
use std::path::PathBuf;

/// Everything the server keeps across restarts.
pub struct Store {
    keys: keys_file::StreamKeys,
}

impl Store {
    /// Open the store the configuration names (`rtmp.keys_file`; empty: in memory only).
    pub fn open(config: &Config) -> Result<Self, AppError> {
        let keys_file = (!config.rtmp.keys_file.is_empty()).then(|| PathBuf::from(&config.rtmp.keys_file));
        Ok(Self { keys: keys_file::StreamKeys::open(keys_file)? })
    }

    /// Mint a stream key for `room`; the secret in the result is kept nowhere.
    pub fn mint_stream_key(&self, room: &str, label: &str) -> Result<MintedKey, AppError> {
        self.keys.mint(room, label)
    }

    /// The stream keys of `room` (all rooms with `None`), without secrets.
    pub fn stream_keys(&self, room: Option<&str>) -> Vec<KeyView> {
        self.keys.list(room)
    }

    /// Revoke key `id` (of `room`, when given). False if there is no such key.
    pub fn revoke_stream_key(&self, room: Option<&str>, id: &str) -> Result<bool, AppError> {
        self.keys.revoke(room, id)
    }

    /// Check a key an encoder presents: its view, or `bad_stream_key` (unknown or revoked).
    pub fn verify_stream_key(&self, presented: &str) -> Result<KeyView, AppError> {
        self.keys.verify(presented)
    }
}
