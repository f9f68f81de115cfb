//! The store's contract, run against both databases it supports: SQLite (a file) and
//! PostgreSQL (a real server, started by the test: tests/common/pg.rs). The same migrations
//! create both; every group of methods writes, reads back, and survives a reopen of the store
//! (a restart): stream keys, lives and their conversation (comments, moderation flags, settings,
//! reactions, reports, the audit log), payments and refunds, products with images, counters and
//! the pin, KPIs and problem reports, scheduled lives and reminders, the webhook log, archive
//! entries and their recorded files.

mod common;
use common::pg::Pg;
use signaling::config::Config;
use signaling::store::*;

fn config(url: &str) -> Config {
    let mut c = Config::default();
    c.store.url = url.to_owned();
    c.rtmp.keys_file = String::new();
    c
}

async fn contract(url: &str) {
    let store = Store::open(&config(url)).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let now = 1_795_700_000_000;

    // Stream keys: minted, verified by the key, revoked.
    let k = store.mint_stream_key("r", "OBS", KeySeat::Host).await.unwrap();
    assert_eq!(store.verify_stream_key(&k.key).await.unwrap().id, k.view.id);
    let k2 = store.mint_stream_key("r", "spare", KeySeat::Cohost).await.unwrap();
    assert!(store.revoke_stream_key(Some("r"), &k2.view.id).await.unwrap());
    assert!(store.revoke_stream_key(Some("r"), &k2.view.id).await.unwrap(), "revoking again is no error");
    assert!(!store.revoke_stream_key(Some("other"), &k.view.id).await.unwrap(), "not another room's");
    assert!(!store.revoke_stream_key(None, "k_404").await.unwrap());
    assert!(store.verify_stream_key(&k2.key).await.is_err());
    assert_eq!(store.stream_keys(Some("r")).await.unwrap().len(), 2);

    // A live and its conversation.
    let live = store.open_live("r", 50).await.unwrap();
    assert!(live.comments_enabled && live.recent.is_empty());
    for (i, body) in ["first", "second", "third"].iter().enumerate() {
        let c = CommentRow {
            id: store.next_id(),
            identity: format!("u{i}"),
            name: format!("User {i}"),
            role: "viewer".into(),
            body: body.to_string(),
            created_at: now + i as i64,
            visibility: if i == 2 { Visibility::Restricted } else { Visibility::Public },
        };
        store.add_comment(&live.id, &c).await.unwrap();
    }
    let again = store.open_live("r", 50).await.unwrap();
    assert_eq!(again.id, live.id, "the same live until it ends");
    assert_eq!(again.recent.iter().map(|c| c.body.as_str()).collect::<Vec<_>>(), ["first", "second", "third"]);
    assert_eq!(again.recent[2].visibility, Visibility::Restricted);
    let first = again.recent[0].id;
    assert!(store.delete_comment(&live.id, first, "mod").await.unwrap());
    assert!(!store.delete_comment(&live.id, first, "mod").await.unwrap());
    assert_eq!(store.comment(&live.id, first).await.unwrap().map(|(_, deleted)| deleted), Some(true));
    store.set_flag(&live.id, "bad", Flag::Banned(true)).await.unwrap();
    store.set_flag(&live.id, "bad", Flag::Timeout(Some(now + 60_000))).await.unwrap();
    store.set_flag(&live.id, "shadow", Flag::Restricted(true)).await.unwrap();
    store.set_flag(&live.id, "helper", Flag::Moderator(Some(true))).await.unwrap();
    store.save_chat_settings(&live.id, false, 30, Some(&["spam".to_owned()])).await.unwrap();
    store.add_reactions(&live.id, &[("heart".into(), 5), ("fire".into(), 2)]).await.unwrap();
    store.add_reactions(&live.id, &[("heart".into(), 3)]).await.unwrap();
    let report = ReportRow { id: store.next_id(), comment: again.recent[1].id, reporter: "u0".into(), reason: "spam".into(), at: now };
    store.add_report(&live.id, &report).await.unwrap();
    store
        .audit(
            &live.id,
            &AuditEntry {
                id: store.next_id(),
                actor: "host".into(),
                action: "ban".into(),
                target: "bad".into(),
                detail: String::new(),
                at: now,
            },
        )
        .await
        .unwrap();

    // Payments and refunds; products, images, counters, the pin.
    let pay = PaymentRow {
        id: "pay_1".into(),
        live_id: live.id.clone(),
        room: "r".into(),
        identity: "fan".into(),
        name: "Fan".into(),
        tier: 2,
        amount_minor: 499,
        currency: "USD".into(),
        received_at: now,
        refunded_at: None,
    };
    assert_eq!(store.record_payment(&pay).await.unwrap(), Recorded::New);
    assert!(matches!(store.record_payment(&pay).await.unwrap(), Recorded::Known(_)));
    let mut pay2 = pay.clone();
    pay2.id = "pay_2".into();
    store.record_payment(&pay2).await.unwrap();
    assert!(matches!(store.refund("pay_2", "re_1").await.unwrap(), Refunded::Done(_)));
    assert!(matches!(store.refund("pay_2", "re_1").await.unwrap(), Refunded::Known(_)));
    assert!(store.refund("pay_1", "re_1").await.is_err(), "a refund id is used once");
    let product = ProductRow {
        id: "p1".into(),
        room: "r".into(),
        title: "Jacket".into(),
        price_minor: 4999,
        currency: "EUR".into(),
        image_url: String::new(),
        checkout_url: "https://shop.example/p/1".into(),
    };
    store.add_product(&product, 10).await.unwrap();
    let png = b"\x89PNG\r\n\x1a\n-bytes-\0\xff".to_vec();
    let v1 = store.set_product_image("p1", "image/png", &png).await.unwrap();
    assert!(store.set_product_image("p1", "image/png", &png).await.unwrap() > v1, "a new upload, a new version");
    store.add_product_stats(&live.id, &[("p1".into(), 10, 2)]).await.unwrap();
    store.add_product_stats(&live.id, &[("p1".into(), 5, 1)]).await.unwrap();
    store.set_pinned(&live.id, Some("p1")).await.unwrap();

    // KPIs and problem reports.
    store
        .add_problem(&ProblemRow {
            id: store.next_id(),
            live_id: live.id.clone(),
            room: "r".into(),
            identity: "u1".into(),
            tag: "frozen".into(),
            text: "it froze".into(),
            qoe: serde_json::json!({"freezes": 2}),
            context: serde_json::json!({"browser": "x"}),
            at: now,
        })
        .await
        .unwrap();

    // Scheduled lives and reminders; the webhook log.
    let s = ScheduleRow {
        id: "s_1".into(),
        room: "r".into(),
        title: "Launch".into(),
        description: "two\nlines".into(),
        starts_at: now + 3_600_000,
        profile: None,
        state: "scheduled".into(),
        live_id: None,
        banner_version: None,
        created_by: "host".into(),
        created_at: now,
        updated_at: now,
    };
    store.add_schedule(&s).await.unwrap();
    assert!(store.add_reminder("s_1", "fan", now).await.unwrap());
    assert!(!store.add_reminder("s_1", "fan", now).await.unwrap());
    assert_eq!(store.set_banner("s_1", "image/png", &png, now).await.unwrap(), 1);
    let due = store.due_reminders(now + 3_600_000 - 10 * 60_000, 15 * 60_000).await.unwrap();
    assert_eq!(due.iter().map(|d| d.when).collect::<Vec<_>>(), ["soon"]);
    assert!(store.due_reminders(now + 3_600_000 - 10 * 60_000, 15 * 60_000).await.unwrap().is_empty(), "once");
    let mut moved = s.clone();
    moved.starts_at += 86_400_000;
    assert!(store.update_schedule(&moved, true, now).await.unwrap());
    assert_eq!(
        store.due_reminders(moved.starts_at + 1, 15 * 60_000).await.unwrap().iter().map(|d| d.when).collect::<Vec<_>>(),
        ["now"],
        "a new time re-arms them"
    );
    let linked = store.link_schedule("r", &live.id, moved.starts_at, 0, 3_600_000).await.unwrap();
    assert_eq!(linked.map(|l| l.state), Some("live".into()));
    store.add_delivery("msg_1", "test", "http://127.0.0.1:9/", "{}", now).await.unwrap();
    store.add_delivery("msg_2", "test", "http://127.0.0.1:9/", "{}", now + 1).await.unwrap();
    assert_eq!(store.next_delivery_at().await.unwrap(), Some(now));
    assert_eq!(store.due_deliveries(now, 10).await.unwrap().len(), 1);
    store.finish_attempt("msg_1", "failed", 3, None, Some(503), Some("HTTP 503"), now).await.unwrap();
    store.finish_attempt("msg_2", "pending", 1, Some(now + 5000), None, Some("refused"), now).await.unwrap();
    assert!(store.redeliver("msg_1", now + 10).await.unwrap());
    // The archive: an entry per live, its recorded files (the second write of a file updates
    // it: the recorder reports a file when it starts and again when it ends).
    let day = 86_400_000;
    let entry = |id: &str, room: &str, started_at: i64, expires_at: i64| ArchiveRow {
        id: id.into(),
        room: room.into(),
        live_id: live.id.clone(),
        state: "recording".into(),
        started_at,
        ended_at: None,
        video_name: None,
        video_bytes: None,
        error: None,
        expires_at,
    };
    store.add_archive(&entry("a_1", "r", now, now + 30 * day), now).await.unwrap();
    store.add_archive(&entry("a_2", "r", now + 1, now + 30 * day), now).await.unwrap();
    store.add_archive(&entry("a_old", "other", now - 40 * day, now - 10 * day), now).await.unwrap();
    assert!(store.add_archive(&entry("a_1", "r", now, now), now).await.is_err(), "ids are unique");
    let mut f = ArchiveFile {
        name: "host-1.mp4".into(),
        identity: "host".into(),
        display_name: "Höst ✓".into(),
        started_at: Some(now),
        ended_at: None,
        bytes: 0,
        video_frames: 0,
        audio_frames: 0,
        video_codec: Some("vp8".into()),
        width: Some(1280),
        height: Some(720),
        error: None,
    };
    store.add_archive_file("a_1", &f).await.unwrap();
    f.ended_at = Some(now + 60_000);
    (f.bytes, f.video_frames, f.audio_frames) = (7_260_000, 1800, 3000);
    store.add_archive_file("a_1", &f).await.unwrap();
    let cam = ArchiveFile {
        name: "cohost-1.mp4".into(),
        identity: "co".into(),
        started_at: Some(now + 5),
        error: Some("disk full".into()),
        ..f.clone()
    };
    store.add_archive_file("a_1", &cam).await.unwrap();
    assert_eq!(store.unfinished_archives().await.unwrap().len(), 3);
    store.set_archive_state("a_1", "processing", Some(now + 60_000), None, None).await.unwrap();
    store.set_archive_state("a_1", "ready", None, Some(("live.mp4", 9_000_000)), None).await.unwrap();
    store.set_archive_state("a_old", "raw_only", Some(now - 40 * day + 1), None, Some("ffmpeg is not installed")).await.unwrap();
    assert_eq!(store.expired_archives(now).await.unwrap().iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["a_old"]);
    assert!(store.expired_archives(now - 11 * day).await.unwrap().is_empty(), "not before it expires");
    assert!(store.delete_archive("a_2").await.unwrap());
    assert!(!store.delete_archive("a_2").await.unwrap());
    store.close().await;

    // Reopened (a restart): everything is there.
    let store = Store::open(&config(url)).await.unwrap();
    let back = store.open_live("r", 50).await.unwrap();
    assert_eq!(back.id, live.id);
    assert!(!back.comments_enabled);
    assert_eq!((back.slow_mode_secs, back.blocked_words.clone()), (30, Some(vec!["spam".to_owned()])));
    assert_eq!(back.recent.len(), 2, "the deleted comment is not history");
    let bad = &back.members["bad"];
    assert!(bad.banned && !bad.restricted && bad.timeout_until == Some(now + 60_000), "{bad:?}");
    assert!(back.members["shadow"].restricted);
    assert_eq!(back.members["helper"].moderator, Some(true));
    assert_eq!((back.reactions.get("heart"), back.reactions.get("fire")), (Some(&8), Some(&2)));
    assert_eq!(back.open_reports.len(), 1);
    assert!(store.resolve_report(&live.id, report.id, "mod", "dismissed").await.unwrap());
    assert_eq!(store.audit_log(&live.id, 10).await.unwrap().len(), 1);
    assert_eq!(store.stream_keys(Some("r")).await.unwrap().iter().filter(|k| k.revoked_at.is_none()).count(), 1);
    let payments = store.payments_of(&live.id).await.unwrap();
    assert_eq!(payments.iter().map(|p| (p.id.as_str(), p.refunded_at.is_some())).collect::<Vec<_>>(), [("pay_1", false), ("pay_2", true)]);
    assert_eq!(store.product_image("p1").await.unwrap(), Some(("image/png".into(), png.clone())));
    assert_eq!(store.product_stats(&live.id).await.unwrap()["p1"], (15, 3));
    assert_eq!(store.pinned(&live.id, "r").await.unwrap().map(|p| p.title), Some("Jacket".into()));
    assert_eq!(store.problems(10).await.unwrap().0[0].qoe["freezes"], 2);
    let sched = store.schedule("s_1").await.unwrap().unwrap();
    assert_eq!((sched.state.as_str(), sched.live_id.as_deref(), sched.banner_version), ("live", Some(live.id.as_str()), Some(1)));
    assert_eq!(store.reminders("s_1").await.unwrap(), ["fan"]);
    assert_eq!(store.banner("s_1").await.unwrap().map(|b| b.1), Some(png.clone()));
    let log = store.deliveries(None, Some("test"), None, 10).await.unwrap();
    assert_eq!(
        log.iter().map(|d| (d.id.as_str(), d.state.as_str(), d.attempts)).collect::<Vec<_>>(),
        [("msg_2", "pending", 1), ("msg_1", "pending", 0)]
    );
    assert_eq!(store.deliveries(Some("pending"), None, Some("msg_2"), 10).await.unwrap().len(), 1, "paged by id");
    let a1 = store.archive("a_1").await.unwrap().unwrap();
    assert_eq!(
        (a1.state.as_str(), a1.ended_at, a1.video_name.as_deref(), a1.video_bytes),
        ("ready", Some(now + 60_000), Some("live.mp4"), Some(9_000_000))
    );
    assert_eq!(store.archive("a_2").await.unwrap(), None);
    assert_eq!(store.archives(Some("r"), 10).await.unwrap().iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["a_1"]);
    assert_eq!(store.archives(None, 10).await.unwrap().iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["a_1", "a_old"], "newest first");
    assert_eq!(store.archives(None, 1).await.unwrap().len(), 1, "limited");
    assert_eq!(store.archive("a_old").await.unwrap().and_then(|a| a.error), Some("ffmpeg is not installed".into()));
    assert!(store.unfinished_archives().await.unwrap().is_empty());
    let files = store.archive_files("a_1").await.unwrap();
    assert_eq!(files, [f.clone(), cam.clone()], "in the order they started, the first one updated");
    assert!(store.delete_archive("a_1").await.unwrap());
    assert!(store.archive_files("a_1").await.unwrap().is_empty(), "its files' rows go with it");
    // The live ends; KPIs stay with it; the room's next live is a new one.
    store.save_kpis(&live.id, "standard", &serde_json::json!({"viewers": 3})).await.unwrap();
    store.end_live(&live.id).await.unwrap();
    assert_eq!(store.end_schedule(&live.id, now).await.unwrap().map(|s| s.state), Some("ended".into()));
    assert_eq!(store.past_lives(5).await.unwrap()[0].kpis["viewers"], 3);
    assert_ne!(store.open_live("r", 50).await.unwrap().id, live.id);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("onair-store-sqlite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    contract(&format!("sqlite:{}", dir.join("onair.db").display())).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_on_postgresql() {
    let pg = Pg::start();
    let url = pg.database("onair_store").await;
    assert_eq!(Store::open(&config(&url)).await.map(|s| s.backend()).ok(), Some(Backend::Postgres));
    contract(&url).await;
}
