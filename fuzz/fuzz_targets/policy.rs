//! `policy`: structure-aware. The input is `ACCOUNT \n SERVICE \n CLAIMS`: the requested
//! account, the PAM service, and the payload bytes, which the harness signs with the fuzz
//! Ed25519 key (EdDSA, kid test-ed; RSA signing would cost ~60 ms an input under the fuzz
//! build's instrumentation) so that every input gets past the signature into the claim
//! checks and the rules.
//!
//! Checks, each against the reference in `idtoken_testkit::fuzz::oracle`:
//! - `glob::matches` on fuzzed patterns and texts (the two lines, and the claims' texts);
//! - `policy::token_conditions` of every configured rule on the claims;
//! - the whole decision on the signed token: malformed exactly when the payload is not a
//!   JSON object, verified whenever iss is the test issuer, alg_not_allowed for the other
//!   issuers (they accept RS256 only), and the same verdict and granting rule as the
//!   reference.
//!
//! The body is `idtoken_fuzz::targets::policy` (pam/testkit/src/fuzz/targets.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| idtoken_fuzz::targets::policy(data));
