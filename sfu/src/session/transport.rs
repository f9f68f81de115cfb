//! The transport half of a session: one ICE-lite `rtc::RTCPeerConnection` on the shared port,
//! its ICE credentials and candidate, which client path media follows, and our liveness view.

use crate::error::SfuError;
use crate::ids::SessionKey;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit};
use rtc::sansio::Protocol;
use rtc::shared::TaggedBytesMut;
use std::net::SocketAddr;
use std::time::Instant;

pub struct Transport {
    pub key: SessionKey,
    pub pc: RTCPeerConnection,
    /// Our ICE ufrag as the last local description announced it (empty before the first): the
    /// receive thread routes binding requests naming it to this session.
    pub ufrag: String,
    /// False while the receive thread has not been told `ufrag` (a first description, or an ICE
    /// restart's new credentials); the worker tells it before the description leaves.
    pub ufrag_registered: bool,
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
    /// Media moved to a new path after the old one had gone silent: what was sent meanwhile is
    /// lost, so a viewer needs a keyframe now (the worker asks, then clears this).
    pub moved: bool,
    /// The client's media moved to another path, silence or not (an ICE restart moves it at
    /// once, with packets in flight on both): a publisher is asked for keyframes, as what it
    /// sent during the switch may be lost for good (the worker asks, then clears this).
    pub switched: bool,
    /// Set while an offer of ours with new ICE credentials — a viewer's first, or an ICE
    /// restart's — waits for its answer: rtc has no remote credentials (or has dropped the old
    /// ones) and drops every binding request until the answer brings them, but the client
    /// checks as soon as it has answered — before its answer, which takes the slower road
    /// through signaling, reaches us. Such early checks are legal (RFC 8445 §7.3); the first
    /// [`EARLY_CHECKS`] are kept here and handed to rtc with the answer, instead of costing the
    /// client its retransmission timeout (for a join, time before its first frame).
    pub early_checks: Option<Vec<TaggedBytesMut>>,
    /// Set by an ICE restart until a pair is chosen: rtc drops its selected pair at a restart
    /// and sends nothing until the client nominates one of the new pairs (see
    /// [`Transport::take_nomination`]).
    pub restarting: bool,
    /// A new-generation path whose checks passed both ways while restarting: the client's
    /// check answered by rtc, rtc's own check answered by the client. Taken by the worker.
    pub nominate: Option<SocketAddr>,
    /// The rtc deadline currently armed for this session in the worker's timers.
    pub deadline: Option<Instant>,
    /// The connection's crypto provider: rtc's, noting the SRTP keys it sends with.
    pub keys: std::sync::Arc<super::srtp_keys::KeyTap>,
}

impl Transport {
    /// The SRTP session keys this connection's RTP is sent with, once DTLS is done.
    pub fn srtp_keys(&self) -> Option<super::srtp_keys::SrtpKeys> {
        self.keys.local_keys()
    }
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
/// Most early binding requests kept while an answer to new ICE credentials is on its way.
pub const EARLY_CHECKS: usize = 16;

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
            if self.restarting && crate::net::demux::is_binding_success(data) {
                self.nominate = Some(from);
            }
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
                    self.moved |= self.remote.is_some() && self.last_rx.saturating_duration_since(self.remote_rx) >= REBIND_SILENCE;
                    self.switched |= self.remote.is_some();
                    self.remote = Some(rtc_addr);
                    self.remote_rx = self.last_rx;
                }
            }
            return rtc_addr;
        }
        self.remote.unwrap_or(rtc_addr)
    }

    /// A local description was just set: learn our ufrag from it. An ICE restart changes it
    /// (rtc draws new credentials), and the receive thread must route checks naming the new
    /// one here before the client hears of it. True when the credentials are new (the first,
    /// or a restart's).
    pub(super) fn note_local_description(&mut self) -> bool {
        let Some(sdp) = self.pc.local_description().map(|d| d.sdp) else { return false };
        let Some(ufrag) = sdp.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).map(str::trim) else { return false };
        if ufrag.is_empty() || ufrag == self.ufrag {
            return false;
        }
        let restart = !self.ufrag.is_empty();
        if restart {
            tracing::debug!(key = ?self.key, "new ICE credentials (restart)");
            self.restarting = true;
            self.nominate = None;
        }
        self.ufrag = ufrag.to_owned();
        self.ufrag_registered = false;
        true
    }

    /// After an ICE restart, the nomination the client has not sent yet, for rtc to read as if
    /// the client had: a Binding request with USE-CANDIDATE from the path whose checks just
    /// passed both ways, signed with our own ICE password (as the client signs its checks).
    ///
    /// Why: rtc clears its selected pair at a restart and sends nothing until the client
    /// nominates a new pair, but RFC 8445 §12.1 lets an agent send on any valid pair before a
    /// pair is selected (and on the previous selected pair during a restart). Chrome nominates
    /// only its own selected connection, and keeps a dead one selected until it times out
    /// (~5 s) when another network was up all along (Wi-Fi → cellular): its new-generation
    /// pair on the other network is valid within a round trip, yet media would wait seconds.
    /// Sending on the valid pair at once is what the RFC allows; Chrome takes media from any of
    /// its pairs. Only a pair rtc itself validated (its own check answered, with the client's
    /// password) becomes selected this way: for any other pair rtc answers a nomination with a
    /// check, not a selection.
    pub fn take_nomination(&mut self, local: SocketAddr, at: Instant) -> Option<TaggedBytesMut> {
        use rtc::ice::attributes::{control::AttrControlling, priority::PriorityAttr, use_candidate::UseCandidateAttr};
        use rtc::stun::{
            attributes::ATTR_USERNAME, fingerprint::FINGERPRINT, integrity::MessageIntegrity, message::*, textattrs::Username,
        };
        let to = self.nominate.take()?;
        self.restarting = false;
        let ice_attr = |sdp: &str, key: &str| sdp.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_owned());
        let pwd = ice_attr(&self.pc.local_description()?.sdp, "a=ice-pwd:")?;
        let client_ufrag = ice_attr(&self.pc.remote_description()?.sdp, "a=ice-ufrag:")?;
        let crypto = rtc::crypto::default_provider().ok()?;
        let mut m = Message::new();
        m.build(&[
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, format!("{}:{client_ufrag}", self.ufrag))),
            Box::new(UseCandidateAttr),
            Box::new(AttrControlling(rand::random())),
            // A peer-reflexive priority (RFC 8445 §5.1.2.1); the pair exists, so rtc does not use it.
            Box::new(PriorityAttr((110 << 24) | (65535 << 8) | 255)),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(pwd, crypto.crypto())),
            Box::new(FINGERPRINT),
        ])
        .ok()?;
        tracing::debug!(key = ?self.key, path = %to, "restart: the new path is valid both ways; media goes there before the client nominates it");
        Some(TaggedBytesMut {
            now: at,
            transport: rtc::shared::TransportContext {
                local_addr: local,
                peer_addr: to,
                ecn: None,
                transport_protocol: rtc::shared::TransportProtocol::UDP,
            },
            message: bytes::BytesMut::from(&m.raw[..]),
        })
    }

    /// Keep `msg` for later if it is an early check (see [`Transport::early_checks`]); else
    /// give it back.
    pub fn hold_early_check(&mut self, msg: TaggedBytesMut) -> Option<TaggedBytesMut> {
        let Some(early) = self.early_checks.as_mut() else { return Some(msg) };
        if crate::net::demux::binding_request_ufrag(&msg.message).is_none() {
            return Some(msg);
        }
        if early.len() < EARLY_CHECKS {
            early.push(msg);
        }
        None
    }

    /// The answer is in: rtc has the client's new credentials, so the early checks go to it.
    pub(super) fn replay_early_checks(&mut self) {
        for msg in self.early_checks.take().unwrap_or_default() {
            if let Err(e) = self.pc.handle_read(msg) {
                tracing::debug!(key = ?self.key, "early check rejected: {e}");
            }
        }
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
        if is_mdns_candidate(&c.candidate) {
            return Ok(()); // a browser's hidden host address: its checks tell us the real one
        }
        self.pc.add_remote_candidate(c).map_err(|e| SfuError::BadCandidate(e.to_string()))
    }
}

/// Whether a candidate line (`candidate:…`, with or without `a=`) names its address by an mDNS
/// name (`<uuid>.local`), as browsers do for host candidates of pages without camera access.
/// An ICE-lite server learns the address from the client's checks instead (mDNS is off).
pub fn is_mdns_candidate(line: &str) -> bool {
    line.split_whitespace().nth(4).is_some_and(|addr| addr.to_ascii_lowercase().ends_with(".local"))
}

/// `sdp` without its mDNS candidate lines (see [`is_mdns_candidate`]): rtc would otherwise warn
/// about each one.
pub fn without_mdns_candidates(sdp: String) -> String {
    if !sdp.contains(".local") {
        return sdp;
    }
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        if !(line.starts_with("a=candidate:") && is_mdns_candidate(line)) {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod mdns_tests {
    use super::*;

    #[test]
    fn mdns_candidates_are_left_out() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=candidate:1 1 udp 2122260223 4b1d9a1e-8f0e-4c1a-9a43-1b6f2d1e0c11.local 54321 typ host\r\na=candidate:2 1 udp 1686052607 203.0.113.9 54321 typ srflx raddr 0.0.0.0 rport 0\r\na=mid:0\r\n".to_owned();
        assert_eq!(
            without_mdns_candidates(sdp),
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=candidate:2 1 udp 1686052607 203.0.113.9 54321 typ srflx raddr 0.0.0.0 rport 0\r\na=mid:0\r\n"
        );
        assert!(is_mdns_candidate("candidate:1 1 udp 1 ABC.LOCAL 9 typ host"));
        assert!(!is_mdns_candidate("candidate:1 1 udp 1 192.0.2.1 9 typ host"));
        assert!(!is_mdns_candidate("candidate:1 1 udp"), "a short line is not one");
        let plain = "v=0\r\na=candidate:1 1 udp 1 192.0.2.1 9 typ host\r\n".to_owned();
        assert_eq!(without_mdns_candidates(plain.clone()), plain);
    }
}
