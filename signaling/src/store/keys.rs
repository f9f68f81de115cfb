//! Stream keys as the rest of the server sees them (never the hash), and what an encoder is told
//! when one is refused.

use serde::{Deserialize, Serialize};

/// What an encoder is told when its key is not ours (docs/protocol.md §12).
pub const UNKNOWN_KEY: &str = "stream key refused: unknown key";
/// What an encoder is told when its key was revoked.
pub const REVOKED_KEY: &str = "stream key refused: this key was revoked";

/// A key as listed: everything but the hash.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KeyView {
    pub id: String,
    pub room: String,
    pub label: String,
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
