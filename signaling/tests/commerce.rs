//! Supporters and live shopping with real WebSocket clients and real HTTP requests: the payment
//! webhook signed, forged, replayed, duplicated, refunded and aimed at the wrong place; badges on
//! comments for everyone; the supporters panel during and after the live; the product catalog
//! with its URL and image rules; pins by the host and moderators, refused for viewers, seen by
//! late joiners; views and clicks counted; and a restart that keeps badges and the pin.

mod common;
use common::chat_client::{Chat, T};
use common::http::{api, request};
use common::*;
use serde_json::{Value, json};
use signaling::auth::Role;
use signaling::live::commerce::payments::sign;
use std::time::Duration;

const KEY: &str = "test-server-api-key-0123";
const WHSEC: &str = "whsec-test-0123456789abcdef";

fn config() -> signaling::config::Config {
    let mut c = test_config();
    c.api.key = KEY.into();
    c.commerce.webhook_secret = WHSEC.into();
    c
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// POST a webhook event signed with `secret` at `t`.
async fn webhook_at(server: &signaling::Server, body: &Value, secret: &str, t: i64) -> common::http::Reply {
    let body = body.to_string();
    let sig = sign(secret.as_bytes(), t, body.as_bytes());
    request(server, "POST", "/api/v1/payments", &[("Content-Type", "application/json"), ("Onair-Signature", &sig)], body.as_bytes()).await
}

async fn webhook(server: &signaling::Server, body: &Value) -> common::http::Reply {
    webhook_at(server, body, WHSEC, now()).await
}

fn pay(id: &str, room: &str, identity: &str, tier: u8) -> Value {
    json!({"type": "payment", "id": id, "room": room, "identity": identity, "name": identity.to_uppercase(), "tier": tier})
}

/// Nothing of `kind` reaches `c` within `within`.
async fn quiet(c: &mut Chat, kind: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while let Some(v) = next_json(&mut c.ws, deadline.saturating_duration_since(tokio::time::Instant::now())).await {
        assert_ne!(v["type"], kind, "{}: unexpected {v}", c.identity);
        let closed = v.get("close").is_some();
        c.seen.push(v);
        if closed {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_webhooks_valid_forged_replayed_duplicated_and_refunded() {
    init_tracing();
    let server = signaling::Server::start(config()).await.expect("server");
    let r = "shop";
    // No live in the room yet: nothing to grant in.
    let early = webhook(&server, &pay("pay_0", r, "ann", 1)).await;
    assert_eq!((early.status, early.code().as_str()), (404, "not_found"));

    let mut host = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    let mut ann = Chat::join(&server, r, "ann", Role::Viewer).await.unwrap();
    let mut bob = Chat::join(&server, r, "bob", Role::Viewer).await.unwrap();
    let live = host.joined["chat"]["live_id"].as_str().expect("live id").to_owned();
    assert_eq!(host.joined["chat"]["tiers"][1], json!({"tier": 2, "name": "Fan", "price_minor": 299, "currency": "USD"}));

    // Valid: granted, the badge to everyone, the supporter to the host.
    let ok = webhook(&server, &pay("pay_1", r, "ann", 2)).await;
    assert_eq!(ok.status, 201, "{}", ok.json());
    assert_eq!(ok.json()["status"], "granted");
    assert_eq!(ok.json()["live_id"], live.as_str());
    for p in [&mut host, &mut ann, &mut bob] {
        let b = p.expect("badge").await;
        assert_eq!((b["identity"].as_str(), &b["badge"]), (Some("ann"), &json!({"tier": 2, "name": "Fan"})));
    }
    let s = host.expect("supporter").await;
    assert_eq!(s["supporter"]["identity"], "ann");
    assert_eq!(s["supporter"]["name"], "ANN");
    assert_eq!(s["supporter"]["amount_minor"], 299);
    assert_eq!(s["totals"]["payments"], 1);
    // ann's next comment carries the heart for everyone.
    let c = ann.comment("thank you!").await;
    assert_eq!(c["badge"], json!({"tier": 2, "name": "Fan"}));
    let seen = bob.expect_where("comment", T, |v| v["comment"]["id"] == c["id"]).await;
    assert_eq!(seen["comment"]["badge"]["tier"], 2);
    // A viewer's own comment without a badge carries none.
    let plain = bob.comment("me too").await;
    assert!(plain.get("badge").is_none(), "{plain}");

    // Forged: another secret, a changed body, no header, a moved timestamp. Nothing granted.
    let forged = webhook_at(&server, &pay("pay_f", r, "bob", 3), "not-the-secret-000000", now()).await;
    assert_eq!((forged.status, forged.code().as_str()), (401, "bad_signature"));
    let body = pay("pay_g", r, "bob", 3).to_string();
    let sig = sign(WHSEC.as_bytes(), now(), body.as_bytes());
    let tampered = body.replace("\"tier\":3", "\"tier\":1");
    let altered = request(
        &server,
        "POST",
        "/api/v1/payments",
        &[("Onair-Signature", &sig), ("Content-Type", "application/json")],
        tampered.as_bytes(),
    )
    .await;
    assert_eq!((altered.status, altered.code().as_str()), (401, "bad_signature"));
    let unsigned = request(&server, "POST", "/api/v1/payments", &[("Content-Type", "application/json")], body.as_bytes()).await;
    assert_eq!((unsigned.status, unsigned.code().as_str()), (401, "bad_signature"));
    assert_eq!(unsigned.header("www-authenticate"), Some("Bearer"));

    // Replayed: the same signed request within the tolerance is the same payment; an old or
    // future timestamp is refused before anything is looked up.
    let again = webhook(&server, &pay("pay_1", r, "ann", 2)).await;
    assert_eq!((again.status, again.json()["status"].as_str()), (200, Some("duplicate")));
    let stale = webhook_at(&server, &pay("pay_s", r, "bob", 3), WHSEC, now() - 301).await;
    assert_eq!((stale.status, stale.code().as_str()), (401, "stale_timestamp"));
    let future = webhook_at(&server, &pay("pay_s", r, "bob", 3), WHSEC, now() + 400).await;
    assert_eq!((future.status, future.code().as_str()), (401, "stale_timestamp"));
    // The same id for another buyer: a conflict, not a grant.
    let reused = webhook(&server, &pay("pay_1", r, "bob", 2)).await;
    assert_eq!((reused.status, reused.code().as_str()), (409, "conflict"));

    // Unknown tiers, wrong prices, other rooms and lives, malformed and oversized bodies.
    let tier = webhook(&server, &pay("pay_t", r, "bob", 4)).await;
    assert_eq!((tier.status, tier.code().as_str()), (422, "unknown_tier"));
    let mut cheap = pay("pay_c", r, "bob", 3);
    cheap["amount_minor"] = json!(1);
    assert_eq!(webhook(&server, &cheap).await.code(), "unknown_tier");
    let mut euros = pay("pay_e", r, "bob", 1);
    euros["currency"] = json!("EUR");
    assert_eq!(webhook(&server, &euros).await.code(), "unknown_tier");
    assert_eq!(webhook(&server, &pay("pay_n", "nowhere", "bob", 1)).await.status, 404);
    let mut old_live = pay("pay_l", r, "bob", 1);
    old_live["live_id"] = json!("0123");
    let wrong_live = webhook(&server, &old_live).await;
    assert_eq!((wrong_live.status, wrong_live.code().as_str()), (409, "room_ended"));
    let garbage = webhook(&server, &json!({"type": "gift", "id": "x"})).await;
    assert_eq!((garbage.status, garbage.code().as_str()), (400, "bad_message"));
    let mut huge = pay("pay_h", r, "bob", 1);
    huge["padding"] = json!("x".repeat(70 * 1024));
    let big = webhook(&server, &huge).await;
    assert_eq!((big.status, big.code().as_str()), (413, "message_too_large"));
    // None of that granted anything: bob has no badge, the host has one supporter.
    quiet(&mut bob, "badge", Duration::from_millis(300)).await;
    host.send(json!({"type": "get_supporters"})).await;
    let list = host.expect("supporters").await;
    assert_eq!(list["supporters"].as_array().map(Vec::len), Some(1));

    // A cheaper second payment keeps the best badge; refunds step it down, then take it away.
    assert_eq!(webhook(&server, &pay("pay_2", r, "ann", 1)).await.status, 201);
    let b = bob.expect("badge").await;
    assert_eq!(b["badge"]["tier"], 2, "the best tier stays");
    let refund = webhook(&server, &json!({"type": "refund", "id": "re_1", "payment": "pay_1"})).await;
    assert_eq!((refund.status, refund.json()["status"].as_str()), (200, Some("refunded")));
    let b = bob.expect("badge").await;
    assert_eq!(b["badge"], json!({"tier": 1, "name": "Supporter"}));
    let r1 = host.expect_where("supporter_refunded", T, |v| v["payment"] == "pay_1").await;
    assert_eq!(r1["totals"]["amount_minor"], 99);
    let dup = webhook(&server, &json!({"type": "refund", "id": "re_1", "payment": "pay_1"})).await;
    assert_eq!((dup.status, dup.json()["status"].as_str()), (200, Some("duplicate")));
    let twice = webhook(&server, &json!({"type": "refund", "id": "re_9", "payment": "pay_1"})).await;
    assert_eq!((twice.status, twice.code().as_str()), (409, "conflict"));
    let unknown = webhook(&server, &json!({"type": "refund", "id": "re_x", "payment": "pay_x"})).await;
    assert_eq!((unknown.status, unknown.code().as_str()), (404, "not_found"));
    assert_eq!(webhook(&server, &json!({"type": "refund", "id": "re_2", "payment": "pay_2"})).await.status, 200);
    let b = bob.expect("badge").await;
    assert_eq!((b["identity"].as_str(), &b["badge"]), (Some("ann"), &Value::Null));
    assert_eq!(webhook(&server, &pay("pay_3", r, "bob", 3)).await.status, 201);

    // A late joiner finds the badges as they are now on the comments of the history.
    let late = Chat::join(&server, r, "late", Role::Viewer).await.unwrap();
    let history = late.joined["chat"]["comments"].as_array().cloned().unwrap_or_default();
    let by = |who: &str| history.iter().find(|c| c["identity"] == who).cloned().unwrap_or(Value::Null);
    assert!(by("ann").get("badge").is_none(), "ann's badge was refunded: {}", by("ann"));
    assert_eq!(by("bob")["badge"]["tier"], 3);

    // The panel: host only, with the totals; the API's record of the live agrees.
    ann.refused(json!({"type": "get_supporters"}), "not_allowed").await;
    host.send(json!({"type": "get_supporters"})).await;
    let list = host.expect("supporters").await;
    assert_eq!(
        list["supporters"].as_array().map(|a| a.iter().map(|s| s["payment"].clone()).collect::<Vec<_>>()),
        Some(vec![json!("pay_3")])
    );
    assert_eq!(list["totals"], json!({"payments": 1, "supporters": 1, "amount_minor": 499, "currency": "USD", "by_tier": [0, 0, 1]}));
    let path = format!("/api/v1/lives/{live}/supporters");
    let record = api(&server, "GET", &path, KEY, None).await;
    assert_eq!(record.status, 200);
    assert_eq!(record.json()["totals"], list["totals"]);
    assert_eq!(api(&server, "GET", &path, &token(&server, r, "ann", Role::Viewer), None).await.code(), "not_allowed");
    assert_eq!(api(&server, "GET", &path, "", None).await.status, 401);
    assert_eq!(api(&server, "GET", "/api/v1/lives/nope/supporters", KEY, None).await.status, 404);

    // After the live: nothing more is granted, and the record stays.
    host.send(json!({"type": "end_room"})).await;
    host.expect("room_ended").await;
    let after = webhook(&server, &pay("pay_4", r, "bob", 1)).await;
    assert_eq!((after.status, after.code().as_str()), (409, "room_ended"));
    let record = api(&server, "GET", &path, &token(&server, r, "host", Role::Host), None).await;
    assert_eq!(record.json()["totals"]["amount_minor"], 499);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_the_webhook_is_off() {
    init_tracing();
    let mut c = config();
    c.commerce.webhook_secret = String::new();
    let server = signaling::Server::start(c).await.expect("server");
    let _host = Chat::join(&server, "off", "host", Role::Host).await.unwrap();
    let r = webhook(&server, &pay("pay_1", "off", "ann", 1)).await;
    assert_eq!((r.status, r.code().as_str()), (503, "not_configured"));
    server.shutdown().await;
}

/// Views and clicks of `product` as the API lists them.
async fn counters(server: &signaling::Server, room: &str, product: &str) -> (u64, u64) {
    let list = api(server, "GET", &format!("/api/v1/rooms/{room}/products"), KEY, None).await.json();
    let p = list["products"].as_array().and_then(|a| a.iter().find(|p| p["id"] == product).cloned()).unwrap_or(Value::Null);
    (p["views"].as_u64().unwrap_or(0), p["clicks"].as_u64().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_are_pinned_by_host_and_moderators_and_counted() {
    init_tracing();
    let mut c = config();
    c.commerce.max_products = 3;
    let server = signaling::Server::start(c).await.expect("server");
    let r = "store";
    let products = format!("/api/v1/rooms/{r}/products");
    let shoe = json!({"title": "Red sneakers", "price_minor": 4999, "currency": "eur", "checkout_url": "https://shop.example/p/1"});

    // Who may edit the catalog: the API key, the host's and a moderator's token; nobody else.
    let host_token = token(&server, r, "host", Role::Host);
    assert_eq!(api(&server, "POST", &products, "", Some(shoe.clone())).await.status, 401);
    assert_eq!(api(&server, "POST", &products, "wrong-key", Some(shoe.clone())).await.code(), "token_malformed");
    assert_eq!(api(&server, "POST", &products, &token(&server, r, "v", Role::Viewer), Some(shoe.clone())).await.status, 403);
    assert_eq!(
        api(&server, "POST", &products, &token(&server, "other", "host", Role::Host), Some(shoe.clone())).await.code(),
        "token_wrong_room"
    );
    let a = api(&server, "POST", &products, KEY, Some(shoe.clone())).await;
    assert_eq!(a.status, 201, "{}", a.json());
    let a = a.json();
    assert_eq!((a["currency"].as_str(), a["price_minor"].as_i64()), (Some("EUR"), Some(4999)));
    let b = api(&server, "POST", &products, &host_token, Some(json!({"title": "Cap", "price_minor": 1500, "currency": "EUR", "checkout_url": "https://shop.example/p/2", "image_url": "https://cdn.example/cap.png"}))).await;
    assert_eq!(b.status, 201);
    let b = b.json();

    // Malicious and malformed fields.
    for (field, value) in [
        ("checkout_url", "javascript:alert(document.cookie)"),
        ("checkout_url", " JAVASCRIPT:alert(1)"),
        ("checkout_url", "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="),
        ("checkout_url", "//evil.example/"),
        ("image_url", "data:image/svg+xml,<svg onload=alert(1)>"),
        ("image_url", "javascript:alert(1)"),
    ] {
        let mut bad = shoe.clone();
        bad[field] = json!(value);
        let refused = api(&server, "POST", &products, KEY, Some(bad)).await;
        assert_eq!((refused.status, refused.code().as_str()), (422, "bad_url"), "{field} {value}");
    }
    for bad in [
        json!({"title": "", "price_minor": 1, "currency": "EUR", "checkout_url": "https://x.example/"}),
        json!({"title": "t", "price_minor": -1, "currency": "EUR", "checkout_url": "https://x.example/"}),
        json!({"title": "t", "price_minor": 1, "currency": "EURO", "checkout_url": "https://x.example/"}),
        json!({"title": "t", "price_minor": 1, "currency": "EUR"}),
        json!({"title": "t", "price_minor": 1, "currency": "EUR", "checkout_url": "https://x.example/", "script": "x"}),
    ] {
        assert_eq!(api(&server, "POST", &products, KEY, Some(bad.clone())).await.code(), "bad_message", "{bad}");
    }
    let patched = api(
        &server,
        "PATCH",
        &format!("{products}/{}", a["id"].as_str().unwrap_or_default()),
        KEY,
        Some(json!({"checkout_url": "data:,x"})),
    )
    .await;
    assert_eq!(patched.code(), "bad_url");
    // The catalog's limit (3 here), past its edge.
    assert_eq!(api(&server, "POST", &products, KEY, Some(shoe.clone())).await.status, 201);
    let full = api(&server, "POST", &products, KEY, Some(shoe.clone())).await;
    assert_eq!((full.status, full.code().as_str()), (409, "conflict"));

    // Pins: the host and moderators; not viewers.
    let mut host = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    let mut moderator = Chat::join(&server, r, "mod", Role::Moderator).await.unwrap();
    let mut v1 = Chat::join(&server, r, "v1", Role::Viewer).await.unwrap();
    let mut v2 = Chat::join(&server, r, "v2", Role::Viewer).await.unwrap();
    assert_eq!(v1.joined["chat"]["pinned_product"], Value::Null);
    v1.refused(json!({"type": "pin_product", "product": a["id"]}), "not_allowed").await;
    v1.refused(json!({"type": "unpin_product"}), "not_allowed").await;
    moderator.refused(json!({"type": "pin_product", "product": "p-none"}), "not_found").await;
    v1.refused(json!({"type": "product_click", "product": a["id"]}), "not_found").await;
    moderator.send(json!({"type": "pin_product", "product": a["id"]})).await;
    for p in [&mut host, &mut moderator, &mut v1, &mut v2] {
        let pinned = p.expect("product_pinned").await;
        assert_eq!(pinned["product"], a, "{}", p.identity);
    }
    // A pinned product was shown on four pages; clicks count once per viewer per 2 s.
    v1.send(json!({"type": "product_click", "product": a["id"]})).await;
    v1.send(json!({"type": "product_click", "product": a["id"]})).await;
    v2.send(json!({"type": "product_click", "product": a["id"]})).await;
    v2.refused(json!({"type": "product_click", "product": b["id"]}), "not_found").await;
    let a_id = a["id"].as_str().unwrap_or_default().to_owned();
    let mut seen = (0, 0);
    for _ in 0..40 {
        seen = counters(&server, r, &a_id).await;
        if seen == (4, 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, (4, 2), "views and clicks of the pinned product");

    // The host pins another one over it; a late joiner finds it and is counted.
    host.send(json!({"type": "pin_product", "product": b["id"]})).await;
    for p in [&mut host, &mut v1, &mut v2] {
        assert_eq!(p.expect("product_pinned").await["product"]["id"], b["id"]);
    }
    let mut late = Chat::join(&server, r, "late", Role::Viewer).await.unwrap();
    assert_eq!(late.joined["chat"]["pinned_product"], b);
    // An appointed moderator (a viewer's token) may pin; after the host takes it back, not.
    host.send(json!({"type": "moderate", "action": "add_moderator", "identity": "v2"})).await;
    host.expect("moderation").await;
    v2.send(json!({"type": "pin_product", "product": a["id"]})).await;
    assert_eq!(late.expect("product_pinned").await["product"]["id"], a["id"]);
    host.send(json!({"type": "moderate", "action": "remove_moderator", "identity": "v2"})).await;
    host.expect("moderation").await;
    v2.refused(json!({"type": "unpin_product"}), "not_allowed").await;

    // Editing the pinned product shows the new card; deleting it takes it down everywhere.
    let edited =
        api(&server, "PATCH", &format!("{products}/{a_id}"), &host_token, Some(json!({"title": "Red sneakers (last pairs)"}))).await;
    assert_eq!(edited.status, 200);
    assert_eq!(late.expect("product_pinned").await["product"]["title"], "Red sneakers (last pairs)");
    host.expect("products_changed").await;
    assert_eq!(api(&server, "DELETE", &format!("{products}/{a_id}"), KEY, None).await.status, 204);
    for p in [&mut v1, &mut late] {
        assert_eq!(p.expect("product_unpinned").await["product"], a["id"]);
    }
    assert_eq!(api(&server, "DELETE", &format!("{products}/{a_id}"), KEY, None).await.status, 404);
    // Unpin by the host: gone everywhere; again: nothing happens.
    host.send(json!({"type": "pin_product", "product": b["id"]})).await;
    late.expect("product_pinned").await;
    host.send(json!({"type": "unpin_product"})).await;
    for p in [&mut v1, &mut late] {
        assert_eq!(p.expect("product_unpinned").await["product"], b["id"]);
    }
    host.send(json!({"type": "unpin_product"})).await;
    quiet(&mut late, "product_unpinned", Duration::from_millis(300)).await;
    let again = Chat::join(&server, r, "again", Role::Viewer).await.unwrap();
    assert_eq!(again.joined["chat"]["pinned_product"], Value::Null);
    server.shutdown().await;
}

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
    0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63,
    0xf8, 0xcf, 0xc0, 0xf0, 0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44,
    0xae, 0x42, 0x60, 0x82,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_images_are_checked_and_served() {
    init_tracing();
    let mut c = config();
    c.commerce.max_image_bytes = 4096;
    let server = signaling::Server::start(c).await.expect("server");
    let products = "/api/v1/rooms/img/products";
    let p = api(
        &server,
        "POST",
        products,
        KEY,
        Some(json!({"title": "Mug", "price_minor": 900, "currency": "GBP", "checkout_url": "https://shop.example/mug"})),
    )
    .await
    .json();
    let upload = format!("{products}/{}/image", p["id"].as_str().unwrap_or_default());
    let auth = format!("Bearer {KEY}");
    let put = |ty: &'static str, body: Vec<u8>| {
        let (upload, auth, server) = (upload.clone(), auth.clone(), &server);
        async move { request(server, "PUT", &upload, &[("Authorization", &auth), ("Content-Type", ty)], &body).await }
    };
    let svg = put("image/svg+xml", b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>".to_vec()).await;
    assert_eq!((svg.status, svg.code().as_str()), (422, "bad_image"));
    let lying = put("image/jpeg", PNG.to_vec()).await;
    assert_eq!((lying.status, lying.code().as_str()), (422, "bad_image"));
    let mut big = PNG.to_vec();
    big.resize(4097, 0);
    let too_big = put("image/png", big).await;
    assert_eq!((too_big.status, too_big.code().as_str()), (413, "message_too_large"));
    let ok = put("image/png", PNG.to_vec()).await;
    assert_eq!(ok.status, 200, "{}", ok.json());
    let url = ok.json()["image_url"].as_str().unwrap_or_default().to_owned();
    assert!(url.starts_with(&format!("/media/products/{}?v=", p["id"].as_str().unwrap_or_default())), "{url}");
    let got = request(&server, "GET", &url, &[], b"").await;
    assert_eq!((got.status, got.header("content-type"), got.header("x-content-type-options")), (200, Some("image/png"), Some("nosniff")));
    assert_eq!(got.body, PNG);
    assert_eq!(request(&server, "GET", "/media/products/nope", &[], b"").await.status, 404);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_badges_supporters_and_the_pin() {
    init_tracing();
    let dir = std::env::temp_dir().join(format!("onair-commerce-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut c = config();
    c.store.url = format!("sqlite:{}", dir.join("onair.db").display());
    let r = "kept-shop";
    let server = signaling::Server::start(c.clone()).await.expect("server");
    let mut host = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    let mut ann = Chat::join(&server, r, "ann", Role::Viewer).await.unwrap();
    let p = api(
        &server,
        "POST",
        &format!("/api/v1/rooms/{r}/products"),
        KEY,
        Some(json!({"title": "Tote", "price_minor": 2500, "currency": "USD", "checkout_url": "https://shop.example/tote"})),
    )
    .await
    .json();
    host.send(json!({"type": "pin_product", "product": p["id"]})).await;
    ann.expect("product_pinned").await;
    assert_eq!(webhook(&server, &pay("pay_k", r, "ann", 3)).await.status, 201);
    ann.expect("badge").await;
    ann.comment("superfan here").await;
    drop((host, ann));
    server.shutdown().await;

    let server = signaling::Server::start(c).await.expect("restart");
    let host = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    assert_eq!(host.joined["chat"]["pinned_product"]["id"], p["id"]);
    let comment = &host.joined["chat"]["comments"][0];
    assert_eq!((comment["text"].as_str(), comment["badge"]["tier"].as_u64()), (Some("superfan here"), Some(3)));
    let mut host = host;
    host.send(json!({"type": "get_supporters"})).await;
    assert_eq!(host.expect("supporters").await["totals"]["amount_minor"], 499);
    // The same payment told again after the restart is still the same payment.
    let again = webhook(&server, &pay("pay_k", r, "ann", 3)).await;
    assert_eq!(again.json()["status"], "duplicate");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
