//! Routing: which tracks this worker publishes and who subscribes to them here; a received
//! packet goes once to every interested worker (one shared `Arc`) and is rewritten per local
//! subscriber. The tables are per worker, so the per-packet path takes no lock.

use crate::api::SfuEvent;
use crate::ids::{ParticipantId, SessionKey, SessionRole, TrackId};
use crate::media::packet::MediaPacket;
use crate::worker::core::{Core, drain_writes};
use crate::worker::msg::Input;
use crate::worker::timers::Timer;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Core {
    /// A packet received here: once to every worker with subscribers of its track (one shared
    /// `Arc`), then to the local subscribers.
    pub fn route(&mut self, pkt: MediaPacket, now: Instant) {
        let Some(published) = self.router.published.get(&pkt.track) else { return };
        let pkt = Arc::new(pkt);
        if let Some(tap) = &published.tap {
            tap.send(&pkt);
        }
        let relays = !published.relays.is_empty();
        let mut local = false;
        for (w, &count) in published.interested.iter().enumerate() {
            if count == 0 {
                continue;
            }
            if w == self.idx {
                local = true;
            } else {
                self.out.to_workers.push((w, Input::Media(pkt.clone())));
            }
        }
        if local {
            self.fan_out_local(&pkt, now);
        }
        if relays {
            self.relay_packet(&pkt, now);
        }
    }

    /// Rewrite and queue one packet for every subscriber of its track on this worker.
    pub fn fan_out_local(&mut self, pkt: &Arc<MediaPacket>, now: Instant) {
        let Some(subs) = self.router.subscribers.get(&pkt.track) else { return };
        if let Some(gop) = self.router.gops.get_mut(&pkt.track) {
            gop.push(pkt, self.plane.config.keyframe_cache);
        }
        let mut forwarded = 0u64;
        for p in subs {
            let Some(state) = self.participants.get_mut(p) else { continue };
            let Some(session) = state.subscriber.as_mut() else { continue };
            if session.forward(pkt, &mut self.out.transmit, now) {
                forwarded += 1;
            }
            // On the lean path a forward leaves rtc untouched; through rtc it queued a write.
            if !session.is_lean() {
                drain_writes(&mut self.out.transmit, &mut session.link);
                Core::reschedule(&mut self.timers, &mut session.link);
            }
        }
        if forwarded > 0 {
            self.plane.counters.rtp_out.fetch_add(forwarded, Ordering::Relaxed);
            if crate::metrics::per_packet() {
                self.delay.record(now.saturating_duration_since(pkt.received).as_micros() as u64);
            }
        }
    }

    /// A track published here is gone: tell its publisher and every worker.
    pub fn unpublish(&mut self, publisher: ParticipantId, track: TrackId, now: Instant) {
        if self.router.published.remove(&track).is_some() {
            self.plane.counters.tracks.fetch_sub(1, Ordering::Relaxed);
        }
        self.plane.tracks.remove(&track);
        self.forget_relayed(track);
        self.timers.cancel(Timer::DynacastDown(track));
        self.emit(publisher, SfuEvent::TrackUnpublished(track));
        for w in 0..self.plane.workers {
            if w == self.idx {
                self.track_gone(track, now);
            } else {
                self.out.to_workers.push((w, Input::TrackGone(track)));
            }
        }
    }

    /// Drop local subscriptions to a track that is gone; each subscriber gets a new offer.
    pub fn track_gone(&mut self, track: TrackId, now: Instant) {
        self.router.gops.remove(&track);
        let Some(subs) = self.router.subscribers.remove(&track) else { return };
        self.timers.ensure(Timer::Demand, now);
        for p in subs {
            let key = SessionKey { participant: p, role: SessionRole::Subscriber };
            let Some(s) = self.subscriber(p) else { continue };
            s.remove_subscription(track);
            if s.is_whep() {
                // The slot waits for signaling's next `set_slots`; nothing to negotiate.
                continue;
            }
            match s.negotiate(now) {
                Ok(Some(offer)) => self.emit(p, SfuEvent::SubscriberOffer(offer)),
                Ok(None) => {}
                Err(e) => tracing::warn!(participant = %p, "renegotiation failed: {e}"),
            }
            self.pump(key, now);
        }
    }

    /// This worker gained its first or lost its last subscriber of `track`: tell its owner.
    pub fn send_interest(&mut self, track: TrackId, add: bool, now: Instant) {
        let worker = self.idx;
        self.send_to_owner(track, Input::Interest { track, worker, add }, now);
    }
}
