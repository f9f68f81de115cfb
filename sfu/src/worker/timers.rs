//! Named timers: each job of the worker arms its own deadline when it has something to do,
//! instead of a periodic sweep over every session.

use crate::ids::{SessionKey, TrackId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// rtc's own deadline for a session (ICE checks, DTLS retransmits, RTCP reports, NACK).
    Session(SessionKey),
    /// Layer allocation, probes, keyframe retries and dynacast demand for this worker's
    /// subscribers, every `ALLOCATION_INTERVAL` while it has any.
    Allocate,
    /// A connected session's silence check (disconnected after `ICE_DISCONNECTED`, closed
    /// after `ICE_FAILED`).
    Liveness(SessionKey),
    /// A session that has not connected by then is closed.
    ConnectTimeout(SessionKey),
    /// A throttled PLI toward a published layer comes due.
    Pli(TrackId, u8),
    /// A lower dynacast demand for a track has held long enough to announce.
    DynacastDown(TrackId),
    /// Recompute this worker's dynacast demand now: armed when subscriptions go away, so a
    /// hundred viewers leaving at once cost one pass.
    Demand,
}

/// A min-heap of deadlines; each timer has at most one live deadline (setting it again
/// replaces the old one, which is skipped when it surfaces).
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
    armed: HashMap<Timer, Instant>,
}

impl Timers {
    pub fn set(&mut self, timer: Timer, at: Instant) {
        if self.armed.insert(timer, at) != Some(at) {
            self.heap.push(Reverse((at, timer)));
        }
    }

    /// Arm `timer` unless it is already armed (a recurring job keeps its phase).
    pub fn ensure(&mut self, timer: Timer, at: Instant) {
        if !self.armed.contains_key(&timer) {
            self.set(timer, at);
        }
    }

    pub fn cancel(&mut self, timer: Timer) {
        self.armed.remove(&timer);
    }

    #[cfg(test)]
    pub fn is_armed(&self, timer: Timer) -> bool {
        self.armed.contains_key(&timer)
    }

    /// The earliest live deadline.
    pub fn next(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, timer))) = self.heap.peek() {
            if self.armed.get(&timer) == Some(&at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// A timer whose deadline is at or before `now` (disarmed as it is returned).
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let at = self.next()?;
        if at > now {
            return None;
        }
        let Reverse((_, timer)) = self.heap.pop()?;
        self.armed.remove(&timer);
        Some(timer)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.armed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ParticipantId, SessionRole};
    use std::time::Duration;

    #[test]
    fn a_timer_set_again_fires_once_at_its_last_deadline() {
        let t0 = Instant::now();
        let key = SessionKey { participant: ParticipantId(1), role: SessionRole::Subscriber };
        let mut t = Timers::default();
        t.set(Timer::Session(key), t0 + Duration::from_millis(10));
        t.set(Timer::Allocate, t0 + Duration::from_millis(20));
        t.set(Timer::Session(key), t0 + Duration::from_millis(30));
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(20)));
        assert_eq!(t.pop_due(t0 + Duration::from_millis(25)), Some(Timer::Allocate));
        assert_eq!(t.pop_due(t0 + Duration::from_millis(25)), None);
        assert_eq!(t.pop_due(t0 + Duration::from_millis(30)), Some(Timer::Session(key)));
        assert_eq!(t.pop_due(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn ensure_keeps_the_phase_and_cancel_disarms() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.ensure(Timer::Allocate, t0 + Duration::from_millis(250));
        t.ensure(Timer::Allocate, t0 + Duration::from_millis(900));
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(250)));
        t.cancel(Timer::Allocate);
        assert!(!t.is_armed(Timer::Allocate));
        assert_eq!(t.next(), None);
    }
}
