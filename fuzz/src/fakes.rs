//! In-memory stand-ins for the key caches, the user map, NSS and the use ledger. They are
//! deterministic functions of their input, so every fuzz input replays the same way.

use std::sync::OnceLock;

use idtoken_core::accounts::{Account, AccountSource};
use idtoken_core::config::Issuer;
use idtoken_core::jwks::{self, KeySet};
use idtoken_core::keystore::{DataProblem, IssuerData};
use idtoken_core::usermap::{self, UserMap};
use idtoken_core::uses::{TokenId, UseLedger};

/// Key sets by issuer url, parsed by the core's own JWKS parser from the fixture keys.
pub struct Issuers {
    keys: Vec<(String, KeySet)>,
    map: UserMap,
}

pub fn issuer_data() -> &'static Issuers {
    static DATA: OnceLock<Issuers> = OnceLock::new();
    DATA.get_or_init(|| {
        let keys = crate::fixtures::jwks_documents()
            .iter()
            .map(|(url, doc)| match jwks::parse(doc.to_string().as_bytes()) {
                Ok(set) if !set.keys.is_empty() => (url.to_string(), set),
                other => panic!("fixture JWKS for {url} unusable: {other:?}"),
            })
            .collect();
        let map = match usermap::parse(crate::fixtures::USER_MAP.as_bytes()) {
            Ok(m) => m,
            Err(e) => panic!("harness user map: {e}"),
        };
        Issuers { keys, map }
    })
}

/// Why the harness has no key cache for an issuer (a fuzzed config may name any url).
pub const NO_KEYS: &str = "the fuzz harness has no key cache for this issuer";

impl IssuerData for Issuers {
    fn keys(&self, issuer: &Issuer) -> Result<KeySet, DataProblem> {
        self.keys
            .iter()
            .find(|(url, _)| *url == issuer.url)
            .map(|(_, set)| set.clone())
            .ok_or_else(|| DataProblem::Invalid {
                path: issuer.jwks_cache.display().to_string(),
                why: NO_KEYS.to_string(),
            })
    }

    fn user_map(&self, issuer: &Issuer) -> Result<Option<UserMap>, DataProblem> {
        Ok(issuer.user_map.as_ref().map(|_| self.map.clone()))
    }
}

/// The local accounts: (name, uid, groups).
pub const ACCOUNTS: &[(&str, u32, &[&str])] = &[
    ("alice", 1001, &["alice", "hpc-ci"]),
    ("bob", 1002, &["bob"]),
    ("carol2", 1003, &["carol2", "hpc-ci"]),
    ("svc-deploy", 2000, &["svc-deploy", "deploy-ops"]),
    ("admin", 1500, &["admin", "hpc-ci"]),
    ("root", 0, &["root"]),
    ("daemon", 1, &["daemon", "hpc-ci"]),
];

pub struct Accounts;

impl AccountSource for Accounts {
    fn account(&self, name: &str) -> Option<Account> {
        ACCOUNTS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(n, uid, _)| Account {
                name: n.to_string(),
                uid: *uid,
                gid: *uid,
            })
    }

    fn listed_in(&self, account: &Account, group: &str) -> bool {
        groups_of(&account.name).contains(&group)
    }

    fn group_names(&self, account: &Account) -> Vec<String> {
        groups_of(&account.name)
            .iter()
            .map(|g| g.to_string())
            .collect()
    }
}

pub fn groups_of(name: &str) -> &'static [&'static str] {
    ACCOUNTS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map_or(&[], |(_, _, g)| g)
}

/// A stateless ledger: a token whose (iss, jti) digest starts with `0` has used up its
/// max_uses, one starting with `ff` makes the ledger fail; any other has never been used.
pub struct Ledger;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerAnswer {
    Fresh,
    UsedUp,
    Broken,
}

pub fn ledger_answer(id: &TokenId) -> LedgerAnswer {
    if id.digest.starts_with("ff") {
        LedgerAnswer::Broken
    } else if id.digest.starts_with('0') {
        LedgerAnswer::UsedUp
    } else {
        LedgerAnswer::Fresh
    }
}

impl UseLedger for Ledger {
    fn count(&self, token: &TokenId, max: u32) -> Result<u32, String> {
        match ledger_answer(token) {
            LedgerAnswer::Fresh => Ok(0),
            LedgerAnswer::UsedUp => Ok(max),
            LedgerAnswer::Broken => Err("fuzz ledger: broken".to_string()),
        }
    }

    fn record(&self, token: &TokenId, _max: u32, _now: i64) -> Result<bool, String> {
        match ledger_answer(token) {
            LedgerAnswer::Fresh => Ok(true),
            LedgerAnswer::UsedUp => Ok(false),
            LedgerAnswer::Broken => Err("fuzz ledger: broken".to_string()),
        }
    }
}
