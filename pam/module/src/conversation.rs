//! The PAM conversation, called directly rather than through pamsm: pamsm's `conv` never
//! frees the application's response (the token would stay in memory and every login would
//! leak it). Here each answer is copied into a [`Secret`] (wiped when dropped), the C
//! buffer wiped and freed.

use std::ffi::{CString, c_char, c_int, c_void};
use std::ptr;

use pamsm::Pam;
use zeroize::Zeroizing;

use crate::collect::Secret;

const PAM_SUCCESS: c_int = 0;
const PAM_CONV: c_int = 5;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_ERROR_MSG: c_int = 3;

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_get_item(pamh: *const c_void, item_type: c_int, item: *mut *const c_void) -> c_int;
}

// `raw_handle` reads pamsm's `Pam` as the bare `pam_handle_t *` it wraps (pamsm 0.5.5:
// `#[repr(transparent)] struct Pam(PamHandle)`, a pointer). Should a pamsm release add a
// field or change the wrapper, the build stops here instead of reading garbage.
const _: () = assert!(std::mem::size_of::<Pam>() == std::mem::size_of::<*const c_void>());
const _: () = assert!(std::mem::align_of::<Pam>() == std::mem::align_of::<*const c_void>());
// The C structs libpam hands over: two machine words each (an int and a pointer, padded; two
// pointers), on LP64 and ILP32 alike. A field type edited by mistake stops the build.
const _: () = assert!(std::mem::size_of::<PamMessage>() == 2 * std::mem::size_of::<usize>());
const _: () = assert!(std::mem::size_of::<PamResponse>() == 2 * std::mem::size_of::<usize>());
const _: () = assert!(std::mem::size_of::<PamConv>() == 2 * std::mem::size_of::<usize>());

/// The raw handle inside pamsm's `Pam`.
pub(crate) fn raw_handle(pamh: &Pam) -> *const c_void {
    // SAFETY: `Pam` is `#[repr(transparent)]` over the `pam_handle_t *` libpam passed in.
    unsafe { *(pamh as *const Pam).cast::<*const c_void>() }
}

/// Asks one question with echo off; `None` if there is no conversation or it failed.
pub fn prompt_echo_off(pamh: &Pam, text: &str) -> Option<Secret> {
    converse(pamh, PAM_PROMPT_ECHO_OFF, text)
}

/// Shows an error line to the client (its answer, if any, is discarded).
pub fn error_message(pamh: &Pam, text: &str) {
    let _ = converse(pamh, PAM_ERROR_MSG, text);
}

fn converse(pamh: &Pam, style: c_int, text: &str) -> Option<Secret> {
    let message_text = CString::new(text).ok()?;
    let mut conv_item: *const c_void = ptr::null();
    // SAFETY: a valid handle from libpam; PAM_CONV yields a `struct pam_conv *`.
    let rc = unsafe { pam_get_item(raw_handle(pamh), PAM_CONV, &mut conv_item) };
    if rc != PAM_SUCCESS || conv_item.is_null() {
        return None;
    }
    // SAFETY: libpam stores a `struct pam_conv` there for the handle's lifetime.
    let conv = unsafe { &*conv_item.cast::<PamConv>() };
    let conv_fn = conv.conv?;
    let message = PamMessage {
        msg_style: style,
        msg: message_text.as_ptr(),
    };
    let mut message_ptr: *const PamMessage = &message;
    let mut responses: *mut PamResponse = ptr::null_mut();
    // SAFETY: one message, as num_msg says; the application allocates `responses`.
    let rc = unsafe { conv_fn(1, &mut message_ptr, &mut responses, conv.appdata_ptr) };
    // SAFETY: `responses` is null or what the application allocated for one message.
    let answer = unsafe { take_response(responses) };
    if rc != PAM_SUCCESS {
        return None;
    }
    answer
}

/// Copies the answer out, wipes and frees the application's buffers.
///
/// # Safety
/// `responses` is null or a malloc'd array of one `PamResponse` whose `resp` is null or a
/// malloc'd NUL-terminated string (the PAM conversation contract).
unsafe fn take_response(responses: *mut PamResponse) -> Option<Secret> {
    if responses.is_null() {
        return None;
    }
    // SAFETY: non-null, one element.
    let resp = unsafe { (*responses).resp };
    let answer = if resp.is_null() {
        None
    } else {
        // SAFETY: NUL-terminated per the contract.
        let len = unsafe { libc::strlen(resp) };
        // SAFETY: `len` bytes are readable. `to_vec` allocates exactly `len`: no regrowth.
        let bytes =
            Zeroizing::new(unsafe { std::slice::from_raw_parts(resp.cast::<u8>(), len) }.to_vec());
        // SAFETY: the buffer is ours to wipe and free; explicit_bzero is not optimised away.
        unsafe {
            libc::explicit_bzero(resp.cast::<c_void>(), len);
            libc::free(resp.cast::<c_void>());
        }
        Some(bytes)
    };
    // SAFETY: the array itself was malloc'd by the application.
    unsafe { libc::free(responses.cast::<c_void>()) };
    answer
}
