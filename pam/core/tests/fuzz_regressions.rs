//! Inputs found by fuzzing, and the fuzz seed corpus, replayed through the fuzz harness
//! itself (fuzz/README.md), which is the test kit's `fuzz` module: an input replays here
//! exactly as in its fuzz target, with the same fixed config, in-memory keys, accounts and
//! use ledger, the same invariants, and the same comparison with the reference decision of
//! the SPEC (pam/testkit/src/fuzz/oracle.rs).
//!
//! To add a crash: minimize it (`cargo fuzz tmin TARGET fuzz/artifacts/TARGET/crash-...`),
//! paste it below as a test that calls the target it came from (`targets::token(b"...")`),
//! say what was wrong, and assert the decision the SPEC wants when that says more than "no
//! panic". Copy the input into fuzz/seeds/TARGET/ too.

use std::path::PathBuf;

use idtoken_core::decision::UseMode;
use idtoken_core::reason::Reason;
use idtoken_testkit::fuzz::{checks, targets, world};
use idtoken_testkit::keys::{self, Key};

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= 10,
        "{}: only {} seeds",
        dir.display(),
        out.len()
    );
    out
}

/// Every seed passes its target's checks: the core agrees with the reference on each.
#[test]
fn seed_corpus_replays_through_every_target() {
    for (target, run) in [
        ("token", targets::token as fn(&[u8])),
        ("config", targets::config),
        ("policy", targets::policy),
        ("packed", targets::packed),
    ] {
        for (name, bytes) in seeds(target) {
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(
                outcome.is_ok(),
                "fuzz/seeds/{target}/{name} fails its target"
            );
        }
    }
}

fn token_reason(token: &str) -> Option<Reason> {
    let (account, service) = checks::request_of(token);
    let d = checks::decide(world::config(), token, &account, &service, UseMode::Record);
    d.reason()
}

/// A valid token inside more than 64 KiB of whitespace is refused as malformed: the cap
/// applies to the answer as given, before whitespace is stripped (the reference agrees).
#[test]
fn whitespace_beyond_the_size_cap_is_malformed() {
    let token = keys::mint_bytes(keys::gitlab_claims("alice").to_string().as_bytes(), Key::A);
    let padded = format!("{}{token}", " ".repeat(idtoken_core::MAX_TOKEN_BYTES));
    targets::token(padded.as_bytes());
    assert_eq!(token_reason(&padded), Some(Reason::Malformed));
    let just_fits = format!(
        "{}{token}",
        " ".repeat(idtoken_core::MAX_TOKEN_BYTES - token.len())
    );
    targets::token(just_fits.as_bytes());
    assert_eq!(token_reason(&just_fits), None, "allowed");
}

/// Hostile claims in a signed token: deep nesting, control and bidi characters in every
/// logged claim, a long run of stars against a long claim. No panic, no stack overflow, and
/// the audit line and trace stay clean (checked by the target).
#[test]
fn hostile_signed_claims() {
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    targets::policy(format!("alice\nsshd\n{{\"a\":{deep}}}").as_bytes());
    let mut c = keys::gitlab_claims("alice");
    for k in [
        "project_path",
        "pipeline_id",
        "job_id",
        "jti",
        "ref",
        "aud",
        "iss",
    ] {
        c[k] = serde_json::json!("x\n\r\u{1b}[31m\u{202e}\u{2066}\u{0}\u{85}y");
    }
    c["user_login"] = serde_json::json!("al\u{202e}ice\n");
    targets::policy(format!("al\u{202e}ice\n\nssh\u{1b}d\n{c}").as_bytes());
    let stars = format!("{}b", "*a".repeat(200));
    c["ref"] = serde_json::json!("a".repeat(6000));
    targets::policy(format!("{stars}\n{}\n{c}", "a".repeat(500)).as_bytes());
}

/// Bytes that are not UTF-8 reach the decision as the PAM module would pass them (lossy).
#[test]
fn not_utf8() {
    targets::token(b"eyJ\xff\xfe.\xc0\x80.\xed\xa0\x80");
    targets::config(b"[[issuer]]\nname = \"\xff\"\n");
    targets::policy(b"\xff\n\xfe\n{\"iss\":\"\xff\"}");
}

/// Found while seeding the fuzzer (fuzz/seeds/token/allow-header-whitespace.jwt): a token
/// signed with a trusted key whose header JSON starts `{ "` (base64url `eyAi...`, not `eyJ`)
/// is allowed by the decision, and so by `idtoken check`, but the PAM module's
/// `jws::looks_like_jws` calls it "not JWT-shaped" and hands it to the next module as a
/// password (PAM_IGNORE). GitLab writes compact JSON, so its tokens were not affected; the
/// check and the module disagreed. Fixed: `looks_like_jws` decodes the header's start.
#[test]
fn every_token_the_decision_allows_looks_like_a_token() {
    let (_, bytes) = seeds("token")
        .into_iter()
        .find(|(name, _)| name == "allow-header-whitespace.jwt")
        .expect("seed allow-header-whitespace.jwt");
    let token = String::from_utf8(bytes).unwrap();
    assert_eq!(token_reason(&token), None, "the decision allows it");
    assert!(idtoken_core::jws::looks_like_jws(&token));
}

/// Found by the `policy` target (built input: header = 14 spaces, then the standard header):
/// a token signed with a trusted key whose header JSON starts with 12 or more whitespace
/// bytes is allowed by the decision (and by `idtoken check`), but `jws::looks_like_jws`
/// decodes only the first 12 bytes of the header, finds no `{` there, and the PAM module
/// passes the token on as a password (PAM_IGNORE). No real issuer writes such a header; the
/// check and the module disagreed. Fixed: looks_like_jws decodes the whole header.
#[test]
fn header_after_twelve_whitespace_bytes_still_looks_like_a_token() {
    targets::policy(b"\x00\x2f\x86");
    let header = format!(
        "{}{{\"alg\":\"EdDSA\",\"kid\":\"test-ed\"}}",
        " ".repeat(12)
    );
    let token = keys::sign_bytes(
        header.as_bytes(),
        keys::gitlab_claims("alice").to_string().as_bytes(),
        Key::Ed,
        jsonwebtoken::Algorithm::EdDSA,
    );
    assert_eq!(token_reason(&token), None, "the decision allows it");
    assert!(idtoken_core::jws::looks_like_jws(&token));
}
