//! Fault scenarios: what happens to the audience when the network does what networks do, and
//! how long until every viewer sees the live again.
//!
//! - [`FaultKind::Reconnect`]: a share of the viewers change networks at once (Wi-Fi → cellular):
//!   their UDP socket is gone and a new one has a new port, their WebSocket dies without a close.
//!   Each does what the page does: a new WebSocket that resumes (`join` with the resume token),
//!   then `ice_restart`, and answers the server's restart offer from the new address.
//! - [`FaultKind::LossBurst`]: the path between the server and every viewer loses a share of the
//!   datagrams, both ways, for a while (the harness's relay: datagrams are dropped as they leave
//!   and as they arrive at the viewers' sockets).
//! - [`FaultKind::PublisherDrop`]: the publishers' network is gone for a while (every datagram
//!   both ways dropped), then back.
//!
//! Recovery is measured as a player sees it: the time from the fault's end (the move, for a
//! reconnect) until the viewer *shows* a video frame that was sent after it. A frame shows when
//! every packet since the last frame shown arrived (retransmissions count), or when it is a
//! complete key frame ([`Chain`]); packets that never came leave the picture frozen until a key
//! frame. A viewer that shows no such frame within the deadline is lost for good.

use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    Reconnect,
    LossBurst,
    PublisherDrop,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Reconnect => "reconnect",
            FaultKind::LossBurst => "loss-burst",
            FaultKind::PublisherDrop => "publisher-drop",
        }
    }
}

/// The faults of a run, played one after the other after the steady window.
#[derive(Clone, Debug)]
pub struct Faults {
    pub kinds: Vec<FaultKind>,
    /// Share of the viewers that reconnect (0..=1; at least one).
    pub reconnect_share: f64,
    /// Share of datagrams a loss burst drops (0..=1), and for how long.
    pub burst_loss: f64,
    pub burst: Duration,
    /// How long the publishers' network is gone.
    pub publisher_drop: Duration,
    /// A viewer that has not shown a frame sent after the fault within this is lost for good.
    pub recover_within: Duration,
    /// Steady media between two faults (and after the last, before the run ends).
    pub settle: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            kinds: Vec::new(),
            reconnect_share: 0.1,
            burst_loss: 0.3,
            burst: Duration::from_secs(2),
            publisher_drop: Duration::from_secs(3),
            recover_within: Duration::from_secs(20),
            settle: Duration::from_secs(3),
        }
    }
}

/// What one fault did to the audience.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FaultReport {
    pub kind: FaultKind,
    /// What was done, in words ("30 of 300 viewers moved to a new address", …).
    pub what: String,
    /// Viewers whose recovery was watched.
    pub affected: usize,
    pub recovered: usize,
    /// Viewers that showed no frame sent after the fault within `recover_within`, or whose
    /// connection ended.
    pub lost: usize,
    /// Of the lost: those that received no video in the last second (paused, or gone).
    pub lost_without_video: usize,
    /// Reconnects: how many resumed their participant, and how many were joined afresh instead.
    pub resumed: Option<usize>,
    pub rejoined: Option<usize>,
    /// Fault's end → first frame shown that was sent after it (ms), over the recovered viewers.
    pub recovery_ms: Option<crate::report::Percentiles>,
    pub recovery_max_ms: Option<f64>,
}

impl FaultReport {
    pub fn summary(&self) -> String {
        let p = self
            .recovery_ms
            .as_ref()
            .map(|p| format!("recovery p50 {:.0} / p95 {:.0} / max {:.0} ms", p.p50, p.p95, self.recovery_max_ms.unwrap_or(p.p99)))
            .unwrap_or_else(|| "no recovery measured".into());
        let resumed = match (self.resumed, self.rejoined) {
            (Some(r), Some(j)) => format!(", {r} resumed, {j} joined afresh"),
            _ => String::new(),
        };
        let silent = if self.lost > 0 { format!(" ({} of them receiving no video)", self.lost_without_video) } else { String::new() };
        format!("{}: {} recovered, {} lost for good{silent}{resumed}; {p}", self.what, self.recovered, self.lost)
    }
}

/// Most packets a chain keeps waiting for a hole to fill (a few seconds of the top layer).
const MAX_PENDING: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Pkt {
    marker: bool,
    sent_us: u64,
}

/// One video stream as a decoder would play it: which frames could be shown, in order.
#[derive(Debug, Default)]
pub struct Chain {
    /// Arrived packets not shown yet, by extended sequence number.
    pending: BTreeMap<u64, Pkt>,
    /// The pending packets that start a key frame (few: the search in a hole walks these).
    keys: std::collections::BTreeSet<u64>,
    /// The sequence number after the last frame shown; `None` before the first key frame.
    next: Option<u64>,
}

impl Chain {
    /// A packet arrived (`seq` extended to 64 bits). Returns the send time of the newest frame
    /// it let the decoder show, if any.
    pub fn push(&mut self, seq: u64, marker: bool, key_start: bool, sent_us: u64) -> Option<u64> {
        if self.next.is_some_and(|n| seq < n) {
            return None; // a frame already shown or skipped over: a late duplicate
        }
        self.pending.insert(seq, Pkt { marker, sent_us });
        if key_start {
            self.keys.insert(seq);
        }
        while self.pending.len() > MAX_PENDING {
            if let Some((s, _)) = self.pending.pop_first() {
                self.keys.remove(&s);
            }
        }
        let mut shown = None;
        // Each turn shows a frame or skips to a key frame, so it ends within the pending count.
        for _ in 0..=MAX_PENDING {
            let end = match self.next.and_then(|n| self.frame_end(n)) {
                Some(end) => end,
                // The next frame is not whole (a hole, or nothing shown yet): a complete key
                // frame after it goes on, as a decoder's frame buffer skips to one.
                None => {
                    let after = |k: &u64| self.next.is_none_or(|n| *k > n);
                    match self.keys.iter().filter(|k| after(k)).find_map(|&k| self.frame_end(k)) {
                        Some(end) => end,
                        None => break,
                    }
                }
            };
            if let Some(p) = self.pending.get(&end) {
                shown = Some(shown.map_or(p.sent_us, |s: u64| s.max(p.sent_us)));
            }
            self.pending = self.pending.split_off(&(end + 1));
            self.keys = self.keys.split_off(&(end + 1));
            self.next = Some(end + 1);
        }
        shown
    }

    /// The marker packet's number when every packet from `start` to a marker is here.
    fn frame_end(&self, start: u64) -> Option<u64> {
        for (want, (&s, p)) in (start..).zip(self.pending.range(start..)) {
            if s != want {
                return None;
            }
            if p.marker {
                return Some(s);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames of `n` packets from `seq`: (seq, marker, key_start).
    fn frame(seq: u64, n: u64, key: bool) -> Vec<(u64, bool, bool)> {
        (0..n).map(|i| (seq + i, i + 1 == n, key && i == 0)).collect()
    }

    #[test]
    fn frames_show_in_order_and_a_hole_waits_for_a_retransmission_or_a_key_frame() {
        let mut c = Chain::default();
        // Nothing shows before a key frame.
        assert_eq!(c.push(5, true, false, 1), None);
        let mut shown = Vec::new();
        for (i, (s, m, k)) in frame(10, 3, true).into_iter().chain(frame(13, 2, false)).enumerate() {
            shown.push(c.push(s, m, k, 100 + i as u64));
        }
        assert_eq!(shown, vec![None, None, Some(102), None, Some(104)]);
        // Packet 15 is lost: frame 15..17 and the next delta frame cannot show...
        assert_eq!(c.push(16, false, false, 200), None);
        assert_eq!(c.push(17, true, false, 201), None);
        assert_eq!(c.push(18, true, false, 210), None);
        // ...until the retransmission comes: both frames show at once.
        assert_eq!(c.push(15, false, false, 199), Some(210));
        // Another hole that is never repaired: a complete key frame ends it.
        assert_eq!(c.push(20, true, false, 300), None);
        assert_eq!(c.push(21, false, true, 310), None);
        assert_eq!(c.push(22, true, false, 311), Some(311));
        // The lost packet coming late changes nothing.
        assert_eq!(c.push(19, true, false, 290), None);
        assert_eq!(c.push(23, true, false, 320), Some(320));
        // A hole after the first packet of the next frame (24, 26 here, 25 lost): a complete
        // key frame ends it too.
        assert_eq!(c.push(24, false, false, 400), None);
        assert_eq!(c.push(26, true, false, 402), None);
        assert_eq!(c.push(27, false, true, 410), None);
        assert_eq!(c.push(28, true, false, 411), Some(411));
        assert_eq!(c.push(25, false, false, 401), None);
    }

    #[test]
    fn a_chain_keeps_a_bounded_number_of_packets() {
        let mut c = Chain::default();
        c.push(0, true, true, 0);
        // A hole at 1 that never fills, and no key frame: pending stays bounded.
        for s in 2..(2 + 3 * MAX_PENDING as u64) {
            assert_eq!(c.push(s, true, false, s), None);
        }
        assert!(c.pending.len() <= MAX_PENDING && c.keys.is_empty());
    }
}
