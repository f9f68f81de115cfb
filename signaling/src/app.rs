//! What every handler can reach: configuration, the authenticator, the rooms, the media plane,
//! the studio feeds and the store. Cloned into each connection's task (all shared by `Arc`).

use crate::auth::Authenticator;
use crate::config::Config;
use crate::live::room::Rooms;
use crate::live::studio::feeds::Studio;
use crate::store::Store;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub auth: Authenticator,
    pub rooms: Arc<Rooms>,
    pub sfu: sfu::Sfu,
    pub studio: Arc<Studio>,
    /// Standard players (WHEP) on this node.
    pub players: Arc<crate::live::whep::Players>,
    /// Persistence (stream keys today).
    pub store: Arc<Store>,
    /// Outgoing webhooks (off when `webhooks.url` is empty).
    pub hooks: crate::hooks::Hooks,
    pub started: Instant,
    /// Participants whose connection dropped, waiting for a resume (and the live ones' tokens).
    pub resumes: Arc<crate::live::resume::Resumes>,
    /// Set when the node started draining (SIGTERM): no new participants.
    pub draining: Arc<std::sync::OnceLock<Instant>>,
    /// Recordings of the lives on air, and the archive.
    pub archive: Arc<crate::archive::Archive>,
    /// The node registry and the lives' placement (None: this node is alone).
    pub cluster: Option<crate::cluster::Cluster>,
    /// The lives this node is a cascade edge of.
    pub edges: Arc<crate::cluster::cascade::Edges>,
}
