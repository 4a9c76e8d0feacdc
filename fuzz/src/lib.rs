//! The fuzz harness shared by the targets in `fuzz_targets/`: a fixed configuration, in-memory
//! fakes for everything `idtoken_core::decision::evaluate` reads from outside (issuer keys and
//! user map, accounts, the use ledger), token signing with the test key A, and a reference
//! implementation of the SPEC's decision order ([`oracle`]) that every decision is compared
//! with. A disagreement, a panic, or a broken invariant is a crash for libFuzzer.
//!
//! Nothing here touches the file system or the network, and "now" is fixed ([`NOW`]), so a
//! crash replays exactly.

pub mod fakes;
pub mod oracle;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idtoken_core::config::Config;
use idtoken_core::decision::{Decision, Env, Request, UseMode, Verdict, evaluate};
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
login_as = "root"
[rule.claims]
namespace_path = "admin"

[[rule]]
name = "flagged"
users = ["*"]
[rule.claims]
flag = true
"#;

/// The user map the fake hands in for the test issuer (its `user_map` path is never read).
pub const USER_MAP: &str =
    "alice alice\nbob bob\nalice.smith alice\ncarol carol2\nroot root\ndaemon daemon\n";

const MEMBERS: &str = include_str!("../../tests/fixtures/keys/public-jwks-members.json");
const RGL_JWKS: &str =
    include_str!("../../tests/fixtures/gitlab-real/selfhosted_rgl_id_token_v2.jwks.json");
const GITLABCOM_JWKS: &str = include_str!("../../tests/fixtures/gitlab-real/gitlabcom.jwks.json");
const RSA_A_PEM: &[u8] = include_bytes!("../../tests/fixtures/keys/rsa-a.pem");
const RSA_B_PEM: &[u8] = include_bytes!("../../tests/fixtures/keys/rsa-b.pem");
const RSA_4096_PEM: &[u8] = include_bytes!("../../tests/fixtures/keys/rsa-4096.pem");
const EC_PEM: &[u8] = include_bytes!("../../tests/fixtures/keys/ec-p256.pem");
/// A fuzz-only Ed25519 key (fuzz/keys/README.md): cheap to sign with under instrumentation.
const ED_PEM: &[u8] = include_bytes!("../keys/ed25519.pem");
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
            let rsa = |pem: &[u8]| match EncodingKey::from_rsa_pem(pem) {
                Ok(k) => k,
                Err(e) => panic!("test RSA key: {e}"),
            };
            let ec = match EncodingKey::from_ec_pem(EC_PEM) {
                Ok(k) => k,
                Err(e) => panic!("test EC key: {e}"),
            };
            let ed = match EncodingKey::from_ed_pem(ED_PEM) {
                Ok(k) => k,
                Err(e) => panic!("fuzz Ed25519 key: {e}"),
            };
            [rsa(RSA_A_PEM), rsa(RSA_B_PEM), rsa(RSA_4096_PEM), ec, ed]
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

/// Evaluates `token` for `account` and `service` with the fixed fakes and `config`.
pub fn decide(
    config: &Config,
    token: &str,
    account: &str,
    service: &str,
    uses: UseMode,
) -> Decision {
    let env = Env {
        config,
        issuer_data: fakes::issuer_data(),
        accounts: &fakes::Accounts,
        uses: &fakes::Ledger,
    };
    let req = Request {
        token,
        account,
        service,
        now: NOW,
        uses,
    };
    evaluate(&env, &req)
}

/// Characters that must never reach a log line or a terminal from a token.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// Invariants of every decision made with the fixed config, whatever the token:
/// - `verified` is true exactly when the decision got past the signature step;
/// - an allow names its rule and has no reason;
/// - the audit line is one line without control or bidi characters;
/// - the trace (step details, rule failures), which `idtoken check` prints as it is, holds
///   no control or bidi characters either: everything from the token in it is cleaned.
pub fn check_decision_invariants(d: &Decision) {
    use idtoken_core::reason::Reason;
    let past_signature = match &d.verdict {
        Verdict::Allow => true,
        Verdict::Deny(r) => *r > Reason::BadSignature,
        // With these fakes, only the use ledger can be unavailable, and it is read last.
        Verdict::Unavailable(_) => true,
    };
    assert_eq!(
        d.verified, past_signature,
        "verified={} but verdict {:?}",
        d.verified, d.verdict
    );
    if d.allowed() {
        assert!(d.reason().is_none(), "allow with a reason");
        assert!(d.rule.is_some(), "allow without a granting rule");
        assert!(
            d.issuer.is_some() && d.user.is_some(),
            "allow without issuer/user"
        );
    } else if !matches!(
        d.verdict,
        Verdict::Deny(Reason::Replayed) | Verdict::Unavailable(_)
    ) {
        // Only the use count, checked after the grant, may refuse a token a rule granted.
        assert!(d.rule.is_none(), "deny with a granting rule {:?}", d.rule);
    }
    let line = idtoken_core::audit::line(d, Some(RHOST));
    assert!(line.starts_with("decision="), "audit line: {line:?}");
    if let Some(c) = line.chars().find(|c| is_unsafe_char(*c)) {
        panic!("audit line holds {c:?}: {line:?}");
    }
    for s in &d.steps {
        if let Some(c) = s.detail.chars().find(|c| is_unsafe_char(*c)) {
            panic!("trace step {} holds {c:?}: {:?}", s.name, s.detail);
        }
    }
    for r in &d.rules {
        if let Some(why) = &r.failed
            && let Some(c) = why.chars().find(|c| is_unsafe_char(*c))
        {
            panic!("rule {} trace holds {c:?}: {why:?}", r.rule);
        }
    }
}

/// Compares the core's decision with the reference decision, and panics on any difference.
pub fn check_against_oracle(
    config: &Config,
    token: &str,
    account: &str,
    service: &str,
    d: &Decision,
) {
    let want = oracle::decide(config, token, account, service);
    let got = oracle::Outcome::of(d);
    if want != got {
        panic!(
            "the core and the reference decision disagree\n  core:      {got:?}\n  reference: {want:?}\n  \
             account {account:?} service {service:?}\n  steps: {:#?}\n  rules: {:#?}",
            d.steps, d.rules
        );
    }
}

/// The `token` target's choice of request: the requested account and service come from the
/// unverified claims `x-fuzz-account` / `x-fuzz-service` when present (so seeds can ask for
/// a service account), else the user claim and `sshd`.
pub fn request_of(token: &str) -> (String, String) {
    let claims = token
        .trim()
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or(Value::Null);
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
    let account = text(ACCOUNT_CLAIM)
        .or_else(|| text("user_login"))
        .unwrap_or_else(|| "alice".to_string());
    let service = text(SERVICE_CLAIM).unwrap_or_else(|| "sshd".to_string());
    (account, service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use idtoken_core::reason::Reason;

    fn run(token: &str) -> Decision {
        let (account, service) = request_of(token);
        let d = decide(config(), token, &account, &service, UseMode::Record);
        check_decision_invariants(&d);
        check_against_oracle(config(), token, &account, &service, &d);
        d
    }

    fn mint(claims: &Value) -> String {
        sign_a(claims.to_string().as_bytes())
    }

    #[test]
    fn harness_reaches_allow_and_every_kind_of_deny() {
        let d = run(&mint(&gitlab_claims("alice")));
        assert!(d.allowed(), "{:#?}", d.steps);
        assert_eq!(d.rule.as_deref(), Some("own-account"));
        let mut c = gitlab_claims("alice");
        c["exp"] = json!(NOW - 1000);
        assert_eq!(run(&mint(&c)).reason(), Some(Reason::Expired));
        let mut c = gitlab_claims("carol");
        c[ACCOUNT_CLAIM] = json!("carol2");
        let d = run(&mint(&c));
        assert!(d.allowed(), "{:#?}", d.steps);
        let mut c = gitlab_claims("alice");
        c["project_path"] = json!("hpc/deploy-tools");
        c[ACCOUNT_CLAIM] = json!("svc-deploy");
        let d = run(&mint(&c));
        assert_eq!(d.rule.as_deref(), Some("deploy"), "{:#?}", d.rules);
        for (key, alg, name) in [
            (SigningKey::B, Algorithm::RS256, "RS256"),
            (SigningKey::Rsa4096, Algorithm::PS256, "PS256"),
            (SigningKey::Ec, Algorithm::ES256, "ES256"),
            (SigningKey::Ed, Algorithm::EdDSA, "EdDSA"),
        ] {
            let t = sign_bytes(
                &header(name, key.kid()),
                gitlab_claims("alice").to_string().as_bytes(),
                key,
                alg,
            );
            assert!(run(&t).allowed(), "{key:?}");
        }
        let t = sign_bytes(
            &header("RS256", "test-a-old"),
            gitlab_claims("alice").to_string().as_bytes(),
            SigningKey::A,
            Algorithm::RS256,
        );
        assert_eq!(run(&t).reason(), Some(Reason::UnknownKey));
        assert_eq!(run("hunter2").reason(), Some(Reason::Malformed));
    }

    /// Signing plus deciding, per key, natively (the instrumented build is many times slower).
    #[test]
    fn cost_of_a_signed_decision() {
        let claims = gitlab_claims("alice").to_string();
        for (key, alg, name) in [
            (SigningKey::A, Algorithm::RS256, "RS256"),
            (SigningKey::Ec, Algorithm::ES256, "ES256"),
            (SigningKey::Ed, Algorithm::EdDSA, "EdDSA"),
        ] {
            let start = std::time::Instant::now();
            for _ in 0..20 {
                let t = sign_bytes(&header(name, key.kid()), claims.as_bytes(), key, alg);
                assert!(run(&t).allowed());
            }
            println!("{name}: {:?} per signed decision", start.elapsed() / 20);
        }
    }

    /// Every committed token seed decides as its name says (allow-, deny-, malformed-,
    /// unavailable-), and agrees with the reference decision.
    #[test]
    fn token_seeds_decide_as_named() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/token");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let token = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            let d = run(&token);
            let want = name.split('-').next().unwrap();
            let got = match (&d.verdict, d.reason()) {
                (Verdict::Allow, _) => "allow",
                (Verdict::Unavailable(_), _) => "unavailable",
                (_, Some(Reason::Malformed)) => "malformed",
                _ => "deny",
            };
            if want != "real" {
                assert_eq!(got, want, "{name}: {:?} {:#?}", d.verdict, d.steps);
            }
            println!("{name}: {:?} rule={:?}", d.verdict, d.rule);
            n += 1;
        }
        assert!(n >= 20, "only {n} seeds");
    }
}
