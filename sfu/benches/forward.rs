//! Forwarding-path benchmark: one publisher's packets through K real subscriber sessions.
//!
//! Each subscriber is a real subscriber session (rtc peer connection, ICE-lite, DTLS, SRTP, default
//! interceptors) connected in memory to a real rtc client peer: the handshake runs byte for byte,
//! only the wire is a function call. The measured loop is exactly what a worker does per packet
//! and subscriber — `Subscriber::forward` (keyframe gate, header rewrite, `write_rtp`,
//! interceptors, SRTP) and draining `poll_write` — timed in thread CPU time, twice:
//! kernel send excluded (datagrams dropped), and included two ways: one `send_to` per datagram,
//! and one `sendmmsg` per fan-out (what the worker does).
//!
//! A second table times the send path of our own (issue 16, `session/lean.rs`), the one the
//! worker takes: the same `Subscriber::forward`, but the header is written once into the
//! datagram's buffer with the payload after it, numbered for transport-wide feedback, kept for
//! NACKs and sealed in place with the connection's SRTP keys — no rtc on the way. Its sessions
//! are real connections too, and what the first sends is checked at its client peer.
//!
//! `cargo bench -p onair-sfu --bench forward` (add `-- --quick` for a smoke run).

use bytes::Bytes;
use rtc::interceptor::Registry;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use sfu::MediaPacket;
use sfu::internals::{SendBatch, SessionFactory, Subscriber};
use sfu::{CodecInfo, MediaKind, ParticipantId, SessionKey, SessionRole, TrackId};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn client_pc(addr: SocketAddr) -> RTCPeerConnection {
    let mut me = MediaEngine::default();
    me.register_default_codecs().unwrap();
    let reg = register_default_interceptors(Registry::new(), &mut me).unwrap();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_interceptor_registry(reg)
        .build(Instant::now())
        .unwrap();
    pc.add_local_candidate(sfu::client::host_candidate(addr).unwrap()).unwrap();
    pc
}

fn ctx(local: SocketAddr, peer: SocketAddr) -> TransportContext {
    TransportContext { local_addr: local, peer_addr: peer, ecn: None, transport_protocol: TransportProtocol::UDP }
}

struct Pair {
    server: Subscriber,
    client: RTCPeerConnection,
    client_addr: SocketAddr,
}

/// Drive both ends in memory until the server side reports Connected (bounded: 10 s).
fn connect(pairs: &mut [Pair], server_addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pairs.iter().any(|p| !p.server.link.connected) {
        assert!(Instant::now() < deadline, "in-memory handshake did not finish");
        let now = Instant::now();
        for p in pairs.iter_mut() {
            while let Some(out) = p.server.link.pc.poll_write() {
                let _ = p.client.handle_read(TaggedBytesMut { now, transport: ctx(p.client_addr, server_addr), message: out.message });
            }
            while let Some(out) = p.client.poll_write() {
                let _ =
                    p.server.link.pc.handle_read(TaggedBytesMut { now, transport: ctx(server_addr, p.client_addr), message: out.message });
            }
            while let Some(ev) = p.server.link.pc.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) = ev {
                    p.server.link.connected = true;
                }
            }
            while p.client.poll_event().is_some() {}
            while p.client.poll_read().is_some() {}
            while p.server.link.pc.poll_read().is_some() {}
            if p.server.link.pc.poll_timeout().is_some_and(|t| t <= now) {
                let _ = p.server.link.pc.handle_timeout(now);
            }
            if p.client.poll_timeout().is_some_and(|t| t <= now) {
                let _ = p.client.handle_timeout(now);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// How the encrypted datagrams leave.
#[derive(Clone, Copy)]
enum Send<'a> {
    /// Dropped after encryption (kernel excluded).
    Drop,
    /// One `send_to` per datagram.
    PerDatagram(&'a UdpSocket),
    /// One `sendmmsg` per fan-out (what the worker does).
    Batched(&'a UdpSocket),
}

fn run(k: usize, packets: usize, mode: Send, pairs: &mut [Pair], track: TrackId, seq0: &mut u16) -> (Duration, u64, u64) {
    let mut batch = SendBatch::default();
    let payload = Bytes::from(vec![0xab_u8; 1100]);
    let mut forwarded = 0u64;
    let mut datagrams = 0u64;
    let cpu0 = thread_cpu();
    for i in 0..packets {
        let mut header = rtc::rtp::header::Header { version: 2, payload_type: 96, ssrc: 1, ..Default::default() };
        header.sequence_number = *seq0;
        header.timestamp = (*seq0 as u32).wrapping_mul(3000);
        header.marker = i % 6 == 5;
        *seq0 = seq0.wrapping_add(1);
        let pkt = Arc::new(MediaPacket {
            track,
            layer: 0,
            header,
            payload: payload.clone(),
            keyframe: i == 0,
            frame_height: None,
            temporal: None,
            received: Instant::now(),
        });
        let now = Instant::now();
        for p in pairs.iter_mut().take(k) {
            if p.server.forward(&pkt, &mut batch, now) {
                forwarded += 1;
            }
            // Through rtc, the datagram waits in its queue; the lean path put it in the batch.
            if !p.server.is_lean() {
                while let Some(out) = p.server.link.pc.poll_write() {
                    batch.push(p.server.link.remote.unwrap_or(p.client_addr), out.message);
                }
            }
        }
        datagrams += batch.len() as u64;
        match mode {
            Send::Drop => batch.drain_each(|_, d| {
                std::hint::black_box(d);
            }),
            Send::PerDatagram(sock) => batch.drain_each(|to, d| {
                let _ = sock.send_to(d, to);
            }),
            Send::Batched(sock) => {
                batch.flush(sock);
            }
        }
    }
    (thread_cpu() - cpu0, forwarded, datagrams)
}

/// `n` subscriber sessions from `factory`, each forwarding `track` to a client peer, connected
/// in memory; their datagrams go to `sink` when sent.
fn pairs(factory: &SessionFactory, n: usize, first_port: u16, track: TrackId, server_addr: SocketAddr, sink: SocketAddr) -> Vec<Pair> {
    let codec = CodecInfo { mime_type: "video/VP8".into(), clock_rate: 90000, channels: 0, fmtp: String::new() };
    let mut pairs = Vec::new();
    for i in 0..n {
        let key = SessionKey { participant: ParticipantId(u64::from(first_port) + i as u64), role: SessionRole::Subscriber };
        let mut server = factory.subscriber(key, Instant::now()).unwrap();
        server.add_subscription(track, "PA_1".into(), MediaKind::Video, &codec, Instant::now()).unwrap();
        let offer = server.negotiate(Instant::now()).unwrap().unwrap();
        let client_addr: SocketAddr = format!("127.0.0.1:{}", usize::from(first_port) + i).parse().unwrap();
        let mut client = client_pc(client_addr);
        client.set_remote_description(Instant::now(), RTCSessionDescription::offer(offer).unwrap()).unwrap();
        let answer = client.create_answer(None).unwrap();
        client.set_local_description(Instant::now(), answer).unwrap();
        let answer = client.local_description().unwrap().sdp;
        server.apply_answer(Instant::now(), answer).unwrap();
        pairs.push(Pair { server, client, client_addr });
    }
    connect(&mut pairs, server_addr);
    for p in &mut pairs {
        // What the worker does once a viewer is connected (its path known from its checks); the
        // sink stands for every viewer's address.
        p.server.link.remote = Some(sink);
        p.server.start_lean(Instant::now());
    }
    pairs
}

/// The lean path's datagrams are real SRTP, numbered and sealed as the connection expects: the
/// first session's client peer opens and delivers every one.
fn check_lean(pair: &mut Pair, track: TrackId, server_addr: SocketAddr, seq: &mut u16) {
    assert!(pair.server.is_lean(), "the lean session took the lean path");
    let mut batch = SendBatch::default();
    let now = Instant::now();
    for i in 0..20u16 {
        let header = rtc::rtp::header::Header {
            version: 2,
            payload_type: 96,
            ssrc: 1,
            sequence_number: *seq,
            timestamp: 3000 * u32::from(i),
            ..Default::default()
        };
        *seq = seq.wrapping_add(1);
        let pkt = Arc::new(MediaPacket {
            track,
            layer: 0,
            header,
            payload: Bytes::from(vec![0xab_u8; 1100]),
            keyframe: i == 0,
            frame_height: None,
            temporal: None,
            received: now,
        });
        assert!(pair.server.forward(&pkt, &mut batch, now));
    }
    let mut opened = 0;
    let mut datagrams = Vec::new();
    batch.drain_each(|_, d| datagrams.push(d.clone()));
    assert_eq!(datagrams.len(), 20);
    for d in datagrams {
        let _ = pair.client.handle_read(TaggedBytesMut { now, transport: ctx(pair.client_addr, server_addr), message: d });
        while let Some(m) = pair.client.poll_read() {
            if let rtc::peer_connection::message::RTCMessage::RtpPacket(_, p) = m.message
                && p.payload.len() == 1100
            {
                opened += 1;
            }
        }
    }
    assert_eq!(opened, 20, "the client opened every datagram of the lean path");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let server_addr: SocketAddr = "127.0.0.1:7882".parse().unwrap();
    let factory = SessionFactory::new(server_addr).unwrap();
    let track = TrackId(1);
    let max_k = if quick { 4 } else { 50 };
    let lean_ks: &[usize] = if quick { &[1, 4] } else { &[1, 10, 50, 500] };
    // A loopback sink: datagrams go through the kernel and are discarded by a socket nobody reads
    // (its receive buffer fills and the kernel drops the rest, after the send syscall cost).
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rtc_pairs = pairs(&factory.clone().with_lean(false), max_k, 20_000, track, server_addr, sink_addr);
    let mut lean_pairs = pairs(&factory.with_lean(true), *lean_ks.last().unwrap(), 30_000, track, server_addr, sink_addr);
    let mut seq = 1000u16;
    check_lean(&mut lean_pairs[0], track, server_addr, &mut seq);
    let mut k1_us = None;
    for (title, pairs, ks) in [
        (
            "through rtc (write_rtp, interceptors, SRTP, poll_write)",
            &mut rtc_pairs,
            if quick { &[1usize, 4][..] } else { &[1, 10, 50][..] },
        ),
        ("send path of our own (session/lean.rs: header written once, numbered, kept, sealed in place)", &mut lean_pairs, lean_ks),
    ] {
        println!("forwarding path, one publisher, K subscribers, 1,100-byte VP8 payloads, 1 thread: {title}");
        println!(
            "{:>4} {:>10} {:>24} {:>24} {:>24}",
            "K", "forwarded", "µs CPU/pkt (no kernel)", "µs CPU/pkt (+ send_to)", "µs CPU/pkt (+ sendmmsg)"
        );
        for &k in ks {
            let total = if quick { 2_000 } else { 200_000 };
            let n = (total / k).max(100);
            // Warm-up.
            run(k, n / 10, Send::Drop, pairs, track, &mut seq);
            let (cpu_a, fwd_a, _) = run(k, n, Send::Drop, pairs, track, &mut seq);
            let (cpu_b, fwd_b, dg_b) = run(k, n, Send::PerDatagram(&sender), pairs, track, &mut seq);
            let (cpu_c, fwd_c, dg_c) = run(k, n, Send::Batched(&sender), pairs, track, &mut seq);
            assert!(fwd_a > 0 && fwd_b > 0 && fwd_c > 0 && dg_b >= fwd_b && dg_c >= fwd_c, "packets were forwarded");
            let us = |cpu: Duration, n: u64| cpu.as_secs_f64() * 1e6 / n as f64;
            println!(
                "{:>4} {:>10} {:>24.3} {:>24.3} {:>24.3}",
                k,
                fwd_a + fwd_b + fwd_c,
                us(cpu_a, fwd_a),
                us(cpu_b, fwd_b),
                us(cpu_c, fwd_c)
            );
            if k == 1 && k1_us.is_none() {
                k1_us = Some(us(cpu_c, fwd_c));
            }
        }
    }
    drop(sink);
    metrics_cost(if quick { 100_000 } else { 10_000_000 }, k1_us);
}

/// What the media plane's per-packet metrics add (docs/benchmarks.md, "Metrics on the hot path"):
/// per packet a worker forwards, one delay computed from the time it already holds and recorded
/// in its own histogram; per datagram received, one relaxed add beside the datagram count. Timed
/// on and off (`sfu::metrics::set_per_packet`), and set against the forwarding cost of one copy
/// (K = 1, with sendmmsg), the worst case: with more viewers a packet's record is shared by more
/// copies.
fn metrics_cost(n: u64, k1_us: Option<f64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let hist = sfu::metrics::DelayHistogram::default();
    let bytes_in = AtomicU64::new(0);
    let received = Instant::now();
    let time = |on: bool| {
        sfu::metrics::set_per_packet(on);
        let t0 = thread_cpu();
        for i in 0..n {
            let now = received + Duration::from_micros(i % 20_000);
            if sfu::metrics::per_packet() {
                hist.record(now.saturating_duration_since(received).as_micros() as u64);
                bytes_in.fetch_add(1_100, Ordering::Relaxed);
            }
            std::hint::black_box(&now);
        }
        (thread_cpu() - t0).as_secs_f64() * 1e9 / n as f64
    };
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        on.push(time(true));
        off.push(time(false));
    }
    sfu::metrics::set_per_packet(true);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let cost = (median(&mut on) - median(&mut off)).max(0.0);
    match k1_us {
        Some(us) => println!(
            "per-packet metrics: {cost:.1} ns per packet (median of 5, on − off) = {:.3} % of one forwarded copy ({us:.3} µs at K = 1)",
            cost / (us * 1000.0) * 100.0
        ),
        None => println!("per-packet metrics: {cost:.1} ns per packet (median of 5, on − off)"),
    }
}
