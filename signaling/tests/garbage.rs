//! Garbage on the UDP port and on the WebSocket: the sender gets a clear error (or nothing, for
//! UDP), everyone else keeps receiving, nothing panics, nothing is left behind.

mod common;
use common::*;
use futures_util::SinkExt;
use rand::Rng;
use serde_json::json;
use signaling::auth::Role;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn stun_binding(ufrag: &str, tail: &[u8]) -> Vec<u8> {
    let user = format!("{ufrag}:attacker");
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(user.len() as u16).to_be_bytes());
    attrs.extend_from_slice(user.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    attrs.extend_from_slice(tail);
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    m.extend(rand::rng().random::<[u8; 12]>());
    m.extend_from_slice(&attrs);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_udp_and_websocket_frames_harm_nobody() {
    let server = start_server().await;
    let room = "garbage";
    let mut host = join(&server, &token(&server, room, "host", Role::Host)).await.unwrap();
    host.publish().await.unwrap();
    let viewer = join(&server, &token(&server, room, "viewer", Role::Viewer)).await.unwrap();
    assert!(eventually(Duration::from_secs(10), || viewer.media_snapshot().values().filter(|t| t.packets > 20).count() == 2).await);
    let baseline = server.sfu().stats();
    let packets = |c: &Client| c.media_snapshot().values().map(|t| t.packets).sum::<u64>();

    // ---- UDP -------------------------------------------------------------------------
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = server.sfu().local_addr();
    let ufrag = sdp_ufrag(&viewer.last_offer.lock().unwrap().clone().unwrap()).unwrap();
    let mut rng = rand::rng();
    let mut sent = 0;
    for i in 0..3000 {
        let dgram: Vec<u8> = match i % 6 {
            0 => (0..rng.random_range(0..1500)).map(|_| rng.random()).collect(),
            1 => vec![],
            // Looks like RTP/RTCP (version 2) but is junk.
            2 => {
                let mut v: Vec<u8> = (0..rng.random_range(12..400)).map(|_| rng.random()).collect();
                v[0] = 0x80;
                v
            }
            // A STUN binding request for the live viewer's ufrag, with junk where the
            // MESSAGE-INTEGRITY should be: it binds our address in the demux, then the session
            // must reject it and everything after it.
            3 => stun_binding(&ufrag, &rng.random::<[u8; 24]>()),
            // Truncated STUN header.
            4 => stun_binding(&ufrag, &[])[..rng.random_range(0..20)].to_vec(),
            // DTLS-looking record with junk.
            _ => {
                let mut v: Vec<u8> = (0..rng.random_range(13..300)).map(|_| rng.random()).collect();
                v[0] = 22;
                v
            }
        };
        if udp.send_to(&dgram, target).await.is_ok() {
            sent += 1;
        }
    }
    // Oversized datagrams.
    for _ in 0..20 {
        let big: Vec<u8> = (0..9000).map(|_| rng.random()).collect();
        let _ = udp.send_to(&big, target).await;
    }
    eprintln!("sent {sent} garbage datagrams");

    // ---- WebSocket -------------------------------------------------------------------
    let mut bad = join(&server, &token(&server, room, "badclient", Role::Viewer)).await.unwrap();
    bad.send_raw("{".into());
    assert_eq!(bad.wait_for("error", Duration::from_secs(3)).await.unwrap()["code"], "bad_message");
    bad.send(json!({"type": "no_such_type"}));
    assert_eq!(bad.wait_for("error", Duration::from_secs(3)).await.unwrap()["code"], "bad_message");
    bad.send(json!({"type": "publish"}));
    assert_eq!(bad.wait_for("error", Duration::from_secs(3)).await.unwrap()["code"], "bad_message");
    bad.send(json!({"type": "answer", "sdp": "this is not sdp"}));
    assert_eq!(bad.wait_for("error", Duration::from_secs(3)).await.unwrap()["code"], "bad_sdp");
    bad.send(json!({"type": "candidate", "target": "subscriber", "candidate": {"candidate": "x".repeat(2000)}}));
    assert_eq!(bad.wait_for("error", Duration::from_secs(3)).await.unwrap()["code"], "bad_candidate");
    bad.send(json!({"type": "mute", "track": "TR_1", "muted": true}));
    assert_eq!(bad.wait_for("error", Duration::from_secs(3)).await.unwrap()["code"], "not_found");
    bad.send(json!({"type": "join", "token": "x"}));
    assert_eq!(bad.wait_for("error", Duration::from_secs(3)).await.unwrap()["code"], "already_joined");
    // Under the protocol limit, fifteen times the server's 4 KiB read buffer: read whole (the
    // SDP check answers, not the size check).
    bad.send(json!({"type": "answer", "sdp": "v".repeat(60 * 1024)}));
    assert_eq!(bad.wait_for("error", Duration::from_secs(3)).await.unwrap()["code"], "bad_sdp");
    // Over the protocol limit (64 KiB) but under the hard cap: an error, the connection stays.
    bad.send(json!({"type": "publish", "sdp": "v".repeat(100 * 1024)}));
    assert_eq!(bad.wait_for("error", Duration::from_secs(3)).await.unwrap()["code"], "message_too_large");
    bad.send(json!({"type": "ping", "ts": 7}));
    assert_eq!(bad.wait_for("pong", Duration::from_secs(3)).await.unwrap()["ts"], 7);
    // A flood: the burst passes, the rest is refused with rate_limited.
    for i in 0..400 {
        bad.send(json!({"type": "ping", "ts": i}));
    }
    assert_eq!(bad.wait_for("error", Duration::from_secs(5)).await.unwrap()["code"], "rate_limited");

    // Binary frames and a frame over the hard cap on raw sockets.
    let mut raw = raw_ws(&server).await;
    raw.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    let e = next_json(&mut raw, Duration::from_secs(3)).await.unwrap();
    assert_eq!(e["code"], "bad_message");
    let mut huge = raw_ws(&server).await;
    let _ = huge.send(Message::Text("x".repeat(2 * 1024 * 1024).into())).await;
    let closed = next_json(&mut huge, Duration::from_secs(5)).await.unwrap();
    assert!(closed.get("close").is_some() || closed["code"] == "bad_message", "huge frame: {closed}");
    // Too many malformed messages: the server hangs up with a policy close.
    let mut spam = join(&server, &token(&server, room, "spammer", Role::Viewer)).await.unwrap();
    for _ in 0..30 {
        spam.send_raw("not json".into());
    }
    assert!(spam.wait_for("error", Duration::from_secs(3)).await.is_some());

    // ---- Everyone else is fine --------------------------------------------------------
    let mid = packets(&viewer);
    assert!(eventually(Duration::from_secs(5), || packets(&viewer) > mid + 150).await, "viewer still receives");
    for t in viewer.media_snapshot().values() {
        assert_eq!((t.corrupt, t.out_of_order), (0, 0));
    }
    let fresh = join(&server, &token(&server, room, "fresh", Role::Viewer)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || fresh.media_snapshot().values().filter(|t| t.packets > 20).count() == 2).await,
        "new viewers still join"
    );
    let stats = server.sfu().stats();
    eprintln!("after garbage: {stats:?}");
    assert!(stats.datagrams_dropped > 0);

    // Garbage clients leave: the session count returns to what it was.
    for c in [bad, spam, fresh] {
        c.close().await;
    }
    drop(raw);
    drop(huge);
    assert!(
        eventually(Duration::from_secs(10), || {
            let s = server.sfu().stats();
            s.sessions == baseline.sessions && s.participants == baseline.participants && s.demux_sessions == baseline.demux_sessions
        })
        .await,
        "sessions back to baseline: {:?} vs {:?}",
        server.sfu().stats(),
        baseline
    );
    assert_eq!(server.state.rooms.len(), 1);
    viewer.close().await;
    host.close().await;
    assert!(
        eventually(Duration::from_secs(10), || {
            let s = server.sfu().stats();
            (s.sessions, s.participants, s.tracks, s.demux_sessions, s.demux_addresses) == (0, 0, 0, 0, 0)
        })
        .await,
        "nothing left behind: {:?}",
        server.sfu().stats()
    );
    server.shutdown().await;
}

/// A frame over the 1 MiB hard cap, before and after `join`, gets its error and the close code
/// 1009 (not a TCP reset: the server closes, then drains what is still coming), and the server
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frame_over_the_cap_is_closed_with_1009() {
    let server = start_server().await;
    let room = "bigframes";
    let mut host = join(&server, &token(&server, room, "host", Role::Host)).await.unwrap();
    host.publish().await.unwrap();
    for size in [1024 * 1024 + 1, 2 * 1024 * 1024, 3 * 1024 * 1024] {
        // Before join: the first frame is too big.
        let mut ws = raw_ws(&server).await;
        let _ = ws.send(Message::Text("x".repeat(size).into())).await;
        let e = next_json(&mut ws, Duration::from_secs(5)).await.expect("a reply");
        assert_eq!(e["type"], "error", "{size} bytes before join: {e}");
        assert_eq!(e["code"], "bad_message");
        let close = next_json(&mut ws, Duration::from_secs(5)).await.expect("a close");
        eprintln!("{size}-byte frame before join: {} then close {}", e["code"], close["close"]);
        assert_eq!(close["close"], 1009, "{size} bytes before join");
        // After join.
        let mut ws = raw_ws(&server).await;
        ws.send(Message::Text(serde_json::json!({"type": "join", "token": token(&server, room, "big", Role::Viewer)}).to_string().into()))
            .await
            .unwrap();
        assert_eq!(next_json(&mut ws, Duration::from_secs(5)).await.expect("joined")["type"], "joined");
        let _ = ws.send(Message::Text("y".repeat(size).into())).await;
        let mut close = None;
        for _ in 0..20 {
            match next_json(&mut ws, Duration::from_secs(5)).await {
                Some(v) if v.get("close").is_some() => {
                    close = Some(v["close"].clone());
                    break;
                }
                Some(_) => continue, // offers, candidates, the error
                None => break,
            }
        }
        eprintln!("{size}-byte frame after join: close {close:?}");
        assert_eq!(close, Some(serde_json::json!(1009)), "{size} bytes after join");
    }
    host.send(serde_json::json!({"type": "ping", "ts": 9}));
    assert_eq!(host.wait_for("pong", Duration::from_secs(2)).await.expect("the host is still served")["ts"], 9);
    host.close().await;
    server.shutdown().await;
}
