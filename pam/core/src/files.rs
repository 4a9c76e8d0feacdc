//! Reading the files the login path trusts: the config, the key caches and user maps.
//!
//! A file that decides who may log in as whom must not be writable by anyone but its owner,
//! and its owner must be root or the process itself (so tests and `idtoken check` run by an
//! unprivileged admin work on their own copies). Symlinks are refused rather than followed,
//! so a file cannot be swapped for one elsewhere.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags};

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
    NotDirectory,
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
            FileProblemKind::NotDirectory => write!(
                f,
                "{p}: is not a directory (or not an absolute path of real directories, no \
                 symlinks or ..); use the real path"
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
        .map_err(|e| problem(open_problem(e.raw_os_error())))?;
    read_checked(file, path, limit)
}

/// Like [`read_trusted`], and every directory from `/` down to the file passes
/// [`open_trusted_dir`]'s checks too, the file being opened from that directory's
/// descriptor: whoever could write a directory on the way could otherwise swap an older
/// file (a key cache with a withdrawn key) back in. A relative path (an admin's
/// `--config idtoken.toml`) is taken from the working directory, whose path getcwd(3)
/// gives without symlinks.
pub fn read_trusted_in_safe_dir(path: &Path, limit: u64) -> Result<Vec<u8>, FileProblem> {
    let problem = |kind| FileProblem {
        path: path.to_path_buf(),
        kind,
    };
    let absolute;
    let path = if path.is_relative() {
        let cwd = std::env::current_dir()
            .map_err(|e| problem(FileProblemKind::Unreadable(e.to_string())))?;
        absolute = cwd.join(path);
        absolute.as_path()
    } else {
        path
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(problem(FileProblemKind::NotRegular));
    };
    let dir_fd = open_trusted_dir(dir, DirUse::Shared, false)?;
    let fd = rustix::fs::openat(
        &dir_fd,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| problem(open_problem(Some(e.raw_os_error()))))?;
    read_checked(File::from(fd), path, limit)
}

fn open_problem(errno: Option<i32>) -> FileProblemKind {
    match errno {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => FileProblemKind::Missing,
        Some(libc::ELOOP) => FileProblemKind::Symlink,
        Some(e) => FileProblemKind::Unreadable(std::io::Error::from_raw_os_error(e).to_string()),
        None => FileProblemKind::Unreadable("cannot be opened".to_string()),
    }
}

/// The checks of [`read_trusted`] on a file already open, then its bytes.
fn read_checked(file: File, path: &Path, limit: u64) -> Result<Vec<u8>, FileProblem> {
    let problem = |kind| FileProblem {
        path: path.to_path_buf(),
        kind,
    };
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

/// Who the last directory of a trusted path is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirUse {
    /// Holds files other users must not replace (a key cache): the SPEC's rule for every
    /// directory applies to it too, so a sticky directory such as /tmp is accepted.
    Shared,
    /// Only this service writes in it (state_dir): not writable by group or others at all,
    /// so nobody else can plant entries in it either.
    Private,
}

/// Opens the directory at `path` after checking every directory from `/` down to it, the
/// way sshd's StrictModes checks a home: each owned by root or this process, none writable
/// by group or others unless it has the sticky bit (where nobody can rename or remove what
/// root owns). Each step is opened from the descriptor of the one before with O_NOFOLLOW,
/// and checked on its own descriptor, so the directory returned is the one checked, and a
/// symlink or `..` on the way is refused. With `create`, missing directories are made
/// (mode 0700).
pub fn open_trusted_dir(path: &Path, last: DirUse, create: bool) -> Result<OwnedFd, FileProblem> {
    let problem = |at: &Path, kind| FileProblem {
        path: at.to_path_buf(),
        kind,
    };
    if !path.is_absolute() {
        return Err(problem(path, FileProblemKind::NotDirectory));
    }
    let names: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::RootDir | Component::CurDir => None,
            Component::ParentDir | Component::Prefix(_) => Some(Err(())),
        })
        .collect::<Result<_, ()>>()
        .map_err(|()| problem(path, FileProblemKind::NotDirectory))?;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let root = Path::new("/");
    let mut fd = rustix::fs::open(root, flags, Mode::empty())
        .map_err(|e| problem(root, dir_open_problem(e)))?;
    check_dir(&fd, root, DirUse::Shared)?;
    let mut walked = PathBuf::from("/");
    let last_index = names.len().saturating_sub(1);
    for (i, name) in names.iter().enumerate() {
        walked.push(name);
        let next = match rustix::fs::openat(&fd, *name, flags, Mode::empty()) {
            Err(rustix::io::Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&fd, *name, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(problem(&walked, dir_open_problem(e))),
                }
                rustix::fs::openat(&fd, *name, flags, Mode::empty())
            }
            other => other,
        }
        .map_err(|e| problem(&walked, dir_open_problem(e)))?;
        let rule = if i == last_index {
            last
        } else {
            DirUse::Shared
        };
        check_dir(&next, &walked, rule)?;
        fd = next;
    }
    Ok(fd)
}

fn dir_open_problem(e: rustix::io::Errno) -> FileProblemKind {
    match e {
        rustix::io::Errno::NOENT => FileProblemKind::Missing,
        // A symlink opened with O_NOFOLLOW|O_DIRECTORY, or a file on the way.
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => FileProblemKind::NotDirectory,
        e => FileProblemKind::Unreadable(std::io::Error::from(e).to_string()),
    }
}

/// One directory of a trusted path, checked on its descriptor.
fn check_dir(fd: &OwnedFd, at: &Path, rule: DirUse) -> Result<(), FileProblem> {
    let problem = |kind| FileProblem {
        path: at.to_path_buf(),
        kind,
    };
    let st = rustix::fs::fstat(fd).map_err(|e| {
        problem(FileProblemKind::Unreadable(
            std::io::Error::from(e).to_string(),
        ))
    })?;
    let uid = st.st_uid;
    if uid != 0 && uid != rustix::process::geteuid().as_raw() {
        return Err(problem(FileProblemKind::UnsafeOwner { uid }));
    }
    let mode = st.st_mode & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && (rule == DirUse::Private || !sticky) {
        return Err(problem(FileProblemKind::UnsafeMode { mode }));
    }
    Ok(())
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
    if uid != 0 && uid != rustix::process::geteuid().as_raw() {
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

    /// The attack: whoever can write the key cache's directory swaps an older cache (with
    /// a withdrawn key) back in after a refresh. Such a directory makes the cache unusable.
    #[test]
    fn a_cache_in_a_directory_others_can_write_is_refused_unless_sticky() {
        let d = temp_dir("cachedir");
        let p = d.join("gitlab.jwks.json");
        std::fs::write(&p, b"{}").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        for mode in [0o777, 0o775] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_trusted_in_safe_dir(&p, 100).unwrap_err();
            assert_eq!(e.path, *d);
            assert_eq!(e.kind, FileProblemKind::UnsafeMode { mode });
            // The plain read of the same file does not look at the directory.
            assert!(read_trusted(&p, 100).is_ok());
        }
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(read_trusted_in_safe_dir(&p, 100).unwrap(), b"{}");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(read_trusted_in_safe_dir(&p, 100).unwrap(), b"{}");
        let link = d.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&*d, &link).unwrap();
        let e = read_trusted_in_safe_dir(&link.join("gitlab.jwks.json"), 100).unwrap_err();
        assert_eq!(e.kind, FileProblemKind::NotDirectory);
        let _ = std::fs::remove_file(&link);
    }
}
