//! The types signaling sees: tracks and codecs, the events a participant's sink receives, and
//! the figures `stats` replies carry.

use crate::ids::{ParticipantId, SessionRole, TrackId};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

/// A published track's codec, as negotiated with its publisher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CodecInfo {
    pub mime_type: String,
    pub clock_rate: u32,
    pub channels: u16,
    pub fmtp: String,
}

/// A published track.
#[derive(Clone, Debug, Serialize)]
pub struct TrackInfo {
    pub id: TrackId,
    pub publisher: ParticipantId,
    pub kind: MediaKind,
    pub codec: CodecInfo,
}

/// Peer connection states signaling cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnState {
    Connected,
    Disconnected,
    Failed,
    Closed,
}

/// What the SFU tells signaling about one participant.
#[derive(Clone, Debug)]
pub enum SfuEvent {
    /// One of the participant's tracks started arriving.
    TrackPublished(TrackInfo),
    /// One of the participant's tracks is gone (session closed or track ended).
    TrackUnpublished(TrackId),
    /// A new offer for the participant's subscriber connection; send it to the client.
    SubscriberOffer(String),
    /// Our ICE candidate for one of the participant's connections (also inside the SDP).
    LocalCandidate(SessionRole, RTCIceCandidateInit),
    /// Connection state of one of the participant's sessions changed.
    Connection(SessionRole, ConnState),
    /// A session was closed by the SFU (ICE failure, timeout, bad input).
    SessionClosed(SessionRole, String),
    /// Dynacast: of this simulcast track the participant publishes, layers above this one are
    /// not wanted by anybody now; the client should pause them (and resume them when this rises).
    LayersWanted(TrackId, u8),
    /// To a viewer: its video is paused because its path cannot carry the lowest layer
    /// (`true`: audio only now), or resumed (`false`).
    AudioOnly(bool),
    /// Cascade edge, to the participant that opened relayed tracks: a keyframe of this layer
    /// of the relayed track is wanted (`u8::MAX`: of every layer); ask the origin.
    KeyframeWanted(TrackId, u8),
}

/// One subscribed track as the SFU forwards it (also the wire form in the `stats` message).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct TrackStats {
    pub track: TrackId,
    /// Layer being forwarded (0 = lowest); `None` before the first frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<u8>,
    /// The highest layer allowed now (quality choice, video size, bandwidth).
    pub max_layer: u8,
    /// The highest VP8 temporal layer allowed now (2 = full frame rate; lower only when the
    /// bandwidth is short and the publisher sends temporal layers).
    pub max_temporal: u8,
    /// This track's share of the viewer's bandwidth estimate (bits/s), once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_bps: Option<u64>,
    pub packets: u64,
    pub bytes: u64,
    /// Arrival rates of the publisher's layers (bits/s; nominal until measured).
    pub layer_bps: [u64; 3],
}

/// A subscriber's view of its subscriptions.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SubscriberStats {
    /// Send-side bandwidth estimate toward this viewer (bits/s), once feedback produced one.
    pub bandwidth_bps: Option<u64>,
    /// Transport-wide congestion control feedback packets the viewer has sent.
    pub twcc_feedback: u64,
    /// Its video is paused by the audio-only fallback (see [`SfuEvent::AudioOnly`]).
    pub audio_only: bool,
    /// What the estimator sees of the path toward this viewer.
    pub path: Option<PathStats>,
    pub tracks: Vec<TrackStats>,
}

/// The path toward a viewer, as the bandwidth estimator measures it from feedback.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct PathStats {
    /// Queueing delay above the smallest one-way delay seen (ms).
    pub queue_delay_ms: f64,
    /// Share of packets lost over the last half second.
    pub loss: f64,
    /// Probe clusters sent so far.
    pub probes: u64,
}

/// Where a participant's events go ([`event_channel`]). Workers never block on it.
///
/// The participant's own tracks coming and going ([`SfuEvent::TrackPublished`],
/// [`SfuEvent::TrackUnpublished`]) are never dropped: they go on an unbounded queue, whose
/// length is bounded by the tracks the participant publishes (each one an m-line of an offer
/// it sent). Every other event goes on a bounded queue; when that is full the event is dropped
/// and the sink is marked *lagged*, which the reader sees ([`Events::take_lag`]) and answers by
/// asking for the participant's state again ([`crate::Sfu::resync`]).
#[derive(Clone, Debug)]
pub struct EventSink {
    events: mpsc::Sender<SfuEvent>,
    tracks: mpsc::UnboundedSender<SfuEvent>,
    lagged: Arc<AtomicBool>,
}

/// The reading end of an [`EventSink`].
#[derive(Debug)]
pub struct Events {
    events: mpsc::Receiver<SfuEvent>,
    tracks: mpsc::UnboundedReceiver<SfuEvent>,
    lagged: Arc<AtomicBool>,
}

/// A participant's event queue: `capacity` events besides its track announcements.
pub fn event_channel(capacity: usize) -> (EventSink, Events) {
    let (etx, erx) = mpsc::channel(capacity.max(1));
    let (ttx, trx) = mpsc::unbounded_channel();
    let lagged = Arc::new(AtomicBool::new(false));
    (EventSink { events: etx, tracks: ttx, lagged: lagged.clone() }, Events { events: erx, tracks: trx, lagged })
}

/// What became of one delivered event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// The queue was full: dropped, and the sink is lagged now.
    Dropped,
    /// The reader is gone.
    Closed,
}

impl EventSink {
    /// Queue `event` without waiting. While the sink is lagged, events other than track
    /// announcements are dropped: the resync that follows carries the state they would have.
    pub fn deliver(&self, event: SfuEvent) -> Delivery {
        if matches!(event, SfuEvent::TrackPublished(_) | SfuEvent::TrackUnpublished(_)) {
            return if self.tracks.send(event).is_ok() { Delivery::Queued } else { Delivery::Closed };
        }
        if self.lagged.load(Ordering::Acquire) {
            return Delivery::Dropped;
        }
        match self.events.try_send(event) {
            Ok(()) => Delivery::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagged.store(true, Ordering::Release);
                Delivery::Dropped
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Closed,
        }
    }
}

impl Events {
    /// The next event: track announcements first. `None` once every sink is gone.
    pub async fn recv(&mut self) -> Option<SfuEvent> {
        tokio::select! {
            biased;
            Some(ev) = self.tracks.recv() => Some(ev),
            ev = self.events.recv() => ev,
        }
    }

    /// Whether events were dropped since the last call (and clear the mark). Call it with the
    /// queue drained, then ask for the state again: what arrives after the call is newer.
    pub fn take_lag(&self) -> bool {
        self.lagged.swap(false, Ordering::AcqRel)
    }
}

/// Counters for operators and tests.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SfuStats {
    pub participants: usize,
    pub sessions: usize,
    pub tracks: usize,
    pub demux_sessions: usize,
    pub demux_addresses: usize,
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_dropped: u64,
    pub rtp_in: u64,
    pub rtp_out: u64,
    pub bytes_out: u64,
    pub keyframe_requests: u64,
    /// Video streams a viewer started from a kept picture instead of a keyframe request.
    pub keyframe_replays: u64,
    pub plis_sent: u64,
    pub session_errors: u64,
    /// NACKed packets viewers asked for, and those resent.
    pub nacked: u64,
    pub retransmitted: u64,
    pub firs_received: u64,
    pub layer_switches: u64,
    /// Arrival to hand-off to the socket, per forwarded packet.
    pub forwarding_delay: crate::metrics::DelaySnapshot,
}
