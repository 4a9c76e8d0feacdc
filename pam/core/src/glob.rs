//! Anchored, case-sensitive globs: `*` matches any run of characters (`/` included), `?`
//! exactly one character, everything else itself.
//!
//! The matcher is the classic iterative one with a single backtrack point, so it runs in
//! O(pattern × text) time at worst and never recurses: a hostile claim cannot blow the
//! stack or take exponential time.

/// True when `pattern` has no wildcard: it matches exactly the text it is.
pub fn is_literal(pattern: &str) -> bool {
    !pattern.contains(['*', '?'])
}

/// True when `pattern` matches the whole of `text`.
pub fn matches(pattern: &str, text: &str) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        // All ASCII (user names, project paths, ref names): a byte is a character, so the
        // bytes are matched as they are, without first collecting the characters (two
        // allocations per glob tried, in a login path that tries a dozen).
        return match_units(pattern.as_bytes(), text.as_bytes(), b'*', b'?');
    }
    let pat: Vec<char> = pattern.chars().collect();
    let txt: Vec<char> = text.chars().collect();
    match_units(&pat, &txt, '*', '?')
}

/// The matcher over characters (or ASCII bytes): `star` and `one` are `*` and `?`.
fn match_units<T: Copy + PartialEq>(pat: &[T], txt: &[T], star: T, one: T) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // Where the last `*` was, and the text position it is currently assumed to end at.
    let mut star_at: Option<(usize, usize)> = None;
    while t < txt.len() {
        match (pat.get(p), txt.get(t)) {
            (Some(pc), _) if *pc == star => {
                star_at = Some((p, t));
                p = p.saturating_add(1);
            }
            (Some(pc), Some(_)) if *pc == one => {
                p = p.saturating_add(1);
                t = t.saturating_add(1);
            }
            (Some(pc), Some(tc)) if pc == tc => {
                p = p.saturating_add(1);
                t = t.saturating_add(1);
            }
            _ => match star_at {
                // Let the last `*` swallow one more character and retry from there.
                Some((sp, st)) => {
                    let st = st.saturating_add(1);
                    star_at = Some((sp, st));
                    p = sp.saturating_add(1);
                    t = st;
                }
                None => return false,
            },
        }
    }
    // The text is consumed: only `*`s may remain in the pattern.
    pat.get(p..)
        .is_some_and(|rest| rest.iter().all(|c| *c == star))
}

/// True when any of `patterns` matches `text`.
pub fn any_matches<S: AsRef<str>>(patterns: &[S], text: &str) -> bool {
    patterns.iter().any(|p| matches(p.as_ref(), text))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn literal_is_anchored_both_ends() {
        assert!(matches("alice", "alice"));
        assert!(!matches("alice", "alice2"));
        assert!(!matches("alice", "xalice"));
        assert!(!matches("alice", "Alice"), "case-sensitive");
    }

    #[test]
    fn star_crosses_slashes() {
        assert!(matches("hpc/*", "hpc/a/b/c"));
        assert!(matches("hpc/*", "hpc/"));
        assert!(!matches("hpc/*", "hpc"));
        assert!(matches("*/deploy", "group/sub/deploy"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
    }

    #[test]
    fn question_mark_is_one_character() {
        assert!(matches("b?b", "bob"));
        assert!(!matches("b?b", "bb"));
        assert!(!matches("b?b", "boob"));
        assert!(matches("?", "é"), "one character, not one byte");
    }

    #[test]
    fn empty_and_star_only() {
        assert!(matches("", ""));
        assert!(!matches("", "a"));
        assert!(matches("*", ""));
        assert!(matches("**", "anything"));
    }

    #[test]
    fn backtracking_is_correct() {
        assert!(matches("*ab", "aab"));
        assert!(matches("*a*b", "xxaxxb"));
        assert!(!matches("*a*b", "xxaxx"));
        assert!(matches("main*", "main"));
        assert!(matches("refs/*/main", "refs/heads/x/main"));
    }

    #[test]
    fn pathological_pattern_is_fast_enough_to_finish() {
        let text = "a".repeat(5000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!matches(&pattern, &text));
    }

    #[test]
    fn ascii_and_unicode_paths_agree() {
        // The same patterns through the byte path (all ASCII) and the char path (a
        // non-ASCII character elsewhere in the text or pattern).
        assert!(matches("a?c", "abc") && matches("a?cé", "abcé"));
        assert!(matches("*/x", "a/b/x") && matches("*/x", "é/b/x"));
        assert!(!matches("a*z", "abc") && !matches("a*z", "abcé"));
        assert!(matches("é*", "éa") && !matches("e*", "éa"));
        assert!(matches("?", "é") && !matches("??", "é"));
    }

    #[test]
    fn unicode_lookalikes_do_not_match() {
        // Cyrillic 'а' (U+0430) is not Latin 'a'.
        assert!(!matches("alice", "\u{0430}lice"));
    }
}
