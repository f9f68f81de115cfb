//! Live profiles: the host's token picks the family, every participant learns it in `joined`,
//! an unknown one is refused, and the key-frame interval is enforced on the publishers.

mod common;
use common::chat_client::Chat;
use common::*;
use serde_json::json;
use signaling::auth::Role;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_token_picks_the_profile_and_everyone_learns_it() {
    let server = start_server().await;
    // A viewer early in a waiting room sees the default.
    let mut early = Chat::join(&server, "p", "early", Role::Viewer).await.unwrap();
    assert_eq!(early.joined["profile"]["name"], "standard");
    assert_eq!(early.joined["profile"]["layers"].as_array().map(Vec::len), Some(3));
    // An unknown profile in the host's token is refused.
    let bad = server.state.auth.mint_with_profile("p", "host", None, Role::Host, 60, Some("cinema")).unwrap();
    let (code, close) = join_refusal(&server, json!({"type": "join", "token": bad})).await;
    assert_eq!((code.as_str(), close), ("token_invalid_claims", 1008));
    let forged = server.state.auth.mint_with_profile("p", "host", None, Role::Host, 60, Some("../x")).unwrap();
    let (code, close) = join_refusal(&server, json!({"type": "join", "token": forged})).await;
    assert_eq!((code.as_str(), close), ("token_invalid_claims", 4001));
    // The host's token names `interactive`: the live takes it.
    let ok = server.state.auth.mint_with_profile("p", "host", None, Role::Host, 60, Some("interactive")).unwrap();
    let host = join(&server, &ok).await.unwrap();
    assert_eq!(host.joined["profile"]["name"], "interactive");
    assert_eq!(host.joined["profile"]["playout_delay_ms"], 0);
    assert_eq!(host.joined["room"]["profile"], "interactive");
    let changed = early.expect("live_profile").await;
    assert_eq!(changed["profile"]["name"], "interactive", "who came before the host hears the live's profile");
    let late = Chat::join(&server, "p", "late", Role::Viewer).await.unwrap();
    assert_eq!(late.joined["profile"]["name"], "interactive");
    assert_eq!(late.joined["profile"]["layers"][2]["max_bitrate_kbps"], 1200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keyframe_interval_is_asked_of_every_publisher() {
    let mut config = test_config();
    let mut every_second = signaling::profiles::builtin()["standard"].clone();
    every_second.keyframe_interval_secs = 1;
    config.profiles.insert("tight".into(), every_second);
    let mut never = signaling::profiles::builtin()["standard"].clone();
    never.keyframe_interval_secs = 0;
    config.profiles.insert("loose".into(), never);
    let server = signaling::Server::start(config).await.expect("server");
    let mut seen = Vec::new();
    for (room, profile) in [("tight", "tight"), ("loose", "loose")] {
        let t = server.state.auth.mint_with_profile(room, "host", None, Role::Host, 60, Some(profile)).unwrap();
        let mut host = join(&server, &t).await.unwrap();
        host.publish().await.unwrap();
        let viewer = join(&server, &token(&server, room, "v", Role::Viewer)).await.unwrap();
        assert!(eventually(Duration::from_secs(10), || viewer.media_snapshot().len() == 2).await);
        // Count from now (a joining viewer asks for one key frame of its own).
        tokio::time::sleep(Duration::from_millis(700)).await;
        let before = host.keyframe_requests_seen.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(4)).await;
        let asked = host.keyframe_requests_seen.load(Ordering::SeqCst) - before;
        println!("{profile}: {asked} key-frame requests in 4 s");
        seen.push(asked);
        host.close().await;
        viewer.close().await;
    }
    assert!((4..=5).contains(&seen[0]), "every second, one request (a single-layer track): {seen:?}");
    assert_eq!(seen[1], 0, "no interval, no request: {seen:?}");
    server.shutdown().await;
}
