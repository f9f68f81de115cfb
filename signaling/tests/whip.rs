//! WHIP ingest (RFC 9725, docs/whip-whep.md): a webrtc-rs publisher POSTs its offer with a
//! stream key, trickles its candidates in PATCH requests, restarts ICE over PATCH, and ends with
//! DELETE; viewers on the room's WebSocket get it like any studio feed. Every refusal has its
//! HTTP status.

mod common;
use common::http::{Reply, request};
use common::whip::{WhipPublisher, sdp_attr};
use common::*;
use serde_json::{Value, json};
use signaling::auth::Role;
use std::time::{Duration, Instant};

async fn mint_key(host: &mut Client, label: &str, seat: &str) -> (String, String) {
    host.send(json!({"type": "create_stream_key", "label": label, "seat": seat}));
    let k = host.wait_for("stream_key", Duration::from_secs(3)).await.expect("a stream key");
    (k["key"].as_str().unwrap().to_owned(), k["id"].as_str().unwrap().to_owned())
}

/// Packets of each kind the viewer has had from `participant`'s tracks... any tracks: (audio, video).
fn received(viewer: &Client) -> (u64, u64) {
    let m = viewer.media_snapshot();
    let sum = |kind: &str| m.values().filter(|t| t.kind == kind).map(|t| t.packets).sum();
    (sum("audio"), sum("video"))
}

async fn wait_msg(c: &mut Client, kind: &str, within: Duration) -> Value {
    c.wait_for(kind, within).await.unwrap_or_else(|| panic!("no {kind} within {within:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whip_feed_trickles_plays_and_ends_on_delete() {
    let server = start_server().await;
    let room = "whip-live";
    let mut host = join(&server, &token(&server, room, "host", Role::Host)).await.unwrap();
    let mut viewer = join(&server, &token(&server, room, "viewer", Role::Viewer)).await.unwrap();
    let (key, key_id) = mint_key(&mut host, "WHIP camera", "cohost").await;

    let started = Instant::now();
    let whip = WhipPublisher::publish(&server, room, &key)
        .await
        .unwrap_or_else(|r| panic!("POST refused: {} {}", r.status, String::from_utf8_lossy(&r.body)));
    eprintln!("POST → 201 in {:?}; Location {}", started.elapsed(), whip.location);
    assert!(whip.location.starts_with(&format!("/whip/{room}/")) && whip.location.len() > format!("/whip/{room}/").len() + 16);
    assert!(whip.answer.starts_with("v=0") && sdp_attr(&whip.answer, "candidate").is_some(), "the answer carries our candidate");
    // The viewer's arrival may reach the host after the reply with its stream key (nothing
    // orders the room's broadcasts against the replies to the host's own requests; seen in CI
    // in rtmp.rs): skip it (bounded: two joins).
    let mut joined = wait_msg(&mut host, "participant_joined", Duration::from_secs(3)).await;
    if joined["participant"]["identity"] == "viewer" {
        joined = wait_msg(&mut host, "participant_joined", Duration::from_secs(3)).await;
    }
    assert_eq!(
        (joined["participant"]["kind"].as_str(), joined["participant"]["identity"].as_str()),
        (Some("studio"), Some(&*format!("studio:{key_id}")))
    );
    let live = wait_msg(&mut viewer, "studio_state", Duration::from_secs(10)).await;
    assert_eq!(live["state"], "live");
    eprintln!("POST → studio live: {:?}", started.elapsed());
    assert!(
        eventually(Duration::from_secs(10), || {
            let (a, v) = received(&viewer);
            a > 50 && v > 100
        })
        .await,
        "the viewer plays the WHIP feed: {:?}",
        received(&viewer)
    );
    eprintln!("POST → viewer has 50 audio and 100 video packets: {:?}", started.elapsed());
    // The candidates came in PATCH requests, each answered 204.
    let statuses = whip.trickle_statuses.lock().unwrap().clone();
    eprintln!("trickle PATCH statuses: {statuses:?}");
    assert!(!statuses.is_empty() && statuses.iter().all(|s| *s == 204), "trickled candidates: {statuses:?}");

    // /api/stats names the feed's transport.
    let stats = request(&server, "GET", "/api/stats", &[], b"").await.json();
    let feeds = stats["studio"].as_array().cloned().unwrap_or_default();
    assert!(feeds.iter().any(|f| f["key_id"] == key_id && f["transport"] == "whip" && f["connected"] == true), "{feeds:?}");

    // DELETE ends it: the room hears the feed ended, its tracks go; the session is gone.
    let location = whip.location.clone();
    let bearer = format!("Bearer {key}");
    let reply = whip.delete(&server).await;
    assert_eq!(reply.status, 200);
    let ended = wait_msg(&mut viewer, "studio_state", Duration::from_secs(3)).await;
    assert_eq!(ended["state"], "ended");
    wait_msg(&mut viewer, "track_unpublished", Duration::from_secs(3)).await;
    assert_eq!(request(&server, "DELETE", &location, &[("Authorization", &bearer)], b"").await.status, 404);
    let frag = "a=candidate:1 1 udp 2122260223 127.0.0.1 9 typ host\r\n";
    let patch = [("Authorization", bearer.as_str()), ("Content-Type", "application/trickle-ice-sdpfrag"), ("If-Match", "*")];
    assert_eq!(request(&server, "PATCH", &location, &patch, frag.as_bytes()).await.status, 404);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ice_restart_over_patch_keeps_the_feed() {
    let server = start_server().await;
    let room = "whip-restart";
    let mut host = join(&server, &token(&server, room, "host", Role::Host)).await.unwrap();
    let mut viewer = join(&server, &token(&server, room, "viewer", Role::Viewer)).await.unwrap();
    let (key, _) = mint_key(&mut host, "Restarting", "cohost").await;
    let mut whip = WhipPublisher::publish(&server, room, &key).await.unwrap_or_else(|r| panic!("POST refused: {}", r.status));
    assert!(eventually(Duration::from_secs(10), || received(&viewer).1 > 100).await, "playing before the restart");
    let old_tag = whip.etag.lock().unwrap().clone();
    let old_ufrag = sdp_attr(&whip.answer, "ice-ufrag").unwrap();

    let t0 = Instant::now();
    let reply = whip.restart_ice(&server).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("content-type"), Some("application/trickle-ice-sdpfrag"));
    let frag = String::from_utf8(reply.body.clone()).unwrap();
    eprintln!("restart fragment:\n{frag}");
    let new_ufrag = sdp_attr(&frag, "ice-ufrag").expect("new credentials");
    assert_ne!(new_ufrag, old_ufrag, "the server's credentials change too");
    assert!(frag.contains("\r\na=candidate:") && frag.ends_with("a=end-of-candidates\r\n"));
    let new_tag = whip.etag.lock().unwrap().clone();
    assert_ne!(new_tag, old_tag, "a new ICE session, a new ETag");
    // A trickle with the old ETag is out of date.
    let stale = whip.patch(&server, Some(&old_tag), "a=candidate:1 1 udp 2122260223 127.0.0.1 9 typ host\r\n").await;
    assert_eq!(stale.status, 412);

    // Media goes on over the new ICE session; the feed kept its tracks.
    let before = received(&viewer).1;
    assert!(
        eventually(Duration::from_secs(5), || received(&viewer).1 > before + 60).await,
        "video after the restart: {before} → {:?}",
        received(&viewer)
    );
    eprintln!("restart PATCH → 60 more video packets at the viewer: {:?}", t0.elapsed());
    assert!(viewer.wait_for("track_unpublished", Duration::from_millis(200)).await.is_none(), "no track went away");
    whip.delete(&server).await;
    server.shutdown().await;
}

/// A minimal offer-shaped text: valid HTTP, unusable SDP.
const NOT_AN_OFFER: &[u8] = b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";

async fn post(server: &signaling::Server, room: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    request(server, "POST", &format!("/whip/{room}"), headers, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_refusal_has_its_status() {
    let mut config = test_config();
    config.room.max_publishers = 1;
    init_tracing();
    let server = signaling::Server::start(config).await.expect("server starts");
    let room = "whip-codes";
    let mut host = join(&server, &token(&server, room, "host", Role::Host)).await.unwrap();
    let (key, _) = mint_key(&mut host, "Cam A", "cohost").await;
    let (key_b, _) = mint_key(&mut host, "Cam B", "cohost").await;
    let bearer = format!("Bearer {key}");
    let sdp = [("Authorization", bearer.as_str()), ("Content-Type", "application/sdp")];

    // 401: no token (with WWW-Authenticate), an unknown key.
    let r = post(&server, room, &[("Content-Type", "application/sdp")], NOT_AN_OFFER).await;
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer")));
    let r = post(&server, room, &[("Authorization", "Bearer not-a-key"), ("Content-Type", "application/sdp")], NOT_AN_OFFER).await;
    assert_eq!(r.status, 401);
    // 415: not SDP.
    let r = post(&server, room, &[("Authorization", bearer.as_str()), ("Content-Type", "application/json")], b"{}").await;
    assert_eq!(r.status, 415);
    // 403: the key of another room.
    assert_eq!(post(&server, "another-room", &sdp, NOT_AN_OFFER).await.status, 403);
    // 413: past the size limit (and one byte under it is read: 422 for what it says).
    let big = vec![b'a'; signaling::live::studio::whip::MAX_OFFER_BYTES + 1];
    assert_eq!(post(&server, room, &sdp, &big).await.status, 413);
    // 422: an offer we cannot take; 400: not text.
    let r = post(&server, room, &sdp, NOT_AN_OFFER).await;
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(post(&server, room, &sdp, &[0xff, 0xfe, 0x00]).await.status, 400);
    // The refused offers left no feed and no seat behind: a real publisher gets on stage.
    let whip = WhipPublisher::publish(&server, room, &key).await.unwrap_or_else(|r| panic!("POST refused: {}", r.status));
    // 409: the one seat is taken.
    let r = WhipPublisher::publish(&server, room, &key_b).await.err().expect("no seat for a second feed");
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    // OPTIONS: CORS preflight and Accept-Post.
    let r = request(
        &server,
        "OPTIONS",
        &format!("/whip/{room}"),
        &[("Origin", "https://studio.example"), ("Access-Control-Request-Method", "POST")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("accept-post"), Some("application/sdp"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r.header("access-control-allow-headers").is_some_and(|h| h.contains("If-Match") && h.contains("Authorization")));
    // PATCH: 428 without If-Match, 412 with another ETag, 415 not a fragment, 400 a bad
    // fragment, 403 with another room's key, 404 for a session that is not there.
    let frag = "a=candidate:1 1 udp 2122260223 127.0.0.1 9 typ host\r\n";
    assert_eq!(whip.patch(&server, None, frag).await.status, 428);
    assert_eq!(whip.patch(&server, Some("\"not-the-tag\""), frag).await.status, 412);
    let tag = whip.etag.lock().unwrap().clone();
    let r = request(
        &server,
        "PATCH",
        &whip.location,
        &[("Authorization", bearer.as_str()), ("Content-Type", "text/plain"), ("If-Match", &tag)],
        frag.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(whip.patch(&server, Some(&tag), "a=ice-pwd:short\r\n").await.status, 400);
    let r = request(
        &server,
        "PATCH",
        &whip.location,
        &[("Authorization", &format!("Bearer {key_b}")), ("Content-Type", "application/trickle-ice-sdpfrag"), ("If-Match", &tag)],
        frag.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 403);
    let r =
        request(&server, "DELETE", &format!("/whip/{room}/0123456789abcdef0123456789abcdef"), &[("Authorization", bearer.as_str())], b"")
            .await;
    assert_eq!(r.status, 404);
    // An ICE restart without credentials: 400, and the session goes on.
    assert_eq!(whip.patch(&server, Some("*"), frag).await.status, 400);
    assert_eq!(whip.patch(&server, Some(&tag), frag).await.status, 204);
    // A second POST with the same key takes over (the encoder started again): the old session is gone.
    let old_location = whip.location.clone();
    let again = WhipPublisher::publish(&server, room, &key).await.unwrap_or_else(|r| panic!("takeover refused: {}", r.status));
    assert_ne!(again.location, old_location);
    assert_eq!(request(&server, "DELETE", &old_location, &[("Authorization", bearer.as_str())], b"").await.status, 404);
    // 409 when the room has ended.
    again.delete(&server).await;
    host.send(json!({"type": "end_room"}));
    host.wait_for("room_ended", Duration::from_secs(3)).await.expect("the room ends");
    let r = WhipPublisher::publish(&server, room, &key).await.err().expect("no feed into an ended room");
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    drop(whip);
    server.shutdown().await;
}
