//! Doctor: each issuer's key cache is present, usable and fresh — `idtoken status`'s own
//! findings ([`CacheStatus`]), so doctor, status and the login path agree.

use idtoken_core::config::Config;

use super::Check;
use crate::status::CacheStatus;
use crate::token_input;

pub fn checks(c: &Config) -> Vec<Check> {
    let now = token_input::now();
    c.issuers
        .iter()
        .map(|issuer| {
            let s = CacheStatus::of(issuer, &c.defaults, now);
            let name = format!("key_cache.{}", issuer.name);
            let refresh = format!("run `idtoken refresh --issuer {}`", issuer.name);
            let problems: Vec<String> = s.problems().map(|(_, m)| m.to_string()).collect();
            if problems.is_empty() {
                Check::ok(
                    name,
                    format!(
                        "{}: {} usable key{}, written {}s ago",
                        issuer.jwks_cache.display(),
                        s.usable_keys(),
                        if s.usable_keys() == 1 { "" } else { "s" },
                        s.age().unwrap_or(0)
                    ),
                )
            } else if s.usable() {
                // Only stale: tokens still log in, but key rotation will not be seen.
                Check::warn(
                    name,
                    problems.join("; "),
                    format!(
                        "{refresh}; then find why the timer did not (`systemctl status \
                         idtoken-refresh.timer`, `journalctl -u idtoken-refresh.service`)"
                    ),
                )
            } else {
                let missing = s.problems().any(|(code, _)| code == "missing");
                let fix = if missing {
                    format!("{refresh} (it writes the cache); every token of this issuer is refused until then")
                } else {
                    format!("do what the message says, then {refresh}")
                };
                Check::fail(name, problems.join("; "), fix)
            }
        })
        .collect()
}
