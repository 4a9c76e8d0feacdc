//! Local accounts and groups, through NSS in production and a table in tests.

/// What the decision needs to know about a local account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The account database. Small on purpose, so tests can fake it.
pub trait AccountSource {
    fn account(&self, name: &str) -> Option<Account>;
    /// The names of every group the account is in, its primary group included.
    fn group_names(&self, account: &Account) -> Vec<String>;
}

/// The system's NSS (files, sssd, LDAP, ...), through `uzers`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Nss;

impl AccountSource for Nss {
    fn account(&self, name: &str) -> Option<Account> {
        let u = uzers::get_user_by_name(name)?;
        Some(Account {
            name: name.to_string(),
            uid: u.uid(),
            gid: u.primary_group_id(),
        })
    }

    fn group_names(&self, account: &Account) -> Vec<String> {
        // getgrouplist(3): what initgroups would give the session, primary group included,
        // and it works with sssd/LDAP where group enumeration is off.
        uzers::get_user_groups(&account.name, account.gid)
            .unwrap_or_default()
            .iter()
            .filter_map(|g| g.name().to_str().map(str::to_string))
            .collect()
    }
}
