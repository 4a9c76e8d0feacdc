//! The core's modules form layers that only point down: a module may name (`crate::x`,
//! `crate::{x, y::Z}`, `super::x`) only modules of a lower layer. This test reads the
//! sources, so a new upward import (the kind that made audit and decision import each
//! other) fails here, with its file.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Lowest first. Leaves know nothing of the crate; the audit line formats a finished
/// decision and is the top. (jws is a leaf: config names algorithms through it; packed is
/// a leaf: the decision unpacks a packed token before parsing it.)
const LAYERS: &[&[&str]] = &[
    // The signature check: the key form jwks builds and the decision verifies with.
    &["signature"],
    &[
        "sanitize",
        "claims",
        "glob",
        "reason",
        "timefmt",
        "files",
        "accounts",
        "jwks",
        "jws",
        "usermap",
        "net",
        "session_limits",
        "packed",
    ],
    // The use ledger and the session records open their directories through the
    // trusted-directory walk of files; the revocation list's format and matching (keystore
    // reads it).
    &["uses", "session_record", "revocations"],
    &["config"],
    &["keystore"],
    &["policy"],
    &["decision"],
    &["audit"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The source without comments (line, doc and block comments) and without the contents
/// of string and char literals, so that only code is searched.
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == '"' {
            // A raw string r"..." / r#"..."# is rare here; a plain string is skipped with
            // its escapes.
            let hashes = {
                let mut h = 0;
                let mut j = i;
                while j > 0 && b[j - 1] == '#' {
                    h += 1;
                    j -= 1;
                }
                if j > 0 && b[j - 1] == 'r' {
                    Some(h)
                } else {
                    None
                }
            };
            i += 1;
            while i < b.len() {
                if hashes.is_none() && b[i] == '\\' {
                    i += 2;
                    continue;
                }
                if b[i] == '"' {
                    let h = hashes.unwrap_or(0);
                    if (1..=h).all(|k| b.get(i + k) == Some(&'#')) {
                        i += 1 + h;
                        break;
                    }
                }
                i += 1;
            }
            out.push_str("\"\"");
        } else if c == '\'' && next == Some('\\') {
            // '\n', '\'', '\u{..}': the quote after the backslash is escaped.
            i += 3;
            while i < b.len() && b[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '\'' && b.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The code with every item marked `#[cfg(test)]` (unit tests may reach anywhere) cut
/// out: the attribute and the item after it, up to its closing brace or semicolon.
fn without_test_items(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let item = &rest[at + MARK.len()..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (k, ch) in item.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The first path segment of each item of a `{...}` use group (nested groups are the
/// same module's insides, so only the top level counts). `s` starts after the `{`.
fn group_heads(s: &str, out: &mut Vec<String>) {
    let mut depth = 0usize;
    let mut at_start = true;
    for (k, ch) in s.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => return,
            '}' => depth -= 1,
            ',' if depth == 0 => at_start = true,
            c if c.is_whitespace() => {}
            _ if at_start && depth == 0 => {
                at_start = false;
                let name = ident(&s[k..]);
                // `self` names the parent module of the group: `crate::{self}` is the crate.
                if !name.is_empty() && name != "self" {
                    out.push(name);
                }
            }
            _ => {}
        }
    }
}

/// The crate modules a source file's product code names. In a top-level module `super::`
/// is the crate root, so `super::x` is `crate::x`.
fn named_modules(text: &str) -> Vec<String> {
    let code = without_test_items(&code_only(text));
    let mut out = Vec::new();
    for root in ["crate", "super"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(root) {
            let start = from + i;
            from = start + root.len();
            let before = code[..start].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let after = code[from..].trim_start();
            let Some(after) = after.strip_prefix("::") else {
                continue;
            };
            let after = after.trim_start();
            if let Some(group) = after.strip_prefix('{') {
                group_heads(group, &mut out);
            } else {
                let name = ident(after);
                if !name.is_empty() {
                    out.push(name);
                }
            }
        }
    }
    out
}

#[test]
fn the_import_reader_sees_every_form_of_naming_a_module() {
    let names = |t: &str| {
        let mut v = named_modules(t);
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(names("use crate::decision::Decision;"), ["decision"]);
    assert_eq!(names("use crate::{decision::X};"), ["decision"]);
    assert_eq!(
        names("use crate::{\n    audit,\n    decision::{self, X},\n    policy::Y as Z,\n};"),
        ["audit", "decision", "policy"]
    );
    assert_eq!(names("use super::decision;"), ["decision"]);
    assert_eq!(
        names("use super::{decision, policy::P};"),
        ["decision", "policy"]
    );
    assert_eq!(
        names("let d = crate :: decision :: evaluate();"),
        ["decision"]
    );
    assert_eq!(names("fn f() { super::audit::line() }"), ["audit"]);
    assert_eq!(
        names("let q = '\\''; let r = '\"'; crate::policy::x"),
        ["policy"]
    );
    assert_eq!(
        names("x = ::crate_name::y; mycrate::z; supermarket::q"),
        [] as [&str; 0]
    );
    // Comments and strings are not code.
    assert_eq!(
        names("// crate::a\n/* crate::b /* nested */ crate::c */ let s = \"crate::d\";"),
        [] as [&str; 0]
    );
    // Test items are cut out, product code after them is not.
    assert_eq!(
        names("#[cfg(test)]\nmod tests { use crate::audit; }\nuse crate::policy;"),
        ["policy"]
    );
    assert_eq!(
        names("#[cfg(test)]\nuse crate::audit;\nfn f() { crate::decision::x() }"),
        ["decision"]
    );
}

#[test]
fn core_modules_only_import_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let module = path.file_stem().unwrap().to_str().unwrap().to_string();
        if module == "lib" {
            continue;
        }
        let own = layer_of(&module)
            .unwrap_or_else(|| panic!("src/{module}.rs is in no layer: add it to LAYERS"));
        let text = fs::read_to_string(&path).unwrap();
        let mut deps: Vec<String> = named_modules(&text)
            .into_iter()
            .filter(|m| *m != module)
            .collect();
        deps.sort();
        deps.dedup();
        for dep in &deps {
            // What lib.rs defines at the root (MAX_TOKEN_BYTES, ...) is below every module.
            if dep
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
            {
                continue;
            }
            let theirs = layer_of(dep).unwrap_or_else(|| panic!("{module} names unknown {dep}"));
            assert!(
                theirs < own,
                "src/{module}.rs (layer {own}) imports {dep} (layer {theirs}): the core's \
                 imports must point down"
            );
        }
        graph.insert(module, deps);
    }
    // The graph the layering describes, printed for `cargo test -- --nocapture`.
    for (module, deps) in &graph {
        println!("{module} -> {}", deps.join(", "));
    }
    assert!(graph.len() >= 20, "{graph:?}");
}
