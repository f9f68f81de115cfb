//! The room's controls: `mute` (a participant's own track) and `end_room` (the host).

use crate::error::AppError;
use crate::live::ctx::Ctx;
use crate::live::room::lock;
use sfu::TrackId;

/// `mute`: set the flag of one of your own tracks; the room hears of a change.
pub fn mute(ctx: &Ctx<'_>, track: TrackId, muted: bool) -> Result<(), AppError> {
    lock(ctx.room).set_muted(ctx.id, track, muted)
}

/// `end_room`: the host ends the room; the `room_ended` broadcast closes every connection.
pub fn end_room(ctx: &Ctx<'_>) -> Result<(), AppError> {
    lock(ctx.room).end(Some(ctx.id), "the host ended the live")?;
    tracing::info!(room = %ctx.claims.room, "room ended by host");
    Ok(())
}
