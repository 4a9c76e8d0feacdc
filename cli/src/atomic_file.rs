//! Replacing a file so that a reader sees the old contents or the new, never a mix, and a
//! crash leaves one of the two on disk: a temporary file in the same directory, written and
//! fsynced, renamed over the target, and the directory fsynced so the rename is durable.
//! The login path opens the key cache at any moment, so this is the only way it is written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Replaces `path` with `contents`, mode `mode`, owned by root:root when run as root.
/// On any error the target is untouched and the temporary file is removed.
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    let dir = parent_of(path)?;
    let temp = temp_path(path)?;
    let result = write_temp(&temp, contents, mode).and_then(|()| {
        std::fs::rename(&temp, path).map_err(|e| {
            format!(
                "cannot rename {} to {}: {e}",
                temp.display(),
                path.display()
            )
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
        return result;
    }
    // The rename is done; a failed directory fsync only weakens durability across a crash,
    // but it is still reported, since the admin asked for a durable replace.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: cannot fsync the directory: {e}", dir.display()))
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
