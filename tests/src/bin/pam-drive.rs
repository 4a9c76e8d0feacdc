//! pam-drive: drives the real libpam through one service, as an application would, and
//! prints what happened as one JSON line. The PAM tests run it inside `isolate`, so the
//! module's syslog lines reach the test's socket.
//!
//!   pam-drive --confdir DIR --service NAME --user ACCOUNT [--rhost HOST] [--authtok TEXT]
//!             [--answers-file FILE] [--repeat N]
//!
//! FILE holds one answer per line, given in order to the module's prompts; a line
//! `<NO-ANSWER>` makes the conversation fail at that prompt (a client that gives up).
//! Output: {"rc":..,"rc_name":..,"setcred":..,"prompts":[..],"messages":[..],"env":{..}}.
//! With --repeat N, one handle authenticates N times and only the last result is printed
//! (used by benchmarks and load tests).

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr;

use serde_json::{Value, json};

const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_SUCCESS: c_int = 0;
const PAM_CONV_ERR: c_int = 19;
const PAM_BUF_ERR: c_int = 5;
const PAM_RHOST: c_int = 4;
const PAM_AUTHTOK: c_int = 6;

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
    c_int,
    *mut *const PamMessage,
    *mut *mut PamResponse,
    *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_start_confdir(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        confdir: *const c_char,
        pamh: *mut *mut c_void,
    ) -> c_int;
    fn pam_authenticate(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_setcred(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_set_item(pamh: *mut c_void, item: c_int, value: *const c_void) -> c_int;
    fn pam_getenvlist(pamh: *mut c_void) -> *mut *mut c_char;
    fn pam_end(pamh: *mut c_void, status: c_int) -> c_int;
    fn pam_strerror(pamh: *mut c_void, errnum: c_int) -> *const c_char;
}

/// The scripted client.
struct Client {
    answers: Vec<Option<String>>,
    next: usize,
    prompts: Vec<String>,
    messages: Vec<String>,
}

unsafe extern "C" fn conversation(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    // SAFETY: appdata is the Client that main() owns for the handle's lifetime.
    let client = unsafe { &mut *appdata.cast::<Client>() };
    let n = usize::try_from(num_msg).unwrap_or(0);
    // SAFETY: calloc'd array of n responses, freed by the module.
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
                // SAFETY: out was allocated above.
                unsafe { libc::free(out.cast()) };
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

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let need =
        |name: &str| arg(&args, name).unwrap_or_else(|| panic!("pam-drive: {name} is required"));
    let confdir = CString::new(need("--confdir")).unwrap();
    let service = CString::new(need("--service")).unwrap();
    let user = CString::new(need("--user")).unwrap();
    let repeat: usize = arg(&args, "--repeat")
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let answers: Vec<Option<String>> = match arg(&args, "--answers-file") {
        Some(f) => std::fs::read_to_string(&f)
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .lines()
            .map(|l| {
                if l == "<NO-ANSWER>" {
                    None
                } else {
                    Some(l.to_string())
                }
            })
            .collect(),
        None => Vec::new(),
    };
    let answers_len = answers.len();
    let mut client = Box::new(Client {
        answers,
        next: 0,
        prompts: vec![],
        messages: vec![],
    });
    let conv = PamConv {
        conv: Some(conversation),
        appdata_ptr: (&mut *client as *mut Client).cast(),
    };
    let mut pamh: *mut c_void = ptr::null_mut();
    // SAFETY: all pointers are valid C strings / structs that outlive the handle.
    let rc = unsafe {
        pam_start_confdir(
            service.as_ptr(),
            user.as_ptr(),
            &conv,
            confdir.as_ptr(),
            &mut pamh,
        )
    };
    assert_eq!(rc, PAM_SUCCESS, "pam_start_confdir failed: {rc}");
    if let Some(rhost) = arg(&args, "--rhost") {
        let c = CString::new(rhost).unwrap();
        // SAFETY: libpam copies the item.
        unsafe { pam_set_item(pamh, PAM_RHOST, c.as_ptr().cast()) };
    }
    let authtok = arg(&args, "--authtok").map(|t| CString::new(t).unwrap());
    let mut rc = 0;
    for _ in 0..repeat {
        if let Some(t) = &authtok {
            // SAFETY: libpam copies the item.
            unsafe { pam_set_item(pamh, PAM_AUTHTOK, t.as_ptr().cast()) };
        }
        if repeat > 1 {
            client.next = 0;
            if answers_len == 0 {
                client.prompts.clear();
            }
        }
        // SAFETY: a started handle.
        rc = unsafe { pam_authenticate(pamh, 0) };
    }
    // SAFETY: a started handle.
    let setcred = unsafe { pam_setcred(pamh, 0) };
    let mut env = serde_json::Map::new();
    // SAFETY: a NULL-terminated array of malloc'd strings that we free.
    unsafe {
        let list = pam_getenvlist(pamh);
        if !list.is_null() {
            let mut i = 0;
            loop {
                let e = *list.add(i);
                if e.is_null() {
                    break;
                }
                let s = CStr::from_ptr(e).to_string_lossy().into_owned();
                if let Some((k, v)) = s.split_once('=') {
                    env.insert(k.to_string(), Value::from(v));
                }
                libc::free(e.cast());
                i += 1;
            }
            libc::free(list.cast());
        }
    }
    // SAFETY: a started handle; the name is a static C string.
    let rc_name = unsafe { CStr::from_ptr(pam_strerror(pamh, rc)) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: ends the handle.
    unsafe { pam_end(pamh, rc) };
    println!(
        "{}",
        json!({"rc": rc, "rc_name": rc_name, "setcred": setcred, "prompts": client.prompts,
               "messages": client.messages, "env": env})
    );
}
