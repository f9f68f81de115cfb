//! The dispatcher: one client message to the feature handler that answers it. Nothing else
//! happens here; limits and framing were applied before (`transport`), and replies are sent by
//! the connection.

use crate::error::{AppError, ErrorCode};
use crate::live::ctx::Ctx;
use crate::live::{chat, commerce, controls, invitations, media, qoe, stats, studio};
use crate::protocol::{ClientMsg, ServerMsg};

/// What the connection does after a message was handled.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing to send (a broadcast may follow through the room).
    Done,
    /// Send this to the client (boxed: replies are rare next to `Done`, and `ServerMsg` is large).
    Reply(Box<ServerMsg>),
    /// The client leaves (`leave`).
    Leave,
}

fn done(_: ()) -> Outcome {
    Outcome::Done
}

fn reply(msg: ServerMsg) -> Outcome {
    Outcome::Reply(Box::new(msg))
}

/// Handle one message of a joined participant. An `Err` is a refusal the client is told about;
/// the connection stays.
pub async fn dispatch(ctx: &Ctx<'_>, msg: ClientMsg) -> Result<Outcome, AppError> {
    match msg {
        ClientMsg::Join { .. } => Err(AppError::new(ErrorCode::AlreadyJoined, "already joined")),
        ClientMsg::Publish { sdp } => media::publish(ctx, sdp).await.map(reply),
        ClientMsg::Answer { sdp } => media::answer(ctx, sdp).await.map(done),
        ClientMsg::IceRestart => media::ice_restart(ctx).await.map(done),
        ClientMsg::Candidate { target, candidate } => media::candidate(ctx, target, candidate).await.map(done),
        ClientMsg::VideoSize { track, width: _, height } => media::video_size(ctx, track, height).map(done),
        ClientMsg::Quality { track, quality } => media::quality(ctx, track, quality).map(done),
        ClientMsg::Mute { track, muted } => controls::mute(ctx, track, muted).map(done),
        ClientMsg::EndRoom => controls::end_room(ctx).map(done),
        ClientMsg::Leave => Ok(Outcome::Leave),
        ClientMsg::Ping { ts } => Ok(reply(ServerMsg::Pong { ts })),
        ClientMsg::GetStats => stats::subscriber(ctx).await.map(reply),
        ClientMsg::CreateStreamKey { label, seat } => studio::keys::create(ctx, label, seat).await.map(reply),
        ClientMsg::ListStreamKeys => studio::keys::list(ctx).await.map(reply),
        ClientMsg::RevokeStreamKey { id } => studio::keys::revoke(ctx, id).await.map(reply),
        ClientMsg::Comment { text } => chat::comment(ctx, text).await.map(done),
        ClientMsg::DeleteComment { id } => chat::delete(ctx, id).await.map(done),
        ClientMsg::React { emoji } => chat::react(ctx, &emoji).map(done),
        ClientMsg::Moderate { action, identity, minutes, reason } => chat::moderate(ctx, action, identity, minutes, reason).await.map(done),
        ClientMsg::ChatSettings { comments_enabled, slow_mode_secs } => {
            chat::settings(ctx, comments_enabled, slow_mode_secs).await.map(done)
        }
        ClientMsg::GetBlockedWords => chat::blocked_words(ctx).map(reply),
        ClientMsg::SetBlockedWords { words } => chat::set_blocked_words(ctx, words).await.map(reply),
        ClientMsg::Report { comment, reason } => chat::report(ctx, comment, reason).await.map(reply),
        ClientMsg::GetReports => chat::reports(ctx).await.map(reply),
        ClientMsg::ResolveReport { id, action } => chat::resolve_report(ctx, id, action).await.map(done),
        ClientMsg::GetAuditLog => chat::audit_log(ctx).await.map(reply),
        ClientMsg::GetModerationState => chat::moderation_state(ctx).map(reply),
        ClientMsg::RequestStage => invitations::request(ctx).map(done),
        ClientMsg::CancelStageRequest => invitations::cancel(ctx).map(reply),
        ClientMsg::AnswerStageRequest { participant, accept } => invitations::answer_request(ctx, participant, accept).map(done),
        ClientMsg::InviteToStage { participant } => invitations::invite(ctx, participant).map(reply),
        ClientMsg::AnswerStageInvite { accept } => invitations::answer_invite(ctx, accept).map(done),
        ClientMsg::RemoveFromStage { participant } => invitations::remove(ctx, participant).map(done),
        ClientMsg::StepDown => invitations::step_down(ctx).map(done),
        ClientMsg::StageSettings { moderators_manage } => invitations::settings(ctx, moderators_manage).map(done),
        ClientMsg::PinProduct { product } => commerce::pin(ctx, product).await.map(done),
        ClientMsg::UnpinProduct => commerce::unpin(ctx).await.map(done),
        ClientMsg::ProductClick { product } => commerce::click(ctx, &product).map(done),
        ClientMsg::GetSupporters => commerce::supporters(ctx).map(reply),
        ClientMsg::Qoe {
            client,
            first_frame_ms,
            frames_decoded,
            freezes,
            freeze_ms,
            recoveries_ms,
            layer,
            concealed_ms,
            connection_changes,
            watch_ms,
        } => {
            let report = qoe::QoeReport {
                first_frame_ms,
                frames_decoded,
                freezes,
                freeze_ms,
                recoveries_ms,
                layer,
                concealed_ms,
                connection_changes,
                watch_ms,
            };
            qoe::report(ctx, qoe::Client::parse(client.as_deref()), report).map(done)
        }
        ClientMsg::ReportProblem { tag, text, context } => qoe::problem(ctx, tag, text, context).await.map(reply),
    }
}
