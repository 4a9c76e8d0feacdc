//! The signature check alone and the decision core, with config and keys in memory, plus
//! the parts of the per-login path the core does: config parse, key cache parse, the audit
//! line. No files, NSS or libpam here (tests/benches/login.rs has those). The scenario is
//! the test kit's standard site (`idtoken_testkit::site`), the one tests/benches measures.
//!
//!   cargo bench -p idtoken-core --bench verify

use std::hint::black_box;

use criterion::Criterion;
use idtoken_core::config::Config;
use idtoken_core::jwks;
use idtoken_testkit::site::{self, Decide, RawVerify};

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(2))
        .measurement_time(std::time::Duration::from_secs(5))
        .configure_from_args();

    let raw = RawVerify::new();
    assert!(raw.run(), "the raw verify must succeed");
    c.bench_function("core/raw_verify", |b| b.iter(|| black_box(raw.run())));

    let decide = Decide::new();
    let d = decide.run();
    assert!(d.allowed(), "{d:?}");
    c.bench_function("core/decision", |b| b.iter(|| black_box(decide.run())));

    // Plausible paths, as a site would write them.
    let config_text = site::config_text(
        "/var/lib/idtoken/gitlab.jwks.json".as_ref(),
        "/var/lib/idtoken/state".as_ref(),
    );
    let jwks_text = site::key_cache_json();
    let token = site::token(idtoken_testkit::keys::NOW);
    c.bench_function("core/config_parse", |b| {
        b.iter(|| black_box(Config::parse(black_box(&config_text)).is_ok()))
    });
    c.bench_function("core/jwks_parse", |b| {
        b.iter(|| black_box(jwks::parse(black_box(jwks_text.as_bytes())).is_ok()))
    });
    c.bench_function("core/token_parse", |b| {
        b.iter(|| black_box(idtoken_core::jws::parse(black_box(&token)).is_ok()))
    });
    c.bench_function("core/audit_line", |b| {
        b.iter(|| black_box(idtoken_core::audit::line(&d, Some("127.0.0.1"))))
    });

    c.final_summary();
}
