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
    /// What the last capped probe found the path to deliver: the next probe aims just above it
    /// rather than at twice the estimate (a smaller train, no overflow of a shallow queue).
    ceiling: Option<f64>,
    pub last_probe: Option<ProbeOutcome>,
    pub probes: u64,
    /// Cuts of the estimate so far (stats and tests).
    pub decreases: u64,
    last_feedback: Option<Instant>,
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
            ceiling: None,
            last_probe: None,
            probes: 0,
            decreases: 0,
            last_feedback: None,
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

    /// Hold a probe until the train can be sent (see `NackGuard`).
    pub fn request_probe(&mut self, media_ssrc: u32, seqs: Vec<u16>, target_bps: f64) {
        self.requested = Some((media_ssrc, seqs, target_bps));
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
mod tests {
    use super::*;

    /// A simulated path: a bottleneck of `capacity` bits/s with a drop-tail queue of `queue`,
    /// 10 ms base delay. Packets are (departure, size); returns the reports.
    struct Path {
        capacity: f64,
        queue_limit: Duration,
        free_at: f64, // seconds since epoch when the bottleneck is next idle
        epoch: Instant,
    }

    impl Path {
        fn new(capacity: f64, epoch: Instant) -> Self {
            Self { capacity, queue_limit: Duration::from_millis(150), free_at: 0.0, epoch }
        }
        fn send(&mut self, at: Instant, size: usize) -> Sent {
            let t = at.duration_since(self.epoch).as_secs_f64();
            let start = self.free_at.max(t);
            let arrived = start - t <= self.queue_limit.as_secs_f64();
            if arrived {
                self.free_at = start + size as f64 * 8.0 / self.capacity;
            }
            Sent {
                departure: at,
                // The viewer's clock starts 1000 s earlier: only differences matter.
                arrival: arrived.then(|| Duration::from_secs_f64(1000.0 + self.free_at + 0.010)),
                size,
            }
        }
    }

    /// Drive `bwe` for `secs` seconds: media at `media_bps(estimate)` in 1000-byte packets, feedback
    /// every 100 ms, probes of duplicates when the estimator asks for them.
    fn run(bwe: &mut Bwe, path: &mut Path, start: Instant, secs: f64, wanted: f64, media_bps: impl Fn(f64) -> f64) -> Instant {
        let mut now = start;
        let end = start + Duration::from_secs_f64(secs);
        let mut pending = Vec::new();
        let mut next_feedback = now + Duration::from_millis(100);
        let mut credit = 0.0;
        while now < end {
            now += Duration::from_millis(5);
            credit += media_bps(bwe.estimate()) / 8.0 * 0.005;
            while credit >= 1000.0 {
                credit -= 1000.0;
                pending.push(path.send(now, 1000));
            }
            if let Some((bytes, target)) = bwe.probe_plan(now, wanted) {
                let n = bytes.div_ceil(1000).clamp(PROBE_MIN_PACKETS, PROBE_MAX_PACKETS);
                for _ in 0..n {
                    pending.push(path.send(now, 1000));
                }
                bwe.probe_sent(now, target, n);
            }
            if now >= next_feedback {
                next_feedback += Duration::from_millis(100);
                bwe.on_reports(now, &pending);
                pending.clear();
            }
        }
        now
    }

    impl Path {
        /// [`send`](Self::send), and when the viewer's feedback can report the packet (seconds
        /// since the epoch): once it arrived, or for a lost one once the packets queued ahead
        /// of it have (TWCC reports a loss when a later packet arrives).
        fn send_reported(&mut self, at: Instant, size: usize) -> (Sent, f64) {
            let ahead = self.free_at.max(at.duration_since(self.epoch).as_secs_f64());
            let sent = self.send(at, size);
            let reported = match sent.arrival {
                Some(a) => a.as_secs_f64() - 1000.0,
                None => ahead + 0.010,
            };
            (sent, reported)
        }
    }

    /// [`run`], as a viewer and a video sender really are: feedback every 100 ms about the
    /// packets that have arrived by then (behind the path's queue), not about everything sent;
    /// media in whole frames, each sent as one burst (`fps` frames a second).
    #[allow(clippy::too_many_arguments)]
    fn run_delayed(
        bwe: &mut Bwe,
        path: &mut Path,
        start: Instant,
        secs: f64,
        wanted: f64,
        fps: f64,
        media_bps: impl Fn(f64) -> f64,
        mut each_feedback: impl FnMut(&Bwe),
    ) -> Instant {
        let mut now = start;
        let end = start + Duration::from_secs_f64(secs);
        let mut in_flight: VecDeque<(Sent, f64)> = VecDeque::new();
        let mut next_feedback = now + Duration::from_millis(100);
        let frame = Duration::from_secs_f64(1.0 / fps);
        let mut next_frame = now;
        let mut credit = 0.0;
        while now < end {
            now += Duration::from_millis(5);
            if now >= next_frame {
                next_frame += frame;
                credit += media_bps(bwe.estimate()) / 8.0 / fps;
                while credit >= 1000.0 {
                    credit -= 1000.0;
                    in_flight.push_back(path.send_reported(now, 1000));
                }
            }
            if let Some((bytes, target)) = bwe.probe_plan(now, wanted) {
                let n = bytes.div_ceil(1000).clamp(PROBE_MIN_PACKETS, PROBE_MAX_PACKETS);
                for _ in 0..n {
                    in_flight.push_back(path.send_reported(now, 1000));
                }
                bwe.probe_sent(now, target, n);
            }
            if now >= next_feedback {
                next_feedback += Duration::from_millis(100);
                let t = now.duration_since(path.epoch).as_secs_f64();
                let mut reports = Vec::new();
                while in_flight.front().is_some_and(|(_, at)| *at <= t) {
                    if let Some((r, _)) = in_flight.pop_front() {
                        reports.push(r);
                    }
                }
                bwe.on_reports(now, &reports);
                each_feedback(bwe);
            }
        }
        now
    }

    /// What a selector sends of a 1.2 Mbit/s top layer with VP8 temporal layers (TID 0 is 40 %
    /// of it, TID 0+1 60 %): frame rate goes first, the layer stays while its base fits.
    fn follow_temporal(e: f64) -> f64 {
        if e >= 1_200_000.0 {
            1_200_000.0
        } else if e >= 720_000.0 {
            720_000.0
        } else if e >= 480_000.0 {
            480_000.0
        } else {
            150_000.0
        }
    }

    /// Reports of 1000-byte packets sent every `gap` from `from` (inclusive) to `to`
    /// (exclusive), arriving `delay` after they left; those whose index `lost(i)` says are lost.
    /// Arrivals are on the viewer's clock, whose origin is 1000 s before `epoch`.
    fn reports(epoch: Instant, from: Instant, to: Instant, gap: Duration, delay: Duration, lost: impl Fn(usize) -> bool) -> Vec<Sent> {
        let mut out = Vec::new();
        let mut t = from;
        while t < to {
            let i = out.len();
            let arrival = (t + delay).duration_since(epoch) + Duration::from_secs(1000);
            out.push(Sent { departure: t, arrival: (!lost(i)).then_some(arrival), size: 1000 });
            t += gap;
        }
        out
    }

    /// One overflow, one cut. The losses of an overflow come back in feedback after the cut that
    /// answered them — behind the very queue that overflowed, and with packets the sender sent
    /// before it could react. Counted again once the hold expired, they cut a second time from
    /// the lower rate the sender had already fallen to. Seen in every run of the temporal-layer
    /// test with the old estimator (2.5 M -> 0.8 M, then -> 0.63 M at loss 0.40-0.45, 605 ms
    /// later: the hold), and with a probe's losses on top it went under the top layer's base.
    #[test]
    fn losses_answered_by_a_cut_do_not_cut_again() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut bwe = Bwe::new(2_500_000.0, 50_000.0, 20_000_000.0, t0);
        // An overflow: a third lost.
        bwe.on_reports(ms(500), &reports(t0, t0, ms(400), Duration::from_millis(10), Duration::from_millis(60), |i| i % 3 == 0));
        assert_eq!(bwe.decreases, 1, "the overflow cuts");
        let after_cut = bwe.estimate();
        // 650 ms later (past the hold): the rest of that overflow, reported late (sent before
        // the cut, most lost), and clean packets sent after the sender reacted.
        let mut late = reports(t0, ms(400), ms(500), Duration::from_millis(10), Duration::from_millis(60), |i| i % 5 != 0);
        late.extend(reports(t0, ms(700), ms(850), Duration::from_millis(10), Duration::from_millis(20), |_| false));
        bwe.on_reports(ms(1150), &late);
        assert_eq!(bwe.decreases, 1, "no second cut from answered losses (estimate {} -> {})", after_cut, bwe.estimate());
        assert_eq!(bwe.estimate(), after_cut);
        // New losses, of packets sent well after the cut, are congestion again.
        bwe.on_reports(ms(1800), &reports(t0, ms(1000), ms(1700), Duration::from_millis(20), Duration::from_millis(20), |i| i % 3 == 0));
        assert_eq!(bwe.decreases, 2, "fresh losses still cut");
    }

    /// A probe's own losses are not congestion. A probe train is a burst on purpose; meeting a
    /// frame burst in a shallow queue it loses a few packets, and the probe says so itself
    /// (inconclusive). Counted as congestion too, those losses cut the estimate under the top
    /// layer's base on a path that carried it: the old estimator's third cut in the failing
    /// temporal-test runs, each at the instant an inconclusive probe ended.
    #[test]
    fn a_probe_trains_losses_are_not_congestion() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut bwe = Bwe::new(640_000.0, 50_000.0, 20_000_000.0, t0);
        // A settled second of clean media, 62 packets a second.
        for k in 0..10u64 {
            bwe.on_reports(
                ms(100 * k + 100),
                &reports(t0, ms(100 * k), ms(100 * k + 100), Duration::from_millis(16), Duration::from_millis(20), |_| false),
            );
        }
        let (bytes, target) = bwe.probe_plan(ms(1000), 1_500_000.0).expect("a clear path below what is wanted probes");
        let n = bytes.div_ceil(1000).clamp(PROBE_MIN_PACKETS, PROBE_MAX_PACKETS);
        bwe.probe_sent(ms(1000), target, n);
        // The train (all at one instant), 5 of its packets lost; the media around it clean.
        let mut fb: Vec<Sent> = (0..n)
            .map(|i| Sent {
                departure: ms(1000),
                arrival: (i >= 5).then(|| Duration::from_secs(1000) + Duration::from_millis(1025 + i as u64)),
                size: 1000,
            })
            .collect();
        fb.extend(reports(t0, ms(1001), ms(1100), Duration::from_millis(16), Duration::from_millis(20), |_| false));
        bwe.on_reports(ms(1150), &fb);
        fb = reports(t0, ms(1100), ms(1200), Duration::from_millis(16), Duration::from_millis(20), |_| false);
        bwe.on_reports(ms(1250), &fb);
        assert_eq!(bwe.last_probe, Some(ProbeOutcome::Inconclusive), "the probe says it lost too much");
        assert_eq!(bwe.decreases, 0, "no cut from the probe's own losses (estimate {})", bwe.estimate());
        assert_eq!(bwe.estimate(), 640_000.0);
    }

    /// Congestion after a cut still cuts: evidence from packets sent after it counts. The path
    /// narrows twice (800 k, then 300 k): two episodes, two cuts, and the estimate follows.
    #[test]
    fn a_second_narrowing_after_a_cut_cuts_again() {
        let t0 = Instant::now();
        let mut bwe = Bwe::new(2_500_000.0, 50_000.0, 20_000_000.0, t0);
        let mut path = Path::new(800_000.0, t0);
        path.queue_limit = Duration::from_millis(100);
        let t = run_delayed(&mut bwe, &mut path, t0, 3.0, 1_500_000.0, 30.0, follow_temporal, |_| {});
        assert_eq!(bwe.decreases, 1, "first narrowing: estimate {}", bwe.estimate());
        path.capacity = 300_000.0;
        run_delayed(&mut bwe, &mut path, t, 3.0, 1_500_000.0, 30.0, follow_temporal, |_| {});
        assert!(bwe.decreases >= 2, "cuts {}", bwe.decreases);
        // Under what makes the sender overrun 300 kbit/s (it falls to the 150 k layer below 480 k).
        assert!(bwe.estimate() < 480_000.0, "estimate {}", bwe.estimate());
    }

    /// What a layer selector would send for an estimate (1.5 M, 500 k or 150 k).
    fn follow_layers(e: f64) -> f64 {
        if e >= 1_500_000.0 {
            1_500_000.0
        } else if e >= 500_000.0 {
            500_000.0
        } else {
            150_000.0
        }
    }

    #[test]
    fn an_uncongested_path_keeps_the_estimate() {
        let t0 = Instant::now();
        let mut bwe = Bwe::new(2_500_000.0, 50_000.0, 20_000_000.0, t0);
        let mut path = Path::new(10_000_000.0, t0);
        run(&mut bwe, &mut path, t0, 5.0, 2_000_000.0, |_| 1_600_000.0);
        assert_eq!(bwe.estimate(), 2_500_000.0);
        assert!(bwe.loss() < 0.001);
        assert_eq!(bwe.probes, 0, "no probing while the estimate covers what is wanted");
    }

    #[test]
    fn a_narrow_path_brings_the_estimate_under_its_capacity_fast() {
        let t0 = Instant::now();
        let mut bwe = Bwe::new(2_500_000.0, 50_000.0, 20_000_000.0, t0);
        let mut path = Path::new(400_000.0, t0);
        // The sender follows the estimate as a layer selector would.
        let layers = follow_layers;
        let now = run(&mut bwe, &mut path, t0, 2.0, 1_900_000.0, layers);
        assert!(bwe.estimate() < 400_000.0, "estimate {} after 2 s on a 400 kbit/s path", bwe.estimate());
        assert!(bwe.estimate() > 150_000.0, "but not below the low layer: {}", bwe.estimate());
        // Settled: probes keep checking, the estimate stays under the capacity.
        let mut t = now;
        for _ in 0..20 {
            t = run(&mut bwe, &mut path, t, 0.5, 1_900_000.0, layers);
            assert!(bwe.estimate() < 400_000.0 && bwe.estimate() > 250_000.0, "settled at {} after {:?}", bwe.estimate(), t - t0);
        }
        assert!(bwe.probes >= 2, "kept probing ({})", bwe.probes);
    }

    #[test]
    fn probes_climb_back_when_the_path_widens() {
        let t0 = Instant::now();
        let mut bwe = Bwe::new(2_500_000.0, 50_000.0, 20_000_000.0, t0);
        let mut path = Path::new(400_000.0, t0);
        let layers = follow_layers;
        let now = run(&mut bwe, &mut path, t0, 6.0, 1_900_000.0, layers);
        assert!(bwe.estimate() < 400_000.0);
        path.capacity = 10_000_000.0;
        let mut t = now;
        let mut climbed = None;
        for i in 0..100 {
            t = run(&mut bwe, &mut path, t, 0.1, 1_900_000.0, layers);
            if bwe.estimate() >= 1_900_000.0 {
                climbed = Some(i as f64 * 0.1);
                break;
            }
        }
        let climbed = climbed.expect("the estimate climbs back to what is wanted");
        // Worst case: a backed-off probe is due up to 2 s later, then a few doublings.
        assert!(climbed <= 5.0, "climbed in {climbed} s");
        assert!(matches!(bwe.last_probe, Some(ProbeOutcome::Reached { .. })));
    }

    #[test]
    fn a_capped_probe_measures_the_path() {
        let t0 = Instant::now();
        // Estimate far under a 1 Mbit/s path: one probe toward 2 Mbit/s learns ≈ 1 Mbit/s.
        let mut bwe = Bwe::new(200_000.0, 50_000.0, 20_000_000.0, t0);
        let mut path = Path::new(1_000_000.0, t0);
        let now = run(&mut bwe, &mut path, t0, 0.5, 4_000_000.0, |_| 150_000.0);
        let _ = now;
        assert!(bwe.probes >= 1);
        assert!(bwe.estimate() > 600_000.0 && bwe.estimate() <= 1_000_000.0, "estimate {}", bwe.estimate());
    }

    #[test]
    fn remb_counts_only_without_twcc() {
        let t0 = Instant::now();
        let mut bwe = Bwe::new(1_000_000.0, 50_000.0, 20_000_000.0, t0);
        bwe.on_remb(t0, 300_000.0);
        assert_eq!(bwe.estimate(), 300_000.0);
        let mut path = Path::new(10_000_000.0, t0);
        run(&mut bwe, &mut path, t0, 1.0, 200_000.0, |_| 200_000.0);
        let t1 = t0 + Duration::from_millis(1100);
        bwe.on_remb(t1, 5_000_000.0);
        assert_eq!(bwe.estimate(), 300_000.0, "TWCC feedback is fresh: REMB ignored");
        bwe.on_remb(t1 + Duration::from_secs(3), 5_000_000.0);
        assert_eq!(bwe.estimate(), 5_000_000.0);
    }
}
