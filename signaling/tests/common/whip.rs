//! A WHIP publisher (RFC 9725) built on webrtc-rs: the offer goes out at once, candidates
//! trickle after it in PATCH requests with the session's ETag, an ICE restart is a PATCH with
//! `If-Match: *`, and DELETE ends it. It sends the synthetic media of `SyntheticMedia`.

use super::http::{Reply, request};
use super::*;

pub struct WhipPublisher {
    /// The session's URL path (`Location`).
    pub location: String,
    pub etag: Arc<Mutex<String>>,
    pub answer: String,
    pub key: String,
    pub pc: Arc<dyn PeerConnection>,
    pub connected: Arc<AtomicBool>,
    /// PATCH replies to trickled candidates, by status.
    pub trickle_statuses: Arc<Mutex<Vec<u16>>>,
    pub sent: Arc<AtomicU32>,
    pub keyframe_requests_seen: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The value of `a=<name>:` in `sdp` (its first one).
pub fn sdp_attr(sdp: &str, name: &str) -> Option<String> {
    let prefix = format!("a={name}:");
    sdp.lines().find_map(|l| l.trim_end().strip_prefix(&prefix).map(str::to_owned))
}

/// A fragment with one trickled candidate (RFC 8840), for the first m-section.
fn candidate_frag(ufrag: &str, pwd: &str, candidate: &str, mid: &str) -> String {
    format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:{mid}\r\na={candidate}\r\n")
}

impl WhipPublisher {
    /// POST an offer to `/whip/{room}` with `key`; on 201 apply the answer, trickle candidates
    /// and start the media. Any other reply comes back as the error.
    pub async fn publish(server: &signaling::Server, room: &str, key: &str) -> Result<WhipPublisher, Reply> {
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        let connected = Arc::new(AtomicBool::new(false));
        let handler =
            Handler { target: "publisher", out: out_tx, media: Arc::new(Mutex::new(HashMap::new())), connected: connected.clone() };
        let pc = build_pc(handler, true).await;
        let (a_ssrc, audio, v_ssrc, video) = synthetic_tracks();
        pc.add_track(audio.clone() as Arc<dyn TrackLocal>).await.unwrap();
        pc.add_track(video.clone() as Arc<dyn TrackLocal>).await.unwrap();
        let offer = pc.create_offer(None).await.unwrap();
        pc.set_local_description(offer).await.unwrap();
        let sdp = pc.local_description().await.unwrap().sdp;
        let bearer = format!("Bearer {key}");
        let reply = request(
            server,
            "POST",
            &format!("/whip/{room}"),
            &[("Authorization", &bearer), ("Content-Type", "application/sdp")],
            sdp.as_bytes(),
        )
        .await;
        if reply.status != 201 {
            let _ = pc.close().await;
            return Err(reply);
        }
        let location = reply.header("location").expect("201 has a Location").to_owned();
        let etag = Arc::new(Mutex::new(reply.header("etag").expect("201 has an ETag").to_owned()));
        let answer = String::from_utf8(reply.body.clone()).expect("an SDP answer");
        pc.set_remote_description(RTCSessionDescription::answer(answer.clone()).unwrap()).await.unwrap();

        // Candidates, as gathered, each in a PATCH with the current ETag (they may come before
        // the answer: the channel kept them).
        let (ufrag, pwd) = (sdp_attr(&sdp, "ice-ufrag").expect("ufrag"), sdp_attr(&sdp, "ice-pwd").expect("pwd"));
        let first_mid = sdp_attr(&sdp, "mid").expect("a=mid");
        let trickle_statuses = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        {
            let (addr, location, etag, statuses, bearer) =
                (server.http_addr, location.clone(), etag.clone(), trickle_statuses.clone(), bearer.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(msg) = out_rx.recv().await {
                    let Ok(v) = serde_json::from_str::<Value>(&msg) else { continue };
                    let Some(candidate) = v["candidate"]["candidate"].as_str() else { continue };
                    // webrtc-rs leaves sdpMid empty: the candidates are for the first section.
                    let mid = v["candidate"]["sdpMid"].as_str().filter(|m| !m.is_empty()).unwrap_or(&first_mid);
                    let frag = candidate_frag(&ufrag, &pwd, candidate, mid);
                    let tag = etag.lock().unwrap().clone();
                    let r = super::http::request_to(
                        addr,
                        "PATCH",
                        &location,
                        &[("Authorization", &bearer), ("Content-Type", "application/trickle-ice-sdpfrag"), ("If-Match", &tag)],
                        frag.as_bytes(),
                    )
                    .await;
                    if r.status != 204 {
                        eprintln!("trickle PATCH: {} {}\n{frag}", r.status, String::from_utf8_lossy(&r.body));
                    }
                    statuses.lock().unwrap().push(r.status);
                }
            }));
        }
        let sent = Arc::new(AtomicU32::new(0));
        let keyframe_requests_seen = Arc::new(AtomicU32::new(0));
        let media = SyntheticMedia {
            audio,
            a_ssrc,
            video,
            v_ssrc,
            stop: stop.clone(),
            sent: sent.clone(),
            keyframe_requests_seen: keyframe_requests_seen.clone(),
        };
        tasks.extend(media.spawn());
        Ok(WhipPublisher {
            location,
            etag,
            answer,
            key: key.to_owned(),
            pc,
            connected,
            trickle_statuses,
            sent,
            keyframe_requests_seen,
            stop,
            tasks,
        })
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.key)
    }

    /// PATCH the session with `frag` and `If-Match: if_match`.
    pub async fn patch(&self, server: &signaling::Server, if_match: Option<&str>, frag: &str) -> Reply {
        let bearer = self.bearer();
        let mut headers = vec![("Authorization", bearer.as_str()), ("Content-Type", "application/trickle-ice-sdpfrag")];
        if let Some(m) = if_match {
            headers.push(("If-Match", m));
        }
        request(server, "PATCH", &self.location, &headers, frag.as_bytes()).await
    }

    /// An ICE restart as RFC 9725 §4.4 has it: a new offer's credentials in a PATCH with
    /// `If-Match: *`; the server's fragment becomes the remote answer. Returns the reply.
    pub async fn restart_ice(&mut self, server: &signaling::Server) -> Reply {
        let options = rtc::peer_connection::configuration::RTCOfferOptions { ice_restart: true };
        let offer = self.pc.create_offer(Some(options)).await.unwrap();
        self.pc.set_local_description(offer).await.unwrap();
        let sdp = self.pc.local_description().await.unwrap().sdp;
        let (ufrag, pwd) = (sdp_attr(&sdp, "ice-ufrag").unwrap(), sdp_attr(&sdp, "ice-pwd").unwrap());
        let reply = self.patch(server, Some("*"), &format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n")).await;
        if reply.status == 200 {
            let frag = String::from_utf8(reply.body.clone()).unwrap();
            let (new_ufrag, new_pwd) = (sdp_attr(&frag, "ice-ufrag").unwrap(), sdp_attr(&frag, "ice-pwd").unwrap());
            let candidates: Vec<&str> = frag.lines().filter(|l| l.starts_with("a=candidate:")).collect();
            // The last answer with the new credentials and candidates.
            let mut answer = String::new();
            for line in self.answer.lines() {
                if line.starts_with("a=ice-ufrag:") {
                    answer.push_str(&format!("a=ice-ufrag:{new_ufrag}\r\n"));
                } else if line.starts_with("a=ice-pwd:") {
                    answer.push_str(&format!("a=ice-pwd:{new_pwd}\r\n"));
                } else if line.starts_with("a=candidate:") {
                    continue;
                } else {
                    answer.push_str(line.trim_end());
                    answer.push_str("\r\n");
                    if line.starts_with("a=mid:") {
                        for c in &candidates {
                            answer.push_str(c);
                            answer.push_str("\r\n");
                        }
                    }
                }
            }
            self.pc.set_remote_description(RTCSessionDescription::answer(answer.clone()).unwrap()).await.unwrap();
            self.answer = answer;
            *self.etag.lock().unwrap() = reply.header("etag").expect("a restart's 200 has an ETag").to_owned();
        }
        reply
    }

    /// DELETE the session; the reply. The media stops either way.
    pub async fn delete(mut self, server: &signaling::Server) -> Reply {
        let reply = request(server, "DELETE", &self.location, &[("Authorization", &self.bearer())], b"").await;
        self.stop_media().await;
        reply
    }

    pub async fn stop_media(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let _ = self.pc.close().await;
    }
}
