//! Recording and the archive with real parts: ffmpeg studio feeds over RTMP (H.264 + AAC, the
//! AAC turned into Opus by the server), the server's recorder writing fragmented MP4 as the
//! packets arrive, ffprobe decoding every file end to end, ffmpeg building the stage video, a
//! real webhook receiver, the archive API over HTTP (signed links, ranges, refusals), the
//! sweeper, and the `onair` binary killed with SIGKILL mid-live.

mod common;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::http::{api, request, request_to};
use common::*;
use serde_json::Value;
use signaling::auth::Role;
use signaling::hooks::sign;
use signaling::store::KeySeat;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const KEY: &str = "archive-test-key-0123456789";
const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const FPS: u32 = 30;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("onair-archive-{name}-{}-{:x}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// ffmpeg pushing `seconds` of testsrc2 at 30 fps and a sine (H.264, AAC) to `url`.
fn push(url: &str, seconds: u32, freq: u32) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", &format!("testsrc2=size=640x360:rate={FPS}")])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency={freq}:sample_rate=48000")])
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast", "-g", "30", "-x264-params", "bframes=0"])
        .args(["-c:a", "aac", "-b:a", "96k", "-ac", "2"])
        .args(["-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg runs (the test command installs it)")
}

/// `ffprobe` of one stream: (codec, frames decoded end to end).
fn probe(file: &Path, stream: &str) -> (String, u64) {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            stream,
            "-show_entries",
            "stream=codec_name,nb_read_frames",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let s = &v["streams"][0];
    let frames = s["nb_read_frames"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0);
    (s["codec_name"].as_str().unwrap_or_default().to_owned(), frames)
}

fn duration_of(file: &Path) -> f64 {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "default=nw=1:nk=1"])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0.0)
}

/// A webhook receiver on loopback that keeps every request.
#[derive(Clone, Default)]
struct Hooks(Arc<Mutex<Vec<(HeaderMap, Bytes)>>>);

impl Hooks {
    async fn start() -> (Hooks, std::net::SocketAddr) {
        let me = Hooks::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = me.0.clone();
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |h: HeaderMap, b: Bytes| {
                let got = got.clone();
                async move {
                    got.lock().unwrap().push((h, b));
                    StatusCode::NO_CONTENT
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (me, addr)
    }

    /// The first `kind` event, with its signature checked (Standard Webhooks).
    async fn wait(&self, kind: &str, within: Duration) -> Value {
        let key = sign::key(HOOK_SECRET).unwrap();
        let end = Instant::now() + within;
        loop {
            let found = self.0.lock().unwrap().iter().find_map(|(h, b)| {
                let v: Value = serde_json::from_slice(b).ok()?;
                (v["type"] == kind).then(|| (h.clone(), b.clone(), v))
            });
            if let Some((h, b, v)) = found {
                let get = |n: &str| h.get(n).and_then(|x| x.to_str().ok()).unwrap_or_default().to_owned();
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
                let ts: i64 = get("webhook-timestamp").parse().unwrap_or(0);
                assert_eq!(sign::verify(&key, &get("webhook-id"), ts, &b, &get("webhook-signature"), now, 300), Ok(()), "{v}");
                return v;
            }
            assert!(Instant::now() < end, "no {kind} webhook within {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn config(dir: &Path, hook: Option<std::net::SocketAddr>) -> signaling::config::Config {
    let mut c = test_config();
    c.api.key = KEY.into();
    c.archive.record = true;
    c.archive.dir = dir.join("archive").display().to_string();
    c.archive.sweep_secs = 1;
    if let Some(addr) = hook {
        c.webhooks.url = format!("http://{addr}/hooks");
        c.webhooks.secret = HOOK_SECRET.into();
        c.webhooks.retry_delays_secs = vec![0.2, 0.2];
        c.webhooks.timeout_secs = 2;
    }
    c
}

fn rtmp_url(server: &signaling::Server, key: &str) -> String {
    format!("rtmp://{}/live/{key}", server.rtmp_addr.expect("rtmp enabled"))
}

/// The room's first entry once its state is one of `states` (≤ `within`).
async fn entry_when(server: &signaling::Server, room: &str, states: &[&str], within: Duration) -> Value {
    let end = Instant::now() + within;
    loop {
        let r = api(server, "GET", &format!("/api/v1/rooms/{room}/archive"), KEY, None).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let e = r.json()["entries"][0].clone();
        if states.iter().any(|s| e["state"] == *s) {
            return e;
        }
        assert!(Instant::now() < end, "the entry is not {states:?} within {within:?}: {e}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn download(server: &signaling::Server, url: &str, to: &Path) {
    let r = request(server, "GET", url, &[], b"").await;
    assert_eq!(r.status, 200, "{url}: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("video/mp4"));
    std::fs::write(to, &r.body).unwrap();
}

/// A host feed for 12 s and a co-host feed for 8 s: each is one file that decodes end to end
/// with as many frames as were sent (± 2 %), the stage video is built with both, the webhook
/// says so, the files download over signed links with ranges, and the API refuses whom it
/// should; the entry is deleted on request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_studio_feeds_are_recorded_and_the_stage_video_is_built() {
    let dir = scratch("feeds");
    let (hooks, hook_addr) = Hooks::start().await;
    init_tracing();
    let server = signaling::Server::start(config(&dir, Some(hook_addr))).await.unwrap();
    let room = "recorded";
    let host_key = server.state.store.mint_stream_key(room, "Studio host", KeySeat::Host).await.unwrap().key;
    let cohost_key = server.state.store.mint_stream_key(room, "Studio guest", KeySeat::Cohost).await.unwrap().key;
    let mut viewer = join(&server, &token(&server, room, "viewer", Role::Viewer)).await.unwrap();
    let (host_secs, guest_secs) = (12, 8);
    let host = push(&rtmp_url(&server, &host_key), host_secs, 440);
    let live = viewer.wait_for("room_update", Duration::from_secs(10)).await.expect("the host feed starts the live");
    assert_eq!(live["room"]["state"], "live");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let guest = push(&rtmp_url(&server, &cohost_key), guest_secs, 660);
    let during = entry_when(&server, room, &["recording"], Duration::from_secs(5)).await;
    println!("during the live: {during}");
    for mut c in [host, guest] {
        let _ = tokio::time::timeout(Duration::from_secs(30), c.wait()).await;
    }
    let ended = api(&server, "POST", &format!("/api/v1/rooms/{room}/end"), KEY, None).await;
    assert!(ended.status < 300, "end: {}", ended.status);
    let e = entry_when(&server, room, &["ready", "raw_only", "failed"], Duration::from_secs(90)).await;
    println!("entry: {e:#}");
    assert_eq!(e["state"], "ready", "{e}");
    let raw = e["raw"].as_array().cloned().unwrap_or_default();
    assert_eq!(raw.len(), 2, "one file per publisher: {e}");

    // Each raw file decodes end to end: video frames within 2 % of what ffmpeg sent.
    for (f, secs) in raw.iter().zip([host_secs, guest_secs]) {
        let path = dir.join(f["name"].as_str().unwrap());
        download(&server, f["url"].as_str().unwrap(), &path).await;
        let (vcodec, vframes) = probe(&path, "v:0");
        let (acodec, aframes) = probe(&path, "a:0");
        let sent = u64::from(secs * FPS);
        println!("{}: {vcodec} {vframes} frames decoded of {sent} sent, {acodec} {aframes} frames", f["name"]);
        assert_eq!(vcodec, "h264");
        assert_eq!(acodec, "opus");
        assert!(vframes.abs_diff(sent) * 50 <= sent, "{vframes} frames decoded, {sent} sent");
        assert_eq!(f["video_frames"].as_u64(), Some(vframes), "the entry counts what the file holds");
        assert!(aframes as f64 >= f64::from(secs) * 50.0 * 0.95, "{aframes} Opus frames for {secs} s");
    }
    // The timeline: the guest came on about 2 s after the host.
    let tl = e["timeline"].as_array().cloned().unwrap_or_default();
    let gap = tl[1]["from_ms"].as_i64().unwrap() - tl[0]["from_ms"].as_i64().unwrap();
    assert!((1500..=4000).contains(&gap), "the guest came on {gap} ms after the host");

    // The stage video: both, then the host alone; H.264 + AAC, as long as the live.
    let video = dir.join("live.mp4");
    download(&server, e["video"]["url"].as_str().unwrap(), &video).await;
    let (vcodec, vframes) = probe(&video, "v:0");
    let (acodec, _) = probe(&video, "a:0");
    let secs = duration_of(&video);
    println!("stage video: {vcodec} {vframes} frames, {acodec}, {secs:.2} s");
    assert_eq!((vcodec.as_str(), acodec.as_str()), ("h264", "aac"));
    assert!((f64::from(host_secs) - 1.0..f64::from(host_secs) + 3.0).contains(&secs), "{secs} s");

    // recording_ready, signed.
    let hook = hooks.wait("recording_ready", Duration::from_secs(10)).await;
    assert_eq!(hook["data"]["archive"]["id"], e["id"]);
    assert_eq!(hook["data"]["archive"]["state"], "ready");

    // Links: ranges, tampering, expiry, no credential, names outside the entry.
    let url = e["video"]["url"].as_str().unwrap();
    let r = request(&server, "GET", url, &[("Range", "bytes=0-99")], b"").await;
    assert_eq!((r.status, r.body.len()), (206, 100), "a range");
    assert!(r.header("content-range").is_some_and(|v| v.starts_with("bytes 0-99/")));
    // The signature's last hex digit changed (to one it is not).
    let flipped = if url.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{flipped}", &url[..url.len() - 1]);
    let r = request(&server, "GET", &tampered, &[], b"").await;
    assert_eq!((r.status, r.code().as_str()), (403, "not_allowed"));
    let id = e["id"].as_str().unwrap();
    let expired = url.replace("exp=", "exp=1").replace("&sig=", "&x=");
    let r = request(&server, "GET", &format!("/api/v1/archive/{id}/files/live.mp4"), &[], b"").await;
    assert_eq!(r.status, 401, "no link, no credential");
    let r = request(&server, "GET", &expired, &[], b"").await;
    assert_eq!(r.status, 401, "a link without its signature");
    let r =
        request(&server, "GET", &format!("/api/v1/archive/{id}/files/..%2Fonair.db"), &[("Authorization", &format!("Bearer {KEY}"))], b"")
            .await;
    assert_eq!(r.status, 404, "a name outside the entry");
    let r = request(
        &server,
        "GET",
        &format!("/api/v1/archive/{id}/files/live.mp4?download=1"),
        &[("Authorization", &format!("Bearer {KEY}"))],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "the key downloads without a link");
    assert!(r.header("content-disposition").is_some_and(|v| v.starts_with("attachment")));

    // Who may read and delete.
    let viewer_token = token(&server, room, "v2", Role::Viewer);
    let host_token = token(&server, room, "host", Role::Host);
    let other_host = token(&server, "another-room", "host", Role::Host);
    let moderator = token(&server, room, "mod", Role::Moderator);
    assert_eq!(api(&server, "GET", &format!("/api/v1/rooms/{room}/archive"), &viewer_token, None).await.status, 403);
    assert_eq!(api(&server, "GET", &format!("/api/v1/rooms/{room}/archive"), &other_host, None).await.status, 403);
    assert_eq!(api(&server, "GET", &format!("/api/v1/rooms/{room}/archive"), "wrong-key", None).await.status, 401);
    assert_eq!(api(&server, "GET", &format!("/api/v1/archive/{id}"), &host_token, None).await.status, 200);
    assert_eq!(api(&server, "GET", &format!("/api/v1/archive/{id}"), &other_host, None).await.status, 403);
    assert_eq!(api(&server, "GET", "/api/v1/archive", &host_token, None).await.status, 403, "every room's list is the key's");
    assert_eq!(api(&server, "GET", "/api/v1/archive", KEY, None).await.json()["entries"][0]["id"], e["id"]);
    assert_eq!(api(&server, "GET", "/api/v1/archive/arc_unknown", KEY, None).await.status, 404);
    assert_eq!(api(&server, "GET", "/api/v1/archive/arc_unknown", "forged", None).await.status, 401);
    assert_eq!(
        api(&server, "DELETE", &format!("/api/v1/archive/{id}"), &moderator, None).await.status,
        403,
        "moderators read, hosts delete"
    );
    assert_eq!(api(&server, "DELETE", &format!("/api/v1/archive/{id}"), &host_token, None).await.status, 204);
    assert_eq!(api(&server, "GET", &format!("/api/v1/archive/{id}"), KEY, None).await.status, 404);
    assert!(!dir.join("archive").join(id).exists(), "its files are gone");
    assert_eq!(request(&server, "GET", url, &[], b"").await.status, 404, "its links are dead");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without ffmpeg the entry keeps its raw files and says why there is no video; an entry past
/// its retention is deleted by the sweeper, files and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_ffmpeg_the_raw_files_stay_and_the_sweeper_deletes_an_expired_entry() {
    let dir = scratch("sweep");
    let mut c = config(&dir, None);
    c.archive.retention_secs = 12;
    c.archive.ffmpeg = dir.join("no-ffmpeg-here").display().to_string();
    init_tracing();
    let server = signaling::Server::start(c).await.unwrap();
    let room = "short-lived";
    let key = server.state.store.mint_stream_key(room, "Studio host", KeySeat::Host).await.unwrap().key;
    let mut feed = push(&rtmp_url(&server, &key), 3, 440);
    let _ = tokio::time::timeout(Duration::from_secs(20), feed.wait()).await;
    assert!(api(&server, "POST", &format!("/api/v1/rooms/{room}/end"), KEY, None).await.status < 300);
    let e = entry_when(&server, room, &["ready", "raw_only", "failed"], Duration::from_secs(60)).await;
    let id = e["id"].as_str().unwrap().to_owned();
    let files = dir.join("archive").join(&id);
    assert_eq!(e["state"], "raw_only", "{e}");
    assert!(e["error"].as_str().is_some_and(|m| m.contains("ffmpeg is not installed")), "{e}");
    assert!(e["video"].is_null());
    let raw = e["raw"][0]["name"].as_str().unwrap_or_default();
    assert!(files.join(raw).is_file(), "the raw file is kept: {e}");
    let expires = e["expires_at"].as_i64().unwrap();
    assert_eq!(expires - e["started_at"].as_i64().unwrap(), 12_000);
    let end = Instant::now() + Duration::from_secs(30);
    while api(&server, "GET", &format!("/api/v1/archive/{id}"), KEY, None).await.status != 404 {
        assert!(Instant::now() < end, "the expired entry is still there");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    println!("swept {} ms after it expired", now - expires);
    assert!(now >= expires, "not before it expired");
    assert!(!files.exists(), "its folder is gone");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The binary, recording into `dir`.
async fn binary(dir: &Path, http: u16, rtmp: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_onair"))
        .current_dir(dir)
        .args(["--http-bind", &format!("127.0.0.1:{http}"), "--udp-bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"])
        .env("ONAIR_AUTH_SECRET", "archive-kill-secret")
        .env("ONAIR_API_KEY", KEY)
        .env("ONAIR_RTMP_BIND", format!("127.0.0.1:{rtmp}"))
        .env("ONAIR_STORE_URL", format!("sqlite:{}", dir.join("onair.db").display()))
        .env("ONAIR_ARCHIVE_DIR", dir.join("archive").display().to_string())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("onair starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", http)).await.is_err() {
        assert!(Instant::now() < deadline, "onair did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child
}

/// SIGKILL mid-live: the file written so far plays (every whole fragment decodes); the next
/// start finishes the entry from the folder and builds its video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_cut_by_sigkill_still_plays() {
    let dir = scratch("kill");
    let (http, rtmp) = (free_port(), free_port());
    let mut node = binary(&dir, http, rtmp).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let auth = [("Authorization", format!("Bearer {KEY}")), ("Content-Type", "application/json".into())];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let minted = request_to(addr, "POST", "/api/v1/rooms/cut/stream-keys", &auth, br#"{"label":"Studio","seat":"host"}"#).await;
    assert_eq!(minted.status, 201, "{}", String::from_utf8_lossy(&minted.body));
    let key = minted.json()["key"].as_str().unwrap().to_owned();
    let _feed = push(&format!("rtmp://127.0.0.1:{rtmp}/live/{key}"), 30, 440);
    tokio::time::sleep(Duration::from_secs(7)).await;
    node.start_kill().unwrap();
    let _ = node.wait().await;
    drop(_feed);
    let folder = std::fs::read_dir(dir.join("archive")).unwrap().flatten().next().expect("an entry folder").path();
    let file = std::fs::read_dir(&folder)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "mp4"))
        .expect("a file");
    let (vcodec, vframes) = probe(&file, "v:0");
    let (acodec, aframes) = probe(&file, "a:0");
    println!("cut by SIGKILL after 7 s: {vcodec} {vframes} frames, {acodec} {aframes} frames, {:.2} s", duration_of(&file));
    assert_eq!((vcodec.as_str(), acodec.as_str()), ("h264", "opus"));
    // ~7 s pushed, fragments every second: at least 4 s of frames survive the kill.
    assert!(vframes >= u64::from(4 * FPS), "{vframes} frames");

    let mut node = binary(&dir, http, rtmp).await;
    let end = Instant::now() + Duration::from_secs(60);
    let e = loop {
        let r = request_to(addr, "GET", "/api/v1/rooms/cut/archive", &auth[..1], b"").await;
        let e = r.json()["entries"][0].clone();
        if e["state"] == "ready" || e["state"] == "raw_only" {
            break e;
        }
        assert!(Instant::now() < end, "the next start did not finish the entry: {e}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("after the restart: {e}");
    assert_eq!(e["raw"].as_array().map(Vec::len), Some(1), "{e}");
    assert_eq!(e["state"], "ready", "{e}");
    node.start_kill().unwrap();
    let _ = node.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}
