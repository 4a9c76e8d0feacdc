//! Test keys and token minting: the test kit's (`idtoken_testkit::keys`, shared with the
//! core's tests and the fuzz harness), plus what only live end-to-end runs need: the
//! fixture directory on disk and tokens valid at the real clock's "now".

use std::path::PathBuf;

use serde_json::{Value, json};

pub use idtoken_testkit::keys::*;

pub fn fixtures() -> PathBuf {
    crate::workspace_root().join("tests/fixtures")
}

/// Seconds since the epoch: the module reads the real clock, so live tokens use it too.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// GitLab-shaped claims for `user`, issued now, valid 300 s, with this `jti`.
pub fn live_claims(user: &str, jti: &str) -> Value {
    let n = now();
    let c = with(gitlab_claims(user), "iat", json!(n));
    let c = with(with(c, "nbf", json!(n - 5)), "exp", json!(n + 300));
    with(c, "jti", json!(jti))
}
