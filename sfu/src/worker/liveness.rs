//! Our own liveness verdict on a session: a connected client silent for `ICE_DISCONNECTED`
//! (no STUN, RTCP or media at all) counts as disconnected and forwarding to it pauses; after
//! `ICE_FAILED` its session closes (the client reconnects afresh). A session that never
//! connects closes after `connect_timeout`.

use crate::api::{ConnState, SfuEvent};
use crate::ids::SessionKey;
use crate::worker::core::Core;
use crate::worker::timers::Timer;
use std::time::{Duration, Instant};

pub(crate) const ICE_DISCONNECTED: Duration = Duration::from_secs(8);
pub(crate) const ICE_FAILED: Duration = Duration::from_secs(30);

impl Core {
    /// Traffic stopped (Disconnected, forwarding pauses) or came back (Connected; video
    /// restarts at a keyframe).
    pub fn set_connected(&mut self, key: SessionKey, up: bool, now: Instant) {
        let Some(s) = self.transport(key) else { return };
        if s.connected == up {
            return;
        }
        s.connected = up;
        let mut waiting = Vec::new();
        if up {
            s.ever_connected = true;
            // Every video stream starts at a keyframe: from the picture this worker keeps of a
            // layer, if one is young enough; else asked for at once, for the layer this
            // subscriber will start on.
            if key.role == crate::ids::SessionRole::Subscriber {
                if let Some(s) = self.subscriber(key.participant) {
                    s.start_lean(now);
                }
                self.start_from_pictures(key.participant, now);
            }
            if let Some(s) = self.subscriber(key.participant).filter(|_| key.role == crate::ids::SessionRole::Subscriber) {
                for sub in s.forwarders.values_mut() {
                    if let Some(layer) = sub.forwarder.keyframe_to_ask(now, Duration::ZERO) {
                        waiting.push((sub.forwarder.track(), layer));
                    }
                }
            }
        }
        self.arm_liveness(key, now);
        for (track, layer) in waiting {
            self.request_keyframe_from_publisher(track, layer, now);
        }
        let conn = if up { ConnState::Connected } else { ConnState::Disconnected };
        tracing::debug!(?key, ?conn, "connection state");
        self.emit(key.participant, SfuEvent::Connection(key.role, conn));
    }

    /// The next silence check of a session that has connected.
    fn arm_liveness(&mut self, key: SessionKey, now: Instant) {
        let Some(s) = self.transport(key) else { return };
        if !s.ever_connected {
            return;
        }
        let limit = if s.connected { ICE_DISCONNECTED } else { ICE_FAILED };
        let at = (s.last_rx + limit).max(now + Duration::from_millis(1));
        self.timers.set(Timer::Liveness(key), at);
    }

    /// The `Liveness` timer.
    pub fn liveness(&mut self, key: SessionKey, now: Instant) {
        let Some(s) = self.transport(key) else { return };
        let silent = now.saturating_duration_since(s.last_rx);
        if s.ever_connected && silent >= ICE_FAILED {
            tracing::info!(?key, "nothing heard from the client for {ICE_FAILED:?}; closing session");
            self.emit(key.participant, SfuEvent::Connection(key.role, ConnState::Failed));
            self.close_session(key, "connection lost", now);
            return;
        }
        if s.connected && silent >= ICE_DISCONNECTED {
            // Re-arms for ICE_FAILED.
            self.set_connected(key, false, now);
        } else {
            self.arm_liveness(key, now);
        }
    }

    /// The `ConnectTimeout` timer.
    pub fn connect_timeout(&mut self, key: SessionKey, now: Instant) {
        let timeout = self.plane.config.connect_timeout;
        let Some(s) = self.transport(key) else { return };
        if !s.ever_connected && !s.connected {
            tracing::info!(?key, "no ICE connection within {timeout:?}; closing session");
            self.close_session(key, "ICE connection timed out", now);
        }
    }
}
