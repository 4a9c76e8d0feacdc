//! `config`: arbitrary text as each of the files the module reads: the config
//! (`Config::parse`), a key cache (`jwks::parse`) and a user map (`usermap::parse`). A config
//! that loads is then used for a real decision on a valid token of the test issuer.
//!
//! Invariants: no panic; a config that loads satisfies what the SPEC promises of a loaded
//! config (issuer names [a-z0-9_-]+ and unique, urls unique, non-empty audiences, no none/HS*
//! algorithm, rules named and unique, known issuers, sane globs and bounds); a config that
//! does not load gives at least one problem, each with a plausible line; the decision with
//! the fuzzed config equals the reference decision; a parsed key set has unique kids, at
//! most 64 keys and no RSA key under 2048 bits.
//!
//! The body is `idtoken_fuzz::targets::config` (pam/testkit/src/fuzz/targets.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| idtoken_fuzz::targets::config(data));
