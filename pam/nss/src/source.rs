//! The decision core's `AccountSource` for the real host: NSS through the lookups of this
//! crate, so a directory that cannot be reached makes the decision unavailable instead of
//! refusing the login as if the account did not exist.

use idtoken_core::accounts::{Account, AccountSource, LookupError};

use crate::{NssError, getgrgid, getgrnam, getgrouplist, getpwnam};

/// The system's NSS (files, sssd, LDAP, ...).
#[derive(Debug, Default, Clone, Copy)]
pub struct Nss;

fn failed(e: NssError) -> LookupError {
    LookupError::new(e.to_string())
}

impl AccountSource for Nss {
    fn account(&self, name: &str) -> Result<Option<Account>, LookupError> {
        Ok(getpwnam(name).map_err(failed)?.map(|p| Account {
            // The name as NSS gives it (a case-insensitive directory may answer `ADMIN`
            // with `admin`): deny_users is compared with both.
            name: p.name,
            uid: p.uid,
            gid: p.gid,
        }))
    }

    fn listed_in(&self, account: &Account, group: &str) -> Result<bool, LookupError> {
        // getgrnam(3): the group's own entry. Exact names only: a member list entry is a
        // user name, compared byte for byte.
        Ok(getgrnam(group)
            .map_err(failed)?
            .is_some_and(|g| g.gid == account.gid || g.members.contains(&account.name)))
    }

    fn group_names(&self, account: &Account) -> Result<Vec<String>, LookupError> {
        // getgrouplist(3): what initgroups would give the session, primary group included,
        // and it works with sssd/LDAP where group enumeration is off. A gid NSS cannot
        // name is skipped, as before; one it fails to look up is an error.
        let mut names = Vec::new();
        for gid in getgrouplist(&account.name, account.gid).map_err(failed)? {
            if let Some(g) = getgrgid(gid).map_err(failed)? {
                names.push(g.name);
            }
        }
        Ok(names)
    }
}
