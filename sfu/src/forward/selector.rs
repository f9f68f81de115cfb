//! Which simulcast layer a subscriber should get: pure decisions, no I/O, time passed in.
//!
//! Three caps, the lowest wins:
//! - **preference**: the viewer's choice, auto / high / medium / low;
//! - **size**: the smallest layer at least as tall as the video element the viewer renders
//!   (reported by the page), so a 160×90 thumbnail never pulls 720p;
//! - **bandwidth**: what the estimate toward this viewer affords, with hysteresis — down at once
//!   when the current layer no longer fits, up only after a higher layer has fitted with headroom
//!   for [`UP_HOLD`] (straight to the highest such layer: the estimator's probes have already
//!   confirmed the path, see `bwe/`).
//!
//! The forwarder then follows the cap as layers actually arrive (see `forward/forwarder.rs`).

use crate::media::simulcast::MAX_LAYERS;
use std::time::{Duration, Instant};

/// How long a higher layer must fit before the bandwidth cap climbs to it.
pub const UP_HOLD: Duration = Duration::from_secs(2);
/// A layer fits for climbing when its rate × this ≤ the budget.
pub const UP_HEADROOM: f64 = 1.25;
/// The current layer stays while its rate × this ≤ the budget.
pub const DOWN_MARGIN: f64 = 1.0;
/// Nominal layer rates (bits/s) used before a layer has been measured (`q`, `h`, `f`).
pub const NOMINAL_BPS: [f64; MAX_LAYERS] = [150_000.0, 500_000.0, 1_500_000.0];

/// How layers follow the bandwidth estimate (the `[rtc]` knobs of the config file).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerPolicy {
    /// How long a higher layer must fit before a viewer climbs to it.
    pub up_hold: Duration,
    /// A layer fits for climbing when its rate × this ≤ the budget.
    pub up_headroom: f64,
    /// Where a viewer's estimate starts (bits/s) before feedback says otherwise.
    pub initial_estimate_bps: f64,
    /// The most an estimate may say (bits/s).
    pub max_estimate_bps: f64,
}

impl Default for LayerPolicy {
    fn default() -> Self {
        Self { up_hold: UP_HOLD, up_headroom: UP_HEADROOM, initial_estimate_bps: 2_500_000.0, max_estimate_bps: 50_000_000.0 }
    }
}

/// The viewer's quality choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    #[default]
    Auto,
    High,
    Medium,
    Low,
}

impl Quality {
    pub fn cap(self) -> u8 {
        match self {
            Quality::Auto | Quality::High => MAX_LAYERS as u8 - 1,
            Quality::Medium => 1,
            Quality::Low => 0,
        }
    }
}

/// The smallest layer whose height is at least `wanted` (the top layer if none is). Unknown
/// heights are estimated from the tallest known one assuming the usual ¼, ½, 1 scaling.
pub fn size_cap(wanted_height: Option<u32>, heights: [Option<u32>; MAX_LAYERS]) -> u8 {
    let Some(wanted) = wanted_height else {
        return MAX_LAYERS as u8 - 1;
    };
    let top = (0..MAX_LAYERS).rev().find_map(|l| heights[l].map(|h| (l, h)));
    let estimate = |l: usize| -> Option<u32> { heights[l].or_else(|| top.map(|(tl, th)| th >> (tl.saturating_sub(l) as u32))) };
    for l in 0..MAX_LAYERS {
        match estimate(l) {
            Some(h) if h >= wanted => return l as u8,
            // Nothing known: assume 180p / 360p / 720p.
            None if top.is_none() && (180u32 << l) >= wanted => return l as u8,
            _ => {}
        }
    }
    MAX_LAYERS as u8 - 1
}

/// Bandwidth cap of one subscriber track, with hysteresis.
#[derive(Clone, Debug)]
pub struct BandwidthCap {
    pub cap: u8,
    /// Since when each layer above the cap has fitted with headroom, without a break.
    up_since: [Option<Instant>; MAX_LAYERS],
    hold: Duration,
    headroom: f64,
}

impl Default for BandwidthCap {
    fn default() -> Self {
        Self::new(UP_HOLD, UP_HEADROOM)
    }
}

impl BandwidthCap {
    pub fn new(hold: Duration, headroom: f64) -> Self {
        Self { cap: MAX_LAYERS as u8 - 1, up_since: [None; MAX_LAYERS], hold, headroom: headroom.max(1.0) }
    }

    /// Update with the budget this track may use and the layers' rates; returns the new cap.
    #[cfg(test)]
    pub fn update(&mut self, budget_bps: f64, rates: [f64; MAX_LAYERS], now: Instant) -> u8 {
        self.update_with_floors(budget_bps, rates, rates, now)
    }

    /// [`update`](Self::update) where a layer can shed frame rate (VP8 temporal layers): it stays
    /// while its `floors` rate (the base temporal layer alone) fits, and is climbed to only
    /// when its full rate fits with headroom.
    pub fn update_with_floors(&mut self, budget_bps: f64, rates: [f64; MAX_LAYERS], floors: [f64; MAX_LAYERS], now: Instant) -> u8 {
        let fits = |l: u8, factor: f64| rates[l as usize] * factor <= budget_bps;
        let stays = |l: u8| floors[l as usize].min(rates[l as usize]) * DOWN_MARGIN <= budget_bps;
        if self.cap > 0 && !stays(self.cap) {
            // Down at once, as far as needed.
            let mut l = self.cap;
            while l > 0 && !stays(l) {
                l -= 1;
            }
            self.cap = l;
            self.up_since = [None; MAX_LAYERS];
            return self.cap;
        }
        let mut climb = None;
        for l in self.cap as usize + 1..MAX_LAYERS {
            if fits(l as u8, self.headroom) {
                let since = *self.up_since[l].get_or_insert(now);
                if now.duration_since(since) >= self.hold {
                    climb = Some(l as u8);
                }
            } else {
                self.up_since[l] = None;
            }
        }
        if let Some(l) = climb {
            self.cap = l;
            self.up_since = [None; MAX_LAYERS];
        }
        self.cap
    }
}

/// Split `budget_bps` over a subscriber's video tracks: each first gets its lowest layer, then
/// tracks climb one layer at a time, round-robin, while the next layer fits and the track wants
/// it (`wanted[i]`). Returns what each track can afford.
pub fn allocate(budget_bps: f64, rates: &[[f64; MAX_LAYERS]], wanted: &[u8]) -> Vec<f64> {
    let n = rates.len();
    let mut level = vec![0u8; n];
    let mut spent: f64 = rates.iter().map(|r| r[0]).sum();
    loop {
        let mut climbed = false;
        for i in 0..n {
            let next = level[i] + 1;
            if next > wanted.get(i).copied().unwrap_or(0) || next as usize >= MAX_LAYERS {
                continue;
            }
            let extra = rates[i][next as usize] - rates[i][level[i] as usize];
            if spent + extra <= budget_bps {
                spent += extra;
                level[i] = next;
                climbed = true;
            }
        }
        if !climbed {
            break;
        }
    }
    if spent > budget_bps {
        // Not even every lowest layer fits: shares in proportion (each will sit on its lowest).
        let scale = budget_bps.max(0.0) / spent.max(1.0);
        return rates.iter().map(|r| r[0] * scale).collect();
    }
    // Each track's share is what its level costs plus an equal part of what is left over, so a
    // track can grow into spare capacity (the hysteresis decides when).
    let left = (budget_bps - spent).max(0.0) / n.max(1) as f64;
    (0..n).map(|i| rates[i][level[i] as usize] + left).collect()
}

/// A per-layer bitrate meter (one-second windows, smoothed).
#[derive(Clone, Debug, Default)]
pub struct LayerRates {
    bytes: [u64; MAX_LAYERS],
    window_start: Option<Instant>,
    measured: [Option<f64>; MAX_LAYERS],
    /// Bytes per VP8 temporal layer in the window, and each layer's smoothed share of its
    /// spatial layer's bytes (TID 0, 1, 2).
    temporal_bytes: [[u64; 3]; MAX_LAYERS],
    temporal_share: [Option<[f64; 3]>; MAX_LAYERS],
    /// First and last arrival of each layer in the current window.
    seen: [Option<(Instant, Instant)>; MAX_LAYERS],
}

/// A window measures a layer only if the layer arrived from (about) its start to its end. A
/// layer that dynacast paused or resumed partway through would read as a fraction of its rate,
/// and a selector trusting that would climb onto a layer the path cannot carry: a viewer behind
/// 400 kbit/s, settled on the 150 k layer, climbed onto the 500 k layer once dynacast paused it
/// just after a window began (it then read about 255 k; the issue-21 failure, 1 run in 4).
const WHOLE_WINDOW_SLACK: Duration = Duration::from_millis(300);

impl LayerRates {
    #[cfg(test)]
    pub fn record(&mut self, layer: u8, bytes: usize, now: Instant) {
        self.record_temporal(layer, bytes, None, now);
    }

    /// [`record`](Self::record), with the packet's VP8 temporal layer if it has one.
    pub fn record_temporal(&mut self, layer: u8, bytes: usize, tid: Option<u8>, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.duration_since(start);
        if elapsed >= Duration::from_secs(1) {
            for l in 0..MAX_LAYERS {
                let whole = self.seen[l].is_some_and(|(first, last)| {
                    first.duration_since(start) <= WHOLE_WINDOW_SLACK && now.duration_since(last) <= WHOLE_WINDOW_SLACK
                });
                self.seen[l] = None;
                if self.bytes[l] > 0 && whole {
                    let bps = self.bytes[l] as f64 * 8.0 / elapsed.as_secs_f64();
                    self.measured[l] = Some(self.measured[l].map_or(bps, |old| 0.5 * old + 0.5 * bps));
                }
                let tb = self.temporal_bytes[l];
                let total: u64 = tb.iter().sum();
                // Only a layer whose packets all said their temporal layer is split.
                if total > 0 && total == self.bytes[l] {
                    let share = tb.map(|b| b as f64 / total as f64);
                    self.temporal_share[l] = Some(match self.temporal_share[l] {
                        Some(old) => [0, 1, 2].map(|t| 0.5 * old[t] + 0.5 * share[t]),
                        None => share,
                    });
                } else if self.bytes[l] > 0 {
                    self.temporal_share[l] = None;
                }
                self.bytes[l] = 0;
                self.temporal_bytes[l] = [0; 3];
            }
            self.window_start = Some(now);
        }
        if let Some(b) = self.bytes.get_mut(layer as usize) {
            *b += bytes as u64;
            let seen = &mut self.seen[layer as usize];
            *seen = Some(seen.map_or((now, now), |(first, _)| (first, now)));
        }
        if let (Some(t), Some(tb)) = (tid, self.temporal_bytes.get_mut(layer as usize)) {
            tb[(t as usize).min(2)] += bytes as u64;
        }
    }

    /// Per spatial layer, the rate with temporal layers 0..=t (t = 0, 1, 2); the whole layer's
    /// rate three times for a layer without temporal layers.
    pub fn temporal_rates(&self) -> [[f64; 3]; MAX_LAYERS] {
        let rates = self.rates();
        let mut out = [[0.0; 3]; MAX_LAYERS];
        for l in 0..MAX_LAYERS {
            out[l] = match self.temporal_share[l] {
                Some(s) => [s[0] * rates[l], (s[0] + s[1]) * rates[l], rates[l]],
                None => [rates[l]; 3],
            };
        }
        out
    }

    /// A layer's measured rate (bits/s), if a whole window has measured it.
    pub fn measured(&self, layer: u8) -> Option<f64> {
        self.measured.get(layer as usize).copied().flatten()
    }

    /// Measured rates, nominal where a layer was never seen.
    pub fn rates(&self) -> [f64; MAX_LAYERS] {
        let mut r = NOMINAL_BPS;
        for (rate, measured) in r.iter_mut().zip(self.measured) {
            if let Some(m) = measured {
                *rate = m;
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: [f64; 3] = [150e3, 500e3, 1500e3];

    /// Issue 21, in virtual time: a viewer settled on the low layer behind a 340 kbit/s budget
    /// (a 400 kbit/s path) must not climb when dynacast pauses the layers above it. The
    /// publisher sends 150 k / 500 k / 1.2 M at 30 frames a second; the pause comes right after
    /// a one-second measuring window began, so that window holds one frame of each paused layer.
    #[test]
    fn a_layer_paused_partway_through_a_window_does_not_look_cheap() {
        let t0 = Instant::now();
        let mut rates = LayerRates::default();
        let mut cap = BandwidthCap::default();
        let budget = 340e3;
        let frame = Duration::from_micros(33_333);
        let sizes = [150e3 / 8.0 / 30.0, 500e3 / 8.0 / 30.0, 1.2e6 / 8.0 / 30.0];
        let mut climbed = None;
        let mut windows = 0;
        let mut last_start = None;
        let mut paused = false;
        for i in 0..360u32 {
            let t = t0 + frame * i;
            rates.record(0, sizes[0] as usize, t);
            if rates.window_start != last_start {
                last_start = rates.window_start;
                windows += 1;
                // The first frame of the fourth window is the paused layers' last.
                if windows == 4 {
                    rates.record(1, sizes[1] as usize, t);
                    rates.record(2, sizes[2] as usize, t);
                    paused = true;
                }
            }
            if !paused {
                rates.record(1, sizes[1] as usize, t);
                rates.record(2, sizes[2] as usize, t);
            }
            let c = cap.update(budget, rates.rates(), t);
            if c > 0 && i > 60 && climbed.is_none() {
                climbed = Some((t.duration_since(t0), rates.rates()));
            }
        }
        assert!(paused);
        assert_eq!(climbed, None, "climbed above a 340 kbit/s budget after a layer paused");
        // Layer 1 still reads its real rate, not a fraction of it.
        assert!((rates.rates()[1] - 500e3).abs() < 50e3, "{:?}", rates.rates());
    }

    #[test]
    fn steps_down_at_once_and_up_after_the_hold() {
        let t0 = Instant::now();
        let mut c = BandwidthCap::default();
        assert_eq!(c.update(2.0e6, RATES, t0), 2);
        // The budget collapses: straight to the lowest layer.
        assert_eq!(c.update(300e3, RATES, t0), 0);
        // It recovers to 700k: h fits with headroom, f does not; h after the hold, never before.
        assert_eq!(c.update(700e3, RATES, t0 + Duration::from_millis(100)), 0);
        assert_eq!(c.update(700e3, RATES, t0 + Duration::from_millis(1500)), 0);
        assert_eq!(c.update(700e3, RATES, t0 + Duration::from_millis(2200)), 1);
        assert_eq!(c.update(700e3, RATES, t0 + Duration::from_millis(5000)), 1);
        // Then to 2 M: f fits; it is taken once it has fitted for the hold.
        assert_eq!(c.update(2.0e6, RATES, t0 + Duration::from_millis(5100)), 1);
        assert_eq!(c.update(2.0e6, RATES, t0 + Duration::from_millis(6500)), 1);
        assert_eq!(c.update(2.0e6, RATES, t0 + Duration::from_millis(7200)), 2);
        // Collapse and a full recovery: straight from q to f after one hold, not two.
        assert_eq!(c.update(300e3, RATES, t0 + Duration::from_millis(8000)), 0);
        assert_eq!(c.update(2.0e6, RATES, t0 + Duration::from_millis(8100)), 0);
        assert_eq!(c.update(2.0e6, RATES, t0 + Duration::from_millis(10_200)), 2);
    }

    #[test]
    fn hysteresis_holds_between_the_thresholds() {
        let t0 = Instant::now();
        let mut c = BandwidthCap::default();
        c.update(600e3, RATES, t0); // 1.5 M does not fit: down to h (500k fits)
        assert_eq!(c.cap, 1);
        // 1.6 M: f fits (1.5 M) but not with 25% headroom (1.875 M): stay, however long.
        for s in 1..20 {
            assert_eq!(c.update(1.6e6, RATES, t0 + Duration::from_secs(s)), 1);
        }
        // A blip above the threshold shorter than the hold does not climb.
        c.update(2.0e6, RATES, t0 + Duration::from_secs(30));
        assert_eq!(c.update(1.6e6, RATES, t0 + Duration::from_millis(31_000)), 1);
        assert_eq!(c.update(2.0e6, RATES, t0 + Duration::from_millis(31_500)), 1);
        // Oscillating budget around h: no flapping between h and q while h still fits.
        for s in 40..60 {
            let b = if s % 2 == 0 { 520e3 } else { 700e3 };
            assert_eq!(c.update(b, RATES, t0 + Duration::from_secs(s)), 1);
        }
    }

    #[test]
    fn size_caps_pick_the_smallest_layer_tall_enough() {
        let known = [Some(180), Some(360), Some(720)];
        assert_eq!(size_cap(None, known), 2);
        assert_eq!(size_cap(Some(90), known), 0);
        assert_eq!(size_cap(Some(180), known), 0);
        assert_eq!(size_cap(Some(181), known), 1);
        assert_eq!(size_cap(Some(700), known), 2);
        assert_eq!(size_cap(Some(2000), known), 2);
        // Only the top layer measured: the others are estimated at ½ and ¼.
        assert_eq!(size_cap(Some(300), [None, None, Some(720)]), 1);
        // Nothing known: 180/360/720 assumed.
        assert_eq!(size_cap(Some(100), [None; 3]), 0);
        assert_eq!(size_cap(Some(400), [None; 3]), 2);
    }

    #[test]
    fn missing_layers_fall_back_to_what_exists() {
        // Two layers only (no f): heights of q and h known, the wanted size above h → top cap,
        // and the forwarder then takes the best layer arriving.
        assert_eq!(size_cap(Some(600), [Some(180), Some(360), None]), 2);
        assert_eq!(Quality::Low.cap(), 0);
        assert_eq!(Quality::Medium.cap(), 1);
        assert_eq!(Quality::Auto.cap(), 2);
    }

    #[test]
    fn allocation_gives_every_track_its_lowest_layer_first() {
        let r = vec![RATES, RATES];
        // 1.2 M for two tracks: both get h (2 × 500k), not one f and one q.
        let a = allocate(1.2e6, &r, &[2, 2]);
        assert!(a.iter().all(|s| *s >= 500e3 && *s < 1.5e6), "{a:?}");
        // A track that only wants q leaves the rest to the other.
        let a = allocate(2.0e6, &r, &[0, 2]);
        assert!(a[1] >= 1.5e6, "{a:?}");
        // Too little for even the lowest layers: equal shares below q.
        let a = allocate(100e3, &r, &[2, 2]);
        assert!(a.iter().all(|s| *s < 150e3));
    }

    #[test]
    fn rates_are_measured_per_layer() {
        let t0 = Instant::now();
        let mut m = LayerRates::default();
        for i in 0..100 {
            let at = t0 + Duration::from_millis(i * 11);
            m.record(0, 200, at); // ~145 kbit/s
            m.record(2, 2000, at); // ~1.45 Mbit/s
        }
        m.record(0, 0, t0 + Duration::from_millis(1100));
        let r = m.rates();
        assert!((r[0] - 145e3).abs() < 20e3, "{r:?}");
        assert_eq!(r[1], NOMINAL_BPS[1]);
        assert!((r[2] - 1.45e6).abs() < 0.2e6, "{r:?}");
    }
}
