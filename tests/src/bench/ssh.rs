//! The ssh-level benchmarks of `ssh-bench` that need more than one login at a time or the
//! CPU of the whole sshd tree: a burst of CI jobs against one sshd (`--burst N`) and the
//! CPU that sshd and every process it forks spend per login (`--tree-cpu N`).
//!
//! Both use the client a CI job uses (`ssh` with `SSH_ASKPASS` = `idtoken askpass`,
//! `IDTOKEN_HOST` the host the ssh command names, a 1.6 KB token in two parts) and the
//! same client against every stack, so the stacks differ only in what sshd does.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::bench::{self, ACCOUNT};
use crate::keys::{self, mint_exact_len};
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
/// Length of the benchmark token: a GitLab ID token with a few `groups_direct`, two parts.
pub const TOKEN_LEN: usize = 1600;
/// A password answer: not JWT-shaped, so the module returns PAM_IGNORE.
const PASSWORD: &str = "correct-horse-battery";

/// The CI template's retry policy (packaging/gitlab-ci/idtoken-ssh.gitlab-ci.yml):
/// IDTOKEN_CONNECT_ATTEMPTS and IDTOKEN_RETRY_MS as it ships them.
const ATTEMPTS: u32 = 5;
const RETRY_MS: u64 = 1000;

/// The benchmark token: the site's grantable claims, padded to [`TOKEN_LEN`].
pub fn token(now: i64) -> String {
    let mut c = keys::gitlab_claims(ACCOUNT);
    if let Some(m) = c.as_object_mut() {
        m.insert("iat".into(), json!(now));
        m.insert("nbf".into(), json!(now - 5));
        m.insert("exp".into(), json!(now + 86_000));
    }
    mint_exact_len(&c, TOKEN_LEN)
}

/// An sshd with the benchmark's site config and key cache behind `auth` (see
/// [`Sshd::start`]), given `-o` options, and an askpass script that notes it was asked.
pub fn site_sshd(tag: &str, auth: &str, options: &[&str]) -> Sshd {
    let pam = PamHarness::new(tag);
    let cache = pam
        .sandbox
        .write("gitlab.jwks.json", bench::key_cache_json().as_bytes());
    pam.sandbox.write(
        "idtoken.toml",
        bench::config_text(&cache, &pam.sandbox.path("uses")).as_bytes(),
    );
    let askpass = pam.sandbox.path("bench-askpass");
    // `$BENCH_ASKED`: the template's helper leaves the same mark, so that a connection that
    // reached a prompt is never retried.
    std::fs::write(
        &askpass,
        format!(
            "#!/bin/sh\n: > \"$BENCH_ASKED\"\nexec {} askpass \"$1\"\n",
            crate::idtoken_bin().display()
        ),
    )
    .unwrap_or_else(|e| panic!("askpass: {e}"));
    set_mode(&askpass, 0o755);
    Sshd::start_with_options(pam, auth, options)
}

/// One askpass login running `remote`; `mark` is the file the helper touches when asked.
pub fn askpass_login(s: &Sshd, answer: &str, mark: &Path, remote: &str) -> Output {
    run_bounded(
        s.ssh(ACCOUNT, remote)
            .env("SSH_ASKPASS", s.pam.sandbox.path("bench-askpass"))
            .env("SSH_ASKPASS_REQUIRE", "force")
            // The host exactly as the ssh command line names it (Sshd::ssh: 127.0.0.1).
            .env("IDTOKEN_HOST", "127.0.0.1")
            .env("IDTOKEN", answer)
            .env("BENCH_ASKED", mark),
    )
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
    /// Not in the stack: nothing asked.
    Absent,
    /// Loaded by libpam but never called: nothing asked, no line of the module at all.
    LoadedOnly,
    /// Asked in each login, and one `decision=allow` audit line per login (a token).
    AllowsEach,
    /// Asked in each login, and no decision (a password, passed on with PAM_IGNORE).
    PassesEachOn,
}

/// Refuses (panics) unless the module did in `s`'s `n` logins what `expect` says, `asked`
/// of which reached the askpass helper: a stack that logs in without the module deciding
/// (pam_permit after a module that stepped aside) would otherwise be reported as the
/// module's cost.
fn check_module(s: &Sshd, tag: &str, n: usize, asked: usize, expect: Module) {
    let prompted = match expect {
        Module::Absent | Module::LoadedOnly => 0,
        Module::AllowsEach | Module::PassesEachOn => n,
    };
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
        asked == prompted && got == want,
        "ssh-bench: {tag}: {n} logins, {asked} prompted (want {prompted}), {got:?} module lines \
         with {what:?} (want {want:?}): the module did not do what this figure is about, so \
         none is reported\nsshd log:\n{}",
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
    assert!(token.len() > 1023, "the burst token must need two parts");
    let recommended = format!("MaxStartups {RECOMMENDED_MAX_STARTUPS}");
    println!(
        "burst of {n} askpass logins ({} B token, 2 parts) against one sshd, loopback",
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

/// Starts an sshd with `auth`, makes `n` sequential logins answering with `answer` and
/// running `remote`, checks the module did what `module` says in each, stops it; the
/// tree's CPU (ms) and the last login's output.
fn tree_run(
    tag: &str,
    auth: &str,
    n: usize,
    answer: &str,
    remote: &str,
    module: Module,
) -> (f64, Option<Output>) {
    let s = site_sshd(tag, auth, &[]);
    let mut last = None;
    let mut asked = 0;
    for i in 0..n {
        let mark = s.pam.sandbox.path(&format!("asked-{i}"));
        let out = askpass_login(&s, answer, &mark, remote);
        asked += usize::from(mark.exists());
        assert!(
            out.status.success(),
            "{tag}: login {i} failed:\n{}\nsshd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            s.sshd_log()
        );
        last = Some(out);
    }
    check_module(&s, tag, n, asked, module);
    let usage = s.stop().unwrap_or_else(|e| panic!("{tag}: {e}"));
    (cpu_ms(&usage), last)
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

/// `ssh-bench --tree-cpu N [--rounds R]`: per-login CPU of the whole sshd tree.
pub fn tree_cpu(n: usize, rounds: usize) {
    let now = bench::now();
    let token = token(now);
    // Does the tree's figure really hold the session's processes? One login whose remote
    // shell burns CPU and reports it with `times`, against one running `true`: the tree must
    // grow by what the shell reports.
    let burn = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; times";
    let (with_burn, out) = tree_run("tree-check", PERMIT_STACK, 1, &token, burn, Module::Absent);
    let (plain, _) = tree_run(
        "tree-check",
        PERMIT_STACK,
        1,
        &token,
        "true",
        Module::Absent,
    );
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

    let cases: [(&str, &str, &str, Module); 4] = [
        ("pam_permit", PERMIT_STACK, &token, Module::Absent),
        (
            "module loaded only",
            LOADED_STACK,
            &token,
            Module::LoadedOnly,
        ),
        (
            "module, password",
            MODULE_STACK,
            PASSWORD,
            Module::PassesEachOn,
        ),
        ("module, token", MODULE_STACK, &token, Module::AllowsEach),
    ];
    let mut idle = Vec::new();
    let mut per_login: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        // The idle sshd (started and stopped, no login) is isolate's and sshd's fixed cost.
        let (i, _) = tree_run("tree-idle", PERMIT_STACK, 0, "", "true", Module::Absent);
        idle.push(i);
        // Rotate the order each round, so no case always runs after the same one.
        for k in 0..cases.len() {
            let c = (k + round) % cases.len();
            let (name, auth, answer, module) = cases[c];
            let (ms, _) = tree_run(&format!("tree-{c}"), auth, n, answer, "true", module);
            per_login[c].push((ms - i) / n as f64);
            eprintln!(
                "round {round}: {name}: {:.3} ms per login",
                (ms - i) / n as f64
            );
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    };
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    };
    println!(
        "sshd tree CPU (user+sys) per askpass login: {n} sequential logins per sshd, {rounds} \
         interleaved rounds; idle sshd (subtracted) median {:.1} ms",
        median(&idle)
    );
    println!(
        "{:<18} {:>9} {:>9} {:>9} {:>10}",
        "stack", "median", "min", "max", "vs permit"
    );
    let base = median(&per_login[0]);
    let mut rows = Vec::new();
    for (c, (name, _, _, _)) in cases.iter().enumerate() {
        let m = median(&per_login[c]);
        let (lo, hi) = spread(&per_login[c]);
        println!(
            "{name:<18} {m:>9.3} {lo:>9.3} {hi:>9.3} {:>+9.2}%",
            (m / base - 1.0) * 100.0
        );
        rows.push(
            json!({"stack": name, "median_ms": m, "min_ms": lo, "max_ms": hi,
                         "vs_permit": m / base - 1.0, "rounds_ms": per_login[c]}),
        );
    }
    println!(
        "{}",
        json!({"tree_cpu": {"logins": n, "rounds": rounds, "idle_ms": idle, "rows": rows}})
    );
}
