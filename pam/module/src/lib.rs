//! `pam_idtoken.so`: the PAM entry points, and nothing else.
//!
//! Each `pam_sm_*` function is a few lines of FFI: it wraps the hook in `catch_unwind`
//! (a panic must never unwind into sshd, and must never allow a login), turns the C
//! arguments into Rust ones and calls [`hooks`]. All deciding happens in `idtoken-core`.
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

pub mod account;
pub mod args;
pub mod collect;
pub mod conversation;
pub mod handle;
pub mod hooks;
pub mod session_data;
#[cfg(test)]
mod tests;

use std::ffi::{CStr, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use pamsm::{LogLvl, Pam, PamError, PamLibExt};

/// Runs a hook with the module arguments, catching any panic. `on_panic` is what PAM gets
/// then: never `PAM_SUCCESS` for authenticate.
///
/// # Safety
/// `argv` must point to `argc` valid C strings, as libpam guarantees.
unsafe fn guarded(
    pamh: &Pam,
    argc: c_int,
    argv: *const *const c_char,
    on_panic: PamError,
    hook: fn(&Pam, &[String]) -> PamError,
) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: forwarded from the caller's contract.
        let args = unsafe { module_args(argc, argv) };
        hook(pamh, &args)
    }));
    match result {
        Ok(code) => code as c_int,
        Err(_) => {
            let _ = pamh.syslog(
                LogLvl::CRIT,
                "internal error (panic) caught at the module boundary; the request is denied",
            );
            on_panic as c_int
        }
    }
}

/// The module arguments as Rust strings; a non-UTF-8 argument is kept (lossily) so the
/// argument parser can refuse it by name.
///
/// # Safety
/// `argv` must point to `argc` valid C strings.
unsafe fn module_args(argc: c_int, argv: *const *const c_char) -> Vec<String> {
    let n = usize::try_from(argc).unwrap_or(0);
    if argv.is_null() {
        return Vec::new();
    }
    (0..n)
        .filter_map(|i| {
            // SAFETY: i < argc, and libpam passes argc valid pointers.
            let p = unsafe { *argv.add(i) };
            // SAFETY: each non-null entry is a NUL-terminated string owned by libpam.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        })
        .collect()
}

/// One PAM entry point: `$hook` under [`guarded`], which answers `$on_panic` if it
/// panics (every entry point is guarded: a panic must never unwind into libpam).
macro_rules! pam_hook {
    ($(#[$doc:meta])* $name:ident, $on_panic:expr, $hook:path) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// Called by libpam with a valid handle and argument vector.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            pamh: Pam,
            _flags: c_int,
            argc: c_int,
            argv: *const *const c_char,
        ) -> c_int {
            // SAFETY: libpam's contract.
            unsafe { guarded(&pamh, argc, argv, $on_panic, $hook) }
        }
    };
}

pam_hook!(
    /// The decision: a token in, a PAM answer out.
    pam_sm_authenticate, PamError::AUTH_ERR, hooks::authenticate
);
pam_hook!(
    /// `PAM_SUCCESS` after a token login, `PAM_IGNORE` otherwise ([`account`]).
    pam_sm_acct_mgmt, PamError::IGNORE, account::hook
);
pam_hook!(
    /// `PAM_IGNORE`: see hooks::ignore for why setcred must not answer PAM_SUCCESS.
    pam_sm_setcred, PamError::SERVICE_ERR, hooks::ignore
);
pam_hook!(
    /// A token login's session limits for pam_systemd, and its session record.
    pam_sm_open_session, PamError::SESSION_ERR, hooks::open_session
);
pam_hook!(
    /// The end of a token login's session: its audit line, its record removed.
    pam_sm_close_session, PamError::SESSION_ERR, hooks::close_session
);
pam_hook!(
    /// Not this module's business: `PAM_IGNORE`.
    pam_sm_chauthtok, PamError::SERVICE_ERR, hooks::ignore
);
