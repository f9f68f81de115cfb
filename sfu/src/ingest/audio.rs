//! AAC (what RTMP encoders send) to Opus (what WebRTC plays): decode with symphonia's AAC-LC
//! decoder, resample to 48 kHz with rubato when needed, encode 20 ms Opus frames (opus-rs,
//! restricted-low-delay mode: CELT only, no look-ahead beyond 2.5 ms). Mono stays mono,
//! stereo stays stereo.

use crate::ingest::error::IngestError;
use crate::ingest::flv::parse_aac_config;
use opus_rs::{Application, OpusEncoder};
use rubato::{FftFixedIn, Resampler};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;
use symphonia_codec_aac::AacDecoder;
use symphonia_core::audio::SampleBuffer;
use symphonia_core::codecs::{CODEC_TYPE_AAC, CodecParameters, Decoder, DecoderOptions};
use symphonia_core::formats::Packet;

/// Opus frame: 20 ms at 48 kHz.
pub const FRAME: usize = 960;
/// Resampler input block (10 ms at 44.1 kHz; any rate works, this sets its delay).
const RESAMPLE_BLOCK: usize = 480;
/// Largest AAC frame accepted (an AAC-LC frame is at most 768 bytes per channel).
const MAX_AAC_FRAME: usize = 8192;

/// One encoded Opus frame and when the oldest AAC input that went into it arrived.
pub struct OpusFrame {
    pub data: Vec<u8>,
    pub arrived: Instant,
}

pub struct AacToOpus {
    decoder: AacDecoder,
    resampler: Option<FftFixedIn<f32>>,
    encoder: OpusEncoder,
    /// Channels in and out (1 or 2).
    pub channels: usize,
    pub input_rate: u32,
    /// Per-channel samples waiting for the resampler.
    resample_in: Vec<Vec<f32>>,
    /// Interleaved 48 kHz samples waiting for the encoder, and when their oldest input came.
    pending: Vec<f32>,
    pending_since: Option<Instant>,
    sample_buf: Option<SampleBuffer<f32>>,
}

impl AacToOpus {
    pub fn new(asc: &[u8]) -> Result<Self, IngestError> {
        let (rate, channels, object) = parse_aac_config(asc)?;
        if object != 2 {
            return Err(IngestError::Unsupported(format!("AAC object type {object}; send AAC-LC")));
        }
        if !(1..=2).contains(&channels) {
            return Err(IngestError::Unsupported(format!("AAC with {channels} channel(s); send mono or stereo")));
        }
        let channels = usize::from(channels);
        let mut params = CodecParameters::new();
        params.for_codec(CODEC_TYPE_AAC).with_sample_rate(rate).with_extra_data(asc.to_vec().into_boxed_slice());
        let decoder = AacDecoder::try_new(&params, &DecoderOptions::default())
            .map_err(|e| IngestError::Unsupported(format!("AAC configuration: {e}")))?;
        let resampler = if rate == 48_000 {
            None
        } else {
            Some(
                FftFixedIn::new(rate as usize, 48_000, RESAMPLE_BLOCK, 1, channels)
                    .map_err(|e| IngestError::Unsupported(format!("resampling from {rate} Hz: {e}")))?,
            )
        };
        let mut encoder = OpusEncoder::new(48_000, channels, Application::RestrictedLowDelay)
            .map_err(|e| IngestError::Unsupported(format!("Opus encoder: {e}")))?;
        encoder.bitrate_bps = if channels == 2 { 96_000 } else { 64_000 };
        encoder.complexity = 5;
        Ok(Self {
            decoder,
            resampler,
            encoder,
            channels,
            input_rate: rate,
            resample_in: vec![Vec::new(); channels],
            pending: Vec::new(),
            pending_since: None,
            sample_buf: None,
        })
    }

    /// Decode one AAC frame; returns the Opus frames it completed.
    pub fn push(&mut self, aac: &[u8], arrived: Instant) -> Result<Vec<OpusFrame>, IngestError> {
        if aac.is_empty() || aac.len() > MAX_AAC_FRAME {
            return Err(IngestError::Malformed("AAC frame size out of range"));
        }
        let packet = Packet::new_from_slice(0, 0, 1024, aac);
        // symphonia's AAC decoder indexes past its tables on some malformed frames (found by the
        // `aac_audio` fuzz target): the panic is this frame's error, and the decoder starts over.
        let decoded = match catch_unwind(AssertUnwindSafe(|| self.decoder.decode(&packet).map(|_| ()))) {
            Ok(Ok(())) => self.decoder.last_decoded(),
            Ok(Err(e)) => return Err(IngestError::Decode(format!("AAC: {e}"))),
            Err(_) => {
                self.decoder.reset();
                return Err(IngestError::Decode("AAC: the decoder failed on this frame".into()));
            }
        };
        let spec = *decoded.spec();
        let frames = decoded.frames();
        let buf = match &mut self.sample_buf {
            Some(b) if b.capacity() >= frames * spec.channels.count() => b,
            slot => slot.insert(SampleBuffer::new(frames as u64, spec)),
        };
        buf.copy_interleaved_ref(decoded);
        let samples = buf.samples();
        let ch = self.channels;
        if self.pending_since.is_none() && self.pending.is_empty() {
            self.pending_since = Some(arrived);
        }
        match &mut self.resampler {
            None => self.pending.extend_from_slice(samples),
            Some(r) => {
                for frame in samples.chunks_exact(ch) {
                    for (c, s) in frame.iter().enumerate() {
                        self.resample_in[c].push(*s);
                    }
                }
                while self.resample_in[0].len() >= r.input_frames_next() {
                    let n = r.input_frames_next();
                    let out = r.process(&self.resample_in, None).map_err(|e| IngestError::Decode(format!("resampler: {e}")))?;
                    for c in &mut self.resample_in {
                        c.drain(..n);
                    }
                    let len = out.first().map(Vec::len).unwrap_or(0);
                    for i in 0..len {
                        for c in &out {
                            self.pending.push(c[i]);
                        }
                    }
                }
            }
        }
        let mut frames_out = Vec::new();
        while self.pending.len() >= FRAME * ch {
            let mut data = vec![0u8; 1500];
            let n = self
                .encoder
                .encode(&self.pending[..FRAME * ch], FRAME, &mut data)
                .map_err(|e| IngestError::Decode(format!("Opus encoder: {e}")))?;
            data.truncate(n);
            self.pending.drain(..FRAME * ch);
            let since = self.pending_since.unwrap_or(arrived);
            frames_out.push(OpusFrame { data, arrived: since });
            // What is left came with the latest input at the earliest.
            self.pending_since = if self.pending.is_empty() { None } else { Some(arrived) };
        }
        Ok(frames_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_it_cannot_decode() {
        // HE-AAC (object type 5), 5.1, too short.
        assert!(AacToOpus::new(&[0x2b, 0x92]).is_err());
        assert!(AacToOpus::new(&[0x11, 0xb0]).is_err());
        assert!(AacToOpus::new(&[0x12]).is_err());
        let mut t = AacToOpus::new(&[0x12, 0x10]).expect("AAC-LC 44.1 kHz stereo");
        assert_eq!((t.channels, t.input_rate), (2, 44100));
        // Garbage frames are errors, not panics.
        for n in [1usize, 7, 100, 700] {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let _ = t.push(&junk, Instant::now());
        }
        assert!(t.push(&[], Instant::now()).is_err());
        assert!(t.push(&vec![0; MAX_AAC_FRAME + 1], Instant::now()).is_err());
    }

    /// Found by the `aac_audio` fuzz target: a real first frame of ffmpeg's, then a frame that
    /// made symphonia index out of bounds. An error, and the next frames still decode.
    #[test]
    fn a_frame_that_panics_the_decoder_is_an_error() {
        let hex = |s: &str| (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0)).collect::<Vec<u8>>();
        let first = hex(concat!(
            "de02004c61766335392e33372e3130300042509ffffff804d59e0a8dd40c65b59c26496b96923b648b903a9daea82c651591a",
            "91ec696024c25df771d5fabe3b1ae44a9ad454894891696d2c0c0c0c8912206366c191224488d9b360c0c89122366cd9b448914a",
            "6cd9b3689122966873a818cb6b384c92d72d2476c91720000000000000038"
        ));
        let bad = hex(concat!(
            "214a6cfe1f87",
            "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000e1f84d594bb2ca75653ab25d39fe7dbab6cf17aefff4fdfae35cf67cf6fe6afff5f1",
            "ae35efd71a0bfff6feffffffffffffff2fd0000000000000000e009baf0121794ffffff80025696c424e8c83a120e8c83a110e8579efe",
            "a7b79f8a8b4b2cb874c9c5eae351611164739ce7b0c8d"
        ));
        let mut t = AacToOpus::new(&[0x12, 0x10, 0x56, 0xe5, 0x00]).expect("AAC-LC 44.1 kHz stereo");
        assert!(t.push(&first, Instant::now()).is_ok());
        assert!(t.push(&bad, Instant::now()).is_err());
        assert!(t.push(&first, Instant::now()).is_ok(), "the decoder carries on");
    }
}
