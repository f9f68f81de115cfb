//! The cascade's datagrams as an edge's receive thread and worker read them (sfu/src/relay/,
//! worker/relays.rs `relay_datagram`): `leg_of`, `seq_of`, the replay window, `open` with the
//! leg's key; and `seal` → `open` of a packet built from the input.
//! Input: `[kind: u8][rest]`. Kind even: `rest` is a script of datagrams `[len: u16][bytes]`
//! read by one leg (two keys: one is the leg's). Kind odd: `rest` is a packet (layer, flags,
//! header fields, payload) sealed and opened again.
//! Invariants: never panics; a datagram opens only with the key it was sealed with (none of the
//! script's arbitrary bytes open, but for one the script sealed itself); what opens is what was
//! sealed; the window accepts a sequence number at most once; losses never exceed the highest
//! sequence number.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sfu::relay::{self, RelayKey, ReplayWindow};
use sfu::{MediaPacket, TrackId};
use std::collections::HashSet;
use std::time::Instant;

fn packet(d: &[u8]) -> Option<MediaPacket> {
    let (head, payload) = d.split_at_checked(12)?;
    let flags = head[1];
    Some(MediaPacket {
        track: TrackId(1),
        layer: head[0] % 4,
        header: rtc::rtp::header::Header {
            version: 2,
            marker: flags & 1 != 0,
            payload_type: head[2] & 0x7f,
            sequence_number: u16::from_be_bytes([head[3], head[4]]),
            timestamp: u32::from_be_bytes([head[5], head[6], head[7], head[8]]),
            ssrc: u32::from_be_bytes([head[9], head[10], head[11], head[1]]),
            ..Default::default()
        },
        payload: Bytes::copy_from_slice(payload),
        keyframe: flags & 2 != 0,
        frame_height: (flags & 4 != 0).then_some(u16::from(head[0]) * 4),
        temporal: (flags & 8 != 0).then_some(sfu::client::Vp8Temporal { tid: flags >> 6, frame_start: flags & 16 != 0 }),
        received: Instant::now(),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
    let now = Instant::now();
    let key = RelayKey::new(&[7; 16]);
    if kind % 2 == 1 {
        let Some(p) = packet(rest) else { return };
        match relay::seal(&key, 9, 1, 42, &p) {
            Ok(d) => {
                assert_eq!(relay::leg_of(&d), Some(9));
                assert!(relay::open(&RelayKey::new(&[8; 16]), TrackId(2), d.clone(), now).is_err(), "opened with another key");
                let o = relay::open(&key, TrackId(2), d, now).expect("a sealed datagram opens");
                let q = o.packet;
                assert_eq!((o.seq, o.origin_us), (1, 42));
                assert_eq!((q.layer, q.keyframe, q.frame_height, q.temporal), (p.layer, p.keyframe, p.frame_height, p.temporal));
                assert_eq!(
                    (q.header.marker, q.header.payload_type, q.header.sequence_number),
                    (p.header.marker, p.header.payload_type, p.header.sequence_number)
                );
                assert_eq!((q.header.timestamp, q.header.ssrc, &q.payload), (p.header.timestamp, p.header.ssrc, &p.payload));
            }
            Err(_) => assert!(p.payload.len() + relay::OVERHEAD > relay::MAX_DATAGRAM, "refused a packet that fits"),
        }
        return;
    }
    let mut window = ReplayWindow::default();
    let mut accepted: HashSet<u64> = HashSet::new();
    let mut rest = rest;
    while let [l0, l1, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*l0, *l1])).min(tail.len()).min(1600);
        let (d, next) = tail.split_at(n);
        rest = next;
        let Some(_leg) = relay::leg_of(d) else { continue };
        let Some(seq) = relay::seq_of(d).filter(|s| window.fresh(*s)) else { continue };
        // Arbitrary bytes never authenticate (a forgery would need the key).
        assert!(relay::open(&key, TrackId(3), BytesMut::from(d), now).is_err(), "arbitrary bytes opened");
        // Marked as the worker marks an opened one: the window then refuses it.
        window.mark(seq);
        assert!(accepted.insert(seq), "sequence {seq} accepted twice");
        assert!(!window.fresh(seq));
        assert!(window.lost() <= accepted.iter().copied().max().unwrap_or(0));
    }
});
