//! Text from a token made safe to print: the Unicode categories Cc (controls: no forged
//! log lines, no terminal escapes), Cf (format: bidi overrides, zero-width characters,
//! BOM: no text that reads differently from what it says), Zl and Zp (line and paragraph
//! separators) removed, length capped (SPEC v2).
//!
//! A leaf of the core: every layer that prints token text uses it, and it uses nothing of
//! the crate.

/// Longest value kept in a log line or trace, in characters.
pub const MAX_VALUE_CHARS: usize = 200;

/// Strips what [`is_removed`] names and caps the length of a value from the token.
pub fn clean(value: &str) -> String {
    let mut kept = value.chars().filter(|c| !is_removed(*c));
    let mut out: String = kept.by_ref().take(MAX_VALUE_CHARS).collect();
    if kept.next().is_some() {
        out.push('…');
    }
    out
}

/// Strips what [`is_removed`] names, without a length cap (for `--json` output, whose
/// reader wants whole values).
pub fn strip(value: &str) -> String {
    value.chars().filter(|c| !is_removed(*c)).collect()
}

/// Whether `c` is in the general category Cc, Cf, Zl or Zp (Unicode 16.0). std knows Cc
/// (`is_control`); the format characters are listed here, since a crate of Unicode tables
/// for 30 ranges would be a dependency of the login path for nothing.
pub fn is_removed(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Zl, Zp
            '\u{2028}' | '\u{2029}'
            // Cf
            | '\u{00ad}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061c}'
            | '\u{06dd}'
            | '\u{070f}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_strips_controls_and_caps() {
        assert_eq!(clean("a\nb\rc\u{1b}[31m"), "abc[31m");
        assert_eq!(clean("x\u{202e}y"), "xy");
        // Security review 2, finding 6: these reached syslog and IDTOKEN_* before.
        for c in [
            '\u{2028}',
            '\u{2029}',
            '\u{061c}',
            '\u{200b}',
            '\u{200d}',
            '\u{2060}',
            '\u{feff}',
            '\u{00ad}',
            '\u{e0041}',
            '\u{7}',
            '\u{1b}',
            '\u{9b}',
        ] {
            assert_eq!(clean(&format!("a{c}b")), "ab", "U+{:04X}", c as u32);
        }
        // Letters, marks and spaces of every script stay.
        assert_eq!(
            clean("José Ωμέγα 日本 a b\u{0301}"),
            "José Ωμέγα 日本 a b\u{0301}"
        );
        let long = "a".repeat(500);
        assert_eq!(clean(&long).chars().count(), MAX_VALUE_CHARS + 1);
    }
}
