//! Scheduled lives and outgoing webhooks over real HTTP on loopback: every route of the
//! schedule API with its refusals (bad key, wrong role, a start in the past or too far ahead,
//! an oversized or non-image banner, unknown ids); a webhook receiver (a real HTTP server) that
//! gets every event with a valid Standard Webhooks signature, fails twice and gets the event on
//! the third try; reminders before and at the start; the delivery log; a delivery that waits
//! through a restart.

mod common;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::chat_client::Chat;
use common::http::{api, request};
use common::*;
use serde_json::{Value, json};
use signaling::auth::Role;
use signaling::hooks::sign;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "schedule-test-key-0123456789";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    id: String,
    timestamp: i64,
    signature: String,
    body: Vec<u8>,
    json: Value,
}

/// A webhook receiver on loopback: records every request; answers 500 to the first
/// `fail_first` attempts of each message whose type is in `flaky`, 410 to a message whose
/// data says `"answer": "gone"`, 204 otherwise.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    flaky: Arc<Mutex<Vec<String>>>,
    fail_first: usize,
}

impl Receiver {
    async fn start(fail_first: usize, flaky: &[&str], addr: SocketAddr) -> (Receiver, SocketAddr, tokio::task::JoinHandle<()>) {
        let me = Receiver { fail_first, flaky: Arc::new(Mutex::new(flaky.iter().map(|s| s.to_string()).collect())), ..Default::default() };
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        let state = me.clone();
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    let got = Got {
                        id: h("webhook-id"),
                        timestamp: h("webhook-timestamp").parse().unwrap_or(0),
                        signature: h("webhook-signature"),
                        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        body: body.to_vec(),
                    };
                    let kind = got.json["type"].as_str().unwrap_or_default().to_owned();
                    let mut all = state.got.lock().unwrap();
                    let tries = all.iter().filter(|g| g.id == got.id).count();
                    all.push(got);
                    if all.last().is_some_and(|g| g.json["data"]["answer"] == "gone") {
                        StatusCode::GONE
                    } else if tries < state.fail_first && state.flaky.lock().unwrap().contains(&kind) {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (me, addr, task)
    }

    /// Wait (≤ 10 s) until message `id` was received `n` times.
    async fn attempts(&self, id: &str, n: usize) -> Vec<Got> {
        for _ in 0..200 {
            let got: Vec<Got> = self.all().into_iter().filter(|g| g.id == id).collect();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{id} was not received {n} times within 10 s");
    }

    fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Wait (≤ `within`) for a request of type `kind` matching `pred`.
    async fn wait(&self, kind: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Got {
        let end = Instant::now() + within;
        loop {
            if let Some(g) = self.all().into_iter().find(|g| g.json["type"] == kind && pred(&g.json["data"])) {
                return g;
            }
            assert!(
                Instant::now() < end,
                "no {kind} webhook within {within:?}; got {:?}",
                self.all().iter().map(|g| g.json["type"].clone()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn config(hook: Option<SocketAddr>) -> signaling::config::Config {
    let mut c = test_config();
    c.api.key = KEY.into();
    c.schedule.max_per_room = 3;
    c.schedule.max_banner_bytes = 4096;
    if let Some(addr) = hook {
        c.webhooks.url = format!("http://{addr}/hooks");
        c.webhooks.secret = SECRET.into();
        c.webhooks.retry_delays_secs = vec![0.2, 0.2, 0.2];
        c.webhooks.timeout_secs = 2;
        c.webhooks.events = signaling::config::WEBHOOK_EVENTS.iter().map(|e| e.to_string()).collect();
    }
    c
}

/// Every request the receiver got verifies with the secret (Standard Webhooks), and a changed
/// body, id or timestamp does not.
fn all_signed(got: &[Got]) {
    let key = sign::key(SECRET).unwrap();
    assert!(!got.is_empty());
    for g in got {
        assert!(g.id.starts_with("msg_"), "{g:?}");
        assert_eq!(sign::verify(&key, &g.id, g.timestamp, &g.body, &g.signature, now_secs(), 300), Ok(()), "{g:?}");
        let mut forged = g.body.clone();
        forged.push(b' ');
        assert_eq!(sign::verify(&key, &g.id, g.timestamp, &forged, &g.signature, now_secs(), 300), Err(sign::Refusal::BadSignature));
        assert_eq!(sign::verify(&key, "msg_other", g.timestamp, &g.body, &g.signature, now_secs(), 300), Err(sign::Refusal::BadSignature));
        assert_eq!(sign::verify(&key, &g.id, g.timestamp - 1, &g.body, &g.signature, now_secs(), 300), Err(sign::Refusal::BadSignature));
        assert_eq!(sign::verify(&key, &g.id, g.timestamp, &g.body, &g.signature, now_secs() + 3600, 300), Err(sign::Refusal::Stale));
        assert!(g.json["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{}", g.json);
    }
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\xff\xff?\0\x05\xfe\x02\xfe\xa75\x81\x84\0\0\0\0IEND\xaeB`\x82";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_api_and_its_refusals() {
    init_tracing();
    let server = signaling::Server::start(config(None)).await.expect("server");
    let r = "sched-room";
    let host = token(&server, r, "host", Role::Host);
    let moderator = token(&server, r, "mod", Role::Moderator);
    let viewer = token(&server, r, "vic", Role::Viewer);
    let other_host = token(&server, "elsewhere", "host", Role::Host);
    let start = now_secs() + 3600;
    let body = |title: &str, at: i64| json!({"room": r, "title": title, "description": "Line one\n\nLine two", "starts_at": at});

    // Create: the key and the room's host; a moderator, a viewer, another room's host, no or a
    // wrong key may not.
    let by_key = api(&server, "POST", "/api/v1/schedules", KEY, Some(body("Spring drop", start))).await;
    assert_eq!(by_key.status, 201, "{}", by_key.json());
    let s = by_key.json();
    let id = s["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (s["state"].as_str(), s["starts_at"].as_i64(), s["description"].as_str()),
        (Some("scheduled"), Some(start), Some("Line one\n\nLine two"))
    );
    assert_eq!(s["page_url"], format!("/upcoming/{id}"));
    let by_host = api(&server, "POST", "/api/v1/schedules", &host, Some(body("Q&A", start + 60))).await;
    assert_eq!(by_host.status, 201, "{}", by_host.json());
    for (who, status, code) in [
        (moderator.as_str(), 403, "not_allowed"),
        (viewer.as_str(), 403, "not_allowed"),
        (other_host.as_str(), 403, "token_wrong_room"),
        ("not-the-key-and-not-a-token", 401, "token_malformed"),
        ("", 401, "token_missing"),
    ] {
        let reply = api(&server, "POST", "/api/v1/schedules", who, Some(body("x", start))).await;
        assert_eq!((reply.status, reply.code().as_str()), (status, code), "{who}");
    }
    // Bad bodies.
    for (bad, status, code) in [
        (body("Past", now_secs() - 10), 422, "bad_time"),
        (body("Now", now_secs()), 422, "bad_time"),
        (body("Too far", now_secs() + 91 * 86_400), 422, "bad_time"),
        (body("", start), 400, "bad_message"),
        (body("two\nlines", start), 400, "bad_message"),
        (body(&"t".repeat(121), start), 400, "bad_message"),
        (json!({"room": r, "title": "x", "starts_at": start, "profile": "nope"}), 400, "bad_message"),
        (json!({"room": r, "title": "x", "starts_at": start, "extra": 1}), 400, "bad_message"),
        (json!({"room": r, "title": "x"}), 400, "bad_message"),
        (json!({"room": "", "title": "x", "starts_at": start}), 400, "bad_message"),
        (json!({"room": r, "title": "x", "starts_at": start, "description": "x".repeat(70 * 1024)}), 413, "message_too_large"),
    ] {
        let reply = api(&server, "POST", "/api/v1/schedules", KEY, Some(bad.clone())).await;
        assert_eq!((reply.status, reply.code().as_str()), (status, code), "{bad}");
    }
    // The room's limit of upcoming lives (3 in this test).
    assert_eq!(api(&server, "POST", "/api/v1/schedules", KEY, Some(body("Third", start + 120))).await.status, 201);
    let over = api(&server, "POST", "/api/v1/schedules", KEY, Some(body("Fourth", start + 180))).await;
    assert_eq!((over.status, over.code().as_str()), (409, "conflict"));

    // Read: anyone reads one and a room's upcoming list; every room's and past ones need more.
    let public = api(&server, "GET", &format!("/api/v1/schedules/{id}"), "", None).await;
    assert_eq!((public.status, public.json()["title"].as_str()), (200, Some("Spring drop")));
    assert!(public.json().get("subscribers").is_none(), "the public view names no subscribers");
    assert_eq!(api(&server, "GET", "/api/v1/schedules/s_404", "", None).await.status, 404);
    let listed = api(&server, "GET", &format!("/api/v1/schedules?room={r}"), "", None).await;
    let titles: Vec<String> =
        listed.json()["schedules"].as_array().unwrap().iter().map(|s| s["title"].as_str().unwrap().to_owned()).collect();
    assert_eq!(titles, ["Spring drop", "Q&A", "Third"], "soonest first");
    assert_eq!(api(&server, "GET", "/api/v1/schedules", "", None).await.status, 401);
    assert_eq!(api(&server, "GET", "/api/v1/schedules", &host, None).await.code(), "not_allowed");
    assert_eq!(api(&server, "GET", "/api/v1/schedules", KEY, None).await.json()["schedules"].as_array().map(Vec::len), Some(3));
    assert_eq!(api(&server, "GET", &format!("/api/v1/schedules?room={r}&state=all"), &viewer, None).await.code(), "not_allowed");
    assert_eq!(api(&server, "GET", &format!("/api/v1/schedules?room={r}&state=all"), &host, None).await.status, 200);
    assert_eq!(api(&server, "GET", &format!("/api/v1/schedules?room={r}&state=gone"), &host, None).await.code(), "bad_message");

    // Change: title, time (still ahead and within 90 days), profile; not by a viewer.
    let path = format!("/api/v1/schedules/{id}");
    let changed = api(
        &server,
        "PATCH",
        &path,
        &host,
        Some(json!({"title": "Spring drop, live", "starts_at": start + 600, "profile": "interactive"})),
    )
    .await;
    assert_eq!(changed.status, 200, "{}", changed.json());
    assert_eq!(
        (changed.json()["title"].as_str(), changed.json()["starts_at"].as_i64(), changed.json()["profile"].as_str()),
        (Some("Spring drop, live"), Some(start + 600), Some("interactive"))
    );
    assert_eq!(api(&server, "PATCH", &path, &host, Some(json!({"profile": null}))).await.json()["profile"], Value::Null);
    assert_eq!(api(&server, "PATCH", &path, &host, Some(json!({"starts_at": now_secs() - 1}))).await.code(), "bad_time");
    assert_eq!(api(&server, "PATCH", &path, &host, Some(json!({"starts_at": now_secs() + 100 * 86_400}))).await.code(), "bad_time");
    assert_eq!(api(&server, "PATCH", &path, &viewer, Some(json!({"title": "mine"}))).await.code(), "not_allowed");
    assert_eq!(api(&server, "PATCH", "/api/v1/schedules/s_404", KEY, Some(json!({"title": "x"}))).await.status, 404);

    // Banner: an image of at most 4 KiB whose type its Content-Type names.
    let banner = |ty: &'static str, bytes: Vec<u8>, auth: String| {
        let path = format!("/api/v1/schedules/{id}/banner");
        let server = &server;
        async move { request(server, "PUT", &path, &[("Content-Type", ty), ("Authorization", &format!("Bearer {auth}"))], &bytes).await }
    };
    let up = banner("image/png", PNG.to_vec(), host.clone()).await;
    assert_eq!(up.status, 200);
    let url = up.json()["banner_url"].as_str().unwrap().to_owned();
    let img = request(&server, "GET", &url, &[], b"").await;
    assert_eq!((img.status, img.header("content-type"), img.body.as_slice()), (200, Some("image/png"), PNG));
    assert_eq!(img.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(banner("image/png", b"<svg onload=alert(1)>".to_vec(), host.clone()).await.code(), "bad_image");
    assert_eq!(banner("image/jpeg", PNG.to_vec(), host.clone()).await.code(), "bad_image");
    let mut big = PNG.to_vec();
    big.resize(5000, 0);
    assert_eq!(banner("image/png", big, host.clone()).await.status, 413);
    assert_eq!(banner("image/png", PNG.to_vec(), viewer.clone()).await.code(), "not_allowed");
    assert_eq!(request(&server, "GET", "/media/schedules/s_404/banner", &[], b"").await.status, 404);

    // Remind me: a token of the room, once per identity; the host sees who.
    let remind = format!("/api/v1/schedules/{id}/reminder");
    assert_eq!(api(&server, "POST", &remind, &viewer, None).await.status, 201);
    assert_eq!(api(&server, "POST", &remind, &viewer, None).await.status, 200, "twice is once");
    assert_eq!(api(&server, "POST", &remind, &token(&server, r, "zoe", Role::Viewer), None).await.status, 201);
    assert_eq!(api(&server, "POST", &remind, &token(&server, "elsewhere", "eve", Role::Viewer), None).await.code(), "token_wrong_room");
    assert_eq!(api(&server, "POST", &remind, "", None).await.status, 401);
    assert_eq!(api(&server, "GET", &path, &viewer, None).await.json()["reminded"], true);
    let seen_by_host = api(&server, "GET", &path, &host, None).await.json();
    assert_eq!((seen_by_host["subscribers"].clone(), seen_by_host["reminders"].as_u64()), (json!(["vic", "zoe"]), Some(2)));
    assert_eq!(api(&server, "DELETE", &remind, &viewer, None).await.json()["reminded"], false);
    assert_eq!(api(&server, "GET", &path, &viewer, None).await.json()["reminded"], false);

    // The upcoming page and its calendar file.
    let page = request(&server, "GET", &format!("/upcoming/{id}"), &[], b"").await;
    assert_eq!((page.status, page.header("content-type")), (200, Some("text/html; charset=utf-8")));
    let ics = request(&server, "GET", &format!("/upcoming/{id}/calendar.ics"), &[], b"").await;
    assert_eq!((ics.status, ics.header("content-type")), (200, Some("text/calendar; charset=utf-8")));
    let text = String::from_utf8_lossy(&ics.body);
    assert!(text.contains("SUMMARY:Spring drop\\, live\r\n") && text.contains(&format!("URL:http://onair.test/upcoming/{id}")), "{text}");
    assert_eq!(request(&server, "GET", "/upcoming/s_404/calendar.ics", &[], b"").await.status, 404);

    // Cancel: once; then nothing more happens to it.
    assert_eq!(api(&server, "DELETE", &path, &viewer, None).await.code(), "not_allowed");
    let cancelled = api(&server, "DELETE", &path, &host, None).await;
    assert_eq!((cancelled.status, cancelled.json()["state"].as_str()), (200, Some("cancelled")));
    assert_eq!(api(&server, "DELETE", &path, &host, None).await.code(), "conflict");
    assert_eq!(api(&server, "PATCH", &path, &host, Some(json!({"title": "again"}))).await.code(), "conflict");
    assert_eq!(api(&server, "POST", &remind, &viewer, None).await.code(), "conflict");
    assert_eq!(api(&server, "POST", &format!("{path}/start"), &host, None).await.code(), "conflict");
    assert_eq!(api(&server, "DELETE", "/api/v1/schedules/s_404", KEY, None).await.status, 404);
    assert!(text.contains("STATUS:CONFIRMED"));
    let ics = request(&server, "GET", &format!("/upcoming/{id}/calendar.ics"), &[], b"").await;
    assert!(String::from_utf8_lossy(&ics.body).contains("STATUS:CANCELLED"));
    // A cancelled live leaves the upcoming list, and frees a place under the limit.
    assert_eq!(
        api(&server, "GET", &format!("/api/v1/schedules?room={r}"), "", None).await.json()["schedules"].as_array().map(Vec::len),
        Some(2)
    );
    let fourth = api(&server, "POST", "/api/v1/schedules", KEY, Some(body("Fourth", start + 180))).await.json();

    // Start: the host picks the live it goes on air with (hours before its time); its arrival
    // links it to the room's live.
    let fourth_path = format!("/api/v1/schedules/{}", fourth["id"].as_str().unwrap());
    assert_eq!(api(&server, "POST", &format!("{fourth_path}/start"), &moderator, None).await.code(), "not_allowed");
    assert_eq!(api(&server, "PATCH", &fourth_path, &host, Some(json!({"profile": "interactive"}))).await.status, 200);
    assert_eq!(api(&server, "POST", &format!("{fourth_path}/start"), &host, None).await.json()["state"], "starting");
    let mut on_air = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    assert_eq!(on_air.joined["profile"]["name"], "standard", "the host's token named no profile");
    // The live takes its schedule's profile: everyone hears it.
    let adopted = on_air.expect("live_profile").await;
    assert_eq!(adopted["profile"]["name"], "interactive", "{adopted}");
    let live_id = on_air.joined["chat"]["live_id"].clone();
    let mut linked = Value::Null;
    for _ in 0..100 {
        linked = api(&server, "GET", &fourth_path, "", None).await.json();
        if linked["state"] == "live" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((linked["state"].as_str(), &linked["live_id"]), (Some("live"), &live_id), "{linked}");
    assert_eq!(api(&server, "POST", &format!("{fourth_path}/start"), &host, None).await.code(), "conflict");
    let rooms = api(&server, "GET", "/api/v1/rooms", KEY, None).await.json();
    assert_eq!(rooms["rooms"][0]["profile"], "interactive");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_logged() {
    init_tracing();
    // The receiver fails the first two attempts of these events.
    let (hooks, addr, _task) = Receiver::start(2, &["live_scheduled", "live_started"], "127.0.0.1:0".parse().unwrap()).await;
    let server = signaling::Server::start(config(Some(addr))).await.expect("server");
    let r = "hook-room";

    // Scheduled an hour ahead (no reminder due yet), a fan subscribes, then the start moves to
    // 3 s ahead: `live_scheduled` (after two failures), then the early reminder at the next
    // tick (the start is within 15 min now), then the one at the start. (Scheduled 3 s ahead at
    // once, the early reminder could go out before the fan's subscription.)
    let created =
        api(&server, "POST", "/api/v1/schedules", KEY, Some(json!({"room": r, "title": "Launch", "starts_at": now_secs() + 3600}))).await;
    assert_eq!(created.status, 201);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        api(&server, "POST", &format!("/api/v1/schedules/{id}/reminder"), &token(&server, r, "fan", Role::Viewer), None).await.status,
        201
    );
    let at = now_secs() + 3;
    assert_eq!(api(&server, "PATCH", &format!("/api/v1/schedules/{id}"), KEY, Some(json!({"starts_at": at}))).await.status, 200);
    let t0 = Instant::now();
    let scheduled = hooks.wait("live_scheduled", Duration::from_secs(10), |d| d["schedule"]["id"] == id.as_str()).await;
    let third = hooks.attempts(&scheduled.id, 3).await;
    let attempts = third.len();
    assert_eq!(attempts, 3, "failed twice, delivered on the third try");
    assert!(third.windows(2).all(|w| w[0].body == w[1].body), "every attempt carries the same message");
    println!("live_scheduled delivered on attempt {attempts}, {} ms after the schedule", t0.elapsed().as_millis());
    let soon = hooks.wait("live_reminder", Duration::from_secs(5), |d| d["schedule"]["when"] == "soon").await;
    assert_eq!(soon.json["data"]["schedule"]["subscribers"], json!(["fan"]));
    assert!(soon.json["data"]["schedule"]["minutes_left"].as_i64().is_some_and(|m| (0..=1).contains(&m)), "{}", soon.json);
    let now = hooks.wait("live_reminder", Duration::from_secs(8), |d| d["schedule"]["when"] == "now").await;
    assert_eq!(now.json["data"]["schedule"]["subscribers"], json!(["fan"]));
    let late_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - at * 1000;
    println!("start reminder received {late_ms} ms after the start time");
    assert!(late_ms < 3000, "the start reminder came {late_ms} ms late");
    assert_eq!(hooks.all().iter().filter(|g| g.json["type"] == "live_reminder").count(), 2, "one reminder per threshold");

    // The host goes live within the window: the live is the scheduled one.
    let mut host = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    let started = hooks.wait("live_started", Duration::from_secs(10), |d| d["room"] == r).await;
    let live_id = host.joined["chat"]["live_id"].as_str().unwrap().to_owned();
    assert_eq!(
        (started.json["data"]["live_id"].as_str(), started.json["data"]["schedule"]["id"].as_str()),
        (Some(live_id.as_str()), Some(id.as_str()))
    );
    assert_eq!(started.json["data"]["schedule"]["state"], "live");
    assert_eq!(hooks.attempts(&started.id, 3).await.len(), 3, "live_started also failed twice first");
    let mut viewer = Chat::join(&server, r, "vic", Role::Viewer).await.unwrap();
    let joined = hooks.wait("participant_joined", Duration::from_secs(5), |d| d["participant"]["identity"] == "vic").await;
    assert_eq!(
        (joined.json["data"]["participant"]["role"].as_str(), joined.json["data"]["live_id"].as_str()),
        (Some("viewer"), Some(live_id.as_str()))
    );
    viewer.send(json!({"type": "leave"})).await;
    drop(viewer);
    hooks.wait("participant_left", Duration::from_secs(10), |d| d["participant"]["identity"] == "vic").await;
    host.send(json!({"type": "end_room"})).await;
    let ended = hooks.wait("live_ended", Duration::from_secs(10), |d| d["live_id"] == live_id.as_str()).await;
    assert_eq!(
        (ended.json["data"]["schedule"]["id"].as_str(), ended.json["data"]["schedule"]["state"].as_str()),
        (Some(id.as_str()), Some("ended"))
    );
    assert_eq!(api(&server, "GET", &format!("/api/v1/schedules/{id}"), "", None).await.json()["state"], "ended");

    // Updated and cancelled; the cancel names who asked to be reminded.
    let other =
        api(&server, "POST", "/api/v1/schedules", KEY, Some(json!({"room": r, "title": "Encore", "starts_at": now_secs() + 86_400})))
            .await
            .json();
    let other_id = other["id"].as_str().unwrap().to_owned();
    let encore = hooks.wait("live_scheduled", Duration::from_secs(5), |d| d["schedule"]["id"] == other_id.as_str()).await;
    api(&server, "POST", &format!("/api/v1/schedules/{other_id}/reminder"), &token(&server, r, "fan", Role::Viewer), None).await;
    api(&server, "PATCH", &format!("/api/v1/schedules/{other_id}"), KEY, Some(json!({"starts_at": now_secs() + 2 * 86_400}))).await;
    let updated = hooks.wait("live_updated", Duration::from_secs(5), |d| d["schedule"]["id"] == other_id.as_str()).await;
    assert_eq!(updated.json["data"]["time_changed"], true);
    api(&server, "DELETE", &format!("/api/v1/schedules/{other_id}"), KEY, None).await;
    let cancelled = hooks.wait("live_cancelled", Duration::from_secs(5), |d| d["schedule"]["id"] == other_id.as_str()).await;
    assert_eq!(cancelled.json["data"]["schedule"]["subscribers"], json!(["fan"]));

    // A test event; the log: every message delivered, the flaky ones after 3 attempts.
    assert_eq!(api(&server, "POST", "/api/v1/webhooks/test", KEY, None).await.status, 202);
    hooks.wait("test", Duration::from_secs(5), |_| true).await;
    wait_state(&server, &encore.id, "delivered").await;
    let log = api(&server, "GET", "/api/v1/webhooks/deliveries?limit=100", KEY, None).await.json();
    let rows = log["deliveries"].as_array().unwrap();
    let row = |id: &str| rows.iter().find(|d| d["id"] == id).cloned().unwrap_or_default();
    assert_eq!(
        (row(&scheduled.id)["state"].as_str(), row(&scheduled.id)["attempts"].as_i64(), row(&scheduled.id)["last_status"].as_i64()),
        (Some("delivered"), Some(3), Some(204))
    );
    assert!(rows.iter().all(|d| d["state"] == "delivered"), "{log}");
    let kinds: std::collections::BTreeSet<&str> = rows.iter().filter_map(|d| d["event"].as_str()).collect();
    for k in [
        "live_scheduled",
        "live_reminder",
        "live_started",
        "participant_joined",
        "participant_left",
        "live_ended",
        "live_updated",
        "live_cancelled",
        "test",
    ] {
        assert!(kinds.contains(k), "{k} missing from the log: {kinds:?}");
    }
    assert_eq!(api(&server, "GET", "/api/v1/webhooks/deliveries?state=failed", KEY, None).await.json()["deliveries"], json!([]));
    assert_eq!(api(&server, "GET", "/api/v1/webhooks/deliveries?state=weird", KEY, None).await.code(), "bad_message");
    assert_eq!(
        api(&server, "GET", "/api/v1/webhooks/deliveries", &token(&server, r, "host", Role::Host), None).await.code(),
        "not_allowed"
    );
    assert_eq!(
        api(&server, "GET", &format!("/api/v1/webhooks/deliveries/{}", scheduled.id), KEY, None).await.json()["event"],
        "live_scheduled"
    );
    assert_eq!(api(&server, "GET", "/api/v1/webhooks/deliveries/msg_404", KEY, None).await.status, 404);
    assert_eq!(api(&server, "POST", &format!("/api/v1/webhooks/deliveries/{}/retry", scheduled.id), KEY, None).await.code(), "conflict");

    // Every request the receiver got, retries included, carries a valid signature.
    all_signed(&hooks.all());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_give_up_and_retry_and_survive_a_restart() {
    init_tracing();
    let dir = std::env::temp_dir().join(format!("onair-webhooks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A port nobody listens on yet: the receiver is down.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut c = config(Some(addr));
    c.store.url = format!("sqlite:{}", dir.join("onair.db").display());
    c.webhooks.retry_delays_secs = vec![0.1, 0.1];
    let server = signaling::Server::start(c.clone()).await.expect("server");
    // Down: 3 attempts (1 + 2 retries), then `failed` with the connection error.
    api(&server, "POST", "/api/v1/webhooks/test", KEY, None).await;
    let failed = wait_for(&server, "failed", Duration::from_secs(10)).await;
    assert_eq!(failed["attempts"], 3, "{failed}");
    assert!(failed["last_error"].as_str().is_some_and(|e| !e.is_empty()) && failed["last_status"].is_null(), "{failed}");
    let id = failed["id"].as_str().unwrap().to_owned();

    // Up again: a retry from the log delivers it.
    let (hooks, _, task) = Receiver::start(0, &[], addr).await;
    assert_eq!(api(&server, "POST", &format!("/api/v1/webhooks/deliveries/{id}/retry"), KEY, None).await.status, 202);
    let got = hooks.wait("test", Duration::from_secs(5), |_| true).await;
    assert_eq!(got.id, id, "the same message, by its id");
    assert_eq!(api(&server, "POST", "/api/v1/webhooks/deliveries/msg_404/retry", KEY, None).await.status, 404);

    // 410 Gone: given up after one attempt, not retried.
    server.state.hooks.emit("test", json!({"answer": "gone"}));
    let gone = hooks.wait("test", Duration::from_secs(5), |d| d["answer"] == "gone").await;
    let row = wait_attempted(&server, &gone.id).await;
    assert_eq!(
        (row["state"].as_str(), row["attempts"].as_i64(), row["last_status"].as_i64()),
        (Some("failed"), Some(1), Some(410)),
        "{row}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(hooks.all().iter().filter(|g| g.id == gone.id).count(), 1, "no retry after 410");
    task.abort();
    let _ = task.await;
    server.shutdown().await;

    // A message still pending at shutdown is delivered by the next start.
    let mut c2 = c.clone();
    c2.webhooks.retry_delays_secs = vec![1.5, 0.1];
    let server = signaling::Server::start(c2.clone()).await.expect("server");
    api(&server, "POST", "/api/v1/webhooks/test", KEY, None).await;
    let pending = wait_for(&server, "pending", Duration::from_secs(5)).await;
    let pending_id = pending["id"].as_str().unwrap().to_owned();
    let pending_at_stop = wait_attempted(&server, &pending_id).await;
    server.shutdown().await;
    assert_eq!(pending_at_stop["attempts"], 1, "{pending_at_stop}");
    let (hooks, _, _task) = Receiver::start(0, &[], addr).await;
    let server = signaling::Server::start(c2).await.expect("server again");
    let got = hooks.wait("test", Duration::from_secs(10), |_| true).await;
    assert_eq!(got.id, pending_id);
    // (The receiver saw it before the server recorded the answer: wait for the record.)
    let row = wait_state(&server, &pending_id, "delivered").await;
    assert_eq!(row["attempts"].as_i64(), Some(2), "{row}");
    all_signed(&hooks.all());
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The newest delivery in `state`, within `within`.
async fn wait_for(server: &signaling::Server, state: &str, within: Duration) -> Value {
    let end = Instant::now() + within;
    loop {
        let log = api(server, "GET", &format!("/api/v1/webhooks/deliveries?state={state}&limit=1"), KEY, None).await.json();
        if let Some(d) = log["deliveries"].get(0) {
            return d.clone();
        }
        assert!(Instant::now() < end, "no {state} delivery within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The delivery once it is in `state`.
async fn wait_state(server: &signaling::Server, id: &str, state: &str) -> Value {
    for _ in 0..200 {
        let d = api(server, "GET", &format!("/api/v1/webhooks/deliveries/{id}"), KEY, None).await.json();
        if d["state"] == state {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id} was not {state} within 10 s");
}

/// The delivery once its first attempt is recorded.
async fn wait_attempted(server: &signaling::Server, id: &str) -> Value {
    for _ in 0..100 {
        let d = api(server, "GET", &format!("/api/v1/webhooks/deliveries/{id}"), KEY, None).await.json();
        if d["attempts"].as_i64().unwrap_or(0) >= 1 {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the first attempt of {id} was not recorded within 5 s");
}
