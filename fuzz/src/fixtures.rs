//! The harness's fixed world: the config, the key caches (test keys of tests/fixtures/keys,
//! the real GitLab keys of tests/fixtures/gitlab-real, the fuzz-only Ed25519 key), the user
//! map, the fixed "now", and token signing with the test keys.
//!
//! This file, fakes.rs, oracle.rs, checks.rs and targets.rs use only idtoken-core and its
//! own dependencies (no use_pem: PEM keys are decoded here), so that
//! pam/core/tests/fuzz_regressions.rs can include them and replay inputs exactly as the
//! targets do. They refer to each other as `crate::fixtures`, `crate::fakes`, ...

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use idtoken_core::config::Config;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use std::sync::OnceLock;

/// The test issuer (as in tests/src/keys.rs).
pub const ISSUER: &str = "https://gitlab.test.example";
pub const AUDIENCE: &str = "https://login.test.example";
/// The real self-hosted GitLab of tests/fixtures/gitlab-real (selfhosted_rgl_id_token_v2).
pub const RGL_ISSUER: &str = "https://gitlab.example.com";
/// gitlab.com (tests/fixtures/gitlab-real/gitlabcom.jwks.json).
pub const GITLABCOM_ISSUER: &str = "https://gitlab.com";
/// The fixed "now" of every decision: 2026-01-01 00:00:00 UTC, as in the tests.
pub const NOW: i64 = 1_767_225_600;
/// The remote host named in audit lines.
pub const RHOST: &str = "203.0.113.7";

/// Claims a `token` input may carry to choose the request (they are read from the
/// unverified payload by the harness only; the core ignores unknown claims).
pub const ACCOUNT_CLAIM: &str = "x-fuzz-account";
pub const SERVICE_CLAIM: &str = "x-fuzz-service";

/// The fixed configuration of the `token` and `policy` targets: one test issuer (with a user
/// map, several algorithms, max_uses) and the two real GitLab issuers of the fixtures, and
/// rules that exercise every condition: services, users, groups, claims (string, number,
/// boolean, list), login_as, local_groups, an issuer-less rule, deny_users.
pub const CONFIG: &str = r#"
[defaults]
leeway = 60
max_lifetime = 3600
min_uid = 1000
deny_users = ["root", "admin"]
max_uses = 3
key_grace = 86400

[[issuer]]
name = "gitlab"
url = "https://gitlab.test.example"
audiences = ["https://login.test.example", "hpc"]
algorithms = ["RS256", "PS256", "ES256", "EdDSA"]
user_map = "/nonexistent/idtoken-users.map"

[[issuer]]
name = "rgl"
url = "https://gitlab.example.com"
audiences = ["https://example.com"]

[[issuer]]
name = "gitlabcom"
url = "https://gitlab.com"
audiences = ["pypi"]
user_claim = "user_login"

[[rule]]
name = "own-account"
issuer = "gitlab"
services = ["sshd"]
users = ["alice", "b*", "?arol"]
[rule.claims]
ref_protected = "true"
pipeline_source = ["push", "web"]

[[rule]]
name = "hpc-groups"
issuer = "gitlab"
services = ["sshd", "su*"]
groups = ["hpc/*"]
local_groups = ["hpc-ci"]

[[rule]]
name = "deploy"
issuer = "gitlab"
login_as = "svc-deploy"
local_groups = ["deploy*"]
[rule.claims]
project_path = "hpc/deploy-*"
ref = ["main", "release/*"]
runner_id = 12
ref_type = "branch"

[[rule]]
name = "rgl-validate"
issuer = "rgl"
login_as = "alice"
[rule.claims]
project_path = "example/gitlab-ci-validate-jwt"

[[rule]]
name = "admin-attempt"
issuer = "gitlab"
login_as = "root"
[rule.claims]
namespace_path = "admin"

[[rule]]
name = "flagged"
issuer = "gitlab"
users = ["*"]
[rule.claims]
flag = true
"#;

/// The user map the fake hands in for the test issuer (its `user_map` path is never read).
pub const USER_MAP: &str = "alice alice\nbob bob\nalice.smith alice\ncarol carol2\nroot root\ndaemon daemon\ndave nobody-here\n";

const MEMBERS: &str = include_str!("../../tests/fixtures/keys/public-jwks-members.json");
const RGL_JWKS: &str =
    include_str!("../../tests/fixtures/gitlab-real/selfhosted_rgl_id_token_v2.jwks.json");
const GITLABCOM_JWKS: &str = include_str!("../../tests/fixtures/gitlab-real/gitlabcom.jwks.json");
// Private keys: PKCS#1 for RSA, PKCS#8 for EC and Ed25519, as jsonwebtoken's *_der wants.
const RSA_A_PEM: &str = include_str!("../../tests/fixtures/keys/rsa-a.pem");
const RSA_B_PEM: &str = include_str!("../../tests/fixtures/keys/rsa-b.pem");
const RSA_4096_PEM: &str = include_str!("../../tests/fixtures/keys/rsa-4096.pem");
const EC_PEM: &str = include_str!("../../tests/fixtures/keys/ec-p256.pem");
/// A fuzz-only Ed25519 key (fuzz/keys/README.md): cheap to sign with under instrumentation.
const ED_PEM: &str = include_str!("../keys/ed25519.pem");

/// The DER inside a PEM document (one block, no encryption).
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    match STANDARD.decode(body) {
        Ok(der) => der,
        Err(e) => panic!("test key PEM: {e}"),
    }
}
pub const ED_PUBLIC_X: &str = "Xetmr47fN0nDJXznwbSsa3ij6bJhZ49wYV4P7p8dokA";

/// When key B was withdrawn: within key_grace at NOW, so it still verifies.
pub const B_RETIRED_AT: i64 = NOW - 1000;
/// When `test-a-old` (key A under an old kid) was withdrawn: past key_grace at NOW.
pub const A_OLD_RETIRED_AT: i64 = NOW - 200_000;

fn member(name: &str) -> Value {
    let all: Value = serde_json::from_str(MEMBERS).unwrap_or(Value::Null);
    all.get(name).cloned().unwrap_or(Value::Null)
}

/// The test issuer's key cache: A; B (withdrawn, within key_grace); 4096 without a JWK
/// `alg` (so it verifies PS256 too); the EC P-256 key; the 1024-bit key (skipped by the
/// core: too small); A again as `test-a-old`, withdrawn past key_grace; the fuzz Ed25519 key.
pub fn test_issuer_jwks() -> Value {
    let mut b = member("b");
    b["x-idtoken-retired-at"] = json!(B_RETIRED_AT);
    let mut k4096 = member("4096");
    if let Some(o) = k4096.as_object_mut() {
        o.remove("alg");
    }
    let mut old = member("a");
    old["kid"] = json!("test-a-old");
    old["x-idtoken-retired-at"] = json!(A_OLD_RETIRED_AT);
    let ed =
        json!({"kty": "OKP", "crv": "Ed25519", "kid": "test-ed", "use": "sig", "x": ED_PUBLIC_X});
    json!({"keys": [member("a"), b, k4096, member("ec"), member("small"), old, ed]})
}

/// The key cache documents, by issuer url.
pub fn jwks_documents() -> &'static [(&'static str, Value)] {
    static DOCS: OnceLock<Vec<(&'static str, Value)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        vec![
            (ISSUER, test_issuer_jwks()),
            (
                RGL_ISSUER,
                serde_json::from_str(RGL_JWKS).unwrap_or(Value::Null),
            ),
            (
                GITLABCOM_ISSUER,
                serde_json::from_str(GITLABCOM_JWKS).unwrap_or(Value::Null),
            ),
        ]
    })
}

/// The fixed config, parsed once.
pub fn config() -> &'static Config {
    static CONFIG_PARSED: OnceLock<Config> = OnceLock::new();
    CONFIG_PARSED.get_or_init(|| match Config::parse(CONFIG) {
        Ok(c) => c,
        Err(p) => panic!("the harness config does not parse: {p:?}"),
    })
}

/// The test keys whose private halves the harness (not the fuzzer) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    A,
    B,
    Rsa4096,
    Ec,
    Ed,
}

impl SigningKey {
    pub fn kid(self) -> &'static str {
        match self {
            SigningKey::A => "test-a",
            SigningKey::B => "test-b",
            SigningKey::Rsa4096 => "test-4096",
            SigningKey::Ec => "test-ec",
            SigningKey::Ed => "test-ed",
        }
    }

    pub fn encoding_key(self) -> &'static EncodingKey {
        static KEYS: OnceLock<[EncodingKey; 5]> = OnceLock::new();
        let keys = KEYS.get_or_init(|| {
            [
                EncodingKey::from_rsa_der(&pem_der(RSA_A_PEM)),
                EncodingKey::from_rsa_der(&pem_der(RSA_B_PEM)),
                EncodingKey::from_rsa_der(&pem_der(RSA_4096_PEM)),
                EncodingKey::from_ec_der(&pem_der(EC_PEM)),
                EncodingKey::from_ed_der(&pem_der(ED_PEM)),
            ]
        });
        match self {
            SigningKey::A => &keys[0],
            SigningKey::B => &keys[1],
            SigningKey::Rsa4096 => &keys[2],
            SigningKey::Ec => &keys[3],
            SigningKey::Ed => &keys[4],
        }
    }
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS of exactly these header and payload bytes, signed with `key` under `alg`.
pub fn sign_bytes(header: &[u8], payload: &[u8], key: SigningKey, alg: Algorithm) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    match jsonwebtoken::crypto::sign(input.as_bytes(), key.encoding_key(), alg) {
        Ok(sig) => format!("{input}.{sig}"),
        Err(e) => panic!("signing with {key:?} under {alg:?} failed: {e}"),
    }
}

/// The header the harness signs with: `{"alg","kid","typ"}`.
pub fn header(alg: &str, kid: &str) -> Vec<u8> {
    json!({"alg": alg, "kid": kid, "typ": "JWT"})
        .to_string()
        .into_bytes()
}

/// An EdDSA token of these claims signed with the fuzz Ed25519 key (kid test-ed): the policy
/// target's re-signing. Under the fuzz build's instrumentation RSA signing costs ~60 ms an
/// input (16 execs/s) and ECDSA P-256 ~4 ms; Ed25519 is the cheapest way past the signature.
pub fn sign_ed(payload: &[u8]) -> String {
    sign_bytes(
        &header("EdDSA", SigningKey::Ed.kid()),
        payload,
        SigningKey::Ed,
        Algorithm::EdDSA,
    )
}

/// An RS256 token of these claims signed with key A.
pub fn sign_a(payload: &[u8]) -> String {
    sign_bytes(
        &header("RS256", SigningKey::A.kid()),
        payload,
        SigningKey::A,
        Algorithm::RS256,
    )
}

/// GitLab-shaped claims of the test issuer for `user`, issued at NOW, valid 300 s.
pub fn gitlab_claims(user: &str) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "project_path:hpc/app:ref_type:branch:ref:main",
        "iat": NOW,
        "nbf": NOW - 5,
        "exp": NOW + 300,
        "jti": format!("jti-{user}-{NOW}"),
        "namespace_id": "7",
        "namespace_path": "hpc",
        "project_id": "42",
        "project_path": "hpc/app",
        "user_id": "1001",
        "user_login": user,
        "user_email": format!("{user}@example.org"),
        "pipeline_id": "5001",
        "pipeline_source": "push",
        "job_id": "9001",
        "ref": "main",
        "ref_type": "branch",
        "ref_protected": "true",
        "runner_id": 12,
        "runner_environment": "self-hosted",
        "groups_direct": ["hpc", "hpc/ci"]
    })
}
