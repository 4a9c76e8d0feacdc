//! The per-login cost, from the signature check alone up to libpam loading the module for
//! every login, each in one run so the figures can be read as ratios to the raw verify.
//!
//!   cargo build --release -p pam-idtoken && cargo bench -p idtoken-e2e --bench login
//!
//! Runs as root: it re-executes itself inside `tests/support/isolate` (test accounts in
//! /etc for NSS, a drained syslog socket at /dev/log). See BENCHMARKS.md.

use std::hint::black_box;

use criterion::Criterion;
use idtoken_core::accounts::AccountSource;
use idtoken_core::config::Config;
use idtoken_core::keystore::load_key_cache;
use idtoken_e2e::bench::{
    self, ColdProcess, Decide, LibpamOneHandle, LibpamStartEnd, PerLogin, RawVerify,
};
use idtoken_nss::Nss;

fn main() {
    let Some(files) = bench::isolated("login") else {
        // Not root: skipped, loudly (bench::isolated said why); under CI=true, where
        // nothing may be skipped, that is a failure as in every other test.
        assert!(
            !idtoken_e2e::ci(),
            "prerequisite missing under CI=true: the login benchmark needs root"
        );
        return;
    };
    let mut c = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(2))
        .measurement_time(std::time::Duration::from_secs(6))
        .configure_from_args();

    let raw = RawVerify::new();
    assert!(raw.run(), "the raw verify must succeed");
    c.bench_function("login/raw_verify", |b| b.iter(|| black_box(raw.run())));

    let d = Decide::new();
    assert!(d.run().allowed(), "decision: {:?}", d.run());
    c.bench_function("login/decision", |b| b.iter(|| black_box(d.run())));

    let mut p = PerLogin::new(&files.config());
    assert_eq!(p.run(), 0, "the per-login path must allow");
    c.bench_function("login/per_login", |b| b.iter(|| black_box(p.run())));
    let mut p = PerLogin::new(&files.config_without_groups());
    assert_eq!(p.run(), 0, "the per-login path must allow");
    c.bench_function("login/per_login_no_groups", |b| {
        b.iter(|| black_box(p.run()))
    });

    let mut h = LibpamOneHandle::new(&files.confdir(), bench::SERVICE);
    assert_eq!(h.run(), 0, "libpam with the module must allow");
    c.bench_function("login/libpam_one_handle", |b| b.iter(|| black_box(h.run())));
    drop(h);
    let mut h = LibpamOneHandle::new(&files.confdir_without_groups(), bench::SERVICE);
    assert_eq!(h.run(), 0, "libpam with the module must allow");
    c.bench_function("login/libpam_one_handle_no_groups", |b| {
        b.iter(|| black_box(h.run()))
    });
    drop(h);

    let mut h = LibpamOneHandle::new(&files.confdir(), "permit");
    assert_eq!(h.run(), 0);
    c.bench_function("login/libpam_one_handle_permit", |b| {
        b.iter(|| black_box(h.run()))
    });
    drop(h);

    let s = LibpamStartEnd::new(&files.confdir(), bench::SERVICE);
    assert_eq!(s.run(), 0, "libpam with the module must allow");
    c.bench_function("login/libpam_start_end", |b| b.iter(|| black_box(s.run())));

    let s = LibpamStartEnd::new(&files.confdir(), "permit");
    assert_eq!(s.run(), 0);
    c.bench_function("login/libpam_start_end_permit", |b| {
        b.iter(|| black_box(s.run()))
    });

    // A fresh process per login (pam-cold, C), as sshd's child for each connection.
    let cold = ColdProcess::new(&files, bench::SERVICE);
    assert!(cold.run(), "pam-cold with the module must allow");
    c.bench_function("login/cold_process", |b| b.iter(|| black_box(cold.run())));
    let cold = ColdProcess::new(&files, "permit");
    assert!(cold.run());
    c.bench_function("login/cold_process_permit", |b| {
        b.iter(|| black_box(cold.run()))
    });

    // The parts of the per-login path, each alone (files on disk, NSS through isolate's
    // test /etc): where the time beside the verify goes.
    let config = Config::load(&files.config()).unwrap();
    c.bench_function("login/config_load", |b| {
        b.iter(|| black_box(Config::load(&files.config()).is_ok()))
    });
    c.bench_function("login/key_cache_load", |b| {
        b.iter(|| black_box(load_key_cache(&config.issuers[0]).is_ok()))
    });
    c.bench_function("login/nss_account", |b| {
        b.iter(|| black_box(Nss.account(bench::ACCOUNT).is_ok_and(|a| a.is_some())))
    });
    let account = Nss.account(bench::ACCOUNT).unwrap().unwrap();
    c.bench_function("login/nss_groups", |b| {
        b.iter(|| black_box(Nss.group_names(&account).map(|g| g.len())))
    });
    // What `local_groups = ["hpc-ci"]` costs when the group lists the account (getgrnam).
    assert!(Nss.listed_in(&account, "hpc-ci").unwrap());
    c.bench_function("login/nss_group_entry", |b| {
        b.iter(|| black_box(Nss.listed_in(&account, "hpc-ci").is_ok_and(|l| l)))
    });

    let token = bench::token(bench::now());
    c.bench_function("login/token_parse", |b| {
        b.iter(|| black_box(idtoken_core::jws::parse(&token).is_ok()))
    });
    let decision = d.run();
    c.bench_function("login/audit_line", |b| {
        b.iter(|| black_box(idtoken_core::audit::line(&decision, Some("127.0.0.1"))))
    });
    let line = std::ffi::CString::new(format!(
        "pam_idtoken(sshd:auth): {}",
        idtoken_core::audit::line(&decision, Some("127.0.0.1"))
    ))
    .unwrap();
    c.bench_function("login/syslog_line", |b| {
        // SAFETY: a "%s" format with one C string, as pam_syslog ends in.
        b.iter(|| unsafe {
            libc::syslog(
                libc::LOG_AUTHPRIV | libc::LOG_NOTICE,
                c"%s".as_ptr(),
                line.as_ptr(),
            )
        })
    });

    c.final_summary();
}
