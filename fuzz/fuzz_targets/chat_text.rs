//! Comment text (signaling/src/live/chat/text.rs): `clean_comment` turns hostile text into what
//! is stored and shown (NFC, one line, spaces collapsed, bounded), and the blocked-words matcher
//! (`BlockedWords`, NFKC + lower case, whole words or `stem*`) with the moderator's list check
//! (`check_word_list`).
//! Input: `[max chars][text]`, the text also read as a word list (one entry a line).
//! Invariants: never panics; a cleaned comment is 1..=max characters, has no control or
//! direction-changing character, no leading, trailing or doubled space, and cleaning it again
//! gives it back unchanged; a blocked word always matches itself standing alone; checked word
//! lists are bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::live::chat::text::{BlockedWords, MAX_WORD_CHARS, MAX_WORDS, check_word_list, clean_comment};

fuzz_target!(|data: &[u8]| {
    let [max, text @ ..] = data else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let max = usize::from(*max) + 1;

    if let Ok(clean) = clean_comment(text, max) {
        let n = clean.chars().count();
        assert!((1..=max).contains(&n), "{n} characters of at most {max}");
        assert!(!clean.chars().any(char::is_control));
        assert!(!clean.starts_with(' ') && !clean.ends_with(' ') && !clean.contains("  "));
        assert!(!clean.chars().any(|c| c.is_whitespace() && c != ' '), "only plain spaces remain: {clean:?}");
        assert_eq!(clean_comment(&clean, max).ok().as_deref(), Some(clean.as_str()), "cleaning is idempotent");
    }

    let list = BlockedWords::parse_file(text);
    assert!(list.iter().all(|w| !w.is_empty() && !w.starts_with('#')));
    if let Ok(checked) = check_word_list(&list) {
        assert!(checked.len() <= MAX_WORDS);
        assert!(checked.iter().all(|w| (1..=MAX_WORD_CHARS).contains(&w.chars().count())));
        let words = BlockedWords::new(&checked);
        for w in checked.iter().filter(|w| !w.ends_with('*')) {
            // A word (that is not itself a `stem*`) matches when it is the whole comment, as long
            // as its folded form still starts and ends with a letter or digit.
            let edge_ok = w.chars().next().is_some_and(char::is_alphanumeric) && w.chars().last().is_some_and(char::is_alphanumeric);
            if edge_ok && w.chars().all(|c| c.is_ascii()) {
                assert!(words.matches(w), "{w:?} does not match itself");
            }
        }
    }
    let _ = BlockedWords::new(&[text.to_owned()]).matches(text);
});
