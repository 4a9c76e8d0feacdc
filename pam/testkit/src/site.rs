//! The standard test site: its accounts (the ones the end-to-end tests put in /etc), its
//! config (tests/fixtures/bench/idtoken.toml: the shipped example's defaults and three
//! rules, the matching one limited to group hpc-ci), its key cache and token, and the two
//! measurements every benchmark is a ratio to: the raw signature check and the decision in
//! memory. pam/core/benches and tests/benches measure exactly this same work.

use std::path::Path;

use idtoken_core::config::Config;
use idtoken_core::decision::{self, Decision, Env, Request, UseMode};
use idtoken_core::session_record::NoSessions;
use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::fakes::{AccountTable, Ledger, MemoryKeys, TestAccount, key_set};
use crate::keys::{self, Key, NOW, with};

/// The test users: each has a primary group of its name and id; carol is in hpc-ci too.
pub const USERS: &[TestAccount] = &[
    TestAccount::listed("alice", 2001, &["alice"]),
    TestAccount::listed("bob", 2002, &["bob"]),
    TestAccount::listed("svc-deploy", 2003, &["svc-deploy"]),
    TestAccount::listed("carol", 2004, &["carol", HPC_CI_GROUP.0]),
    TestAccount::listed("runner", 2005, &["runner"]),
    TestAccount::listed("lowuid", 999, &["lowuid"]),
];
/// The one group beyond the primary ones: (name, gid).
pub const HPC_CI_GROUP: (&str, u32) = ("hpc-ci", 2100);

/// The account the standard token logs in as: a test user (uid 2004) in `hpc-ci`.
pub const ACCOUNT: &str = "carol";
pub const SERVICE: &str = "sshd";

/// The site config; `{STATE}` and `{CACHE}` stand for the state and key cache paths.
pub const CONFIG: &str = include_str!("../../../tests/fixtures/bench/idtoken.toml");

/// The site config for a key cache and state directory.
pub fn config_text(cache: &Path, state: &Path) -> String {
    CONFIG
        .replace("{STATE}", &state.display().to_string())
        .replace("{CACHE}", &cache.display().to_string())
}

/// The key cache: the issuer's current key (A) and a 4096-bit one being rotated in.
pub const CACHE_KEYS: [Key; 2] = [Key::Rsa4096, Key::A];

pub fn key_cache_json() -> String {
    keys::jwks(&CACHE_KEYS).to_string()
}

/// A GitLab-shaped token (about 1.1 KB) for [`ACCOUNT`], issued at `now`, valid for a day.
pub fn token(now: i64) -> String {
    let c = keys::gitlab_claims(ACCOUNT);
    let c = with(c, "iat", json!(now));
    let c = with(c, "nbf", json!(now - 5));
    let c = with(c, "exp", json!(now + 86_000));
    keys::mint(&c)
}

/// The signature check alone, as the core makes it (ring, pam/core/src/signature.rs) with
/// a key parsed once: the unavoidable cost every other figure is a ratio to.
pub struct RawVerify {
    key: idtoken_core::signature::PublicKey,
    signing_input: String,
    signature: Vec<u8>,
}

impl RawVerify {
    pub fn new() -> RawVerify {
        let t = token(NOW);
        let (input, sig) = t.rsplit_once('.').unwrap();
        let jwks = serde_json::json!({"keys": [Key::A.jwk()]}).to_string();
        let set = idtoken_core::jwks::parse(jwks.as_bytes()).unwrap();
        RawVerify {
            key: set.keys[0].key.clone(),
            signing_input: input.to_string(),
            signature: base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                sig,
            )
            .unwrap(),
        }
    }

    pub fn run(&self) -> bool {
        idtoken_core::signature::verifies(
            Algorithm::RS256,
            &self.key,
            self.signing_input.as_bytes(),
            &self.signature,
        )
    }
}

impl Default for RawVerify {
    fn default() -> Self {
        RawVerify::new()
    }
}

/// The core decision for the standard token: config parsed and keys in memory beforehand,
/// accounts from [`USERS`], no file, NSS or syslog.
pub struct Decide {
    pub config: Config,
    keys: MemoryKeys,
    accounts: AccountTable,
    ledger: Ledger,
    pub token: String,
}

impl Decide {
    pub fn new() -> Decide {
        let text = config_text(Path::new("/nonexistent/cache"), Path::new("/nonexistent"));
        Decide {
            config: Config::parse(&text).unwrap(),
            keys: MemoryKeys::set(key_set(&CACHE_KEYS)),
            accounts: AccountTable::new(USERS),
            ledger: Ledger::default(),
            token: token(NOW),
        }
    }

    pub fn run(&self) -> Decision {
        let env = Env {
            config: &self.config,
            issuer_data: &self.keys,
            accounts: &self.accounts,
            uses: &self.ledger,
            sessions: &NoSessions,
        };
        decision::evaluate(
            &env,
            &Request {
                token: &self.token,
                account: ACCOUNT,
                service: SERVICE,
                rhost: Some("127.0.0.1"),
                now: NOW + 10,
                uses: UseMode::Record,
            },
        )
    }
}

impl Default for Decide {
    fn default() -> Self {
        Decide::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The standard decision allows, again and again (the site sets no max_uses), by the
    /// rule that needs group hpc-ci.
    #[test]
    fn the_standard_login_is_allowed_every_time() {
        let d = Decide::new();
        for _ in 0..3 {
            let v = d.run();
            assert!(v.allowed(), "{v:?}");
            assert_eq!(v.rule.as_deref(), Some("hpc-protected"));
        }
        assert!(RawVerify::new().run());
    }
}
