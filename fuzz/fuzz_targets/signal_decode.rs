//! The WebSocket message decoder: every text frame a client sends goes through
//! `signaling::ws::parse` (size limit, then serde into `ClientMsg`).
//! Invariants: never panics; a frame over the limit is refused as too large, whatever it holds;
//! a message that parses reports the `type` it carried on the wire.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::error::ErrorCode;
use signaling::ws::parse;

/// The default `limits.max_message_bytes`.
const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse(text, MAX) {
        Ok(msg) => {
            let wire: serde_json::Value = serde_json::from_str(text).expect("a parsed message is JSON");
            assert_eq!(wire.get("type").and_then(|t| t.as_str()), Some(msg.kind()), "kind() is the wire type");
        }
        Err(e) => assert!(matches!(e.code, ErrorCode::BadMessage | ErrorCode::MessageTooLarge), "{:?}", e.code),
    }
    // The same bytes under a limit shorter than them: refused before serde sees them.
    if !text.is_empty() {
        let e = parse(text, text.len() - 1).err().map(|e| e.code);
        assert_eq!(e, Some(ErrorCode::MessageTooLarge));
    }
});
