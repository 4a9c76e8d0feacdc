//! Test support for pam_idtoken, shared by the core's tests and benches, the end-to-end
//! tests and the fuzz harness, so that each stand-in exists once: the test keys and token
//! minting ([`keys`]), in-memory key store, accounts and use ledger ([`fakes`]), the
//! standard test site (accounts, config, key cache, token: [`site`]) and the fuzz harness
//! ([`fuzz`]). Test code: it may unwrap and panic, and nothing that ships depends on it.

pub mod fakes;
pub mod fuzz;
pub mod keys;
pub mod site;
