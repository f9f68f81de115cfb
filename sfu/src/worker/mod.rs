//! The worker loop: owns a set of participants' sessions and drives them. One thread per core;
//! the only place in the media plane that does I/O (it sends on the shared UDP socket).

pub mod routing;

use crate::api::{CodecInfo, ConnState, DemuxCtl, EventSink, MediaKind, SfuEvent, Shared, SubscriberStats, TrackInfo, TrackStats};
use crate::error::SfuError;
use crate::forward::forwarder::{MAX_LAYERS, layer_of_rid};
use crate::forward::selector::Quality;
use crate::ids::{ParticipantId, SessionKey, SessionRole, TrackId};
use crate::media::codec::Codec;
use crate::net::batch::SendBatch;
use crate::net::demux::Route;
use crate::session::{PeerSession, PublishedLayer, PublishedTrack};
use crate::worker::routing::{MediaPacket, Published, Router};
use bytes::BytesMut;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

type Reply<T> = oneshot::Sender<Result<T, SfuError>>;

/// Control-plane requests from signaling.
pub(crate) enum Command {
    AddParticipant {
        participant: ParticipantId,
        events: EventSink,
    },
    Publish {
        participant: ParticipantId,
        offer: String,
        reply: Reply<String>,
    },
    Subscribe {
        participant: ParticipantId,
        tracks: Vec<TrackInfo>,
    },
    Unsubscribe {
        participant: ParticipantId,
        track: TrackId,
    },
    SubscriberAnswer {
        participant: ParticipantId,
        answer: String,
        reply: Reply<()>,
    },
    Candidate {
        key: SessionKey,
        candidate: RTCIceCandidateInit,
        reply: Reply<()>,
    },
    RemoveParticipant {
        participant: ParticipantId,
    },
    /// The viewer renders `track` this tall (device pixels; 0 = not shown).
    VideoSize {
        participant: ParticipantId,
        track: TrackId,
        height: u32,
    },
    /// The viewer's quality choice, for one track or all.
    Quality {
        participant: ParticipantId,
        track: Option<TrackId>,
        quality: Quality,
    },
    Stats {
        participant: ParticipantId,
        reply: Reply<SubscriberStats>,
    },
    /// Publish tracks fed by an in-process source (the RTMP bridge) instead of a peer session.
    OpenIngest {
        participant: ParticipantId,
        tracks: Vec<(MediaKind, CodecInfo)>,
        reply: Reply<Vec<TrackInfo>>,
    },
}

/// Everything a worker receives.
pub(crate) enum WorkerMsg {
    Datagram {
        session: SessionKey,
        from: SocketAddr,
        data: BytesMut,
        at: Instant,
    },
    Command(Command),
    /// A packet of a track some local session subscribes to.
    Media(Arc<MediaPacket>),
    /// A worker gained its first (or lost its last) subscriber of a track published here.
    Interest {
        track: TrackId,
        worker: usize,
        add: bool,
    },
    /// Someone wants a keyframe of a track published here, on this layer.
    KeyframeRequest(TrackId, u8),
    /// A track is gone: drop local subscriptions to it.
    TrackGone(TrackId),
    /// The highest layer a worker's subscribers want of a track published here (dynacast);
    /// `None` when it has none left.
    LayerDemand {
        track: TrackId,
        worker: usize,
        layer: Option<u8>,
    },
    /// A packet of an ingest track (RTMP bridge) owned by a participant on this worker.
    Ingest(ParticipantId, MediaPacket),
}

struct ParticipantState {
    events: EventSink,
    publisher: Option<PeerSession>,
    subscriber: Option<PeerSession>,
    /// Tracks this participant publishes through the in-process ingest path.
    ingest: Vec<TrackId>,
}

impl ParticipantState {
    fn session(&mut self, role: SessionRole) -> &mut Option<PeerSession> {
        match role {
            SessionRole::Publisher => &mut self.publisher,
            SessionRole::Subscriber => &mut self.subscriber,
        }
    }
}

/// How long a worker sleeps at most between housekeeping ticks.
const TICK: Duration = Duration::from_millis(50);
/// A video subscriber still waiting for its first keyframe asks again this often.
const KEYFRAME_RETRY: Duration = Duration::from_millis(1000);
/// Messages handled between two checks of timers.
const BATCH: usize = 256;
/// How often layer caps are recomputed from bandwidth estimates.
const ALLOCATION_INTERVAL: Duration = Duration::from_millis(250);
/// A layer nobody wants any more is paused at the publisher after this long.
const DYNACAST_DOWN_DELAY: Duration = Duration::from_millis(1000);
/// A connected client silent this long (no STUN, RTCP or media at all) counts as
/// disconnected: forwarding to it pauses until it is heard again.
const ICE_DISCONNECTED: Duration = Duration::from_secs(8);
/// ... and after this long its session is closed (the client reconnects afresh).
const ICE_FAILED: Duration = Duration::from_secs(30);

struct Worker {
    idx: usize,
    shared: Arc<Shared>,
    participants: HashMap<ParticipantId, ParticipantState>,
    router: Router,
    timers: BinaryHeap<Reverse<(Instant, SessionKey)>>,
    last_tick: Instant,
    last_allocation: Instant,
    /// Dynacast: the demand this worker last reported per track.
    demand_sent: HashMap<TrackId, u8>,
    /// Outgoing datagrams of one fan-out, sent with one sendmmsg.
    batch: SendBatch,
}

pub(crate) fn run(idx: usize, shared: Arc<Shared>, rx: Receiver<WorkerMsg>, urgent: Receiver<WorkerMsg>) {
    let mut w = Worker {
        idx,
        shared,
        participants: HashMap::new(),
        router: Router::default(),
        timers: BinaryHeap::new(),
        last_tick: Instant::now(),
        last_allocation: Instant::now(),
        demand_sent: HashMap::new(),
        batch: SendBatch::default(),
    };
    while !w.shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        w.fire_timers(now);
        if now.duration_since(w.last_tick) >= TICK {
            w.tick(now);
            w.last_tick = now;
        }
        let next = w.timers.peek().map(|Reverse((t, _))| *t).unwrap_or(now + TICK);
        let wait = next.saturating_duration_since(now).min(TICK);
        // Handshakes first: an urgent datagram is never stuck behind more than one message.
        let first = crossbeam_channel::select! {
            recv(urgent) -> m => m.map_err(|_| RecvTimeoutError::Disconnected),
            recv(rx) -> m => m.map_err(|_| RecvTimeoutError::Disconnected),
            default(wait) => Err(RecvTimeoutError::Timeout),
        };
        match first {
            Ok(msg) => {
                w.handle(msg);
                for msg in rx.try_iter().take(BATCH) {
                    for u in urgent.try_iter().take(BATCH) {
                        w.handle(u);
                    }
                    w.handle(msg);
                }
                for u in urgent.try_iter().take(BATCH) {
                    w.handle(u);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let all: Vec<ParticipantId> = w.participants.keys().copied().collect();
    for p in all {
        w.remove_participant(p);
    }
}

impl Worker {
    fn handle(&mut self, msg: WorkerMsg) {
        match msg {
            WorkerMsg::Datagram { session, from, data, at } => self.handle_datagram(session, from, data, at),
            WorkerMsg::Command(cmd) => self.handle_command(cmd),
            WorkerMsg::Media(pkt) => self.fan_out_local(&pkt),
            WorkerMsg::Interest { track, worker, add } => self.router.set_interest(track, worker, add),
            WorkerMsg::KeyframeRequest(track, layer) => self.keyframe_request(track, layer, Instant::now()),
            WorkerMsg::TrackGone(track) => self.track_gone(track),
            WorkerMsg::LayerDemand { track, worker, layer } => self.layer_demand(track, worker, layer),
            WorkerMsg::Ingest(participant, pkt) => self.ingest(participant, pkt),
        }
    }

    fn session(&mut self, key: SessionKey) -> Option<&mut PeerSession> {
        self.participants.get_mut(&key.participant)?.session(key.role).as_mut()
    }

    fn emit(&self, participant: ParticipantId, event: SfuEvent) {
        if let Some(p) = self.participants.get(&participant)
            && let Err(e) = p.events.try_send(event)
        {
            match e {
                // The participant's signaling session has ended; its removal is on the way.
                tokio::sync::mpsc::error::TrySendError::Closed(_) => tracing::debug!(%participant, "event dropped: participant gone"),
                tokio::sync::mpsc::error::TrySendError::Full(_) => tracing::warn!(%participant, "event dropped: queue full"),
            }
        }
    }

    // ---- input -------------------------------------------------------------------------

    fn handle_datagram(&mut self, key: SessionKey, from: SocketAddr, data: BytesMut, at: Instant) {
        let local_addr = self.shared.local_addr;
        let Some(session) = self.session(key) else { return };
        session.last_rx = at;
        if crate::net::demux::is_nomination(&data) {
            session.nominating = Some(from);
        }
        let regained = session.ever_connected && !session.connected;
        let msg = TaggedBytesMut {
            now: at,
            transport: TransportContext { local_addr, peer_addr: from, ecn: None, transport_protocol: TransportProtocol::UDP },
            message: data,
        };
        match catch_unwind(AssertUnwindSafe(|| session.pc.handle_read(msg))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // Garbage from a bound address, a replayed SRTP packet, a late DTLS record: the
                // session drops it and carries on.
                self.shared.counters.session_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(?key, %from, "input rejected: {e}");
            }
            Err(_) => {
                self.shared.counters.session_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(?key, %from, "session panicked on input; closing it");
                self.close_session(key, "internal error on input");
                return;
            }
        }
        if regained {
            self.set_connected(key, true, Instant::now());
        }
        self.pump(key, Instant::now());
    }

    /// Our liveness verdict for a session that had connected: traffic stopped (Disconnected,
    /// forwarding pauses) or came back (Connected; video restarts at a keyframe).
    fn set_connected(&mut self, key: SessionKey, up: bool, now: Instant) {
        let mut waiting = Vec::new();
        let Some(s) = self.session(key) else { return };
        if s.connected == up {
            return;
        }
        s.connected = up;
        if up {
            s.ever_connected = true;
            for sub in s.forwarders.values_mut() {
                // Every video stream starts at a keyframe; ask at once, for the layer this
                // subscriber will start on.
                if let Some(layer) = sub.forwarder.wants_keyframe(now) {
                    sub.forwarder.last_keyframe_request = Some(now);
                    waiting.push((sub.forwarder.track, layer));
                }
            }
        }
        for (track, layer) in waiting {
            self.request_keyframe_from_publisher(track, layer);
        }
        let conn = if up { ConnState::Connected } else { ConnState::Disconnected };
        tracing::debug!(?key, ?conn, "connection state");
        self.emit(key.participant, SfuEvent::Connection(key.role, conn));
    }

    fn handle_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::AddParticipant { participant, events } => {
                if self
                    .participants
                    .insert(participant, ParticipantState { events, publisher: None, subscriber: None, ingest: Vec::new() })
                    .is_none()
                {
                    self.shared.counters.participants.fetch_add(1, Ordering::Relaxed);
                }
            }
            Command::Publish { participant, offer, reply } => {
                let r = self.publish(participant, offer, now);
                let _ = reply.send(r);
            }
            Command::Subscribe { participant, tracks } => {
                if let Err(e) = self.subscribe(participant, tracks, now) {
                    tracing::warn!(%participant, "subscribe failed: {e}");
                }
            }
            Command::Unsubscribe { participant, track } => self.unsubscribe(participant, track, now),
            Command::SubscriberAnswer { participant, answer, reply } => {
                let key = SessionKey { participant, role: SessionRole::Subscriber };
                let r = match self.session(key) {
                    None => Err(SfuError::NoSession),
                    Some(s) => s.apply_answer(now, answer).and_then(|()| if s.renegotiate { s.negotiate(now) } else { Ok(None) }),
                };
                let r = match r {
                    Ok(Some(offer)) => {
                        self.emit(participant, SfuEvent::SubscriberOffer(offer));
                        Ok(())
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                };
                self.pump(key, now);
                let _ = reply.send(r);
            }
            Command::Candidate { key, candidate, reply } => {
                let known = self.participants.contains_key(&key.participant);
                let r = match self.session(key) {
                    // Trickled before the offer that creates the session: an ICE-lite server
                    // learns the address from the client's checks anyway, so this is no error.
                    None if known => Ok(()),
                    None => Err(SfuError::NoSession),
                    Some(s) => s.add_remote_candidate(candidate),
                };
                self.pump(key, now);
                let _ = reply.send(r);
            }
            Command::RemoveParticipant { participant } => self.remove_participant(participant),
            Command::VideoSize { participant, track, height } => {
                let key = SessionKey { participant, role: SessionRole::Subscriber };
                if let Some(sub) = self.session(key).and_then(|s| s.forwarders.get_mut(&track)) {
                    sub.forwarder.wanted_height = Some(height);
                }
                self.reallocate(key, now);
            }
            Command::Quality { participant, track, quality } => {
                let key = SessionKey { participant, role: SessionRole::Subscriber };
                if let Some(s) = self.session(key) {
                    for (id, sub) in s.forwarders.iter_mut() {
                        if track.is_none_or(|t| t == *id) {
                            sub.forwarder.quality = quality;
                        }
                    }
                }
                self.reallocate(key, now);
            }
            Command::Stats { participant, reply } => {
                let key = SessionKey { participant, role: SessionRole::Subscriber };
                let stats = match self.session(key) {
                    None => SubscriberStats::default(),
                    Some(s) => SubscriberStats {
                        bandwidth_bps: s.bandwidth_estimate().map(|b| b as u64),
                        twcc_feedback: s.twcc_feedback(),
                        path: s.path_stats().map(|(q, loss, probes)| crate::api::PathStats {
                            queue_delay_ms: q.as_secs_f64() * 1000.0,
                            loss,
                            probes,
                        }),
                        tracks: s
                            .forwarders
                            .values()
                            .map(|sub| {
                                let f = &sub.forwarder;
                                TrackStats {
                                    track: f.track,
                                    layer: f.current,
                                    max_layer: f.max_layer,
                                    max_temporal: f.max_temporal,
                                    budget_bps: f.share_bps.map(|b| b as u64),
                                    packets: f.packets,
                                    bytes: f.bytes,
                                    layer_bps: f.rates.rates().map(|r| r as u64),
                                }
                            })
                            .collect(),
                    },
                };
                let _ = reply.send(Ok(stats));
            }
            Command::OpenIngest { participant, tracks, reply } => {
                let _ = reply.send(self.open_ingest(participant, tracks));
            }
        }
    }

    /// Register tracks whose packets arrive as [`WorkerMsg::Ingest`] rather than from a peer
    /// session. From here on the router treats them like any published track.
    fn open_ingest(&mut self, participant: ParticipantId, tracks: Vec<(MediaKind, CodecInfo)>) -> Result<Vec<TrackInfo>, SfuError> {
        let max = self.shared.config.max_tracks_per_publisher;
        let state = self.participants.get_mut(&participant).ok_or(SfuError::NoSession)?;
        if state.ingest.len() + tracks.len() > max {
            return Err(SfuError::Limit("too many tracks for one publisher"));
        }
        let mut infos = Vec::with_capacity(tracks.len());
        for (kind, codec) in tracks {
            let id = TrackId::next();
            state.ingest.push(id);
            infos.push(TrackInfo { id, publisher: participant, kind, codec });
        }
        for info in &infos {
            self.router.published.insert(info.id, Published::new(participant, self.shared.workers.len()));
            self.shared.tracks.insert(info.id, self.idx);
            self.shared.counters.tracks.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%participant, track = %info.id, kind = ?info.kind, mime = %info.codec.mime_type, "ingest track published");
            self.emit(participant, SfuEvent::TrackPublished(info.clone()));
        }
        Ok(infos)
    }

    /// One packet from the in-process ingest path: route it like a received one.
    fn ingest(&mut self, participant: ParticipantId, pkt: MediaPacket) {
        // Only the participant that opened the track may feed it.
        if self.router.published.get(&pkt.track).is_none_or(|p| p.publisher != participant) {
            return;
        }
        self.shared.counters.rtp_in.fetch_add(1, Ordering::Relaxed);
        self.route(pkt);
    }

    /// Recompute a subscriber's layer caps now (after a size or quality change).
    fn reallocate(&mut self, key: SessionKey, now: Instant) {
        if let Some(s) = self.session(key) {
            s.allocate_layers(now);
        }
        self.update_demand();
    }

    /// Dynacast, subscriber side: tell each publisher's worker the highest layer this worker's
    /// subscribers want of its tracks, when that changes.
    fn update_demand(&mut self) {
        let now = Instant::now();
        let mut demand: HashMap<TrackId, u8> = HashMap::new();
        for p in self.participants.values() {
            let Some(s) = p.subscriber.as_ref() else { continue };
            for (track, sub) in &s.forwarders {
                let Some(wants) = sub.forwarder.demand(now) else { continue };
                let e = demand.entry(*track).or_insert(0);
                *e = (*e).max(wants);
            }
        }
        let mut changes: Vec<(TrackId, Option<u8>)> = Vec::new();
        for (track, layer) in &demand {
            if self.demand_sent.get(track) != Some(layer) {
                changes.push((*track, Some(*layer)));
            }
        }
        for track in self.demand_sent.keys() {
            if !demand.contains_key(track) {
                changes.push((*track, None));
            }
        }
        self.demand_sent = demand;
        for (track, layer) in changes {
            let Some(owner) = self.shared.tracks.get(&track).map(|w| *w) else { continue };
            if owner == self.idx {
                self.layer_demand(track, self.idx, layer);
            } else {
                let _ = self.shared.send_to_worker(owner, WorkerMsg::LayerDemand { track, worker: self.idx, layer });
            }
        }
    }

    /// Dynacast, publisher side: record a worker's demand; announce a higher wanted layer at
    /// once (the tick announces a lower one after `DYNACAST_DOWN_DELAY`).
    fn layer_demand(&mut self, track: TrackId, worker: usize, layer: Option<u8>) {
        let Some(p) = self.router.published.get_mut(&track) else { return };
        if let Some(slot) = p.demand.get_mut(worker) {
            *slot = layer;
        }
        let wanted = p.wanted();
        if p.announced.is_none_or(|a| wanted > a) {
            p.announced = Some(wanted);
            p.lower_since = None;
            let publisher = p.publisher;
            self.announce_layers(publisher, track, wanted);
        }
    }

    fn announce_layers(&mut self, publisher: ParticipantId, track: TrackId, max_layer: u8) {
        // Only simulcast tracks can pause layers.
        let key = SessionKey { participant: publisher, role: SessionRole::Publisher };
        let simulcast =
            self.session(key).and_then(|s| s.published.values().find(|t| t.id == track).map(|t| t.layers.len() > 1)).unwrap_or(false);
        if simulcast {
            tracing::debug!(%track, max_layer, "dynacast: layers wanted");
            self.emit(publisher, SfuEvent::LayersWanted(track, max_layer));
        }
    }

    fn publish(&mut self, participant: ParticipantId, offer: String, now: Instant) -> Result<String, SfuError> {
        let key = SessionKey { participant, role: SessionRole::Publisher };
        let state = self.participants.get_mut(&participant).ok_or(SfuError::NoSession)?;
        let fresh = state.publisher.is_none();
        if fresh {
            let session = self.shared.factory.build(key, now)?;
            self.shared.counters.sessions.fetch_add(1, Ordering::Relaxed);
            let _ = self.shared.demux.try_send(DemuxCtl::Register(session.ufrag.clone(), Route { worker: self.idx, session: key }));
            state.publisher = Some(session);
        }
        // Checked just above; the session exists.
        let Some(session) = state.publisher.as_mut() else { return Err(SfuError::NoSession) };
        let answer = session.apply_offer(now, offer);
        let candidate = session.local_candidate.clone();
        match answer {
            Ok(sdp) => {
                self.emit(participant, SfuEvent::LocalCandidate(SessionRole::Publisher, candidate));
                self.pump(key, now);
                Ok(sdp)
            }
            Err(e) => {
                if fresh {
                    self.close_session(key, "offer rejected");
                }
                Err(e)
            }
        }
    }

    /// Start forwarding `tracks` to `participant`: one offer for all of them (a viewer joining a
    /// room with four tracks gets one offer, not one and then another for the rest).
    fn subscribe(&mut self, participant: ParticipantId, tracks: Vec<TrackInfo>, now: Instant) -> Result<(), SfuError> {
        let key = SessionKey { participant, role: SessionRole::Subscriber };
        let state = self.participants.get_mut(&participant).ok_or(SfuError::NoSession)?;
        let fresh = state.subscriber.is_none();
        if fresh {
            let session = self.shared.factory.build(key, now)?;
            self.shared.counters.sessions.fetch_add(1, Ordering::Relaxed);
            let _ = self.shared.demux.try_send(DemuxCtl::Register(session.ufrag.clone(), Route { worker: self.idx, session: key }));
            state.subscriber = Some(session);
        }
        let Some(session) = state.subscriber.as_mut() else { return Err(SfuError::NoSession) };
        let mut added = Vec::with_capacity(tracks.len());
        let mut refused = None;
        for track in tracks {
            match session.add_subscription(track.id, track.publisher.to_string(), track.kind, &track.codec) {
                Ok(()) => added.push(track),
                Err(e) => {
                    tracing::warn!(%participant, track = %track.id, "subscribe: {e}");
                    refused = Some(e);
                }
            }
        }
        if added.is_empty() {
            return refused.map_or(Ok(()), Err);
        }
        let offer = session.negotiate(now)?;
        let candidate = session.local_candidate.clone();
        let connected = session.connected;
        for track in &added {
            if self.router.add_subscriber(track.id, participant) {
                self.send_interest(track.id, true);
            }
        }
        if let Some(offer) = offer {
            self.emit(participant, SfuEvent::SubscriberOffer(offer));
            if fresh {
                self.emit(participant, SfuEvent::LocalCandidate(SessionRole::Subscriber, candidate));
            }
        }
        // A keyframe is requested once this subscriber is connected (see `handle_event`): one
        // asked for now would arrive before DTLS is up and be wasted.
        for track in &added {
            if track.kind == MediaKind::Video && connected {
                self.request_keyframe_from_publisher(track.id, (MAX_LAYERS - 1) as u8);
            }
        }
        self.pump(key, now);
        Ok(())
    }

    fn unsubscribe(&mut self, participant: ParticipantId, track: TrackId, now: Instant) {
        let key = SessionKey { participant, role: SessionRole::Subscriber };
        let Some(session) = self.session(key) else { return };
        if !session.remove_subscription(track) {
            return;
        }
        let offer = session.negotiate(now);
        if self.router.remove_subscriber(track, participant) {
            self.send_interest(track, false);
        }
        match offer {
            Ok(Some(offer)) => self.emit(participant, SfuEvent::SubscriberOffer(offer)),
            Ok(None) => {}
            Err(e) => tracing::warn!(%participant, "renegotiation failed: {e}"),
        }
        self.pump(key, now);
    }

    fn send_interest(&mut self, track: TrackId, add: bool) {
        let Some(owner) = self.shared.tracks.get(&track).map(|w| *w) else { return };
        if owner == self.idx {
            self.router.set_interest(track, self.idx, add);
        } else {
            let _ = self.shared.send_to_worker(owner, WorkerMsg::Interest { track, worker: self.idx, add });
        }
    }

    fn request_keyframe_from_publisher(&mut self, track: TrackId, layer: u8) {
        self.shared.counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        let Some(owner) = self.shared.tracks.get(&track).map(|w| *w) else { return };
        if owner == self.idx {
            self.keyframe_request(track, layer, Instant::now());
        } else {
            let _ = self.shared.send_to_worker(owner, WorkerMsg::KeyframeRequest(track, layer));
        }
    }

    /// Throttled PLI toward the publisher of `track` (which lives on this worker), for the
    /// encoding of `layer` (or the nearest one it sends).
    fn keyframe_request(&mut self, track: TrackId, layer: u8, now: Instant) {
        let throttle = self.shared.config.pli_throttle;
        let Some(publisher) = self.router.published.get(&track).map(|p| p.publisher) else { return };
        let key = SessionKey { participant: publisher, role: SessionRole::Publisher };
        let Some(session) = self.session(key) else { return };
        let Some(t) = session.published.values_mut().find(|t| t.id == track) else { return };
        let receiver_id = t.receiver_id;
        let Some(l) = t.layer_for_keyframe(layer) else { return };
        if l.last_pli.is_some_and(|last| now.duration_since(last) < throttle) {
            l.pli_pending = true;
            return;
        }
        l.last_pli = Some(now);
        l.pli_pending = false;
        let media_ssrc = l.ssrc;
        if let Some(mut receiver) = session.pc.rtp_receiver(receiver_id) {
            let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc };
            match receiver.write_rtcp(now, vec![Box::new(pli)]) {
                Ok(()) => {
                    self.shared.counters.plis_sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::debug!(%track, "PLI not sent: {e}"),
            }
        }
        self.pump(key, now);
    }

    // ---- output ------------------------------------------------------------------------

    /// Drain a session after input: datagrams to the socket, events, received media; then
    /// reschedule its timer.
    fn pump(&mut self, key: SessionKey, now: Instant) {
        let mut events = Vec::new();
        let mut media = Vec::new();
        let mut feedback = Vec::new();
        {
            let shared = &self.shared;
            let Some(state) = self.participants.get_mut(&key.participant) else { return };
            let Some(session) = state.session(key.role).as_mut() else { return };
            flush_writes(shared, session);
            while let Some(ev) = session.pc.poll_event() {
                events.push(ev);
            }
            while let Some(TaggedRTCMessage { message, now: at }) = session.pc.poll_read() {
                match message {
                    RTCMessage::RtpPacket(track_id, mut packet) => {
                        let Some(t) = session.published.get_mut(&track_id) else { continue };
                        let (id, codec) = (t.id, t.codec);
                        // A layer whose OnOpen is still queued is not known yet: skip its packet.
                        let Some(l) = t.layer_by_ssrc(packet.header.ssrc) else { continue };
                        l.packets += 1;
                        let layer = l.layer;
                        shared.counters.rtp_in.fetch_add(1, Ordering::Relaxed);
                        // Each leg negotiates its own extensions: start the outgoing header
                        // clean (a stale profile or padding count would mis-size the packet
                        // once the subscriber leg adds its transport-cc number).
                        packet.header.extension = false;
                        packet.header.extensions.clear();
                        packet.header.extension_profile = 0;
                        packet.header.extensions_padding = 0;
                        packet.header.csrc.clear();
                        let keyframe = codec.is_keyframe_start(&packet.payload);
                        let frame_height = if keyframe && codec == Codec::Vp8 {
                            crate::media::codec::vp8_keyframe_size(&packet.payload).map(|(_, h)| h)
                        } else {
                            None
                        };
                        let temporal = if codec == Codec::Vp8 { crate::media::codec::vp8_temporal(&packet.payload) } else { None };
                        media.push(MediaPacket {
                            track: id,
                            layer,
                            keyframe,
                            frame_height,
                            temporal,
                            header: packet.header,
                            payload: packet.payload,
                            received: at,
                        });
                    }
                    RTCMessage::RtcpPacket(track_id, packets) if key.role == SessionRole::Subscriber => {
                        let wants_keyframe =
                            packets.iter().any(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>());
                        if wants_keyframe && let Ok(track) = track_id.parse::<TrackId>() {
                            // The viewer's decoder wants a keyframe of what it is fed.
                            let layer = session.forwarders.get(&track).and_then(|s| s.forwarder.current).unwrap_or(0);
                            feedback.push((track, layer));
                        }
                    }
                    _ => {}
                }
            }
            // Writes the reads may have caused (NACK responses, receiver reports).
            flush_writes(shared, session);
            reschedule(&mut self.timers, session);
        }
        for ev in events {
            self.handle_event(key, ev, now);
        }
        for pkt in media {
            self.route(pkt);
        }
        for (track, layer) in feedback {
            self.request_keyframe_from_publisher(track, layer);
        }
    }

    fn handle_event(&mut self, key: SessionKey, ev: RTCPeerConnectionEvent, now: Instant) {
        match ev {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let conn = match state {
                    RTCPeerConnectionState::Connected => ConnState::Connected,
                    RTCPeerConnectionState::Disconnected => ConnState::Disconnected,
                    RTCPeerConnectionState::Failed => ConnState::Failed,
                    RTCPeerConnectionState::Closed => ConnState::Closed,
                    _ => return,
                };
                match conn {
                    ConnState::Connected => self.set_connected(key, true, now),
                    ConnState::Disconnected => self.set_connected(key, false, now),
                    ConnState::Failed | ConnState::Closed => {
                        tracing::debug!(?key, ?conn, "connection state");
                        self.emit(key.participant, SfuEvent::Connection(key.role, conn));
                        self.close_session(key, "connection failed");
                    }
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) if key.role == SessionRole::Publisher => {
                self.track_opened(key, init.receiver_id, init.track_id, init.ssrc, init.rid, now);
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) if key.role == SessionRole::Publisher => {
                let removed = self.session(key).and_then(|s| s.published.remove(&track_id));
                if let Some(t) = removed {
                    self.unpublish(key.participant, t.id);
                }
            }
            _ => {}
        }
    }

    fn track_opened(
        &mut self,
        key: SessionKey,
        receiver_id: rtc::rtp_transceiver::RTCRtpReceiverId,
        rtc_track_id: String,
        ssrc: u32,
        rid: Option<String>,
        _now: Instant,
    ) {
        let max = self.shared.config.max_tracks_per_publisher;
        let Some(session) = self.session(key) else { return };
        // Another simulcast encoding of a track we know: add the layer.
        if let Some(t) = session.published.get_mut(&rtc_track_id) {
            if t.layers.iter().any(|l| l.ssrc == ssrc) || t.layers.len() >= MAX_LAYERS {
                return;
            }
            let layer = layer_of_rid(rid.as_deref(), t.layers.len() as u8);
            if t.layers.iter().any(|l| l.layer == layer) {
                tracing::warn!(?key, ?rid, "a second encoding claims layer {layer}; ignored");
                return;
            }
            tracing::info!(participant = %key.participant, track = %t.id, ?rid, layer, "simulcast layer opened");
            t.layers.push(PublishedLayer { layer, ssrc, last_pli: None, pli_pending: false, packets: 0 });
            return;
        }
        if session.published.len() >= max {
            tracing::warn!(?key, "publisher exceeds {max} tracks; ignoring {rtc_track_id}");
            return;
        }
        let Some(receiver) = session.pc.rtp_receiver(receiver_id) else { return };
        let track = receiver.track();
        let kind = match track.kind() {
            RtpCodecKind::Audio => MediaKind::Audio,
            RtpCodecKind::Video => MediaKind::Video,
            _ => return,
        };
        let Some(codec) = track.codec(ssrc).cloned() else {
            tracing::warn!(?key, "track {rtc_track_id} has no codec for ssrc {ssrc}");
            return;
        };
        let id = TrackId::next();
        let layer = layer_of_rid(rid.as_deref(), 0);
        session.published.insert(
            rtc_track_id,
            PublishedTrack {
                id,
                codec: Codec::from_mime(&codec.mime_type),
                receiver_id,
                layers: vec![PublishedLayer { layer, ssrc, last_pli: None, pli_pending: false, packets: 0 }],
            },
        );
        self.router.published.insert(id, Published::new(key.participant, self.shared.workers.len()));
        self.shared.tracks.insert(id, self.idx);
        self.shared.counters.tracks.fetch_add(1, Ordering::Relaxed);
        let info = TrackInfo {
            id,
            publisher: key.participant,
            kind,
            codec: CodecInfo {
                mime_type: codec.mime_type,
                clock_rate: codec.clock_rate,
                channels: codec.channels,
                fmtp: codec.sdp_fmtp_line,
            },
        };
        tracing::info!(participant = %key.participant, track = %id, ?kind, ?rid, mime = %info.codec.mime_type, "track published");
        self.emit(key.participant, SfuEvent::TrackPublished(info));
    }

    fn unpublish(&mut self, publisher: ParticipantId, track: TrackId) {
        if self.router.published.remove(&track).is_some() {
            self.shared.counters.tracks.fetch_sub(1, Ordering::Relaxed);
        }
        self.shared.tracks.remove(&track);
        self.emit(publisher, SfuEvent::TrackUnpublished(track));
        for w in 0..self.shared.workers.len() {
            if w == self.idx {
                self.track_gone(track);
            } else {
                let _ = self.shared.send_to_worker(w, WorkerMsg::TrackGone(track));
            }
        }
    }

    fn track_gone(&mut self, track: TrackId) {
        let Some(subs) = self.router.subscribers.remove(&track) else { return };
        let now = Instant::now();
        for p in subs {
            let key = SessionKey { participant: p, role: SessionRole::Subscriber };
            let Some(s) = self.session(key) else { continue };
            s.remove_subscription(track);
            match s.negotiate(now) {
                Ok(Some(offer)) => self.emit(p, SfuEvent::SubscriberOffer(offer)),
                Ok(None) => {}
                Err(e) => tracing::warn!(participant = %p, "renegotiation failed: {e}"),
            }
            self.pump(key, now);
        }
    }

    // ---- media -------------------------------------------------------------------------

    fn route(&mut self, pkt: MediaPacket) {
        let Some(published) = self.router.published.get(&pkt.track) else { return };
        let pkt = Arc::new(pkt);
        let mut local = false;
        for (w, &count) in published.interested.iter().enumerate() {
            if count == 0 {
                continue;
            }
            if w == self.idx {
                local = true;
            } else if self.shared.send_to_worker(w, WorkerMsg::Media(pkt.clone())).is_err() {
                self.shared.counters.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if local {
            self.fan_out_local(&pkt);
        }
    }

    /// Rewrite and send one packet to every subscriber of its track on this worker.
    fn fan_out_local(&mut self, pkt: &MediaPacket) {
        let Some(subs) = self.router.subscribers.get(&pkt.track) else { return };
        let now = Instant::now();
        let shared = &self.shared;
        let mut forwarded = 0u64;
        for p in subs {
            let Some(state) = self.participants.get_mut(p) else { continue };
            let Some(session) = state.subscriber.as_mut() else { continue };
            if session.forward(pkt, now) {
                forwarded += 1;
            }
            while let Some(out) = session.pc.poll_write() {
                let to = session.destination(out.transport.peer_addr, &out.message);
                self.batch.push(to, out.message);
            }
            reschedule(&mut self.timers, session);
        }
        // One syscall for the whole fan-out.
        let (_, bytes) = self.batch.flush(&shared.socket);
        shared.counters.rtp_out.fetch_add(forwarded, Ordering::Relaxed);
        shared.counters.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    // ---- time --------------------------------------------------------------------------

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, key))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(session) = self.session(key) else { continue };
            if session.deadline != Some(at) {
                continue; // superseded
            }
            session.deadline = None;
            match catch_unwind(AssertUnwindSafe(|| session.pc.handle_timeout(now))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(?key, "timeout handling: {e}"),
                Err(_) => {
                    tracing::error!(?key, "session panicked on timeout; closing it");
                    self.close_session(key, "internal error");
                    continue;
                }
            }
            self.pump(key, now);
        }
    }

    fn tick(&mut self, now: Instant) {
        if now.duration_since(self.last_allocation) >= ALLOCATION_INTERVAL {
            self.last_allocation = now;
            for p in self.participants.values_mut() {
                if let Some(s) = p.subscriber.as_mut().filter(|s| s.connected) {
                    s.allocate_layers(now);
                    // Sent with the viewer's next RTCP (see PeerSession::probe).
                    s.probe(now);
                }
            }
            self.update_demand();
            // Lower demand is announced once it has held for a while (no flapping encoders).
            let mut lower = Vec::new();
            for (track, p) in self.router.published.iter_mut() {
                let wanted = p.wanted();
                match p.announced {
                    Some(a) if wanted < a => {
                        let since = *p.lower_since.get_or_insert(now);
                        if now.duration_since(since) >= DYNACAST_DOWN_DELAY {
                            p.announced = Some(wanted);
                            p.lower_since = None;
                            lower.push((p.publisher, *track, wanted));
                        }
                    }
                    _ => p.lower_since = None,
                }
            }
            for (publisher, track, wanted) in lower {
                self.announce_layers(publisher, track, wanted);
            }
        }
        // Liveness of connected sessions: no datagram at all from the client for a while.
        let mut quiet = Vec::new();
        let mut gone = Vec::new();
        for s in self.participants.values().flat_map(|p| [p.publisher.as_ref(), p.subscriber.as_ref()]).flatten() {
            let silent = now.saturating_duration_since(s.last_rx);
            if s.ever_connected && silent > ICE_FAILED {
                gone.push(s.key);
            } else if s.connected && silent > ICE_DISCONNECTED {
                quiet.push(s.key);
            }
        }
        for key in quiet {
            self.set_connected(key, false, now);
        }
        for key in gone {
            tracing::info!(?key, "nothing heard from the client for {ICE_FAILED:?}; closing session");
            self.emit(key.participant, SfuEvent::Connection(key.role, ConnState::Failed));
            self.close_session(key, "connection lost");
        }
        // Sessions that never connected.
        let timeout = self.shared.config.connect_timeout;
        let stale: Vec<SessionKey> = self
            .participants
            .values()
            .flat_map(|p| [p.publisher.as_ref(), p.subscriber.as_ref()])
            .flatten()
            .filter(|s| !s.ever_connected && !s.connected && now.duration_since(s.created) > timeout)
            .map(|s| s.key)
            .collect();
        for key in stale {
            tracing::info!(?key, "no ICE connection within {timeout:?}; closing session");
            self.close_session(key, "ICE connection timed out");
        }
        // Throttled PLIs that are due now.
        let due: Vec<(TrackId, u8)> = self
            .participants
            .values()
            .filter_map(|p| p.publisher.as_ref())
            .flat_map(|s| s.published.values())
            .flat_map(|t| t.layers.iter().filter(|l| l.pli_pending).map(|l| (t.id, l.layer)))
            .collect();
        for (track, layer) in due {
            self.keyframe_request(track, layer, now);
        }
        // Video subscribers still waiting for a keyframe ask again.
        let mut retry = Vec::new();
        for p in self.participants.values_mut() {
            let Some(s) = p.subscriber.as_mut() else { continue };
            if !s.connected {
                continue;
            }
            for sub in s.forwarders.values_mut() {
                let f = &mut sub.forwarder;
                if let Some(layer) = f.wants_keyframe(now)
                    && f.last_keyframe_request.is_none_or(|t| now.duration_since(t) >= KEYFRAME_RETRY)
                {
                    f.last_keyframe_request = Some(now);
                    retry.push((f.track, layer));
                }
            }
        }
        retry.sort();
        retry.dedup();
        for (track, layer) in retry {
            self.request_keyframe_from_publisher(track, layer);
        }
    }

    // ---- teardown ----------------------------------------------------------------------

    fn close_session(&mut self, key: SessionKey, reason: &str) {
        let Some(state) = self.participants.get_mut(&key.participant) else { return };
        let Some(mut session) = state.session(key.role).take() else { return };
        let _ = catch_unwind(AssertUnwindSafe(|| session.pc.close()));
        flush_writes(&self.shared, &mut session);
        self.shared.counters.sessions.fetch_sub(1, Ordering::Relaxed);
        let _ = self.shared.demux.try_send(DemuxCtl::Remove(key));
        match key.role {
            SessionRole::Publisher => {
                for t in session.published.into_values() {
                    self.unpublish(key.participant, t.id);
                }
            }
            SessionRole::Subscriber => {
                for track in session.forwarders.into_keys() {
                    if self.router.remove_subscriber(track, key.participant) {
                        self.send_interest(track, false);
                    }
                }
            }
        }
        self.emit(key.participant, SfuEvent::SessionClosed(key.role, reason.to_owned()));
    }

    fn remove_participant(&mut self, participant: ParticipantId) {
        let ingest = self.participants.get_mut(&participant).map(|s| std::mem::take(&mut s.ingest)).unwrap_or_default();
        for track in ingest {
            self.unpublish(participant, track);
        }
        self.close_session(SessionKey { participant, role: SessionRole::Publisher }, "participant left");
        self.close_session(SessionKey { participant, role: SessionRole::Subscriber }, "participant left");
        if self.participants.remove(&participant).is_some() {
            self.shared.counters.participants.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn flush_writes(shared: &Shared, session: &mut PeerSession) {
    while let Some(out) = session.pc.poll_write() {
        let to = session.destination(out.transport.peer_addr, &out.message);
        match shared.socket.send_to(&out.message, to) {
            Ok(n) => {
                shared.counters.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::trace!("udp send to {}: {e}", out.transport.peer_addr),
        }
    }
}

fn reschedule(timers: &mut BinaryHeap<Reverse<(Instant, SessionKey)>>, session: &mut PeerSession) {
    let next = session.pc.poll_timeout();
    if next != session.deadline {
        session.deadline = next;
        if let Some(at) = next {
            timers.push(Reverse((at, session.key)));
        }
    }
}
