//! The one way into a room, for a browser user (a token, over the WebSocket) and a studio feed
//! (a stream key, over RTMP) alike:
//!
//! 1. [`authenticate`]: the token or the key gives who the participant is ([`Guest`]);
//! 2. [`join`]: take a place in the room (its rules: ended, full) and, when asked, a seat on
//!    stage, in one lock; then register the participant with the SFU (a worker and an event
//!    sink). The room fans the arrival out to its members (`participant_joined`,
//!    `room_update`). A refusal at any step undoes the steps before it.
//! 3. [`on_track_event`]: from then on, the participant's tracks are announced to the room and
//!    everyone else is subscribed to them, whichever door the participant came in by.
//! 4. [`leave`]: out of the room, then out of the SFU.
//!
//! Locks: the room's lock is taken and released inside one statement; the SFU and the store
//! are called with no lock held (docs/architecture.md §6.1). A room not running is opened with
//! its live from the store (bans of this live refuse the join: `banned`).

use super::room::{JoinSnapshot, Outbox, Room, lock};
use crate::app::AppState;
use crate::auth::{Claims, Role};
use crate::error::{AppError, ErrorCode};
use crate::protocol::ParticipantKind;
use crate::store::{KeySeat, KeyView, UNKNOWN_KEY};
use sfu::{ParticipantId, SfuEvent};
use std::sync::{Arc, Mutex};

/// What a participant shows at the door.
pub enum Pass<'a> {
    /// A join token, and the room the client asked for (`join.room` or `?room=`).
    Token { token: &'a str, room: Option<&'a str> },
    /// An encoder's stream key.
    StreamKey(&'a str),
}

/// Who came in.
#[derive(Clone, Debug)]
pub struct Guest {
    pub claims: Claims,
    /// `user` for a token, `studio` for a stream key: every participant object says it.
    pub kind: ParticipantKind,
    /// The key a studio feed came in with.
    pub stream_key: Option<KeyView>,
}

/// The identity of a studio feed: `studio:<key id>` (kept stable: clients may know it).
pub fn studio_identity(key_id: &str) -> String {
    format!("studio:{key_id}")
}

/// Check a pass. A token's errors are its `token_*` codes; a key's, `bad_stream_key`.
#[tracing::instrument(name = "authenticate", level = "info", skip_all, err(level = "info"))]
pub async fn authenticate(app: &AppState, pass: Pass<'_>) -> Result<Guest, AppError> {
    match pass {
        Pass::Token { token, room } => Ok(Guest { claims: app.auth.verify(token, room)?, kind: ParticipantKind::User, stream_key: None }),
        Pass::StreamKey(key) => {
            if key.is_empty() || key.len() > app.config.rtmp.max_name_bytes {
                return Err(AppError::new(ErrorCode::BadStreamKey, UNKNOWN_KEY));
            }
            let key = app.store.verify_stream_key(key).await?;
            let claims = Claims {
                identity: studio_identity(&key.id),
                name: key.label.clone(),
                room: key.room.clone(),
                role: match key.seat {
                    KeySeat::Host => Role::Host,
                    KeySeat::Cohost => Role::Cohost,
                },
                exp: u64::MAX,
                profile: None,
            };
            Ok(Guest { claims, kind: ParticipantKind::Studio, stream_key: Some(key) })
        }
    }
}

/// Many nodes: the node that holds `room`'s live when it is not this one (cluster/). Nobody
/// holding it, this node claims it (unless it drains, when the least loaded other node is
/// named). None alone, or when Redis fails (the join is served here).
pub async fn elsewhere(app: &AppState, room: &str) -> Option<crate::cluster::NodeRecord> {
    let cluster = app.cluster.as_ref()?;
    match cluster.place(room, app.draining.get().is_some()).await {
        crate::cluster::Placement::There(node) => Some(node),
        crate::cluster::Placement::Here | crate::cluster::Placement::Nowhere => None,
    }
}

/// Whether the participant takes a seat on stage as it enters (a studio feed publishes at once;
/// a browser user takes one with its first `publish`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seat {
    Later,
    Now,
}

/// A participant in its room and known to the SFU.
pub struct Joined {
    pub id: ParticipantId,
    pub room: Arc<Mutex<Room>>,
    pub snapshot: JoinSnapshot,
}

/// Enter `guest`'s room: place (and seat) in the room, then the SFU. The room's broadcasts go
/// to `outbox`, the SFU's events about this participant to `events`.
#[tracing::instrument(name = "join.room", level = "info", skip_all, fields(room = %guest.claims.room, role = ?guest.claims.role), err(level = "info"))]
pub async fn join(app: &AppState, guest: &Guest, seat: Seat, outbox: Outbox, events: sfu::EventSink) -> Result<Joined, AppError> {
    let id = ParticipantId::next();
    let room = app.rooms.open(&guest.claims.room, &app.store, guest.claims.role == Role::Host).await?;
    let snapshot = {
        let mut r = lock(&room);
        let snapshot = r.join(id, &guest.claims, guest.kind, outbox)?;
        if seat == Seat::Now
            && let Err(e) = r.reserve_seat(id)
        {
            r.leave(id, "no seat on stage");
            return Err(e);
        }
        snapshot
    };
    // A standard player (WHEP) watches through its own offer's m-lines, never through ours.
    let added = if guest.kind == ParticipantKind::Player { app.sfu.add_player(id, events) } else { app.sfu.add_participant(id, events) };
    if let Err(e) = added {
        lock(&room).leave(id, "server busy");
        return Err(e.into());
    }
    // The live's profile says whether a viewer short of bandwidth falls back to audio only (the
    // SFU's default is on); a profile set by this join applies to those who came before too.
    let fallback = snapshot.profile.profile.audio_only_fallback;
    let everyone = std::iter::once(id).chain(snapshot.earlier.iter().copied());
    for p in everyone.filter(|p| !fallback || *p != id) {
        if let Err(e) = app.sfu.set_audio_only_fallback(p, fallback) {
            tracing::warn!(participant = %p, "audio-only fallback: {e}");
        }
    }
    if snapshot.went_live {
        let (app, live, profile) = (app.clone(), snapshot.live_id.clone(), snapshot.profile.name.clone());
        let (name, named) = (guest.claims.room.clone(), guest.claims.profile.is_some());
        let room = room.clone();
        tokio::spawn(async move { super::schedule::on_started(&app, &name, &room, &live, &profile, named).await });
    }
    if app.hooks.wants("participant_joined") {
        app.hooks.emit("participant_joined", participant_event(&guest.claims.room, &snapshot.live_id, &snapshot.me, None));
    }
    Ok(Joined { id, room, snapshot })
}

/// A `participant_joined`/`participant_left` webhook's data.
fn participant_event(room: &str, live: &str, p: &crate::protocol::ParticipantInfo, reason: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "room": room,
        "live_id": live,
        "participant": { "identity": p.identity, "name": p.name, "role": p.role, "kind": p.kind },
        "reason": reason,
    })
}

/// The SFU's word about a participant's own tracks, for its room: a new track is announced and
/// everyone else subscribed to it; a gone one is announced. Any other event concerns the
/// participant's own connections and is handed back.
pub fn on_track_event(app: &AppState, room: &Mutex<Room>, ev: SfuEvent) -> Option<SfuEvent> {
    match ev {
        SfuEvent::TrackPublished(info) => {
            let (subscribers, recorded) = {
                let mut r = lock(room);
                let subscribers = r.add_track(info.clone());
                // Recorded once on stage (add_track announced it); the room's lock is released
                // before the archive's is taken.
                let recorded = r.recording_of(info.id);
                (subscribers, recorded)
            };
            if let Some((name, live, (identity, shown))) = recorded {
                app.archive.track_published(app, &name, &live, info.publisher, (&identity, &shown), &info);
            }
            for p in subscribers {
                if let Err(e) = app.sfu.subscribe(p, info.clone()) {
                    tracing::warn!(participant = %p, "subscribe: {e}");
                }
            }
            None
        }
        SfuEvent::TrackUnpublished(track) => {
            let publisher = lock(room).remove_track(track);
            if let Some(p) = publisher {
                app.archive.track_unpublished(app, p, track);
            }
            None
        }
        other => Some(other),
    }
}

/// Leave the room (which tells the others why), then the SFU (which ends the connections).
pub fn leave(app: &AppState, id: ParticipantId, room: &Mutex<Room>, reason: &str) {
    let left = {
        let mut r = lock(room);
        r.leave(id, reason).map(|p| (p, r.name.clone(), r.chat.live_id.clone()))
    };
    app.sfu.remove_participant(id);
    app.archive.publisher_left(app, id);
    if let Some((p, name, live)) = left {
        app.hooks.emit("participant_left", participant_event(&name, &live, &p, Some(reason)));
    }
}
