//! A watchman in front of the RTMP chunk parser. rml_rtmp parses chunks well but applies any
//! chunk size a peer announces and reserves a whole message's length up front, and it cannot
//! be told limits. This follows the chunk framing (RTMP spec §5.3) byte for byte as data
//! arrives, without buffering payloads, and refuses a stream that announces a chunk size or a
//! message length over our limits, or headers the parser would choke on, before those bytes
//! reach rml_rtmp.

use std::collections::HashMap;

/// Messages of type 1 set the peer's chunk size.
const SET_CHUNK_SIZE: u8 = 1;
/// Command messages (AMF3-flagged and AMF0): `connect`, `createStream`, `publish`, …
const AMF3_COMMAND: u8 = 17;
const AMF0_COMMAND: u8 = 20;
/// Longest command message gathered and checked (an encoder's `connect` is under 1 KiB).
const MAX_COMMAND_BYTES: u32 = 64 * 1024;
const INITIAL_CHUNK_SIZE: u32 = 128;
const TIMESTAMP_ESCAPE: u32 = 0x00ff_ffff;
/// Chunk streams a peer may open (real encoders use fewer than ten).
const MAX_CHUNK_STREAMS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("chunk size {0} is over the limit of {1} bytes")]
    ChunkSize(u32, u32),
    #[error("message of {0} bytes is over the limit of {1} bytes")]
    MessageSize(u32, u32),
    #[error("malformed chunk stream: {0}")]
    Malformed(&'static str),
}

#[derive(Clone, Copy, Default)]
struct Stream {
    length: u32,
    kind: u8,
    timestamp_field: u32,
    /// Payload bytes of the current message still to come (0: the next chunk starts one).
    remaining: u32,
}

pub struct ChunkGuard {
    max_chunk: u32,
    max_message: u32,
    chunk_size: u32,
    streams: HashMap<u32, Stream>,
    /// Bytes of an incomplete chunk header.
    header: Vec<u8>,
    /// Payload bytes of the current chunk still to skip, and its chunk stream.
    skip: u32,
    current: u32,
    /// Payload of a SetChunkSize message being collected.
    collecting: Option<Vec<u8>>,
}

impl ChunkGuard {
    pub fn new(max_chunk: u32, max_message: u32) -> Self {
        Self {
            max_chunk,
            max_message,
            chunk_size: INITIAL_CHUNK_SIZE,
            streams: HashMap::new(),
            header: Vec::with_capacity(18),
            skip: 0,
            current: 0,
            collecting: None,
        }
    }

    /// Inspect the next bytes of the stream (after the handshake). Ok means rml_rtmp may
    /// have them.
    pub fn check(&mut self, mut data: &[u8]) -> Result<(), Violation> {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = (self.skip as usize).min(data.len());
                if let Some(buf) = self.collecting.as_mut() {
                    buf.extend_from_slice(&data[..n]);
                }
                data = &data[n..];
                self.skip -= n as u32;
                if self.skip == 0 {
                    self.chunk_done()?;
                }
                continue;
            }
            // Gather a chunk header; it is at most 18 bytes.
            let need = self.header_len();
            match need {
                Some(n) if self.header.len() >= n => self.start_chunk(n)?,
                _ => {
                    self.header.push(data[0]);
                    data = &data[1..];
                    if let Some(n) = self.header_len()
                        && self.header.len() >= n
                    {
                        self.start_chunk(n)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Length of the header being gathered, once enough of it is known.
    fn header_len(&self) -> Option<usize> {
        let b0 = *self.header.first()?;
        let fmt = b0 >> 6;
        let basic = match b0 & 0x3f {
            0 => 2,
            1 => 3,
            _ => 1,
        };
        if self.header.len() < basic {
            return None;
        }
        let csid = self.csid();
        let message = [11usize, 7, 3, 0][usize::from(fmt)];
        if self.header.len() < basic + message {
            return Some(basic + message);
        }
        let field = match fmt {
            3 => self.streams.get(&csid).map(|s| s.timestamp_field).unwrap_or(0),
            _ => u32::from_be_bytes([0, self.header[basic], self.header[basic + 1], self.header[basic + 2]]),
        };
        Some(basic + message + if field >= TIMESTAMP_ESCAPE { 4 } else { 0 })
    }

    fn csid(&self) -> u32 {
        match self.header[0] & 0x3f {
            0 => 64 + u32::from(self.header[1]),
            1 => 64 + u32::from(self.header[1]) + 256 * u32::from(self.header[2]),
            c => u32::from(c),
        }
    }

    fn start_chunk(&mut self, len: usize) -> Result<(), Violation> {
        let fmt = self.header[0] >> 6;
        let csid = self.csid();
        let basic = match self.header[0] & 0x3f {
            0 => 2,
            1 => 3,
            _ => 1,
        };
        let h = &self.header[basic..len];
        // rml_rtmp gathers one message at a time (one payload buffer for every chunk stream):
        // a chunk of another stream inside a message would be appended to it, and its length
        // arithmetic underflows (found by the `rtmp_chunks` fuzz target). Encoders send each
        // message's chunks together, so interleaving is refused.
        if csid != self.current && self.streams.get(&self.current).is_some_and(|s| s.remaining != 0) {
            return Err(Violation::Malformed("chunks of another stream inside a message (interleaving is not supported)"));
        }
        if !self.streams.contains_key(&csid) {
            if fmt != 0 {
                return Err(Violation::Malformed("a chunk continues a stream that never started"));
            }
            if self.streams.len() >= MAX_CHUNK_STREAMS {
                return Err(Violation::Malformed("too many chunk streams"));
            }
        }
        let mut s = self.streams.get(&csid).copied().unwrap_or_default();
        if fmt <= 2 {
            s.timestamp_field = u32::from_be_bytes([0, h[0], h[1], h[2]]);
            if fmt > 0 && s.timestamp_field >= TIMESTAMP_ESCAPE {
                // A delta carried in the extended field must be at least the escape value, or
                // the parser's arithmetic underflows.
                let ext = h.get(h.len() - 4..).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
                if ext < TIMESTAMP_ESCAPE {
                    return Err(Violation::Malformed("extended timestamp delta below the escape value"));
                }
            }
        }
        if fmt == 3 && s.timestamp_field >= TIMESTAMP_ESCAPE && s.remaining == 0 {
            let ext = h.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
            if ext < TIMESTAMP_ESCAPE {
                return Err(Violation::Malformed("extended timestamp delta below the escape value"));
            }
        }
        if fmt <= 1 {
            if s.remaining != 0 {
                return Err(Violation::Malformed("a new message header in the middle of a message"));
            }
            s.length = u32::from_be_bytes([0, h[3], h[4], h[5]]);
            s.kind = h[6];
        }
        if s.length > self.max_message {
            return Err(Violation::MessageSize(s.length, self.max_message));
        }
        if s.remaining == 0 {
            s.remaining = s.length;
            let command = matches!(s.kind, AMF3_COMMAND | AMF0_COMMAND);
            if command && s.length > MAX_COMMAND_BYTES {
                return Err(Violation::MessageSize(s.length, MAX_COMMAND_BYTES));
            }
            self.collecting = (s.kind == SET_CHUNK_SIZE || command).then(Vec::new);
        }
        let payload = s.remaining.min(self.chunk_size);
        s.remaining -= payload;
        self.streams.insert(csid, s);
        self.header.clear();
        self.current = csid;
        self.skip = payload;
        if payload == 0 {
            self.chunk_done()?;
        }
        Ok(())
    }

    fn chunk_done(&mut self) -> Result<(), Violation> {
        let Some(s) = self.streams.get(&self.current) else { return Ok(()) };
        if s.remaining != 0 {
            return Ok(());
        }
        let kind = s.kind;
        if let Some(buf) = self.collecting.take() {
            if kind != SET_CHUNK_SIZE {
                return if command_is_whole(kind, &buf) {
                    Ok(())
                } else {
                    Err(Violation::Malformed("a command message without its name, transaction id and object"))
                };
            }
            let b = buf.get(..4).ok_or(Violation::Malformed("short SetChunkSize message"))?;
            let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff;
            if size == 0 {
                return Err(Violation::Malformed("chunk size 0"));
            }
            if size > self.max_chunk {
                return Err(Violation::ChunkSize(size, self.max_chunk));
            }
            self.chunk_size = size;
        }
        Ok(())
    }
}

/// Whether a command message holds the name, transaction id and command object rml_rtmp takes
/// from it: it drains the first three AMF0 values without counting them, and panics on fewer
/// (found by the `rtmp_chunks` fuzz target). An AMF3-flagged command may carry AMF0 after a 0.
fn command_is_whole(kind: u8, payload: &[u8]) -> bool {
    let body = match payload {
        [0, rest @ ..] if kind == AMF3_COMMAND => rest,
        _ => payload,
    };
    rml_rtmp::rml_amf0::deserialize(&mut std::io::Cursor::new(body)).is_ok_and(|values| values.len() >= 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk0(csid: u8, ts: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut v = vec![csid & 0x3f];
        v.extend_from_slice(&ts.to_be_bytes()[1..]);
        v.extend_from_slice(&len.to_be_bytes()[1..]);
        v.push(kind);
        v.extend_from_slice(&[1, 0, 0, 0]);
        v
    }

    #[test]
    fn follows_chunking_and_applies_chunk_size() {
        let mut g = ChunkGuard::new(65_536, 1 << 20);
        // SetChunkSize 4096, then a 5000-byte video message in two chunks (4096 + 904).
        let mut bytes = chunk0(2, 0, 1, &[0; 4]);
        bytes.extend_from_slice(&4096u32.to_be_bytes());
        bytes.extend(chunk0(6, 40, 9, &[0; 5000]));
        bytes.extend(vec![7u8; 4096]);
        bytes.push(0xc6); // fmt 3, csid 6
        bytes.extend(vec![7u8; 904]);
        // Fed one byte at a time, then all at once.
        for b in &bytes {
            g.check(std::slice::from_ref(b)).expect("valid stream");
        }
        let mut g = ChunkGuard::new(65_536, 1 << 20);
        g.check(&bytes).expect("valid stream");
        assert_eq!(g.chunk_size, 4096);
        assert_eq!(g.skip, 0);
    }

    #[test]
    fn refuses_huge_chunk_size_and_message() {
        let mut g = ChunkGuard::new(65_536, 1 << 20);
        let mut bytes = chunk0(2, 0, 1, &[0; 4]);
        bytes.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
        assert_eq!(g.check(&bytes), Err(Violation::ChunkSize(0x7fff_ffff, 65_536)));
        let mut g = ChunkGuard::new(65_536, 1 << 20);
        assert!(matches!(g.check(&chunk0(6, 0, 9, &[0; 2 << 20])), Err(Violation::MessageSize(..))));
        let mut g = ChunkGuard::new(65_536, 1 << 20);
        assert!(matches!(g.check(&[0x46, 0, 0, 0, 0, 0, 1, 9]), Err(Violation::Malformed(_))));
    }

    /// Found by the `rtmp_chunks` fuzz target: a message on chunk stream 6 left incomplete, then
    /// a chunk of stream 4; the parser appended it to the message of stream 6 and underflowed.
    #[test]
    fn interleaved_chunk_streams_are_refused() {
        let mut g = ChunkGuard::new(65_536, 1 << 20);
        let mut bytes = chunk0(6, 0, 9, &[0; 300]);
        bytes.extend(vec![7u8; 128]);
        bytes.extend(chunk0(4, 0, 8, &[0; 7]));
        assert!(matches!(g.check(&bytes), Err(Violation::Malformed(_))));
        // The same two messages one after the other pass.
        let mut g = ChunkGuard::new(65_536, 1 << 20);
        let mut bytes = chunk0(6, 0, 9, &[0; 200]);
        bytes.extend(vec![7u8; 128]);
        bytes.push(0xc6);
        bytes.extend(vec![7u8; 72]);
        bytes.extend(chunk0(4, 0, 8, &[0; 7]));
        bytes.extend(vec![7u8; 7]);
        assert_eq!(g.check(&bytes), Ok(()));
    }

    /// Found by the `rtmp_chunks` fuzz target: a command message with fewer than three AMF0
    /// values panicked rml_rtmp (`drain(..3)`).
    #[test]
    fn command_messages_must_hold_name_transaction_and_object() {
        use rml_rtmp::rml_amf0::{Amf0Value, serialize};
        let command = |values: Vec<Amf0Value>| serialize(&values).unwrap_or_default();
        let connect = command(vec![Amf0Value::Utf8String("connect".into()), Amf0Value::Number(1.0), Amf0Value::Object(Default::default())]);
        let short = command(vec![Amf0Value::Utf8String("connect".into())]);
        for (kind, payload, ok) in [(20, &connect, true), (17, &connect, true), (20, &short, false), (17, &short, false)] {
            let mut g = ChunkGuard::new(65_536, 1 << 20);
            let mut bytes = chunk0(3, 0, kind, payload);
            bytes.extend_from_slice(payload);
            assert_eq!(g.check(&bytes).is_ok(), ok, "type {kind}, {} bytes", payload.len());
        }
        // What ffmpeg sends after the handshake (SetChunkSize, connect), as recorded for the
        // fuzz seeds (its first byte is the target's split point).
        let ffmpeg = include_bytes!("../../../fuzz/corpus/rtmp_chunks/ffmpeg_connect");
        assert_eq!(ChunkGuard::new(65_536, 1 << 20).check(&ffmpeg[1..]), Ok(()));
        let mut g = ChunkGuard::new(65_536, 1 << 20);
        assert!(matches!(g.check(&chunk0(3, 0, 20, &[0; 70_000])), Err(Violation::MessageSize(..))));
        let mut g = ChunkGuard::new(65_536, 1 << 20);
        assert!(matches!(g.check(&chunk0(3, 0, 20, &[])), Err(Violation::Malformed(_))), "an empty command");
    }

    #[test]
    fn never_panics_on_noise() {
        let mut seed = 7u32;
        for _ in 0..2000 {
            let mut g = ChunkGuard::new(65_536, 1 << 20);
            let data: Vec<u8> = (0..300)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = g.check(&data);
        }
    }
}
