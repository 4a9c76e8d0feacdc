//! Running the built `idtoken` command, with the test accounts visible through NSS by
//! libnss-wrapper (LD_PRELOAD), so `check` resolves them without root or the host's /etc.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::accounts;
use crate::sandbox::{Sandbox, last_json_line};

/// Where Debian's libnss-wrapper lives, if installed.
pub fn nss_wrapper() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so",
        "/usr/lib/aarch64-linux-gnu/libnss_wrapper.so",
        "/usr/lib64/libnss_wrapper.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// `idtoken` with the test accounts of `sandbox` (written on first use) through nss_wrapper.
pub fn idtoken(sandbox: &Sandbox) -> Command {
    let etc = sandbox.path("etc");
    if !etc.join("passwd").exists() {
        accounts::write_etc(&sandbox.dir);
    }
    let mut c = Command::new(crate::idtoken_bin());
    if let Some(lib) = nss_wrapper() {
        c.env("LD_PRELOAD", lib)
            .env("NSS_WRAPPER_PASSWD", etc.join("passwd"))
            .env("NSS_WRAPPER_GROUP", etc.join("group"));
    }
    c
}

/// Runs `idtoken check --json` on `token` for `user` at `at`, the token on stdin.
pub fn check(
    sandbox: &Sandbox,
    config: &Path,
    token: &str,
    user: &str,
    at: i64,
    extra: &[&str],
) -> (i32, Value, Output) {
    let mut cmd = idtoken(sandbox);
    cmd.arg("check")
        .arg("--json")
        .arg("--config")
        .arg(config)
        .args(["--user", user, "--at", &at.to_string()])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("idtoken: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(token.as_bytes());
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("idtoken: {e}"));
    let code = out.status.code().unwrap_or(-1);
    let json = last_json_line(&out.stdout);
    (code, json, out)
}
