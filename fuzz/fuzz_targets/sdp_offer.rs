//! The SDP a client sends: a publisher's offer goes to `Publisher::apply_offer` (rtc's SDP
//! parser and JSEP, then our answer) on the media worker's thread, with no `catch_unwind`
//! around it — a panic there would take the worker down. Also the SDP munging we do ourselves:
//! `with_msid_semantic` on the offers we send.
//! Invariants: never panics; an accepted offer gets an SDP answer; a refused renegotiation
//! is taken back (the same offer again is refused again) unless the publisher reports itself
//! spoiled, which closes the session; the msid munging only ever inserts its one line, in the
//! session part, once.
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

    // The offer, as a publisher's first.
    let now = Instant::now();
    let key = SessionKey { participant: ParticipantId(1), role: SessionRole::Publisher };
    let Ok(mut publisher) = factory().publisher(key, now) else { return };
    // (The worker closes a session whose first offer is refused: no state to take back.)
    if let Ok(answer) = publisher.apply_offer(now, sdp.to_owned()) {
        assert!(answer.starts_with("v=0"), "an answer is SDP: {answer:?}");
    }

    // The offer as a renegotiation, after an accepted one (the seed offer, whole or its audio
    // alone). A refused renegotiation is rolled back — the same offer again is refused again —
    // unless the publisher says it is spoiled (the worker then closes the session).
    let Ok(mut publisher) = factory().publisher(key, now) else { return };
    let base = if data.len() % 2 == 0 { SEED.to_owned() } else { audio_only(SEED) };
    assert!(publisher.apply_offer(now, base).is_ok(), "the seed offer is accepted");
    match publisher.apply_offer(now, sdp.to_owned()) {
        Ok(answer) => assert!(answer.starts_with("v=0"), "an answer is SDP: {answer:?}"),
        Err(first) if !publisher.spoiled => {
            let again = publisher.apply_offer(now, sdp.to_owned());
            assert!(again.is_err(), "a rolled-back offer is refused again (first: {first})");
        }
        Err(_) => {}
    }
});

/// A real publisher's offer (audio, and simulcast VP8 with RTX).
const SEED: &str = include_str!("../corpus/sdp_offer/publisher_offer.sdp");

/// The seed with its audio section only.
fn audio_only(seed: &str) -> String {
    let cut = seed.find("\r\nm=video").map_or(seed.len(), |i| i + 2);
    seed[..cut].replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0")
}
