//! Crafted bad tokens, one per rejection class and more, are refused with the documented codes
//! while a live room keeps streaming.

mod common;
use base64::Engine;
use common::*;
use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use signaling::auth::Role;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::Message;

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

fn sign(alg: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn claims() -> Value {
    json!({"sub": "mallory", "name": "Mallory", "room": "authroom", "role": "viewer", "exp": now() + 600, "nbf": now() - 10})
}

fn with(k: &str, v: Value) -> Value {
    let mut c = claims();
    c[k] = v;
    c
}

fn without(k: &str) -> Value {
    let mut c = claims();
    c.as_object_mut().unwrap().remove(k);
    c
}

fn unsigned(header: Value, claims: &Value) -> String {
    format!("{}.{}.", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_tokens_are_refused_while_media_flows() {
    let server = start_server().await;
    let mut host = join(&server, &token(&server, "authroom", "host", Role::Host)).await.unwrap();
    host.publish().await.unwrap();
    let viewer = join(&server, &token(&server, "authroom", "viewer", Role::Viewer)).await.unwrap();
    assert!(eventually(Duration::from_secs(10), || viewer.media_snapshot().values().filter(|t| t.packets > 20).count() == 2).await);
    let packets = |c: &Client| c.media_snapshot().values().map(|t| t.packets).sum::<u64>();
    let before = packets(&viewer);

    let good = sign(Algorithm::HS256, SECRET, &claims());
    let mut tampered: Vec<&str> = good.split('.').collect();
    let elevated = b64(with("role", json!("host")).to_string().as_bytes());
    tampered[1] = &elevated;
    let tampered = tampered.join(".");
    let (h, p, _) = {
        let mut it = good.split('.');
        (it.next().unwrap().to_owned(), it.next().unwrap().to_owned(), it.next().unwrap().to_owned())
    };
    let other_sig = format!("{h}.{p}.{}", b64(&[7u8; 32]));
    let join_with = |t: &str| json!({"type": "join", "token": t, "protocol": 1});

    let cases: Vec<(&str, Value, &str)> = vec![
        ("empty token", join_with(""), "token_missing"),
        ("no token at all", json!({"type": "join"}), "token_missing"),
        ("not a JWT", join_with("garbage"), "token_malformed"),
        ("two segments", join_with("a.b"), "token_malformed"),
        ("four segments", join_with("a.b.c.d"), "token_malformed"),
        ("header not base64", join_with("!!!.e30.sig"), "token_malformed"),
        ("header not JSON", join_with(&format!("{}.e30.sig", b64(b"hello"))), "token_malformed"),
        ("oversized token", join_with(&"a".repeat(5000)), "token_malformed"),
        ("alg none", join_with(&unsigned(json!({"alg": "none", "typ": "JWT"}), &claims())), "token_algorithm"),
        ("alg None", join_with(&unsigned(json!({"alg": "None"}), &claims())), "token_algorithm"),
        ("alg missing", join_with(&unsigned(json!({"typ": "JWT"}), &claims())), "token_algorithm"),
        ("HS512 instead of HS256", join_with(&sign(Algorithm::HS512, SECRET, &claims())), "token_algorithm"),
        ("RS256 header", join_with(&format!("{}.{}.{}", b64(br#"{"alg":"RS256"}"#), p, b64(&[1u8; 64]))), "token_algorithm"),
        ("wrong secret", join_with(&sign(Algorithm::HS256, "not-the-secret", &claims())), "token_bad_signature"),
        ("tampered claims", join_with(&tampered), "token_bad_signature"),
        ("foreign signature", join_with(&other_sig), "token_bad_signature"),
        ("expired", join_with(&sign(Algorithm::HS256, SECRET, &with("exp", json!(now() - 3600)))), "token_expired"),
        ("not yet valid", join_with(&sign(Algorithm::HS256, SECRET, &with("nbf", json!(now() + 3600)))), "token_not_yet_valid"),
        ("another room", json!({"type": "join", "token": good, "room": "elsewhere"}), "token_wrong_room"),
        ("unknown role", join_with(&sign(Algorithm::HS256, SECRET, &with("role", json!("admin")))), "token_invalid_role"),
        ("role missing", join_with(&sign(Algorithm::HS256, SECRET, &without("role"))), "token_invalid_claims"),
        ("exp missing", join_with(&sign(Algorithm::HS256, SECRET, &without("exp"))), "token_invalid_claims"),
        ("exp not a number", join_with(&sign(Algorithm::HS256, SECRET, &with("exp", json!("tomorrow")))), "token_invalid_claims"),
        ("empty identity", join_with(&sign(Algorithm::HS256, SECRET, &with("sub", json!("")))), "token_invalid_claims"),
        ("oversized identity", join_with(&sign(Algorithm::HS256, SECRET, &with("sub", json!("x".repeat(200))))), "token_invalid_claims"),
        ("empty room", join_with(&sign(Algorithm::HS256, SECRET, &with("room", json!("")))), "token_invalid_claims"),
        ("oversized room", join_with(&sign(Algorithm::HS256, SECRET, &with("room", json!("r".repeat(300))))), "token_invalid_claims"),
        ("control character in name", join_with(&sign(Algorithm::HS256, SECRET, &with("name", json!("a\u{7}b")))), "token_invalid_claims"),
        ("unsupported protocol", json!({"type": "join", "token": good, "protocol": 2}), "unsupported_version"),
        ("not a join first", json!({"type": "ping"}), "not_joined"),
    ];
    assert!(cases.len() >= 20);
    for (what, msg, code) in &cases {
        let (got, close) = join_refusal(&server, msg.clone()).await;
        assert_eq!(&got, code, "{what}");
        assert_eq!(close, 4001, "{what}: closed with the auth close code");
    }
    // The token in the URL: over 4096 bytes it is refused at join like any other token; a URL
    // over the HTTP layer's head limit (about 400 KiB) is refused before any WebSocket exists.
    let long_url = format!("{}?token={}", ws_url(&server), "a".repeat(5000));
    let (mut ws, _) = tokio_tungstenite::connect_async(long_url).await.expect("a 5000-byte ?token= still upgrades");
    ws.send(Message::Text(json!({"type": "join"}).to_string().into())).await.unwrap();
    let e = next_json(&mut ws, Duration::from_secs(5)).await.expect("a reply");
    assert_eq!(e["code"], "token_malformed", "{e}");
    assert_eq!(next_json(&mut ws, Duration::from_secs(5)).await.expect("a close")["close"], 4001);
    let status = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(server.http_addr).await.unwrap();
        let head = format!(
            "GET /ws?token={} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            "a".repeat(500 * 1024)
        );
        let _ = tcp.write_all(head.as_bytes()).await;
        let mut reply = vec![0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut reply)).await.ok().and_then(Result::ok).unwrap_or(0);
        String::from_utf8_lossy(&reply[..n]).lines().next().unwrap_or_default().to_owned()
    };
    eprintln!("500 KiB URL: {status:?}");
    assert!(status.starts_with("HTTP/1.1 4"), "a 500 KiB URL gets an HTTP 4xx: {status:?}");

    // The good token still works, and the live room never noticed.
    let ok = join(&server, &good).await.expect("a valid token joins");
    assert!(eventually(Duration::from_secs(5), || packets(&viewer) > before + 100).await, "viewer kept receiving");
    assert!(viewer.media_snapshot().values().all(|t| t.corrupt == 0 && t.out_of_order == 0));
    eprintln!("{} forged tokens refused; viewer packets {} -> {}", cases.len(), before, packets(&viewer));
    ok.close().await;
    viewer.close().await;
    host.close().await;
    server.shutdown().await;
}
