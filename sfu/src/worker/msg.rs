//! What reaches a worker: the core's input (datagrams, media and control between workers) and
//! signaling's commands with the channel their answer goes back on.

use crate::api::{CodecInfo, EventSink, MediaKind, SubscriberStats, TrackInfo};
use crate::error::SfuError;
use crate::forward::selector::Quality;
use crate::ids::{ParticipantId, SessionKey, TrackId};
use crate::media::packet::MediaPacket;
use bytes::BytesMut;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// The core's input other than commands: everything that arrives from the network or from
/// another worker.
pub(crate) enum Input {
    Datagram {
        session: SessionKey,
        from: SocketAddr,
        data: BytesMut,
        at: Instant,
    },
    /// A packet of a track some local session subscribes to.
    Media(Arc<MediaPacket>),
    /// A worker gained its first (or lost its last) subscriber of a track published here.
    Interest {
        track: TrackId,
        worker: usize,
        add: bool,
    },
    /// Someone wants a keyframe of a track published here, on this layer.
    KeyframeRequest(TrackId, u8),
    /// A track is gone: drop local subscriptions to it.
    TrackGone(TrackId),
    /// The highest layer a worker's subscribers want of a track published here (dynacast);
    /// `None` when it has none left.
    LayerDemand {
        track: TrackId,
        worker: usize,
        layer: Option<u8>,
    },
    /// A packet of an ingest track (RTMP bridge) owned by a participant on this worker.
    Ingest(ParticipantId, MediaPacket),
    /// Hand every packet of a track published here to a recorder (`None`: stop).
    Tap(TrackId, Option<crate::record::Tap>),
    /// A cascade datagram of a leg this worker receives (edge).
    Relay {
        leg: u32,
        data: BytesMut,
        at: Instant,
    },
    /// A relay leg of a track published here starts, changes or stops (origin).
    RelayCtl(crate::worker::relays::RelayCtl),
}

impl Input {
    /// Media may be dropped under load (the receiver repairs it with NACK/PLI); everything else
    /// changes state that nothing would repair, so it travels on the queue that never drops.
    pub fn is_media(&self) -> bool {
        matches!(self, Input::Media(_) | Input::Ingest(..) | Input::Datagram { .. } | Input::Relay { .. })
    }
}

/// Control-plane requests from signaling.
pub(crate) enum Command {
    AddParticipant {
        participant: ParticipantId,
        /// A standard player (WHEP): its session comes from its own offer.
        player: bool,
    },
    Publish {
        participant: ParticipantId,
        offer: String,
    },
    Subscribe {
        participant: ParticipantId,
        tracks: Vec<TrackInfo>,
    },
    Unsubscribe {
        participant: ParticipantId,
        track: TrackId,
    },
    SubscriberAnswer {
        participant: ParticipantId,
        answer: String,
    },
    /// A WHEP player's offer; `stage` in stage order fills its slots.
    Watch {
        participant: ParticipantId,
        offer: String,
        stage: Vec<TrackInfo>,
    },
    /// The stage changed: a WHEP session's slots follow it.
    SetSlots {
        participant: ParticipantId,
        stage: Vec<TrackInfo>,
    },
    Candidate {
        key: SessionKey,
        candidate: RTCIceCandidateInit,
    },
    RemoveParticipant {
        participant: ParticipantId,
    },
    /// Close the participant's publisher session and ingest tracks (taken off stage); it stays
    /// a viewer.
    StopPublishing {
        participant: ParticipantId,
    },
    /// The viewer renders `track` this tall (device pixels; 0 = not shown).
    VideoSize {
        participant: ParticipantId,
        track: TrackId,
        height: u32,
    },
    /// The viewer's quality choice, for one track or all.
    Quality {
        participant: ParticipantId,
        track: Option<TrackId>,
        quality: Quality,
    },
    /// Whether the viewer falls back to audio only when its path cannot carry the lowest
    /// video layer (on by default).
    AudioOnlyFallback {
        participant: ParticipantId,
        enabled: bool,
    },
    Stats {
        participant: ParticipantId,
    },
    /// The client's network changed: restart ICE on its subscriber connection.
    RestartIce {
        participant: ParticipantId,
    },
    /// The participant's reader dropped events (its queue was full): send its state again.
    Resync {
        participant: ParticipantId,
    },
    /// Publish tracks fed by an in-process source (the RTMP bridge) instead of a peer session.
    OpenIngest {
        participant: ParticipantId,
        tracks: Vec<(MediaKind, CodecInfo)>,
    },
    /// Publish tracks relayed from another node (cascade edge).
    OpenRelay {
        participant: ParticipantId,
        tracks: Vec<crate::worker::relays::RelayTrack>,
    },
    /// One relayed track ends.
    CloseRelayTrack {
        participant: ParticipantId,
        track: TrackId,
    },
}

/// The core's answer to a command.
pub(crate) enum Answer {
    None,
    Sdp(Result<String, SfuError>),
    Done(Result<(), SfuError>),
    Stats(SubscriberStats),
    Tracks(Result<Vec<TrackInfo>, SfuError>),
}

type Reply<T> = oneshot::Sender<Result<T, SfuError>>;

/// Where a command's answer goes (the caller awaits it).
pub(crate) enum ReplyTo {
    Sdp(Reply<String>),
    Done(Reply<()>),
    Stats(Reply<SubscriberStats>),
    Tracks(Reply<Vec<TrackInfo>>),
}

impl ReplyTo {
    pub fn send(self, answer: Answer) {
        // A caller that gave up waiting dropped its receiver: nothing to tell.
        let _ = match (self, answer) {
            (ReplyTo::Sdp(tx), Answer::Sdp(r)) => tx.send(r).is_ok(),
            (ReplyTo::Done(tx), Answer::Done(r)) => tx.send(r).is_ok(),
            (ReplyTo::Stats(tx), Answer::Stats(s)) => tx.send(Ok(s)).is_ok(),
            (ReplyTo::Tracks(tx), Answer::Tracks(r)) => tx.send(r).is_ok(),
            // Each command has one answer shape (see `Core::command`); a mismatch is a bug
            // here, and the caller sees `Stopped` rather than waiting forever.
            (_, _) => {
                tracing::error!("a worker answered a command with the wrong shape");
                false
            }
        };
    }
}

/// Everything on a worker's queues.
pub(crate) enum WorkerMsg {
    Input(Input),
    Command(Command, Option<ReplyTo>),
    /// A participant arrives; its events go to this sink (kept by the thread, not the core).
    Join(ParticipantId, EventSink, bool),
    /// A participant already here continues on a new signaling connection: its events go to
    /// this sink from now on (a resumed session, `Sfu::attach`).
    Attach(ParticipantId, EventSink),
}
