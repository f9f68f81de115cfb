//! Signaling's commands: participants arrive and leave, sessions open on an offer (publisher)
//! or a subscription (subscriber), answers and candidates reach them, and they close.

use crate::api::{CodecInfo, MediaKind, SfuEvent, TrackInfo};
use crate::error::SfuError;
use crate::forward::selector::Quality;
use crate::ids::{ParticipantId, SessionKey, SessionRole, TrackId};
use crate::media::packet::MediaPacket;
use crate::media::simulcast::MAX_LAYERS;
use crate::net::demux::DemuxCtl;
use crate::worker::core::{ALLOCATION_INTERVAL, Core, ParticipantState, drain_writes};
use crate::worker::timers::Timer;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::sansio::Protocol;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Core {
    pub fn add_participant(&mut self, participant: ParticipantId, player: bool) {
        let state = ParticipantState { publisher: None, subscriber: None, ingest: Vec::new(), audio_only_fallback: true, player };
        if self.participants.insert(participant, state).is_none() {
            self.plane.counters.participants.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn remove_participant(&mut self, participant: ParticipantId, now: Instant) {
        self.stop_publishing_because(participant, "participant left", now);
        self.close_session(SessionKey { participant, role: SessionRole::Subscriber }, "participant left", now);
        if self.participants.remove(&participant).is_some() {
            self.plane.counters.participants.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Taken off stage: its published tracks (a publisher session, ingest tracks) end; its
    /// subscriber session stays.
    pub fn stop_publishing(&mut self, participant: ParticipantId, now: Instant) {
        self.stop_publishing_because(participant, "taken off stage", now);
    }

    fn stop_publishing_because(&mut self, participant: ParticipantId, reason: &str, now: Instant) {
        let ingest = self.participants.get_mut(&participant).map(|s| std::mem::take(&mut s.ingest)).unwrap_or_default();
        for track in ingest {
            self.unpublish(participant, track, now);
        }
        self.close_session(SessionKey { participant, role: SessionRole::Publisher }, reason, now);
    }

    /// A new session for `key` (the participant must be here and have none in this role).
    fn open_session(&mut self, key: SessionKey, now: Instant) -> Result<(), SfuError> {
        let state = self.participants.get_mut(&key.participant).ok_or(SfuError::NoSession)?;
        // The receive thread learns the session's ufrag with its first local description (see
        // `pump`): no client can check it before then.
        match key.role {
            SessionRole::Publisher => {
                state.publisher = Some(self.plane.factory.publisher(key, now)?);
            }
            SessionRole::Subscriber => {
                let s = state.subscriber.insert(self.plane.factory.subscriber(key, now)?);
                s.set_fallback_enabled(state.audio_only_fallback);
            }
        }
        self.plane.counters.sessions.fetch_add(1, Ordering::Relaxed);
        self.timers.set(Timer::ConnectTimeout(key), now + self.plane.config.connect_timeout);
        if key.role == SessionRole::Subscriber {
            self.timers.ensure(Timer::Allocate, now + ALLOCATION_INTERVAL);
        }
        Ok(())
    }

    pub fn close_session(&mut self, key: SessionKey, reason: &str, now: Instant) {
        let Some(state) = self.participants.get_mut(&key.participant) else { return };
        let (mut link, published, forwarded) = match key.role {
            SessionRole::Publisher => {
                let Some(s) = state.publisher.take() else { return };
                (s.link, s.published.into_values().map(|t| t.id).collect(), Vec::new())
            }
            SessionRole::Subscriber => {
                let Some(s) = state.subscriber.take() else { return };
                (s.link, Vec::new(), s.forwarders.into_keys().collect())
            }
        };
        let _ = catch_unwind(AssertUnwindSafe(|| link.pc.close()));
        drain_writes(&mut self.out.transmit, &mut link);
        for t in [Timer::Session(key), Timer::Liveness(key), Timer::ConnectTimeout(key)] {
            self.timers.cancel(t);
        }
        self.plane.counters.sessions.fetch_sub(1, Ordering::Relaxed);
        self.out.demux.push(DemuxCtl::Remove(key));
        for track in published {
            self.unpublish(key.participant, track, now);
        }
        if !forwarded.is_empty() {
            self.timers.ensure(Timer::Demand, now);
        }
        for track in forwarded {
            if self.router.remove_subscriber(track, key.participant) {
                self.send_interest(track, false, now);
            }
        }
        self.emit(key.participant, SfuEvent::SessionClosed(key.role, reason.to_owned()));
    }

    pub fn publish(&mut self, participant: ParticipantId, offer: String, now: Instant) -> Result<String, SfuError> {
        let key = SessionKey { participant, role: SessionRole::Publisher };
        let state = self.participants.get_mut(&participant).ok_or(SfuError::NoSession)?;
        let fresh = state.publisher.is_none();
        if fresh {
            self.open_session(key, now)?;
        }
        let Some(session) = self.publisher(participant) else { return Err(SfuError::NoSession) };
        let answer = session.apply_offer(now, offer);
        let candidate = session.link.local_candidate.clone();
        let spoiled = session.spoiled;
        match answer {
            Ok(sdp) => {
                self.emit(participant, SfuEvent::LocalCandidate(SessionRole::Publisher, candidate));
                self.pump(key, now);
                Ok(sdp)
            }
            Err(e) => {
                // A refused first offer, or one rtc could not wholly take back: the client
                // starts this connection afresh (`Publisher::apply_offer`).
                if fresh || spoiled {
                    self.close_session(key, "offer rejected", now);
                }
                Err(e)
            }
        }
    }

    /// Start forwarding `tracks` to `participant`: one offer for all of them (a viewer joining a
    /// room with four tracks gets one offer, not one and then another for the rest).
    pub fn subscribe(&mut self, participant: ParticipantId, tracks: Vec<TrackInfo>, now: Instant) -> Result<(), SfuError> {
        let key = SessionKey { participant, role: SessionRole::Subscriber };
        let state = self.participants.get_mut(&participant).ok_or(SfuError::NoSession)?;
        if state.player {
            // A standard player's slots follow the stage (`set_slots`): it takes no m-lines of
            // ours, and its session is opened by its own offer.
            return Ok(());
        }
        let fresh = state.subscriber.is_none();
        if fresh {
            self.open_session(key, now)?;
        }
        let Some(session) = self.subscriber(participant) else { return Err(SfuError::NoSession) };
        let mut added = Vec::with_capacity(tracks.len());
        let mut refused = None;
        for track in tracks {
            match session.add_subscription(track.id, track.publisher.to_string(), track.kind, &track.codec, now) {
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
        let candidate = session.link.local_candidate.clone();
        // A viewer on audio only asks for no keyframe: its video waits (see `audio_only_changed`).
        let connected = session.link.connected && !session.audio_only();
        for track in &added {
            if self.router.add_subscriber(track.id, participant) {
                self.send_interest(track.id, true, now);
            }
            if track.kind == MediaKind::Video {
                self.router.gops.entry(track.id).or_default();
            }
        }
        if let Some(offer) = offer {
            self.emit(participant, SfuEvent::SubscriberOffer(offer));
            if fresh {
                self.emit(participant, SfuEvent::LocalCandidate(SessionRole::Subscriber, candidate));
            }
        }
        // A keyframe is requested once this subscriber is connected (see `set_connected`): one
        // asked for now would arrive before DTLS is up and be wasted.
        for track in &added {
            if track.kind == MediaKind::Video && connected {
                self.request_keyframe_from_publisher(track.id, (MAX_LAYERS - 1) as u8, now);
            }
        }
        self.pump(key, now);
        Ok(())
    }

    pub fn unsubscribe(&mut self, participant: ParticipantId, track: TrackId, now: Instant) {
        let key = SessionKey { participant, role: SessionRole::Subscriber };
        let Some(session) = self.subscriber(participant) else { return };
        if session.is_whep() || !session.remove_subscription(track) {
            return;
        }
        let offer = session.negotiate(now);
        self.timers.ensure(Timer::Demand, now);
        if self.router.remove_subscriber(track, participant) {
            self.send_interest(track, false, now);
        }
        match offer {
            Ok(Some(offer)) => self.emit(participant, SfuEvent::SubscriberOffer(offer)),
            Ok(None) => {}
            Err(e) => tracing::warn!(%participant, "renegotiation failed: {e}"),
        }
        self.pump(key, now);
    }

    /// The client's network changed and it restarts ICE on its subscriber connection: an offer
    /// with new ICE credentials (now, or after the answer to the one that is out), then our
    /// candidate again (the client dropped the old generation's).
    pub fn restart_ice(&mut self, participant: ParticipantId, now: Instant) -> Result<(), SfuError> {
        let key = SessionKey { participant, role: SessionRole::Subscriber };
        let Some(s) = self.subscriber(participant) else { return Err(SfuError::NoSession) };
        let offer = s.restart_ice(now)?;
        let candidate = s.link.local_candidate.clone();
        if let Some(offer) = offer {
            self.emit(participant, SfuEvent::SubscriberOffer(offer));
            self.emit(participant, SfuEvent::LocalCandidate(SessionRole::Subscriber, candidate));
        }
        self.pump(key, now);
        Ok(())
    }

    pub fn subscriber_answer(&mut self, participant: ParticipantId, answer: String, now: Instant) -> Result<(), SfuError> {
        let key = SessionKey { participant, role: SessionRole::Subscriber };
        let Some(s) = self.subscriber(participant) else { return Err(SfuError::NoSession) };
        // The client's SDP, and the early checks it lets through (a restart), reach rtc here:
        // a panic on them closes this session, as one on a datagram does, not the worker.
        let applied = catch_unwind(AssertUnwindSafe(|| {
            s.apply_answer(now, answer).and_then(|()| if s.renegotiate { s.negotiate(now) } else { Ok(None) })
        }));
        let Ok(r) = applied else {
            tracing::error!(?key, "session panicked on an answer; closing it");
            self.close_session(key, "internal error on input", now);
            return Err(SfuError::NoSession);
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
        r
    }

    /// A WHEP player's offer: the first opens its subscriber session (a WHEP session: the
    /// client offers, its m-lines are slots that follow the stage), a later one (an ICE
    /// restart) renegotiates it. Returns the answer; our candidate is in it. A refused first
    /// offer closes the session.
    pub fn watch(&mut self, participant: ParticipantId, offer: String, stage: Vec<TrackInfo>, now: Instant) -> Result<String, SfuError> {
        let key = SessionKey { participant, role: SessionRole::Subscriber };
        let state = self.participants.get_mut(&participant).ok_or(SfuError::NoSession)?;
        if !state.player {
            return Err(SfuError::BadSdp("only a participant added as a player (`Sfu::add_player`) offers to watch".into()));
        }
        let fresh = state.subscriber.is_none();
        if fresh {
            self.open_session(key, now)?;
        }
        let Some(s) = self.subscriber(participant) else { return Err(SfuError::NoSession) };
        // The client's SDP reaches rtc here: a panic on it closes this session, not the worker.
        let answered = catch_unwind(AssertUnwindSafe(|| s.answer_offer(now, offer, &stage)));
        match answered {
            Ok(Ok((answer, changes))) => {
                self.slots_changed(participant, changes, now);
                self.pump(key, now);
                Ok(answer)
            }
            Ok(Err(e)) => {
                if fresh {
                    self.close_session(key, "offer rejected", now);
                }
                Err(e)
            }
            Err(_) => {
                tracing::error!(?key, "session panicked on a WHEP offer; closing it");
                self.close_session(key, "internal error on input", now);
                Err(SfuError::NoSession)
            }
        }
    }

    /// The stage changed: a WHEP session's slots follow it (`Subscriber::set_slots`).
    pub fn set_slots(&mut self, participant: ParticipantId, stage: Vec<TrackInfo>, now: Instant) {
        let key = SessionKey { participant, role: SessionRole::Subscriber };
        let Some(s) = self.subscriber(participant) else { return };
        let changes = s.set_slots(&stage, now);
        self.slots_changed(participant, changes, now);
        self.pump(key, now);
    }

    /// Tell the router (and the tracks' owners) which tracks a WHEP session's slots carry now,
    /// and ask for keyframes of each new video track once the viewer is connected.
    fn slots_changed(&mut self, participant: ParticipantId, changes: crate::session::subscriber::SlotChanges, now: Instant) {
        if !changes.removed.is_empty() {
            self.timers.ensure(Timer::Demand, now);
        }
        for track in changes.removed {
            if self.router.remove_subscriber(track, participant) {
                self.send_interest(track, false, now);
            }
        }
        let connected = self.subscriber(participant).is_some_and(|s| s.link.connected && !s.audio_only());
        for track in &changes.added {
            if self.router.add_subscriber(track.id, participant) {
                self.send_interest(track.id, true, now);
            }
            if track.kind == MediaKind::Video {
                self.router.gops.entry(track.id).or_default();
            }
            // Every layer: the slot starts on the first keyframe of any layer it may take (the
            // one it will climb to may be paused by dynacast), and a stage change is rare.
            if track.kind == MediaKind::Video && connected {
                self.request_keyframe_from_publisher(track.id, crate::worker::keyframes::ALL_LAYERS, now);
            }
        }
        if !changes.added.is_empty() {
            self.timers.ensure(Timer::Demand, now);
        }
    }

    pub fn candidate(&mut self, key: SessionKey, candidate: RTCIceCandidateInit, now: Instant) -> Result<(), SfuError> {
        let known = self.participants.contains_key(&key.participant);
        let r = match self.transport(key) {
            // Trickled before the offer that creates the session: an ICE-lite server learns the
            // address from the client's checks anyway, so this is no error.
            None if known => Ok(()),
            None => Err(SfuError::NoSession),
            Some(s) => s.add_remote_candidate(candidate),
        };
        self.pump(key, now);
        r
    }

    pub fn set_video_size(&mut self, participant: ParticipantId, track: TrackId, height: u32, now: Instant) {
        let key = SessionKey { participant, role: SessionRole::Subscriber };
        if let Some(sub) = self.subscriber(participant).and_then(|s| s.forwarders.get_mut(&track)) {
            sub.forwarder.set_wanted_height(height);
        }
        self.reallocate(key, now);
    }

    pub fn set_quality(&mut self, participant: ParticipantId, track: Option<TrackId>, quality: Quality, now: Instant) {
        let key = SessionKey { participant, role: SessionRole::Subscriber };
        if let Some(s) = self.subscriber(participant) {
            for (id, sub) in s.forwarders.iter_mut() {
                if track.is_none_or(|t| t == *id) {
                    sub.forwarder.set_quality(quality);
                }
            }
        }
        self.reallocate(key, now);
    }

    /// Switch the audio-only fallback on or off for a viewer. Off while its video is paused:
    /// the video resumes at once (from a keyframe) and it is told so.
    /// Tell the participant again what its reader may have missed while its event queue was
    /// full ([`crate::Sfu::resync`]): the subscriber offer still waiting for an answer (and our
    /// candidate), each session's connection state once it has been up, whether its video is
    /// paused for bandwidth, and the layers wanted of each simulcast track it publishes.
    pub fn resync(&mut self, participant: ParticipantId) {
        let Some(state) = self.participants.get(&participant) else { return };
        let mut events = Vec::new();
        for (role, link) in [
            (SessionRole::Publisher, state.publisher.as_ref().map(|s| &s.link)),
            (SessionRole::Subscriber, state.subscriber.as_ref().map(|s| &s.link)),
        ] {
            let Some(link) = link else { continue };
            if link.connected {
                events.push(SfuEvent::Connection(role, crate::api::ConnState::Connected));
            } else if link.ever_connected {
                events.push(SfuEvent::Connection(role, crate::api::ConnState::Disconnected));
            }
        }
        if let Some(s) = state.subscriber.as_ref() {
            if let Some(offer) = s.pending_offer() {
                events.push(SfuEvent::SubscriberOffer(offer));
                events.push(SfuEvent::LocalCandidate(SessionRole::Subscriber, s.link.local_candidate.clone()));
            }
            events.push(SfuEvent::AudioOnly(s.audio_only()));
        }
        let announced: Vec<(TrackId, u8)> = self
            .router
            .published
            .iter()
            .filter(|(_, p)| p.publisher == participant)
            .filter_map(|(t, p)| p.announced.map(|l| (*t, l)))
            .collect();
        for e in events {
            self.emit(participant, e);
        }
        for (track, layer) in announced {
            self.announce_layers(participant, track, layer);
        }
    }

    pub fn set_audio_only_fallback(&mut self, participant: ParticipantId, enabled: bool, now: Instant) {
        let Some(state) = self.participants.get_mut(&participant) else { return };
        state.audio_only_fallback = enabled;
        let Some(s) = state.subscriber.as_mut() else { return };
        if let Some(active) = s.set_fallback_enabled(enabled) {
            self.audio_only_changed(participant, active, now);
        }
    }

    /// Register tracks whose packets arrive as [`Input::Ingest`](crate::worker::msg::Input)
    /// rather than from a peer session. From here on the router treats them like any
    /// published track.
    pub fn open_ingest(
        &mut self,
        participant: ParticipantId,
        tracks: Vec<(MediaKind, CodecInfo)>,
        _now: Instant,
    ) -> Result<Vec<TrackInfo>, SfuError> {
        let max = self.plane.config.max_tracks_per_publisher;
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
            tracing::info!(%participant, track = %info.id, kind = ?info.kind, mime = %info.codec.mime_type, "ingest track published");
            self.publish_track(info.clone());
        }
        Ok(infos)
    }

    /// One packet from the in-process ingest path: route it like a received one.
    pub fn ingest(&mut self, participant: ParticipantId, pkt: MediaPacket, now: Instant) {
        // Only the participant that opened the track may feed it.
        if self.router.published.get(&pkt.track).is_none_or(|p| p.publisher != participant) {
            return;
        }
        self.plane.counters.rtp_in.fetch_add(1, Ordering::Relaxed);
        self.route(pkt, now);
    }
}
