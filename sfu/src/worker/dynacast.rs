//! Layer allocation and dynacast. Every `ALLOCATION_INTERVAL` each connected subscriber's
//! layer caps follow its bandwidth estimate (and probes go out); each worker tells a track's
//! owner the highest layer its subscribers want; the owner tells the publisher to pause layers
//! nobody wants — at once when demand rises, after `DYNACAST_DOWN_DELAY` when it falls (no
//! flapping encoders).

use crate::api::SfuEvent;
use crate::ids::{ParticipantId, SessionKey, SessionRole, TrackId};
use crate::worker::core::{ALLOCATION_INTERVAL, Core, drain_writes};
use crate::worker::msg::Input;
use crate::worker::timers::Timer;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A layer nobody wants any more is paused at the publisher after this long.
pub(crate) const DYNACAST_DOWN_DELAY: Duration = Duration::from_millis(1000);

impl Core {
    /// The `Allocate` timer: caps, probes and keyframe waits of every connected subscriber,
    /// then this worker's demand.
    pub fn allocate(&mut self, now: Instant) {
        // A stream still waiting to start (its first request throttled, or video resumed) may
        // start from a picture kept since; then it asks for nothing below.
        let unstarted: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|(_, p)| {
                p.subscriber
                    .as_ref()
                    .is_some_and(|s| s.link.connected && s.forwarders.values().any(|f| !f.forwarder.start_layers(now).is_empty()))
            })
            .map(|(id, _)| *id)
            .collect();
        for p in unstarted {
            self.start_from_pictures(p, now);
        }
        let mut any = false;
        let mut waiting = Vec::new();
        let mut changed = Vec::new();
        for p in self.participants.values_mut() {
            let Some(s) = p.subscriber.as_mut() else { continue };
            any = true;
            if !s.link.connected {
                continue;
            }
            s.allocate_layers(now);
            if let Some(active) = s.update_fallback(&self.plane.config.fallback, now) {
                changed.push((s.link.key.participant, active));
            }
            // Sent with the viewer's next RTCP (Subscriber::probe).
            s.probe(&self.plane.config.fallback, now);
            s.send_reports(now);
            drain_writes(&mut self.out.transmit, &mut s.link);
            Core::reschedule(&mut self.timers, &mut s.link);
            // A viewer that just resumed video waits for keyframes: asked for here, at once.
            waiting.extend(Core::keyframe_waits(s, now));
        }
        for (participant, active) in changed {
            self.emit(participant, SfuEvent::AudioOnly(active));
        }
        self.update_demand(now);
        waiting.sort();
        waiting.dedup();
        for (track, layer) in waiting {
            self.request_keyframe_from_publisher(track, layer, now);
        }
        if any {
            self.timers.set(Timer::Allocate, now + ALLOCATION_INTERVAL);
        }
    }

    /// A viewer's video was paused (`true`) or resumed (`false`) outside an allocation pass (the
    /// rule switched off): tell it, and ask for the keyframes a resumed stream starts from.
    pub fn audio_only_changed(&mut self, participant: ParticipantId, active: bool, now: Instant) {
        self.emit(participant, SfuEvent::AudioOnly(active));
        let waiting = self.subscriber(participant).filter(|s| s.link.connected).map(|s| Core::keyframe_waits(s, now)).unwrap_or_default();
        for (track, layer) in waiting {
            self.request_keyframe_from_publisher(track, layer, now);
        }
    }

    /// Recompute a subscriber's layer caps now (after a size or quality change).
    pub fn reallocate(&mut self, key: SessionKey, now: Instant) {
        if let Some(s) = self.subscriber(key.participant) {
            s.allocate_layers(now);
        }
        self.update_demand(now);
    }

    /// Dynacast, subscriber side: tell each publisher's worker the highest layer this worker's
    /// subscribers want of its tracks, when that changes.
    pub fn update_demand(&mut self, now: Instant) {
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
        let worker = self.idx;
        for (track, layer) in changes {
            self.send_to_owner(track, Input::LayerDemand { track, worker, layer }, now);
        }
    }

    /// A recorder starts (`Some`) or stops taking every packet of a track published here: it
    /// wants every layer (the best one is recorded) and a keyframe to start from.
    pub fn set_tap(&mut self, track: TrackId, tap: Option<crate::record::Tap>, now: Instant) {
        let Some(p) = self.router.published.get_mut(&track) else { return };
        let starting = tap.is_some();
        p.tap = tap;
        self.demand_changed(track, now);
        if starting {
            self.keyframe_request(track, crate::worker::keyframes::ALL_LAYERS, now);
        }
    }

    /// Dynacast, publisher side: record a worker's demand; announce a higher wanted layer at
    /// once, a lower one once it has held for `DYNACAST_DOWN_DELAY`.
    pub fn layer_demand(&mut self, track: TrackId, worker: usize, layer: Option<u8>, now: Instant) {
        let Some(p) = self.router.published.get_mut(&track) else { return };
        if let Some(slot) = p.demand.get_mut(worker) {
            *slot = layer;
        }
        self.demand_changed(track, now);
    }

    pub(crate) fn demand_changed(&mut self, track: TrackId, now: Instant) {
        let Some(p) = self.router.published.get_mut(&track) else { return };
        let wanted = p.wanted();
        match p.announced {
            Some(a) if wanted <= a => {
                if wanted == a {
                    p.lower_since = None;
                } else if p.lower_since.is_none() {
                    p.lower_since = Some(now);
                    self.timers.set(Timer::DynacastDown(track), now + DYNACAST_DOWN_DELAY);
                }
            }
            _ => {
                p.announced = Some(wanted);
                p.lower_since = None;
                let publisher = p.publisher;
                self.announce_layers(publisher, track, wanted);
            }
        }
    }

    /// The `DynacastDown` timer of a track.
    pub fn dynacast_down(&mut self, track: TrackId, now: Instant) {
        let Some(p) = self.router.published.get_mut(&track) else { return };
        let wanted = p.wanted();
        let (Some(announced), Some(since)) = (p.announced, p.lower_since) else { return };
        if wanted >= announced {
            p.lower_since = None;
            return;
        }
        let due = since + DYNACAST_DOWN_DELAY;
        if now < due {
            self.timers.set(Timer::DynacastDown(track), due);
            return;
        }
        p.announced = Some(wanted);
        p.lower_since = None;
        let publisher = p.publisher;
        self.announce_layers(publisher, track, wanted);
    }

    pub(crate) fn announce_layers(&mut self, publisher: ParticipantId, track: TrackId, max_layer: u8) {
        // Only simulcast tracks can pause layers.
        let key = SessionKey { participant: publisher, role: SessionRole::Publisher };
        let simulcast = self
            .publisher(key.participant)
            .and_then(|s| s.published.values().find(|t| t.id == track).map(|t| t.layers.len() > 1))
            .unwrap_or(false)
            || self.relayed_layers(track).is_some_and(|l| l > 1);
        if simulcast {
            // A recorder's "every layer" is the top one a publisher can have.
            let max_layer = max_layer.min(crate::media::simulcast::MAX_LAYERS as u8 - 1);
            tracing::debug!(%track, max_layer, "dynacast: layers wanted");
            self.emit(publisher, SfuEvent::LayersWanted(track, max_layer));
        }
    }
}
