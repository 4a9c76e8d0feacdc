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
    /// Whether the group called `group` lists the account by its own entry: it is the
    /// account's primary group, or names the account among its members. One lookup of one
    /// group, so the usual `local_groups` check costs no `group_names`. `false` proves
    /// nothing: memberships NSS knows only from the account's side (nested groups in sssd
    /// or LDAP, member lists left out of group entries) are found by `group_names`.
    fn listed_in(&self, account: &Account, group: &str) -> bool;
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

    fn listed_in(&self, account: &Account, group: &str) -> bool {
        use uzers::os::unix::GroupExt;
        // getgrnam(3): the group's own entry. Exact names only: a member list entry is a
        // user name, compared byte for byte.
        uzers::get_group_by_name(group).is_some_and(|g| {
            g.gid() == account.gid
                || g.members()
                    .iter()
                    .any(|m| m.as_encoded_bytes() == account.name.as_bytes())
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
