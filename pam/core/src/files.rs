//! Reading the files the login path trusts: the config, the key caches and user maps.
//!
//! A file that decides who may log in as whom must not be writable by anyone but its owner,
//! and its owner must be root or the process itself (so tests and `idtoken check` run by an
//! unprivileged admin work on their own copies). Symlinks are refused rather than followed,
//! so a file cannot be swapped for one elsewhere.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What is wrong with a file the login path needs, with the path, for the sysadmin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    pub path: PathBuf,
    pub kind: FileProblemKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileProblemKind {
    Missing,
    Symlink,
    NotRegular,
    UnsafeOwner { uid: u32 },
    UnsafeMode { mode: u32 },
    TooLarge { limit: u64 },
    Unreadable(String),
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        match &self.kind {
            FileProblemKind::Missing => write!(
                f,
                "{p}: does not exist; create it (see idtoken.toml(5)) or fix the path"
            ),
            FileProblemKind::Symlink => write!(
                f,
                "{p}: is a symbolic link, which is refused; put the real file at this path"
            ),
            FileProblemKind::NotRegular => write!(
                f,
                "{p}: is not a regular file; put a regular file at this path"
            ),
            FileProblemKind::UnsafeOwner { uid } => write!(
                f,
                "{p}: is owned by uid {uid}, neither root nor this process; fix: chown root:root {p}"
            ),
            FileProblemKind::UnsafeMode { mode } => write!(
                f,
                "{p}: is writable by group or others (mode {mode:04o}); fix: chmod go-w {p}"
            ),
            FileProblemKind::TooLarge { limit } => {
                write!(f, "{p}: is larger than {limit} bytes, which is refused")
            }
            FileProblemKind::Unreadable(e) => write!(
                f,
                "{p}: cannot be read: {e}; it must be readable by the login service (root:root, mode 0644)"
            ),
        }
    }
}

impl std::error::Error for FileProblem {}

/// Reads a file that the login path trusts, after checking it is a regular file (not a
/// symlink), owned by root or by this process's effective uid, not writable by group or
/// others, and at most `limit` bytes long. The checks are made on the open descriptor, so
/// the file checked is the file read.
pub fn read_trusted(path: &Path, limit: u64) -> Result<Vec<u8>, FileProblem> {
    let problem = |kind| FileProblem {
        path: path.to_path_buf(),
        kind,
    };
    let file = File::options()
        .read(true)
        // O_NOFOLLOW: a symlink is an error (ELOOP), never followed.
        // O_NONBLOCK: opening a FIFO planted at the path must not hang the login.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => problem(FileProblemKind::Missing),
            Some(libc::ELOOP) => problem(FileProblemKind::Symlink),
            _ => problem(FileProblemKind::Unreadable(e.to_string())),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| problem(FileProblemKind::Unreadable(e.to_string())))?;
    check_metadata(&meta).map_err(problem)?;
    if meta.len() > limit {
        return Err(problem(FileProblemKind::TooLarge { limit }));
    }
    // Sized from the fstat (plus one byte, so the end-of-file read needs no growth): the
    // file is read in one read(2) and one that returns 0, rather than in growing chunks.
    let expected = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
    let mut bytes = Vec::with_capacity(expected);
    // Read at most limit+1 bytes: a file growing after the fstat is caught too.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| problem(FileProblemKind::Unreadable(e.to_string())))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(problem(FileProblemKind::TooLarge { limit }));
    }
    Ok(bytes)
}

/// The ownership and mode rules of the SPEC, on metadata already obtained.
pub fn check_metadata(meta: &std::fs::Metadata) -> Result<(), FileProblemKind> {
    if meta.file_type().is_symlink() {
        return Err(FileProblemKind::Symlink);
    }
    if !meta.file_type().is_file() {
        return Err(FileProblemKind::NotRegular);
    }
    let uid = meta.uid();
    if uid != 0 && uid != uzers::get_effective_uid() {
        return Err(FileProblemKind::UnsafeOwner { uid });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(FileProblemKind::UnsafeMode { mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh directory, removed when the test ends (also when it fails).
    struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for TempDir {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_dir(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("idtoken-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    #[test]
    fn reads_a_safe_file() {
        let d = temp_dir("safe");
        let p = d.join("f");
        std::fs::write(&p, b"hello").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_trusted(&p, 100).unwrap(), b"hello");
    }

    #[test]
    fn refuses_group_or_world_writable() {
        let d = temp_dir("mode");
        let p = d.join("f");
        std::fs::write(&p, b"x").unwrap();
        for mode in [0o664, 0o646, 0o666] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_trusted(&p, 100).unwrap_err();
            assert_eq!(e.kind, FileProblemKind::UnsafeMode { mode });
            assert!(e.to_string().contains("chmod go-w"));
        }
    }

    #[test]
    fn refuses_symlink_directory_missing_and_oversize() {
        let d = temp_dir("kinds");
        let real = d.join("real");
        std::fs::write(&real, b"0123456789").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(
            read_trusted(&link, 100).unwrap_err().kind,
            FileProblemKind::Symlink
        );
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            read_trusted(&d, 100).unwrap_err().kind,
            FileProblemKind::NotRegular
        );
        assert_eq!(
            read_trusted(&d.join("absent"), 100).unwrap_err().kind,
            FileProblemKind::Missing
        );
        assert_eq!(
            read_trusted(&real, 5).unwrap_err().kind,
            FileProblemKind::TooLarge { limit: 5 }
        );
    }
}
