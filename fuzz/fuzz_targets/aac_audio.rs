//! A studio feed's audio, as the RTMP bridge reads it (sfu/src/ingest/mod.rs `Bridge::on_audio`):
//! each RTMP audio message is an FLV audio tag body (`flv::parse_audio`); an
//! AudioSpecificConfig (`flv::parse_aac_config`) sets up the AAC decoder, resampler and Opus
//! encoder (`audio::AacToOpus::new`); each AAC frame is decoded (symphonia), resampled to
//! 48 kHz and encoded into 20 ms Opus frames (`AacToOpus::push`).
//! Input: RTMP audio message bodies, each `[length: u16][body]`.
//! Invariants: never panics; a configuration names a rate of the AAC table and 1-2 channels;
//! each Opus frame is a non-empty packet of at most 1500 bytes. `push` catches a panic of
//! symphonia's decoder on purpose (a finding of this target): such a caught panic is not a
//! finding, so the target keeps the default panic hook; a panic that escapes still aborts
//! (libfuzzer-sys aborts when one unwinds out of the target).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu::ingest::audio::AacToOpus;
use sfu::ingest::flv::{self, AudioTag};
use std::time::Instant;

const RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

fuzz_target!(|data: &[u8]| {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
    let now = Instant::now();
    let mut aac: Option<AacToOpus> = None;
    let mut rest = data;
    while let [l0, l1, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*l0, *l1])).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        match flv::parse_audio(body) {
            Ok(AudioTag::AacConfig(asc)) => {
                if let Ok((rate, _, _)) = flv::parse_aac_config(asc) {
                    assert!(RATES.contains(&rate));
                }
                if let Ok(t) = AacToOpus::new(asc) {
                    assert!((1..=2).contains(&t.channels) && RATES.contains(&t.input_rate));
                    aac = Some(t);
                }
            }
            Ok(AudioTag::AacFrame(frame)) => {
                let Some(t) = &mut aac else { continue };
                if let Ok(frames) = t.push(frame, now) {
                    assert!(frames.iter().all(|f| !f.data.is_empty() && f.data.len() <= 1500));
                }
            }
            Err(_) => {}
        }
    }
});
