//! What the documents show, read from the documents themselves, so that a test drives
//! exactly what a sysadmin copies: the `stack:NAME` PAM blocks of the Markdown docs,
//! pam_idtoken(8) and the RPM spec; the `<!-- NAME:start -->`..`<!-- NAME:end -->` spans
//! (a CI job, the sh askpass helper, commands) and the `<!-- config:NAME -->` configs.
//! Every extraction names its file and counts its finds there, and the maps below list
//! every marked block of every document: a block that moves without its test, a test that
//! still reads the old file, or a mark nobody reads, fails `tests/tests/docs_map.rs`.

use crate::workspace_root;

/// The Markdown documents, README first. `docs_map.rs` checks that every `docs/*.md` is here.
pub const MARKDOWN: &[&str] = &[
    "README.md",
    "docs/install.md",
    "docs/pam-module.md",
    "docs/policy.md",
    "docs/ci.md",
    "docs/operations.md",
];

/// The documents that carry `stack:` blocks.
pub const DOCS: &[&str] = &[
    "README.md",
    "docs/install.md",
    "docs/pam-module.md",
    "docs/policy.md",
    "docs/ci.md",
    "docs/operations.md",
    "packaging/man/pam_idtoken.8",
    "packaging/rpm/pam-idtoken.spec",
];

/// Every `stack:NAME` block, as (file, name, how many times the file shows it). Each name is
/// driven by a test (pam_stacks.rs, login_node.rs, doctor.rs); `block(name)` checks that
/// every copy says the same.
pub const STACKS: &[(&str, &str, usize)] = &[
    ("README.md", "rhel-sshd", 1),
    ("README.md", "sshd-config", 1),
    ("docs/install.md", "debian-common-auth", 1),
    ("docs/install.md", "debian-sshd", 1),
    ("docs/install.md", "rhel-sshd", 1),
    ("docs/install.md", "authselect-module-line", 1),
    ("docs/install.md", "authselect-sssd", 1),
    ("docs/install.md", "authselect-minimal", 1),
    ("docs/install.md", "authselect-local", 1),
    ("docs/install.md", "sshd-config", 1),
    ("docs/pam-module.md", "debian-sshd", 1),
    ("docs/policy.md", "debian-common-session", 1),
    ("packaging/man/pam_idtoken.8", "authselect-module-line", 1),
    ("packaging/man/pam_idtoken.8", "debian-common-auth", 1),
    ("packaging/man/pam_idtoken.8", "debian-sshd", 1),
    ("packaging/man/pam_idtoken.8", "rhel-sshd", 1),
    ("packaging/rpm/pam-idtoken.spec", "rhel-sshd", 1),
    (
        "packaging/rpm/pam-idtoken.spec",
        "authselect-module-line",
        1,
    ),
];

/// Every `<!-- NAME:start -->`..`<!-- NAME:end -->` span of the Markdown docs, as (file,
/// name): each is read by exactly one test, through `span(file, name)`.
pub const SPANS: &[(&str, &str)] = &[
    ("docs/ci.md", "job-example"),            // ci_template.rs
    ("docs/ci.md", "askpass-sh"),             // ci_template.rs
    ("docs/ci.md", "sshpass-example"),        // ssh_login.rs
    ("docs/ci.md", "ansible-example"),        // ansible.rs
    ("docs/operations.md", "metrics-enable"), // tests/packaging/run
    ("docs/operations.md", "revoke-example"), // revocation.rs
];

/// Every `<!-- config:NAME -->` config of the Markdown docs, as (file, name). Copies of one
/// name must be equal (doc_configs.rs); check_cli.rs decides tokens with some of them.
pub const CONFIGS: &[(&str, &str)] = &[
    ("README.md", "first"),
    ("docs/install.md", "first"),
    ("docs/policy.md", "runners-only"),
    ("docs/policy.md", "github-actions"),
    ("docs/policy.md", "keycloak"),
];

/// The text between `<!-- NAME:start -->` and `<!-- NAME:end -->` in `file`, which must hold
/// each mark exactly once (a span that moved, or was copied, fails here).
pub fn span(file: &str, name: &str) -> String {
    let text = read(file);
    let (start, end) = (
        format!("<!-- {name}:start -->"),
        format!("<!-- {name}:end -->"),
    );
    for m in [&start, &end] {
        assert_eq!(
            text.matches(m.as_str()).count(),
            1,
            "{file} must hold {m} exactly once"
        );
    }
    let body = text
        .split_once(&start)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(b, _)| b.to_string())
        .unwrap_or_default();
    assert!(!body.trim().is_empty(), "{file}: {name} span is empty");
    body
}

/// The body of the first fence opened by "```LANG\n" in `text`, up to the closing fence.
pub fn fenced(text: &str, lang: &str, what: &str) -> String {
    text.split_once(&format!("```{lang}\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(b, _)| b.to_string())
        .unwrap_or_else(|| panic!("a ```{lang} block in {what}"))
}

/// The ```toml block right after `<!-- config:NAME -->` in `file`, which must hold that mark
/// exactly once.
pub fn config(file: &str, name: &str) -> String {
    let text = read(file);
    let mark = format!("<!-- config:{name} -->");
    assert_eq!(
        text.matches(mark.as_str()).count(),
        1,
        "{file} must hold {mark} exactly once"
    );
    let after = text.split_once(&mark).map(|(_, a)| a).unwrap_or_default();
    assert!(
        after.trim_start_matches('\n').starts_with("```toml\n"),
        "{file}: {mark} must be followed by a ```toml fence"
    );
    fenced(after, "toml", &format!("{file} after {mark}"))
}

/// The names of the marks of one kind in a document: `stack:` marks (Markdown, roff, spec
/// comments), `<!-- X:start -->` spans, `<!-- config:X -->` configs, each with its count.
pub fn marks_in(file: &str, kind: &str) -> Vec<(String, usize)> {
    marks(&read(file), kind)
}

/// `marks_in` on a text.
pub fn marks(text: &str, kind: &str) -> Vec<(String, usize)> {
    let mut found: Vec<(String, usize)> = Vec::new();
    let mut add = |n: &str| match found.iter_mut().find(|(x, _)| x == n) {
        Some((_, c)) => *c += 1,
        None => found.push((n.to_string(), 1)),
    };
    for line in text.lines() {
        let l = line.trim();
        match kind {
            "stack" => {
                for w in l.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',') {
                    if let Some(n) = w
                        .strip_prefix("stack:")
                        .filter(|n| !n.is_empty() && *n != "NAME")
                    {
                        add(n);
                    }
                }
            }
            "span" => {
                if let Some(n) = l
                    .strip_prefix("<!-- ")
                    .and_then(|r| r.strip_suffix(":start -->"))
                {
                    add(n);
                }
            }
            _ => {
                if let Some(n) = l
                    .strip_prefix("<!-- config:")
                    .and_then(|r| r.strip_suffix(" -->"))
                {
                    add(n);
                }
            }
        }
    }
    found
}

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

/// The `.EX`..`.EE` example right after the roff comment `.\" MARK ...` in a man page (which
/// must hold that comment exactly once), with roff's escapes undone: the text a reader copies.
pub fn man_example(page: &str, mark: &str) -> String {
    let text = read(page);
    let is_mark = |l: &&str| l.starts_with(".\\\"") && l.split_whitespace().nth(1) == Some(mark);
    let lines: Vec<&str> = text.lines().collect();
    let marks: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| is_mark(l))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        marks.len(),
        1,
        "{page} must hold `.\\\" {mark}` exactly once"
    );
    let after = &lines[marks[0] + 1..];
    assert_eq!(
        after.first().map(|l| l.trim()),
        Some(".EX"),
        "{page}: `.\\\" {mark}` must be followed by .EX"
    );
    let mut out = String::new();
    for l in after.iter().skip(1).take_while(|l| l.trim() != ".EE") {
        out.push_str(&unroff(l));
        out.push('\n');
    }
    assert!(!out.trim().is_empty(), "{page}: {mark} example is empty");
    out
}

/// Roff's escapes in an example line undone: `\(aq` is `'`, `\-` is `-`, `\e` is `\`.
pub fn unroff(line: &str) -> String {
    line.replace("\\(aq", "'")
        .replace("\\-", "-")
        .replace("\\e", "\\")
}
