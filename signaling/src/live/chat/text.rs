//! Hostile text in, clean text out: the rules a comment passes before anyone sees it
//! (docs/protocol.md §13.1), and the blocked-words matcher.

use crate::error::{AppError, ErrorCode};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Combining marks allowed on one character ("Zalgo" text stacks dozens).
const MAX_MARKS: usize = 4;

/// Characters that reorder or hide text around them: bidirectional embeddings, overrides and
/// isolates (the "Trojan Source" characters). Zero-width joiners stay: emoji need them.
fn reorders(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

fn bad(message: &str) -> AppError {
    AppError::new(ErrorCode::BadComment, message)
}

/// A comment as it is stored and shown: NFC, one line, inner runs of spaces made one, trimmed,
/// 1..=`max_chars` characters. Refused with `bad_comment` or `comment_too_long`, never changed
/// silently beyond that.
pub fn clean_comment(raw: &str, max_chars: usize) -> Result<String, AppError> {
    let mut out = String::with_capacity(raw.len().min(4 * max_chars + 4));
    let (mut chars, mut marks, mut space) = (0usize, 0usize, false);
    for c in raw.nfc() {
        if c.is_control() || reorders(c) {
            return Err(bad("comments are one line of text: no control or direction-changing characters"));
        }
        if is_combining_mark(c) {
            marks += 1;
            if marks > MAX_MARKS {
                return Err(bad("too many accents stacked on one character"));
            }
        } else {
            marks = 0;
        }
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            chars += 1;
            space = false;
        }
        out.push(c);
        chars += 1;
        if chars > max_chars {
            return Err(AppError::new(ErrorCode::CommentTooLong, format!("comments are limited to {max_chars} characters")));
        }
    }
    if out.is_empty() {
        return Err(bad("the comment is empty"));
    }
    Ok(out)
}

/// The folded form words are compared in: NFKC (full-width and styled letters become plain
/// ones), lower case.
fn fold(s: &str) -> String {
    s.nfkc().flat_map(char::to_lowercase).collect()
}

/// One live's blocked words, folded once.
#[derive(Clone, Debug, Default)]
pub struct BlockedWords {
    /// (folded word or phrase, prefix match).
    words: Vec<(String, bool)>,
}

/// Longest entry and most entries in one list.
pub const MAX_WORD_CHARS: usize = 64;
pub const MAX_WORDS: usize = 500;

impl BlockedWords {
    pub fn new(list: &[String]) -> Self {
        let words = list
            .iter()
            .filter_map(|w| {
                let w = fold(w.trim());
                let (w, prefix) = match w.strip_suffix('*') {
                    Some(stem) => (stem.trim_end().to_owned(), true),
                    None => (w, false),
                };
                (!w.is_empty()).then_some((w, prefix))
            })
            .collect();
        Self { words }
    }

    /// Parse a list file: one entry per line, `#` starts a comment line.
    pub fn parse_file(text: &str) -> Vec<String> {
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
    }

    /// Whether `text` contains a blocked word as a whole word (or a word starting with a
    /// `stem*` entry).
    pub fn matches(&self, text: &str) -> bool {
        if self.words.is_empty() {
            return false;
        }
        let folded = fold(text);
        let boundary = |s: &str, at: usize, before: bool| {
            let c = if before { s[..at].chars().next_back() } else { s[at..].chars().next() };
            c.is_none_or(|c| !c.is_alphanumeric())
        };
        self.words.iter().any(|(w, prefix)| {
            folded
                .match_indices(w.as_str())
                .any(|(at, _)| boundary(&folded, at, true) && (*prefix || boundary(&folded, at + w.len(), false)))
        })
    }
}

/// The list every live starts from: `chat.blocked_words_file`, or the one built in.
pub fn default_blocked_words(config: &crate::config::ChatConfig) -> anyhow::Result<Vec<String>> {
    if config.blocked_words_file.is_empty() {
        return Ok(BlockedWords::parse_file(include_str!("../../../data/blocked-words.txt")));
    }
    let text = std::fs::read_to_string(&config.blocked_words_file)
        .map_err(|e| anyhow::anyhow!("chat.blocked_words_file {}: {e}", config.blocked_words_file))?;
    let words = BlockedWords::parse_file(&text);
    check_word_list(&words).map_err(|e| anyhow::anyhow!("chat.blocked_words_file {}: {}", config.blocked_words_file, e.message))
}

/// Check a list a moderator sets: at most [`MAX_WORDS`] entries of 1..=[`MAX_WORD_CHARS`]
/// printable characters.
pub fn check_word_list(words: &[String]) -> Result<Vec<String>, AppError> {
    if words.len() > MAX_WORDS {
        return Err(AppError::new(ErrorCode::BadMessage, format!("at most {MAX_WORDS} blocked words")));
    }
    words
        .iter()
        .map(|w| {
            let w: String = w.trim().nfc().collect();
            if w.is_empty() || w.chars().count() > MAX_WORD_CHARS || w.chars().any(|c| c.is_control() || reorders(c)) {
                return Err(AppError::new(ErrorCode::BadMessage, format!("blocked words are 1-{MAX_WORD_CHARS} printable characters")));
            }
            Ok(w)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_cleaned_or_refused() {
        assert_eq!(clean_comment("  hello   world  ", 300).ok().as_deref(), Some("hello world"));
        // NFC: "e" + combining acute becomes one character.
        assert_eq!(clean_comment("cafe\u{301}", 300).ok().as_deref(), Some("caf\u{e9}"));
        assert_eq!(clean_comment("👩‍👩‍👧 ok", 300).ok().as_deref(), Some("👩‍👩‍👧 ok"), "joiners in emoji stay");
        let code = |s: &str, max| clean_comment(s, max).err().map(|e| e.code);
        assert_eq!(code("", 300), Some(ErrorCode::BadComment));
        assert_eq!(code(" \u{3000} ", 300), Some(ErrorCode::BadComment));
        assert_eq!(code("a\nb", 300), Some(ErrorCode::BadComment));
        assert_eq!(code("a\u{0}b", 300), Some(ErrorCode::BadComment));
        assert_eq!(code("abc\u{202E}txt.exe", 300), Some(ErrorCode::BadComment));
        assert_eq!(code("z\u{334}\u{335}\u{336}\u{337}\u{338}", 300), Some(ErrorCode::BadComment), "Zalgo");
        assert!(clean_comment("z\u{334}\u{335}\u{336}\u{337}", 300).is_ok());
        // The limit counts characters, not bytes: 300 emoji pass, 301 do not.
        assert!(clean_comment(&"😀".repeat(300), 300).is_ok());
        assert_eq!(code(&"😀".repeat(301), 300), Some(ErrorCode::CommentTooLong));
        assert_eq!(code(&"x".repeat(1_000_000), 300), Some(ErrorCode::CommentTooLong));
    }

    #[test]
    fn blocked_words_match_whole_words_in_any_width_and_case() {
        let list = BlockedWords::new(&["spam*".into(), "buy now".into(), "ass".into()]);
        for hit in ["SPAM", "spammer here", "please BUY  NOW".replace("  ", " ").as_str(), "ｓｐａｍ", "an ass!"] {
            assert!(list.matches(hit), "{hit}");
        }
        for miss in ["class assessment", "buy nowhere", "nospam", ""] {
            assert!(!list.matches(miss), "{miss}");
        }
        assert!(!BlockedWords::default().matches("anything"));
        let file = BlockedWords::parse_file(include_str!("../../../data/blocked-words.txt"));
        assert!(file.len() > 5 && file.iter().all(|w| !w.starts_with('#')));
        assert!(BlockedWords::new(&file).matches("kill yourself"));
    }

    #[test]
    fn word_lists_are_bounded() {
        assert!(check_word_list(&["ok".into()]).is_ok());
        assert!(check_word_list(&vec!["w".to_owned(); MAX_WORDS + 1]).is_err());
        assert!(check_word_list(&["x".repeat(MAX_WORD_CHARS + 1)]).is_err());
        assert!(check_word_list(&["".into()]).is_err());
        assert!(check_word_list(&["a\nb".into()]).is_err());
    }
}
