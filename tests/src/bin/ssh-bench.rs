//! ssh-bench: the end-to-end cost of the module in a real ssh login over loopback. Two
//! throwaway sshd (tests/src/sshd.rs), identical but for their auth stack: one runs
//! `auth required pam_idtoken.so` with the benchmark's site config (tests/src/bench.rs),
//! the other `auth required pam_permit.so`. The same client command logs in to each in
//! turn (interleaved, so drift in machine load hits both alike), and the wall time of each
//! login (client start to exit, remote command `true`) is recorded.
//!
//!   ssh-bench [--logins N] [--client sshpass|askpass]     (root; release build)
//!   ssh-bench --burst N                 N logins at once, stock vs recommended MaxStartups
//!   ssh-bench --tree-cpu N [--rounds R] CPU of the whole sshd tree per login
//!
//! `sshpass`: `sshpass -P 'ID token' -e ssh ...` answering the one prompt with a token under
//! 1000 characters (one part). `askpass`: SSH_ASKPASS=`idtoken askpass` with a full-size
//! GitLab-shaped token (1.5-1.7 KB) in two parts (`IDTOKEN_PACK=no`); with pam_permit
//! nothing is asked, so that login never runs the askpass helper. Prints a table and one
//! JSON line.

use std::time::{Duration, Instant};

use idtoken_e2e::bench::{self, ACCOUNT};
use idtoken_e2e::keys::{self, mint};
use idtoken_e2e::pam::PamHarness;
use idtoken_e2e::sshd::{self, Sshd};
use serde_json::json;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn start(tag: &str, auth: &str) -> Sshd {
    let pam = PamHarness::new(tag);
    let cache = pam
        .sandbox
        .write("gitlab.jwks.json", bench::key_cache_json().as_bytes());
    pam.sandbox.write(
        "idtoken.toml",
        bench::config_text(&cache, &pam.sandbox.path("uses")).as_bytes(),
    );
    Sshd::start(pam, auth)
}

/// A token under 1000 characters that the benchmark config's `hpc-protected` rule grants.
fn short_token(now: i64) -> String {
    mint(&json!({
        "iss": keys::ISSUER, "aud": keys::AUDIENCE, "iat": now, "nbf": now - 5,
        "exp": now + 86_000, "jti": "ssh-bench", "user_login": ACCOUNT,
        "namespace_path": "hpc", "project_path": "hpc/app", "ref_protected": "true",
        "pipeline_source": "push", "pipeline_id": "5001", "job_id": "9001"
    }))
}

struct Stats {
    mean: f64,
    median: f64,
    sd: f64,
    min: f64,
}

fn stats(ms: &[f64]) -> Stats {
    let mut v = ms.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    Stats {
        mean,
        median,
        sd,
        min: v[0],
    }
}

const USAGE: &str =
    "usage: ssh-bench [--logins N] [--client sshpass|askpass]   (root; release build)
       ssh-bench --burst N
       ssh-bench --tree-cpu N [--rounds R]
  --logins N    logins per stack, interleaved (default 50)
  --client C    sshpass: one-part token answered by sshpass (default);
                askpass: full-size token in two parts through `idtoken askpass`
  --burst N     N askpass logins started at once, stock and recommended MaxStartups,
                the module and pam_permit (successes, p50/p99 login time)
  --tree-cpu N  CPU of the whole sshd tree per login (wait4), N logins a round,
                interleaved: pam_permit, publickey, pam_unix (yescrypt), the module
                loaded only, passing a password on, a packed token, a token in 2
                parts; --rounds R rounds (default 5)
Starts throwaway sshd on 127.0.0.1, prints a table and one JSON line.";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Help, or anything not understood, prints the usage and starts nothing: a benchmark
    // takes minutes and two sshd.
    if args.iter().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    const OPTIONS: [&str; 5] = ["--logins", "--client", "--burst", "--tree-cpu", "--rounds"];
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        if !OPTIONS.contains(&a.as_str()) || rest.next().is_none() {
            eprintln!("ssh-bench: unexpected argument {a:?}\n{USAGE}");
            std::process::exit(2);
        }
    }
    // The modes of issue 15, each with its own figures (tests/src/bench/ssh.rs).
    let count = |name| arg(&args, name).and_then(|n| n.parse::<usize>().ok());
    if let Some(n) = count("--burst") {
        return bench::ssh::burst(n);
    }
    if let Some(n) = count("--tree-cpu") {
        return bench::ssh::tree_cpu(n, count("--rounds").unwrap_or(5));
    }
    let logins: usize = arg(&args, "--logins")
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let client = arg(&args, "--client").unwrap_or_else(|| "sshpass".to_string());
    if let Err(why) = sshd::available() {
        eprintln!("ssh-bench: {why}");
        std::process::exit(2);
    }
    let module = start("sshbench-module", "auth required MODULE config=CONFIG");
    let permit = start("sshbench-permit", "auth required pam_permit.so");
    let now = bench::now();
    let token = match client.as_str() {
        "sshpass" => {
            let t = short_token(now);
            assert!(t.len() < 1000, "the sshpass token must fit one part");
            t
        }
        "askpass" => bench::token(now),
        other => {
            eprintln!("ssh-bench: unknown --client {other:?}");
            std::process::exit(2);
        }
    };
    let login = |s: &Sshd| -> f64 {
        let start = Instant::now();
        let out = match client.as_str() {
            "sshpass" => s.login_with_sshpass(ACCOUNT, &token, "true"),
            // The token in parts, as the figures say (askpass would pack it otherwise).
            _ => s.login_with_askpass_in_parts(ACCOUNT, &token, "true"),
        };
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        assert!(
            out.status.success(),
            "login failed: {}\n{}\nsshd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            s.sshd_log()
        );
        ms
    };
    // Warm-up: page cache, the first sshd re-exec, NSS files.
    for _ in 0..3 {
        login(&module);
        login(&permit);
    }
    let (mut with_module, mut with_permit) = (Vec::new(), Vec::new());
    for i in 0..logins {
        // Alternate which goes first, so neither always follows the other.
        if i % 2 == 0 {
            with_module.push(login(&module));
            with_permit.push(login(&permit));
        } else {
            with_permit.push(login(&permit));
            with_module.push(login(&module));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let audit = module.pam.syslog.audit_lines();
    let allowed = audit
        .iter()
        .filter(|l| l.contains("decision=allow"))
        .count();
    assert_eq!(allowed, logins + 3, "one allow per module login");
    let (m, p) = (stats(&with_module), stats(&with_permit));
    println!("ssh logins over loopback, client {client}, {logins} each, interleaved (ms)");
    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>8}",
        "stack", "mean", "median", "sd", "min"
    );
    for (name, s) in [("pam_idtoken.so", &m), ("pam_permit.so", &p)] {
        println!(
            "{name:<22} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            s.mean, s.median, s.sd, s.min
        );
    }
    println!(
        "ratio module/permit: mean {:.4}, median {:.4}",
        m.mean / p.mean,
        m.median / p.median
    );
    println!(
        "{}",
        json!({
            "client": client, "logins": logins,
            "module_ms": {"mean": m.mean, "median": m.median, "sd": m.sd, "min": m.min},
            "permit_ms": {"mean": p.mean, "median": p.median, "sd": p.sd, "min": p.min},
            "ratio_mean": m.mean / p.mean, "ratio_median": m.median / p.median,
        })
    );
}
