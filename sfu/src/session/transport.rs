//! The transport half of a session: one ICE-lite `rtc::RTCPeerConnection` on the shared port,
//! its ICE credentials and candidate, which client path media follows, and our liveness view.

use crate::error::SfuError;
use crate::ids::SessionKey;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit};
use std::net::SocketAddr;
use std::time::Instant;

pub struct Transport {
    pub key: SessionKey,
    pub pc: RTCPeerConnection,
    pub ufrag: String,
    pub local_candidate: RTCIceCandidateInit,
    pub(super) candidate_added: bool,
    pub connected: bool,
    /// Connected once (DTLS done): from then on liveness is ours to judge (see the worker).
    pub ever_connected: bool,
    /// When the peer last sent us anything (STUN, DTLS, SRTP, SRTCP).
    pub last_rx: Instant,
    /// The path the client uses now: it may nominate another of its addresses after the first
    /// (Chrome moves between interfaces), and rtc keeps its first choice, so media follows the
    /// latest nominated address whose check rtc answered.
    pub remote: Option<SocketAddr>,
    /// When anything last came from `remote`.
    pub remote_rx: Instant,
    /// An address whose binding request rtc is answering: media moves there on the success
    /// response (a nomination, or a rebinding: see [`Transport::heard`]).
    pub nominating: Option<SocketAddr>,
    /// The rtc deadline currently armed for this session in the worker's timers.
    pub deadline: Option<Instant>,
}

/// The one host candidate of `addr` (UDP), as a peer connection takes it. The SFU advertises
/// its port with it; test peers and the loadtest use it for their own address.
pub fn host_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit, String> {
    CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .and_then(|c| RTCIceCandidate::from(&c).to_json())
    .map_err(|e| e.to_string())
}

/// A refused description, as the client hears of it.
pub(super) fn sdp_err(e: impl std::fmt::Display) -> SfuError {
    SfuError::BadSdp(e.to_string())
}

/// How long the current path must have been silent before a binding request from another
/// address of the client takes the media (its NAT rebound, or it moved to another network and
/// kept its ICE credentials). A live path is rarely this quiet (a publisher sends media, a viewer
/// transport-wide feedback every 100 ms or so); and only a check rtc answers moves the media, so
/// a stranger cannot pull it away.
pub const REBIND_SILENCE: std::time::Duration = std::time::Duration::from_millis(500);

impl Transport {
    /// A datagram came from `from` at `at`. A nomination (USE-CANDIDATE) moves the media to its
    /// address once rtc answers it; so does a plain binding request from another address when
    /// the current path has been silent for [`REBIND_SILENCE`] — a client that changed address
    /// without an ICE restart (a rebinding NAT, or a test relay moving its port) is followed
    /// within its next consent check.
    pub fn heard(&mut self, from: SocketAddr, data: &[u8], at: Instant) {
        self.last_rx = at;
        if self.remote == Some(from) {
            self.remote_rx = at;
        }
        if crate::net::demux::is_nomination(data) {
            self.nominating = Some(from);
        } else if self.remote.is_some_and(|r| r != from)
            && at.saturating_duration_since(self.remote_rx) >= REBIND_SILENCE
            && crate::net::demux::binding_request_ufrag(data).is_some()
        {
            tracing::debug!(key = ?self.key, path = %from, "the current path is silent; a check from another address");
            self.nominating = Some(from);
        }
    }

    /// Where an outgoing datagram goes: STUN answers go where rtc says (to the requester);
    /// media and DTLS follow the client's latest nominated path.
    pub fn destination(&mut self, rtc_addr: SocketAddr, datagram: &[u8]) -> SocketAddr {
        if crate::net::demux::is_stun(datagram) {
            if self.nominating == Some(rtc_addr) && crate::net::demux::is_binding_success(datagram) {
                self.nominating = None;
                if self.remote != Some(rtc_addr) {
                    tracing::debug!(key = ?self.key, path = %rtc_addr, "client nominated another path; media follows it");
                    self.remote = Some(rtc_addr);
                    self.remote_rx = self.last_rx;
                }
            }
            return rtc_addr;
        }
        self.remote.unwrap_or(rtc_addr)
    }

    pub(super) fn ensure_candidate(&mut self) -> Result<(), SfuError> {
        if !self.candidate_added {
            self.pc.add_local_candidate(self.local_candidate.clone()).map_err(|e| SfuError::Startup(e.to_string()))?;
            self.candidate_added = true;
        }
        Ok(())
    }

    /// Trickled remote candidate. With ICE-lite we learn addresses from STUN checks anyway, but
    /// candidates are accepted (and validated) so clients can follow the usual flow.
    pub fn add_remote_candidate(&mut self, c: RTCIceCandidateInit) -> Result<(), SfuError> {
        if c.candidate.is_empty() {
            return Ok(()); // end-of-candidates
        }
        self.pc.add_remote_candidate(c).map_err(|e| SfuError::BadCandidate(e.to_string()))
    }
}
