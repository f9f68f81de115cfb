//! Draining the `onair` binary as an orchestrator stops it: SIGTERM → readiness false, members
//! told, new joins refused with `draining` (close 1012), the running live goes on, and the process
//! exits 0 once the live ends; a second SIGTERM exits at once, also with 0.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use signaling::auth::{Authenticator, Role};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const SECRET: &str = "drain-test-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Node {
    child: tokio::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

async fn start(name: &str) -> Node {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("onair-drain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_onair"))
        .current_dir(&dir)
        .args(["--http-bind", &format!("127.0.0.1:{port}"), "--udp-bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"])
        .env("ONAIR_AUTH_SECRET", SECRET)
        .env("ONAIR_RTMP_ENABLED", "false")
        .env("ONAIR_DRAIN_MAX_SECS", "60")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("onair starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "onair did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Node { child, port, dir }
}

impl Node {
    async fn get(&self, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        let status = raw.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, raw.rsplit("\r\n\r\n").next().unwrap_or_default().to_owned())
    }

    async fn join(&self, room: &str, identity: &str, role: Role) -> (Ws, Value) {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", self.port)).await.expect("ws");
        let token = Authenticator::new(SECRET, "HS256", 0).unwrap().mint(room, identity, None, role, 60).unwrap();
        ws.send(Message::Text(json!({"type": "join", "token": token, "protocol": 1}).to_string().into())).await.unwrap();
        let first = next(&mut ws, "a reply to join").await;
        (ws, first)
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        assert!(std::process::Command::new("kill").args(["-s", sig, &pid]).status().unwrap().success());
    }

    /// The exit status within `within`.
    async fn exit(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait()).await.expect("onair exits in time").expect("exit status")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn next(ws: &mut Ws, what: &str) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).unwrap_or(Value::Null),
            Ok(Some(Ok(Message::Close(c)))) => return json!({"type": "close", "code": c.map(|c| u16::from(c.code))}),
            Ok(Some(Ok(_))) => continue,
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// The next message of `kind` (others skipped).
async fn expect(ws: &mut Ws, kind: &str) -> Value {
    for _ in 0..50 {
        let v = next(ws, kind).await;
        if v["type"] == kind {
            return v;
        }
    }
    panic!("no {kind}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_node_and_it_exits_when_the_live_ends() {
    let mut node = start("end").await;
    let (mut host, joined) = node.join("drained", "host", Role::Host).await;
    assert_eq!(joined["type"], "joined");
    let (mut viewer, _) = node.join("drained", "viewer", Role::Viewer).await;
    assert_eq!(node.get("/readyz").await, (200, "ready".into()));

    node.signal("TERM");
    let told = expect(&mut viewer, "server_draining").await;
    assert_eq!(told["ends_in_secs"], 60);
    assert_eq!(expect(&mut host, "server_draining").await["ends_in_secs"], 60);
    assert_eq!(node.get("/readyz").await, (503, "draining".into()), "readiness turns false");
    assert_eq!(node.get("/healthz").await.0, 200, "the process is alive");
    // Newcomers are turned away, to this live too; the live itself goes on.
    let (mut late, refused) = node.join("drained", "late", Role::Viewer).await;
    assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("draining")));
    assert_eq!(next(&mut late, "the close").await, json!({"type": "close", "code": 1012}));
    host.send(Message::Text(json!({"type": "comment", "text": "still live"}).to_string().into())).await.unwrap();
    assert_eq!(expect(&mut viewer, "comment").await["comment"]["text"], "still live");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(node.child.try_wait().unwrap().is_none(), "it waits while the live runs");

    // The host ends the live: the node has nothing left and exits 0.
    host.send(Message::Text(json!({"type": "end_room"}).to_string().into())).await.unwrap();
    expect(&mut viewer, "room_ended").await;
    let began = Instant::now();
    let status = node.exit(Duration::from_secs(10)).await;
    eprintln!("exited {status:?} {:?} after the live ended", began.elapsed());
    assert!(status.success(), "exit 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_stops_at_once() {
    let mut node = start("twice").await;
    let (mut host, _) = node.join("held", "host", Role::Host).await;
    node.signal("TERM");
    expect(&mut host, "server_draining").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(node.child.try_wait().unwrap().is_none(), "draining, with a live on");
    let began = Instant::now();
    node.signal("TERM");
    let status = node.exit(Duration::from_secs(8)).await;
    eprintln!("second SIGTERM: exited {status:?} after {:?}", began.elapsed());
    assert!(status.success(), "exit 0");
    assert!(began.elapsed() < Duration::from_secs(8));
}
