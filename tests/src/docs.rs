//! The PAM stacks the documents show, read from the documents themselves: every `stack:NAME`
//! block of README.md, README-install.md, pam_idtoken(8) and the RPM spec, so that a test
//! drives exactly what a sysadmin copies (a block that finds nothing fails).

use crate::workspace_root;

/// The documents that carry `stack:` blocks.
pub const DOCS: &[&str] = &[
    "README.md",
    "packaging/README-install.md",
    "packaging/man/pam_idtoken.8",
    "packaging/rpm/pam-idtoken.spec",
];

/// The blocks named `name` in one file, each as its lines (trimmed, empty ones dropped).
/// Markdown: `<!-- stack:NAME -->` then a fenced block; roff: `.\" stack:NAME` then
/// `.EX` .. `.EE`; the spec: a comment holding `stack:NAME`, then `#` lines indented by at
/// least four spaces.
pub fn blocks_in(file: &str, text: &str, name: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mark_md = format!("<!-- stack:{name} -->");
    let mark_roff = format!("stack:{name}");
    for (i, l) in lines.iter().enumerate() {
        let rest = &lines[i + 1..];
        let block: Option<Vec<String>> = if file.ends_with(".md") {
            (l.trim() == mark_md).then(|| {
                assert!(
                    rest.first().is_some_and(|f| f.starts_with("```")),
                    "{file}: {mark_md} must be followed by a fence"
                );
                rest.iter()
                    .skip(1)
                    .take_while(|x| !x.starts_with("```"))
                    .map(|x| x.to_string())
                    .collect()
            })
        } else if file.ends_with(".8") {
            (l.starts_with(".\\\"") && l.split_whitespace().any(|w| w == mark_roff)).then(|| {
                rest.iter()
                    .skip_while(|x| x.trim() != ".EX")
                    .skip(1)
                    .take_while(|x| x.trim() != ".EE")
                    .map(|x| x.replace("\\-", "-").replace("\\e", "\\"))
                    .collect()
            })
        } else {
            (l.starts_with('#')
                && l.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
                    .any(|w| w == mark_roff))
            .then(|| {
                rest.iter()
                    .take_while(|x| x.starts_with("#    "))
                    .map(|x| x.trim_start_matches('#').to_string())
                    .collect()
            })
        };
        if let Some(b) = block {
            let b: Vec<String> = b
                .iter()
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect();
            assert!(!b.is_empty(), "{file}: block {name} is empty");
            out.push(b);
        }
    }
    out
}

pub fn read(rel: &str) -> String {
    let p = workspace_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A PAM line with its whitespace made single, for comparing the same line across documents.
pub fn norm(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The one stack called `name`: every copy in every document must say the same.
pub fn block(name: &str) -> Vec<String> {
    let mut all: Vec<(&str, Vec<String>)> = Vec::new();
    for f in DOCS {
        for b in blocks_in(f, &read(f), name) {
            all.push((f, b));
        }
    }
    let Some((first_file, first)) = all.first().cloned() else {
        panic!("no document marks stack:{name}");
    };
    for (f, b) in &all {
        let (a, b2): (Vec<String>, Vec<String>) = (
            first.iter().map(|x| norm(x)).collect(),
            b.iter().map(|x| norm(x)).collect(),
        );
        assert_eq!(a, b2, "stack:{name} differs between {first_file} and {f}");
    }
    first
}
