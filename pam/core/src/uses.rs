//! `max_uses`: how often each token (iss, jti) has logged in on this host, or on every
//! host sharing `state_dir`.
//!
//! One file per token and use, created with `O_CREAT|O_EXCL`: exclusive creation is atomic
//! on local filesystems and on NFSv3+, GPFS and Lustre, where advisory locks may not be
//! honoured across nodes. Use N of a token is the file `<exp>-<hash>.<N>`; a login takes
//! the first free N up to max_uses, so two racing logins can never both take the last one.
//! The expiry in the name lets pruning work from a directory listing alone.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The most uses `max_uses` may allow; bounds the per-login work.
pub const MAX_USES_LIMIT: u32 = 1000;

/// The record of token uses.
pub trait UseLedger {
    /// How many uses of the token are recorded, counting no further than `max`.
    fn count(&self, token: &TokenId, max: u32) -> Result<u32, String>;
    /// Records one more use if fewer than `max` are recorded: `Ok(true)` when recorded,
    /// `Ok(false)` when the token has used them all.
    fn record(&self, token: &TokenId, max: u32, now: i64) -> Result<bool, String>;
}

/// What identifies a token for counting: a digest of issuer and jti (the jti is the
/// sender's text and never becomes a path itself), and its expiry for pruning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenId {
    pub digest: String,
    pub exp: i64,
}

impl TokenId {
    pub fn new(iss: &str, jti: &str, exp: i64) -> TokenId {
        let mut h = Sha256::new();
        h.update(iss.as_bytes());
        h.update([0u8]);
        h.update(jti.as_bytes());
        let digest = h
            .finalize()
            .iter()
            .fold(String::with_capacity(64), |mut s, b| {
                s.push_str(&format!("{b:02x}"));
                s
            });
        TokenId { digest, exp }
    }

    fn file(&self, dir: &Path, n: u32) -> PathBuf {
        dir.join(format!("{}-{}.{n}", self.exp, self.digest))
    }
}

/// The ledger in `state_dir`.
#[derive(Debug, Clone)]
pub struct DiskLedger {
    pub dir: PathBuf,
    /// Seconds after exp that an entry is kept (the leeway: a token is usable that long).
    pub keep_after_exp: i64,
}

impl DiskLedger {
    /// Checks the directory is safe to count in: a directory, owned by root or this
    /// process, not writable by group or others. Creates it (0700) when `create` is set.
    fn checked_dir(&self, create: bool) -> Result<(), String> {
        let d = &self.dir;
        let meta = match fs::symlink_metadata(d) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound && create => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(d)
                    .map_err(|e| {
                        format!(
                            "{}: cannot create the max_uses state directory: {e}",
                            d.display()
                        )
                    })?;
                fs::symlink_metadata(d).map_err(|e| format!("{}: {e}", d.display()))?
            }
            Err(e) => {
                return Err(format!(
                    "{}: max_uses state directory unusable: {e}",
                    d.display()
                ));
            }
        };
        if !meta.is_dir() {
            return Err(format!(
                "{}: max_uses state_dir is not a directory",
                d.display()
            ));
        }
        if meta.uid() != 0 && meta.uid() != uzers::get_effective_uid() {
            return Err(format!(
                "{}: owned by uid {}; fix: chown root {}",
                d.display(),
                meta.uid(),
                d.display()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "{}: writable by group or others; fix: chmod 0700 {}",
                d.display(),
                d.display()
            ));
        }
        Ok(())
    }

    /// Removes the entries of tokens expired (plus the leeway) before `now`.
    pub fn prune(&self, now: i64) -> Result<usize, String> {
        let mut removed = 0usize;
        let entries =
            fs::read_dir(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(exp) = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|e| e.parse::<i64>().ok())
            else {
                continue;
            };
            if exp.saturating_add(self.keep_after_exp) < now
                && fs::remove_file(entry.path()).is_ok()
            {
                removed = removed.saturating_add(1);
            }
        }
        Ok(removed)
    }
}

impl UseLedger for DiskLedger {
    fn count(&self, token: &TokenId, max: u32) -> Result<u32, String> {
        if fs::symlink_metadata(&self.dir).is_err() {
            return Ok(0); // nothing recorded yet on this host
        }
        self.checked_dir(false)?;
        let mut n = 0u32;
        while n < max && token.file(&self.dir, n.saturating_add(1)).exists() {
            n = n.saturating_add(1);
        }
        Ok(n)
    }

    fn record(&self, token: &TokenId, max: u32, now: i64) -> Result<bool, String> {
        self.checked_dir(true)?;
        for n in 1..=max {
            let path = token.file(&self.dir, n);
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(_) => {
                    // Prune now and then (1 login in 16, chosen by the digest), so the
                    // directory stays small without a listing on every login.
                    if token.digest.ends_with('0') {
                        let _ = self.prune(now);
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("{}: cannot record a use: {e}", path.display())),
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ledger in a fresh directory, removed when the test ends (also when it fails).
    struct TempLedger(DiskLedger);

    impl std::ops::Deref for TempLedger {
        type Target = DiskLedger;
        fn deref(&self) -> &DiskLedger {
            &self.0
        }
    }

    impl Drop for TempLedger {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0.dir);
        }
    }

    fn ledger(tag: &str) -> TempLedger {
        let dir = std::env::temp_dir().join(format!("idtoken-uses-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        TempLedger(DiskLedger {
            dir,
            keep_after_exp: 60,
        })
    }

    #[test]
    fn counts_records_and_refuses_past_max() {
        let l = ledger("max");
        let t = TokenId::new("https://g", "jti-1", 2000);
        assert_eq!(l.count(&t, 2).unwrap(), 0);
        assert!(l.record(&t, 2, 1000).unwrap());
        assert_eq!(l.count(&t, 2).unwrap(), 1);
        assert!(l.record(&t, 2, 1000).unwrap());
        assert!(!l.record(&t, 2, 1000).unwrap());
        assert_eq!(l.count(&t, 2).unwrap(), 2);
        let other = TokenId::new("https://g", "jti-2", 2000);
        assert!(l.record(&other, 2, 1000).unwrap());
        let mode = fs::metadata(&l.dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn digest_separates_issuer_and_jti() {
        assert_ne!(
            TokenId::new("ab", "c", 1).digest,
            TokenId::new("a", "bc", 1).digest
        );
        assert!(!TokenId::new("a", "../../x", 1).digest.contains('/'));
    }

    #[test]
    fn prune_removes_only_expired() {
        let l = ledger("prune");
        let old = TokenId::new("i", "old", 100);
        let live = TokenId::new("i", "live", 10_000);
        l.record(&old, 3, 0).unwrap();
        l.record(&live, 3, 0).unwrap();
        assert_eq!(l.prune(1000).unwrap(), 1);
        assert_eq!(l.count(&old, 3).unwrap(), 0);
        assert_eq!(l.count(&live, 3).unwrap(), 1);
    }

    #[test]
    fn unsafe_directory_is_an_error() {
        use std::os::unix::fs::PermissionsExt;
        let l = ledger("unsafe");
        fs::create_dir_all(&l.dir).unwrap();
        fs::set_permissions(&l.dir, fs::Permissions::from_mode(0o777)).unwrap();
        let t = TokenId::new("i", "j", 1);
        assert!(l.record(&t, 1, 0).unwrap_err().contains("chmod 0700"));
    }
}
