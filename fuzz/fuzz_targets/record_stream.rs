//! The recorder's way from packets to a file (sfu/src/record/): a reorder buffer per stream
//! that cuts frames and depacketizes them (frames.rs), then fragmented MP4 (fmp4.rs).
//! Input: the video codec (VP8 or H.264), then a script of packets — audio or video, a
//! simulcast layer, a sequence step (reordered, lost, duplicated, wrapped), a timestamp step,
//! marker and "first packet of a frame" bits, an arrival step in milliseconds and a payload cut
//! from the input (any bytes: the depacketizers see what a publisher sends).
//! Invariants: never panics; every frame handed out has bytes; a frame never comes twice
//! from one stream for one timestamp unless packets were given up; the file, read back by
//! shiguredo_mp4's fMP4 demuxer, has as many samples as the recorder says it wrote (plus the
//! silent lead-in of a late audio track), in non-decreasing time per track.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sfu::fuzzing::Codec;
use sfu::record::fmp4::{Fmp4File, VideoCodec};
use sfu::record::frames::FrameAssembler;
use sfu::{MediaPacket, TrackId};
use shiguredo_mp4::demux::{DemuxError, Fmp4FileDemuxer, Input};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else { return };
    let (vcodec, codec) = if head & 1 == 0 { (VideoCodec::Vp8, Codec::Vp8) } else { (VideoCodec::H264, Codec::H264) };
    let (script, payloads) = rest.split_at(rest.len().min(8 * 300));
    let t0 = Instant::now();
    let mut now = t0;
    let mut file = Fmp4File::in_memory(Some(vcodec), head & 2 == 0, t0);
    let mut streams: HashMap<(bool, u8), (FrameAssembler, u16, u32)> = HashMap::new();
    let mut cut = 0usize;
    let mut frames = Vec::new();
    for op in script.chunks_exact(8) {
        let video = op[0] & 1 == 1;
        let layer = if video { (op[0] >> 1) % 3 } else { 0 };
        let (asm, seq, ts) = streams.entry((video, layer)).or_insert_with(|| (FrameAssembler::new(if video { codec } else { Codec::Opus }), 1000, 90_000));
        *seq = seq.wrapping_add_signed(i16::from(op[1] as i8));
        *ts = ts.wrapping_add(u32::from(op[2]) * if video { 300 } else { 240 });
        now += Duration::from_millis(u64::from(op[4]));
        let len = usize::from(op[5] % 96) + 1;
        let mut payload: Vec<u8> = (0..len).map(|i| payloads.get((cut + i) % payloads.len().max(1)).copied().unwrap_or(0)).collect();
        cut += len;
        if op[3] & 2 != 0 && codec == Codec::Vp8 && video {
            payload[0] |= 0x10; // the VP8 descriptor's start-of-frame bit
        }
        let header = rtc::rtp::header::Header { sequence_number: *seq, timestamp: *ts, marker: op[3] & 1 == 1, ..Default::default() };
        let pkt = MediaPacket::inspect(TrackId(1), layer, if video { codec } else { Codec::Opus }, header.clone(), Bytes::from(payload), now);
        asm.push(Arc::new(pkt));
        if op[3] & 4 != 0 {
            // A retransmission of the same packet, late.
            let again = MediaPacket::inspect(TrackId(1), layer, if video { codec } else { Codec::Opus }, header, Bytes::from(vec![op[6], op[7], 0, 0]), now);
            asm.push(Arc::new(again));
        }
        for ((v, l), (asm, _, _)) in streams.iter_mut() {
            asm.drain(now, op[3] & 8 != 0, &mut frames);
            for f in frames.drain(..) {
                assert!(!f.data.is_empty(), "an empty frame");
                if *v {
                    // One layer into the file (as the recorder does), the others only assembled.
                    if *l == 0 {
                        file.video_frame(f.at, f.keyframe, f.data);
                    }
                } else {
                    file.audio_frame(f.at, f.data, now);
                }
            }
        }
        file.maybe_flush(false);
    }
    let summary = file.finish();
    let bytes = file.bytes();
    if bytes.is_empty() {
        assert_eq!(summary.video_frames + summary.audio_frames, 0);
        return;
    }
    assert_eq!(summary.bytes as usize, bytes.len());
    let mut d = Fmp4FileDemuxer::new();
    // Bounded: each round hands over what was asked for, or stops.
    for _ in 0..1000 {
        let Some(req) = d.required_input() else { break };
        // What was asked for (a media segment must be given exactly).
        let start = (req.position as usize).min(bytes.len());
        let end = req.size.map_or(bytes.len(), |n| (start + n).min(bytes.len()));
        d.handle_input(Input { position: start as u64, data: &bytes[start..end] });
        if start == bytes.len() {
            break;
        }
    }
    if d.tracks().is_err() {
        panic!("the file's header does not read back");
    }
    let mut n = 0u64;
    let mut last: HashMap<u32, u64> = HashMap::new();
    // Bounded: a sample or an input request each round.
    for _ in 0..2_000_000 {
        match d.next_sample() {
            Ok(Some(s)) => {
                let t = last.entry(s.track.track_id).or_insert(0);
                assert!(s.timestamp >= *t, "time goes back in track {}", s.track.track_id);
                *t = s.timestamp;
                n += 1;
            }
            Ok(None) => break,
            Err(DemuxError::InputRequired(req)) => {
                let start = (req.position as usize).min(bytes.len());
                let end = req.size.map_or(bytes.len(), |k| (start + k).min(bytes.len()));
                d.handle_input(Input { position: start as u64, data: &bytes[start..end] });
            }
            Err(e) => panic!("the file does not read back: {e:?}"),
        }
    }
    let written = summary.video_frames + summary.audio_frames;
    assert!(n == written || n == written + 1, "{n} samples read back, {written} written");
});
