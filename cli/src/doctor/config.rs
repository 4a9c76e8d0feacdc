//! Doctor: the config itself — loads, validates and is safely owned (what `config check`
//! says), names at least one issuer and rule, and has a rule for the service checked.

use std::path::Path;

use idtoken_core::config::{Config, ConfigError};
use idtoken_core::glob;

use super::Check;

pub fn invalid(path: &Path, e: &ConfigError) -> Check {
    let fix = match e {
        ConfigError::File(_) => {
            "fix the file as the message says; the module refuses every token until then"
                .to_string()
        }
        ConfigError::Invalid { .. } => format!(
            "correct each line named, then re-check with `idtoken config check --config {}`",
            path.display()
        ),
    };
    Check::fail("config", e.to_string().replace('\n', "; "), fix)
}

pub fn checks(path: &Path, c: &Config, service: &str) -> Vec<Check> {
    let counts = crate::config_check::summary(path, c);
    let first = if c.issuers.is_empty() {
        Check::fail(
            "config",
            format!("{counts}: no [[issuer]], so every token is refused"),
            "add an [[issuer]] (see idtoken.toml(5)), then run `idtoken refresh`",
        )
    } else if c.rules.is_empty() {
        Check::fail(
            "config",
            format!("{counts}: no [[rule]], so every token is refused"),
            "add a [[rule]] saying who may log in as whom (see idtoken.toml(5))",
        )
    } else {
        Check::ok("config", counts)
    };
    // Only a granting rule covers a service: deny rules alone let no token in.
    let covering: Vec<&str> = c
        .rules
        .iter()
        .filter(|r| !r.deny && glob::any_matches(&r.services, service))
        .map(|r| r.name.as_str())
        .collect();
    let service_check = if covering.is_empty() {
        Check::fail(
            "config.service",
            format!(
                "no granting rule applies to PAM service {service:?} (rules without `services` \
                 apply to [defaults] services = {:?}; deny rules grant nothing): the module steps \
                 aside there without prompting",
                c.defaults.services
            ),
            format!("add \"{service}\" to `services` in [defaults] or in the rules meant for it"),
        )
    } else {
        Check::ok(
            "config.service",
            format!(
                "PAM service {service:?} is covered by rule{} {}",
                if covering.len() == 1 { "" } else { "s" },
                covering.join(", ")
            ),
        )
    };
    let mut out = vec![first, service_check];
    if !c.warnings.is_empty() {
        let lines: Vec<String> = c
            .warnings
            .iter()
            .map(|w| match w.line {
                Some(l) => format!("line {l}: {}", w.message),
                None => w.message.clone(),
            })
            .collect();
        out.push(Check::warn(
            "config.warnings",
            lines.join("; "),
            format!(
                "change the rules as each warning says; `idtoken config check --config {}` lists them",
                path.display()
            ),
        ));
    }
    out
}
