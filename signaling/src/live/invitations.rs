//! The way onto the stage without a co-host token (docs/protocol.md §6.1): a viewer's request
//! and the host's answer, the host's invitation and the viewer's answer, taking someone off
//! stage and stepping down. The rules are the stage's ([`crate::live::stage::Stage`]); this
//! checks who is asking, applies them under the room's lock, and tells each party. Nothing here
//! awaits while holding the lock; the SFU is called after it is released.

use super::room::lock;
use crate::auth::Role;
use crate::error::{AppError, ErrorCode};
use crate::live::ctx::Ctx;
use crate::protocol::{ParticipantKind, ServerMsg};
use sfu::ParticipantId;

fn not_in_room() -> AppError {
    AppError::new(ErrorCode::NotFound, "not in this room")
}

/// `request_stage`: queue a request; the requester hears its place (`stage_request`).
pub fn request(ctx: &Ctx<'_>) -> Result<(), AppError> {
    let mut r = lock(ctx.room);
    let role = r.role_of(ctx.id).ok_or_else(not_in_room)?;
    if !r.is_live() {
        return Err(AppError::new(ErrorCode::RoomNotLive, "the host has not started the live yet"));
    }
    r.stage_mut().request(ctx.id, role)?;
    // Everyone waiting (the requester included) hears its place.
    r.send_stage_queue();
    Ok(())
}

/// `cancel_stage_request`.
pub fn cancel(ctx: &Ctx<'_>) -> Result<ServerMsg, AppError> {
    let mut r = lock(ctx.room);
    if !r.stage_mut().cancel_request(ctx.id) {
        return Err(AppError::new(ErrorCode::NotFound, "you have no request waiting"));
    }
    r.send_stage_queue();
    Ok(ServerMsg::StageRequest { state: "cancelled".into(), position: None })
}

/// `answer_stage_request`: the host (or a moderator, when allowed) accepts — a seat and the
/// co-host role at once — or declines. A full stage refuses the accept and keeps the request.
pub fn answer_request(ctx: &Ctx<'_>, participant: ParticipantId, accept: bool) -> Result<(), AppError> {
    let mut r = lock(ctx.room);
    let role = r.role_of(ctx.id).ok_or_else(not_in_room)?;
    if !r.manages_stage(role) {
        return Err(AppError::new(ErrorCode::NotAllowed, "only the host (or moderators, if the host allows) answers stage requests"));
    }
    if !r.stage().has_request(participant) {
        return Err(AppError::new(ErrorCode::NotFound, "no such request waiting"));
    }
    if accept {
        let live = r.is_live();
        r.stage_mut().promote(participant, live).map_err(|e| match e.code {
            ErrorCode::StageFull => AppError { message: format!("{}; the request stays in the queue", e.message), ..e },
            _ => e,
        })?;
        r.refresh_member(participant);
        r.send_to(participant, ServerMsg::StageGranted { via: "request".into() });
        r.broadcast_all(ServerMsg::RoomUpdate { room: r.info() });
        tracing::info!(room = %r.name, %participant, by = %ctx.claims.identity, "stage request accepted");
    } else {
        r.stage_mut().cancel_request(participant);
        r.send_to(participant, ServerMsg::StageRequest { state: "declined".into(), position: None });
    }
    r.send_stage_queue();
    Ok(())
}

/// `invite_to_stage`: the host invites a viewer (or moderator) in the room.
pub fn invite(ctx: &Ctx<'_>, participant: ParticipantId) -> Result<ServerMsg, AppError> {
    let mut r = lock(ctx.room);
    let me = r.member(ctx.id).ok_or_else(not_in_room)?.clone();
    if me.role != Role::Host {
        return Err(AppError::new(ErrorCode::NotAllowed, "only the host invites on stage"));
    }
    if !r.is_live() {
        return Err(AppError::new(ErrorCode::RoomNotLive, "go live before inviting"));
    }
    let target = r.member(participant).ok_or_else(|| AppError::new(ErrorCode::NotFound, "no such participant"))?.clone();
    if target.kind == ParticipantKind::Studio {
        return Err(AppError::new(ErrorCode::NotAllowed, "studio feeds go on stage with their stream key"));
    }
    if r.stage_mut().invite(participant, target.role)? {
        r.send_to(participant, ServerMsg::StageInvite { from: me });
    }
    Ok(ServerMsg::StageInviteState { participant, state: "sent".into() })
}

/// `answer_stage_invite`: the invited viewer accepts (a seat and the co-host role at once) or
/// declines; the host hears which.
pub fn answer_invite(ctx: &Ctx<'_>, accept: bool) -> Result<(), AppError> {
    let mut r = lock(ctx.room);
    if !r.stage_mut().take_invite(ctx.id) {
        return Err(AppError::new(ErrorCode::NotFound, "you have no invitation"));
    }
    let state = if accept {
        let live = r.is_live();
        if let Err(e) = r.stage_mut().promote(ctx.id, live) {
            r.send_to_role(Role::Host, ServerMsg::StageInviteState { participant: ctx.id, state: "failed".into() });
            return Err(e);
        }
        r.refresh_member(ctx.id);
        r.send_to(ctx.id, ServerMsg::StageGranted { via: "invite".into() });
        r.broadcast_all(ServerMsg::RoomUpdate { room: r.info() });
        r.send_stage_queue();
        "accepted"
    } else {
        "declined"
    };
    r.send_to_role(Role::Host, ServerMsg::StageInviteState { participant: ctx.id, state: state.into() });
    Ok(())
}

/// Off stage: seat freed, role back to viewer, tracks ended (the SFU closes the publisher
/// connection; the room hears `track_unpublished` as for any unpublish).
fn off_stage(ctx: &Ctx<'_>, participant: ParticipantId, by_host: bool) -> Result<(), AppError> {
    {
        let mut r = lock(ctx.room);
        if !r.stage_mut().demote(participant) {
            return Err(AppError::new(ErrorCode::NotFound, "not on stage"));
        }
        r.refresh_member(participant);
        r.send_to(participant, ServerMsg::RemovedFromStage { by_host });
        r.broadcast_all(ServerMsg::RoomUpdate { room: r.info() });
    }
    if let Err(e) = ctx.app.sfu.stop_publishing(participant) {
        tracing::warn!(%participant, "stop publishing: {e}");
    }
    Ok(())
}

/// `remove_from_stage`: the host takes a co-host or a studio feed off stage.
pub fn remove(ctx: &Ctx<'_>, participant: ParticipantId) -> Result<(), AppError> {
    let target = {
        let r = lock(ctx.room);
        if r.role_of(ctx.id) != Some(Role::Host) {
            return Err(AppError::new(ErrorCode::NotAllowed, "only the host takes people off stage"));
        }
        r.member(participant).cloned().ok_or_else(|| AppError::new(ErrorCode::NotFound, "no such participant"))?
    };
    if participant == ctx.id || target.role == Role::Host {
        return Err(AppError::new(ErrorCode::NotAllowed, "the host leaves the stage by ending the live"));
    }
    if target.kind == ParticipantKind::Studio {
        return if crate::live::studio::end_participant(ctx.app, participant) {
            Ok(())
        } else {
            Err(AppError::new(ErrorCode::NotFound, "not on stage"))
        };
    }
    tracing::info!(room = %ctx.claims.room, %participant, "taken off stage by the host");
    off_stage(ctx, participant, true)
}

/// `step_down`: a co-host leaves the stage and keeps watching.
pub fn step_down(ctx: &Ctx<'_>) -> Result<(), AppError> {
    if lock(ctx.room).role_of(ctx.id) == Some(Role::Host) {
        return Err(AppError::new(ErrorCode::NotAllowed, "the host leaves the stage by ending the live"));
    }
    off_stage(ctx, ctx.id, false)
}

/// `stage_settings`: the host lets moderators answer requests, or not.
pub fn settings(ctx: &Ctx<'_>, moderators_manage: bool) -> Result<(), AppError> {
    let mut r = lock(ctx.room);
    if r.role_of(ctx.id) != Some(Role::Host) {
        return Err(AppError::new(ErrorCode::NotAllowed, "only the host changes who answers stage requests"));
    }
    r.stage_mut().moderators_manage = moderators_manage;
    r.send_stage_queue_to_staff();
    Ok(())
}
