//! A peer session: one `rtc::RTCPeerConnection` (sans-IO), plus what the SFU keeps beside it.
//!
//! A participant has up to two sessions, both on the same worker and the same UDP port:
//! the **publisher** session (the client offers its tracks, we answer) and the **subscriber**
//! session (we offer the room's tracks, the client answers). Keeping the directions apart means
//! neither side ever has to resolve offer glare.
//!
//! Sessions do no I/O: the worker feeds them datagrams and timeouts and drains their output.

pub mod feedback;

use crate::api::{CodecInfo, MediaKind};
use crate::bwe::{Bwe, PROBE_MAX_PACKETS, PROBE_MIN_PACKETS, SharedBwe};
use crate::error::SfuError;
use crate::forward::forwarder::{Forwarder, Verdict};
use crate::ids::{SessionKey, SessionRole, TrackId};
use crate::media::codec::Codec;
use crate::media::packet::MediaPacket;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit};
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The floor of a viewer's estimate (bits/s). Where it starts and its ceiling are config
/// ([`crate::forward::selector::LayerPolicy`]): by default 2.5 Mbit/s — enough for the top layer of one
/// 720p simulcast publisher, so an unconstrained viewer starts high and a constrained one is
/// corrected within a few feedback rounds — and 50 Mbit/s.
pub const MIN_ESTIMATE_BPS: f64 = 50_000.0;
/// Recent packets a video subscription keeps to send again as probe traffic.
const PROBE_SOURCES: usize = 4;

/// Packets a subscriber leg keeps for retransmission (per stream): ≥ 1 s of the top layer at
/// 2.5 Mbit/s, enough for any round trip we can still help. rtc's default is 1024.
pub const NACK_HISTORY: u16 = 256;

/// A subscriber leg only sends media: it needs the NACK responder, sender reports, transport-wide
/// sequence numbers and the send-side estimator (ours, `bwe.rs`, behind rtc's congestion-control
/// interceptor), and our feedback interceptor — not rtc's
/// receive-side interceptors (NACK generator, receiver reports, TWCC receiver), which would
/// still be walked for every packet sent. Measured in docs/benchmarks.md.
fn subscriber_interceptors(
    media_engine: &mut MediaEngine,
    feedback: crate::session::feedback::KeyframeFeedback,
    bwe: crate::bwe::SharedBwe,
) -> Result<Registry, SfuError> {
    use rtc::interceptor::{NackResponderBuilder, SenderReportBuilder, Slot};
    use rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers;
    use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpHeaderExtensionCapability};
    let startup = |e: rtc::shared::error::Error| SfuError::Startup(e.to_string());
    for parameter in ["", "pli"] {
        media_engine.register_feedback(RTCPFeedback { typ: "nack".into(), parameter: parameter.into() }, RtpCodecKind::Video);
    }
    // REMB: the estimate of a viewer that does not send transport-wide feedback (browsers send
    // one or the other, never both).
    media_engine.register_feedback(RTCPFeedback { typ: "goog-remb".into(), parameter: String::new() }, RtpCodecKind::Video);
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        media_engine.register_feedback(RTCPFeedback { typ: "transport-cc".into(), parameter: String::new() }, kind);
        media_engine
            .register_header_extension(RTCRtpHeaderExtensionCapability { uri: crate::bwe::twcc::TRANSPORT_CC_URI.into() }, kind, None)
            .map_err(startup)?;
    }
    configure_simulcast_extension_headers(media_engine).map_err(startup)?;
    // No pacer: the layer selector keeps the rate under the estimate, and a pacer's queue would
    // only add delay.
    Ok(Registry::new()
        .with(Slot::NackResponder, NackResponderBuilder::new().with_size(NACK_HISTORY).build())
        .with(Slot::SenderReport, SenderReportBuilder::new().build())
        .with(Slot::from(crate::session::feedback::NACK_GUARD_SLOT), crate::session::feedback::NackGuard::new(bwe.clone()))
        .with(crate::bwe::twcc::SLOT, crate::bwe::twcc::TransportCc::new(bwe))
        .with(Slot::from(crate::session::feedback::KEYFRAME_FEEDBACK_SLOT), feedback))
}

/// What every session of one SFU shares: the DTLS certificate (generated once: an ECDSA key per
/// peer would cost milliseconds per join) and the advertised address.
#[derive(Clone)]
pub struct SessionFactory {
    pub certificate: RTCCertificate,
    pub local_addr: SocketAddr,
    /// How subscribers' layers follow their bandwidth estimates.
    pub policy: crate::forward::selector::LayerPolicy,
}

impl SessionFactory {
    pub fn new(local_addr: SocketAddr) -> Result<Self, SfuError> {
        let provider = rtc::crypto::default_provider().map_err(|e| SfuError::Startup(e.to_string()))?;
        let certificate = RTCCertificate::generate(
            provider.crypto(),
            rtc::crypto::SignatureScheme::EcdsaP256Sha256,
            rtc::peer_connection::certificate::CertificateParams::new(vec!["onair".to_owned()])
                .map_err(|e| SfuError::Startup(e.to_string()))?,
        )
        .map_err(|e| SfuError::Startup(e.to_string()))?;
        Ok(Self { certificate, local_addr, policy: Default::default() })
    }

    pub fn with_policy(mut self, policy: crate::forward::selector::LayerPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// A new ICE-lite peer connection with fresh ICE credentials and our one host candidate.
    pub fn build(&self, key: SessionKey, now: Instant) -> Result<PeerSession, SfuError> {
        let ufrag = random_token(16);
        let pwd = random_token(32);
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs().map_err(|e| SfuError::Startup(e.to_string()))?;
        let twcc_feedback = Arc::new(AtomicU64::new(0));
        let (registry, bwe) = match key.role {
            SessionRole::Publisher => {
                let registry =
                    register_default_interceptors(Registry::new(), &mut media_engine).map_err(|e| SfuError::Startup(e.to_string()))?.with(
                        rtc::interceptor::Slot::from(crate::session::feedback::KEYFRAME_FEEDBACK_SLOT),
                        crate::session::feedback::KeyframeFeedback::default(),
                    );
                (registry, None)
            }
            SessionRole::Subscriber => {
                let bwe = SharedBwe::new(Bwe::new(self.policy.initial_estimate_bps, MIN_ESTIMATE_BPS, self.policy.max_estimate_bps, now));
                let feedback = crate::session::feedback::KeyframeFeedback::with_estimator(bwe.clone(), twcc_feedback.clone());
                (subscriber_interceptors(&mut media_engine, feedback, bwe.clone())?, Some(bwe))
            }
        };
        let setting_engine = SettingEngineBuilder::new()
            .with_lite(true)
            .with_ice_credentials(ufrag.clone(), pwd)
            .with_answering_dtls_role(RTCDtlsRole::Server)
            // rtc judges liveness by STUN on its first selected pair only; the worker judges it
            // by any traffic on any of the client's paths instead (ICE_DISCONNECTED/FAILED).
            .with_ice_timeouts(Some(std::time::Duration::ZERO), Some(std::time::Duration::ZERO), None)
            .build();
        let config = RTCConfigurationBuilder::new().with_certificates(vec![self.certificate.clone()]).build();
        let pc = RTCPeerConnectionBuilder::new()
            .with_configuration(config)
            .with_setting_engine(setting_engine)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)
            .map_err(|e| SfuError::Startup(e.to_string()))?;
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: self.local_addr.ip().to_string(),
                port: self.local_addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .and_then(|c| RTCIceCandidate::from(&c).to_json())
        .map_err(|e| SfuError::Startup(e.to_string()))?;
        Ok(PeerSession {
            key,
            pc,
            ufrag,
            local_candidate: candidate,
            candidate_added: false,
            connected: false,
            ever_connected: false,
            last_rx: now,
            remote: None,
            nominating: None,
            deadline: None,
            offer_outstanding: false,
            renegotiate: false,
            forwarders: HashMap::new(),
            published: HashMap::new(),
            bwe,
            twcc_feedback,
            policy: self.policy,
        })
    }
}

fn random_token(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// One encoding of a published track (one simulcast layer, or the only one).
#[derive(Debug)]
pub struct PublishedLayer {
    pub layer: u8,
    pub ssrc: u32,
    pub last_pli: Option<Instant>,
    pub pli_pending: bool,
    pub packets: u64,
}

/// A track this session publishes.
#[derive(Debug)]
pub struct PublishedTrack {
    pub id: TrackId,
    pub codec: Codec,
    pub receiver_id: RTCRtpReceiverId,
    pub layers: Vec<PublishedLayer>,
}

impl PublishedTrack {
    pub fn layer_by_ssrc(&mut self, ssrc: u32) -> Option<&mut PublishedLayer> {
        self.layers.iter_mut().find(|l| l.ssrc == ssrc)
    }

    /// The encoding to ask a keyframe of for `layer` (the nearest one that exists).
    pub fn layer_for_keyframe(&mut self, layer: u8) -> Option<&mut PublishedLayer> {
        let best = self.layers.iter().min_by_key(|l| (l.layer as i16 - layer as i16).abs()).map(|l| l.layer)?;
        self.layers.iter_mut().find(|l| l.layer == best)
    }
}

/// One forwarded track inside a subscriber session.
#[derive(Debug)]
pub struct Subscription {
    pub sender_id: RTCRtpSenderId,
    pub forwarder: Forwarder,
    pub mime_type: String,
    pub fmtp: String,
    /// (sequence number, payload bytes) of the latest packets sent on this (video) subscription:
    /// probe clusters are RTX retransmissions of them (see `probe`).
    pub recent: [Option<(u16, usize)>; PROBE_SOURCES],
    recent_next: usize,
}

pub struct PeerSession {
    pub key: SessionKey,
    pub pc: RTCPeerConnection,
    pub ufrag: String,
    pub local_candidate: RTCIceCandidateInit,
    candidate_added: bool,
    pub connected: bool,
    /// Connected once (DTLS done): from then on liveness is ours to judge (see the worker).
    pub ever_connected: bool,
    /// When the peer last sent us anything (STUN, DTLS, SRTP, SRTCP).
    pub last_rx: Instant,
    /// The path the client uses now: it may nominate another of its addresses after the first
    /// (Chrome moves between interfaces), and rtc keeps its first choice, so media follows the
    /// latest nominated address whose check rtc answered.
    pub remote: Option<SocketAddr>,
    pub nominating: Option<SocketAddr>,
    /// The timeout currently scheduled for this session in the worker's heap.
    pub deadline: Option<Instant>,
    /// Subscriber side: an offer is out and its answer not yet applied.
    pub offer_outstanding: bool,
    /// Subscriber side: tracks changed while an offer was out; offer again after the answer.
    pub renegotiate: bool,
    pub forwarders: HashMap<TrackId, Subscription>,
    /// Publisher side: rtc's track id → our track.
    pub published: HashMap<String, PublishedTrack>,
    /// Subscriber side: the bandwidth estimator toward the viewer.
    bwe: Option<SharedBwe>,
    /// TWCC feedback packets received from this peer.
    twcc_feedback: Arc<AtomicU64>,
    policy: crate::forward::selector::LayerPolicy,
}

fn sdp_err(e: impl std::fmt::Display) -> SfuError {
    SfuError::BadSdp(e.to_string())
}

impl PeerSession {
    /// Where an outgoing datagram goes: STUN answers go where rtc says (to the requester);
    /// media and DTLS follow the client's latest nominated path.
    pub fn destination(&mut self, rtc_addr: SocketAddr, datagram: &[u8]) -> SocketAddr {
        if crate::net::demux::is_stun(datagram) {
            if self.nominating == Some(rtc_addr) && crate::net::demux::is_binding_success(datagram) {
                self.nominating = None;
                if self.remote != Some(rtc_addr) {
                    tracing::debug!(key = ?self.key, path = %rtc_addr, "client nominated another path; media follows it");
                    self.remote = Some(rtc_addr);
                }
            }
            return rtc_addr;
        }
        self.remote.unwrap_or(rtc_addr)
    }

    /// The bandwidth estimate toward this (subscriber) peer, once feedback has produced one.
    pub fn bandwidth_estimate(&self) -> Option<f64> {
        let bwe = self.bwe.as_ref()?.lock();
        bwe.has_feedback().then(|| bwe.estimate())
    }

    /// The estimator's view of the path: queueing delay, loss, probes sent (stats).
    pub fn path_stats(&self) -> Option<(Duration, f64, u64)> {
        let bwe = self.bwe.as_ref()?.lock();
        Some((bwe.queue_delay(), bwe.loss(), bwe.probes))
    }

    /// TWCC feedback packets this peer has sent us.
    pub fn twcc_feedback(&self) -> u64 {
        self.twcc_feedback.load(Ordering::Relaxed)
    }

    /// Subscriber side: recompute every forwarder's layer cap — audio first (always forwarded,
    /// its rate taken off the top), then the rest of the estimate split over the video tracks.
    pub fn allocate_layers(&mut self, now: Instant) {
        let estimate = self.bandwidth_estimate();
        let audio: f64 = self.forwarders.values().filter(|s| s.forwarder.is_audio()).map(|s| s.forwarder.rates.rates()[0]).sum();
        let mut video: Vec<&mut Subscription> = self.forwarders.values_mut().filter(|s| !s.forwarder.is_audio()).collect();
        let shares = estimate.map(|e| {
            let rates: Vec<_> = video.iter().map(|s| s.forwarder.rates.rates()).collect();
            let wanted: Vec<_> = video.iter().map(|s| s.forwarder.wanted_layer()).collect();
            crate::forward::selector::allocate(e - audio, &rates, &wanted)
        });
        for (i, sub) in video.iter_mut().enumerate() {
            sub.forwarder.apply_caps(shares.as_ref().and_then(|s| s.get(i).copied()), now);
        }
    }

    /// What the viewer's wanted layers would cost (bits/s), with the headroom a climb needs:
    /// the rate probing aims for.
    fn wanted_bps(&self) -> f64 {
        self.forwarders
            .values()
            .map(|s| {
                let rates = s.forwarder.rates.rates();
                if s.forwarder.is_audio() { rates[0] } else { rates[s.forwarder.wanted_known_layer() as usize] * self.policy.up_headroom }
            })
            .sum()
    }

    /// Subscriber side: arrange a probe cluster if the estimator asks for one (see `bwe.rs`).
    ///
    /// A probe must be packets the viewer counts in its feedback but does not play. Copies of
    /// packets it already has would be refused by its SRTP replay check before feedback sees
    /// them, and rtc cannot write padding-only packets; so a probe is a train of RTX
    /// retransmissions (RFC 4588, new sequence numbers on the RTX stream) of the latest video
    /// packets — what browsers send when they probe. The NACK guard hands rtc's NACK responder
    /// the list with the viewer's next RTCP, and the responder sends them as one train.
    /// Returns whether a probe was arranged.
    pub fn probe(&mut self, now: Instant) -> bool {
        let Some(bwe) = self.bwe.clone() else {
            return false;
        };
        if !self.connected {
            return false;
        }
        let wanted = self.wanted_bps();
        let mut bwe = bwe.lock();
        let Some((bytes, target)) = bwe.probe_plan(now, wanted) else {
            return false;
        };
        // The video subscription with the most recent packets to resend.
        let Some(sub) = self
            .forwarders
            .values()
            .filter(|s| !s.forwarder.is_audio() && s.recent.iter().any(Option::is_some))
            .max_by_key(|s| s.forwarder.bytes)
        else {
            return false;
        };
        let recent: Vec<(u16, usize)> = sub.recent.iter().flatten().copied().collect();
        let (mut seqs, mut sent) = (Vec::new(), 0usize);
        while (sent < bytes || seqs.len() < PROBE_MIN_PACKETS) && seqs.len() < PROBE_MAX_PACKETS {
            let (seq, size) = recent[seqs.len() % recent.len()];
            seqs.push(seq);
            // RTX adds the original sequence number; the RTP header is on the wire too.
            sent += size + 14;
        }
        bwe.request_probe(sub.forwarder.ssrc, seqs, target);
        true
    }

    fn ensure_candidate(&mut self) -> Result<(), SfuError> {
        if !self.candidate_added {
            self.pc.add_local_candidate(self.local_candidate.clone()).map_err(|e| SfuError::Startup(e.to_string()))?;
            self.candidate_added = true;
        }
        Ok(())
    }

    /// Publisher side: apply the client's offer and return our answer.
    ///
    /// A refused offer leaves the connection as it was (JSEP rollback, RFC 9429 §5.7): a
    /// publisher whose renegotiation fails keeps publishing and can offer again.
    pub fn apply_offer(&mut self, now: Instant, sdp: String) -> Result<String, SfuError> {
        let result = self.try_apply_offer(now, sdp);
        if result.is_err() && self.pc.pending_remote_description().is_some() {
            let rolled_back = RTCSessionDescription::rollback(None).and_then(|rollback| self.pc.set_remote_description(now, rollback));
            if let Err(e) = rolled_back {
                tracing::warn!("rolling back a refused offer: {e}");
            }
        }
        result
    }

    fn try_apply_offer(&mut self, now: Instant, sdp: String) -> Result<String, SfuError> {
        let offer = RTCSessionDescription::offer(sdp).map_err(sdp_err)?;
        self.pc.set_remote_description(now, offer).map_err(sdp_err)?;
        self.ensure_candidate()?;
        let answer = self.pc.create_answer(None).map_err(sdp_err)?;
        self.pc.set_local_description(now, answer).map_err(sdp_err)?;
        self.pc.local_description().map(|d| d.sdp).ok_or_else(|| SfuError::BadSdp("no local description".into()))
    }

    /// Subscriber side: start forwarding `track` (codec as published) under a fresh SSRC.
    pub fn add_subscription(&mut self, track: TrackId, stream: String, kind: MediaKind, codec: &CodecInfo) -> Result<(), SfuError> {
        if self.forwarders.contains_key(&track) {
            return Ok(());
        }
        let ssrc = rand::random::<u32>();
        let rtp_codec = RTCRtpCodec {
            mime_type: codec.mime_type.clone(),
            clock_rate: codec.clock_rate,
            channels: codec.channels,
            sdp_fmtp_line: codec.fmtp.clone(),
            rtcp_feedback: vec![],
        };
        let rtc_kind = match kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let media_track = MediaStreamTrack::new(
            stream,
            track.to_string(),
            track.to_string(),
            rtc_kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    // Video retransmissions go out as RTX (RFC 4588) when the subscriber
                    // negotiates it, on their own SSRC so its loss statistics stay clean.
                    rtx: (kind == MediaKind::Video).then(|| RTCRtpRtxParameters { ssrc: rand::random::<u32>() }),
                    ..Default::default()
                },
                active: true,
                codec: rtp_codec,
                ..Default::default()
            }],
        );
        let sender_id = self.pc.add_track(media_track).map_err(sdp_err)?;
        // Offer every codec of the kind in this m-line, not just the track's: rtc narrows the
        // codecs later tracks may use to those the first answer accepted, so a VP8-only first
        // answer would refuse a later H.264 track (a studio feed, a Safari publisher).
        let transceivers: Vec<_> = self.pc.get_transceivers().collect();
        for id in transceivers {
            if let Some(mut t) = self.pc.rtp_transceiver(id)
                && t.sender() == Some(sender_id)
            {
                t.set_codec_preferences(Vec::new()).map_err(sdp_err)?;
            }
        }
        let mut forwarder = Forwarder::new(track, Codec::from_mime(&codec.mime_type), ssrc, codec.clock_rate);
        forwarder.bandwidth = crate::forward::selector::BandwidthCap::new(self.policy.up_hold, self.policy.up_headroom);
        self.forwarders.insert(
            track,
            Subscription {
                sender_id,
                forwarder,
                mime_type: codec.mime_type.clone(),
                fmtp: codec.fmtp.clone(),
                recent: Default::default(),
                recent_next: 0,
            },
        );
        Ok(())
    }

    /// Subscriber side: stop forwarding `track`. Returns whether it was forwarded.
    pub fn remove_subscription(&mut self, track: TrackId) -> bool {
        match self.forwarders.remove(&track) {
            Some(sub) => {
                if let Err(e) = self.pc.remove_track(sub.sender_id) {
                    tracing::debug!(%track, "remove_track: {e}");
                }
                true
            }
            None => false,
        }
    }

    /// Subscriber side: an offer to send now, or `None` if one is already out (then another
    /// follows the answer).
    pub fn negotiate(&mut self, now: Instant) -> Result<Option<String>, SfuError> {
        if self.offer_outstanding {
            self.renegotiate = true;
            return Ok(None);
        }
        self.ensure_candidate()?;
        let offer = self.pc.create_offer(None).map_err(sdp_err)?;
        self.pc.set_local_description(now, offer).map_err(sdp_err)?;
        self.offer_outstanding = true;
        self.renegotiate = false;
        Ok(self.pc.local_description().map(|d| with_msid_semantic(d.sdp)))
    }

    /// Subscriber side: apply the client's answer; learn the payload types it accepted.
    pub fn apply_answer(&mut self, now: Instant, sdp: String) -> Result<(), SfuError> {
        if !self.offer_outstanding {
            return Err(SfuError::BadSdp("no offer is outstanding".into()));
        }
        let answer = RTCSessionDescription::answer(sdp).map_err(sdp_err)?;
        self.pc.set_remote_description(now, answer).map_err(sdp_err)?;
        self.offer_outstanding = false;
        for sub in self.forwarders.values_mut() {
            if let Some(mut sender) = self.pc.rtp_sender(sub.sender_id) {
                let params = sender.get_parameters();
                // Same MIME type and, where the answer has several (H.264 profiles), the same
                // fmtp line as the publisher's codec; else the first of that MIME type.
                let codecs = &params.rtp_parameters.codecs;
                let same_mime = |c: &&rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters| {
                    c.rtp_codec.mime_type.eq_ignore_ascii_case(&sub.mime_type)
                };
                sub.forwarder.payload_type = codecs
                    .iter()
                    .filter(same_mime)
                    .find(|c| c.rtp_codec.sdp_fmtp_line == sub.fmtp)
                    .or_else(|| codecs.iter().find(same_mime))
                    .map(|c| c.payload_type);
                if sub.forwarder.payload_type.is_none() {
                    if codecs.is_empty() {
                        // Added after this offer went out: the next offer carries it.
                        tracing::debug!(track = %sub.forwarder.track, "not negotiated yet");
                    } else {
                        tracing::warn!(track = %sub.forwarder.track, "subscriber did not accept {}", sub.mime_type);
                    }
                }
            }
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

impl PeerSession {
    /// Subscriber side, the per-packet step: decide, rewrite SSRC / sequence number / timestamp /
    /// payload type, and hand the packet to rtc (which encrypts it into `poll_write`). Returns
    /// whether a packet was queued. Nothing is sent before the connection is up: the stream then
    /// starts at a keyframe.
    pub fn forward(&mut self, pkt: &MediaPacket, now: Instant) -> bool {
        let Some(sub) = self.forwarders.get_mut(&pkt.track) else {
            return false;
        };
        let tid = pkt.temporal.map(|t| t.tid);
        sub.forwarder.measure_temporal(pkt.layer, pkt.payload.len(), pkt.frame_height, tid, now);
        if !self.connected {
            // Nothing can be sent yet, but which layers arrive decides where the stream starts.
            sub.forwarder.observe(pkt.layer, now);
            return false;
        }
        let Verdict::Send { seq, ts } =
            sub.forwarder.handle_temporal(pkt.layer, pkt.header.sequence_number, pkt.header.timestamp, pkt.keyframe, pkt.temporal, now)
        else {
            return false;
        };
        // Extensions and CSRCs were stripped at ingest, so this clone does not allocate.
        let mut header = pkt.header.clone();
        header.ssrc = sub.forwarder.ssrc;
        header.sequence_number = seq;
        header.timestamp = ts;
        // handle() says Send only once a payload type is negotiated.
        header.payload_type = sub.forwarder.payload_type.unwrap_or(header.payload_type);
        sub.forwarder.packets += 1;
        sub.forwarder.bytes += pkt.payload.len() as u64;
        let sender_id = sub.sender_id;
        let packet = rtc::rtp::Packet { header, payload: pkt.payload.clone() };
        if !sub.forwarder.is_audio() && self.bwe.is_some() {
            sub.recent[sub.recent_next] = Some((seq, pkt.payload.len()));
            sub.recent_next = (sub.recent_next + 1) % PROBE_SOURCES;
        }
        match self.pc.rtp_sender(sender_id).map(|mut s| s.write_rtp(now, packet)) {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::trace!("write_rtp: {e}");
                false
            }
            None => false,
        }
    }
}

/// rtc writes the session-level `a=msid-semantic:WMS *` only into offers made once a remote
/// description exists, so a viewer's first offer lacked it; stacks other than Chrome then ignore
/// the `a=msid` lines and cannot tell which stream a track belongs to. Every offer sent carries
/// it (added to the text sent, not to the local description: rtc refuses a local offer that
/// differs from the one it made).
fn with_msid_semantic(sdp: String) -> String {
    let session_part = sdp.split("\nm=").next().unwrap_or(&sdp);
    if session_part.contains("a=msid-semantic") {
        return sdp;
    }
    match sdp.find("\r\nm=").map(|i| i + 2).or_else(|| sdp.find("\nm=").map(|i| i + 1)) {
        Some(at) => {
            let mut out = String::with_capacity(sdp.len() + 24);
            out.push_str(&sdp[..at]);
            out.push_str("a=msid-semantic:WMS *\r\n");
            out.push_str(&sdp[at..]);
            out
        }
        None => sdp,
    }
}
