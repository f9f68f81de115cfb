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
    assert!(eventually(Duration::from_secs(20), || {
        let m = viewer.media_snapshot();
        m.len() == 8 && m.values().all(|t| t.packets > 10)
    })
    .await, "viewer receives all four publishers");

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
    assert!(eventually(Duration::from_secs(5), || {
        let m = viewer.media_snapshot();
        m.len() == 8 && m.values().map(|t| t.packets).sum::<u64>() > before + 200
    })
    .await);
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
