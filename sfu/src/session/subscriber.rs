//! The subscriber side: we offer the room's tracks, the client answers. Per track a forwarder
//! decides what to send; the estimate toward the viewer (bwe/) splits over its tracks; probes
//! test whether it can take more.

use crate::api::{CodecInfo, MediaKind, TrackInfo};
use crate::bwe::twcc::SharedTwcc;
use crate::bwe::{PROBE_MAX_PACKETS, PROBE_MIN_PACKETS, SharedBwe};
use crate::error::SfuError;
use crate::forward::fallback::{Fallback, FallbackPolicy, Need};
use crate::forward::forwarder::{Forwarder, Verdict};
use crate::ids::TrackId;
use crate::media::codec::Codec;
use crate::media::packet::MediaPacket;
use crate::net::batch::SendBatch;
use crate::session::lean::{Head, LeanSender, LeanStream, Wire};
use crate::session::transport::{Transport, sdp_err};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Recent packets a video subscription keeps to send again as probe traffic.
const PROBE_SOURCES: usize = 4;

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
    pub(super) recent_next: usize,
    /// This stream on the send path of our own (lean.rs).
    pub lean: LeanStream,
}

pub struct Subscriber {
    pub link: Transport,
    pub forwarders: crate::ids::IdMap<TrackId, Subscription>,
    /// An offer is out and its answer not yet applied.
    pub offer_outstanding: bool,
    /// Tracks changed while an offer was out; offer again after the answer.
    pub renegotiate: bool,
    /// The bandwidth estimator toward the viewer.
    pub(super) bwe: SharedBwe,
    /// TWCC feedback packets received from this peer.
    pub(super) twcc_feedback: Arc<AtomicU64>,
    pub(super) policy: crate::forward::selector::LayerPolicy,
    /// Audio only while the path cannot carry the lowest video layers (forward/fallback).
    pub(super) fallback: Fallback,
    /// Shared with the NACK guard: no repairs of a paused video stream.
    pub(super) video_paused: Arc<AtomicBool>,
    /// A WHEP session (the client offered, we answered): its m-lines, in order. `None` for a
    /// page's session, where we offer and add an m-line per track.
    pub slots: Option<Vec<Slot>>,
    /// Transport-wide numbers and send history, shared with rtc's chain (bwe/twcc.rs).
    pub(super) twcc: SharedTwcc,
    /// Whether forwarded media takes the send path of our own once the connection is up.
    pub(super) lean_wanted: bool,
    /// The send path of our own (lean.rs), from the moment DTLS gave the keys; `None` before,
    /// or when the path is off (`rtc.lean_send_path`) or the keys were not noted: rtc sends.
    pub lean: Option<LeanSender>,
}

/// One m-line of a WHEP session. A standard player cannot take new m-lines from the server
/// (WHEP has no server offer), so the m-lines it offered are fixed slots: the i-th audio slot
/// carries the i-th stage seat's audio track, the i-th video slot its video, and when the
/// stage changes a slot's forwarder moves to another track (`Forwarder::retarget`) under the
/// same SSRC. A slot with no track sends nothing.
#[derive(Debug)]
pub struct Slot {
    pub kind: MediaKind,
    /// The track carried now (its subscription is in `forwarders`), or none: the
    /// subscription waits in `parked`.
    pub track: Option<TrackId>,
    pub parked: Option<Subscription>,
}

/// m-lines of one kind a WHEP session may have: one per stage seat and then some.
pub const MAX_SLOTS_PER_KIND: usize = 8;

/// What a slot carries before a track is assigned: the codec its sender is made with.
fn default_codec(kind: MediaKind) -> CodecInfo {
    match kind {
        MediaKind::Audio => {
            CodecInfo { mime_type: "audio/opus".into(), clock_rate: 48_000, channels: 2, fmtp: "minptime=10;useinbandfec=1".into() }
        }
        MediaKind::Video => CodecInfo { mime_type: "video/VP8".into(), clock_rate: 90_000, channels: 0, fmtp: String::new() },
    }
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

/// How slots changed hands: tracks no longer carried, tracks carried now.
#[derive(Debug, Default)]
pub struct SlotChanges {
    pub removed: Vec<TrackId>,
    pub added: Vec<TrackInfo>,
}

impl Subscriber {
    /// The bandwidth estimate toward this (subscriber) peer, once feedback has produced one.
    pub fn bandwidth_estimate(&self) -> Option<f64> {
        let bwe = self.bwe.lock();
        bwe.has_feedback().then(|| bwe.estimate())
    }

    /// The estimate toward this peer: where it starts until feedback corrects it.
    pub fn estimate_bps(&self) -> f64 {
        self.bwe.lock().estimate()
    }

    /// The estimator's view of the path: queueing delay, loss, probes sent (stats).
    pub fn path_stats(&self) -> Option<(Duration, f64, u64)> {
        let bwe = self.bwe.lock();
        Some((bwe.queue_delay(), bwe.loss(), bwe.probes))
    }

    /// Whether a probe was ever decided for this viewer, sent or not (tests).
    #[cfg(test)]
    pub fn has_probed(&self) -> bool {
        self.bwe.lock().has_probed()
    }

    /// TWCC feedback packets this peer has sent us.
    pub fn twcc_feedback(&self) -> u64 {
        self.twcc_feedback.load(Ordering::Relaxed)
    }

    /// recompute every forwarder's layer cap — audio first (always forwarded,
    /// its rate taken off the top), then the rest of the estimate split over the video tracks.
    pub fn allocate_layers(&mut self, now: Instant) {
        let estimate = self.bandwidth_estimate();
        if let Some(e) = estimate {
            crate::metrics::ESTIMATES.record(e);
        }
        let audio: f64 = self.forwarders.values().filter(|s| s.forwarder.is_audio()).map(|s| s.forwarder.layer_rates()[0]).sum();
        let mut video: Vec<&mut Subscription> = self.forwarders.values_mut().filter(|s| !s.forwarder.is_audio()).collect();
        let shares = estimate.map(|e| {
            let rates: Vec<_> = video.iter().map(|s| s.forwarder.layer_rates()).collect();
            let wanted: Vec<_> = video.iter().map(|s| s.forwarder.wanted_layer()).collect();
            crate::forward::selector::allocate(e - audio, &rates, &wanted)
        });
        for (i, sub) in video.iter_mut().enumerate() {
            sub.forwarder.apply_caps(shares.as_ref().and_then(|s| s.get(i).copied()), now);
        }
    }

    /// What the viewer's video needs at the least: the lowest layer of each video track (as
    /// measured; nominal before), plus its audio as measured. `None` without video.
    fn fallback_need(&self) -> Option<Need> {
        let mut need = Need { video_bps: 0.0, audio_bps: 0.0 };
        let mut video = false;
        for s in self.forwarders.values() {
            if s.forwarder.is_audio() {
                // A track never measured (a muted microphone sends nothing) needs nothing.
                need.audio_bps += s.forwarder.measured_rate(0).unwrap_or(0.0);
            } else {
                video = true;
                need.video_bps += s.forwarder.layer_rates()[0];
            }
        }
        video.then_some(need)
    }

    /// The audio-only fallback, at an allocation pass: pause or resume the video forwarders when
    /// the estimate says so. Returns `Some(true)` when video was paused now, `Some(false)` when
    /// it resumed (its forwarders then wait for keyframes: ask for them at once).
    pub fn update_fallback(&mut self, policy: &FallbackPolicy, now: Instant) -> Option<bool> {
        let need = self.fallback_need();
        let estimate = self.bandwidth_estimate();
        let change = self.fallback.update(policy, estimate, need, now)?;
        if change {
            tracing::info!(
                participant = %self.link.key.participant,
                estimate = estimate.map(|e| e as u64),
                need = need.map(|n| n.enter_below() as u64),
                "audio only: the path cannot carry the lowest video layer"
            );
        } else {
            tracing::info!(participant = %self.link.key.participant, estimate = estimate.map(|e| e as u64), "video resumed");
        }
        self.pause_video(change);
        Some(change)
    }

    /// Switch the audio-only fallback on or off for this viewer. Returns `Some(false)` when
    /// that resumed its video.
    pub fn set_fallback_enabled(&mut self, enabled: bool) -> Option<bool> {
        let change = self.fallback.set_enabled(enabled)?;
        self.pause_video(change);
        Some(change)
    }

    /// Whether the viewer's video is paused by the fallback.
    pub fn audio_only(&self) -> bool {
        self.fallback.active()
    }

    fn pause_video(&mut self, paused: bool) {
        self.video_paused.store(paused, Ordering::Relaxed);
        for sub in self.forwarders.values_mut() {
            sub.forwarder.set_paused(paused);
        }
    }

    /// What the viewer's wanted layers would cost (bits/s), with the headroom a climb needs:
    /// the rate probing aims for. While its video is paused (audio only), what resuming needs
    /// instead: the estimate must climb there with no video to carry it, by probes alone.
    fn wanted_bps(&self, fallback: &FallbackPolicy) -> f64 {
        if self.fallback.active()
            && let Some(need) = self.fallback_need()
        {
            return need.leave_at(fallback.headroom);
        }
        self.forwarders
            .values()
            .map(|s| {
                let rates = s.forwarder.layer_rates();
                if s.forwarder.is_audio() { rates[0] } else { rates[s.forwarder.wanted_known_layer() as usize] * self.policy.up_headroom }
            })
            .sum()
    }

    /// arrange a probe cluster if the estimator asks for one (see `bwe/`).
    ///
    /// A probe must be packets the viewer counts in its feedback but does not play. Copies of
    /// packets it already has would be refused by its SRTP replay check before feedback sees
    /// them, and rtc cannot write padding-only packets; so a probe is a train of RTX
    /// retransmissions (RFC 4588, new sequence numbers on the RTX stream) of the latest video
    /// packets — what browsers send when they probe. The NACK guard hands rtc's NACK responder
    /// the list with the viewer's next RTCP, and the responder sends them as one train.
    /// Returns whether a probe was arranged.
    ///
    /// While video is paused (audio only) probing goes on, aimed at what resuming needs: the
    /// probes resend the last video packets sent before the pause (still in the NACK cache).
    ///
    /// On the lean path the guard hands the request back with the viewer's next RTCP and the
    /// worker sends the train from the stream's history (lean.rs, `send_ready_probe`), as RTX:
    /// it needs RTX (browsers always accept it). Sent with each viewer's next RTCP, the trains of a worker's viewers are
    /// spread over a feedback interval rather than all queued at one allocation pass (a first
    /// build sent them at once: 7 000 datagrams, 5.7 MB of buffers, at 100 viewers).
    pub fn probe(&mut self, fallback: &FallbackPolicy, now: Instant) -> bool {
        let bwe = self.bwe.clone();
        if !self.link.connected {
            return false;
        }
        let wanted = self.wanted_bps(fallback);
        let mut bwe = bwe.lock();
        if self.fallback.active() {
            bwe.forget_stale_evidence(now);
        }
        let Some((bytes, target)) = bwe.probe_plan(now, wanted) else {
            return false;
        };
        // The video subscription with the most recent packets to resend.
        let Some(sub) = self
            .forwarders
            .values()
            .filter(|s| !s.forwarder.is_audio() && s.recent.iter().any(Option::is_some))
            .max_by_key(|s| s.forwarder.bytes())
        else {
            return false;
        };
        let recent: Vec<(u16, usize)> =
            sub.recent.iter().flatten().copied().filter(|(seq, _)| self.lean.is_none() || sub.lean.has(*seq)).collect();
        if recent.is_empty() {
            return false;
        }
        let (mut seqs, mut sent) = (Vec::new(), 0usize);
        while (sent < bytes || seqs.len() < PROBE_MIN_PACKETS) && seqs.len() < PROBE_MAX_PACKETS {
            let (seq, size) = recent[seqs.len() % recent.len()];
            seqs.push(seq);
            // RTX adds the original sequence number; the RTP header is on the wire too.
            sent += size + 14;
        }
        if self.lean.is_some() && sub.lean.rtx.is_none() {
            return false;
        }
        bwe.request_probe(sub.forwarder.ssrc(), seqs, target);
        true
    }

    /// start forwarding `track` (codec as published) under a fresh SSRC.
    pub fn add_subscription(
        &mut self,
        track: TrackId,
        stream: String,
        kind: MediaKind,
        codec: &CodecInfo,
        now: Instant,
    ) -> Result<(), SfuError> {
        if self.forwarders.contains_key(&track) {
            return Ok(());
        }
        let mut sub = self.new_sender(track.to_string(), stream, kind, codec, now)?;
        // Offer every codec of the kind in this m-line, not just the track's: rtc narrows the
        // codecs later tracks may use to those the first answer accepted, so a VP8-only first
        // answer would refuse a later H.264 track (a studio feed, a Safari publisher).
        let transceivers: Vec<_> = self.link.pc.get_transceivers().collect();
        for id in transceivers {
            if let Some(mut t) = self.link.pc.rtp_transceiver(id)
                && t.sender() == Some(sub.sender_id)
            {
                t.set_codec_preferences(Vec::new()).map_err(sdp_err)?;
            }
        }
        sub.forwarder.retarget(track, Codec::from_mime(&codec.mime_type), codec.clock_rate, now);
        // A track added while the viewer is on audio only waits with the others.
        sub.forwarder.set_paused(self.fallback.active());
        self.forwarders.insert(track, sub);
        Ok(())
    }

    /// A sender for `kind` under a fresh SSRC (rtc puts it on the first m-line of that kind
    /// without one, or a new m-line), and its subscription; the caller points its forwarder at
    /// a track (`Forwarder::retarget`) or parks it.
    fn new_sender(
        &mut self,
        label: String,
        stream: String,
        kind: MediaKind,
        codec: &CodecInfo,
        now: Instant,
    ) -> Result<Subscription, SfuError> {
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
            label.clone(),
            label,
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
        let sender_id = self.link.pc.add_track(media_track).map_err(sdp_err)?;
        // The track is the caller's to set (a parked slot has none yet).
        let forwarder = Forwarder::new(TrackId(0), Codec::from_mime(&codec.mime_type), ssrc, codec.clock_rate, now)
            .with_bandwidth(crate::forward::selector::BandwidthCap::new(self.policy.up_hold, self.policy.up_headroom));
        Ok(Subscription {
            sender_id,
            forwarder,
            mime_type: codec.mime_type.clone(),
            fmtp: codec.fmtp.clone(),
            recent: Default::default(),
            recent_next: 0,
            lean: LeanStream::default(),
        })
    }

    /// A WHEP player's offer (the first, or one that restarts ICE): apply it and answer. Each
    /// audio or video m-line it offers that has no sender yet becomes a slot (up to
    /// [`MAX_SLOTS_PER_KIND`] per kind; the rest are answered without media), and `stage`'s
    /// tracks (in stage order) go into the slots at once, so the answer's senders already
    /// carry their codecs. Returns the answer and which tracks the slots carry now.
    ///
    /// A refused offer is rolled back (a refused first offer closes the session: the worker).
    pub fn answer_offer(&mut self, now: Instant, sdp: String, stage: &[TrackInfo]) -> Result<(String, SlotChanges), SfuError> {
        if self.slots.is_none() && !self.forwarders.is_empty() {
            return Err(SfuError::BadSdp("this session is not a WHEP session".into()));
        }
        let result = self.try_answer_offer(now, sdp, stage);
        if result.is_err() && self.link.pc.pending_remote_description().is_some() {
            let rolled_back = RTCSessionDescription::rollback(None).and_then(|rollback| self.link.pc.set_remote_description(now, rollback));
            if let Err(e) = rolled_back {
                tracing::warn!("rolling back a refused WHEP offer: {e}");
            }
        }
        result
    }

    fn try_answer_offer(&mut self, now: Instant, sdp: String, stage: &[TrackInfo]) -> Result<(String, SlotChanges), SfuError> {
        let offer = RTCSessionDescription::offer(crate::session::transport::without_mdns_candidates(sdp)).map_err(sdp_err)?;
        self.link.pc.set_remote_description(now, offer).map_err(sdp_err)?;
        let open = self.open_slots()?;
        // The new slots, m-line order within each kind: rtc gives each new sender the first
        // m-line of its kind without one.
        let mut changes = SlotChanges::default();
        for kind in open {
            let index = self.slots.as_ref().map_or(0, |s| s.iter().filter(|s| s.kind == kind).count());
            let track = stage.iter().filter(|t| t.kind == kind).nth(index).filter(|t| !self.forwarders.contains_key(&t.id));
            let codec = track.map_or_else(|| default_codec(kind), |t| t.codec.clone());
            let mut sub = self.new_sender(format!("{}-{index}", kind_name(kind)), format!("onair-seat-{index}"), kind, &codec, now)?;
            let slot = match track {
                Some(t) => {
                    sub.forwarder.retarget(t.id, Codec::from_mime(&t.codec.mime_type), t.codec.clock_rate, now);
                    sub.forwarder.set_paused(self.fallback.active());
                    self.forwarders.insert(t.id, sub);
                    changes.added.push(t.clone());
                    Slot { kind, track: Some(t.id), parked: None }
                }
                None => Slot { kind, track: None, parked: Some(sub) },
            };
            self.slots.get_or_insert_with(Vec::new).push(slot);
        }
        self.link.ensure_candidate()?;
        let answer = self.link.pc.create_answer(None).map_err(sdp_err)?;
        self.link.pc.set_local_description(now, answer).map_err(sdp_err)?;
        // The answerer's restart takes the client's credentials with the offer: no early checks.
        self.link.note_local_description();
        self.resolve_payload_types();
        let answer = self.link.pc.local_description().map(|d| d.sdp).ok_or_else(|| SfuError::BadSdp("no local description".into()))?;
        Ok((answer, changes))
    }

    /// The kinds of the slots the applied offer opens, in m-line order: its audio and video
    /// m-lines that receive (`recvonly`, or `sendrecv`) and have no sender yet, up to
    /// [`MAX_SLOTS_PER_KIND`] of each kind with the slots there already.
    fn open_slots(&mut self) -> Result<Vec<MediaKind>, SfuError> {
        let offer = self.link.pc.remote_description().ok_or_else(|| SfuError::BadSdp("no offer".into()))?.unmarshal().map_err(sdp_err)?;
        let mut with_sender: Vec<String> = Vec::new();
        for id in self.link.pc.get_transceivers().collect::<Vec<_>>() {
            if let Some(t) = self.link.pc.rtp_transceiver(id)
                && t.sender().is_some()
                && let Some(mid) = t.mid().clone()
            {
                with_sender.push(mid);
            }
        }
        let existing = |kind: MediaKind| self.slots.as_ref().map_or(0, |s| s.iter().filter(|s| s.kind == kind).count());
        let mut open = Vec::new();
        for m in &offer.media_descriptions {
            let kind = match m.media_name.media.to_ascii_lowercase().as_str() {
                "audio" => MediaKind::Audio,
                "video" => MediaKind::Video,
                _ => continue,
            };
            let receives = m.attribute("sendonly").is_none()
                && m.attribute("inactive").is_none()
                && (m.media_name.port.value != 0 || m.attribute("bundle-only").is_some());
            let mid = m.attribute("mid").flatten().unwrap_or_default();
            if !receives || with_sender.iter().any(|s| s == mid) {
                continue;
            }
            if existing(kind) + open.iter().filter(|k| **k == kind).count() < MAX_SLOTS_PER_KIND {
                open.push(kind);
            }
        }
        Ok(open)
    }

    /// A WHEP session's slots follow the stage: the i-th audio slot carries the i-th audio
    /// track of `stage` (in stage order), the i-th video slot the i-th video track, and slots
    /// past the end carry nothing. A slot whose track changes keeps its sender and SSRC: its
    /// forwarder moves to the new track. Returns what changed; nothing for a page's session.
    pub fn set_slots(&mut self, stage: &[TrackInfo], now: Instant) -> SlotChanges {
        let mut changes = SlotChanges::default();
        let Some(mut slots) = self.slots.take() else { return changes };
        let mut index = [0usize; 2];
        let wanted: Vec<Option<&TrackInfo>> = slots
            .iter()
            .map(|slot| {
                let i = &mut index[usize::from(slot.kind == MediaKind::Video)];
                let t = stage.iter().filter(|t| t.kind == slot.kind).nth(*i);
                *i += 1;
                t
            })
            .collect();
        // First free the slots that change, so a track moving from one slot to another (a seat
        // left before it) is not in two at once.
        let mut freed: Vec<Option<Subscription>> = Vec::with_capacity(slots.len());
        for (slot, want) in slots.iter_mut().zip(&wanted) {
            if slot.track == want.map(|t| t.id) {
                freed.push(None);
                continue;
            }
            let sub = match slot.track.take() {
                Some(old) => {
                    changes.removed.push(old);
                    self.forwarders.remove(&old)
                }
                None => slot.parked.take(),
            };
            freed.push(sub);
        }
        for ((slot, want), sub) in slots.iter_mut().zip(&wanted).zip(freed) {
            let Some(mut sub) = sub else { continue };
            match want {
                Some(t) if !self.forwarders.contains_key(&t.id) => {
                    sub.forwarder.retarget(t.id, Codec::from_mime(&t.codec.mime_type), t.codec.clock_rate, now);
                    sub.forwarder.set_paused(self.fallback.active());
                    sub.mime_type = t.codec.mime_type.clone();
                    sub.fmtp = t.codec.fmtp.clone();
                    sub.recent = Default::default();
                    let pt = self.payload_type_for(&sub);
                    sub.forwarder.set_payload_type(pt);
                    self.lean_params(&mut sub);
                    self.forwarders.insert(t.id, sub);
                    slot.track = Some(t.id);
                    changes.added.push((*t).clone());
                }
                _ => slot.parked = Some(sub),
            }
        }
        // A track that left one slot and went into another was removed and added: it is still
        // carried, so the router need not hear of it.
        changes.removed.retain(|t| !self.forwarders.contains_key(t));
        self.slots = Some(slots);
        changes
    }

    /// Whether this is a WHEP session (fixed slots, the client offers).
    pub fn is_whep(&self) -> bool {
        self.slots.is_some()
    }

    /// stop forwarding `track`. Returns whether it was forwarded.
    pub fn remove_subscription(&mut self, track: TrackId) -> bool {
        if let Some(slot) = self.slots.as_mut().and_then(|s| s.iter_mut().find(|s| s.track == Some(track))) {
            // A WHEP slot keeps its sender: it waits for the next track of its seat.
            slot.track = None;
            slot.parked = self.forwarders.remove(&track);
            return slot.parked.is_some();
        }
        match self.forwarders.remove(&track) {
            Some(sub) => {
                if let Err(e) = self.link.pc.remove_track(sub.sender_id) {
                    tracing::debug!(%track, "remove_track: {e}");
                }
                true
            }
            None => false,
        }
    }

    /// an offer to send now, or `None` if one is already out (then another
    /// follows the answer).
    pub fn negotiate(&mut self, now: Instant) -> Result<Option<String>, SfuError> {
        if self.offer_outstanding {
            self.renegotiate = true;
            return Ok(None);
        }
        self.link.ensure_candidate()?;
        let offer = self.link.pc.create_offer(None).map_err(sdp_err)?;
        self.link.pc.set_local_description(now, offer).map_err(sdp_err)?;
        if self.link.note_local_description() {
            self.link.early_checks = Some(Vec::new());
        }
        self.offer_outstanding = true;
        self.renegotiate = false;
        Ok(self.link.pc.local_description().map(|d| with_msid_semantic(d.sdp)))
    }

    /// The client lost its path (it moved to another network) and asks for an ICE restart: the
    /// next offer carries new ICE credentials, so the client gathers its new addresses and
    /// checks them; DTLS, tracks and forwarding state stay. Returns that offer, or `None` when
    /// one is out (the restart rides on the offer that follows its answer).
    pub fn restart_ice(&mut self, now: Instant) -> Result<Option<String>, SfuError> {
        self.link.pc.restart_ice();
        self.negotiate(now)
    }

    /// The offer sent and not answered yet, to send again after the client missed it.
    pub fn pending_offer(&self) -> Option<String> {
        if !self.offer_outstanding {
            return None;
        }
        self.link.pc.local_description().map(|d| with_msid_semantic(d.sdp))
    }

    /// apply the client's answer; learn the payload types it accepted.
    pub fn apply_answer(&mut self, now: Instant, sdp: String) -> Result<(), SfuError> {
        if !self.offer_outstanding {
            return Err(SfuError::BadSdp("no offer is outstanding".into()));
        }
        let answer = RTCSessionDescription::answer(sdp).map_err(sdp_err)?;
        self.link.pc.set_remote_description(now, answer).map_err(sdp_err)?;
        self.offer_outstanding = false;
        self.link.replay_early_checks();
        self.resolve_payload_types();
        Ok(())
    }

    /// Learn, after a negotiation, the payload type each forwarded track's codec got.
    fn resolve_payload_types(&mut self) {
        let mut forwarders = std::mem::take(&mut self.forwarders);
        for sub in forwarders.values_mut() {
            let pt = self.payload_type_for(sub);
            sub.forwarder.set_payload_type(pt);
            self.lean_params(sub);
            if pt.is_none() {
                let negotiated =
                    self.link.pc.rtp_sender(sub.sender_id).is_some_and(|mut s| !s.get_parameters().rtp_parameters.codecs.is_empty());
                if negotiated {
                    tracing::warn!(track = %sub.forwarder.track(), "subscriber did not accept {}", sub.mime_type);
                } else {
                    // Added after this offer went out: the next offer carries it.
                    tracing::debug!(track = %sub.forwarder.track(), "not negotiated yet");
                }
            }
        }
        self.forwarders = forwarders;
        let mut slots = self.slots.take();
        for sub in slots.iter_mut().flatten().filter_map(|s| s.parked.as_mut()) {
            let pt = self.payload_type_for(sub);
            sub.forwarder.set_payload_type(pt);
            self.lean_params(sub);
        }
        self.slots = slots;
    }

    /// What the lean path needs of `sub`'s negotiation: the transport-wide extension's id on its
    /// m-line, and the RTX SSRC and payload type that repair its payload type, if accepted.
    fn lean_params(&mut self, sub: &mut Subscription) {
        let Some(mut sender) = self.link.pc.rtp_sender(sub.sender_id) else { return };
        let params = sender.get_parameters();
        sub.lean.twcc_ext = params
            .rtp_parameters
            .header_extensions
            .iter()
            .find(|e| e.uri == crate::bwe::twcc::TRANSPORT_CC_URI)
            .and_then(|e| u8::try_from(e.id).ok())
            .filter(|id| (1..=14).contains(id));
        let ssrc = sub.forwarder.ssrc();
        let rtx_ssrc = params
            .encodings
            .iter()
            .find(|e| e.rtp_coding_parameters.ssrc == Some(ssrc))
            .and_then(|e| e.rtp_coding_parameters.rtx.as_ref())
            .map(|r| r.ssrc);
        let rtx_pt = sub.forwarder.payload_type().and_then(|pt| rtx_payload_type(pt, &params.rtp_parameters.codecs));
        sub.lean.rtx = rtx_ssrc.zip(rtx_pt);
    }

    /// The payload type the viewer accepted for `sub`'s codec on its sender: the same MIME
    /// type and, where the answer has several (H.264 profiles), the same fmtp line as the
    /// publisher's codec; else the first of that MIME type.
    fn payload_type_for(&mut self, sub: &Subscription) -> Option<u8> {
        let mut sender = self.link.pc.rtp_sender(sub.sender_id)?;
        let params = sender.get_parameters();
        let codecs = &params.rtp_parameters.codecs;
        let same_mime =
            |c: &&rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters| c.rtp_codec.mime_type.eq_ignore_ascii_case(&sub.mime_type);
        codecs
            .iter()
            .filter(same_mime)
            .find(|c| c.rtp_codec.sdp_fmtp_line == sub.fmtp)
            .or_else(|| codecs.iter().find(same_mime))
            .map(|c| c.payload_type)
    }

    /// The per-packet step: decide, rewrite SSRC / sequence number / timestamp / payload type,
    /// and send: on the lean path straight into `out` (sealed here), else through rtc (which
    /// encrypts it into `poll_write`; the caller drains it). Returns whether a packet was sent.
    /// Nothing is sent before the connection is up: the stream then starts at a keyframe.
    pub fn forward(&mut self, pkt: &Arc<MediaPacket>, out: &mut SendBatch, now: Instant) -> bool {
        self.send(pkt, true, out, now)
    }

    /// Send a packet of a picture kept by the worker (forward/gop.rs) to start this viewer's
    /// stream: as [`forward`](Self::forward), but it does not count toward the layer's measured
    /// rate (the picture arrives all at once).
    pub fn replay(&mut self, pkt: &Arc<MediaPacket>, out: &mut SendBatch, now: Instant) -> bool {
        self.send(pkt, false, out, now)
    }

    /// Whether forwarded media takes the send path of our own (then a forward touches nothing
    /// of rtc's: no writes to drain, no deadline moved).
    pub fn is_lean(&self) -> bool {
        self.lean.is_some()
    }

    fn send(&mut self, pkt: &Arc<MediaPacket>, measure: bool, out: &mut SendBatch, now: Instant) -> bool {
        let Some(sub) = self.forwarders.get_mut(&pkt.track) else {
            return false;
        };
        if measure {
            let tid = pkt.temporal.map(|t| t.tid);
            sub.forwarder.measure_temporal(pkt.layer, pkt.payload.len(), pkt.frame_height, tid, now);
        }
        if !self.link.connected {
            // Nothing can be sent yet, but which layers arrive decides where the stream starts.
            sub.forwarder.observe(pkt.layer, now);
            return false;
        }
        let Verdict::Send { seq, ts } =
            sub.forwarder.handle_temporal(pkt.layer, pkt.header.sequence_number, pkt.header.timestamp, pkt.keyframe, pkt.temporal, now)
        else {
            return false;
        };
        // handle() says Send only once a payload type is negotiated.
        let pt = sub.forwarder.payload_type().unwrap_or(pkt.header.payload_type);
        sub.forwarder.sent(pkt.payload.len());
        let video = !sub.forwarder.is_audio();
        if video {
            sub.recent[sub.recent_next] = Some((seq, pkt.payload.len()));
            sub.recent_next = (sub.recent_next + 1) % PROBE_SOURCES;
        }
        if let (Some(lean), Some(to)) = (self.lean.as_mut(), self.link.remote) {
            let head = Head { ssrc: sub.forwarder.ssrc(), pt, seq, ts, marker: pkt.header.marker, padding: pkt.header.padding };
            return sub.lean.send(lean, &mut Wire { out, to, now }, head, pkt, video, sub.forwarder.clock_rate());
        }
        // Extensions and CSRCs were stripped at ingest, so this clone does not allocate.
        let mut header = pkt.header.clone();
        header.ssrc = sub.forwarder.ssrc();
        header.sequence_number = seq;
        header.timestamp = ts;
        header.payload_type = pt;
        let sender_id = sub.sender_id;
        let packet = rtc::rtp::Packet { header, payload: pkt.payload.clone() };
        match self.link.pc.rtp_sender(sender_id).map(|mut s| s.write_rtp(now, packet)) {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::trace!("write_rtp: {e}");
                false
            }
            None => false,
        }
    }

    /// The connection is up: take the send path of our own if it is wanted and rtc's SRTP keys
    /// for this connection were noted (session/srtp_keys.rs). Once taken it stays: DTLS runs
    /// once per connection (an ICE restart keeps it).
    pub fn start_lean(&mut self, now: Instant) {
        if !self.lean_wanted || self.lean.is_some() {
            return;
        }
        // Not expected: the connection offers only the profiles the sealer has. rtc then sends
        // the media, without repairs or sender reports (its responder and reporter are not in
        // a lean session's chain).
        let Some(keys) = self.link.srtp_keys() else {
            tracing::error!(participant = %self.link.key.participant, "no SRTP keys noted: rtc sends this viewer's media");
            return;
        };
        let sealer = rtc::crypto::default_provider().ok().and_then(|p| crate::net::srtp::RtpSealer::new(&keys, p.crypto()));
        match sealer {
            Some(sealer) => self.lean = Some(LeanSender::new(sealer, self.twcc.clone(), now)),
            None => tracing::error!(participant = %self.link.key.participant, "SRTP keys unusable: rtc sends this viewer's media"),
        }
    }

    /// NACKed packets of the stream sent as `media_ssrc` (already let through by the NACK
    /// guard), sent again on the lean path. Returns how many were.
    pub fn resend(&mut self, media_ssrc: u32, seqs: &[u16], out: &mut SendBatch, now: Instant) -> usize {
        let (Some(lean), Some(to)) = (self.lean.as_mut(), self.link.remote) else { return 0 };
        let Some(sub) = self.forwarders.values_mut().find(|s| s.forwarder.ssrc() == media_ssrc) else { return 0 };
        let mut wire = Wire { out, to, now };
        seqs.iter().filter(|&&seq| sub.lean.resend(lean, &mut wire, seq) > 0).count()
    }

    /// The probe train due with the viewer's RTCP just read (`Bwe::probe_ready`), sent on the
    /// lean path. Returns how many packets went.
    pub fn send_ready_probe(&mut self, out: &mut SendBatch, now: Instant) -> usize {
        let Some((media_ssrc, seqs, target)) = self.bwe.lock().take_ready_probe() else { return 0 };
        let sent = self.resend(media_ssrc, &seqs, out, now);
        if sent > 0 {
            self.bwe.lock().probe_sent(now, target, sent);
        }
        sent
    }

    /// Sender reports of the lean path's streams, when due (once a second), through rtc's RTCP
    /// path (the caller drains it).
    pub fn send_reports(&mut self, now: Instant) {
        let Some(lean) = self.lean.as_mut() else { return };
        if !lean.reports_due(now) {
            return;
        }
        let lean: &LeanSender = lean;
        let mut reports = Vec::new();
        for sub in self.forwarders.values() {
            if let Some(sr) = sub.lean.report(lean, sub.forwarder.ssrc(), now) {
                reports.push((sub.sender_id, sr));
            }
        }
        for (sender_id, sr) in reports {
            let written = self.link.pc.rtp_sender(sender_id).map(|mut s| s.write_rtcp(now, vec![Box::new(sr)]));
            if let Some(Err(e)) = written {
                tracing::debug!("sender report: {e}");
            }
        }
    }
}

/// The payload type of the RTX codec (RFC 4588 §8.1: `apt=<pt>`) that repairs `pt`.
fn rtx_payload_type(pt: u8, codecs: &[rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters]) -> Option<u8> {
    codecs
        .iter()
        .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case("video/rtx"))
        .find(|c| {
            c.rtp_codec.sdp_fmtp_line.split(';').any(|p| p.trim().strip_prefix("apt=").and_then(|v| v.trim().parse().ok()) == Some(pt))
        })
        .map(|c| c.payload_type)
}

/// rtc writes the session-level `a=msid-semantic:WMS *` only into offers made once a remote
/// description exists, so a viewer's first offer lacked it; stacks other than Chrome then ignore
/// the `a=msid` lines and cannot tell which stream a track belongs to. Every offer sent carries
/// it (added to the text sent, not to the local description: rtc refuses a local offer that
/// differs from the one it made).
pub fn with_msid_semantic(sdp: String) -> String {
    let session_part = sdp.split("\nm=").next().unwrap_or(&sdp);
    if session_part.contains("a=msid-semantic") {
        return sdp;
    }
    // Before the first media section, whatever its line ending (a CRLF search first once put
    // the line into a media section of a text with a bare LF before it: `sdp_offer` fuzz target).
    match sdp.find("\nm=").map(|i| i + 1) {
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

#[cfg(test)]
mod tests {
    use super::with_msid_semantic;

    #[test]
    fn msid_semantic_goes_into_the_session_part() {
        let crlf = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n".to_owned();
        assert_eq!(with_msid_semantic(crlf), "v=0\r\ns=-\r\na=msid-semantic:WMS *\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n");
        // Found by fuzzing: a bare LF before the first m= line, CRLF before a later one.
        let mixed = "v=0\r\n1 \nm=audio 9 x\r\nc=IN\r\nm=video 9 x\r\n".to_owned();
        let out = with_msid_semantic(mixed);
        assert_eq!(out, "v=0\r\n1 \na=msid-semantic:WMS *\r\nm=audio 9 x\r\nc=IN\r\nm=video 9 x\r\n");
        assert_eq!(with_msid_semantic(out.clone()), out, "once");
        assert_eq!(with_msid_semantic("v=0\r\n".to_owned()), "v=0\r\n", "no media section, nothing to add");
    }
}
