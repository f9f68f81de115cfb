//! One worker's routing tables: the tracks published here (who wants them on which worker, and
//! the dynacast demand), and the local subscribers of every track. Pure data, owned by the
//! worker, so the per-packet path consults it without a lock.

use crate::forward::gop::GopCache;
use crate::ids::{ParticipantId, TrackId};
use std::time::Instant;

/// A track published by a session on this worker.
#[derive(Debug)]
pub(crate) struct Published {
    pub publisher: ParticipantId,
    /// Reference count of local subscribers per worker index.
    pub interested: Vec<u32>,
    /// Dynacast: the highest layer each worker's subscribers want (`None`: none there).
    pub demand: Vec<Option<u8>>,
    /// The wanted layer last told to the publisher, and since when demand has been lower.
    pub announced: Option<u8>,
    pub lower_since: Option<Instant>,
    /// A recorder's tap: every packet of the track, every layer (`Sfu::tap`).
    pub tap: Option<crate::record::Tap>,
    /// Cascade legs toward edge nodes (`Sfu::relay_to`).
    pub relays: Vec<crate::worker::relays::RelayOut>,
}

impl Published {
    pub fn new(publisher: ParticipantId, workers: usize) -> Self {
        Self {
            publisher,
            interested: vec![0; workers],
            demand: vec![None; workers],
            announced: None,
            lower_since: None,
            tap: None,
            relays: Vec::new(),
        }
    }

    /// The highest layer anyone wants; the lowest layer always stays on, so a new viewer
    /// starts at once. A recorder wants them all (it records the best one); a relay leg wants
    /// what its edge's viewers want.
    pub fn wanted(&self) -> u8 {
        if self.tap.is_some() {
            return u8::MAX;
        }
        let relayed = self.relays.iter().map(|r| r.max_layer);
        self.demand.iter().flatten().copied().chain(relayed).max().unwrap_or(0)
    }
}

#[derive(Default)]
pub(crate) struct Router {
    pub published: crate::ids::IdMap<TrackId, Published>,
    /// Subscribers on this worker, per track.
    pub subscribers: crate::ids::IdMap<TrackId, Vec<ParticipantId>>,
    /// Each video track's picture so far, per layer, while it has subscribers here
    /// ([`GopCache`]).
    pub gops: crate::ids::IdMap<TrackId, GopCache>,
}

impl Router {
    /// Add a local subscriber; true if it is the first one on this worker for the track.
    pub fn add_subscriber(&mut self, track: TrackId, p: ParticipantId) -> bool {
        let list = self.subscribers.entry(track).or_default();
        if list.contains(&p) {
            return false;
        }
        list.push(p);
        list.len() == 1
    }

    /// Remove a local subscriber; true if it was the last one on this worker for the track.
    pub fn remove_subscriber(&mut self, track: TrackId, p: ParticipantId) -> bool {
        let Some(list) = self.subscribers.get_mut(&track) else { return false };
        let before = list.len();
        list.retain(|x| *x != p);
        if list.is_empty() {
            self.subscribers.remove(&track);
            self.gops.remove(&track);
            return before > 0;
        }
        false
    }

    pub fn set_interest(&mut self, track: TrackId, worker: usize, add: bool) {
        if let Some(p) = self.published.get_mut(&track)
            && let Some(count) = p.interested.get_mut(worker)
        {
            *count = if add { count.saturating_add(1) } else { count.saturating_sub(1) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_subscriber_are_reported() {
        let mut r = Router::default();
        let t = TrackId(1);
        assert!(r.add_subscriber(t, ParticipantId(1)));
        assert!(!r.add_subscriber(t, ParticipantId(2)));
        assert!(!r.add_subscriber(t, ParticipantId(2)));
        assert!(!r.remove_subscriber(t, ParticipantId(1)));
        assert!(r.remove_subscriber(t, ParticipantId(2)));
        assert!(!r.remove_subscriber(t, ParticipantId(2)));
        assert!(r.subscribers.is_empty());
    }
}
