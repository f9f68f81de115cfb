//! The FLV tag bodies RTMP carries (video and audio messages), and the codec configuration
//! records inside them. Everything here reads untrusted bytes: lengths are checked, nothing
//! panics, and errors say what was wrong.

use crate::ingest::error::IngestError;

/// One RTMP video message.
#[derive(Debug, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.2.4.1).
    AvcConfig(&'a [u8]),
    /// Length-prefixed NAL units of one access unit.
    AvcNalus { keyframe: bool, composition_ms: i32, data: &'a [u8] },
    /// End of sequence, or a command frame: nothing to forward.
    Ignore,
}

/// FLV codec id 7 is AVC; enhanced RTMP sets bit 7 and names a FourCC instead.
pub fn parse_video(body: &[u8]) -> Result<VideoTag<'_>, IngestError> {
    let &b0 = body.first().ok_or(IngestError::Malformed("empty video message"))?;
    if b0 & 0x80 != 0 {
        let fourcc = body.get(1..5).map(|f| String::from_utf8_lossy(f).into_owned()).unwrap_or_default();
        return Err(IngestError::Unsupported(format!("video codec {fourcc:?} (enhanced RTMP); send H.264")));
    }
    let frame_type = b0 >> 4;
    let codec = b0 & 0x0f;
    if codec != 7 {
        return Err(IngestError::Unsupported(format!("FLV video codec id {codec}; send H.264 (AVC)")));
    }
    if frame_type == 5 {
        return Ok(VideoTag::Ignore); // video info / command frame
    }
    let header = body.get(1..5).ok_or(IngestError::Malformed("video message shorter than its AVC header"))?;
    let packet_type = header[0];
    // Composition time: signed 24-bit big-endian.
    let raw = (u32::from(header[1]) << 16) | (u32::from(header[2]) << 8) | u32::from(header[3]);
    let composition_ms = ((raw << 8) as i32) >> 8;
    let data = &body[5..];
    match packet_type {
        0 => Ok(VideoTag::AvcConfig(data)),
        1 => Ok(VideoTag::AvcNalus { keyframe: frame_type == 1, composition_ms, data }),
        2 => Ok(VideoTag::Ignore),
        _ => Err(IngestError::Malformed("unknown AVC packet type")),
    }
}

/// The parts of an AVCDecoderConfigurationRecord we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvcConfig {
    pub profile: u8,
    pub compatibility: u8,
    pub level: u8,
    /// Bytes in each NAL unit's length prefix (1, 2 or 4).
    pub nal_length_size: usize,
    pub sps: Vec<Vec<u8>>,
    pub pps: Vec<Vec<u8>>,
}

/// Largest SPS or PPS accepted (real ones are tens of bytes).
const MAX_PARAMETER_SET: usize = 1024;

pub fn parse_avc_config(rec: &[u8]) -> Result<AvcConfig, IngestError> {
    let bad = IngestError::Malformed("truncated AVCDecoderConfigurationRecord");
    let head = rec.get(..6).ok_or(bad.clone())?;
    if head[0] != 1 {
        return Err(IngestError::Malformed("AVCDecoderConfigurationRecord version is not 1"));
    }
    let nal_length_size = usize::from(head[4] & 0x03) + 1;
    if nal_length_size == 3 {
        return Err(IngestError::Malformed("NAL length size 3 is not allowed"));
    }
    let mut at = 6;
    let read_sets = |count: usize, nal_type: u8, at: &mut usize| -> Result<Vec<Vec<u8>>, IngestError> {
        let mut sets = Vec::with_capacity(count.min(32));
        for _ in 0..count {
            let len = rec.get(*at..*at + 2).ok_or(bad.clone())?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            if len == 0 || len > MAX_PARAMETER_SET {
                return Err(IngestError::Malformed("parameter set length out of range"));
            }
            let set = rec.get(*at + 2..*at + 2 + len).ok_or(bad.clone())?;
            // Sent as they are in front of each IDR: anything but an SPS or PPS here would reach
            // viewers as a stray NAL unit, or read as an aggregation or fragment header (found by
            // the `flv_video` fuzz target).
            if set[0] & 0x1f != nal_type {
                return Err(IngestError::Malformed("a parameter set of the wrong NAL unit type"));
            }
            sets.push(set.to_vec());
            *at += 2 + len;
        }
        Ok(sets)
    };
    let sps = read_sets(usize::from(head[5] & 0x1f), 7, &mut at)?;
    let pps_count = usize::from(*rec.get(at).ok_or(bad.clone())?);
    at += 1;
    let pps = read_sets(pps_count, 8, &mut at)?;
    if sps.is_empty() || pps.is_empty() {
        return Err(IngestError::Malformed("AVC configuration without SPS or PPS"));
    }
    Ok(AvcConfig { profile: head[1], compatibility: head[2], level: head[3], nal_length_size, sps, pps })
}

/// Split length-prefixed NAL units; refuses a length that runs past the end.
pub fn split_nalus(data: &[u8], length_size: usize) -> Result<Vec<&[u8]>, IngestError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let prefix = data.get(at..at + length_size).ok_or(IngestError::Malformed("truncated NAL length"))?;
        let len = prefix.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        at += length_size;
        let nal = data.get(at..at + len).ok_or(IngestError::Malformed("NAL unit runs past the message"))?;
        if !nal.is_empty() {
            out.push(nal);
        }
        at += len;
    }
    Ok(out)
}

/// One RTMP audio message.
#[derive(Debug, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).
    AacConfig(&'a [u8]),
    /// One raw AAC frame.
    AacFrame(&'a [u8]),
}

pub fn parse_audio(body: &[u8]) -> Result<AudioTag<'_>, IngestError> {
    let &b0 = body.first().ok_or(IngestError::Malformed("empty audio message"))?;
    let format = b0 >> 4;
    if format != 10 {
        return Err(IngestError::Unsupported(format!("FLV sound format {format}; send AAC")));
    }
    let &kind = body.get(1).ok_or(IngestError::Malformed("audio message shorter than its AAC header"))?;
    match kind {
        0 => Ok(AudioTag::AacConfig(&body[2..])),
        1 => Ok(AudioTag::AacFrame(&body[2..])),
        _ => Err(IngestError::Malformed("unknown AAC packet type")),
    }
}

/// Sample rate and channel count from an AudioSpecificConfig.
pub fn parse_aac_config(asc: &[u8]) -> Result<(u32, u8, u8), IngestError> {
    const RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
    let (&a, &b) = (
        asc.first().ok_or(IngestError::Malformed("empty AudioSpecificConfig"))?,
        asc.get(1).ok_or(IngestError::Malformed("truncated AudioSpecificConfig"))?,
    );
    let object = a >> 3;
    let index = ((a & 0x07) << 1) | (b >> 7);
    if index == 15 {
        return Err(IngestError::Unsupported("AAC with an explicit sample rate".into()));
    }
    let rate = *RATES.get(usize::from(index)).ok_or(IngestError::Malformed("AAC sample rate index out of range"))?;
    let channels = (b >> 3) & 0x0f;
    Ok((rate, channels, object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_config_round_trip_and_truncation() {
        let rec = [1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 3, 0x67, 0x64, 0x00, 1, 0, 2, 0x68, 0xee];
        let c = parse_avc_config(&rec).expect("valid record");
        assert_eq!(c.nal_length_size, 4);
        assert_eq!(c.sps, vec![vec![0x67, 0x64, 0x00]]);
        assert_eq!(c.pps, vec![vec![0x68, 0xee]]);
        for n in 0..rec.len() {
            assert!(parse_avc_config(&rec[..n]).is_err(), "prefix {n} accepted");
        }
    }

    /// Found by the `flv_video` fuzz target: an "SPS" of NAL type 0 went out in front of an IDR,
    /// a payload no RTP receiver can read.
    #[test]
    fn parameter_sets_must_be_what_they_say() {
        let rec = |sps: u8, pps: u8| [1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 3, sps, 0x64, 0x00, 1, 0, 2, pps, 0xee];
        assert!(parse_avc_config(&rec(0x67, 0x68)).is_ok());
        for (sps, pps) in [(0x60, 0x68), (0x7c, 0x68), (0x68, 0x68), (0x67, 0x67), (0x67, 0x78)] {
            assert!(parse_avc_config(&rec(sps, pps)).is_err(), "SPS {sps:#x}, PPS {pps:#x} accepted");
        }
    }

    #[test]
    fn nalus_split_and_overrun_refused() {
        let data = [0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 0x41];
        assert_eq!(split_nalus(&data, 4).expect("ok"), vec![&[0x65, 1][..], &[0x41][..]]);
        assert!(split_nalus(&[0, 0, 0, 9, 1], 4).is_err());
        assert!(split_nalus(&[0, 0], 4).is_err());
    }

    #[test]
    fn video_header_and_composition_time() {
        let tag = [0x27, 1, 0xff, 0xff, 0xd8, 0, 0, 0, 1, 0x41];
        assert_eq!(parse_video(&tag).expect("ok"), VideoTag::AvcNalus { keyframe: false, composition_ms: -40, data: &tag[5..] });
        assert!(matches!(parse_video(&[0x22, 0]), Err(IngestError::Unsupported(_))));
        assert!(matches!(parse_video(&[0x90, b'h', b'v', b'c', b'1']), Err(IngestError::Unsupported(_))));
        assert!(parse_video(&[0x17, 1]).is_err());
        assert!(parse_video(&[]).is_err());
    }

    #[test]
    fn aac_config() {
        // AAC-LC, 44.1 kHz, stereo.
        assert_eq!(parse_aac_config(&[0x12, 0x10]).expect("ok"), (44100, 2, 2));
        // AAC-LC, 48 kHz, mono.
        assert_eq!(parse_aac_config(&[0x11, 0x88]).expect("ok"), (48000, 1, 2));
        assert!(parse_aac_config(&[0x12]).is_err());
        assert!(matches!(parse_audio(&[0x2f, 0]), Err(IngestError::Unsupported(_))));
    }
}
