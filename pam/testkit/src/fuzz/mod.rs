//! The fuzz harness: the bodies of the targets in fuzz/fuzz_targets ([`targets`]), the fixed
//! world they decide in ([`world`]: config, key caches, user map, accounts, "now"), the
//! invariants every decision must keep ([`checks`]), and a reference implementation of the
//! SPEC's decision order ([`oracle`]) that every decision is compared with. A disagreement,
//! a panic, or a broken invariant is a crash for libFuzzer.
//!
//! It lives in the test kit, not in fuzz/, so that pam/core/tests/fuzz_regressions.rs can
//! replay inputs exactly as the targets do without building libFuzzer. Nothing here touches
//! the file system or the network, and "now" is fixed, so a crash replays exactly.

pub mod checks;
pub mod oracle;
pub mod targets;
pub mod world;
