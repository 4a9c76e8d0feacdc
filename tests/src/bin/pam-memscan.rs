//! pam-memscan: drives the real libpam through one service, ends the handle, then scans
//! this process's own writable memory for what the client answered, and prints the number
//! of copies left as one JSON line. The secrets test runs it inside `isolate`.
//!
//!   pam-memscan --confdir DIR --service NAME --user ACCOUNT --answers-file FILE [--leak-copy]
//!
//! FILE holds one answer per line (a token's parts, or one password). The answers joined
//! are the secret: for a token (three dot-separated parts) the needles are its signature
//! part (base64url, and decoded) and its first 200 characters; otherwise the whole answer
//! (a password). `--leak-copy` keeps one copy of the answer alive on purpose, to show the
//! scan finds what is there.
//!
//! Each needle leaves out the secret's first 32 bytes, which free() overwrites with its
//! list pointers; secrets are at least 48 bytes long for that reason.
//!
//! The scan must not count this program's own knowledge of the needles: the answers are
//! wiped once pam_end returns, and each needle is kept only XOR-masked with random bytes
//! (neither the mask nor the masked bytes equal the needle), unmasked one byte at a time
//! while comparing. The buffer the memory is read into is a mapping of its own that the
//! scan skips.
//!
//! A freed buffer can be reused (and overwritten) before the scan runs: libpam's strdup of
//! PAM_AUTHTOK takes the very chunk an unwiped password response was freed into, so a scan
//! alone misses that leak. So this program also defines `free` (exported to the module and
//! libpam, see tests/build.rs) and looks at each response it handed out at the moment it is
//! freed: `responses_freed` counts them, `responses_unwiped` those that still held a byte of
//! the answer.
//!
//! Output: {"rc":..,"rc_name":..,"prompts":..,"regions":..,"bytes":..,"counts":{NAME:N,..},
//! "responses":N,"responses_freed":N,"responses_unwiped":N}.

use std::ffi::{CStr, c_int, c_void};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use idtoken_e2e::libpam::{
    PAM_BUF_ERR, PAM_CONV_ERR, PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_SUCCESS, PamConv,
    PamMessage, PamResponse, pam_authenticate, pam_end, pam_setcred, pam_start_confdir,
    pam_strerror,
};

/// How many responses the free hook can follow.
const TRACKED: usize = 64;
/// Address and answer length of each response handed to the module (0: slot free).
static RESPONSE_AT: [AtomicUsize; TRACKED] = [const { AtomicUsize::new(0) }; TRACKED];
static RESPONSE_LEN: [AtomicUsize; TRACKED] = [const { AtomicUsize::new(0) }; TRACKED];
static RESPONSES: AtomicUsize = AtomicUsize::new(0);
static RESPONSES_FREED: AtomicUsize = AtomicUsize::new(0);
static RESPONSES_UNWIPED: AtomicUsize = AtomicUsize::new(0);
static TRACKING: AtomicBool = AtomicBool::new(false);

unsafe extern "C" {
    /// glibc's own free, which `free` below hands every pointer on to.
    fn __libc_free(p: *mut c_void);
}

/// Every `free` of this process (its own, libpam's and the module's: tests/build.rs exports
/// it): a response handed to the module is checked for answer bytes left in it, then freed.
///
/// # Safety
/// As free(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if !p.is_null() && TRACKING.load(Ordering::Relaxed) {
        let at = p as usize;
        for (slot, len) in RESPONSE_AT.iter().zip(&RESPONSE_LEN) {
            if slot.load(Ordering::Relaxed) == at {
                slot.store(0, Ordering::Relaxed);
                let len = len.load(Ordering::Relaxed);
                // SAFETY: the response was malloc'd with len + 1 bytes by `conversation`,
                // and is not freed yet.
                let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
                RESPONSES_FREED.fetch_add(1, Ordering::Relaxed);
                // An answer has no NUL byte: a wiped one is all zeros.
                if bytes.iter().any(|b| *b != 0) {
                    RESPONSES_UNWIPED.fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
        }
    }
    // SAFETY: as the caller's free.
    unsafe { __libc_free(p) }
}

/// Remembers a response handed to the module, for the free hook.
fn track(p: *mut u8, len: usize) {
    RESPONSES.fetch_add(1, Ordering::Relaxed);
    for (slot, l) in RESPONSE_AT.iter().zip(&RESPONSE_LEN) {
        if slot.load(Ordering::Relaxed) == 0 {
            l.store(len, Ordering::Relaxed);
            slot.store(p as usize, Ordering::Relaxed);
            return;
        }
    }
    panic!("more than {TRACKED} responses outstanding");
}

/// Bytes wiped (explicit_bzero, not optimised away) before their memory is freed.
struct Wiped(Vec<u8>);

impl Drop for Wiped {
    fn drop(&mut self) {
        let cap = self.0.capacity();
        // SAFETY: the Vec's whole allocation is ours, `cap` bytes from its pointer.
        unsafe { libc::explicit_bzero(self.0.as_mut_ptr().cast(), cap) };
    }
}

/// The client: answers given in order, each copied into a malloc'd string the module
/// must wipe and free (the PAM conversation contract).
struct Client {
    answers: Vec<Wiped>,
    next: usize,
    prompts: Vec<String>,
}

unsafe extern "C" fn conversation(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    // SAFETY: appdata is the Client main owns until pam_end.
    let client = unsafe { &mut *appdata.cast::<Client>() };
    let n = usize::try_from(num_msg).unwrap_or(0);
    // SAFETY: calloc'd array of n responses; the module frees it.
    let out =
        unsafe { libc::calloc(n.max(1), std::mem::size_of::<PamResponse>()) }.cast::<PamResponse>();
    if out.is_null() {
        return PAM_BUF_ERR;
    }
    for i in 0..n {
        // SAFETY: Linux-PAM passes an array of n message pointers, each a C string.
        let m = unsafe { &**msg.add(i) };
        if m.msg_style != PAM_PROMPT_ECHO_OFF && m.msg_style != PAM_PROMPT_ECHO_ON {
            continue;
        }
        // SAFETY: as above.
        let text = unsafe { CStr::from_ptr(m.msg) };
        client.prompts.push(text.to_string_lossy().into_owned());
        let Some(answer) = client.answers.get(client.next) else {
            // SAFETY: the array and earlier answers are ours to free on failure.
            unsafe {
                for j in 0..i {
                    libc::free((*out.add(j)).resp.cast());
                }
                libc::free(out.cast());
            }
            return PAM_CONV_ERR;
        };
        client.next += 1;
        let len = answer.0.len();
        // SAFETY: len + 1 bytes allocated, the answer copied in and NUL-terminated; the
        // module owns the string from here.
        let s = unsafe {
            let s = libc::malloc(len + 1).cast::<u8>();
            assert!(!s.is_null(), "malloc");
            ptr::copy_nonoverlapping(answer.0.as_ptr(), s, len);
            *s.add(len) = 0;
            (*out.add(i)).resp = s.cast();
            s
        };
        track(s, len);
    }
    // SAFETY: resp is the module's out pointer.
    unsafe { *resp = out };
    PAM_SUCCESS
}

/// How much of the start of a secret the needle leaves out (see [`Needle::new`]).
const SKIP: usize = 32;

/// A needle the scan looks for, kept only XOR-masked.
struct Needle {
    name: &'static str,
    mask: Vec<u8>,
    masked: Vec<u8>,
}

impl Needle {
    /// The needle is the secret less its first 32 bytes: glibc's free() writes its list
    /// pointers over the start of a freed chunk (tcache: 16 bytes, large bins: 32), so a
    /// secret left in freed memory is found by what follows them.
    fn new(name: &'static str, secret: &[u8]) -> Needle {
        assert!(
            secret.len() >= 48,
            "{name}: too short to scan for past the free-list pointers"
        );
        let secret = &secret[SKIP..];
        let mut mask = vec![0u8; secret.len()];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut mask))
            .expect("/dev/urandom");
        // A zero mask byte would store that needle byte in the clear: make every byte non-zero.
        for b in &mut mask {
            *b |= 1;
        }
        let masked = secret.iter().zip(&mask).map(|(s, m)| s ^ m).collect();
        Needle { name, mask, masked }
    }

    fn len(&self) -> usize {
        self.mask.len()
    }

    /// Whether `window` (at least `len` bytes) starts with the needle.
    fn matches(&self, window: &[u8]) -> bool {
        self.mask
            .iter()
            .zip(&self.masked)
            .zip(window)
            .all(|((m, x), w)| w ^ m == *x)
    }

    /// Occurrences in `hay`.
    fn count(&self, hay: &[u8]) -> usize {
        let n = self.len();
        if hay.len() < n || n == 0 {
            return 0;
        }
        let first = self.mask[0] ^ self.masked[0];
        let mut found = 0;
        let mut i = 0;
        while i + n <= hay.len() {
            match hay[i..=hay.len() - n].iter().position(|b| *b == first) {
                None => break,
                Some(p) => {
                    i += p;
                    if self.matches(&hay[i..i + n]) {
                        found += 1;
                    }
                    i += 1;
                }
            }
        }
        found
    }
}

/// An anonymous mapping of its own for reading memory into: the scan skips its range, so
/// what it copies is never counted.
struct ScanBuffer {
    ptr: *mut u8,
    len: usize,
}

impl ScanBuffer {
    fn new(len: usize) -> ScanBuffer {
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap");
        ScanBuffer { ptr: p.cast(), len }
    }

    fn range(&self) -> (usize, usize) {
        (self.ptr as usize, self.ptr as usize + self.len)
    }

    fn slice(&mut self, n: usize) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, and n <= len.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, n.min(self.len)) }
    }
}

impl Drop for ScanBuffer {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Readable and writable mappings of this process: (start, end).
fn writable_regions() -> Vec<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            if !perms.starts_with("rw") {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect()
}

/// Counts each needle in every writable mapping, read through /proc/self/mem in chunks
/// that overlap by the longest needle, skipping the scan buffer itself. Returns the counts,
/// the number of regions and the number of bytes read.
fn scan(needles: &[Needle]) -> (Vec<usize>, usize, usize) {
    const CHUNK: usize = 1 << 20;
    let longest = needles.iter().map(Needle::len).max().unwrap_or(0);
    let mut buf = ScanBuffer::new(CHUNK + longest);
    let (skip_a, skip_b) = buf.range();
    let mem = File::open("/proc/self/mem").expect("/proc/self/mem");
    let regions = writable_regions();
    let mut counts = vec![0usize; needles.len()];
    let mut bytes = 0usize;
    // Pieces of each region outside the scan buffer.
    let mut pieces = Vec::new();
    for &(a, b) in &regions {
        if b <= skip_a || a >= skip_b {
            pieces.push((a, b));
        } else {
            if a < skip_a {
                pieces.push((a, skip_a));
            }
            if b > skip_b {
                pieces.push((skip_b, b));
            }
        }
    }
    for (a, b) in pieces {
        let mut at = a;
        while at < b {
            // Each chunk repeats the last `longest - 1` bytes of the previous one, so a
            // needle across the boundary is seen once (counted in the chunk it starts in).
            let want = (b - at).min(CHUNK + longest.saturating_sub(1));
            let hay = buf.slice(want);
            let got = match mem.read_at(hay, at as u64) {
                Ok(n) if n > 0 => n,
                _ => break, // unreadable (guard pages, device memory): nothing of ours there
            };
            bytes += got;
            let hay = &hay[..got];
            let chunk_end = if at + got >= b {
                got
            } else {
                got.saturating_sub(longest.saturating_sub(1))
            };
            for (i, n) in needles.iter().enumerate() {
                // Only matches starting before chunk_end: the overlap is scanned next time.
                let limit = (chunk_end + n.len().saturating_sub(1)).min(got);
                counts[i] += n.count(&hay[..limit]);
            }
            if chunk_end == 0 {
                break;
            }
            at += chunk_end;
        }
    }
    // SAFETY: the mapping is ours; wipe what was copied into it before unmapping.
    unsafe { libc::explicit_bzero(buf.ptr.cast(), buf.len) };
    (counts, regions.len(), bytes)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The needles for this secret: a token's signature (as sent and decoded) and head, or a
/// password whole.
fn needles_of(secret: &[u8]) -> Vec<Needle> {
    let dots = secret.iter().filter(|b| **b == b'.').count();
    if dots != 2 {
        return vec![Needle::new("password", secret)];
    }
    let sig_at = secret.iter().rposition(|b| *b == b'.').expect("a dot") + 1;
    let signature = &secret[sig_at..];
    let decoded = Wiped(
        URL_SAFE_NO_PAD
            .decode(signature)
            .expect("base64url signature"),
    );
    vec![
        Needle::new("signature", signature),
        Needle::new("signature_decoded", &decoded.0),
        Needle::new("token_head", &secret[..200.min(secret.len())]),
    ]
}

/// The answers joined, in one allocation of the exact size (a growing Vec would leave
/// unwiped partial copies behind, and the scan would count them).
fn joined(answers: &[Wiped]) -> Wiped {
    let mut out = Vec::with_capacity(answers.iter().map(|a| a.0.len()).sum());
    for a in answers {
        out.extend_from_slice(&a.0);
    }
    Wiped(out)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let need = |name: &str| arg(&args, name).unwrap_or_else(|| panic!("{name} is required"));
    let file = Wiped(std::fs::read(need("--answers-file")).expect("answers file"));
    let answers: Vec<Wiped> = file
        .0
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| Wiped(l.to_vec()))
        .collect();
    let needles = needles_of(&joined(&answers).0);
    drop(file);
    let leaked = args.iter().any(|a| a == "--leak-copy").then(|| {
        let copy = joined(&answers);
        let leak: &[u8] = copy.0.clone().leak();
        leak.len()
    });

    let mut client = Box::new(Client {
        answers,
        next: 0,
        prompts: Vec::new(),
    });
    let conv = Box::new(PamConv {
        conv: Some(conversation),
        appdata_ptr: (&mut *client as *mut Client).cast(),
    });
    let cstr = |s: String| std::ffi::CString::new(s).expect("no NUL");
    let (c, s, u) = (
        cstr(need("--confdir")),
        cstr(need("--service")),
        cstr(need("--user")),
    );
    let mut pamh: *mut c_void = ptr::null_mut();
    TRACKING.store(true, Ordering::Relaxed);
    // SAFETY: valid C strings and a conv struct that outlives the handle.
    let rc = unsafe { pam_start_confdir(s.as_ptr(), u.as_ptr(), &*conv, c.as_ptr(), &mut pamh) };
    assert_eq!(rc, PAM_SUCCESS, "pam_start_confdir failed: {rc}");
    // SAFETY: a started handle, used and ended here.
    let (rc, rc_name, setcred) = unsafe {
        let rc = pam_authenticate(pamh, 0);
        let setcred = pam_setcred(pamh, 0);
        let name = CStr::from_ptr(pam_strerror(pamh, rc))
            .to_string_lossy()
            .into_owned();
        pam_end(pamh, rc);
        (rc, name, setcred)
    };
    TRACKING.store(false, Ordering::Relaxed);
    let prompts = std::mem::take(&mut client.prompts);
    drop(conv);
    drop(client); // wipes the answers

    let (counts, regions, bytes) = scan(&needles);
    let counts: Map<String, Value> = needles
        .iter()
        .zip(counts)
        .map(|(n, c)| (n.name.to_string(), Value::from(c)))
        .collect();
    println!(
        "{}",
        json!({"rc": rc, "rc_name": rc_name, "setcred": setcred, "prompts": prompts,
               "regions": regions, "bytes": bytes, "counts": counts,
               "leaked": leaked,
               "responses": RESPONSES.load(Ordering::Relaxed),
               "responses_freed": RESPONSES_FREED.load(Ordering::Relaxed),
               "responses_unwiped": RESPONSES_UNWIPED.load(Ordering::Relaxed)})
    );
}
