//! The record of token sessions on this host (SPEC v3): what authentication learned about a
//! token login, kept where the session phase and `idtoken sessions` find it.
//!
//! sshd authenticates in a forked child and opens the session in its parent, which gets
//! back only the PAM environment: no PAM data item crosses. So on an allow the module
//! writes a *pending* record, root-only, under a random name it puts in the PAM
//! environment (`IDTOKEN_SESSION`); the session phase reads it (the rule's limits, the
//! token's exp), hands pam_systemd its items, and turns it into a *live* record naming the
//! process that opened the session; closing the session removes it. A record whose process
//! is gone, or a pending one never opened, is stale and counts for nothing. The name is
//! 128 random bits: an `IDTOKEN_SESSION` set by anything else names no record.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::files::{self, DirUse};
use crate::session_limits::SessionLimits;

/// Where the records live: /run is a tmpfs, so a reboot leaves none behind.
pub const SESSIONS_DIR: &str = "/run/idtoken/sessions";
/// The PAM environment variable naming this login's record.
pub const SESSION_ENV: &str = "IDTOKEN_SESSION";
/// A pending record older than this was never opened (the client went away between
/// authentication and session, or the service has no session line). sshd's
/// LoginGraceTime is 120 s by default; the session opens right after authentication.
pub const PENDING_GRACE: i64 = 120;
/// The largest record read.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// One token login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub account: String,
    pub issuer: String,
    pub rule: String,
    pub user: String,
    pub project_path: Option<String>,
    pub pipeline_id: Option<String>,
    pub job_id: Option<String>,
    pub jti: Option<String>,
    pub rhost: Option<String>,
    /// When authentication allowed the token.
    pub created: i64,
    pub exp: i64,
    /// `session_ends_at_exp` when the token was allowed.
    pub ends_at_exp: bool,
    pub memory_max: Option<String>,
    pub tasks_max: Option<u64>,
    pub cpu_weight: Option<u64>,
    pub io_weight: Option<u64>,
    pub runtime_max: Option<i64>,
    /// The process that opened the session (None while pending).
    pub leader: Option<u32>,
    /// When the session opened.
    pub opened: Option<i64>,
    /// Who ended the session early (`idtoken revoke --end-sessions`: "revoked").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
}

impl SessionRecord {
    pub fn limits(&self) -> SessionLimits {
        SessionLimits {
            memory_max: self.memory_max.clone(),
            tasks_max: self.tasks_max,
            cpu_weight: self.cpu_weight,
            io_weight: self.io_weight,
            runtime_max: self.runtime_max,
        }
    }

    pub fn set_limits(&mut self, l: &SessionLimits) {
        self.memory_max = l.memory_max.clone();
        self.tasks_max = l.tasks_max;
        self.cpu_weight = l.cpu_weight;
        self.io_weight = l.io_weight;
        self.runtime_max = l.runtime_max;
    }

    /// Why a session that closes at `now` ended: what ended it early, or the runtime cap
    /// or the token's exp when the session reached it (with a second of slack), else the
    /// user's logout.
    pub fn how_ended(&self, now: i64) -> &str {
        if let Some(by) = &self.ended_by {
            return by;
        }
        let start = self.opened.unwrap_or(self.created);
        let cap = self.runtime_max.map(|r| start.saturating_add(r));
        let at_exp = self.ends_at_exp.then_some(self.exp);
        match (cap, at_exp) {
            (Some(c), e) if now.saturating_add(1) >= c && e.is_none_or(|e| c <= e) => "runtime_max",
            (_, Some(e)) if now.saturating_add(1) >= e => "exp",
            _ => "logout",
        }
    }

    /// When the session is ended (the earlier of exp, with `session_ends_at_exp`, and the
    /// runtime cap counted from the opening), if ever.
    pub fn ends(&self) -> Option<i64> {
        let start = self.opened.unwrap_or(self.created);
        let cap = self.runtime_max.map(|r| start.saturating_add(r));
        let at_exp = self.ends_at_exp.then_some(self.exp);
        match (cap, at_exp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A record's name: 32 lowercase hex digits.
pub fn valid_name(name: &str) -> bool {
    name.len() == 32
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The directory of records.
#[derive(Debug, Clone)]
pub struct SessionDir {
    pub dir: PathBuf,
}

impl Default for SessionDir {
    fn default() -> Self {
        SessionDir {
            dir: PathBuf::from(SESSIONS_DIR),
        }
    }
}

/// Whether a process is alive (signal 0: no signal sent, only the check).
pub fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        // It exists, and belongs to someone else.
        Err(rustix::io::Errno::PERM) => true,
        Err(_) => false,
    }
}

impl SessionDir {
    fn open(&self, create: bool) -> Result<std::os::fd::OwnedFd, String> {
        files::open_trusted_dir(&self.dir, DirUse::Private, create)
            .map_err(|p| format!("session records: {p}"))
    }

    /// Writes `record` as pending under a new random name, which it returns.
    pub fn create_pending(&self, record: &SessionRecord) -> Result<String, String> {
        let dir = self.open(true)?;
        let name = random_name()?;
        self.write(&dir, &format!("{name}.pending"), record)?;
        Ok(name)
    }

    /// The pending record `name`.
    pub fn pending(&self, name: &str) -> Result<SessionRecord, String> {
        self.read(name, "pending")
    }

    /// Turns pending record `name` into a live one opened by `leader` at `now`.
    pub fn open_session(&self, name: &str, record: &SessionRecord) -> Result<(), String> {
        let dir = self.open(false)?;
        self.write(&dir, &format!("{name}.live"), record)?;
        let _ = rustix::fs::unlinkat(&dir, format!("{name}.pending"), AtFlags::empty());
        Ok(())
    }

    /// Rewrites live record `name` (what ended it, before it is ended).
    pub fn update_live(&self, name: &str, record: &SessionRecord) -> Result<(), String> {
        if !valid_name(name) {
            return Err(format!("{name:?} is not a session record name"));
        }
        let dir = self.open(false)?;
        self.write(&dir, &format!("{name}.live"), record)
    }

    /// The live record `name`.
    pub fn live(&self, name: &str) -> Result<SessionRecord, String> {
        self.read(name, "live")
    }

    /// Removes the records of `name` (the session closed).
    pub fn close_session(&self, name: &str) -> Result<(), String> {
        if !valid_name(name) {
            return Err(format!("{name:?} is not a session record name"));
        }
        let dir = self.open(false)?;
        for suffix in ["live", "pending"] {
            match rustix::fs::unlinkat(&dir, format!("{name}.{suffix}"), AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(format!("{}: {e}", self.dir.display())),
            }
        }
        Ok(())
    }

    /// The records that count at `now`: live ones whose process is alive, and pending ones
    /// younger than [`PENDING_GRACE`]. Stale ones are removed. No directory: none.
    pub fn current(
        &self,
        now: i64,
        alive: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<(String, SessionRecord)>, String> {
        self.listed(now, alive, true)
    }

    /// As [`current`](Self::current), removing nothing (`idtoken check`, `idtoken sessions`).
    pub fn current_read_only(
        &self,
        now: i64,
        alive: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<(String, SessionRecord)>, String> {
        self.listed(now, alive, false)
    }

    fn listed(
        &self,
        now: i64,
        alive: &dyn Fn(u32) -> bool,
        prune: bool,
    ) -> Result<Vec<(String, SessionRecord)>, String> {
        let dir = match self.open(false) {
            Ok(d) => d,
            Err(_) if std::fs::symlink_metadata(&self.dir).is_err() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let listing =
            rustix::fs::Dir::read_from(&dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let mut out = Vec::new();
        for entry in listing.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some((name, kind)) = file.split_once('.') else {
                continue;
            };
            if !valid_name(name) || !matches!(kind, "live" | "pending") {
                continue;
            }
            let Ok(record) = self.read(name, kind) else {
                continue;
            };
            let stale = match (kind, record.leader) {
                ("live", Some(pid)) => !alive(pid),
                ("pending", _) => now.saturating_sub(record.created) > PENDING_GRACE,
                _ => true,
            };
            if stale {
                if prune {
                    let _ = rustix::fs::unlinkat(&dir, file.as_str(), AtFlags::empty());
                }
            } else {
                out.push((name.to_string(), record));
            }
        }
        out.sort_by(|a, b| (a.1.created, &a.0).cmp(&(b.1.created, &b.0)));
        Ok(out)
    }

    fn read(&self, name: &str, kind: &str) -> Result<SessionRecord, String> {
        if !valid_name(name) {
            return Err(format!("{name:?} is not a session record name"));
        }
        let path = self.dir.join(format!("{name}.{kind}"));
        let bytes = files::read_trusted_in_safe_dir(&path, MAX_RECORD_BYTES)
            .map_err(|p| format!("session record: {p}"))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("session record {}: {e}", path.display()))
    }

    /// Writes `record` as `file` in `dir`: a temporary file made with O_EXCL, renamed.
    fn write(
        &self,
        dir: &std::os::fd::OwnedFd,
        file: &str,
        record: &SessionRecord,
    ) -> Result<(), String> {
        let text = serde_json::to_vec(record).map_err(|e| format!("session record: {e}"))?;
        let tmp = format!(".{file}.tmp");
        let fd = rustix::fs::openat(
            dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| format!("{}: {e}", self.dir.join(&tmp).display()))?;
        let mut f = std::fs::File::from(fd);
        let written = f.write_all(&text);
        drop(f);
        let renamed = written.map_err(|e| e.to_string()).and_then(|()| {
            rustix::fs::renameat(dir, tmp.as_str(), dir, file).map_err(|e| e.to_string())
        });
        if let Err(e) = renamed {
            let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
            return Err(format!("{}: {e}", self.dir.join(file).display()));
        }
        Ok(())
    }
}

/// The live token sessions on this host, as the decision counts them for `max_sessions`.
pub trait LiveSessions {
    fn current(&self, now: i64) -> Result<Vec<SessionRecord>, String>;
}

/// The module's view: stale records are removed as they are found.
impl LiveSessions for SessionDir {
    fn current(&self, now: i64) -> Result<Vec<SessionRecord>, String> {
        SessionDir::current(self, now, &process_alive)
            .map(|v| v.into_iter().map(|(_, r)| r).collect())
    }
}

/// `idtoken check`'s view: the same records, nothing removed.
pub struct ReadOnlySessions<'a>(pub &'a SessionDir);

impl LiveSessions for ReadOnlySessions<'_> {
    fn current(&self, now: i64) -> Result<Vec<SessionRecord>, String> {
        self.0
            .current_read_only(now, &process_alive)
            .map(|v| v.into_iter().map(|(_, r)| r).collect())
    }
}

/// No sessions at all (worlds without a session directory: the fuzz harness, unit tests).
pub struct NoSessions;

impl LiveSessions for NoSessions {
    fn current(&self, _now: i64) -> Result<Vec<SessionRecord>, String> {
        Ok(Vec::new())
    }
}

/// 128 random bits from the kernel, as 32 hex digits.
fn random_name() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open(Path::new("/dev/urandom"))
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        s.push_str(&format!("{b:02x}"));
        s
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(SessionDir);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0.dir);
        }
    }

    fn dir(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("idtoken-sessions-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        TempDir(SessionDir { dir: d })
    }

    fn record(created: i64) -> SessionRecord {
        SessionRecord {
            account: "alice".into(),
            issuer: "gitlab".into(),
            rule: "ci".into(),
            user: "alice".into(),
            project_path: Some("hpc/app".into()),
            pipeline_id: Some("5001".into()),
            job_id: Some("9001".into()),
            jti: Some("j".into()),
            rhost: None,
            created,
            exp: created + 300,
            ends_at_exp: true,
            memory_max: None,
            tasks_max: Some(64),
            cpu_weight: None,
            io_weight: None,
            runtime_max: Some(60),
            leader: None,
            opened: None,
            ended_by: None,
        }
    }

    #[test]
    fn pending_then_live_then_closed() {
        let d = dir("cycle");
        let r = record(1000);
        let name = d.0.create_pending(&r).unwrap();
        assert!(valid_name(&name));
        assert_eq!(d.0.pending(&name).unwrap(), r);
        let alive = |_| true;
        assert_eq!(d.0.current(1000, &alive).unwrap().len(), 1);
        let mut live = r.clone();
        live.leader = Some(std::process::id());
        live.opened = Some(1010);
        d.0.open_session(&name, &live).unwrap();
        assert!(d.0.pending(&name).is_err(), "the pending record is gone");
        let now = d.0.current(5000, &alive).unwrap();
        assert_eq!(now, vec![(name.clone(), live.clone())]);
        assert_eq!(
            live.ends(),
            Some(1070),
            "the runtime cap, counted from the opening"
        );
        d.0.close_session(&name).unwrap();
        assert!(d.0.current(5000, &alive).unwrap().is_empty());
    }

    #[test]
    fn stale_records_count_for_nothing_and_are_removed() {
        let d = dir("stale");
        let pending = d.0.create_pending(&record(1000)).unwrap();
        let opened = d.0.create_pending(&record(1000)).unwrap();
        let mut live = record(1000);
        live.leader = Some(4_000_000);
        d.0.open_session(&opened, &live).unwrap();
        let dead = |_| false;
        // The pending one is young, the live one's leader is gone.
        assert_eq!(
            d.0.current(1000 + PENDING_GRACE, &dead)
                .unwrap()
                .iter()
                .map(|(n, _)| n.clone())
                .collect::<Vec<_>>(),
            vec![pending.clone()]
        );
        assert!(d.0.current(1001 + PENDING_GRACE, &dead).unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(&d.0.dir).unwrap().count(),
            0,
            "stale records removed"
        );
    }

    #[test]
    fn names_and_unsafe_directories_are_refused() {
        for bad in [
            "",
            "../x",
            "0123456789abcdef0123456789abcde",
            "0123456789ABCDEF0123456789ABCDEF",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        let d = dir("unsafe");
        d.0.create_pending(&record(1)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d.0.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(d.0.create_pending(&record(1)).is_err());
        assert!(d.0.current(1, &|_| true).is_err());
    }

    #[test]
    fn this_process_is_alive_and_a_free_pid_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(4_000_000));
        assert!(!process_alive(0));
    }
}
