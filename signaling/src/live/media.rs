//! A participant's two peer connections (docs/protocol.md §5): `publish` takes a seat on stage
//! and hands the offer to the SFU; `answer` and `candidate` complete negotiation; `video_size`
//! and `quality` steer the layers a viewer gets. The SFU does the work; this checks and relays.

use super::room::lock;
use crate::error::{AppError, ErrorCode};
use crate::live::ctx::Ctx;
use crate::protocol::{Candidate, ServerMsg, Target};
use sfu::TrackId;

/// Longest candidate string accepted.
const MAX_CANDIDATE_BYTES: usize = 1024;
/// Tallest video size a client may report (device pixels).
const MAX_VIDEO_HEIGHT: u32 = 16_384;

/// `publish`: take (or keep) a seat, then apply the offer; the reply is the SFU's answer.
#[tracing::instrument(name = "publish", level = "info", skip_all, fields(room = %ctx.claims.room, participant = %ctx.id), err(level = "info"))]
pub async fn publish(ctx: &Ctx<'_>, sdp: String) -> Result<ServerMsg, AppError> {
    let newly_seated = lock(ctx.room).reserve_seat(ctx.id)?;
    match ctx.app.sfu.publish(ctx.id, sdp).await {
        Ok(answer) => Ok(ServerMsg::Answer { sdp: answer }),
        Err(e) => {
            // A failed renegotiation keeps the seat of a publisher already on stage.
            if newly_seated {
                lock(ctx.room).release_seat(ctx.id);
            }
            Err(e.into())
        }
    }
}

/// `answer`: the client's answer to the server's latest subscriber offer.
#[tracing::instrument(name = "negotiate.answer", level = "info", skip_all, fields(room = %ctx.claims.room, participant = %ctx.id), err(level = "info"))]
pub async fn answer(ctx: &Ctx<'_>, sdp: String) -> Result<(), AppError> {
    Ok(ctx.app.sfu.subscriber_answer(ctx.id, sdp).await?)
}

/// `ice_restart`: the client's network changed; its subscriber connection gets an offer with new
/// ICE credentials. A participant with no subscriber connection gets `not_found`.
pub async fn ice_restart(ctx: &Ctx<'_>) -> Result<(), AppError> {
    Ok(ctx.app.sfu.restart_ice(ctx.id).await?)
}

/// `candidate`: a trickled ICE candidate for one of the client's connections.
pub async fn candidate(ctx: &Ctx<'_>, target: Target, candidate: Candidate) -> Result<(), AppError> {
    Ok(ctx.app.sfu.add_candidate(ctx.id, target.into(), candidate_init(candidate)?).await?)
}

/// A client's candidate as the SFU takes it (refused when too long).
pub fn candidate_init(candidate: Candidate) -> Result<sfu::RTCIceCandidateInit, AppError> {
    if candidate.candidate.len() > MAX_CANDIDATE_BYTES {
        return Err(AppError::new(ErrorCode::BadCandidate, "candidate too long"));
    }
    Ok(sfu::RTCIceCandidateInit {
        candidate: candidate.candidate,
        sdp_mid: candidate.sdp_mid,
        sdp_mline_index: candidate.sdp_m_line_index,
        username_fragment: candidate.username_fragment,
        ..Default::default()
    })
}

/// `video_size`: how tall a subscribed video is drawn.
pub fn video_size(ctx: &Ctx<'_>, track: TrackId, height: u32) -> Result<(), AppError> {
    Ok(ctx.app.sfu.set_video_size(ctx.id, track, clamp_height(height))?)
}

/// A reported video height, within what a screen can have.
pub fn clamp_height(height: u32) -> u32 {
    height.min(MAX_VIDEO_HEIGHT)
}

/// `quality`: the viewer's choice for one subscribed track, or all.
pub fn quality(ctx: &Ctx<'_>, track: Option<TrackId>, quality: sfu::Quality) -> Result<(), AppError> {
    Ok(ctx.app.sfu.set_quality(ctx.id, track, quality)?)
}
