//! `idtoken status`: per issuer, the key cache the login path would read, its age, its
//! keys, and anything that stops it from being used or trusted. The file checks are the
//! core's (`files::read_trusted`), so status and the PAM module never disagree about a
//! cache. Exit 0 when every issuer's cache is usable and fresh, 1 otherwise, 2 when the
//! config cannot be used. `--prometheus` prints the same facts as node_exporter textfile
//! metrics; `idtoken doctor` reuses [`CacheStatus`] for its key cache checks. The
//! revocation list is reported too: one the module cannot use makes every login that
//! reaches it unavailable.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use idtoken_core::config::{Config, DEFAULT_PATH, Defaults, Issuer};
use idtoken_core::files::{self, FileProblem, FileProblemKind};
use idtoken_core::jwks::{self, KeySet, MAX_JWKS_BYTES};
use idtoken_core::keystore::load_revocations;
use idtoken_core::sanitize::clean;
use idtoken_core::session_record::{SessionDir, process_alive};
use idtoken_core::timefmt;
use serde_json::{Value, json};

use crate::atomic_file::{self, ReplaceError};
use crate::token_input;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long, conflicts_with = "prometheus")]
    json: bool,
    /// Print node_exporter textfile metrics (Prometheus text format) instead of text.
    #[arg(long)]
    prometheus: bool,
    /// With --prometheus: write the metrics to FILE (absolute path) instead of stdout, through
    /// a new temporary file renamed over it, following no symlink; exit 0 once written.
    #[arg(long, value_name = "FILE", requires = "prometheus")]
    output: Option<PathBuf>,
}

pub fn run(args: &Args) -> u8 {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("idtoken status: {e}");
            if args.prometheus {
                if let Some(out) = &args.output {
                    return write_metrics(out, &prometheus(false, &[], None, &[]));
                }
                print!("{}", prometheus(false, &[], None, &[]));
            } else if args.json {
                println!(
                    "{}",
                    json!({"ok": false, "error": e.to_string(), "issuers": []})
                );
            }
            return 2;
        }
    };
    let now = token_input::now();
    let all: Vec<CacheStatus> = config
        .issuers
        .iter()
        .map(|i| CacheStatus::of(i, &config.defaults, now))
        .collect();
    let revocations = Revocations::of(&config.defaults, now);
    let ok = all.iter().all(|s| s.problems.is_empty()) && revocations.in_force.is_ok();
    if args.prometheus {
        if let Some(out) = &args.output {
            return write_metrics(
                out,
                &prometheus(true, &all, Some(&revocations), &live_sessions(&config, now)),
            );
        }
        print!(
            "{}",
            prometheus(true, &all, Some(&revocations), &live_sessions(&config, now))
        );
    } else if args.json {
        let issuers: Vec<Value> = all.iter().map(CacheStatus::to_json).collect();
        println!(
            "{}",
            json!({"ok": ok, "config": args.config.display().to_string(), "now": now,
                   "issuers": issuers, "revocations": revocations.to_json()})
        );
    } else if all.is_empty() {
        println!(
            "{}: no [[issuer]] is configured, so every token is refused",
            args.config.display()
        );
    } else {
        for (n, s) in all.iter().enumerate() {
            if n > 0 {
                println!();
            }
            s.print();
        }
    }
    if !args.prometheus && !args.json {
        revocations.print();
    }
    u8::from(!ok)
}

/// `--output FILE`: the metrics replace FILE, which node_exporter reads at any moment, so
/// it is written whole or not at all. The directory is node_exporter's, and an account other
/// than root may control it or its parent (Debian's prometheus owns /var/lib/prometheus),
/// so nothing there is trusted: no symlink is followed on the way or at any name (a link
/// planted to make root overwrite a key cache is replaced, never written through). Exit 0
/// when written, whatever the metrics say (they carry the problems); 2 when not.
fn write_metrics(out: &std::path::Path, metrics: &str) -> u8 {
    match atomic_file::replace_beyond_links(out, metrics.as_bytes(), 0o644) {
        Ok(()) => 0,
        Err(ReplaceError::NotDurable(why)) => {
            eprintln!("idtoken status: warning: {why} (the metrics were written)");
            0
        }
        Err(ReplaceError::NotReplaced(why)) => {
            eprintln!("idtoken status: metrics not written: {why}");
            2
        }
    }
}

/// The revocation list as the login path reads it: the entries in force, or why the
/// module cannot use it.
struct Revocations {
    path: PathBuf,
    in_force: Result<usize, String>,
}

impl Revocations {
    fn of(defaults: &Defaults, now: i64) -> Revocations {
        let in_force = load_revocations(&defaults.revocations)
            .map(|l| {
                l.in_force(now, defaults.leeway, defaults.max_lifetime)
                    .count()
            })
            .map_err(|p| format!("{p}; logins that reach the revocation step are unavailable"));
        Revocations {
            path: defaults.revocations.clone(),
            in_force,
        }
    }

    fn print(&self) {
        match &self.in_force {
            Ok(n) => println!("\nrevocations: {} in force  ({})", n, self.path.display()),
            Err(why) => println!("\nrevocations: PROBLEM  {why}"),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "path": self.path.display().to_string(),
            "usable": self.in_force.is_ok(),
            "in_force": self.in_force.as_ref().ok(),
            "problem": self.in_force.as_ref().err(),
        })
    }
}

/// One thing wrong with a cache; `code` is stable for monitoring.
struct Problem {
    code: &'static str,
    message: String,
}

struct KeyInfo {
    kid: String,
    kind: String,
    alg: Option<String>,
    retired_at: Option<i64>,
    trusted_until: Option<i64>,
    /// Retired longer than key_grace ago: the login path refuses it.
    expired: bool,
}

pub(crate) struct CacheStatus {
    issuer: String,
    url: String,
    path: PathBuf,
    modified: Option<i64>,
    age: Option<i64>,
    keys: Vec<KeyInfo>,
    skipped: Vec<String>,
    problems: Vec<Problem>,
    notes: Vec<String>,
}

impl CacheStatus {
    pub(crate) fn of(issuer: &Issuer, defaults: &Defaults, now: i64) -> CacheStatus {
        let path = issuer.jwks_cache.clone();
        let modified = std::fs::symlink_metadata(&path).ok().map(|m| m.mtime());
        let mut s = CacheStatus {
            issuer: issuer.name.clone(),
            url: issuer.url.clone(),
            path,
            modified,
            age: modified.map(|m| now.saturating_sub(m).max(0)),
            keys: Vec::new(),
            skipped: Vec::new(),
            problems: Vec::new(),
            notes: Vec::new(),
        };
        match files::read_trusted_in_safe_dir(&s.path, MAX_JWKS_BYTES) {
            Err(p) => s.problem(code_of(&p), p.to_string()),
            Ok(bytes) => match jwks::parse(&bytes) {
                Err(e) => s.problem(
                    "invalid",
                    format!(
                        "{}: {}; run `idtoken refresh --issuer {}`",
                        s.path.display(),
                        clean(&e),
                        issuer.name
                    ),
                ),
                Ok(set) => s.add_keys(&set, issuer, defaults, now),
            },
        }
        s.check_age(defaults.stale_after);
        if let Some(ca) = &issuer.ca_file
            && let Err(why) = crate::http::certificates_in(ca)
        {
            s.problem(
                "ca_file",
                format!("{why}; refresh of this issuer fails until it is fixed"),
            );
        }
        s
    }

    /// Usable by the login path: no problem, or only `stale` (a stale cache still works).
    pub(crate) fn usable(&self) -> bool {
        self.problems.iter().all(|p| p.code == "stale")
    }

    pub(crate) fn stale(&self) -> bool {
        self.problems.iter().any(|p| p.code == "stale")
    }

    /// The keys the login path accepts (not withdrawn longer than key_grace ago).
    pub(crate) fn usable_keys(&self) -> usize {
        self.keys.iter().filter(|k| !k.expired).count()
    }

    pub(crate) fn age(&self) -> Option<i64> {
        self.age
    }

    /// Each problem as (stable code, message with its fix).
    pub(crate) fn problems(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.problems.iter().map(|p| (p.code, p.message.as_str()))
    }

    fn problem(&mut self, code: &'static str, message: String) {
        self.problems.push(Problem { code, message });
    }

    fn add_keys(&mut self, set: &KeySet, issuer: &Issuer, defaults: &Defaults, now: i64) {
        let (grace, leeway) = (defaults.key_grace, defaults.leeway);
        self.skipped = set.skipped.iter().map(|s| clean(s)).collect();
        // A withdrawal stamped in the future was written by a refresh whose clock ran
        // ahead: the login path refuses the key, and the cache needs a refresh.
        for k in &set.keys {
            if let Some(t) = k.retired_at.filter(|t| *t > now.saturating_add(leeway)) {
                self.problem(
                    "retired_in_future",
                    format!(
                        "{}: key {:?} is marked withdrawn at {}, later than now; it is refused. \
                         The cache was written with a wrong clock: fix the clock, then run \
                         `idtoken refresh --issuer {}`",
                        self.path.display(),
                        clean(&k.kid),
                        idtoken_core::timefmt::utc(t),
                        issuer.name
                    ),
                );
            }
        }
        self.keys = set
            .keys
            .iter()
            .map(|k| {
                let until = k.retired_at.map(|t| t.saturating_add(grace));
                KeyInfo {
                    kid: clean(&k.kid),
                    kind: k.kind.describe(),
                    alg: k.alg.as_deref().map(clean),
                    retired_at: k.retired_at,
                    trusted_until: until,
                    expired: until.is_some_and(|u| now > u)
                        || k.retired_at.is_some_and(|t| t > now.saturating_add(leeway)),
                }
            })
            .collect();
        if self.keys.iter().all(|k| k.expired) {
            let why = if self.keys.is_empty() {
                "holds no usable signing key"
            } else {
                "holds only keys the issuer withdrew longer than key_grace ago"
            };
            self.problem(
                "no_usable_key",
                format!(
                    "{}: {why}; every token of this issuer is refused: run `idtoken refresh --issuer {}`",
                    self.path.display(),
                    issuer.name
                ),
            );
        } else if self.keys.iter().any(|k| k.expired) {
            self.notes.push(
                "keys marked expired are refused already; the next refresh removes them"
                    .to_string(),
            );
        }
    }

    /// Stale: not rewritten for `stale_after` seconds (0 turns the check off, for
    /// air-gapped hosts whose cache is copied in by hand). Refresh rewrites the cache on
    /// every success, so the age is the time since the last good refresh.
    fn check_age(&mut self, stale_after: i64) {
        let Some(age) = self.age else { return };
        if stale_after > 0 && age > stale_after && self.problems.is_empty() {
            self.problem(
                "stale",
                format!(
                    "{}: last written {} ago, more than stale_after ({}); check the refresh \
                     timer (`systemctl status idtoken-refresh.timer`, `journalctl -u \
                     idtoken-refresh`) or run `idtoken refresh`",
                    self.path.display(),
                    duration(age),
                    duration(stale_after)
                ),
            );
        }
    }

    fn print(&self) {
        let verdict = if self.problems.is_empty() {
            "OK"
        } else {
            "PROBLEM"
        };
        println!("{}: {verdict}  ({})", self.issuer, self.url);
        println!("  cache    {}", self.path.display());
        if let (Some(age), Some(m)) = (self.age, self.modified) {
            println!("  age      {} (written {})", duration(age), timefmt::utc(m));
        }
        for (n, k) in self.keys.iter().enumerate() {
            let label = if n == 0 { "keys" } else { "" };
            println!("  {label:<8} {}", k.describe());
        }
        if self.keys.is_empty() && self.problems.iter().all(|p| p.code == "no_usable_key") {
            println!("  keys     (none usable)");
        }
        for s in &self.skipped {
            println!("  skipped  {s}");
        }
        for p in &self.problems {
            println!("  problem  [{}] {}", p.code, p.message);
        }
        for n in &self.notes {
            println!("  note     {n}");
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "url": self.url,
            "cache": self.path.display().to_string(),
            "modified": self.modified,
            "age_seconds": self.age,
            "usable": self.usable(),
            "keys": self.keys.iter().map(|k| json!({
                "kid": k.kid,
                "type": k.kind,
                "alg": k.alg,
                "retired_at": k.retired_at,
                "trusted_until": k.trusted_until,
                "expired": k.expired,
            })).collect::<Vec<_>>(),
            "skipped": self.skipped,
            "problems": self.problems.iter().map(|p| json!({"code": p.code, "message": p.message})).collect::<Vec<_>>(),
        })
    }
}

impl KeyInfo {
    fn describe(&self) -> String {
        let alg = self
            .alg
            .as_deref()
            .map(|a| format!(", {a}"))
            .unwrap_or_default();
        match (self.retired_at, self.trusted_until) {
            (Some(at), Some(until)) => format!(
                "{} ({}{alg}), retired {}, {} {}",
                self.kid,
                self.kind,
                timefmt::utc(at),
                if self.expired {
                    "EXPIRED, refused since"
                } else {
                    "trusted until"
                },
                timefmt::utc(until)
            ),
            _ => format!("{} ({}{alg})", self.kid, self.kind),
        }
    }
}

/// The stable code of a file problem, for `--json` and monitoring.
fn code_of(p: &FileProblem) -> &'static str {
    match p.kind {
        FileProblemKind::Missing => "missing",
        FileProblemKind::Symlink => "symlink",
        FileProblemKind::NotRegular => "not_regular",
        FileProblemKind::NotDirectory => "not_directory",
        FileProblemKind::UnsafeOwner { .. } => "unsafe_owner",
        FileProblemKind::UnsafeMode { .. } => "unsafe_mode",
        FileProblemKind::TooLarge { .. } => "too_large",
        FileProblemKind::Unreadable(_) => "unreadable",
    }
}

/// node_exporter textfile format (Prometheus text exposition 0.0.4): one HELP and TYPE
/// per family, then its samples, so `promtool check metrics` accepts it. A cache that
/// does not exist has no age sample rather than a made-up one.
fn prometheus(
    config_valid: bool,
    all: &[CacheStatus],
    revocations: Option<&Revocations>,
    sessions: &[(String, i64)],
) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "idtoken_config_valid",
        "Whether the pam_idtoken config loads and validates (1) or not (0).",
        &[(None, i64::from(config_valid))],
    );
    let per = |f: &dyn Fn(&CacheStatus) -> Option<i64>| -> Vec<(Option<&str>, i64)> {
        all.iter()
            .filter_map(|s| f(s).map(|v| (Some(s.issuer.as_str()), v)))
            .collect()
    };
    family(
        &mut out,
        "idtoken_key_cache_age_seconds",
        "Seconds since the issuer's key cache was last written (by a successful refresh).",
        &per(&|s| s.age),
    );
    family(
        &mut out,
        "idtoken_key_cache_keys",
        "Signing keys in the issuer's key cache that the login path accepts.",
        &per(&|s| i64::try_from(s.usable_keys()).ok()),
    );
    family(
        &mut out,
        "idtoken_key_cache_usable",
        "Whether the login path can use the issuer's key cache (1) or refuses every token of the issuer (0).",
        &per(&|s| Some(i64::from(s.usable()))),
    );
    family(
        &mut out,
        "idtoken_key_cache_stale",
        "Whether the issuer's key cache is older than stale_after (1): refresh is failing or not running.",
        &per(&|s| Some(i64::from(s.stale()))),
    );
    let usable = revocations.map(|r| (None, i64::from(r.in_force.is_ok())));
    family(
        &mut out,
        "idtoken_revocation_list_usable",
        "Whether the login path can read the revocation list (1) or every login that reaches it is unavailable (0).",
        &Vec::from_iter(usable),
    );
    let in_force = revocations
        .and_then(|r| r.in_force.as_ref().ok())
        .map(|n| (None, i64::try_from(*n).unwrap_or(i64::MAX)));
    family(
        &mut out,
        "idtoken_revocations_in_force",
        "Entries of the revocation list (idtoken revoke) that have not lapsed.",
        &Vec::from_iter(in_force),
    );
    let name = "idtoken_sessions_live";
    out.push_str(&format!(
        "# HELP {name} Live token sessions on this host, per granting rule (idtoken sessions).\n# TYPE {name} gauge\n"
    ));
    for (rule, n) in sessions {
        out.push_str(&format!("{name}{{rule=\"{}\"}} {n}\n", label(rule)));
    }
    out
}

/// Live token sessions per granting rule of the config, from the module's records (every
/// granting rule listed, 0 when it has none; a record of a rule no longer configured under
/// its own name). Records that cannot be read give no samples.
fn live_sessions(config: &Config, now: i64) -> Vec<(String, i64)> {
    let Ok(records) = SessionDir::default().current_read_only(now, &process_alive) else {
        return Vec::new();
    };
    let mut counts: Vec<(String, i64)> = config
        .rules
        .iter()
        .filter(|r| !r.deny)
        .map(|r| (r.name.clone(), 0))
        .collect();
    for (_, r) in records {
        match counts.iter_mut().find(|(name, _)| *name == r.rule) {
            Some((_, n)) => *n = n.saturating_add(1),
            None => counts.push((r.rule.clone(), 1)),
        }
    }
    counts
}

/// One gauge family: HELP, TYPE, then a sample per (issuer label, value).
fn family(out: &mut String, name: &str, help: &str, samples: &[(Option<&str>, i64)]) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
    for (issuer, value) in samples {
        match issuer {
            Some(i) => out.push_str(&format!("{name}{{issuer=\"{}\"}} {value}\n", label(i))),
            None => out.push_str(&format!("{name} {value}\n")),
        }
    }
}

/// A label value escaped as the text format asks: backslash, double quote and newline.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `3d 4h`, `5h 2m`, `12m 3s`, `45s`.
fn duration(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m, sec) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(723), "12m 3s");
        assert_eq!(duration(5 * 3600 + 120), "5h 2m");
        assert_eq!(duration(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(duration(-5), "0s");
    }
}
