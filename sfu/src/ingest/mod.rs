//! In-process publishers: the RTMP bridge's media side. Signaling owns the RTMP connection and
//! hands each FLV video/audio message to a [`Bridge`], which turns it into RTP for the router:
//! H.264 passes through (AVCC → RFC 6184), AAC becomes Opus. The router cannot tell these
//! tracks from a browser's.
//!
//! A bridge outlives its RTMP connection: when the encoder drops and comes back with the same
//! key, the same bridge resumes into the same tracks with continuous sequence numbers and
//! timestamps, so viewers keep their subscription.

pub mod audio;
mod error;
pub mod flv;
pub mod h264;

pub use error::IngestError;

use crate::api::{CodecInfo, MediaKind, TrackInfo};
use crate::error::SfuError;
use crate::handle::Sfu;
use crate::ids::{ParticipantId, TrackId};
use crate::media::codec::h264_is_keyframe;
use crate::media::packet::MediaPacket;
use audio::AacToOpus;
use bytes::Bytes;
use flv::{AudioTag, AvcConfig, VideoTag};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::{Duration, Instant};

/// The codecs ingest tracks are published with. H.264 is announced as constrained baseline
/// (42e01f), the profile every WebRTC browser negotiates; the stream's real profile (often
/// Main or High from OBS) is decoded by the same decoders — measured in the Chromium test.
pub fn ingest_codecs() -> Vec<(MediaKind, CodecInfo)> {
    vec![
        (
            MediaKind::Video,
            CodecInfo {
                mime_type: "video/H264".into(),
                clock_rate: 90_000,
                channels: 0,
                fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
            },
        ),
        (
            MediaKind::Audio,
            CodecInfo { mime_type: "audio/opus".into(), clock_rate: 48_000, channels: 2, fmtp: "minptime=10;useinbandfec=1".into() },
        ),
    ]
}

/// Something the encoder's operator should hear about (signaling tells the host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Notice {
    /// The encoder sends B-frames (non-zero composition time offsets).
    Bframes,
    /// Keyframes arrive further apart than 2 s; every viewer's join waits for the next one.
    KeyframeInterval { ms: u32 },
    /// A codec or format the bridge cannot pass on.
    Unsupported { detail: String },
}

impl Notice {
    /// The sentence for the host, with the fix.
    pub fn message(&self) -> String {
        match self {
            Notice::Bframes => "the encoder sends B-frames, which WebRTC players cannot show; Onair drops them, so viewers get fewer frames per second. Set B-frames to 0 (x264: tune zerolatency or bframes=0)".into(),
            Notice::KeyframeInterval { ms } => format!("keyframes are {:.1} s apart; set the keyframe interval to 1-2 s so viewers start fast", *ms as f64 / 1000.0),
            Notice::Unsupported { detail } => format!("the studio feed sends something Onair cannot play: {detail}"),
        }
    }
}

/// Longest keyframe interval without a warning.
pub const MAX_KEYFRAME_INTERVAL_MS: u32 = 2000;

/// Time media spends inside the bridge (RTMP message in → RTP handed to the router).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct DelayStats {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// What the bridge reports.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct BridgeStats {
    pub connections: u32,
    pub video_frames: u64,
    pub keyframes: u64,
    pub audio_frames: u64,
    pub rtp_packets: u64,
    /// The encoder's H.264 profile-level-id (from its SPS), e.g. 640028 for High 4.0.
    pub profile_level_id: Option<String>,
    pub bframes: bool,
    /// B-frames not forwarded (WebRTC decoders cannot reorder them).
    pub bframes_dropped: u64,
    pub keyframe_interval_ms: Option<u32>,
    pub video_delay: DelayStats,
    pub audio_delay: DelayStats,
    /// Messages refused as malformed or undecodable (each logged).
    pub errors: u64,
}

struct Delay {
    hist: Histogram<u64>,
}

impl Delay {
    fn new() -> Self {
        // 1 µs .. 60 s at 3 significant digits; the bounds are constants, so this cannot fail.
        #[allow(clippy::expect_used)]
        let hist = Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid"); // cannot fail: constant, valid bounds
        Self { hist }
    }

    fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 60_000_000);
        let _ = self.hist.record(us);
    }

    fn stats(&self) -> DelayStats {
        DelayStats {
            count: self.hist.len(),
            p50_us: self.hist.value_at_quantile(0.5),
            p99_us: self.hist.value_at_quantile(0.99),
            max_us: self.hist.max(),
        }
    }
}

/// RTP timestamps for one track across reconnects: each connection's RTMP clock is mapped so
/// the track's timestamps keep rising by the wall time between the two connections.
struct Clock {
    rate: u32,
    offset: Option<u32>,
    last: Option<(u32, Instant)>,
}

impl Clock {
    fn new(rate: u32) -> Self {
        Self { rate, offset: None, last: None }
    }

    fn units(&self, ms: u32) -> u32 {
        (u64::from(ms) * u64::from(self.rate) / 1000) as u32
    }

    fn rtp(&mut self, ms: u32, now: Instant) -> u32 {
        let units = self.units(ms);
        let offset = match self.offset {
            Some(o) => o,
            None => {
                let o = match self.last {
                    Some((ts, at)) => {
                        let gap = (now.duration_since(at).as_millis() as u32).max(40);
                        ts.wrapping_add(self.units(gap)).wrapping_sub(units)
                    }
                    None => rand::random::<u32>().wrapping_sub(units),
                };
                self.offset = Some(o);
                o
            }
        };
        let ts = offset.wrapping_add(units);
        self.last = Some((ts, now));
        ts
    }
}

/// One studio feed's media path into the SFU.
pub struct Bridge {
    sfu: Sfu,
    participant: ParticipantId,
    pub video: TrackId,
    pub audio: TrackId,
    video_ssrc: u32,
    audio_ssrc: u32,
    video_seq: u16,
    audio_seq: u16,
    video_clock: Clock,
    audio_clock: Clock,
    /// RTP timestamp of the next Opus frame (48 kHz), once audio started on this connection.
    audio_next: Option<u32>,
    avc: Option<AvcConfig>,
    aac: Option<AacToOpus>,
    last_keyframe_ms: Option<u32>,
    warned_bframes: bool,
    warned_interval: bool,
    warned_unsupported: bool,
    stats: BridgeStats,
    video_delay: Delay,
    audio_delay: Delay,
    /// Interval histograms for the periodic log line.
    recent_video: Delay,
    recent_audio: Delay,
    payloads: Vec<Bytes>,
}

impl Bridge {
    /// Publish the two ingest tracks for `participant` (already added to the SFU).
    pub async fn open(sfu: Sfu, participant: ParticipantId) -> Result<(Bridge, Vec<TrackInfo>), SfuError> {
        let infos = sfu.open_ingest(participant, ingest_codecs()).await?;
        let id = |k: MediaKind| infos.iter().find(|t| t.kind == k).map(|t| t.id).ok_or(SfuError::NoSession);
        let bridge = Bridge {
            video: id(MediaKind::Video)?,
            audio: id(MediaKind::Audio)?,
            sfu,
            participant,
            video_ssrc: rand::random(),
            audio_ssrc: rand::random(),
            video_seq: rand::random(),
            audio_seq: rand::random(),
            video_clock: Clock::new(90_000),
            audio_clock: Clock::new(48_000),
            audio_next: None,
            avc: None,
            aac: None,
            last_keyframe_ms: None,
            warned_bframes: false,
            warned_interval: false,
            warned_unsupported: false,
            stats: BridgeStats::default(),
            video_delay: Delay::new(),
            audio_delay: Delay::new(),
            recent_video: Delay::new(),
            recent_audio: Delay::new(),
            payloads: Vec::new(),
        };
        Ok((bridge, infos))
    }

    /// A new RTMP connection starts feeding this bridge (the first, or a reconnect).
    pub fn connected(&mut self) {
        self.stats.connections += 1;
        self.video_clock.offset = None;
        self.audio_clock.offset = None;
        self.audio_next = None;
        self.avc = None;
        self.aac = None;
        self.last_keyframe_ms = None;
        self.warned_bframes = false;
        self.warned_interval = false;
        self.warned_unsupported = false;
    }

    pub fn stats(&self) -> BridgeStats {
        let mut s = self.stats.clone();
        s.video_delay = self.video_delay.stats();
        s.audio_delay = self.audio_delay.stats();
        s
    }

    /// Delay over the time since the last call (for the periodic log line), then reset.
    pub fn take_recent(&mut self) -> (DelayStats, DelayStats) {
        let r = (self.recent_video.stats(), self.recent_audio.stats());
        self.recent_video.hist.reset();
        self.recent_audio.hist.reset();
        r
    }

    fn unsupported(&mut self, e: &IngestError) -> Option<Notice> {
        if let IngestError::Unsupported(detail) = e
            && !self.warned_unsupported
        {
            self.warned_unsupported = true;
            return Some(Notice::Unsupported { detail: detail.clone() });
        }
        None
    }

    /// One RTMP video message. Errors are per message: the caller logs them and carries on.
    pub fn on_video(&mut self, body: &[u8], rtmp_ms: u32, arrived: Instant, notices: &mut Vec<Notice>) -> Result<(), IngestError> {
        let tag = flv::parse_video(body).inspect_err(|e| notices.extend(self.unsupported(e)))?;
        let (keyframe, composition_ms, data) = match tag {
            VideoTag::Ignore => return Ok(()),
            VideoTag::AvcConfig(rec) => {
                let config = flv::parse_avc_config(rec)?;
                tracing::info!(
                    participant = %self.participant,
                    profile = config.profile,
                    level = config.level,
                    profile_level_id = h264::profile_level_id(&config.sps[0]).as_deref().unwrap_or("?"),
                    "studio feed: H.264 configuration"
                );
                self.stats.profile_level_id = h264::profile_level_id(&config.sps[0]);
                self.avc = Some(config);
                return Ok(());
            }
            VideoTag::AvcNalus { keyframe, composition_ms, data } => (keyframe, composition_ms, data),
        };
        let Some(avc) = &self.avc else {
            return Err(IngestError::Malformed("H.264 frame before its configuration record"));
        };
        let nalus = flv::split_nalus(data, avc.nal_length_size)?;
        if nalus.is_empty() {
            return Ok(());
        }
        if composition_ms != 0 && !self.warned_bframes {
            self.warned_bframes = true;
            self.stats.bframes = true;
            notices.push(Notice::Bframes);
        }
        // WebRTC decoders do not reorder: B-frames are not forwarded (the encoder is told why).
        if nalus.iter().any(|n| h264::slice_type(n) == Some(1)) {
            self.stats.bframes_dropped += 1;
            return Ok(());
        }
        self.payloads.clear();
        let au = h264::packetize(&nalus, &avc.sps, &avc.pps, h264::MAX_PAYLOAD, &mut self.payloads);
        if au.idr || keyframe {
            if let Some(last) = self.last_keyframe_ms {
                let interval = rtmp_ms.wrapping_sub(last);
                if interval < 60_000 {
                    self.stats.keyframe_interval_ms = Some(interval);
                    if interval > MAX_KEYFRAME_INTERVAL_MS && !self.warned_interval {
                        self.warned_interval = true;
                        notices.push(Notice::KeyframeInterval { ms: interval });
                    }
                }
            }
            self.last_keyframe_ms = Some(rtmp_ms);
            self.stats.keyframes += 1;
        }
        // RTP timestamps follow decode time (the RTMP timestamp), not presentation time: WebRTC
        // receivers time frames in arrival (decode) order, and presentation times that step
        // backwards around B-frames make them drop or stall frames. Without B-frames the two
        // are equal. Measured in docs/benchmarks.md.
        let ts = self.video_clock.rtp(rtmp_ms, arrived);
        // Borrowed out and put back, so the buffer's capacity is reused frame after frame.
        let mut payloads = std::mem::take(&mut self.payloads);
        let n = payloads.len();
        for (i, payload) in payloads.drain(..).enumerate() {
            let keyframe = h264_is_keyframe(&payload);
            self.send(MediaKind::Video, i + 1 == n, ts, payload, keyframe, arrived);
        }
        self.payloads = payloads;
        self.stats.video_frames += 1;
        let d = arrived.elapsed();
        self.video_delay.record(d);
        self.recent_video.record(d);
        Ok(())
    }

    /// One RTMP audio message.
    pub fn on_audio(&mut self, body: &[u8], rtmp_ms: u32, arrived: Instant, notices: &mut Vec<Notice>) -> Result<(), IngestError> {
        let tag = flv::parse_audio(body).inspect_err(|e| notices.extend(self.unsupported(e)))?;
        match tag {
            AudioTag::AacConfig(asc) => {
                let t = AacToOpus::new(asc).inspect_err(|e| notices.extend(self.unsupported(e)))?;
                tracing::info!(participant = %self.participant, rate = t.input_rate, channels = t.channels, "studio feed: AAC configuration");
                self.aac = Some(t);
                Ok(())
            }
            AudioTag::AacFrame(frame) => {
                let Some(aac) = &mut self.aac else {
                    return Err(IngestError::Malformed("AAC frame before its configuration"));
                };
                let frames = aac.push(frame, arrived)?;
                if frames.is_empty() {
                    return Ok(());
                }
                let mut next = match self.audio_next {
                    Some(t) => t,
                    None => self.audio_clock.rtp(rtmp_ms, arrived),
                };
                for f in frames {
                    self.audio_clock.last = Some((next, arrived));
                    self.send(MediaKind::Audio, false, next, Bytes::from(f.data), false, f.arrived);
                    next = next.wrapping_add(audio::FRAME as u32);
                    self.stats.audio_frames += 1;
                    let d = f.arrived.elapsed();
                    self.audio_delay.record(d);
                    self.recent_audio.record(d);
                }
                self.audio_next = Some(next);
                Ok(())
            }
        }
    }

    /// One RTP packet of the video or audio track into the router; each track keeps its SSRC
    /// and sequence numbers across reconnects.
    fn send(&mut self, kind: MediaKind, marker: bool, timestamp: u32, payload: Bytes, keyframe: bool, received: Instant) {
        let (track, ssrc, seq, payload_type) = match kind {
            MediaKind::Video => (self.video, self.video_ssrc, &mut self.video_seq, 102),
            MediaKind::Audio => (self.audio, self.audio_ssrc, &mut self.audio_seq, 111),
        };
        let header =
            rtc::rtp::header::Header { version: 2, marker, payload_type, sequence_number: *seq, timestamp, ssrc, ..Default::default() };
        *seq = seq.wrapping_add(1);
        let pkt = MediaPacket { track, layer: 0, header, keyframe, payload, frame_height: None, temporal: None, received };
        let _ = self.sfu.ingest(self.participant, pkt);
        self.stats.rtp_packets += 1;
    }

    /// Count a refused message.
    pub fn count_error(&mut self) {
        self.stats.errors += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_continues_across_reconnects() {
        let mut c = Clock::new(90_000);
        let t0 = Instant::now();
        let a = c.rtp(1000, t0);
        let b = c.rtp(1040, t0 + Duration::from_millis(40));
        assert_eq!(b.wrapping_sub(a), 3600);
        // The encoder reconnects 2 s later and its clock restarts at 0.
        c.offset = None;
        let d = c.rtp(0, t0 + Duration::from_millis(2040));
        assert_eq!(d.wrapping_sub(b), 180_000);
        assert_eq!(c.rtp(40, t0 + Duration::from_millis(2080)).wrapping_sub(d), 3600);
    }
}
