//! Helpers for the end-to-end tests: where the built artifacts are, test keys and token
//! minting, and sandboxes holding a config and key cache with safe permissions.
//!
//! The tests drive the real binaries (`target/<profile>/idtoken`, `libpam_idtoken.so`);
//! `tests/run-all` builds the workspace before running them.

pub mod accounts;
pub mod bench;
pub mod cli;
pub mod directory;
pub mod docs;
pub mod https;
pub mod keys;
pub mod libpam;
pub mod node;
pub mod pam;
pub mod sandbox;
pub mod sshd;
pub mod syslog;

use std::path::PathBuf;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The directory cargo builds into for this profile (honours CARGO_TARGET_DIR).
pub fn target_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    base.join(profile)
}

/// A built artifact, or a panic that says how to build it.
pub fn artifact(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace` first (tests/run-all does)",
        p.display()
    );
    p
}

/// The `idtoken` binary.
pub fn idtoken_bin() -> PathBuf {
    artifact("idtoken")
}

/// Whether this run must not skip anything: CI sets CI=true.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips a test whose prerequisite is missing, loudly; under CI=true a missing
/// prerequisite is a failure instead.
#[macro_export]
macro_rules! require {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            let why = format!($($why)+);
            if $crate::ci() {
                panic!("prerequisite missing under CI=true: {why}");
            }
            eprintln!("SKIPPED (not under CI): {why}");
            return;
        }
    };
}
