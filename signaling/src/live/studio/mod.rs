//! Studio feeds: OBS / ffmpeg publishing over RTMP (below) or WHIP (`whip`) into a room as a
//! co-host.
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

pub mod feeds;
pub mod keys;
mod lifecycle;
mod rtmp;
pub mod sdpfrag;
pub mod whip;

use crate::app::AppState;
use crate::live::studio::feeds::plock;
use crate::live::studio::lifecycle::end_feed;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;

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

/// The host took a studio feed off stage: it ends (its key stays valid; the encoder may publish
/// again). False if `participant` is no feed.
pub fn end_participant(app: &AppState, participant: sfu::ParticipantId) -> bool {
    let feed = plock(&app.studio.feeds).values().find(|f| f.participant == participant).cloned();
    match feed {
        Some(feed) => {
            end_feed(app, &feed, "taken off stage by the host");
            true
        }
        None => false,
    }
}

/// A revoked key ends its feed (not just the connection).
pub fn end_revoked(app: &AppState, key_id: &str) {
    // The feeds lock is released before `end_feed` takes it again: a guard living in the
    // `if let` scrutinee would be held through the block (std's Mutex is not re-entrant,
    // and that self-deadlock once hung every runtime thread on a revocation).
    let feed = plock(&app.studio.feeds).get(key_id).cloned();
    if let Some(feed) = feed {
        end_feed(app, &feed, "stream key revoked");
    }
}
