//! The application side of Linux-PAM, for the test drivers (`pam-drive`, `pam-load`): a
//! handle started with `pam_start_confdir` on a test service directory, and a scripted
//! client answering the module's prompts.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr;

pub const PAM_SUCCESS: c_int = 0;
pub const PAM_PROMPT_ECHO_OFF: c_int = 1;
pub const PAM_PROMPT_ECHO_ON: c_int = 2;
pub const PAM_CONV_ERR: c_int = 19;
pub const PAM_BUF_ERR: c_int = 5;
pub const PAM_RHOST: c_int = 4;

/// The application side's view of the conversation structs and entry points (also used by
/// `pam-memscan`, which needs its own conversation function).
#[repr(C)]
pub struct PamMessage {
    pub msg_style: c_int,
    pub msg: *const c_char,
}

#[repr(C)]
pub struct PamResponse {
    pub resp: *mut c_char,
    pub resp_retcode: c_int,
}

pub type ConvFn = unsafe extern "C" fn(
    c_int,
    *mut *const PamMessage,
    *mut *mut PamResponse,
    *mut c_void,
) -> c_int;

#[repr(C)]
pub struct PamConv {
    pub conv: Option<ConvFn>,
    pub appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
unsafe extern "C" {
    pub fn pam_start_confdir(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        confdir: *const c_char,
        pamh: *mut *mut c_void,
    ) -> c_int;
    pub fn pam_authenticate(pamh: *mut c_void, flags: c_int) -> c_int;
    pub fn pam_setcred(pamh: *mut c_void, flags: c_int) -> c_int;
    pub fn pam_acct_mgmt(pamh: *mut c_void, flags: c_int) -> c_int;
    pub fn pam_open_session(pamh: *mut c_void, flags: c_int) -> c_int;
    pub fn pam_set_item(pamh: *mut c_void, item: c_int, value: *const c_void) -> c_int;
    pub fn pam_getenvlist(pamh: *mut c_void) -> *mut *mut c_char;
    pub fn pam_end(pamh: *mut c_void, status: c_int) -> c_int;
    pub fn pam_strerror(pamh: *mut c_void, errnum: c_int) -> *const c_char;
}

/// The scripted client: answers in order (`None`: give up at that prompt), and a record of
/// the prompts and messages it was shown.
#[derive(Debug, Default)]
pub struct Client {
    pub answers: Vec<Option<String>>,
    pub next: usize,
    pub prompts: Vec<String>,
    pub messages: Vec<String>,
}

unsafe extern "C" fn conversation(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    // SAFETY: appdata is the boxed Client the Handle owns for its lifetime.
    let client = unsafe { &mut *appdata.cast::<Client>() };
    let n = usize::try_from(num_msg).unwrap_or(0);
    // SAFETY: calloc'd array of n responses; the module frees it.
    let out =
        unsafe { libc::calloc(n.max(1), std::mem::size_of::<PamResponse>()) }.cast::<PamResponse>();
    if out.is_null() {
        return PAM_BUF_ERR;
    }
    for i in 0..n {
        // SAFETY: Linux-PAM passes an array of n message pointers.
        let m = unsafe { &**msg.add(i) };
        // SAFETY: each message text is a C string.
        let text = unsafe { CStr::from_ptr(m.msg) }
            .to_string_lossy()
            .into_owned();
        if m.msg_style == PAM_PROMPT_ECHO_OFF || m.msg_style == PAM_PROMPT_ECHO_ON {
            client.prompts.push(text);
            let answer = client.answers.get(client.next).cloned().flatten();
            client.next += 1;
            let Some(answer) = answer else {
                // SAFETY: allocated above, nothing in it yet to free but earlier answers.
                unsafe {
                    for j in 0..i {
                        libc::free((*out.add(j)).resp.cast());
                    }
                    libc::free(out.cast());
                }
                return PAM_CONV_ERR;
            };
            let c = CString::new(answer).unwrap_or_default();
            // SAFETY: strdup'd: the module frees it.
            unsafe { (*out.add(i)).resp = libc::strdup(c.as_ptr()) };
        } else {
            client.messages.push(text);
        }
    }
    // SAFETY: resp is the module's out pointer.
    unsafe { *resp = out };
    PAM_SUCCESS
}

/// A started PAM handle; ended on drop.
pub struct Handle {
    pamh: *mut c_void,
    // Boxed so the pointer handed to libpam stays put.
    pub client: Box<Client>,
    _conv: Box<PamConv>,
    last: c_int,
}

impl Handle {
    pub fn start(confdir: &str, service: &str, user: &str, answers: Vec<Option<String>>) -> Handle {
        let mut client = Box::new(Client {
            answers,
            ..Client::default()
        });
        let conv = Box::new(PamConv {
            conv: Some(conversation),
            appdata_ptr: (&mut *client as *mut Client).cast(),
        });
        let (c, s, u) = (
            CString::new(confdir).unwrap(),
            CString::new(service).unwrap(),
            CString::new(user).unwrap(),
        );
        let mut pamh: *mut c_void = ptr::null_mut();
        // SAFETY: valid C strings and a conv struct that outlives the handle.
        let rc =
            unsafe { pam_start_confdir(s.as_ptr(), u.as_ptr(), &*conv, c.as_ptr(), &mut pamh) };
        assert_eq!(rc, PAM_SUCCESS, "pam_start_confdir failed: {rc}");
        Handle {
            pamh,
            client,
            _conv: conv,
            last: PAM_SUCCESS,
        }
    }

    pub fn set_item(&mut self, item: c_int, value: &str) {
        let c = CString::new(value).unwrap();
        // SAFETY: libpam copies string items.
        unsafe { pam_set_item(self.pamh, item, c.as_ptr().cast()) };
    }

    pub fn authenticate(&mut self) -> c_int {
        // SAFETY: a started handle.
        self.last = unsafe { pam_authenticate(self.pamh, 0) };
        self.last
    }

    /// The account phase, as sshd and su run it after a successful authentication.
    pub fn acct_mgmt(&mut self) -> c_int {
        // SAFETY: a started handle.
        unsafe { pam_acct_mgmt(self.pamh, 0) }
    }

    pub fn setcred(&mut self) -> c_int {
        // SAFETY: a started handle.
        unsafe { pam_setcred(self.pamh, 0) }
    }

    /// The session phase, as sshd runs it after a successful authentication.
    pub fn open_session(&mut self) -> c_int {
        // SAFETY: a started handle.
        unsafe { pam_open_session(self.pamh, 0) }
    }

    pub fn strerror(&self, rc: c_int) -> String {
        // SAFETY: a started handle; a static string comes back.
        unsafe { CStr::from_ptr(pam_strerror(self.pamh, rc)) }
            .to_string_lossy()
            .into_owned()
    }

    /// The PAM environment, as (name, value) pairs.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        // SAFETY: a NULL-terminated array of malloc'd strings that we free.
        unsafe {
            let list = pam_getenvlist(self.pamh);
            if list.is_null() {
                return out;
            }
            let mut i = 0;
            loop {
                let e = *list.add(i);
                if e.is_null() {
                    break;
                }
                let s = CStr::from_ptr(e).to_string_lossy().into_owned();
                if let Some((k, v)) = s.split_once('=') {
                    out.push((k.to_string(), v.to_string()));
                }
                libc::free(e.cast());
                i += 1;
            }
            libc::free(list.cast());
        }
        out
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: ends the handle started in `start`.
        unsafe { pam_end(self.pamh, self.last) };
    }
}
