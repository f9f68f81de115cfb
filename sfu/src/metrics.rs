//! Process-wide media counters that are not per worker (NACKs, retransmissions, bytes in) and
//! each worker's forwarding-delay histogram. Read by operators (`Sfu::stats`, signaling's
//! `/metrics`); written with relaxed atomics, never with a lock, and only where the event
//! happens (a NACK, a batch of forwarded copies), never per byte.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Whether the per-packet figures (forwarding delay, bytes in) are kept. On by default; off only
/// to measure what they cost (docs/benchmarks.md, "Metrics on the hot path").
static PER_PACKET: AtomicBool = AtomicBool::new(true);

pub fn set_per_packet(on: bool) {
    PER_PACKET.store(on, Ordering::Relaxed);
}

#[inline]
pub fn per_packet() -> bool {
    PER_PACKET.load(Ordering::Relaxed)
}

/// Packets viewers asked again (NACKed sequence numbers that reached the guard).
pub static NACKED: AtomicU64 = AtomicU64::new(0);
/// Of those, the ones let through to be resent (RTX).
pub static RETRANSMITTED: AtomicU64 = AtomicU64::new(0);
/// Full intra requests received from viewers (PLIs are counted by the worker).
pub static FIRS_RECEIVED: AtomicU64 = AtomicU64::new(0);
/// Times a viewer's forwarded simulcast layer changed.
pub static LAYER_SWITCHES: AtomicU64 = AtomicU64::new(0);

/// Viewers' bandwidth estimates, sampled at every layer allocation (4 a second per viewer).
pub static ESTIMATES: EstimateHistogram = EstimateHistogram::new();

/// Upper bounds of the estimate buckets, in bits per second (the last bucket is +Inf).
pub const ESTIMATE_BOUNDS_BPS: [u64; 10] =
    [100_000, 250_000, 500_000, 1_000_000, 1_500_000, 2_500_000, 4_000_000, 6_000_000, 10_000_000, 25_000_000];

/// A fixed-bucket histogram of estimates (shared by every worker: written 4 times a second per
/// viewer, not per packet).
pub struct EstimateHistogram {
    buckets: [AtomicU64; ESTIMATE_BOUNDS_BPS.len() + 1],
    sum_bps: AtomicU64,
}

impl EstimateHistogram {
    pub const fn new() -> Self {
        Self { buckets: [const { AtomicU64::new(0) }; ESTIMATE_BOUNDS_BPS.len() + 1], sum_bps: AtomicU64::new(0) }
    }

    pub fn record(&self, bps: f64) {
        let v = bps.max(0.0) as u64;
        let i = ESTIMATE_BOUNDS_BPS.iter().position(|&b| v <= b).unwrap_or(ESTIMATE_BOUNDS_BPS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_bps.fetch_add(v, Ordering::Relaxed);
    }

    /// Counts per bucket (not cumulative; the last is +Inf) and the sum.
    pub fn snapshot(&self) -> ([u64; ESTIMATE_BOUNDS_BPS.len() + 1], u64) {
        let mut c = [0; ESTIMATE_BOUNDS_BPS.len() + 1];
        for (i, b) in self.buckets.iter().enumerate() {
            c[i] = b.load(Ordering::Relaxed);
        }
        (c, self.sum_bps.load(Ordering::Relaxed))
    }
}

impl Default for EstimateHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Upper bounds of the forwarding-delay buckets, in microseconds (the last bucket is +Inf).
pub const DELAY_BOUNDS_US: [u64; 12] = [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000];

/// From a packet's arrival to its copies being handed to the socket, per packet (not per copy).
#[derive(Default)]
pub struct DelayHistogram {
    /// Not cumulative: bucket i counts delays ≤ bound i and > bound i-1; the last is +Inf.
    buckets: [AtomicU64; DELAY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl DelayHistogram {
    pub fn record(&self, us: u64) {
        let i = DELAY_BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(DELAY_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Add this histogram into `into`.
    pub fn add_to(&self, into: &mut DelaySnapshot) {
        for (i, b) in self.buckets.iter().enumerate() {
            into.counts[i] += b.load(Ordering::Relaxed);
        }
        into.sum_us += self.sum_us.load(Ordering::Relaxed);
    }
}

/// A histogram's counts (per bucket, not cumulative; the last is +Inf) and sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct DelaySnapshot {
    pub counts: [u64; DELAY_BOUNDS_US.len() + 1],
    pub sum_us: u64,
}

impl DelaySnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value below which `q` of the samples fall (the bucket's upper bound), in µs.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(DELAY_BOUNDS_US.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_land_in_their_buckets() {
        let h = DelayHistogram::default();
        for us in [50, 100, 101, 3_000, 2_000_000] {
            h.record(us);
        }
        let mut s = DelaySnapshot::default();
        h.add_to(&mut s);
        assert_eq!(s.counts[0], 2, "≤ 100 µs, the bound included");
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[5], 1, "3 ms ≤ 5 ms");
        assert_eq!(s.counts[DELAY_BOUNDS_US.len()], 1, "+Inf");
        assert_eq!((s.count(), s.sum_us), (5, 2_003_251));
        assert_eq!(s.quantile_us(0.5), Some(250));
        assert_eq!(DelaySnapshot::default().quantile_us(0.5), None);
    }
}
