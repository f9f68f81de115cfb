//! The live room's conversation with real WebSocket clients: comments, history, deletion,
//! reactions, every moderation action, every limit past its edge, forged moderator messages,
//! and a restart that keeps comments, bans, moderators and stream keys. Each test asserts what
//! each party receives (and, for hidden comments, what it does not).

mod common;
use common::chat_client::{Chat, T};
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use signaling::auth::Role;
use std::time::Duration;

fn ids(history: &Value) -> Vec<String> {
    history.as_array().map(|a| a.iter().map(|c| c["text"].as_str().unwrap_or_default().to_owned()).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_reach_everyone_with_history_deletion_and_text_rules() {
    let server = start_server().await;
    let r = "talk";
    let mut host = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    let mut a = Chat::join(&server, r, "ann", Role::Viewer).await.unwrap();
    let mut b = Chat::join(&server, r, "bob", Role::Viewer).await.unwrap();
    assert_eq!(a.joined["chat"]["comments_enabled"], true);
    assert_eq!(a.joined["chat"]["emoji"].as_array().map(Vec::len), Some(6));

    let c = a.comment_as("hello   everyone ", "hello everyone").await;
    assert_eq!((c["text"].as_str(), c["name"].as_str(), c["role"].as_str()), (Some("hello everyone"), Some("ann"), Some("viewer")));
    assert!(c["id"].as_i64().is_some_and(|i| i > 0 && i < (1 << 53)) && c["at"].as_i64().is_some());
    for p in [&mut host, &mut b] {
        let got = p.expect_where("comment", T, |v| v["comment"]["id"] == c["id"]).await;
        assert_eq!(got["comment"], c, "everyone gets the same comment");
    }
    // NFC: the decomposed é arrives composed.
    b.comment_as("cafe\u{301}", "caf\u{e9}").await;
    let host_c = host.comment("welcome!").await;

    // History on join: a late viewer finds the comments, oldest first.
    let late = Chat::join(&server, r, "late", Role::Viewer).await.unwrap();
    assert_eq!(ids(&late.joined["chat"]["comments"]), ["hello everyone", "caf\u{e9}", "welcome!"]);

    // Text rules past their edges.
    a.refused(json!({"type": "comment", "text": "x".repeat(301)}), "comment_too_long").await;
    a.refused(json!({"type": "comment", "text": "   "}), "bad_comment").await;
    a.refused(json!({"type": "comment", "text": "line\nbreak"}), "bad_comment").await;
    a.refused(json!({"type": "comment", "text": "abc\u{202e}gnp.exe"}), "bad_comment").await;
    let max = "y".repeat(300);
    a.comment(&max).await;

    // Deletion: by its author; not by another viewer; gone for everyone and for later joiners.
    b.refused(json!({"type": "delete_comment", "id": c["id"]}), "not_allowed").await;
    a.refused(json!({"type": "delete_comment", "id": host_c["id"]}), "not_allowed").await;
    a.refused(json!({"type": "delete_comment", "id": 12345}), "not_found").await;
    a.send(json!({"type": "delete_comment", "id": c["id"]})).await;
    for p in [&mut a, &mut b, &mut host] {
        p.expect_where("comment_deleted", T, |v| v["id"] == c["id"]).await;
    }
    let later = Chat::join(&server, r, "later", Role::Viewer).await.unwrap();
    assert!(!ids(&later.joined["chat"]["comments"]).contains(&"hello everyone".to_owned()));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_slow_mode_and_comments_off_past_their_edges() {
    let mut config = test_config();
    config.chat.room_comment_burst = 12;
    config.chat.room_comments_per_sec = 0.5;
    let server = signaling::Server::start(config).await.expect("server");
    let r = "busy";
    let mut host = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    let mut v = Chat::join(&server, r, "v", Role::Viewer).await.unwrap();
    // Per user: a burst of 5, the sixth at once is refused with when to retry.
    for i in 0..5 {
        v.comment(&format!("burst {i}")).await;
    }
    let e = v.refused(json!({"type": "comment", "text": "sixth"}), "rate_limited").await;
    assert!(e["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0 && ms <= 1000), "{e}");
    // Per room: 12 in all, whoever sends them.
    let mut others = Vec::new();
    for i in 0..3 {
        let mut o = Chat::join(&server, r, &format!("o{i}"), Role::Viewer).await.unwrap();
        for j in 0..2 {
            o.comment(&format!("o{i} {j}")).await;
        }
        others.push(o);
    }
    host.comment("host 1").await; // 5 + 6 + 1 = 12
    let e = others[0].refused(json!({"type": "comment", "text": "one too many"}), "rate_limited").await;
    assert!(e["message"].as_str().is_some_and(|m| m.contains("this live")), "the room's limit says so: {e}");

    // Slow mode: viewers wait, the error says how long; the host does not.
    let server2 = signaling::Server::start(test_config()).await.expect("server");
    let mut host = Chat::join(&server2, r, "host", Role::Host).await.unwrap();
    let mut v = Chat::join(&server2, r, "v", Role::Viewer).await.unwrap();
    v.refused(json!({"type": "chat_settings", "slow_mode_secs": 2}), "not_allowed").await;
    host.refused(json!({"type": "chat_settings", "slow_mode_secs": 301}), "bad_message").await;
    host.send(json!({"type": "chat_settings", "slow_mode_secs": 2})).await;
    let s = v.expect("chat_settings").await;
    assert_eq!((s["comments_enabled"].as_bool(), s["slow_mode_secs"].as_u64()), (Some(true), Some(2)));
    v.comment("first").await;
    let e = v.refused(json!({"type": "comment", "text": "second"}), "slow_mode").await;
    assert!(e["retry_after_ms"].as_u64().is_some_and(|ms| ms > 1000 && ms <= 2000), "{e}");
    host.comment("host a").await;
    host.comment("host b").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    v.comment("after the wait").await;

    // Comments off: everyone hears it; viewers are refused; the host still speaks; back on.
    host.send(json!({"type": "chat_settings", "comments_enabled": false, "slow_mode_secs": 0})).await;
    for p in [&mut v, &mut host] {
        let s = p.expect("chat_settings").await;
        assert_eq!(s["comments_enabled"], false);
    }
    v.refused(json!({"type": "comment", "text": "anyone?"}), "comments_off").await;
    host.comment("only me now").await;
    let late = Chat::join(&server2, r, "late", Role::Viewer).await.unwrap();
    assert_eq!(late.joined["chat"]["comments_enabled"], false, "a joiner sees comments off");
    host.send(json!({"type": "chat_settings", "comments_enabled": true})).await;
    v.expect_where("chat_settings", T, |s| s["comments_enabled"] == true).await;
    v.comment("back").await;
    server.shutdown().await;
    server2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_are_summed_per_window_for_everyone() {
    let server = start_server().await;
    let r = "hearts";
    let mut host = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    let mut tappers = Vec::new();
    for i in 0..3 {
        tappers.push(Chat::join(&server, r, &format!("t{i}"), Role::Viewer).await.unwrap());
    }
    tappers[0].refused(json!({"type": "react", "emoji": "💩"}), "bad_message").await;
    let started = std::time::Instant::now();
    // 3 viewers × 10 hearts + 5 fires, and one viewer far over its 20 per second.
    for t in tappers.iter_mut() {
        for _ in 0..10 {
            t.send(json!({"type": "react", "emoji": "❤️"})).await;
        }
    }
    for _ in 0..5 {
        tappers[1].send(json!({"type": "react", "emoji": "🔥"})).await;
    }
    for _ in 0..40 {
        tappers[2].send(json!({"type": "react", "emoji": "👏"})).await;
    }
    // The host receives sums, not taps: totals reach 30 hearts, 5 fires, 10 claps (t2 had used 10
    // of its 20 on hearts: 10 claps pass, 30 are dropped).
    let mut messages = 0;
    let last = loop {
        let m = host.expect_where("reactions", T, |_| true).await;
        messages += 1;
        if m["totals"]["❤️"] == 30 && m["totals"]["🔥"] == 5 && m["totals"]["👏"] == 10 {
            break m;
        }
        assert!(messages < 20, "sums never added up: {m}");
    };
    let windows = (started.elapsed().as_millis() / 250 + 2) as usize;
    assert!(messages <= windows, "{messages} reactions messages for {windows} windows: one per window at most");
    assert!(last["counts"].is_object());
    // A late joiner gets the totals in its snapshot.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let late = Chat::join(&server, r, "late", Role::Viewer).await.unwrap();
    assert_eq!(late.joined["chat"]["reactions"]["❤️"], 30);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_moderator_messages_are_refused() {
    let server = start_server().await;
    let r = "forge";
    let mut host = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    let mut v = Chat::join(&server, r, "eve", Role::Viewer).await.unwrap();
    let mut m = Chat::join(&server, r, "mod", Role::Moderator).await.unwrap();
    let mut m2 = Chat::join(&server, r, "mod2", Role::Moderator).await.unwrap();
    let c = host.comment("hi").await;
    for forged in [
        json!({"type": "moderate", "action": "ban", "identity": "mod"}),
        json!({"type": "moderate", "action": "timeout", "identity": "host", "minutes": 5}),
        json!({"type": "moderate", "action": "add_moderator", "identity": "eve"}),
        json!({"type": "chat_settings", "comments_enabled": false}),
        json!({"type": "set_blocked_words", "words": ["x"]}),
        json!({"type": "get_blocked_words"}),
        json!({"type": "get_reports"}),
        json!({"type": "resolve_report", "id": 1, "action": "dismiss"}),
        json!({"type": "get_audit_log"}),
        json!({"type": "delete_comment", "id": c["id"]}),
    ] {
        v.refused(forged.clone(), "not_allowed").await;
    }
    // A moderator moderates viewers, not the host, other moderators, itself or studio feeds,
    // and does not appoint moderators or read the audit log.
    m.refused(json!({"type": "moderate", "action": "ban", "identity": "host"}), "not_allowed").await;
    m.refused(json!({"type": "moderate", "action": "ban", "identity": "mod2"}), "not_allowed").await;
    m.refused(json!({"type": "moderate", "action": "ban", "identity": "mod"}), "not_allowed").await;
    m.refused(json!({"type": "moderate", "action": "ban", "identity": "studio:abc"}), "not_allowed").await;
    m.refused(json!({"type": "moderate", "action": "add_moderator", "identity": "eve"}), "not_allowed").await;
    m.refused(json!({"type": "get_audit_log"}), "not_allowed").await;
    m.refused(json!({"type": "delete_comment", "id": c["id"]}), "not_allowed").await; // the host's
    m.refused(json!({"type": "moderate", "action": "timeout", "identity": "eve"}), "bad_message").await; // no minutes
    m.refused(json!({"type": "moderate", "action": "timeout", "identity": "eve", "minutes": 1441}), "bad_message").await;
    m.refused(json!({"type": "moderate", "action": "ban", "identity": ""}), "bad_message").await;
    m.refused(json!({"type": "moderate", "action": "ban", "identity": "eve", "reason": "a\u{0}b"}), "bad_message").await;
    m.refused(json!({"type": "moderate", "action": "obliterate", "identity": "eve"}), "bad_message").await;
    // Nothing happened: eve still comments, nobody was kicked, no moderation was logged.
    v.comment("still here").await;
    m2.expect_where("comment", T, |x| x["comment"]["text"] == "still here").await;
    assert!(!m2.seen.iter().chain(host.seen.iter()).any(|x| x["type"] == "moderation" || x["type"] == "kicked"));
    host.send(json!({"type": "get_audit_log"})).await;
    let log = host.expect("audit_log").await;
    assert_eq!(log["entries"].as_array().map(Vec::len), Some(0), "{log}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_moderation_action_and_what_each_party_sees() {
    let server = start_server().await;
    let r = "mods";
    let mut host = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    let mut pat = Chat::join(&server, r, "pat", Role::Viewer).await.unwrap(); // to be appointed
    let mut troll = Chat::join(&server, r, "troll", Role::Viewer).await.unwrap();
    let mut troll2 = Chat::join(&server, r, "troll", Role::Viewer).await.unwrap(); // a second tab
    let mut shy = Chat::join(&server, r, "shy", Role::Viewer).await.unwrap();
    let mut obs = Chat::join(&server, r, "obs", Role::Viewer).await.unwrap();

    // Appoint: everyone sees pat become a moderator; pat then deletes a viewer's comment.
    pat.refused(json!({"type": "get_reports"}), "not_allowed").await;
    host.send(json!({"type": "moderate", "action": "add_moderator", "identity": "pat"})).await;
    let up = obs.expect("participant_updated").await;
    assert_eq!((up["participant"]["identity"].as_str(), up["participant"]["role"].as_str()), (Some("pat"), Some("moderator")));
    let ack = host.expect("moderation").await;
    assert_eq!(
        (ack["entry"]["action"].as_str(), ack["entry"]["target"].as_str(), ack["entry"]["actor"].as_str()),
        (Some("add_moderator"), Some("pat"), Some("host"))
    );
    pat.expect_where("participant_updated", T, |u| u["participant"]["identity"] == "pat").await;
    let bad = troll.comment("rude thing").await;
    pat.send(json!({"type": "delete_comment", "id": bad["id"]})).await;
    for p in [&mut troll, &mut obs, &mut host, &mut shy] {
        p.expect_where("comment_deleted", T, |v| v["id"] == bad["id"]).await;
    }

    // Reports: obs reports; moderators get it; resolving with delete removes it for everyone.
    let spam = troll.comment("buy followers at example").await;
    obs.send(json!({"type": "report", "comment": spam["id"], "reason": "spam"})).await;
    assert_eq!(obs.expect("reported").await["comment"], spam["id"]);
    obs.send(json!({"type": "report", "comment": spam["id"]})).await; // twice: one report
    obs.expect("reported").await;
    let filed = pat.expect("report_filed").await;
    assert_eq!(
        (filed["report"]["comment"]["text"].as_str(), filed["report"]["reporter"].as_str()),
        (Some("buy followers at example"), Some("obs"))
    );
    host.expect("report_filed").await;
    host.send(json!({"type": "get_reports"})).await;
    let open = host.expect("reports").await;
    assert_eq!(open["reports"].as_array().map(Vec::len), Some(1), "{open}");
    pat.send(json!({"type": "resolve_report", "id": filed["report"]["id"], "action": "delete"})).await;
    host.expect_where("report_resolved", T, |v| v["resolution"] == "deleted").await;
    obs.expect_where("comment_deleted", T, |v| v["id"] == spam["id"]).await;
    let keep = troll.comment("harmless").await;
    obs.send(json!({"type": "report", "comment": keep["id"]})).await;
    let filed = host.expect("report_filed").await;
    host.send(json!({"type": "resolve_report", "id": filed["report"]["id"], "action": "dismiss"})).await;
    pat.expect_where("report_resolved", T, |v| v["resolution"] == "dismissed").await;
    host.send(json!({"type": "get_reports"})).await;
    assert_eq!(host.expect("reports").await["reports"].as_array().map(Vec::len), Some(0));

    // Restrict (shadow): shy sees its own comment; nobody else does.
    host.send(json!({"type": "moderate", "action": "restrict", "identity": "shy"})).await;
    host.expect_where("moderation", T, |v| v["entry"]["action"] == "restrict").await;
    shy.comment("can anyone hear me").await;
    obs.comment("after the shadowed one").await;
    for p in [&mut host, &mut pat] {
        p.expect_where("comment", T, |v| v["comment"]["text"] == "after the shadowed one").await;
        assert!(!p.saw_comment("can anyone hear me", Duration::ZERO).await, "{} saw a restricted comment", p.identity);
    }
    let joiner = Chat::join(&server, r, "joiner", Role::Viewer).await.unwrap();
    assert!(!ids(&joiner.joined["chat"]["comments"]).contains(&"can anyone hear me".to_owned()));
    shy.send(json!({"type": "leave"})).await;
    let shy_again = Chat::join(&server, r, "shy", Role::Viewer).await.unwrap();
    assert!(
        ids(&shy_again.joined["chat"]["comments"]).contains(&"can anyone hear me".to_owned()),
        "the author still sees it after a rejoin"
    );
    host.send(json!({"type": "moderate", "action": "unrestrict", "identity": "shy"})).await;
    host.expect_where("moderation", T, |v| v["entry"]["action"] == "unrestrict").await;

    // Blocked words: the matching comment is hidden from everyone but its author, who is not told.
    host.send(json!({"type": "set_blocked_words", "words": ["scam*", "free money"]})).await;
    assert_eq!(host.expect("blocked_words").await["custom"], true);
    let mut obs2 = Chat::join(&server, r, "obs2", Role::Viewer).await.unwrap();
    obs2.comment("a SCAMMER told me about FREE MONEY").await; // its author sees it as sent
    obs.comment("clean one").await;
    host.expect_where("comment", T, |v| v["comment"]["text"] == "clean one").await;
    assert!(!host.saw_comment("a SCAMMER told me about FREE MONEY", Duration::ZERO).await);
    assert!(!obs2.seen.iter().any(|v| v["type"] == "error"), "the author is not told");

    // Time-out: the target hears until when, is refused with how long, then released early.
    pat.send(json!({"type": "moderate", "action": "timeout", "identity": "obs", "minutes": 5})).await;
    let st = obs.expect("chat_status").await;
    assert!(st["timed_out_until"].as_i64().is_some());
    let e = obs.refused(json!({"type": "comment", "text": "let me talk"}), "timed_out").await;
    assert!(e["retry_after_ms"].as_u64().is_some_and(|ms| ms > 290_000 && ms <= 300_000), "{e}");
    obs.send(json!({"type": "react", "emoji": "❤️"})).await; // reactions stay allowed
    pat.send(json!({"type": "moderate", "action": "untimeout", "identity": "obs"})).await;
    assert!(obs.expect("chat_status").await["timed_out_until"].is_null());
    obs.comment("thanks").await;

    // Ban: both tabs of troll are kicked (message, then close 4003); everyone sees them leave;
    // a fresh token of that identity is refused; unban lets it back.
    host.send(json!({"type": "moderate", "action": "ban", "identity": "troll", "reason": "spam"})).await;
    for t in [&mut troll, &mut troll2] {
        let k = t.expect("kicked").await;
        assert_eq!(k["code"], "banned");
        assert!(k["reason"].as_str().is_some_and(|s| s.contains("spam")));
        let close = next_json(&mut t.ws, T).await.expect("closed");
        assert_eq!(close["close"], 4003, "{close}");
    }
    obs.expect_where("participant_left", T, |_| true).await;
    let (e, close) = Chat::join(&server, r, "troll", Role::Viewer).await.err().expect("banned identity refused");
    assert_eq!((e["code"].as_str(), close["close"].as_u64()), (Some("banned"), Some(1008)));
    host.send(json!({"type": "moderate", "action": "unban", "identity": "troll"})).await;
    host.expect_where("moderation", T, |v| v["entry"]["action"] == "unban").await;
    Chat::join(&server, r, "troll", Role::Viewer).await.expect("unbanned: back in");

    // The standing of every identity, for the moderators' menus; viewers may not ask.
    host.send(json!({"type": "moderate", "action": "ban", "identity": "ghost"})).await; // not in the room
    host.expect_where("moderation", T, |v| v["entry"]["target"] == "ghost").await;
    host.send(json!({"type": "moderate", "action": "restrict", "identity": "obs2"})).await;
    host.expect_where("moderation", T, |v| v["entry"]["target"] == "obs2").await;
    pat.send(json!({"type": "moderate", "action": "timeout", "identity": "obs2", "minutes": 2})).await;
    pat.expect_where("moderation", T, |v| v["entry"]["action"] == "timeout" && v["entry"]["target"] == "obs2").await;
    pat.send(json!({"type": "get_moderation_state"})).await;
    let st = pat.expect("moderation_state").await;
    assert_eq!(
        (st["moderators"].clone(), st["banned"].clone(), st["restricted"].clone()),
        (json!(["pat"]), json!(["ghost"]), json!(["obs2"])),
        "{st}"
    );
    assert_eq!(st["timed_out"][0]["identity"], "obs2");
    let e = obs.refused(json!({"type": "get_moderation_state"}), "not_allowed").await;
    assert_eq!(e["request"], "get_moderation_state", "the error names the message it refuses");
    host.send(json!({"type": "moderate", "action": "unban", "identity": "ghost"})).await;
    host.expect_where("moderation", T, |v| v["entry"]["action"] == "unban" && v["entry"]["target"] == "ghost").await;
    host.send(json!({"type": "moderate", "action": "unrestrict", "identity": "obs2"})).await;
    host.expect_where("moderation", T, |v| v["entry"]["action"] == "unrestrict" && v["entry"]["target"] == "obs2").await;
    pat.send(json!({"type": "moderate", "action": "untimeout", "identity": "obs2"})).await;
    pat.expect_where("moderation", T, |v| v["entry"]["action"] == "untimeout" && v["entry"]["target"] == "obs2").await;

    // Remove the moderator: pat's role goes back to viewer and its powers with it.
    host.send(json!({"type": "moderate", "action": "remove_moderator", "identity": "pat"})).await;
    pat.expect_where("participant_updated", T, |u| u["participant"]["identity"] == "pat" && u["participant"]["role"] == "viewer").await;
    pat.refused(json!({"type": "moderate", "action": "ban", "identity": "obs"}), "not_allowed").await;

    // The audit log has it all, newest first, with who did it.
    host.send(json!({"type": "get_audit_log"})).await;
    let log = host.expect("audit_log").await;
    let actions: Vec<(String, String, String)> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (e["actor"].as_str().unwrap_or("").into(), e["action"].as_str().unwrap_or("").into(), e["target"].as_str().unwrap_or("").into())
        })
        .rev()
        .collect();
    let want = [
        ("host", "add_moderator", "pat"),
        ("pat", "delete_comment", "troll"),
        ("pat", "delete_comment", "troll"),
        ("host", "restrict", "shy"),
        ("host", "unrestrict", "shy"),
        ("host", "blocked_words", ""),
        ("pat", "timeout", "obs"),
        ("pat", "untimeout", "obs"),
        ("host", "ban", "troll"),
        ("host", "unban", "troll"),
        ("host", "ban", "ghost"),
        ("host", "restrict", "obs2"),
        ("pat", "timeout", "obs2"),
        ("host", "unban", "ghost"),
        ("host", "unrestrict", "obs2"),
        ("pat", "untimeout", "obs2"),
        ("host", "remove_moderator", "pat"),
    ];
    let want: Vec<(String, String, String)> = want.iter().map(|(a, b, c)| ((*a).into(), (*b).into(), (*c).into())).collect();
    assert_eq!(actions, want);
    server.shutdown().await;
}

/// The history a joiner gets stops at `chat.history`; open reports stop at
/// `chat.max_open_reports` until a moderator closes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_report_queue_stop_at_their_limits() {
    let mut config = test_config();
    config.chat.history = 3;
    config.chat.max_open_reports = 2;
    config.chat.user_comment_burst = 100;
    let server = signaling::Server::start(config).await.expect("server");
    let r = "edges";
    let mut host = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    let mut v = Chat::join(&server, r, "v", Role::Viewer).await.unwrap();
    let mut posted = Vec::new();
    // 70: more than the room keeps in memory (64), so the first ones live in the store only.
    for i in 0..70 {
        posted.push(host.comment(&format!("c{i}")).await);
    }
    let late = Chat::join(&server, r, "late", Role::Viewer).await.unwrap();
    assert_eq!(ids(&late.joined["chat"]["comments"]), ["c67", "c68", "c69"]);
    for c in &posted[..2] {
        v.send(json!({"type": "report", "comment": c["id"]})).await;
        v.expect("reported").await;
    }
    v.refused(json!({"type": "report", "comment": posted[2]["id"]}), "server_busy").await;
    let filed = host.expect("report_filed").await;
    host.send(json!({"type": "resolve_report", "id": filed["report"]["id"], "action": "dismiss"})).await;
    host.expect("report_resolved").await;
    v.send(json!({"type": "report", "comment": posted[2]["id"]})).await;
    v.expect("reported").await;
    // A comment older than what the room keeps in memory is still found (in the store): it can
    // be reported and deleted.
    host.send(json!({"type": "delete_comment", "id": posted[0]["id"]})).await;
    v.expect_where("comment_deleted", T, |d| d["id"] == posted[0]["id"]).await;
    server.shutdown().await;
}

/// A restart keeps comments, bans, moderators and stream keys (the store is a file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_comments_bans_moderators_and_stream_keys() {
    let dir = std::env::temp_dir().join(format!("onair-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = test_config();
    config.store.url = format!("sqlite:{}", dir.join("onair.db").display());
    restart_keeps_the_conversation(config).await;
    assert!(dir.join("onair.db").exists(), "the database file was created");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same with the store on PostgreSQL (a server the test starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_conversation_on_postgresql() {
    let pg = common::pg::Pg::start();
    let mut config = test_config();
    config.store.url = pg.database("onair_chat_restart").await;
    restart_keeps_the_conversation(config).await;
}

async fn restart_keeps_the_conversation(config: signaling::config::Config) {
    let r = "kept";
    let server = signaling::Server::start(config.clone()).await.expect("server");
    let mut host = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    let mut v = Chat::join(&server, r, "v", Role::Viewer).await.unwrap();
    v.comment("remember me").await;
    host.send(json!({"type": "moderate", "action": "ban", "identity": "bad"})).await;
    host.expect("moderation").await;
    host.send(json!({"type": "moderate", "action": "add_moderator", "identity": "v"})).await;
    host.expect("moderation").await;
    host.send(json!({"type": "chat_settings", "slow_mode_secs": 10})).await;
    host.expect("moderation").await;
    host.send(json!({"type": "create_stream_key", "label": "OBS"})).await;
    let key = host.expect("stream_key").await["key"].as_str().expect("key").to_owned();
    drop((host, v));
    server.shutdown().await;

    let server = signaling::Server::start(config).await.expect("restart");
    let (e, _) = Chat::join(&server, r, "bad", Role::Viewer).await.err().expect("still banned");
    assert_eq!(e["code"], "banned");
    let v = Chat::join(&server, r, "v", Role::Viewer).await.unwrap();
    assert_eq!(v.joined["participant"]["role"], "moderator", "still a moderator");
    assert_eq!(ids(&v.joined["chat"]["comments"]), ["remember me"]);
    assert_eq!(v.joined["chat"]["slow_mode_secs"], 10);
    let k = server.state.store.verify_stream_key(&key).await.expect("the key still verifies");
    assert_eq!((k.room.as_str(), k.label.as_str()), (r, "OBS"));
    server.shutdown().await;
}

/// The host ending the live ends it in the store too: the room's next live starts clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_live_leaves_its_bans_behind() {
    const LINGER: u64 = 2;
    let mut config = test_config();
    config.room.empty_timeout_secs = 0;
    config.room.ended_linger_secs = LINGER;
    let server = signaling::Server::start(config).await.expect("server");
    let r = "again";
    let mut host = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    host.send(json!({"type": "moderate", "action": "ban", "identity": "bad"})).await;
    host.expect("moderation").await;
    host.comment("old live").await;
    host.send(json!({"type": "end_room"})).await;
    host.expect("room_ended").await;
    drop(host);
    // The reaper closes the ended room within a fraction of a second; for `ended_linger_secs`
    // a viewer is then told the live ended; past it, the name opens the room's next live.
    let mut closed = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if server.state.rooms.get(r).is_none() {
            closed = Some(std::time::Instant::now());
            break;
        }
    }
    let closed = closed.expect("the ended room closes");
    let (early, _) = Chat::join(&server, r, "bad", Role::Viewer).await.err().expect("a viewer right after the end");
    assert_eq!(early["code"], "room_ended", "{early}");
    tokio::time::sleep(Duration::from_secs(LINGER + 1).saturating_sub(closed.elapsed())).await;
    let c = Chat::join(&server, r, "bad", Role::Viewer).await.expect("the next live does not know the old ban");
    assert_eq!(ids(&c.joined["chat"]["comments"]), Vec::<String>::new());
    // (A dropped socket would be held for its resume grace: leave.)
    let mut c = c;
    c.send(json!({"type": "leave"})).await;
    assert!(eventually(Duration::from_secs(5), || server.state.rooms.get(r).is_none()).await, "the viewer left: its room closes");
    drop(c);

    // The host need not wait: its join reopens the name at once.
    let mut host = Chat::join(&server, r, "host", Role::Host).await.unwrap();
    host.send(json!({"type": "end_room"})).await;
    host.expect("room_ended").await;
    drop(host);
    assert!(eventually(Duration::from_secs(5), || server.state.rooms.get(r).is_none()).await, "the second live's room closes");
    let (early, _) = Chat::join(&server, r, "v", Role::Viewer).await.err().expect("a viewer right after the end");
    assert_eq!(early["code"], "room_ended");
    let host = Chat::join(&server, r, "host", Role::Host).await.expect("the host reopens the room during the linger");
    assert_eq!(host.joined["room"]["state"], "live", "{}", host.joined["room"]);
    server.shutdown().await;
}

/// Garbage in the conversation's messages: clear errors, the connection and the room go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chat_messages_get_clear_errors() {
    let server = start_server().await;
    let mut v = Chat::join(&server, "junk", "v", Role::Viewer).await.unwrap();
    for junk in [
        json!({"type": "comment"}),
        json!({"type": "comment", "text": 5}),
        json!({"type": "delete_comment", "id": "x"}),
        json!({"type": "delete_comment", "id": 1e300}),
        json!({"type": "react"}),
        json!({"type": "report", "comment": -1, "reason": "x".repeat(201)}),
        json!({"type": "set_blocked_words", "words": "all"}),
    ] {
        v.refused(junk, "bad_message").await;
    }
    v.refused(json!({"type": "report", "comment": 99}), "not_found").await;
    v.send(json!({"type": "ping"})).await;
    v.expect("pong").await;
    v.comment("still fine").await;
    server.shutdown().await;
    let _ = StreamExt::next(&mut v.ws).await;
}
