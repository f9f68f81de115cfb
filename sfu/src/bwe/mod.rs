//! Send-side bandwidth estimation toward one viewer, with probing.
//!
//! rtc's congestion-control interceptor records every departing packet with its transport-wide
//! sequence number and resolves the viewer's TWCC feedback into per-packet reports (departure
//! instant here, arrival instant on the viewer's clock, size, lost or not). This module turns those
//! reports into the number the layer selector spends.
//!
//! Why not rtc's GCC: an SFU is application-limited — it sends what the chosen layers weigh, not
//! what the path could carry — and GCC only grows from the acknowledged rate, about 8 % a second.
//! A viewer pushed down to the 150 kbit/s layer by a short congestion would need most of a minute
//! to climb back to 1.5 Mbit/s. Here the estimate goes **down** on evidence (queueing delay or loss
//! in the feedback: to 85 % of what the viewer actually received) and goes **up** on evidence too:
//! short *probe clusters*, extra packets sent as one train, whose arrival spread at the viewer
//! measures what the path delivers. A cluster that arrives at the rate it was sent raises the
//! estimate to that rate and the next probe doubles it; one that arrives slower tells the path's
//! capacity, and probing backs off.
//!
//! Pure logic, time passed in: the unit tests drive it with synthetic feedback.

pub mod twcc;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Queueing delay above which the path counts as congested.
pub const QUEUE_HIGH: Duration = Duration::from_millis(50);
/// The queueing delay is the smallest over this much of the latest arrivals (a standing queue).
pub const QUEUE_WINDOW: Duration = Duration::from_millis(150);
/// Queueing delay under which the path counts as clear (probing allowed).
pub const QUEUE_LOW: Duration = Duration::from_millis(20);
/// Loss fraction (over [`LOSS_WINDOW`]) that counts as congestion.
pub const LOSS_HIGH: f64 = 0.10;
/// Loss fraction under which the path counts as clear.
pub const LOSS_LOW: f64 = 0.02;
/// Loss is judged over packets sent in this window.
pub const LOSS_WINDOW: Duration = Duration::from_millis(500);
/// On congestion the estimate becomes this share of the rate the viewer received.
pub const BACKOFF: f64 = 0.85;
/// Decreases are at least this far apart: one congestion episode, one cut.
pub const DECREASE_HOLD: Duration = Duration::from_millis(600);
/// How long the smallest one-way delay is remembered as the empty-queue baseline.
pub const BASE_WINDOW: Duration = Duration::from_secs(10);
/// The received rate is measured over this much of the latest arrivals.
pub const RATE_WINDOW: Duration = Duration::from_millis(500);
/// A probe cluster carries this long's worth of its target rate.
pub const PROBE_SPAN: Duration = Duration::from_millis(40);
/// Packets in a probe cluster, at least and at most.
pub const PROBE_MIN_PACKETS: usize = 5;
pub const PROBE_MAX_PACKETS: usize = 40;
/// After a probe that did not reach its target, wait this long before the next; doubles up to
/// [`PROBE_BACKOFF_MAX`].
pub const PROBE_BACKOFF_MIN: Duration = Duration::from_millis(750);
pub const PROBE_BACKOFF_MAX: Duration = Duration::from_millis(1500);
/// The queue a probe train builds is the probe's own doing: delay samples and losses of packets
/// sent this soon after a probe do not count as congestion.
pub const PROBE_QUIET: Duration = Duration::from_millis(300);
/// After a cut, the sender needs this long to follow the lower estimate (the next allocation,
/// the next frame boundary); packets it sent meanwhile, into the queue the cut found, are part
/// of the episode the cut answered.
pub const CUT_REACTION: Duration = Duration::from_millis(100);
/// A probe whose feedback has not come back by then is given up.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// After a probe that found the path's capacity, the next one aims this far above it.
pub const PROBE_ABOVE_CEILING: f64 = 1.25;
/// A probe succeeds when the viewer received at least this share of the target rate.
pub const PROBE_SUCCESS: f64 = 0.9;
/// Loss and queueing delay are evidence about the path only while packets are being sent: for a
/// viewer whose video is paused, once the newest packet reported left this long ago (it gets no
/// audio either), they are forgotten, so that they do not keep probes from finding out what the
/// path carries now (see [`Bwe::forget_stale_evidence`]).
pub const EVIDENCE_STALE: Duration = Duration::from_secs(1);
/// Without TWCC feedback for this long, a REMB from the viewer is taken as the estimate.
pub const REMB_FALLBACK_AFTER: Duration = Duration::from_secs(2);

/// A probe cluster in flight.
#[derive(Clone, Copy, Debug)]
struct Probe {
    /// Every packet of the cluster departs at this instant (one train).
    at: Instant,
    target_bps: f64,
    /// Packets sent in the cluster; reports counted so far, and of those lost.
    sent: usize,
    packets: usize,
    bytes: usize,
    lost: usize,
    /// Arrivals of the cluster's packets, on the viewer's clock (µs): first, last, and the bytes
    /// that arrived after the first.
    first_arrival: Option<i64>,
    last_arrival: i64,
    bytes_after_first: usize,
}

/// What the last probe found (stats and tests).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProbeOutcome {
    /// Arrived at (nearly) its target: the estimate rose to it.
    Reached { target_bps: f64 },
    /// Arrived slower: the path delivers about this much.
    Capped { target_bps: f64, received_bps: f64 },
    /// Too few packets reported, too many lost, or no feedback in time.
    Inconclusive,
}

/// One packet whose fate the viewer has reported: when it left, when it arrived on the viewer's
/// clock (`None`: lost), and its size on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sent {
    pub departure: Instant,
    pub arrival: Option<Duration>,
    pub size: usize,
}

/// Departures come back from the send history at microsecond resolution: a probe's packets, all
/// sent at one instant, are those within a microsecond of it.
fn same_instant(a: Instant, b: Instant) -> bool {
    let d = if a > b { a - b } else { b - a };
    d <= Duration::from_micros(1)
}

/// The estimator. One per subscriber connection.
#[derive(Debug)]
pub struct Bwe {
    estimate: f64,
    min_bps: f64,
    max_bps: f64,
    epoch: Instant,
    /// Smallest one-way delay (arrival − departure, µs; the viewer's clock has its own origin)
    /// in the current and the previous half of [`BASE_WINDOW`].
    base: [Option<i64>; 2],
    base_rotated: Instant,
    /// Latest queueing delay (µs above the baseline), smoothed over a few packets.
    queue_us: i64,
    /// (arrival µs, queueing delay µs) over the last [`QUEUE_WINDOW`] of arrivals.
    queue_samples: VecDeque<(i64, i64)>,
    /// Feedback rounds in a row that ended with the queue above [`QUEUE_HIGH`].
    high_rounds: u8,
    /// (departure, arrived) of packets reported, newest last, within [`LOSS_WINDOW`].
    sent: VecDeque<(Instant, bool)>,
    /// (arrival µs, size) of packets received, within [`RATE_WINDOW`] of the newest.
    arrivals: VecDeque<(i64, usize)>,
    last_decrease: Option<Instant>,
    /// Congestion evidence (loss, queueing delay) counts only from packets sent after the last
    /// cut: what was sent before it was answered by it. Without this, the losses of one
    /// overflow — reported late, behind the very queue they overflowed — cut a second time,
    /// from the lower rate the sender had already fallen to.
    evidence_since: Option<Instant>,
    probe: Option<Probe>,
    next_probe: Instant,
    probe_backoff: Duration,
    /// When the latest probe train left.
    probed_at: Option<Instant>,
    /// A probe decided but not sent yet: (media SSRC, sequence numbers to resend, target bits/s).
    requested: Option<(u32, Vec<u16>, f64)>,
    /// On the lean path: a probe whose moment came (the viewer's next RTCP), for the worker to
    /// send (session/lean.rs).
    ready: Option<(u32, Vec<u16>, f64)>,
    /// What the last capped probe found the path to deliver: the next probe aims just above it
    /// rather than at twice the estimate (a smaller train, no overflow of a shallow queue).
    ceiling: Option<f64>,
    pub last_probe: Option<ProbeOutcome>,
    pub probes: u64,
    /// Cuts of the estimate so far (stats and tests).
    pub decreases: u64,
    last_feedback: Option<Instant>,
    /// Departure of the newest packet reported (see [`EVIDENCE_STALE`]).
    last_departure: Option<Instant>,
    remb_seen: bool,
    /// Latest time seen, for `poll_timeout`.
    now: Instant,
}

impl Bwe {
    pub fn new(initial_bps: f64, min_bps: f64, max_bps: f64, now: Instant) -> Self {
        Self {
            estimate: initial_bps.clamp(min_bps, max_bps),
            min_bps,
            max_bps,
            epoch: now,
            base: [None; 2],
            base_rotated: now,
            queue_us: 0,
            queue_samples: VecDeque::new(),
            high_rounds: 0,
            sent: VecDeque::new(),
            arrivals: VecDeque::new(),
            last_decrease: None,
            evidence_since: None,
            probe: None,
            next_probe: now,
            probe_backoff: PROBE_BACKOFF_MIN,
            probed_at: None,
            requested: None,
            ready: None,
            ceiling: None,
            last_probe: None,
            probes: 0,
            decreases: 0,
            last_feedback: None,
            last_departure: None,
            remb_seen: false,
            now,
        }
    }

    /// The estimate, bits/s.
    pub fn estimate(&self) -> f64 {
        self.estimate
    }

    /// Whether the viewer has sent any feedback (TWCC or REMB) yet.
    pub fn has_feedback(&self) -> bool {
        self.last_feedback.is_some() || self.remb_seen
    }

    /// Queueing delay toward the viewer as last measured.
    pub fn queue_delay(&self) -> Duration {
        Duration::from_micros(self.queue_us.max(0) as u64)
    }

    /// Fraction of packets sent in the last [`LOSS_WINDOW`] (of those reported) that were lost.
    pub fn loss(&self) -> f64 {
        if self.sent.is_empty() {
            return 0.0;
        }
        self.sent.iter().filter(|(_, arrived)| !arrived).count() as f64 / self.sent.len() as f64
    }

    /// What the viewer received over the latest [`RATE_WINDOW`] of arrivals, bits/s.
    pub fn received_rate(&self) -> Option<f64> {
        let (first, _) = *self.arrivals.front()?;
        let (last, _) = *self.arrivals.back()?;
        let span = (last - first).max(0) as f64 / 1e6;
        if self.arrivals.len() < 4 || span < 0.1 {
            return None;
        }
        // The first packet's bytes arrived before the span started.
        let bytes: usize = self.arrivals.iter().skip(1).map(|(_, s)| s).sum();
        Some(bytes as f64 * 8.0 / span)
    }

    /// Loss, or a queue that has stood above [`QUEUE_HIGH`] for two feedback rounds in a row: one
    /// late batch is as likely the viewer's own receive loop stalling as a queue on the path.
    fn congested(&self) -> bool {
        self.high_rounds >= 2 || (self.sent.len() >= 10 && self.loss() > LOSS_HIGH)
    }

    fn clear(&self) -> bool {
        self.queue_us < QUEUE_LOW.as_micros() as i64 && self.loss() < LOSS_LOW
    }

    fn micros(&self, t: Instant) -> i64 {
        t.saturating_duration_since(self.epoch).as_micros() as i64
    }

    fn note_delay(&mut self, owd: i64, arrival_us: i64, now: Instant) {
        if now.duration_since(self.base_rotated) >= BASE_WINDOW / 2 {
            self.base = [None, self.base[0]];
            self.base_rotated = now;
        }
        self.base[0] = Some(self.base[0].map_or(owd, |b| b.min(owd)));
        let base = self.base.iter().flatten().copied().min().unwrap_or(owd);
        let q = owd - base;
        // A standing queue, not a burst's: the smallest queueing delay over the last
        // QUEUE_WINDOW of arrivals (as CoDel judges a queue by its minimum sojourn time). A frame
        // sent in one burst queues its own packets behind each other; the packets after it find
        // the queue drained, unless the path cannot carry the rate.
        while self.queue_samples.front().is_some_and(|&(a, _)| arrival_us - a > QUEUE_WINDOW.as_micros() as i64) {
            self.queue_samples.pop_front();
        }
        self.queue_samples.push_back((arrival_us, q));
        self.queue_us = self.queue_samples.iter().map(|&(_, q)| q).min().unwrap_or(q);
    }

    /// Feedback resolved into per-packet reports, in send order.
    pub fn on_reports(&mut self, now: Instant, reports: &[Sent]) {
        self.now = now;
        if reports.is_empty() {
            return;
        }
        self.last_feedback = Some(now);
        for r in reports {
            self.last_departure = Some(self.last_departure.map_or(r.departure, |d| d.max(r.departure)));
            // Sent before the last cut: answered by it (see `evidence_since`).
            let answered = self.evidence_since.is_some_and(|t| r.departure < t);
            // What a probe train and the packets right behind it suffer is the probe's doing:
            // neither its queue nor its losses count as congestion (the probe's own outcome
            // says what the path carries).
            let after_probe = self
                .probed_at
                .is_some_and(|p| r.departure.checked_duration_since(p).is_some_and(|d| d < PROBE_QUIET) || same_instant(r.departure, p));
            if !answered && !after_probe {
                self.sent.push_back((r.departure, r.arrival.is_some()));
            }
            let arrival = r.arrival.map(|a| a.as_micros() as i64);
            if let Some(a) = arrival {
                if !after_probe && !answered {
                    let owd = a - self.micros(r.departure);
                    self.note_delay(owd, a, now);
                }
                self.arrivals.push_back((a, r.size));
            }
            // The probe's packets all left at its instant; a later departure closes it.
            if let Some(p) = self.probe.as_mut() {
                if same_instant(r.departure, p.at) {
                    p.packets += 1;
                    p.bytes += r.size;
                    match arrival {
                        Some(a) => {
                            if p.first_arrival.is_none() {
                                p.first_arrival = Some(a);
                            } else {
                                p.bytes_after_first += r.size;
                            }
                            p.last_arrival = p.last_arrival.max(a);
                        }
                        None => p.lost += 1,
                    }
                }
                if (r.departure > p.at && !same_instant(r.departure, p.at)) || p.packets >= p.sent {
                    self.finish_probe(now);
                }
            }
        }
        if let Some(&(newest, _)) = self.sent.back() {
            while self.sent.front().is_some_and(|(t, _)| newest.duration_since(*t) > LOSS_WINDOW) {
                self.sent.pop_front();
            }
        }
        if let Some(&(newest, _)) = self.arrivals.back() {
            let window = RATE_WINDOW.as_micros() as i64;
            while self.arrivals.front().is_some_and(|(a, _)| newest - a > window) {
                self.arrivals.pop_front();
            }
        }
        self.high_rounds = if self.queue_us > QUEUE_HIGH.as_micros() as i64 { self.high_rounds.saturating_add(1) } else { 0 };
        if self.congested()
            && self.last_decrease.is_none_or(|t| now.duration_since(t) >= DECREASE_HOLD)
            && let Some(received) = self.received_rate()
        {
            {
                let cut = (received * BACKOFF).max(self.min_bps);
                if cut < self.estimate {
                    tracing::debug!(
                        from = self.estimate as u64,
                        to = cut as u64,
                        queue_ms = self.queue_us / 1000,
                        loss = self.loss(),
                        "bandwidth estimate down"
                    );
                    self.estimate = cut;
                    self.decreases += 1;
                }
                self.last_decrease = Some(now);
                // One congestion episode, one cut: evidence starts afresh with what is sent
                // once the sender has reacted and the queue the cut found has drained.
                self.evidence_since = Some(now + self.queue_delay() + CUT_REACTION);
                self.sent.clear();
                self.queue_samples.clear();
                self.queue_us = 0;
                self.high_rounds = 0;
                self.probe = None;
                self.back_off(now);
            }
        }
    }

    fn back_off(&mut self, now: Instant) {
        self.next_probe = now + self.probe_backoff;
        self.probe_backoff = (self.probe_backoff * 2).min(PROBE_BACKOFF_MAX);
    }

    fn finish_probe(&mut self, now: Instant) {
        let Some(p) = self.probe.take() else { return };
        let outcome = match p.first_arrival {
            Some(first) if p.packets >= PROBE_MIN_PACKETS && (p.lost as f64) < 0.2 * p.packets as f64 => {
                // Arrival spread at the viewer; TWCC's resolution is 250 µs.
                let spread = ((p.last_arrival - first).max(250)) as f64 / 1e6;
                let received = p.bytes_after_first as f64 * 8.0 / spread;
                // A train always queues at the narrowest link: its spread there is the measurement.
                if received >= PROBE_SUCCESS * p.target_bps {
                    ProbeOutcome::Reached { target_bps: p.target_bps }
                } else {
                    ProbeOutcome::Capped { target_bps: p.target_bps, received_bps: received.min(p.target_bps) }
                }
            }
            _ => ProbeOutcome::Inconclusive,
        };
        match outcome {
            ProbeOutcome::Reached { target_bps } => {
                self.ceiling = None;
                self.estimate = self.estimate.max(target_bps.min(self.max_bps));
                // Keep climbing right away.
                self.next_probe = now;
                self.probe_backoff = PROBE_BACKOFF_MIN;
            }
            ProbeOutcome::Capped { received_bps, .. } => {
                self.ceiling = Some(received_bps);
                // What the path delivered, with the same margin a decrease keeps.
                self.estimate = self.estimate.max((received_bps * BACKOFF).min(self.max_bps));
                self.back_off(now);
            }
            ProbeOutcome::Inconclusive => self.back_off(now),
        }
        tracing::debug!(?outcome, estimate = self.estimate as u64, "probe finished");
        self.last_probe = Some(outcome);
    }

    /// Whether to probe now, toward `wanted_bps` (what the viewer's wanted layers would cost, with
    /// headroom). Returns the bytes to send as one train, and the target rate they stand for; the
    /// caller sends them (duplicates of recent packets) and then calls [`probe_sent`](Self::probe_sent).
    pub fn probe_plan(&mut self, now: Instant, wanted_bps: f64) -> Option<(usize, f64)> {
        self.now = now;
        if let Some(p) = self.probe
            && now.duration_since(p.at) > PROBE_TIMEOUT
        {
            self.probe = None;
            self.last_probe = Some(ProbeOutcome::Inconclusive);
            self.back_off(now);
        }
        if self.probe.is_some()
            || self.requested.is_some()
            || self.ready.is_some()
            || now < self.next_probe
            || self.estimate >= wanted_bps.min(self.max_bps)
            || !self.clear()
        {
            return None;
        }
        // Without feedback there is nothing to learn from a probe.
        self.last_feedback?;
        let step = match self.ceiling {
            Some(c) => (c * PROBE_ABOVE_CEILING).max(self.estimate * 1.1),
            None => self.estimate * 2.0,
        };
        let target = step.min(wanted_bps * 1.1).min(self.max_bps);
        let bytes = (target / 8.0 * PROBE_SPAN.as_secs_f64()) as usize;
        Some((bytes, target))
    }

    /// For a viewer whose video is paused (audio-only fallback): once the newest packet reported
    /// left more than [`EVIDENCE_STALE`] ago, forget the loss and queueing delay measured before,
    /// so that probes may go out. With media flowing that never happens (reports keep coming);
    /// a paused viewer with no audio sends nothing, and the losses of the congestion that paused
    /// it would otherwise stand forever and keep it paused for good.
    pub fn forget_stale_evidence(&mut self, now: Instant) {
        if self.last_departure.is_some_and(|d| now.saturating_duration_since(d) > EVIDENCE_STALE) {
            self.sent.clear();
            self.queue_samples.clear();
            self.queue_us = 0;
            self.high_rounds = 0;
        }
    }

    /// Hold a probe until the train can be sent (see `NackGuard`).
    pub fn request_probe(&mut self, media_ssrc: u32, seqs: Vec<u16>, target_bps: f64) {
        self.requested = Some((media_ssrc, seqs, target_bps));
    }

    /// Whether a probe was ever sent or is waiting to be (tests).
    #[cfg(test)]
    pub fn has_probed(&self) -> bool {
        self.probes > 0 || self.requested.is_some() || self.ready.is_some()
    }

    /// The viewer's RTCP came in: the probe waiting for it is now the worker's to send (lean
    /// path).
    pub fn probe_ready(&mut self) {
        if let Some(p) = self.requested.take() {
            self.ready = Some(p);
        }
    }

    /// The probe the worker is to send now, if any (lean path).
    pub fn take_ready_probe(&mut self) -> Option<(u32, Vec<u16>, f64)> {
        self.ready.take()
    }

    /// The probe waiting to be sent, if any.
    pub fn take_probe_request(&mut self) -> Option<(u32, Vec<u16>, f64)> {
        self.requested.take()
    }

    /// The probe's packets left at `at` (all of them: one train).
    pub fn probe_sent(&mut self, at: Instant, target_bps: f64, packets: usize) {
        self.probes += 1;
        self.probed_at = Some(at);
        self.probe = Some(Probe {
            at,
            target_bps,
            sent: packets,
            packets: 0,
            bytes: 0,
            lost: 0,
            first_arrival: None,
            last_arrival: 0,
            bytes_after_first: 0,
        });
    }

    /// A receiver estimate (REMB): used only when the viewer sends no TWCC feedback.
    pub fn on_remb(&mut self, now: Instant, bps: f64) {
        self.now = now;
        self.remb_seen = true;
        if self.last_feedback.is_none_or(|t| now.duration_since(t) > REMB_FALLBACK_AFTER) {
            self.estimate = bps.clamp(self.min_bps, self.max_bps);
        }
    }
}

/// The estimator as rtc's congestion-control interceptor drives it, shared with the session that
/// reads the estimate and sends the probes (both on the same worker thread; the lock is never
/// contended).
#[derive(Clone, Debug)]
pub struct SharedBwe(pub Arc<Mutex<Bwe>>);

impl SharedBwe {
    pub fn new(bwe: Bwe) -> Self {
        Self(Arc::new(Mutex::new(bwe)))
    }

    /// The estimator, whatever a panicking holder left behind (its state stays usable).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Bwe> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests;
