//! The stage without co-host tokens: requests and invitations answered, the accepted viewer
//! publishing into its seat on the same connection, removal and stepping down, a full stage,
//! forged answers; the host's drop held for its return; the duration cap's warnings and end.

mod common;
use common::chat_client::Chat;
use common::*;
use serde_json::json;
use signaling::auth::Role;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

async fn error_code(c: &mut Client) -> String {
    c.wait_for("error", T).await.map(|e| e["code"].as_str().unwrap_or_default().to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_requests_another_is_invited_both_go_live_then_off_stage() {
    let server = start_server().await;
    let r = "onstage";
    let mut host = join(&server, &token(&server, r, "host", Role::Host)).await.unwrap();
    host.publish().await.unwrap();
    let mut ann = join(&server, &token(&server, r, "ann", Role::Viewer)).await.unwrap();
    let mut ben = join(&server, &token(&server, r, "ben", Role::Viewer)).await.unwrap();
    let mut eve = join(&server, &token(&server, r, "eve", Role::Viewer)).await.unwrap();
    let watcher = join(&server, &token(&server, r, "watcher", Role::Viewer)).await.unwrap();
    let e = ann.publish().await.expect_err("a viewer cannot publish before being let on stage");
    assert_eq!(e["code"], "not_allowed");

    // Ann asks; the host sees the queue.
    ann.send(json!({"type": "request_stage"}));
    let pending = ann.wait_for("stage_request", T).await.expect("request acknowledged");
    assert_eq!((pending["state"].as_str(), pending["position"].as_u64()), (Some("pending"), Some(1)));
    let queue = host.wait_for("stage_requests", T).await.expect("the host sees the queue");
    assert_eq!(queue["requests"][0]["identity"], "ann");
    // Forged: Ann accepts her own request; Eve accepts an invitation she never got.
    ann.send(json!({"type": "answer_stage_request", "participant": ann.id, "accept": true}));
    assert_eq!(error_code(&mut ann).await, "not_allowed");
    eve.send(json!({"type": "answer_stage_invite", "accept": true}));
    assert_eq!(error_code(&mut eve).await, "not_found");
    eve.send(json!({"type": "remove_from_stage", "participant": host.id}));
    assert_eq!(error_code(&mut eve).await, "not_allowed");

    // The host accepts: Ann becomes a co-host in place and publishes on the same connection.
    host.send(json!({"type": "answer_stage_request", "participant": ann.id, "accept": true}));
    let up = ann.wait_for("participant_updated", T).await.expect("role change");
    assert_eq!((up["participant"]["identity"].as_str(), up["participant"]["role"].as_str()), (Some("ann"), Some("cohost")));
    assert_eq!(ann.wait_for("stage_granted", T).await.expect("granted")["via"], "request");
    ann.publish().await.expect("a seat is hers");

    // The host invites Ben, who accepts and publishes too.
    host.send(json!({"type": "invite_to_stage", "participant": ben.id}));
    assert_eq!(host.wait_for("stage_invite_state", T).await.expect("sent")["state"], "sent");
    let inv = ben.wait_for("stage_invite", T).await.expect("invitation");
    assert_eq!(inv["from"]["identity"], "host");
    ben.send(json!({"type": "answer_stage_invite", "accept": true}));
    assert_eq!(ben.wait_for("stage_granted", T).await.expect("granted")["via"], "invite");
    assert_eq!(host.wait_for("stage_invite_state", T).await.expect("answered")["state"], "accepted");
    ben.publish().await.expect("a seat is his");
    assert!(
        eventually(Duration::from_secs(20), || {
            let m = watcher.media_snapshot();
            m.len() == 6 && m.values().all(|t| t.packets > 10)
        })
        .await,
        "the other viewers get the new tiles: {:?}",
        watcher.media_snapshot().len()
    );

    // The host takes Ann off stage: her tracks end for everyone, she is a viewer again, and her
    // next publish is refused (the role is checked on every message).
    host.send(json!({"type": "remove_from_stage", "participant": ann.id}));
    assert_eq!(ann.wait_for("removed_from_stage", T).await.expect("told")["by_host"], true);
    let mut gone = 0;
    while gone < 2 {
        let t = eve.wait_for("track_unpublished", T).await.expect("her tracks end for everyone");
        if t["participant"] == ann.id.as_str() {
            gone += 1;
        }
    }
    let e = ann.publish().await.expect_err("off stage: publishing is refused");
    assert_eq!(e["code"], "not_allowed");
    // Ben steps down by himself; the host cannot.
    ben.send(json!({"type": "step_down"}));
    assert_eq!(ben.wait_for("removed_from_stage", T).await.expect("stepped down")["by_host"], false);
    host.send(json!({"type": "step_down"}));
    assert_eq!(error_code(&mut host).await, "not_allowed");
    assert!(
        eventually(Duration::from_secs(10), || server.sfu().stats().tracks == 2).await,
        "only the host's two tracks are left: {}",
        server.sfu().stats().tracks
    );
    // Declined: the requester hears it and the queue empties.
    eve.send(json!({"type": "request_stage"}));
    eve.wait_for("stage_request", T).await.expect("pending");
    host.send(json!({"type": "answer_stage_request", "participant": eve.id, "accept": false}));
    assert_eq!(eve.wait_for("stage_request", T).await.expect("declined")["state"], "declined");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_when_the_stage_is_full_waits_in_the_queue() {
    let mut config = test_config();
    config.room.max_publishers = 2;
    let server = signaling::Server::start(config).await.expect("server");
    let r = "full";
    let mut host = join(&server, &token(&server, r, "host", Role::Host)).await.unwrap();
    host.publish().await.unwrap();
    let mut co = join(&server, &token(&server, r, "co", Role::Cohost)).await.unwrap();
    co.publish().await.unwrap();
    let mut v = join(&server, &token(&server, r, "v", Role::Viewer)).await.unwrap();
    let mut w = join(&server, &token(&server, r, "w", Role::Viewer)).await.unwrap();
    v.send(json!({"type": "request_stage"}));
    v.wait_for("stage_request", T).await.expect("pending");
    host.send(json!({"type": "answer_stage_request", "participant": v.id, "accept": true}));
    let e = host.wait_for("error", T).await.expect("refused");
    assert_eq!(e["code"], "stage_full");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("stays in the queue")), "{e}");
    // An invitation accepted while full fails clearly for both.
    host.send(json!({"type": "invite_to_stage", "participant": w.id}));
    w.wait_for("stage_invite", T).await.expect("invited");
    w.send(json!({"type": "answer_stage_invite", "accept": true}));
    assert_eq!(error_code(&mut w).await, "stage_full");
    let mut failed = false;
    for _ in 0..3 {
        if host.wait_for("stage_invite_state", T).await.is_some_and(|s| s["state"] == "failed") {
            failed = true;
            break;
        }
    }
    assert!(failed, "the host hears the invitation could not be honoured");
    // A seat frees; the same queued request is accepted.
    co.send(json!({"type": "step_down"}));
    co.wait_for("removed_from_stage", T).await.expect("stepped down");
    host.send(json!({"type": "request_stage"}));
    assert_eq!(error_code(&mut host).await, "not_allowed", "the host is on stage already");
    host.send(json!({"type": "answer_stage_request", "participant": v.id, "accept": true}));
    v.wait_for("stage_granted", T).await.expect("the request waited and is granted");
    v.publish().await.expect("publishes into the freed seat");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hosts_drop_is_held_and_the_return_resumes_the_same_live() {
    // The host's connection resumable for 1 s (tests/resume.rs): past it the host has left, and
    // the live is held for it.
    let mut config = test_config();
    config.limits.resume_grace_secs = 1;
    let server = signaling::Server::start(config).await.expect("server");
    let r = "held";
    let mut host = join(&server, &token(&server, r, "host", Role::Host)).await.unwrap();
    host.publish().await.unwrap();
    let mut co = join(&server, &token(&server, r, "co", Role::Cohost)).await.unwrap();
    co.publish().await.unwrap();
    let mut viewer = join(&server, &token(&server, r, "viewer", Role::Viewer)).await.unwrap();
    assert!(eventually(Duration::from_secs(20), || viewer.media_snapshot().len() == 4).await);
    host.cut().await; // the network goes, no `leave`
    // At once: reconnecting, with the 1 s of resume and the 300 s hold; past the 1 s, the host
    // has left and the live is held for the 300 s.
    let st = viewer.wait_for("host_status", Duration::from_secs(10)).await.expect("viewers hear the host is reconnecting");
    assert_eq!((st["state"].as_str(), st["grace_secs"].as_u64()), (Some("reconnecting"), Some(301)));
    let st = viewer.wait_for("host_status", Duration::from_secs(10)).await.expect("then the hold");
    assert_eq!((st["state"].as_str(), st["grace_secs"].as_u64()), (Some("reconnecting"), Some(300)));
    let upd = viewer.wait_for("room_update", T).await.expect("room update");
    assert_eq!(upd["room"]["state"], "held");
    // Still connected and still watching the co-host.
    viewer.send(json!({"type": "ping", "ts": 7}));
    assert_eq!(viewer.wait_for("pong", T).await.expect("pong")["ts"], 7);
    let before: u64 = viewer.media_snapshot().values().map(|t| t.packets).sum();
    assert!(eventually(Duration::from_secs(5), || viewer.media_snapshot().values().map(|t| t.packets).sum::<u64>() > before + 50).await);
    // The host comes back (same identity, new connection): the same live resumes.
    let mut back = join(&server, &token(&server, r, "host", Role::Host)).await.unwrap();
    assert_eq!(back.joined["room"]["state"], "live");
    assert!(back.joined["participants"].as_array().is_some_and(|p| p.len() == 2), "co-host and viewer still there");
    assert_eq!(viewer.wait_for("host_status", T).await.expect("back")["state"], "back");
    back.publish().await.unwrap();
    co.send(json!({"type": "ping"}));
    assert!(co.wait_for("pong", T).await.is_some(), "the co-host never left");
    server.shutdown().await;

    // With a short grace, a host who does not come back ends the live.
    let mut config = test_config();
    config.room.host_grace_secs = 1;
    let server = signaling::Server::start(config).await.expect("server");
    let mut host = Chat::join(&server, "gone", "host", Role::Host).await.unwrap();
    let mut v = Chat::join(&server, "gone", "v", Role::Viewer).await.unwrap();
    host.send(json!({"type": "leave"})).await;
    v.expect("host_status").await;
    let started = std::time::Instant::now();
    let ended = v.expect_where("room_ended", T, |_| true).await;
    assert_eq!(ended["reason"], "the host did not come back");
    let waited = started.elapsed();
    println!("held for {waited:?} with a 1 s grace, then ended");
    assert!(waited >= Duration::from_millis(500) && waited < Duration::from_secs(3), "{waited:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_duration_cap_warns_the_stage_then_ends_the_live() {
    let mut config = test_config();
    config.room.max_duration_secs = 3;
    config.room.end_warnings_secs = vec![2, 1];
    let server = signaling::Server::start(config).await.expect("server");
    let mut host = Chat::join(&server, "capped", "host", Role::Host).await.unwrap();
    let mut viewer = Chat::join(&server, "capped", "viewer", Role::Viewer).await.unwrap();
    let started = std::time::Instant::now();
    let w1 = host.expect("room_warning").await;
    assert_eq!(w1["code"], "max_duration");
    assert!(w1["ends_in_secs"].as_u64().is_some_and(|s| (1..=2).contains(&s)), "{w1}");
    let w2 = host.expect("room_warning").await;
    assert_eq!(w2["ends_in_secs"], 1, "{w2}");
    let ended = host.expect("room_ended").await;
    println!("warned at {:?} and {:?} to go; ended after {:?}", w1["ends_in_secs"], w2["ends_in_secs"], started.elapsed());
    assert!(ended["reason"].as_str().is_some_and(|r| r.contains("time limit")), "{ended}");
    viewer.expect("room_ended").await;
    assert!(!viewer.seen.iter().any(|m| m["type"] == "room_warning"), "warnings go to the stage, not the audience");
    server.shutdown().await;
}

/// The queue keeps everyone current: places in line move up, a host joining sees the waiting
/// requests, moderators answer only while the host lets them and hear when that changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_keeps_places_hosts_and_moderators_current() {
    let server = start_server().await;
    let r = "queue";
    let mut host = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    let mut m = Chat::join(&server, r, "mod", Role::Moderator).await.unwrap();
    let mut a = Chat::join(&server, r, "a", Role::Viewer).await.unwrap();
    let mut b = Chat::join(&server, r, "b", Role::Viewer).await.unwrap();
    a.send(json!({"type": "request_stage"})).await;
    assert_eq!(a.expect("stage_request").await["position"], 1);
    b.send(json!({"type": "request_stage"})).await;
    assert_eq!(b.expect("stage_request").await["position"], 2);
    a.send(json!({"type": "cancel_stage_request"})).await;
    a.expect_where("stage_request", T, |v| v["state"] == "cancelled").await;
    let moved = b.expect("stage_request").await;
    assert_eq!((moved["state"].as_str(), moved["position"].as_u64()), (Some("pending"), Some(1)), "b moves up");
    // A second host connection (a reload) sees the waiting request at once.
    let mut host2 = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    let q = host2.expect("stage_requests").await;
    assert_eq!(q["requests"][0]["identity"], "b");
    // Moderators: refused, then allowed (they get the queue), then no longer (they are told).
    let b_id = b.joined["participant"]["id"].clone();
    m.refused(json!({"type": "answer_stage_request", "participant": b_id, "accept": false}), "not_allowed").await;
    m.refused(json!({"type": "stage_settings", "moderators_manage": true}), "not_allowed").await;
    host.send(json!({"type": "stage_settings", "moderators_manage": true})).await;
    let q = m.expect_where("stage_requests", T, |v| v["moderators_manage"] == true).await;
    assert_eq!(q["requests"][0]["identity"], "b");
    host.send(json!({"type": "stage_settings", "moderators_manage": false})).await;
    m.expect_where("stage_requests", T, |v| v["moderators_manage"] == false).await;
    m.refused(json!({"type": "answer_stage_request", "participant": b_id, "accept": true}), "not_allowed").await;
    host.send(json!({"type": "stage_settings", "moderators_manage": true})).await;
    m.expect_where("stage_requests", T, |v| v["moderators_manage"] == true).await;
    m.send(json!({"type": "answer_stage_request", "participant": b_id, "accept": false})).await;
    b.expect_where("stage_request", T, |v| v["state"] == "declined").await;
    let empty = host2.expect_where("stage_requests", T, |v| v["requests"].as_array().is_some_and(Vec::is_empty)).await;
    assert_eq!(empty["moderators_manage"], true);
    server.shutdown().await;
}
