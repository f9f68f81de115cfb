//! What operators see, with real peers and real sockets: `/metrics` on the admin listener moves
//! as media flows and members come and go (parsed by a Prometheus text parser, and by `promtool
//! check metrics` where installed); players' QoE reports become the live's KPIs on the
//! dashboard's API and in the store when the live ends; problem reports land with their QoE.

mod common;
use common::chat_client::Chat;
use common::*;
use serde_json::{Value, json};
use signaling::auth::Role;
use std::collections::HashMap;
use std::time::Duration;

/// Scrape the admin listener's `/metrics`: every sample by name and labels.
async fn scrape(server: &signaling::Server) -> (String, HashMap<String, f64>) {
    let admin = server.admin_addr.expect("the admin listener runs");
    let mut s = tokio::net::TcpStream::connect(admin).await.expect("connect admin");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { unchunk(body) } else { body.to_owned() };
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("the exposition parses");
    let mut samples = HashMap::new();
    for s in &parsed.samples {
        let mut labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let key = if labels.is_empty() { s.metric.clone() } else { format!("{}{{{}}}", s.metric, labels.join(",")) };
        let v = match &s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        };
        samples.insert(key, v);
    }
    (body, samples)
}

fn unchunk(b: &str) -> String {
    let mut out = String::new();
    let mut rest = b;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// `promtool check metrics` on the exposition, where promtool is installed (test.sh installs it).
fn promtool(body: &str) {
    use std::io::Write;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool not installed: skipped its check (test.sh installs it)");
        return;
    };
    child.stdin.take().expect("stdin").write_all(body.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("promtool runs");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Lint findings (a missing HELP, a unit-less name) fail it too: the exposition is clean.
    assert!(out.status.success(), "promtool check metrics: {said}");
    eprintln!("promtool check metrics: {}", if said.trim().is_empty() { "ok" } else { said.trim() });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_move_as_media_flows_and_viewers_come_and_go() {
    let server = start_server().await;
    let room = "metered";
    let (_, before) = scrape(&server).await;
    let mut host = join(&server, &token(&server, room, "host", Role::Host)).await.unwrap();
    host.publish().await.expect("host publishes");
    let viewer = join(&server, &token(&server, room, "viewer", Role::Viewer)).await.unwrap();
    let flowing = eventually(Duration::from_secs(20), || {
        let m = viewer.media_snapshot();
        m.len() == 2 && m.values().all(|t| t.packets >= 50)
    })
    .await;
    assert!(flowing, "the viewer receives both tracks");
    let (body, a) = scrape(&server).await;
    promtool(&body);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, b) = scrape(&server).await;
    for name in
        ["onair_rtp_packets_received_total", "onair_rtp_packets_sent_total", "onair_rtp_bytes_sent_total", "onair_rtp_bytes_received_total"]
    {
        eprintln!("{name}: {} -> {}", get(&a, name), get(&b, name));
        assert!(get(&b, name) > get(&a, name), "{name} grows while media flows");
    }
    assert!(get(&b, "onair_forwarding_delay_seconds_count") > get(&a, "onair_forwarding_delay_seconds_count"));
    // The parser folds the buckets into one histogram value (its largest, the +Inf bucket).
    assert_eq!(get(&b, "onair_forwarding_delay_seconds"), get(&b, "onair_forwarding_delay_seconds_count"));
    let mean = get(&b, "onair_forwarding_delay_seconds_sum") / get(&b, "onair_forwarding_delay_seconds_count");
    eprintln!("forwarding delay: {} packets, mean {:.0} µs", get(&b, "onair_forwarding_delay_seconds_count"), mean * 1e6);
    assert!(get(&b, "onair_bandwidth_estimate_bps_count") > 0.0, "viewers' estimates are sampled");
    let joins = |m: &HashMap<String, f64>, stage: &str| get(m, &format!("onair_joins_total{{reason=,stage={stage}}}"));
    assert!(joins(&b, "signal_connected") >= joins(&before, "signal_connected") + 2.0, "two joins");
    assert!(joins(&b, "media_connected") > joins(&before, "media_connected"), "the viewer's media connected");
    assert!(get(&b, "onair_ws_messages_total{type=publish}") >= 1.0);
    assert!(get(&b, "onair_participants{role=viewer}") >= 1.0);
    assert!(get(&b, "onair_rooms") >= 1.0 && get(&b, "onair_lives_on_air") >= 1.0);
    assert!(get(&b, "onair_tracks") >= 2.0);
    assert!(get(&b, "onair_process_cpu_seconds_total") > 0.0 && get(&b, "onair_process_resident_memory_bytes") > 1e6);
    assert!(get(&b, "onair_node_cores") >= 1.0);

    // The viewer leaves: the gauge follows; a refused join is counted by its reason.
    viewer.close().await;
    let mut gone = false;
    for _ in 0..50 {
        let (_, m) = scrape(&server).await;
        if get(&m, "onair_participants{role=viewer}") == get(&before, "onair_participants{role=viewer}") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the viewer gauge goes back down");
    let forged =
        signaling::auth::Authenticator::new("another-secret", "HS256", 0).unwrap().mint(room, "x", None, Role::Viewer, 60).unwrap();
    assert!(join(&server, &forged).await.is_err());
    let (_, c) = scrape(&server).await;
    assert!(get(&c, "onair_joins_total{reason=token_bad_signature,stage=failed}") >= 1.0, "failed joins by reason");
    host.close().await;
    server.shutdown().await;
}

fn qoe(first: Option<u64>, freezes: u64, freeze_ms: u64, watch_ms: u64, recoveries: &[u64]) -> Value {
    json!({"type": "qoe", "client": "browser", "first_frame_ms": first, "frames_decoded": watch_ms / 33, "freezes": freezes,
           "freeze_ms": freeze_ms, "recoveries_ms": recoveries, "layer": "h", "watch_ms": watch_ms})
}

async fn overview(server: &signaling::Server, token: &str) -> common::http::Reply {
    let admin = server.admin_addr.expect("admin listener");
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET /admin/api/overview HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { unchunk(body) } else { body.to_owned() };
    common::http::Reply { status, headers: Vec::new(), body: body.into_bytes() }
}

const ADMIN: &str = "admin-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qoe_reports_become_the_lives_kpis_and_problem_reports_land() {
    init_tracing();
    let mut c = test_config();
    c.admin.token = ADMIN.into();
    c.room.empty_timeout_secs = 1;
    let server = signaling::Server::start(c).await.expect("server");
    let room = "kpis";
    let mut host = Chat::join(&server, room, "host", Role::Host).await.unwrap();
    let mut a = Chat::join(&server, room, "a", Role::Viewer).await.unwrap();
    let mut b = Chat::join(&server, room, "b", Role::Viewer).await.unwrap();
    let mut f = Chat::join(&server, room, "f", Role::Viewer).await.unwrap();
    a.send(qoe(Some(700), 0, 0, 10_000, &[])).await;
    b.send(qoe(Some(2_600), 0, 0, 10_000, &[])).await;
    f.send(qoe(None, 0, 0, 12_000, &[])).await;
    // Too soon: refused. Bad values: refused.
    a.refused(qoe(Some(700), 0, 0, 11_000, &[]), "rate_limited").await;
    b.refused(json!({"type": "qoe", "watch_ms": 1, "recoveries_ms": vec![1; 21]}), "bad_message").await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    a.send(qoe(Some(700), 2, 3_000, 30_000, &[1_000, 2_000])).await;

    assert_eq!(overview(&server, "wrong-token-0123456789").await.status, 401);
    assert_eq!(overview(&server, "").await.status, 401);
    let mut live = Value::Null;
    for _ in 0..50 {
        let o = overview(&server, ADMIN).await;
        assert_eq!(o.status, 200);
        live = o.json()["lives"].as_array().and_then(|l| l.iter().find(|l| l["room"] == room).cloned()).unwrap_or(Value::Null);
        if live["kpis"]["freezes"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let k = &live["kpis"];
    eprintln!("kpis: {k}");
    assert_eq!((k["viewers"].as_u64(), k["startups"].as_u64()), (Some(3), Some(3)));
    assert!((k["startup_reliability"].as_f64().unwrap_or(0.0) - 1.0 / 3.0).abs() < 1e-9, "one good startup of three");
    assert_eq!((k["first_frame_p50_ms"].as_u64(), k["first_frame_p95_ms"].as_u64()), (Some(700), Some(2_600)));
    assert!((k["freeze_ratio"].as_f64().unwrap_or(0.0) - 3_000.0 / 52_000.0).abs() < 1e-9);
    assert_eq!((k["recovery_p50_ms"].as_u64(), k["recovery_p95_ms"].as_u64()), (Some(1_000), Some(2_000)));
    assert_eq!(k["cohorts"][0]["client"], "browser");
    let alerts: Vec<_> = live["alerts"].as_array().cloned().unwrap_or_default().iter().map(|a| a["code"].clone()).collect();
    assert!(alerts.contains(&json!("startup_reliability")) && alerts.contains(&json!("freeze_ratio")), "{alerts:?}");
    assert_eq!(live["viewers"], 3);

    // Report a problem: stored with the reporter's last QoE and the page's context.
    a.send(json!({"type": "report_problem", "tag": "buffering", "text": "it stutters", "context": {"user_agent": "test", "viewport": "360x740"}})).await;
    let id = a.expect("problem_reported").await["id"].as_i64().expect("an id");
    a.refused(json!({"type": "report_problem", "tag": "billing"}), "bad_message").await;
    a.refused(json!({"type": "report_problem", "tag": "audio", "context": "not an object"}), "bad_message").await;
    a.refused(json!({"type": "report_problem", "tag": "audio", "context": {"x": "y".repeat(3000)}}), "bad_message").await;
    for _ in 0..4 {
        a.send(json!({"type": "report_problem", "tag": "audio"})).await;
        a.expect("problem_reported").await;
    }
    a.refused(json!({"type": "report_problem", "tag": "audio"}), "rate_limited").await;
    let o = overview(&server, ADMIN).await.json();
    assert_eq!(o["problems"]["by_tag"]["buffering"], 1);
    assert_eq!(o["problems"]["by_tag"]["audio"], 4);
    let p = o["problems"]["recent"].as_array().and_then(|r| r.iter().find(|p| p["id"] == id).cloned()).expect("the report is listed");
    assert_eq!(
        (p["text"].as_str(), p["qoe"]["freezes"].as_u64(), p["context"]["viewport"].as_str()),
        (Some("it stutters"), Some(2), Some("360x740"))
    );
    assert!(o["node"]["rss_bytes"].as_u64().unwrap_or(0) > 0);

    // The live ends: its KPIs are kept with it.
    let live_id = live["live_id"].as_str().unwrap_or_default().to_owned();
    host.send(json!({"type": "end_room"})).await;
    host.expect("room_ended").await;
    drop((host, a, b, f));
    let mut kept = Value::Null;
    for _ in 0..60 {
        let o = overview(&server, ADMIN).await.json();
        if let Some(p) = o["past"].as_array().and_then(|p| p.iter().find(|l| l["live_id"] == live_id.as_str()).cloned()) {
            kept = p;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kept["kpis"]["freezes"], 2, "the ended live's KPIs: {kept}");
    assert_eq!(kept["kpis"]["first_frame_p95_ms"], 2_600);
    let (_, m) = scrape(&server).await;
    assert!(
        get(&m, "onair_qoe_startups_total{client=browser,outcome=failed,profile=standard}") >= 1.0,
        "{:?}",
        m.keys().filter(|k| k.contains("qoe")).collect::<Vec<_>>()
    );
    assert!(get(&m, "onair_problem_reports_total{tag=buffering}") >= 1.0);
    // In seconds: 3 s frozen of 52 s watched (30 + 10 + 12), the same ratio as the KPI.
    assert_eq!(get(&m, "onair_qoe_freeze_seconds_total{client=browser,profile=standard}"), 3.0);
    assert_eq!(get(&m, "onair_qoe_watch_seconds_total{client=browser,profile=standard}"), 52.0);
    // Registered at 0 from the start: the alerts see the first increment of every series.
    assert!(m.contains_key("onair_qoe_startups_total{client=loadtest,outcome=ok,profile=continuity}"));
    assert!(m.contains_key("onair_publishers_lost_total"));
    server.shutdown().await;
}
