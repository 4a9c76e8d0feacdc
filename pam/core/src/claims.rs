//! How claim values are read: as numeric dates, and as the text that globs match.

use serde_json::Value;

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
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
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
    fn texts() {
        assert_eq!(match_texts(&json!("true")), vec!["true"]);
        assert_eq!(match_texts(&json!(true)), vec!["true"]);
        assert_eq!(match_texts(&json!(42)), vec!["42"]);
        assert_eq!(match_texts(&json!(["a", 1, null, ["x"]])), vec!["a", "1"]);
        assert!(match_texts(&json!({"a": 1})).is_empty());
        assert!(match_texts(&json!(null)).is_empty());
    }
}
