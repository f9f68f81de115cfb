//! What every worker core and the handle share, without I/O: configuration, the session
//! factory, which worker owns which track, and the counters.

use crate::config::SfuConfig;
use crate::ids::TrackId;
use crate::session::SessionFactory;
use dashmap::DashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};

pub(crate) struct Plane {
    pub config: SfuConfig,
    pub factory: SessionFactory,
    /// The address advertised in candidates (and the local address rtc sees).
    pub local_addr: SocketAddr,
    /// How many workers there are.
    pub workers: usize,
    /// The worker that owns each published track (its publisher's worker).
    pub tracks: DashMap<TrackId, usize>,
    pub counters: Counters,
    /// Each worker's forwarding-delay histogram (a worker writes only its own).
    pub delays: std::sync::Mutex<Vec<std::sync::Arc<crate::metrics::DelayHistogram>>>,
}

impl Plane {
    /// The worker that owns `track`, if it is still published.
    pub fn owner(&self, track: TrackId) -> Option<usize> {
        self.tracks.get(&track).map(|w| *w)
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub participants: AtomicUsize,
    pub sessions: AtomicUsize,
    pub tracks: AtomicUsize,
    pub demux_sessions: AtomicUsize,
    pub demux_addresses: AtomicUsize,
    pub datagrams_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub datagrams_dropped: AtomicU64,
    pub rtp_in: AtomicU64,
    pub rtp_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub keyframe_replays: AtomicU64,
    pub plis_sent: AtomicU64,
    pub session_errors: AtomicU64,
}
