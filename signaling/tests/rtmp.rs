//! Studio feeds over RTMP, pushed by Debian's real ffmpeg: H.264 passed through, AAC turned
//! into Opus, stream keys, limits, reconnects. The viewers are webrtc-rs peers.

mod common;
use common::*;
use serde_json::{Value, json};
use signaling::auth::Role;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// What the encoder sends.
struct Feed {
    seconds: u32,
    bframes: bool,
    gop: u32,
}

impl Default for Feed {
    fn default() -> Self {
        Self { seconds: 8, bframes: false, gop: 30 }
    }
}

fn rtmp_url(server: &signaling::Server, key: &str) -> String {
    format!("rtmp://{}/live/{key}", server.rtmp_addr.expect("rtmp enabled"))
}

/// Start ffmpeg pushing testsrc + a 1 kHz sine (libx264, AAC) to `url`.
fn push(url: &str, feed: &Feed) -> Child {
    let x264 = if feed.bframes { "bframes=2:b-pyramid=none:rc-lookahead=4".to_string() } else { "bframes=0".to_string() };
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100"])
        .args(["-t", &feed.seconds.to_string()])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast", "-g", &feed.gop.to_string()])
        .args(["-x264-params", &x264])
        .args(["-c:a", "aac", "-b:a", "128k", "-ac", "2"])
        .args(["-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().expect("ffmpeg runs (the test command installs it)")
}

async fn stderr_of(mut child: Child, within: Duration) -> (Option<std::process::ExitStatus>, String) {
    let status = tokio::time::timeout(within, child.wait()).await.ok().and_then(Result::ok);
    let mut text = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = tokio::time::timeout(Duration::from_secs(1), e.read_to_string(&mut text)).await;
    }
    (status, text)
}

async fn wait_msg(c: &mut Client, kind: &str, within: Duration) -> Value {
    c.wait_for(kind, within).await.unwrap_or_else(|| panic!("no {kind} within {within:?}"))
}

async fn mint_key(host: &mut Client, label: &str) -> (String, String) {
    host.send(json!({"type":"create_stream_key","label":label}));
    let k = wait_msg(host, "stream_key", Duration::from_secs(3)).await;
    (k["key"].as_str().unwrap().to_owned(), k["id"].as_str().unwrap().to_owned())
}

/// Join a room as its host (making it live) and as a viewer.
async fn live_room(server: &signaling::Server, room: &str) -> (Client, Client) {
    let host = join(server, &token(server, room, "host", Role::Host)).await.unwrap();
    let viewer = join(server, &token(server, room, "viewer", Role::Viewer)).await.unwrap();
    (host, viewer)
}

fn video_and_audio(c: &Client, min: u64) -> Option<(String, String)> {
    let m = c.media_snapshot();
    let v = m.iter().find(|(_, t)| t.kind == "video" && t.packets >= min)?;
    let a = m.iter().find(|(_, t)| t.kind == "audio" && t.packets >= min)?;
    Some((v.0.clone(), a.0.clone()))
}

/// RFC 6184 depacketization into access units (one per RTP timestamp) of NAL units.
fn access_units(raw: &[RawPacket]) -> Vec<(u32, Vec<Vec<u8>>, bool)> {
    let mut aus: Vec<(u32, Vec<Vec<u8>>, bool)> = Vec::new();
    let mut fu: Option<Vec<u8>> = None;
    let mut last_seq: Option<u16> = None;
    for p in raw {
        let contiguous = last_seq.is_none_or(|s| p.seq == s.wrapping_add(1));
        last_seq = Some(p.seq);
        if aus.last().is_none_or(|a| a.0 != p.ts) {
            aus.push((p.ts, Vec::new(), false));
        }
        let au = aus.last_mut().unwrap();
        if !contiguous {
            fu = None;
        }
        let b = &p.payload;
        match b[0] & 0x1f {
            1..=23 => au.1.push(b.to_vec()),
            24 => {
                let mut at = 1;
                while at + 2 <= b.len() {
                    let n = u16::from_be_bytes([b[at], b[at + 1]]) as usize;
                    au.1.push(b[at + 2..at + 2 + n].to_vec());
                    at += 2 + n;
                }
            }
            28 => {
                if b[1] & 0x80 != 0 {
                    fu = Some(vec![(b[0] & 0xe0) | (b[1] & 0x1f)]);
                }
                if let Some(n) = fu.as_mut() {
                    n.extend_from_slice(&b[2..]);
                }
                if b[1] & 0x40 != 0
                    && let Some(n) = fu.take()
                {
                    au.1.push(n);
                }
            }
            t => panic!("unexpected NAL/packet type {t}"),
        }
        if p.marker {
            au.2 = true;
        }
    }
    aus
}

/// Write access units as Annex B and let ffprobe decode them: (frames decoded, width, height).
async fn ffprobe_decode(aus: &[(u32, Vec<Vec<u8>>, bool)], name: &str) -> (u64, u64, u64, String) {
    let path = std::env::temp_dir().join(format!("onair-{name}-{}.h264", std::process::id()));
    let mut annexb = Vec::new();
    for (_, nals, _) in aus {
        for n in nals {
            annexb.extend_from_slice(&[0, 0, 0, 1]);
            annexb.extend_from_slice(n);
        }
    }
    std::fs::write(&path, &annexb).unwrap();
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames,width,height", "-of", "json"])
        .arg(&path)
        .output()
        .await
        .expect("ffprobe runs");
    let _ = std::fs::remove_file(&path);
    let errors = String::from_utf8_lossy(&out.stderr).into_owned();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let s = &v["streams"][0];
    let frames = s["nb_read_frames"].as_str().and_then(|x| x.parse().ok()).unwrap_or(0);
    (frames, s["width"].as_u64().unwrap_or(0), s["height"].as_u64().unwrap_or(0), errors)
}

/// Decode Opus packets and estimate the dominant frequency from zero crossings (left channel).
fn opus_frequency(raw: &[RawPacket]) -> (f64, usize) {
    let mut dec = opus_rs::OpusDecoder::new(48_000, 2).unwrap();
    let mut pcm = Vec::new();
    let mut out = vec![0f32; 960 * 2 * 6];
    for p in raw {
        let n = dec.decode(&p.payload, 960 * 6, &mut out).expect("valid Opus");
        pcm.extend(out[..n * 2].chunks(2).map(|c| c[0]));
    }
    // Skip the first 200 ms (codec start-up), measure over the rest.
    let s = &pcm[pcm.len().min(9600)..];
    let crossings = s.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
    let secs = s.len() as f64 / 48_000.0;
    (crossings as f64 / secs, s.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ffmpeg_feed_reaches_a_viewer_as_h264_and_opus() {
    let server = start_server().await;
    let (mut host, mut viewer) = live_room(&server, "studio").await;
    let (key, _) = mint_key(&mut host, "Main camera").await;
    let started = Instant::now();
    let ffmpeg = push(&rtmp_url(&server, &key), &Feed::default());
    let live = wait_msg(&mut viewer, "studio_state", Duration::from_secs(10)).await;
    assert_eq!(live["state"], "live");
    eprintln!("encoder start -> studio live: {:?}", started.elapsed());
    assert!(eventually(Duration::from_secs(10), || video_and_audio(&viewer, 50).is_some()).await, "viewer receives the studio feed: {:?}", viewer.media_snapshot().keys());
    let first_video = viewer.media_snapshot().values().filter(|t| t.kind == "video").find_map(|t| t.first_packet).unwrap();
    eprintln!("encoder start -> first H.264 packet at the viewer: {:?}", first_video.duration_since(started));
    // Let 4 s of media arrive.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let m = viewer.media_snapshot();
    let video = m.values().find(|t| t.kind == "video").unwrap();
    let audio = m.values().find(|t| t.kind == "audio").unwrap();
    assert_eq!(video.ssrcs.len(), 1);
    assert_eq!(video.seq_gaps, 0, "no video packet lost on loopback");

    let aus = access_units(&video.raw);
    let complete: Vec<_> = aus.iter().filter(|a| a.2).cloned().collect();
    let types = |a: &(u32, Vec<Vec<u8>>, bool)| a.1.iter().map(|n| n[0] & 0x1f).collect::<Vec<u8>>();
    let first = types(&complete[0]);
    eprintln!("{} access units; first one's NAL types {first:?}", complete.len());
    let idr_at = first.iter().position(|t| *t == 5).expect("the first access unit a viewer gets is an IDR");
    let sps_at = first.iter().position(|t| *t == 7).expect("SPS before the IDR");
    let pps_at = first.iter().position(|t| *t == 8).expect("PPS before the IDR");
    assert!(sps_at < idr_at && pps_at < idr_at);
    for a in &complete {
        let t = types(a);
        if t.contains(&5) {
            assert!(t.contains(&7) && t.contains(&8), "SPS/PPS before every IDR: {t:?}");
        }
        assert!(t.iter().all(|x| matches!(x, 1 | 5 | 6 | 7 | 8)), "only slices, SEI and parameter sets: {t:?}");
    }
    let (frames, w, h, errors) = ffprobe_decode(&complete, "studio").await;
    eprintln!("ffprobe decoded {frames} frames {w}x{h} from {} access units; errors: {errors:?}", complete.len());
    assert_eq!((w, h), (640, 360));
    assert!(frames as usize >= complete.len() - 1 && frames >= 90, "every access unit decodes");
    assert!(errors.trim().is_empty(), "decoder errors: {errors}");

    let (freq, samples) = opus_frequency(&audio.raw);
    eprintln!("Opus: {} packets, decoded {samples} samples, frequency {freq:.1} Hz", audio.raw.len());
    assert!((950.0..=1050.0).contains(&freq), "sine at 1 kHz ±5%, got {freq:.1} Hz");

    // Stats: the bridge's own delay, no warnings for a clean encoder.
    let stats: Value = reqwest_stats(&server).await;
    let feed = &stats["studio"][0];
    eprintln!("bridge stats: {}", feed["stats"]);
    assert!(feed["stats"]["video_delay"]["count"].as_u64().unwrap() > 60);
    assert_eq!(feed["stats"]["bframes"], false);
    assert!(host.wait_for("studio_notice", Duration::from_millis(200)).await.is_none(), "no notice for a clean encoder");
    let _ = stderr_of(ffmpeg, Duration::from_secs(10)).await;
    server.shutdown().await;
}

async fn reqwest_stats(server: &signaling::Server) -> Value {
    let mut s = tokio::net::TcpStream::connect(server.http_addr).await.unwrap();
    s.write_all(b"GET /api/stats HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    let json = body.split("\r\n\r\n").nth(1).unwrap_or("null");
    serde_json::from_str(json).unwrap()
}
