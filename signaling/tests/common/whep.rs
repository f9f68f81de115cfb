//! A WHEP player built on webrtc-rs: it offers `slots` receive-only audio and video m-lines,
//! POSTs the offer with a room token, trickles its candidates in PATCH requests without
//! `If-Match` (as whip-whep's player does), and records what arrives on each m-line by the
//! server's track id for it (`audio-0`, `video-0`, …).

use super::http::{Reply, request};
use super::whip::sdp_attr;
use super::*;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

pub struct WhepPlayer {
    /// The session's URL path (`Location`).
    pub location: String,
    pub etag: String,
    pub answer: String,
    /// The 201's `Link` headers (ICE servers).
    pub links: Vec<String>,
    token: String,
    pub pc: Arc<dyn PeerConnection>,
    pub connected: Arc<AtomicBool>,
    pub media: Arc<Mutex<HashMap<String, TrackStats>>>,
    /// PATCH replies to trickled candidates, by status.
    pub trickle_statuses: Arc<Mutex<Vec<u16>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WhepPlayer {
    /// POST an offer of `slots` audio and `slots` video receive-only m-lines to
    /// `/whep/{room}` with `token` (none when empty: a public embed's anonymous player); on 201
    /// apply the answer and trickle candidates. Any other reply comes back as the error.
    pub async fn play(server: &signaling::Server, room: &str, token: &str, slots: usize) -> Result<WhepPlayer, Reply> {
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        let connected = Arc::new(AtomicBool::new(false));
        let media = Arc::new(Mutex::new(HashMap::new()));
        let handler = Handler { target: "subscriber", out: out_tx, media: media.clone(), connected: connected.clone() };
        let pc = build_pc(handler, false).await;
        for _ in 0..slots {
            for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
                let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() };
                pc.add_transceiver_from_kind(kind, Some(init)).await.unwrap();
            }
        }
        let offer = pc.create_offer(None).await.unwrap();
        pc.set_local_description(offer).await.unwrap();
        let sdp = pc.local_description().await.unwrap().sdp;
        let bearer = format!("Bearer {token}");
        let mut headers = vec![("Content-Type", "application/sdp")];
        if !token.is_empty() {
            headers.push(("Authorization", &bearer));
        }
        let reply = request(server, "POST", &format!("/whep/{room}"), &headers, sdp.as_bytes()).await;
        if reply.status != 201 {
            let _ = pc.close().await;
            return Err(reply);
        }
        let location = reply.header("location").expect("201 has a Location").to_owned();
        let etag = reply.header("etag").expect("201 has an ETag").to_owned();
        let links = reply.headers.iter().filter(|(n, _)| n == "link").map(|(_, v)| v.clone()).collect();
        let answer = String::from_utf8(reply.body.clone()).expect("an SDP answer");
        pc.set_remote_description(RTCSessionDescription::answer(answer.clone()).unwrap()).await.unwrap();

        let (ufrag, pwd) = (sdp_attr(&sdp, "ice-ufrag").expect("ufrag"), sdp_attr(&sdp, "ice-pwd").expect("pwd"));
        let first_mid = sdp_attr(&sdp, "mid").expect("a=mid");
        let trickle_statuses = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        {
            let (addr, location, statuses) = (server.http_addr, location.clone(), trickle_statuses.clone());
            let auth: Vec<(&str, String)> = if token.is_empty() { vec![] } else { vec![("Authorization", bearer.clone())] };
            tasks.push(tokio::spawn(async move {
                while let Some(msg) = out_rx.recv().await {
                    let Ok(v) = serde_json::from_str::<Value>(&msg) else { continue };
                    let Some(candidate) = v["candidate"]["candidate"].as_str() else { continue };
                    let mid = v["candidate"]["sdpMid"].as_str().filter(|m| !m.is_empty()).unwrap_or(&first_mid);
                    let frag = format!(
                        "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:{mid}\r\na={candidate}\r\n"
                    );
                    let mut headers: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    headers.push(("Content-Type", "application/trickle-ice-sdpfrag"));
                    let r = super::http::request_to(addr, "PATCH", &location, &headers, frag.as_bytes()).await;
                    statuses.lock().unwrap().push(r.status);
                }
            }));
        }
        Ok(WhepPlayer { location, etag, answer, links, token: token.to_owned(), pc, connected, media, trickle_statuses, tasks })
    }

    /// What arrived so far, by the server's track id of each m-line.
    pub fn snapshot(&self) -> HashMap<String, TrackStats> {
        self.media.lock().unwrap().clone()
    }

    /// Packets received on one m-line (`audio-0`, `video-1`, …).
    pub fn packets(&self, track: &str) -> u64 {
        self.media.lock().unwrap().get(track).map_or(0, |t| t.packets)
    }

    /// PATCH the session with `frag`, `If-Match: if_match` and `bearer` (the player's token when
    /// `None`).
    pub async fn patch(&self, server: &signaling::Server, if_match: Option<&str>, bearer: Option<&str>, frag: &str) -> Reply {
        let token = bearer.unwrap_or(&self.token);
        let bearer = format!("Bearer {token}");
        let mut headers = vec![("Content-Type", "application/trickle-ice-sdpfrag")];
        if !token.is_empty() {
            headers.push(("Authorization", bearer.as_str()));
        }
        if let Some(m) = if_match {
            headers.push(("If-Match", m));
        }
        request(server, "PATCH", &self.location, &headers, frag.as_bytes()).await
    }

    /// DELETE the session; the reply. The peer connection closes either way.
    pub async fn delete(mut self, server: &signaling::Server) -> Reply {
        let bearer = format!("Bearer {}", self.token);
        let auth: &[(&str, &str)] = if self.token.is_empty() { &[] } else { &[("Authorization", &bearer)] };
        let reply = request(server, "DELETE", &self.location, auth, b"").await;
        self.close().await;
        reply
    }

    pub async fn close(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let _ = self.pc.close().await;
    }
}
