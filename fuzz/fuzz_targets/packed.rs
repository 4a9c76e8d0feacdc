//! `packed`: packed tokens (pam_idtoken(8) PACKED TOKENS), as an answer as it is, or (after
//! a NUL) as edits of the packed stream of an allowed token.
//!
//! Checks: the core's unpacking equals the reference unpacker's (another inflater), or both
//! refuse; what unpacks packs again to the same JWS; what does not unpack is `malformed`;
//! the decision agrees with the reference; the unedited token is allowed and an edited one
//! only if it still unpacks to the very token that was signed.
//!
//! The body is `idtoken_fuzz::targets::packed` (pam/testkit/src/fuzz/targets.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| idtoken_fuzz::targets::packed(data));
