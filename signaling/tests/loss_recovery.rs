//! NACKs are answered from the SFU's per-track packet cache: a viewer behind a lossy link (a
//! userspace relay dropping 5% of media datagrams) still gets (nearly) every video packet.

mod common;
use common::*;
use signaling::auth::Role;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nacks_recover_video_lost_on_the_way_to_a_viewer() {
    // What is tested is the repair of lost packets, not the estimator: random 5 % loss shows
    // 500 ms windows over its 10 % congestion mark now and then, and a loss-triggered cut goes to
    // 0.85 × what the viewer receives — under this one-layer video's rate, so the audio-only
    // fallback paused the video in 3 of 8 runs and fewer than 600 packets arrived. Without the
    // fallback the video keeps flowing whatever the estimate says (the estimator's reading of
    // random loss is recorded in the notes).
    let mut config = test_config();
    config.profiles.get_mut("standard").expect("the built-in standard profile").audio_only_fallback = false;
    let server = signaling::Server::start(config).await.expect("server");
    let mut host = join(&server, &token(&server, "lossy", "host", Role::Host)).await.unwrap();
    host.publish().await.unwrap();
    let relay = ImpairRelay::start(server.sfu().local_addr(), 0.05).await;
    let viewer = join_via(&server, &token(&server, "lossy", "viewer", Role::Viewer), Some(relay.addr)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || viewer.media_snapshot().values().filter(|t| t.packets > 20).count() == 2).await,
        "media flows through the relay"
    );
    // Let a few hundred video packets through the lossy link.
    assert!(
        eventually(Duration::from_secs(20), || viewer.media_snapshot().values().any(|t| t.kind == "video" && t.seqs.len() > 600)).await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = viewer.media_snapshot();
    let video = m.values().find(|t| t.kind == "video").unwrap();
    let audio = m.values().find(|t| t.kind == "audio").unwrap();
    // Ignore the last 30 packets: their NACK round trip may still be under way.
    let (v_missing, v_span) = video.missing(30);
    let (a_missing, a_span) = audio.missing(30);
    let dropped = relay.dropped.load(Ordering::Relaxed);
    let passed = relay.passed.load(Ordering::Relaxed);
    eprintln!(
        "relay dropped {dropped} of {} datagrams; video missing {v_missing}/{v_span}; audio (no NACK for Opus) missing {a_missing}/{a_span}; corrupt {}",
        dropped + passed,
        video.corrupt
    );
    assert!(dropped as f64 > 0.03 * (dropped + passed) as f64, "the relay really dropped ~5%");
    assert!(a_missing > 0, "audio shows the raw loss (Opus is not retransmitted)");
    assert!((v_missing as f64) < 0.005 * v_span as f64, "video recovered by NACK: {v_missing} of {v_span} still missing");
    assert_eq!(video.corrupt, 0, "retransmitted payloads are intact");
    drop(relay);
    viewer.close().await;
    host.close().await;
    server.shutdown().await;
}
