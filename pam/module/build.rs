//! Link flags of pam_idtoken.so.
//!
//! `-z nodelete`: dlclose() (libpam's pam_end) leaves the module mapped. The crypto library
//! (aws-lc) keeps per-thread state, such as its error queue after a failed verify, under a
//! pthread key whose destructor lives in this module: were the module unmapped, a thread of
//! a multi-threaded PAM application (a RADIUS or IMAP server authenticating in worker
//! threads) would jump into unmapped memory when it exits. tests/tests/hardening.rs runs
//! exactly that: threads loading and unloading the module around bad signatures, then
//! exiting. The module keeps no state of its own between logins, so staying mapped changes
//! nothing else; a later pam_start finds it already loaded.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
