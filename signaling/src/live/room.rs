//! Room rules: who is in the room, when it starts and ends, its tracks and their mute flags.
//! The stage's seats are [`Stage`]'s. A room is a plain struct behind a mutex; nothing here
//! awaits or does I/O — members' outgoing queues are filled with `try_send`, so one slow client
//! never stalls a room.

use super::chat::Conversation;
use super::commerce::Commerce;
use super::qoe::LiveQoe;
use super::stage::Stage;
use crate::auth::{Claims, Role};
use crate::config::{ChatConfig, CommerceConfig, RoomConfig};
use crate::error::{AppError, ErrorCode};
use crate::profiles::{Profile, ProfileView};
use crate::protocol::{ChatSnapshot, HostState, ParticipantInfo, ParticipantKind, RoomInfo, RoomState, ServerMsg, TrackView};
use crate::store::Store;
use crate::transport::websocket::Text;
use dashmap::DashMap;
use sfu::{ParticipantId, TrackId, TrackInfo};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// One message on its way to members: the message itself (for whoever looks at it: the
/// connection closes after `room_ended`, a studio feed ends) and its JSON text, made once
/// however many members get it.
#[derive(Clone, Debug)]
pub struct Out {
    pub msg: Arc<ServerMsg>,
    pub text: Text,
}

impl Out {
    /// Serialise `msg` once. `None` (logged) only if it does not serialise, which would be a bug.
    pub fn new(msg: ServerMsg) -> Option<Out> {
        match serde_json::to_string(&msg) {
            Ok(text) => Some(Out { msg: Arc::new(msg), text: text.into() }),
            Err(e) => {
                tracing::error!("serialising a message: {e}");
                None
            }
        }
    }
}

/// Outgoing queue of one member's connection ([`outbox`]). Filled with `try_send` under the
/// room's lock: a full queue drops the message and marks the queue *lagged*; from then on
/// messages are dropped until the reader, having written out what was queued, takes a fresh
/// snapshot ([`Room::resync`]) and clears the mark under the same lock. So a member either gets
/// every message or a resync that stands for the ones it missed — never a silent gap.
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Out>,
    lagged: Arc<AtomicBool>,
}

/// The reading end of an [`Outbox`].
pub struct OutboxReader {
    rx: mpsc::Receiver<Out>,
    lagged: Arc<AtomicBool>,
}

/// A member's queue of `capacity` messages.
pub fn outbox(capacity: usize) -> (Outbox, OutboxReader) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let lagged = Arc::new(AtomicBool::new(false));
    (Outbox { tx, lagged: lagged.clone() }, OutboxReader { rx, lagged })
}

impl Outbox {
    /// Queue `out`; false when it was dropped (full now, or lagged already, or the reader gone).
    pub fn push(&self, out: Out) -> bool {
        if self.lagged.load(Ordering::Acquire) {
            return false;
        }
        match self.tx.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagged.store(true, Ordering::Release);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

impl OutboxReader {
    pub async fn recv(&mut self) -> Option<Out> {
        self.rx.recv().await
    }

    pub fn try_recv(&mut self) -> Option<Out> {
        self.rx.try_recv().ok()
    }

    /// Messages were dropped and everything queued before has been read: time to resync.
    pub fn needs_resync(&self) -> bool {
        self.lagged.load(Ordering::Acquire) && self.rx.is_empty()
    }
}

struct Member {
    info: ParticipantInfo,
    /// The role the token gave; `info.role` is what the live made of it (moderator flags).
    token_role: Role,
    outbox: Outbox,
    /// A cascade edge serves its media (cluster/cascade.rs): it is subscribed there, not here.
    media_elsewhere: bool,
}

struct Track {
    info: TrackInfo,
    muted: bool,
}

pub struct Room {
    pub name: String,
    state: RoomState,
    started_at: Option<u64>,
    started: Option<Instant>,
    members: HashMap<ParticipantId, Member>,
    stage: Stage,
    tracks: BTreeMap<TrackId, Track>,
    empty_since: Option<Instant>,
    config: RoomConfig,
    /// Since when the live has been held for its host (docs/protocol.md §6.2).
    held_since: Option<Instant>,
    /// Duration-cap warnings already sent (thresholds, seconds before the end).
    warned: Vec<u64>,
    /// The live's profile (the host's token's, or `room.profile`), and every profile there is.
    profile: ProfileView,
    profiles: Arc<BTreeMap<String, Profile>>,
    /// When the publishers were last asked for key frames (the profile's interval).
    keyframes_asked: Instant,
    /// The live's conversation (comments, reactions, moderation).
    pub chat: Conversation,
    /// Conversation messages waiting for the next fan-out tick.
    chat_queue: Vec<Out>,
    /// The live's supporters and pinned product.
    pub commerce: Commerce,
    /// The players' QoE reports and the KPIs they make.
    pub qoe: LiveQoe,
    /// The stage's tracks, for the cascade's relay links to edge nodes (cluster/cascade.rs).
    stage_watch: tokio::sync::watch::Sender<Vec<TrackInfo>>,
}

/// What a joining participant learns.
#[derive(Debug)]
pub struct JoinSnapshot {
    pub me: ParticipantInfo,
    pub room: RoomInfo,
    pub participants: Vec<ParticipantInfo>,
    pub tracks: Vec<TrackView>,
    /// Tracks to subscribe the newcomer to.
    pub subscribe: Vec<TrackInfo>,
    pub chat: ChatSnapshot,
    pub profile: ProfileView,
    /// When this join set the live's profile: the members who joined under the default one.
    pub earlier: Vec<ParticipantId>,
    /// This join (the host's) put a waiting room on air.
    pub went_live: bool,
    pub live_id: String,
}

/// A live whose room was closed.
#[derive(Debug)]
pub struct ClosedLive {
    pub room: String,
    pub live_id: String,
    pub profile: String,
}

fn view(t: &Track) -> TrackView {
    TrackView { id: t.info.id, participant: t.info.publisher, kind: t.info.kind, mime_type: t.info.codec.mime_type.clone(), muted: t.muted }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Room {
    pub fn new(name: String, config: RoomConfig, chat: Conversation, commerce: Commerce, profiles: Arc<BTreeMap<String, Profile>>) -> Self {
        let profile = ProfileView { name: config.profile.clone(), profile: profiles.get(&config.profile).cloned().unwrap_or_default() };
        Self {
            chat,
            commerce,
            qoe: LiveQoe::default(),
            chat_queue: Vec::new(),
            profile,
            profiles,
            keyframes_asked: Instant::now(),
            name,
            state: RoomState::Waiting,
            started_at: None,
            started: None,
            members: HashMap::new(),
            stage: Stage::new(config.max_publishers),
            tracks: BTreeMap::new(),
            empty_since: Some(Instant::now()),
            held_since: None,
            warned: Vec::new(),
            config,
            stage_watch: tokio::sync::watch::channel(Vec::new()).0,
        }
    }

    /// The stage's tracks now and as they change (a relay link to an edge follows them).
    pub fn watch_stage(&self) -> tokio::sync::watch::Receiver<Vec<TrackInfo>> {
        self.stage_watch.subscribe()
    }

    fn stage_changed(&self) {
        self.stage_watch.send_replace(self.tracks.values().map(|t| t.info.clone()).collect());
    }

    /// The member's media is served by a cascade edge: it is never subscribed here.
    pub fn set_media_elsewhere(&mut self, id: ParticipantId) {
        if let Some(m) = self.members.get_mut(&id) {
            m.media_elsewhere = true;
        }
    }

    pub fn info(&self) -> RoomInfo {
        let publishers = self.publishers();
        RoomInfo {
            name: self.name.clone(),
            state: self.state,
            started_at: self.started_at,
            publishers,
            max_publishers: self.stage.max(),
            viewers: self.members.len() - publishers,
            profile: self.profile.name.clone(),
        }
    }

    pub fn profile(&self) -> &ProfileView {
        &self.profile
    }

    /// The live's video tracks when its profile's key-frame interval has passed since they were
    /// last asked for key frames.
    pub fn keyframes_due(&mut self, now: Instant) -> Vec<TrackId> {
        let every = self.profile.profile.keyframe_interval_secs;
        // The caller ticks every second, give or take: a quarter second of slack keeps a 1 s tick
        // from skipping every other interval.
        let slack = Duration::from_millis(250);
        if every == 0 || !self.is_live() || now.duration_since(self.keyframes_asked) + slack < Duration::from_secs(every as u64) {
            return Vec::new();
        }
        self.keyframes_asked = now;
        self.tracks.values().filter(|t| t.info.kind == sfu::MediaKind::Video).map(|t| t.info.id).collect()
    }

    pub fn state(&self) -> RoomState {
        self.state
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Send `msg` (serialised once) to the members `to` picks. A full outbox drops it for that
    /// member only: one slow client never stalls a room.
    fn send_where(&self, msg: ServerMsg, to: impl Fn(&Member) -> bool) {
        let Some(out) = Out::new(msg) else { return };
        self.send_out(&out, to);
    }

    fn send_out(&self, out: &Out, to: impl Fn(&Member) -> bool) {
        for (id, m) in &self.members {
            if to(m) && !m.outbox.push(out.clone()) {
                tracing::debug!(room = %self.name, participant = %id, "outbox full or closed; message dropped (a resync follows)");
            }
        }
    }

    /// What `id` needs to be current again after its outbox overflowed: a `resync` (the room
    /// as `joined` tells it) and the stage's state that concerns it. Clears the outbox's lag
    /// mark: called under the room's lock, so every message queued after it is newer than the
    /// snapshot. `None` when `id` is no longer a member (removed while its messages were lost).
    pub fn resync(&self, id: ParticipantId, reader: &OutboxReader) -> Option<Vec<ServerMsg>> {
        let m = self.members.get(&id)?;
        reader.lagged.store(false, Ordering::Release);
        if self.chat.is_banned(&m.info.identity) {
            // The `kicked` may have been among the messages dropped.
            return Some(vec![ServerMsg::Kicked { code: ErrorCode::Banned, reason: "you were banned from this live".into() }]);
        }
        self.state_for(id)
    }

    /// `id` continues on a new connection (a resumed session, `live::resume`): its messages go
    /// to `outbox` from now on. Returns what it needs to be current (as [`Room::resync`]), or
    /// `None` when it is no longer a member, is banned, or the live has ended.
    pub fn reattach(&mut self, id: ParticipantId, outbox: Outbox) -> Option<Vec<ServerMsg>> {
        if self.state == RoomState::Ended {
            return None;
        }
        let m = self.members.get_mut(&id)?;
        if m.info.role != Role::Host && self.chat.is_banned(&m.info.identity) {
            return None;
        }
        m.outbox = outbox;
        self.state_for(id)
    }

    /// The room as `id` should see it now: `resync`, then the stage's state that concerns it.
    fn state_for(&self, id: ParticipantId) -> Option<Vec<ServerMsg>> {
        let me = self.members.get(&id)?.info.clone();
        let mut msgs = vec![ServerMsg::Resync {
            participant: me.clone(),
            room: self.info(),
            participants: self.members.values().filter(|o| o.info.id != id).map(|o| o.info.clone()).collect(),
            tracks: self.tracks.values().map(view).collect(),
            chat: Box::new(super::chat::snapshot(&self.chat, &self.commerce, &me.identity, me.role)),
            profile: Box::new(self.profile.clone()),
        }];
        if self.manages_stage(me.role) {
            msgs.push(self.stage_queue());
        }
        if let Some(at) = self.stage.requests().iter().position(|r| *r == id) {
            msgs.push(ServerMsg::StageRequest { state: "pending".into(), position: Some(at + 1) });
        }
        if self.stage.is_invited(id)
            && let Some(host) = self.members.values().find(|o| o.info.role == Role::Host)
        {
            msgs.push(ServerMsg::StageInvite { from: host.info.clone() });
        }
        Some(msgs)
    }

    fn broadcast(&self, msg: ServerMsg, except: Option<ParticipantId>) {
        self.send_where(msg, |m| Some(m.info.id) != except);
    }

    /// Send to every member.
    pub fn broadcast_all(&self, msg: ServerMsg) {
        self.broadcast(msg, None);
    }

    /// Queue a message of the conversation for everyone: the room's chat queue goes out every
    /// `chat.fanout_ms` (`flush_chat`), so each member's connection wakes and writes once for
    /// several comments instead of once per comment. Order within the queue is kept.
    pub fn queue_chat(&mut self, msg: ServerMsg) {
        if let Some(out) = Out::new(msg) {
            self.chat_queue.push(out);
        }
    }

    /// Send the queued conversation messages to every member, in order.
    pub fn flush_chat(&mut self) {
        for out in std::mem::take(&mut self.chat_queue) {
            self.send_out(&out, |_| true);
        }
    }

    /// Send to the members with this role (studio notices go to hosts).
    pub fn send_to_role(&self, role: Role, msg: ServerMsg) {
        self.send_where(msg, |m| m.info.role == role);
    }

    pub fn role_of(&self, id: ParticipantId) -> Option<Role> {
        self.members.get(&id).map(|m| m.info.role)
    }

    pub fn member(&self, id: ParticipantId) -> Option<&ParticipantInfo> {
        self.members.get(&id).map(|m| &m.info)
    }

    /// The members present under `identity` (one per connection).
    pub fn members_of<'a>(&'a self, identity: &'a str) -> impl Iterator<Item = &'a ParticipantInfo> + 'a {
        self.members.values().map(|m| &m.info).filter(move |i| i.identity == identity)
    }

    /// Send to every connection of `identity`.
    pub fn send_to_identity(&self, identity: &str, msg: &ServerMsg) {
        self.send_where(msg.clone(), |m| m.info.identity == identity);
    }

    /// Send to the host and everyone seated on stage.
    pub fn send_to_stage(&self, msg: ServerMsg) {
        self.send_where(msg, |m| m.info.role == Role::Host || self.stage.is_seated(m.info.id));
    }

    /// Send to the host and the moderators.
    pub fn send_to_staff(&self, msg: &ServerMsg) {
        self.send_where(msg.clone(), |m| super::chat::moderates(m.info.role));
    }

    /// Re-derive the role of every connection of `identity` (its token's, then the stage's
    /// and the live's moderator flags); everyone hears of a change.
    pub fn refresh_role(&mut self, identity: &str) {
        let ids: Vec<ParticipantId> = self.members.iter().filter(|(_, m)| m.info.identity == identity).map(|(id, _)| *id).collect();
        for id in ids {
            self.refresh_member(id);
        }
    }

    /// Re-derive one connection's role; everyone hears of a change.
    pub fn refresh_member(&mut self, id: ParticipantId) {
        let Some(m) = self.members.get_mut(&id) else { return };
        let role = self.chat.effective_role(&m.info.identity, self.stage.role_for(id, m.token_role));
        if role != m.info.role {
            m.info.role = role;
            let participant = m.info.clone();
            self.broadcast(ServerMsg::ParticipantUpdated { participant }, None);
        }
    }

    /// Send to one member.
    pub fn send_to(&self, id: ParticipantId, msg: ServerMsg) {
        self.send_where(msg, |m| m.info.id == id);
    }

    /// Whether the stage is open: live, or held for its host.
    pub fn is_live(&self) -> bool {
        matches!(self.state, RoomState::Live | RoomState::Held)
    }

    pub fn stage(&self) -> &Stage {
        &self.stage
    }

    pub fn stage_mut(&mut self) -> &mut Stage {
        &mut self.stage
    }

    /// Who answers stage requests: the host, and moderators when the host lets them.
    pub fn manages_stage(&self, role: Role) -> bool {
        role == Role::Host || (role == Role::Moderator && self.stage.moderators_manage)
    }

    fn stage_queue(&self) -> ServerMsg {
        let requests: Vec<ParticipantInfo> =
            self.stage.requests().iter().filter_map(|id| self.members.get(id).map(|m| m.info.clone())).collect();
        ServerMsg::StageRequests { requests, moderators_manage: self.stage.moderators_manage }
    }

    /// After any change to the queue: the queue to everyone who answers it, and each requester
    /// its place in line.
    pub fn send_stage_queue(&self) {
        self.send_where(self.stage_queue(), |m| self.manages_stage(m.info.role));
        for (at, id) in self.stage.requests().iter().enumerate() {
            self.send_to(*id, ServerMsg::StageRequest { state: "pending".into(), position: Some(at + 1) });
        }
    }

    /// The queue to the host and every moderator, whether they answer it or not (after the host
    /// changed who may: `moderators_manage` tells a moderator its list is no longer its own).
    pub fn send_stage_queue_to_staff(&self) {
        self.send_where(self.stage_queue(), |m| super::chat::moderates(m.info.role));
    }

    /// Enter the room. The host's arrival makes a waiting room live.
    pub fn join(&mut self, id: ParticipantId, claims: &Claims, kind: ParticipantKind, outbox: Outbox) -> Result<JoinSnapshot, AppError> {
        if self.state == RoomState::Ended {
            return Err(AppError::new(ErrorCode::RoomEnded, "this room has ended"));
        }
        if self.members.len() >= self.config.max_participants {
            return Err(AppError::new(ErrorCode::RoomFull, "the room is full"));
        }
        if claims.role != Role::Host && self.chat.is_banned(&claims.identity) {
            return Err(AppError::new(ErrorCode::Banned, "you are banned from this live"));
        }
        let role = self.chat.effective_role(&claims.identity, claims.role);
        let resumed = claims.role == Role::Host && self.state == RoomState::Held;
        if resumed {
            self.state = RoomState::Live;
            self.held_since = None;
        }
        let me = ParticipantInfo { id, identity: claims.identity.clone(), name: claims.name.clone(), role, kind };
        let went_live = claims.role == Role::Host && self.state == RoomState::Waiting;
        let mut profile_changed = false;
        if went_live
            && let Some(name) = &claims.profile
            && *name != self.profile.name
        {
            let profile = self
                .profiles
                .get(name)
                .cloned()
                .ok_or_else(|| AppError::new(ErrorCode::TokenInvalidClaims, format!("no live profile {name:?}")))?;
            self.profile = ProfileView { name: name.clone(), profile };
            profile_changed = true;
        }
        if went_live {
            self.state = RoomState::Live;
            self.started_at = Some(unix_ms());
            self.started = Some(Instant::now());
        }
        self.members.insert(id, Member { info: me.clone(), token_role: claims.role, outbox, media_elsewhere: false });
        if kind == ParticipantKind::User {
            // The pinned product's card is on this page now.
            self.commerce.viewed(1);
        }
        self.empty_since = None;
        self.broadcast(ServerMsg::ParticipantJoined { participant: me.clone() }, Some(id));
        if profile_changed {
            // Those who came before the host joined with the default profile.
            self.broadcast(ServerMsg::LiveProfile { profile: Box::new(self.profile.clone()) }, Some(id));
        }
        if resumed {
            tracing::info!(room = %self.name, "the host is back: the live resumes");
            self.broadcast(ServerMsg::HostStatus { state: HostState::Back, grace_secs: None }, Some(id));
        }
        self.broadcast(ServerMsg::RoomUpdate { room: self.info() }, Some(id));
        if self.manages_stage(role) && !self.stage.requests().is_empty() {
            // A host or moderator (re)joining sees the requests already waiting.
            self.send_to(id, self.stage_queue());
        }
        Ok(JoinSnapshot {
            me,
            room: self.info(),
            participants: self.members.values().filter(|m| m.info.id != id).map(|m| m.info.clone()).collect(),
            tracks: self.tracks.values().map(view).collect(),
            subscribe: self.tracks.values().map(|t| t.info.clone()).collect(),
            chat: super::chat::snapshot(&self.chat, &self.commerce, &claims.identity, role),
            profile: self.profile.clone(),
            earlier: if profile_changed { self.members.keys().copied().filter(|m| *m != id).collect() } else { Vec::new() },
            went_live,
            live_id: self.chat.live_id.clone(),
        })
    }

    /// The live takes the profile of the scheduled live it became (when the host's token named
    /// none): everyone hears `live_profile`. Returns whether viewers short of bandwidth fall back
    /// to audio only under it, and the members to tell the SFU about; `None` when nothing changed.
    pub fn adopt_profile(&mut self, name: &str) -> Option<(bool, Vec<ParticipantId>)> {
        if !self.is_live() || self.profile.name == name {
            return None;
        }
        let profile = self.profiles.get(name).cloned()?;
        self.profile = ProfileView { name: name.to_owned(), profile };
        self.broadcast(ServerMsg::LiveProfile { profile: Box::new(self.profile.clone()) }, None);
        self.broadcast(ServerMsg::RoomUpdate { room: self.info() }, None);
        Some((self.profile.profile.audio_only_fallback, self.members.keys().copied().collect()))
    }

    /// Who holds a seat on stage now.
    pub fn on_stage(&self) -> Vec<&ParticipantInfo> {
        self.stage.seated().filter_map(|id| self.members.get(&id).map(|m| &m.info)).collect()
    }

    /// The stage's tracks in stage order — the host's first, then the other seats in the order
    /// they were taken — what a WHEP player's slots carry (`live::whep`).
    pub fn stage_tracks(&self) -> Vec<TrackInfo> {
        let mut seats: Vec<ParticipantId> = self.stage.seated().collect();
        seats.sort_by_key(|id| self.role_of(*id) != Some(Role::Host));
        seats.iter().flat_map(|id| self.tracks.values().filter(move |t| t.info.publisher == *id).map(|t| t.info.clone())).collect()
    }

    /// How many members have each role now.
    pub fn role_counts(&self) -> Vec<(Role, u64)> {
        let mut counts: Vec<(Role, u64)> = Vec::new();
        for m in self.members.values() {
            match counts.iter_mut().find(|(r, _)| *r == m.info.role) {
                Some((_, n)) => *n += 1,
                None => counts.push((m.info.role, 1)),
            }
        }
        counts
    }

    /// Members with a page (not studio feeds): who sees a pinned product.
    pub fn audience(&self) -> u64 {
        self.members.values().filter(|m| m.info.kind == ParticipantKind::User).count() as u64
    }

    /// How many members hold a seat on stage.
    pub fn publishers(&self) -> usize {
        self.stage.len()
    }

    /// Take (or keep) a seat on stage before publishing (rules: [`Stage::take`]). True if the
    /// seat is newly taken; everyone then gets a `room_update`.
    pub fn reserve_seat(&mut self, id: ParticipantId) -> Result<bool, AppError> {
        let role = self.role_of(id).ok_or_else(|| AppError::new(ErrorCode::NotFound, "not in this room"))?;
        let newly = self.stage.take(id, role, self.is_live())?;
        if newly {
            self.broadcast(ServerMsg::RoomUpdate { room: self.info() }, None);
        }
        Ok(newly)
    }

    /// Give a seat back (a failed first publish): only while it has no tracks.
    pub fn release_seat(&mut self, id: ParticipantId) {
        let has_tracks = self.tracks.values().any(|t| t.info.publisher == id);
        if !has_tracks && self.stage.release(id) {
            self.broadcast(ServerMsg::RoomUpdate { room: self.info() }, None);
        }
    }

    /// A track of a seated member started; returns who should subscribe to it.
    pub fn add_track(&mut self, info: TrackInfo) -> Vec<ParticipantId> {
        if !(self.members.contains_key(&info.publisher) && self.stage.is_seated(info.publisher)) {
            return Vec::new();
        }
        let t = Track { info, muted: false };
        self.broadcast(ServerMsg::TrackPublished { track: view(&t) }, None);
        let publisher = t.info.publisher;
        self.tracks.insert(t.info.id, t);
        self.stage_changed();
        self.members.iter().filter(|(p, m)| **p != publisher && !m.media_elsewhere).map(|(p, _)| *p).collect()
    }

    /// What the archive needs to record a track on stage: the room, the live, and the
    /// publisher's identity and name (`None`: the track is not on stage).
    pub fn recording_of(&self, track: TrackId) -> Option<(String, String, (String, String))> {
        let t = self.tracks.get(&track)?;
        let m = self.members.get(&t.info.publisher)?;
        Some((self.name.clone(), self.chat.live_id.clone(), (m.info.identity.clone(), m.info.name.clone())))
    }

    /// A track is gone; its publisher, if it was known.
    pub fn remove_track(&mut self, track: TrackId) -> Option<ParticipantId> {
        let t = self.tracks.remove(&track)?;
        self.stage_changed();
        self.broadcast(ServerMsg::TrackUnpublished { track, participant: t.info.publisher }, None);
        Some(t.info.publisher)
    }

    pub fn set_muted(&mut self, id: ParticipantId, track: TrackId, muted: bool) -> Result<(), AppError> {
        let t = self
            .tracks
            .get_mut(&track)
            .filter(|t| t.info.publisher == id)
            .ok_or_else(|| AppError::new(ErrorCode::NotFound, "you publish no such track"))?;
        if t.muted != muted {
            t.muted = muted;
            self.broadcast(ServerMsg::TrackMuted { track, participant: id, muted }, None);
        }
        Ok(())
    }

    /// The connection of `id` dropped and waits for a resume (`live::resume`). When it was the
    /// live's only host, everyone else hears at once that the host is reconnecting, with the
    /// time left: the resume's grace, then the hold's (`room.host_grace_secs`) if the host has not
    /// come back by then.
    pub fn connection_away(&self, id: ParticipantId, resume_grace_secs: u64) {
        if self.is_sole_host(id) && self.state == RoomState::Live {
            let grace = resume_grace_secs + self.config.host_grace_secs;
            self.broadcast(ServerMsg::HostStatus { state: HostState::Reconnecting, grace_secs: Some(grace) }, Some(id));
        }
    }

    /// `id` resumed on a new connection: if it is the live's only host, it is back.
    pub fn connection_back(&self, id: ParticipantId) {
        if self.is_sole_host(id) && self.state == RoomState::Live {
            self.broadcast(ServerMsg::HostStatus { state: HostState::Back, grace_secs: None }, Some(id));
        }
    }

    fn is_sole_host(&self, id: ParticipantId) -> bool {
        self.members.get(&id).is_some_and(|m| m.info.role == Role::Host)
            && !self.members.iter().any(|(other, m)| *other != id && m.info.role == Role::Host)
    }

    /// A member left (or was disconnected); who it was, if it was here.
    pub fn leave(&mut self, id: ParticipantId, reason: &str) -> Option<ParticipantInfo> {
        let left = self.members.remove(&id)?;
        if self.stage.forget(id) {
            self.send_stage_queue();
        }
        let gone: Vec<TrackId> = self.tracks.values().filter(|t| t.info.publisher == id).map(|t| t.info.id).collect();
        for t in gone {
            self.remove_track(t);
        }
        self.broadcast(ServerMsg::ParticipantLeft { participant: id, reason: reason.to_owned() }, None);
        let host_gone = left.info.role == Role::Host && !self.members.values().any(|m| m.info.role == Role::Host);
        if host_gone && self.state == RoomState::Live && self.config.host_grace_secs > 0 {
            // Hold the live: viewers stay, the host's rejoin resumes it (docs/protocol.md §6.2).
            self.state = RoomState::Held;
            self.held_since = Some(Instant::now());
            metrics::counter!("onair_publishers_lost_total").increment(1);
            tracing::info!(room = %self.name, grace_secs = self.config.host_grace_secs, "the host dropped: the live is held");
            self.broadcast(ServerMsg::HostStatus { state: HostState::Reconnecting, grace_secs: Some(self.config.host_grace_secs) }, None);
        }
        if self.state != RoomState::Ended {
            self.broadcast(ServerMsg::RoomUpdate { room: self.info() }, None);
        }
        if self.members.is_empty() {
            self.empty_since = Some(Instant::now());
        }
        Some(left.info)
    }

    /// End the room (host only, or the server itself with `by = None`).
    pub fn end(&mut self, by: Option<ParticipantId>, reason: &str) -> Result<(), AppError> {
        if let Some(id) = by
            && !self.members.get(&id).is_some_and(|m| m.info.role == Role::Host)
        {
            return Err(AppError::new(ErrorCode::NotAllowed, "only the host can end the room"));
        }
        if self.state != RoomState::Ended {
            self.state = RoomState::Ended;
            self.broadcast(ServerMsg::RoomEnded { reason: reason.to_owned() }, None);
        }
        Ok(())
    }

    /// Housekeeping: warn the stage as the duration cap nears and end the live at it; end a
    /// hold its host did not come back within; say whether the room can be dropped.
    fn reap_check(&mut self, now: Instant) -> bool {
        let cap = self.config.max_duration_secs;
        if cap > 0
            && self.is_live()
            && let Some(started) = self.started
        {
            let left = cap.saturating_sub(now.duration_since(started).as_secs());
            let due: Vec<u64> =
                self.config.end_warnings_secs.iter().copied().filter(|&w| w < cap && left <= w && !self.warned.contains(&w)).collect();
            if !due.is_empty() {
                // Several thresholds passed at once (a short cap, a late tick): one warning.
                self.warned.extend(due);
                if left > 0 {
                    let message = format!("the live ends in {} (its time limit)", human(left));
                    self.send_to_stage(ServerMsg::RoomWarning { code: "max_duration".into(), ends_in_secs: left, message });
                }
            }
            if now.duration_since(started) >= Duration::from_secs(cap) {
                let _ = self.end(None, &format!("the live reached its time limit ({})", human(cap)));
            }
        }
        if self.state == RoomState::Held
            && self.held_since.is_some_and(|t| now.duration_since(t) >= Duration::from_secs(self.config.host_grace_secs))
        {
            tracing::info!(room = %self.name, "the host did not come back: the live ends");
            let _ = self.end(None, "the host did not come back");
        }
        let empty_for = self.empty_since.map(|t| now.duration_since(t)).unwrap_or_default();
        self.members.is_empty() && (self.state == RoomState::Ended || empty_for > Duration::from_secs(self.config.empty_timeout_secs))
    }
}

/// "4 h", "15 min", "45 s".
fn human(secs: u64) -> String {
    if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else if secs >= 60 {
        format!("{} min", secs.div_ceil(60))
    } else {
        format!("{secs} s")
    }
}

/// Every room of this node.
pub struct Rooms {
    map: DashMap<String, Arc<Mutex<Room>>>,
    config: RoomConfig,
    chat: Arc<ChatConfig>,
    default_words: Arc<Vec<String>>,
    profiles: Arc<BTreeMap<String, Profile>>,
    commerce: Arc<CommerceConfig>,
    /// Rooms whose chat queue has messages for the next fan-out tick.
    chat_dirty: Mutex<std::collections::HashSet<String>>,
    /// Rooms whose live ended and closed, with when: for `room.ended_linger_secs` only their host opens
    /// the name again, so a viewer who reloads (or a player, or a studio feed) hears "the live
    /// has ended" instead of landing in a new, empty room. Taken alone, never with a room's lock.
    ended: Mutex<HashMap<String, Instant>>,
    /// Held while a room is opened from the store or closed into it, so a room's live is never
    /// created twice or reopened while it is being ended. An async mutex: it is held across the
    /// store's awaits, and no other lock is taken inside it except a room's, briefly.
    opening: tokio::sync::Mutex<()>,
}

/// Lock a room. A poisoned lock (a panic while holding it, which would be a bug) still yields
/// the data: room state stays usable for everyone else.
pub fn lock(room: &Mutex<Room>) -> std::sync::MutexGuard<'_, Room> {
    room.lock().unwrap_or_else(|p| p.into_inner())
}

impl Rooms {
    pub fn new(
        config: RoomConfig,
        chat: Arc<ChatConfig>,
        default_words: Arc<Vec<String>>,
        profiles: Arc<BTreeMap<String, Profile>>,
        commerce: Arc<CommerceConfig>,
    ) -> Self {
        Self {
            commerce,
            map: DashMap::new(),
            config,
            chat,
            default_words,
            profiles,
            chat_dirty: Mutex::new(Default::default()),
            ended: Mutex::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// The room `name`, opened with its live from the store when it is not running (after a
    /// restart: the same live, bans and comments included). For `room.ended_linger_secs` after a live
    /// ended only `host` opens the name again (its next live); anyone else gets `room_ended`.
    pub async fn open(&self, name: &str, store: &Store, host: bool) -> Result<Arc<Mutex<Room>>, AppError> {
        if let Some(room) = self.get(name) {
            return Ok(room);
        }
        let _opening = self.opening.lock().await;
        if let Some(room) = self.get(name) {
            return Ok(room);
        }
        {
            let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = ended.get(name).copied() {
                if host || at.elapsed() >= self.linger() {
                    ended.remove(name);
                } else {
                    return Err(AppError::new(ErrorCode::RoomEnded, "this live has ended"));
                }
            }
        }
        let span = tracing::info_span!("room.open", room = %name);
        let live = tracing::Instrument::instrument(store.open_live(name, self.chat.history * 4), span).await?;
        let payments = store.payments_of(&live.id).await?;
        let pinned = store.pinned(&live.id, name).await?.map(|p| crate::live::commerce::catalog::view(&p));
        let commerce = Commerce::new(self.commerce.clone(), payments, pinned);
        let chat = Conversation::new(live, self.chat.clone(), self.default_words.clone());
        let room = Arc::new(Mutex::new(Room::new(name.to_owned(), self.config.clone(), chat, commerce, self.profiles.clone())));
        self.map.insert(name.to_owned(), room.clone());
        Ok(room)
    }

    fn linger(&self) -> Duration {
        Duration::from_secs(self.config.ended_linger_secs)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Mutex<Room>>> {
        self.map.get(name).map(|r| r.clone())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drop rooms that ended or stayed empty too long; their lives end in the store. Returns
    /// the lives that ended.
    pub async fn reap(&self, now: Instant, store: &Store) -> Vec<ClosedLive> {
        let _opening = self.opening.lock().await;
        let mut closed = Vec::new();
        let mut ended_now = Vec::new();
        self.map.retain(|name, room| {
            let mut r = lock(room);
            let drop = r.reap_check(now);
            if drop {
                tracing::info!(room = %name, live = %r.chat.live_id, "room closed");
                if r.state == RoomState::Ended {
                    ended_now.push(name.clone());
                }
                let kpis = serde_json::to_value(r.qoe.kpis()).unwrap_or_default();
                closed.push((name.clone(), r.chat.live_id.clone(), r.profile().name.clone(), kpis));
            }
            !drop
        });
        {
            let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
            ended.retain(|_, at| now.saturating_duration_since(*at) < self.linger());
            ended.extend(ended_now.into_iter().map(|name| (name, now)));
        }
        let mut ended = Vec::with_capacity(closed.len());
        for (room, live, profile, kpis) in closed {
            if let Err(e) = store.save_kpis(&live, &profile, &kpis).await {
                tracing::error!(%live, "keeping the live's KPIs: {e}");
            }
            if let Err(e) = store.end_live(&live).await {
                tracing::error!(%live, "ending the live in the store: {e}");
            }
            ended.push(ClosedLive { room, live_id: live, profile });
        }
        ended
    }

    /// Ask for key frames on the video tracks of every live whose profile's interval passed
    /// (the SFU throttles per track and layer). The SFU is called with no room lock held.
    pub fn ask_keyframes(&self, now: Instant, sfu: &sfu::Sfu) {
        for room in self.all() {
            let due = lock(&room).keyframes_due(now);
            for track in due {
                sfu.request_keyframes(track);
            }
        }
    }

    /// `room` queued conversation messages: send them at the next fan-out tick. Called with no
    /// room lock held (this set's lock is taken alone).
    pub fn mark_chat(&self, room: &str) {
        self.chat_dirty.lock().unwrap_or_else(|p| p.into_inner()).insert(room.to_owned());
    }

    /// The fan-out tick: every room that queued conversation messages sends them.
    pub fn flush_chat(&self) {
        let dirty = std::mem::take(&mut *self.chat_dirty.lock().unwrap_or_else(|p| p.into_inner()));
        for name in dirty {
            if let Some(room) = self.get(&name) {
                lock(&room).flush_chat();
            }
        }
    }

    /// The names of the rooms this node holds: running, or ended and lingering (the cluster
    /// keeps them placed here). Takes the ended map's lock alone.
    pub fn held(&self) -> Vec<String> {
        let mut names: Vec<String> = self.map.iter().map(|r| r.key().clone()).collect();
        names.extend(self.ended.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned());
        names
    }

    /// Every running room.
    pub fn all(&self) -> Vec<Arc<Mutex<Room>>> {
        self.map.iter().map(|r| r.value().clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(id: &str, role: Role) -> Claims {
        Claims { identity: id.into(), name: id.into(), room: "r".into(), role, exp: 0, profile: None }
    }

    pub(crate) fn test_room() -> Room {
        let chat = Conversation::new(crate::store::LiveState::fresh("l".into()), Arc::new(ChatConfig::default()), Arc::new(Vec::new()));
        let commerce = Commerce::new(Arc::new(crate::config::CommerceConfig::default()), Vec::new(), None);
        Room::new("r".into(), RoomConfig::default(), chat, commerce, Arc::new(crate::profiles::builtin()))
    }

    #[test]
    fn stage_rules() {
        let mut room = test_room();
        let (tx, _rx) = outbox(1024);
        let ids: Vec<ParticipantId> = (0..7).map(|_| ParticipantId::next()).collect();
        room.join(ids[0], &claims("c0", Role::Cohost), ParticipantKind::User, tx.clone()).unwrap();
        assert_eq!(room.reserve_seat(ids[0]).unwrap_err().code, ErrorCode::RoomNotLive);
        room.join(ids[1], &claims("h", Role::Host), ParticipantKind::User, tx.clone()).unwrap();
        assert_eq!(room.state(), RoomState::Live);
        room.reserve_seat(ids[0]).unwrap();
        room.reserve_seat(ids[1]).unwrap();
        for (i, id) in ids.iter().enumerate().skip(2) {
            room.join(*id, &claims(&format!("c{i}"), if i == 6 { Role::Viewer } else { Role::Cohost }), ParticipantKind::User, tx.clone())
                .unwrap();
        }
        room.reserve_seat(ids[2]).unwrap();
        room.reserve_seat(ids[3]).unwrap();
        assert_eq!(room.reserve_seat(ids[4]).unwrap_err().code, ErrorCode::StageFull);
        assert_eq!(room.reserve_seat(ids[6]).unwrap_err().code, ErrorCode::NotAllowed);
        room.reserve_seat(ids[3]).unwrap(); // a seated publisher renegotiates freely
        room.leave(ids[3], "left");
        room.reserve_seat(ids[4]).unwrap(); // the seat freed is taken
        assert_eq!(room.end(Some(ids[0]), "x").unwrap_err().code, ErrorCode::NotAllowed);
        room.end(Some(ids[1]), "bye").unwrap();
        assert_eq!(
            room.join(ParticipantId::next(), &claims("late", Role::Viewer), ParticipantKind::User, tx).unwrap_err().code,
            ErrorCode::RoomEnded
        );
    }

    #[test]
    fn every_participant_object_carries_its_kind() {
        let mut room = test_room();
        let (host_tx, mut host_rx) = outbox(16);
        let (tx, _rx) = outbox(16);
        let (host, feed) = (ParticipantId::next(), ParticipantId::next());
        let me = room.join(host, &claims("h", Role::Host), ParticipantKind::User, host_tx).unwrap().me;
        assert_eq!(me.kind, ParticipantKind::User);
        room.join(feed, &claims("studio:k1", Role::Cohost), ParticipantKind::Studio, tx.clone()).unwrap();
        let first = host_rx.try_recv().map(|o| (*o.msg).clone());
        let Some(ServerMsg::ParticipantJoined { participant }) = first else { panic!("participant_joined first") };
        assert_eq!((participant.identity.as_str(), participant.kind), ("studio:k1", ParticipantKind::Studio));
        let late = room.join(ParticipantId::next(), &claims("v", Role::Viewer), ParticipantKind::User, tx).unwrap();
        let kinds: BTreeMap<String, ParticipantKind> = late.participants.into_iter().map(|p| (p.identity, p.kind)).collect();
        assert_eq!(kinds, BTreeMap::from([("h".into(), ParticipantKind::User), ("studio:k1".into(), ParticipantKind::Studio)]));
    }
}
