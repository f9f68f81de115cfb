//! The studio's state: the feeds (one per stream key in use: its seat, tracks, bridge and
//! connection generation) and the listener's figures. Plain data behind short locks (order in
//! docs/architecture.md §6.1); what happens to a feed is in `lifecycle` and `rtmp`.

use crate::live::room::Room;
use serde::Serialize;
use sfu::ParticipantId;
use sfu::ingest::{Bridge, BridgeStats};
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// A WHIP feed's ICE session (RFC 9725 §4.3): its entity tag, and the offer the session runs
/// on (an ICE restart builds the next offer from it).
pub struct WhipIce {
    pub etag: String,
    pub offer: String,
}

/// A studio feed: one stream key's seat and tracks in its room, over RTMP (the bridge) or
/// WHIP (a WebRTC publisher session).
pub struct Feed {
    pub key_id: String,
    pub room_name: String,
    pub label: String,
    pub participant: ParticipantId,
    pub(super) room: Arc<Mutex<Room>>,
    /// The bridge, lent to the connection that is streaming (None while one holds it).
    pub(super) bridge: Mutex<Option<Bridge>>,
    /// Connection generation: bumped by every (re)connect, so a stale grace timer does nothing.
    pub(super) generation: AtomicUsize,
    pub(super) connected: Mutex<bool>,
    /// Wakes the streaming connection so it gives up (takeover, revocation, room end).
    pub(super) kick: Notify,
    pub(super) stats: Mutex<BridgeStats>,
    /// A WHIP feed: its resource id (the last segment of its `Location`) and ICE session.
    pub(super) whip: Option<(String, Mutex<WhipIce>)>,
}

impl Feed {
    /// A new feed of `key` in its room: over RTMP with `bridge`, or over WHIP with `whip`.
    pub(super) fn new(
        key: &crate::store::KeyView,
        participant: ParticipantId,
        room: Arc<Mutex<Room>>,
        bridge: Option<Bridge>,
        whip: Option<(String, WhipIce)>,
    ) -> Arc<Feed> {
        Arc::new(Feed {
            key_id: key.id.clone(),
            room_name: key.room.clone(),
            label: key.label.clone(),
            participant,
            room,
            bridge: Mutex::new(bridge),
            generation: AtomicUsize::new(0),
            connected: Mutex::new(false),
            kick: Notify::new(),
            stats: Mutex::new(BridgeStats::default()),
            whip: whip.map(|(resource, ice)| (resource, Mutex::new(ice))),
        })
    }

    pub fn transport(&self) -> &'static str {
        if self.whip.is_some() { "whip" } else { "rtmp" }
    }
}

/// A feed as `/api/stats` shows it.
#[derive(Serialize)]
pub struct FeedView {
    pub key_id: String,
    pub room: String,
    pub label: String,
    pub participant: ParticipantId,
    /// `rtmp` or `whip`.
    pub transport: &'static str,
    pub connected: bool,
    /// The RTMP bridge's figures (zero for a WHIP feed: its media is a WebRTC session's).
    pub stats: BridgeStats,
}

#[derive(Default)]
pub struct Studio {
    /// The publishing URL with the port actually bound (set when the listener starts).
    pub(super) server_url: std::sync::OnceLock<String>,
    pub(super) feeds: Mutex<HashMap<String, Arc<Feed>>>,
    pub(super) connections: AtomicUsize,
}

pub(super) fn plock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Studio {
    /// The URL to give OBS: `rtmp.public_url`, or built from the bound address.
    pub fn server_url(&self, config: &crate::config::RtmpConfig) -> String {
        self.server_url.get().cloned().unwrap_or_else(|| config.server_url())
    }

    pub fn feeds(&self) -> Vec<FeedView> {
        plock(&self.feeds)
            .values()
            .map(|f| FeedView {
                key_id: f.key_id.clone(),
                room: f.room_name.clone(),
                label: f.label.clone(),
                participant: f.participant,
                transport: f.transport(),
                connected: *plock(&f.connected),
                stats: plock(&f.stats).clone(),
            })
            .collect()
    }
}
