//! Doctor: every `login_as` account and every exact `local_groups` group the rules name
//! exists in NSS, and each `login_as` uid passes `min_uid` — so a typo is found here, not
//! by a failing job.

use idtoken_core::accounts::AccountSource;
use idtoken_core::config::Config;
use idtoken_core::glob;
use idtoken_nss::Nss;

use super::Check;

pub fn checks(c: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let min_uid = c.defaults.min_uid;
    for rule in &c.rules {
        if let Some(name) = &rule.login_as {
            let check = format!("login_as.{name}");
            out.push(match Nss.account(name) {
                Err(e) => Check::fail(
                    check,
                    format!(
                        "rule {:?}: login_as account {name:?} cannot be looked up: {e}; \
                         every login by this rule is unavailable until NSS answers",
                        rule.name
                    ),
                    "start the directory client (sssd: `systemctl status sssd`, `sssctl \
                     domain-status`) or correct /etc/nsswitch.conf"
                        .to_string(),
                ),
                Ok(None) => Check::fail(
                    check,
                    format!(
                        "rule {:?}: login_as account {name:?} does not exist (NSS: getpwnam); \
                         every login by this rule is refused",
                        rule.name
                    ),
                    format!(
                        "create the account {name:?}, or correct `login_as` in rule {:?} \
                         (with sssd/LDAP: check `getent passwd {name}` works on this host)",
                        rule.name
                    ),
                ),
                Ok(Some(a)) if a.uid < min_uid => Check::fail(
                    check,
                    format!(
                        "rule {:?}: login_as account {name:?} has uid {}, below min_uid {min_uid}; \
                         every login by this rule is refused",
                        rule.name, a.uid
                    ),
                    format!(
                        "log in as an account with uid >= {min_uid}, or lower `min_uid` in \
                         [defaults] if this account is meant for it"
                    ),
                ),
                Ok(Some(a)) => Check::ok(
                    check,
                    format!(
                        "rule {:?}: account {name:?} exists (uid {})",
                        rule.name, a.uid
                    ),
                ),
            });
        }
        for group in rule.local_groups.iter().flatten() {
            // A glob is matched against the account's groups at login; only an exact name
            // can be a typo of a group that exists.
            if !glob::is_literal(group) {
                continue;
            }
            let check = format!("local_group.{group}");
            out.push(match idtoken_nss::getgrnam(group) {
                Err(e) => Check::fail(
                    check,
                    format!(
                        "rule {:?}: local_groups group {group:?} cannot be looked up: {e}; \
                         logins by this rule are unavailable until NSS answers",
                        rule.name
                    ),
                    "start the directory client (sssd: `systemctl status sssd`, `sssctl \
                     domain-status`) or correct /etc/nsswitch.conf"
                        .to_string(),
                ),
                Ok(None) => Check::fail(
                    check,
                    format!(
                        "rule {:?}: local_groups names group {group:?}, which does not exist \
                         (NSS: getgrnam); the rule can never grant a login",
                        rule.name
                    ),
                    format!(
                        "correct the group name in rule {:?}, or create the group \
                         (`getent group {group}` must find it)",
                        rule.name
                    ),
                ),
                Ok(Some(g)) => Check::ok(
                    check,
                    format!(
                        "rule {:?}: group {group:?} exists (gid {})",
                        rule.name, g.gid
                    ),
                ),
            });
        }
    }
    if out.is_empty() {
        out.push(Check::ok(
            "accounts",
            "no rule names a login_as account or an exact local_groups group",
        ));
    }
    out
}
