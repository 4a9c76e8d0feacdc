//! Local accounts and groups: the interface the decision reads them through. The host's
//! NSS implements it in the `idtoken-nss` crate (FFI, kept out of this crate); tests use
//! a table.

use std::fmt;

/// What the decision needs to know about a local account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// An account or group lookup that could not be answered (the directory behind NSS cannot
/// be reached), as opposed to "no such entry". Its text names the lookup and the error,
/// e.g. `getpwnam_r("alice") failed: Connection refused (os error 111)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError(String);

impl LookupError {
    pub fn new(what: impl Into<String>) -> LookupError {
        LookupError(what.into())
    }
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The account database. Small on purpose, so tests can fake it. Every method tells "not
/// there" (`Ok(None)`, `Ok(false)`) from "could not look" (`Err`): the decision refuses the
/// first and is unavailable on the second.
pub trait AccountSource {
    fn account(&self, name: &str) -> Result<Option<Account>, LookupError>;
    /// Whether the group called `group` lists the account by its own entry: it is the
    /// account's primary group, or names the account among its members. One lookup of one
    /// group, so the usual `local_groups` check costs no `group_names`. `false` proves
    /// nothing: memberships NSS knows only from the account's side (nested groups in sssd
    /// or LDAP, member lists left out of group entries) are found by `group_names`.
    fn listed_in(&self, account: &Account, group: &str) -> Result<bool, LookupError>;
    /// The names of every group the account is in, its primary group included.
    fn group_names(&self, account: &Account) -> Result<Vec<String>, LookupError>;
}
