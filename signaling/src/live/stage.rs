//! The stage: the seats of a room's publishers (at most `room.max_publishers`, ≤ 4). Plain
//! state, no I/O; the room (`live::room::Room`) holds one and broadcasts what changes.
//!
//! Rules, in the order they are checked (docs/protocol.md §6): only hosts and co-hosts take a
//! seat; a seated publisher keeps it (renegotiation); the room must be live; a seat must be free.

use crate::auth::Role;
use crate::error::{AppError, ErrorCode};
use sfu::ParticipantId;
use std::collections::BTreeSet;

pub struct Stage {
    seats: BTreeSet<ParticipantId>,
    max: usize,
}

impl Stage {
    pub fn new(max: usize) -> Self {
        Self { seats: BTreeSet::new(), max }
    }

    /// Seats taken.
    pub fn len(&self) -> usize {
        self.seats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seats.is_empty()
    }

    /// Seats in all.
    pub fn max(&self) -> usize {
        self.max
    }

    pub fn is_seated(&self, id: ParticipantId) -> bool {
        self.seats.contains(&id)
    }

    /// Take (or keep) a seat for `id`, whose role is `role`, in a room that is `live` or not.
    /// True if the seat is newly taken.
    pub fn take(&mut self, id: ParticipantId, role: Role, live: bool) -> Result<bool, AppError> {
        if !role.may_publish() {
            return Err(AppError::new(ErrorCode::NotAllowed, "viewers and moderators cannot publish; ask the host to invite you on stage"));
        }
        if self.seats.contains(&id) {
            return Ok(false);
        }
        if !live {
            return Err(AppError::new(ErrorCode::RoomNotLive, "the host has not started the room yet"));
        }
        if self.seats.len() >= self.max {
            return Err(AppError::new(ErrorCode::StageFull, format!("the stage is full ({} publishers)", self.max)));
        }
        self.seats.insert(id);
        Ok(true)
    }

    /// Give `id`'s seat back; true if it had one.
    pub fn release(&mut self, id: ParticipantId) -> bool {
        self.seats.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_follow_the_rules_in_order() {
        let mut stage = Stage::new(2);
        let (a, b, c) = (ParticipantId::next(), ParticipantId::next(), ParticipantId::next());
        // Role first: a viewer is refused even in a room that is not live.
        assert_eq!(stage.take(a, Role::Viewer, false).unwrap_err().code, ErrorCode::NotAllowed);
        assert_eq!(stage.take(a, Role::Moderator, true).unwrap_err().code, ErrorCode::NotAllowed);
        assert_eq!(stage.take(a, Role::Cohost, false).unwrap_err().code, ErrorCode::RoomNotLive);
        assert_eq!(stage.take(a, Role::Cohost, true), Ok(true));
        assert_eq!(stage.take(a, Role::Cohost, true), Ok(false), "renegotiation keeps the seat");
        assert_eq!(stage.take(b, Role::Host, true), Ok(true));
        let full = stage.take(c, Role::Cohost, true).unwrap_err();
        assert_eq!((full.code, full.message.as_str()), (ErrorCode::StageFull, "the stage is full (2 publishers)"));
        assert_eq!(stage.take(a, Role::Cohost, false), Ok(false), "a seated publisher is not checked again");
        assert!(stage.release(a));
        assert!(!stage.release(a));
        assert_eq!(stage.take(c, Role::Cohost, true), Ok(true), "the freed seat is taken");
        assert_eq!((stage.len(), stage.max()), (2, 2));
        assert!(stage.is_seated(c) && !stage.is_seated(a));
    }
}
