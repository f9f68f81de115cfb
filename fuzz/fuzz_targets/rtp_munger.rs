//! Sequence number and timestamp rewriting (forward/munger.rs) and the forwarder around it
//! (forward/forwarder.rs): what a publisher's numbering — reordered, lost, duplicated, wrapped,
//! restarted, switched between simulcast layers — becomes on a viewer's leg.
//! Input: a script of operations on one munger (anchor, skip, rewrite, each a small step from
//! the last input number so extended numbers stay meaningful) and the same packets through a
//! forwarder with layer switches and keyframes.
//! Invariants: never panics; a packet rewritten twice within one anchor keeps its number (a
//! retransmission is numbered as the original); a skipped packet is never sent; the first packet
//! after an anchor continues right after the last number sent; the forwarder sends nothing but
//! what the munger numbers, and no number twice for different input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu::TrackId;
use sfu::client::Vp8Temporal;
use sfu::fuzzing::{Codec, Forwarder, RtpMunger, Verdict};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((head, ops)) = data.split_at_checked(6) else { return };
    let mut m = RtpMunger::new(u16::from_be_bytes([head[0], head[1]]), u32::from_be_bytes([head[2], head[3], head[4], head[5]]));
    let mut seq: u16 = 0;
    let mut ts: u32 = 0;
    // Within the current anchor: input seq → output seq, and skipped inputs.
    let mut numbered: HashMap<u16, u16> = HashMap::new();
    let mut skipped: HashSet<u16> = HashSet::new();
    let mut last_out: Option<u16> = None;
    let mut anchored = false;
    // Skips remembered per anchor (the munger keeps the last 256).
    let mut skips = 0usize;
    // At most 400 steps of at most ±128: input numbers never wrap all the way around, so one
    // 16-bit number means one packet here.
    for op in ops.chunks_exact(3).take(400) {
        let step = op[1] as i8 as i16;
        seq = seq.wrapping_add_signed(step);
        ts = ts.wrapping_add(u32::from(op[2]) * 90);
        match op[0] % 8 {
            0 => {
                m.anchor(seq, ts, u32::from(op[2]));
                numbered.clear();
                skipped.clear();
                skips = 0;
                anchored = true;
                let (s, _) = m.rewrite(seq, ts).expect("the anchor packet passes");
                if let Some(l) = last_out {
                    assert_eq!(s, l.wrapping_add(1), "an anchor continues the output");
                }
                numbered.insert(seq, s);
                last_out = Some(s);
            }
            1 => {
                m.skip(seq);
                skips += 1;
                if anchored && !numbered.contains_key(&seq) {
                    skipped.insert(seq);
                }
            }
            _ => {
                let out = m.rewrite(seq, ts);
                if !anchored {
                    assert_eq!(out, None, "nothing is sent before an anchor");
                }
                if let Some((s, _)) = out {
                    if let Some(prev) = numbered.get(&seq) {
                        assert_eq!(*prev, s, "a retransmission keeps its number");
                    }
                    assert!(skips >= 256 || !skipped.contains(&seq), "a skipped packet was sent");
                    numbered.insert(seq, s);
                    if last_out.is_none_or(|l| (s.wrapping_sub(l) as i16) > 0) {
                        last_out = Some(s);
                    }
                }
            }
        }
    }

    // The same script through a forwarder: layers, keyframes, payload types.
    let t0 = Instant::now();
    let mut f = Forwarder::new(TrackId(1), Codec::Vp8, 1234, 90_000, t0);
    f.set_payload_type(Some(96));
    let mut sent: HashMap<u16, (u8, u16)> = HashMap::new();
    let (mut seqs, mut now) = ([0u16; 3], t0);
    for (i, op) in ops.chunks_exact(3).take(400).enumerate() {
        let layer = op[0] % 3;
        let s = &mut seqs[layer as usize];
        *s = s.wrapping_add_signed(op[1] as i8 as i16);
        now += Duration::from_millis(u64::from(op[2] % 40));
        if i % 50 == 0 {
            f.set_wanted_height(u32::from(op[2]) * 8);
            // A bandwidth share that caps layers and VP8 temporal layers, or none.
            f.apply_caps((op[1] & 1 == 1).then_some(f64::from(op[2]) * 20_000.0), now);
        }
        f.measure_temporal(layer, 1000, None, Some(op[2] % 3), now);
        let temporal = (op[0] & 0x20 != 0).then_some(Vp8Temporal { tid: op[2] % 3, frame_start: op[0] & 0x40 != 0 });
        let ts = u32::from(*s / 3) * 3000;
        if let Verdict::Send { seq, .. } = f.handle_temporal(layer, *s, ts, op[0] & 0x80 != 0, temporal, now) {
            if let Some(&(l, input)) = sent.get(&seq) {
                // The same output number again: only for the same input (a retransmission).
                assert_eq!((l, input), (layer, *s), "output number {seq} reused");
            }
            sent.insert(seq, (layer, *s));
        }
    }
});
