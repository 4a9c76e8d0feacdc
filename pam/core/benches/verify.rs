//! The signature check alone and the decision core, with config and keys in memory, plus
//! the parts of the per-login path the core does: config parse, key cache parse, the audit
//! line. No files, NSS or libpam here (tests/benches/login.rs has those).
//!
//!   cargo bench -p idtoken-core --bench verify

use std::path::Path;

use std::hint::black_box;

use criterion::Criterion;
use idtoken_core::accounts::{Account, AccountSource};
use idtoken_core::config::{Config, Issuer};
use idtoken_core::decision::{self, Env, Request, UseMode};
use idtoken_core::jwks::{self, KeySet};
use idtoken_core::keystore::{DataProblem, IssuerData};
use idtoken_core::usermap::UserMap;
use idtoken_core::uses::{TokenId, UseLedger};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Value, json};

const NOW: i64 = 1_767_225_600;

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/keys")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn jwk(stem: &str) -> Value {
    let all: Value = serde_json::from_slice(&fixture("public-jwks-members.json")).unwrap();
    all[stem].clone()
}

/// A GitLab-shaped token (as tests/src/keys.rs makes them), signed with test key A.
fn token() -> String {
    let claims = json!({
        "iss": "https://gitlab.test.example", "aud": "https://login.test.example",
        "sub": "project_path:hpc/app:ref_type:branch:ref:main",
        "iat": NOW, "nbf": NOW - 5, "exp": NOW + 86_000, "jti": "jti-carol-bench",
        "namespace_id": "7", "namespace_path": "hpc", "project_id": "42", "project_path": "hpc/app",
        "user_id": "1001", "user_login": "carol", "user_email": "carol@example.org",
        "pipeline_id": "5001", "pipeline_source": "push", "job_id": "9001", "ref": "main",
        "ref_type": "branch", "ref_protected": "true", "runner_id": 12,
        "runner_environment": "self-hosted", "groups_direct": ["hpc", "hpc/ci"]
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-a".to_string());
    let key = EncodingKey::from_rsa_pem(&fixture("rsa-a.pem")).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// The benchmarks' site config (shared with tests/src/bench.rs), with plausible paths.
fn config_text() -> String {
    include_str!("../../../tests/fixtures/bench/idtoken.toml")
        .replace("{STATE}", "/var/lib/idtoken/state")
        .replace("{CACHE}", "/var/lib/idtoken/gitlab.jwks.json")
}

struct Table;
impl AccountSource for Table {
    fn account(&self, name: &str) -> Option<Account> {
        (name == "carol").then(|| Account {
            name: name.to_string(),
            uid: 2004,
            gid: 2004,
        })
    }
    fn listed_in(&self, _a: &Account, group: &str) -> bool {
        group == "carol" || group == "hpc-ci"
    }
    fn group_names(&self, _a: &Account) -> Vec<String> {
        vec!["carol".to_string(), "hpc-ci".to_string()]
    }
}

struct Keys(KeySet);
impl IssuerData for Keys {
    fn keys(&self, _i: &Issuer) -> Result<KeySet, DataProblem> {
        Ok(self.0.clone())
    }
    fn user_map(&self, _i: &Issuer) -> Result<Option<UserMap>, DataProblem> {
        Ok(None)
    }
}

struct NoUses;
impl UseLedger for NoUses {
    fn count(&self, _t: &TokenId, _m: u32) -> Result<u32, String> {
        Ok(0)
    }
    fn record(&self, _t: &TokenId, _m: u32, _n: i64) -> Result<bool, String> {
        Ok(true)
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(2))
        .measurement_time(std::time::Duration::from_secs(5))
        .configure_from_args();
    let token = token();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let jwks_text = json!({"keys": [jwk("4096"), jwk("a")]}).to_string();

    let j: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk("a")).unwrap();
    let key = DecodingKey::from_jwk(&j).unwrap();
    let verify = || jsonwebtoken::crypto::verify(sig, input.as_bytes(), &key, Algorithm::RS256);
    assert!(verify().unwrap());
    c.bench_function("core/raw_verify", |b| b.iter(|| black_box(verify())));

    let config_text = config_text();
    let config = Config::parse(&config_text).unwrap();
    let keys = Keys(jwks::parse(jwks_text.as_bytes()).unwrap());
    let env = Env {
        config: &config,
        issuer_data: &keys,
        accounts: &Table,
        uses: &NoUses,
    };
    let req = Request {
        token: &token,
        account: "carol",
        service: "sshd",
        now: NOW + 10,
        uses: UseMode::Record,
    };
    let d = decision::evaluate(&env, &req);
    assert!(d.allowed(), "{d:?}");
    c.bench_function("core/decision", |b| {
        b.iter(|| black_box(decision::evaluate(&env, &req)))
    });

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
