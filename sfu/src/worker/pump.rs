//! After a session took input: queue its datagrams, act on its events (connection state,
//! tracks opened and closed) and route the media it decrypted.

use crate::api::{CodecInfo, ConnState, MediaKind, SfuEvent, TrackInfo};
use crate::ids::{SessionKey, SessionRole, TrackId};
use crate::media::codec::Codec;
use crate::media::packet::MediaPacket;
use crate::media::simulcast::{MAX_LAYERS, layer_of_rid};
use crate::net::demux::{DemuxCtl, Route};
use crate::session::publisher::{PublishedLayer, PublishedTrack};
use crate::worker::core::{Core, drain_writes};
use crate::worker::tables::Published;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Core {
    /// Drain a session after input: datagrams to send, events, received media; then rearm its
    /// timer.
    pub fn pump(&mut self, key: SessionKey, now: Instant) {
        let mut events = Vec::new();
        let mut media = Vec::new();
        let mut feedback = Vec::new();
        let mut nacks: Vec<(u32, Vec<u16>)> = Vec::new();
        let moved;
        let mut switched_video = Vec::new();
        {
            let counters = &self.plane.counters;
            let Some(state) = self.participants.get_mut(&key.participant) else { return };
            // The transport, and the side's own state: a publisher's tracks or a subscriber's
            // forwarders.
            let (link, mut published, forwarders) = match key.role {
                SessionRole::Publisher => {
                    let Some(s) = state.publisher.as_mut() else { return };
                    (&mut s.link, Some(&mut s.published), None)
                }
                SessionRole::Subscriber => {
                    let Some(s) = state.subscriber.as_mut() else { return };
                    (&mut s.link, None, Some(&s.forwarders))
                }
            };
            if !link.ufrag_registered {
                link.ufrag_registered = true;
                self.out.demux.push(DemuxCtl::Register(link.ufrag.clone(), Route { worker: self.idx, session: key }));
            }
            drain_writes(&mut self.out.transmit, link);
            while let Some(ev) = link.pc.poll_event() {
                events.push(ev);
            }
            // rtc's DTLS endpoint queues its first flight as DTLS client (the ClientHello) when
            // ICE selects a pair (as the events are polled, just above) but hands it out only from its
            // next timeout, up to 200 ms later. Until the session has connected, a timeout pass
            // here lets such a flight out at once (drained with the reads' writes below). (We
            // are the DTLS client of a viewer whose answer said `a=setup:passive`, as rtc-based
            // clients answer; browsers take the client's part themselves.)
            if !link.ever_connected
                && let Err(e) = link.pc.handle_timeout(now)
            {
                tracing::debug!(?key, "timeout pass before connecting: {e}");
            }
            while let Some(TaggedRTCMessage { message, now: at }) = link.pc.poll_read() {
                match message {
                    RTCMessage::RtpPacket(track_id, mut packet) => {
                        let Some(t) = published.as_mut().and_then(|p| p.get_mut(&track_id)) else { continue };
                        let (id, codec) = (t.id, t.codec);
                        // A layer whose OnOpen is still queued is not known yet: skip its packet.
                        let Some(l) = t.layer_by_ssrc(packet.header.ssrc) else { continue };
                        l.packets += 1;
                        let layer = l.layer;
                        counters.rtp_in.fetch_add(1, Ordering::Relaxed);
                        // Each leg negotiates its own extensions: start the outgoing header
                        // clean (a stale profile or padding count would mis-size the packet
                        // once the subscriber leg adds its transport-cc number).
                        packet.header.extension = false;
                        packet.header.extensions.clear();
                        packet.header.extension_profile = 0;
                        packet.header.extensions_padding = 0;
                        packet.header.csrc.clear();
                        let pkt = MediaPacket::inspect(id, layer, codec, packet.header, packet.payload, at);
                        if pkt.keyframe {
                            l.last_keyframe = Some(at);
                        }
                        media.push(pkt);
                    }
                    RTCMessage::RtcpPacket(track_id, packets) if forwarders.is_some() => {
                        // NACKs the guard let through (session/feedback.rs), for the lean path.
                        for nack in packets.iter().filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>()) {
                            nacks.push((nack.media_ssrc, nack.nacks.iter().flat_map(|p| p.packet_list()).collect()));
                        }
                        let wants_keyframe =
                            packets.iter().any(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>());
                        if packets.iter().any(|p| p.as_any().is::<FullIntraRequest>()) {
                            crate::metrics::FIRS_RECEIVED.fetch_add(1, Ordering::Relaxed);
                        }
                        if wants_keyframe && let Ok(track) = track_id.parse::<TrackId>() {
                            // The viewer's decoder wants a keyframe of what it is fed.
                            let layer = forwarders.and_then(|f| f.get(&track)).and_then(|s| s.forwarder.current()).unwrap_or(0);
                            feedback.push((track, layer));
                        }
                    }
                    _ => {}
                }
            }
            // Writes the reads may have caused (NACK responses, receiver reports).
            drain_writes(&mut self.out.transmit, link);
            Core::reschedule(&mut self.timers, link);
            moved = std::mem::take(&mut link.moved);
            // A publisher's media switched paths (an ICE restart): packets in flight on the old
            // one are lost, and a viewer whose decoder then waits on them may not ask for a
            // keyframe for seconds. Each of its video tracks starts again at a keyframe.
            if std::mem::take(&mut link.switched)
                && let Some(published) = published.as_ref()
            {
                switched_video
                    .extend(published.values().filter(|t| matches!(t.codec, Codec::Vp8 | Codec::Vp9 | Codec::H264)).map(|t| t.id));
            }
        }
        for track in switched_video {
            self.request_keyframe_from_publisher(track, super::keyframes::ALL_LAYERS, now);
        }
        // The viewer's media moved to a new path (an ICE restart or a rebinding after silence):
        // what went to the old one is lost, so every video restarts at a keyframe at once rather
        // than when the viewer's decoder gives up and asks.
        if moved && let Some(s) = self.subscriber(key.participant) {
            for sub in s.forwarders.values_mut().filter(|sub| sub.mime_type.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("video/"))) {
                let layer = sub.forwarder.keyframe_to_ask(now, std::time::Duration::ZERO).or(sub.forwarder.current());
                if let Some(layer) = layer {
                    feedback.push((sub.forwarder.track(), layer));
                }
            }
        }
        if !nacks.is_empty()
            && let Some(s) = self.participants.get_mut(&key.participant).and_then(|p| p.subscriber.as_mut())
        {
            for (ssrc, seqs) in nacks {
                s.resend(ssrc, &seqs, &mut self.out.transmit, now);
            }
        }
        if key.role == SessionRole::Subscriber
            && let Some(s) = self.participants.get_mut(&key.participant).and_then(|p| p.subscriber.as_mut())
        {
            s.send_ready_probe(&mut self.out.transmit, now);
        }
        for ev in events {
            self.handle_event(key, ev, now);
        }
        for pkt in media {
            self.route(pkt, now);
        }
        for (track, layer) in feedback {
            self.request_keyframe_from_publisher(track, layer, now);
        }
    }

    fn handle_event(&mut self, key: SessionKey, ev: RTCPeerConnectionEvent, now: Instant) {
        match ev {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let conn = match state {
                    RTCPeerConnectionState::Connected => ConnState::Connected,
                    RTCPeerConnectionState::Disconnected => ConnState::Disconnected,
                    RTCPeerConnectionState::Failed => ConnState::Failed,
                    RTCPeerConnectionState::Closed => ConnState::Closed,
                    _ => return,
                };
                match conn {
                    ConnState::Connected => self.set_connected(key, true, now),
                    ConnState::Disconnected => self.set_connected(key, false, now),
                    ConnState::Failed | ConnState::Closed => {
                        tracing::debug!(?key, ?conn, "connection state");
                        self.emit(key.participant, SfuEvent::Connection(key.role, conn));
                        self.close_session(key, "connection failed", now);
                    }
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) if key.role == SessionRole::Publisher => {
                self.track_opened(key, init.receiver_id, init.track_id, init.ssrc, init.rid);
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) if key.role == SessionRole::Publisher => {
                let removed = self.publisher(key.participant).and_then(|s| s.published.remove(&track_id));
                if let Some(t) = removed {
                    self.unpublish(key.participant, t.id, now);
                }
            }
            _ => {}
        }
    }

    fn track_opened(&mut self, key: SessionKey, receiver_id: RTCRtpReceiverId, rtc_track_id: String, ssrc: u32, rid: Option<String>) {
        let max = self.plane.config.max_tracks_per_publisher;
        let Some(session) = self.publisher(key.participant) else { return };
        // Another simulcast encoding of a track we know: add the layer.
        if let Some(t) = session.published.get_mut(&rtc_track_id) {
            if t.layers.iter().any(|l| l.ssrc == ssrc) || t.layers.len() >= MAX_LAYERS {
                return;
            }
            let layer = layer_of_rid(rid.as_deref(), t.layers.len() as u8);
            if t.layers.iter().any(|l| l.layer == layer) {
                tracing::warn!(?key, ?rid, "a second encoding claims layer {layer}; ignored");
                return;
            }
            tracing::info!(participant = %key.participant, track = %t.id, ?rid, layer, "simulcast layer opened");
            t.layers.push(PublishedLayer { layer, ssrc, last_pli: None, pli_pending: false, last_keyframe: None, packets: 0 });
            return;
        }
        if session.published.len() >= max {
            tracing::warn!(?key, "publisher exceeds {max} tracks; ignoring {rtc_track_id}");
            return;
        }
        let Some(receiver) = session.link.pc.rtp_receiver(receiver_id) else { return };
        let track = receiver.track();
        let kind = match track.kind() {
            RtpCodecKind::Audio => MediaKind::Audio,
            RtpCodecKind::Video => MediaKind::Video,
            _ => return,
        };
        let Some(codec) = track.codec(ssrc).cloned() else {
            tracing::warn!(?key, "track {rtc_track_id} has no codec for ssrc {ssrc}");
            return;
        };
        let id = TrackId::next();
        let layer = layer_of_rid(rid.as_deref(), 0);
        session.published.insert(
            rtc_track_id,
            PublishedTrack {
                id,
                codec: Codec::from_mime(&codec.mime_type),
                receiver_id,
                layers: vec![PublishedLayer { layer, ssrc, last_pli: None, pli_pending: false, last_keyframe: None, packets: 0 }],
            },
        );
        let info = TrackInfo {
            id,
            publisher: key.participant,
            kind,
            codec: CodecInfo {
                mime_type: codec.mime_type,
                clock_rate: codec.clock_rate,
                channels: codec.channels,
                fmtp: codec.sdp_fmtp_line,
            },
        };
        tracing::info!(participant = %key.participant, track = %id, ?kind, ?rid, mime = %info.codec.mime_type, "track published");
        self.publish_track(info);
    }

    /// A track published on this worker (by a peer session or the ingest path) joins the
    /// routing tables and is announced.
    pub fn publish_track(&mut self, info: TrackInfo) {
        self.router.published.insert(info.id, Published::new(info.publisher, self.plane.workers));
        self.plane.tracks.insert(info.id, self.idx);
        self.plane.counters.tracks.fetch_add(1, Ordering::Relaxed);
        self.emit(info.publisher, SfuEvent::TrackPublished(info));
    }
}
