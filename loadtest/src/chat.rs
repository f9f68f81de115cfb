//! The live room's conversation under load: viewers that comment, viewers that send bursts of
//! reactions, and every viewer measuring what the server fans out to it.
//!
//! A comment's text carries its sender, its number and its send time (`lt <viewer> <seq>
//! <unix µs>`), so whoever receives it knows its delivery delay (the senders and the receivers
//! are this one process: one clock).

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The server's per-user comment rate (ChatConfig::user_comments_per_sec's default) is 1/s; a
/// sender of the harness stays at half of it unless told otherwise.
pub const SENDER_RATE: f64 = 0.5;
/// The emoji `react` accepts (the server's `EMOJI`).
pub const EMOJI: [&str; 6] = ["❤️", "🔥", "👏", "😂", "😮", "🎉"];

/// The chat load of a run. All zero: no chat.
#[derive(Clone, Debug)]
pub struct ChatLoad {
    /// Comments per second, all senders together.
    pub comments_per_sec: f64,
    /// Viewers that comment; `None`: ⌈rate ÷ 0.5⌉, so none exceeds the server's 1/s.
    pub comment_senders: Option<usize>,
    /// Share of the viewers that send bursts of reactions.
    pub reacting_share: f64,
    /// Taps per burst, drawn uniformly from this range.
    pub burst_taps: (u32, u32),
    /// Time between one reacting viewer's bursts.
    pub burst_every: Duration,
    /// Measure a window without chat first (same server, same viewers), then one with it.
    pub baseline: bool,
}

impl Default for ChatLoad {
    fn default() -> Self {
        ChatLoad {
            comments_per_sec: 0.0,
            comment_senders: None,
            reacting_share: 0.0,
            burst_taps: (5, 10),
            burst_every: Duration::from_secs(4),
            baseline: true,
        }
    }
}

impl ChatLoad {
    pub fn active(&self) -> bool {
        self.comments_per_sec > 0.0 || self.reacting_share > 0.0
    }

    /// How many of `viewers` comment.
    pub fn senders(&self, viewers: usize) -> usize {
        if self.comments_per_sec <= 0.0 {
            return 0;
        }
        self.comment_senders.unwrap_or_else(|| (self.comments_per_sec / SENDER_RATE).ceil() as usize).clamp(1, viewers.max(1)).min(viewers)
    }

    /// How many of `viewers` react.
    pub fn reactors(&self, viewers: usize) -> usize {
        ((self.reacting_share.clamp(0.0, 1.0) * viewers as f64).round() as usize).min(viewers)
    }

    /// What viewer number `i` of `viewers` does: the first senders comment, the last reactors
    /// react (the two sets overlap only when they must).
    pub fn plan(&self, i: usize, viewers: usize) -> Plan {
        let senders = self.senders(viewers);
        let reactors = self.reactors(viewers);
        Plan {
            comment_every: (i < senders).then(|| Duration::from_secs_f64(senders as f64 / self.comments_per_sec)),
            react: (i >= viewers - reactors).then_some((self.burst_every, self.burst_taps)),
        }
    }
}

/// One viewer's part of the chat load.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plan {
    pub comment_every: Option<Duration>,
    /// Every so long, a burst of so many taps.
    pub react: Option<(Duration, (u32, u32))>,
}

/// The chat counters of the whole run, shared by every viewer's task.
pub struct ChatLive {
    pub comments_sent: AtomicU64,
    pub taps_sent: AtomicU64,
    /// Comments from this harness received by viewers (each receipt counts).
    pub comments_received: AtomicU64,
    /// Comments received that this harness did not send (the room's history, others).
    pub foreign_comments: AtomicU64,
    pub reactions_received: AtomicU64,
    /// Viewers joined and listening right now.
    pub listening: AtomicU64,
    /// Error codes the server answered chat messages with.
    pub errors: Mutex<BTreeMap<String, u64>>,
    /// Comment send → receipt by a viewer (µs).
    pub delivery: Mutex<Histogram<u64>>,
}

impl Default for ChatLive {
    fn default() -> Self {
        ChatLive {
            comments_sent: AtomicU64::new(0),
            taps_sent: AtomicU64::new(0),
            comments_received: AtomicU64::new(0),
            foreign_comments: AtomicU64::new(0),
            reactions_received: AtomicU64::new(0),
            listening: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            delivery: Mutex::new(crate::engine::histogram()),
        }
    }
}

/// The counters at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub comments_sent: u64,
    pub taps_sent: u64,
    pub comments_received: u64,
    pub reactions_received: u64,
    pub errors: u64,
}

impl ChatLive {
    pub fn counts(&self) -> Counts {
        Counts {
            comments_sent: self.comments_sent.load(Ordering::Relaxed),
            taps_sent: self.taps_sent.load(Ordering::Relaxed),
            comments_received: self.comments_received.load(Ordering::Relaxed),
            reactions_received: self.reactions_received.load(Ordering::Relaxed),
            errors: self.errors.lock().unwrap_or_else(|p| p.into_inner()).values().sum(),
        }
    }

    pub fn error(&self, code: &str) {
        *self.errors.lock().unwrap_or_else(|p| p.into_inner()).entry(code.to_owned()).or_default() += 1;
    }

    /// A `comment` message arrived: its delay when this harness sent it.
    pub fn comment(&self, text: &str) {
        match parse(text) {
            Some((_, _, sent_us)) => {
                let delay = unix_us().saturating_sub(sent_us).max(1);
                self.comments_received.fetch_add(1, Ordering::Relaxed);
                let _ = self.delivery.lock().unwrap_or_else(|p| p.into_inner()).record(delay.min(60_000_000));
            }
            None => {
                self.foreign_comments.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

pub fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// The text of comment `seq` of viewer `viewer`, sent now.
pub fn text(viewer: u64, seq: u64) -> String {
    format!("lt {viewer} {seq} {}", unix_us())
}

/// (viewer, seq, sent µs) of a comment this harness wrote.
pub fn parse(text: &str) -> Option<(u64, u64, u64)> {
    let mut f = text.strip_prefix("lt ")?.split(' ');
    let v = f.next()?.parse().ok()?;
    let s = f.next()?.parse().ok()?;
    let t = f.next()?.parse().ok()?;
    f.next().is_none().then_some((v, s, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_text_round_trips_and_others_are_not_ours() {
        let t = text(1007, 3);
        let (v, s, at) = parse(&t).unwrap();
        assert_eq!((v, s), (1007, 3));
        assert!(at > 1_600_000_000_000_000);
        assert!(t.chars().count() <= 300, "within the server's comment length");
        assert_eq!(parse("hello"), None);
        assert_eq!(parse("lt 1 2"), None);
        assert_eq!(parse("lt 1 2 3 4"), None);
    }

    #[test]
    fn senders_stay_under_the_per_user_rate_and_reactors_take_their_share() {
        let load = ChatLoad { comments_per_sec: 50.0, reacting_share: 0.1, ..Default::default() };
        assert_eq!(load.senders(300), 100);
        assert_eq!(load.reactors(300), 30);
        let plans: Vec<Plan> = (0..300).map(|i| load.plan(i, 300)).collect();
        let rate: f64 = plans.iter().filter_map(|p| p.comment_every).map(|d| 1.0 / d.as_secs_f64()).sum();
        assert!((rate - 50.0).abs() < 1e-6, "{rate}");
        assert!(plans.iter().filter_map(|p| p.comment_every).all(|d| d >= Duration::from_secs(2)));
        assert_eq!(plans.iter().filter(|p| p.react.is_some()).count(), 30);
        assert_eq!(plans.iter().filter(|p| p.react.is_some() && p.comment_every.is_some()).count(), 0);
        // More senders than viewers: every viewer comments, each faster.
        let busy = ChatLoad { comments_per_sec: 50.0, ..Default::default() };
        assert_eq!(busy.senders(20), 20);
        assert!(!ChatLoad::default().active());
    }
}
