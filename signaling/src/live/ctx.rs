//! Who is asking: what every feature handler gets.

use crate::app::AppState;
use crate::auth::Claims;
use crate::live::room::Room;
use sfu::ParticipantId;
use std::sync::Mutex;

pub struct Ctx<'a> {
    pub app: &'a AppState,
    pub id: ParticipantId,
    pub room: &'a Mutex<Room>,
    pub claims: &'a Claims,
}
