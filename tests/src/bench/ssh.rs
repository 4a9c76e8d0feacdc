//! The ssh-level benchmarks of `ssh-bench` that need more than one login at a time or the
//! CPU of the whole sshd tree: a burst of CI jobs against one sshd (`--burst N`) and the
//! CPU that sshd and every process it forks spend per login (`--tree-cpu N`).
//!
//! Both use the client a CI job uses (`ssh` with `SSH_ASKPASS` = `idtoken askpass`,
//! `IDTOKEN_HOST` the host the ssh command names, a GitLab-shaped token of about 1.6 KB,
//! which the helper sends packed in one answer) and the same client against every module
//! stack, so those differ only in what sshd does. `--tree-cpu` also sets beside them what a
//! site has without the module: an SSH key, and a password checked by pam_unix.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::bench::{self, ACCOUNT};
use crate::keys::{self, mint_gitlab_shaped};
use crate::pam::PamHarness;
use crate::sandbox::set_mode;
use crate::sshd::{Sshd, run_bounded};

/// The module as a site stacks it in front of a password module: a token ends the auth
/// stack, a password (not JWT-shaped: PAM_IGNORE) goes on to the next line.
pub const MODULE_STACK: &str = "auth [success=done ignore=ignore default=die] MODULE config=CONFIG\nauth required pam_permit.so";
pub const PERMIT_STACK: &str = "auth required pam_permit.so";
/// The module loaded by pam_start (libpam loads every module of the service) but never
/// called: pam_permit ends the stack first. What loading the module alone costs.
pub const LOADED_STACK: &str =
    "auth [success=done default=die] pam_permit.so\nauth required MODULE config=CONFIG";
/// sshd's compiled-in default, spelled out so the benchmark does not depend on the host's.
pub const STOCK_MAX_STARTUPS: &str = "MaxStartups 10:30:100";
/// What the harness (tests/src/sshd.rs) and docs/install.md recommend.
pub const RECOMMENDED_MAX_STARTUPS: &str = "110:30:210";
/// A password answer: not JWT-shaped, so the module returns PAM_IGNORE; also the test
/// accounts' password (tests/src/accounts.rs), which pam_unix checks.
const PASSWORD: &str = crate::accounts::PASSWORD;
/// [`PASSWORD`] hashed as Debian 12 hashes a password set with `passwd` (login.defs
/// `ENCRYPT_METHOD YESCRYPT`, cost factor 5: `$y$j9T$`), so the pam_unix row costs what a
/// site's password login costs. Made with `crypt.crypt(PASSWORD, "$y$j9T$idtokenbenchsalt$")`.
const YESCRYPT_HASH: &str = "$y$j9T$idtokenbenchsalt$mshKm9jlT6zIViLbUQMSpfKSAYkU5beS/AC6MyuLF7D";
/// The site's password stack without the module.
const UNIX_STACK: &str = "auth required pam_unix.so";

/// The CI template's retry policy (packaging/gitlab-ci/idtoken-ssh.gitlab-ci.yml):
/// IDTOKEN_CONNECT_ATTEMPTS and IDTOKEN_RETRY_MS as it ships them.
const ATTEMPTS: u32 = 5;
const RETRY_MS: u64 = 1000;

/// The benchmark token: the site's grantable claims in a token shaped as GitLab signs one
/// (every claim GitLab sends, values as long and as random as real ones: 1.5-1.7 KB), so
/// its packed form is as long as a real token's. Asserted to need two parts unpacked.
pub fn token(now: i64) -> String {
    let mut c = keys::gitlab_claims(ACCOUNT);
    if let Some(m) = c.as_object_mut() {
        m.insert("iat".into(), json!(now));
        m.insert("nbf".into(), json!(now - 5));
        m.insert("exp".into(), json!(now + 86_000));
    }
    let token = mint_gitlab_shaped(&c);
    assert!(
        token.len() > 1023,
        "the benchmark token ({} B) must be longer than one OpenSSH answer",
        token.len()
    );
    token
}

/// A harness with the benchmark's site config and key cache and an askpass script that
/// notes each prompt it answers, before sshd starts (a case may still change its files).
fn site_harness(tag: &str) -> PamHarness {
    let mut pam = PamHarness::new(tag);
    // /run on tmpfs, as on a login node: the module writes a session record per token login.
    pam.run_tmpfs = true;
    let cache = pam
        .sandbox
        .write("gitlab.jwks.json", bench::key_cache_json().as_bytes());
    pam.sandbox.write(
        "idtoken.toml",
        bench::config_text(&cache, &pam.sandbox.path("uses")).as_bytes(),
    );
    let askpass = pam.sandbox.path("bench-askpass");
    // `$BENCH_ASKED`: the template's helper leaves the same mark, so that a connection that
    // reached a prompt is never retried; one line per prompt, so a figure can say how many
    // answers its logins took.
    std::fs::write(
        &askpass,
        format!(
            "#!/bin/sh\necho asked >> \"$BENCH_ASKED\"\nexec {} askpass \"$1\"\n",
            crate::idtoken_bin().display()
        ),
    )
    .unwrap_or_else(|e| panic!("askpass: {e}"));
    set_mode(&askpass, 0o755);
    // A password prompt (pam_unix's `Password: `) is not the token helper's to answer: a
    // site's password users type it, or `sshpass` sends it; this helper stands in for them.
    let password = pam.sandbox.write(
        "bench-password",
        b"#!/bin/sh\necho asked >> \"$BENCH_ASKED\"\nprintf '%s\\n' \"$BENCH_PASSWORD\"\n",
    );
    set_mode(&password, 0o755);
    pam
}

/// An sshd with the benchmark's site config and key cache behind `auth` (see
/// [`Sshd::start`]), given `-o` options, and an askpass script that notes it was asked.
pub fn site_sshd(tag: &str, auth: &str, options: &[&str]) -> Sshd {
    Sshd::start_with_options(site_harness(tag), auth, options)
}

/// One askpass login running `remote`; `mark` is the file the helper touches when asked.
pub fn askpass_login(s: &Sshd, answer: &str, mark: &Path, remote: &str) -> Output {
    run_bounded(&mut askpass_command(s, answer, mark, remote))
}

/// The `ssh` command of [`askpass_login`], not yet run (a caller may add to its environment).
fn askpass_command(s: &Sshd, answer: &str, mark: &Path, remote: &str) -> std::process::Command {
    let mut c = s.ssh(ACCOUNT, remote);
    c.env("SSH_ASKPASS", s.pam.sandbox.path("bench-askpass"))
        .env("SSH_ASKPASS_REQUIRE", "force")
        // The host exactly as the ssh command line names it (Sshd::ssh: 127.0.0.1).
        .env("IDTOKEN_HOST", "127.0.0.1")
        .env("IDTOKEN", answer)
        .env("BENCH_ASKED", mark);
    c
}

/// The module's syslog lines in `s` that contain `what` (`decision=allow`, `passing it on`,
/// or "" for any), once there are at least `want` of them or after 5 s: syslog lines
/// arrive a little after the login that wrote them.
fn module_lines(s: &Sshd, what: &str, want: usize) -> usize {
    let start = Instant::now();
    loop {
        let n = s
            .pam
            .syslog
            .lines()
            .iter()
            .filter(|l| l.contains("pam_idtoken(") && l.contains(what))
            .count();
        if n >= want || start.elapsed() > Duration::from_secs(5) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the module must have done in a benchmark's logins for its figure to be the module's.
#[derive(Clone, Copy, PartialEq)]
enum Module {
    /// Not in the stack.
    Absent,
    /// Loaded by libpam but never called: no line of the module at all.
    LoadedOnly,
    /// One `decision=allow` audit line per login (a token).
    AllowsEach,
    /// Called in each login, no decision (a password, passed on with PAM_IGNORE).
    PassesEachOn,
}

/// The lines the askpass helper wrote to `mark`: one per prompt it answered.
fn prompts(mark: &Path) -> usize {
    std::fs::read_to_string(mark).map_or(0, |t| t.lines().count())
}

/// Refuses (panics) unless `s`'s `n` logins took `want_prompts` prompts each (`prompts`
/// in all) and the module did in them what `expect` says: a stack that logs in without the
/// module deciding (pam_permit after a module that stepped aside), or a token sent in two
/// answers where one was meant, would otherwise be reported as another case's cost.
fn check_module(
    s: &Sshd,
    tag: &str,
    n: usize,
    prompts: usize,
    want_prompts: usize,
    expect: Module,
) {
    let (what, want) = match expect {
        Module::Absent => ("", None),
        Module::LoadedOnly => ("", Some(0)),
        Module::AllowsEach => ("decision=allow", Some(n)),
        Module::PassesEachOn => ("decision=", Some(0)),
    };
    let got = want.map(|want| {
        if want == 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        module_lines(s, what, want)
    });
    assert!(
        prompts == n * want_prompts && got == want,
        "ssh-bench: {tag}: {n} logins, {prompts} prompts answered (want {}), {got:?} module \
         lines with {what:?} (want {want:?}): the logins did not do what this figure is about, \
         so none is reported\nsshd log:\n{}",
        n * want_prompts,
        s.sshd_log()
    );
}

/// Whether the template would retry this attempt: ssh's own error (255), no prompt
/// reached, and sshd closed the connection before authentication.
fn retryable(out: &Output, asked: bool) -> bool {
    let err = String::from_utf8_lossy(&out.stderr);
    out.status.code() == Some(255)
        && !asked
        && [
            "Connection closed",
            "Connection reset",
            "kex_exchange_identification",
        ]
        .iter()
        .any(|p| err.contains(p))
}

/// A small xorshift for the backoff's jitter: no randomness crate for one number.
fn jitter(seed: &mut u64, up_to: u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed % (up_to + 1)
}

/// One CI job's login: ok, time from its start to the end of its last attempt, attempts.
struct JobResult {
    ok: bool,
    ms: f64,
    attempts: u32,
    last_error: String,
}

fn job(s: &Sshd, answer: &str, mark: PathBuf, retry: bool, seed: u64) -> JobResult {
    let start = Instant::now();
    let mut seed = seed | 1;
    let mut attempt = 1;
    loop {
        let _ = std::fs::remove_file(&mark);
        let out = askpass_login(s, answer, &mark, "true");
        let asked = mark.exists();
        if out.status.success() || !retry || attempt >= ATTEMPTS || !retryable(&out, asked) {
            return JobResult {
                ok: out.status.success(),
                ms: start.elapsed().as_secs_f64() * 1000.0,
                attempts: attempt,
                last_error: String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_string(),
            };
        }
        let ms = RETRY_MS << (attempt - 1);
        std::thread::sleep(Duration::from_millis(ms + jitter(&mut seed, ms)));
        attempt += 1;
    }
}

/// The p-th percentile (nearest rank) of sorted `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// `n` jobs released together by a barrier against `s`; their results.
fn burst_once(s: &Sshd, n: usize, answer: &str, retry: bool) -> Vec<JobResult> {
    let barrier = Arc::new(Barrier::new(n));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let barrier = Arc::clone(&barrier);
                let mark = s.pam.sandbox.path(&format!("asked-{i}"));
                let seed = ((std::process::id() as u64) << 20) ^ ((i as u64 + 1) * 0x9E37_79B9);
                scope.spawn(move || {
                    barrier.wait();
                    job(s, answer, mark, retry, seed)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("a burst client panicked"))
            })
            .collect()
    })
}

/// `ssh-bench --burst N`: N logins at once against one sshd, for stock and recommended
/// MaxStartups, the module and pam_permit, each without and with the template's retry.
/// Prints a table and one JSON line per row; never fails on the figures, only when no
/// login of a recommended-MaxStartups row got through, or when logins through the module's
/// stack were not the module's allows (the bench itself is broken then: no figure).
pub fn burst(n: usize) {
    let now = bench::now();
    let token = token(now);
    let recommended = format!("MaxStartups {RECOMMENDED_MAX_STARTUPS}");
    println!(
        "burst of {n} askpass logins ({} B token, packed in one answer) against one sshd, loopback",
        token.len()
    );
    println!(
        "{:<26} {:<12} {:<6} {:>9} {:>9} {:>9} {:>8}",
        "MaxStartups", "stack", "retry", "ok", "p50 ms", "p99 ms", "retries"
    );
    let mut broken = Vec::new();
    for (startups, options) in [
        ("10:30:100 (stock)", vec![STOCK_MAX_STARTUPS]),
        ("110:30:210 (recommended)", vec![recommended.as_str()]),
    ] {
        for (stack, auth) in [("pam_idtoken", MODULE_STACK), ("pam_permit", PERMIT_STACK)] {
            let s = site_sshd(&format!("burst-{stack}"), auth, &options);
            let effective = effective(&s, "maxstartups");
            assert!(
                startups.starts_with(&effective),
                "sshd runs with MaxStartups {effective}, not {startups}"
            );
            // One login first, so the burst does not also measure the first exec of sshd.
            let warm = askpass_login(&s, &token, &s.pam.sandbox.path("asked-warm"), "true");
            assert!(
                warm.status.success(),
                "warm-up login failed:\n{}\nsshd log:\n{}",
                String::from_utf8_lossy(&warm.stderr),
                s.sshd_log()
            );
            // Every login that got through the module's stack must be the module's allow
            // (pam_permit after it would let a module that never decides pass).
            let mut allowed = if stack == "pam_idtoken" {
                let got = module_lines(&s, "decision=allow", 1);
                assert_eq!(
                    got, 1,
                    "ssh-bench --burst: the warm-up login was not the module's allow"
                );
                got
            } else {
                0
            };
            for retry in [false, true] {
                let results = burst_once(&s, n, &token, retry);
                let ok = results.iter().filter(|r| r.ok).count();
                if stack == "pam_idtoken" {
                    let got = module_lines(&s, "decision=allow", allowed + ok);
                    assert!(
                        got >= allowed + ok,
                        "ssh-bench --burst: {ok} logins through the module's stack (retry={retry}) \
                         but {} decision=allow audit lines: the module did not decide them, so \
                         no figure is reported for it",
                        got - allowed
                    );
                    allowed = got;
                }
                let retries: u32 = results.iter().map(|r| r.attempts - 1).sum();
                let mut ms: Vec<f64> = results.iter().filter(|r| r.ok).map(|r| r.ms).collect();
                ms.sort_by(f64::total_cmp);
                let (p50, p99) = (percentile(&ms, 50.0), percentile(&ms, 99.0));
                let retry_name = if retry { "yes" } else { "no" };
                println!(
                    "{startups:<26} {stack:<12} {retry_name:<6} {:>9} {p50:>9.0} {p99:>9.0} {retries:>8}",
                    format!("{ok}/{n}")
                );
                if let Some(r) = results.iter().find(|r| !r.ok) {
                    println!("    a failed login's last words: {}", r.last_error);
                }
                println!(
                    "{}",
                    json!({"burst": n, "max_startups": startups, "stack": stack, "retry": retry,
                           "ok": ok, "p50_ms": p50, "p99_ms": p99, "retries": retries})
                );
                if ok == 0 && startups.contains("recommended") {
                    broken.push(format!("{stack} retry={retry}: no login got through"));
                }
            }
            if stack == "pam_idtoken" {
                println!("    audit lines with decision=allow: {allowed} (warm-up included)");
            }
        }
    }
    assert!(broken.is_empty(), "ssh-bench --burst: {broken:?}");
}

/// The value sshd runs with for `keyword` (lower case), from `sshd -T` on its config.
fn effective(s: &Sshd, keyword: &str) -> String {
    let out = std::process::Command::new(crate::sshd::SSHD)
        .arg("-T")
        .arg("-f")
        .arg(s.pam.sandbox.path("sshd_config"))
        .output()
        .unwrap_or_else(|e| panic!("sshd -T: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{keyword} ")).map(str::to_string))
        .unwrap_or_default()
}

/// CPU milliseconds (user + system) of a rusage.
fn cpu_ms(u: &libc::rusage) -> f64 {
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// How a `--tree-cpu` case's client logs in.
#[derive(Clone, Copy)]
enum Client<'a> {
    /// `ssh` with the askpass helper answering `answer`: a token packed into one answer
    /// when it fits (the helper's default), or with `parts` in the answers of the prompts
    /// as they come (`IDTOKEN_PACK=no`).
    Askpass { answer: &'a str, parts: bool },
    /// `ssh` with an askpass helper answering the account's password, which pam_unix
    /// checks against a yescrypt hash ([`YESCRYPT_HASH`]).
    Password,
    /// `ssh -i` with an ed25519 key and publickey only, no prompt: the key in a CI variable
    /// that this project replaces.
    Publickey,
}

/// One `--tree-cpu` row: the sshd it runs against and what each login must have done.
struct Case<'a> {
    name: &'a str,
    /// The auth lines of sshd's PAM service (account and session: pam_permit everywhere).
    auth: &'a str,
    client: Client<'a>,
    /// Prompts each login answers.
    prompts: usize,
    module: Module,
}

/// The ed25519 key of the publickey case, made once per run, and its authorized_keys line.
struct ClientKey {
    dir: crate::sandbox::Sandbox,
    key: PathBuf,
}

impl ClientKey {
    fn new() -> ClientKey {
        let dir = crate::sandbox::Sandbox::new("bench-key");
        let key = dir.path("id_ed25519");
        crate::sshd::ed25519_key(&key);
        ClientKey { dir, key }
    }

    fn public(&self) -> String {
        std::fs::read_to_string(self.dir.path("id_ed25519.pub"))
            .unwrap_or_else(|e| panic!("the bench key's public half: {e}"))
    }
}

/// Starts an sshd for `case`: the account's password hashed as Debian hashes it for
/// pam_unix, the client key authorized for publickey.
fn tree_start(tag: &str, case: &Case, key: &ClientKey) -> Sshd {
    let pam = site_harness(tag);
    // The password client logs in through pam_unix: the account's password as Debian
    // hashes it.
    if let Client::Password = case.client {
        let shadow = pam.etc.join("shadow");
        let text = std::fs::read_to_string(&shadow).unwrap_or_else(|e| panic!("shadow: {e}"));
        let prefix = format!("{ACCOUNT}:");
        let text: String = text
            .lines()
            .map(|l| match l.strip_prefix(&prefix) {
                Some(rest) => {
                    let after_hash = rest.split_once(':').map_or("", |(_, r)| r);
                    format!("{prefix}{YESCRYPT_HASH}:{after_hash}\n")
                }
                None => format!("{l}\n"),
            })
            .collect();
        assert!(text.contains(YESCRYPT_HASH), "no shadow line for {ACCOUNT}");
        std::fs::write(&shadow, text).unwrap_or_else(|e| panic!("shadow: {e}"));
    }
    let mut options = Vec::new();
    if let Client::Publickey = case.client {
        let keys = pam
            .sandbox
            .write("authorized_keys", key.public().as_bytes());
        options = vec![
            "PubkeyAuthentication yes".to_string(),
            "AuthenticationMethods publickey".to_string(),
            format!("AuthorizedKeysFile {}", keys.display()),
        ];
    }
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    Sshd::start_with_options(pam, case.auth, &options)
}

/// Login `i` of `case` against `s`, running `remote`; refuses (panics) when it fails. The
/// login's output and the prompts it answered.
fn tree_login(s: &Sshd, case: &Case, key: &ClientKey, i: usize, remote: &str) -> (Output, usize) {
    let mark = s.pam.sandbox.path(&format!("asked-{i}"));
    let out = match case.client {
        Client::Askpass { answer, parts } => run_bounded(
            askpass_command(s, answer, &mark, remote)
                .env("IDTOKEN_PACK", if parts { "no" } else { "yes" }),
        ),
        Client::Password => run_bounded(
            s.ssh(ACCOUNT, remote)
                .env("SSH_ASKPASS", s.pam.sandbox.path("bench-password"))
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("BENCH_PASSWORD", PASSWORD)
                .env("BENCH_ASKED", &mark),
        ),
        Client::Publickey => run_bounded(
            // Not Sshd::ssh: its keyboard-interactive options come first, and ssh keeps the
            // first value of an option.
            std::process::Command::new("ssh")
                .args(["-F", "/dev/null", "-p", &s.port.to_string()])
                .args(["-o", "StrictHostKeyChecking=no"])
                .args(["-o", "UserKnownHostsFile=/dev/null"])
                .args(["-o", "PreferredAuthentications=publickey"])
                .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
                .args(["-o", "ConnectTimeout=10", "-i"])
                .arg(&key.key)
                .arg(format!("{ACCOUNT}@127.0.0.1"))
                .arg(remote)
                .stdin(std::process::Stdio::null())
                .env_remove("SSH_AUTH_SOCK")
                .env_remove("DISPLAY"),
        ),
    };
    assert!(
        out.status.success(),
        "{}: login {i} failed:\n{}\nsshd log:\n{}",
        case.name,
        String::from_utf8_lossy(&out.stderr),
        s.sshd_log()
    );
    let asked = prompts(&mark);
    (out, asked)
}

/// Checks that `s`'s `n` logins did what `case` says, stops sshd; the tree's CPU (ms).
fn tree_finish(s: Sshd, case: &Case, n: usize, asked: usize) -> f64 {
    check_module(&s, case.name, n, asked, case.prompts, case.module);
    let usage = s.stop().unwrap_or_else(|e| panic!("{}: {e}", case.name));
    cpu_ms(&usage)
}

/// One sshd for `case`, `n` sequential logins running `remote`: the tree's CPU (ms) and
/// the last login's output.
fn tree_run(case: &Case, key: &ClientKey, n: usize, remote: &str) -> (f64, Option<Output>) {
    let s = tree_start("tree-check", case, key);
    let mut last = None;
    let mut asked = 0;
    for i in 0..n {
        let (out, a) = tree_login(&s, case, key, i, remote);
        asked += a;
        last = Some(out);
    }
    (tree_finish(s, case, n, asked), last)
}

/// Parses `times`' first line (the shell's own user and system time, `0m0.123456s
/// 0m0.004000s`) into milliseconds.
fn shell_times_ms(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.contains("m") && l.ends_with('s'))?;
    let mut total = 0.0;
    for field in line.split_whitespace().take(2) {
        let (m, s) = field.strip_suffix('s')?.split_once('m')?;
        total += m.parse::<f64>().ok()? * 60_000.0 + s.parse::<f64>().ok()? * 1000.0;
    }
    Some(total)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    match v.len() {
        0 => f64::NAN,
        l if l % 2 == 1 => v[m],
        _ => (v[m - 1] + v[m]) / 2.0,
    }
}

/// Standard deviation (sample) of `v`; NaN under two values.
fn absolute_sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return f64::NAN;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// `ssh-bench --tree-cpu N [--rounds R]`: per-login CPU of the whole sshd tree.
pub fn tree_cpu(n: usize, rounds: usize) {
    let now = bench::now();
    let token = token(now);
    let key = ClientKey::new();
    let permit = Case {
        name: "pam_permit",
        auth: PERMIT_STACK,
        client: Client::Askpass {
            answer: &token,
            parts: false,
        },
        prompts: 0,
        module: Module::Absent,
    };
    // Does the tree's figure really hold the session's processes? One login whose remote
    // shell burns CPU and reports it with `times`, against one running `true`: the tree must
    // grow by what the shell reports.
    let burn = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; times";
    let (with_burn, out) = tree_run(&permit, &key, 1, burn);
    let (plain, _) = tree_run(&permit, &key, 1, "true");
    let shell = out
        .and_then(|o| shell_times_ms(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or(f64::NAN);
    println!(
        "check: a remote shell that reports {shell:.1} ms of its own CPU grew the sshd tree's \
         figure by {:.1} ms (tree {with_burn:.1} against {plain:.1} ms)",
        with_burn - plain
    );
    println!(
        "{}",
        json!({"tree_check": {"shell_ms": shell, "tree_growth_ms": with_burn - plain}})
    );
    // Not a timing target: a method check. Were the session's processes not reaped into
    // the figure (sshd killed instead of stopped, a level of the tree not waited for), the
    // growth would be a small fraction of the shell's own time.
    assert!(
        with_burn - plain >= 0.5 * shell,
        "the sshd tree's CPU misses the session's processes: grew {:.1} ms for a shell of {shell:.1} ms",
        with_burn - plain
    );

    let packed = idtoken_core::packed::pack(&token)
        .unwrap_or_else(|e| panic!("the benchmark token does not pack: {e}"));
    let cases = [
        permit,
        Case {
            name: "publickey (ed25519)",
            auth: PERMIT_STACK,
            client: Client::Publickey,
            prompts: 0,
            module: Module::Absent,
        },
        Case {
            name: "pam_unix password",
            auth: UNIX_STACK,
            client: Client::Password,
            prompts: 1,
            module: Module::Absent,
        },
        Case {
            name: "module loaded only",
            auth: LOADED_STACK,
            client: Client::Askpass {
                answer: &token,
                parts: false,
            },
            prompts: 0,
            module: Module::LoadedOnly,
        },
        Case {
            name: "module, password",
            auth: MODULE_STACK,
            client: Client::Askpass {
                answer: PASSWORD,
                parts: false,
            },
            prompts: 1,
            module: Module::PassesEachOn,
        },
        Case {
            name: "module, packed token",
            auth: MODULE_STACK,
            client: Client::Askpass {
                answer: &token,
                parts: false,
            },
            prompts: 1,
            module: Module::AllowsEach,
        },
        Case {
            name: "module, token in 2 parts",
            auth: MODULE_STACK,
            client: Client::Askpass {
                answer: &token,
                parts: true,
            },
            prompts: 2,
            module: Module::AllowsEach,
        },
    ];
    // Each round starts one sshd per case and an idle one (no login: isolate's and sshd's
    // fixed cost, subtracted), then logs in to them in turn, one login each, the order
    // rotated every pass: a drift in the machine's speed (this VM's neighbours) then falls
    // on every case alike instead of on whichever case ran at the time.
    let mut idle = Vec::new();
    let mut per_login: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        let idle_sshd = tree_start("tree-idle", &cases[0], &key);
        let running: Vec<Sshd> = cases
            .iter()
            .enumerate()
            .map(|(c, case)| tree_start(&format!("tree-{c}"), case, &key))
            .collect();
        let mut asked = vec![0; cases.len()];
        for i in 0..n {
            for k in 0..cases.len() {
                let c = (k + i + round) % cases.len();
                asked[c] += tree_login(&running[c], &cases[c], &key, i, "true").1;
            }
        }
        let i = tree_finish(idle_sshd, &cases[0], 0, 0);
        idle.push(i);
        for (c, s) in running.into_iter().enumerate() {
            let ms = tree_finish(s, &cases[c], n, asked[c]);
            per_login[c].push((ms - i) / n as f64);
            eprintln!(
                "round {round}: {}: {:.3} ms per login",
                cases[c].name,
                (ms - i) / n as f64
            );
        }
    }
    println!(
        "sshd tree CPU (user+sys) per login: {rounds} rounds of {n} logins per stack, one \
         login per stack in turn; idle sshd (subtracted) median {:.1} ms; token {} B, packed {} B",
        median(&idle),
        token.len(),
        packed.len()
    );
    // The rounds share the machine's state of the moment and the idle sshd subtracted, so
    // stacks are compared round by round: the difference to pam_permit and to publickey in
    // each round, then their median (and spread) over the rounds.
    println!(
        "{:<26} {:>8} {:>8} {:>8} {:>17} {:>17} {:>9}",
        "stack", "median", "min", "max", "-permit ms (sd)", "-pubkey ms (sd)", "/pubkey"
    );
    let paired = |c: usize, base: usize, f: fn(f64, f64) -> f64| -> Vec<f64> {
        per_login[c]
            .iter()
            .zip(&per_login[base])
            .map(|(x, b)| f(*x, *b))
            .collect()
    };
    let mut rows = Vec::new();
    for (c, case) in cases.iter().enumerate() {
        let v = &per_login[c];
        let m = median(v);
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let over_permit = paired(c, 0, |x, b| x - b);
        let over_pubkey = paired(c, 1, |x, b| x - b);
        let ratio_pubkey = median(&paired(c, 1, |x, b| x / b));
        let spread = absolute_sd;
        println!(
            "{:<26} {m:>8.3} {lo:>8.3} {hi:>8.3} {:>+9.2} ({:>5.2}) {:>+9.2} ({:>5.2}) {ratio_pubkey:>9.3}",
            case.name,
            median(&over_permit),
            spread(&over_permit),
            median(&over_pubkey),
            spread(&over_pubkey),
        );
        rows.push(
            json!({"stack": case.name, "median_ms": m, "min_ms": lo, "max_ms": hi,
                         "over_permit_ms": median(&over_permit),
                         "over_permit_sd_ms": spread(&over_permit),
                         "over_publickey_ms": median(&over_pubkey),
                         "over_publickey_sd_ms": spread(&over_pubkey),
                         "vs_permit": median(&paired(c, 0, |x, b| x / b)) - 1.0,
                         "vs_publickey": ratio_pubkey, "rounds_ms": v}),
        );
    }
    // How many logins it takes here to tell two stacks 1 % apart: a stack's difference to
    // another scatters over the rounds by `pooled` ms (pooled over every stack's difference
    // to publickey but pam_unix's and publickey's own); its median over R rounds has a
    // standard error of about pooled / sqrt(R), and two of those within 1 % of a login
    // needs R = (2 * pooled / (0.01 * publickey's median))^2 rounds.
    let module_cases: Vec<usize> = (0..cases.len()).filter(|c| *c != 1 && *c != 2).collect();
    let pooled = (module_cases
        .iter()
        .map(|c| absolute_sd(&paired(*c, 1, |x, b| x - b)).powi(2))
        .sum::<f64>()
        / module_cases.len() as f64)
        .sqrt();
    let one_pc = 0.01 * median(&per_login[1]);
    let rounds_for_1pc = (2.0 * pooled / one_pc).powi(2).ceil();
    println!(
        "spread: a stack's difference to another scatters by {pooled:.2} ms (sd over the rounds, \
         pooled); telling two stacks 1% ({one_pc:.2} ms) apart (two standard errors) takes about \
         {rounds_for_1pc:.0} rounds of {n} here, {:.0} logins per stack",
        rounds_for_1pc * n as f64
    );
    println!(
        "{}",
        json!({"tree_cpu": {"logins": n, "rounds": rounds, "idle_ms": idle, "rows": rows,
               "token_bytes": token.len(), "packed_bytes": packed.len(),
               "paired_sd_ms": pooled, "rounds_to_tell_1pc": rounds_for_1pc}})
    );
}
