//! Escaping what a peer sent before it reaches a log line or a terminal.
//!
//! A request path, a header or a server's answer can carry terminal control sequences
//! (ESC, the C1 controls such as U+009B CSI), line breaks (U+0085, U+2028, U+2029) or
//! bidirectional overrides (U+202E) that forge or hide log lines. [`escape`] writes each of
//! those as `\u{..}`, and a backslash as `\\`, so that the log shows what was sent.
//!
//! ```
//! assert_eq!(wssd::text::escape("/chat"), "/chat");
//! assert_eq!(wssd::text::escape("/a\u{9b}31mb\u{202e}"), "/a\\u{9b}31mb\\u{202e}");
//! ```

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every control, line or paragraph separator, bidirectional control and
/// other invisible format character written as `\u{XX}` (and `\` as `\\`).
/// Borrows when nothing needs escaping.
///
/// ```
/// // A path a client sent, for a log line: no terminal control sequence gets through.
/// assert_eq!(wssd::text::escape("/wss\x1b[2J"), "/wss\\u{1b}[2J");
/// assert_eq!(wssd::text::escape("/wss"), "/wss"); // borrowed: nothing to escape
/// ```
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`escape`] for bytes: invalid UTF-8 becomes U+FFFD first.
///
/// ```
/// assert_eq!(wssd::text::escape_bytes(b"ok\xff\n"), "ok\u{fffd}\\u{a}");
/// ```
pub fn escape_bytes(bytes: &[u8]) -> String {
    escape(&String::from_utf8_lossy(bytes)).into_owned()
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control() // C0, DEL and C1 (U+0080..U+009F, including CSI and NEL)
        || matches!(c,
            '\u{2028}' | '\u{2029}'           // line and paragraph separators
            | '\u{200b}'..='\u{200f}'         // zero-width and direction marks
            | '\u{202a}'..='\u{202e}'         // bidirectional embeddings and overrides
            | '\u{2066}'..='\u{2069}'         // bidirectional isolates
            | '\u{feff}'                      // zero-width no-break space
            | '\u{fff9}'..='\u{fffb}') // interlinear annotations
}

/// A duration as seconds to the nearest tenth (`12.3`), for log lines: integer arithmetic,
/// so that the binary carries no floating-point formatting (about 15 KB).
pub(crate) struct Seconds(pub std::time::Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenths = (self.0.as_millis() + 50) / 100;
        write!(f, "{}.{}", tenths / 10, tenths % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_to_the_nearest_tenth() {
        let s = |ms| Seconds(std::time::Duration::from_millis(ms)).to_string();
        assert_eq!(s(0), "0.0");
        assert_eq!(s(49), "0.0");
        assert_eq!(s(50), "0.1");
        assert_eq!(s(10_000), "10.0");
        assert_eq!(s(123_456), "123.5");
    }

    #[test]
    fn hostile_characters_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(escape("/wss?room=1"), Cow::Borrowed(_)));
        for (raw, shown) in [
            ("\u{1b}[2J", "\\u{1b}[2J"),
            ("a\u{9b}b", "a\\u{9b}b"),
            ("a\u{85}b", "a\\u{85}b"),
            ("a\u{2028}b", "a\\u{2028}b"),
            ("a\u{202e}b", "a\\u{202e}b"),
            ("a\nb\r", "a\\u{a}b\\u{d}"),
            ("a\\u{1b}", "a\\\\u{1b}"),
            ("a\u{7f}", "a\\u{7f}"),
        ] {
            assert_eq!(escape(raw), shown);
        }
        assert_eq!(escape_bytes(b"\x1b]0;x\x07"), "\\u{1b}]0;x\\u{7}");
    }
}
