//! One recording file: fragmented MP4 (ISO BMFF: `ftyp` + `moov`, then a `moof` + `mdat` pair
//! per second or so), written as frames arrive, so a file cut by a crash or a kill plays up to
//! its last whole fragment. Boxes come from `shiguredo_mp4` (sans-IO, no dependencies, VP8,
//! H.264 and Opus sample entries); this module decides times and fragments and does the I/O.
//!
//! Times: each track's first sample starts at zero, the file's start being the first video
//! keyframe (audio before it is left out; if audio starts later, one silent Opus frame lasts
//! until it does), and a sample lasts until the next one of its track starts, so a pause in a
//! track (a muted camera) is one long sample, not a shift of everything after it.

use shiguredo_mp4::TrackKind;
use shiguredo_mp4::bitstream::h264::{H264SampleEntryConfig, LengthSize, build_avc1_box};
use shiguredo_mp4::bitstream::opus::{ChannelCount, OpusSampleEntryConfig, build_opus_box};
use shiguredo_mp4::bitstream::vp8::{Vp8SampleEntryConfig, build_vp08_box, parse_frame_header};
use shiguredo_mp4::boxes::SampleEntry;
use shiguredo_mp4::mux::{Fmp4SegmentMuxer, Sample};
use std::fs::File;
use std::io::Write;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A fragment is written once this much video (or audio, without video) is waiting.
pub const FRAGMENT: Duration = Duration::from_millis(1000);
/// An Opus packet of 20 ms of silence (TOC: CELT-only, fullband, 20 ms, one frame).
const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

const VIDEO_TIMESCALE: u32 = 90_000;
const AUDIO_TIMESCALE: u32 = 48_000;

/// The video codecs a file can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

impl VideoCodec {
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "vp8",
            VideoCodec::H264 => "h264",
        }
    }
}

#[derive(Debug)]
struct Queued {
    ticks: u64,
    duration: u32,
    keyframe: bool,
    data: Vec<u8>,
}

#[derive(Debug)]
struct TrackOut {
    kind: TrackKind,
    timescale: u32,
    entry: Option<SampleEntry>,
    /// The latest sample: its duration is known when the next one comes.
    pending: Option<Queued>,
    ready: Vec<Queued>,
    last_ticks: Option<u64>,
    frames: u64,
}

impl TrackOut {
    fn new(kind: TrackKind, timescale: u32) -> Self {
        Self { kind, timescale, entry: None, pending: None, ready: Vec::new(), last_ticks: None, frames: 0 }
    }

    fn ticks(&self, since_start: Duration) -> u64 {
        (since_start.as_nanos() * u128::from(self.timescale) / 1_000_000_000) as u64
    }

    fn push(&mut self, ticks: u64, keyframe: bool, data: Vec<u8>) {
        // Strictly increasing: a frame that arrives "before" the previous one (jitter of the
        // anchors after a layer switch) is placed one tick after it.
        let ticks = match self.last_ticks {
            Some(last) if ticks <= last => last + 1,
            _ => ticks,
        };
        self.last_ticks = Some(ticks);
        if let Some(mut p) = self.pending.take() {
            p.duration = u32::try_from(ticks - p.ticks).unwrap_or(u32::MAX);
            self.ready.push(p);
        }
        self.pending = Some(Queued { ticks, duration: 0, keyframe, data });
        self.frames += 1;
    }

    fn ready_duration(&self) -> Duration {
        let ticks: u64 = self.ready.iter().map(|q| u64::from(q.duration)).sum();
        Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / u64::from(self.timescale))
    }
}

/// What a finished (or cut) file holds.
#[derive(Clone, Debug, Default)]
pub struct FileSummary {
    pub path: PathBuf,
    pub bytes: u64,
    pub video_frames: u64,
    pub audio_frames: u64,
    pub video_codec: Option<VideoCodec>,
    pub width: Option<u16>,
    pub height: Option<u16>,
    /// The file's zero (its first video keyframe, or first audio frame).
    pub start: Option<Instant>,
    /// The end of its last sample.
    pub end: Option<Instant>,
    /// Why writing stopped early (a full disk, …).
    pub error: Option<String>,
}

/// Where the bytes go: a file (created with the first fragment), or memory (tests, fuzzing).
enum Out {
    None,
    File(File),
    Memory(Vec<u8>),
}

/// One fragmented MP4 file being written.
pub struct Fmp4File {
    path: PathBuf,
    file: Out,
    muxer: Fmp4SegmentMuxer,
    video: Option<TrackOut>,
    audio: Option<TrackOut>,
    video_codec: Option<VideoCodec>,
    /// Set by the first video keyframe (or first audio frame when there is no video).
    start: Option<Instant>,
    /// Audio waiting for the start (a video track exists but has no keyframe yet).
    early_audio: Vec<(Instant, Vec<u8>)>,
    created: Instant,
    initialized: bool,
    pub summary: FileSummary,
}

/// How long audio waits for the first video keyframe before the file starts without video.
pub const VIDEO_WAIT: Duration = Duration::from_secs(5);

impl Fmp4File {
    /// A file at `path` (created when the first fragment is written) for the given tracks.
    pub fn new(path: &Path, video: Option<VideoCodec>, audio: bool, now: Instant) -> Self {
        Self {
            path: path.to_owned(),
            file: Out::None,
            muxer: Fmp4SegmentMuxer::new().unwrap_or_else(|_| unreachable_muxer()),
            video: video.map(|_| TrackOut::new(TrackKind::Video, VIDEO_TIMESCALE)),
            audio: audio.then(|| TrackOut::new(TrackKind::Audio, AUDIO_TIMESCALE)),
            video_codec: video,
            start: None,
            early_audio: Vec::new(),
            created: now,
            initialized: false,
            summary: FileSummary { path: path.to_owned(), video_codec: video, ..Default::default() },
        }
    }

    /// The same, kept in memory instead of a file ([`Fmp4File::bytes`]).
    pub fn in_memory(video: Option<VideoCodec>, audio: bool, now: Instant) -> Self {
        let mut f = Self::new(Path::new("memory.mp4"), video, audio, now);
        f.file = Out::Memory(Vec::new());
        f
    }

    /// What an in-memory file holds so far.
    pub fn bytes(&self) -> &[u8] {
        match &self.file {
            Out::Memory(b) => b,
            _ => &[],
        }
    }

    pub fn has_video(&self) -> bool {
        self.video.is_some()
    }

    pub fn has_audio(&self) -> bool {
        self.audio.is_some()
    }

    /// Whether the file's zero is set (its tracks can no longer change).
    pub fn started(&self) -> bool {
        self.start.is_some()
    }

    /// Add a track before the file started ([`Fmp4File::started`]).
    pub fn add_track(&mut self, video: Option<VideoCodec>) {
        match video {
            Some(c) if self.video.is_none() => {
                self.video = Some(TrackOut::new(TrackKind::Video, VIDEO_TIMESCALE));
                self.video_codec = Some(c);
                self.summary.video_codec = Some(c);
            }
            None if self.audio.is_none() => self.audio = Some(TrackOut::new(TrackKind::Audio, AUDIO_TIMESCALE)),
            _ => {}
        }
    }

    /// A video frame at `at` (its capture time on the server's clock).
    pub fn video_frame(&mut self, at: Instant, keyframe: bool, data: Vec<u8>) {
        if self.summary.error.is_some() || self.video.is_none() {
            return;
        }
        let start = match self.start {
            // A video track added after the file began has no sample entry: its frames go to
            // a new file (the recorder starts one), never into this one.
            Some(_) if self.video.as_ref().is_some_and(|v| v.entry.is_none()) => return,
            Some(s) => s,
            None if keyframe => {
                if !self.set_video_entry(&data) {
                    return;
                }
                self.begin(at);
                at
            }
            None => return,
        };
        if at < start {
            return;
        }
        if keyframe
            && self.video_codec == Some(VideoCodec::Vp8)
            && let Some(k) = parse_frame_header(&data).ok().and_then(|h| h.keyframe)
        {
            // The largest frame the file holds (simulcast switches change it in-band).
            if self.summary.height.is_none_or(|h| k.height > h) {
                self.summary.width = Some(k.width);
                self.summary.height = Some(k.height);
            }
        }
        if let Some(v) = self.video.as_mut() {
            let ticks = v.ticks(at - start);
            v.push(ticks, keyframe, data);
        }
    }

    /// An audio frame (Opus) at `at`.
    pub fn audio_frame(&mut self, at: Instant, data: Vec<u8>, now: Instant) {
        if self.summary.error.is_some() || self.audio.is_none() {
            return;
        }
        let Some(start) = self.start else {
            // The file starts at the first video keyframe; a publisher's video track may be
            // announced after its audio, so audio waits for it, VIDEO_WAIT at most.
            self.early_audio.push((at, data));
            // Bounded: VIDEO_WAIT of 20 ms frames and then some.
            if self.early_audio.len() > 1000 {
                self.early_audio.remove(0);
            }
            if now.saturating_duration_since(self.created) >= VIDEO_WAIT {
                // No video came: the file starts with the audio, all of what waited.
                self.video = None;
                self.video_codec = None;
                self.summary.video_codec = None;
                let first = self.early_audio.first().map_or(at, |(t, _)| *t);
                self.begin(first);
            }
            return;
        };
        if at < start {
            return;
        }
        self.push_audio(at, data);
    }

    fn push_audio(&mut self, at: Instant, data: Vec<u8>) {
        let Some(start) = self.start else { return };
        let Some(a) = self.audio.as_mut() else { return };
        let ticks = a.ticks(at - start);
        if a.last_ticks.is_none() && ticks > 0 {
            // The audio starts after the file: a silent frame fills the time until it does.
            a.push(0, true, OPUS_SILENCE.to_vec());
            a.frames -= 1;
        }
        a.push(ticks, true, data);
    }

    fn begin(&mut self, at: Instant) {
        self.start = Some(at);
        self.summary.start = Some(at);
        if self.audio.is_some() && self.entry_needed_for_audio() {
            let entry = SampleEntry::Opus(build_opus_box(&OpusSampleEntryConfig {
                channel_count: ChannelCount::Stereo,
                pre_skip: 312,
                input_sample_rate: 48_000,
                output_gain: 0,
            }));
            if let Some(a) = self.audio.as_mut() {
                a.entry = Some(entry);
            }
        }
        let early = std::mem::take(&mut self.early_audio);
        for (t, d) in early {
            if t >= at {
                self.push_audio(t, d);
            }
        }
    }

    fn entry_needed_for_audio(&self) -> bool {
        self.audio.as_ref().is_some_and(|a| a.entry.is_none())
    }

    /// The sample entry from the first keyframe: VP8's frame size, H.264's SPS and PPS.
    fn set_video_entry(&mut self, data: &[u8]) -> bool {
        let entry = match self.video_codec {
            Some(VideoCodec::Vp8) => {
                let Ok(h) = parse_frame_header(data) else { return false };
                let Some(k) = h.keyframe else { return false };
                self.summary.width = Some(k.width);
                self.summary.height = Some(k.height);
                SampleEntry::Vp08(build_vp08_box(&Vp8SampleEntryConfig {
                    video_full_range_flag: false,
                    colour_primaries: Vp8SampleEntryConfig::COLOUR_PRIMARIES_UNSPECIFIED,
                    transfer_characteristics: Vp8SampleEntryConfig::TRANSFER_CHARACTERISTICS_UNSPECIFIED,
                    matrix_coefficients: Vp8SampleEntryConfig::MATRIX_COEFFICIENTS_UNSPECIFIED,
                    width: k.width,
                    height: k.height,
                }))
            }
            Some(VideoCodec::H264) => {
                let (mut sps, mut pps) = (Vec::new(), Vec::new());
                for nal in nal_units(data) {
                    match nal.first().map(|b| b & 0x1f) {
                        Some(7) => sps.push(nal.to_vec()),
                        Some(8) => pps.push(nal.to_vec()),
                        _ => {}
                    }
                }
                let Ok(b) = build_avc1_box(&sps, &pps, &H264SampleEntryConfig { length_size: LengthSize::FourBytes }) else {
                    return false;
                };
                self.summary.width = Some(b.visual.width);
                self.summary.height = Some(b.visual.height);
                SampleEntry::Avc1(b)
            }
            None => return false,
        };
        if let Some(v) = self.video.as_mut() {
            v.entry = Some(entry);
        }
        true
    }

    /// Write a fragment when enough is waiting (or everything, when `last`).
    pub fn maybe_flush(&mut self, last: bool) {
        if self.summary.error.is_some() || self.start.is_none() {
            return;
        }
        if last {
            for t in [self.video.as_mut(), self.audio.as_mut()].into_iter().flatten() {
                if let Some(mut p) = t.pending.take() {
                    // The last sample lasts as long as the one before it (or a frame's worth).
                    let fallback = if t.kind == TrackKind::Video { VIDEO_TIMESCALE / 30 } else { AUDIO_TIMESCALE / 50 };
                    p.duration = t.ready.last().map(|q| q.duration).filter(|d| *d > 0).unwrap_or(fallback);
                    t.ready.push(p);
                }
            }
        } else {
            let waiting = match (&self.video, &self.audio) {
                (Some(v), _) => v.ready_duration(),
                (None, Some(a)) => a.ready_duration(),
                (None, None) => return,
            };
            if waiting < FRAGMENT {
                return;
            }
            // The header names every track: the first fragment waits until each has a sample
            // (or the audio waits no longer).
            if !self.initialized && self.video.as_ref().zip(self.audio.as_ref()).is_some_and(|(_, a)| a.ready.is_empty()) {
                if waiting < VIDEO_WAIT {
                    return;
                }
                self.audio = None;
            }
        }
        if let Err(e) = self.write_fragment() {
            tracing::error!(path = %self.path.display(), "recording stopped: {e}");
            self.summary.error = Some(e);
            self.file = Out::None;
        }
    }

    fn write_fragment(&mut self) -> Result<(), String> {
        let mut samples = Vec::new();
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        let mut offset = 0u64;
        let mut end_ticks: Vec<(u64, u32)> = Vec::new();
        for t in [self.video.as_mut(), self.audio.as_mut()].into_iter().flatten() {
            let Some(entry) = t.entry.clone() else { continue };
            let timescale = NonZeroU32::new(t.timescale).ok_or("timescale")?;
            for q in t.ready.drain(..) {
                samples.push(Sample {
                    track_kind: t.kind,
                    timescale,
                    sample_entry: Some(entry.clone()),
                    duration: q.duration.max(1),
                    keyframe: q.keyframe,
                    composition_time_offset: None,
                    data_offset: offset,
                    data_size: q.data.len(),
                });
                offset += q.data.len() as u64;
                end_ticks.push((q.ticks + u64::from(q.duration), t.timescale));
                payloads.push(q.data);
            }
        }
        if samples.is_empty() {
            return Ok(());
        }
        let header = self.muxer.create_media_segment_metadata(&samples).map_err(|e| format!("mp4: {e:?}"))?;
        // One write per fragment: the header then the payloads, assembled first (the header
        // of the file before the first).
        let mut buf = Vec::with_capacity(header.len() + offset as usize);
        if !self.initialized {
            buf.extend_from_slice(&self.muxer.init_segment_bytes().map_err(|e| format!("mp4: {e:?}"))?);
            if matches!(self.file, Out::None) {
                self.file = Out::File(File::create(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?);
            }
            self.initialized = true;
        }
        buf.extend_from_slice(&header);
        for p in &payloads {
            buf.extend_from_slice(p);
        }
        match &mut self.file {
            Out::File(f) => f.write_all(&buf).map_err(|e| format!("{}: {e}", self.path.display()))?,
            Out::Memory(m) => m.extend_from_slice(&buf),
            Out::None => return Err("the file was closed".into()),
        }
        self.summary.bytes += buf.len() as u64;
        for s in &samples {
            match s.track_kind {
                TrackKind::Video => self.summary.video_frames += 1,
                _ => self.summary.audio_frames += 1,
            }
        }
        // The silent lead-in frame is not media the publisher sent.
        if let Some(start) = self.start {
            let end = end_ticks.iter().map(|(t, ts)| Duration::from_nanos(t.saturating_mul(1_000_000_000) / u64::from(*ts))).max();
            if let Some(end) = end {
                let end = start + end;
                if self.summary.end.is_none_or(|e| end > e) {
                    self.summary.end = Some(end);
                }
            }
        }
        Ok(())
    }

    /// Write what is left; the file is complete (an in-memory one keeps its bytes).
    pub fn finish(&mut self) -> FileSummary {
        self.maybe_flush(true);
        if let Some(a) = &self.audio
            && a.frames < self.summary.audio_frames
        {
            self.summary.audio_frames = a.frames;
        }
        if let Out::File(_) = self.file {
            self.file = Out::None;
        }
        self.summary.clone()
    }
}

/// The NAL units of a length-prefixed (4-byte) H.264 access unit.
pub fn nal_units(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let nal = data.get(4..4 + len)?;
        data = &data[4 + len..];
        Some(nal)
    })
}

fn unreachable_muxer() -> Fmp4SegmentMuxer {
    // `Fmp4SegmentMuxer::new` with default options cannot fail (it only fills in fields).
    unreachable!("shiguredo_mp4's segment muxer with default options")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shiguredo_mp4::demux::{Fmp4FileDemuxer, Input};

    /// A VP8 keyframe's first bytes: frame tag (key, shown), start code, 320×180.
    fn vp8_key() -> Vec<u8> {
        let mut v = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00];
        v.extend_from_slice(&[0u8; 32]);
        v
    }

    #[test]
    fn a_file_reads_back_with_its_tracks_times_and_a_silent_lead_in() {
        let t0 = Instant::now();
        let mut f = Fmp4File::in_memory(Some(VideoCodec::Vp8), true, t0);
        // Audio that starts before the first keyframe is left out; the file starts at it.
        f.audio_frame(t0, vec![0xf8, 1, 2], t0);
        let start = t0 + Duration::from_millis(10);
        for i in 0..90u64 {
            let at = start + Duration::from_millis(i * 1000 / 30);
            let data = if i % 30 == 0 { vp8_key() } else { vec![0x11, 0x02, 0x00, i as u8, 7, 7] };
            f.video_frame(at, i % 30 == 0, data);
            // Audio every 20 ms from 50 ms after the keyframe.
            for k in 0..2u64 {
                let a = start + Duration::from_millis(50 + (i * 2 + k) * 20);
                if a < start + Duration::from_secs(3) {
                    f.audio_frame(a, vec![0xfc, i as u8, k as u8], a);
                }
            }
            f.maybe_flush(false);
        }
        let s = f.finish();
        assert_eq!((s.video_frames, s.audio_frames), (90, 148), "{s:?}");
        assert_eq!((s.width, s.height), (Some(320), Some(180)));
        let bytes = f.bytes().to_vec();
        assert_eq!(s.bytes as usize, bytes.len());
        assert!(bytes.windows(4).filter(|w| w == b"moof").count() >= 3, "a fragment a second");
        let mut d = Fmp4FileDemuxer::new();
        while let Some(req) = d.required_input() {
            let at = (req.position as usize).min(bytes.len());
            let end = req.size.map_or(bytes.len(), |n| (at + n).min(bytes.len()));
            d.handle_input(Input { position: at as u64, data: &bytes[at..end] });
            if at == bytes.len() {
                break;
            }
        }
        assert_eq!(d.tracks().map(|t| t.len()).map_err(|e| format!("{e:?}")), Ok(2));
        let (mut video, mut audio) = (Vec::new(), Vec::new());
        for _ in 0..10_000 {
            match d.next_sample() {
                Ok(Some(x)) => {
                    let secs = x.timestamp as f64 / f64::from(x.track.timescale.get());
                    if x.track.timescale.get() == VIDEO_TIMESCALE { video.push((secs, x.keyframe)) } else { audio.push(secs) }
                }
                Ok(None) => break,
                Err(shiguredo_mp4::demux::DemuxError::InputRequired(req)) => {
                    let at = (req.position as usize).min(bytes.len());
                    let end = req.size.map_or(bytes.len(), |n| (at + n).min(bytes.len()));
                    d.handle_input(Input { position: at as u64, data: &bytes[at..end] });
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(video.len(), 90);
        assert_eq!(video.iter().filter(|v| v.1).count(), 3, "keyframes marked");
        assert!((video[45].0 - 1.5).abs() < 0.002, "{:?}", video[45]);
        assert_eq!(audio.len(), 149, "148 frames and the silent lead-in");
        assert_eq!(audio[0], 0.0);
        assert!((audio[1] - 0.050).abs() < 0.001, "the first audio frame keeps its place: {}", audio[1]);
    }
}

#[cfg(test)]
mod late_video {
    use super::*;

    /// A publisher's audio track comes first and its video track a second later (the e2e's
    /// co-host did): the video is in the file from its first keyframe, the audio from there on
    /// — before, the audio started the file alone and the video's frames were never written.
    #[test]
    fn a_video_track_announced_after_the_audio_is_recorded() {
        let t0 = Instant::now();
        let mut f = Fmp4File::in_memory(None, true, t0);
        for i in 0..50u64 {
            let at = t0 + Duration::from_millis(i * 20);
            f.audio_frame(at, vec![0xfc, i as u8], at);
            f.maybe_flush(false);
        }
        assert!(!f.started(), "the audio waits for a video track");
        f.add_track(Some(VideoCodec::Vp8));
        let key = {
            let mut v = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00];
            v.extend_from_slice(&[0u8; 32]);
            v
        };
        for i in 0..90u64 {
            let at = t0 + Duration::from_millis(1000 + i * 1000 / 30);
            f.video_frame(at, i == 0, if i == 0 { key.clone() } else { vec![0x11, 0x02, 0x00, i as u8] });
            for k in 0..2u64 {
                let a = t0 + Duration::from_millis(1000 + (i * 2 + k) * 1000 / 60);
                f.audio_frame(a, vec![0xfc, k as u8], a);
            }
            f.maybe_flush(false);
        }
        let s = f.finish();
        assert_eq!(s.video_frames, 90, "{s:?}");
        assert!(s.audio_frames >= 170, "{s:?}");
        assert_eq!(s.height, Some(180));
    }
}

#[cfg(test)]
mod disk_full {
    use super::*;

    /// A full disk (`/dev/full` answers every write with ENOSPC): the file stops with the
    /// error in its summary; nothing panics and later frames are ignored.
    #[test]
    fn a_full_disk_stops_the_file_with_its_error() {
        let t0 = Instant::now();
        let mut f = Fmp4File::new(Path::new("/dev/full"), None, true, t0);
        // Audio alone waits VIDEO_WAIT (5 s) for a video track, then the file starts.
        for i in 0..400u64 {
            let at = t0 + Duration::from_millis(i * 20);
            f.audio_frame(at, vec![0xfc, i as u8], at);
            f.maybe_flush(false);
        }
        let s = f.finish();
        let e = s.error.unwrap_or_default();
        assert!(e.contains("No space left"), "{e}");
        assert_eq!(s.bytes, 0);
    }
}
