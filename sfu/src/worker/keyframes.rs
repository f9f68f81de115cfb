//! Keyframes: a subscriber that starts or switches layers waits for one; the request goes to
//! the worker that owns the track, which sends at most one PLI per layer per `pli_throttle`
//! (a throttled request is sent when the throttle ends, by the `Pli` timer).

use crate::ids::{ParticipantId, SessionKey, SessionRole, TrackId};
use crate::session::subscriber::Subscriber;
use crate::worker::core::{Core, drain_writes};
use crate::worker::msg::Input;
use crate::worker::timers::Timer;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The layer that means "every layer the track has" in a keyframe request (a live profile's
/// key-frame interval asks for all of them, one PLI each).
pub(crate) const ALL_LAYERS: u8 = u8::MAX;

/// A video subscriber still waiting for its first keyframe asks again this often.
pub(crate) const KEYFRAME_RETRY: Duration = Duration::from_millis(1000);

/// The picture a new viewer starts from is sent at once: at most this much of the viewer's
/// estimate (a 500 ms picture of a 1.5 Mbit/s layer fits in 250 ms of 2.5 Mbit/s).
pub(crate) const REPLAY_BURST: Duration = Duration::from_millis(250);

impl Core {
    /// Start the video streams of a connected subscriber that have not started yet from the
    /// picture this worker keeps of a layer they may start on (forward/gop.rs), so they need
    /// not wait for a keyframe requested from the publisher. Returns how many started.
    pub fn start_from_pictures(&mut self, participant: ParticipantId, now: Instant) -> usize {
        let max_age = self.plane.config.keyframe_cache;
        if max_age.is_zero() {
            return 0;
        }
        let Some(s) = self.participants.get_mut(&participant).and_then(|p| p.subscriber.as_mut()) else { return 0 };
        if !s.link.connected || s.audio_only() {
            return 0;
        }
        let max_bytes = (s.estimate_bps() * REPLAY_BURST.as_secs_f64() / 8.0) as usize;
        let starts: Vec<(TrackId, Vec<u8>)> = s
            .forwarders
            .values()
            .map(|sub| (sub.forwarder.track(), sub.forwarder.start_layers(now)))
            .filter(|(_, l)| !l.is_empty())
            .collect();
        let mut started = 0;
        let mut sent = 0u64;
        for (track, layers) in starts {
            let Some(gop) = self.router.gops.get(&track) else { continue };
            let Some(picture) = layers.iter().find_map(|&l| gop.picture(l, now, max_age, max_bytes)) else { continue };
            for pkt in picture {
                if s.replay(pkt, &mut self.out.transmit, now) {
                    sent += 1;
                }
                // Through rtc, one packet at a time through its queues, as the live path does:
                // a whole picture queued at once grows each of them to its size for good (RSS
                // per viewer 444 KiB instead of 361 at 200 viewers, docs/benchmarks.md).
                if !s.is_lean() {
                    drain_writes(&mut self.out.transmit, &mut s.link);
                }
            }
            if s.forwarders.get(&track).is_some_and(|sub| sub.forwarder.current().is_some()) {
                started += 1;
            }
        }
        drain_writes(&mut self.out.transmit, &mut s.link);
        Core::reschedule(&mut self.timers, &mut s.link);
        if started > 0 {
            self.plane.counters.keyframe_replays.fetch_add(started as u64, Ordering::Relaxed);
            self.plane.counters.rtp_out.fetch_add(sent, Ordering::Relaxed);
        }
        started
    }

    /// The keyframes a connected subscriber waits for and has not asked for in the last
    /// `KEYFRAME_RETRY` (marked as asked now).
    pub fn keyframe_waits(s: &mut Subscriber, now: Instant) -> Vec<(TrackId, u8)> {
        let mut out = Vec::new();
        for sub in s.forwarders.values_mut() {
            if let Some(layer) = sub.forwarder.keyframe_to_ask(now, KEYFRAME_RETRY) {
                out.push((sub.forwarder.track(), layer));
            }
        }
        out
    }

    pub fn request_keyframe_from_publisher(&mut self, track: TrackId, layer: u8, now: Instant) {
        self.plane.counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        self.send_to_owner(track, Input::KeyframeRequest(track, layer), now);
    }

    /// Throttled PLI toward the publisher of `track` (which lives on this worker), for the
    /// encoding of `layer` (or the nearest one it sends).
    pub fn keyframe_request(&mut self, track: TrackId, layer: u8, now: Instant) {
        // A relayed track's publisher is on the origin: signaling asks there.
        if self.relay_keyframe(track, layer, now) {
            return;
        }
        if layer == ALL_LAYERS {
            let Some(publisher) = self.router.published.get(&track).map(|p| p.publisher) else { return };
            let layers: Vec<u8> = self
                .participants
                .get(&publisher)
                .and_then(|p| p.publisher.as_ref())
                .and_then(|s| s.published.values().find(|t| t.id == track))
                .map(|t| t.layers.iter().map(|l| l.layer).collect())
                .unwrap_or_default();
            for l in layers {
                self.keyframe_request(track, l, now);
            }
            return;
        }
        let throttle = self.plane.config.pli_throttle;
        let Some(publisher) = self.router.published.get(&track).map(|p| p.publisher) else { return };
        let key = SessionKey { participant: publisher, role: SessionRole::Publisher };
        let Some(session) = self.participants.get_mut(&key.participant).and_then(|p| p.publisher.as_mut()) else { return };
        let Some(t) = session.published.values_mut().find(|t| t.id == track) else { return };
        let receiver_id = t.receiver_id;
        let Some(l) = t.layer_for_keyframe(layer) else { return };
        if let Some(last) = l.last_pli.filter(|last| now.duration_since(*last) < throttle) {
            // The keyframe asked for last has not arrived yet: it serves this request too (a
            // viewer still waiting after it asks again, `KEYFRAME_RETRY`).
            if l.last_keyframe.is_none_or(|k| k < last) {
                return;
            }
            l.pli_pending = true;
            let layer = l.layer;
            self.timers.set(Timer::Pli(track, layer), last + throttle);
            return;
        }
        l.last_pli = Some(now);
        l.pli_pending = false;
        let media_ssrc = l.ssrc;
        if let Some(mut receiver) = session.link.pc.rtp_receiver(receiver_id) {
            let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc };
            match receiver.write_rtcp(now, vec![Box::new(pli)]) {
                Ok(()) => {
                    self.plane.counters.plis_sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::debug!(%track, "PLI not sent: {e}"),
            }
        }
        self.pump(key, now);
    }

    /// The `Pli` timer: a throttled request for this layer is due.
    pub fn pli_due(&mut self, track: TrackId, layer: u8, now: Instant) {
        let Some(publisher) = self.router.published.get(&track).map(|p| p.publisher) else { return };
        let pending = self
            .participants
            .get_mut(&publisher)
            .and_then(|p| p.publisher.as_mut())
            .and_then(|s| s.published.values_mut().find(|t| t.id == track))
            .and_then(|t| t.layers.iter().find(|l| l.layer == layer))
            .is_some_and(|l| l.pli_pending);
        if pending {
            self.keyframe_request(track, layer, now);
        }
    }
}
