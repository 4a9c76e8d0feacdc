//! Replacing a file so that a reader sees the old contents or the new, never a mix, and a
//! crash leaves one of the two on disk: a temporary file in the same directory, written and
//! fsynced, renamed over the target, and the directory fsynced so the rename is durable.
//! The login path opens the key cache at any moment, so this is the only way it is written.
//!
//! [`replace_beyond_links`] does the same in a directory another account may control
//! (node_exporter's textfile directory: Debian's prometheus account owns its parent), where
//! any name may be a planted symlink and any directory on the way may be swapped for one:
//! the directory is reached from `/` one component at a time with O_NOFOLLOW, and the
//! temporary file, the rename and the cleanup act on that directory's descriptor only.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

/// How a replace failed: before the rename (the target is as it was), or after it (the new
/// contents are in place, but the directory fsync that makes the rename durable failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaceError {
    NotReplaced(String),
    NotDurable(String),
}

/// Replaces `path` with `contents`, mode `mode`, owned by root:root when run as root.
/// On an error before the rename the target is untouched and the temporary file removed.
/// Temporary files of an earlier run that was killed mid-write are removed first.
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<(), ReplaceError> {
    use ReplaceError::{NotDurable, NotReplaced};
    let dir = parent_of(path).map_err(NotReplaced)?;
    remove_stale_temps(path);
    let temp = temp_path(path).map_err(NotReplaced)?;
    let result = write_temp(&temp, contents, mode).and_then(|()| {
        std::fs::rename(&temp, path).map_err(|e| {
            format!(
                "cannot rename {} to {}: {e}",
                temp.display(),
                path.display()
            )
        })
    });
    if let Err(why) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(NotReplaced(why));
    }
    // The rename is done; a failed directory fsync only weakens durability across a crash,
    // but it is still reported, since the admin asked for a durable replace.
    File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| {
        NotDurable(format!(
            "{}: cannot fsync the directory: {e}",
            dir.display()
        ))
    })
}

/// Replaces `path` as [`replace`] does, without ever following a symlink: each directory
/// from `/` to the parent of `path` is opened from the one before with O_NOFOLLOW (a symlink
/// anywhere on the way is refused, so a swapped-in link to another directory is never
/// entered), the temporary file is created in that directory's descriptor with
/// O_CREAT|O_EXCL|O_NOFOLLOW (a planted name is never opened), and renamed over the target
/// within the same descriptor (a planted link at the target's name is replaced, not written
/// through). `path` must be absolute, without `..`.
pub fn replace_beyond_links(path: &Path, contents: &[u8], mode: u32) -> Result<(), ReplaceError> {
    let name = path.file_name().unwrap_or_default();
    let temp = temp_name(name, path).map_err(ReplaceError::NotReplaced)?;
    replace_beyond_links_via(path, contents, mode, &temp)
}

/// [`replace_beyond_links`] with the temporary file's name given (tests plant one there).
fn replace_beyond_links_via(
    path: &Path,
    contents: &[u8],
    mode: u32,
    temp: &str,
) -> Result<(), ReplaceError> {
    use ReplaceError::{NotDurable, NotReplaced};
    let (dir_path, name) = split_plain(path).map_err(NotReplaced)?;
    let dir = open_dir_nofollow(&dir_path).map_err(NotReplaced)?;
    remove_stale_temps_at(&dir, name);
    let at =
        |what: &str, e: std::io::Error| format!("{}: {what}: {e}", dir_path.join(temp).display());
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&dir, temp, flags, Mode::from_raw_mode(mode))
        .map_err(|e| NotReplaced(at("cannot create", e.into())))?;
    let written = fill(File::from(fd), contents, mode)
        .map_err(|e| at("cannot write", e))
        .and_then(|()| {
            rustix::fs::renameat(&dir, temp, &dir, name).map_err(|e| {
                format!(
                    "cannot rename {} to {}: {}",
                    dir_path.join(temp).display(),
                    path.display(),
                    std::io::Error::from(e)
                )
            })
        });
    if let Err(why) = written {
        let _ = rustix::fs::unlinkat(&dir, temp, AtFlags::empty());
        return Err(NotReplaced(why));
    }
    rustix::fs::fsync(&dir).map_err(|e| {
        NotDurable(format!(
            "{}: cannot fsync the directory: {}",
            dir_path.display(),
            std::io::Error::from(e)
        ))
    })
}

/// The parent directory and the file name of an absolute path with no `..` in it.
fn split_plain(path: &Path) -> Result<(PathBuf, &OsStr), String> {
    let refuse = |why: &str| format!("{}: {why}", path.display());
    if !path.is_absolute() {
        return Err(refuse("not an absolute path"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(refuse("a path with `..` is not accepted"));
    }
    match (path.parent(), path.components().next_back()) {
        (Some(dir), Some(Component::Normal(name))) => Ok((dir.to_path_buf(), name)),
        _ => Err(refuse("not a file name")),
    }
}

/// Opens `dir` (absolute, no `..`) from `/` one component at a time, each with O_NOFOLLOW.
fn open_dir_nofollow(dir: &Path) -> Result<OwnedFd, String> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut walked = PathBuf::from("/");
    let mut fd = rustix::fs::open("/", flags, Mode::empty())
        .map_err(|e| format!("/: {}", std::io::Error::from(e)))?;
    for c in dir.components() {
        let Component::Normal(name) = c else { continue };
        walked.push(name);
        fd = rustix::fs::openat(&fd, name, flags, Mode::empty()).map_err(|e| match e {
            // O_NOFOLLOW|O_DIRECTORY on a symlink: ELOOP (or ENOTDIR on some filesystems).
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => format!(
                "{}: a symlink or not a directory; give the real path of the directory (symlinks are not followed here)",
                walked.display()
            ),
            e => format!("{}: {}", walked.display(), std::io::Error::from(e)),
        })?;
    }
    Ok(fd)
}

/// Writes `contents` to a new file, sets `mode` exactly (the umask may have narrowed it),
/// gives it to root:root when run as root, and fsyncs it.
fn fill(mut file: File, contents: &[u8], mode: u32) -> std::io::Result<()> {
    file.write_all(contents)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    if uzers::get_effective_uid() == 0 {
        std::os::unix::fs::fchown(&file, Some(0), Some(0))?;
    }
    file.sync_all()
}

/// [`remove_stale_temps`] on a directory's descriptor: entries are looked at without
/// following them, and removing a planted link removes the link only.
fn remove_stale_temps_at(dir: &OwnedFd, name: &OsStr) {
    let Some(name) = name.to_str() else { return };
    let prefix = format!(".{name}.tmp-");
    let Ok(listing) = rustix::fs::Dir::read_from(dir) else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for entry in listing.flatten() {
        let entry_name = entry.file_name();
        if !entry_name.to_str().is_ok_and(|n| n.starts_with(&prefix)) {
            continue;
        }
        let stale = rustix::fs::statat(dir, entry_name, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .and_then(|st| u64::try_from(st.st_mtime).ok())
            .is_some_and(|mtime| now.saturating_sub(mtime) > STALE_TEMP_SECS);
        if stale {
            let _ = rustix::fs::unlinkat(dir, entry_name, AtFlags::empty());
        }
    }
}

/// How old another run's temporary file must be before it counts as left by a run that
/// was killed: a refresh takes seconds, so a minute-old one is not being written.
const STALE_TEMP_SECS: u64 = 600;

/// Removes `.NAME.tmp-*` files beside `path` that a killed run left (older than
/// [`STALE_TEMP_SECS`], so a concurrent run's file in progress is left alone).
fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
            && entry
                .metadata()
                .ok()
                .filter(std::fs::Metadata::is_file)
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > STALE_TEMP_SECS);
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn parent_of(path: &Path) -> Result<PathBuf, String> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Ok(PathBuf::from(".")),
        Some(p) => Ok(p.to_path_buf()),
        None => Err(format!("{}: has no parent directory", path.display())),
    }
}

/// `.NAME.tmp-PID-NANOS` beside the target: same directory, so the rename stays within one
/// filesystem; hidden, so a glob over `*.jwks.json` (or node_exporter's `*.prom`) never
/// picks it up.
fn temp_path(path: &Path) -> Result<PathBuf, String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    Ok(path.with_file_name(temp_name(name, path)?))
}

fn temp_name(name: &OsStr, path: &Path) -> Result<String, String> {
    let name = name
        .to_str()
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Ok(format!(".{name}.tmp-{}-{nanos}", std::process::id()))
}

fn write_temp(temp: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    let at = |e: std::io::Error| format!("{}: {e}", temp.display());
    let file = OpenOptions::new()
        .write(true)
        .create_new(true) // never reuse, never follow a planted symlink
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(temp)
        .map_err(at)?;
    fill(file, contents, mode).map_err(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_with_mode_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("idtoken-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k.jwks.json");
        std::fs::write(&p, b"old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        replace(&p, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o644);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "a temporary file was left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stale_temporary_files_of_a_killed_run_are_removed() {
        let dir = std::env::temp_dir().join(format!("idtoken-atomic-s-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k.jwks.json");
        let stale = dir.join(".k.jwks.json.tmp-1-2");
        let fresh = dir.join(".k.jwks.json.tmp-3-4");
        let other = dir.join(".other.tmp-1-2");
        for f in [&stale, &fresh, &other] {
            std::fs::write(f, b"half").unwrap();
        }
        let old =
            std::time::SystemTime::now() - std::time::Duration::from_secs(STALE_TEMP_SECS + 60);
        for f in [&stale, &other] {
            File::options()
                .write(true)
                .open(f)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        replace(&p, b"new", 0o644).unwrap();
        assert!(!stale.exists(), "a killed run's temporary file stays");
        assert!(
            fresh.exists(),
            "a concurrent run's file in progress was removed"
        );
        assert!(other.exists(), "another file's temporary file was removed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A scratch directory, removed when dropped (also when the test fails).
    struct Scratch(PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for Scratch {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("idtoken-atomic-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    #[test]
    fn beyond_links_replaces_a_planted_link_at_the_target_name_without_writing_through_it() {
        let dir = scratch("bl-target");
        std::fs::create_dir_all(dir.join("textfile")).unwrap();
        let victim = dir.join("cache.jwks.json");
        std::fs::write(&victim, b"keys").unwrap();
        let target = dir.join("textfile/idtoken.prom");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        replace_beyond_links(&target, b"metrics\n", 0o644).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keys");
        let meta = std::fs::symlink_metadata(&target).unwrap();
        assert!(meta.file_type().is_file(), "the link was written through");
        assert_eq!(meta.mode() & 0o7777, 0o644);
        assert_eq!(std::fs::read(&target).unwrap(), b"metrics\n");
        assert_eq!(std::fs::read_dir(dir.join("textfile")).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn beyond_links_never_opens_a_planted_temporary_name() {
        let dir = scratch("bl-temp");
        std::fs::create_dir_all(dir.join("textfile")).unwrap();
        let victim = dir.join("cache.jwks.json");
        std::fs::write(&victim, b"keys").unwrap();
        let temp = ".idtoken.prom.tmp-1-2";
        std::os::unix::fs::symlink(&victim, dir.join("textfile").join(temp)).unwrap();
        let target = dir.join("textfile/idtoken.prom");
        let e = replace_beyond_links_via(&target, b"metrics\n", 0o644, temp).unwrap_err();
        assert!(matches!(e, ReplaceError::NotReplaced(_)), "{e:?}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keys");
        assert!(!target.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn beyond_links_refuses_a_directory_swapped_for_a_link() {
        let dir = scratch("bl-dir");
        std::fs::create_dir_all(dir.join("cache")).unwrap();
        std::fs::create_dir_all(dir.join("prometheus")).unwrap();
        std::os::unix::fs::symlink(dir.join("cache"), dir.join("prometheus/node-exporter"))
            .unwrap();
        let target = dir.join("prometheus/node-exporter/idtoken.prom");
        let e = replace_beyond_links(&target, b"metrics\n", 0o644).unwrap_err();
        let ReplaceError::NotReplaced(why) = e else {
            panic!("{e:?}")
        };
        assert!(why.contains("symlink"), "{why}");
        assert_eq!(std::fs::read_dir(dir.join("cache")).unwrap().count(), 0);
        for relative in [
            "idtoken.prom",
            "../x/idtoken.prom",
            "/a/../idtoken.prom",
            "/",
        ] {
            assert!(
                replace_beyond_links(Path::new(relative), b"", 0o644).is_err(),
                "{relative}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failure_leaves_the_target() {
        let dir = std::env::temp_dir().join(format!("idtoken-atomic-f-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The target is a non-empty directory: rename fails, nothing else changes.
        let p = dir.join("k.jwks.json");
        std::fs::create_dir_all(p.join("x")).unwrap();
        assert!(replace(&p, b"new", 0o644).is_err());
        assert!(p.join("x").is_dir());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
