//! The SDP a client sends: a publisher's offer goes to `Publisher::apply_offer` (rtc's SDP
//! parser and JSEP, then our answer) on the media worker's thread, with no `catch_unwind`
//! around it — a panic there would take the worker down. Also the SDP munging we do ourselves:
//! `with_msid_semantic` on the offers we send.
//! Invariants: never panics; a refused offer leaves a publisher that takes the next offer
//! without a panic; an accepted offer gets an SDP answer; the msid
//! munging only ever inserts its one line, in the session part, once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu::fuzzing::with_msid_semantic;
use sfu::internals::SessionFactory;
use sfu::{ParticipantId, SessionKey, SessionRole};
use std::sync::OnceLock;
use std::time::Instant;

fn factory() -> &'static SessionFactory {
    static F: OnceLock<SessionFactory> = OnceLock::new();
    F.get_or_init(|| SessionFactory::new("127.0.0.1:7882".parse().expect("an address")).expect("a certificate"))
}

const LINE: &str = "a=msid-semantic:WMS *\r\n";

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = std::str::from_utf8(data) else { return };

    // Our own munging, on any text.
    let out = with_msid_semantic(sdp.to_owned());
    if out != sdp {
        assert_eq!(out.len(), sdp.len() + LINE.len());
        assert_eq!(out.replacen(LINE, "", 1), sdp, "only the one line is inserted");
        let session = out.split("\nm=").next().unwrap_or(&out);
        assert!(session.contains("a=msid-semantic"), "inserted into the session part");
    }
    assert_eq!(with_msid_semantic(out.clone()), out, "idempotent");

    // The offer, as a publisher's.
    let now = Instant::now();
    let key = SessionKey { participant: ParticipantId(1), role: SessionRole::Publisher };
    let Ok(mut publisher) = factory().publisher(key, now) else { return };
    let first = publisher.apply_offer(now, sdp.to_owned());
    if let Ok(answer) = &first {
        assert!(answer.starts_with("v=0"), "an answer is SDP: {answer:?}");
    } else {
        // Rolled back: the publisher takes an offer again, without a panic. (rtc's rollback
        // keeps what the refused offer added, so a second try of the same text may pass:
        // docs/fuzzing.md, open findings.)
        let _ = publisher.apply_offer(now, sdp.to_owned());
    }
});
