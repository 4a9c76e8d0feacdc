//! `token`: arbitrary bytes as the answer to the `ID token: ` prompt, through the whole
//! decision (`idtoken_core::decision::evaluate`) with the harness's fixed config and fakes.
//!
//! Invariants: no panic; `verified` exactly when the decision got past the signature; an
//! allow only for a token that parses, verifies and has no reason; audit line and trace free
//! of control characters; and the verdict equals the reference decision of the SPEC
//! (`idtoken_fuzz::oracle`), which re-checks parsing, issuer, algorithm, key, signature (with
//! keys it reads itself), claims and rules independently.
#![no_main]

use idtoken_core::decision::UseMode;
use idtoken_core::jws;
use idtoken_fuzz as h;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let token: &str = &token;
    // The PAM module's first question: is this a token attempt at all?
    let _ = jws::looks_like_jws(token);
    let (account, service) = h::request_of(token);
    let config = h::config();
    let d = h::decide(config, token, &account, &service, UseMode::Record);
    h::check_decision_invariants(&d);
    if d.allowed() {
        let parsed = jws::parse(token);
        assert!(parsed.is_ok(), "allowed, yet jws::parse refuses it");
        assert!(d.verified && d.reason().is_none());
    }
    h::check_against_oracle(config, token, &account, &service, &d);
});
