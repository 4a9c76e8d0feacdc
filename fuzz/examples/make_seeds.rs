//! Writes the seed corpus into fuzz/seeds/<target>/ (committed; regenerate after changing
//! the harness's config or claims):
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --release --example make_seeds
//!
//! Tokens are minted as the tests mint them (idtoken_testkit::keys: the same keys, issuer,
//! audience and GitLab-shaped claims), one per step of the decision order; the real GitLab
//! tokens of tests/fixtures/gitlab-real are copied as they are. Configs are the shipped
//! packaging/idtoken.toml, the SPEC's example, the harness's own, and broken ones; key caches
//! and a user map seed the other two parsers of the `config` target.

use std::fs;
use std::path::{Path, PathBuf};

use idtoken_core::uses::TokenId;
use idtoken_fuzz::{
    self as h, ACCOUNT_CLAIM, ISSUER, Key, NOW, SERVICE_CLAIM, b64, gitlab_claims, header,
    mint_bytes, sign_bytes,
};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
}

/// A token seed whose header and payload are those of `old` keeps `old`'s signature: PSS
/// and (with some backends) ECDSA signatures are randomized, and the tree should not churn.
fn keep_signature(old: &[u8], new: &[u8]) -> bool {
    let input = |t: &[u8]| {
        String::from_utf8_lossy(t)
            .trim()
            .rsplit_once('.')
            .map(|(i, _)| i.to_string())
    };
    input(old).is_some() && input(old) == input(new)
}

fn with(mut c: Value, pairs: &[(&str, Value)]) -> Value {
    for (k, v) in pairs {
        if v.is_null() {
            c.as_object_mut().map(|m| m.remove(*k));
        } else {
            c[*k] = v.clone();
        }
    }
    c
}

/// A jti whose use-ledger digest makes the fake ledger answer `prefix` (see idtoken_testkit::fakes::Ledger::by_digest).
fn jti_with_digest(prefix: &str) -> String {
    (0..100_000)
        .map(|n| format!("jti-{prefix}-{n}"))
        .find(|j| {
            TokenId::new(ISSUER, j, NOW + 300)
                .digest
                .starts_with(prefix)
        })
        .unwrap_or_default()
}

/// The claim variants shared by the token and policy seeds: (name, claims, account, service).
fn claim_cases() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    let alice = gitlab_claims("alice");
    vec![
        ("allow-own-account", alice.clone(), "alice", "sshd"),
        (
            "allow-mapped-carol",
            gitlab_claims("carol"),
            "carol2",
            "sshd",
        ),
        (
            "allow-deploy-login-as",
            with(
                alice.clone(),
                &[
                    ("project_path", json!("hpc/deploy-tools")),
                    ("ref", json!("release/2.1")),
                ],
            ),
            "svc-deploy",
            "sshd",
        ),
        (
            "allow-groups-su",
            gitlab_claims("alice.smith"),
            "alice",
            "su-l",
        ),
        (
            "allow-flagged-any-service",
            with(alice.clone(), &[("flag", json!(true))]),
            "alice",
            "cron",
        ),
        ("deny-bob-local-groups", gitlab_claims("bob"), "bob", "su"),
        ("deny-user-mismatch", alice.clone(), "bob", "sshd"),
        (
            "deny-no-such-account",
            gitlab_claims("dave"),
            "nobody-here",
            "sshd",
        ),
        (
            "deny-policy",
            with(
                alice.clone(),
                &[
                    ("ref_protected", json!("false")),
                    ("groups_direct", Value::Null),
                ],
            ),
            "alice",
            "sshd",
        ),
        (
            "deny-admin-root",
            with(alice.clone(), &[("namespace_path", json!("admin"))]),
            "root",
            "sshd",
        ),
        (
            "deny-low-uid",
            with(gitlab_claims("daemon"), &[("flag", json!(true))]),
            "daemon",
            "sshd",
        ),
        (
            "deny-expired",
            with(
                alice.clone(),
                &[("exp", json!(NOW - 100)), ("iat", json!(NOW - 400))],
            ),
            "alice",
            "sshd",
        ),
        (
            "deny-nbf-future",
            with(alice.clone(), &[("nbf", json!(NOW + 120))]),
            "alice",
            "sshd",
        ),
        (
            "deny-iat-future",
            with(
                alice.clone(),
                &[("iat", json!(NOW + 90)), ("nbf", Value::Null)],
            ),
            "alice",
            "sshd",
        ),
        (
            "deny-wrong-aud",
            with(
                alice.clone(),
                &[("aud", json!(["https://other.example", 7]))],
            ),
            "alice",
            "sshd",
        ),
        (
            "allow-aud-array",
            with(alice.clone(), &[("aud", json!(["x", "hpc"]))]),
            "alice",
            "sshd",
        ),
        (
            "deny-lifetime",
            with(alice.clone(), &[("exp", json!(NOW + 7200))]),
            "alice",
            "sshd",
        ),
        (
            "deny-missing-exp",
            with(alice.clone(), &[("exp", Value::Null)]),
            "alice",
            "sshd",
        ),
        (
            "allow-float-dates",
            with(
                alice.clone(),
                &[
                    ("exp", json!(NOW as f64 + 300.5)),
                    ("iat", json!(NOW as f64 - 0.25)),
                ],
            ),
            "alice",
            "sshd",
        ),
        (
            "deny-no-jti",
            with(alice.clone(), &[("jti", Value::Null)]),
            "alice",
            "sshd",
        ),
        (
            "deny-replayed",
            with(alice.clone(), &[("jti", json!(jti_with_digest("0")))]),
            "alice",
            "sshd",
        ),
        (
            "unavailable-ledger",
            with(alice.clone(), &[("jti", json!(jti_with_digest("ff")))]),
            "alice",
            "sshd",
        ),
        (
            "deny-user-not-string",
            with(alice.clone(), &[("user_login", json!(["alice"]))]),
            "alice",
            "sshd",
        ),
        (
            "deny-unknown-issuer",
            with(
                alice.clone(),
                &[("iss", json!("https://gitlab.test.example/"))],
            ),
            "alice",
            "sshd",
        ),
        (
            "deny-other-issuer-key",
            with(alice, &[("iss", json!(h::RGL_ISSUER))]),
            "alice",
            "sshd",
        ),
    ]
}

fn token_seeds(dir: &Path) {
    for (name, claims, account, service) in claim_cases() {
        let c = with(
            claims,
            &[
                (ACCOUNT_CLAIM, json!(account)),
                (SERVICE_CLAIM, json!(service)),
            ],
        );
        write(
            dir,
            &format!("{name}.jwt"),
            mint_bytes(c.to_string().as_bytes(), Key::A).as_bytes(),
        );
    }
    let alice = gitlab_claims("alice").to_string();
    let signed = |alg_name: &str, kid: &str, key: Key, alg: Algorithm| {
        sign_bytes(&header(alg_name, kid), alice.as_bytes(), key, alg)
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "allow-key-b-withdrawn-in-grace",
            signed("RS256", "test-b", Key::B, Algorithm::RS256),
        ),
        (
            "allow-4096-ps256",
            signed("PS256", "test-4096", Key::Rsa4096, Algorithm::PS256),
        ),
        (
            "allow-ec-es256",
            signed("ES256", "test-ec", Key::Ec, Algorithm::ES256),
        ),
        (
            "allow-ed25519-eddsa",
            signed("EdDSA", "test-ed", Key::Ed, Algorithm::EdDSA),
        ),
        (
            "deny-key-withdrawn",
            signed("RS256", "test-a-old", Key::A, Algorithm::RS256),
        ),
        (
            "deny-key-alg-mismatch",
            signed("PS256", "test-a", Key::A, Algorithm::PS256),
        ),
        (
            "deny-alg-rs512",
            signed("RS512", "test-a", Key::A, Algorithm::RS512),
        ),
        (
            "deny-small-key",
            format!(
                "{}.{}.{}",
                b64(&header("RS256", "test-small")),
                b64(alice.as_bytes()),
                b64(&[7u8; 128])
            ),
        ),
        (
            "deny-alg-none",
            format!(
                "{}.{}.{}",
                b64(br#"{"alg":"none","kid":"test-a"}"#),
                b64(alice.as_bytes()),
                b64(b"x")
            ),
        ),
        (
            // The algorithm-confusion forgery: HS256 keyed with the public key's text.
            "deny-alg-hs256",
            {
                let input = format!(
                    "{}.{}",
                    b64(&header("HS256", "test-a")),
                    b64(alice.as_bytes())
                );
                let pem = h::jwks_documents()[0].1["keys"][0]["n"]
                    .as_str()
                    .unwrap_or("")
                    .as_bytes()
                    .to_vec();
                let key = jsonwebtoken::EncodingKey::from_secret(&pem);
                let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256)
                    .unwrap_or_default();
                format!("{input}.{sig}")
            },
        ),
        (
            "malformed-crit",
            sign_bytes(
                br#"{"alg":"RS256","kid":"test-a","crit":["exp"]}"#,
                alice.as_bytes(),
                Key::A,
                Algorithm::RS256,
            ),
        ),
        (
            "deny-jku-unknown-kid",
            sign_bytes(
                br#"{"alg":"RS256","kid":"evil","jku":"https://evil.example/jwks"}"#,
                alice.as_bytes(),
                Key::A,
                Algorithm::RS256,
            ),
        ),
        (
            "deny-no-kid",
            sign_bytes(
                br#"{"alg":"RS256"}"#,
                alice.as_bytes(),
                Key::A,
                Algorithm::RS256,
            ),
        ),
        (
            "allow-header-whitespace",
            sign_bytes(
                b"{ \"alg\" : \"RS256\", \"kid\" : \"test-a\" }",
                alice.as_bytes(),
                Key::A,
                Algorithm::RS256,
            ),
        ),
    ];
    for (name, t) in cases {
        write(dir, &format!("{name}.jwt"), t.as_bytes());
    }
    // A signature that does not match: key A's signature over other claims.
    let good = mint_bytes(alice.as_bytes(), Key::A);
    let other = mint_bytes(gitlab_claims("bob").to_string().as_bytes(), Key::A);
    let (input, _) = good.rsplit_once('.').unwrap_or_default();
    let (_, sig) = other.rsplit_once('.').unwrap_or_default();
    write(
        dir,
        "deny-bad-signature.jwt",
        format!("{input}.{sig}").as_bytes(),
    );
    write(
        dir,
        "allow-surrounding-whitespace.jwt",
        format!("\r\n  {good}\t\n").as_bytes(),
    );
    write(dir, "malformed-cut-at-300.jwt", &good.as_bytes()[..300]);
    write(dir, "malformed-password.txt", b"hunter2");
    write(
        dir,
        "malformed-four-parts.jwt",
        format!("{good}.eyJ9").as_bytes(),
    );
    let real = root().join("../tests/fixtures/gitlab-real");
    for f in [
        "selfhosted_rgl_id_token_v2.jwt",
        "gitlabcom_ci_job_jwt_v1_2021_cgrotz.jwt",
        "forged_gitlabcom_kid.jwt",
    ] {
        let bytes = fs::read(real.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        write(dir, &format!("real-{f}"), &bytes);
    }
}

fn policy_seeds(dir: &Path) {
    for (name, claims, account, service) in claim_cases() {
        write(
            dir,
            &format!("{name}.txt"),
            format!("{account}\n{service}\n{claims}").as_bytes(),
        );
    }
    // Relative times (the policy target reads small integers as seconds from NOW), on both
    // sides of every time boundary (leeway 60, max_lifetime 3600): a mutation of one digit
    // from here crosses it, so an off-by-one in the core shows at once.
    for (name, exp, iat, nbf) in [
        ("relative-allow", 300, 0, -5),
        ("relative-exp-at-leeway", -60, -400, -400),
        ("relative-exp-past-leeway", -61, -400, -400),
        ("relative-nbf-at-leeway", 300, 0, 60),
        ("relative-nbf-past-leeway", 300, 0, 61),
        ("relative-iat-at-leeway", 300, 60, 0),
        ("relative-iat-past-leeway", 300, 61, 0),
        ("relative-lifetime-at-max", 3600, 0, 0),
        ("relative-lifetime-past-max", 3601, 0, 0),
    ] {
        let c = with(
            gitlab_claims("alice"),
            &[
                ("exp", json!(exp)),
                ("iat", json!(iat)),
                ("nbf", json!(nbf)),
            ],
        );
        write(
            dir,
            &format!("{name}.txt"),
            format!("alice\nsshd\n{c}").as_bytes(),
        );
    }
    // Built claims (a NUL byte first, see targets::Builder): bytes from a fixed generator.
    let mut x: u32 = 0x1d70_4e11;
    for n in 0..6 {
        let len = 48 + 32 * n;
        let mut bytes = vec![0u8];
        bytes.extend((0..len).map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        }));
        write(dir, &format!("built-{n}.bin"), &bytes);
    }
    // Found by fuzzing (pam/core/tests/fuzz_regressions.rs): a header after 14 spaces.
    write(
        dir,
        "regression-header-after-14-spaces.bin",
        b"\x00\x2f\x86",
    );
    // The smallest claims that are allowed: short inputs mutate where it matters.
    write(
        dir,
        "compact-relative-allow.txt",
        br#"alice
sshd
{"iss":"https://gitlab.test.example","aud":"hpc","exp":1,"iat":0,"user_login":"alice","jti":"j","ref_protected":"true","pipeline_source":"push"}"#,
    );
    write(dir, "payload-not-object.txt", b"alice\nsshd\n[\"iss\",1]");
    write(dir, "payload-not-json.txt", b"alice\nsshd\n{\"iss\":");
    write(dir, "glob-star-patterns.txt", b"a*b*?c*\naXbYZc\n{\"iss\":\"https://gitlab.test.example\",\"tags\":[\"aXbYc\",1.5e3,true,null,[\"x\"],{}]}");
}

const SPEC_EXAMPLE: &str = r#"[defaults]
leeway = 60
max_lifetime = 86400
min_uid = 1000
deny_users = ["root"]
max_uses = 0
explain = false
state_dir = "/var/lib/idtoken/uses"

[[issuer]]
name = "gitlab"
url = "https://gitlab.example.org"
audiences = ["https://login.hpc.example.org"]
jwks_cache = "/var/lib/idtoken/gitlab.jwks.json"
algorithms = ["RS256"]
user_claim = "user_login"
user_map = "/etc/security/idtoken-users.map"
jwks_url = "https://gitlab.example.org/oauth/discovery/keys"
ca_file = "/etc/ssl/site-ca.pem"

[[rule]]
name = "deployers"
issuer = "gitlab"
services = ["sshd"]
users = ["alice", "b*"]
groups = ["hpc/*"]
local_groups = ["hpc-ci"]
login_as = "svc-deploy"
[rule.claims]
ref_protected = "true"
pipeline_source = ["push", "web"]
"#;

fn config_seeds(dir: &Path) {
    let shipped = fs::read(root().join("../packaging/idtoken.toml")).unwrap_or_default();
    write(dir, "packaging-idtoken.toml", &shipped);
    // The shipped examples, uncommented.
    let uncommented: String = String::from_utf8_lossy(&shipped)
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.starts_with('[') || l.contains(" = "))
        .filter(|l| !l.starts_with("[defaults]"))
        .map(|l| format!("{l}\n"))
        .collect();
    write(
        dir,
        "packaging-examples-uncommented.toml",
        uncommented.as_bytes(),
    );
    write(dir, "spec-example.toml", SPEC_EXAMPLE.as_bytes());
    write(dir, "harness.toml", h::CONFIG.as_bytes());
    write(dir, "test-issuer-open.toml", format!(
        "[defaults]\nstate_dir = \"/tmp/uses\"\nmax_uses = 1\n\n[[issuer]]\nname = \"gitlab\"\nurl = \"{ISSUER}\"\n\
         audiences = [\"{}\"]\njwks_cache = \"/tmp/gitlab.jwks.json\"\n\n[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n",
        h::AUDIENCE).as_bytes());
    write(dir, "empty.toml", b"");
    write(dir, "bad-hs256-unknown-key.toml", b"[[issuer]]\nname = \"x\"\nurl = \"u\"\naudiences = []\nalgorithms = [\"HS256\", \"none\"]\n\n[[rule]]\nname = \"r\"\nissuer = \"nope\"\nfoo = 1\n");
    write(dir, "bad-duplicates.toml", b"[[issuer]]\nname = \"a\"\nurl = \"u\"\naudiences = [\"x\"]\n[[issuer]]\nname = \"a\"\nurl = \"u\"\naudiences = [\"x\"]\n[[rule]]\nname = \"r\"\nlogin_as = \"a*\"\nusers = [\"\"]\n[[rule]]\nname = \"r\"\n[rule.claims]\nx = { a = 1 }\n");
    write(dir, "bad-values.toml", b"[defaults]\nleeway = -1\nmax_lifetime = 0\nmin_uid = 99999999999\nmax_uses = 5000\nstate_dir = \"rel\"\ndeny_users = [\"\"]\n[[issuer]]\nname = \"Bad Name\"\nurl = \" https://x \"\naudiences = [\"\"]\nalgorithms = []\njwks_url = \"ftp://x\"\n");
    write(
        dir,
        "test-issuer.jwks.json",
        h::jwks_documents()[0].1.to_string().as_bytes(),
    );
    let real = root().join("../tests/fixtures/gitlab-real");
    for f in [
        "selfhosted_rgl_id_token_v2.jwks.json",
        "gitlabcom.jwks.json",
    ] {
        write(dir, f, &fs::read(real.join(f)).unwrap_or_default());
    }
    write(dir, "jwks-odd-keys.json", json!({"keys": [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
        {"kty": "RSA", "kid": "retired", "n": "AQAB", "e": "AQAB", "x-idtoken-retired-at": "soon"}
    ]}).to_string().as_bytes());
    write(
        dir,
        "users.map",
        format!(
            "# token user -> account\n{}alice.smith  asmith # trailing\n",
            h::USER_MAP
        )
        .as_bytes(),
    );
}

/// The `packed` target's seeds: every token seed packed (as `<its name>`, deciding as it
/// does), broken packed forms (each refusal of pam_idtoken(8)), and edit-mode inputs (a
/// NUL, the original's number, edits of its stream).
fn packed_seeds(dir: &Path) {
    use idtoken_core::packed;
    let tokens = root().join("seeds/token");
    let mut n = 0;
    for e in fs::read_dir(&tokens).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let token = String::from_utf8_lossy(&fs::read(&path).unwrap()).trim().to_string();
        if let Ok(p) = packed::pack(&token) {
            write(dir, &name.replace(".jwt", ".packed"), p.as_bytes());
            n += 1;
        }
    }
    assert!(n >= 20, "only {n} token seeds pack");
    let good = packed::pack(&mint_bytes(
        gitlab_claims("alice").to_string().as_bytes(),
        Key::Ed,
    ))
    .unwrap();
    let body = &good[3..];
    let stream = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, body).unwrap();
    let enc = |s: &[u8]| format!("~1.{}", b64(s));
    let mut cut = stream.clone();
    cut.truncate(stream.len() / 2);
    let mut trailing = stream.clone();
    trailing.push(0);
    let mut sum = stream.clone();
    let last = sum.len() - 1;
    sum[last] ^= 1;
    let mut dictid = stream.clone();
    dictid[5] ^= 1;
    for (name, bytes) in [
        ("malformed-version-2.packed", format!("~2.{body}")),
        ("malformed-no-version.packed", format!("~.{body}")),
        ("malformed-padding.packed", format!("{good}=")),
        ("malformed-cut.packed", enc(&cut)),
        ("malformed-trailing-byte.packed", enc(&trailing)),
        ("malformed-checksum.packed", enc(&sum)),
        ("malformed-unknown-dictionary.packed", enc(&dictid)),
        ("malformed-raw-deflate.packed", enc(&stream[2..])),
        ("malformed-empty.packed", "~1.".to_string()),
    ] {
        write(dir, name, bytes.as_bytes());
    }
    // Edit mode: NUL, original, then (op, at, value) triples.
    for (name, bytes) in [
        ("edit-none-ed25519", vec![0u8, 0]),
        ("edit-none-gitlab-rs256", vec![0, 1]),
        ("edit-flip", vec![0, 0, 0, 7, 0x40]),
        ("edit-cut", vec![0, 1, 1, 100, 0]),
        ("edit-insert", vec![0, 0, 2, 3, 0x7f]),
        ("edit-overwrite-dictid", vec![0, 1, 3, 1, 0]),
    ] {
        write(dir, name, &bytes);
    }
}

fn main() {
    let keep = root().join("seeds/token");
    let old: Vec<(std::ffi::OsString, Vec<u8>)> = fs::read_dir(&keep)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| Some((e.file_name(), fs::read(e.path()).ok()?)))
                .collect()
        })
        .unwrap_or_default();
    for (target, make) in [
        ("token", token_seeds as fn(&Path)),
        ("policy", policy_seeds),
        ("config", config_seeds),
        // After `token`: its seeds, packed, are most of these.
        ("packed", packed_seeds),
    ] {
        let dir = root().join("seeds").join(target);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        make(&dir);
        if target == "token" {
            for (name, bytes) in &old {
                let path = dir.join(name);
                if let Ok(new) = fs::read(&path)
                    && keep_signature(bytes, &new)
                {
                    write(&dir, &name.to_string_lossy(), bytes);
                }
            }
        }
        let n = fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        println!("{}: {n} seeds", dir.display());
    }
}
