//! The SDP fragments of WHIP's PATCH (`application/trickle-ice-sdpfrag`, RFC 8840 §5 as RFC
//! 9725 §4.3 uses it): trickled candidates in, an ICE restart's credentials in and out.
//!
//! ```text
//! a=ice-ufrag:EsAw                      (session level, or in the m-section)
//! a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
//! m=audio 9 UDP/TLS/RTP/SAVPF 0          (a section per m-line the candidates are for)
//! a=mid:0
//! a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0
//! a=end-of-candidates
//! ```
//!
//! Untrusted text: bounded in size and count, every value checked before it reaches rtc.

/// Largest fragment accepted (bytes).
pub const MAX_FRAG_BYTES: usize = 16 * 1024;
/// Most candidates in one fragment.
pub const MAX_CANDIDATES: usize = 64;
/// Longest candidate line.
const MAX_CANDIDATE_BYTES: usize = 1024;
/// Longest `a=mid` value.
const MAX_MID_BYTES: usize = 64;

/// What a fragment says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Frag {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    pub candidates: Vec<FragCandidate>,
    pub end_of_candidates: bool,
}

/// One trickled candidate and the m-section it is for.
#[derive(Debug, PartialEq, Eq)]
pub struct FragCandidate {
    /// `candidate:…` (the attribute without `a=`).
    pub candidate: String,
    pub mid: Option<String>,
    /// The index of its m-section in the fragment (0 when the fragment has no m-line).
    pub mline: u16,
}

/// RFC 8839 §5.4: ice-char = ALPHA / DIGIT / "+" / "/"; ufrag 4–256, pwd 22–256 of them.
fn ice_chars(value: &str, min: usize) -> bool {
    (min..=256).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Read a fragment. Lines other than `m=` and the ICE attributes (`a=group`, `a=ice-options`,
/// `c=`…) are ignored; a bad value is an error that says which.
pub fn parse(text: &str) -> Result<Frag, String> {
    if text.len() > MAX_FRAG_BYTES {
        return Err(format!("the fragment is larger than {MAX_FRAG_BYTES} bytes"));
    }
    if text.chars().any(|c| c.is_control() && !matches!(c, '\r' | '\n' | '\t')) {
        return Err("the fragment has control characters".into());
    }
    let mut frag = Frag::default();
    let mut mline: Option<u16> = None;
    let mut mid: Option<String> = None;
    let set = |slot: &mut Option<String>, value: &str, what: &str| -> Result<(), String> {
        match slot {
            Some(v) if v != value => Err(format!("two different {what} values")),
            _ => {
                *slot = Some(value.to_owned());
                Ok(())
            }
        }
    };
    for line in text.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.trim().is_empty()) {
        if line.starts_with("m=") {
            mline = Some(mline.map_or(0, |i| i.saturating_add(1)));
            mid = None;
        } else if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            if !ice_chars(v, 4) {
                return Err("a=ice-ufrag must be 4-256 ICE characters".into());
            }
            set(&mut frag.ufrag, v, "a=ice-ufrag")?;
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            if !ice_chars(v, 22) {
                return Err("a=ice-pwd must be 22-256 ICE characters".into());
            }
            set(&mut frag.pwd, v, "a=ice-pwd")?;
        } else if let Some(v) = line.strip_prefix("a=mid:") {
            if v.is_empty() || v.len() > MAX_MID_BYTES || !v.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("a=mid must be 1-{MAX_MID_BYTES} visible characters"));
            }
            mid = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("a=") {
            if v.starts_with("candidate:") {
                if frag.candidates.len() == MAX_CANDIDATES {
                    return Err(format!("more than {MAX_CANDIDATES} candidates"));
                }
                if v.len() > MAX_CANDIDATE_BYTES || v.split_whitespace().count() < 8 {
                    return Err("a candidate line is malformed or longer than 1024 bytes".into());
                }
                frag.candidates.push(FragCandidate { candidate: v.to_owned(), mid: mid.clone(), mline: mline.unwrap_or(0) });
            } else if v == "end-of-candidates" {
                frag.end_of_candidates = true;
            }
        }
    }
    Ok(frag)
}

/// The offer an ICE restart applies: `offer` with the new credentials in place of the old
/// ones, and without the old candidates.
pub fn restart_offer(offer: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(offer.len());
    for line in offer.lines().map(|l| l.trim_end_matches('\r')) {
        let kept = if line.starts_with("a=ice-ufrag:") {
            format!("a=ice-ufrag:{ufrag}")
        } else if line.starts_with("a=ice-pwd:") {
            format!("a=ice-pwd:{pwd}")
        } else if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        } else {
            line.to_owned()
        };
        out.push_str(&kept);
        out.push_str("\r\n");
    }
    out
}

/// The fragment answering an ICE restart: the answer's ICE options, our new credentials, and
/// our candidates under the first m-line of `answer` (the bundle carries everything on it).
pub fn answer_frag(answer: &str) -> String {
    let lines: Vec<&str> = answer.lines().map(|l| l.trim_end_matches('\r')).collect();
    let first = |prefix: &str| lines.iter().find(|l| l.starts_with(prefix)).map(|l| l.to_string());
    let mut out = Vec::new();
    // The answer's ICE options stay as they were (RFC 9725 §4.3.3).
    out.extend(first("a=ice-lite"));
    out.extend(first("a=ice-options:"));
    out.extend(first("a=ice-ufrag:"));
    out.extend(first("a=ice-pwd:"));
    if let Some(m) = lines.iter().position(|l| l.starts_with("m=")) {
        let end = lines[m + 1..].iter().position(|l| l.starts_with("m=")).map_or(lines.len(), |i| m + 1 + i);
        out.push(lines[m].to_string());
        let section = &lines[m + 1..end];
        out.extend(section.iter().filter(|l| l.starts_with("a=mid:")).map(|l| l.to_string()));
        // RTP and RTCP share one port (rtcp-mux, RFC 9725 §4.4): component 1 only.
        let rtp = |l: &&&str| l.starts_with("a=candidate:") && l.split_whitespace().nth(1) == Some("1");
        out.extend(section.iter().filter(rtp).map(|l| l.to_string()));
    }
    out.push("a=end-of-candidates".into());
    let mut text = out.join("\r\n");
    text.push_str("\r\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANDIDATE: &str = "candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0";

    #[test]
    fn a_trickle_fragment() {
        let text = format!(
            "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na={CANDIDATE}\r\na=end-of-candidates\r\n"
        );
        let frag = parse(&text).expect("parsed");
        assert_eq!(frag.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(frag.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(frag.candidates, vec![FragCandidate { candidate: CANDIDATE.into(), mid: Some("0".into()), mline: 0 }]);
        assert!(frag.end_of_candidates);
        // Bare LF, no m-line: the candidate is for the first section.
        let frag = parse(&format!("a={CANDIDATE}\n")).expect("parsed");
        assert_eq!(frag.candidates[0].mid, None);
        // Candidates of a second m-section.
        let frag = parse(&format!("m=audio 9 X 0\na=mid:a\nm=video 9 X 0\na=mid:v\na={CANDIDATE}\n")).expect("parsed");
        assert_eq!((frag.candidates[0].mid.as_deref(), frag.candidates[0].mline), (Some("v"), 1));
    }

    #[test]
    fn bad_fragments_say_why() {
        assert!(parse("a=ice-ufrag:ab\r\n").unwrap_err().contains("ice-ufrag"));
        assert!(parse("a=ice-ufrag:ab;cd\r\n").unwrap_err().contains("ice-ufrag"));
        assert!(parse("a=ice-pwd:short\r\n").unwrap_err().contains("ice-pwd"));
        assert!(parse("a=ice-ufrag:abcd\r\na=ice-ufrag:efgh\r\n").unwrap_err().contains("two different"));
        assert!(parse("a=candidate:1 1 udp\r\n").unwrap_err().contains("candidate"));
        assert!(parse(&format!("a={}\r\n", "candidate:1 1 udp 1 192.0.2.1 1 typ host ".repeat(30))).unwrap_err().contains("1024"));
        assert!(parse("a=mid:\r\n").unwrap_err().contains("mid"));
        assert!(parse("a=ice-ufrag:abcd\u{0}\r\n").unwrap_err().contains("control"));
        assert!(parse(&"a=x\r\n".repeat(MAX_FRAG_BYTES / 5 + 1)).unwrap_err().contains("larger"));
        // The count limit, and one under it.
        let lines = |n: usize| format!("a={CANDIDATE}\r\n").repeat(n);
        assert_eq!(parse(&lines(MAX_CANDIDATES)).expect("at the limit").candidates.len(), MAX_CANDIDATES);
        assert!(parse(&lines(MAX_CANDIDATES + 1)).unwrap_err().contains("more than"));
    }

    #[test]
    fn a_restart_offer_and_its_answer_fragment() {
        let offer = format!(
            "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:old1\r\na=ice-pwd:oldoldoldoldoldoldoldold\r\na={CANDIDATE}\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:old1\r\na=ice-pwd:oldoldoldoldoldoldoldold\r\na=mid:1\r\n"
        );
        let restarted = restart_offer(&offer, "new1", "newnewnewnewnewnewnewnew");
        assert_eq!(restarted.matches("a=ice-ufrag:new1\r\n").count(), 2);
        assert_eq!(restarted.matches("a=ice-pwd:newnewnewnewnewnewnewnew\r\n").count(), 2);
        assert!(!restarted.contains("old") && !restarted.contains("a=candidate"));
        assert_eq!(restarted.lines().count(), offer.lines().count() - 1);

        let rtcp = CANDIDATE.replace(" 1 udp ", " 2 udp ");
        let answer = format!(
            "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:ours\r\na=ice-pwd:ourpwdourpwdourpwdourpwd\r\na={CANDIDATE}\r\na={rtcp}\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na={CANDIDATE}\r\n"
        );
        let frag = answer_frag(&answer);
        assert_eq!(
            frag,
            format!(
                "a=ice-ufrag:ours\r\na=ice-pwd:ourpwdourpwdourpwdourpwd\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na={CANDIDATE}\r\na=end-of-candidates\r\n"
            )
        );
        // What we send, we read back.
        let back = parse(&frag).expect("our own fragment parses");
        assert_eq!((back.ufrag.as_deref(), back.candidates.len()), (Some("ours"), 1));
    }
}
