//! PAM data items for the modules after this one (`pam_set_data`): a C string under a
//! name, as pam_systemd reads `systemd.runtime_max_sec`. pamsm's `send_data` stores a boxed
//! Rust value, which a C module cannot read, so this calls libpam directly.

use std::ffi::{CString, c_char, c_int, c_void};

use pamsm::Pam;

use crate::conversation::raw_handle;

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_set_data(
        pamh: *const c_void,
        module_data_name: *const c_char,
        data: *mut c_void,
        cleanup: Option<unsafe extern "C" fn(*mut c_void, *mut c_void, c_int)>,
    ) -> c_int;
}

const PAM_SUCCESS: c_int = 0;

/// Frees a string stored by [`set_string`] when libpam drops the item (pam_end, or a new
/// value under the same name).
unsafe extern "C" fn free_string(_pamh: *mut c_void, data: *mut c_void, _status: c_int) {
    // SAFETY: `data` is the strdup'ed string set_string stored, freed only here.
    unsafe { libc::free(data) };
}

/// Stores `value` as a NUL-terminated C string under `name`; false when libpam refused it
/// (or a NUL was in either, which cannot happen for the names and numbers stored here).
pub fn set_string(pamh: &Pam, name: &str, value: &str) -> bool {
    let (Ok(name), Ok(value)) = (CString::new(name), CString::new(value)) else {
        return false;
    };
    // SAFETY: strdup copies the NUL-terminated string into malloc'd memory that libpam owns
    // from here on and hands to free_string.
    let copy = unsafe { libc::strdup(value.as_ptr()) };
    if copy.is_null() {
        return false;
    }
    // SAFETY: a valid handle from libpam; libpam copies the name and keeps `copy` until the
    // cleanup runs.
    let rc = unsafe {
        pam_set_data(
            raw_handle(pamh),
            name.as_ptr(),
            copy.cast(),
            Some(free_string),
        )
    };
    if rc != PAM_SUCCESS {
        // SAFETY: libpam did not take it.
        unsafe { libc::free(copy.cast()) };
        return false;
    }
    true
}
