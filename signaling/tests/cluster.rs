//! Many nodes (docs/deploy.md "Many nodes"): three `onair` processes on loopback share a Redis
//! and a PostgreSQL store, both started by the test. A live is placed on the node of its first
//! join; joins that reach the other nodes are sent there (`redirect`, close 4010), WHEP calls and
//! the server API's room routes are forwarded there; the registry holds each node's record; a node killed with SIGKILL drops out of the
//! registry by expiry and its live reopens — comments and all, from the shared store — on the
//! node its members reach next; a draining node places new lives elsewhere; a clean stop leaves
//! the registry at once. With the cascade on, viewers are served by the node they reach: an edge
//! killed sends its viewers elsewhere, a draining edge serves its viewers to the live's end.

mod common;

use common::pg::Pg;
use common::redis::Redis;
use futures_util::SinkExt;
use serde_json::{Value, json};
use signaling::auth::{Authenticator, Role};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

type Ws = common::RawWs;

const SECRET: &str = "cluster-test-secret";
const API_KEY: &str = "cluster-test-api-key-0123456789";
const WEBHOOK_SECRET: &str = "cluster-test-webhook-secret-0123";
/// Short heartbeats: a node not heard of for three (900 ms) is gone.
const HEARTBEAT_MS: u64 = 300;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Node {
    id: &'static str,
    child: tokio::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

async fn start(id: &'static str, redis: &str, store: &str) -> Node {
    start_with(id, redis, store, &[]).await
}

async fn start_with(id: &'static str, redis: &str, store: &str, env: &[(&str, &str)]) -> Node {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("onair-cluster-{id}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_onair"))
        .current_dir(&dir)
        .args(["--http-bind", &format!("127.0.0.1:{port}"), "--udp-bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"])
        .env("ONAIR_AUTH_SECRET", SECRET)
        .env("ONAIR_API_KEY", API_KEY)
        .env("ONAIR_COMMERCE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("ONAIR_RTMP_ENABLED", "false")
        .env("ONAIR_ARCHIVE_RECORD", "false")
        .env("ONAIR_DRAIN_MAX_SECS", "30")
        .env("ONAIR_STORE_URL", store)
        .env("ONAIR_REDIS_URL", redis)
        .env("ONAIR_NODE_ID", id)
        .env("ONAIR_CLUSTER_HEARTBEAT_MS", HEARTBEAT_MS.to_string())
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .spawn()
        .expect("onair starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "node {id} did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Node { id, child, port, dir }
}

fn token(room: &str, identity: &str, role: Role) -> String {
    Authenticator::new(SECRET, "HS256", 0).unwrap().mint(room, identity, None, role, 600).unwrap()
}

impl Node {
    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// Join at this node; the first reply (`joined`, `redirect` or `error`).
    async fn join(&self, room: &str, identity: &str, role: Role) -> (Ws, Value) {
        join_at(&self.ws_url(), &token(room, identity, role)).await
    }

    async fn post(&self, path: &str, bearer: &str, body: &str) -> (u16, String) {
        self.http("POST", path, bearer, "application/sdp", body).await
    }

    async fn http(&self, method: &str, path: &str, bearer: &str, content_type: &str, body: &str) -> (u16, String) {
        self.raw(method, path, &format!("Authorization: Bearer {bearer}\r\nContent-Type: {content_type}"), body).await
    }

    /// A payment provider's signed call.
    async fn payment(&self, body: &str) -> (u16, String) {
        let sig = signaling::live::commerce::payments::sign(
            WEBHOOK_SECRET.as_bytes(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64,
            body.as_bytes(),
        );
        self.raw("POST", "/api/v1/payments", &format!("Onair-Signature: {sig}\r\nContent-Type: application/json"), body).await
    }

    async fn raw(&self, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        let status = raw.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, raw)
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        assert!(std::process::Command::new("kill").args(["-s", sig, &pid]).status().unwrap().success());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn join_at(url: &str, token: &str) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    ws.send(Message::Text(json!({"type": "join", "token": token, "protocol": 1}).to_string().into())).await.unwrap();
    let first = next(&mut ws, "a reply to join").await;
    (ws, first)
}

/// The next message, or `{"close": code}`.
async fn next(ws: &mut Ws, what: &str) -> Value {
    common::next_json(ws, Duration::from_secs(5)).await.unwrap_or_else(|| panic!("{what}: nothing within 5 s"))
}

/// The next message of `kind` (others skipped).
async fn expect(ws: &mut Ws, kind: &str) -> Value {
    for _ in 0..50 {
        let v = next(ws, kind).await;
        assert!(v.get("close").is_none(), "closed while waiting for {kind}: {v}");
        if v["type"] == kind {
            return v;
        }
    }
    panic!("no {kind}");
}

/// A redirect to `to`, then the close 4010.
async fn assert_redirected(mut ws: Ws, reply: Value, to: &Node, room: &str) {
    assert_eq!(reply, json!({"type": "redirect", "url": to.ws_url(), "node": to.id, "room": room}), "sent to node {}", to.id);
    assert_eq!(next(&mut ws, "the close").await, json!({"close": 4010}));
}

async fn connect_redis(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.expect("redis connects")
}

async fn registered(conn: &mut redis::aio::MultiplexedConnection) -> Vec<Value> {
    let mut ids: Vec<String> = redis::cmd("SMEMBERS").arg("onair:nodes").query_async(conn).await.unwrap();
    ids.sort();
    let mut records = Vec::new();
    for id in ids {
        let raw: Option<String> = redis::cmd("GET").arg(format!("onair:node:{id}")).query_async(conn).await.unwrap();
        if let Some(r) = raw {
            records.push(serde_json::from_str(&r).unwrap());
        }
    }
    records
}

async fn owner(conn: &mut redis::aio::MultiplexedConnection, room: &str) -> Option<String> {
    redis::cmd("GET").arg(format!("onair:room:{room}")).query_async(conn).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_lives_on_one_node_joins_elsewhere_go_there_and_it_moves_when_its_node_dies() {
    common::init_tracing();
    let redis_server = Redis::start();
    let pg = Pg::start();
    let store = pg.database("onair_cluster").await;
    let (mut a, b, c) = (
        start("a", &redis_server.url, &store).await,
        start("b", &redis_server.url, &store).await,
        start("c", &redis_server.url, &store).await,
    );
    let mut conn = connect_redis(&redis_server.url).await;

    // The registry: every node with its URL, within a heartbeat or two.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut nodes = Vec::new();
    while nodes.len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        nodes = registered(&mut conn).await;
    }
    let urls: Vec<(String, String)> = nodes.iter().map(|n| (n["id"].as_str().unwrap().into(), n["url"].as_str().unwrap().into())).collect();
    let want: Vec<(String, String)> = [&a, &b, &c].iter().map(|n| (n.id.into(), format!("http://127.0.0.1:{}", n.port))).collect();
    assert_eq!(urls, want, "three nodes registered with their URLs");

    // The host's join places the live on node A; joins at B and C are sent there.
    let (mut host, joined) = a.join("launch", "host", Role::Host).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(owner(&mut conn, "launch").await.as_deref(), Some("a"));
    let (ws, reply) = b.join("launch", "viewer", Role::Viewer).await;
    assert_redirected(ws, reply, &a, "launch").await;
    let (ws, reply) = c.join("launch", "mod", Role::Moderator).await;
    assert_redirected(ws, reply, &a, "launch").await;
    // Following the redirect: the same token joins at A, and the room is shared.
    let (mut viewer, joined) = join_at(&a.ws_url(), &token("launch", "viewer", Role::Viewer)).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let (mut moderator, joined) = join_at(&a.ws_url(), &token("launch", "mod", Role::Moderator)).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let mut others: Vec<&str> = joined["participants"].as_array().unwrap().iter().filter_map(|p| p["identity"].as_str()).collect();
    others.sort();
    assert_eq!(others, ["host", "viewer"], "host, viewer and moderator in one room: {joined}");
    viewer.send(Message::Text(json!({"type": "comment", "text": "hello from node b"}).to_string().into())).await.unwrap();
    assert_eq!(expect(&mut host, "comment").await["comment"]["text"], "hello from node b");
    assert_eq!(expect(&mut moderator, "comment").await["comment"]["text"], "hello from node b");
    // WHEP (a standard player) at C: forwarded to A, which answers (here: the offer is no SDP).
    let (status, raw) = c.post("/whep/launch", &token("launch", "player", Role::Viewer), "v=0\r\n").await;
    assert_eq!(status, 422, "{raw}");
    assert!(raw.to_ascii_lowercase().contains("x-onair-node: a\r\n"), "answered by node a: {raw}");
    // The server API's room routes at C are answered by A (the live's node), with the
    // caller's credential checked there.
    let (status, raw) = c.http("GET", "/api/v1/rooms/launch/stream-keys", API_KEY, "application/json", "").await;
    assert_eq!(status, 200, "{raw}");
    assert!(raw.to_ascii_lowercase().contains("x-onair-node: a\r\n"), "answered by node a: {raw}");
    let (status, raw) = c.http("GET", "/api/v1/rooms/launch/stream-keys", "not-the-key-0123456789", "application/json", "").await;
    assert_eq!(status, 401, "{raw}");
    // The payment provider's webhook reaches C: the badge is granted on A, where the viewer is.
    let (status, raw) = c.payment(r#"{"type":"payment","id":"pay_c1","room":"launch","identity":"viewer","tier":1}"#).await;
    assert_eq!(status, 201, "{raw}");
    assert!(raw.to_ascii_lowercase().contains("x-onair-node: a\r\n"), "granted by node a: {raw}");
    assert_eq!(expect(&mut viewer, "badge").await["identity"], "viewer");
    // The refund too: the badge goes on A.
    let (status, raw) = c.payment(r#"{"type":"refund","id":"ref_c1","payment":"pay_c1"}"#).await;
    assert_eq!(status, 200, "{raw}");
    assert!(raw.to_ascii_lowercase().contains("x-onair-node: a\r\n"), "refunded by node a: {raw}");
    let gone = expect(&mut viewer, "badge").await;
    assert_eq!((gone["identity"].as_str(), gone["badge"].is_null()), (Some("viewer"), true), "{gone}");
    // A's record counts its members.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut load = 0;
    while load < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        load = registered(&mut conn).await.iter().find(|n| n["id"] == "a").and_then(|n| n["participants"].as_u64()).unwrap_or(0);
    }
    assert_eq!(load, 3, "node a's record says 3 participants");

    // Node A dies. Its members come back through B (the page goes back to its own server when
    // the node it was sent to does not answer): once A's record expired, B takes the live over,
    // and the shared store gives it the same live — the comment is there.
    a.child.start_kill().unwrap();
    let killed = Instant::now();
    let _ = a.child.wait().await;
    drop((host, viewer, moderator));
    let mut moved = None;
    while moved.is_none() && killed.elapsed() < Duration::from_secs(10) {
        let (ws, reply) = b.join("launch", "viewer", Role::Viewer).await;
        match reply["type"].as_str() {
            Some("joined") => moved = Some((killed.elapsed(), ws, reply)),
            Some("redirect") => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => panic!("while node a is gone: {reply}"),
        }
    }
    let (took, mut viewer, joined) = moved.expect("the live moves to node b");
    println!("node a killed: its live reopened on node b {} ms later (heartbeat {HEARTBEAT_MS} ms)", took.as_millis());
    assert!(took < Duration::from_secs(5), "moved in {took:?}");
    assert_eq!(owner(&mut conn, "launch").await.as_deref(), Some("b"));
    let comments: Vec<&str> = joined["chat"]["comments"].as_array().unwrap().iter().filter_map(|c| c["text"].as_str()).collect();
    assert_eq!(comments, ["hello from node b"], "the same live, from the shared store");
    assert!(!registered(&mut conn).await.iter().any(|n| n["id"] == "a"), "node a is gone from the registry");
    // C now sends the room's joins to B.
    let (ws, reply) = c.join("launch", "host", Role::Host).await;
    assert_redirected(ws, reply, &b, "launch").await;
    let (mut host, joined) = join_at(&b.ws_url(), &token("launch", "host", Role::Host)).await;
    assert_eq!(joined["type"], "joined", "{joined}");

    // B drains (its live goes on): a new live whose first join reaches B is placed on C.
    b.signal("TERM");
    assert_eq!(expect(&mut viewer, "server_draining").await["type"], "server_draining");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !registered(&mut conn).await.iter().any(|n| n["id"] == "b" && n["draining"] == true) {
        assert!(Instant::now() < deadline, "node b's record says it drains");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ws, reply) = b.join("encore", "host2", Role::Host).await;
    assert_redirected(ws, reply, &c, "encore").await;
    let (mut host2, joined) = join_at(&c.ws_url(), &token("encore", "host2", Role::Host)).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(owner(&mut conn, "encore").await.as_deref(), Some("c"));
    // The rooms of the whole cluster, from any node, each with its node.
    let (status, raw) = c.http("GET", "/api/v1/rooms", API_KEY, "application/json", "").await;
    assert_eq!(status, 200, "{raw}");
    let listed: Value = serde_json::from_str(raw.rsplit("\r\n\r\n").next().unwrap_or_default()).unwrap_or(Value::Null);
    let placed: Vec<(&str, &str)> =
        listed["rooms"].as_array().unwrap().iter().filter_map(|r| Some((r["room"].as_str()?, r["node"].as_str()?))).collect();
    assert_eq!(placed, [("encore", "c"), ("launch", "b")], "{listed}");
    assert_eq!(listed["unreachable"], json!([]), "{listed}");
    // The API at B (draining) ends C's live: forwarded, and C's host hears it.
    let (status, raw) = b.http("POST", "/api/v1/rooms/encore/end", API_KEY, "application/json", "").await;
    assert_eq!(status, 200, "{raw}");
    assert!(raw.to_ascii_lowercase().contains("x-onair-node: c\r\n"), "answered by node c: {raw}");
    assert_eq!(expect(&mut host2, "room_ended").await["type"], "room_ended");
    // The live on B ends: B exits 0, and leaves the registry and its claims at once (not by
    // expiry: checked right after the exit, before three heartbeats could pass).
    host.send(Message::Text(json!({"type": "end_room"}).to_string().into())).await.unwrap();
    let mut b = b;
    let status = tokio::time::timeout(Duration::from_secs(15), b.child.wait()).await.expect("b exits").unwrap();
    assert!(status.success(), "{status:?}");
    let gone: Option<String> = redis::cmd("GET").arg("onair:node:b").query_async(&mut conn).await.unwrap();
    assert_eq!(gone, None, "a clean stop deletes the node's record");
    assert_eq!(owner(&mut conn, "launch").await, None, "and gives up its rooms");
}

/// Video packets a media viewer got.
fn video(c: &common::Client) -> u64 {
    c.media_snapshot().values().filter(|t| t.kind == "video").map(|t| t.packets).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_cascade_an_edge_killed_loses_no_viewer_for_long_and_a_draining_edge_cuts_none() {
    common::init_tracing();
    let redis_server = Redis::start();
    let cascade = [("ONAIR_CLUSTER_SECRET", "the cluster test's cascade secret, 32+ bytes")];
    let (a, b, mut c) = (
        start_with("ea", &redis_server.url, "sqlite::memory:", &cascade).await,
        start_with("eb", &redis_server.url, "sqlite::memory:", &cascade).await,
        start_with("ec", &redis_server.url, "sqlite::memory:", &cascade).await,
    );
    let room = "edges";
    let mut host = common::join_url(&a.ws_url(), &token(room, "host", Role::Host)).await.expect("host joins A");
    host.publish_simulcast([150_000, 400_000, 1_000_000]).await.expect("simulcast publish");
    let vb = common::join_url(&b.ws_url(), &token(room, "vb", Role::Viewer)).await.expect("viewer served by B");
    let mut vc = common::join_url(&c.ws_url(), &token(room, "vc", Role::Viewer)).await.expect("viewer served by C");
    let flowing = common::eventually(Duration::from_secs(15), || video(&vb) > 100 && video(&vc) > 100).await;
    assert!(flowing, "viewers on both edges get the video: B {}, C {}", video(&vb), video(&vc));

    // B dies. Its viewer's socket breaks; it joins again through the load balancer, which now
    // sends it to C: the time from the kill to video flowing again there.
    let killed = Instant::now();
    b.signal("KILL");
    let (before_c, mut moved) = (video(&vc), None);
    while killed.elapsed() < Duration::from_secs(10) {
        match common::join_url(&c.ws_url(), &token(room, "vb", Role::Viewer)).await {
            Ok(v) => {
                if common::eventually(Duration::from_secs(5), || video(&v) > 20).await {
                    moved = Some((killed.elapsed(), v));
                    break;
                }
            }
            Err(e) => panic!("the viewer's new join at C was refused: {e}"),
        }
    }
    let (took, vb2) = moved.expect("the viewer of the dead edge watches again through C");
    println!("edge B killed: its viewer got video again through C {} ms later", took.as_millis());
    assert!(took < Duration::from_secs(5), "moved within 5 s: {took:?}");
    assert!(video(&vc) > before_c, "C's own viewer never stopped");
    drop(vb);

    // C drains (SIGTERM) with its viewers: they keep watching; a new viewer reaching it is sent
    // to the live's node; C exits 0 once the live ended.
    c.signal("TERM");
    let (ws, first) = c.join(room, "late", Role::Viewer).await;
    assert_eq!(first["type"], "redirect", "a draining edge sends new viewers to the live's node: {first}");
    assert_eq!(first["node"], "ea");
    drop(ws);
    let at_term = (video(&vc), video(&vb2));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = (video(&vc), video(&vb2));
    println!("draining edge C: its viewers got {} and {} video packets in the 2 s after SIGTERM", after.0 - at_term.0, after.1 - at_term.1);
    assert!(after.0 > at_term.0 + 50 && after.1 > at_term.1 + 50, "no viewer of the draining edge is cut: {at_term:?} → {after:?}");
    assert!(c.child.try_wait().unwrap().is_none(), "C waits for the live to end");
    host.send(json!({"type": "end_room"}));
    assert!(vc.wait_for("room_ended", Duration::from_secs(5)).await.is_some(), "the end reaches the draining edge's viewer");
    let status = tokio::time::timeout(Duration::from_secs(20), c.child.wait()).await.expect("c exits once the live ended").unwrap();
    assert!(status.success(), "C drained and exited 0: {status:?}");
    drop(a);
}
