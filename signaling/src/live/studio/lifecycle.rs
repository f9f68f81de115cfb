//! A feed's life beside its connection: the SFU's events for it, the room's word to it, and its
//! end (tracks, seat, membership).

use crate::app::AppState;
use crate::live::join;
use crate::live::room::{OutboxReader, Room, lock};
use crate::live::studio::feeds::{Feed, plock};
use crate::protocol::{ServerMsg, StudioState};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Remove a feed: its tracks, its seat, its room membership.
pub(super) fn end_feed(app: &AppState, feed: &Arc<Feed>, reason: &str) {
    let removed = {
        let mut feeds = plock(&app.studio.feeds);
        match feeds.get(&feed.key_id) {
            Some(f) if Arc::ptr_eq(f, feed) => feeds.remove(&feed.key_id).is_some(),
            _ => false,
        }
    };
    if !removed {
        return;
    }
    tracing::info!(room = %feed.room_name, participant = %feed.participant, %reason, "studio feed ended");
    feed.generation.fetch_add(1, Ordering::SeqCst);
    feed.kick.notify_waiters();
    let ended = ServerMsg::StudioState { participant: feed.participant, state: StudioState::Ended, reason: Some(reason.into()) };
    lock(&feed.room).broadcast_all(ended);
    join::leave(app, feed.participant, &feed.room, reason);
}

/// The SFU's events for a feed's participant: only its own tracks matter.
pub(super) async fn feed_events(app: AppState, room: Arc<Mutex<Room>>, mut rx: sfu::Events) {
    while let Some(ev) = rx.recv().await {
        let _ = join::on_track_event(&app, &room, ev);
    }
}

/// What the room sends the feed's "member": only the end of the room or a revocation matters.
pub(super) async fn feed_outbox(app: AppState, feed: Arc<Feed>, mut rx: OutboxReader) {
    while let Some(out) = rx.recv().await {
        if let ServerMsg::RoomEnded { reason } = &*out.msg {
            end_feed(&app, &feed, reason);
            return;
        }
        if rx.needs_resync() {
            // Messages were dropped (a burst beyond the queue): one of them may have been the
            // end. The room says whether it ended; the snapshot itself is of no use to a feed.
            let ended = {
                let r = lock(&feed.room);
                let _ = r.resync(feed.participant, &rx);
                (r.state() == crate::protocol::RoomState::Ended).then(|| "the room ended".to_owned())
            };
            if let Some(reason) = ended {
                end_feed(&app, &feed, &reason);
                return;
            }
        }
    }
}
