//! `idtoken config check`: 0 valid, 2 invalid, every problem with its line; a valid config
//! whose referenced files (key cache, user map, CA file) are missing gets a warning line each.

use std::path::Path;

use idtoken_core::config::{Config, IfAbsent};

pub fn run(path: &Path) -> u8 {
    match Config::load(path) {
        Ok(c) => {
            println!("{}", summary(path, &c));
            if c.issuers.is_empty() {
                println!("note: no [[issuer]] is configured, so every token is refused");
            } else if c.rules.is_empty() {
                println!("note: no [[rule]] is configured, so every token is refused");
            }
            for w in missing_files(&c) {
                println!("warning: {w}");
            }
            for w in &c.warnings {
                match w.line {
                    Some(l) => println!("warning: {}:{l}: {}", path.display(), w.message),
                    None => println!("warning: {}: {}", path.display(), w.message),
                }
            }
            for note in deny_rule_dependencies(&c) {
                println!("note: {note}");
            }
            0
        }
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}

/// A line for each file the config names that is not there. The config is still valid
/// (exit 0): a key cache appears with the first `idtoken refresh`, and the files may be
/// installed after the config; but until they exist the issuer's tokens cannot be decided.
fn missing_files(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for i in &c.issuers {
        let mut check = |what: &str, path: &Path, effect: &str| match path.try_exists() {
            Ok(true) => {}
            Ok(false) => out.push(format!(
                "issuer {}: {what} {} does not exist: {effect}",
                i.name,
                path.display()
            )),
            Err(e) => out.push(format!(
                "issuer {}: {what} {} cannot be checked ({e}): {effect}",
                i.name,
                path.display()
            )),
        };
        check(
            "jwks_cache",
            &i.jwks_cache,
            "its tokens are refused as undecidable until `idtoken refresh` (or a copied JWKS) creates it",
        );
        if let Some(m) = &i.user_map {
            check(
                "user_map",
                m,
                "tokens of rules that use it are refused as undecidable until it exists (leave user_map out if you do not map users)",
            );
        }
        if let Some(ca) = &i.ca_file {
            check(
                "ca_file",
                ca,
                "`idtoken refresh` cannot fetch its keys (leave ca_file out to use the system's CAs)",
            );
        }
    }
    out
}

/// Claims GitLab puts in a CI job's token only sometimes: a deny rule that tests one refuses
/// every token without it (SPEC v3), which a site should know before it deploys the rule.
const SOMETIMES_ABSENT: &[(&str, &str)] = &[
    (
        "groups_direct",
        "GitLab sends it only when the instance enables the ci_jwt_groups_direct feature flag, and never for members of more than 200 groups",
    ),
    (
        "environment",
        "only jobs that declare `environment:` have it",
    ),
    (
        "environment_protected",
        "only jobs that declare `environment:` have it",
    ),
    (
        "environment_action",
        "only jobs that declare `environment:` have it",
    ),
    (
        "deployment_tier",
        "only jobs that declare `environment:` have it",
    ),
    ("job_project_path", "GitLab sends it only from 18.3 on"),
    ("job_project_id", "GitLab sends it only from 18.3 on"),
    (
        "user_identities",
        "GitLab sends it only when the job asks for it",
    ),
];

/// What each deny rule depends on that a token or a login may lack, and what it then does:
/// with `if_absent = "deny"` (the default) a token without the claim is refused; a deny
/// rule's `from` holds for logins without an address (su, sshd with UseDNS yes).
fn deny_rule_dependencies(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for rule in c.rules.iter().filter(|r| r.deny) {
        let mut claims: Vec<&str> = Vec::new();
        if rule.groups.is_some() {
            claims.push(idtoken_core::policy::GROUPS_CLAIM);
        }
        claims.extend(rule.claims.iter().map(|(n, _)| n.as_str()));
        for claim in claims {
            let sometimes = SOMETIMES_ABSENT
                .iter()
                .find(|(n, _)| *n == claim)
                .map(|(_, why)| format!(" ({why})"))
                .unwrap_or_default();
            out.push(match rule.if_absent {
                IfAbsent::Deny => format!(
                    "deny rule {:?} depends on claim {claim}{sometimes}: a token without it is \
                     refused (if_absent = \"deny\"; set if_absent = \"skip\" where absence means \
                     the rule does not apply)",
                    rule.name
                ),
                IfAbsent::Skip => format!(
                    "deny rule {:?} depends on claim {claim}{sometimes}: a token without it is \
                     not refused by this rule (if_absent = \"skip\")",
                    rule.name
                ),
            });
        }
        if rule.from.is_some() {
            out.push(format!(
                "deny rule {:?} has `from`: it also refuses logins without a remote address \
                 (su, the console) or with a host name (sshd with UseDNS yes); give it \
                 services = [\"sshd\"] if it is about ssh only",
                rule.name
            ));
        }
    }
    out
}

/// `PATH: valid (N issuers, M rules)`: what `config check` and `doctor` say of a good config.
pub fn summary(path: &Path, c: &Config) -> String {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    format!(
        "{}: valid ({} issuer{}, {} rule{})",
        path.display(),
        c.issuers.len(),
        plural(c.issuers.len()),
        c.rules.len(),
        plural(c.rules.len())
    )
}
