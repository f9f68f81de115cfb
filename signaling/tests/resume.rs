//! Session resume (#17): a WebSocket that dies without `leave` leaves its participant in place
//! for `limits.resume_grace_secs`; a new WebSocket joining with the `resume_token` continues it —
//! the same participant, seat, tracks and subscriptions, media never stopped — and nobody else
//! hears of it. Past the grace the participant leaves; a banned one leaves at once; a token of
//! someone else, or an unknown one, is a fresh join. Real webrtc-rs peers on loopback.

mod common;
use common::chat_client::{Chat, T};
use common::*;
use serde_json::json;
use signaling::auth::Role;
use std::time::{Duration, Instant};

fn packets(c: &Client, kind: &str) -> u64 {
    c.media_snapshot().values().filter(|t| t.kind == kind).map(|t| t.packets).sum()
}

fn config(grace: u64) -> signaling::config::Config {
    let mut c = test_config();
    c.limits.resume_grace_secs = grace;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_websocket_resumes_as_the_same_participant_and_media_goes_on() {
    init_tracing();
    let server = signaling::Server::start(config(15)).await.expect("server");
    let room = "resume";
    let host_token = token(&server, room, "host", Role::Host);
    let mut host = join(&server, &host_token).await.unwrap();
    host.publish().await.expect("host publishes");
    let viewer_token = token(&server, room, "viewer", Role::Viewer);
    let mut viewer = join(&server, &viewer_token).await.unwrap();
    let mut watcher = Chat::join(&server, room, "watcher", Role::Viewer).await.unwrap();
    assert!(eventually(Duration::from_secs(15), || packets(&viewer, "video") > 50 && packets(&viewer, "audio") > 50).await, "media flows");
    let first = viewer.joined.clone();
    assert_eq!(first["resume_token"].as_str().map(str::len), Some(32), "joined carries a resume token");

    // What the watcher heard so far (the host's tracks arriving) is not about the drops.
    let _ = watcher.saw_comment("-", Duration::from_millis(300)).await;
    watcher.seen.clear();
    // The viewer's WebSocket dies; 500 ms later a new one resumes.
    let before = packets(&viewer, "video");
    let killed = Instant::now();
    let reply = viewer.kill_ws_and_resume(&server, &viewer_token, Duration::from_millis(500)).await;
    let resumed_in = killed.elapsed();
    assert_eq!(reply["type"], "joined", "{reply}");
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(reply["participant"]["id"], first["participant"]["id"], "the same participant");
    assert_ne!(reply["resume_token"], first["resume_token"], "a new resume token for the next drop");
    let tracks = reply["tracks"].as_array().map(Vec::len);
    assert_eq!(tracks, Some(2), "the host's two tracks: {reply}");
    // Media went on meanwhile (UDP does not care about the WebSocket) and goes on after.
    let during = packets(&viewer, "video");
    assert!(during > before, "video arrived while the WebSocket was down: {before} → {during}");
    assert!(eventually(Duration::from_secs(2), || packets(&viewer, "video") > during + 20).await, "video goes on after the resume");
    println!("resumed {resumed_in:?} after the kill; video packets {before} → {during} during the gap");

    // The new WebSocket works: a comment from the viewer reaches the watcher under its identity.
    viewer.send(json!({"type": "comment", "text": "still watching"}));
    let c = watcher.expect_where("comment", T, |v| v["comment"]["text"] == "still watching").await;
    assert_eq!(c["comment"]["identity"], "viewer");

    // Nobody heard of the viewer's drop.
    assert!(!watcher.saw_comment("never sent", Duration::from_millis(300)).await);
    let heard: Vec<&str> = watcher.seen.iter().filter_map(|m| m["type"].as_str()).collect();
    assert!(
        !heard
            .iter()
            .any(|t| ["participant_left", "participant_joined", "track_unpublished", "track_published", "host_status"].contains(t)),
        "the others heard nothing of the viewer's drop: {heard:?}"
    );
    watcher.seen.clear();

    // The host's WebSocket dies too and resumes: the others hear it is reconnecting (15 s of
    // resume, then the 300 s hold) and back; its tracks were never unpublished.
    let reply = host.kill_ws_and_resume(&server, &host_token, Duration::from_millis(300)).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    let away = watcher.expect("host_status").await;
    assert_eq!((away["state"].as_str(), away["grace_secs"].as_u64()), (Some("reconnecting"), Some(315)), "{away}");
    assert_eq!(watcher.expect("host_status").await["state"], "back");
    let at = packets(&viewer, "video");
    assert!(eventually(Duration::from_secs(2), || packets(&viewer, "video") > at + 20).await, "the host's video goes on");
    assert!(!watcher.saw_comment("never sent", Duration::from_millis(300)).await);
    let heard: Vec<&str> = watcher.seen.iter().filter_map(|m| m["type"].as_str()).collect();
    assert!(
        !heard
            .iter()
            .any(|t| ["participant_left", "participant_joined", "track_unpublished", "track_published", "room_update"].contains(t)),
        "the host never left: {heard:?}"
    );
    viewer.close().await;
    host.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_grace_the_participant_leaves_and_tokens_of_others_or_unknown_join_afresh() {
    init_tracing();
    let server = signaling::Server::start(config(1)).await.expect("server");
    let room = "grace";
    let mut host = Chat::join(&server, room, "host", Role::Host).await.unwrap();
    let a_token = token(&server, room, "a", Role::Viewer);
    let b_token = token(&server, room, "b", Role::Viewer);
    let mut a = join(&server, &a_token).await.unwrap();
    let mut b = join(&server, &b_token).await.unwrap();
    let a_id = a.joined["participant"]["id"].clone();

    // An unknown token (well formed) is a fresh join.
    let mut forged = join(&server, &token(&server, room, "c", Role::Viewer)).await.unwrap();
    forged.joined["resume_token"] = json!("0123456789abcdef0123456789abcdef");
    let reply = forged.kill_ws_and_resume(&server, &token(&server, room, "c", Role::Viewer), Duration::from_millis(10)).await;
    assert_eq!(reply["type"], "joined");
    assert!(reply.get("resumed").is_none(), "a fresh join: {reply}");

    // B cannot take A's place with A's token (A's WebSocket is up): B joins afresh, A is
    // untouched. B's first participant, its WebSocket dead, waits for a resume that never comes.
    let b_id = b.joined["participant"]["id"].clone();
    b.joined["resume_token"] = a.joined["resume_token"].clone();
    let reply = b.kill_ws_and_resume(&server, &b_token, Duration::from_millis(10)).await;
    assert!(reply.get("resumed").is_none(), "B does not take A's participant: {reply}");
    assert_eq!(reply["participant"]["identity"], "b");
    // A, with its own token, is still resumable.
    let reply = a.kill_ws_and_resume(&server, &a_token, Duration::from_millis(10)).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(reply["participant"]["id"], a_id);
    let left = host.expect_where("participant_left", Duration::from_secs(5), |v| v["participant"] == b_id).await;
    assert!(left["reason"].as_str().is_some_and(|r| r.contains("not back within 1 s")), "{left}");

    // Past the grace a resume is a fresh join: a new participant.
    let old = a.joined["participant"]["id"].clone();
    let started = Instant::now();
    let late = a.kill_ws_and_resume(&server, &a_token, Duration::from_millis(1600)).await;
    assert!(late.get("resumed").is_none(), "{late}");
    assert_ne!(late["participant"]["id"], old);
    let gone = host.expect_where("participant_left", T, |v| v["participant"] == old).await;
    println!("left {:?} after the drop: {}", started.elapsed(), gone["reason"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_participant_banned_while_away_leaves_at_once_and_cannot_resume() {
    init_tracing();
    let server = signaling::Server::start(config(30)).await.expect("server");
    let room = "banned";
    let mut host = Chat::join(&server, room, "host", Role::Host).await.unwrap();
    let v_token = token(&server, room, "troll", Role::Viewer);
    let mut v = join(&server, &v_token).await.unwrap();
    let id = v.joined["participant"]["id"].clone();
    let resume = v.joined["resume_token"].clone();
    // The WebSocket dies; the participant waits for a resume (30 s) — until the host bans it.
    v.kill_ws();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let banned_at = Instant::now();
    host.send(json!({"type": "moderate", "action": "ban", "identity": "troll"})).await;
    let left = host.expect_where("participant_left", T, |v| v["participant"] == id).await;
    assert_eq!(left["reason"], "banned");
    println!("banned while away: left {:?} after the ban", banned_at.elapsed());
    assert!(banned_at.elapsed() < Duration::from_secs(2));
    // Its resume token is worth nothing now: the join is refused as banned.
    assert_eq!(v.joined["resume_token"], resume);
    let reply = v.kill_ws_and_resume(&server, &v_token, Duration::from_millis(10)).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "banned");
    server.shutdown().await;
}

/// The close code says which: 4000 (the client reconnects) parks the participant for its resume;
/// any other close ends it at once, as `leave` does (a page closed sends 1001).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_4000_waits_for_the_resume_and_any_other_close_leaves_at_once() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    init_tracing();
    let server = signaling::Server::start(config(15)).await.expect("server");
    let room = "codes";
    let mut host = Chat::join(&server, room, "host", Role::Host).await.unwrap();
    let mut a = Chat::join(&server, room, "a", Role::Viewer).await.unwrap();
    let (a_id, a_resume) = (a.joined["participant"]["id"].clone(), a.joined["resume_token"].clone());
    a.ws.close(Some(CloseFrame { code: 4000.into(), reason: "reconnecting".into() })).await.unwrap();
    let mut ws = raw_ws(&server).await;
    let t = token(&server, room, "a", Role::Viewer);
    ws.send(tokio_tungstenite::tungstenite::Message::Text(json!({"type": "join", "token": t, "resume": a_resume}).to_string().into()))
        .await
        .unwrap();
    let back = next_json(&mut ws, T).await.expect("joined");
    assert_eq!((back["resumed"].as_bool(), &back["participant"]["id"]), (Some(true), &a_id), "{back}");

    let mut b = Chat::join(&server, room, "b", Role::Viewer).await.unwrap();
    let b_id = b.joined["participant"]["id"].clone();
    let closed = Instant::now();
    b.ws.close(Some(CloseFrame { code: 1001.into(), reason: "page closed".into() })).await.unwrap();
    let left = host.expect_where("participant_left", T, |v| v["participant"] == b_id).await;
    assert_eq!(left["reason"], "connection closed");
    assert!(closed.elapsed() < Duration::from_secs(2), "at once: {:?}", closed.elapsed());
    assert!(!host.seen.iter().any(|v| v["type"] == "participant_left" && v["participant"] == a_id), "a never left");
    server.shutdown().await;
}

/// A viewer's address changes mid-stream (its NAT rebinds, or it moves to another network and
/// keeps its ICE credentials): the server follows its next connectivity check from the new
/// address once the old path has gone quiet, and media reaches it again — no join, no new offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_that_moves_to_a_new_address_gets_media_again_without_a_join() {
    init_tracing();
    let server = signaling::Server::start(config(15)).await.expect("server");
    let room = "moving";
    let mut host = join(&server, &token(&server, room, "host", Role::Host)).await.unwrap();
    host.publish().await.expect("host publishes");
    let mut relay = MovingRelay::start(server.sfu().local_addr()).await;
    let viewer = join_via(&server, &token(&server, room, "mover", Role::Viewer), Some(relay.addr)).await.unwrap();
    assert!(eventually(Duration::from_secs(15), || packets(&viewer, "video") > 50).await, "media flows through the relay");
    let offers = viewer.offers.lock().unwrap().len();
    let mut worst = Duration::ZERO;
    for round in 0..3 {
        let (audio_at, video_at) = (packets(&viewer, "audio"), packets(&viewer, "video"));
        let moved = Instant::now();
        let to = relay.move_port().await;
        // Media again: audio (50 packets a second) well past what was in flight at the move.
        let back = eventually(Duration::from_secs(6), || packets(&viewer, "audio") > audio_at + 10).await;
        let took = moved.elapsed();
        assert!(back, "round {round}: no audio within 6 s of moving to {to}");
        // Video too: the path was black for up to two seconds, so the estimator may hold video
        // back (audio only) for a while before it probes its way up again.
        let video = eventually(Duration::from_secs(15), || packets(&viewer, "video") > video_at + 10).await;
        println!("round {round}: moved to {to}; audio again after {took:?}, video after {:?}", moved.elapsed());
        assert!(video, "round {round}: no video within 15 s of moving to {to}");
        worst = worst.max(took);
    }
    println!("worst of 3 moves, until media again: {worst:?}");
    assert!(worst <= Duration::from_millis(2500), "media resumes within 2.5 s of a move: {worst:?}");
    assert_eq!(viewer.offers.lock().unwrap().len(), offers, "no new offer: the same session carries on");
    viewer.close().await;
    host.close().await;
    server.shutdown().await;
}

/// ICE restart (issue #17): a viewer's `ice_restart` brings an offer with new ICE credentials; a
/// publisher's offer with new credentials gets an answer with new ones. After each, media goes on
/// over the same sessions (no join, no new track). A participant without a subscriber connection
/// gets `not_found`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ice_restarts_on_either_connection_keep_the_media_going() {
    init_tracing();
    let server = signaling::Server::start(config(15)).await.expect("server");
    let room = "restarts";
    // Nothing is published yet: this viewer has no subscriber connection to restart.
    let mut early = join(&server, &token(&server, room, "early", Role::Viewer)).await.unwrap();
    early.send(json!({"type": "ice_restart"}));
    let refused = early.wait_for("error", Duration::from_secs(5)).await.expect("an error for a restart with no connection");
    assert_eq!(refused["code"], "not_found", "{refused}");

    let mut host = join(&server, &token(&server, room, "host", Role::Host)).await.unwrap();
    host.publish().await.expect("host publishes");
    let viewer = join(&server, &token(&server, room, "restarter", Role::Viewer)).await.unwrap();
    assert!(eventually(Duration::from_secs(15), || packets(&viewer, "video") > 50).await, "media flows");

    // The viewer's connection.
    let old = sdp_ufrag(&viewer.last_offer.lock().unwrap().clone().expect("an offer")).expect("a ufrag");
    let offers = viewer.offers.lock().unwrap().len();
    viewer.send(json!({"type": "ice_restart"}));
    assert!(eventually(Duration::from_secs(5), || viewer.offers.lock().unwrap().len() > offers).await, "an offer follows ice_restart");
    let new = sdp_ufrag(&viewer.last_offer.lock().unwrap().clone().expect("an offer")).expect("a ufrag");
    assert_ne!(old, new, "the restart offer has new ICE credentials");
    let (audio, video) = (packets(&viewer, "audio"), packets(&viewer, "video"));
    let restarted = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || packets(&viewer, "audio") > audio + 50 && packets(&viewer, "video") > video + 60).await,
        "media goes on after the viewer's restart"
    );
    println!("viewer restart: ufrag {old} -> {new}; a second of media {:?} after", restarted.elapsed());

    // The publisher's connection.
    let old = sdp_ufrag(&host.publisher_remote_sdp().await).expect("a ufrag");
    let answer = host.republish_restarting_ice().await.expect("the restart offer is answered");
    let new = sdp_ufrag(&answer).expect("a ufrag");
    assert_ne!(old, new, "the answer to a restart has new ICE credentials");
    assert!(answer.contains("a=candidate"), "the restart's answer carries the server's candidate:\n{answer}");
    let (audio, video) = (packets(&viewer, "audio"), packets(&viewer, "video"));
    let restarted = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || packets(&viewer, "audio") > audio + 50 && packets(&viewer, "video") > video + 60).await,
        "the viewer keeps receiving after the publisher's restart"
    );
    println!("publisher restart: ufrag {old} -> {new}; a second of media {:?} after", restarted.elapsed());
    assert_eq!(viewer.offers.lock().unwrap().len(), offers + 1, "no offer but the restart's: the same tracks throughout");
    viewer.close().await;
    host.close().await;
    early.close().await;
    server.shutdown().await;
}
