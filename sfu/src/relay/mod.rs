//! The cascade's wire: one published track's packets, relayed from the node a live runs on (the
//! origin) to another node that serves some of its viewers (an edge), on the media port.
//!
//! ```text
//!  origin worker (per packet of a relayed track, per edge leg that wants its layer):
//!     Published.relays ──seal (AES-128-GCM, the leg's key)──► the worker's send batch ──► UDP
//!  edge receive thread: first byte RELAY_MAGIC ──leg id──► the worker that owns the leg
//!     edge worker: replay window ──open──► a MediaPacket of the relayed track ──► route
//! ```
//!
//! A *leg* is one track toward one edge. Signaling sets legs up on both nodes with the same
//! 32-bit id and 128-bit key (derived from the cluster's secret; the SFU only takes the bytes),
//! so the origin's relay is one more consumer of the track behind the router, and the edge's
//! relayed track is an ingest-like track the router cannot tell from a browser's. What an edge's
//! viewers need flows back through signaling, not on this wire: keyframe requests
//! ([`crate::SfuEvent::KeyframeWanted`]) and the layers wanted
//! ([`crate::SfuEvent::LayersWanted`]).
//!
//! Datagram (big-endian):
//!
//! ```text
//!  0      RELAY_MAGIC (0xF5: outside RFC 7983's STUN 0-3, DTLS 20-63, RTP/RTCP 128-191)
//!  1      version (1)
//!  2..6   leg id
//!  6..14  sequence number of the leg (from 1; the AEAD nonce is leg id ‖ sequence)
//!  14..   sealed with bytes 0..14 as associated data:
//!           0..8    when the origin received the packet (Unix µs): the relay's delay
//!           8       simulcast layer
//!           9       flags: 1 keyframe, 2 RTP marker, 4 frame height, 8 VP8 temporal layer,
//!                   16 the temporal layer's frame start
//!           10..12  frame height          12  temporal layer (TID)
//!           13      RTP payload type      14..16 RTP sequence number
//!           16..20  RTP timestamp         20..24 RTP SSRC
//!           24..    RTP payload
//!         then the 16-byte tag
//! ```
//!
//! Nothing here trusts the network: a datagram that is short, of another version, of an unknown
//! leg, replayed, older than the window or that fails authentication is dropped and counted.

use crate::ids::TrackId;
use crate::media::codec::Vp8Temporal;
use crate::media::packet::MediaPacket;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use ring::aead;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// First byte of a relay datagram.
pub const RELAY_MAGIC: u8 = 0xF5;
const VERSION: u8 = 1;
/// Leading bytes in the clear (authenticated as associated data).
const HEADER: usize = 14;
/// Sealed bytes before the RTP payload.
const META: usize = 24;
const TAG: usize = 16;
/// What a relayed packet adds to its RTP payload.
pub const OVERHEAD: usize = HEADER + META + TAG;
/// Longest relay datagram (the receive thread's limit).
pub const MAX_DATAGRAM: usize = 1500;
/// Out-of-order arrivals accepted this far behind the newest sequence number.
const WINDOW: u64 = 128;

const KEYFRAME: u8 = 1;
const MARKER: u8 = 2;
const HEIGHT: u8 = 4;
const TEMPORAL: u8 = 8;
const TEMPORAL_START: u8 = 16;

/// Why a relay datagram was not sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("relay datagram too short")]
    Short,
    #[error("not a relay datagram of this version")]
    Version,
    #[error("packet too long to relay")]
    TooLong,
    #[error("relay datagram failed authentication")]
    Forged,
    #[error("relay datagram replayed or too old")]
    Replayed,
}

/// A leg's key (AES-128-GCM).
pub struct RelayKey(aead::LessSafeKey);

impl RelayKey {
    pub fn new(bytes: &[u8; 16]) -> RelayKey {
        // AES-128 takes any 16 bytes: the length is fixed by the type, so this cannot fail.
        #[allow(clippy::expect_used)]
        let key = aead::UnboundKey::new(&aead::AES_128_GCM, bytes).expect("a 16-byte AES-128 key"); // cannot fail: 16 bytes
        RelayKey(aead::LessSafeKey::new(key))
    }
}

impl std::fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayKey(…)")
    }
}

fn nonce(leg: u32, seq: u64) -> aead::Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&leg.to_be_bytes());
    n[4..].copy_from_slice(&seq.to_be_bytes());
    aead::Nonce::assume_unique_for_key(n)
}

/// Microseconds since the Unix epoch at `at` (an `Instant` of this process; `now` pairs the
/// two clocks).
pub fn unix_us(at: Instant, now: Instant) -> u64 {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    wall.saturating_sub(now.saturating_duration_since(at).as_micros() as u64)
}

/// The leg a datagram claims, if it looks like a relay datagram (read by the receive thread).
pub fn leg_of(buf: &[u8]) -> Option<u32> {
    if buf.len() < HEADER + META + TAG || buf[0] != RELAY_MAGIC || buf[1] != VERSION {
        return None;
    }
    Some(u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]))
}

/// Seal `pkt` as datagram `seq` of `leg`, received by the origin at `origin_us`.
pub fn seal(key: &RelayKey, leg: u32, seq: u64, origin_us: u64, pkt: &MediaPacket) -> Result<BytesMut, RelayError> {
    let len = OVERHEAD + pkt.payload.len();
    if len > MAX_DATAGRAM {
        return Err(RelayError::TooLong);
    }
    let mut b = BytesMut::with_capacity(len);
    b.put_u8(RELAY_MAGIC);
    b.put_u8(VERSION);
    b.put_u32(leg);
    b.put_u64(seq);
    b.put_u64(origin_us);
    b.put_u8(pkt.layer);
    let mut flags = 0;
    if pkt.keyframe {
        flags |= KEYFRAME;
    }
    if pkt.header.marker {
        flags |= MARKER;
    }
    if pkt.frame_height.is_some() {
        flags |= HEIGHT;
    }
    if let Some(t) = pkt.temporal {
        flags |= TEMPORAL;
        if t.frame_start {
            flags |= TEMPORAL_START;
        }
    }
    b.put_u8(flags);
    b.put_u16(pkt.frame_height.unwrap_or(0));
    b.put_u8(pkt.temporal.map(|t| t.tid).unwrap_or(0));
    b.put_u8(pkt.header.payload_type);
    b.put_u16(pkt.header.sequence_number);
    b.put_u32(pkt.header.timestamp);
    b.put_u32(pkt.header.ssrc);
    b.put_slice(&pkt.payload);
    let mut aad = [0u8; HEADER];
    aad.copy_from_slice(&b[..HEADER]);
    let tag = key.0.seal_in_place_separate_tag(nonce(leg, seq), aead::Aad::from(aad), &mut b[HEADER..]).map_err(|_| RelayError::TooLong)?;
    b.put_slice(tag.as_ref());
    Ok(b)
}

/// The sequence number a datagram claims (after [`leg_of`] accepted it).
pub fn seq_of(buf: &[u8]) -> Option<u64> {
    let b: [u8; 8] = buf.get(6..HEADER)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// An opened relay datagram.
#[derive(Debug)]
pub struct Opened {
    pub seq: u64,
    pub origin_us: u64,
    pub packet: MediaPacket,
}

/// Authenticate and decrypt a datagram of the leg keyed `key` into a packet of `track`
/// (received at `at`). The payload is not copied.
pub fn open(key: &RelayKey, track: TrackId, mut data: BytesMut, at: Instant) -> Result<Opened, RelayError> {
    let leg = leg_of(&data).ok_or(RelayError::Version)?;
    let seq = seq_of(&data).ok_or(RelayError::Short)?;
    let mut aad = [0u8; HEADER];
    aad.copy_from_slice(&data[..HEADER]);
    let mut sealed = data.split_off(HEADER);
    let plain = key.0.open_in_place(nonce(leg, seq), aead::Aad::from(aad), &mut sealed).map_err(|_| RelayError::Forged)?.len();
    sealed.truncate(plain);
    if sealed.len() < META {
        return Err(RelayError::Short);
    }
    let origin_us = sealed.get_u64();
    let layer = sealed.get_u8();
    let flags = sealed.get_u8();
    let height = sealed.get_u16();
    let tid = sealed.get_u8();
    let header = rtc::rtp::header::Header {
        version: 2,
        marker: flags & MARKER != 0,
        payload_type: sealed.get_u8(),
        sequence_number: sealed.get_u16(),
        timestamp: sealed.get_u32(),
        ssrc: sealed.get_u32(),
        ..Default::default()
    };
    let payload: Bytes = sealed.freeze();
    let packet = MediaPacket {
        track,
        layer,
        header,
        payload,
        keyframe: flags & KEYFRAME != 0,
        frame_height: (flags & HEIGHT != 0).then_some(height),
        temporal: (flags & TEMPORAL != 0).then_some(Vp8Temporal { tid, frame_start: flags & TEMPORAL_START != 0 }),
        received: at,
    };
    Ok(Opened { seq, origin_us, packet })
}

/// The edge's replay window of one leg: which of the last [`WINDOW`] sequence numbers arrived.
#[derive(Debug, Default)]
pub struct ReplayWindow {
    highest: u64,
    /// Bit i: `highest - i` arrived.
    seen: u128,
    received: u64,
}

impl ReplayWindow {
    /// Whether `seq` may be new (checked before authenticating; [`ReplayWindow::mark`] after).
    pub fn fresh(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.highest {
            return true;
        }
        let behind = self.highest - seq;
        behind < WINDOW && self.seen & (1u128 << behind) == 0
    }

    /// Record an authenticated `seq` (which [`ReplayWindow::fresh`] accepted).
    pub fn mark(&mut self, seq: u64) {
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= WINDOW { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = seq;
        } else {
            self.seen |= 1u128 << (self.highest - seq);
        }
        self.received += 1;
    }

    /// Datagrams of the leg that never arrived (so far: a late one still counts as lost
    /// until it comes).
    pub fn lost(&self) -> u64 {
        self.highest.saturating_sub(self.received)
    }
}

/// What one side counts of a relay (legs may share one): the origin counts what it sent, the
/// edge what it received, lost and refused, and the delay from the origin's arrival to its own.
#[derive(Debug)]
pub struct RelayStats {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub lost: AtomicU64,
    /// Refused datagrams: forged, replayed, malformed.
    pub refused: AtomicU64,
    delay: Mutex<hdrhistogram::Histogram<u64>>,
}

impl Default for RelayStats {
    fn default() -> Self {
        // 1 µs .. 60 s at 3 significant digits; the bounds are constants, so this cannot fail.
        #[allow(clippy::expect_used)]
        let h = hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid"); // cannot fail: constant, valid bounds
        RelayStats {
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            delay: Mutex::new(h),
        }
    }
}

/// A snapshot of [`RelayStats`].
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RelaySnapshot {
    pub packets: u64,
    pub bytes: u64,
    pub lost: u64,
    pub refused: u64,
    /// Origin arrival → edge arrival (µs), once packets arrived.
    pub delay_p50_us: Option<u64>,
    pub delay_p99_us: Option<u64>,
    pub delay_max_us: Option<u64>,
}

impl RelayStats {
    pub(crate) fn record_delay(&self, us: u64) {
        let mut h = self.delay.lock().unwrap_or_else(|p| p.into_inner());
        let _ = h.record(us.clamp(1, 60_000_000));
    }

    pub fn snapshot(&self) -> RelaySnapshot {
        let h = self.delay.lock().unwrap_or_else(|p| p.into_inner());
        let q = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q));
        RelaySnapshot {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            delay_p50_us: q(0.5),
            delay_p99_us: q(0.99),
            delay_max_us: (!h.is_empty()).then(|| h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(layer: u8, payload: &[u8]) -> MediaPacket {
        MediaPacket {
            track: TrackId(7),
            layer,
            header: rtc::rtp::header::Header {
                version: 2,
                marker: true,
                payload_type: 96,
                sequence_number: 65_535,
                timestamp: 0xdead_beef,
                ssrc: 0x1234_5678,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
            keyframe: true,
            frame_height: Some(720),
            temporal: Some(Vp8Temporal { tid: 2, frame_start: true }),
            received: Instant::now(),
        }
    }

    #[test]
    fn a_sealed_packet_opens_as_it_was() {
        let key = RelayKey::new(&[9; 16]);
        let p = packet(2, b"hello relay");
        let d = seal(&key, 42, 5, 1_700_000_000_000_000, &p).unwrap();
        assert_eq!(d.len(), OVERHEAD + 11);
        assert_eq!(leg_of(&d), Some(42));
        // The payload is not readable on the wire.
        assert!(!d.windows(11).any(|w| w == b"hello relay"));
        let o = open(&key, TrackId(99), d, Instant::now()).unwrap();
        assert_eq!((o.seq, o.origin_us), (5, 1_700_000_000_000_000));
        let q = o.packet;
        assert_eq!(q.track, TrackId(99));
        assert_eq!((q.layer, q.keyframe, q.frame_height), (2, true, Some(720)));
        assert_eq!(q.temporal, Some(Vp8Temporal { tid: 2, frame_start: true }));
        assert_eq!((q.header.marker, q.header.payload_type, q.header.sequence_number), (true, 96, 65_535));
        assert_eq!((q.header.timestamp, q.header.ssrc), (0xdead_beef, 0x1234_5678));
        assert_eq!(&q.payload[..], b"hello relay");
        // Without the optional fields.
        let mut p = packet(0, b"");
        (p.keyframe, p.frame_height, p.temporal, p.header.marker) = (false, None, None, false);
        let o = open(&key, TrackId(1), seal(&key, 1, 1, 0, &p).unwrap(), Instant::now()).unwrap().packet;
        assert_eq!((o.keyframe, o.frame_height, o.temporal, o.header.marker, o.payload.len()), (false, None, None, false, 0));
    }

    #[test]
    fn forged_tampered_and_foreign_datagrams_are_refused() {
        let key = RelayKey::new(&[1; 16]);
        let d = seal(&key, 3, 1, 0, &packet(0, &[0xab; 100])).unwrap();
        // Another key.
        assert_eq!(open(&RelayKey::new(&[2; 16]), TrackId(1), d.clone(), Instant::now()).unwrap_err(), RelayError::Forged);
        // Any flipped bit: the clear header (leg, sequence) or the sealed part.
        for i in [2, 7, 13, 14, 40, d.len() - 1] {
            let mut t = d.clone();
            t[i] ^= 0x10;
            assert_eq!(open(&key, TrackId(1), t, Instant::now()).unwrap_err(), RelayError::Forged, "byte {i}");
        }
        // Short, other version, other magic.
        assert!(leg_of(&d[..OVERHEAD - 1]).is_none());
        let mut v = d.clone();
        v[1] = 2;
        assert!(leg_of(&v).is_none());
        assert_eq!(open(&key, TrackId(1), v, Instant::now()).unwrap_err(), RelayError::Version);
        let mut m = d.clone();
        m[0] = 0x80;
        assert!(leg_of(&m).is_none());
        // Too long to relay.
        assert_eq!(seal(&key, 3, 2, 0, &packet(0, &[0; MAX_DATAGRAM])).unwrap_err(), RelayError::TooLong);
        assert!(seal(&key, 3, 2, 0, &packet(0, &vec![0; MAX_DATAGRAM - OVERHEAD])).is_ok());
    }

    #[test]
    fn the_window_refuses_replays_and_counts_losses() {
        let mut w = ReplayWindow::default();
        assert!(!w.fresh(0));
        for s in [1, 2, 4, 3, 7] {
            assert!(w.fresh(s), "{s}");
            w.mark(s);
        }
        for s in [1, 2, 3, 4, 7] {
            assert!(!w.fresh(s), "replayed {s}");
        }
        assert_eq!(w.lost(), 2); // 5 and 6
        assert!(w.fresh(5));
        w.mark(5);
        assert_eq!(w.lost(), 1);
        // A jump past the window forgets it; what is that far behind is too old.
        w.mark(7 + WINDOW + 10);
        assert!(!w.fresh(6));
        assert!(w.fresh(7 + WINDOW + 9));
        assert!(!w.fresh(7 + WINDOW + 10));
        assert_eq!(w.lost(), 7 + WINDOW + 10 - 7); // seven arrived
    }
}
