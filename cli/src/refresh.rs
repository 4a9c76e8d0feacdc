//! `idtoken refresh`: fetch each issuer's keys and replace its key cache, atomically.
//!
//! The login path reads keys only from that cache, so this command is what keeps it right;
//! and since a wrong cache locks CI out (or lets the wrong keys in), nothing replaces it
//! until the new key set has been fetched over verified HTTPS, parsed and checked the way
//! the login path will read it. Any failure leaves the last good cache byte for byte.
//! Exit 0 when every issuer was refreshed, 1 when any failed, 2 when the config or the
//! arguments do not allow starting.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use idtoken_core::config::{Config, DEFAULT_PATH, Defaults, Issuer};
use idtoken_core::files;
use idtoken_core::jwks::{self, MAX_JWKS_BYTES};
use idtoken_core::sanitize::clean;
use idtoken_core::timefmt;
use idtoken_core::uses::DiskLedger;
use serde_json::{Map, Value};

use crate::http::{Client, Target};
use crate::rotation::{self, Changes};
use crate::{atomic_file, token_input};

/// The key cache's mode: readable by all (it holds public keys), written by root only.
pub const CACHE_MODE: u32 = 0o644;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// Refresh only this issuer (its `name` in the config).
    #[arg(long)]
    issuer: Option<String>,
}

pub fn run(args: &Args) -> u8 {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("idtoken refresh: {e}");
            return 2;
        }
    };
    let issuers: Vec<&Issuer> = match &args.issuer {
        None => config.issuers.iter().collect(),
        Some(name) => match config.issuer_by_name(name) {
            Some(i) => vec![i],
            None => {
                eprintln!(
                    "idtoken refresh: no [[issuer]] named {name:?} in {}; configured: {}",
                    args.config.display(),
                    names(&config)
                );
                return 2;
            }
        },
    };
    if issuers.is_empty() {
        println!(
            "{}: no [[issuer]] is configured; nothing to refresh",
            args.config.display()
        );
        return 0;
    }
    let now = token_input::now();
    let mut failed = 0usize;
    for issuer in issuers {
        match refresh_one(issuer, &config.defaults, now) {
            Ok(report) => report.print(issuer),
            Err(why) => {
                failed = failed.saturating_add(1);
                eprintln!(
                    "idtoken refresh: issuer {} ({}): {why}; the key cache {} {}",
                    issuer.name,
                    issuer.url,
                    issuer.jwks_cache.display(),
                    if why.replaced {
                        "was replaced, but a crash now could bring back the previous one: run \
                         `idtoken refresh` again"
                    } else {
                        "was left as it was"
                    }
                );
            }
        }
    }
    prune_use_ledger(&config.defaults, now);
    u8::from(failed > 0)
}

fn names(config: &Config) -> String {
    if config.issuers.is_empty() {
        return "none".to_string();
    }
    config
        .issuers
        .iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one successful refresh did.
struct Report {
    source: String,
    changes: Changes,
    kept: Vec<String>,
    skipped: Vec<String>,
    warnings: Vec<String>,
    grace: i64,
}

impl Report {
    fn print(&self, issuer: &Issuer) {
        println!(
            "{}: refreshed {} from {} (keys: {})",
            issuer.name,
            issuer.jwks_cache.display(),
            self.source,
            self.kept.join(", ")
        );
        let ch = &self.changes;
        if !ch.added.is_empty() {
            println!("  new keys: {}", ch.added.join(", "));
        }
        for kid in &ch.replaced {
            // On stderr too: a key replaced under its kid is what an emergency rotation
            // (or a compromised endpoint) looks like, and a timer's log should show it.
            eprintln!(
                "idtoken refresh: warning: {}: key {kid} now has other key material; the old \
                 material is no longer trusted, so tokens signed with it are refused",
                issuer.name
            );
            println!("  rotated under the same kid (old material dropped): {kid}");
        }
        if !ch.reappeared.is_empty() {
            println!(
                "  published again, no longer retired: {}",
                ch.reappeared.join(", ")
            );
        }
        for (kid, at) in &ch.retired {
            println!(
                "  retired (no longer published since {}), trusted until {}: {kid}",
                timefmt::utc(*at),
                timefmt::utc(at.saturating_add(self.grace))
            );
        }
        if !ch.dropped.is_empty() {
            println!(
                "  dropped (withdrawn longer than key_grace = {} s): {}",
                self.grace,
                ch.dropped.join(", ")
            );
        }
        for s in &self.skipped {
            eprintln!(
                "idtoken refresh: warning: {}: the issuer publishes a key that cannot be used and is not cached: {s}",
                issuer.name
            );
        }
        for w in &self.warnings {
            eprintln!("idtoken refresh: warning: {}: {w}", issuer.name);
        }
    }
}

/// Why a refresh failed, and whether the cache was replaced all the same (only a failed
/// directory fsync after the rename does that).
struct Failure {
    why: String,
    replaced: bool,
}

impl From<String> for Failure {
    fn from(why: String) -> Failure {
        Failure {
            why,
            replaced: false,
        }
    }
}

impl From<atomic_file::ReplaceError> for Failure {
    fn from(e: atomic_file::ReplaceError) -> Failure {
        match e {
            atomic_file::ReplaceError::NotReplaced(why) => Failure {
                why,
                replaced: false,
            },
            atomic_file::ReplaceError::NotDurable(why) => Failure {
                why,
                replaced: true,
            },
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

fn refresh_one(issuer: &Issuer, defaults: &Defaults, now: i64) -> Result<Report, Failure> {
    let client = Client::new(issuer.ca_file.as_deref())?;
    let jwks_url = match &issuer.jwks_url {
        Some(u) => u.clone(),
        None => discover(&client, &issuer.url)?,
    };
    let body = client
        .get(&jwks_url)
        .map_err(|e| format!("fetching the JWKS at {jwks_url}: {e}"))?;
    let (published, skipped) =
        validate(&body).map_err(|e| format!("the JWKS at {jwks_url} {e}"))?;
    let mut warnings = Vec::new();
    let previous = previous_keys(&issuer.jwks_cache, &mut warnings);
    let (doc, changes) = rotation::merge(&published, &previous, now, defaults.key_grace);
    let mut bytes = serde_json::to_vec_pretty(&doc)
        .map_err(|e| format!("cannot serialize the new key cache: {e}"))?;
    bytes.push(b'\n');
    let kept = check_as_login_path(&bytes, now, defaults.key_grace)?;
    ensure_dir(&issuer.jwks_cache)?;
    atomic_file::replace(&issuer.jwks_cache, &bytes, CACHE_MODE)?;
    Ok(Report {
        source: jwks_url,
        changes,
        kept,
        skipped,
        warnings,
        grace: defaults.key_grace,
    })
}

/// OpenID discovery: `<url>/.well-known/openid-configuration`, whose `issuer` must be the
/// configured url exactly (the tokens' iss), then its `jwks_uri`.
fn discover(client: &Client, url: &str) -> Result<String, String> {
    let doc_url = format!(
        "{}/.well-known/openid-configuration",
        url.trim_end_matches('/')
    );
    Target::of(&doc_url)
        .map_err(|e| format!("cannot use OpenID discovery ({e}); set jwks_url for this issuer"))?;
    let at = |e: String| format!("OpenID discovery at {doc_url}: {e}");
    let body = client.get(&doc_url).map_err(at)?;
    let doc: Value =
        serde_json::from_slice(&body).map_err(|e| at(format!("the answer is not JSON ({e})")))?;
    let said = doc.get("issuer").and_then(Value::as_str);
    if said != Some(url) {
        return Err(at(format!(
            "the document names issuer {}, not the configured url {url:?}; tokens from this \
             server would carry that iss: make url equal to it, or set jwks_url",
            said.map_or("(none)".to_string(), |s| format!("{:?}", clean(s)))
        )));
    }
    let jwks_uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| at("the document has no jwks_uri".to_string()))?;
    Target::of(jwks_uri).map_err(|e| at(format!("its jwks_uri is refused: {}", clean(&e))))?;
    Ok(jwks_uri.to_string())
}

/// JWKs as JSON objects.
type Jwks = Vec<Map<String, Value>>;

/// Checks a fetched JWKS and returns its usable keys, and notes on the keys that are not.
/// A set without one usable signing key replaces nothing: that would lock every job out.
fn validate(body: &[u8]) -> Result<(Jwks, Vec<String>), String> {
    let set = jwks::parse(body).map_err(|e| format!("is unusable: {}", clean(&e)))?;
    if set.keys.is_empty() {
        return Err(format!(
            "has no usable signing key (RSA of at least {} bits, EC or Ed25519, with a kid){}",
            jwks::MIN_RSA_BITS,
            if set.skipped.is_empty() {
                String::new()
            } else {
                format!(": {}", clean(&set.skipped.join("; ")))
            }
        ));
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("is not JSON: {e}"))?;
    let skipped = set.skipped.iter().map(|s| clean(s)).collect();
    Ok((rotation::usable_keys(&doc), skipped))
}

/// The keys of the current cache, if it can be trusted; a cache the login path would
/// refuse (unsafe owner or mode, invalid) contributes nothing: its keys are not carried
/// over as retired, since anyone might have put them there.
fn previous_keys(path: &Path, warnings: &mut Vec<String>) -> Jwks {
    let bytes = match files::read_trusted_in_safe_dir(path, MAX_JWKS_BYTES) {
        Ok(b) => b,
        Err(p) if p.kind == files::FileProblemKind::Missing => return Vec::new(),
        Err(p) => {
            warnings.push(format!(
                "the previous key cache is not trusted, so none of its keys is kept: {p}"
            ));
            return Vec::new();
        }
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(doc) => rotation::usable_keys(&doc),
        Err(e) => {
            warnings.push(format!(
                "the previous key cache {} is not JSON ({e}), so none of its keys is kept",
                path.display()
            ));
            Vec::new()
        }
    }
}

/// Parses the new cache as the login path will, and names the keys it would use now.
fn check_as_login_path(bytes: &[u8], now: i64, grace: i64) -> Result<Vec<String>, String> {
    let set = jwks::parse(bytes).map_err(|e| format!("the new key cache would not parse: {e}"))?;
    let live: Vec<String> = set
        .keys
        .iter()
        .filter(|k| k.retired_at.is_none_or(|t| now <= t.saturating_add(grace)))
        .map(|k| format!("{} ({})", clean(&k.kid), k.kind.describe()))
        .collect();
    if live.is_empty() {
        return Err("the new key cache would hold no usable key".to_string());
    }
    Ok(live)
}

/// Creates the cache's directory (0755) if it is missing, as on a first run, and checks it
/// as the login path will: a cache written where the login path refuses to read it, or
/// where someone else could swap it, is no refresh.
fn ensure_dir(cache: &Path) -> Result<(), String> {
    let Some(dir) = cache.parent() else {
        return Ok(());
    };
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| format!("cannot create the cache directory {}: {e}", dir.display()))?;
    }
    files::open_trusted_dir(dir, files::DirUse::Shared, false)
        .map(drop)
        .map_err(|p| format!("the cache's directory is not safe, so nothing was written: {p}"))
}

/// Removes `max_uses` entries of expired tokens, so the ledger does not grow without end.
/// A failure here is only a warning: the keys were the job.
fn prune_use_ledger(defaults: &Defaults, now: i64) {
    if defaults.max_uses == 0 || !defaults.state_dir.is_dir() {
        return;
    }
    let ledger = DiskLedger {
        dir: defaults.state_dir.clone(),
        keep_after_exp: defaults.leeway,
    };
    if let Err(e) = ledger.prune(now) {
        eprintln!("idtoken refresh: warning: pruning the max_uses ledger: {e}");
    }
}
