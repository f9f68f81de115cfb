//! A synthetic three-layer (q/h/f) publisher through the real SFU: each viewer gets the layer
//! its quality choice and video size ask for, on one continuous stream; dynacast pauses the top
//! layer when nobody needs it and resumes it when somebody does.

mod common;
use common::*;
use serde_json::{Value, json};
use signaling::auth::Role;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The tests that shape a viewer's path run one at a time. The relay is a userspace task: on a
/// machine whose two cores serve four test servers at once (and whatever else runs there) it
/// falls behind, and datagrams it reads late look to it like a queue overflow and are dropped —
/// loss the path does not have, which the estimator rightly answers with cuts. Seen with all
/// four tests side by side: the temporal test's 800 kbit/s path lost 18–47 % while the server
/// sent it under 630 kbit/s, and its viewer fell to the middle layer (3 runs in 8; 0 in 3 with
/// the fallback test left out). One at a time it still happens when the machine is loaded far
/// beyond its cores (load average 6–12 from other work: 2 runs in 10, each with a queueing delay
/// the 100 ms relay queue cannot hold, 190–240 ms: the relay or the client stalled).
static SHAPED_PATH: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The layer tests below check layer choices on paths that carry the low layer (400 and
/// 800 kbit/s); the audio-only fallback is not theirs to test. On those paths it never fires
/// unless a stall of the harness (above) cuts the estimate under the low layer and keeps it
/// there for 3 s — seen once in 10 loaded runs (400 kbit/s path, estimate 132 kbit/s after a
/// 193 ms queueing delay): the viewer then went audio only, and the layer checks read that as
/// a failure. So their viewers have it off, as a profile without the fallback would.
fn without_fallback(server: &signaling::Server, viewer: &Client) {
    let id = viewer.id.parse::<sfu::ParticipantId>().expect("a participant id");
    server.sfu().set_audio_only_fallback(id, false).expect("the viewer is known to the SFU");
}

async fn layer(c: &mut Client) -> Option<u64> {
    c.send(json!({"type": "get_stats"}));
    let s: Value = c.wait_for("stats", Duration::from_secs(2)).await?;
    s["tracks"].as_array()?.first()?["layer"].as_u64()
}

async fn layer_within(c: &mut Client, want: u64, within: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if layer(c).await == Some(want) {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn viewers_get_the_layer_they_ask_for_and_dynacast_follows() {
    let server = start_server().await;
    let mut host = join(&server, &token(&server, "sim", "host", Role::Host)).await.unwrap();
    host.publish_simulcast([100_000, 300_000, 800_000]).await.expect("simulcast publish");
    let mut full = join(&server, &token(&server, "sim", "full", Role::Viewer)).await.unwrap();
    let t = layer_within(&mut full, 2, Duration::from_secs(10)).await;
    eprintln!("unconstrained viewer on the top layer after {t:?}");
    assert!(t.is_some(), "an unconstrained viewer gets the top layer");

    let mut low = join(&server, &token(&server, "sim", "low", Role::Viewer)).await.unwrap();
    low.send(json!({"type": "quality", "quality": "low"}));
    assert!(layer_within(&mut low, 0, Duration::from_secs(5)).await.is_some(), "quality low → layer 0");
    let mut thumb = join(&server, &token(&server, "sim", "thumb", Role::Viewer)).await.unwrap();
    assert!(layer_within(&mut thumb, 2, Duration::from_secs(8)).await.is_some(), "starts high");
    let track = {
        thumb.send(json!({"type": "get_stats"}));
        thumb.wait_for("stats", Duration::from_secs(2)).await.unwrap()["tracks"][0]["track"].clone()
    };
    thumb.send(json!({"type": "video_size", "track": track, "width": 160, "height": 90}));
    let t = layer_within(&mut thumb, 0, Duration::from_secs(5)).await;
    eprintln!("160x90 viewer down to the low layer after {t:?}");
    assert!(t.is_some(), "a 160x90 video gets the 180p layer");
    // The stream each viewer sees is one continuous stream across those switches. A viewer that
    // started at once from the kept picture may have had little time on its layer yet (the low
    // one carries ≈ 15 packets a second): each stream gets up to 5 s to show it flows.
    for c in [&full, &low, &thumb] {
        let t0 = Instant::now();
        while c.media_snapshot().values().any(|s| s.packets <= 20) && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for s in c.media_snapshot().values() {
            assert_eq!(s.ssrcs.len(), 1, "one SSRC");
            assert!(s.packets > 20, "{} packets of {} after {:?}", s.packets, s.kind, t0.elapsed());
        }
    }

    // Dynacast: the full-size viewer leaves; only low-layer viewers remain → the publisher is
    // asked to pause the layers above q within 3 s; a full-size viewer returns → resumed.
    full.close().await;
    let t0 = Instant::now();
    while host.simulcast_max_layer.load(Ordering::SeqCst) != 0 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let paused = t0.elapsed();
    eprintln!("top layer paused after {paused:?}");
    assert_eq!(host.simulcast_max_layer.load(Ordering::SeqCst), 0);
    assert!(paused <= Duration::from_secs(3), "paused within 3 s ({paused:?})");
    let t0 = Instant::now();
    let mut again = join(&server, &token(&server, "sim", "again", Role::Viewer)).await.unwrap();
    while host.simulcast_max_layer.load(Ordering::SeqCst) != 2 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resumed = t0.elapsed();
    eprintln!("top layer resumed after {resumed:?}");
    assert!(resumed <= Duration::from_secs(3), "resumed within 3 s ({resumed:?})");
    assert!(layer_within(&mut again, 2, Duration::from_secs(10)).await.is_some(), "and the new viewer gets it");
    for c in [low, thumb, again, host] {
        c.close().await;
    }
    server.shutdown().await;
}

/// Bandwidth: a viewer behind a 400 kbit/s bottleneck (a userspace relay with a 100 ms drop-tail
/// queue; the publisher sends 150 k / 500 k / 1.2 M) settles on the low layer within 5 s and then
/// loses under 2 % of what is sent to it; when the limit is lifted it is back on the top layer
/// within 10 s. Its stream stays one continuous stream throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_narrow_path_settles_low_and_climbs_back_when_it_widens() {
    let _one_at_a_time = SHAPED_PATH.lock().await;
    let server = start_server().await;
    let mut host = join(&server, &token(&server, "narrow", "host", Role::Host)).await.unwrap();
    host.publish_simulcast([150_000, 500_000, 1_200_000]).await.expect("simulcast publish");
    let relay = ShapedRelay::start(server.sfu().local_addr(), Duration::from_millis(100)).await;
    let mut viewer = join_via(&server, &token(&server, "narrow", "viewer", Role::Viewer), Some(relay.addr)).await.unwrap();
    without_fallback(&server, &viewer);
    let t = layer_within(&mut viewer, 2, Duration::from_secs(10)).await;
    eprintln!("unlimited: top layer after {t:?}");
    assert!(t.is_some(), "an unconstrained viewer gets the top layer");
    tokio::time::sleep(Duration::from_secs(2)).await;

    relay.set_rate(400_000);
    let limited = Instant::now();
    let settled = layer_within(&mut viewer, 0, Duration::from_secs(5)).await;
    let stats = |v: &Value| format!("estimate {} bit/s, path {}", v["bandwidth_bps"], v["path"]);
    viewer.send(json!({"type": "get_stats"}));
    let s = viewer.wait_for("stats", Duration::from_secs(2)).await.unwrap();
    eprintln!("400 kbit/s: low layer after {settled:?}; {}", stats(&s));
    assert!(settled.is_some(), "settles on the low layer within 5 s");
    // Settled: over the next 5 s the layer stays low and under 2 % of datagrams are lost.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (d0, p0) = relay.counts();
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(5) {
        viewer.send(json!({"type": "get_stats"}));
        let s = viewer.wait_for("stats", Duration::from_secs(2)).await.unwrap_or_default();
        let now_layer = s["tracks"][0]["layer"].as_u64();
        assert_eq!(
            now_layer,
            Some(0),
            "stays on the low layer while the path is narrow ({:?} after the limit; stats {s})",
            limited.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (d1, p1) = relay.counts();
    let loss = (d1 - d0) as f64 / ((d1 - d0) + (p1 - p0)).max(1) as f64;
    viewer.send(json!({"type": "get_stats"}));
    let s = viewer.wait_for("stats", Duration::from_secs(2)).await.unwrap();
    eprintln!(
        "settled {:?} after the limit: {} of {} datagrams dropped ({:.2} %); {}",
        limited.elapsed(),
        d1 - d0,
        (d1 - d0) + (p1 - p0),
        loss * 100.0,
        stats(&s)
    );
    assert!(p1 - p0 > 100, "media kept flowing ({} datagrams)", p1 - p0);
    assert!(loss < 0.02, "sustained loss {:.2} % ≥ 2 %", loss * 100.0);
    // Stats say why: the estimate and this track's share of it are under the narrow path.
    let budget = s["tracks"][0]["budget_bps"].as_u64();
    assert!(budget.is_some_and(|b| b < 400_000), "track budget {budget:?} under 400 kbit/s");
    assert!(s["bandwidth_bps"].as_u64().is_some_and(|b| b < 400_000));

    relay.set_rate(0);
    let t = layer_within(&mut viewer, 2, Duration::from_secs(10)).await;
    viewer.send(json!({"type": "get_stats"}));
    let s = viewer.wait_for("stats", Duration::from_secs(2)).await.unwrap();
    eprintln!("limit lifted: top layer after {t:?}; {}", stats(&s));
    assert!(t.is_some(), "climbs back to the top layer within 10 s");
    for m in viewer.media_snapshot().values() {
        assert_eq!(m.ssrcs.len(), 1, "one SSRC across every switch");
    }
    drop(relay);
    viewer.close().await;
    host.close().await;
    server.shutdown().await;
}

/// VP8 temporal layers go before a spatial layer: a viewer whose path carries the top layer only
/// at its base frame rate (800 kbit/s; the top layer is 1.2 Mbit/s, 40 % of it in TID 0) keeps
/// the top layer with the upper temporal layers dropped — whole frames, no sequence gaps — and
/// gets its full frame rate back when the path widens.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn temporal_layers_are_dropped_before_a_spatial_layer() {
    let _one_at_a_time = SHAPED_PATH.lock().await;
    let server = start_server().await;
    let mut host = join(&server, &token(&server, "temporal", "host", Role::Host)).await.unwrap();
    host.publish_simulcast_with([150_000, 500_000, 1_200_000], true).await.expect("simulcast publish");
    let relay = ShapedRelay::start(server.sfu().local_addr(), Duration::from_millis(100)).await;
    let mut viewer = join_via(&server, &token(&server, "temporal", "viewer", Role::Viewer), Some(relay.addr)).await.unwrap();
    without_fallback(&server, &viewer);
    assert!(layer_within(&mut viewer, 2, Duration::from_secs(10)).await.is_some(), "top layer first");
    tokio::time::sleep(Duration::from_secs(2)).await;

    relay.set_rate(800_000);
    let track_state = |s: &Value| (s["tracks"][0]["layer"].as_u64(), s["tracks"][0]["max_temporal"].as_u64());
    let t0 = Instant::now();
    let mut shed = None;
    while t0.elapsed() < Duration::from_secs(8) {
        viewer.send(json!({"type": "get_stats"}));
        if let Some(s) = viewer.wait_for("stats", Duration::from_secs(2)).await
            && let (Some(2), Some(t)) = track_state(&s)
            && t < 2
        {
            shed = Some((t0.elapsed(), t, s["bandwidth_bps"].clone()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("800 kbit/s: top layer at reduced frame rate: {shed:?}");
    let (_, max_temporal, _) = shed.expect("the top layer stays, with fewer temporal layers");
    // Settled: over 3 s, no gaps in what reaches the viewer, only allowed temporal layers.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let video = |v: &Client| v.media_snapshot().into_values().find(|t| t.kind == "video").unwrap();
    let (hi0, raw0) = {
        let m = video(&viewer);
        (*m.seqs.last().unwrap(), m.raw.len())
    };
    let (d0, p0) = relay.counts();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (d1, p1) = relay.counts();
    viewer.send(json!({"type": "get_stats"}));
    let s = viewer.wait_for("stats", Duration::from_secs(2)).await.unwrap();
    let m = video(&viewer);
    // Packets first sent in the window (a late repair of an older packet is not).
    let tids: Vec<u8> = m.raw[raw0..]
        .iter()
        .filter(|p| (p.seq.wrapping_sub(hi0 as u16) as i16) > 0)
        .filter_map(|p| sfu::client::vp8_temporal(&p.payload).map(|t| t.tid))
        .collect();
    // Sequence numbers the viewer never got (after NACK repair; the last 30 may still be on
    // their way back).
    let hi1 = m.seqs.last().unwrap().saturating_sub(30);
    let span = hi1.saturating_sub(hi0);
    let missing = span - m.seqs.range(hi0 + 1..=hi1).count() as u64;
    eprintln!(
        "settled: layer/max_temporal {:?}, relay dropped {} of {} datagrams (probe trains included), {missing} of {span} sequence numbers missing at the viewer, TIDs seen {:?}",
        track_state(&s),
        d1 - d0,
        (d1 - d0) + (p1 - p0),
        (0..3u8).map(|t| tids.iter().filter(|&&x| x == t).count()).collect::<Vec<_>>()
    );
    assert_eq!(track_state(&s).0, Some(2), "still the top layer (stats {s})");
    assert!(track_state(&s).1.is_some_and(|t| t < 2), "still at a reduced frame rate");
    assert!(span > 100, "media kept flowing");
    assert!((missing as f64) < 0.02 * span as f64, "dropped frames leave no sequence gaps, and loss stays under 2 %");
    assert!(!tids.is_empty() && tids.iter().all(|&t| t <= max_temporal.max(1) as u8), "only allowed temporal layers: {tids:?}");

    relay.set_rate(0);
    let t1 = Instant::now();
    let mut full = None;
    while t1.elapsed() < Duration::from_secs(10) {
        viewer.send(json!({"type": "get_stats"}));
        if let Some(s) = viewer.wait_for("stats", Duration::from_secs(2)).await
            && track_state(&s) == (Some(2), Some(2))
        {
            full = Some(t1.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("limit lifted: full frame rate after {full:?}");
    assert!(full.is_some(), "full frame rate again within 10 s");
    drop(relay);
    viewer.close().await;
    host.close().await;
    server.shutdown().await;
}

/// Issue 12's fallback rule: a viewer whose path cannot carry even the lowest layer (60 kbit/s;
/// the low layer is 150 kbit/s) is told `audio_only` (active) within 5 s; its video stops and its
/// audio keeps flowing. When the limit is lifted it is told `audio_only` (inactive) within 10 s,
/// and video flows again, from a keyframe, on the same SSRC. The host publishes three layers,
/// a co-host a 24 kbit/s voice track.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_path_below_the_lowest_layer_falls_back_to_audio_only_and_back() {
    let _one_at_a_time = SHAPED_PATH.lock().await;
    let server = start_server().await;
    let mut host = join(&server, &token(&server, "fallback", "host", Role::Host)).await.unwrap();
    host.publish_simulcast([150_000, 500_000, 1_200_000]).await.expect("simulcast publish");
    let mut voice = join(&server, &token(&server, "fallback", "voice", Role::Cohost)).await.unwrap();
    voice.publish_audio(60).await.expect("audio publish");
    let relay = ShapedRelay::start(server.sfu().local_addr(), Duration::from_millis(100)).await;
    let mut viewer = join_via(&server, &token(&server, "fallback", "viewer", Role::Viewer), Some(relay.addr)).await.unwrap();
    // (video packets, audio packets) the viewer has received.
    let counts = |v: &Client| {
        let m = v.media_snapshot();
        let kind = |k: &str| m.values().filter(|t| t.kind == k).map(|t| t.packets).sum::<u64>();
        (kind("video"), kind("audio"))
    };
    assert!(
        eventually(Duration::from_secs(10), || {
            let (v, a) = counts(&viewer);
            v > 100 && a > 50
        })
        .await,
        "video and audio reach the viewer: {:?}",
        counts(&viewer)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    relay.set_rate(60_000);
    let limited = Instant::now();
    let ev = viewer.wait_for("audio_only", Duration::from_secs(5)).await;
    let to_fallback = limited.elapsed();
    eprintln!("60 kbit/s: audio_only {ev:?} after {to_fallback:?}");
    let ev = ev.expect("audio_only within 5 s of the limit");
    assert_eq!((ev["active"].as_bool(), ev["reason"].as_str()), (Some(true), Some("bandwidth")));
    // What was queued at the bottleneck drains within its 100 ms; then, over 3 s, no new
    // video. (A probe resends the last packets sent before the pause: the one or two of them
    // the bottleneck dropped then arrive late, so a handful is allowed.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (v0, a0) = counts(&viewer);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (v1, a1) = counts(&viewer);
    eprintln!("audio only, over 3 s: {} video packets, {} audio packets", v1 - v0, a1 - a0);
    assert!(v1 - v0 <= 4, "video stops while audio only ({} packets in 3 s)", v1 - v0);
    // Not all of it: a probe train fills the 60 kbit/s link for a moment (133–150 of 150 in
    // unloaded runs; 105 in one where the harness stalled).
    assert!(a1 - a0 >= 75, "audio keeps flowing ({} of 150 packets in 3 s)", a1 - a0);

    relay.set_rate(0);
    let lifted = Instant::now();
    let ev = viewer.wait_for("audio_only", Duration::from_secs(10)).await;
    let to_recovery = lifted.elapsed();
    eprintln!("limit lifted: audio_only {ev:?} after {to_recovery:?}");
    let ev = ev.expect("audio_only (inactive) within 10 s of lifting the limit");
    assert_eq!(ev["active"].as_bool(), Some(false));
    let resumed = Instant::now();
    assert!(eventually(Duration::from_secs(3), || counts(&viewer).0 > v1 + 50).await, "video flows again: {:?}", counts(&viewer));
    eprintln!("video again {:?} after the notice", resumed.elapsed());
    // The resumed stream starts at a keyframe. Its timestamps jump by the pause (over 3 s);
    // packets lost at the bottleneck just before the pause, repaired now, do not.
    let video = viewer.media_snapshot().into_values().find(|t| t.kind == "video").unwrap();
    let before = video.raw.iter().filter(|p| p.at < lifted).map(|p| p.ts).max_by_key(|ts| ts.wrapping_sub(video.raw[0].ts)).unwrap();
    let first = video
        .raw
        .iter()
        .find(|p| p.at >= lifted && p.ts.wrapping_sub(before) > 90_000 && p.ts.wrapping_sub(before) < 1 << 31)
        .expect("new video");
    assert!(sfu::client::vp8_is_keyframe(&first.payload), "the resumed stream starts at a keyframe");
    for m in viewer.media_snapshot().values() {
        assert_eq!(m.ssrcs.len(), 1, "one SSRC per track across the pause");
    }
    eprintln!("figures: fallback {to_fallback:?} after the limit, recovery {to_recovery:?} after lifting it");
    drop(relay);
    viewer.close().await;
    voice.close().await;
    host.close().await;
    server.shutdown().await;
}
