//! The cascade: three nodes on loopback sharing a Redis (started by the test), one live whose
//! host is on node A, viewers on A, B and C. B and C serve their viewers as edges of the live:
//! media relayed from A once per edge, the room (comments, moderation) A's.

mod common;
use common::chat_client::{Chat, T};
use common::*;
use serde_json::json;
use signaling::auth::Role;
use std::time::Duration;

const CASCADE_SECRET: &str = "a cascade secret for the tests, 32+ bytes";

async fn node(redis: &str, id: &str, prefix: &str) -> signaling::Server {
    let mut c = test_config();
    c.cluster.redis_url = redis.into();
    c.cluster.node_id = id.into();
    c.cluster.key_prefix = prefix.into();
    c.cluster.heartbeat_ms = 300;
    c.cluster.secret = CASCADE_SECRET.into();
    signaling::Server::start(c).await.expect("node starts")
}

/// Packets of each kind a viewer got.
fn got(c: &Client) -> (u64, u64) {
    let m = c.media_snapshot();
    let of = |k: &str| m.values().filter(|t| t.kind == k).map(|t| t.packets).sum();
    (of("video"), of("audio"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_on_node_a_is_watched_on_three_nodes_with_its_media_relayed_once_per_edge() {
    init_tracing();
    let redis = redis::Redis::start();
    let prefix = format!("cascade-{}", std::process::id());
    let (a, b, c) = (node(&redis.url, "a", &prefix).await, node(&redis.url, "b", &prefix).await, node(&redis.url, "c", &prefix).await);
    let room = "cascade";

    // The host on A goes live with three simulcast layers (video only).
    let mut host = join(&a, &token(&a, room, "host", Role::Host)).await.expect("host joins A");
    host.publish_simulcast([150_000, 400_000, 1_000_000]).await.expect("simulcast publish");
    let mut moderator = Chat::join(&a, room, "mod", Role::Moderator).await.expect("moderator joins A");

    // Viewers with media on every node; B and C serve theirs as edges (no redirect).
    let va = join(&a, &token(&a, room, "va", Role::Viewer)).await.expect("viewer joins A");
    let mut vb = join(&b, &token(&b, room, "vb", Role::Viewer)).await.expect("viewer joins B");
    let mut vb2 = join(&b, &token(&b, room, "vb2", Role::Viewer)).await.expect("second viewer joins B");
    let mut vc = join(&c, &token(&c, room, "vc", Role::Viewer)).await.expect("viewer joins C");
    assert_eq!(vb.joined["room"]["name"], room, "B passed on A's joined: {}", vb.joined);
    let viewers = [("A", &va), ("B", &vb), ("B", &vb2), ("C", &vc)];
    let flowing = eventually(Duration::from_secs(15), || viewers.iter().all(|(_, v)| got(v).0 > 100)).await;
    let counts: Vec<_> = viewers.iter().map(|(n, v)| (*n, got(v))).collect();
    assert!(flowing, "every viewer gets the video (video, audio packets): {counts:?}");
    // B and C forward the media themselves; A's viewers are served by A.
    assert!(b.sfu().stats().rtp_out > 0 && c.sfu().stats().rtp_out > 0);
    assert_eq!(a.state.edges.stats().len(), 0, "A is nobody's edge");

    // A's room has every member (the edge viewers among them) — one room, not three.
    let members = signaling::live::room::lock(&a.state.rooms.get(room).expect("the live is on A")).len();
    assert_eq!(members, 6, "host, moderator and four viewers in A's room");
    assert!(b.state.rooms.get(room).is_none() && c.state.rooms.get(room).is_none(), "no room of it on B or C");

    // Comments reach everyone, wherever they watch from.
    let mut chat_c = Chat::join(&c, room, "chatty", Role::Viewer).await.expect("a chat viewer joins C");
    chat_c.comment("hello from C").await;
    let seen = |v: &serde_json::Value| v["comment"]["text"] == "hello from C";
    moderator.expect_where("comment", T, seen).await;
    for (n, v) in [("B", &mut vb), ("C", &mut vc)] {
        let deadline = tokio::time::Instant::now() + T;
        let mut found = false;
        while let Some(m) = v.wait_for("comment", deadline.saturating_duration_since(tokio::time::Instant::now())).await {
            if seen(&m) {
                found = true;
                break;
            }
        }
        assert!(found, "the viewer on {n} saw the comment");
    }
    assert!(host.wait_for("comment", T).await.is_some(), "the host saw the comment");

    // Moderation on A reaches a viewer on C: banned, kicked with 4003 through the edge.
    moderator.send(json!({"type": "moderate", "action": "ban", "identity": "chatty", "reason": "spam"})).await;
    let k = chat_c.expect("kicked").await;
    assert_eq!(k["code"], "banned");
    let close = next_json(&mut chat_c.ws, T).await.expect("closed");
    assert_eq!(close["close"], 4003, "{close}");
    let (e, close) = Chat::join(&c, room, "chatty", Role::Viewer).await.err().expect("banned identity refused at C too");
    assert_eq!((e["code"].as_str(), close["close"].as_u64()), (Some("banned"), Some(1008)));

    // A viewer on B whose connection drops (no close frame) resumes through B: the origin kept
    // its member (same participant, nobody saw it leave); B's media session for it is new, so
    // the joined says `resumed: false` (the client builds a new subscriber connection).
    let before = vb2.id.clone();
    let r = vb2.kill_ws_and_resume(&b, &token(&b, room, "vb2", Role::Viewer), Duration::from_millis(300)).await;
    assert_eq!((r["type"].as_str(), r["resumed"].as_bool()), (Some("joined"), Some(false)), "{r}");
    assert_eq!(r["participant"]["id"].as_str(), Some(before.as_str()), "the same member at A");
    let members = signaling::live::room::lock(&a.state.rooms.get(room).expect("the live is on A")).len();
    assert_eq!(members, 6, "nobody left A's room");

    // get_stats at an edge is the edge's view of the viewer's subscriptions; its layer climbs
    // to the top one: the edge's demand reached A, which relays that layer now (dynacast across
    // nodes; the relay started with the lowest).
    let t0 = std::time::Instant::now();
    let mut layer = None;
    while t0.elapsed() < Duration::from_secs(10) && layer != Some(2) {
        vb.send(json!({"type": "get_stats"}));
        let s = vb.wait_for("stats", T).await.expect("stats from B");
        assert!(s["tracks"].as_array().is_some_and(|t| t.len() == 1 && t[0]["packets"].as_u64() > Some(0)), "{s}");
        layer = s["tracks"][0]["layer"].as_u64();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("the viewer on B reached layer {layer:?} after {:?}", t0.elapsed());
    assert_eq!(layer, Some(2), "the viewer on B gets the top layer");

    // The relay: what arrived at each edge, lost, and how long it took from A's arrival.
    for (name, n) in [("B", &b), ("C", &c)] {
        let stats = n.state.edges.stats();
        assert_eq!(stats.len(), 1, "{name} is an edge of one live");
        let s = &stats[0].1;
        println!(
            "relay A → {name}: {} packets, {} lost, {} refused; delay p50 {} µs, p99 {} µs, max {} µs",
            s.packets,
            s.lost,
            s.refused,
            s.delay_p50_us.unwrap_or(0),
            s.delay_p99_us.unwrap_or(0),
            s.delay_max_us.unwrap_or(0)
        );
        assert!(s.packets > 150 && s.refused == 0, "{name}: {s:?}");
        assert!(s.lost * 100 <= s.packets, "{name}: loss over 1 % on loopback: {s:?}");
        assert!(s.delay_p99_us.is_some_and(|d| d < 50_000), "{name}: {s:?}");
    }
    // Once per edge: B's two viewers share one relay, so B received no more than C (one viewer).
    let (rb, rc) = (b.state.edges.stats()[0].1.packets, c.state.edges.stats()[0].1.packets);
    assert!(rb < rc * 2, "B's relay carries the live once, not per viewer: B {rb}, C {rc}");

    // The host ends the live: everyone is told, the edges' relays end.
    host.send(json!({"type": "end_room"}));
    assert!(vb.wait_for("room_ended", T).await.is_some(), "the viewer on B hears the end");
    assert!(vc.wait_for("room_ended", T).await.is_some(), "the viewer on C hears the end");
    let gone = eventually(Duration::from_secs(10), || b.sfu().stats().tracks == 0 && c.sfu().stats().tracks == 0).await;
    assert!(gone, "the relayed tracks end with the live");
    drop(vb2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audio_and_video_reach_an_edge_viewer_intact() {
    init_tracing();
    let redis = redis::Redis::start();
    let prefix = format!("cascade-av-{}", std::process::id());
    let (a, b) = (node(&redis.url, "a", &prefix).await, node(&redis.url, "b", &prefix).await);
    let room = "cascade-av";
    let mut host = join(&a, &token(&a, room, "host", Role::Host)).await.expect("host joins A");
    host.publish().await.expect("publish");
    let va = join(&a, &token(&a, room, "va", Role::Viewer)).await.expect("viewer joins A");
    let vb = join(&b, &token(&b, room, "vb", Role::Viewer)).await.expect("viewer joins B");
    let flowing = eventually(Duration::from_secs(15), || [&va, &vb].iter().all(|v| got(v).0 > 60 && got(v).1 > 50)).await;
    assert!(flowing, "both viewers get audio and video (video, audio): A {:?}, B {:?}", got(&va), got(&vb));
    // Whole and in order: the synthetic payloads check out, no gaps, nothing twice.
    for (n, v) in [("A", &va), ("B", &vb)] {
        for t in v.media_snapshot().values() {
            assert_eq!((t.corrupt, t.seq_gaps, t.duplicates), (0, 0, 0), "{n} {}: {t:?}", t.kind);
        }
    }
    // The offer from the edge names the host as the streams' owner (msid), as the origin's does:
    // a page groups a participant's audio and video by it.
    let offer = vb.offers.lock().unwrap().last().cloned().expect("an offer from B");
    assert!(offer.contains(&format!("a=msid:{} ", host.id)), "B's offer names the host {}: {offer}", host.id);
}
