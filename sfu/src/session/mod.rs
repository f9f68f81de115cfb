//! A peer session: one `rtc::RTCPeerConnection` (sans-IO), plus what the SFU keeps beside it.
//!
//! A participant has up to two sessions, both on the same worker and the same UDP port:
//! the **publisher** session (the client offers its tracks, we answer) and the **subscriber**
//! session (we offer the room's tracks, the client answers). Keeping the directions apart means
//! neither side ever has to resolve offer glare.
//!
//! Both are a [`Transport`] (the ICE-lite peer connection, its path and liveness) plus what that
//! direction needs: a [`Publisher`] knows its tracks and their encodings, a [`Subscriber`] its
//! forwarders and the bandwidth estimate toward the viewer.
//!
//! Sessions do no I/O: the worker feeds them datagrams and timeouts and drains their output.

pub mod feedback;
pub mod lean;
pub mod publisher;
pub mod srtp_keys;
pub mod subscriber;
pub mod transport;

use crate::bwe::{Bwe, SharedBwe};
use crate::error::SfuError;
use crate::ids::SessionKey;
use publisher::Publisher;
use rtc::interceptor::Registry;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;
use subscriber::Subscriber;
use transport::Transport;

/// The floor of a viewer's estimate (bits/s). Where it starts and its ceiling are config
/// ([`crate::forward::selector::LayerPolicy`]): by default 2.5 Mbit/s — enough for the top layer of one
/// 720p simulcast publisher, so an unconstrained viewer starts high and a constrained one is
/// corrected within a few feedback rounds — and 50 Mbit/s.
pub const MIN_ESTIMATE_BPS: f64 = 50_000.0;

/// Packets a subscriber leg keeps for retransmission (per stream): ≥ 1 s of the top layer at
/// 2.5 Mbit/s, enough for any round trip we can still help. rtc's default is 1024.
pub const NACK_HISTORY: u16 = 256;

/// A subscriber leg only sends media: it needs the NACK responder, sender reports, transport-wide
/// sequence numbers and the send-side estimator (ours, `bwe/`, behind rtc's congestion-control
/// interceptor), and our feedback interceptor — not rtc's
/// receive-side interceptors (NACK generator, receiver reports, TWCC receiver), which would
/// still be walked for every packet sent. Measured in docs/benchmarks.md.
///
/// On the lean path (`lean`) rtc sends none of the viewer's media: its NACK responder (a
/// 256-packet buffer per video stream, never filled) and sender reports are left out — the
/// lean path answers NACKs and sends the reports (lean.rs).
fn subscriber_interceptors(
    media_engine: &mut MediaEngine,
    feedback: feedback::KeyframeFeedback,
    bwe: crate::bwe::SharedBwe,
    video_paused: Arc<AtomicBool>,
    twcc: crate::bwe::twcc::SharedTwcc,
    lean: bool,
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
    let mut registry = Registry::new();
    if !lean {
        registry = registry
            .with(Slot::NackResponder, NackResponderBuilder::new().with_size(NACK_HISTORY).build())
            .with(Slot::SenderReport, SenderReportBuilder::new().build());
    }
    Ok(registry
        .with(Slot::from(feedback::NACK_GUARD_SLOT), feedback::NackGuard::new(bwe.clone()).with_video_paused(video_paused).with_lean(lean))
        .with(crate::bwe::twcc::SLOT, crate::bwe::twcc::TransportCc::new(bwe, twcc))
        .with(Slot::from(feedback::KEYFRAME_FEEDBACK_SLOT), feedback))
}

/// What every session of one SFU shares: the DTLS certificate (generated once: an ECDSA key per
/// peer would cost milliseconds per join) and the advertised address.
#[derive(Clone)]
pub struct SessionFactory {
    pub certificate: RTCCertificate,
    pub local_addr: SocketAddr,
    /// How subscribers' layers follow their bandwidth estimates.
    pub policy: crate::forward::selector::LayerPolicy,
    /// Whether viewers' forwarded media takes the send path of our own (session/lean.rs).
    pub lean: bool,
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
        Ok(Self { certificate, local_addr, policy: Default::default(), lean: true })
    }

    pub fn with_policy(mut self, policy: crate::forward::selector::LayerPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Send viewers' forwarded media on the path of our own (`true`, the default) or through
    /// rtc's interceptor chain.
    pub fn with_lean(mut self, lean: bool) -> Self {
        self.lean = lean;
        self
    }

    /// A publisher session for `key`: rtc's default interceptors (NACK generator, receiver
    /// reports, TWCC receiver) and our keyframe feedback.
    pub fn publisher(&self, key: SessionKey, now: Instant) -> Result<Publisher, SfuError> {
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs().map_err(|e| SfuError::Startup(e.to_string()))?;
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)
            .map_err(|e| SfuError::Startup(e.to_string()))?
            .with(rtc::interceptor::Slot::from(feedback::KEYFRAME_FEEDBACK_SLOT), feedback::KeyframeFeedback::default());
        let link = self.transport(key, media_engine, registry, false, now)?;
        Ok(Publisher { link, published: HashMap::new(), spoiled: false })
    }

    /// A subscriber session for `key`, with its bandwidth estimator and lean interceptor chain.
    pub fn subscriber(&self, key: SessionKey, now: Instant) -> Result<Subscriber, SfuError> {
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs().map_err(|e| SfuError::Startup(e.to_string()))?;
        let twcc_feedback = Arc::new(AtomicU64::new(0));
        let bwe = SharedBwe::new(Bwe::new(self.policy.initial_estimate_bps, MIN_ESTIMATE_BPS, self.policy.max_estimate_bps, now));
        let keyframes = feedback::KeyframeFeedback::with_estimator(bwe.clone(), twcc_feedback.clone());
        let video_paused = Arc::new(AtomicBool::new(false));
        let twcc = crate::bwe::twcc::SharedTwcc::default();
        let registry = subscriber_interceptors(&mut media_engine, keyframes, bwe.clone(), video_paused.clone(), twcc.clone(), self.lean)?;
        let link = self.transport(key, media_engine, registry, self.lean, now)?;
        Ok(Subscriber {
            link,
            forwarders: Default::default(),
            offer_outstanding: false,
            renegotiate: false,
            bwe,
            twcc_feedback,
            policy: self.policy,
            fallback: Default::default(),
            video_paused,
            slots: None,
            twcc,
            lean_wanted: self.lean,
            lean: None,
        })
    }

    /// A new ICE-lite peer connection and our one host candidate. rtc draws its ICE credentials
    /// (and new ones at each ICE restart: credentials fixed in the setting engine would be
    /// reused by a restart); the worker learns the ufrag from each local description
    /// ([`Transport::note_local_description`]).
    ///
    /// A viewer's connection on the lean path (`lean`) offers only the SRTP profiles its sealer
    /// has (net/srtp.rs): AEAD_AES_128_GCM and AES_CM_128_HMAC_SHA1_80, the one every WebRTC
    /// stack must support (RFC 8827). Browsers list AEAD_AES_256_GCM first, and as DTLS server
    /// rtc takes the client's first choice it has.
    fn transport(
        &self,
        key: SessionKey,
        media_engine: MediaEngine,
        registry: Registry,
        lean: bool,
        now: Instant,
    ) -> Result<Transport, SfuError> {
        // rtc's crypto, wrapped to note the SRTP keys (srtp_keys.rs): nothing per packet
        // passes through the wrapper.
        let provider = rtc::crypto::default_provider().map_err(|e| SfuError::Startup(e.to_string()))?;
        let keys = srtp_keys::KeyTap::new(provider);
        use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
        let mut setting_engine = SettingEngineBuilder::new();
        if lean {
            setting_engine = setting_engine.with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ]);
        }
        let setting_engine = setting_engine
            .with_crypto_provider(keys.clone())
            .with_lite(true)
            .with_answering_dtls_role(RTCDtlsRole::Server)
            // rtc judges liveness by STUN on its first selected pair only; the worker judges it
            // by any traffic on any of the client's paths instead (ICE_DISCONNECTED/FAILED).
            .with_ice_timeouts(Some(std::time::Duration::ZERO), Some(std::time::Duration::ZERO), None)
            // An ICE-lite server learns its peers' addresses from their checks and never needs
            // their candidates; rtc's default would resolve a browser's `<uuid>.local`
            // candidates by mDNS, queries our send path would put on the media socket (to the
            // multicast group, or to the client once its address is known) — and log an error
            // for each one that times out.
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .build();
        let config = RTCConfigurationBuilder::new().with_certificates(vec![self.certificate.clone()]).build();
        let pc = RTCPeerConnectionBuilder::new()
            .with_configuration(config)
            .with_setting_engine(setting_engine)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)
            .map_err(|e| SfuError::Startup(e.to_string()))?;
        let candidate = transport::host_candidate(self.local_addr).map_err(SfuError::Startup)?;
        Ok(Transport {
            key,
            pc,
            ufrag: String::new(),
            ufrag_registered: true,
            local_candidate: candidate,
            candidate_added: false,
            connected: false,
            ever_connected: false,
            last_rx: now,
            remote: None,
            remote_rx: now,
            nominating: None,
            moved: false,
            switched: false,
            early_checks: None,
            restarting: false,
            nominate: None,
            deadline: None,
            keys,
        })
    }
}
