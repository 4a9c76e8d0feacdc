//! No secret left in freed memory: a process drives the real libpam with the built module,
//! ends the handle, and scans its own writable memory (`pam-memscan`) for the token's
//! signature, the token itself and a password handed on to the next module. What the
//! module got from the client must be wiped before it is freed, as pam_unix's is. A freed
//! buffer can be reused before the scan, so pam-memscan also checks each response buffer at
//! the moment the module frees it (its own `free`).

use std::path::Path;

use idtoken_e2e::keys::{self, mint_exact_len};
use idtoken_e2e::pam::{self, PAM_SUCCESS, PamHarness, parts};
use idtoken_e2e::require;
use idtoken_e2e::sandbox::{last_json_line, set_mode};
use serde_json::Value;

/// The module, then pam_permit standing in for pam_unix: a password the module passes on
/// (PAM_AUTHTOK) reaches a next module that accepts it.
fn harness(tag: &str) -> PamHarness {
    let h = PamHarness::new(tag);
    h.sandbox.standard();
    let config = h.sandbox.path("idtoken.toml");
    h.service(
        "test",
        &format!(
            "auth required MODULE config={}\nauth required pam_permit.so\naccount required pam_permit.so\n",
            config.display()
        ),
    );
    h
}

/// Runs pam-memscan in `isolate` with these answers; its JSON line.
fn scan(h: &PamHarness, user: &str, answers: &[String], extra: &[&str]) -> Value {
    let file = h.sandbox.path("answers");
    let text: String = answers.iter().map(|a| format!("{a}\n")).collect();
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("answers: {e}"));
    set_mode(&file, 0o600);
    let out = h
        .isolated(&idtoken_e2e::artifact("pam-memscan"))
        .args(["--service", "test", "--user", user, "--answers-file"])
        .arg(&file)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("isolate: {e}"));
    let _ = std::fs::remove_file(Path::new(&file));
    assert!(
        out.status.success(),
        "pam-memscan failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v = last_json_line(&out.stdout);
    eprintln!("pam-memscan: {v}");
    v
}

/// Every response the client gave the module was freed by it, each wiped first.
fn assert_responses_wiped(v: &Value, answers: usize) {
    let n = |k: &str| v[k].as_i64().unwrap_or(-1);
    assert_eq!(n("responses"), answers as i64, "responses handed out: {v}");
    assert_eq!(
        n("responses_freed"),
        n("responses"),
        "responses the module freed: {v}"
    );
    assert_eq!(
        n("responses_unwiped"),
        0,
        "responses freed with the answer still in them: {v}"
    );
}

fn count(v: &Value, needle: &str) -> i64 {
    v["counts"][needle]
        .as_i64()
        .unwrap_or_else(|| panic!("no count for {needle}: {v}"))
}

/// A live token of 2500 characters for `user`: three parts, so the collected token grows.
fn long_token(user: &str) -> String {
    let jti = format!("jti-secrets-{}-{}", keys::now(), std::process::id());
    mint_exact_len(&keys::live_claims(user, &jti), 2500)
}

/// A 64-character password unique to this run (the scan needs 48 or more, see pam-memscan).
fn password(tag: &str) -> String {
    format!("{tag}-{}-{:x}-", std::process::id(), keys::now())
        .chars()
        .chain("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-".chars())
        .take(64)
        .collect()
}

macro_rules! root_or_skip {
    () => {
        require!(
            pam::can_isolate(),
            "the memory scan runs pam-memscan in a mount namespace (root)"
        );
    };
}

#[test]
fn no_copy_of_a_token_sent_in_parts_is_left_after_pam_end() {
    root_or_skip!();
    let h = harness("secrets-token");
    let token = long_token("alice");
    let answers = parts(&token);
    let v = scan(&h, "alice", &answers, &[]);
    assert_eq!(
        v["rc"].as_i64(),
        Some(PAM_SUCCESS),
        "the token logs in: {v}"
    );
    assert_eq!(
        v["prompts"],
        serde_json::json!(["ID token: ", "ID token (part 2): ", "ID token (part 3): "])
    );
    assert!(
        v["bytes"].as_i64().unwrap_or(0) > 1 << 16,
        "memory read: {v}"
    );
    assert_eq!(count(&v, "signature"), 0, "signature copies left: {v}");
    assert_eq!(
        count(&v, "signature_decoded"),
        0,
        "decoded signature copies left: {v}"
    );
    assert_eq!(count(&v, "token_head"), 0, "token copies left: {v}");
    assert_responses_wiped(&v, answers.len());
}

#[test]
fn no_copy_of_a_password_passed_on_is_left_after_pam_end() {
    root_or_skip!();
    let h = harness("secrets-password");
    let password = password("Secret");
    let v = scan(&h, "alice", &[password], &[]);
    assert_eq!(
        v["rc"].as_i64(),
        Some(PAM_SUCCESS),
        "pam_permit accepts: {v}"
    );
    assert_eq!(count(&v, "password"), 0, "password copies left: {v}");
    assert_responses_wiped(&v, 1);
}

/// The scan itself: a copy kept alive on purpose is found, exactly once (the module left
/// none, and the scanner does not count its own masked needle or read buffer).
#[test]
fn the_scan_finds_a_copy_that_is_there() {
    root_or_skip!();
    let h = harness("secrets-scan");
    let password = password("Kept");
    let v = scan(&h, "alice", &[password], &["--leak-copy"]);
    assert_eq!(count(&v, "password"), 1, "{v}");
    // The copy kept is the scanner's own: the module's response was still wiped.
    assert_responses_wiped(&v, 1);
}
