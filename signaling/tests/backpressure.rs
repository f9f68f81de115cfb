//! A client that reads slower than its room talks: its queue overflows and it gets a `resync`
//! (never a silent gap); one that keeps overflowing, or stops reading, is cut with 4008 while
//! everyone else is served. Real sockets on loopback; the slow client's receive buffer is made
//! small so the server's writes to it block after a few hundred kilobytes.

mod common;

use common::chat_client::{Chat, T};
use common::{RawWs, next_json, test_config, token, ws_url};
use futures_util::SinkExt;
use serde_json::{Value, json};
use signaling::auth::Role;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// A config where one host can post thousands of comments quickly and a client's queue holds 64
/// (a fan-out tick every 5 ms carries at most the 25 comments of one round of `flood`).
fn config(max_resyncs: u32, write_timeout_secs: u64) -> signaling::config::Config {
    let mut c = test_config();
    c.limits.outbox_messages = 64;
    c.chat.fanout_ms = 5;
    c.limits.max_resyncs_per_minute = max_resyncs;
    c.limits.write_timeout_secs = write_timeout_secs;
    c.limits.messages_per_second = 100_000;
    c.limits.message_burst = 100_000;
    c.chat.user_comments_per_sec = 100_000.0;
    c.chat.user_comment_burst = 100_000;
    c.chat.room_comments_per_sec = 100_000.0;
    c.chat.room_comment_burst = 100_000;
    c.chat.history = 50;
    c.chat.max_comment_chars = 5000;
    c
}

/// A viewer whose socket takes little before the server's writes block: a 4 KiB receive buffer
/// (set before connecting, so the window is small from the start), and it reads only when told.
async fn lazy_viewer(server: &signaling::Server, room: &str, identity: &str) -> Chat {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(server.http_addr).await.expect("connect");
    let (mut ws, _): (RawWs, _) =
        tokio_tungstenite::client_async(ws_url(server), tokio_tungstenite::MaybeTlsStream::Plain(tcp)).await.expect("websocket handshake");
    let t = token(server, room, identity, Role::Viewer);
    ws.send(Message::Text(json!({"type": "join", "token": t, "protocol": 1}).to_string().into())).await.unwrap();
    let joined = next_json(&mut ws, T).await.expect("joined");
    assert_eq!(joined["type"], "joined", "{joined}");
    Chat { ws, joined, seen: Vec::new(), identity: identity.into() }
}

/// The host posts `n` comments `{prefix}{i}` (5 000 characters each: 3 000 of them are 15 MB, more than a
/// socket's send buffer grows to), 25 at a time; it
/// and a reader that keep up read each round back, in order, before the next.
async fn flood(host: &mut Chat, fast: &mut Chat, prefix: &str, n: usize) {
    let pad = "x".repeat(4990);
    let mut next = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(25) {
        for i in chunk {
            host.send(json!({"type": "comment", "text": format!("{prefix}{i} {pad}")})).await;
        }
        let last = format!("{prefix}{} {pad}", chunk[chunk.len() - 1]);
        host.expect_where("comment", T, |v| v["comment"]["text"] == last.as_str()).await;
        host.seen.retain(|m| m["type"] != "comment");
        while next <= chunk[chunk.len() - 1] {
            let v = fast.expect_where("comment", T, |v| v["comment"]["text"].as_str().is_some_and(|t| t.starts_with(prefix))).await;
            assert_eq!(v["comment"]["text"], format!("{prefix}{next} {pad}"), "the reader that keeps up gets every comment in order");
            next += 1;
        }
    }
    assert!(fast.seen.iter().chain(&host.seen).all(|m| m["type"] != "resync"), "readers that keep up never need a resync");
}

/// What the lazy viewer reads from now on, until a `resync` (returned with the comments
/// before it) or the connection's end (`None` for the resync).
async fn read_until_resync(lazy: &mut Chat, prefix: &str) -> (Vec<String>, Option<Value>) {
    let mut comments = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for _ in 0..100_000 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(v) = next_json(&mut lazy.ws, left).await else { break };
        if v.get("close").is_some() {
            lazy.seen.push(v);
            return (comments, None);
        }
        if v["type"] == "resync" {
            return (comments, Some(v));
        }
        if v["type"] == "comment"
            && let Some(t) = v["comment"]["text"].as_str().filter(|t| t.starts_with(prefix))
        {
            comments.push(t.split(' ').next().unwrap_or_default().to_owned());
        }
    }
    (comments, None)
}

/// The `participant_left` the host got (or gets within `within`) for `who`.
async fn left_message(host: &mut Chat, who: &Chat, within: Duration) -> Value {
    let id = who.joined["participant"]["id"].clone();
    match host.seen.iter().position(|v| v["type"] == "participant_left" && v["participant"] == id) {
        Some(at) => host.seen.remove(at),
        None => host.expect_where("participant_left", within, |v| v["participant"] == id).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overflowed_queue_is_resynced_and_a_second_overflow_in_the_minute_is_cut() {
    common::init_tracing();
    // A write timeout far longer than the flood takes: here the queue overflows, nothing stalls.
    let server = signaling::Server::start(config(1, 120)).await.expect("server");
    let room = "busy";
    let mut host = Chat::join(&server, room, "host", Role::Host).await.unwrap();
    let mut fast = Chat::join(&server, room, "fast", Role::Viewer).await.unwrap();
    let mut lazy = lazy_viewer(&server, room, "lazy").await;

    // 3 000 comments (15 MB of messages) while the lazy viewer reads nothing.
    let n = 3000;
    flood(&mut host, &mut fast, "a", n).await;
    let (before, resync) = read_until_resync(&mut lazy, "a").await;
    let resync = resync.unwrap_or_else(|| panic!("a resync after {} comments; then {:?}", before.len(), lazy.seen.last()));
    println!("the lazy viewer read {} of {n} comments, then a resync", before.len());
    // What it got before the resync has no gap: a0, a1, … in order.
    for (i, c) in before.iter().enumerate() {
        assert_eq!(c, &format!("a{i}"), "comments before the resync are in order with no gap");
    }
    assert!(before.len() < n, "the queue overflowed: not every comment was written");
    // The resync is the room as it is now: the history ends with the last comment.
    let history = resync["chat"]["comments"].as_array().expect("history");
    assert_eq!(history.len(), 50, "chat.history comments");
    let last = history.last().and_then(|c| c["text"].as_str()).unwrap_or_default();
    assert!(last.starts_with(&format!("a{} ", n - 1)), "the history ends with the last comment: {last:.10}");
    assert_eq!(resync["participant"]["identity"], "lazy");
    assert_eq!(resync["room"]["state"], "live");
    let others: Vec<&str> = resync["participants"].as_array().unwrap().iter().filter_map(|p| p["identity"].as_str()).collect();
    assert!(others.contains(&"host") && others.contains(&"fast"), "{others:?}");

    // After the resync nothing is lost: the next comment arrives.
    host.send(json!({"type": "comment", "text": "after the resync"})).await;
    let after = lazy.expect_where("comment", T, |v| v["comment"]["text"] == "after the resync").await;
    assert_eq!(after["comment"]["identity"], "host");

    // A second overflow within the minute is one more than `max_resyncs_per_minute` (1): cut.
    flood(&mut host, &mut fast, "b", n).await;
    let (_, again) = read_until_resync(&mut lazy, "b").await;
    assert!(again.is_none(), "no second resync: {again:?}");
    assert_eq!(lazy.seen.last().map(|c| c["close"].clone()), Some(json!(4008)), "closed as too slow");
    // The others are still served.
    let left = left_message(&mut host, &lazy, T).await;
    assert!(left["reason"].as_str().is_some_and(|r| r.starts_with("too slow")), "{left}");
    host.send(json!({"type": "comment", "text": "still here"})).await;
    fast.expect_where("comment", T, |v| v["comment"]["text"] == "still here").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_is_cut_after_the_write_timeout() {
    common::init_tracing();
    let server = signaling::Server::start(config(3, 1)).await.expect("server");
    let room = "stalled";
    let mut host = Chat::join(&server, room, "host", Role::Host).await.unwrap();
    let mut fast = Chat::join(&server, room, "fast", Role::Viewer).await.unwrap();
    let mut lazy = lazy_viewer(&server, room, "lazy").await;
    let started = std::time::Instant::now();
    flood(&mut host, &mut fast, "s", 3000).await;
    // The lazy viewer reads nothing: the server's write to it waits 1 s, then it is cut.
    let left = left_message(&mut host, &lazy, Duration::from_secs(10)).await;
    println!("cut {:?} after the flood began: {}", started.elapsed(), left["reason"]);
    assert_eq!(left["reason"], "too slow: the client read nothing for 1 s");
    // Everyone else is still served.
    host.send(json!({"type": "comment", "text": "still here"})).await;
    fast.expect_where("comment", T, |v| v["comment"]["text"] == "still here").await;
    // The lazy viewer's connection ends (what it reads now is what was in flight, then the end).
    let (_, resync) = read_until_resync(&mut lazy, "s").await;
    assert!(resync.is_none(), "cut, not resynced");
    assert!(lazy.seen.last().is_some_and(|v| v.get("close").is_some()), "the connection ended");
    server.shutdown().await;
}
