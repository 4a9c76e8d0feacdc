//! The fuzz harness's fixed world: the config, the key caches (test keys of
//! tests/fixtures/keys, the real GitLab keys of tests/fixtures/gitlab-real, the Ed25519 key),
//! the user map, the accounts and the fixed "now". Tokens are signed with the test keys of
//! [`crate::keys`].

use std::sync::OnceLock;

use idtoken_core::config::Config;
use idtoken_core::jwks;
use idtoken_core::usermap;
use serde_json::{Value, json};

use crate::fakes::{AccountTable, MemoryKeys, TestAccount};
use crate::keys::Key;
pub use crate::keys::{AUDIENCE, ISSUER, NOW};

/// The real self-hosted GitLab of tests/fixtures/gitlab-real (selfhosted_rgl_id_token_v2).
pub const RGL_ISSUER: &str = "https://gitlab.example.com";
/// gitlab.com (tests/fixtures/gitlab-real/gitlabcom.jwks.json).
pub const GITLABCOM_ISSUER: &str = "https://gitlab.com";
/// The remote host named in audit lines.
pub const RHOST: &str = "203.0.113.7";

/// Claims a `token` input may carry to choose the request (they are read from the
/// unverified payload by the harness only; the core ignores unknown claims).
pub const ACCOUNT_CLAIM: &str = "x-fuzz-account";
pub const SERVICE_CLAIM: &str = "x-fuzz-service";
/// The remote host of the request: a string is PAM_RHOST, `null` is no PAM_RHOST (as `su`
/// gives), and without the claim it is [`RHOST`].
pub const RHOST_CLAIM: &str = "x-fuzz-rhost";

/// The fixed configuration of the `token` and `policy` targets: one test issuer (with a user
/// map, several algorithms, max_uses) and the two real GitLab issuers of the fixtures, and
/// rules that exercise every condition: services, users, groups, claims (string, number,
/// boolean, list, JSON Pointer), `from` (granting and denying), login_as, local_groups, an
/// issuer-less rule, deny_users, and deny rules that fail closed (an absent claim, an rhost
/// that is not an address) or skip (`if_absent = "skip"`). Deny rules are scoped by
/// `users` so that absence does not refuse every token.
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
services = ["*"]
users = ["*"]
[rule.claims]
flag = true

[[rule]]
name = "realm-role"
issuer = "gitlab"
users = ["carol"]
from = ["203.0.113.0/24", "2001:db8::/32"]
[rule.claims]
"/realm_access/roles" = "ci-*"
"/x~1y/0" = ["1", "z?"]

[[rule]]
name = "no-untrusted-groups"
deny = true
users = ["b*", "admin"]
groups = ["hpc/untrusted*"]

[[rule]]
name = "no-production"
deny = true
if_absent = "skip"
users = ["alice", "carol"]
[rule.claims]
environment = "production"

[[rule]]
name = "no-outside-carol"
deny = true
users = ["carol"]
from = ["198.51.100.0/24", "fe80::/10"]

[[rule]]
name = "no-untrusted-realm"
deny = true
users = ["dave", "admin"]
[rule.claims]
"/realm_access/roles/0" = "untrusted"
"#;

/// The user map the fake hands in for the test issuer (its `user_map` path is never read).
pub const USER_MAP: &str = "alice alice\nbob bob\nalice.smith alice\ncarol carol2\nroot root\ndaemon daemon\ndave nobody-here\n";

const RGL_JWKS: &str =
    include_str!("../../../../tests/fixtures/gitlab-real/selfhosted_rgl_id_token_v2.jwks.json");
const GITLABCOM_JWKS: &str =
    include_str!("../../../../tests/fixtures/gitlab-real/gitlabcom.jwks.json");

/// When key B was withdrawn: within key_grace at NOW, so it still verifies.
pub const B_RETIRED_AT: i64 = NOW - 1000;
/// When `test-a-old` (key A under an old kid) was withdrawn: past key_grace at NOW.
pub const A_OLD_RETIRED_AT: i64 = NOW - 200_000;

/// The test issuer's key cache: A; B (withdrawn, within key_grace); 4096 without a JWK
/// `alg` (so it verifies PS256 too); the EC P-256 key; the 1024-bit key (skipped by the
/// core: too small); A again as `test-a-old`, withdrawn past key_grace; the fuzz Ed25519 key.
pub fn test_issuer_jwks() -> Value {
    let mut b = Key::B.jwk();
    b["x-idtoken-retired-at"] = json!(B_RETIRED_AT);
    let mut k4096 = Key::Rsa4096.jwk();
    if let Some(o) = k4096.as_object_mut() {
        o.remove("alg");
    }
    let mut old = Key::A.jwk();
    old["kid"] = json!("test-a-old");
    old["x-idtoken-retired-at"] = json!(A_OLD_RETIRED_AT);
    json!({"keys": [Key::A.jwk(), b, k4096, Key::Ec.jwk(), Key::Small.jwk(), old, Key::Ed.jwk()]})
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

/// The local accounts the harness's NSS stand-in knows: every group entry lists its members.
pub const ACCOUNTS: &[TestAccount] = &[
    TestAccount::listed("alice", 1001, &["alice", "hpc-ci"]),
    TestAccount::listed("bob", 1002, &["bob"]),
    TestAccount::listed("carol2", 1003, &["carol2", "hpc-ci"]),
    TestAccount::listed("svc-deploy", 2000, &["svc-deploy", "deploy-ops"]),
    TestAccount::listed("admin", 1500, &["admin", "hpc-ci"]),
    TestAccount::listed("root", 0, &["root"]),
    TestAccount::listed("daemon", 1, &["daemon", "hpc-ci"]),
];

/// The accounts, as the decision reads them.
pub const ACCOUNT_TABLE: AccountTable = AccountTable::new(ACCOUNTS);

/// The key caches and the user map as the decision reads them: by issuer url, parsed by the
/// core's own JWKS parser; an issuer a fuzzed config invents has no usable key cache.
pub fn issuer_data() -> &'static MemoryKeys {
    static DATA: OnceLock<MemoryKeys> = OnceLock::new();
    DATA.get_or_init(|| {
        let sets = jwks_documents()
            .iter()
            .map(|(url, doc)| match jwks::parse(doc.to_string().as_bytes()) {
                Ok(set) if !set.keys.is_empty() => (url.to_string(), set),
                other => panic!("fixture JWKS for {url} unusable: {other:?}"),
            })
            .collect();
        let map = match usermap::parse(USER_MAP.as_bytes()) {
            Ok(m) => m,
            Err(e) => panic!("harness user map: {e}"),
        };
        MemoryKeys::by_issuer(sets).with_user_map(map)
    })
}
