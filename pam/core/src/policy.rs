//! The site's rules: which verified tokens may log in, and as which account.
//!
//! A rule first matches the token (issuer, services, users, groups, claims); a matching
//! rule then grants one account (`login_as`, or the user claim through `user_map`), and
//! `local_groups` finally asks NSS whether that account is in one of the listed groups.
//! Every step says why it failed, for the decision trace.

use serde_json::{Map, Value};

use crate::claims::{lookup, match_texts};
use crate::config::{IfAbsent, Issuer, Rule};
use crate::glob;
use crate::net::{self, Network, RhostMatch};
use crate::sanitize::clean;
use crate::usermap::UserMap;

/// What the rules look at in a verified token.
#[derive(Debug, Clone, Copy)]
pub struct TokenFacts<'a> {
    pub issuer: &'a Issuer,
    pub claims: &'a Map<String, Value>,
    /// The issuer's user claim, already known to be a string.
    pub user: &'a str,
    pub service: &'a str,
    /// PAM_RHOST, as the application set it (sshd: the client's address, or with `UseDNS
    /// yes` a host name; su: none).
    pub rhost: Option<&'a str>,
    /// The local account as typed and, when NSS was asked, as NSS names it: a deny rule's
    /// `users` holds for these too, so another spelling of a denied account is still it.
    pub account_names: &'a [&'a str],
}

/// The groups claim GitLab sends, when it sends it.
pub const GROUPS_CLAIM: &str = "groups_direct";

/// Whether the rule can ever apply to logins through this PAM service.
pub fn applies_to_service(rule: &Rule, service: &str) -> bool {
    glob::any_matches(&rule.services, service)
}

/// Whether any granting rule can ever apply to this PAM service. The module asks this
/// before prompting: where none can, no token could log in, so it steps aside without a
/// prompt (deny rules alone cannot make a login).
pub fn may_grant_for_service(rules: &[Rule], service: &str) -> bool {
    rules
        .iter()
        .any(|r| !r.deny && applies_to_service(r, service))
}

/// How one condition came out. `Unknown` is a condition that cannot be evaluated: the claim
/// is absent (or not a value a glob can read), the remote host is absent or not an address.
enum Outcome {
    Holds,
    Fails(String),
    Unknown(String),
}

/// Checks the rule's token conditions in a fixed order; the error is the first that fails.
/// A condition that cannot be evaluated fails a granting rule, and holds in a deny rule (a
/// deny fails closed, SPEC v3) unless the rule says `if_absent = "skip"` for absent claims.
/// On success, the conditions of a deny rule that held only because they could not be
/// evaluated, for the trace.
pub fn token_conditions(rule: &Rule, t: &TokenFacts) -> Result<Vec<String>, String> {
    let mut unknown = Vec::new();
    let mut judge = |outcome: Outcome, absence_of_claim: bool| match outcome {
        Outcome::Holds => Ok(()),
        Outcome::Fails(why) => Err(why),
        Outcome::Unknown(why) if !rule.deny => Err(why),
        Outcome::Unknown(why) if absence_of_claim && rule.if_absent == IfAbsent::Skip => Err(
            format!("{why}; the deny rule is skipped (if_absent = \"skip\")"),
        ),
        Outcome::Unknown(why) => {
            unknown.push(why);
            Ok(())
        }
    };
    if let Some(want) = &rule.issuer
        && *want != t.issuer.name
    {
        return Err(format!(
            "issuer: token is from issuer {:?}, rule wants {want:?}",
            t.issuer.name
        ));
    }
    if !glob::any_matches(&rule.services, t.service) {
        return Err(format!(
            "services: PAM service {:?} matches none of {:?}",
            clean(t.service),
            rule.services
        ));
    }
    if let Some(users) = &rule.users {
        judge(users_condition(rule, users, t), false)?;
    }
    if let Some(networks) = &rule.from {
        judge(from_condition(networks, t.rhost), false)?;
    }
    if let Some(groups) = &rule.groups {
        judge(groups_condition(groups, t.claims.get(GROUPS_CLAIM)), true)?;
    }
    for (name, globs) in &rule.claims {
        judge(claim_condition(name, globs, lookup(t.claims, name)), true)?;
    }
    Ok(unknown)
}

/// `users`: globs over the user claim; in a deny rule also over the account's names.
fn users_condition(rule: &Rule, users: &[String], t: &TokenFacts) -> Outcome {
    if glob::any_matches(users, t.user) {
        return Outcome::Holds;
    }
    // A deny written for an account holds for every spelling NSS resolves to it.
    if rule.deny && t.account_names.iter().any(|n| glob::any_matches(users, n)) {
        return Outcome::Holds;
    }
    let also = if rule.deny && !t.account_names.is_empty() {
        let names: Vec<String> = t.account_names.iter().map(|n| clean(n)).collect();
        format!(" (nor do the account names {names:?})")
    } else {
        String::new()
    };
    Outcome::Fails(format!(
        "users: {} {:?} matches none of {users:?}{also}",
        t.issuer.user_claim,
        clean(t.user)
    ))
}

fn from_condition(networks: &[Network], rhost: Option<&str>) -> Outcome {
    let shown: Vec<String> = networks.iter().map(ToString::to_string).collect();
    match (net::rhost_match(networks, rhost), rhost) {
        (RhostMatch::Inside, _) => Outcome::Holds,
        (RhostMatch::Outside, h) => Outcome::Fails(format!(
            "from: remote host {:?} is not an address inside {shown:?}",
            clean(h.unwrap_or_default())
        )),
        (RhostMatch::Unknown, None) => Outcome::Unknown(format!(
            "from: no remote host (PAM_RHOST unset), and the rule wants {shown:?}"
        )),
        (RhostMatch::Unknown, Some(h)) => Outcome::Unknown(format!(
            "from: remote host {:?} is not an IP address (sshd's UseDNS yes sets names), and \
             the rule wants {shown:?}",
            clean(h)
        )),
    }
}

fn groups_condition(globs: &[String], claim: Option<&Value>) -> Outcome {
    let Some(claim) = claim else {
        return Outcome::Unknown(format!(
            "groups: token has no {GROUPS_CLAIM} claim (GitLab sends it only when the instance \
             enables it, and never above 200 groups)"
        ));
    };
    let Value::Array(items) = claim else {
        return Outcome::Unknown(format!("groups: {GROUPS_CLAIM} is not a list"));
    };
    let texts = match_texts(claim);
    if texts.iter().any(|g| glob::any_matches(globs, g)) {
        Outcome::Holds
    } else {
        Outcome::Fails(format!(
            "groups: none of the token's {} {GROUPS_CLAIM} entries matches {globs:?}",
            items.len()
        ))
    }
}

fn claim_condition(name: &str, globs: &[String], claim: Option<&Value>) -> Outcome {
    let Some(claim) = claim else {
        return Outcome::Unknown(format!("claims.{name}: token has no {name} claim"));
    };
    let texts = match_texts(claim);
    if texts.iter().any(|v| glob::any_matches(globs, v)) {
        return Outcome::Holds;
    }
    // A value no glob can read (null, an object) says nothing about what the rule tests;
    // an empty list is a real answer (none of the values).
    let unreadable = texts.is_empty() && !matches!(claim, Value::Array(a) if a.is_empty());
    let why = format!(
        "claims.{name}: {} matches none of {globs:?}",
        clean(&crate::claims::display_text(claim))
    );
    if unreadable {
        Outcome::Unknown(format!("{why} (not a string, number or boolean)"))
    } else {
        Outcome::Fails(why)
    }
}

/// The account a matching rule grants: `login_as`, else the user claim translated through
/// the issuer's user map (when it has one; an unmapped user then gets no default grant).
pub fn grant(rule: &Rule, user: &str, map: Option<&UserMap>) -> Result<String, String> {
    if let Some(account) = &rule.login_as {
        return Ok(account.clone());
    }
    match map {
        None => Ok(user.to_string()),
        Some(map) => map.get(user).map(str::to_string).ok_or_else(|| {
            format!(
                "grant: {:?} is not in the issuer's user_map, so no default grant",
                clean(user)
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn setup(rule: &str) -> (Config, Map<String, Value>) {
        // With two issuers every rule names one (SPEC v2); tests that are about it say so.
        let rule = if rule.contains("issuer =") {
            rule.to_string()
        } else {
            format!("issuer = \"gitlab\"\n{rule}")
        };
        let text = format!(
            "[[issuer]]\nname = \"gitlab\"\nurl = \"https://g\"\naudiences = [\"a\"]\n\
             [[issuer]]\nname = \"other\"\nurl = \"https://o\"\naudiences = [\"a\"]\n[[rule]]\nname = \"r\"\n{rule}"
        );
        let c = Config::parse(&text).unwrap();
        let claims = json!({
            "user_login": "alice", "project_path": "hpc/app", "ref_protected": "true",
            "runner_id": 42, "flag": true, "groups_direct": ["hpc", "hpc/ci"], "tags": ["x", "y"]
        });
        (c, claims.as_object().unwrap().clone())
    }

    fn check(rule: &str) -> Result<(), String> {
        let (c, claims) = setup(rule);
        let facts = TokenFacts {
            issuer: &c.issuers[0],
            claims: &claims,
            user: "alice",
            service: "sshd",
            rhost: None,
            account_names: &[],
        };
        token_conditions(&c.rules[0], &facts).map(|_| ())
    }

    #[test]
    fn empty_rule_matches_everything() {
        assert_eq!(check(""), Ok(()));
    }

    #[test]
    fn issuer_condition() {
        assert_eq!(check("issuer = \"gitlab\""), Ok(()));
        assert!(
            check("issuer = \"other\"")
                .unwrap_err()
                .starts_with("issuer:")
        );
    }

    /// A CI token is for logins: a rule that names no services applies to sshd and su
    /// only, so a token pasted at sudo's, polkit's or a screen locker's prompt matches none.
    #[test]
    fn a_rule_without_services_is_for_sshd_and_su_only() {
        let (c, claims) = setup("");
        for (service, applies) in [
            ("sshd", true),
            ("su", true),
            ("sudo", false),
            ("polkit-1", false),
        ] {
            let facts = TokenFacts {
                issuer: &c.issuers[0],
                claims: &claims,
                user: "alice",
                service,
                rhost: None,
                account_names: &[],
            };
            assert_eq!(
                applies_to_service(&c.rules[0], service),
                applies,
                "{service}"
            );
            let r = token_conditions(&c.rules[0], &facts);
            assert_eq!(r.is_ok(), applies, "{service}: {r:?}");
            if let Err(why) = r {
                assert!(why.contains("matches none of [\"sshd\", \"su\"]"), "{why}");
            }
        }
        // A site that wants another service says so.
        let (c, _) = setup("services = [\"sshd\", \"sudo\"]");
        assert!(applies_to_service(&c.rules[0], "sudo"));
        assert!(!applies_to_service(&c.rules[0], "su"));
    }

    #[test]
    fn services_condition() {
        assert_eq!(check("services = [\"ssh*\"]"), Ok(()));
        assert!(
            check("services = [\"su\"]")
                .unwrap_err()
                .starts_with("services:")
        );
    }

    #[test]
    fn users_condition() {
        assert_eq!(check("users = [\"bob\", \"a*\"]"), Ok(()));
        assert!(
            check("users = [\"bob\"]")
                .unwrap_err()
                .starts_with("users: user_login \"alice\"")
        );
    }

    #[test]
    fn groups_condition_any_entry() {
        assert_eq!(check("groups = [\"hpc/*\"]"), Ok(()));
        assert!(
            check("groups = [\"other/*\"]")
                .unwrap_err()
                .contains("none of the token's 2")
        );
    }

    #[test]
    fn groups_absent_explains_gitlab() {
        let (c, mut claims) = setup("groups = [\"hpc\"]");
        claims.remove("groups_direct");
        let facts = TokenFacts {
            issuer: &c.issuers[0],
            claims: &claims,
            user: "alice",
            service: "sshd",
            rhost: None,
            account_names: &[],
        };
        let e = token_conditions(&c.rules[0], &facts).unwrap_err();
        assert!(
            e.contains("no groups_direct claim") && e.contains("200 groups"),
            "{e}"
        );
    }

    #[test]
    fn claims_numbers_booleans_arrays_missing() {
        assert_eq!(check("[rule.claims]\nrunner_id = \"4?\""), Ok(()));
        assert_eq!(check("[rule.claims]\nrunner_id = 42"), Ok(()));
        assert_eq!(check("[rule.claims]\nflag = \"true\""), Ok(()));
        assert_eq!(check("[rule.claims]\nflag = true"), Ok(()));
        assert_eq!(
            check("[rule.claims]\nref_protected = true"),
            Ok(()),
            "string \"true\" matches bool text"
        );
        assert_eq!(check("[rule.claims]\ntags = \"y\""), Ok(()));
        assert!(check("[rule.claims]\ntags = \"z\"").is_err());
        assert!(
            check("[rule.claims]\nnope = \"*\"")
                .unwrap_err()
                .contains("token has no nope claim")
        );
        assert!(check("[rule.claims]\nproject_path = [\"hpc/other\", \"x\"]").is_err());
        assert_eq!(
            check("[rule.claims]\nproject_path = [\"hpc/other\", \"hpc/*\"]"),
            Ok(())
        );
    }

    #[test]
    fn all_conditions_must_hold() {
        assert!(check("users = [\"alice\"]\n[rule.claims]\nref_protected = \"false\"").is_err());
    }

    #[test]
    fn grants() {
        let (c, _) = setup("login_as = \"svc\"");
        assert_eq!(grant(&c.rules[0], "alice", None), Ok("svc".to_string()));
        let (c, _) = setup("");
        assert_eq!(grant(&c.rules[0], "alice", None), Ok("alice".to_string()));
        let map = crate::usermap::parse(b"alice asmith\n").unwrap();
        assert_eq!(
            grant(&c.rules[0], "alice", Some(&map)),
            Ok("asmith".to_string())
        );
        assert!(grant(&c.rules[0], "bob", Some(&map)).is_err());
    }
}
