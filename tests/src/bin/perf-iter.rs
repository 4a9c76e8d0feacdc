//! perf-iter: runs one benchmark scenario (tests/src/bench.rs) a given number of times, for
//! instruction counts under callgrind, where wall time is too noisy to compare.
//!
//!   perf-iter SCENARIO N [--cold]
//!
//! SCENARIO: raw_verify, decision, per_login, per_login_no_groups, libpam_one_handle,
//! libpam_one_handle_no_groups, libpam_one_handle_permit,
//! libpam_start_end, libpam_start_end_permit, cold_process, cold_process_permit,
//! cold_process_loaded (the module loaded, not called), cold_process_password (the module
//! passing a password on), cold_process_packed (a packed token) (a fresh `pam-cold` process
//! per login, tests/bench/pam-cold.c); and parts of the per-login path: config_load,
//! key_cache_load, token_parse, nss_account, nss_group_entry, nss_groups, audit_line. Without `--cold` one untimed run comes first,
//! so N counts warm runs; with it, the first of the N is the process's first login (libpam,
//! the module, NSS and syslog all starting cold, as in a fresh sshd child). The per-run
//! count is what callgrind collects inside `measured`, divided by N: tests/bench/callgrind. Re-executes itself inside
//! `isolate` like the criterion bench; IDTOKEN_BENCH_WRAP puts valgrind inside it.

use std::hint::black_box;

use idtoken_core::accounts::AccountSource;
use idtoken_core::config::Config;
use idtoken_core::keystore::load_key_cache;
use idtoken_e2e::bench::{
    self, ColdProcess, Decide, LibpamOneHandle, LibpamStartEnd, PerLogin, RawVerify, SERVICE,
};
use idtoken_nss::Nss;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scenario = args.get(1).cloned().unwrap_or_default();
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let cold = args.iter().any(|a| a == "--cold");
    let Some(files) = bench::isolated("perf") else {
        return;
    };
    let mut run: Box<dyn FnMut() -> bool> = match scenario.as_str() {
        "raw_verify" => {
            let r = RawVerify::new();
            Box::new(move || r.run())
        }
        "decision" => {
            let d = Decide::new();
            Box::new(move || d.run().allowed())
        }
        "per_login_no_groups" => {
            let mut p = PerLogin::new(&files.config_without_groups());
            Box::new(move || p.run() == 0)
        }
        "libpam_one_handle_no_groups" => {
            let mut h = LibpamOneHandle::new(&files.confdir_without_groups(), SERVICE);
            Box::new(move || h.run() == 0)
        }
        "per_login" => {
            let mut p = PerLogin::new(&files.config());
            Box::new(move || p.run() == 0)
        }
        "libpam_one_handle" | "libpam_one_handle_permit" => {
            let service = if scenario.ends_with("_permit") {
                "permit"
            } else {
                SERVICE
            };
            let mut h = LibpamOneHandle::new(&files.confdir(), service);
            Box::new(move || h.run() == 0)
        }
        "libpam_start_end" | "libpam_start_end_permit" => {
            let service = if scenario.ends_with("_permit") {
                "permit"
            } else {
                SERVICE
            };
            let s = LibpamStartEnd::new(&files.confdir(), service);
            Box::new(move || s.run() == 0)
        }
        "cold_process" | "cold_process_permit" | "cold_process_loaded" => {
            let service = match scenario.as_str() {
                "cold_process_permit" => "permit",
                "cold_process_loaded" => "loaded",
                _ => SERVICE,
            };
            let c = ColdProcess::new(&files, service);
            Box::new(move || c.run())
        }
        "cold_process_password" => {
            let c = ColdProcess::answering(&files, "passing-on", "correct-horse-battery");
            Box::new(move || c.run())
        }
        "cold_process_packed" => {
            let packed = idtoken_core::packed::pack(&bench::token(bench::now())).unwrap();
            let c = ColdProcess::answering(&files, SERVICE, &packed);
            Box::new(move || c.run())
        }
        "config_load" => {
            let path = files.config();
            Box::new(move || Config::load(&path).is_ok())
        }
        "key_cache_load" => {
            let config = Config::load(&files.config()).unwrap();
            Box::new(move || load_key_cache(&config.issuers[0]).is_ok())
        }
        "token_parse" => {
            let t = bench::token(bench::now());
            Box::new(move || idtoken_core::jws::parse(&t).is_ok())
        }
        "nss_account" => Box::new(|| Nss.account(bench::ACCOUNT).is_ok_and(|a| a.is_some())),
        "nss_group_entry" => {
            let a = Nss.account(bench::ACCOUNT).unwrap().unwrap();
            Box::new(move || Nss.listed_in(&a, "hpc-ci").unwrap())
        }
        "nss_groups" => {
            let a = Nss.account(bench::ACCOUNT).unwrap().unwrap();
            Box::new(move || Nss.group_names(&a).unwrap().len() > 1)
        }
        "audit_line" => {
            let d = Decide::new().run();
            Box::new(move || !idtoken_core::audit::line(&d, Some("127.0.0.1")).is_empty())
        }
        other => {
            eprintln!("perf-iter: unknown scenario {other:?}");
            std::process::exit(2);
        }
    };
    if !cold {
        assert!(run(), "{scenario}: the warm-up run was not allowed");
    }
    assert!(measured(&mut run, n), "{scenario}: a run was not allowed");
}

/// The runs counted: tests/bench/callgrind collects inside this function only
/// (`--toggle-collect`), so the set-up (minting the token seeds aws-lc's entropy pool, whose
/// instruction count varies from run to run) is never in the figure.
#[inline(never)]
fn measured(run: &mut dyn FnMut() -> bool, n: usize) -> bool {
    let mut all = true;
    for _ in 0..n {
        all &= black_box(run());
    }
    all
}
