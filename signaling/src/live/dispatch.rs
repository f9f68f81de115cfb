//! The dispatcher: one client message to the feature handler that answers it. Nothing else
//! happens here; limits and framing were applied before (`transport`), and replies are sent by
//! the connection.

use crate::error::{AppError, ErrorCode};
use crate::live::ctx::Ctx;
use crate::live::{controls, media, stats, studio};
use crate::protocol::{ClientMsg, ServerMsg};

/// What the connection does after a message was handled.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing to send (a broadcast may follow through the room).
    Done,
    /// Send this to the client.
    Reply(ServerMsg),
    /// The client leaves (`leave`).
    Leave,
}

fn done(_: ()) -> Outcome {
    Outcome::Done
}

/// Handle one message of a joined participant. An `Err` is a refusal the client is told about;
/// the connection stays.
pub async fn dispatch(ctx: &Ctx<'_>, msg: ClientMsg) -> Result<Outcome, AppError> {
    match msg {
        ClientMsg::Join { .. } => Err(AppError::new(ErrorCode::AlreadyJoined, "already joined")),
        ClientMsg::Publish { sdp } => media::publish(ctx, sdp).await.map(Outcome::Reply),
        ClientMsg::Answer { sdp } => media::answer(ctx, sdp).await.map(done),
        ClientMsg::Candidate { target, candidate } => media::candidate(ctx, target, candidate).await.map(done),
        ClientMsg::VideoSize { track, width: _, height } => media::video_size(ctx, track, height).map(done),
        ClientMsg::Quality { track, quality } => media::quality(ctx, track, quality).map(done),
        ClientMsg::Mute { track, muted } => controls::mute(ctx, track, muted).map(done),
        ClientMsg::EndRoom => controls::end_room(ctx).map(done),
        ClientMsg::Leave => Ok(Outcome::Leave),
        ClientMsg::Ping { ts } => Ok(Outcome::Reply(ServerMsg::Pong { ts })),
        ClientMsg::GetStats => stats::subscriber(ctx).await.map(Outcome::Reply),
        ClientMsg::CreateStreamKey { label } => studio::keys::create(ctx, label).map(Outcome::Reply),
        ClientMsg::ListStreamKeys => studio::keys::list(ctx).map(Outcome::Reply),
        ClientMsg::RevokeStreamKey { id } => studio::keys::revoke(ctx, id).map(Outcome::Reply),
    }
}
