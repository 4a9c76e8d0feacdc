//! Helpers for the end-to-end tests: where the built artifacts are, test keys and token
//! minting, and sandboxes holding a config and key cache with safe permissions.
//!
//! The tests drive the real binaries (`target/<profile>/idtoken`, `libpam_idtoken.so`);
//! `tests/run-all` builds the workspace before running them.

pub mod accounts;
pub mod bench;
pub mod child;
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

/// Says that a test was skipped where `cargo test` shows it: libtest captures what a
/// passing test prints with `eprintln!` (a skipped test would read just `ok`), but not
/// what is written to the process's stderr directly.
pub fn skip_notice(why: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().filter(|n| *n != "main").unwrap_or("a test");
    let mut err = std::io::stderr().lock();
    // Nothing to do if stderr is closed: the test still returns early.
    let _ = writeln!(err, "SKIPPED (not under CI): {test}: {why}");
    let _ = err.flush();
}

/// Skips a test whose prerequisite is missing, loudly (a `SKIPPED` line in `cargo test`'s
/// output, next to the test's `ok`); under CI=true a missing prerequisite is a failure
/// instead.
#[macro_export]
macro_rules! require {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            let why = format!($($why)+);
            if $crate::ci() {
                panic!("prerequisite missing under CI=true: {why}");
            }
            $crate::skip_notice(&why);
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    /// Run by `a_skipped_test_says_so_in_cargo_tests_output` in a child test process only.
    #[test]
    fn require_in_a_child() {
        if std::env::var_os("IDTOKEN_E2E_REQUIRE_CHILD").is_none() {
            return;
        }
        require!(1 + 1 == 3, "the self-test's missing prerequisite");
        panic!("require! let a test with a missing prerequisite go on");
    }

    fn child(ci: Option<&str>) -> (bool, String) {
        let exe = std::env::current_exe().expect("own test binary");
        let mut cmd = Command::new(exe);
        // No --nocapture: the child captures output as `cargo test` does.
        cmd.args(["--exact", "tests::require_in_a_child", "--test-threads=1"])
            .env("IDTOKEN_E2E_REQUIRE_CHILD", "1")
            .env_remove("CI");
        if let Some(v) = ci {
            cmd.env("CI", v);
        }
        let out = cmd.output().expect("run own test binary");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    #[test]
    fn a_skipped_test_says_so_in_cargo_tests_output_and_fails_under_ci() {
        let (ok, text) = child(None);
        assert!(ok, "{text}");
        assert!(text.contains("1 passed"), "the child ran no test: {text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("SKIPPED (not under CI): "))
            .unwrap_or_else(|| panic!("no SKIPPED line where cargo test shows it: {text}"));
        assert!(
            line.contains("require_in_a_child")
                && line.ends_with("the self-test's missing prerequisite"),
            "{line}"
        );
        let (ok, text) = child(Some("true"));
        assert!(!ok, "a missing prerequisite passed under CI=true: {text}");
        assert!(
            text.contains(
                "prerequisite missing under CI=true: the self-test's missing prerequisite"
            ),
            "{text}"
        );
    }
}
