//! One live's conversation in memory: the working copy of what the store keeps (settings,
//! each identity's moderation flags, the recent comments, reaction totals, open reports) and
//! what only a running room needs (rate-limit buckets, the current reaction window). Plain
//! state behind the room's lock: nothing here awaits or does I/O.

use super::text::BlockedWords;
use crate::auth::Role;
use crate::config::ChatConfig;
use crate::error::{AppError, ErrorCode};
use crate::store::Flag;
use crate::store::{CommentRow, LiveState, MemberFlags, ReportRow, Visibility};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// The reactions a client may send (docs/protocol.md §13.2).
pub const EMOJI: [&str; 6] = ["❤️", "🔥", "👏", "😂", "😮", "🎉"];

/// Identities whose pace is tracked before quiet ones are forgotten.
const PRUNE_ABOVE: usize = 4096;

/// A token bucket: `rate` per second, up to `burst` at once.
#[derive(Clone, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Self {
        Self { tokens: burst as f64, last: now }
    }

    /// Take one token, or say in how many ms one will be there.
    fn take(&mut self, rate: f64, burst: u32, now: Instant) -> Result<(), u64> {
        self.tokens = (self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * rate).min(burst as f64);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / rate) * 1000.0).ceil() as u64)
        }
    }
}

/// What only a running room tracks per identity.
#[derive(Debug)]
struct Pace {
    comments: Bucket,
    last_comment: Option<Instant>,
    /// Reactions in the current second: (second started, count).
    reactions: (Instant, u32),
}

pub struct Conversation {
    pub live_id: String,
    config: Arc<ChatConfig>,
    default_words: Arc<Vec<String>>,
    comments_enabled: bool,
    slow_mode_secs: u32,
    /// The live's own list; `None`: the default list.
    custom_words: Option<Vec<String>>,
    blocked: BlockedWords,
    flags: HashMap<String, MemberFlags>,
    recent: VecDeque<CommentRow>,
    totals: BTreeMap<String, u64>,
    window: BTreeMap<String, u64>,
    reports: Vec<ReportRow>,
    room_pace: Bucket,
    pace: HashMap<String, Pace>,
}

/// Identities by standing in one live.
#[derive(Debug, Default)]
pub struct Standing {
    /// Appointed by the host.
    pub moderators: Vec<String>,
    pub banned: Vec<String>,
    pub restricted: Vec<String>,
    /// (identity, until unix ms).
    pub timed_out: Vec<(String, i64)>,
}

/// Whether a role moderates by itself (the host always; a moderator unless demoted).
pub fn moderates(role: Role) -> bool {
    matches!(role, Role::Host | Role::Moderator)
}

impl Conversation {
    pub fn new(state: LiveState, config: Arc<ChatConfig>, default_words: Arc<Vec<String>>) -> Self {
        let blocked = BlockedWords::new(state.blocked_words.as_deref().unwrap_or(&default_words));
        let now = Instant::now();
        Self {
            live_id: state.id,
            room_pace: Bucket::full(config.room_comment_burst, now),
            config,
            default_words,
            comments_enabled: state.comments_enabled,
            slow_mode_secs: state.slow_mode_secs,
            custom_words: state.blocked_words,
            blocked,
            flags: state.members,
            recent: state.recent.into(),
            totals: state.reactions,
            window: BTreeMap::new(),
            reports: state.open_reports,
            pace: HashMap::new(),
        }
    }

    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    /// The role `identity` has in this room: the token's, except that a viewer the host
    /// appointed moderates, and a moderator the host demoted does not.
    pub fn effective_role(&self, identity: &str, token: Role) -> Role {
        match (token, self.flags.get(identity).and_then(|f| f.moderator)) {
            (Role::Viewer, Some(true)) => Role::Moderator,
            (Role::Moderator, Some(false)) => Role::Viewer,
            (role, _) => role,
        }
    }

    pub fn flags(&self, identity: &str) -> MemberFlags {
        self.flags.get(identity).cloned().unwrap_or_default()
    }

    pub fn set_flag(&mut self, identity: &str, flag: Flag) {
        self.flags.entry(identity.to_owned()).or_default().apply(flag);
    }

    /// Every identity with a standing, by kind, sorted (time-outs still running at `now_ms`).
    pub fn standing(&self, now_ms: i64) -> Standing {
        let mut out = Standing::default();
        for (who, f) in &self.flags {
            if f.moderator == Some(true) {
                out.moderators.push(who.clone());
            }
            if f.banned {
                out.banned.push(who.clone());
            }
            if f.restricted {
                out.restricted.push(who.clone());
            }
            if let Some(until) = f.timeout_until.filter(|&u| u > now_ms) {
                out.timed_out.push((who.clone(), until));
            }
        }
        out.moderators.sort();
        out.banned.sort();
        out.restricted.sort();
        out.timed_out.sort();
        out
    }

    pub fn is_banned(&self, identity: &str) -> bool {
        self.flags.get(identity).is_some_and(|f| f.banned)
    }

    pub fn settings(&self) -> (bool, u32) {
        (self.comments_enabled, self.slow_mode_secs)
    }

    pub fn set_settings(&mut self, comments_enabled: bool, slow_mode_secs: u32) {
        self.comments_enabled = comments_enabled;
        self.slow_mode_secs = slow_mode_secs;
    }

    /// The list in force (the live's own, or the default).
    pub fn blocked_words(&self) -> Vec<String> {
        self.custom_words.clone().unwrap_or_else(|| self.default_words.to_vec())
    }

    pub fn custom_words(&self) -> Option<&[String]> {
        self.custom_words.as_deref()
    }

    pub fn set_blocked_words(&mut self, words: Vec<String>) {
        self.blocked = BlockedWords::new(&words);
        self.custom_words = Some(words);
    }

    /// May `identity` (with `role`) comment now? Takes from its buckets when it may. Moderators
    /// and the host pass comments-off and slow mode, not the rate limits. The answer says
    /// whether the identity is restricted (its comment is then shown to itself only).
    pub fn admit_comment(&mut self, identity: &str, role: Role, now: Instant, unix_ms: i64) -> Result<bool, AppError> {
        let flags = self.flags(identity);
        if flags.banned {
            return Err(AppError::new(ErrorCode::Banned, "you are banned from this live"));
        }
        if let Some(until) = flags.timeout_until.filter(|&u| u > unix_ms) {
            return Err(AppError::new(ErrorCode::TimedOut, "a moderator timed you out; you can comment again later")
                .retry_after((until - unix_ms) as u64));
        }
        let staff = moderates(role);
        if !staff && !self.comments_enabled {
            return Err(AppError::new(ErrorCode::CommentsOff, "comments are off"));
        }
        let c = &self.config;
        let pace = self.pace.entry(identity.to_owned()).or_insert_with(|| Pace {
            comments: Bucket::full(c.user_comment_burst, now),
            last_comment: None,
            reactions: (now, 0),
        });
        if !staff
            && self.slow_mode_secs > 0
            && let Some(last) = pace.last_comment
        {
            let gap = std::time::Duration::from_secs(self.slow_mode_secs as u64);
            let since = now.saturating_duration_since(last);
            if since < gap {
                let wait = (gap - since).as_millis() as u64;
                return Err(
                    AppError::new(ErrorCode::SlowMode, format!("slow mode: one comment every {} s", self.slow_mode_secs)).retry_after(wait)
                );
            }
        }
        pace.comments
            .take(c.user_comments_per_sec, c.user_comment_burst, now)
            .map_err(|ms| AppError::new(ErrorCode::RateLimited, "you are commenting too fast").retry_after(ms))?;
        self.room_pace.take(c.room_comments_per_sec, c.room_comment_burst, now).map_err(|ms| {
            AppError::new(ErrorCode::RateLimited, "this live's comments are too busy; try again in a moment").retry_after(ms)
        })?;
        pace.last_comment = Some(now);
        Ok(flags.restricted)
    }

    /// Who will see a comment with this text.
    pub fn visibility(&self, restricted: bool, body: &str) -> Visibility {
        if self.blocked.matches(body) {
            Visibility::Blocked
        } else if restricted {
            Visibility::Restricted
        } else {
            Visibility::Public
        }
    }

    /// Keep a new comment for the history of later joiners.
    pub fn push(&mut self, row: CommentRow) {
        let keep = (self.config.history * 4).max(64);
        while self.recent.len() >= keep {
            self.recent.pop_front();
        }
        self.recent.push_back(row);
    }

    pub fn find(&self, id: i64) -> Option<&CommentRow> {
        self.recent.iter().find(|c| c.id == id)
    }

    pub fn remove(&mut self, id: i64) -> Option<CommentRow> {
        let at = self.recent.iter().position(|c| c.id == id)?;
        self.recent.remove(at)
    }

    /// The last `chat.history` comments `identity` may see, oldest first.
    pub fn history_for(&self, identity: &str) -> Vec<&CommentRow> {
        let mut seen: Vec<&CommentRow> = self
            .recent
            .iter()
            .rev()
            .filter(|c| c.visibility == Visibility::Public || c.identity == identity)
            .take(self.config.history)
            .collect();
        seen.reverse();
        seen
    }

    /// A tap. False when `identity` is over its reactions per second (dropped silently).
    pub fn react(&mut self, identity: &str, emoji: &str, now: Instant) -> bool {
        let c = &self.config;
        let pace = self.pace.entry(identity.to_owned()).or_insert_with(|| Pace {
            comments: Bucket::full(c.user_comment_burst, now),
            last_comment: None,
            reactions: (now, 0),
        });
        if now.saturating_duration_since(pace.reactions.0).as_secs_f64() >= 1.0 {
            pace.reactions = (now, 0);
        }
        if pace.reactions.1 >= c.user_reactions_per_sec {
            return false;
        }
        pace.reactions.1 += 1;
        *self.window.entry(emoji.to_owned()).or_default() += 1;
        true
    }

    /// Forget the pace of identities quiet for a minute (or the slow-mode gap, if longer) once
    /// many have come and gone: their buckets would be full again anyway.
    fn prune(&mut self, now: Instant) {
        if self.pace.len() < PRUNE_ABOVE {
            return;
        }
        let keep = std::time::Duration::from_secs(60.max(self.slow_mode_secs as u64));
        self.pace.retain(|_, p| {
            let last = p.last_comment.into_iter().chain([p.comments.last, p.reactions.0]).max().unwrap_or(now);
            now.saturating_duration_since(last) < keep
        });
    }

    /// End the current reaction window: its counts (added to the totals), if any.
    pub fn take_window(&mut self) -> Option<BTreeMap<String, u64>> {
        self.prune(Instant::now());
        if self.window.is_empty() {
            return None;
        }
        let window = std::mem::take(&mut self.window);
        for (emoji, n) in &window {
            *self.totals.entry(emoji.clone()).or_default() += n;
        }
        Some(window)
    }

    pub fn totals(&self) -> &BTreeMap<String, u64> {
        &self.totals
    }

    pub fn reports(&self) -> &[ReportRow] {
        &self.reports
    }

    pub fn add_report(&mut self, r: ReportRow) {
        self.reports.push(r);
    }

    /// Close reports: one by id, or all of a comment. Returns those closed.
    pub fn close_reports(&mut self, id: Option<i64>, comment: Option<i64>) -> Vec<ReportRow> {
        let (closed, open) = std::mem::take(&mut self.reports).into_iter().partition(|r| Some(r.id) == id || Some(r.comment) == comment);
        self.reports = open;
        closed
    }

    /// Whether `reporter` already has an open report on `comment`.
    pub fn has_report(&self, reporter: &str, comment: i64) -> bool {
        self.reports.iter().any(|r| r.reporter == reporter && r.comment == comment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(config: ChatConfig) -> Conversation {
        Conversation::new(LiveState::fresh("l".into()), Arc::new(config), Arc::new(vec!["spam".into()]))
    }

    #[test]
    fn rate_limits_per_user_and_per_room() {
        let cfg = ChatConfig {
            user_comments_per_sec: 1.0,
            user_comment_burst: 3,
            room_comments_per_sec: 2.0,
            room_comment_burst: 4,
            ..ChatConfig::default()
        };
        let mut c = conv(cfg);
        let t0 = Instant::now();
        for _ in 0..3 {
            c.admit_comment("a", Role::Viewer, t0, 0).expect("within the burst");
        }
        let e = c.admit_comment("a", Role::Viewer, t0, 0).expect_err("fourth at once");
        assert_eq!((e.code, e.retry_after_ms), (ErrorCode::RateLimited, Some(1000)));
        c.admit_comment("b", Role::Viewer, t0, 0).expect("another user: the room's fourth");
        let e = c.admit_comment("c", Role::Viewer, t0, 0).expect_err("room's fifth");
        assert_eq!((e.code, e.retry_after_ms), (ErrorCode::RateLimited, Some(500)));
        let t1 = t0 + std::time::Duration::from_millis(1000);
        c.admit_comment("a", Role::Viewer, t1, 0).expect("a token back after 1 s");
    }

    #[test]
    fn slow_mode_comments_off_and_timeouts_spare_moderators_where_they_should() {
        let mut c = conv(ChatConfig::default());
        let t0 = Instant::now();
        c.set_settings(true, 10);
        c.admit_comment("v", Role::Viewer, t0, 0).expect("first");
        let e = c.admit_comment("v", Role::Viewer, t0 + std::time::Duration::from_secs(4), 0).expect_err("slow");
        assert_eq!((e.code, e.retry_after_ms), (ErrorCode::SlowMode, Some(6000)));
        c.admit_comment("v", Role::Viewer, t0 + std::time::Duration::from_secs(10), 0).expect("after 10 s");
        c.admit_comment("m", Role::Moderator, t0, 0).expect("mod");
        c.admit_comment("m", Role::Moderator, t0, 0).expect("mods skip slow mode");
        c.set_settings(false, 0);
        assert_eq!(c.admit_comment("w", Role::Viewer, t0, 0).unwrap_err().code, ErrorCode::CommentsOff);
        c.admit_comment("h", Role::Host, t0, 0).expect("the host comments when comments are off");
        c.set_settings(true, 0);
        c.set_flag("w", Flag::Timeout(Some(60_000)));
        let e = c.admit_comment("w", Role::Viewer, t0, 15_000).expect_err("timed out");
        assert_eq!((e.code, e.retry_after_ms), (ErrorCode::TimedOut, Some(45_000)));
        c.admit_comment("w", Role::Viewer, t0, 60_001).expect("time-out over");
        c.set_flag("w", Flag::Restricted(true));
        assert!(c.admit_comment("w", Role::Viewer, t0 + std::time::Duration::from_secs(5), 60_001).expect("restricted may comment"));
    }

    #[test]
    fn moderators_by_appointment_and_demotion() {
        let mut c = conv(ChatConfig::default());
        assert_eq!(c.effective_role("x", Role::Viewer), Role::Viewer);
        c.set_flag("x", Flag::Moderator(Some(true)));
        assert_eq!(c.effective_role("x", Role::Viewer), Role::Moderator);
        assert_eq!(c.effective_role("x", Role::Cohost), Role::Cohost);
        c.set_flag("y", Flag::Moderator(Some(false)));
        assert_eq!(c.effective_role("y", Role::Moderator), Role::Viewer);
        assert_eq!(c.effective_role("y", Role::Host), Role::Host);
    }

    #[test]
    fn reactions_add_up_per_window_and_per_user_second() {
        let mut c = conv(ChatConfig { user_reactions_per_sec: 3, ..ChatConfig::default() });
        let t0 = Instant::now();
        let taken = (0..5).filter(|_| c.react("a", "❤️", t0)).count();
        assert_eq!(taken, 3, "over the per-second cap: dropped");
        assert!(c.react("b", "🔥", t0));
        let w = c.take_window().expect("window");
        assert_eq!(w, BTreeMap::from([("❤️".to_owned(), 3), ("🔥".to_owned(), 1)]));
        assert!(c.take_window().is_none(), "nothing new: nothing sent");
        assert!(c.react("a", "❤️", t0 + std::time::Duration::from_secs(1)));
        c.take_window();
        assert_eq!(c.totals().get("❤️"), Some(&4));
    }

    #[test]
    fn the_pace_of_quiet_identities_is_forgotten_once_many_came() {
        let mut c = conv(ChatConfig::default());
        let t0 = Instant::now();
        for i in 0..PRUNE_ABOVE {
            c.react(&format!("v{i}"), "❤️", t0);
        }
        c.admit_comment("talker", Role::Viewer, t0 + std::time::Duration::from_secs(59), 0).expect("comment");
        c.prune(t0 + std::time::Duration::from_secs(61));
        assert_eq!(c.pace.len(), 1, "only the one active in the last minute is kept");
        c.prune(t0 + std::time::Duration::from_secs(200));
        assert_eq!(c.pace.len(), 1, "below the threshold nothing is pruned");
    }

    #[test]
    fn history_hides_what_a_viewer_may_not_see() {
        let mut c = conv(ChatConfig { history: 2, ..ChatConfig::default() });
        let row = |id, who: &str, v| CommentRow {
            id,
            identity: who.into(),
            name: who.into(),
            role: "viewer".into(),
            body: "x".into(),
            created_at: 0,
            visibility: v,
        };
        c.push(row(1, "a", Visibility::Public));
        c.push(row(2, "s", Visibility::Restricted));
        c.push(row(3, "b", Visibility::Public));
        c.push(row(4, "s", Visibility::Blocked));
        let ids = |who| c.history_for(who).iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids("a"), [1, 3]);
        assert_eq!(ids("s"), [3, 4]);
        assert_eq!(c.visibility(false, "SPAM!"), Visibility::Blocked);
        assert_eq!(c.visibility(true, "fine"), Visibility::Restricted);
    }
}
