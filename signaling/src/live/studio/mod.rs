//! Studio feeds: OBS / ffmpeg publishing over RTMP into a room as a co-host.
//!
//! ```text
//! encoder ──TCP :1935──► handshake ──► ChunkGuard (limits) ──► rml_rtmp ServerSession
//!                                   connect(app) → publish(stream key) → Feed (seat, tracks)
//!                                   FLV video/audio ──► sfu::ingest::Bridge ──► router
//! ```
//!
//! A feed is keyed by its stream key: it holds a seat and two tracks. When the encoder drops,
//! the feed waits `rtmp.grace_secs` for it; a reconnect with the same key resumes into the same
//! tracks. Revoking the key or ending the room cuts it at once.

pub mod keys;
mod rtmp;

use crate::AppState;
use crate::live::join;
use crate::live::room::{Room, lock};
use crate::protocol::{ServerMsg, StudioState};
use serde::Serialize;
use sfu::ParticipantId;
use sfu::ingest::{Bridge, BridgeStats};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

/// A studio feed: one stream key's seat and tracks in its room.
pub struct Feed {
    pub key_id: String,
    pub room_name: String,
    pub label: String,
    pub participant: ParticipantId,
    room: Arc<Mutex<Room>>,
    /// The bridge, lent to the connection that is streaming (None while one holds it).
    bridge: Mutex<Option<Bridge>>,
    /// Connection generation: bumped by every (re)connect, so a stale grace timer does nothing.
    generation: AtomicUsize,
    connected: Mutex<bool>,
    /// Wakes the streaming connection so it gives up (takeover, revocation, room end).
    kick: Notify,
    stats: Mutex<BridgeStats>,
}

/// A feed as `/api/stats` shows it.
#[derive(Serialize)]
pub struct FeedView {
    pub key_id: String,
    pub room: String,
    pub label: String,
    pub participant: ParticipantId,
    pub connected: bool,
    pub stats: BridgeStats,
}

#[derive(Default)]
pub struct Studio {
    /// The publishing URL with the port actually bound (set when the listener starts).
    server_url: std::sync::OnceLock<String>,
    feeds: Mutex<HashMap<String, Arc<Feed>>>,
    connections: AtomicUsize,
}

fn plock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
                connected: *plock(&f.connected),
                stats: plock(&f.stats).clone(),
            })
            .collect()
    }
}

/// Bind the RTMP port and serve until the process ends.
pub async fn listen(app: AppState, mut stop: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<SocketAddr> {
    let listener =
        TcpListener::bind(app.config.rtmp.bind).await.map_err(|e| anyhow::anyhow!("binding RTMP on {}: {e}", app.config.rtmp.bind))?;
    let addr = listener.local_addr()?;
    let mut bound = app.config.rtmp.clone();
    bound.bind = addr;
    let _ = app.studio.server_url.set(bound.server_url());
    tracing::info!(%addr, url = %app.studio.server_url(&app.config.rtmp), "RTMP listening for studio feeds");
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.changed() => break,
            };
            let (stream, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("RTMP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let studio = app.studio.clone();
            if studio.connections.fetch_add(1, Ordering::SeqCst) >= app.config.rtmp.max_connections {
                studio.connections.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(%peer, "RTMP connection refused: {} connections already", app.config.rtmp.max_connections);
                drop(stream);
                continue;
            }
            let app = app.clone();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let reason = rtmp::Connection::new(app.clone(), stream, peer).run().await;
                tracing::info!(%peer, %reason, "RTMP connection closed");
                app.studio.connections.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Ok(addr)
}

/// Remove a feed: its tracks, its seat, its room membership.
fn end_feed(app: &AppState, feed: &Arc<Feed>, reason: &str) {
    let removed = {
        let mut feeds = plock(&app.studio.feeds);
        match feeds.get(&feed.key_id) {
            Some(f) if Arc::ptr_eq(f, feed) => feeds.remove(&feed.key_id).is_some(),
            _ => false,
        }
    };
    if !removed {
        return;
    }
    tracing::info!(room = %feed.room_name, participant = %feed.participant, %reason, "studio feed ended");
    feed.generation.fetch_add(1, Ordering::SeqCst);
    feed.kick.notify_waiters();
    let ended = ServerMsg::StudioState { participant: feed.participant, state: StudioState::Ended, reason: Some(reason.into()) };
    lock(&feed.room).broadcast_all(ended);
    join::leave(app, feed.participant, &feed.room, reason);
}

/// The SFU's events for a feed's participant: only its own tracks matter.
async fn feed_events(app: AppState, room: Arc<Mutex<Room>>, mut rx: mpsc::Receiver<sfu::SfuEvent>) {
    while let Some(ev) = rx.recv().await {
        let _ = join::on_track_event(&app, &room, ev);
    }
}

/// What the room sends the feed's "member": only the end of the room or a revocation matters.
async fn feed_outbox(app: AppState, feed: Arc<Feed>, mut rx: mpsc::Receiver<ServerMsg>) {
    while let Some(msg) = rx.recv().await {
        if let ServerMsg::RoomEnded { reason } = msg {
            end_feed(&app, &feed, &reason);
            return;
        }
    }
}

impl Studio {
    /// Revocations end the feed (not just the connection).
    pub fn end_revoked(&self, app: &AppState, key_id: &str) {
        // The feeds lock is released before `end_feed` takes it again: a guard living in the
        // `if let` scrutinee would be held through the block (std's Mutex is not re-entrant,
        // and that self-deadlock once hung every runtime thread on a revocation).
        let feed = plock(&self.feeds).get(key_id).cloned();
        if let Some(feed) = feed {
            end_feed(app, &feed, "stream key revoked");
        }
    }
}
