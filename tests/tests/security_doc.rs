//! SECURITY.md names the tests that prove each row: every `file.rs::function` it names is a
//! function of that file in this repository (a renamed or deleted test leaves a row that
//! proves nothing, and this fails).

use std::path::{Path, PathBuf};

use idtoken_e2e::workspace_root;

/// Every `name.rs::function` reference in `text`.
fn references(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices(".rs::") {
        let file_start = text[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let rest = &text[at + ".rs::".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (file, function) = (&text[file_start..at], &rest[..end]);
        if !file.is_empty() && !function.is_empty() {
            out.push((format!("{file}.rs"), function.to_string()));
        }
    }
    out
}

/// The .rs files of the repository (target/ and hidden directories aside).
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if p.is_dir() {
            sources(&p, out);
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_test_security_md_names_exists() {
    let root = workspace_root();
    let text = std::fs::read_to_string(root.join("SECURITY.md")).unwrap();
    let refs = references(&text);
    // The file names dozens of tests; an extraction that finds none would pass vacuously.
    assert!(refs.len() >= 40, "only {} references: {refs:?}", refs.len());
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut missing = Vec::new();
    for (file, function) in &refs {
        let defines = files
            .iter()
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == *file))
            .any(|p| {
                std::fs::read_to_string(p).is_ok_and(|src| src.contains(&format!("fn {function}(")))
            });
        if !defines {
            missing.push(format!("{file}::{function}"));
        }
    }
    assert!(
        missing.is_empty(),
        "SECURITY.md names tests that do not exist: {missing:?}"
    );
}

#[test]
fn the_extraction_finds_references_and_misses() {
    let refs = references("see `a_b.rs::one_test` and (`c.rs::two`), not a.rs: or ::x");
    assert_eq!(
        refs,
        vec![
            ("a_b.rs".to_string(), "one_test".to_string()),
            ("c.rs".to_string(), "two".to_string())
        ]
    );
}
