//! `token`: arbitrary bytes as the answer to the `ID token: ` prompt, through the whole
//! decision (`idtoken_core::decision::evaluate`) with the harness's fixed config and fakes.
//!
//! Invariants: no panic; `verified` exactly when the decision got past the signature; an
//! allow only for a token that parses, verifies and has no reason; audit line and trace free
//! of control characters; and the verdict equals the reference decision of the SPEC
//! (`idtoken_testkit::fuzz::oracle`), which re-checks parsing, issuer, algorithm, key, signature (with
//! keys it reads itself), claims and rules independently.
//!
//! The body is `idtoken_fuzz::targets::token` (pam/testkit/src/fuzz/targets.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| idtoken_fuzz::targets::token(data));
