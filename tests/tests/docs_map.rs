//! The maps of tests/src/docs.rs against the documents (issue 23): every marked block a
//! document shows is listed, with the file it is in and how often, and every listed block is
//! found there. A block moved to another page with its test still reading the old one, a
//! block copied without its test, or a test that finds nothing, fails here; each test that
//! extracts a block then reads it from the file the map names, counting its finds.

use idtoken_e2e::docs::{self, CONFIGS, DOCS, MARKDOWN, SPANS, STACKS};
use idtoken_e2e::workspace_root;

#[test]
fn every_markdown_doc_is_read_by_the_tests() {
    let mut on_disk: Vec<String> = std::fs::read_dir(workspace_root().join("docs"))
        .unwrap()
        .map(|e| format!("docs/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".md"))
        .collect();
    on_disk.push("README.md".to_string());
    on_disk.sort();
    let mut listed: Vec<String> = MARKDOWN.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "docs::MARKDOWN must list every doc");
    for f in MARKDOWN {
        assert!(DOCS.contains(f), "{f} is not searched for stack: blocks");
    }
    assert!(
        !workspace_root()
            .join("packaging/README-install.md")
            .exists(),
        "README-install.md came back: docs/install.md is the one install guide"
    );
}

/// As (name, count) sorted, for comparing a file's marks with the map's.
fn sorted(mut v: Vec<(String, usize)>) -> Vec<(String, usize)> {
    v.sort();
    v
}

#[test]
fn every_stack_block_is_where_the_map_says() {
    for file in DOCS {
        let found = sorted(docs::marks_in(file, "stack"));
        let listed = sorted(
            STACKS
                .iter()
                .filter(|(f, _, _)| f == file)
                .map(|(_, n, c)| (n.to_string(), *c))
                .collect(),
        );
        assert_eq!(found, listed, "{file}: stack: marks against docs::STACKS");
        for (name, count) in &listed {
            let blocks = docs::blocks_in(file, &docs::read(file), name);
            assert_eq!(blocks.len(), *count, "{file}: stack:{name} blocks found");
        }
    }
    for (_, name, _) in STACKS {
        // Every copy of one stack says the same.
        docs::block(name);
    }
}

#[test]
fn every_span_and_config_is_where_the_map_says() {
    for file in MARKDOWN {
        let spans = sorted(docs::marks_in(file, "span"));
        let listed = sorted(
            SPANS
                .iter()
                .filter(|(f, _)| f == file)
                .map(|(_, n)| (n.to_string(), 1))
                .collect(),
        );
        assert_eq!(
            spans, listed,
            "{file}: <!-- X:start --> spans against docs::SPANS"
        );
        let configs = sorted(docs::marks_in(file, "config"));
        let listed = sorted(
            CONFIGS
                .iter()
                .filter(|(f, _)| f == file)
                .map(|(_, n)| (n.to_string(), 1))
                .collect(),
        );
        assert_eq!(
            configs, listed,
            "{file}: config: marks against docs::CONFIGS"
        );
    }
    for (file, name) in SPANS {
        docs::span(file, name);
    }
    // Copies of one config say the same (the README's quick install and docs/install.md).
    for (file, name) in CONFIGS {
        let text = docs::config(file, name);
        for (other, _) in CONFIGS.iter().filter(|(f, n)| n == name && f != file) {
            assert_eq!(
                text,
                docs::config(other, name),
                "config:{name}: {file} and {other}"
            );
        }
    }
}

/// The extraction itself: a span held twice, or a block in a file the map does not name,
/// is caught.
#[test]
fn the_extraction_counts_its_finds() {
    let md = "<!-- stack:x -->\n```\nauth required pam_permit.so\n```\n<!-- stack:x -->\n```\nauth required pam_deny.so\n```\n";
    assert_eq!(docs::blocks_in("a.md", md, "x").len(), 2);
    assert_eq!(docs::blocks_in("a.md", md, "y").len(), 0);
    assert_eq!(docs::marks(md, "stack"), vec![("x".to_string(), 2)]);
    let spans = "<!-- a:start -->\n<!-- a:end -->\n<!-- a:start -->\n<!-- config:c -->\n";
    assert_eq!(docs::marks(spans, "span"), vec![("a".to_string(), 2)]);
    assert_eq!(docs::marks(spans, "config"), vec![("c".to_string(), 1)]);
}

/// GitHub's anchor for a heading: lowercased, punctuation other than `-` and `_` dropped,
/// spaces made `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every relative link of the Markdown docs leads to a file that exists and, with
/// `#anchor`, to a heading of it: a section that moved to another page leaves no link behind.
#[test]
fn every_relative_link_resolves() {
    let root = workspace_root();
    let mut bad = Vec::new();
    let mut seen = 0;
    for file in MARKDOWN {
        let text = docs::read(file);
        let dir = std::path::Path::new(file)
            .parent()
            .unwrap_or(std::path::Path::new(""));
        for (_, rest) in text.match_indices("](").map(|(i, _)| ((), &text[i + 2..])) {
            let Some(target) = rest.split(')').next() else {
                continue;
            };
            if target.contains("://") || target.contains(' ') || target.is_empty() {
                continue;
            }
            seen += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
            let linked = if path.is_empty() {
                root.join(file)
            } else {
                root.join(dir).join(path)
            };
            let Ok(linked_text) = std::fs::read_to_string(&linked) else {
                bad.push(format!("{file}: ({target}): no file {}", linked.display()));
                continue;
            };
            if !anchor.is_empty()
                && !linked_text
                    .lines()
                    .filter_map(|l| l.strip_prefix('#'))
                    .map(|h| slug(h.trim_start_matches('#')))
                    .any(|s| s == anchor)
            {
                bad.push(format!("{file}: ({target}): no heading #{anchor}"));
            }
        }
    }
    assert!(
        seen >= 20,
        "only {seen} relative links found: the scan is broken"
    );
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}
