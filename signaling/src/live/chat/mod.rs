//! The live room's conversation (docs/protocol.md §13): comments, reactions and server-side
//! moderation. Every handler checks the sender's role as the room knows it now (a token's role,
//! changed by the live's moderator flags), writes to the store first, then changes the room's
//! working copy ([`Conversation`]) and tells who needs to know.
//!
//! Locks: the room's lock is taken and released inside one statement or block with no await in
//! it; the store is awaited with no lock held (docs/architecture.md §6.1).

pub mod state;
pub mod text;

pub use state::{Conversation, EMOJI, moderates};

use crate::auth::{MAX_IDENTITY_BYTES, Role};
use crate::error::{AppError, ErrorCode};
use crate::live::commerce::Commerce;
use crate::live::ctx::Ctx;
use crate::live::room::{Room, Rooms, lock};
use crate::protocol::{BadgeView, ChatSnapshot, CommentView, ModAction, ParticipantKind, ReportAction, ReportView, ServerMsg, TimedOut};
use crate::store::{AuditEntry, CommentRow, Flag, ReportRow, Store, Visibility, unix_ms};
use std::time::Instant;

/// Longest moderation or report reason, in characters.
const MAX_REASON_CHARS: usize = 200;
/// Audit-log lines one `get_audit_log` returns.
const AUDIT_PAGE: usize = 500;

pub fn view(row: &CommentRow, badge: Option<BadgeView>) -> CommentView {
    CommentView {
        badge,
        id: row.id,
        identity: row.identity.clone(),
        name: row.name.clone(),
        role: Role::parse(&row.role).unwrap_or(Role::Viewer),
        text: row.body.clone(),
        at: row.created_at,
    }
}

/// What a participant joining as `identity` with `role` finds.
pub fn snapshot(chat: &Conversation, commerce: &Commerce, identity: &str, role: Role) -> ChatSnapshot {
    let (comments_enabled, slow_mode_secs) = chat.settings();
    let now = unix_ms();
    ChatSnapshot {
        live_id: chat.live_id.clone(),
        pinned_product: commerce.pinned().cloned(),
        tiers: commerce.tiers(),
        comments: chat.history_for(identity).into_iter().map(|c| view(c, commerce.badge(&c.identity))).collect(),
        comments_enabled,
        slow_mode_secs,
        reactions: chat.totals().clone(),
        emoji: EMOJI.iter().map(|e| (*e).to_owned()).collect(),
        timed_out_until: chat.flags(identity).timeout_until.filter(|&t| t > now),
        open_reports: moderates(role).then(|| chat.reports().len()),
    }
}

/// The sender's role now and the live's id.
fn me(ctx: &Ctx<'_>) -> Result<(Role, String), AppError> {
    let r = lock(ctx.room);
    let role = r.role_of(ctx.id).ok_or_else(|| AppError::new(ErrorCode::NotFound, "not in this room"))?;
    Ok((role, r.chat.live_id.clone()))
}

fn staff_only(role: Role, what: &str) -> Result<(), AppError> {
    if moderates(role) { Ok(()) } else { Err(AppError::new(ErrorCode::NotAllowed, format!("only the host and moderators {what}"))) }
}

fn reason(raw: Option<String>) -> Result<String, AppError> {
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(String::new()),
        Some(r) => {
            text::clean_comment(r, MAX_REASON_CHARS).map_err(|e| AppError::new(ErrorCode::BadMessage, format!("reason: {}", e.message)))
        }
    }
}

/// Write an audit line, then show it to the host and moderators (their acknowledgement).
async fn audit(ctx: &Ctx<'_>, live: &str, action: &str, target: &str, detail: String) -> Result<(), AppError> {
    let store = &ctx.app.store;
    let entry = AuditEntry {
        id: store.next_id(),
        actor: ctx.claims.identity.clone(),
        action: action.into(),
        target: target.into(),
        detail,
        at: unix_ms(),
    };
    store.audit(live, &entry).await?;
    metrics::counter!("onair_moderation_actions_total", "action" => action.to_owned()).increment(1);
    lock(ctx.room).send_to_staff(&ServerMsg::Moderation { entry });
    Ok(())
}

/// `comment`: clean, admit (bans, time-outs, comments off, slow mode, rate limits), store, show.
pub async fn comment(ctx: &Ctx<'_>, raw: String) -> Result<(), AppError> {
    let max = ctx.app.config.chat.max_comment_chars;
    let body = text::clean_comment(&raw, max)?;
    let (row, live) = {
        let mut r = lock(ctx.room);
        let me = r.member(ctx.id).ok_or_else(|| AppError::new(ErrorCode::NotFound, "not in this room"))?.clone();
        let restricted = r.chat.admit_comment(&me.identity, me.role, Instant::now(), unix_ms())?;
        let visibility = r.chat.visibility(restricted, &body);
        let row = CommentRow {
            id: ctx.app.store.next_id(),
            identity: me.identity,
            name: me.name,
            role: me.role.as_str().to_owned(),
            body,
            created_at: unix_ms(),
            visibility,
        };
        (row, r.chat.live_id.clone())
    };
    ctx.app.store.add_comment(&live, &row).await?;
    let visibility = match row.visibility {
        Visibility::Public => "public",
        Visibility::Restricted => "restricted",
        Visibility::Blocked => "blocked",
    };
    metrics::counter!("onair_comments_total", "visibility" => visibility).increment(1);
    let public = row.visibility == Visibility::Public;
    {
        let mut r = lock(ctx.room);
        let msg = ServerMsg::Comment { comment: view(&row, r.commerce.badge(&row.identity)) };
        if public {
            r.queue_chat(msg);
        } else {
            // Shadowed: its author sees it as sent, nobody else sees anything.
            tracing::debug!(room = %r.name, identity = %row.identity, visibility = ?row.visibility, "comment hidden");
            r.send_to_identity(&row.identity, &msg);
        }
        r.chat.push(row);
    }
    if public {
        ctx.app.rooms.mark_chat(&ctx.claims.room);
    }
    Ok(())
}

/// Find a comment of this live: in memory, else in the store (older than the history kept).
async fn find_comment(ctx: &Ctx<'_>, live: &str, id: i64) -> Result<CommentRow, AppError> {
    let found = lock(ctx.room).chat.find(id).cloned();
    let row = match found {
        Some(row) => Some(row),
        None => ctx.app.store.comment(live, id).await?.filter(|(_, deleted)| !deleted).map(|(row, _)| row),
    };
    row.ok_or_else(|| AppError::new(ErrorCode::NotFound, "no such comment"))
}

/// Delete for everyone; close its reports.
async fn remove_comment(ctx: &Ctx<'_>, live: &str, id: i64) -> Result<(), AppError> {
    if !ctx.app.store.delete_comment(live, id, &ctx.claims.identity).await? {
        // Someone deleted it a moment ago: they told everyone.
        return Err(AppError::new(ErrorCode::NotFound, "no such comment"));
    }
    {
        let mut r = lock(ctx.room);
        r.chat.remove(id);
        // Through the chat queue, so it cannot overtake the comment it deletes.
        r.queue_chat(ServerMsg::CommentDeleted { id });
        for report in r.chat.close_reports(None, Some(id)) {
            r.send_to_staff(&ServerMsg::ReportResolved { id: report.id, resolution: "deleted".into() });
        }
    }
    ctx.app.rooms.mark_chat(&ctx.claims.room);
    Ok(())
}

/// `delete_comment`: the author deletes their own; the host any; a moderator any but the host's.
pub async fn delete(ctx: &Ctx<'_>, id: i64) -> Result<(), AppError> {
    let (role, live) = me(ctx)?;
    let row = find_comment(ctx, &live, id).await?;
    let own = row.identity == ctx.claims.identity;
    if !own {
        staff_only(role, "delete others' comments")?;
        if row.role == Role::Host.as_str() && role != Role::Host {
            return Err(AppError::new(ErrorCode::NotAllowed, "only the host deletes the host's comments"));
        }
    }
    remove_comment(ctx, &live, id).await?;
    if !own {
        audit(ctx, &live, "delete_comment", &row.identity, row.body).await?;
    }
    Ok(())
}

/// `react`: one tap, added to the room's current window (over the per-second cap: dropped).
pub fn react(ctx: &Ctx<'_>, emoji: &str) -> Result<(), AppError> {
    if !EMOJI.contains(&emoji) {
        return Err(AppError::new(ErrorCode::BadMessage, format!("reactions are one of {}", EMOJI.join(" "))));
    }
    let mut r = lock(ctx.room);
    if r.chat.is_banned(&ctx.claims.identity) {
        return Err(AppError::new(ErrorCode::Banned, "you are banned from this live"));
    }
    if r.chat.react(&ctx.claims.identity, emoji, Instant::now()) {
        metrics::counter!("onair_reactions_total").increment(1);
    }
    Ok(())
}

/// Can the sender (`actor`, with `role`) act on `target`? Nobody acts on themselves, the host,
/// or a studio feed; only the host acts on moderators.
fn check_target(r: &Room, actor: &str, role: Role, target: &str) -> Result<(), AppError> {
    if target.is_empty() || target.len() > MAX_IDENTITY_BYTES {
        return Err(AppError::new(ErrorCode::BadMessage, "identity: 1-128 bytes"));
    }
    if target == actor {
        return Err(AppError::new(ErrorCode::NotAllowed, "not on yourself"));
    }
    let present: Vec<_> = r.members_of(target).collect();
    if present.iter().any(|p| p.role == Role::Host) {
        return Err(AppError::new(ErrorCode::NotAllowed, "the host cannot be moderated"));
    }
    if present.iter().any(|p| p.kind == ParticipantKind::Studio) || target.starts_with("studio:") {
        return Err(AppError::new(ErrorCode::NotAllowed, "studio feeds are ended by revoking their stream key"));
    }
    let is_moderator = present.iter().any(|p| p.role == Role::Moderator) || r.chat.flags(target).moderator == Some(true);
    if is_moderator && role != Role::Host {
        return Err(AppError::new(ErrorCode::NotAllowed, "only the host acts on moderators"));
    }
    Ok(())
}

/// `moderate`: ban, unban, time out, restrict, appoint or remove moderators.
pub async fn moderate(ctx: &Ctx<'_>, action: ModAction, target: String, minutes: Option<u32>, why: Option<String>) -> Result<(), AppError> {
    let max_minutes = ctx.app.config.chat.max_timeout_minutes;
    let why = reason(why)?;
    let live = {
        let r = lock(ctx.room);
        let role = r.role_of(ctx.id).ok_or_else(|| AppError::new(ErrorCode::NotFound, "not in this room"))?;
        staff_only(role, "moderate")?;
        if matches!(action, ModAction::AddModerator | ModAction::RemoveModerator) && role != Role::Host {
            return Err(AppError::new(ErrorCode::NotAllowed, "only the host appoints moderators"));
        }
        check_target(&r, &ctx.claims.identity, role, &target)?;
        r.chat.live_id.clone()
    };
    let now = unix_ms();
    let (flag, detail) = match action {
        ModAction::Ban => (Flag::Banned(true), why.clone()),
        ModAction::Unban => (Flag::Banned(false), why.clone()),
        ModAction::Timeout => {
            let m = minutes
                .filter(|m| (1..=max_minutes).contains(m))
                .ok_or_else(|| AppError::new(ErrorCode::BadMessage, format!("timeout needs minutes: 1..={max_minutes}")))?;
            (Flag::Timeout(Some(now + m as i64 * 60_000)), format!("{m} min"))
        }
        ModAction::Untimeout => (Flag::Timeout(None), String::new()),
        ModAction::Restrict => (Flag::Restricted(true), why.clone()),
        ModAction::Unrestrict => (Flag::Restricted(false), why.clone()),
        ModAction::AddModerator => (Flag::Moderator(Some(true)), String::new()),
        ModAction::RemoveModerator => (Flag::Moderator(Some(false)), String::new()),
    };
    ctx.app.store.set_flag(&live, &target, flag).await?;
    {
        let mut r = lock(ctx.room);
        r.chat.set_flag(&target, flag);
        match flag {
            Flag::Banned(true) => {
                let reason = if why.is_empty() {
                    "you were banned from this live".to_owned()
                } else {
                    format!("you were banned from this live: {why}")
                };
                r.send_to_identity(&target, &ServerMsg::Kicked { code: ErrorCode::Banned, reason });
            }
            Flag::Timeout(until) => r.send_to_identity(&target, &ServerMsg::ChatStatus { timed_out_until: until }),
            Flag::Moderator(_) => r.refresh_role(&target),
            _ => {}
        }
    }
    if matches!(flag, Flag::Banned(true)) {
        // One whose connection dropped and who waits for a resume is out now, not at its grace's end.
        for p in ctx.app.resumes.evict(&ctx.claims.room, &target) {
            crate::live::join::leave(ctx.app, p.id, &p.room, "banned");
        }
    }
    tracing::info!(room = %ctx.claims.room, actor = %ctx.claims.identity, action = action.as_str(), %target, "moderation");
    audit(ctx, &live, action.as_str(), &target, detail).await
}

/// `chat_settings`: comments on/off and slow mode, for everyone at once.
pub async fn settings(ctx: &Ctx<'_>, enabled: Option<bool>, slow: Option<u32>) -> Result<(), AppError> {
    let max_slow = ctx.app.config.chat.max_slow_mode_secs;
    if slow.is_some_and(|s| s > max_slow) {
        return Err(AppError::new(ErrorCode::BadMessage, format!("slow_mode_secs: 0..={max_slow}")));
    }
    let (live, new, words) = {
        let r = lock(ctx.room);
        staff_only(r.role_of(ctx.id).unwrap_or(Role::Viewer), "change the chat settings")?;
        let (e, s) = r.chat.settings();
        (r.chat.live_id.clone(), (enabled.unwrap_or(e), slow.unwrap_or(s)), r.chat.custom_words().map(<[String]>::to_vec))
    };
    ctx.app.store.save_chat_settings(&live, new.0, new.1, words.as_deref()).await?;
    {
        let mut r = lock(ctx.room);
        r.chat.set_settings(new.0, new.1);
        r.broadcast_all(ServerMsg::ChatSettings { comments_enabled: new.0, slow_mode_secs: new.1 });
    }
    let detail = format!("comments {}, slow mode {} s", if new.0 { "on" } else { "off" }, new.1);
    audit(ctx, &live, "chat_settings", "", detail).await
}

/// `get_blocked_words`.
pub fn blocked_words(ctx: &Ctx<'_>) -> Result<ServerMsg, AppError> {
    let r = lock(ctx.room);
    staff_only(r.role_of(ctx.id).unwrap_or(Role::Viewer), "see the blocked words")?;
    Ok(ServerMsg::BlockedWords { words: r.chat.blocked_words(), custom: r.chat.custom_words().is_some() })
}

/// `set_blocked_words`: the live's list from now on (comments already shown stay).
pub async fn set_blocked_words(ctx: &Ctx<'_>, words: Vec<String>) -> Result<ServerMsg, AppError> {
    let words = text::check_word_list(&words)?;
    let (live, (enabled, slow)) = {
        let r = lock(ctx.room);
        staff_only(r.role_of(ctx.id).unwrap_or(Role::Viewer), "change the blocked words")?;
        (r.chat.live_id.clone(), r.chat.settings())
    };
    ctx.app.store.save_chat_settings(&live, enabled, slow, Some(&words)).await?;
    let n = words.len();
    lock(ctx.room).chat.set_blocked_words(words.clone());
    audit(ctx, &live, "blocked_words", "", format!("{n} words")).await?;
    Ok(ServerMsg::BlockedWords { words, custom: true })
}

fn report_view(r: &ReportRow, comment: Option<&CommentRow>) -> ReportView {
    ReportView {
        id: r.id,
        comment: comment.map(|c| view(c, None)),
        comment_id: r.comment,
        reporter: r.reporter.clone(),
        reason: r.reason.clone(),
        at: r.at,
    }
}

/// `report`: a participant reports a comment it can see; moderators get it at once.
pub async fn report(ctx: &Ctx<'_>, comment: i64, why: Option<String>) -> Result<ServerMsg, AppError> {
    let why = reason(why)?;
    let (_, live) = me(ctx)?;
    let row = find_comment(ctx, &live, comment).await?;
    let me = &ctx.claims.identity;
    if row.visibility != Visibility::Public && &row.identity != me {
        return Err(AppError::new(ErrorCode::NotFound, "no such comment"));
    }
    {
        let r = lock(ctx.room);
        if r.chat.has_report(me, comment) {
            return Ok(ServerMsg::Reported { comment });
        }
        if r.chat.reports().len() >= r.chat.config().max_open_reports {
            return Err(AppError::new(ErrorCode::ServerBusy, "too many open reports; the moderators are on it"));
        }
    }
    let report = ReportRow { id: ctx.app.store.next_id(), comment, reporter: me.clone(), reason: why, at: unix_ms() };
    ctx.app.store.add_report(&live, &report).await?;
    let mut r = lock(ctx.room);
    r.send_to_staff(&ServerMsg::ReportFiled { report: report_view(&report, Some(&row)) });
    r.chat.add_report(report);
    Ok(ServerMsg::Reported { comment })
}

/// `get_reports`: the open reports with their comments.
pub async fn reports(ctx: &Ctx<'_>) -> Result<ServerMsg, AppError> {
    let (role, live) = me(ctx)?;
    staff_only(role, "see the reports")?;
    let open: Vec<ReportRow> = lock(ctx.room).chat.reports().to_vec();
    let mut out = Vec::with_capacity(open.len());
    for r in &open {
        let comment = find_comment(ctx, &live, r.comment).await.ok();
        out.push(report_view(r, comment.as_ref()));
    }
    Ok(ServerMsg::Reports { reports: out })
}

/// `resolve_report`: dismiss it, or delete its comment (which closes every report on it).
pub async fn resolve_report(ctx: &Ctx<'_>, id: i64, action: ReportAction) -> Result<(), AppError> {
    let (role, live) = me(ctx)?;
    staff_only(role, "resolve reports")?;
    let found = lock(ctx.room).chat.reports().iter().find(|r| r.id == id).cloned();
    let report = found.ok_or_else(|| AppError::new(ErrorCode::NotFound, "no such open report"))?;
    match action {
        ReportAction::Delete => {
            let row = find_comment(ctx, &live, report.comment).await;
            remove_comment(ctx, &live, report.comment).await?;
            let (target, body) = row.map(|r| (r.identity, r.body)).unwrap_or_default();
            audit(ctx, &live, "delete_comment", &target, body).await
        }
        ReportAction::Dismiss => {
            ctx.app.store.resolve_report(&live, id, &ctx.claims.identity, "dismissed").await?;
            let mut r = lock(ctx.room);
            r.chat.close_reports(Some(id), None);
            r.send_to_staff(&ServerMsg::ReportResolved { id, resolution: "dismissed".into() });
            Ok(())
        }
    }
}

/// `get_moderation_state`: the live's bans, restrictions, time-outs and appointed moderators.
pub fn moderation_state(ctx: &Ctx<'_>) -> Result<ServerMsg, AppError> {
    let r = lock(ctx.room);
    staff_only(r.role_of(ctx.id).unwrap_or(Role::Viewer), "see who is moderated")?;
    let s = r.chat.standing(unix_ms());
    let timed_out = s.timed_out.into_iter().map(|(identity, until)| TimedOut { identity, until }).collect();
    Ok(ServerMsg::ModerationState { moderators: s.moderators, banned: s.banned, restricted: s.restricted, timed_out })
}

/// `get_audit_log`: host only.
pub async fn audit_log(ctx: &Ctx<'_>) -> Result<ServerMsg, AppError> {
    let (role, live) = me(ctx)?;
    if role != Role::Host {
        return Err(AppError::new(ErrorCode::NotAllowed, "only the host reads the audit log"));
    }
    Ok(ServerMsg::AuditLog { entries: ctx.app.store.audit_log(&live, AUDIT_PAGE).await? })
}

/// One reaction window for every room: queue each room's sums (if any) for its members (the
/// next fan-out tick sends them with the comments), then add them to the live's totals in the
/// store.
pub async fn flush_reactions(rooms: &Rooms, store: &Store) {
    let mut sums = Vec::new();
    for room in rooms.all() {
        let name = {
            let mut r = lock(&room);
            let Some(counts) = r.chat.take_window() else { continue };
            let totals = r.chat.totals().clone();
            sums.push((r.chat.live_id.clone(), counts.iter().map(|(e, n)| (e.clone(), *n)).collect::<Vec<_>>()));
            // With the comments of the next fan-out tick: one write per viewer for both.
            r.queue_chat(ServerMsg::Reactions { counts, totals });
            r.name.clone()
        };
        rooms.mark_chat(&name);
    }
    for (live, counts) in sums {
        if let Err(e) = store.add_reactions(&live, &counts).await {
            tracing::error!(%live, "storing reactions: {e}");
        }
    }
}
