//! The host's account database through glibc's NSS, with errors kept.
//!
//! `uzers` (and `getpwnam(3)` used naively) turns every failure into "no such user". With a
//! directory behind NSS that is a lie: when sssd cannot be reached, `getpwnam_r` returns an
//! error number (ECONNREFUSED with sssd stopped), and a login refused as `account_invalid` then sends an admin looking for a missing
//! account instead of a stopped daemon. Here every lookup returns
//! `Result<Option<T>, NssError>`: `Ok(None)` is "no such entry", `Err` names the lookup,
//! the key and the errno. Buffers start small and double on ERANGE, up to a bound.
//!
//! This is the one crate of the login path with `unsafe` (the FFI calls), so the decision
//! core keeps `#![forbid(unsafe_code)]`; [`Nss`] is the core's `AccountSource` for the host.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::string_slice
    )
)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod source;

use std::ffi::{CStr, CString, c_char};
use std::fmt;

pub use source::Nss;

/// The NSS call that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Getpwnam,
    Getgrnam,
    Getgrgid,
    Getgrouplist,
}

impl Lookup {
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Getpwnam => "getpwnam_r",
            Lookup::Getgrnam => "getgrnam_r",
            Lookup::Getgrgid => "getgrgid_r",
            Lookup::Getgrouplist => "getgrouplist",
        }
    }
}

/// A lookup that failed: NSS could not answer (as opposed to answering "no such entry").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NssError {
    pub lookup: Lookup,
    /// The name or id looked up.
    pub key: String,
    pub errno: i32,
}

impl fmt::Display for NssError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The io::Error text names the errno too: "Connection refused (os error 111)".
        write!(
            f,
            "{}({}) failed: {}",
            self.lookup.as_str(),
            self.key,
            std::io::Error::from_raw_os_error(self.errno)
        )
    }
}

impl std::error::Error for NssError {}

/// A passwd entry, the parts the decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// A group entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    /// The member list as the entry gives it (sssd flattens nested groups into it).
    pub members: Vec<String>,
}

/// The first buffer for an entry's strings: enough for a files entry, a big group grows.
const FIRST_BUFFER: usize = 1024;
/// Where doubling stops: a group entry with tens of thousands of members still fits, a
/// runaway NSS module does not take the process's memory.
const MAX_BUFFER: usize = 16 * 1024 * 1024;
/// The kernel's NGROUPS_MAX: no list of groups can usefully be longer.
const MAX_GROUPS: usize = 65536;

fn error(lookup: Lookup, key: impl fmt::Display, errno: i32) -> NssError {
    NssError {
        lookup,
        key: key.to_string(),
        errno,
    }
}

/// The codes getpwnam(3) lists as "the given name or uid was not found", besides 0 with no
/// entry (what glibc itself returns): interposers return them (nss_wrapper: ENOENT). So
/// ENOENT from libnss_sss when sssd's socket was never made (sssd not started since boot)
/// reads as "not found" too; a stopped sssd's ECONNREFUSED is an error.
const NOT_FOUND: [i32; 4] = [libc::ENOENT, libc::ESRCH, libc::EBADF, libc::EPERM];

/// Calls a `get*_r` function with a buffer that doubles while it answers ERANGE. `call`
/// gets the buffer and returns the function's result code and whether it found an entry.
fn with_growing_buffer<T>(
    lookup: Lookup,
    key: &str,
    mut call: impl FnMut(&mut [c_char]) -> (i32, Option<T>),
) -> Result<Option<T>, NssError> {
    let mut size = FIRST_BUFFER;
    loop {
        let mut buf: Vec<c_char> = vec![0; size];
        match call(&mut buf) {
            (0, found) => return Ok(found),
            (libc::ERANGE, _) if size < MAX_BUFFER => size = size.saturating_mul(2),
            (errno, _) if NOT_FOUND.contains(&errno) => return Ok(None),
            // Any other code is a failure to answer (ERANGE past the bound included).
            (errno, _) => return Err(error(lookup, key, errno)),
        }
    }
}

/// A C string from NSS as Rust text; `None` if it is not UTF-8 (such a name cannot be the
/// account or group a config names).
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that lives for the call.
unsafe fn text(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated, by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().ok().map(str::to_string)
}

/// getpwnam_r(3): the account called `name`.
pub fn getpwnam(name: &str) -> Result<Option<Passwd>, NssError> {
    let Ok(cname) = CString::new(name) else {
        return Ok(None); // a name with NUL cannot be in any database
    };
    with_growing_buffer(Lookup::Getpwnam, &format!("{name:?}"), |buf| {
        // SAFETY: all-zero is a valid `struct passwd` (integers and null pointers).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: cname is NUL-terminated; pwd, buf (with its true length) and result are
        // valid for writes for the whole call.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 || result.is_null() {
            return (rc, None);
        }
        // SAFETY: on success pw_name points into buf, NUL-terminated, and buf is alive.
        let entry_name = unsafe { text(pwd.pw_name) };
        (
            0,
            entry_name.map(|n| Passwd {
                name: n,
                uid: pwd.pw_uid,
                gid: pwd.pw_gid,
            }),
        )
    })
}

/// Reads a filled `struct group` whose strings live in the caller's buffer.
///
/// # Safety
/// `grp` was filled by a successful getgr*_r call whose buffer is still alive.
unsafe fn group_of(grp: &libc::group) -> Option<Group> {
    // SAFETY: gr_name points into the live buffer, NUL-terminated (caller's contract).
    let name = unsafe { text(grp.gr_name) }?;
    let mut members = Vec::new();
    let mut p = grp.gr_mem;
    if !p.is_null() {
        loop {
            // SAFETY: gr_mem is a NULL-terminated array of pointers in the live buffer; p
            // never passes its terminating NULL.
            let m = unsafe { *p };
            if m.is_null() {
                break;
            }
            // SAFETY: each element is a NUL-terminated string in the live buffer.
            if let Some(m) = unsafe { text(m) } {
                members.push(m);
            }
            // SAFETY: the element just read was not the terminator, so p + 1 is within the
            // array.
            p = unsafe { p.add(1) };
        }
    }
    Some(Group {
        name,
        gid: grp.gr_gid,
        members,
    })
}

/// getgrnam_r(3): the group called `name`.
pub fn getgrnam(name: &str) -> Result<Option<Group>, NssError> {
    let Ok(cname) = CString::new(name) else {
        return Ok(None);
    };
    with_growing_buffer(Lookup::Getgrnam, &format!("{name:?}"), |buf| {
        // SAFETY: all-zero is a valid `struct group`.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as in getpwnam: every pointer is valid for the call, buf's length is true.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 || result.is_null() {
            return (rc, None);
        }
        // SAFETY: filled by a successful call; buf lives until the closure returns.
        (0, unsafe { group_of(&grp) })
    })
}

/// getgrgid_r(3): the group with id `gid`.
pub fn getgrgid(gid: u32) -> Result<Option<Group>, NssError> {
    with_growing_buffer(Lookup::Getgrgid, &gid.to_string(), |buf| {
        // SAFETY: all-zero is a valid `struct group`.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, buf's length is true.
        let rc =
            unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc != 0 || result.is_null() {
            return (rc, None);
        }
        // SAFETY: filled by a successful call; buf lives until the closure returns.
        (0, unsafe { group_of(&grp) })
    })
}

/// errno values after getgrouplist that mean a source could not be reached. getgrouplist
/// has no status of its own: glibc returns the groups the sources that answered gave and
/// leaves errno as the last failing one set it (sssd down: ECONNREFUSED). Other values are
/// not trusted, as complete answers leave them behind too: nss-systemd leaves ESRCH for a
/// name it does not know, nss_wrapper ENOENT.
const UNREACHABLE: [i32; 8] = [
    libc::ECONNREFUSED,
    libc::ECONNRESET,
    libc::ECONNABORTED,
    libc::ENOTCONN,
    libc::ETIMEDOUT,
    libc::EHOSTUNREACH,
    libc::ENETUNREACH,
    libc::EPIPE,
];

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn clear_errno() {
    // SAFETY: __errno_location returns this thread's errno, always valid for writes.
    unsafe { *libc::__errno_location() = 0 };
}

/// getgrouplist(3): the ids of every group `user` is in, `gid` (its primary group) first,
/// as initgroups would give a session. The list grows to what NSS asks for, up to
/// NGROUPS_MAX.
pub fn getgrouplist(user: &str, gid: u32) -> Result<Vec<u32>, NssError> {
    let Ok(cname) = CString::new(user) else {
        return Ok(vec![gid]);
    };
    let key = format!("{user:?}");
    let mut capacity: usize = 64;
    loop {
        let mut groups: Vec<libc::gid_t> = vec![0; capacity];
        let mut n = libc::c_int::try_from(capacity).unwrap_or(libc::c_int::MAX);
        clear_errno();
        // SAFETY: cname is NUL-terminated; groups has room for n entries; n is valid for
        // writes.
        let rc = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        let saved = errno();
        let wanted = usize::try_from(n).unwrap_or(0);
        if rc < 0 {
            // Too small: n is the size needed (at least double, so the loop ends).
            if capacity >= MAX_GROUPS {
                return Err(error(Lookup::Getgrouplist, &key, libc::ERANGE));
            }
            capacity = wanted.max(capacity.saturating_mul(2)).min(MAX_GROUPS);
            continue;
        }
        if UNREACHABLE.contains(&saved) {
            return Err(error(Lookup::Getgrouplist, &key, saved));
        }
        groups.truncate(wanted);
        return Ok(groups);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_and_a_missing_name_is_none() {
        let root = getpwnam("root").unwrap().unwrap();
        assert_eq!((root.uid, root.name.as_str()), (0, "root"));
        assert_eq!(getpwnam("no-such-user-idtoken-nss").unwrap(), None);
        assert_eq!(getpwnam("nul\0inside").unwrap(), None);
        assert_eq!(getgrnam("no-such-group-idtoken-nss").unwrap(), None);
        assert_eq!(getgrgid(0).unwrap().unwrap().name, "root");
        assert_eq!(getgrouplist("root", 0).unwrap().first(), Some(&0));
    }

    #[test]
    fn erange_doubles_the_buffer_and_other_codes_are_errors() {
        let mut sizes = Vec::new();
        let got = with_growing_buffer(Lookup::Getgrnam, "\"big\"", |buf| {
            sizes.push(buf.len());
            if buf.len() < 8192 {
                (libc::ERANGE, None)
            } else {
                (0, Some(buf.len()))
            }
        });
        assert_eq!(got, Ok(Some(8192)));
        assert_eq!(sizes, [1024, 2048, 4096, 8192]);

        let err = with_growing_buffer::<()>(Lookup::Getpwnam, "\"alice\"", |_| {
            (libc::ECONNREFUSED, None)
        })
        .unwrap_err();
        assert_eq!(err.errno, libc::ECONNREFUSED);
        // getpwnam(3)'s "not found" codes are not errors (nss_wrapper returns ENOENT).
        for code in NOT_FOUND {
            let got = with_growing_buffer::<()>(Lookup::Getpwnam, "\"x\"", |_| (code, None));
            assert_eq!(got, Ok(None), "{code}");
        }
        assert_eq!(
            err.to_string(),
            "getpwnam_r(\"alice\") failed: Connection refused (os error 111)"
        );
    }

    #[test]
    fn erange_is_bounded() {
        let mut calls = 0;
        let err = with_growing_buffer::<()>(Lookup::Getgrgid, "7", |_| {
            calls += 1;
            (libc::ERANGE, None)
        })
        .unwrap_err();
        assert_eq!(err.errno, libc::ERANGE);
        assert_eq!(calls, 15, "1 KiB doubled up to 16 MiB");
    }
}
