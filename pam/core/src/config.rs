//! The configuration file (`/etc/security/idtoken.toml`): its schema, and validation of
//! every value when the file loads, so the login path only ever sees a config that makes
//! sense. Every problem is reported with its line; unknown keys are errors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use jsonwebtoken::Algorithm;
use serde::Deserialize;
use toml::Spanned;

use crate::claims::pointer_problem;
use crate::files::{self, FileProblem};
use crate::jws::parse_algorithm;
use crate::net::Network;
use crate::session_limits::{self, SessionLimits};

/// The config's default path.
pub const DEFAULT_PATH: &str = "/etc/security/idtoken.toml";
/// Where key caches live unless `jwks_cache` says otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/idtoken";
/// Where `max_uses` is counted unless `state_dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/idtoken/uses";
/// A config larger than this is refused (it is a few KiB in practice).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Bounds that keep a config from making the per-login cost unbounded.
pub const MAX_ISSUERS: usize = 64;
pub const MAX_RULES: usize = 4096;

// The SPEC's defaults, written once: `Defaults::default()` is built from them, and the
// validator lays the file's values over it.
pub const DEFAULT_LEEWAY: i64 = 60;
pub const DEFAULT_MAX_LIFETIME: i64 = 86400;
pub const DEFAULT_MIN_UID: u32 = 1000;
pub const DEFAULT_DENY_USERS: &[&str] = &["root", "nobody"];
/// The PAM services of a rule that names none: a CI token is for logins, not for sudo,
/// polkit, chsh or a screen locker (SPEC v2).
pub const DEFAULT_SERVICES: &[&str] = &["sshd", "su"];
pub const DEFAULT_MAX_USES: u32 = 0;
pub const DEFAULT_EXPLAIN: bool = false;
pub const DEFAULT_SESSION_ENDS_AT_EXP: bool = false;
pub const DEFAULT_KEY_GRACE: i64 = 86400;
pub const DEFAULT_STALE_AFTER: i64 = 86400;
/// An issuer's `algorithms` and `user_claim` when the file names none (GitLab's).
pub const DEFAULT_ALGORITHMS: &[Algorithm] = &[Algorithm::RS256];
pub const DEFAULT_USER_CLAIM: &str = "user_login";
/// The largest `leeway` accepted: more defeats the expiry checks.
pub const MAX_LEEWAY: i64 = 3600;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub defaults: Defaults,
    pub issuers: Vec<Issuer>,
    pub rules: Vec<Rule>,
    /// What is valid but likely not what the site meant, each with its line: `config check`
    /// and `doctor` print them; the login path ignores them.
    pub warnings: Vec<Problem>,
}

#[derive(Debug, Clone)]
pub struct Defaults {
    pub leeway: i64,
    pub max_lifetime: i64,
    pub min_uid: u32,
    pub deny_users: Vec<String>,
    /// The services of every rule that names none.
    pub services: Vec<String>,
    pub max_uses: u32,
    pub explain: bool,
    /// On allow, the module asks pam_systemd to end the session when the token expires.
    pub session_ends_at_exp: bool,
    pub state_dir: PathBuf,
    /// The revocation list `idtoken revoke` writes (SPEC v3).
    pub revocations: PathBuf,
    /// How long a key that vanished from the issuer's endpoint stays trusted (refresh).
    pub key_grace: i64,
    /// Age after which `idtoken status` calls a key cache stale.
    pub stale_after: i64,
}

impl Default for Defaults {
    fn default() -> Defaults {
        Defaults {
            leeway: DEFAULT_LEEWAY,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            min_uid: DEFAULT_MIN_UID,
            deny_users: DEFAULT_DENY_USERS.iter().map(|u| u.to_string()).collect(),
            services: DEFAULT_SERVICES.iter().map(|u| u.to_string()).collect(),
            max_uses: DEFAULT_MAX_USES,
            explain: DEFAULT_EXPLAIN,
            session_ends_at_exp: DEFAULT_SESSION_ENDS_AT_EXP,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            revocations: PathBuf::from(crate::revocations::DEFAULT_PATH),
            key_grace: DEFAULT_KEY_GRACE,
            stale_after: DEFAULT_STALE_AFTER,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Issuer {
    pub name: String,
    pub url: String,
    pub audiences: Vec<String>,
    pub jwks_cache: PathBuf,
    pub algorithms: Vec<Algorithm>,
    pub user_claim: String,
    pub user_map: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// A deny rule: when all its conditions hold, the token is refused, whatever other
    /// rules say. It grants nothing (no login_as, no local_groups).
    pub deny: bool,
    pub issuer: Option<String>,
    /// The rule's own `services`; when it names none, `[defaults] services` for a granting
    /// rule and every service (`*`) for a deny rule.
    pub services: Vec<String>,
    /// Source networks PAM_RHOST must be inside (None: any remote host, or none).
    pub from: Option<Vec<Network>>,
    pub users: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub local_groups: Option<Vec<String>>,
    pub login_as: Option<String>,
    /// Claim name → globs, in the order of the names.
    pub claims: Vec<(String, Vec<String>)>,
    /// A deny rule: what a condition on a claim the token does not carry does.
    pub if_absent: IfAbsent,
    /// How big the sessions this rule grants may get (SPEC v3).
    pub limits: SessionLimits,
    /// How many live token sessions this rule may hold on this host, counted per
    /// `max_sessions_per` (SPEC v3).
    pub max_sessions: Option<u32>,
    pub max_sessions_per: SessionsPer,
}

/// What a rule's `max_sessions` counts its live sessions by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionsPer {
    /// Every session the rule granted.
    #[default]
    Rule,
    /// Those of the same project (project_path).
    Project,
    /// Those of the same pipeline (pipeline_id).
    Pipeline,
    /// Those of the same user (the issuer's user claim).
    User,
}

impl SessionsPer {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionsPer::Rule => "rule",
            SessionsPer::Project => "project",
            SessionsPer::Pipeline => "pipeline",
            SessionsPer::User => "user",
        }
    }
}

/// The most sessions `max_sessions` may allow.
pub const MAX_SESSIONS_LIMIT: i64 = 100_000;

/// What a deny rule makes of a condition on a claim the token does not carry (SPEC v3).
/// A deny is a promise, so by default an absent claim holds; `skip` is for claims whose
/// absence is itself information (`environment` exists only when a job declares one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IfAbsent {
    #[default]
    Deny,
    Skip,
}

impl IfAbsent {
    pub fn as_str(self) -> &'static str {
        match self {
            IfAbsent::Deny => "deny",
            IfAbsent::Skip => "skip",
        }
    }
}

impl Config {
    /// The issuer whose url equals `iss` byte for byte.
    pub fn issuer_by_url(&self, iss: &str) -> Option<&Issuer> {
        self.issuers.iter().find(|i| i.url == iss)
    }

    pub fn issuer_by_name(&self, name: &str) -> Option<&Issuer> {
        self.issuers.iter().find(|i| i.name == name)
    }

    /// Reads and validates the config at `path`, with the file safety checks of the SPEC,
    /// on the file and on every directory above it (whoever can write one of them can put
    /// another policy in its place).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes =
            files::read_trusted_in_safe_dir(path, MAX_CONFIG_BYTES).map_err(ConfigError::File)?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: vec![Problem::new(None, "the file is not valid UTF-8")],
        })?;
        Config::parse(&text).map_err(|problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Parses and validates config text; every problem found is returned, each with its line.
    pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        // An empty file is a truncated or half-written one far more often than a choice: a
        // config that deliberately has no issuer says so in comments (as the shipped one does).
        if text.trim().is_empty() {
            return Err(vec![Problem::new(
                None,
                "the file is empty (truncated?); restore it, or write a config with no [[issuer]] \
                 (every token refused) as a commented file",
            )]);
        }
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            vec![Problem::new(line, e.message().trim())]
        })?;
        let mut v = Validator {
            text,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let mut config = v.config(raw);
        if v.problems.is_empty() {
            config.warnings = v.warnings;
            Ok(config)
        } else {
            Err(v.problems)
        }
    }
}

/// One problem in a config, with the line it is on when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    fn new(line: Option<usize>, message: impl Into<String>) -> Problem {
        Problem {
            line,
            message: message.into(),
        }
    }
}

/// Why a config could not be used.
#[derive(Debug, Clone)]
pub enum ConfigError {
    File(FileProblem),
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::File(p) => write!(f, "{p}"),
            ConfigError::Invalid { path, problems } => {
                let mut first = true;
                for p in problems {
                    if !first {
                        writeln!(f)?;
                    }
                    first = false;
                    match p.line {
                        Some(line) => write!(f, "{}:{line}: {}", path.display(), p.message)?,
                        None => write!(f, "{}: {}", path.display(), p.message)?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()
        .get(..end)
        .map_or(0, |b| b.iter().filter(|c| **c == b'\n').count())
        .saturating_add(1)
}

// ---- The file as written: every field spanned so that problems can name their line. ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    defaults: Option<RawDefaults>,
    #[serde(default)]
    issuer: Vec<Spanned<RawIssuer>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    leeway: Option<Spanned<i64>>,
    max_lifetime: Option<Spanned<i64>>,
    min_uid: Option<Spanned<i64>>,
    deny_users: Option<Spanned<Vec<String>>>,
    services: Option<Spanned<Vec<String>>>,
    max_uses: Option<Spanned<i64>>,
    explain: Option<bool>,
    session_ends_at_exp: Option<bool>,
    state_dir: Option<Spanned<String>>,
    revocations: Option<Spanned<String>>,
    key_grace: Option<Spanned<i64>>,
    stale_after: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    name: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    audiences: Option<Spanned<Vec<String>>>,
    jwks_cache: Option<Spanned<String>>,
    algorithms: Option<Spanned<Vec<Spanned<String>>>>,
    user_claim: Option<Spanned<String>>,
    user_map: Option<Spanned<String>>,
    jwks_url: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<Spanned<String>>,
    issuer: Option<Spanned<String>>,
    services: Option<Spanned<Vec<String>>>,
    users: Option<Spanned<Vec<String>>>,
    groups: Option<Spanned<Vec<String>>>,
    local_groups: Option<Spanned<Vec<String>>>,
    login_as: Option<Spanned<String>>,
    claims: Option<BTreeMap<String, Spanned<toml::Value>>>,
    deny: Option<bool>,
    from: Option<Spanned<Vec<String>>>,
    if_absent: Option<Spanned<String>>,
    memory_max: Option<Spanned<toml::Value>>,
    tasks_max: Option<Spanned<i64>>,
    cpu_weight: Option<Spanned<i64>>,
    io_weight: Option<Spanned<i64>>,
    runtime_max: Option<Spanned<i64>>,
    max_sessions: Option<Spanned<i64>>,
    max_sessions_per: Option<Spanned<String>>,
}

/// A rule's session limit keys as written.
struct RawLimits {
    memory_max: Option<Spanned<toml::Value>>,
    tasks_max: Option<Spanned<i64>>,
    cpu_weight: Option<Spanned<i64>>,
    io_weight: Option<Spanned<i64>>,
    runtime_max: Option<Spanned<i64>>,
}

/// A byte offset into the config text, turned into a line number only when reported.
#[derive(Clone, Copy)]
struct At(usize);

struct Validator<'a> {
    text: &'a str,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Validator<'_> {
    /// Where a value is. Only its byte offset: the line is counted when a problem is
    /// reported, not for every value of a valid config (the module parses it every login).
    fn at<T>(&self, s: &Spanned<T>) -> Option<At> {
        Some(At(s.span().start))
    }

    fn err(&mut self, at: Option<At>, message: impl Into<String>) {
        let line = at.map(|At(offset)| line_of(self.text, offset));
        self.problems.push(Problem::new(line, message));
    }

    fn warn(&mut self, at: Option<At>, message: impl Into<String>) {
        let line = at.map(|At(offset)| line_of(self.text, offset));
        self.warnings.push(Problem::new(line, message));
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let defaults = self.defaults(raw.defaults);
        // Past a cap, the first table over it is the line reported.
        if let Some(first_over) = raw.issuer.get(MAX_ISSUERS) {
            let at = self.at(first_over);
            self.err(at, format!("more than {MAX_ISSUERS} [[issuer]] tables"));
        }
        if let Some(first_over) = raw.rule.get(MAX_RULES) {
            let at = self.at(first_over);
            self.err(at, format!("more than {MAX_RULES} [[rule]] tables"));
        }
        let mut issuers: Vec<Issuer> = Vec::new();
        for spanned in raw.issuer {
            let line = self.at(&spanned);
            if let Some(i) = self.issuer(spanned.into_inner(), line) {
                if issuers.iter().any(|o| o.name == i.name) {
                    self.err(
                        line,
                        format!(
                            "issuer name {:?} is used twice; names must be unique",
                            i.name
                        ),
                    );
                } else if let Some(o) = issuers.iter().find(|o| o.jwks_cache == i.jwks_cache) {
                    self.err(
                        line,
                        format!(
                            "issuers {:?} and {:?} share the key cache {}: refresh would merge \
                             both key sets into the file each trusts; give each its own jwks_cache",
                            o.name,
                            i.name,
                            i.jwks_cache.display()
                        ),
                    );
                } else if issuers.iter().any(|o| o.url == i.url) {
                    self.err(
                        line,
                        format!(
                            "issuer url {:?} is used twice; one [[issuer]] per url",
                            i.url
                        ),
                    );
                }
                issuers.push(i);
            }
        }
        let mut rules: Vec<Rule> = Vec::new();
        for spanned in raw.rule {
            let line = self.at(&spanned);
            if let Some(r) = self.rule(spanned.into_inner(), line, &issuers, &defaults) {
                if rules.iter().any(|o| o.name == r.name) {
                    self.err(
                        line,
                        format!("rule name {:?} is used twice; names must be unique", r.name),
                    );
                }
                rules.push(r);
            }
        }
        Config {
            defaults,
            issuers,
            rules,
            warnings: Vec::new(),
        }
    }

    /// A count of seconds, uids or uses: 0 or more, else a problem on its line. Returns
    /// the value with where it was written, or None when it is absent (or negative, which
    /// has been reported).
    fn non_negative(&mut self, v: Option<Spanned<i64>>, key: &str) -> Option<(i64, Option<At>)> {
        let s = v?;
        let at = self.at(&s);
        let n = *s.get_ref();
        if n < 0 {
            self.err(at, format!("{key} must be 0 or more, not {n}"));
            return None;
        }
        Some((n, at))
    }

    fn absolute_path(&mut self, s: &Spanned<String>, key: &str) -> PathBuf {
        let p = PathBuf::from(s.get_ref());
        if !p.is_absolute() {
            let line = self.at(s);
            self.err(
                line,
                format!("{key} must be an absolute path, not {:?}", s.get_ref()),
            );
        }
        p
    }

    fn defaults(&mut self, raw: Option<RawDefaults>) -> Defaults {
        let mut d = Defaults::default();
        let Some(raw) = raw else {
            return d;
        };
        if let Some((leeway, at)) = self.non_negative(raw.leeway, "leeway") {
            if leeway > MAX_LEEWAY {
                self.err(
                    at,
                    format!(
                        "leeway may be at most {MAX_LEEWAY} seconds (more defeats the expiry \
                         checks); clocks kept by NTP need the default {DEFAULT_LEEWAY}"
                    ),
                );
            }
            d.leeway = leeway;
        }
        if let Some((max_lifetime, at)) = self.non_negative(raw.max_lifetime, "max_lifetime") {
            if max_lifetime == 0 {
                self.err(
                    at,
                    format!(
                        "max_lifetime = 0 would refuse every token; omit it for the default \
                         {DEFAULT_MAX_LIFETIME}"
                    ),
                );
            }
            d.max_lifetime = max_lifetime;
        }
        if let Some((min_uid, at)) = self.non_negative(raw.min_uid, "min_uid") {
            d.min_uid = u32::try_from(min_uid).unwrap_or_else(|_| {
                self.err(at, "min_uid is larger than any uid");
                u32::MAX
            });
        }
        if let Some((max_uses, at)) = self.non_negative(raw.max_uses, "max_uses") {
            match u32::try_from(max_uses) {
                Ok(n) if n <= crate::uses::MAX_USES_LIMIT => d.max_uses = n,
                _ => self.err(
                    at,
                    format!("max_uses may be at most {}", crate::uses::MAX_USES_LIMIT),
                ),
            }
        }
        if let Some(s) = raw.deny_users {
            let at = self.at(&s);
            d.deny_users = s.into_inner();
            if d.deny_users.iter().any(|u| u.is_empty()) {
                self.err(at, "deny_users has an empty name");
            }
        }
        if let Some(services) = self.globs(raw.services, "[defaults]", "services") {
            d.services = services;
        }
        if let Some(s) = raw.state_dir {
            d.state_dir = self.absolute_path(&s, "state_dir");
        }
        if let Some(s) = raw.revocations {
            d.revocations = self.absolute_path(&s, "revocations");
        }
        if let Some((key_grace, _)) = self.non_negative(raw.key_grace, "key_grace") {
            d.key_grace = key_grace;
        }
        if let Some((stale_after, _)) = self.non_negative(raw.stale_after, "stale_after") {
            d.stale_after = stale_after;
        }
        if let Some(explain) = raw.explain {
            d.explain = explain;
        }
        if let Some(ends) = raw.session_ends_at_exp {
            d.session_ends_at_exp = ends;
        }
        d
    }

    fn issuer(&mut self, raw: RawIssuer, line: Option<At>) -> Option<Issuer> {
        let Some(name) = raw.name else {
            self.err(line, "[[issuer]] needs a name");
            return None;
        };
        let name_line = self.at(&name);
        let name = name.into_inner();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            self.err(
                name_line,
                format!("issuer name {name:?} must match [a-z0-9_-]+"),
            );
        }
        let url = match raw.url {
            Some(u) if u.get_ref().trim() != u.get_ref() => {
                let l = self.at(&u);
                self.err(l, format!("issuer {name:?}: url must be the token's iss exactly, without surrounding spaces"));
                return None;
            }
            Some(u) => {
                if let Some(why) = https_problem(u.get_ref()) {
                    let l = self.at(&u);
                    self.err(l, format!("issuer {name:?}: url {why}"));
                }
                u.into_inner()
            }
            None => {
                self.err(
                    line,
                    format!("issuer {name:?} needs a url (the tokens' iss)"),
                );
                return None;
            }
        };
        let audiences = match raw.audiences {
            Some(a) if !a.get_ref().is_empty() && a.get_ref().iter().all(|s| !s.is_empty()) => {
                a.into_inner()
            }
            Some(a) => {
                let l = self.at(&a);
                self.err(l, format!("issuer {name:?}: audiences must be a non-empty list of non-empty strings (the aud your jobs request in id_tokens:)"));
                Vec::new()
            }
            None => {
                self.err(line, format!("issuer {name:?} needs audiences, e.g. audiences = [\"https://login.example.org\"]"));
                Vec::new()
            }
        };
        let algorithms = match raw.algorithms {
            None => DEFAULT_ALGORITHMS.to_vec(),
            Some(list) => {
                let list_line = self.at(&list);
                let mut out = Vec::new();
                let written = list.get_ref().len();
                for a in list.into_inner() {
                    let l = self.at(&a);
                    match parse_algorithm(a.get_ref()) {
                        Ok(alg) => out.push(alg),
                        Err(msg) => self.err(l, format!("issuer {name:?}: {msg}")),
                    }
                }
                if written == 0 {
                    self.err(
                        list_line,
                        format!(
                            "issuer {name:?}: algorithms must not be empty; omit it for [\"RS256\"]"
                        ),
                    );
                }
                out
            }
        };
        let jwks_cache = match raw.jwks_cache {
            Some(s) => self.absolute_path(&s, "jwks_cache"),
            None => Path::new(DEFAULT_CACHE_DIR).join(format!("{name}.jwks.json")),
        };
        let user_claim = match raw.user_claim {
            Some(s) if s.get_ref().is_empty() => {
                let l = self.at(&s);
                self.err(l, "user_claim must not be empty");
                String::new()
            }
            Some(s) => {
                if let Some(why) = pointer_problem(s.get_ref()) {
                    let l = self.at(&s);
                    self.err(l, format!("issuer {name:?}: user_claim {why}"));
                }
                s.into_inner()
            }
            None => DEFAULT_USER_CLAIM.to_string(),
        };
        let user_map = raw.user_map.map(|s| self.absolute_path(&s, "user_map"));
        let ca_file = raw.ca_file.map(|s| self.absolute_path(&s, "ca_file"));
        let jwks_url = raw.jwks_url.map(|s| {
            if let Some(why) = https_problem(s.get_ref()) {
                let l = self.at(&s);
                self.err(l, format!("issuer {name:?}: jwks_url {why}"));
            }
            s.into_inner()
        });
        Some(Issuer {
            name,
            url,
            audiences,
            jwks_cache,
            algorithms,
            user_claim,
            user_map,
            jwks_url,
            ca_file,
        })
    }

    /// A list of globs; `owner` names where it is (`rule "x"` or `[defaults]`).
    fn globs(
        &mut self,
        v: Option<Spanned<Vec<String>>>,
        owner: &str,
        key: &str,
    ) -> Option<Vec<String>> {
        let s = v?;
        let line = self.at(&s);
        let list = s.into_inner();
        if list.is_empty() {
            self.err(line, format!("{owner}: {key} is an empty list, which nothing matches; remove it or list values"));
        }
        for g in &list {
            if let Some(msg) = glob_problem(g) {
                self.err(line, format!("{owner}: {key}: {msg}"));
            }
        }
        Some(list)
    }

    fn rule(
        &mut self,
        raw: RawRule,
        line: Option<At>,
        issuers: &[Issuer],
        defaults: &Defaults,
    ) -> Option<Rule> {
        let raw_limits = RawLimits {
            memory_max: raw.memory_max,
            tasks_max: raw.tasks_max,
            cpu_weight: raw.cpu_weight,
            io_weight: raw.io_weight,
            runtime_max: raw.runtime_max,
        };
        let Some(name) = raw.name else {
            self.err(line, "[[rule]] needs a name");
            return None;
        };
        let name = name.into_inner();
        if name.is_empty() {
            self.err(line, "rule name must not be empty");
        }
        // A deny rule without an issuer refuses every issuer's tokens: the safe reading.
        if raw.issuer.is_none() && issuers.len() > 1 && raw.deny != Some(true) {
            self.err(
                line,
                format!(
                    "rule {name:?} names no issuer, and {} issuers are configured: a granting \
                     rule without one would trust every issuer's tokens; add issuer = \"NAME\"",
                    issuers.len()
                ),
            );
        }
        let issuer = raw.issuer.map(|i| {
            if !issuers.iter().any(|x| &x.name == i.get_ref()) {
                let l = self.at(&i);
                self.err(
                    l,
                    format!(
                        "rule {name:?} names issuer {:?}, which no [[issuer]] defines",
                        i.get_ref()
                    ),
                );
            }
            i.into_inner()
        });
        let owner = format!("rule {name:?}");
        let deny = raw.deny.unwrap_or(false);
        let services = self
            .globs(raw.services, &owner, "services")
            .unwrap_or_else(|| match deny {
                true => vec!["*".to_string()],
                false => defaults.services.clone(),
            });
        let from = raw.from.map(|list| self.networks(list, &owner, deny));
        let users = self.globs(raw.users, &owner, "users");
        let groups = self.globs(raw.groups, &owner, "groups");
        let local_groups = self.globs(raw.local_groups, &owner, "local_groups");
        let login_as = raw.login_as.map(|s| {
            if s.get_ref().is_empty() || !crate::glob::is_literal(s.get_ref()) {
                let l = self.at(&s);
                self.err(
                    l,
                    format!(
                        "rule {name:?}: login_as must be one account name, not {:?}",
                        s.get_ref()
                    ),
                );
            }
            s.into_inner()
        });
        if deny && (login_as.is_some() || local_groups.is_some()) {
            self.err(
                line,
                format!(
                    "{owner} is a deny rule (deny = true): it refuses and grants nothing, so \
                     it may not have login_as or local_groups; put those in a granting rule"
                ),
            );
        }
        let claims = self.rule_claims(raw.claims.unwrap_or_default(), &owner);
        let if_absent = match raw.if_absent {
            None => IfAbsent::default(),
            Some(s) => {
                let at = self.at(&s);
                let value = match s.get_ref().as_str() {
                    "deny" => IfAbsent::Deny,
                    "skip" => IfAbsent::Skip,
                    other => {
                        self.err(
                            at,
                            format!(
                                "{owner}: if_absent must be \"deny\" or \"skip\", not {other:?}"
                            ),
                        );
                        IfAbsent::Deny
                    }
                };
                if !deny {
                    self.err(
                        at,
                        format!(
                            "{owner}: if_absent is for deny rules (deny = true); a granting rule \
                             never matches a token that lacks a claim it tests"
                        ),
                    );
                }
                value
            }
        };
        if !deny {
            self.anchor_warnings(&owner, line, users.is_some(), &claims);
        }
        let limits = self.session_limits(&raw_limits, &owner, deny, line);
        let (max_sessions, max_sessions_per) =
            self.session_cap(raw.max_sessions, raw.max_sessions_per, &owner, deny);
        Some(Rule {
            name,
            deny,
            issuer,
            services,
            from,
            users,
            groups,
            local_groups,
            login_as,
            claims,
            if_absent,
            limits,
            max_sessions,
            max_sessions_per,
        })
    }

    /// `max_sessions` (1 to [`MAX_SESSIONS_LIMIT`]) and what it counts by; only on a
    /// granting rule, and `max_sessions_per` only with `max_sessions`.
    fn session_cap(
        &mut self,
        max: Option<Spanned<i64>>,
        per: Option<Spanned<String>>,
        owner: &str,
        deny: bool,
    ) -> (Option<u32>, SessionsPer) {
        let max_sessions = max.and_then(|m| {
            let at = self.at(&m);
            let n = *m.get_ref();
            if deny {
                self.err(at, format!("{owner} is a deny rule: it opens no session, so it may not have max_sessions"));
                return None;
            }
            match u32::try_from(n) {
                Ok(v) if (1..=MAX_SESSIONS_LIMIT).contains(&n) => Some(v),
                _ => {
                    self.err(
                        at,
                        format!("{owner}: max_sessions must be from 1 to {MAX_SESSIONS_LIMIT}, not {n}"),
                    );
                    None
                }
            }
        });
        let Some(per) = per else {
            return (max_sessions, SessionsPer::default());
        };
        let at = self.at(&per);
        let value = match per.get_ref().as_str() {
            "rule" => SessionsPer::Rule,
            "project" => SessionsPer::Project,
            "pipeline" => SessionsPer::Pipeline,
            "user" => SessionsPer::User,
            other => {
                self.err(
                    at,
                    format!(
                        "{owner}: max_sessions_per must be \"rule\", \"project\", \"pipeline\" or \"user\", not {other:?}"
                    ),
                );
                SessionsPer::default()
            }
        };
        if max_sessions.is_none() && !deny {
            self.err(at, format!("{owner}: max_sessions_per needs max_sessions"));
        }
        (max_sessions, value)
    }

    /// A rule's session limits, each validated with its line (SPEC v3: units, ranges); a
    /// deny rule opens no session, so it may not have any.
    fn session_limits(
        &mut self,
        raw: &RawLimits,
        owner: &str,
        deny: bool,
        line: Option<At>,
    ) -> SessionLimits {
        let mut limits = SessionLimits::default();
        if let Some(v) = &raw.memory_max {
            let at = self.at(v);
            let text = match v.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                other => format!("{other:?}"),
            };
            match session_limits::memory_max(&text) {
                Ok(m) => limits.memory_max = Some(m),
                Err(why) => self.err(at, format!("{owner}: {why}")),
            }
        }
        for (key, value, range, slot) in [
            (
                "tasks_max",
                &raw.tasks_max,
                session_limits::TASKS_MAX_RANGE,
                &mut limits.tasks_max,
            ),
            (
                "cpu_weight",
                &raw.cpu_weight,
                session_limits::WEIGHT_RANGE,
                &mut limits.cpu_weight,
            ),
            (
                "io_weight",
                &raw.io_weight,
                session_limits::WEIGHT_RANGE,
                &mut limits.io_weight,
            ),
        ] {
            if let Some(v) = value {
                match session_limits::in_range(key, *v.get_ref(), range) {
                    Ok(n) => *slot = Some(n),
                    Err(why) => {
                        let at = self.at(v);
                        self.err(at, format!("{owner}: {why}"));
                    }
                }
            }
        }
        if let Some(v) = &raw.runtime_max {
            let seconds = *v.get_ref();
            if (1..=session_limits::RUNTIME_MAX_LIMIT).contains(&seconds) {
                limits.runtime_max = Some(seconds);
            } else {
                let at = self.at(v);
                self.err(
                    at,
                    format!(
                        "{owner}: runtime_max must be seconds from 1 to {}, not {seconds}",
                        session_limits::RUNTIME_MAX_LIMIT
                    ),
                );
            }
        }
        if deny && !limits.is_empty() {
            self.err(
                line,
                format!(
                    "{owner} is a deny rule: it opens no session, so it may not have session \
                     limits (memory_max, tasks_max, cpu_weight, io_weight, runtime_max); put them \
                     in a granting rule"
                ),
            );
        }
        limits
    }

    /// A granting rule that names its CI jobs only by names their owners can change
    /// (`project_path`, `namespace_path`, the user name) follows those names to whoever holds
    /// them next: a renamed project frees its path for a new one. Ids cannot be renamed or
    /// reused, so a rule anchored on one keeps meaning what it meant. And a rule about CI jobs
    /// should say it is one: a GitLab user ID token has the same iss and no job_id.
    fn anchor_warnings(
        &mut self,
        owner: &str,
        at: Option<At>,
        has_users: bool,
        claims: &[(String, Vec<String>)],
    ) {
        let names = |list: &[&str]| claims.iter().any(|(n, _)| list.contains(&n.as_str()));
        let mutable: Vec<&str> = MUTABLE_CLAIMS
            .iter()
            .copied()
            .filter(|m| claims.iter().any(|(n, _)| n == m))
            .chain(has_users.then_some("users"))
            .collect();
        if !mutable.is_empty() && !names(ANCHOR_CLAIMS) {
            self.warn(
                at,
                format!(
                    "{owner} names its jobs only by names that can be renamed ({}); a rename frees \
                     the name for someone else: add an id, e.g. [rule.claims] project_id = \"42\" \
                     (or namespace_id, user_id; GitHub: repository_id, repository_owner_id)",
                    mutable.join(", ")
                ),
            );
        }
        if names(GITLAB_CI_CLAIMS) && !names(CI_CLASS_CLAIMS) {
            self.warn(
                at,
                format!(
                    "{owner} tests GitLab CI claims but does not pin the token class: a GitLab \
                     user ID token from the same iss could match; add [rule.claims] job_id = \"*\""
                ),
            );
        }
    }
    /// `[rule.claims]`: each claim name (a plain name, or a JSON Pointer beginning with `/`)
    /// with its globs.
    fn rule_claims(
        &mut self,
        raw: BTreeMap<String, Spanned<toml::Value>>,
        owner: &str,
    ) -> Vec<(String, Vec<String>)> {
        let mut claims = Vec::new();
        for (claim, value) in raw {
            let l = self.at(&value);
            if let Some(why) = pointer_problem(&claim) {
                self.err(l, format!("{owner}: claims: {why}"));
            }
            let globs = match value.into_inner() {
                toml::Value::Array(items) => items
                    .into_iter()
                    .map(claim_glob_text)
                    .collect::<Option<Vec<_>>>(),
                one => claim_glob_text(one).map(|g| vec![g]),
            };
            match globs {
                Some(g) if !g.is_empty() => {
                    for x in &g {
                        if let Some(msg) = glob_problem(x) {
                            self.err(l, format!("{owner}: claims.{claim}: {msg}"));
                        }
                    }
                    claims.push((claim, g));
                }
                _ => self.err(l, format!("{owner}: claims.{claim} must be a string, number, boolean or a non-empty list of them")),
            }
        }
        claims
    }

    /// `from`: networks, each with its problem on the list's line.
    fn networks(&mut self, list: Spanned<Vec<String>>, owner: &str, deny: bool) -> Vec<Network> {
        let at = self.at(&list);
        let list = list.into_inner();
        if list.is_empty() {
            self.err(
                at,
                format!("{owner}: from is an empty list, which no host is in; remove it or list networks"),
            );
        }
        let networks: Vec<Network> = list
            .iter()
            .filter_map(|text| match Network::parse(text) {
                Ok(n) => Some(n),
                Err(why) => {
                    self.err(at, format!("{owner}: from: {why}"));
                    None
                }
            })
            .collect();
        let v4 = networks.iter().any(Network::is_ipv4);
        if deny && networks.iter().any(Network::is_all_ipv6) && !v4 {
            self.warn(
                at,
                format!(
                    "{owner}: from has ::/0, which holds for IPv6 clients only (IPv4 and \
                     IPv4-mapped clients are IPv4 addresses here); add \"0.0.0.0/0\" to refuse \
                     every client"
                ),
            );
        }
        networks
    }
}

/// Claims GitLab (and GitHub) set to names their owners can rename (a renamed project's old
/// path can be taken by a new project).
pub const MUTABLE_CLAIMS: &[&str] = &[
    "project_path",
    "namespace_path",
    "user_login",
    "user_email",
    "repository",
    "repository_owner",
];
/// Claims that name the same thing for as long as it exists: GitLab's ids, and GitHub's.
pub const ANCHOR_CLAIMS: &[&str] = &[
    "project_id",
    "namespace_id",
    "user_id",
    "repository_id",
    "repository_owner_id",
];
/// Claims only GitLab CI job tokens carry (a GitLab user ID token has none of them).
pub const CI_CLASS_CLAIMS: &[&str] = &["job_id", "pipeline_id", "runner_id"];
/// Claims whose presence in a rule says it is written for GitLab CI jobs: only GitLab sends
/// them (GitHub's tokens have `ref` and `ref_type` too, and are all CI tokens).
pub const GITLAB_CI_CLAIMS: &[&str] = &[
    "project_path",
    "project_id",
    "namespace_path",
    "namespace_id",
    "pipeline_source",
    "ref_protected",
    "ref_path",
];

/// Why a URL the keys are trusted from is not acceptable. Only https: plain http, to
/// loopback too, lets any local user who binds the port hand refresh its own keys.
fn https_problem(url: &str) -> Option<String> {
    match url.strip_prefix("https://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => None,
        Some(_) => Some(format!("{url:?} names no host")),
        None if url.starts_with("http://") => Some(format!(
            "{url:?} is plain http, which is refused (loopback included: any local user could \
             serve keys there); use https://, with ca_file for a private CA"
        )),
        None => Some(format!("{url:?} must be an https:// URL")),
    }
}

/// A claim pattern may be written as a string, or as a number or boolean meaning its text.
fn claim_glob_text(v: toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s),
        toml::Value::Integer(i) => Some(i.to_string()),
        // Numbers compare by value: 42.0 is written as 42, as claims::number_text does.
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(f).map(|n| crate::claims::number_text(&n))
        }
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What is wrong with a glob, if anything: empty globs match only empty values, which is
/// never what was meant, and control characters can never appear in a sane claim.
fn glob_problem(g: &str) -> Option<String> {
    if g.is_empty() {
        return Some(
            "an empty pattern matches nothing useful; use \"*\" for any value".to_string(),
        );
    }
    if g.chars().any(char::is_control) {
        return Some(format!("pattern {g:?} contains control characters"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[defaults]
leeway = 30

[[issuer]]
name = "gitlab"
url = "https://gitlab.example.org"
audiences = ["https://login.example.org"]

[[rule]]
name = "deployers"
issuer = "gitlab"
users = ["alice", "b*"]
[rule.claims]
ref_protected = "true"
pipeline_source = ["push", "web"]
runner_id = 42
"#;

    fn problems(text: &str) -> Vec<Problem> {
        Config::parse(text).unwrap_err()
    }

    #[test]
    fn good_config_loads_with_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.defaults.leeway, 30);
        assert_eq!(c.defaults.max_lifetime, 86400);
        assert_eq!(c.defaults.min_uid, 1000);
        assert_eq!(c.defaults.deny_users, vec!["root", "nobody"]);
        let i = &c.issuers[0];
        assert_eq!(i.algorithms, vec![Algorithm::RS256]);
        assert_eq!(i.user_claim, "user_login");
        assert_eq!(
            i.jwks_cache,
            PathBuf::from("/var/lib/idtoken/gitlab.jwks.json")
        );
        let r = &c.rules[0];
        assert_eq!(
            r.claims[2],
            ("runner_id".to_string(), vec!["42".to_string()])
        );
    }

    /// The SPEC's defaults, spelled out here once more on purpose: a change to the
    /// constants must be a deliberate change to this test too.
    #[test]
    fn config_without_defaults_table_gets_the_spec_defaults() {
        let c =
            Config::parse("[[issuer]]\nname = \"g\"\nurl = \"https://g\"\naudiences = [\"a\"]\n")
                .unwrap();
        let d = &c.defaults;
        assert_eq!(d.leeway, 60);
        assert_eq!(d.max_lifetime, 86400);
        assert_eq!(d.min_uid, 1000);
        assert_eq!(d.deny_users, vec!["root", "nobody"]);
        assert_eq!(d.services, vec!["sshd", "su"]);
        assert_eq!(d.max_uses, 0);
        assert!(!d.explain);
        assert_eq!(d.state_dir, PathBuf::from("/var/lib/idtoken/uses"));
        assert_eq!(d.revocations, PathBuf::from("/var/lib/idtoken/revocations"));
        assert_eq!(d.key_grace, 86400);
        assert_eq!(d.stale_after, 86400);
        let i = &c.issuers[0];
        assert_eq!(i.algorithms, vec![Algorithm::RS256]);
        assert_eq!(i.user_claim, "user_login");
        assert_eq!(i.jwks_cache, PathBuf::from("/var/lib/idtoken/g.jwks.json"));
        assert_eq!(
            (i.user_map.clone(), i.jwks_url.clone(), i.ca_file.clone()),
            (None, None, None)
        );
        // An empty [defaults] table is the same as none.
        let e = Config::parse("[defaults]\n").unwrap().defaults;
        assert_eq!(format!("{e:?}"), format!("{d:?}"));
    }

    #[test]
    fn out_of_range_defaults_are_reported_with_their_line() {
        let p = problems(
            "[defaults]\nleeway = 3601\nmax_uses = 1001\nmax_lifetime = 0\nmin_uid = 4294967296\n",
        );
        let at = |key: &str| p.iter().find(|x| x.message.contains(key)).map(|x| x.line);
        assert_eq!(at("leeway may be at most 3600"), Some(Some(2)), "{p:?}");
        assert_eq!(at("max_uses may be at most 1000"), Some(Some(3)), "{p:?}");
        assert_eq!(at("max_lifetime = 0"), Some(Some(4)), "{p:?}");
        assert_eq!(at("min_uid is larger"), Some(Some(5)), "{p:?}");
        assert_eq!(p.len(), 4, "{p:?}");
        // The limits themselves are accepted.
        assert!(Config::parse("[defaults]\nleeway = 3600\nmax_uses = 1000\n").is_ok());
    }

    #[test]
    fn too_many_issuers_names_the_first_table_over_the_cap() {
        let one = |i: usize| {
            format!("[[issuer]]\nname = \"i{i}\"\nurl = \"https://i{i}\"\naudiences = [\"a\"]\n")
        };
        let text: String = (0..=MAX_ISSUERS).map(one).collect();
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        // Four lines per table: table MAX_ISSUERS (0-based) starts on line 4 * MAX_ISSUERS + 1.
        assert_eq!(p[0].line, Some(4 * MAX_ISSUERS + 1), "{p:?}");
        assert!(Config::parse(&(0..MAX_ISSUERS).map(one).collect::<String>()).is_ok());
    }

    /// Security review 2, finding 3: with gitlab and github configured, a rule without
    /// issuer let any GitHub repository's token with actor=alice in.
    #[test]
    fn with_several_issuers_every_rule_names_one() {
        let issuers = "[[issuer]]\nname = \"gitlab\"\nurl = \"https://gitlab.example.org\"\naudiences = [\"a\"]\n\
                       [[issuer]]\nname = \"github\"\nurl = \"https://token.actions.githubusercontent.com\"\naudiences = [\"a\"]\n";
        let p = problems(&format!(
            "{issuers}[[rule]]\nname = \"alice\"\nusers = [\"alice\"]\n"
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, Some(9), "{p:?}");
        assert!(p[0].message.contains("names no issuer"), "{p:?}");
        let ok = format!("{issuers}[[rule]]\nname = \"alice\"\nissuer = \"gitlab\"\n");
        assert!(Config::parse(&ok).is_ok());
        // A deny rule may leave the issuer out: it then refuses every issuer's tokens.
        let deny_all =
            format!("{ok}[[rule]]\nname = \"no-mallory\"\ndeny = true\nusers = [\"mallory\"]\n");
        assert!(
            Config::parse(&deny_all).is_ok(),
            "{:?}",
            Config::parse(&deny_all).err()
        );
        // With one issuer the rule's issuer is implied.
        let one = "[[issuer]]\nname = \"gitlab\"\nurl = \"https://g\"\naudiences = [\"a\"]\n[[rule]]\nname = \"r\"\n";
        assert!(Config::parse(one).is_ok());
    }

    /// Security review 2, finding 10: two issuers sharing one cache made refresh merge both
    /// key sets into the file each trusts.
    #[test]
    fn two_issuers_may_not_share_a_key_cache() {
        let text = "[[issuer]]\nname = \"a\"\nurl = \"https://a\"\naudiences = [\"x\"]\njwks_cache = \"/var/lib/idtoken/k.json\"\n\
                    [[issuer]]\nname = \"b\"\nurl = \"https://b\"\naudiences = [\"x\"]\njwks_cache = \"/var/lib/idtoken/k.json\"\n";
        let p = problems(text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, Some(6), "{p:?}");
        assert!(p[0].message.contains("share the key cache"), "{p:?}");
    }

    /// Security review 2, finding 2: keys must come over https; loopback http let any
    /// local user who binds the port plant keys.
    #[test]
    fn issuer_url_and_jwks_url_must_be_https() {
        for (url, jwks, line, word) in [
            ("http://127.0.0.1:8080", "https://k", 3, "plain http"),
            ("https://g", "http://localhost/keys", 5, "plain http"),
            ("https://g", "http://[::1]/keys", 5, "plain http"),
            ("gitlab.com", "https://k", 3, "must be an https:// URL"),
            ("https://", "https://k", 3, "names no host"),
        ] {
            let text = format!(
                "[[issuer]]\nname = \"g\"\nurl = \"{url}\"\naudiences = [\"a\"]\njwks_url = \"{jwks}\"\n"
            );
            let p = problems(&text);
            assert_eq!(p.len(), 1, "{url} {jwks}: {p:?}");
            assert_eq!(p[0].line, Some(line), "{url} {jwks}: {p:?}");
            assert!(p[0].message.contains(word), "{url} {jwks}: {p:?}");
        }
    }

    #[test]
    fn deny_rules_from_networks_and_pointer_names() {
        let head = "[[issuer]]\nname = \"g\"\nurl = \"https://g\"\naudiences = [\"a\"]\n";
        let c = Config::parse(&format!(
            "{head}[[rule]]\nname = \"no-sandbox\"\ndeny = true\n[rule.claims]\nproject_path = \"hpc/sandbox/*\"\n\
             [[rule]]\nname = \"runners\"\nfrom = [\"10.20.0.0/16\", \"2001:db8::/48\", \"192.0.2.7\"]\n\
             [rule.claims]\n\"/realm_access/roles\" = \"hpc-ci\"\n\"https://example.org/groups\" = \"x\"\n"
        ))
        .unwrap();
        let (deny, grant) = (&c.rules[0], &c.rules[1]);
        assert!(deny.deny && !grant.deny);
        // A deny rule without services applies to every service; a granting one to the defaults.
        assert_eq!(deny.services, vec!["*"]);
        assert_eq!(grant.services, vec!["sshd", "su"]);
        assert_eq!(grant.from.as_ref().map(Vec::len), Some(3));
        assert!(deny.from.is_none());
        assert_eq!(grant.claims[0].0, "/realm_access/roles");

        let p = problems(&format!(
            "{head}[[rule]]\nname = \"d\"\ndeny = true\nlogin_as = \"x\"\n\
             [[rule]]\nname = \"d2\"\ndeny = true\nlocal_groups = [\"g\"]\n"
        ));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|x| x.message.contains("deny rule")), "{p:?}");
        assert_eq!((p[0].line, p[1].line), (Some(5), Some(9)), "{p:?}");

        let p = problems(&format!(
            "{head}[[rule]]\nname = \"r\"\nfrom = [\"10.0.0.1/8\", \"runners.example\"]\n"
        ));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p.iter()
                .all(|x| x.line == Some(7) && x.message.contains("from:")),
            "{p:?}"
        );
        let p = problems(&format!("{head}[[rule]]\nname = \"r\"\nfrom = []\n"));
        assert!(p[0].message.contains("empty list"), "{p:?}");

        let p = problems(&format!(
            "{head}user_claim = \"/a~2b\"\n[[rule]]\nname = \"r\"\n[rule.claims]\n\"/x~\" = \"y\"\n"
        ));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p.iter().all(|x| x.message.contains("JSON Pointer")),
            "{p:?}"
        );
        assert_eq!((p[0].line, p[1].line), (Some(5), Some(9)), "{p:?}");
    }

    #[test]
    fn if_absent_is_for_deny_rules_only() {
        let base = "[[issuer]]\nname = \"g\"\nurl = \"https://g\"\naudiences = [\"a\"]\n";
        let c = Config::parse(&format!(
            "{base}[[rule]]\nname = \"d\"\ndeny = true\nif_absent = \"skip\"\ngroups = [\"x\"]\n"
        ))
        .unwrap();
        assert_eq!(c.rules[0].if_absent, IfAbsent::Skip);
        let c = Config::parse(&format!("{base}[[rule]]\nname = \"d\"\ndeny = true\n")).unwrap();
        assert_eq!(
            c.rules[0].if_absent,
            IfAbsent::Deny,
            "the default fails closed"
        );
        let p = problems(&format!(
            "{base}[[rule]]\nname = \"g\"\nif_absent = \"skip\"\n"
        ));
        assert_eq!(p[0].line, Some(7), "{p:?}");
        assert!(
            p[0].message.contains("if_absent is for deny rules"),
            "{p:?}"
        );
        let p = problems(&format!(
            "{base}[[rule]]\nname = \"d\"\ndeny = true\nif_absent = \"allow\"\n"
        ));
        assert!(
            p[0].message.contains("must be \"deny\" or \"skip\""),
            "{p:?}"
        );
    }

    /// Security review 3, findings 7 and 8: valid rules that are likely not what was meant
    /// are warned about, with their line: `::/0` alone in a deny rule (IPv4 is not in it), a
    /// granting rule that names jobs only by renameable names, or tests GitLab CI claims
    /// without pinning the token class.
    #[test]
    fn warnings_for_rules_that_do_not_say_what_they_seem_to() {
        let base = "[[issuer]]\nname = \"g\"\nurl = \"https://g\"\naudiences = [\"a\"]\n";
        let c = Config::parse(&format!(
            "{base}[[rule]]\nname = \"v6\"\ndeny = true\nfrom = [\"::/0\"]\n\
             [[rule]]\nname = \"both\"\ndeny = true\nfrom = [\"::/0\", \"0.0.0.0/0\"]\n\
             [[rule]]\nname = \"by-path\"\n[rule.claims]\nproject_path = \"hpc/app\"\n\
             [[rule]]\nname = \"anchored\"\n[rule.claims]\nproject_path = \"hpc/app\"\nproject_id = \"42\"\njob_id = \"*\"\n\
             [[rule]]\nname = \"github\"\n[rule.claims]\nrepository = \"o/*\"\nref = \"refs/heads/main\"\n"
        ))
        .unwrap();
        let w: Vec<(Option<usize>, &str)> = c
            .warnings
            .iter()
            .map(|w| (w.line, w.message.as_str()))
            .collect();
        assert_eq!(w.len(), 4, "{w:#?}");
        assert!(
            w[0].1.contains("rule \"v6\": from has ::/0") && w[0].0 == Some(8),
            "{w:?}"
        );
        assert!(
            w[1].1.contains(
                "\"by-path\" names its jobs only by names that can be renamed (project_path)"
            ),
            "{w:?}"
        );
        assert!(
            w[2].1
                .contains("\"by-path\" tests GitLab CI claims but does not pin the token class"),
            "{w:?}"
        );
        // GitHub's claims: a repository name can be renamed too; `ref` alone does not make a
        // rule a GitLab one (every GitHub token is a CI token).
        assert!(
            w[3].1.contains(
                "\"github\" names its jobs only by names that can be renamed (repository)"
            ),
            "{w:?}"
        );
    }

    /// SPEC v3 session limits: validated at load, each problem with its line; deny rules
    /// open no session and may not have any.
    #[test]
    fn session_limits_are_validated_with_their_lines() {
        let base = "[[issuer]]\nname = \"g\"\nurl = \"https://g\"\naudiences = [\"a\"]\n";
        let c = Config::parse(&format!(
            "{base}[[rule]]\nname = \"ci\"\nmemory_max = \"4G\"\ntasks_max = 512\ncpu_weight = 50\nio_weight = 10000\nruntime_max = 7200\n"
        ))
        .unwrap();
        let l = &c.rules[0].limits;
        assert_eq!(l.memory_max.as_deref(), Some("4G"));
        assert_eq!(
            (l.tasks_max, l.cpu_weight, l.io_weight, l.runtime_max),
            (Some(512), Some(50), Some(10000), Some(7200))
        );
        let c = Config::parse(&format!(
            "{base}[[rule]]\nname = \"b\"\nmemory_max = 1073741824\n"
        ))
        .unwrap();
        assert_eq!(c.rules[0].limits.memory_max.as_deref(), Some("1073741824"));
        let p = problems(&format!(
            "{base}[[rule]]\nname = \"bad\"\nmemory_max = \"4GB\"\ntasks_max = 0\ncpu_weight = 10001\nio_weight = -1\nruntime_max = 0\n\
             [[rule]]\nname = \"d\"\ndeny = true\ntasks_max = 5\n"
        ));
        let lines: Vec<Option<usize>> = p.iter().map(|x| x.line).collect();
        assert_eq!(
            lines,
            vec![Some(7), Some(8), Some(9), Some(10), Some(11), Some(12)],
            "{p:#?}"
        );
        assert!(p[0].message.contains("memory_max must be a size"), "{p:?}");
        assert!(
            p[1].message.contains("tasks_max must be from 1 to 4194304"),
            "{p:?}"
        );
        assert!(
            p[5].message.contains("deny rule: it opens no session"),
            "{p:?}"
        );
    }

    #[test]
    fn config_without_issuers_is_valid_and_has_nothing() {
        let c = Config::parse("# nothing configured yet\n").unwrap();
        assert!(c.issuers.is_empty() && c.rules.is_empty());
        let c = Config::parse("[defaults]\nleeway = 30\n").unwrap();
        assert!(c.issuers.is_empty());
    }

    #[test]
    fn empty_file_is_refused() {
        assert!(Config::parse("").unwrap_err()[0].message.contains("empty"));
        assert!(Config::parse(" \n\t\n").is_err());
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let p = problems("[defaults]\nleeway = 5\nleway = 5\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, Some(3));
        assert!(p[0].message.contains("leway"), "{:?}", p[0]);
        let p = problems(
            "[[issuer]]\nname = \"a\"\nurl = \"https://u\"\naudiences = [\"x\"]\naudience = \"y\"\n",
        );
        assert_eq!(p[0].line, Some(5), "{p:?}");
        let p = problems("[[rule]]\nname = \"r\"\n\nuser = [\"a\"]\n");
        assert_eq!(p[0].line, Some(4), "{p:?}");
        let p = problems("[default]\n");
        assert_eq!(p[0].line, Some(1), "{p:?}");
    }

    #[test]
    fn refused_algorithms() {
        for alg in ["none", "HS256", "hs512", "XX1"] {
            let text = format!(
                "[[issuer]]\nname = \"a\"\nurl = \"https://u\"\naudiences = [\"x\"]\nalgorithms = [\"{alg}\"]\n"
            );
            let p = problems(&text);
            assert!(p.iter().any(|x| x.line == Some(5)), "{alg}: {p:?}");
        }
    }

    #[test]
    fn empty_audiences_and_missing_fields() {
        let p = problems("[[issuer]]\nname = \"a\"\nurl = \"https://u\"\naudiences = []\n");
        assert_eq!(p[0].line, Some(4));
        let p = problems("[[issuer]]\nname = \"a\"\nurl = \"https://u\"\n");
        assert!(p[0].message.contains("audiences"));
        let p =
            problems("[[issuer]]\nname = \"Bad Name\"\nurl = \"https://u\"\naudiences = [\"x\"]\n");
        assert!(p[0].message.contains("[a-z0-9_-]+"));
    }

    #[test]
    fn duplicates_and_unknown_issuer_reference() {
        let text = "[[issuer]]\nname = \"a\"\nurl = \"https://u\"\naudiences = [\"x\"]\n\
                    [[issuer]]\nname = \"a\"\nurl = \"https://v\"\naudiences = [\"x\"]\n\
                    [[rule]]\nname = \"r\"\nissuer = \"zz\"\n[[rule]]\nname = \"r\"\n";
        let p = problems(text);
        assert!(p.iter().any(|x| x.message.contains("issuer name \"a\" is used twice") && x.line == Some(5)), "{p:?}");
        assert!(
            p.iter()
                .any(|x| x.message.contains("no [[issuer]] defines") && x.line == Some(11)),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|x| x.message.contains("rule name \"r\" is used twice") && x.line == Some(12)),
            "{p:?}"
        );
    }

    #[test]
    fn bad_globs_and_claims() {
        let p = problems("[[rule]]\nname = \"r\"\nusers = [\"\"]\n");
        assert!(p[0].message.contains("empty pattern"));
        let p = problems("[[rule]]\nname = \"r\"\nusers = []\n");
        assert!(p[0].message.contains("empty list"));
        let p = problems("[[rule]]\nname = \"r\"\n[rule.claims]\nx = { a = 1 }\n");
        assert_eq!(p[0].line, Some(4));
        let p = problems("[[rule]]\nname = \"r\"\nlogin_as = \"a*\"\n");
        assert!(p[0].message.contains("login_as"));
    }

    #[test]
    fn negative_numbers_and_relative_paths() {
        let p = problems("[defaults]\nleeway = -1\nstate_dir = \"rel\"\nrevocations = \"r\"\n");
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].line, Some(2));
        assert_eq!(p[1].line, Some(3));
        assert_eq!(p[2].line, Some(4));
        assert!(
            p[2].message
                .contains("revocations must be an absolute path")
        );
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let text = "[[issuer]]\nname = \"a\"\nurl = \"https://u\"\naudiences = []\nalgorithms = [\"none\"]\n";
        assert_eq!(problems(text).len(), 2);
    }
}
