//! Text from a token made safe to print: control and bidirectional characters removed (no
//! forged log lines, no text that reads differently from what it says), length capped.
//!
//! A leaf of the core: every layer that prints token text uses it, and it uses nothing of
//! the crate.

/// Longest value kept in a log line or trace, in characters.
pub const MAX_VALUE_CHARS: usize = 200;

/// Strips control characters and caps the length of a value from the token.
pub fn clean(value: &str) -> String {
    let mut out: String = value
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .take(MAX_VALUE_CHARS)
        .collect();
    if value
        .chars()
        .filter(|c| !c.is_control())
        .nth(MAX_VALUE_CHARS)
        .is_some()
    {
        out.push('…');
    }
    out
}

/// Bidirectional overrides make a log line read differently from what it says.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_strips_controls_and_caps() {
        assert_eq!(clean("a\nb\rc\u{1b}[31m"), "abc[31m");
        assert_eq!(clean("x\u{202e}y"), "xy");
        let long = "a".repeat(500);
        assert_eq!(clean(&long).chars().count(), MAX_VALUE_CHARS + 1);
    }
}
