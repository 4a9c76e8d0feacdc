//! A throwaway directory holding a config, key caches and a use ledger, with the file
//! modes the login path demands (0644 files, 0755 directories).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::keys::{self, AUDIENCE, ISSUER, Key};

pub struct Sandbox {
    pub dir: PathBuf,
}

impl Sandbox {
    /// A fresh, empty sandbox under the system temp dir; `tag` names it.
    pub fn new(tag: &str) -> Sandbox {
        let base = std::env::var_os("IDTOKEN_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("idtoken-{tag}-{}-{}", std::process::id(), unique()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        set_mode(&dir, 0o755);
        Sandbox { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes a file with mode 0644 and returns its path.
    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        set_mode(&p, 0o644);
        p
    }

    /// The key cache `gitlab.jwks.json` holding these test keys.
    pub fn key_cache(&self, keys: &[Key]) -> PathBuf {
        self.write("gitlab.jwks.json", keys::jwks(keys).to_string().as_bytes())
    }

    /// A config with one issuer `gitlab` (the test issuer, cache in this sandbox, state_dir
    /// here too), `defaults` and `rules` appended verbatim. Returns the config's path.
    pub fn config(&self, defaults: &str, rules: &str) -> PathBuf {
        // The suite's PAM services have test names (sshd runs as `sshd-idtoken-test`,
        // libpam tests as `test`, `dbg`, ...), so its rules apply to every service unless a
        // test says otherwise; the `[defaults] services` default (sshd, su) is tested where
        // it is the subject, with configs that leave it out.
        let services = if defaults.contains("services") {
            ""
        } else {
            "services = [\"*\"]\n"
        };
        let text = format!(
            "[defaults]\nstate_dir = \"{state}\"\n{services}{defaults}\n\n[[issuer]]\nname = \"gitlab\"\nurl = \"{ISSUER}\"\n\
             audiences = [\"{AUDIENCE}\"]\njwks_cache = \"{cache}\"\n\n{rules}\n",
            state = self.path("uses").display(),
            cache = self.path("gitlab.jwks.json").display(),
        );
        self.write("idtoken.toml", text.as_bytes())
    }

    /// A standard setup: key A in the cache, and a rule letting any token of the test
    /// issuer log in as its own user_login.
    pub fn standard(&self) -> PathBuf {
        self.key_cache(&[Key::A]);
        self.config(
            "",
            "[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n",
        )
    }

    /// Writes a token to a file (0600) and returns its path.
    pub fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let p = self.write(name, token.as_bytes());
        set_mode(&p, 0o600);
        p
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::env::var_os("IDTOKEN_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn set_mode(p: &Path, mode: u32) {
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Parses the JSON object on the last line of a command's stdout.
pub fn last_json_line(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nfull output:\n{text}"))
}
