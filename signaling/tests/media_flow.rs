//! The whole flow on loopback: two publishers, three viewers, a late viewer.

mod common;
use common::*;
use signaling::auth::Role;
use std::time::{Duration, Instant};

fn all_tracks_flowing(c: &Client, want: usize, min_packets: u64) -> bool {
    let m = c.media_snapshot();
    m.len() == want && m.values().all(|t| t.packets >= min_packets && (t.kind == "audio" || t.keyframes >= 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_and_cohost_reach_three_viewers_intact_and_in_order() {
    let server = start_server().await;
    let room = "flow";
    let mut host = join(&server, &token(&server, room, "host", Role::Host)).await.unwrap();
    host.publish().await.expect("host publishes");
    let mut cohost = join(&server, &token(&server, room, "cohost", Role::Cohost)).await.unwrap();
    cohost.publish().await.expect("co-host publishes");
    let mut viewers = Vec::new();
    for i in 0..3 {
        viewers.push(join(&server, &token(&server, room, &format!("viewer{i}"), Role::Viewer)).await.unwrap());
    }
    let ok = eventually(Duration::from_secs(20), || viewers.iter().all(|v| all_tracks_flowing(v, 4, 100))).await;
    for (i, v) in viewers.iter().enumerate() {
        let m = v.media_snapshot();
        for (id, t) in &m {
            eprintln!(
                "viewer{i} {id} {}: {} packets, {} keyframes, {} corrupt, {} out of order, {} seq gaps, {} duplicates, ssrcs {:?}",
                t.kind, t.packets, t.keyframes, t.corrupt, t.out_of_order, t.seq_gaps, t.duplicates, t.ssrcs
            );
        }
    }
    assert!(ok, "every viewer receives all four tracks");
    for v in &viewers {
        for t in v.media_snapshot().values() {
            assert_eq!(t.corrupt, 0, "payloads arrive intact");
            assert_eq!(t.out_of_order, 0, "payloads arrive in order");
            assert_eq!(t.ssrcs.len(), 1, "one SSRC per forwarded track");
        }
    }
    // Publishers see each other (two tracks each).
    assert!(eventually(Duration::from_secs(5), || all_tracks_flowing(&host, 2, 20) && all_tracks_flowing(&cohost, 2, 20)).await);

    // A late viewer gets a keyframe on both video tracks within 1 s of joining.
    let t0 = Instant::now();
    let late = join(&server, &token(&server, room, "late", Role::Viewer)).await.unwrap();
    let got = eventually(Duration::from_secs(3), || {
        let m = late.media_snapshot();
        m.values().filter(|t| t.kind == "video" && t.first_keyframe.is_some()).count() == 2
    })
    .await;
    assert!(got, "late viewer gets keyframes");
    let worst =
        late.media_snapshot().values().filter(|t| t.kind == "video").map(|t| t.first_keyframe.unwrap().duration_since(t0)).max().unwrap();
    eprintln!("late viewer: join -> first keyframe on both video tracks: {worst:?}");
    assert!(worst < Duration::from_secs(1), "late joiner keyframe took {worst:?}");
    let stats = server.sfu().stats();
    eprintln!("sfu stats: {stats:?}");
    assert!(stats.plis_sent >= 1);

    // Everyone leaves: no session stays behind.
    for c in viewers.into_iter().chain([host, cohost, late]) {
        c.close().await;
    }
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = server.sfu().stats();
            s.sessions == 0 && s.participants == 0 && s.tracks == 0 && s.demux_sessions == 0 && s.demux_addresses == 0
        })
        .await,
        "sessions left behind: {:?}",
        server.sfu().stats()
    );
    server.shutdown().await;
}
