//! Onair's media plane: a selective forwarding unit on webrtc-rs's sans-IO core (`rtc`).
//!
//! The folders follow the packet (docs/architecture.md §0 has the whole map):
//!
//! ```text
//!  UDP :7882 ──► net/recv: recv_from; net/demux: STUN USERNAME → session, then 5-tuple
//!            ──► the worker that owns the session: worker/mod.rs (thread: socket, queues,
//!                clock) drives worker/core.rs (sans-IO: (input, now) → outputs)
//!            ──► session/publisher: SRTP decrypt, RTCP, NACK generation (rtc, sans-IO);
//!                worker/pump: the packet becomes a media/packet::MediaPacket (keyframe,
//!                frame height, VP8 temporal layer read once)
//!            ──► worker/routing + worker/tables: one shared packet (Arc) per interested worker
//!            ──► forward/forwarder per subscriber track: wait for a keyframe, pick the layer
//!                (forward/selector, from the estimate of bwe/), rewrite SSRC / sequence number /
//!                timestamp / payload type (forward/munger)
//!            ──► session/subscriber: SRTP encrypt, NACK cache, SR, transport-wide numbers and
//!                the send history the estimate reads (bwe/twcc)
//!            ──► Outputs.transmit → one sendmmsg per call into the core (net/batch)
//! ```
//!
//! Feedback flows back the other way: a subscriber's PLI/FIR becomes a keyframe request to the
//! publisher's worker (worker/keyframes), which sends at most one PLI per layer per
//! [`SfuConfig::pli_throttle`]; its TWCC feedback feeds the estimate toward it (bwe/), which,
//! with the size the viewer renders at and its quality choice, sets the layers it gets
//! (forward/selector); what all viewers want sets what publishers send (worker/dynacast); its
//! NACKs pass a guard (session/feedback) before rtc's responder resends. A viewer whose estimate
//! cannot carry even the lowest layers gets audio only until probes show room again
//! (forward/fallback, [`SfuEvent::AudioOnly`]).
//!
//! Cascade (`relay`, `worker/relays`): a live's node (the origin) relays each track to the
//! other nodes that serve its viewers (edges) over sealed datagrams on this same port; on an
//! edge the relayed track is published again under the origin's id, and its viewers' keyframe
//! requests and layer demand come out as events for signaling to send back.
//!
//! Rules a caller must follow:
//! - The SFU knows nothing of WebSockets or tokens. Signaling drives it through [`Sfu`] (typed
//!   commands over bounded channels) and learns what happens through [`SfuEvent`]s on the sink it
//!   handed over for each participant.
//! - Sessions, forwarders, mungers and the worker core take `now: Instant` and touch no socket,
//!   channel or clock; only the worker thread (`worker::run`) and the receive thread do I/O.
//!   Nothing on the per-packet path takes a global lock.
//! - Nothing here panics on network input; a session whose input still makes a dependency panic
//!   is closed and the worker carries on.

/// The polling half of a `Protocol` for our interceptors: each keeps `reads` and `writes`
/// queues of `TaggedPacket`s and needs no timer.
#[macro_export]
#[doc(hidden)]
macro_rules! queued_polls {
    () => {
        fn poll_read(&mut self) -> Option<TaggedPacket> {
            self.reads.pop_front()
        }

        fn poll_write(&mut self) -> Option<TaggedPacket> {
            self.writes.pop_front()
        }

        fn handle_timeout(&mut self, _now: Instant) -> Result<(), Error> {
            Ok(())
        }

        fn poll_timeout(&mut self) -> Option<Instant> {
            None
        }
    };
}

mod api;
mod bwe;
mod config;
mod error;
mod forward;
mod handle;
mod ids;
pub mod ingest;
mod media;
pub mod metrics;
mod net;
pub mod record;
pub mod relay;
mod session;
mod worker;

/// Pieces a webrtc-rs client of Onair reuses (the test peers and the loadtest): a host
/// candidate for an address, the RTCP feedback interceptor that turns a decoder's keyframe needs into PLIs, the payload
/// inspection that tells keyframes and VP8 temporal layers apart, and the crypto provider that
/// tells a receiver the SRTP master keys of what it receives.
pub mod client {
    pub use crate::media::codec::{Vp8Temporal, vp8_is_keyframe, vp8_keyframe_size, vp8_temporal};
    pub use crate::session::feedback::{KEYFRAME_FEEDBACK_SLOT, KeyframeFeedback};
    pub use crate::session::srtp_keys::{KeyTap, MasterKeys};
    pub use crate::session::transport::host_candidate;
}

/// Internals for the forwarding benchmark only (`benches/forward.rs`); not an API.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::forward::forwarder::{Forwarder, Verdict};
    pub use crate::media::codec::Codec;
    pub use crate::net::batch::SendBatch;
    pub use crate::net::srtp::{RolloverCounter, RtpSealer, SealError};
    pub use crate::session::SessionFactory;
    pub use crate::session::srtp_keys::{KeyTap, SrtpKeys};
    pub use crate::session::subscriber::Subscriber;
}

/// What the fuzz targets drive (fuzz/, docs/fuzzing.md): the parsers of untrusted bytes and the
/// per-packet state that reads them. Not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::bwe::twcc::{SharedTwcc, TransportCc};
    pub use crate::bwe::{Bwe, SharedBwe};
    pub use crate::forward::forwarder::{Forwarder, Verdict};
    pub use crate::forward::munger::RtpMunger;
    pub use crate::media::codec::{Codec, h264_is_keyframe, vp8_is_keyframe, vp8_keyframe_size, vp8_temporal, vp9_is_keyframe};
    pub use crate::net::demux::{DemuxTable, Route, binding_request_ufrag, is_binding_success, is_nomination, is_stun};
    pub use crate::session::feedback::{KeyframeFeedback, NackGuard};
    pub use crate::session::publisher::Publisher;
    pub use crate::session::subscriber::with_msid_semantic;
}

pub use api::{
    CodecInfo, ConnState, Delivery, EventSink, Events, MediaKind, PathStats, SfuEvent, SfuStats, SubscriberStats, TrackInfo, TrackStats,
    event_channel,
};
pub use config::SfuConfig;
pub use error::SfuError;
pub use forward::fallback::FallbackPolicy;
pub use forward::selector::{LayerPolicy, Quality};
pub use handle::Sfu;
pub use ids::{ParticipantId, SessionKey, SessionRole, TrackId};
pub use media::packet::MediaPacket;
#[cfg(target_os = "linux")]
pub use net::batch::write_sockaddr;
/// The candidate type signaling passes through (re-exported so signaling needs no `rtc` dependency).
pub use rtc::peer_connection::transport::RTCIceCandidateInit;
pub use worker::relays::{RelayOut, RelayTrack};
