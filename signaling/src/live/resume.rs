//! Session resume: a participant whose WebSocket drops without `leave` keeps its place for
//! `limits.resume_grace_secs` — its room membership, its seat, its SFU sessions (media goes on
//! flowing over UDP meanwhile), tracks and subscriptions. A new WebSocket that joins with the
//! `resume_token` of `joined` takes the participant over: no new participant, no new offer
//! unless one was missed (docs/protocol.md §3.5).
//!
//! Each token is in one of two slots: *live* (a connection serves it; a resume asks that
//! connection to stop, which then parks it — the client may see its socket dead before the
//! server does) or *parked* (no connection; a grace task ends the participant when its time is
//! up, unless a resume took it first). The map's lock is taken alone, never across an await.

use super::room::Room;
use crate::auth::Claims;
use sfu::ParticipantId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// A participant without a connection, waiting for one.
pub struct Parked {
    pub id: ParticipantId,
    pub room: Arc<Mutex<Room>>,
    pub claims: Claims,
}

enum Slot {
    Live { identity: String, room: String, stop: Arc<Notify> },
    Parked(Parked),
}

/// Every resume token of this node.
#[derive(Default)]
pub struct Resumes {
    map: Mutex<HashMap<String, Slot>>,
}

/// How long a resume waits for the old connection to stop and park its participant.
const TAKEOVER_WAIT: Duration = Duration::from_secs(2);

/// A new resume token: 128 random bits, hex.
pub fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Resumes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection serves `token` now; it stops when the returned signal fires (a resume).
    pub fn serve(&self, token: &str, claims: &Claims) -> Arc<Notify> {
        let stop = Arc::new(Notify::new());
        self.lock()
            .insert(token.to_owned(), Slot::Live { identity: claims.identity.clone(), room: claims.room.clone(), stop: stop.clone() });
        stop
    }

    /// The connection of `token` ended without `leave`: its participant waits for a resume.
    pub fn park(&self, token: &str, parked: Parked) {
        self.lock().insert(token.to_owned(), Slot::Parked(parked));
    }

    /// The participant left for good (or was never parked): forget its token.
    pub fn forget(&self, token: &str) {
        self.lock().remove(token);
    }

    /// The grace is over: the parked participant, if no resume took it.
    pub fn expire(&self, token: &str) -> Option<Parked> {
        let mut map = self.lock();
        match map.get(token) {
            Some(Slot::Parked(_)) => match map.remove(token) {
                Some(Slot::Parked(p)) => Some(p),
                _ => None,
            },
            _ => None,
        }
    }

    /// Take the participant of `token` for a new connection of the same identity and room. A
    /// token still served by a connection stops that connection first (it parks the
    /// participant), waiting at most two seconds. `None`: unknown token, another identity or
    /// room (the slot is left as it was), or the old connection did not let go in time.
    pub async fn take(&self, token: &str, claims: &Claims) -> Option<Parked> {
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        loop {
            {
                let mut map = self.lock();
                match map.get(token) {
                    Some(Slot::Parked(p)) if p.claims.identity == claims.identity && p.claims.room == claims.room => {
                        return match map.remove(token) {
                            Some(Slot::Parked(p)) => Some(p),
                            _ => None,
                        };
                    }
                    Some(Slot::Live { identity, room, stop }) if *identity == claims.identity && *room == claims.room => stop.notify_one(),
                    _ => return None,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Take every parked participant of `identity` in `room` (banned: no resume, and out now).
    pub fn evict(&self, room: &str, identity: &str) -> Vec<Parked> {
        let mut map = self.lock();
        let tokens: Vec<String> = map
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Parked(p) if p.claims.room == room && p.claims.identity == identity))
            .map(|(t, _)| t.clone())
            .collect();
        tokens
            .iter()
            .filter_map(|t| match map.remove(t) {
                Some(Slot::Parked(p)) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// Participants waiting for a resume now.
    pub fn parked(&self) -> usize {
        self.lock().values().filter(|s| matches!(s, Slot::Parked(_))).count()
    }
}
