//! The stage: the seats of a room's publishers (at most `room.max_publishers`, ≤ 4). Plain
//! state, no I/O; the room (`live::room::Room`) holds one and broadcasts what changes.
//!
//! Rules, in the order they are checked (docs/protocol.md §6): only hosts and co-hosts take a
//! seat; a seated publisher keeps it (renegotiation); the room must be live; a seat must be free.
//!
//! The way onto the stage without a co-host token (docs/protocol.md §6.1): a viewer's request
//! waits in a queue until the host accepts or declines it; the host's invitation waits until the
//! viewer answers. Accepting either takes a seat at once and makes the participant a co-host
//! (`promoted`); the host can take anyone off stage, and a co-host can step down (`demoted`:
//! a co-host token then counts as a viewer's for this connection).

use crate::auth::Role;
use crate::error::{AppError, ErrorCode};
use sfu::ParticipantId;
use std::collections::BTreeSet;

/// Requests one queue holds.
pub const MAX_REQUESTS: usize = 100;

pub struct Stage {
    seats: BTreeSet<ParticipantId>,
    max: usize,
    requests: Vec<ParticipantId>,
    invites: BTreeSet<ParticipantId>,
    promoted: BTreeSet<ParticipantId>,
    demoted: BTreeSet<ParticipantId>,
    /// Moderators may answer requests too (the host decides).
    pub moderators_manage: bool,
}

fn full(max: usize) -> AppError {
    AppError::new(ErrorCode::StageFull, format!("the stage is full ({max} publishers)"))
}

impl Stage {
    pub fn new(max: usize) -> Self {
        Self {
            seats: BTreeSet::new(),
            max,
            requests: Vec::new(),
            invites: BTreeSet::new(),
            promoted: BTreeSet::new(),
            demoted: BTreeSet::new(),
            moderators_manage: false,
        }
    }

    /// The role `id` has on stage, given its role otherwise: accepted onto the stage → co-host;
    /// taken off it → a co-host token counts as a viewer's.
    pub fn role_for(&self, id: ParticipantId, role: Role) -> Role {
        if self.promoted.contains(&id) {
            Role::Cohost
        } else if self.demoted.contains(&id) && role == Role::Cohost {
            Role::Viewer
        } else {
            role
        }
    }

    /// Queue a request; its position (1 = next). Asking twice keeps the place.
    pub fn request(&mut self, id: ParticipantId, role: Role) -> Result<usize, AppError> {
        if role.may_publish() {
            return Err(AppError::new(ErrorCode::NotAllowed, "you can go on stage already"));
        }
        if let Some(at) = self.requests.iter().position(|r| *r == id) {
            return Ok(at + 1);
        }
        if self.requests.len() >= MAX_REQUESTS {
            return Err(AppError::new(ErrorCode::ServerBusy, "too many requests are waiting; try again later"));
        }
        self.requests.push(id);
        Ok(self.requests.len())
    }

    /// Withdraw (or drop) a request; true if there was one.
    pub fn cancel_request(&mut self, id: ParticipantId) -> bool {
        let before = self.requests.len();
        self.requests.retain(|r| *r != id);
        before != self.requests.len()
    }

    pub fn requests(&self) -> &[ParticipantId] {
        &self.requests
    }

    pub fn has_request(&self, id: ParticipantId) -> bool {
        self.requests.contains(&id)
    }

    /// Invite `id` (whose role is `role`); false if it already was.
    pub fn invite(&mut self, id: ParticipantId, role: Role) -> Result<bool, AppError> {
        if role.may_publish() {
            return Err(AppError::new(ErrorCode::NotAllowed, "they can go on stage already"));
        }
        Ok(self.invites.insert(id))
    }

    /// Whether `id` has an invitation it has not answered.
    pub fn is_invited(&self, id: ParticipantId) -> bool {
        self.invites.contains(&id)
    }

    /// Take `id`'s invitation away (answered or withdrawn); true if there was one.
    pub fn take_invite(&mut self, id: ParticipantId) -> bool {
        self.invites.remove(&id)
    }

    /// An accepted request or invitation: a seat now, and the co-host role. The stage must be
    /// live and have a free seat; otherwise nothing changes (the request stays queued).
    pub fn promote(&mut self, id: ParticipantId, live: bool) -> Result<(), AppError> {
        if !live {
            return Err(AppError::new(ErrorCode::RoomNotLive, "the host has not started the room yet"));
        }
        if self.seats.len() >= self.max {
            return Err(full(self.max));
        }
        self.seats.insert(id);
        self.promoted.insert(id);
        self.demoted.remove(&id);
        self.cancel_request(id);
        self.invites.remove(&id);
        Ok(())
    }

    /// Off stage (taken off, or stepped down): the seat is freed and the role is a viewer's
    /// again. False if `id` was neither seated nor promoted.
    pub fn demote(&mut self, id: ParticipantId) -> bool {
        let was = self.seats.remove(&id) | self.promoted.remove(&id);
        self.demoted.insert(id);
        was
    }

    /// A participant left: forget it everywhere.
    pub fn forget(&mut self, id: ParticipantId) -> bool {
        self.seats.remove(&id);
        self.promoted.remove(&id);
        self.demoted.remove(&id);
        self.invites.remove(&id);
        self.cancel_request(id)
    }

    /// The seated participants.
    pub fn seated(&self) -> impl Iterator<Item = ParticipantId> + '_ {
        self.seats.iter().copied()
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
            return Err(full(self.max));
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

    #[test]
    fn requests_invitations_and_the_way_off_stage() {
        let mut stage = Stage::new(2);
        let (host, v1, v2, v3) = (ParticipantId::next(), ParticipantId::next(), ParticipantId::next(), ParticipantId::next());
        stage.take(host, Role::Host, true).unwrap();
        assert_eq!(stage.request(host, Role::Host).unwrap_err().code, ErrorCode::NotAllowed);
        assert_eq!(stage.request(v1, Role::Viewer), Ok(1));
        assert_eq!(stage.request(v2, Role::Moderator), Ok(2));
        assert_eq!(stage.request(v1, Role::Viewer), Ok(1), "asking twice keeps the place");
        assert_eq!(stage.promote(v1, false).unwrap_err().code, ErrorCode::RoomNotLive);
        stage.promote(v1, true).unwrap();
        assert_eq!((stage.role_for(v1, Role::Viewer), stage.requests()), (Role::Cohost, &[v2][..]));
        assert_eq!(stage.promote(v2, true).unwrap_err().code, ErrorCode::StageFull);
        assert!(stage.has_request(v2), "a refused accept leaves the request queued");
        assert_eq!(stage.take(v1, Role::Cohost, true), Ok(false), "the promoted publish into the seat they hold");
        assert_eq!(stage.invite(v3, Role::Viewer), Ok(true));
        assert_eq!(stage.invite(v1, Role::Cohost).unwrap_err().code, ErrorCode::NotAllowed);
        assert!(stage.demote(v1));
        assert_eq!(stage.role_for(v1, Role::Viewer), Role::Viewer);
        assert_eq!(stage.role_for(v1, Role::Cohost), Role::Viewer, "a co-host token taken off stage counts as a viewer's");
        assert!(stage.take_invite(v3) && !stage.take_invite(v3));
        stage.promote(v2, true).unwrap();
        assert!(!stage.forget(ParticipantId::next()) && stage.is_seated(v2));
        for i in 0..MAX_REQUESTS - 1 {
            let _ = i;
            stage.request(ParticipantId::next(), Role::Viewer).unwrap();
        }
        stage.request(v3, Role::Viewer).unwrap();
        assert_eq!(stage.request(ParticipantId::next(), Role::Viewer).unwrap_err().code, ErrorCode::ServerBusy);
    }
}
