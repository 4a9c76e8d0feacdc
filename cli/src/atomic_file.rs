//! Replacing a file so that a reader sees the old contents or the new, never a mix, and a
//! crash leaves one of the two on disk: a temporary file in the same directory, written and
//! fsynced, renamed over the target, and the directory fsynced so the rename is durable.
//! The login path opens the key cache at any moment, so this is the only way it is written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
/// filesystem; hidden, so a glob over `*.jwks.json` never picks it up.
fn temp_path(path: &Path) -> Result<PathBuf, String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Ok(path.with_file_name(format!(".{name}.tmp-{}-{nanos}", std::process::id())))
}

fn write_temp(temp: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    let at = |e: std::io::Error| format!("{}: {e}", temp.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true) // never reuse, never follow a planted symlink
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(temp)
        .map_err(at)?;
    file.write_all(contents).map_err(at)?;
    // The umask may have narrowed the mode given to open; set it exactly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(at)?;
    if uzers::get_effective_uid() == 0 {
        std::os::unix::fs::fchown(&file, Some(0), Some(0)).map_err(at)?;
    }
    file.sync_all().map_err(at)
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
