//! The worker's core: the participants, sessions and routing tables of one worker, driven by
//! `(input, now)` alone. It owns no socket, channel or clock: what it wants sent, told or
//! registered collects in [`Outputs`], which the thread that drives it (`worker::run`, or the
//! virtual-time harness in tests) drains after every call.

use crate::api::SfuEvent;
use crate::ids::{ParticipantId, SessionKey, SessionRole};
use crate::net::batch::SendBatch;
use crate::net::demux::DemuxCtl;
use crate::session::publisher::Publisher;
use crate::session::subscriber::Subscriber;
use crate::session::transport::Transport;
use crate::worker::msg::{Answer, Command, Input};
use crate::worker::plane::Plane;
use crate::worker::tables::Router;
use crate::worker::timers::{Timer, Timers};
use bytes::BytesMut;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often layer caps are recomputed from bandwidth estimates (and probes sent, keyframe
/// waits retried, dynacast demand refreshed).
pub(crate) const ALLOCATION_INTERVAL: Duration = Duration::from_millis(250);

pub(crate) struct ParticipantState {
    pub publisher: Option<Publisher>,
    pub subscriber: Option<Subscriber>,
    /// Tracks this participant publishes through the in-process ingest path.
    pub ingest: Vec<crate::ids::TrackId>,
    /// Whether its subscriber session falls back to audio only (kept here too: signaling may
    /// set it before that session exists).
    pub audio_only_fallback: bool,
    /// A standard player (WHEP): its subscriber session is opened by its offer (`watch`) and
    /// follows the stage (`set_slots`); `subscribe` never opens one for it.
    pub player: bool,
}

impl ParticipantState {
    pub fn transport(&mut self, role: SessionRole) -> Option<&mut Transport> {
        match role {
            SessionRole::Publisher => self.publisher.as_mut().map(|s| &mut s.link),
            SessionRole::Subscriber => self.subscriber.as_mut().map(|s| &mut s.link),
        }
    }
}

/// What the core asks its driver to do.
#[derive(Default)]
pub(crate) struct Outputs {
    /// Datagrams to send, in order (one sendmmsg per call into the core).
    pub transmit: SendBatch,
    /// Input for other workers.
    pub to_workers: Vec<(usize, Input)>,
    /// Events for participants on this worker.
    pub events: Vec<(ParticipantId, SfuEvent)>,
    /// Changes to the receive thread's demux table.
    pub demux: Vec<DemuxCtl>,
}

pub(crate) struct Core {
    pub idx: usize,
    pub plane: Arc<Plane>,
    pub participants: crate::ids::IdMap<ParticipantId, ParticipantState>,
    pub router: Router,
    pub timers: Timers,
    /// Dynacast: the demand this worker last reported per track.
    pub demand_sent: HashMap<crate::ids::TrackId, u8>,
    pub out: Outputs,
    /// This worker's forwarding delays (registered in `plane.delays`).
    pub delay: Arc<crate::metrics::DelayHistogram>,
    /// Cascade, edge side: the legs received here, and the leg of each relayed track.
    pub relay_in: HashMap<u32, crate::worker::relays::RelayIn>,
    pub relayed: HashMap<crate::ids::TrackId, u32>,
}

impl Core {
    pub fn new(idx: usize, plane: Arc<Plane>) -> Core {
        let delay = Arc::new(crate::metrics::DelayHistogram::default());
        plane.delays.lock().unwrap_or_else(|p| p.into_inner()).push(delay.clone());
        Core {
            delay,
            idx,
            plane,
            participants: Default::default(),
            router: Router::default(),
            timers: Timers::default(),
            demand_sent: HashMap::new(),
            out: Outputs::default(),
            relay_in: HashMap::new(),
            relayed: HashMap::new(),
        }
    }

    /// The earliest moment [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.timers.next()
    }

    pub fn handle(&mut self, input: Input, now: Instant) {
        match input {
            Input::Datagram { session, from, data, at } => self.handle_datagram(session, from, data, at, now),
            Input::Media(pkt) => self.fan_out_local(&pkt, now),
            Input::Interest { track, worker, add } => self.router.set_interest(track, worker, add),
            Input::KeyframeRequest(track, layer) => self.keyframe_request(track, layer, now),
            Input::TrackGone(track) => self.track_gone(track, now),
            Input::LayerDemand { track, worker, layer } => self.layer_demand(track, worker, layer, now),
            Input::Ingest(participant, pkt) => self.ingest(participant, pkt, now),
            Input::Tap(track, tap) => self.set_tap(track, tap, now),
            Input::Relay { leg, data, at } => self.relay_datagram(leg, data, at, now),
            Input::RelayCtl(ctl) => self.relay_ctl(ctl, now),
        }
    }

    pub fn command(&mut self, cmd: Command, now: Instant) -> Answer {
        match cmd {
            Command::AddParticipant { participant, player } => {
                self.add_participant(participant, player);
                Answer::None
            }
            Command::Publish { participant, offer } => Answer::Sdp(self.publish(participant, offer, now)),
            Command::Subscribe { participant, tracks } => {
                if let Err(e) = self.subscribe(participant, tracks, now) {
                    tracing::warn!(%participant, "subscribe failed: {e}");
                }
                Answer::None
            }
            Command::Unsubscribe { participant, track } => {
                self.unsubscribe(participant, track, now);
                Answer::None
            }
            Command::SubscriberAnswer { participant, answer } => Answer::Done(self.subscriber_answer(participant, answer, now)),
            Command::Watch { participant, offer, stage } => Answer::Sdp(self.watch(participant, offer, stage, now)),
            Command::SetSlots { participant, stage } => {
                self.set_slots(participant, stage, now);
                Answer::None
            }
            Command::RestartIce { participant } => Answer::Done(self.restart_ice(participant, now)),
            Command::Candidate { key, candidate } => Answer::Done(self.candidate(key, candidate, now)),
            Command::RemoveParticipant { participant } => {
                self.remove_participant(participant, now);
                Answer::None
            }
            Command::StopPublishing { participant } => {
                self.stop_publishing(participant, now);
                Answer::None
            }
            Command::VideoSize { participant, track, height } => {
                self.set_video_size(participant, track, height, now);
                Answer::None
            }
            Command::Quality { participant, track, quality } => {
                self.set_quality(participant, track, quality, now);
                Answer::None
            }
            Command::AudioOnlyFallback { participant, enabled } => {
                self.set_audio_only_fallback(participant, enabled, now);
                Answer::None
            }
            Command::Stats { participant } => Answer::Stats(self.subscriber_stats(participant)),
            Command::Resync { participant } => {
                self.resync(participant);
                Answer::None
            }
            Command::OpenIngest { participant, tracks } => Answer::Tracks(self.open_ingest(participant, tracks, now)),
            Command::OpenRelay { participant, tracks } => Answer::Tracks(self.open_relay(participant, tracks, now)),
            Command::CloseRelayTrack { participant, track } => {
                self.close_relay_track(participant, track, now);
                Answer::None
            }
        }
    }

    /// Run every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Bounded: a timer re-armed for `now` or earlier runs again at the next call.
        for _ in 0..4096 {
            let Some(timer) = self.timers.pop_due(now) else { return };
            match timer {
                Timer::Session(key) => self.session_timeout(key, now),
                Timer::Allocate => self.allocate(now),
                Timer::Liveness(key) => self.liveness(key, now),
                Timer::ConnectTimeout(key) => self.connect_timeout(key, now),
                Timer::Pli(track, layer) => self.pli_due(track, layer, now),
                Timer::DynacastDown(track) => self.dynacast_down(track, now),
                Timer::Demand => self.update_demand(now),
            }
        }
    }

    /// Close every session (the worker is stopping).
    pub fn close_all(&mut self, now: Instant) {
        let all: Vec<ParticipantId> = self.participants.keys().copied().collect();
        for p in all {
            self.remove_participant(p, now);
        }
    }

    /// Either session's transport.
    pub fn transport(&mut self, key: SessionKey) -> Option<&mut Transport> {
        self.participants.get_mut(&key.participant)?.transport(key.role)
    }

    pub fn publisher(&mut self, participant: ParticipantId) -> Option<&mut Publisher> {
        self.participants.get_mut(&participant)?.publisher.as_mut()
    }

    pub fn subscriber(&mut self, participant: ParticipantId) -> Option<&mut Subscriber> {
        self.participants.get_mut(&participant)?.subscriber.as_mut()
    }

    pub fn emit(&mut self, participant: ParticipantId, event: SfuEvent) {
        if self.participants.contains_key(&participant) {
            self.out.events.push((participant, event));
        }
    }

    /// Send input to the worker that owns `track`, or handle it here when that is this one.
    pub fn send_to_owner(&mut self, track: crate::ids::TrackId, input: Input, now: Instant) {
        match self.plane.owner(track) {
            Some(w) if w == self.idx => self.handle(input, now),
            Some(w) => self.out.to_workers.push((w, input)),
            None => {}
        }
    }

    fn handle_datagram(&mut self, key: SessionKey, from: SocketAddr, data: BytesMut, at: Instant, now: Instant) {
        let local_addr = self.plane.local_addr;
        let Some(session) = self.transport(key) else { return };
        session.heard(from, &data, at);
        let regained = session.ever_connected && !session.connected;
        let msg = TaggedBytesMut {
            now: at,
            transport: TransportContext { local_addr, peer_addr: from, ecn: None, transport_protocol: TransportProtocol::UDP },
            message: data,
        };
        let Some(msg) = session.hold_early_check(msg) else { return };
        match catch_unwind(AssertUnwindSafe(|| session.pc.handle_read(msg))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // Garbage from a bound address, a replayed SRTP packet, a late DTLS record: the
                // session drops it and carries on.
                self.plane.counters.session_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(?key, %from, "input rejected: {e}");
            }
            Err(_) => {
                self.plane.counters.session_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(?key, %from, "session panicked on input; closing it");
                self.close_session(key, "internal error on input", now);
                return;
            }
        }
        // After an ICE restart, a path that just became valid both ways carries media at once
        // (Transport::take_nomination).
        if let Some(session) = self.transport(key)
            && let Some(nomination) = session.take_nomination(local_addr, at)
            && !matches!(catch_unwind(AssertUnwindSafe(|| session.pc.handle_read(nomination))), Ok(Ok(())))
        {
            tracing::debug!(?key, "the restart's nomination was not taken");
        }
        if regained {
            self.set_connected(key, true, now);
        }
        self.pump(key, now);
    }

    fn session_timeout(&mut self, key: SessionKey, now: Instant) {
        let Some(session) = self.transport(key) else { return };
        session.deadline = None;
        match catch_unwind(AssertUnwindSafe(|| session.pc.handle_timeout(now))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(?key, "timeout handling: {e}"),
            Err(_) => {
                tracing::error!(?key, "session panicked on timeout; closing it");
                self.close_session(key, "internal error", now);
                return;
            }
        }
        self.pump(key, now);
    }

    /// Arm the session's rtc deadline when it changed.
    pub fn reschedule(timers: &mut Timers, session: &mut Transport) {
        let next = session.pc.poll_timeout();
        if next != session.deadline {
            session.deadline = next;
            match next {
                Some(at) => timers.set(Timer::Session(session.key), at),
                None => timers.cancel(Timer::Session(session.key)),
            }
        }
    }
}

/// Queue a session's outgoing datagrams (handshakes, RTCP, retransmissions) for sending.
pub(crate) fn drain_writes(batch: &mut SendBatch, session: &mut Transport) {
    while let Some(out) = session.pc.poll_write() {
        let to = session.destination(out.transport.peer_addr, &out.message);
        batch.push(to, out.message);
    }
}
