//! The cascade's media relay between two media planes on loopback: an origin whose track is fed
//! in-process, an edge that publishes it again from the relay leg. What the edge's router gets
//! is read with a recorder's tap (every packet, as received).

use bytes::Bytes;
use sfu::record::Tap;
use sfu::relay::{RelayKey, RelayStats, seal};
use sfu::{CodecInfo, MediaKind, MediaPacket, ParticipantId, RelayOut, RelayTrack, Sfu, SfuConfig, SfuEvent, event_channel};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn plane() -> Sfu {
    Sfu::start(SfuConfig { bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), workers: 2, ..Default::default() }).unwrap()
}

fn vp8() -> CodecInfo {
    CodecInfo { mime_type: "video/VP8".into(), clock_rate: 90_000, channels: 0, fmtp: String::new() }
}

fn packet(track: sfu::TrackId, layer: u8, n: u16) -> MediaPacket {
    MediaPacket {
        track,
        layer,
        header: rtc_header(n, layer),
        payload: Bytes::from(format!("layer {layer} packet {n}").into_bytes()),
        keyframe: n < 3,
        frame_height: (n < 3).then_some(180 << layer),
        temporal: None,
        received: Instant::now(),
    }
}

fn rtc_header(n: u16, layer: u8) -> rtc::rtp::header::Header {
    rtc::rtp::header::Header {
        version: 2,
        marker: n % 4 == 3,
        payload_type: 96,
        sequence_number: n,
        timestamp: u32::from(n) * 3000,
        ssrc: 1000 + u32::from(layer),
        ..Default::default()
    }
}

/// Wait (bounded) until `cond` holds.
fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

async fn next_event(events: &mut sfu::Events, within: Duration, want: impl Fn(&SfuEvent) -> bool) -> Option<SfuEvent> {
    let end = tokio::time::Instant::now() + within;
    loop {
        let ev = tokio::time::timeout_at(end, events.recv()).await.ok()??;
        if want(&ev) {
            return Some(ev);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_relayed_to_an_edge_arrives_there_whole_and_only_the_layers_it_wants() {
    let (origin, edge) = (plane(), plane());
    let key = [7u8; 16];
    let leg = 0x0a0b_0c0d;

    // The origin's publisher: one simulcast video track fed in-process.
    let publisher = ParticipantId::next();
    let (sink, _publisher_events) = event_channel(64);
    origin.add_participant(publisher, sink).unwrap();
    let track = origin.open_ingest(publisher, vec![(MediaKind::Video, vp8())]).await.unwrap()[0].id;

    // The edge publishes it again under the origin's id, fed by the leg.
    let relay = ParticipantId::next();
    let (sink, mut relay_events) = event_channel(64);
    edge.add_participant(relay, sink).unwrap();
    let edge_stats = Arc::new(RelayStats::default());
    let opened = edge
        .open_relay(relay, vec![RelayTrack { track, kind: MediaKind::Video, codec: vp8(), layers: 3, leg, key, stats: edge_stats.clone() }])
        .await
        .unwrap();
    assert_eq!(opened[0].id, track, "the relayed track keeps the origin's id");
    assert!(
        next_event(&mut relay_events, Duration::from_secs(2), |e| matches!(e, SfuEvent::TrackPublished(t) if t.id == track))
            .await
            .is_some()
    );
    // Opening the same leg again is refused.
    let again =
        RelayTrack { track: sfu::TrackId::next(), kind: MediaKind::Video, codec: vp8(), layers: 1, leg, key, stats: edge_stats.clone() };
    assert!(edge.open_relay(relay, vec![again]).await.is_err());

    // A tap on the edge's track sees what its viewers would be forwarded from; it asks for
    // keyframes, which the edge turns into a request for signaling to pass to the origin.
    let (tx, rx) = crossbeam_channel::unbounded::<Arc<MediaPacket>>();
    edge.tap(track, Some(Tap::new(move |p: &Arc<MediaPacket>| drop(tx.send(p.clone())))));
    let asked = next_event(&mut relay_events, Duration::from_secs(2), |e| matches!(e, SfuEvent::KeyframeWanted(t, _) if *t == track)).await;
    assert!(matches!(asked, Some(SfuEvent::KeyframeWanted(_, 255))), "{asked:?}");

    // The origin relays layers 0 and 1.
    let origin_stats = Arc::new(RelayStats::default());
    origin.relay_to(track, RelayOut::new(leg, edge.local_addr(), &key, 1, origin_stats.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 0..300u16 {
        origin.ingest(publisher, packet(track, (n % 3) as u8, n)).unwrap();
        if n % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(eventually(Duration::from_secs(3), || rx.len() >= 200), "edge got {} of 200", rx.len());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got: Vec<Arc<MediaPacket>> = rx.try_iter().collect();
    assert_eq!(got.len(), 200, "layer 2 is not relayed");
    for p in &got {
        let n = p.header.sequence_number;
        let want = packet(track, (n % 3) as u8, n);
        assert!(p.layer <= 1);
        assert_eq!(
            (p.track, p.layer, &p.payload, p.keyframe, p.frame_height),
            (track, want.layer, &want.payload, want.keyframe, want.frame_height)
        );
        assert_eq!(
            (p.header.marker, p.header.timestamp, p.header.ssrc, p.header.payload_type),
            (want.header.marker, want.header.timestamp, want.header.ssrc, 96)
        );
    }
    let o = origin_stats.snapshot();
    let e = edge_stats.snapshot();
    assert_eq!((o.packets, e.packets, e.lost, e.refused), (200, 200, 0, 0), "origin {o:?} edge {e:?}");
    assert_eq!(o.bytes, e.bytes);
    let p99 = e.delay_p99_us.unwrap();
    println!("relay delay on loopback: p50 {} µs, p99 {p99} µs, max {} µs", e.delay_p50_us.unwrap(), e.delay_max_us.unwrap());
    assert!(p99 < 100_000, "relay delay p99 {p99} µs");

    // The edge's viewers want the top layer too.
    origin.relay_layers(track, leg, 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 300..330u16 {
        origin.ingest(publisher, packet(track, (n % 3) as u8, n)).unwrap();
    }
    assert!(eventually(Duration::from_secs(3), || rx.len() >= 30), "edge got {} of 30", rx.len());
    assert_eq!(rx.try_iter().filter(|p| p.layer == 2).count(), 10);

    // Hostile datagrams at the edge's port: garbage of the relay's shape, a forged one, a
    // replay (sealed with the key, an old sequence number). Each is refused and counted, and
    // the relay goes on.
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut garbage = vec![sfu::relay::RELAY_MAGIC, 1];
    garbage.extend_from_slice(&leg.to_be_bytes());
    garbage.extend_from_slice(&[0u8; 80]);
    attacker.send_to(&garbage, edge.local_addr()).unwrap();
    let forged = seal(&RelayKey::new(&[8; 16]), leg, 10_000, 0, &packet(track, 0, 1)).unwrap();
    attacker.send_to(&forged, edge.local_addr()).unwrap();
    let replay = seal(&RelayKey::new(&key), leg, 5, 0, &packet(track, 0, 1)).unwrap();
    attacker.send_to(&replay, edge.local_addr()).unwrap();
    assert!(eventually(Duration::from_secs(2), || edge_stats.snapshot().refused == 3), "{:?}", edge_stats.snapshot());
    origin.ingest(publisher, packet(track, 0, 400)).unwrap();
    assert!(eventually(Duration::from_secs(2), || rx.try_iter().any(|p| p.header.sequence_number == 400)));

    // The origin stops the leg: nothing more arrives.
    origin.stop_relay(track, leg);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = origin_stats.snapshot().packets;
    origin.ingest(publisher, packet(track, 0, 401)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(origin_stats.snapshot().packets, sent);
    assert_eq!(rx.try_iter().count(), 0);

    // The edge closes the relayed track: it is unpublished, and the leg's datagrams are dropped
    // before any worker sees them.
    edge.close_relay_track(relay, track).unwrap();
    assert!(
        next_event(&mut relay_events, Duration::from_secs(2), |e| matches!(e, SfuEvent::TrackUnpublished(t) if *t == track))
            .await
            .is_some()
    );
    let dropped = edge.stats().datagrams_dropped;
    let late = seal(&RelayKey::new(&key), leg, 20_000, 0, &packet(track, 0, 2)).unwrap();
    attacker.send_to(&late, edge.local_addr()).unwrap();
    assert!(eventually(Duration::from_secs(2), || edge.stats().datagrams_dropped > dropped));
    origin.shutdown();
    edge.shutdown();
}
