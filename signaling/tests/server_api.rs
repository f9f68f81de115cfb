//! The server API's rooms and tokens over real HTTP: who may mint which token (the key, a host
//! for its own room), listing rooms (the key only), ending a live (the key or its host: everyone
//! in it hears `room_ended`), stream keys minted, listed and revoked; every refusal with its code.

mod common;
use common::chat_client::Chat;
use common::http::api;
use common::*;
use serde_json::json;
use signaling::auth::Role;

const KEY: &str = "server-api-test-key-01234";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_rooms_ending_and_stream_keys() {
    init_tracing();
    let mut c = test_config();
    c.api.key = KEY.into();
    let server = signaling::Server::start(c).await.expect("server");
    let r = "api-room";
    let host_token = token(&server, r, "host", Role::Host);

    // Tokens: the key mints any role, with a profile and a lifetime; the token joins.
    let minted = api(
        &server,
        "POST",
        "/api/v1/tokens",
        KEY,
        Some(json!({"room": r, "identity": "hana", "name": "Hana", "role": "host", "ttl_secs": 600, "profile": "interactive"})),
    )
    .await;
    assert_eq!(minted.status, 201, "{}", minted.json());
    let t = minted.json()["token"].as_str().unwrap_or_default().to_owned();
    let claims = server.state.auth.verify(&t, Some(r)).expect("a valid token");
    assert_eq!(
        (claims.identity.as_str(), claims.name.as_str(), claims.role, claims.profile.as_deref()),
        ("hana", "Hana", Role::Host, Some("interactive"))
    );
    assert!(minted.json()["expires_at"].as_i64().is_some());
    // A host mints co-host and viewer tokens of its own room, not host tokens, not for others.
    assert_eq!(
        api(&server, "POST", "/api/v1/tokens", &host_token, Some(json!({"room": r, "identity": "v", "role": "viewer"}))).await.status,
        201
    );
    assert_eq!(
        api(&server, "POST", "/api/v1/tokens", &host_token, Some(json!({"room": r, "identity": "h2", "role": "host"}))).await.code(),
        "not_allowed"
    );
    assert_eq!(
        api(&server, "POST", "/api/v1/tokens", &host_token, Some(json!({"room": "other", "identity": "v", "role": "viewer"}))).await.code(),
        "token_wrong_room"
    );
    let moderator = token(&server, r, "mod", Role::Moderator);
    assert_eq!(
        api(&server, "POST", "/api/v1/tokens", &moderator, Some(json!({"room": r, "identity": "v", "role": "viewer"}))).await.code(),
        "not_allowed"
    );
    for (bad, code) in [
        (json!({"room": r, "identity": "v", "role": "admin"}), "token_invalid_role"),
        (json!({"room": r, "identity": "v", "role": "viewer", "ttl_secs": 10}), "bad_message"),
        (json!({"room": r, "identity": "v", "role": "viewer", "ttl_secs": 90000}), "bad_message"),
        (json!({"room": r, "identity": "", "role": "viewer"}), "bad_message"),
        (json!({"room": r, "identity": "v", "role": "viewer", "profile": "nope"}), "bad_message"),
        (json!({"room": r, "identity": "v", "role": "viewer", "name": "a\u{202e}b"}), "bad_message"),
        (json!({"room": r, "identity": "v", "role": "viewer", "admin": true}), "bad_message"),
    ] {
        assert_eq!(api(&server, "POST", "/api/v1/tokens", KEY, Some(bad.clone())).await.code(), code, "{bad}");
    }
    assert_eq!(api(&server, "POST", "/api/v1/tokens", "", Some(json!({"room": r, "identity": "v", "role": "viewer"}))).await.status, 401);

    // Rooms: the key lists them; a room token may not.
    let mut host = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    let mut viewer = Chat::join(&server, r, "v", Role::Viewer).await.unwrap();
    let rooms = api(&server, "GET", "/api/v1/rooms", KEY, None).await;
    assert_eq!(rooms.status, 200);
    let listed = rooms.json()["rooms"].as_array().and_then(|a| a.iter().find(|x| x["room"] == r).cloned()).expect("the room is listed");
    assert_eq!((listed["state"].as_str(), listed["participants"].as_u64(), listed["viewers"].as_u64()), (Some("live"), Some(2), Some(1)));
    assert_eq!(listed["live_id"], host.joined["chat"]["live_id"]);
    assert_eq!(api(&server, "GET", "/api/v1/rooms", &host_token, None).await.code(), "not_allowed");
    assert_eq!(api(&server, "GET", "/api/v1/rooms", "", None).await.status, 401);

    // Stream keys: the key or the host; not a moderator.
    let keys = format!("/api/v1/rooms/{r}/stream-keys");
    let k = api(&server, "POST", &keys, &host_token, Some(json!({"label": "OBS", "seat": "host"}))).await;
    assert_eq!(k.status, 201, "{}", k.json());
    let (id, secret) = (k.json()["id"].as_str().unwrap_or_default().to_owned(), k.json()["key"].as_str().unwrap_or_default().to_owned());
    assert!(k.json()["server_url"].as_str().is_some_and(|u| u.starts_with("rtmp://")));
    assert_eq!(server.state.store.verify_stream_key(&secret).await.expect("the key verifies").room, r);
    let list = api(&server, "GET", &keys, KEY, None).await.json();
    assert_eq!(list["keys"][0]["id"], id.as_str());
    assert!(!list.to_string().contains(&secret), "no secret in the list");
    assert_eq!(api(&server, "POST", &keys, &moderator, Some(json!({}))).await.code(), "not_allowed");
    assert_eq!(api(&server, "POST", &keys, KEY, Some(json!({"label": "x".repeat(65)}))).await.code(), "bad_message");
    assert_eq!(api(&server, "DELETE", &format!("{keys}/{id}"), KEY, None).await.status, 204);
    assert!(server.state.store.verify_stream_key(&secret).await.is_err(), "revoked");
    assert_eq!(api(&server, "DELETE", &format!("{keys}/{id}"), KEY, None).await.status, 204, "revoking again changes nothing");
    assert_eq!(api(&server, "DELETE", &format!("{keys}/000000000000"), KEY, None).await.status, 404);

    // Ending: a moderator may not; the key may; everyone hears it.
    assert_eq!(api(&server, "POST", &format!("/api/v1/rooms/{r}/end"), &moderator, None).await.code(), "not_allowed");
    assert_eq!(api(&server, "POST", "/api/v1/rooms/nowhere/end", KEY, None).await.status, 404);
    let ended = api(&server, "POST", &format!("/api/v1/rooms/{r}/end"), KEY, None).await;
    assert_eq!((ended.status, ended.json()["ended"].as_bool()), (200, Some(true)));
    for p in [&mut host, &mut viewer] {
        assert_eq!(p.expect("room_ended").await["reason"], "the live was ended");
    }
    server.shutdown().await;
}
