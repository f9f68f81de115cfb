//! Test harness: a real Onair server on loopback and real WebRTC clients (webrtc-rs, async),
//! talking the documented signaling protocol over a real WebSocket.
#![allow(dead_code)]

pub mod chat_client;
pub mod http;
pub mod pg;
pub mod redis;
pub mod whep;
pub mod whip;

use futures_util::{SinkExt, StreamExt};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{Value, json};
use signaling::auth::Role;
use signaling::config::Config;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCPeerConnectionIceEvent};

pub const SECRET: &str = "test-secret-for-onair";
pub const VP8_PT: u8 = 96;
pub const OPUS_PT: u8 = 111;
/// Bytes of pattern after the counters in every synthetic payload.
pub const PATTERN_LEN: usize = 900;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

pub fn test_config() -> Config {
    let mut c = Config { dev: Some(false), ..Config::default() };
    c.auth.secret = SECRET.into();
    c.http.bind = "127.0.0.1:0".parse().unwrap();
    c.rtc.udp_bind = "127.0.0.1:0".parse().unwrap();
    c.rtc.advertise_ip = "127.0.0.1".parse().unwrap();
    c.rtc.workers = 2;
    c.rtmp.bind = "127.0.0.1:0".parse().unwrap();
    c.admin.bind = "127.0.0.1:0".parse().unwrap();
    c.rtmp.keys_file = String::new(); // nothing to import
    c.store.url = "sqlite::memory:".into();
    // Only the archive's tests record (into a folder of their own).
    c.archive.record = false;
    c
}

pub async fn start_server() -> signaling::Server {
    init_tracing();
    signaling::Server::start(test_config()).await.expect("server starts")
}

pub fn token(server: &signaling::Server, room: &str, identity: &str, role: Role) -> String {
    server.state.auth.mint(room, identity, Some(identity), role, 600).unwrap()
}

pub fn ws_url(server: &signaling::Server) -> String {
    format!("ws://{}/ws", server.http_addr)
}

/// What a subscriber saw on one track.
#[derive(Default, Debug, Clone)]
pub struct TrackStats {
    pub kind: String,
    pub packets: u64,
    pub corrupt: u64,
    pub out_of_order: u64,
    pub last_counter: Option<u32>,
    pub keyframes: u64,
    pub first_packet: Option<Instant>,
    pub first_keyframe: Option<Instant>,
    pub ssrcs: Vec<u32>,
    pub seq_gaps: u64,
    /// Packets whose sequence number had already arrived: RTX copies of packets the viewer has
    /// (the server's bandwidth probes, a retransmission that crossed its original). A jitter
    /// buffer drops them; so do these counters.
    pub duplicates: u64,
    pub last_seq: Option<u16>,
    /// Extended sequence numbers received (retransmissions included), for loss accounting.
    pub seqs: std::collections::BTreeSet<u64>,
    highest_ext: Option<u64>,
    /// The first packets as received (for tests that check payloads of real codecs).
    pub raw: Vec<RawPacket>,
}

/// Packets kept per track in [`TrackStats::raw`].
pub const RAW_KEEP: usize = 6000;

#[derive(Debug, Clone)]
pub struct RawPacket {
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub payload: bytes::Bytes,
    pub at: Instant,
}

impl TrackStats {
    /// Sequence numbers missing between the first and `tail` before the highest received.
    pub fn missing(&self, tail: u64) -> (u64, u64) {
        let (Some(&lo), Some(&hi)) = (self.seqs.first(), self.seqs.last()) else { return (0, 0) };
        let hi = hi.saturating_sub(tail);
        if hi <= lo {
            return (0, 0);
        }
        let span = hi - lo + 1;
        let got = self.seqs.range(lo..=hi).count() as u64;
        (span - got, span)
    }
}

/// A synthetic payload: [VP8 descriptor + header byte if video][counter u32][pattern].
pub fn payload(video: bool, keyframe: bool, counter: u32) -> bytes::Bytes {
    let mut v = Vec::with_capacity(PATTERN_LEN + 6);
    if video {
        v.push(0x10); // S=1, PID=0
        v.push(if keyframe { 0x00 } else { 0x01 }); // VP8 P bit: 0 = key frame
    }
    v.extend_from_slice(&counter.to_be_bytes());
    v.extend((0..PATTERN_LEN).map(|i| (counter as usize).wrapping_mul(31).wrapping_add(i) as u8));
    v.into()
}

/// Check a payload made by [`payload`]: the counter, or None if corrupt.
pub fn check_payload(video: bool, p: &[u8]) -> Option<(u32, bool)> {
    let (key, rest) = if video {
        // 0x10: first packet of a frame (S=1); 0x00: continuation.
        if p.len() < 2 || (p[0] != 0x10 && p[0] != 0x00) {
            return None;
        }
        (p[0] == 0x10 && p[1] & 1 == 0, &p[2..])
    } else {
        (false, p)
    };
    if rest.len() != 4 + PATTERN_LEN {
        return None;
    }
    let counter = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let ok = rest[4..].iter().enumerate().all(|(i, b)| *b == (counter as usize).wrapping_mul(31).wrapping_add(i) as u8);
    ok.then_some((counter, key))
}

#[derive(Clone)]
struct Handler {
    target: &'static str,
    out: mpsc::UnboundedSender<String>,
    media: Arc<Mutex<HashMap<String, TrackStats>>>,
    connected: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.out.send(
                json!({"type":"candidate","target":self.target,"candidate":{"candidate":init.candidate,"sdpMid":init.sdp_mid,"sdpMLineIndex":init.sdp_mline_index}}).to_string(),
            );
        }
    }

    async fn on_connection_state_change(&self, state: webrtc::peer_connection::RTCPeerConnectionState) {
        if state == webrtc::peer_connection::RTCPeerConnectionState::Connected {
            self.connected.store(true, Ordering::SeqCst);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let media = self.media.clone();
        tokio::spawn(async move {
            let id = track.track_id().await;
            let video = track.kind().await == RtpCodecKind::Video;
            media.lock().unwrap().entry(id.clone()).or_default().kind = if video { "video" } else { "audio" }.into();
            while let Some(ev) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(pkt) = ev else { continue };
                let now = Instant::now();
                let mut m = media.lock().unwrap();
                let s = m.entry(id.clone()).or_default();
                let ext = match s.highest_ext {
                    None => (1u64 << 32) + pkt.header.sequence_number as u64,
                    Some(h) => (h as i64 + pkt.header.sequence_number.wrapping_sub(h as u16) as i16 as i64) as u64,
                };
                if !s.seqs.insert(ext) {
                    s.duplicates += 1;
                    continue;
                }
                s.packets += 1;
                s.first_packet.get_or_insert(now);
                if !s.ssrcs.contains(&pkt.header.ssrc) {
                    s.ssrcs.push(pkt.header.ssrc);
                }
                if let Some(last) = s.last_seq {
                    let d = pkt.header.sequence_number.wrapping_sub(last);
                    if d > 1 && d < 0x8000 {
                        s.seq_gaps += (d - 1) as u64;
                    }
                }
                s.last_seq = Some(pkt.header.sequence_number);
                s.highest_ext = Some(s.highest_ext.map_or(ext, |h| h.max(ext)));
                if s.raw.len() < RAW_KEEP {
                    s.raw.push(RawPacket {
                        seq: pkt.header.sequence_number,
                        ts: pkt.header.timestamp,
                        marker: pkt.header.marker,
                        payload: pkt.payload.clone(),
                        at: now,
                    });
                }
                match check_payload(video, &pkt.payload) {
                    None => s.corrupt += 1,
                    Some((counter, key)) => {
                        if s.last_counter.is_some_and(|c| counter <= c) {
                            s.out_of_order += 1;
                        }
                        s.last_counter = Some(counter);
                        if key {
                            s.keyframes += 1;
                            s.first_keyframe.get_or_insert(now);
                        }
                    }
                }
            }
        });
    }
}

fn media_engine(publisher: bool) -> MediaEngine {
    let mut me = MediaEngine::default();
    if publisher {
        let vp8 = RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.into(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        };
        let opus = RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.into(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
            rtcp_feedback: vec![],
        };
        me.register_codec(RTCRtpCodecParameters { rtp_codec: vp8, payload_type: VP8_PT }, RtpCodecKind::Video).unwrap();
        me.register_codec(RTCRtpCodecParameters { rtp_codec: opus, payload_type: OPUS_PT }, RtpCodecKind::Audio).unwrap();
    } else {
        me.register_default_codecs().unwrap();
    }
    me
}

async fn build_pc(handler: Handler, publisher: bool) -> Arc<dyn PeerConnection> {
    let mut me = media_engine(publisher);
    let mut registry = register_default_interceptors(Registry::new(), &mut me).unwrap();
    if publisher {
        registry =
            registry.with(rtc::interceptor::Slot::from(sfu::client::KEYFRAME_FEEDBACK_SLOT), sfu::client::KeyframeFeedback::default());
    }
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(handler))
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .expect("peer connection builds");
    Arc::new(pc)
}

/// The synthetic publisher's two tracks: Opus audio and VP8 video, each with a random SSRC.
pub fn synthetic_tracks() -> (u32, Arc<TrackLocalStaticRTP>, u32, Arc<TrackLocalStaticRTP>) {
    let mk = |kind: RtpCodecKind, mime: &str, rate: u32, ch: u16, fmtp: &str, label: &str| {
        let ssrc = rand::random::<u32>();
        let codec =
            RTCRtpCodec { mime_type: mime.into(), clock_rate: rate, channels: ch, sdp_fmtp_line: fmtp.into(), rtcp_feedback: vec![] };
        (
            ssrc,
            Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                format!("stream-{label}"),
                format!("{label}-{ssrc}"),
                label.into(),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                    codec,
                    active: true,
                    ..Default::default()
                }],
            ))),
        )
    };
    let (a_ssrc, audio) = mk(RtpCodecKind::Audio, MIME_TYPE_OPUS, 48000, 2, "minptime=10;useinbandfec=1", "audio");
    let (v_ssrc, video) = mk(RtpCodecKind::Video, MIME_TYPE_VP8, 90000, 0, "", "video");
    (a_ssrc, audio, v_ssrc, video)
}

/// Synthetic media on a publisher's tracks: Opus every 20 ms, VP8 at 30 fps in three packets a
/// frame, a keyframe on every keyframe request (PLI/FIR) and at least every 3 s.
pub struct SyntheticMedia {
    pub audio: Arc<TrackLocalStaticRTP>,
    pub a_ssrc: u32,
    pub video: Arc<TrackLocalStaticRTP>,
    pub v_ssrc: u32,
    pub stop: Arc<AtomicBool>,
    pub sent: Arc<AtomicU32>,
    pub keyframe_requests_seen: Arc<AtomicU32>,
}

impl SyntheticMedia {
    /// Send until `stop` (10 minutes at most); the tasks doing it.
    pub fn spawn(self) -> Vec<tokio::task::JoinHandle<()>> {
        let SyntheticMedia { audio, a_ssrc, video, v_ssrc, stop, sent, keyframe_requests_seen } = self;
        let mut tasks = Vec::new();
        // Keyframe requests arrive as RTCP on the video track.
        let want_key = Arc::new(AtomicBool::new(true));
        {
            let (video, want_key, seen, stop) = (video.clone(), want_key.clone(), keyframe_requests_seen.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(200), video.poll()).await {
                        Ok(Some(_)) => {
                            seen.fetch_add(1, Ordering::SeqCst);
                            want_key.store(true, Ordering::SeqCst);
                        }
                        Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                        Err(_) => {}
                    }
                }
            }));
        }
        let (stop, sent) = (stop.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let (mut a_seq, mut v_seq, mut counter) = (rand::random::<u16>(), rand::random::<u16>(), 0u32);
            let (mut a_ts, mut v_ts) = (rand::random::<u32>(), rand::random::<u32>());
            let mut last_key = Instant::now();
            let started = Instant::now();
            let mut frames = 0u64;
            let mut audio_pkts = 0u64;
            // Bounded: a test publisher stops after 10 minutes at the latest.
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
                tick.tick().await;
                let el = started.elapsed().as_millis() as u64;
                while audio_pkts * 20 <= el {
                    counter += 1;
                    let mut p = rtc::rtp::Packet { header: Default::default(), payload: payload(false, false, counter) };
                    p.header.version = 2;
                    p.header.payload_type = OPUS_PT;
                    p.header.ssrc = a_ssrc;
                    p.header.sequence_number = a_seq;
                    p.header.timestamp = a_ts;
                    a_seq = a_seq.wrapping_add(1);
                    a_ts = a_ts.wrapping_add(960);
                    audio_pkts += 1;
                    if audio.write_rtp(p).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                while frames * 33 <= el {
                    let key = want_key.swap(false, Ordering::SeqCst) || last_key.elapsed() >= Duration::from_secs(3);
                    if key {
                        last_key = Instant::now();
                    }
                    for i in 0..3u8 {
                        counter += 1;
                        let mut p = rtc::rtp::Packet { header: Default::default(), payload: payload(true, key && i == 0, counter) };
                        if i > 0 {
                            // Continuation packets of a frame: S=0.
                            let mut b = p.payload.to_vec();
                            b[0] = 0x00;
                            p.payload = b.into();
                        }
                        p.header.version = 2;
                        p.header.payload_type = VP8_PT;
                        p.header.ssrc = v_ssrc;
                        p.header.sequence_number = v_seq;
                        p.header.timestamp = v_ts;
                        p.header.marker = i == 2;
                        v_seq = v_seq.wrapping_add(1);
                        if video.write_rtp(p).await.is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    v_ts = v_ts.wrapping_add(3000);
                    frames += 1;
                }
            }
        }));
        tasks
    }
}

/// A participant: a WebSocket, a subscriber connection, maybe a publisher connection.
pub struct Client {
    pub id: String,
    pub joined: Value,
    out: mpsc::UnboundedSender<String>,
    events: mpsc::UnboundedReceiver<Value>,
    pub media: Arc<Mutex<HashMap<String, TrackStats>>>,
    sub_pc: Arc<dyn PeerConnection>,
    pub_pc: Option<Arc<dyn PeerConnection>>,
    pub_answer: Arc<Mutex<Option<mpsc::UnboundedSender<String>>>>,
    pub sub_connected: Arc<AtomicBool>,
    pub pub_connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    pub sent_packets: Arc<AtomicU32>,
    pub keyframe_requests_seen: Arc<AtomicU32>,
    /// The last subscriber offer the server sent (its ICE ufrag is used by attack tests).
    pub last_offer: Arc<Mutex<Option<String>>>,
    /// Every subscriber offer the server sent, in order.
    pub offers: Arc<Mutex<Vec<String>>>,
    /// Dynacast: the highest layer the server last asked this publisher for.
    pub simulcast_max_layer: Arc<std::sync::atomic::AtomicU32>,
    /// The WebSocket's two tasks (writer, reader), and what they share with the client: a
    /// resume replaces them (`Client::resume`).
    wire: Wire,
    ws_tasks: Vec<tokio::task::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

type WsSink = futures_util::stream::SplitSink<RawWs, Message>;
type WsStream = futures_util::stream::SplitStream<RawWs>;

/// What a client's WebSocket tasks need: the queue of messages to send (kept when the socket is
/// replaced), where events go, and the subscriber connection that answers offers.
#[derive(Clone)]
struct Wire {
    out_rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>>,
    out: mpsc::UnboundedSender<String>,
    ev_tx: mpsc::UnboundedSender<Value>,
    sub_pc: Arc<dyn PeerConnection>,
    pub_answer: Arc<Mutex<Option<mpsc::UnboundedSender<String>>>>,
    last_offer: Arc<Mutex<Option<String>>>,
    offers: Arc<Mutex<Vec<String>>>,
    simulcast_max_layer: Arc<AtomicU32>,
    relay: Option<std::net::SocketAddr>,
    media_port: u16,
}

impl Wire {
    /// The writer (queued messages out) and the reader (offers answered, events passed on).
    fn spawn(&self, mut sink: WsSink, mut stream: WsStream) -> Vec<tokio::task::JoinHandle<()>> {
        let out_rx = self.out_rx.clone();
        let writer = tokio::spawn(async move {
            let mut out_rx = out_rx.lock().await;
            while let Some(text) = out_rx.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let Wire { out, ev_tx, sub_pc, pub_answer, last_offer, offers, simulcast_max_layer, relay, media_port, .. } = self.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(t) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                match v["type"].as_str() {
                    Some("offer") => {
                        let sdp = v["sdp"].as_str().unwrap_or_default().to_owned();
                        *last_offer.lock().unwrap() = Some(sdp.clone());
                        offers.lock().unwrap().push(sdp.clone());
                        let sdp = match relay {
                            Some(r) => sdp.replace(&format!(" {media_port} typ host"), &format!(" {} typ host", r.port())),
                            None => sdp,
                        };
                        let offer = RTCSessionDescription::offer(sdp).unwrap();
                        if let Err(e) = sub_pc.set_remote_description(offer).await {
                            panic!("client could not apply the server offer: {e}");
                        }
                        // Fails only when the connection is closing (the test is ending).
                        let Ok(answer) = sub_pc.create_answer(None).await else { continue };
                        if sub_pc.set_local_description(answer).await.is_err() {
                            continue;
                        }
                        let Some(sdp) = sub_pc.local_description().await.map(|d| d.sdp) else { continue };
                        let _ = out.send(json!({"type":"answer","sdp":sdp}).to_string());
                    }
                    Some("layers") => {
                        simulcast_max_layer.store(v["max_layer"].as_u64().unwrap_or(2) as u32, Ordering::SeqCst);
                        let _ = ev_tx.send(v);
                    }
                    Some("answer") => {
                        if let Some(tx) = pub_answer.lock().unwrap().as_ref() {
                            let _ = tx.send(v["sdp"].as_str().unwrap_or_default().to_owned());
                        }
                    }
                    Some("candidate") if v["target"] == "subscriber" && relay.is_none() => {
                        let c = &v["candidate"];
                        let init = RTCIceCandidateInit {
                            candidate: c["candidate"].as_str().unwrap_or_default().to_owned(),
                            sdp_mid: c["sdpMid"].as_str().map(str::to_owned),
                            sdp_mline_index: c["sdpMLineIndex"].as_u64().map(|x| x as u16),
                            ..Default::default()
                        };
                        let _ = sub_pc.add_ice_candidate(init).await;
                    }
                    _ => {
                        let _ = ev_tx.send(v);
                    }
                }
            }
        });
        vec![writer, reader]
    }
}

/// Join with a token; returns the server's `error` message on refusal.
pub async fn join(server: &signaling::Server, token: &str) -> Result<Client, Value> {
    join_via(server, token, None).await
}

/// Join, with the subscriber connection's media going through `relay` (a UDP address standing in
/// for the server's media port) instead of straight to the server.
pub async fn join_via(server: &signaling::Server, token: &str, relay: Option<std::net::SocketAddr>) -> Result<Client, Value> {
    join_url_via(&ws_url(server), server.sfu().local_addr().port(), token, relay).await
}

/// Join at a server's WebSocket URL (a server in another process).
pub async fn join_url(url: &str, token: &str) -> Result<Client, Value> {
    join_url_via(url, 0, token, None).await
}

async fn join_url_via(url: &str, media_port: u16, token: &str, relay: Option<std::net::SocketAddr>) -> Result<Client, Value> {
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
    let (mut sink, mut stream) = ws.split();
    sink.send(Message::Text(json!({"type":"join","token":token,"protocol":1}).to_string().into())).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("reply to join");
    let joined: Value = match first {
        Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("unexpected reply to join: {other:?}"),
    };
    if joined["type"] != "joined" {
        return Err(joined);
    }
    let id = joined["participant"]["id"].as_str().unwrap().to_owned();
    let (out_tx, out_rx) = mpsc::unbounded_channel::<String>();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel::<Value>();
    let media = Arc::new(Mutex::new(HashMap::new()));
    let sub_connected = Arc::new(AtomicBool::new(false));
    let sub_pc =
        build_pc(Handler { target: "subscriber", out: out_tx.clone(), media: media.clone(), connected: sub_connected.clone() }, false)
            .await;
    let stop = Arc::new(AtomicBool::new(false));
    let pub_answer: Arc<Mutex<Option<mpsc::UnboundedSender<String>>>> = Arc::new(Mutex::new(None));
    let last_offer: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let offers: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let simulcast_max_layer = Arc::new(AtomicU32::new(2));
    let out_rx = Arc::new(tokio::sync::Mutex::new(out_rx));
    let wire = Wire {
        out_rx,
        out: out_tx.clone(),
        ev_tx,
        sub_pc: sub_pc.clone(),
        pub_answer: pub_answer.clone(),
        last_offer: last_offer.clone(),
        offers: offers.clone(),
        simulcast_max_layer: simulcast_max_layer.clone(),
        relay,
        media_port,
    };
    let ws_tasks = wire.spawn(sink, stream);
    let tasks = Vec::new();
    Ok(Client {
        id,
        joined,
        wire,
        ws_tasks,
        out: out_tx,
        events: ev_rx,
        media,
        sub_pc,
        pub_pc: None,
        pub_answer,
        sub_connected,
        pub_connected: Arc::new(AtomicBool::new(false)),
        stop,
        sent_packets: Arc::new(AtomicU32::new(0)),
        keyframe_requests_seen: Arc::new(AtomicU32::new(0)),
        last_offer,
        offers,
        simulcast_max_layer,
        tasks,
    })
}

impl Client {
    pub fn send(&self, v: Value) {
        let _ = self.out.send(v.to_string());
    }

    pub fn send_raw(&self, text: String) {
        let _ = self.out.send(text);
    }

    /// Next server message of `kind` (others are kept aside only if they match later calls? no:
    /// they are skipped), within `within`.
    pub async fn wait_for(&mut self, kind: &str, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(v)) if v["type"] == kind => return Some(v),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Offer `pc` with `publish`, apply the server's answer and keep `pc` as the publisher
    /// connection; returns the answer SDP, or the server's `error` message on refusal.
    async fn offer_to_publish(&mut self, pc: Arc<dyn PeerConnection>) -> Result<String, Value> {
        self.offer_to_publish_with(pc, None).await
    }

    async fn offer_to_publish_with(
        &mut self,
        pc: Arc<dyn PeerConnection>,
        options: Option<rtc::peer_connection::configuration::RTCOfferOptions>,
    ) -> Result<String, Value> {
        let offer = pc.create_offer(options).await.unwrap();
        pc.set_local_description(offer).await.unwrap();
        let sdp = pc.local_description().await.unwrap().sdp;
        let (tx, mut rx) = mpsc::unbounded_channel();
        *self.pub_answer.lock().unwrap() = Some(tx);
        self.send(json!({"type":"publish","sdp":sdp}));
        // Either an answer or an error comes back.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let answer = loop {
            tokio::select! {
                a = rx.recv() => break a.expect("answer channel"),
                e = tokio::time::timeout_at(deadline, self.events.recv()) => match e {
                    Ok(Some(v)) if v["type"] == "error" => { let _ = pc.close().await; return Err(v) },
                    Ok(Some(_)) => continue,
                    _ => panic!("no answer to publish"),
                }
            }
        };
        pc.set_remote_description(RTCSessionDescription::answer(answer.clone()).unwrap()).await.unwrap();
        self.pub_pc = Some(pc);
        Ok(answer)
    }

    /// Renegotiate the publisher connection (a fresh offer on the same connection).
    pub async fn republish(&mut self) -> Result<String, Value> {
        let pc = self.pub_pc.clone().expect("published before");
        self.offer_to_publish(pc).await
    }

    /// Renegotiate the publisher connection with an ICE restart (new credentials in the offer,
    /// as a client whose network changed does); returns the server's answer.
    pub async fn republish_restarting_ice(&mut self) -> Result<String, Value> {
        let pc = self.pub_pc.clone().expect("published before");
        let options = rtc::peer_connection::configuration::RTCOfferOptions { ice_restart: true };
        self.offer_to_publish_with(pc, Some(options)).await
    }

    /// The server's answer the publisher connection holds.
    pub async fn publisher_remote_sdp(&self) -> String {
        let pc = self.pub_pc.clone().expect("published before");
        pc.remote_description().await.expect("remote description").sdp
    }

    /// The publisher connection's current local SDP (to build broken offers from).
    pub async fn publisher_sdp(&self) -> String {
        let pc = self.pub_pc.clone().expect("published before");
        pc.local_description().await.expect("local description").sdp
    }

    /// Publish synthetic Opus-sized audio (50 pkt/s) and VP8-shaped video (30 fps, 3 packets a
    /// frame, a keyframe every 3 s and on every PLI). Returns the publish error if refused.
    pub async fn publish(&mut self) -> Result<(), Value> {
        let connected = self.pub_connected.clone();
        let pc =
            build_pc(Handler { target: "publisher", out: self.out.clone(), media: Arc::new(Mutex::new(HashMap::new())), connected }, true)
                .await;
        let (a_ssrc, audio, v_ssrc, video) = synthetic_tracks();
        pc.add_track(audio.clone() as Arc<dyn TrackLocal>).await.unwrap();
        pc.add_track(video.clone() as Arc<dyn TrackLocal>).await.unwrap();
        self.offer_to_publish(pc).await?;
        let media = SyntheticMedia {
            audio,
            a_ssrc,
            video,
            v_ssrc,
            stop: self.stop.clone(),
            sent: self.sent_packets.clone(),
            keyframe_requests_seen: self.keyframe_requests_seen.clone(),
        };
        self.tasks.extend(media.spawn());
        Ok(())
    }

    /// Publish one synthetic VP8 video track as three simulcast layers (RIDs q/h/f) at the given
    /// bitrates (bits/s, 30 fps), with a keyframe per layer every 2 s and on every PLI for that
    /// layer, and honour dynacast `layers` messages by pausing the layers above `max_layer`.
    pub async fn publish_simulcast(&mut self, rates: [u32; 3]) -> Result<(), Value> {
        self.publish_simulcast_with(rates, false).await
    }

    /// Three layers, each optionally with VP8 temporal layers in the L1T3 pattern (TIDs 0 2 1 2,
    /// base frames twice the size: 40 % of a layer's bytes in TID 0, 60 % up to TID 1).
    pub async fn publish_simulcast_with(&mut self, rates: [u32; 3], temporal: bool) -> Result<(), Value> {
        let connected = self.pub_connected.clone();
        let pc =
            build_pc(Handler { target: "publisher", out: self.out.clone(), media: Arc::new(Mutex::new(HashMap::new())), connected }, true)
                .await;
        let codec = RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.into(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        };
        let rids = ["q", "h", "f"];
        let ssrcs: Vec<u32> = (0..3).map(|_| rand::random::<u32>()).collect();
        let codings = (0..3)
            .map(|i| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { rid: rids[i].into(), ssrc: Some(ssrcs[i]), ..Default::default() },
                codec: codec.clone(),
                active: true,
                ..Default::default()
            })
            .collect();
        let video = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "stream-sim".into(),
            "video-sim".into(),
            "video".into(),
            RtpCodecKind::Video,
            codings,
        )));
        pc.add_track(video.clone() as Arc<dyn TrackLocal>).await.unwrap();
        let answer = self.offer_to_publish(pc).await?;
        let ext_id = |uri: &str| -> Option<u8> {
            answer.lines().find_map(|l| {
                let rest = l.strip_prefix("a=extmap:")?;
                let (id, u) = rest.split_once(' ')?;
                (u.trim() == uri).then(|| id.split('/').next()?.parse().ok())?
            })
        };
        let mid_id = ext_id("urn:ietf:params:rtp-hdrext:sdes:mid");
        let rid_id = ext_id("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id");
        let mid = answer.lines().find_map(|l| l.strip_prefix("a=mid:")).unwrap_or("0").trim().to_owned();
        let want_key: Arc<Vec<AtomicBool>> = Arc::new((0..3).map(|_| AtomicBool::new(true)).collect());
        {
            let (video, want_key, seen, stop, ssrcs) =
                (video.clone(), want_key.clone(), self.keyframe_requests_seen.clone(), self.stop.clone(), ssrcs.clone());
            self.tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(200), video.poll()).await {
                        Ok(Some(webrtc::media_stream::track_local::TrackLocalEvent::OnRtcpPacket(packets))) => {
                            for p in packets {
                                for d in p.destination_ssrc() {
                                    if let Some(i) = ssrcs.iter().position(|s| *s == d) {
                                        seen.fetch_add(1, Ordering::SeqCst);
                                        want_key[i].store(true, Ordering::SeqCst);
                                    }
                                }
                            }
                        }
                        Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        Err(_) => {}
                    }
                }
            }));
        }
        let (stop, sent, max_layer) = (self.stop.clone(), self.sent_packets.clone(), self.simulcast_max_layer.clone());
        self.tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(33));
            let mut seq: Vec<u16> = (0..3).map(|_| rand::random()).collect();
            let mut ts: Vec<u32> = (0..3).map(|_| rand::random()).collect();
            let mut last_key = [Instant::now(); 3];
            let mut frame_no = [0usize; 3];
            let heights = [180u16, 360, 720];
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
                tick.tick().await;
                for l in 0..3 {
                    if l as u32 > max_layer.load(Ordering::Relaxed) {
                        continue; // paused by dynacast
                    }
                    let key = want_key[l].swap(false, Ordering::SeqCst) || last_key[l].elapsed() >= Duration::from_secs(2);
                    if key {
                        last_key[l] = Instant::now();
                        frame_no[l] = 0;
                    }
                    let tid = [0u8, 2, 1, 2][frame_no[l] % 4];
                    frame_no[l] += 1;
                    let mut frame_bytes = (rates[l] / 8 / 30) as usize;
                    if temporal {
                        frame_bytes = frame_bytes * if tid == 0 { 8 } else { 4 } / 5;
                    }
                    let packets = frame_bytes.div_ceil(1000).max(1);
                    for i in 0..packets {
                        let mut body = Vec::with_capacity(1100);
                        if temporal {
                            // X, T: the temporal layer in every packet of the frame.
                            body.extend_from_slice(&[if i == 0 { 0x90 } else { 0x80 }, 0x20, tid << 6]);
                        } else {
                            body.push(if i == 0 { 0x10 } else { 0x00 });
                        }
                        if i == 0 && key {
                            let (w, h) = (heights[l] * 16 / 9, heights[l]);
                            body.extend_from_slice(&[0x50, 0x2d, 0x01, 0x9d, 0x01, 0x2a]);
                            body.extend_from_slice(&w.to_le_bytes());
                            body.extend_from_slice(&h.to_le_bytes());
                        } else if i == 0 {
                            body.extend_from_slice(&[0x51, 0x2d, 0x01]);
                        }
                        body.resize((frame_bytes / packets).max(body.len() + 1), 0xab);
                        let mut p = rtc::rtp::Packet { header: Default::default(), payload: body.into() };
                        p.header.version = 2;
                        p.header.payload_type = VP8_PT;
                        p.header.ssrc = ssrcs[l];
                        p.header.sequence_number = seq[l];
                        p.header.timestamp = ts[l];
                        p.header.marker = i + 1 == packets;
                        if let (Some(m), Some(r)) = (mid_id, rid_id) {
                            let _ = p.header.set_extension(m, bytes::Bytes::from(mid.clone().into_bytes()));
                            let _ = p.header.set_extension(r, bytes::Bytes::from(rids[l].as_bytes().to_vec()));
                        }
                        seq[l] = seq[l].wrapping_add(1);
                        if video.write_rtp(p).await.is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    ts[l] = ts[l].wrapping_add(3000);
                }
            }
        }));
        Ok(())
    }

    pub fn media_snapshot(&self) -> HashMap<String, TrackStats> {
        self.media.lock().unwrap().clone()
    }

    /// The network goes away: the WebSocket and the peer connections stop without `leave`.
    pub async fn cut(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..).chain(self.ws_tasks.drain(..)) {
            t.abort();
        }
        if let Some(pc) = self.pub_pc.take() {
            let _ = pc.close().await;
        }
        let _ = self.sub_pc.close().await;
    }

    pub async fn close(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.send(json!({"type":"leave"}));
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(pc) = self.pub_pc.take() {
            let _ = pc.close().await;
        }
        let _ = self.sub_pc.close().await;
        for t in self.tasks.drain(..).chain(self.ws_tasks.drain(..)) {
            t.abort();
        }
    }

    /// The WebSocket dies (its TCP connection just ends: no close frame, no `leave`); the peer
    /// connections stay.
    pub fn kill_ws(&mut self) {
        for t in self.ws_tasks.drain(..) {
            t.abort();
        }
    }

    /// The WebSocket dies (its TCP connection just ends: no close frame, no `leave`); the peer
    /// connections stay. Then a new WebSocket joins with `token` and this client's resume
    /// token. Returns the server's reply (`joined`, with `resumed` when it took this participant
    /// over); the client goes on with the new socket either way.
    pub async fn kill_ws_and_resume(&mut self, server: &signaling::Server, token: &str, pause: Duration) -> Value {
        self.kill_ws();
        tokio::time::sleep(pause).await;
        let resume = self.joined["resume_token"].clone();
        let (ws, _) = tokio_tungstenite::connect_async(ws_url(server)).await.expect("websocket connects");
        let (mut sink, mut stream) = ws.split();
        sink.send(Message::Text(json!({"type":"join","token":token,"protocol":1,"resume":resume}).to_string().into())).await.unwrap();
        let reply: Value = match tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("reply to join") {
            Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("unexpected reply to join: {other:?}"),
        };
        if reply["type"] == "joined" {
            self.id = reply["participant"]["id"].as_str().unwrap_or_default().to_owned();
            self.joined = reply.clone();
        }
        self.ws_tasks = self.wire.spawn(sink, stream);
        reply
    }
}

/// Poll `cond` every 50 ms until it holds or `within` passes.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

pub type RawWs = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A bare WebSocket to the server, for protocol-level tests.
pub async fn raw_ws(server: &signaling::Server) -> RawWs {
    tokio_tungstenite::connect_async(ws_url(server)).await.expect("websocket connects").0
}

/// Next JSON message (skipping pings), or the close frame's code as `{"close": code}`. Once the
/// socket is closed every call returns a close again at once: a loop over it stops at the first.
pub async fn next_json(ws: &mut RawWs, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Some(Ok(Message::Close(f)))) => return Some(json!({"close": f.map(|f| u16::from(f.code)).unwrap_or(0)})),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return Some(json!({"close": 0})),
            Err(_) => return None,
        }
    }
}

/// Send `join` with this token and return (error code, close code).
pub async fn join_refusal(server: &signaling::Server, join: Value) -> (String, u16) {
    let mut ws = raw_ws(server).await;
    ws.send(Message::Text(join.to_string().into())).await.unwrap();
    let err = next_json(&mut ws, Duration::from_secs(5)).await.expect("a reply");
    assert_eq!(err["type"], "error", "expected an error, got {err}");
    let close = next_json(&mut ws, Duration::from_secs(5)).await.expect("then a close");
    (err["code"].as_str().unwrap_or_default().to_owned(), close["close"].as_u64().unwrap_or(0) as u16)
}

/// The ICE ufrag in an SDP.
pub fn sdp_ufrag(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).map(|s| s.trim().to_owned())
}

/// A userspace impairment relay for one client: datagrams client → server pass; server → client
/// RTP/RTCP is dropped with probability `loss` (STUN and DTLS always pass, so the connection
/// comes up). Loopback only; stops when dropped (tasks are aborted) or after 10 minutes.
pub struct ImpairRelay {
    pub addr: std::net::SocketAddr,
    pub dropped: Arc<AtomicU32>,
    pub passed: Arc<AtomicU32>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ImpairRelay {
    pub async fn start(upstream: std::net::SocketAddr, loss: f64) -> ImpairRelay {
        let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let client: Arc<Mutex<Option<std::net::SocketAddr>>> = Arc::new(Mutex::new(None));
        let (dropped, passed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let until = Instant::now() + Duration::from_secs(600);
        let mut tasks = Vec::new();
        tasks.push(spawn_upstream(front.clone(), back.clone(), client.clone(), upstream, until));
        {
            let (dropped, passed) = (dropped.clone(), passed.clone());
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                while Instant::now() < until {
                    let Ok((n, _)) = back.recv_from(&mut buf).await else { break };
                    let media = n > 1 && (128..192).contains(&buf[0]);
                    if media && rand::random::<f64>() < loss {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    passed.fetch_add(1, Ordering::Relaxed);
                    let to = *client.lock().unwrap();
                    if let Some(to) = to {
                        let _ = front.send_to(&buf[..n], to).await;
                    }
                }
            }));
        }
        ImpairRelay { addr, dropped, passed, tasks }
    }
}

/// A relay for one client whose address, as the server sees it, changes on demand
/// (`move_port`): a NAT rebinding, or a phone moving between networks without an ICE restart.
/// Datagrams pass both ways untouched. Loopback only; stops when dropped or after 10 minutes.
pub struct MovingRelay {
    pub addr: std::net::SocketAddr,
    front: Arc<tokio::net::UdpSocket>,
    client: Arc<Mutex<Option<std::net::SocketAddr>>>,
    upstream: std::net::SocketAddr,
    until: Instant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MovingRelay {
    pub async fn start(upstream: std::net::SocketAddr) -> MovingRelay {
        let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let mut relay = MovingRelay {
            addr,
            front,
            client: Arc::new(Mutex::new(None)),
            upstream,
            until: Instant::now() + Duration::from_secs(600),
            tasks: Vec::new(),
        };
        relay.move_port().await;
        relay
    }

    /// From now on the client's datagrams reach the server from a new port; the old one is
    /// closed (what the server sends there is lost). Returns the new address.
    pub async fn move_port(&mut self) -> std::net::SocketAddr {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let (front, client, until) = (self.front.clone(), self.client.clone(), self.until);
        self.tasks.push(spawn_upstream(front.clone(), back.clone(), client.clone(), self.upstream, until));
        let down = back.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while Instant::now() < until {
                let Ok((n, _)) = down.recv_from(&mut buf).await else { break };
                let to = *client.lock().unwrap();
                if let Some(to) = to {
                    let _ = front.send_to(&buf[..n], to).await;
                }
            }
        }));
        back.local_addr().unwrap()
    }
}

impl Drop for MovingRelay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Client → server half of a relay: learns the client's address, passes everything upstream.
fn spawn_upstream(
    front: Arc<tokio::net::UdpSocket>,
    back: Arc<tokio::net::UdpSocket>,
    client: Arc<Mutex<Option<std::net::SocketAddr>>>,
    upstream: std::net::SocketAddr,
    until: Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while Instant::now() < until {
            let Ok((n, from)) = front.recv_from(&mut buf).await else { break };
            *client.lock().unwrap() = Some(from);
            let _ = back.send_to(&buf[..n], upstream).await;
        }
    })
}

/// A userspace bottleneck for one client: server → client datagrams cross a link of `rate`
/// bits/s (counting UDP payload bytes; 0 = unlimited, changeable while it runs) with a drop-tail
/// queue holding at most `queue` of transmission time — what a home router in front of a slow
/// uplink does. Client → server passes untouched. Loopback only; stops when dropped or after
/// 10 minutes.
pub struct ShapedRelay {
    pub addr: std::net::SocketAddr,
    pub rate_bps: Arc<AtomicU64>,
    /// Datagrams (all kinds) the queue dropped, and the ones it delivered.
    pub dropped: Arc<AtomicU64>,
    pub passed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ShapedRelay {
    pub async fn start(upstream: std::net::SocketAddr, queue: Duration) -> ShapedRelay {
        let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let client: Arc<Mutex<Option<std::net::SocketAddr>>> = Arc::new(Mutex::new(None));
        let rate_bps = Arc::new(AtomicU64::new(0));
        let (dropped, passed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let until = Instant::now() + Duration::from_secs(600);
        let mut tasks = Vec::new();
        tasks.push(spawn_upstream(front.clone(), back.clone(), client.clone(), upstream, until));
        {
            let (rate_bps, dropped, passed) = (rate_bps.clone(), dropped.clone(), passed.clone());
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                // (when it leaves the link, datagram), in order.
                let mut link: std::collections::VecDeque<(tokio::time::Instant, Vec<u8>)> = Default::default();
                let mut link_free = tokio::time::Instant::now();
                while Instant::now() < until {
                    let next_due = link.front().map(|(t, _)| *t);
                    tokio::select! {
                        r = back.recv_from(&mut buf) => {
                            let Ok((n, _)) = r else { break };
                            let now = tokio::time::Instant::now();
                            let rate = rate_bps.load(Ordering::Relaxed);
                            let start = link_free.max(now);
                            if rate > 0 && start.duration_since(now) > queue {
                                dropped.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            let tx = if rate > 0 { Duration::from_secs_f64(n as f64 * 8.0 / rate as f64) } else { Duration::ZERO };
                            link_free = start + tx;
                            link.push_back((link_free, buf[..n].to_vec()));
                        }
                        _ = tokio::time::sleep_until(next_due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1))) => {}
                    }
                    let now = tokio::time::Instant::now();
                    while link.front().is_some_and(|(t, _)| *t <= now) {
                        let Some((_, d)) = link.pop_front() else { break };
                        passed.fetch_add(1, Ordering::Relaxed);
                        let to = *client.lock().unwrap();
                        if let Some(to) = to {
                            let _ = front.send_to(&d, to).await;
                        }
                    }
                }
            }));
        }
        ShapedRelay { addr, rate_bps, dropped, passed, tasks }
    }

    /// Limit the link to `bps` (0 lifts the limit).
    pub fn set_rate(&self, bps: u64) {
        self.rate_bps.store(bps, Ordering::Relaxed);
    }

    /// (dropped, passed) so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.dropped.load(Ordering::Relaxed), self.passed.load(Ordering::Relaxed))
    }
}

impl Drop for ShapedRelay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for ImpairRelay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Ends the whole test process with a message if the guard is still alive after `within`: a
/// deadlocked server can stop every runtime thread, and then no tokio timeout fires. A test that
/// fails (panics) while the runtime is blocked would hang at teardown, so a panic leaves a short
/// fuse: the process ends 10 s later if it has not ended by itself.
pub struct Watchdog(Arc<AtomicU32>);

const WATCHDOG_RUNNING: u32 = 0;
const WATCHDOG_DONE: u32 = 1;
const WATCHDOG_PANICKED: u32 = 2;

pub fn watchdog(what: &'static str, within: Duration) -> Watchdog {
    let state = Arc::new(AtomicU32::new(WATCHDOG_RUNNING));
    let seen = state.clone();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut deadline = within;
        while t0.elapsed() < deadline {
            match seen.load(Ordering::SeqCst) {
                WATCHDOG_DONE => return,
                WATCHDOG_PANICKED if deadline == within => deadline = t0.elapsed() + Duration::from_secs(10),
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("watchdog: {what} did not finish within {deadline:?} (a hang: every runtime thread blocked?)");
        std::process::exit(101);
    });
    Watchdog(state)
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let end = if std::thread::panicking() { WATCHDOG_PANICKED } else { WATCHDOG_DONE };
        self.0.store(end, Ordering::SeqCst);
    }
}

impl Client {
    /// Publish one synthetic Opus track alone (50 packets/s of `payload_bytes` each: 60 bytes is
    /// about what a 24 kbit/s voice encoder sends). Payloads carry a counter, not the
    /// [`payload`] pattern, so receivers count them as packets (and as `corrupt`).
    pub async fn publish_audio(&mut self, payload_bytes: usize) -> Result<(), Value> {
        let connected = self.pub_connected.clone();
        let pc =
            build_pc(Handler { target: "publisher", out: self.out.clone(), media: Arc::new(Mutex::new(HashMap::new())), connected }, true)
                .await;
        let ssrc = rand::random::<u32>();
        let codec = RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.into(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
            rtcp_feedback: vec![],
        };
        let audio = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "stream-voice".into(),
            format!("voice-{ssrc}"),
            "voice".into(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec,
                active: true,
                ..Default::default()
            }],
        )));
        pc.add_track(audio.clone() as Arc<dyn TrackLocal>).await.unwrap();
        self.offer_to_publish(pc).await?;
        let (stop, sent) = (self.stop.clone(), self.sent_packets.clone());
        self.tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let (mut seq, mut ts, mut counter) = (rand::random::<u16>(), rand::random::<u32>(), 0u32);
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
                tick.tick().await;
                counter += 1;
                let mut body = counter.to_be_bytes().to_vec();
                body.resize(payload_bytes.max(4), 0x5a);
                let mut p = rtc::rtp::Packet { header: Default::default(), payload: body.into() };
                p.header.version = 2;
                p.header.payload_type = OPUS_PT;
                p.header.ssrc = ssrc;
                p.header.sequence_number = seq;
                p.header.timestamp = ts;
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(960);
                if audio.write_rtp(p).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        Ok(())
    }
}
