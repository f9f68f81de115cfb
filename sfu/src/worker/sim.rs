//! Virtual-time tests of the worker core. A [`Sim`] runs one `Core` with sans-IO rtc peers for
//! clients: every datagram passes by function call, and time only moves when the harness moves
//! it, to the next deadline of the core, a peer or the publisher's frame clock. The handshakes
//! (ICE, DTLS, SRTP) are real, byte for byte; nothing waits on the wall clock, so what the tests
//! measure (when a keyframe arrives, when a layer switches, when dynacast pauses a layer) is
//! exact and the same on every run.

use crate::api::{SfuEvent, TrackInfo};
use crate::config::SfuConfig;
use crate::ids::{ParticipantId, SessionKey, SessionRole, TrackId};
use crate::media::codec::vp8_keyframe_size;
use crate::session::SessionFactory;
use crate::session::feedback::{KEYFRAME_FEEDBACK_SLOT, KeyframeFeedback};
use crate::session::transport::host_candidate;
use crate::worker::core::Core;
use crate::worker::msg::{Answer, Command, Input};
use crate::worker::plane::{Counters, Plane};
use bytes::{BufMut, Bytes, BytesMut};
use dashmap::DashMap;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const SERVER: &str = "10.0.0.1:7882";
/// Frame heights of the three simulcast layers.
const HEIGHTS: [u16; 3] = [180, 360, 720];
/// Bytes per frame of each layer at 30 fps: about 100, 300 and 800 kbit/s.
const FRAME_BYTES: [usize; 3] = [420, 1250, 3300];
const FRAME: Duration = Duration::from_micros(33_333);
const RIDS: [&str; 3] = ["q", "h", "f"];

fn ctx(local: SocketAddr, peer: SocketAddr) -> TransportContext {
    TransportContext { local_addr: local, peer_addr: peer, ecn: None, transport_protocol: TransportProtocol::UDP }
}

/// Sender reports a client's peer received: when, and the report.
type Reports = Arc<std::sync::Mutex<Vec<(Instant, rtc::rtcp::sender_report::SenderReport)>>>;

/// An interceptor that notes the sender reports a client receives.
#[derive(Default)]
struct ReportTap {
    seen: Reports,
    reads: std::collections::VecDeque<rtc::interceptor::TaggedPacket>,
    writes: std::collections::VecDeque<rtc::interceptor::TaggedPacket>,
}

impl Protocol<rtc::interceptor::TaggedPacket, rtc::interceptor::TaggedPacket, ()> for ReportTap {
    type Rout = rtc::interceptor::TaggedPacket;
    type Wout = rtc::interceptor::TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: rtc::interceptor::TaggedPacket) -> Result<(), Self::Error> {
        if let rtc::interceptor::Packet::Rtcp(packets) = &msg.message.packet {
            for p in packets {
                if let Some(sr) = p.as_any().downcast_ref::<rtc::rtcp::sender_report::SenderReport>() {
                    self.seen.lock().expect("reports").push((msg.now, sr.clone()));
                }
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn handle_write(&mut self, msg: rtc::interceptor::TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<rtc::interceptor::TaggedPacket> {
        self.reads.pop_front()
    }

    fn poll_write(&mut self) -> Option<rtc::interceptor::TaggedPacket> {
        self.writes.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl rtc::interceptor::Interceptor for ReportTap {
    fn bind_local_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
}

/// A client's peer connection, as a browser would configure it (default codecs and
/// interceptors, our keyframe feedback so a publisher sees PLIs, ICE checks every 50 ms), and
/// the sender reports it receives.
fn client_pc(addr: SocketAddr, now: Instant, profiles: Option<Vec<SrtpProtectionProfile>>) -> (RTCPeerConnection, Reports) {
    let tap = ReportTap::default();
    let reports = tap.seen.clone();
    let mut me = MediaEngine::default();
    me.register_default_codecs().expect("default codecs register");
    let reg = register_default_interceptors(Registry::new(), &mut me)
        .expect("default interceptors register")
        .with(Slot::from(KEYFRAME_FEEDBACK_SLOT), KeyframeFeedback::default())
        .with(Slot::from(KEYFRAME_FEEDBACK_SLOT - 1), tap);
    let mut setting = SettingEngineBuilder::new().with_ice_connection_attempts(Some(Duration::from_millis(50)), Some(28));
    if let Some(profiles) = profiles {
        setting = setting.with_srtp_protection_profiles(profiles);
    }
    let setting = setting.build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(setting)
        .with_media_engine(me)
        .with_interceptor_registry(reg)
        .build(now)
        .expect("client peer builds");
    pc.add_local_candidate(host_candidate(addr).expect("host candidate")).expect("local candidate");
    (pc, reports)
}

/// A VP8-shaped packet: descriptor, frame tag (a keyframe's carries its size), the layer, padding.
fn vp8(first: bool, key: bool, layer: usize, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size);
    b.put_u8(if first { 0x10 } else { 0x00 });
    if first && key {
        b.put_slice(&[0x50, 0x2d, 0x01, 0x9d, 0x01, 0x2a]);
        b.put_u16_le(HEIGHTS[layer] * 16 / 9);
        b.put_u16_le(HEIGHTS[layer]);
    } else if first {
        b.put_slice(&[0x51, 0x2d, 0x01]);
    }
    b.put_u8(layer as u8);
    b.resize(size.max(b.len()), 0xab);
    b.freeze()
}

/// The publisher client's encoder: three layers, keyframes on request (PLI) and every `gop`.
struct Encoder {
    video: RTCRtpSenderId,
    ssrcs: [u32; 3],
    seq: [u16; 3],
    ts: [u32; 3],
    mid: Option<(u8, String)>,
    rid_ext: Option<u8>,
    /// Layers above this are paused (dynacast).
    max_layer: u8,
    want_key: [bool; 3],
    last_key: [Option<Instant>; 3],
    gop: Duration,
    next_frame: Instant,
    plis: u32,
    /// When each PLI arrived.
    pli_at: Vec<Instant>,
}

/// A bottleneck in front of a client: what the server sends it crosses a link of `rate_bps`
/// (UDP payload bytes; 0 = unlimited) with a drop-tail queue of at most `queue` of transmission
/// time, as the integration tests' relay does.
struct Downlink {
    rate_bps: u64,
    queue: Duration,
    free_at: Option<Instant>,
    /// (when it leaves the link, datagram), in order.
    in_flight: std::collections::VecDeque<(Instant, BytesMut)>,
    dropped: u64,
    /// Instants (ascending) at which the link loses every RTP datagram (not RTCP) pushed.
    lose_at: Vec<Instant>,
}

impl Default for Downlink {
    fn default() -> Self {
        Self {
            rate_bps: 0,
            queue: Duration::from_millis(100),
            free_at: None,
            in_flight: Default::default(),
            dropped: 0,
            lose_at: Vec::new(),
        }
    }
}

impl Downlink {
    fn push(&mut self, now: Instant, data: BytesMut) {
        // RTP, not RTCP (RFC 7983 and RFC 5761: RTCP's packet types are 192..=223).
        if data.len() > 12 && (128..192).contains(&data[0]) && !(192..224).contains(&data[1]) && self.lose_at.binary_search(&now).is_ok() {
            self.dropped += 1;
            return;
        }
        let start = self.free_at.map_or(now, |f| f.max(now));
        if self.rate_bps == 0 {
            self.in_flight.push_back((start, data));
            return;
        }
        if start.duration_since(now) > self.queue {
            self.dropped += 1;
            return;
        }
        let done = start + Duration::from_secs_f64(data.len() as f64 * 8.0 / self.rate_bps as f64);
        self.free_at = Some(done);
        self.in_flight.push_back((done, data));
    }

    fn due(&mut self, now: Instant) -> Option<BytesMut> {
        if self.in_flight.front().is_some_and(|(t, _)| *t <= now) { self.in_flight.pop_front().map(|(_, d)| d) } else { None }
    }

    fn next(&self) -> Option<Instant> {
        self.in_flight.front().map(|(t, _)| *t)
    }
}

struct Client {
    id: ParticipantId,
    addr: SocketAddr,
    pc: RTCPeerConnection,
    downlink: Downlink,
    connected: Option<Instant>,
    encoder: Option<Encoder>,
    /// Video received: (when, ssrc, sequence number, layer, keyframe start).
    video: Vec<(Instant, u32, u16, u8, bool)>,
    /// Every RTP packet received, as the peer delivered it (RTX unwrapped): when, sequence
    /// number, timestamp, marker, payload type, payload.
    rtp: Vec<(Instant, u16, u32, bool, u8, Bytes)>,
    reports: Reports,
}

struct Sim {
    t0: Instant,
    now: Instant,
    core: Core,
    server: SocketAddr,
    clients: Vec<Client>,
    /// Every event the core emitted, with when.
    events: Vec<(Instant, ParticipantId, SfuEvent)>,
    /// How long a viewer's answer takes to reach the server (signaling is slower than media).
    answer_delay: Duration,
    /// Answers on their way, and when each was delivered.
    answers: Vec<(Instant, ParticipantId, String)>,
    answered: Vec<(Instant, ParticipantId)>,
    /// When the server first decided to probe toward a viewer.
    first_probe: Option<Instant>,
    /// The SRTP profiles clients added from now on offer, in order (rtc's default list if none).
    client_srtp: Option<Vec<SrtpProtectionProfile>>,
}

impl Sim {
    fn new() -> Sim {
        Sim::with(SfuConfig { workers: 1, ..SfuConfig::default() })
    }

    fn with(config: SfuConfig) -> Sim {
        let t0 = Instant::now();
        let server: SocketAddr = SERVER.parse().expect("address");
        let plane = Plane {
            factory: SessionFactory::new(server).expect("factory").with_policy(config.layers).with_lean(config.lean_send_path),
            config,
            local_addr: server,
            workers: 1,
            tracks: DashMap::new(),
            counters: Counters::default(),
            delays: Default::default(),
        };
        Sim {
            t0,
            now: t0,
            core: Core::new(0, Arc::new(plane)),
            server,
            clients: Vec::new(),
            events: Vec::new(),
            answer_delay: Duration::ZERO,
            answers: Vec::new(),
            answered: Vec::new(),
            first_probe: None,
            client_srtp: None,
        }
    }

    fn at(&self, since_start: Duration) -> Instant {
        self.t0 + since_start
    }

    fn add_client(&mut self) -> usize {
        let n = self.clients.len();
        let addr: SocketAddr = format!("10.0.1.{}:5000", n + 1).parse().expect("address");
        let (pc, reports) = client_pc(addr, self.now, self.client_srtp.clone());
        let id = ParticipantId::next();
        self.core.command(Command::AddParticipant { participant: id, player: false }, self.now);
        self.clients.push(Client {
            id,
            addr,
            pc,
            downlink: Downlink::default(),
            connected: None,
            encoder: None,
            video: Vec::new(),
            rtp: Vec::new(),
            reports,
        });
        n
    }

    fn client_of(&self, p: ParticipantId) -> Option<usize> {
        self.clients.iter().position(|c| c.id == p)
    }

    /// A publisher with a three-layer simulcast VP8 track; returns its index.
    fn publisher(&mut self, gop: Duration) -> usize {
        let i = self.add_client();
        let now = self.now;
        let vp8 = RTCRtpCodec {
            mime_type: "video/VP8".into(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        };
        let ssrcs: [u32; 3] = [1001, 1002, 1003];
        let codings = (0..3)
            .map(|l| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { rid: RIDS[l].into(), ssrc: Some(ssrcs[l]), ..Default::default() },
                codec: vp8.clone(),
                active: true,
                ..Default::default()
            })
            .collect();
        let c = &mut self.clients[i];
        let video =
            c.pc.add_track(MediaStreamTrack::new("cam".into(), "cam-video".into(), "video".into(), RtpCodecKind::Video, codings))
                .expect("track added");
        let offer = c.pc.create_offer(None).expect("offer");
        c.pc.set_local_description(now, offer).expect("local offer");
        let offer = c.pc.local_description().expect("local description").sdp;
        let id = c.id;
        let Answer::Sdp(answer) = self.core.command(Command::Publish { participant: id, offer }, now) else {
            panic!("publish answers with SDP")
        };
        let answer = answer.expect("the server accepts the offer");
        let ext = |uri: &str| -> Option<u8> {
            answer.lines().find_map(|l| {
                let (id, u) = l.strip_prefix("a=extmap:")?.split_once(' ')?;
                (u.trim() == uri).then(|| id.split('/').next()?.parse().ok())?
            })
        };
        let mid = answer.lines().find_map(|l| l.strip_prefix("a=mid:")).map(|m| m.trim().to_owned());
        let mid = ext("urn:ietf:params:rtp-hdrext:sdes:mid").zip(mid);
        let rid_ext = ext("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id");
        let c = &mut self.clients[i];
        c.pc.set_remote_description(now, RTCSessionDescription::answer(answer).expect("answer parses")).expect("remote answer");
        c.encoder = Some(Encoder {
            video,
            ssrcs,
            seq: [100, 20_000, 40_000],
            ts: [0, 0, 0],
            mid,
            rid_ext,
            max_layer: 2,
            want_key: [true; 3],
            last_key: [None; 3],
            gop,
            next_frame: now,
            plis: 0,
            pli_at: Vec::new(),
        });
        self.outputs();
        i
    }

    /// The track the publisher's video became.
    fn published_track(&self, publisher: usize) -> TrackInfo {
        let id = self.clients[publisher].id;
        self.events
            .iter()
            .find_map(|(_, p, e)| match e {
                SfuEvent::TrackPublished(t) if *p == id => Some(t.clone()),
                _ => None,
            })
            .expect("the publisher's track was published")
    }

    fn subscriber(&mut self, track: TrackInfo, height: Option<u32>) -> usize {
        let i = self.add_client();
        let id = self.clients[i].id;
        let now = self.now;
        self.core.command(Command::Subscribe { participant: id, tracks: vec![track.clone()] }, now);
        if let Some(height) = height {
            self.core.command(Command::VideoSize { participant: id, track: track.id, height }, now);
        }
        self.outputs();
        i
    }

    /// A WHEP viewer: its own offer of `slots` receive-only audio and video m-lines, answered by
    /// `Watch` with `stage` (as signaling does for `POST /whep/{room}`).
    fn whep_viewer(&mut self, slots: usize, stage: Vec<TrackInfo>) -> usize {
        use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
        let i = self.add_client();
        let now = self.now;
        // Registered again, as a player (what `Sfu::add_player` tells the worker).
        self.core.command(Command::AddParticipant { participant: self.clients[i].id, player: true }, now);
        let c = &mut self.clients[i];
        for _ in 0..slots {
            for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
                let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() };
                c.pc.add_transceiver_from_kind(kind, Some(init)).expect("transceiver");
            }
        }
        let offer = c.pc.create_offer(None).expect("offer");
        c.pc.set_local_description(now, offer).expect("local offer");
        let offer = c.pc.local_description().expect("local description").sdp;
        let id = c.id;
        let Answer::Sdp(answer) = self.core.command(Command::Watch { participant: id, offer, stage }, now) else {
            panic!("watch answers with SDP")
        };
        let answer = answer.expect("the server answers a WHEP offer");
        assert!(answer.lines().any(|l| l.starts_with("a=candidate:")), "the answer carries the server's candidate");
        let c = &mut self.clients[i];
        c.pc.set_remote_description(now, RTCSessionDescription::answer(answer).expect("answer parses")).expect("remote answer");
        self.outputs();
        i
    }

    /// Carry out the core's outputs: datagrams to clients, events to the harness (offers are
    /// answered and candidates added, as signaling and a page would).
    fn outputs(&mut self) {
        for _ in 0..1000 {
            let mut busy = false;
            let events: Vec<_> = self.core.out.events.drain(..).collect();
            assert!(self.core.out.to_workers.is_empty(), "one worker sends nothing to others");
            self.core.out.demux.clear();
            for (p, e) in events {
                busy = true;
                self.on_event(p, e.clone());
                self.events.push((self.now, p, e));
            }
            for (to, data) in self.core.out.transmit.drain() {
                busy = true;
                let Some(c) = self.clients.iter_mut().find(|c| c.addr == to) else { continue };
                c.downlink.push(self.now, data);
            }
            for c in &mut self.clients {
                while let Some(data) = c.downlink.due(self.now) {
                    busy = true;
                    let _ = c.pc.handle_read(TaggedBytesMut { now: self.now, transport: ctx(c.addr, self.server), message: data });
                }
            }
            for i in 0..self.clients.len() {
                busy |= self.pump_client(i);
            }
            if !busy {
                return;
            }
        }
        panic!("outputs did not settle");
    }

    fn on_event(&mut self, p: ParticipantId, e: SfuEvent) {
        let now = self.now;
        let Some(i) = self.client_of(p) else { return };
        match e {
            SfuEvent::SubscriberOffer(sdp) => {
                let c = &mut self.clients[i];
                c.pc.set_remote_description(now, RTCSessionDescription::offer(sdp).expect("offer parses")).expect("remote offer");
                let answer = c.pc.create_answer(None).expect("answer");
                c.pc.set_local_description(now, answer).expect("local answer");
                let answer = c.pc.local_description().expect("local description").sdp;
                if self.answer_delay.is_zero() {
                    self.answer(p, answer);
                } else {
                    self.answers.push((now + self.answer_delay, p, answer));
                }
            }
            SfuEvent::LocalCandidate(_, cand) => {
                self.clients[i].pc.add_remote_candidate(cand).expect("server candidate");
            }
            SfuEvent::LayersWanted(_, max) => {
                if let Some(enc) = self.clients[i].encoder.as_mut() {
                    for l in (enc.max_layer as usize + 1)..=(max as usize).min(2) {
                        enc.want_key[l] = true;
                    }
                    enc.max_layer = max.min(2);
                }
            }
            _ => {}
        }
    }

    fn answer(&mut self, p: ParticipantId, answer: String) {
        let Answer::Done(r) = self.core.command(Command::SubscriberAnswer { participant: p, answer }, self.now) else {
            panic!("answer shape")
        };
        r.expect("the server takes the answer");
        self.answered.push((self.now, p));
    }

    /// A client's writes to the core, its events and what it received. True if anything moved.
    fn pump_client(&mut self, i: usize) -> bool {
        let now = self.now;
        let mut moved = false;
        let key_role = if self.clients[i].encoder.is_some() { SessionRole::Publisher } else { SessionRole::Subscriber };
        let c = &mut self.clients[i];
        let mut writes = Vec::new();
        while let Some(out) = c.pc.poll_write() {
            writes.push(out.message);
        }
        while let Some(ev) = c.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) = ev {
                c.connected.get_or_insert(now);
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = c.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(_, pkt) => {
                    let key = vp8_keyframe_size(&pkt.payload).is_some();
                    let layer_at = if pkt.payload.first() == Some(&0x10) { if key { 11 } else { 4 } } else { 1 };
                    let layer = pkt.payload.get(layer_at).copied().unwrap_or(u8::MAX);
                    c.video.push((now, pkt.header.ssrc, pkt.header.sequence_number, layer, key));
                    let h = &pkt.header;
                    c.rtp.push((now, h.sequence_number, h.timestamp, h.marker, h.payload_type, pkt.payload.clone()));
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    let Some(enc) = c.encoder.as_mut() else { continue };
                    for p in packets {
                        if p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>() {
                            for ssrc in p.destination_ssrc() {
                                if let Some(l) = enc.ssrcs.iter().position(|s| *s == ssrc) {
                                    enc.want_key[l] = true;
                                    enc.plis += 1;
                                    enc.pli_at.push(now);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let (addr, id) = (c.addr, c.id);
        for data in writes {
            moved = true;
            let session = SessionKey { participant: id, role: key_role };
            self.core.handle(Input::Datagram { session, from: addr, data, at: now }, now);
        }
        moved
    }

    /// The publisher's frames due at `now`: one frame per unpaused layer.
    fn encode(&mut self) {
        let now = self.now;
        for c in &mut self.clients {
            let Some(enc) = c.encoder.as_mut() else { continue };
            if c.connected.is_none() {
                enc.next_frame = now + FRAME;
                continue;
            }
            while enc.next_frame <= now {
                enc.next_frame += FRAME;
                for l in 0..=(enc.max_layer as usize) {
                    let key = enc.want_key[l] || enc.last_key[l].is_none_or(|t| now.duration_since(t) >= enc.gop);
                    if key {
                        enc.want_key[l] = false;
                        enc.last_key[l] = Some(now);
                    }
                    let n = FRAME_BYTES[l].div_ceil(1100);
                    for p in 0..n {
                        let mut pkt = rtc::rtp::Packet { header: Default::default(), payload: vp8(p == 0, key, l, FRAME_BYTES[l] / n) };
                        pkt.header.version = 2;
                        pkt.header.payload_type = 96;
                        pkt.header.ssrc = enc.ssrcs[l];
                        pkt.header.sequence_number = enc.seq[l];
                        pkt.header.timestamp = enc.ts[l];
                        pkt.header.marker = p + 1 == n;
                        if let (Some((mid_id, mid)), Some(rid_id)) = (&enc.mid, enc.rid_ext) {
                            let _ = pkt.header.set_extension(*mid_id, Bytes::from(mid.clone().into_bytes()));
                            let _ = pkt.header.set_extension(rid_id, Bytes::from_static(RIDS[l].as_bytes()));
                        }
                        enc.seq[l] = enc.seq[l].wrapping_add(1);
                        if let Some(mut s) = c.pc.rtp_sender(enc.video) {
                            s.write_rtp(now, pkt).expect("the client sends RTP");
                        }
                    }
                    enc.ts[l] = enc.ts[l].wrapping_add(3000);
                }
            }
        }
    }

    /// Move time forward to `until`, stopping at every deadline on the way.
    fn run_until(&mut self, until: Instant) {
        for _ in 0..1_000_000 {
            self.outputs();
            let mut next = until;
            if let Some(t) = self.core.poll_timeout() {
                next = next.min(t);
            }
            for c in &mut self.clients {
                if let Some(t) = c.pc.poll_timeout() {
                    next = next.min(t);
                }
                if let Some(e) = c.encoder.as_ref().filter(|_| c.connected.is_some()) {
                    next = next.min(e.next_frame);
                }
                if let Some(t) = c.downlink.next() {
                    next = next.min(t);
                }
            }
            if let Some(t) = self.answers.iter().map(|a| a.0).min() {
                next = next.min(t);
            }
            self.now = self.now.max(next);
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.answers).into_iter().partition(|a| a.0 <= now);
            self.answers = later;
            for (_, p, answer) in due {
                self.answer(p, answer);
            }
            self.core.handle_timeout(now);
            if self.first_probe.is_none()
                && self
                    .clients
                    .iter()
                    .any(|c| self.core.participants.get(&c.id).and_then(|p| p.subscriber.as_ref()).is_some_and(|s| s.has_probed()))
            {
                self.first_probe = Some(now);
            }
            for c in &mut self.clients {
                if c.pc.poll_timeout().is_some_and(|t| t <= now) {
                    let _ = c.pc.handle_timeout(now);
                }
            }
            self.encode();
            if now >= until {
                self.outputs();
                return;
            }
        }
        panic!("virtual time did not reach its goal");
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Every `LayersWanted` the publisher `i` was told for `track`: (when, highest layer).
    fn layers_wanted(&self, i: usize, track: TrackId) -> Vec<(Instant, u8)> {
        self.events_to(i)
            .filter_map(|(t, e)| match e {
                SfuEvent::LayersWanted(tr, max) if *tr == track => Some((t, *max)),
                _ => None,
            })
            .collect()
    }

    fn events_to(&self, i: usize) -> impl Iterator<Item = (Instant, &SfuEvent)> {
        let id = self.clients[i].id;
        self.events.iter().filter(move |(_, p, _)| *p == id).map(|(t, _, e)| (*t, e))
    }
}

/// The layers a subscriber received, in order of arrival, with when each run began.
fn layer_runs(video: &[(Instant, u32, u16, u8, bool)]) -> Vec<(Instant, u8, bool)> {
    let mut runs: Vec<(Instant, u8, bool)> = Vec::new();
    for &(t, _, _, layer, key) in video {
        if runs.last().is_none_or(|r| r.1 != layer) {
            runs.push((t, layer, key));
        }
    }
    runs
}

/// Sequence numbers the subscriber saw are one stream: no gap, no repeat, across switches.
fn assert_contiguous(video: &[(Instant, u32, u16, u8, bool)]) {
    let ssrcs: std::collections::HashSet<u32> = video.iter().map(|v| v.1).collect();
    assert_eq!(ssrcs.len(), 1, "one SSRC for the subscriber's video");
    for w in video.windows(2) {
        assert_eq!(w[1].2, w[0].2.wrapping_add(1), "sequence numbers continue across a switch: {:?} then {:?}", w[0], w[1]);
    }
}

#[test]
fn a_late_viewer_starts_at_a_keyframe_requested_for_it() {
    let mut sim = Sim::new();
    // Keyframes only when asked (or every 30 s): the viewer's start must come from its request.
    let p = sim.publisher(Duration::from_secs(30));
    sim.run_for(Duration::from_secs(3));
    assert!(sim.clients[p].connected.is_some(), "the publisher connected");
    let plis_before = sim.clients[p].encoder.as_ref().map_or(0, |e| e.plis);
    let track = sim.published_track(p);
    let v = sim.subscriber(track, None);
    sim.run_for(Duration::from_secs(2));
    let viewer = &sim.clients[v];
    let connected = viewer.connected.expect("the viewer connected");
    let (first_at, _, _, layer, key) = *viewer.video.first().expect("the viewer got video");
    assert!(key, "the first packet starts a keyframe");
    // The request goes out the moment the viewer connects (not at the next allocation pass,
    // up to 250 ms later), and the next frame (≤ 33 ms) answers it.
    let asked =
        sim.clients[p].encoder.as_ref().and_then(|e| e.pli_at.iter().find(|t| **t >= connected).copied()).expect("a PLI after connecting");
    assert!(asked.duration_since(connected) <= Duration::from_millis(5), "PLI {:?} after connecting", asked.duration_since(connected));
    let waited = first_at.duration_since(connected);
    assert!(waited <= Duration::from_millis(40), "first frame {waited:?} after connecting");
    assert_eq!(layer, 2, "a full-size viewer starts on the top layer");
    let plis = sim.clients[p].encoder.as_ref().map_or(0, |e| e.plis);
    assert!(plis > plis_before, "the publisher was asked for a keyframe ({plis_before} → {plis})");
    assert!(sim.core.plane.counters.plis_sent.load(Ordering::Relaxed) >= 1);
    assert_contiguous(&sim.clients[v].video);
}

/// A second viewer who connects while the PLI throttle still holds the publisher (another
/// viewer asked just before) starts from the picture the worker kept since that keyframe: at
/// once, without a request of its own, and the stream goes on from it without a gap. With the
/// cache off it waits for the throttle.
#[test]
fn a_viewer_right_after_another_starts_from_the_kept_picture() {
    let mut waits = Vec::new();
    for cache in [Duration::from_millis(500), Duration::ZERO] {
        let mut sim = Sim::with(SfuConfig { workers: 1, keyframe_cache: cache, ..SfuConfig::default() });
        let p = sim.publisher(Duration::from_secs(30));
        sim.run_for(Duration::from_secs(3));
        let track = sim.published_track(p);
        let a = sim.subscriber(track.clone(), None);
        for _ in 0..300 {
            if !sim.clients[a].video.is_empty() {
                break;
            }
            sim.run_for(Duration::from_millis(10));
        }
        let a_first = sim.clients[a].video.first().expect("the first viewer got video").0;
        sim.run_until(a_first + Duration::from_millis(100));
        let plis_before = sim.clients[p].encoder.as_ref().map_or(0, |e| e.plis);
        let b = sim.subscriber(track, None);
        sim.run_for(Duration::from_secs(2));
        let viewer = &sim.clients[b];
        let connected = viewer.connected.expect("the second viewer connected");
        let (first_at, _, _, layer, key) = *viewer.video.first().expect("the second viewer got video");
        assert!(key, "the second viewer's first packet starts a keyframe");
        assert_eq!(layer, 2, "on the top layer");
        assert_contiguous(&viewer.video);
        // Everything the first viewer got from that point on, the second got too.
        let a_video = &sim.clients[a].video;
        let a_from = a_video.iter().position(|v| v.0 >= first_at).expect("the first viewer goes on");
        assert!(viewer.video.len() >= a_video.len() - a_from, "{} packets vs {}", viewer.video.len(), a_video.len() - a_from);
        let waited = first_at.duration_since(connected);
        let plis = sim.clients[p].encoder.as_ref().map_or(0, |e| e.plis);
        let replays = sim.core.plane.counters.keyframe_replays.load(Ordering::Relaxed);
        if cache.is_zero() {
            assert!(waited >= Duration::from_millis(150), "without the cache the throttle holds the start: {waited:?}");
            assert!(plis > plis_before, "and it asked the publisher");
            assert_eq!(replays, 0);
        } else {
            assert!(waited <= Duration::from_millis(2), "started {waited:?} after connecting");
            assert_eq!(plis, plis_before, "no keyframe was asked of the publisher for it");
            assert_eq!(replays, 1);
            // The picture since the keyframe came at once: more than one frame (3 packets each).
            let burst = viewer.video.iter().take_while(|v| v.0 == first_at).count();
            assert!(burst >= 6, "{burst} packets at the start");
        }
        waits.push(waited);
    }
    println!("second viewer's first frame after connecting: kept picture {:?}, without {:?}", waits[0], waits[1]);
}

/// Viewers who connect together cost the publisher one keyframe: a request while the one asked
/// for is still in flight is not sent again when the throttle ends (it would only make a
/// second, unneeded keyframe), and one made after it arrived starts from the kept picture.
#[test]
fn viewers_joining_together_cost_the_publisher_one_keyframe() {
    for cache in [Duration::from_millis(500), Duration::ZERO] {
        let mut sim = Sim::with(SfuConfig { workers: 1, keyframe_cache: cache, ..SfuConfig::default() });
        let p = sim.publisher(Duration::from_secs(30));
        sim.run_for(Duration::from_secs(3));
        let track = sim.published_track(p);
        let plis_before = sim.clients[p].encoder.as_ref().map_or(0, |e| e.plis);
        let viewers: Vec<usize> = (0..4).map(|_| sim.subscriber(track.clone(), None)).collect();
        sim.run_for(Duration::from_secs(2));
        for &v in &viewers {
            let c = &sim.clients[v];
            let connected = c.connected.expect("the viewer connected");
            let first = c.video.first().expect("the viewer got video");
            assert!(first.4, "starts at a keyframe");
            assert!(
                first.0.duration_since(connected) <= Duration::from_millis(40),
                "first frame {:?} after connecting",
                first.0.duration_since(connected)
            );
            assert_contiguous(&c.video);
        }
        let plis = sim.clients[p].encoder.as_ref().map_or(0, |e| e.plis) - plis_before;
        assert_eq!(plis, 1, "one keyframe for the four viewers (cache {cache:?})");
    }
}

/// The SRTP keys noted from a real connection's DTLS (session/srtp_keys.rs) are the ones rtc
/// sends with: a packet sealed with them outside rtc (net/srtp.rs) — the viewer's SSRC, the next
/// sequence number — is opened and delivered by the viewer's peer like rtc's own.
#[test]
fn a_packet_sealed_with_the_noted_keys_reaches_the_viewer() {
    let mut sim = Sim::new();
    let p = sim.publisher(Duration::from_secs(30));
    sim.run_for(Duration::from_secs(1));
    let track = sim.published_track(p);
    let v = sim.subscriber(track, None);
    sim.run_for(Duration::from_secs(1));
    let viewer = sim.clients[v].id;
    let keys = sim.core.subscriber(viewer).and_then(|s| s.link.srtp_keys()).expect("the keys were noted once DTLS was done");
    assert!(keys.aead, "rtc negotiates AEAD_AES_128_GCM with rtc: {keys:?}");
    let provider = rtc::crypto::default_provider().expect("ring");
    let mut sealer = crate::net::srtp::RtpSealer::new(&keys, provider.crypto()).expect("a sealer");
    // Time stands still from here: nothing of rtc's takes the next numbers.
    let &(_, ssrc, last_seq, _, _) = sim.clients[v].video.last().expect("the viewer has video");
    let (addr, server, now) = (sim.clients[v].addr, sim.server, sim.now);
    let mut sealed = |seq: u16| {
        let header = rtc::rtp::header::Header {
            version: 2,
            payload_type: 96,
            sequence_number: seq,
            timestamp: 1,
            ssrc,
            marker: true,
            ..Default::default()
        };
        let plain =
            rtc::shared::marshal::Marshal::marshal(&rtc::rtp::Packet { header, payload: vp8(true, false, 2, 200) }).expect("marshal");
        let mut buf = BytesMut::from(&plain[..]);
        sealer.seal(&mut buf, 12, 0).expect("sealed");
        buf
    };
    let (good, mut forged) = (sealed(last_seq.wrapping_add(1)), sealed(last_seq.wrapping_add(2)));
    // A byte of the payload changed: the viewer must refuse it (so the check below is not vacuous).
    forged[20] ^= 1;
    for (buf, seq, delivered) in [(forged, last_seq.wrapping_add(2), false), (good, last_seq.wrapping_add(1), true)] {
        let before = sim.clients[v].video.len();
        let _ = sim.clients[v].pc.handle_read(TaggedBytesMut { now, transport: ctx(addr, server), message: BytesMut::from(&buf[..]) });
        sim.pump_client(v);
        let got = sim.clients[v].video[before..].iter().any(|g| g.1 == ssrc && g.2 == seq);
        assert_eq!(got, delivered, "sequence number {seq}: delivered {got}");
    }
}

/// A viewer's connectivity checks race its answer, which takes the slower road through
/// signaling: the checks that arrive first are kept and handed to rtc with the answer, so the
/// viewer connects as soon as its answer is in — not at its next check, up to a check interval
/// later (rtc's default, 200 ms, for this client).
#[test]
fn a_viewers_checks_before_its_answer_are_answered_with_it() {
    let mut sim = Sim::new();
    let p = sim.publisher(Duration::from_secs(30));
    sim.run_for(Duration::from_secs(1));
    let track = sim.published_track(p);
    sim.answer_delay = Duration::from_millis(40);
    let sent = sim.now;
    let v = sim.subscriber(track, None);
    sim.run_for(Duration::from_secs(2));
    let id = sim.clients[v].id;
    let answered = sim.answered.iter().find(|a| a.1 == id).expect("the answer arrived").0;
    assert_eq!(answered.duration_since(sent), Duration::from_millis(40));
    let connected = sim.clients[v].connected.expect("the viewer connected");
    let after = connected.duration_since(answered);
    assert!(after <= Duration::from_millis(5), "connected {after:?} after the answer arrived");
    assert!(!sim.clients[v].video.is_empty(), "and gets video");
}

#[test]
fn a_viewer_switches_layers_at_a_keyframe_when_its_size_changes() {
    let mut sim = Sim::new();
    let p = sim.publisher(Duration::from_secs(30));
    sim.run_for(Duration::from_secs(1));
    let track = sim.published_track(p);
    let v = sim.subscriber(track.clone(), Some(180));
    sim.run_for(Duration::from_secs(3));
    let runs = layer_runs(&sim.clients[v].video);
    assert_eq!(runs.iter().map(|r| r.1).collect::<Vec<_>>(), vec![0], "a 180 px viewer gets the low layer only: {runs:?}");
    // The page shows it full size now.
    let grown = sim.now;
    let id = sim.clients[v].id;
    sim.core.command(Command::VideoSize { participant: id, track: track.id, height: 720 }, grown);
    sim.run_for(Duration::from_secs(3));
    let runs = layer_runs(&sim.clients[v].video);
    // Up from the low layer to the top one; a keyframe of the middle layer that arrives first
    // is taken on the way (better picture a frame sooner).
    assert_eq!(runs.first().map(|r| r.1), Some(0), "{runs:?}");
    assert_eq!(runs.last().map(|r| r.1), Some(2), "ends on the top layer: {runs:?}");
    assert!(runs.len() <= 3, "no back and forth: {runs:?}");
    assert!(runs.iter().all(|r| r.2), "every switch happens at a keyframe of the new layer: {runs:?}");
    let took = runs[runs.len() - 1].0.duration_since(grown);
    // The top layer is paused (dynacast) while nobody wants it: resuming it, asking for a
    // keyframe and the next frame take a few frames, not a keyframe interval.
    assert!(took <= Duration::from_millis(400), "switched {took:?} after the size change");
    assert_contiguous(&sim.clients[v].video);
    let up_runs = runs.len();
    // And back down when it shrinks again.
    let shrunk = sim.now;
    sim.core.command(Command::VideoSize { participant: id, track: track.id, height: 180 }, shrunk);
    sim.run_for(Duration::from_secs(2));
    let runs = layer_runs(&sim.clients[v].video);
    assert_eq!(runs.len(), up_runs + 1, "one switch down: {runs:?}");
    let down = runs[up_runs];
    assert_eq!(down.1, 0, "{runs:?}");
    assert!(down.2, "down at a keyframe too");
    assert!(down.0.duration_since(shrunk) <= Duration::from_millis(400), "{:?}", down.0.duration_since(shrunk));
    assert_contiguous(&sim.clients[v].video);
}

#[test]
fn dynacast_pauses_unwanted_layers_after_a_second_and_resumes_at_once() {
    let mut sim = Sim::new();
    let p = sim.publisher(Duration::from_secs(2));
    sim.run_for(Duration::from_millis(500));
    let track = sim.published_track(p);
    let v = sim.subscriber(track.clone(), Some(180));
    sim.run_for(Duration::from_secs(4));
    let wanted = sim.layers_wanted(p, track.id);
    // Demand first appears as "the low layer" (the viewer is 180 px tall), announced at once.
    assert_eq!(wanted.iter().map(|w| w.1).collect::<Vec<_>>(), vec![0], "{wanted:?}");
    assert_eq!(sim.clients[p].encoder.as_ref().map(|e| e.max_layer), Some(0), "the publisher paused layers 1 and 2");
    let low_only_since = sim.clients[v].connected.expect("viewer connected");
    assert!(wanted[0].0 >= sim.at(Duration::ZERO) && wanted[0].0.duration_since(low_only_since) <= Duration::from_secs(2), "{wanted:?}");
    // A second viewer, shown at 720 px: the top layer is wanted at once. (A viewer that has
    // not said its size yet raises demand only after DEMAND_GRACE, 1 s.)
    let joined = sim.now;
    let w = sim.subscriber(track.clone(), Some(720));
    sim.run_for(Duration::from_secs(2));
    let up = sim.layers_wanted(p, track.id).into_iter().find(|w| w.1 == 2).map(|w| w.0).expect("the top layer is wanted again");
    assert!(up.duration_since(joined) <= Duration::from_millis(5), "resumed {:?} after the viewer joined", up.duration_since(joined));
    assert!(sim.clients[w].video.iter().any(|v| v.3 == 2), "the full-size viewer gets the top layer");
    // It leaves: the top layer is paused again, no sooner than a second later.
    let left = sim.now;
    let wid = sim.clients[w].id;
    sim.core.command(Command::RemoveParticipant { participant: wid }, left);
    sim.run_for(Duration::from_secs(3));
    let down = sim
        .layers_wanted(p, track.id)
        .into_iter()
        .find(|w| w.0 >= left && w.1 == 0)
        .map(|w| w.0)
        .expect("paused again once only the small viewer is left");
    let after = down.duration_since(left);
    // Demand is recomputed the moment the viewer leaves, so the pause follows exactly
    // DYNACAST_DOWN_DELAY later.
    assert!(after >= Duration::from_millis(1000) && after <= Duration::from_millis(5 + 1000), "paused {after:?} after the big viewer left");
    assert_eq!(sim.clients[p].encoder.as_ref().map(|e| e.max_layer), Some(0));
}

#[test]
fn a_silent_viewer_is_disconnected_then_closed_on_the_named_timers() {
    let mut sim = Sim::new();
    let p = sim.publisher(Duration::from_secs(2));
    sim.run_for(Duration::from_millis(500));
    let track = sim.published_track(p);
    let v = sim.subscriber(track, None);
    sim.run_for(Duration::from_secs(1));
    assert!(sim.clients[v].connected.is_some());
    // The viewer's network goes away: nothing it sends reaches the server any more.
    let gone = sim.now;
    let addr: SocketAddr = "10.0.9.9:9".parse().expect("address");
    sim.clients[v].addr = addr;
    let vid = sim.clients[v].id;
    let key = SessionKey { participant: vid, role: SessionRole::Subscriber };
    let mut silent_client = sim.clients.remove(v);
    sim.run_for(Duration::from_secs(40));
    let states: Vec<(Duration, String)> = sim
        .events
        .iter()
        .filter(|(_, p, _)| *p == vid)
        .filter_map(|(t, _, e)| match e {
            SfuEvent::Connection(SessionRole::Subscriber, s) => Some((t.duration_since(gone), format!("{s:?}"))),
            SfuEvent::SessionClosed(SessionRole::Subscriber, r) => Some((t.duration_since(gone), r.clone())),
            _ => None,
        })
        .collect();
    let disconnected = states.iter().find(|s| s.1 == "Disconnected").expect("marked disconnected");
    assert!(disconnected.0 >= Duration::from_secs(7) && disconnected.0 <= Duration::from_secs(9), "{states:?}");
    let closed = states.iter().find(|s| s.1 == "connection lost").expect("closed");
    assert!(closed.0 >= Duration::from_secs(29) && closed.0 <= Duration::from_secs(31), "{states:?}");
    assert!(sim.core.transport(key).is_none(), "the session is gone");
    let _ = silent_client.pc.close();
}

#[test]
fn a_viewer_that_has_not_said_its_size_raises_demand_after_the_grace() {
    let mut sim = Sim::new();
    let p = sim.publisher(Duration::from_secs(2));
    sim.run_for(Duration::from_millis(500));
    let track = sim.published_track(p);
    sim.subscriber(track.clone(), Some(180));
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.clients[p].encoder.as_ref().map(|e| e.max_layer), Some(0));
    // The page reports a tile's size once it is laid out; until then (DEMAND_GRACE) the
    // viewer does not wake paused layers, so a viewer about to be shown small costs nothing.
    let joined = sim.now;
    sim.subscriber(track.clone(), None);
    sim.run_for(Duration::from_secs(2));
    let up =
        sim.layers_wanted(p, track.id).into_iter().find(|w| w.1 == 2).map(|w| w.0).expect("the top layer is wanted once the grace is over");
    let after = up.duration_since(joined);
    assert!(after >= crate::forward::forwarder::DEMAND_GRACE, "demand rose {after:?} after joining");
    assert!(after <= crate::forward::forwarder::DEMAND_GRACE + Duration::from_millis(300), "demand rose {after:?} after joining");
}

/// The audio-only fallback in virtual time, through a real bottleneck: a viewer of the low layer
/// (about 100 kbit/s) behind a 50 kbit/s link has its video paused `enter` after its estimate
/// fell below the layer, told once; probes go on meanwhile; when the link is lifted they find
/// the room, and video resumes `leave_hold` later from a keyframe asked for at once, on the
/// same SSRC, told once.
#[test]
fn a_viewer_that_cannot_carry_the_lowest_layer_gets_audio_only_then_video_again() {
    let policy = crate::forward::fallback::FallbackPolicy::default();
    let mut sim = Sim::new();
    let p = sim.publisher(Duration::from_secs(30));
    sim.run_for(Duration::from_millis(500));
    let track = sim.published_track(p);
    let v = sim.subscriber(track, Some(180));
    sim.run_for(Duration::from_secs(3));
    let vid = sim.clients[v].id;
    let audio_only = |sim: &Sim| -> Vec<(Instant, bool)> {
        sim.events_to(v)
            .filter_map(|(t, e)| match e {
                SfuEvent::AudioOnly(a) => Some((t, *a)),
                _ => None,
            })
            .collect()
    };
    let stats = |sim: &mut Sim| sim.core.subscriber_stats(vid);
    assert!(!sim.clients[v].video.is_empty(), "video flows before the limit");
    assert_eq!(audio_only(&sim), vec![], "no fallback on an open path");

    sim.clients[v].downlink.rate_bps = 50_000;
    let limited = sim.now;
    sim.run_for(Duration::from_secs(8));
    let changes = audio_only(&sim);
    assert_eq!(changes.len(), 1, "told once: {changes:?}");
    let (entered, active) = changes[0];
    assert!(active);
    let took = entered.duration_since(limited);
    eprintln!("50 kbit/s: audio only {took:?} after the limit; {:?}", stats(&mut sim));
    assert!(took >= policy.enter && took <= policy.enter + Duration::from_secs(2), "audio only {took:?} after the limit");
    assert!(stats(&mut sim).audio_only);
    assert_eq!(stats(&mut sim).tracks[0].layer, None, "no layer forwarded while paused");
    // Nothing more is forwarded (probes resend the last packets sent before the pause).
    let forwarded = |sim: &mut Sim| sim.core.subscriber_stats(vid).tracks[0].packets;
    let (forwarded_paused, probes_paused) = (forwarded(&mut sim), stats(&mut sim).path.map_or(0, |p| p.probes));
    let seen: std::collections::HashSet<u16> = sim.clients[v].video.iter().map(|x| x.2).collect();
    sim.run_for(Duration::from_secs(3));
    assert_eq!(forwarded(&mut sim), forwarded_paused, "no video forwarded while audio only");
    let probes_later = stats(&mut sim).path.map_or(0, |p| p.probes);
    assert!(probes_later > probes_paused, "probing goes on while video is paused ({probes_paused} → {probes_later})");
    assert_eq!(audio_only(&sim).len(), 1, "stays audio only while the link is narrow");

    let last_before = sim.clients[v].video.last().map(|x| x.2).expect("video before");
    sim.clients[v].downlink.rate_bps = 0;
    let lifted = sim.now;
    sim.run_for(Duration::from_secs(10));
    let changes = audio_only(&sim);
    assert_eq!(changes.len(), 2, "told once more: {changes:?}");
    let (resumed, active) = changes[1];
    assert!(!active);
    let took = resumed.duration_since(lifted);
    eprintln!("limit lifted: video again {took:?} after; {:?}", stats(&mut sim));
    assert!(took >= policy.leave_hold && took <= Duration::from_secs(8), "video resumed {took:?} after the limit was lifted");
    let video = &sim.clients[v].video;
    let first = video.iter().find(|x| x.0 >= resumed && !seen.contains(&x.2) && x.4).expect("video flows again");
    assert!(first.4, "the resumed stream starts at a keyframe");
    assert!(
        first.0.duration_since(resumed) <= Duration::from_millis(100),
        "first frame {:?} after resuming",
        first.0.duration_since(resumed)
    );
    let ssrcs: std::collections::HashSet<u32> = video.iter().map(|x| x.1).collect();
    assert_eq!(ssrcs.len(), 1, "one SSRC across the pause");
    // Sequence numbers go on from where they stopped (the tail lost in the queue aside).
    let gap = first.2.wrapping_sub(last_before);
    assert!((1..40).contains(&gap), "sequence numbers continue across the pause (+{gap})");
    // From there on one stream. Late repairs of packets lost before the pause, and a probe's
    // copies of packets the viewer has, are not part of it.
    let mut once = std::collections::HashSet::new();
    let after: Vec<_> =
        video.iter().filter(|x| x.0 >= first.0 && x.2.wrapping_sub(first.2) < 0x8000 && once.insert(x.2)).cloned().collect();
    assert!(after.len() > 100, "video flows after resuming ({} packets)", after.len());
    assert_contiguous(&after);
    assert!(!stats(&mut sim).audio_only);
}

/// Switched off for a viewer, the rule never pauses it; switched off while paused, video
/// resumes at once.
#[test]
fn the_fallback_can_be_switched_off_per_viewer() {
    let mut sim = Sim::new();
    let p = sim.publisher(Duration::from_secs(30));
    sim.run_for(Duration::from_millis(500));
    let track = sim.published_track(p);
    let a = sim.subscriber(track.clone(), Some(180));
    let b = sim.subscriber(track, Some(180));
    let (aid, bid) = (sim.clients[a].id, sim.clients[b].id);
    sim.core.command(Command::AudioOnlyFallback { participant: bid, enabled: false }, sim.now);
    sim.run_for(Duration::from_secs(3));
    sim.clients[a].downlink.rate_bps = 50_000;
    sim.clients[b].downlink.rate_bps = 50_000;
    sim.run_for(Duration::from_secs(8));
    let told = |sim: &Sim, id: ParticipantId| -> Vec<bool> {
        sim.events
            .iter()
            .filter(|(_, p, _)| *p == id)
            .filter_map(|(_, _, e)| if let SfuEvent::AudioOnly(x) = e { Some(*x) } else { None })
            .collect()
    };
    assert_eq!(told(&sim, aid), vec![true]);
    assert_eq!(told(&sim, bid), Vec::<bool>::new(), "switched off: never paused");
    let b_before = sim.clients[b].video.len();
    sim.run_for(Duration::from_secs(1));
    assert!(sim.clients[b].video.len() > b_before, "its video keeps flowing");
    // Off while paused: resumed at once, from a keyframe.
    let off = sim.now;
    let a_before = sim.clients[a].video.len();
    sim.core.command(Command::AudioOnlyFallback { participant: aid, enabled: false }, off);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(told(&sim, aid), vec![true, false]);
    let first = sim.clients[a].video[a_before..].iter().find(|x| x.4).expect("a keyframe after resuming");
    assert!(first.0.duration_since(off) <= Duration::from_millis(200), "{:?}", first.0.duration_since(off));
}

/// A resync (the participant's reader dropped events) tells the state again: the viewer that
/// is connected hears so and that its video is not paused (no offer: none is waiting for an
/// answer); the publisher hears its connection state and the layers wanted of its track.
#[test]
fn a_resync_tells_each_participant_its_state_again() {
    let mut sim = Sim::new();
    let p = sim.publisher(Duration::from_secs(5));
    sim.run_for(Duration::from_millis(500));
    let track = sim.published_track(p);
    let v = sim.subscriber(track.clone(), Some(180));
    sim.run_for(Duration::from_secs(3));
    let (pid, vid) = (sim.clients[p].id, sim.clients[v].id);
    let before = sim.events.len();
    sim.core.command(Command::Resync { participant: vid }, sim.now);
    sim.core.command(Command::Resync { participant: pid }, sim.now);
    sim.run_for(Duration::from_millis(1));
    let told = |who: ParticipantId| -> Vec<String> {
        sim.events[before..].iter().filter(|(_, p, _)| *p == who).map(|(_, _, e)| format!("{e:?}")).collect()
    };
    let to_viewer = told(vid);
    assert!(to_viewer.contains(&"Connection(Subscriber, Connected)".to_owned()), "{to_viewer:?}");
    assert!(to_viewer.contains(&"AudioOnly(false)".to_owned()), "{to_viewer:?}");
    assert!(!to_viewer.iter().any(|e| e.starts_with("SubscriberOffer")), "no offer is outstanding: {to_viewer:?}");
    let to_publisher = told(pid);
    assert!(to_publisher.contains(&"Connection(Publisher, Connected)".to_owned()), "{to_publisher:?}");
    let wanted = sim.layers_wanted(p, track.id);
    let last = wanted.last().expect("layers were announced before");
    assert!(to_publisher.contains(&format!("LayersWanted({:?}, {})", track.id, last.1)), "{to_publisher:?}");
}

#[test]
fn a_whep_slot_moves_to_the_next_seat_under_one_ssrc_from_a_keyframe() {
    let mut sim = Sim::new();
    // Keyframes only when asked: each start must come from a request.
    let a = sim.publisher(Duration::from_secs(30));
    let b = sim.publisher(Duration::from_secs(30));
    sim.run_for(Duration::from_secs(2));
    let (ta, tb) = (sim.published_track(a), sim.published_track(b));
    // One video m-line: the first seat. Two: both seats at once.
    let one = sim.whep_viewer(1, vec![ta.clone(), tb.clone()]);
    let two = sim.whep_viewer(2, vec![ta.clone(), tb.clone()]);
    sim.run_for(Duration::from_secs(2));
    let first = *sim.clients[one].video.first().expect("the one-slot player gets the first seat's video");
    assert!(first.4, "it starts at a keyframe");
    let ssrcs = |i: usize, sim: &Sim| sim.clients[i].video.iter().map(|v| v.1).collect::<std::collections::BTreeSet<_>>();
    assert_eq!(ssrcs(two, &sim).len(), 2, "the two-slot player gets both seats, one SSRC each");

    // The first seat leaves the stage: the one slot goes on with the second seat's track.
    let before = sim.clients[one].video.len();
    let plis = sim.clients[b].encoder.as_ref().map_or(0, |e| e.plis);
    let switch = sim.now;
    let id = sim.clients[one].id;
    sim.core.command(Command::SetSlots { participant: id, stage: vec![tb.clone()] }, switch);
    sim.outputs();
    sim.run_for(Duration::from_secs(2));
    let after = &sim.clients[one].video[before..];
    let (at, _, _, _, key) = *after.first().expect("video after the switch");
    assert!(key, "the new seat starts at a keyframe");
    assert!(
        at.duration_since(switch) <= Duration::from_millis(40),
        "new seat's first frame {:?} after the switch",
        at.duration_since(switch)
    );
    assert!(sim.clients[b].encoder.as_ref().map_or(0, |e| e.plis) > plis, "the new seat's publisher was asked for a keyframe");
    assert!(after.len() > 30, "the slot keeps playing: {} packets", after.len());
    assert_contiguous(&sim.clients[one].video);
    // A stage with nobody on it: the slot falls silent (nothing is renegotiated).
    sim.core.command(Command::SetSlots { participant: id, stage: vec![] }, sim.now);
    sim.outputs();
    sim.run_for(Duration::from_millis(200));
    let quiet = sim.clients[one].video.len();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.clients[one].video.len(), quiet, "an empty slot sends nothing");
    assert!(sim.events_to(one).all(|(_, e)| !matches!(e, SfuEvent::SubscriberOffer(_))), "a WHEP session is never sent an offer");
}

/// What one run of [`lean_script`] saw at the viewer: every RTP packet (time since the start,
/// sequence number, timestamp, marker, payload type, payload) and whether the viewer's media
/// went out on the lean path, how many datagrams its downlink lost, and when the server first
/// decided to probe.
type Seen = (Vec<Delivered>, bool, u64, Option<Duration>);

/// One viewer of a simulcast publisher for four seconds, its downlink losing what is sent to it
/// at the publisher's frames numbered in `lose` (from its subscription: the frame's packets, as
/// forwarded) and its page asking for the sizes in `sizes` (ms after it subscribed,
/// height); media sent on the lean path or through rtc's.
fn lean_script(lean: bool, lose: &[u64], sizes: &[(u64, u32)]) -> Seen {
    let mut sim = Sim::with(SfuConfig { workers: 1, lean_send_path: lean, ..SfuConfig::default() });
    let p = sim.publisher(Duration::from_secs(2));
    sim.run_for(Duration::from_millis(500));
    let track = sim.published_track(p);
    let v = sim.subscriber(track.clone(), Some(720));
    let first_frame = sim.clients[p].encoder.as_ref().map_or(sim.now, |e| e.next_frame);
    let mut lose: Vec<Instant> = lose.iter().map(|&k| first_frame + FRAME * k as u32).collect();
    lose.sort_unstable();
    sim.clients[v].downlink.lose_at = lose;
    let start = sim.now;
    let id = sim.clients[v].id;
    let mut sizes = sizes.to_vec();
    sizes.sort_unstable();
    for (ms, height) in sizes {
        sim.run_until(start + Duration::from_millis(ms));
        sim.core.command(Command::VideoSize { participant: id, track: track.id, height }, sim.now);
    }
    sim.run_until(start + Duration::from_secs(4));
    let is_lean = sim.core.subscriber(id).is_some_and(|s| s.is_lean());
    let t0 = sim.t0;
    // Each stream starts at a random sequence number and timestamp (forward/munger.rs): both
    // are counted from the first packet's.
    let (seq0, ts0) = sim.clients[v].rtp.first().map_or((0, 0), |p| (p.1, p.2));
    let seen = sim.clients[v]
        .rtp
        .iter()
        .map(|(t, s, ts, m, pt, b)| (t.duration_since(t0), s.wrapping_sub(seq0), ts.wrapping_sub(ts0), *m, *pt, b.clone()))
        .collect();
    (seen, is_lean, sim.clients[v].downlink.dropped, sim.first_probe.map(|t| t.duration_since(t0)))
}

/// A packet as the viewer's peer delivered it: when, then what (sequence number and timestamp
/// counted from the stream's first, marker, payload type, payload).
type Delivered = (Duration, u16, u32, bool, u8, Bytes);

/// The first delivery of each sequence number, and the deliveries again (repairs and probes),
/// each in order.
fn firsts_and_repeats(seen: &[Delivered]) -> (Vec<&Delivered>, Vec<&Delivered>) {
    let mut had = std::collections::HashSet::new();
    seen.iter().partition(|p| had.insert(p.1))
}

proptest::proptest! {
    // A fixed seed: the same random cases on every run (a failure reproduces; CI is not a
    // lottery). Run with PROPTEST_CASES=500 to try more.
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12),
        rng_seed: proptest::test_runner::RngSeed::Fixed(16),
        failure_persistence: None,
        ..Default::default()
    })]

    /// The send path of our own against rtc's, over the whole path: for random losses on the
    /// viewer's downlink (repaired by NACK and RTX) and random layer switches (the page's size
    /// changing), the viewer's peer delivers the same packets — sequence numbers, timestamps,
    /// markers, payload types and payloads, repairs and probes included — decrypted, at the same
    /// instants, and the link loses the same.
    #[test]
    fn the_lean_path_delivers_what_rtcs_path_delivers(
        lose in proptest::collection::vec(5u64..115, 0..8),
        sizes in proptest::collection::vec((0u64..3500, proptest::sample::select(vec![180u32, 360, 720])), 0..4),
    ) {
        let (lean, on_lean, lost_lean, probe_lean) = lean_script(true, &lose, &sizes);
        let (rtc, on_rtc, lost_rtc, probe_rtc) = lean_script(false, &lose, &sizes);
        proptest::prop_assert!(on_lean && !on_rtc, "one run on each path");
        proptest::prop_assert!(lean.len() > 50, "the viewer got video ({} packets)", lean.len());
        proptest::prop_assert_eq!(probe_lean, probe_rtc, "the first probe decided at the same instant");
        proptest::prop_assert_eq!(lost_lean, lost_rtc, "the same losses");
        let short = |p: &Delivered| (p.0, p.1, p.2, p.3, p.4, p.5.len());
        proptest::prop_assert_eq!(lean.len(), rtc.len(), "as many packets");
        for (i, (a, b)) in lean.iter().zip(&rtc).enumerate() {
            proptest::prop_assert!(a == b, "packet {} of {}: {:?} vs {:?}", i, lean.len(), short(a), short(b));
        }
        // Every copy delivered (repair or probe) is a copy of a packet sent.
        let (firsts, again) = firsts_and_repeats(&lean);
        for p in again {
            let first = firsts.iter().find(|f| f.1 == p.1);
            proptest::prop_assert!(first.is_some_and(|f| (f.2, f.3, f.4, &f.5) == (p.2, p.3, p.4, &p.5)), "{:?} is a copy", short(p));
        }
    }
}

/// Losses on the lean path are repaired: each RTP datagram lost on the viewer's downlink is
/// NACKed by the viewer's peer and sent again as RTX from the stream's own history, and the
/// viewer's sequence has no hole left.
#[test]
fn a_lost_packet_comes_again_as_rtx_on_the_lean_path() {
    let lose = [10u64, 11, 25];
    let (seen, lean, dropped, probed) = lean_script(true, &lose, &[]);
    // Up to the first probe (its copies are not repairs); the losses are all before it.
    let cutoff = probed.unwrap_or(Duration::MAX);
    let seen: Vec<Delivered> = seen.into_iter().filter(|p| p.0 < cutoff).collect();
    assert!(lean);
    let mut seqs: Vec<u16> = seen.iter().map(|p| p.1).collect();
    // Repairs arrive after packets sent later: out of order.
    let late = seqs.windows(2).filter(|w| w[1] != w[0].wrapping_add(1)).count();
    assert!(late >= 2, "repairs arrived out of order ({late} breaks)");
    seqs.sort_unstable();
    seqs.dedup();
    // One stream from a keyframe on (no wrap in four seconds from where the forwarder starts).
    let holes: Vec<_> = seqs.windows(2).filter(|w| w[1] != w[0] + 1).collect();
    assert!(holes.is_empty(), "holes left: {holes:?}");
    // The packets whose first delivery came after a later one: the repaired ones.
    let (firsts, again) = firsts_and_repeats(&seen);
    let repaired: Vec<u16> = firsts.iter().enumerate().filter(|(i, p)| firsts[..*i].iter().any(|q| q.1 > p.1)).map(|(_, p)| p.1).collect();
    assert!(dropped >= lose.len() as u64, "{dropped} datagrams lost");
    assert_eq!(repaired.len() as u64, dropped, "each lost packet came again: {repaired:?}");
    // rtc's NACK generator (the viewer's) asks again each 100 ms until it has asked three
    // times, repaired or not; the guard answers each (session/feedback.rs: MAX_RESENDS).
    assert!(again.iter().all(|p| repaired.contains(&p.1)), "no copies but of repaired packets (no probes here)");
    assert!(again.len() <= repaired.len() * (crate::session::feedback::MAX_RESENDS as usize - 1));
}

/// On the lean path the viewer gets a sender report per stream once a second, built from the
/// path's own counters: the packets and payload bytes sent so far, and an RTP time that maps to
/// its NTP time as the stream's clock does (what a browser syncs audio and video with).
#[test]
fn sender_reports_on_the_lean_path_count_and_map_the_clock() {
    let mut sim = Sim::new();
    let p = sim.publisher(Duration::from_secs(2));
    sim.run_for(Duration::from_millis(500));
    let track = sim.published_track(p);
    let v = sim.subscriber(track, Some(720));
    sim.run_for(Duration::from_millis(3400));
    let id = sim.clients[v].id;
    assert!(sim.core.subscriber(id).is_some_and(|s| s.is_lean()), "the lean path is on by default");
    let ssrc = sim.clients[v].video.first().expect("video").1;
    let reports: Vec<_> = sim.clients[v].reports.lock().expect("reports").iter().filter(|r| r.1.ssrc == ssrc).cloned().collect();
    assert!((3..=4).contains(&reports.len()), "one a second: {}", reports.len());
    for (at, sr) in &reports {
        // Everything sent before the report was received before it (no loss, no delay here).
        let (sent, bytes) = sim.clients[v].rtp.iter().filter(|p| p.0 <= *at).fold((0u32, 0u32), |(n, b), p| (n + 1, b + p.5.len() as u32));
        assert_eq!((sr.packet_count, sr.octet_count), (sent, bytes), "counts at {:?}", at.duration_since(sim.t0));
    }
    for w in reports.windows(2) {
        let ntp = |t: u64| (t >> 32) as f64 + (t & 0xffff_ffff) as f64 / 4_294_967_296.0;
        let wall = ntp(w[1].1.ntp_time) - ntp(w[0].1.ntp_time);
        assert!((wall - w[1].0.duration_since(w[0].0).as_secs_f64()).abs() < 0.001, "NTP time follows the clock: {wall}");
        let rtp = w[1].1.rtp_time.wrapping_sub(w[0].1.rtp_time) as f64 / 90_000.0;
        assert!((rtp - wall).abs() < 0.002, "RTP time follows NTP time: {rtp} s of RTP in {wall} s");
    }
}

/// A viewer whose stack lists AEAD_AES_256_GCM first (as browsers do) gets a profile the lean
/// path seals — here AES_CM_128_HMAC_SHA1_80, the one every stack must have — and its media,
/// repairs included, goes out on the lean path.
#[test]
fn a_viewer_preferring_aes_256_gets_a_profile_the_lean_path_seals() {
    let mut sim = Sim::new();
    let p = sim.publisher(Duration::from_secs(2));
    sim.run_for(Duration::from_millis(500));
    let track = sim.published_track(p);
    sim.client_srtp = Some(vec![SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm, SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80]);
    let v = sim.subscriber(track, Some(720));
    let first_frame = sim.clients[p].encoder.as_ref().map_or(sim.now, |e| e.next_frame);
    sim.clients[v].downlink.lose_at = vec![first_frame + FRAME * 20];
    sim.run_for(Duration::from_secs(2));
    let id = sim.clients[v].id;
    let s = sim.core.subscriber(id).expect("the viewer's session");
    let keys = s.link.srtp_keys().expect("keys noted");
    assert!(!keys.aead, "AES_CM_128_HMAC_SHA1_80 was negotiated: {keys:?}");
    assert!(s.is_lean());
    assert!(sim.clients[v].downlink.dropped > 0);
    // Counted from the first (a stream starts at a random sequence number).
    let seq0 = sim.clients[v].rtp.first().map_or(0, |p| p.1);
    let mut seqs: Vec<u16> = sim.clients[v].rtp.iter().map(|p| p.1.wrapping_sub(seq0)).collect();
    assert!(seqs.len() > 100, "video flows ({} packets)", seqs.len());
    seqs.sort_unstable();
    seqs.dedup();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "the lost frame was repaired");
}
