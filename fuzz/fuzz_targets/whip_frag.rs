//! The SDP fragments of WHIP's and WHEP's PATCH (signaling/src/live/studio/sdpfrag.rs): `parse`
//! (trickled candidates, an ICE restart's credentials), `restart_offer` (the session's offer with
//! the new credentials) and `answer_frag` (our reply to a restart), all on untrusted text.
//! Input: the text, read as a fragment, as an offer and as an answer.
//! Invariants: never panics; a parsed fragment keeps every limit (≤ 64 candidates, each a
//! `candidate:` line of ≥ 8 fields and ≤ 1024 bytes, ICE characters of the RFC's lengths, mids of
//! 1–64 visible characters); a restart offer carries the new credentials in place of every old
//! one and no candidate; the answer fragment of a text that parsed parses too, ends with
//! `a=end-of-candidates`, and has only component-1 candidates of the text's first m-section.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::live::studio::sdpfrag::{MAX_CANDIDATES, MAX_FRAG_BYTES, answer_frag, parse, restart_offer};

fn ice(v: &str, min: usize) -> bool {
    (min..=256).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = parse(text);
    if let Ok(frag) = &parsed {
        assert!(frag.candidates.len() <= MAX_CANDIDATES);
        for c in &frag.candidates {
            assert!(c.candidate.starts_with("candidate:") && c.candidate.len() <= 1024);
            assert!(c.candidate.split_whitespace().count() >= 8);
            assert!(c.mid.as_ref().is_none_or(|m| (1..=64).contains(&m.len()) && m.bytes().all(|b| b.is_ascii_graphic())));
        }
        assert!(frag.ufrag.as_deref().is_none_or(|u| ice(u, 4)));
        assert!(frag.pwd.as_deref().is_none_or(|p| ice(p, 22)));
        let (ufrag, pwd) = (frag.ufrag.as_deref().unwrap_or("abcd"), frag.pwd.as_deref().unwrap_or("0123456789abcdef012345"));
        let offer = restart_offer(text, ufrag, pwd);
        assert!(!offer.lines().any(|l| l.starts_with("a=candidate:") || l == "a=end-of-candidates"));
        let old = text.lines().filter(|l| l.trim_end_matches('\r').starts_with("a=ice-ufrag:")).count();
        assert_eq!(offer.lines().filter(|l| *l == format!("a=ice-ufrag:{ufrag}")).count(), old);
        assert!(!offer.lines().any(|l| l.starts_with("a=ice-ufrag:") && *l != format!("a=ice-ufrag:{ufrag}")));

        let reply = answer_frag(text);
        assert!(reply.ends_with("a=end-of-candidates\r\n"));
        // Lines ending in a bare LF come back with CRLF: a text at the size limit may grow past it.
        if text.len() + text.lines().count() + 32 > MAX_FRAG_BYTES {
            return;
        }
        let back = parse(&reply).unwrap_or_else(|e| panic!("our answer fragment does not parse: {e}\n{reply}"));
        assert!(back.candidates.iter().all(|c| c.candidate.split_whitespace().nth(1) == Some("1")));
        assert!(back.candidates.iter().all(|c| frag.candidates.iter().any(|o| o.candidate == c.candidate && o.mline == 0)));
    } else {
        // Whatever it is, building from it does not panic.
        let _ = answer_frag(text);
        let _ = restart_offer(text, "abcd", "0123456789abcdef012345");
    }
});
