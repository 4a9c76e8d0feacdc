//! In-memory stand-ins for what `idtoken_core::decision::evaluate` reads from outside: the
//! key caches, user maps and revocation list ([`MemoryKeys`]), NSS ([`AccountTable`], and [`Recording`] to
//! see what was asked of it) and the use ledger ([`Ledger`]).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;

use idtoken_core::accounts::{Account, AccountSource, LookupError};
use idtoken_core::config::Issuer;
use idtoken_core::jwks::{self, KeySet};
use idtoken_core::keystore::{DataProblem, IssuerData};
use idtoken_core::revocations::RevocationList;
use idtoken_core::usermap::UserMap;
use idtoken_core::uses::{TokenId, UseLedger};

use crate::keys::{Key, jwks as jwks_of};

/// Why [`MemoryKeys`] has no key set for an issuer (a test or fuzzed config may name any).
pub const NO_KEYS: &str = "no key set in memory for this issuer";

/// Key sets already in memory (no file read), the user map handed to every issuer
/// whose config names a `user_map` (its path is never read), and the revocation list
/// (none unless a test gives one: [`MemoryKeys::with_revocations`]).
#[derive(Debug, Clone)]
pub struct MemoryKeys {
    /// Key sets by issuer url.
    by_url: Vec<(String, KeySet)>,
    /// What every other issuer gets; `None`: an unavailable key cache ([`NO_KEYS`]).
    others: Option<Result<KeySet, DataProblem>>,
    user_map: Option<UserMap>,
    revocations: Result<RevocationList, DataProblem>,
}

impl MemoryKeys {
    /// These keys, for every issuer.
    pub fn of(keys: &[Key]) -> MemoryKeys {
        MemoryKeys::set(key_set(keys))
    }

    /// This key set, for every issuer.
    pub fn set(set: KeySet) -> MemoryKeys {
        MemoryKeys {
            by_url: Vec::new(),
            others: Some(Ok(set)),
            user_map: None,
            revocations: Ok(RevocationList::empty()),
        }
    }

    /// A key cache that cannot be used, for every issuer.
    pub fn failing(problem: DataProblem) -> MemoryKeys {
        MemoryKeys {
            by_url: Vec::new(),
            others: Some(Err(problem)),
            user_map: None,
            revocations: Ok(RevocationList::empty()),
        }
    }

    /// Key sets by issuer url; any other issuer's key cache is unusable ([`NO_KEYS`]).
    pub fn by_issuer(by_url: Vec<(String, KeySet)>) -> MemoryKeys {
        MemoryKeys {
            by_url,
            others: None,
            user_map: None,
            revocations: Ok(RevocationList::empty()),
        }
    }

    /// The user map of every issuer that configures one.
    pub fn with_user_map(mut self, map: UserMap) -> MemoryKeys {
        self.user_map = Some(map);
        self
    }

    /// This revocation list (or this problem with it), whatever path the config names.
    pub fn with_revocations(mut self, list: Result<RevocationList, DataProblem>) -> MemoryKeys {
        self.revocations = list;
        self
    }
}

/// These keys' JWKS, parsed by the core's own parser.
pub fn key_set(keys: &[Key]) -> KeySet {
    jwks::parse(jwks_of(keys).to_string().as_bytes()).unwrap()
}

impl IssuerData for MemoryKeys {
    fn keys(&self, issuer: &Issuer) -> Result<KeySet, DataProblem> {
        if let Some((_, set)) = self.by_url.iter().find(|(url, _)| *url == issuer.url) {
            return Ok(set.clone());
        }
        match &self.others {
            Some(answer) => answer.clone(),
            None => Err(DataProblem::Invalid {
                path: issuer.jwks_cache.display().to_string(),
                why: NO_KEYS.to_string(),
            }),
        }
    }

    fn user_map(&self, issuer: &Issuer) -> Result<Option<UserMap>, DataProblem> {
        Ok(issuer.user_map.as_ref().and(self.user_map.clone()))
    }

    fn revocations(&self, _path: &Path) -> Result<RevocationList, DataProblem> {
        self.revocations.clone()
    }
}

/// A local account as NSS would show it: its uid (and a primary group of the same id), the
/// groups whose entries list it (what getgrnam shows), and the groups NSS knows only from
/// the account's side (sssd's nested groups, member lists left out of entries), which only
/// the account's group list (getgrouplist) shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestAccount {
    pub name: &'static str,
    pub uid: u32,
    pub listed_in: &'static [&'static str],
    pub nested_in: &'static [&'static str],
}

impl TestAccount {
    /// An account every group entry of which lists it.
    pub const fn listed(
        name: &'static str,
        uid: u32,
        groups: &'static [&'static str],
    ) -> TestAccount {
        TestAccount {
            name,
            uid,
            listed_in: groups,
            nested_in: &[],
        }
    }

    /// An account no group entry lists: its groups are known from its side only.
    pub const fn nested(
        name: &'static str,
        uid: u32,
        groups: &'static [&'static str],
    ) -> TestAccount {
        TestAccount {
            nested_in: groups,
            ..TestAccount::listed(name, uid, &[])
        }
    }

    /// Every group of the account, as getgrouplist gives them: the listed ones first.
    pub fn groups(&self) -> impl Iterator<Item = &'static str> + use<> {
        self.listed_in.iter().chain(self.nested_in).copied()
    }
}

/// Accounts from a table instead of NSS.
#[derive(Debug, Clone)]
pub struct AccountTable(Cow<'static, [TestAccount]>);

impl AccountTable {
    pub const fn new(accounts: &'static [TestAccount]) -> AccountTable {
        AccountTable(Cow::Borrowed(accounts))
    }

    /// The table with `account` in place of the one of the same name (or added).
    pub fn with(mut self, account: TestAccount) -> AccountTable {
        let rows = self.0.to_mut();
        rows.retain(|a| a.name != account.name);
        rows.push(account);
        self
    }

    pub fn get(&self, name: &str) -> Option<&TestAccount> {
        self.0.iter().find(|a| a.name == name)
    }
}

impl AccountSource for AccountTable {
    fn account(&self, name: &str) -> Result<Option<Account>, LookupError> {
        Ok(self.get(name).map(|a| Account {
            name: a.name.to_string(),
            uid: a.uid,
            gid: a.uid,
        }))
    }

    fn listed_in(&self, account: &Account, group: &str) -> Result<bool, LookupError> {
        Ok(self
            .get(&account.name)
            .is_some_and(|a| a.listed_in.contains(&group)))
    }

    fn group_names(&self, account: &Account) -> Result<Vec<String>, LookupError> {
        Ok(self
            .get(&account.name)
            .map(|a| a.groups().map(str::to_string).collect())
            .unwrap_or_default())
    }
}

/// Any account source, recording the group entries asked about (getgrnam) and counting the
/// group lists made (getgrouplist): what the `local_groups` tests assert on.
pub struct Recording<A> {
    pub inner: A,
    asked: RefCell<Vec<String>>,
    lists: Cell<u32>,
}

impl<A: AccountSource> Recording<A> {
    pub fn new(inner: A) -> Recording<A> {
        Recording {
            inner,
            asked: RefCell::default(),
            lists: Cell::new(0),
        }
    }

    /// The groups whose entries were asked about, in order.
    pub fn asked(&self) -> Vec<String> {
        self.asked.borrow().clone()
    }

    /// How many group lists were made.
    pub fn lists(&self) -> u32 {
        self.lists.get()
    }
}

impl<A: AccountSource> AccountSource for Recording<A> {
    fn account(&self, name: &str) -> Result<Option<Account>, LookupError> {
        self.inner.account(name)
    }

    fn listed_in(&self, account: &Account, group: &str) -> Result<bool, LookupError> {
        self.asked.borrow_mut().push(group.to_string());
        self.inner.listed_in(account, group)
    }

    fn group_names(&self, account: &Account) -> Result<Vec<String>, LookupError> {
        self.lists.set(self.lists.get() + 1);
        self.inner.group_names(account)
    }
}

/// What [`Ledger::by_digest`] answers for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerAnswer {
    Fresh,
    UsedUp,
    Broken,
}

/// The rule of [`Ledger::by_digest`]: a token whose (iss, jti) digest starts with `ff` makes
/// the ledger fail, one starting with `0` has used up its max_uses, any other is unused.
pub fn ledger_answer(id: &TokenId) -> LedgerAnswer {
    if id.digest.starts_with("ff") {
        LedgerAnswer::Broken
    } else if id.digest.starts_with('0') {
        LedgerAnswer::UsedUp
    } else {
        LedgerAnswer::Fresh
    }
}

/// The use ledger in memory: counting (the default), or a stateless rule of the token's
/// digest ([`ledger_answer`]), so that every fuzz input decides the same however many ran
/// before it and the reference decision can predict the answer.
#[derive(Debug)]
pub enum Ledger {
    Counting(RefCell<HashMap<String, u32>>),
    ByDigest,
}

impl Default for Ledger {
    fn default() -> Ledger {
        Ledger::Counting(RefCell::default())
    }
}

impl Ledger {
    pub fn by_digest() -> Ledger {
        Ledger::ByDigest
    }
}

impl UseLedger for Ledger {
    fn count(&self, token: &TokenId, max: u32) -> Result<u32, String> {
        match self {
            Ledger::Counting(uses) => {
                Ok((*uses.borrow().get(&token.digest).unwrap_or(&0)).min(max))
            }
            Ledger::ByDigest => match ledger_answer(token) {
                LedgerAnswer::Fresh => Ok(0),
                LedgerAnswer::UsedUp => Ok(max),
                LedgerAnswer::Broken => Err("test ledger: broken".to_string()),
            },
        }
    }

    fn record(&self, token: &TokenId, max: u32, _now: i64) -> Result<bool, String> {
        match self {
            Ledger::Counting(uses) => {
                let mut uses = uses.borrow_mut();
                let n = uses.entry(token.digest.clone()).or_insert(0);
                if *n >= max {
                    return Ok(false);
                }
                *n += 1;
                Ok(true)
            }
            Ledger::ByDigest => match ledger_answer(token) {
                LedgerAnswer::Fresh => Ok(true),
                LedgerAnswer::UsedUp => Ok(false),
                LedgerAnswer::Broken => Err("test ledger: broken".to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idtoken_core::config::Config;
    use idtoken_core::usermap;

    /// Keys by url, the unusable cache of an unknown issuer, and the user map handed only to
    /// an issuer that configures one (as the disk-backed store would read only its file).
    #[test]
    fn memory_keys_answer_by_issuer_and_map_users_only_where_configured() {
        let cfg = Config::parse(
            "[[issuer]]\nname = \"mapped\"\nurl = \"https://a.example\"\naudiences = [\"x\"]\n\
             user_map = \"/nonexistent/map\"\n\n\
             [[issuer]]\nname = \"plain\"\nurl = \"https://b.example\"\naudiences = [\"x\"]\n",
        )
        .unwrap();
        let (mapped, plain) = (&cfg.issuers[0], &cfg.issuers[1]);
        let map = usermap::parse(b"alice bob\n").unwrap();
        let keys = MemoryKeys::by_issuer(vec![("https://a.example".into(), key_set(&[Key::A]))])
            .with_user_map(map.clone());
        assert_eq!(keys.keys(mapped).unwrap().keys.len(), 1);
        let unknown = keys.keys(plain);
        assert!(
            matches!(&unknown, Err(DataProblem::Invalid { why, .. }) if why == NO_KEYS),
            "{unknown:?}"
        );
        assert_eq!(keys.user_map(mapped).unwrap(), Some(map));
        assert_eq!(keys.user_map(plain).unwrap(), None);
    }

    /// getgrnam sees the listed memberships only; getgrouplist sees both kinds, listed first.
    #[test]
    fn account_table_separates_listed_and_nested_groups() {
        const ONE: &[TestAccount] = &[TestAccount::listed("a", 1001, &["a"])];
        let table = AccountTable::new(ONE).with(TestAccount {
            name: "a",
            uid: 1002,
            listed_in: &["a"],
            nested_in: &["deep"],
        });
        let a = table.account("a").unwrap().unwrap();
        assert_eq!((a.uid, a.gid), (1002, 1002), "with() replaces by name");
        assert!(table.listed_in(&a, "a").unwrap());
        assert!(!table.listed_in(&a, "deep").unwrap());
        assert_eq!(table.group_names(&a).unwrap(), ["a", "deep"]);
        assert!(table.account("b").unwrap().is_none());
    }
}
