//! An encoder's RTMP byte stream after the handshake, as the studio listener takes it
//! (signaling/src/live/studio/rtmp.rs): the chunk guard (`transport::rtmp_guard::ChunkGuard`)
//! follows the chunk framing and refuses chunk sizes, message lengths and headers over our
//! limits; what it lets through goes to rml_rtmp's server session (chunk parser, AMF0 commands:
//! connect, createStream, publish, metadata), as the server does.
//! Input: `[split]` then the stream; the guard sees it in two pieces cut at `split`.
//! Invariants: never panics (the server also catches a parser panic, but one is a finding);
//! the guard's verdict does not depend on how the stream is cut into reads; a refused stream is
//! never handed to the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig};
use signaling::transport::rtmp_guard::ChunkGuard;

/// The defaults of `rtmp.max_chunk_size` and `rtmp.max_message_bytes`.
const MAX_CHUNK: u32 = 65_536;
const MAX_MESSAGE: u32 = 4 << 20;

fuzz_target!(|data: &[u8]| {
    let [split, stream @ ..] = data else { return };
    // The verdict of the whole stream in one read, and in two reads cut anywhere.
    let whole = ChunkGuard::new(MAX_CHUNK, MAX_MESSAGE).check(stream);
    let cut = usize::from(*split).min(stream.len());
    let mut g = ChunkGuard::new(MAX_CHUNK, MAX_MESSAGE);
    let pieces = g.check(&stream[..cut]).and_then(|()| g.check(&stream[cut..]));
    assert_eq!(whole, pieces, "the verdict depends on how the stream was read");
    // And one byte at a time, for short streams.
    if stream.len() <= 256 {
        let mut g = ChunkGuard::new(MAX_CHUNK, MAX_MESSAGE);
        let bytewise = stream.chunks(1).try_for_each(|b| g.check(b));
        assert_eq!(whole, bytewise, "the verdict depends on how the stream was read");
    }

    // What the server does with each read: the guard, then the parser.
    let mut config = ServerSessionConfig::new();
    config.chunk_size = 4096;
    let Ok((mut session, _)) = ServerSession::new(config) else { return };
    let mut guard = ChunkGuard::new(MAX_CHUNK, MAX_MESSAGE);
    for read in [&stream[..cut], &stream[cut..]] {
        if guard.check(read).is_err() {
            return;
        }
        if session.handle_input(read).is_err() {
            return;
        }
    }
});
