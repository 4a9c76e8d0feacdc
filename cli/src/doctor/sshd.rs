//! Doctor: sshd's effective settings (`sshd -T` on the given file, for a sample CI
//! connection so `Match` blocks apply): tokens travel by keyboard-interactive through PAM,
//! so UsePAM and keyboard-interactive must be on and allowed by AuthenticationMethods; the
//! stock MaxStartups cuts bursts of CI logins (FIELD-NOTES: 60 of 100 get through).
//! sshd keeps the first value it reads of an option (servconf.c), so a fix names the file
//! and line that wins: RHEL 9's `sshd_config.d/50-redhat.conf` says
//! `ChallengeResponseAuthentication no` (the same option), Debian 12's sshd_config says
//! `KbdInteractiveAuthentication no` at line 62, and a `yes` after either is ignored.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use idtoken_core::config::Config;

use super::{Check, run_command};

const SSHD: &str = "/usr/sbin/sshd";
/// The connection `Match` blocks are evaluated for: a job from a documentation address.
const SAMPLE_HOST: &str = "ci-runner.invalid";
const SAMPLE_ADDR: &str = "192.0.2.10";
const STOCK_MAX_STARTUPS: &str = "10:30:100";
const RECOMMENDED_MAX_STARTUPS: &str = "110:30:210";
/// Where sshd resolves a relative `Include` (SSHDIR).
const SSHDIR: &str = "/etc/ssh";
/// The drop-in the docs use: sorts before RHEL's 50-redhat.conf.
const DROP_IN: &str = "/etc/ssh/sshd_config.d/10-idtoken.conf";

pub fn checks(file: &Path, config: Option<&Config>) -> Vec<Check> {
    const NAME: &str = "sshd";
    if !Path::new(SSHD).exists() {
        return vec![Check::skip(
            NAME,
            format!("{SSHD} is not installed here: no sshd to check"),
        )];
    }
    if !file.is_file() {
        return vec![Check::fail(
            NAME,
            format!("{} does not exist", file.display()),
            "give the sshd configuration in use with `--sshd-config PATH`",
        )];
    }
    if uzers::get_effective_uid() != 0 {
        return vec![Check::warn(
            NAME,
            "`sshd -T` needs root: sshd's settings were not checked",
            "run `idtoken doctor` as root",
        )];
    }
    // A rule's login_as is the account CI jobs arrive as; otherwise any name will do.
    let user = config
        .and_then(|c| c.rules.iter().find_map(|r| r.login_as.clone()))
        .unwrap_or_else(|| "idtoken-doctor".to_string());
    let settings = match effective(file, &user) {
        Ok(s) => s,
        Err(why) => {
            return vec![Check::fail(
                NAME,
                format!("`sshd -T -f {}` failed: {why}", file.display()),
                format!(
                    "fix what sshd says; `sshd -t -f {}` re-checks",
                    file.display()
                ),
            )];
        }
    };
    let get = |k: &str| settings.get(k).map(String::as_str).unwrap_or_default();
    let reload = "then `systemctl reload ssh` (Debian) or `systemctl reload sshd` (RHEL)";
    let seen = format!(
        "{} (effective, for user {user} from {SAMPLE_ADDR})",
        file.display()
    );
    let mut out = Vec::new();
    out.push(if get("usepam") == "yes" {
        Check::ok("sshd.use_pam", format!("{seen}: UsePAM yes"))
    } else {
        Check::fail(
            "sshd.use_pam",
            format!(
                "{seen}: UsePAM {}: sshd never asks PAM, so the module is never reached",
                get("usepam")
            ),
            format!(
                "set `UsePAM yes` in {} (before any Match block), {reload}",
                file.display()
            ),
        )
    });
    // `challengeresponseauthentication` is the name before OpenSSH 8.7.
    let kbd = settings
        .get("kbdinteractiveauthentication")
        .or_else(|| settings.get("challengeresponseauthentication"))
        .map(String::as_str)
        .unwrap_or_default();
    out.push(if kbd == "yes" {
        Check::ok(
            "sshd.kbd_interactive",
            format!("{seen}: KbdInteractiveAuthentication yes"),
        )
    } else {
        Check::fail(
            "sshd.kbd_interactive",
            format!(
                "{seen}: KbdInteractiveAuthentication {kbd}: tokens (longer than sshd's password \
                 path accepts) cannot be sent"
            ),
            kbd_fix(file, reload),
        )
    });
    out.push(methods_check(
        &seen,
        get("authenticationmethods"),
        file,
        reload,
    ));
    out.push(use_dns_check(&seen, get("usedns"), config, file, reload));
    let max_startups = get("maxstartups");
    out.push(if max_startups == STOCK_MAX_STARTUPS {
        Check::warn(
            "sshd.max_startups",
            format!(
                "{seen}: MaxStartups {STOCK_MAX_STARTUPS} (the stock value): bursts of CI logins \
                 are cut before authentication (measured: 60-64 of 100 simultaneous logins \
                 got through)"
            ),
            format!(
                "set `MaxStartups {RECOMMENDED_MAX_STARTUPS}` in {}, {reload}",
                file.display()
            ),
        )
    } else {
        Check::ok(
            "sshd.max_startups",
            format!("{seen}: MaxStartups {max_startups}"),
        )
    });
    out
}

/// The fix for keyboard-interactive being off: the line sshd reads first wins, so name it.
fn kbd_fix(file: &Path, reload: &str) -> String {
    let keywords = [
        "kbdinteractiveauthentication",
        "challengeresponseauthentication",
    ];
    match first_setting(file, &keywords, 0) {
        Some((at, line, key, value)) if !value.eq_ignore_ascii_case("yes") => format!(
            "`{key} {value}` at {}:{line} is the first of its lines sshd reads, and sshd keeps \
             the first value (a `yes` after it is ignored; ChallengeResponseAuthentication is \
             the same option): change it to `KbdInteractiveAuthentication yes` there, or put \
             `KbdInteractiveAuthentication yes` in a file sshd reads before it, such as \
             {DROP_IN} where {} includes sshd_config.d/*.conf above its own settings (as \
             Debian 12's and RHEL 9's do), {reload}",
            at.display(),
            file.display()
        ),
        Some((at, line, _, _)) => format!(
            "the first setting, at {}:{line}, says yes: a `Match` block turns it off for this \
             connection; set `KbdInteractiveAuthentication yes` there, {reload}",
            at.display()
        ),
        None => format!(
            "set `KbdInteractiveAuthentication yes` in {} (before any Match block), {reload}",
            file.display()
        ),
    }
}

/// The first line setting one of `keywords` (lowercase) that sshd reads outside a Match
/// block, as (file, line number, keyword as written, value): the main file in order, each
/// `Include` expanded where it stands (relative paths under /etc/ssh, matches in glob
/// order), as servconf.c reads them.
fn first_setting(
    file: &Path,
    keywords: &[&str],
    depth: usize,
) -> Option<(PathBuf, usize, String, String)> {
    if depth > 16 {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    for (i, line) in text.lines().enumerate() {
        let mut words = line
            .trim()
            .split(|c: char| c.is_whitespace() || c == '=')
            .filter(|w| !w.is_empty());
        let Some(key) = words.next().filter(|k| !k.starts_with('#')) else {
            continue;
        };
        let lower = key.to_ascii_lowercase();
        if lower == "match" {
            break;
        }
        if lower == "include" {
            for pattern in words {
                for included in expand_include(pattern) {
                    if let Some(found) = first_setting(&included, keywords, depth.saturating_add(1))
                    {
                        return Some(found);
                    }
                }
            }
            continue;
        }
        if keywords.contains(&lower.as_str()) {
            let value = words.next().unwrap_or_default().to_string();
            return Some((
                file.to_path_buf(),
                i.saturating_add(1),
                key.to_string(),
                value,
            ));
        }
    }
    None
}

/// The files an `Include` pattern names, sorted as glob(3) returns them; wildcards (`*`,
/// `?`) in the last component only, which is how sshd configs use them.
fn expand_include(pattern: &str) -> Vec<PathBuf> {
    let path = if pattern.starts_with('/') {
        PathBuf::from(pattern)
    } else {
        Path::new(SSHDIR).join(pattern)
    };
    let Some(name) = path.file_name().and_then(OsStr::to_str) else {
        return Vec::new();
    };
    if !name.contains(['*', '?']) {
        return vec![path.clone()];
    }
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.') && wildcard(name.as_bytes(), n.as_bytes()))
        .map(|n| dir.join(n))
        .collect();
    found.sort();
    found
}

/// `*` and `?` matching of a file name.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.split_first(), name.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            wildcard(rest, name)
                || name
                    .split_first()
                    .is_some_and(|(_, n)| wildcard(pattern, n))
        }
        (Some((b'?', rest)), Some((_, n))) => wildcard(rest, n),
        (Some((p, rest)), Some((c, n))) => p == c && wildcard(rest, n),
        _ => false,
    }
}

/// `any`, or a space-separated list of comma-separated method lists: keyboard-interactive
/// must be one whole list (alone it is enough for a job, which has no key to add).
fn methods_check(seen: &str, methods: &str, file: &Path, reload: &str) -> Check {
    let kbd = |m: &str| m == "keyboard-interactive" || m.starts_with("keyboard-interactive:");
    let lists: Vec<Vec<&str>> = methods
        .split_whitespace()
        .map(|l| l.split(',').collect())
        .collect();
    let fix = format!(
        "add `keyboard-interactive` as a list of its own to AuthenticationMethods in {} \
         (or leave it unset), {reload}",
        file.display()
    );
    if methods.is_empty()
        || methods == "any"
        || lists
            .iter()
            .any(|l| l.len() == 1 && l.iter().all(|m| kbd(m)))
    {
        Check::ok(
            "sshd.authentication_methods",
            format!(
                "{seen}: AuthenticationMethods {} allows keyboard-interactive alone",
                if methods.is_empty() { "any" } else { methods }
            ),
        )
    } else if lists.iter().any(|l| l.iter().any(|m| kbd(m))) {
        Check::warn(
            "sshd.authentication_methods",
            format!(
                "{seen}: AuthenticationMethods {methods}: keyboard-interactive only after another method, which a CI job rarely has"
            ),
            fix,
        )
    } else {
        Check::fail(
            "sshd.authentication_methods",
            format!(
                "{seen}: AuthenticationMethods {methods} does not allow keyboard-interactive: no token can log in"
            ),
            fix,
        )
    }
}

/// `sshd -T` for the sample connection. sshd refuses to print its settings when none of
/// the file's host keys can be loaded (a config copied from another host, a test): then it
/// is asked again with a throwaway key, since host keys change nothing checked here.
fn effective(file: &Path, user: &str) -> Result<HashMap<String, String>, String> {
    let conn = format!("user={user},host={SAMPLE_HOST},addr={SAMPLE_ADDR}");
    let base: Vec<OsString> = vec![
        "-T".into(),
        "-f".into(),
        file.as_os_str().to_os_string(),
        "-C".into(),
        conn.into(),
    ];
    let args =
        |extra: &[OsString]| -> Vec<OsString> { base.iter().chain(extra).cloned().collect() };
    let first = args(&[]);
    let ran = run_command(SSHD, &refs(&first)).ok_or_else(|| format!("{SSHD} could not be run"))?;
    let ran = if !ran.success && ran.stderr.contains("no hostkeys available") {
        let dir = TempKeyDir::new()?;
        let with_key = args(&["-o".into(), format!("HostKey={}", dir.key.display()).into()]);
        run_command(SSHD, &refs(&with_key)).ok_or_else(|| format!("{SSHD} could not be run"))?
    } else {
        ran
    };
    if !ran.success {
        return Err(ran.stderr.lines().last().unwrap_or("no output").to_string());
    }
    Ok(ran
        .stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect())
}

fn refs(v: &[OsString]) -> Vec<&OsStr> {
    v.iter().map(OsString::as_os_str).collect()
}

/// A private directory with a fresh ed25519 key, removed on drop.
struct TempKeyDir {
    dir: PathBuf,
    key: PathBuf,
}

impl TempKeyDir {
    fn new() -> Result<TempKeyDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("idtoken-doctor-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let t = TempKeyDir {
            key: dir.join("host_key"),
            dir,
        };
        let made = run_command(
            "ssh-keygen",
            &[
                OsStr::new("-q"),
                OsStr::new("-t"),
                OsStr::new("ed25519"),
                OsStr::new("-N"),
                OsStr::new(""),
                OsStr::new("-f"),
                t.key.as_os_str(),
            ],
        );
        match made {
            Some(r) if r.success => Ok(t),
            _ => Err(
                "the config's host keys are missing and ssh-keygen could not make a temporary one"
                    .into(),
            ),
        }
    }
}

impl Drop for TempKeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// With `UseDNS yes` sshd sets PAM_RHOST to the client's host name when the reverse and
/// forward lookups agree (auth-pam.c takes `auth_get_canonical_hostname(ssh,
/// options.use_dns)`), so a rule's `from` sees a name: a granting rule's never holds, a deny
/// rule's always does (SPEC v3). Either way the rule is not about networks any more.
fn use_dns_check(
    seen: &str,
    use_dns: &str,
    config: Option<&Config>,
    file: &Path,
    reload: &str,
) -> Check {
    const NAME: &str = "sshd.use_dns";
    let with_from: Vec<&str> = config
        .map(|c| {
            c.rules
                .iter()
                .filter(|r| r.from.is_some())
                .map(|r| r.name.as_str())
                .collect()
        })
        .unwrap_or_default();
    if use_dns != "yes" {
        return Check::ok(
            NAME,
            format!("{seen}: UseDNS {use_dns}: PAM_RHOST is the client's address"),
        );
    }
    if with_from.is_empty() {
        return Check::ok(NAME, format!("{seen}: UseDNS yes, and no rule has `from`"));
    }
    Check::warn(
        NAME,
        format!(
            "{seen}: UseDNS yes: sshd sets PAM_RHOST to the client's host name where DNS has \
             one, so rules with `from` ({}) see a name, not an address: a granting rule's `from` \
             then never holds and a deny rule's always does",
            with_from.join(", ")
        ),
        format!(
            "set `UseDNS no` (the default) in {}, {reload}",
            file.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_patterns_match_as_glob_does() {
        assert!(wildcard(b"*.conf", b"50-redhat.conf"));
        assert!(wildcard(b"?0-*.conf", b"10-idtoken.conf"));
        assert!(!wildcard(b"*.conf", b"50-redhat.conf.rpmnew"));
        assert!(!wildcard(b"*.conf", b"conf"));
    }
}
