//! Every configuration the documentation shows is one `idtoken config check` accepts, without
//! a warning: the
//! ```toml blocks of README.md and docs/*.md, the man pages' examples, and the shipped
//! example config with its commented examples uncommented (as a sysadmin would). The
//! configs are extracted from the documents themselves, so a doc edit that breaks one
//! fails here.

use std::path::PathBuf;

use idtoken_e2e::sandbox::Sandbox;
use idtoken_e2e::{idtoken_bin, workspace_root};

fn read(rel: &str) -> String {
    let p = workspace_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The ```toml fenced blocks of a Markdown file, with the line each starts on.
fn markdown_toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start().starts_with("```toml") => {
                current = Some((n + 1, String::new()))
            }
            None => {}
            Some(_) if line.trim_start().starts_with("```") => blocks.extend(current.take()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    blocks
}

/// The `.EX`/`.EE` examples of a man page that are configs (they open with a table header),
/// with roff's escapes undone.
fn man_config_examples(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match &mut current {
            None if line.starts_with(".EX") => current = Some((n + 1, String::new())),
            None => {}
            Some(_) if line.starts_with(".EE") => blocks.extend(current.take()),
            Some((_, body)) => {
                body.push_str(&line.replace("\\-", "-").replace("\\e", "\\"));
                body.push('\n');
            }
        }
    }
    blocks
        .into_iter()
        .filter(|(_, b)| {
            b.lines()
                .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .is_some_and(|l| l.starts_with("[defaults]") || l.starts_with("[[issuer]]"))
        })
        .collect()
}

/// The shipped example with every commented table header and `key = value` line
/// uncommented, the way the packaging test and a sysadmin read it.
fn uncommented_example() -> String {
    read("packaging/idtoken.toml")
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
            {
                rest.to_string()
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn config_check(sandbox: &Sandbox, name: &str, text: &str) -> (bool, String) {
    let path: PathBuf = sandbox.write(name, text.as_bytes());
    let out = std::process::Command::new(idtoken_bin())
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("idtoken: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn every_documented_config_passes_config_check() {
    let sandbox = Sandbox::new("doc-configs");
    let mut configs: Vec<(String, String)> = Vec::new();
    // Each document's count is pinned: a config that moves, or a parser that finds none in
    // a document, fails here.
    let pinned = [
        ("README.md", 1),
        ("docs/install.md", 1),
        ("docs/pam-module.md", 0),
        ("docs/policy.md", 5),
        ("docs/ci.md", 0),
        ("docs/operations.md", 0),
    ];
    for doc in idtoken_e2e::docs::MARKDOWN {
        assert!(
            pinned.iter().any(|(d, _)| d == doc),
            "{doc} is not in the pinned list"
        );
    }
    for (doc, expected) in pinned {
        let blocks = markdown_toml_blocks(&read(doc));
        assert_eq!(blocks.len(), expected, "```toml blocks in {doc}");
        for (line, body) in blocks {
            configs.push((format!("{doc}:{line}"), body));
        }
    }
    for (page, expected) in [
        ("packaging/man/idtoken.toml.5", 1),
        ("packaging/man/pam_idtoken.8", 0),
        ("packaging/man/idtoken.1", 0),
    ] {
        let examples = man_config_examples(&read(page));
        assert_eq!(examples.len(), expected, "config examples in {page}");
        for (line, body) in examples {
            configs.push((format!("{page}:{line}"), body));
        }
    }
    configs.push((
        "packaging/idtoken.toml (uncommented)".to_string(),
        uncommented_example(),
    ));
    configs.push((
        "packaging/idtoken.toml".to_string(),
        read("packaging/idtoken.toml"),
    ));
    assert_eq!(configs.len(), 10, "found {configs:?}");
    let mut failures = Vec::new();
    for (n, (origin, text)) in configs.iter().enumerate() {
        let (ok, said) = config_check(&sandbox, &format!("doc-{n}.toml"), text);
        // A documented config is one to copy: it draws no warning either (a granting rule
        // anchored on renameable names, or not pinned to CI tokens, SPEC v3).
        let rule_warning = said
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains(" rule \""));
        if !ok || rule_warning {
            failures.push(format!("{origin}:\n{said}"));
        }
    }
    assert!(
        failures.is_empty(),
        "documented configs refused:\n{}",
        failures.join("\n")
    );
}

/// The extraction itself: a broken block is found and refused, so the test above can fail.
#[test]
fn a_broken_documented_config_is_caught() {
    let sandbox = Sandbox::new("doc-configs-broken");
    let md =
        "text\n```toml\n[[issuer]]\nname = \"g\"\nurl = \"http://g\"\naudiences = [\"a\"]\n```\n";
    let blocks = markdown_toml_blocks(md);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].0, 2);
    let (ok, said) = config_check(&sandbox, "broken.toml", &blocks[0].1);
    assert!(!ok && said.contains("plain http"), "{said}");
    let man = ".EX\n[[rule]]\nname = \"a\\-b\"\nbogus = 1\n.EE\n";
    let blocks = man_config_examples(&format!("{man}.EX\n[defaults]\n.EE\n"));
    assert_eq!(blocks.len(), 1, "{blocks:?}");
}
