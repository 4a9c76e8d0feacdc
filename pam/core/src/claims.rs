//! How claim values are read: as numeric dates, and as the text that globs match.

use serde_json::{Map, Value};

/// A NumericDate (RFC 7519 §2): a JSON number of seconds. Fractions are truncated toward
/// the past; non-finite or out-of-range values are not dates.
pub fn numeric_date(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    let f = v.as_f64()?;
    if f.is_finite() && f.abs() < 1e15 {
        // Safe: |f| < 1e15 fits in i64; `as` on a finite in-range float is exact enough here.
        #[allow(clippy::cast_possible_truncation)]
        Some(f.floor() as i64)
    } else {
        None
    }
}

/// The texts a claim offers to a glob: a string is itself; a number or boolean is its JSON
/// text; an array offers each scalar element. Null, objects and nested arrays offer nothing,
/// so they never match.
pub fn match_texts(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(scalar_text).collect(),
        other => scalar_text(other).into_iter().collect(),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(number_text(n)),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A number as globs see it: by value, so `42.0` offers the same text as `42` (a pattern
/// written `runner_id = 42` matches either); other fractions as JSON writes them.
pub fn number_text(n: &serde_json::Number) -> String {
    if n.is_f64()
        && let Some(f) = n.as_f64()
        && f.fract() == 0.0
        && f.abs() < 9.0e15
    {
        // Exact: an integral float under 2^53 converts to i64 without loss.
        #[allow(clippy::cast_possible_truncation)]
        return (f as i64).to_string();
    }
    n.to_string()
}

/// The claim a config names: a name beginning with `/` is an RFC 6901 JSON Pointer into
/// the payload (`/realm_access/roles`; `~1` is `/` and `~0` is `~` inside a name; an array
/// is stepped into by its index), anything else is one top-level claim, dots and all
/// (`https://example.org/groups` is a single claim name).
pub fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let Some(path) = name.strip_prefix('/') else {
        return claims.get(name);
    };
    let mut tokens = path.split('/');
    let first = unescape(tokens.next()?)?;
    let mut at = claims.get(&first)?;
    for token in tokens {
        let token = unescape(token)?;
        at = match at {
            Value::Object(m) => m.get(&token)?,
            Value::Array(items) => items.get(array_index(&token)?)?,
            _ => return None,
        };
    }
    Some(at)
}

/// Whether `name` is a well-formed pointer (or a plain name): every `~` is `~0` or `~1`.
pub fn pointer_problem(name: &str) -> Option<String> {
    let path = name.strip_prefix('/')?;
    path.split('/').any(|t| unescape(t).is_none()).then(|| {
        format!("{name:?} is not a JSON Pointer: `~` must be followed by 0 (for ~) or 1 (for /)")
    })
}

/// One reference token with its escapes undone; None when an escape is malformed.
fn unescape(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => return None,
        }
    }
    Some(out)
}

/// An array index of RFC 6901: digits, no leading zero.
fn array_index(token: &str) -> Option<usize> {
    let plain = token.bytes().all(|b| b.is_ascii_digit())
        && !token.is_empty()
        && (token == "0" || !token.starts_with('0'));
    plain.then(|| token.parse().ok()).flatten()
}

/// A claim as one line of text for logs: strings as they are, scalars as JSON, and
/// anything else as compact JSON. Callers still sanitise it.
pub fn display_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates() {
        assert_eq!(numeric_date(&json!(1700000000)), Some(1700000000));
        assert_eq!(numeric_date(&json!(1700000000.9)), Some(1700000000));
        assert_eq!(numeric_date(&json!("1700000000")), None);
        assert_eq!(numeric_date(&json!(1e300)), None);
        assert_eq!(numeric_date(&json!(null)), None);
    }

    #[test]
    fn pointers_and_plain_names() {
        let claims = json!({
            "realm_access": {"roles": ["hpc-ci", "offline_access"]},
            "resource_access": {"login-node": {"roles": ["deploy"]}},
            "a/b": {"c~d": 1},
            "https://example.org/groups": ["x"],
            "list": [{"k": "v0"}, {"k": "v1"}],
            "": "empty name"
        });
        let m = claims.as_object().unwrap();
        assert_eq!(
            lookup(m, "/realm_access/roles"),
            Some(&json!(["hpc-ci", "offline_access"]))
        );
        assert_eq!(
            lookup(m, "/resource_access/login-node/roles/0"),
            Some(&json!("deploy"))
        );
        assert_eq!(lookup(m, "/a~1b/c~0d"), Some(&json!(1)));
        assert_eq!(lookup(m, "/list/1/k"), Some(&json!("v1")));
        assert_eq!(lookup(m, "/"), Some(&json!("empty name")));
        // A plain name is one claim, dots and slashes included.
        assert_eq!(lookup(m, "https://example.org/groups"), Some(&json!(["x"])));
        assert_eq!(lookup(m, "realm_access.roles"), None);
        // Missing paths, indexes that are not indexes, and stepping into a scalar.
        for missing in [
            "/nope",
            "/realm_access/nope",
            "/list/2/k",
            "/list/01/k",
            "/list/-/k",
            "/list/x",
            "/a~1b/c~0d/deeper",
            "/realm_access/roles/9",
        ] {
            assert_eq!(lookup(m, missing), None, "{missing}");
        }
        assert_eq!(lookup(m, "/a~2b"), None);
        assert!(pointer_problem("/a~2b").is_some());
        assert!(pointer_problem("/a~").is_some());
        assert!(pointer_problem("/a~0~1").is_none());
        assert!(pointer_problem("plain~name").is_none());
    }

    #[test]
    fn texts() {
        assert_eq!(match_texts(&json!("true")), vec!["true"]);
        assert_eq!(match_texts(&json!(true)), vec!["true"]);
        assert_eq!(match_texts(&json!(42)), vec!["42"]);
        assert_eq!(match_texts(&json!(["a", 1, null, ["x"]])), vec!["a", "1"]);
        assert!(match_texts(&json!({"a": 1})).is_empty());
        assert!(match_texts(&json!(null)).is_empty());
    }
}
