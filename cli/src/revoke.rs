//! `idtoken revoke`: withdraw tokens before they expire, by jti, pipeline, project, user
//! claim or granting rule; list and remove entries. Exit 0 done, 2 error.
//!
//! The list is the file `[defaults] revocations` names, read by the PAM module at every
//! login (idtoken_core::revocations). It is written whole: under an exclusive lock on its
//! directory (two admins revoking at once must not lose an entry), to a temporary file
//! created with O_EXCL in the same directory, fsynced, then renamed over the list, mode
//! 0644 root:root. The directory must pass the module's checks first (every directory
//! from `/` owned by root, none writable by others unless sticky): a list someone else
//! could swap is not written. Entries that have lapsed are dropped whenever it is written.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use idtoken_core::config::{Config, DEFAULT_PATH};
use idtoken_core::files::{self, DirUse, FileProblemKind};
use idtoken_core::keystore::load_revocations;
use idtoken_core::revocations::{
    self, Entry, RevocationList, Target, check_entry, lapse_time, valid_id,
};
use idtoken_core::sanitize::clean;
use idtoken_core::session_record::{SessionDir, SessionRecord, process_alive};
use idtoken_core::timefmt::utc;
use rustix::fs::FlockOperation;
use serde_json::{Value, json};

use crate::atomic_file::{self, ReplaceError};
use crate::token_input;

#[derive(clap::Args)]
#[command(group(
    clap::ArgGroup::new("what")
        .required(true)
        .args(["jti", "pipeline", "project", "user", "rule", "list", "remove"])
))]
pub struct Args {
    #[arg(long, default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// Withdraw the token with this jti claim.
    #[arg(long)]
    jti: Option<String>,
    /// Withdraw the tokens of this pipeline (pipeline_id claim).
    #[arg(long, value_name = "ID")]
    pipeline: Option<String>,
    /// Withdraw the tokens of this project (project_path claim, exactly).
    #[arg(long, value_name = "PATH")]
    project: Option<String>,
    /// Withdraw the tokens whose user claim is this.
    #[arg(long, value_name = "U")]
    user: Option<String>,
    /// Withdraw what this granting rule lets in.
    #[arg(long, value_name = "NAME")]
    rule: Option<String>,
    /// Only tokens of this issuer (its configured name); required with several issuers.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["list", "remove"])]
    issuer: Option<String>,
    /// Why, for the audit trail (`idtoken check`, `--list`); never shown to the client.
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["list", "remove"])]
    reason: Option<String>,
    /// End the matching live token sessions too (through logind, or by ending their
    /// sshd/su process), and list them.
    #[arg(long, conflicts_with_all = ["list", "remove"])]
    end_sessions: bool,
    /// List the entries, lapsed ones marked.
    #[arg(long)]
    list: bool,
    /// With --list: one JSON object.
    #[arg(long, requires = "list")]
    json: bool,
    /// Remove the entry with this id.
    #[arg(long, value_name = "ID")]
    remove: Option<String>,
}

pub fn run(args: &Args) -> u8 {
    match run_inner(args) {
        Ok(()) => 0,
        Err(why) => {
            eprintln!("idtoken revoke: {why}");
            2
        }
    }
}

fn run_inner(args: &Args) -> Result<(), String> {
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let now = token_input::now();
    if args.list {
        return list(&config, now, args.json);
    }
    if let Some(id) = &args.remove {
        return remove(&config, now, id);
    }
    let entry = add(args, &config, now)?;
    if args.end_sessions {
        end_sessions(&entry, now)?;
    }
    Ok(())
}

/// Ends the live token sessions on this host that `entry` matches (their records, kept by
/// the module under /run/idtoken/sessions): `loginctl terminate-session` for a session
/// logind knows, SIGTERM to the process that opened it otherwise; prints each.
fn end_sessions(entry: &Entry, now: i64) -> Result<(), String> {
    let dir = SessionDir::default();
    let live = dir.current_read_only(now, &process_alive)?;
    let matching: Vec<&(String, SessionRecord)> = live
        .iter()
        .filter(|(_, r)| session_matches(entry, r))
        .collect();
    if matching.is_empty() {
        println!("no live token session matches it on this host");
        return Ok(());
    }
    let mut failed = Vec::new();
    for (name, r) in matching {
        let short = name.get(..8).unwrap_or(name);
        let what = format!(
            "session {short} account={} rule={} pipeline_id={}",
            clean(&r.account),
            clean(&r.rule),
            r.pipeline_id
                .as_deref()
                .map(clean)
                .unwrap_or_else(|| "-".into())
        );
        // The module's closing audit line then says why the session ended.
        if r.leader.is_some() {
            let mut marked = r.clone();
            marked.ended_by = Some("revoked".to_string());
            let _ = dir.update_live(name, &marked);
        }
        match end_one(r) {
            Ok(how) => println!("ended {what} ({how})"),
            Err(why) => {
                eprintln!("idtoken revoke: could not end {what}: {why}");
                failed.push(short.to_string());
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the entry is written, but {} session(s) could not be ended: {}",
            failed.len(),
            failed.join(", ")
        ))
    }
}

/// Whether a live session was opened with a token the entry withdraws.
fn session_matches(entry: &Entry, r: &SessionRecord) -> bool {
    if entry.issuer.as_deref().is_some_and(|i| i != r.issuer) {
        return false;
    }
    match &entry.target {
        Target::Jti(j) => r.jti.as_deref() == Some(j.as_str()),
        Target::Pipeline(p) => r.pipeline_id.as_deref() == Some(p.as_str()),
        Target::Project(p) => r.project_path.as_deref() == Some(p.as_str()),
        Target::User(u) => r.user == *u,
        Target::Rule(rule) => r.rule == *rule,
    }
}

/// Ends one session: through logind when its process is in a logind session, else by
/// SIGTERM to that process (sshd's, whose end closes the connection and the session).
fn end_one(r: &SessionRecord) -> Result<String, String> {
    let Some(pid) = r.leader else {
        return Err("it has not opened yet; it will be refused at its next login".into());
    };
    if let Some(session) = crate::sessions::logind_session(Some(pid)) {
        let out = std::process::Command::new("loginctl")
            .args(["terminate-session", &session])
            .output()
            .map_err(|e| format!("loginctl: {e}"))?;
        if out.status.success() {
            return Ok(format!("logind session {session} terminated"));
        }
    }
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| format!("pid {pid} is not a process"))?;
    rustix::process::kill_process(target, rustix::process::Signal::TERM)
        .map_err(|e| format!("kill {pid}: {e}"))?;
    Ok(format!("process {pid} sent SIGTERM"))
}

/// What the arguments ask to withdraw, checked against the config.
fn target(args: &Args, config: &Config) -> Result<(Target, Option<String>), String> {
    let target = match (
        &args.jti,
        &args.pipeline,
        &args.project,
        &args.user,
        &args.rule,
    ) {
        (Some(v), ..) => Target::Jti(v.clone()),
        (_, Some(v), ..) => Target::Pipeline(v.clone()),
        (_, _, Some(v), ..) => Target::Project(v.clone()),
        (_, _, _, Some(v), _) => Target::User(v.clone()),
        (.., Some(v)) => Target::Rule(v.clone()),
        _ => {
            return Err(
                "say what to revoke: --jti, --pipeline, --project, --user or --rule".into(),
            );
        }
    };
    if let Some(name) = &args.issuer
        && !config.issuers.iter().any(|i| i.name == *name)
    {
        let names: Vec<&str> = config.issuers.iter().map(|i| i.name.as_str()).collect();
        return Err(format!(
            "--issuer {:?} is not a configured issuer ({names:?})",
            clean(name)
        ));
    }
    if let Target::Rule(name) = &target {
        let Some(rule) = config.rules.iter().find(|r| r.name == *name) else {
            return Err(format!(
                "--rule {:?} is not a rule of the config",
                clean(name)
            ));
        };
        if rule.deny {
            return Err(format!(
                "--rule {:?} is a deny rule, which grants nothing to revoke",
                clean(name)
            ));
        }
    } else if args.issuer.is_none() && config.issuers.len() > 1 {
        let names: Vec<&str> = config.issuers.iter().map(|i| i.name.as_str()).collect();
        return Err(format!(
            "the config has several issuers ({names:?}), whose ids and names may collide: \
             say which with --issuer"
        ));
    }
    Ok((target, args.issuer.clone()))
}

fn add(args: &Args, config: &Config, now: i64) -> Result<Entry, String> {
    let (target, issuer) = target(args, config)?;
    let defaults = &config.defaults;
    let mut entry = Entry {
        id: String::new(),
        target,
        issuer,
        reason: args.reason.clone().unwrap_or_default(),
        created: now,
        lapses_at: lapse_time(now, defaults.leeway, defaults.max_lifetime),
    };
    let path = &defaults.revocations;
    let (kept, pruned) = update(config, now, |list| {
        entry.id = new_id(list)?;
        check_entry(&entry)?;
        list.entries.push(entry.clone());
        Ok(())
    })?;
    let issuer = entry.issuer.as_deref().map_or_else(
        || "any issuer".to_string(),
        |i| format!("issuer {:?}", clean(i)),
    );
    println!(
        "revoked {}: tokens with {} ({issuer}) issued by {}",
        entry.id,
        entry.target,
        utc(entry.created)
    );
    println!(
        "it lapses at {}, when every such token has expired; {} written ({kept} in the list{})",
        utc(entry.lapses_at),
        path.display(),
        pruned_note(pruned)
    );
    if matches!(entry.target, Target::Rule(_)) {
        println!("a token some other rule grants still logs in; to keep one out, add a deny rule");
    } else {
        println!("tokens issued later are not refused; to keep them out, add a deny rule");
    }
    Ok(entry)
}

fn remove(config: &Config, now: i64, id: &str) -> Result<(), String> {
    if !valid_id(id) {
        return Err(format!("{:?} is not an entry id", clean(id)));
    }
    let (kept, pruned) = update(config, now, |list| {
        let before = list.entries.len();
        list.entries.retain(|e| e.id != id);
        if list.entries.len() == before {
            return Err(format!(
                "no entry {id} in {} (it may have lapsed; see --list)",
                config.defaults.revocations.display()
            ));
        }
        Ok(())
    })?;
    println!(
        "removed {id}; {} written ({kept} in the list{})",
        config.defaults.revocations.display(),
        pruned_note(pruned)
    );
    Ok(())
}

fn pruned_note(pruned: usize) -> String {
    if pruned == 0 {
        String::new()
    } else {
        format!(", {pruned} lapsed removed")
    }
}

/// Reads the list under the directory's lock, drops lapsed entries, applies `change`, and
/// replaces the file. Returns the entries written and how many lapsed ones were dropped.
fn update(
    config: &Config,
    now: i64,
    change: impl FnOnce(&mut RevocationList) -> Result<(), String>,
) -> Result<(usize, usize), String> {
    let path = &config.defaults.revocations;
    let dir = directory(path)?;
    // Held until the file is replaced: flock on the directory, so no lock file is left.
    rustix::fs::flock(&dir, FlockOperation::LockExclusive)
        .map_err(|e| format!("{}: cannot lock its directory: {e}", path.display()))?;
    // Read as the module reads it: a list it would refuse is not silently replaced (its
    // entries could have been tampered with, or written by a newer version).
    let mut list = load_revocations(path).map_err(|p| {
        format!("{p}; the PAM module refuses it too (logins are unavailable): fix it first")
    })?;
    let (leeway, max_lifetime) = (config.defaults.leeway, config.defaults.max_lifetime);
    let before = list.entries.len();
    list.entries
        .retain(|e| e.in_force(now, leeway, max_lifetime));
    let pruned = before.saturating_sub(list.entries.len());
    change(&mut list)?;
    if list.entries.len() > revocations::MAX_ENTRIES {
        return Err(format!(
            "the list would hold more than {} entries, which the module refuses; remove some \
             or revoke more broadly (--project, --user)",
            revocations::MAX_ENTRIES
        ));
    }
    atomic_file::replace(path, &list.to_bytes(), 0o644).map_err(|e| match e {
        ReplaceError::NotReplaced(why) => format!("{why}; the list is unchanged"),
        ReplaceError::NotDurable(why) => format!("{why}; the new list is in place"),
    })?;
    Ok((list.entries.len(), pruned))
}

/// The list's directory, opened after the module's checks. Only the default directory is
/// made when missing (0755): another one may be a shared filesystem not mounted here.
fn directory(path: &Path) -> Result<std::os::fd::OwnedFd, String> {
    let Some(dir) = path.parent() else {
        return Err(format!("{}: has no directory", path.display()));
    };
    let default_dir = Path::new(revocations::DEFAULT_PATH).parent();
    let open = || files::open_trusted_dir(dir, DirUse::Shared, false);
    match open() {
        Err(p) if p.kind == FileProblemKind::Missing && Some(dir) == default_dir => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .create(dir)
                .map_err(|e| format!("{}: cannot create it: {e}", dir.display()))?;
            open()
        }
        other => other,
    }
    .map_err(|p| format!("{p}; the revocation list is not written there"))
}

/// A fresh random id, 8 hex digits, unused in `list`.
fn new_id(list: &RevocationList) -> Result<String, String> {
    let mut urandom = File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?;
    for _ in 0..16 {
        let mut b = [0u8; 4];
        urandom
            .read_exact(&mut b)
            .map_err(|e| format!("/dev/urandom: {e}"))?;
        let id = format!("{:08x}", u32::from_be_bytes(b));
        if !list.entries.iter().any(|e| e.id == id) {
            return Ok(id);
        }
    }
    Err("cannot find an unused entry id".into())
}

fn list(config: &Config, now: i64, as_json: bool) -> Result<(), String> {
    let path = &config.defaults.revocations;
    let list = load_revocations(path)
        .map_err(|p| format!("{p}; the PAM module refuses it too (logins are unavailable)"))?;
    let (leeway, max_lifetime) = (config.defaults.leeway, config.defaults.max_lifetime);
    if as_json {
        let entries: Vec<Value> = list
            .entries
            .iter()
            .map(|e| {
                let (what, value) = e.target.parts();
                json!({
                    "id": e.id,
                    "match": {what: value},
                    "issuer": e.issuer,
                    "reason": e.reason,
                    "created": e.created,
                    "lapses_at": e.lapses(leeway, max_lifetime),
                    "in_force": e.in_force(now, leeway, max_lifetime),
                })
            })
            .collect();
        let in_force = list.in_force(now, leeway, max_lifetime).count();
        println!(
            "{}",
            json!({"path": path.display().to_string(), "now": now, "in_force": in_force,
                   "entries": entries})
        );
        return Ok(());
    }
    if list.entries.is_empty() {
        println!("{}: no revocation", path.display());
        return Ok(());
    }
    println!("{}:", path.display());
    for e in &list.entries {
        let state = if e.in_force(now, leeway, max_lifetime) {
            "lapses"
        } else {
            "LAPSED"
        };
        let issuer = e
            .issuer
            .as_deref()
            .map(|i| format!(" issuer {:?}", clean(i)))
            .unwrap_or_default();
        println!(
            "{}  {}{issuer}  issued by {}  {state} {}",
            e.id,
            e.target,
            utc(e.created),
            utc(e.lapses(leeway, max_lifetime))
        );
        if !e.reason.is_empty() {
            println!("          reason: {}", clean(&e.reason));
        }
    }
    Ok(())
}
