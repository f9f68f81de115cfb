//! The stage holds four publishers; viewers and moderators cannot publish; only the host ends
//! the room. Refusals leave everyone else streaming.

mod common;
use common::*;
use signaling::auth::Role;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifth_publisher_and_viewer_publish_are_refused() {
    let server = start_server().await;
    let room = "stage";
    // A co-host cannot go live before the host starts the room.
    let mut early = join(&server, &token(&server, room, "early", Role::Cohost)).await.unwrap();
    let e = early.publish().await.expect_err("room not live yet");
    assert_eq!(e["code"], "room_not_live");

    let mut host = join(&server, &token(&server, room, "host", Role::Host)).await.unwrap();
    host.publish().await.unwrap();
    early.publish().await.expect("now the room is live");
    let mut cohosts = Vec::new();
    for i in 0..2 {
        let mut c = join(&server, &token(&server, room, &format!("cohost{i}"), Role::Cohost)).await.unwrap();
        c.publish().await.unwrap();
        cohosts.push(c);
    }
    let viewer = join(&server, &token(&server, room, "viewer", Role::Viewer)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            let m = viewer.media_snapshot();
            m.len() == 8 && m.values().all(|t| t.packets > 10)
        })
        .await,
        "viewer receives all four publishers"
    );

    let mut fifth = join(&server, &token(&server, room, "fifth", Role::Cohost)).await.unwrap();
    let e = fifth.publish().await.expect_err("stage is full");
    assert_eq!(e["code"], "stage_full");
    let mut v2 = join(&server, &token(&server, room, "v2", Role::Viewer)).await.unwrap();
    let e = v2.publish().await.expect_err("viewers cannot publish");
    assert_eq!(e["code"], "not_allowed");
    let mut m = join(&server, &token(&server, room, "mod", Role::Moderator)).await.unwrap();
    let e = m.publish().await.expect_err("moderators cannot publish");
    assert_eq!(e["code"], "not_allowed");
    // A co-host cannot end the room.
    cohosts[0].send(serde_json::json!({"type": "end_room"}));
    let e = cohosts[0].wait_for("error", Duration::from_secs(3)).await.expect("refused");
    assert_eq!(e["code"], "not_allowed");

    // Nobody was disturbed: still eight tracks, all advancing.
    let before: u64 = viewer.media_snapshot().values().map(|t| t.packets).sum();
    assert!(
        eventually(Duration::from_secs(5), || {
            let m = viewer.media_snapshot();
            m.len() == 8 && m.values().map(|t| t.packets).sum::<u64>() > before + 200
        })
        .await
    );
    assert_eq!(server.sfu().stats().tracks, 8);

    // When a publisher leaves, its seat frees up for the fifth.
    let leaving = cohosts.pop().unwrap();
    leaving.close().await;
    assert!(eventually(Duration::from_secs(5), || viewer.media_snapshot().len() >= 6 && server.sfu().stats().tracks == 6).await);
    fifth.publish().await.expect("a freed seat can be taken");

    // The host ends the live: everyone is told.
    host.send(serde_json::json!({"type": "end_room"}));
    let ended = v2.wait_for("room_ended", Duration::from_secs(3)).await;
    assert!(ended.is_some(), "viewers learn the room ended");
    let late = join(&server, &token(&server, room, "late", Role::Viewer)).await;
    assert_eq!(late.err().expect("ended rooms refuse joins")["code"], "room_ended");
    for c in cohosts.into_iter().chain([early, host, viewer, fifth, v2, m]) {
        c.close().await;
    }
    assert!(eventually(Duration::from_secs(5), || server.sfu().stats().sessions == 0).await);
    server.shutdown().await;
}

/// A refused renegotiation leaves the publisher's connection usable (rollback): the next valid
/// offer is answered, the seat is kept, and viewers keep receiving throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_renegotiation_is_rolled_back() {
    let server = start_server().await;
    let room = "renegotiate";
    let mut host = join(&server, &token(&server, room, "host", Role::Host)).await.unwrap();
    host.publish().await.unwrap();
    let mut viewer = join(&server, &token(&server, room, "viewer", Role::Viewer)).await.unwrap();
    assert!(eventually(Duration::from_secs(10), || viewer.media_snapshot().values().filter(|t| t.packets > 20).count() == 2).await);
    // An offer without ICE credentials: refused with bad_sdp.
    let broken: String = host
        .publisher_sdp()
        .await
        .split("\r\n")
        .filter(|l| !l.starts_with("a=ice-ufrag") && !l.starts_with("a=ice-pwd"))
        .collect::<Vec<_>>()
        .join("\r\n");
    host.send(serde_json::json!({"type": "publish", "sdp": broken}));
    let e = host.wait_for("error", Duration::from_secs(3)).await.expect("the broken offer is refused");
    eprintln!("broken offer: {e}");
    assert_eq!(e["code"], "bad_sdp");
    // Refused twice more: still no stuck state.
    host.send(serde_json::json!({"type": "publish", "sdp": "v=0\r\nnot an offer"}));
    assert_eq!(host.wait_for("error", Duration::from_secs(3)).await.expect("refused")["code"], "bad_sdp");
    // The next valid offer on the same connection is answered.
    let answer = host.republish().await;
    assert!(answer.is_ok(), "a valid renegotiation after a refused one: {answer:?}");
    // The seat was kept and media never stopped.
    let before: u64 = viewer.media_snapshot().values().map(|t| t.packets).sum();
    assert!(
        eventually(Duration::from_secs(5), || viewer.media_snapshot().values().map(|t| t.packets).sum::<u64>() > before + 100).await,
        "viewer keeps receiving"
    );
    let fifth_seat_probe = server.state.rooms.get(room).map(|r| signaling::live::room::lock(&r).publishers());
    assert_eq!(fifth_seat_probe, Some(1), "the host keeps its seat");
    assert!(viewer.wait_for("track_unpublished", Duration::from_millis(300)).await.is_none());
    host.close().await;
    viewer.close().await;
    server.shutdown().await;
}

/// A viewer joining a room with several tracks gets one offer for all of them, and every offer
/// (the first one too) carries the session-level `a=msid-semantic` other stacks need to map
/// `a=msid` lines to streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joining_viewer_gets_one_complete_offer() {
    let server = start_server().await;
    let room = "offers";
    let mut host = join(&server, &token(&server, room, "host", Role::Host)).await.unwrap();
    host.publish().await.unwrap();
    let mut cohost = join(&server, &token(&server, room, "cohost", Role::Cohost)).await.unwrap();
    cohost.publish().await.unwrap();
    let probe = join(&server, &token(&server, room, "probe", Role::Viewer)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || probe.media_snapshot().values().filter(|t| t.packets > 10).count() == 4).await,
        "four tracks flow"
    );
    let viewer = join(&server, &token(&server, room, "viewer", Role::Viewer)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || viewer.media_snapshot().values().filter(|t| t.packets > 10).count() == 4).await,
        "the new viewer receives all four"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let offers = viewer.offers.lock().unwrap().clone();
    let m_lines = |sdp: &str| sdp.lines().filter(|l| l.starts_with("m=")).count();
    eprintln!("offers to the joining viewer: {} (m-lines {:?})", offers.len(), offers.iter().map(|o| m_lines(o)).collect::<Vec<_>>());
    assert_eq!(offers.len(), 1, "one offer on join");
    assert_eq!(m_lines(&offers[0]), 4, "with all four tracks");
    // A later track (the co-host leaves, another publishes) arrives in a renegotiation: the
    // first offer and every later one carry msid-semantic.
    cohost.close().await;
    let mut third = join(&server, &token(&server, room, "third", Role::Cohost)).await.unwrap();
    third.publish().await.unwrap();
    assert!(eventually(Duration::from_secs(10), || viewer.offers.lock().unwrap().len() >= 3).await, "renegotiations follow");
    for (i, o) in viewer.offers.lock().unwrap().iter().enumerate() {
        let session = o.split("\r\nm=").next().unwrap_or_default();
        assert!(session.contains("a=msid-semantic:WMS *"), "offer {i} lacks a=msid-semantic at session level:\n{session}");
    }
    for c in [host, third, probe, viewer] {
        c.close().await;
    }
    server.shutdown().await;
}
