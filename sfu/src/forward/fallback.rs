//! The audio-only fallback of one viewer (issue 12): when its path cannot carry even the lowest
//! layer of its video tracks, video is paused and audio keeps flowing, until the estimate shows
//! room for that layer again. Pure decisions, time passed in; the subscriber session feeds it its
//! estimate at every allocation pass and pauses or resumes its video forwarders.
//!
//! - **Enter** when the estimate has stayed below what the lowest layers need (their measured
//!   rates, plus audio) for [`FallbackPolicy::enter`], without a break.
//! - **Leave** when the estimate has stayed at or above the lowest layers × `headroom` (plus
//!   audio) for [`FallbackPolicy::leave_hold`]. With no video flowing the estimate can only
//!   climb by probing, so a paused viewer keeps being probed toward that level (see
//!   `Subscriber::probe`).
//!
//! The gap between the two thresholds (the headroom) and the holds keep a viewer on a path that
//! barely carries the lowest layer from flapping between video and audio.

use std::time::{Duration, Instant};

/// When a viewer falls back to audio only and when it returns (the `[rtc]` knobs of the config).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FallbackPolicy {
    /// The estimate must stay below the lowest layers' need this long before video is paused.
    pub enter: Duration,
    /// The estimate must show room for the lowest layers × `headroom` this long before video
    /// resumes.
    pub leave_hold: Duration,
    /// Room needed to resume, as a factor on the lowest layers' rate (≥ 1).
    pub headroom: f64,
}

impl Default for FallbackPolicy {
    fn default() -> Self {
        Self { enter: Duration::from_secs(3), leave_hold: Duration::from_secs(2), headroom: 1.25 }
    }
}

/// What a viewer's video needs at the least: its video tracks' lowest layers, and its audio.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Need {
    /// Sum of the lowest layer's rate of every video track (bits/s).
    pub video_bps: f64,
    /// Sum of the audio tracks' rates (bits/s).
    pub audio_bps: f64,
}

impl Need {
    /// Below this the path cannot carry the lowest layers.
    pub fn enter_below(&self) -> f64 {
        self.video_bps + self.audio_bps
    }

    /// At or above this there is room for the lowest layers with headroom.
    pub fn leave_at(&self, headroom: f64) -> f64 {
        self.video_bps * headroom.max(1.0) + self.audio_bps
    }
}

/// One viewer's fallback state.
#[derive(Clone, Debug)]
pub struct Fallback {
    enabled: bool,
    active: bool,
    /// Since when the estimate has been below the need (while not active), without a break.
    below_since: Option<Instant>,
    /// Since when the estimate has shown room to resume (while active), without a break.
    room_since: Option<Instant>,
}

impl Default for Fallback {
    fn default() -> Self {
        Self { enabled: true, active: false, below_since: None, room_since: None }
    }
}

impl Fallback {
    /// Whether video is paused now.
    pub fn active(&self) -> bool {
        self.active
    }

    /// Switch the rule on or off. Returns `Some(false)` when that resumes a paused viewer.
    pub fn set_enabled(&mut self, enabled: bool) -> Option<bool> {
        if self.enabled == enabled {
            return None;
        }
        self.enabled = enabled;
        self.below_since = None;
        self.room_since = None;
        if !enabled && self.active {
            self.active = false;
            return Some(false);
        }
        None
    }

    /// One allocation pass: the estimate toward the viewer (`None` before feedback) and what its
    /// video needs (`None`: no video track). Returns `Some(true)` when video is to be paused now,
    /// `Some(false)` when it is to resume, `None` when nothing changes.
    pub fn update(&mut self, policy: &FallbackPolicy, estimate: Option<f64>, need: Option<Need>, now: Instant) -> Option<bool> {
        if !self.enabled {
            return None;
        }
        let Some(need) = need else {
            // No video left to pause (its tracks ended): nothing is held back any more.
            self.below_since = None;
            self.room_since = None;
            if self.active {
                self.active = false;
                return Some(false);
            }
            return None;
        };
        let Some(estimate) = estimate else {
            // No feedback, no evidence either way.
            self.below_since = None;
            self.room_since = None;
            return None;
        };
        if self.active {
            if estimate >= need.leave_at(policy.headroom) {
                let since = *self.room_since.get_or_insert(now);
                if now.duration_since(since) >= policy.leave_hold {
                    self.active = false;
                    self.room_since = None;
                    return Some(false);
                }
            } else {
                self.room_since = None;
            }
        } else if estimate < need.enter_below() {
            let since = *self.below_since.get_or_insert(now);
            if now.duration_since(since) >= policy.enter {
                self.active = true;
                self.below_since = None;
                return Some(true);
            }
        } else {
            self.below_since = None;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEED: Need = Need { video_bps: 150e3, audio_bps: 40e3 };
    const PASS: Duration = Duration::from_millis(250);

    /// Drives a fallback with one estimate per allocation pass; returns when each change came
    /// (time since `from`).
    fn drive(f: &mut Fallback, t0: Instant, from: u32, to: u32, estimate: impl Fn(u32) -> f64) -> Vec<(Duration, bool)> {
        let policy = FallbackPolicy::default();
        (from..to).filter_map(|i| f.update(&policy, Some(estimate(i)), Some(NEED), t0 + PASS * i).map(|c| (PASS * (i - from), c))).collect()
    }

    #[test]
    fn enters_after_the_estimate_stayed_below_for_enter_and_leaves_after_the_hold() {
        let t0 = Instant::now();
        let mut f = Fallback::default();
        // Plenty: nothing happens.
        assert_eq!(drive(&mut f, t0, 0, 20, |_| 2e6), vec![]);
        // 60 kbit/s (below 150 k + 40 k): audio only exactly `enter` (3 s) after the first low
        // sample.
        assert_eq!(drive(&mut f, t0, 20, 60, |_| 60e3), vec![(Duration::from_secs(3), true)]);
        assert!(f.active());
        // Enough for the layer but not with headroom (190 k ≤ e < 227.5 k): stays paused.
        assert_eq!(drive(&mut f, t0, 60, 100, |_| 200e3), vec![]);
        // Room with headroom: back to video `leave_hold` (2 s) later.
        assert_eq!(drive(&mut f, t0, 100, 140, |_| 230e3), vec![(Duration::from_secs(2), false)]);
        assert!(!f.active());
    }

    #[test]
    fn a_dip_shorter_than_enter_or_a_blip_shorter_than_the_hold_changes_nothing() {
        let t0 = Instant::now();
        let mut f = Fallback::default();
        // Below for 2.75 s, then one pass above: the clock starts again.
        let dip = |i: u32| if i % 12 == 11 { 300e3 } else { 100e3 };
        assert_eq!(drive(&mut f, t0, 0, 120, dip), vec![]);
        // In: then room for 1.75 s at a time, broken by a low pass: stays paused.
        assert_eq!(drive(&mut f, t0, 120, 140, |_| 100e3), vec![(Duration::from_secs(3), true)]);
        let blip = |i: u32| if i % 8 == 7 { 100e3 } else { 500e3 };
        assert_eq!(drive(&mut f, t0, 140, 240, blip), vec![]);
        assert!(f.active());
    }

    #[test]
    fn switched_off_it_resumes_at_once_and_never_enters() {
        let t0 = Instant::now();
        let mut f = Fallback::default();
        assert_eq!(drive(&mut f, t0, 0, 20, |_| 60e3), vec![(Duration::from_secs(3), true)]);
        assert_eq!(f.set_enabled(false), Some(false));
        assert!(!f.active());
        assert_eq!(drive(&mut f, t0, 20, 100, |_| 60e3), vec![]);
        // On again: the clock starts from the switch, not from the old low samples.
        assert_eq!(f.set_enabled(true), None);
        assert_eq!(drive(&mut f, t0, 100, 120, |_| 60e3), vec![(Duration::from_secs(3), true)]);
    }

    #[test]
    fn no_feedback_or_no_video_is_no_reason_to_pause() {
        let t0 = Instant::now();
        let policy = FallbackPolicy::default();
        let mut f = Fallback::default();
        for i in 0..40 {
            assert_eq!(f.update(&policy, None, Some(NEED), t0 + PASS * i), None);
            assert_eq!(f.update(&policy, Some(10e3), None, t0 + PASS * i), None);
        }
        // Paused, then its video track ends: nothing is held back any more.
        assert_eq!(drive(&mut f, t0, 40, 60, |_| 60e3), vec![(Duration::from_secs(3), true)]);
        assert_eq!(f.update(&policy, Some(60e3), None, t0 + PASS * 60), Some(false));
    }
}
