//! The picture each layer of a video track is at: every packet since the layer's last keyframe,
//! kept by each worker that forwards the track, so that a viewer who connects starts from it at
//! once instead of waiting for the publisher to answer a keyframe request — which the PLI
//! throttle may hold back for up to `pli_throttle` when another viewer asked just before.
//!
//! Only a young picture is kept (`max_age`, by default the PLI throttle: an older one is not
//! needed, since the throttle then lets a request through at once), only a complete one (a
//! packet missing or out of order spoils it until the next keyframe), and at most
//! [`MAX_PACKETS`]. The packets are the `Arc`s the router already shares, so keeping them costs
//! a pointer each and the payloads' memory for that time.

use crate::media::packet::MediaPacket;
use crate::media::simulcast::MAX_LAYERS;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Packets kept per layer at most (a 500 ms picture of a 4 Mbit/s layer is ≈ 230 packets).
pub const MAX_PACKETS: usize = 512;

/// One layer's picture so far.
#[derive(Default)]
struct Picture {
    packets: Vec<Arc<MediaPacket>>,
    bytes: usize,
    /// When its keyframe arrived; `None`: nothing usable is kept.
    since: Option<Instant>,
    /// The keyframe's RTP timestamp (a keyframe's later packets do not start a new picture).
    key_ts: u32,
    next_seq: u16,
}

impl Picture {
    fn spoil(&mut self) {
        self.packets.clear();
        self.bytes = 0;
        self.since = None;
    }
}

/// What one worker keeps of one video track.
#[derive(Default)]
pub struct GopCache {
    layers: [Picture; MAX_LAYERS],
}

impl GopCache {
    /// Note a packet of the track, as it is forwarded.
    pub fn push(&mut self, pkt: &Arc<MediaPacket>, max_age: Duration) {
        let Some(p) = self.layers.get_mut(pkt.layer as usize) else { return };
        let seq = pkt.header.sequence_number;
        if pkt.keyframe && (p.since.is_none() || p.key_ts != pkt.header.timestamp) {
            p.spoil();
            p.since = Some(pkt.received);
            p.key_ts = pkt.header.timestamp;
        } else if let Some(since) = p.since {
            let young = pkt.received.saturating_duration_since(since) <= max_age;
            if seq != p.next_seq || !young || p.packets.len() >= MAX_PACKETS {
                p.spoil();
                return;
            }
        } else {
            return;
        }
        p.next_seq = seq.wrapping_add(1);
        p.bytes += pkt.payload.len();
        p.packets.push(pkt.clone());
    }

    /// The picture of `layer` to start a viewer from: one whose keyframe arrived at most
    /// `max_age` ago and whose packets come to at most `max_bytes` (sent at once, it is a
    /// burst).
    pub fn picture(&self, layer: u8, now: Instant, max_age: Duration, max_bytes: usize) -> Option<&[Arc<MediaPacket>]> {
        let p = self.layers.get(layer as usize)?;
        let since = p.since?;
        (now.saturating_duration_since(since) <= max_age && p.bytes <= max_bytes && !p.packets.is_empty()).then_some(p.packets.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TrackId;
    use bytes::Bytes;

    const AGE: Duration = Duration::from_millis(500);

    fn packet(layer: u8, seq: u16, ts: u32, keyframe: bool, at: Instant) -> Arc<MediaPacket> {
        let header = rtc::rtp::header::Header { sequence_number: seq, timestamp: ts, ..Default::default() };
        Arc::new(MediaPacket {
            track: TrackId(1),
            layer,
            header,
            payload: Bytes::from(vec![0u8; 100]),
            keyframe,
            frame_height: None,
            temporal: None,
            received: at,
        })
    }

    fn seqs(p: &[Arc<MediaPacket>]) -> Vec<u16> {
        p.iter().map(|p| p.header.sequence_number).collect()
    }

    #[test]
    fn keeps_the_picture_since_the_last_keyframe_per_layer() {
        let t0 = Instant::now();
        let mut c = GopCache::default();
        // Before any keyframe nothing is kept.
        c.push(&packet(1, 9, 0, false, t0), AGE);
        assert!(c.picture(1, t0, AGE, usize::MAX).is_none());
        // A keyframe of two packets (the second also says keyframe: same timestamp), a delta.
        c.push(&packet(1, 10, 3000, true, t0), AGE);
        c.push(&packet(1, 11, 3000, true, t0), AGE);
        c.push(&packet(1, 12, 6000, false, t0), AGE);
        c.push(&packet(0, 500, 6000, true, t0), AGE);
        assert_eq!(seqs(c.picture(1, t0, AGE, usize::MAX).unwrap()), [10, 11, 12]);
        assert_eq!(seqs(c.picture(0, t0, AGE, usize::MAX).unwrap()), [500]);
        assert!(c.picture(2, t0, AGE, usize::MAX).is_none());
        // A new keyframe starts over; sequence numbers wrap.
        c.push(&packet(1, 65535, 9000, true, t0), AGE);
        c.push(&packet(1, 0, 12000, false, t0), AGE);
        assert_eq!(seqs(c.picture(1, t0, AGE, usize::MAX).unwrap()), [65535, 0]);
    }

    #[test]
    fn a_gap_a_reorder_age_or_size_spoils_it_until_the_next_keyframe() {
        let t0 = Instant::now();
        let mut c = GopCache::default();
        c.push(&packet(0, 10, 0, true, t0), AGE);
        c.push(&packet(0, 12, 3000, false, t0), AGE); // 11 lost
        assert!(c.picture(0, t0, AGE, usize::MAX).is_none());
        c.push(&packet(0, 13, 3000, false, t0), AGE);
        assert!(c.picture(0, t0, AGE, usize::MAX).is_none(), "still spoilt without a keyframe");
        c.push(&packet(0, 20, 6000, true, t0), AGE);
        c.push(&packet(0, 19, 3000, false, t0), AGE); // late
        assert!(c.picture(0, t0, AGE, usize::MAX).is_none());
        // Too old to start from, then too old to keep.
        c.push(&packet(0, 30, 9000, true, t0), AGE);
        assert!(c.picture(0, t0 + AGE, AGE, usize::MAX).is_some());
        assert!(c.picture(0, t0 + AGE + Duration::from_millis(1), AGE, usize::MAX).is_none());
        c.push(&packet(0, 31, 9000, false, t0 + AGE + Duration::from_millis(1)), AGE);
        assert!(c.picture(0, t0, AGE, usize::MAX).is_none());
        // Over the burst allowed, or over the packet bound.
        c.push(&packet(0, 40, 12000, true, t0), AGE);
        c.push(&packet(0, 41, 12000, false, t0), AGE);
        assert!(c.picture(0, t0, AGE, 199).is_none());
        assert!(c.picture(0, t0, AGE, 200).is_some());
        for i in 0..MAX_PACKETS as u16 {
            c.push(&packet(0, 42 + i, 15000, false, t0), AGE);
        }
        assert!(c.picture(0, t0, AGE, usize::MAX).is_none());
        // A layer beyond the known ones is ignored.
        c.push(&packet(MAX_LAYERS as u8, 1, 0, true, t0), AGE);
    }
}
