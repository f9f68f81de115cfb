//! Per-connection limits of the WebSocket, as plain state with time as an argument: a token
//! bucket for messages, misbehaviour counted per minute (malformed and rate-limited messages),
//! and the idle watch that drives pings. The connection task asks and obeys; nothing here does
//! I/O. The figures are in docs/protocol.md §3.3.

use std::time::{Duration, Instant};

/// Malformed messages tolerated per window before the connection is closed.
pub const MAX_BAD_MESSAGES: u32 = 20;
/// Rate-limited messages tolerated per window before the connection is closed.
pub const MAX_LIMITED_MESSAGES: u32 = 500;
/// Misbehaviour is counted per minute, so a long-lived connection is not closed for occasional
/// slips spread over hours.
const MISBEHAVIOUR_WINDOW: Duration = Duration::from_secs(60);
/// At most one `rate_limited` notice per this long.
const NOTICE_INTERVAL: Duration = Duration::from_secs(1);

/// A token bucket: `rate` per second, `burst` deep.
struct RateLimit {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self { tokens: burst as f64, rate: rate as f64, burst: burst as f64, last: now }
    }

    fn allow(&mut self, now: Instant) -> bool {
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What to do with a message that arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Handle it.
    Pass,
    /// Drop it unprocessed; `notify`: tell the client (`rate_limited`).
    Drop { notify: bool },
    /// Close the connection (1008) with this reason.
    Close(&'static str),
}

/// The limits of one connection.
pub struct Limits {
    limiter: RateLimit,
    /// Malformed and rate-limited messages in the current window.
    bad: u32,
    limited: u32,
    window_start: Instant,
    last_limited_notice: Option<Instant>,
}

impl Limits {
    pub fn new(messages_per_second: u32, burst: u32, now: Instant) -> Self {
        Self { limiter: RateLimit::new(messages_per_second, burst, now), bad: 0, limited: 0, window_start: now, last_limited_notice: None }
    }

    /// A text message arrived at `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        if now.duration_since(self.window_start) >= MISBEHAVIOUR_WINDOW {
            self.window_start = now;
            self.bad = 0;
            self.limited = 0;
        }
        if self.limiter.allow(now) {
            return Admit::Pass;
        }
        self.limited += 1;
        if self.limited > MAX_LIMITED_MESSAGES {
            return Admit::Close("message rate limit exceeded");
        }
        let notify = self.last_limited_notice.is_none_or(|t| now.duration_since(t) >= NOTICE_INTERVAL);
        if notify {
            self.last_limited_notice = Some(now);
        }
        Admit::Drop { notify }
    }

    /// A malformed message was answered; the close reason when that was one too many.
    pub fn malformed(&mut self) -> Option<&'static str> {
        self.bad += 1;
        (self.bad > MAX_BAD_MESSAGES).then_some("too many malformed messages")
    }
}

/// The idle watch: the server pings every `idle / 3`; a connection from which nothing (message,
/// Ping or Pong) has arrived for longer than `idle` when the timer fires is closed.
pub struct Heartbeat {
    idle: Duration,
    last_heard: Instant,
}

impl Heartbeat {
    pub fn new(idle: Duration, now: Instant) -> Self {
        Self { idle, last_heard: now }
    }

    /// How often the timer fires.
    pub fn ping_interval(&self) -> Duration {
        self.idle / 3
    }

    /// Any frame arrived.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// The timer fired: `Err(reason)` to close, `Ok` to send a Ping.
    pub fn tick(&self, now: Instant) -> Result<(), &'static str> {
        if now.duration_since(self.last_heard) > self.idle { Err("idle timeout") } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_then_close() {
        let t0 = Instant::now();
        let mut l = Limits::new(50, 100, t0);
        for _ in 0..100 {
            assert_eq!(l.admit(t0), Admit::Pass);
        }
        assert_eq!(l.admit(t0), Admit::Drop { notify: true });
        assert_eq!(l.admit(t0), Admit::Drop { notify: false }, "one notice per second");
        assert_eq!(l.admit(t0 + Duration::from_millis(100)), Admit::Pass, "5 tokens back after 100 ms");
        let t1 = t0 + Duration::from_millis(1100);
        let mut seen_close = false;
        for _ in 0..600 {
            if let Admit::Close(r) = l.admit(t1) {
                assert_eq!(r, "message rate limit exceeded");
                seen_close = true;
                break;
            }
        }
        assert!(seen_close, "more than 500 drops in a minute close");
        // A new minute forgives.
        let t2 = t0 + Duration::from_secs(61);
        assert_eq!(l.admit(t2), Admit::Pass);
    }

    #[test]
    fn malformed_messages_close_after_twenty() {
        let t0 = Instant::now();
        let mut l = Limits::new(50, 100, t0);
        for _ in 0..MAX_BAD_MESSAGES {
            assert_eq!(l.malformed(), None);
        }
        assert_eq!(l.malformed(), Some("too many malformed messages"));
        l.admit(t0 + MISBEHAVIOUR_WINDOW);
        assert_eq!(l.malformed(), None, "counted per minute");
    }

    #[test]
    fn heartbeat() {
        let t0 = Instant::now();
        let mut h = Heartbeat::new(Duration::from_secs(60), t0);
        assert_eq!(h.ping_interval(), Duration::from_secs(20));
        assert_eq!(h.tick(t0 + Duration::from_secs(60)), Ok(()));
        assert_eq!(h.tick(t0 + Duration::from_secs(61)), Err("idle timeout"));
        h.heard(t0 + Duration::from_secs(50));
        assert_eq!(h.tick(t0 + Duration::from_secs(80)), Ok(()));
    }
}
