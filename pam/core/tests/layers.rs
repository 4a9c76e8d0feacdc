//! The core's modules form layers that only point down: a module may name (`crate::x`)
//! only modules of a lower layer. This test reads the sources, so a new upward import
//! (the kind that made audit and decision import each other) fails here, with its file.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Lowest first. Leaves know nothing of the crate; the audit line formats a finished
/// decision and is the top. (jws is a leaf: config names algorithms through it; packed is
/// a leaf: the decision unpacks a packed token before parsing it.)
const LAYERS: &[&[&str]] = &[
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

/// The crate modules a source file names, outside comments.
fn named_modules(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
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
        // Unit tests may reach anywhere; the graph is about the product code.
        let product = text.split("#[cfg(test)]").next().unwrap_or("");
        let mut deps: Vec<String> = named_modules(product)
            .into_iter()
            .filter(|m| *m != module)
            .collect();
        deps.sort();
        deps.dedup();
        for dep in &deps {
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
    assert!(graph.len() >= 16, "{graph:?}");
}
