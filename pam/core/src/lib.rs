//! The decision core of pam_idtoken.
//!
//! Everything that decides whether an ID token may log in lives here, with no FFI, no
//! network and no clock: "now" is a parameter. The data flows one way:
//! raw token → [`jws`] parsing → issuer and key selection → signature → claim checks →
//! [`policy`] → [`decision::Decision`]. The PAM module and the `idtoken` command are thin
//! shells around [`decision::evaluate`].
//!
//! The login path must never panic: clippy forbids `unwrap`, `expect`, `panic!`, indexing
//! and unchecked arithmetic in this crate outside tests.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::string_slice
    )
)]

pub mod accounts;
pub mod audit;
pub mod claims;
pub mod config;
pub mod decision;
pub mod files;
pub mod glob;
pub mod jwks;
pub mod jws;
pub mod keystore;
pub mod net;
pub mod packed;
pub mod policy;
pub mod reason;
pub mod revocations;
pub mod sanitize;
pub mod session_limits;
pub mod session_record;
pub mod signature;
pub mod timefmt;
pub mod usermap;
pub mod uses;

/// Tokens larger than this are refused before any parsing (SPEC: 64 KiB).
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;
