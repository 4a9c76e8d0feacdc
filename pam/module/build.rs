//! Link flags of pam_idtoken.so.
//!
//! `-z nodelete`: dlclose() (libpam's pam_end) leaves the module mapped. Code linked into the
//! module may keep per-thread state under a destructor that lives in the module (aws-lc's
//! error queue did, when it was the crypto library; Rust's own thread-locals can): were the
//! module unmapped, a thread of a multi-threaded PAM application (a RADIUS or IMAP server
//! authenticating in worker threads) would jump into unmapped memory when it exits. tests/tests/hardening.rs runs
//! exactly that: threads loading and unloading the module around bad signatures, then
//! exiting. The module keeps no state of its own between logins, so staying mapped changes
//! nothing else; a later pam_start finds it already loaded.
//!
//! The unwinder linked in (libgcc_eh.a, as gcc's `-static-libgcc` does) instead of
//! libgcc_s.so.1: `catch_unwind` at the hooks needs an unwinder, but sshd and su do not load
//! libgcc_s otherwise, so every login paid for loading it, its relocations and its
//! constructor (`__cpu_indicator_init`, a dozen CPUID instructions, which a VM traps). Linked
//! in, the load of the module costs 0.14-0.18 ms of CPU instead of 0.27-0.32 ms in a fresh
//! process (BENCHMARKS.md, "What was waste"). The archive's objects take precedence over
//! libgcc_s's definitions, so `--as-needed` (rustc's default) drops libgcc_s; the module's
//! export list (the version script rustc writes for a cdylib) keeps the copy private.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--push-state,--whole-archive,-l:libgcc_eh.a,--pop-state"
    );
}
