//! Test keys (tests/fixtures/keys) and token minting.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

pub fn fixtures() -> PathBuf {
    crate::workspace_root().join("tests/fixtures")
}

/// A test key: `a`, `b`, `small`, `4096` (RSA) or `ec` (P-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    A,
    B,
    Small,
    Rsa4096,
    Ec,
}

impl Key {
    fn stem(self) -> &'static str {
        match self {
            Key::A => "a",
            Key::B => "b",
            Key::Small => "small",
            Key::Rsa4096 => "4096",
            Key::Ec => "ec",
        }
    }

    pub fn kid(self) -> String {
        format!("test-{}", self.stem())
    }

    pub fn pem(self) -> Vec<u8> {
        let file = match self {
            Key::Ec => "ec-p256.pem".to_string(),
            k => format!("rsa-{}.pem", k.stem()),
        };
        std::fs::read(fixtures().join("keys").join(file)).unwrap_or_default()
    }

    pub fn encoding_key(self) -> EncodingKey {
        let pem = self.pem();
        let k = match self {
            Key::Ec => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        };
        k.unwrap_or_else(|e| panic!("test key {}: {e}", self.stem()))
    }

    /// The public JWK, as a JSON object.
    pub fn jwk(self) -> Value {
        let text = std::fs::read_to_string(fixtures().join("keys/public-jwks-members.json"))
            .unwrap_or_default();
        let all: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        all.get(self.stem()).cloned().unwrap_or(Value::Null)
    }
}

/// A JWKS document holding these keys.
pub fn jwks(keys: &[Key]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs `header` and `claims` (both JSON objects) with `key` under `alg`: the header is
/// used as given, so tests can forge any header they like.
pub fn sign_raw(header: &Value, claims: &Value, key: Key, alg: Algorithm) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = if key == Key::Small {
        openssl_sign(input.as_bytes(), key, alg)
    } else {
        jsonwebtoken::crypto::sign(input.as_bytes(), &key.encoding_key(), alg)
            .unwrap_or_else(|e| panic!("signing failed: {e}"))
    };
    format!("{input}.{sig}")
}

/// An RSA PKCS#1 v1.5 signature made by `openssl dgst`: the workspace's backend (aws-lc)
/// refuses to sign with a key under 2048 bits, and the 1024-bit test key must still make
/// real signatures (the module must refuse its tokens for the key, not the signature).
fn openssl_sign(input: &[u8], key: Key, alg: Algorithm) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let digest = match alg {
        Algorithm::RS256 => "-sha256",
        Algorithm::RS384 => "-sha384",
        Algorithm::RS512 => "-sha512",
        other => panic!("openssl_sign: {other:?} is not an RSA PKCS#1 v1.5 algorithm"),
    };
    let pem = fixtures()
        .join("keys")
        .join(format!("rsa-{}.pem", key.stem()));
    let mut child = Command::new("openssl")
        .args(["dgst", digest, "-sign"])
        .arg(&pem)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("openssl (apt-get install openssl): {e}"));
    child
        .stdin
        .take()
        .map(|mut i| i.write_all(input))
        .transpose()
        .unwrap_or_else(|e| panic!("openssl stdin: {e}"));
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "openssl dgst -sign failed"
    );
    b64(&out.stdout)
}

/// An RS256 token signed with key A, header `{alg, kid, typ}`.
pub fn mint(claims: &Value) -> String {
    mint_with(claims, Key::A)
}

pub fn mint_with(claims: &Value, key: Key) -> String {
    let alg = if key == Key::Ec {
        Algorithm::ES256
    } else {
        Algorithm::RS256
    };
    let alg_name = if key == Key::Ec { "ES256" } else { "RS256" };
    sign_raw(
        &json!({"alg": alg_name, "kid": key.kid(), "typ": "JWT"}),
        claims,
        key,
        alg,
    )
}

/// The default test issuer url and audience.
pub const ISSUER: &str = "https://gitlab.test.example";
pub const AUDIENCE: &str = "https://login.test.example";
/// A fixed "now" for tests: 2026-01-01 00:00:00 UTC.
pub const NOW: i64 = 1_767_225_600;

/// GitLab-shaped ID token claims, issued at NOW, valid 300 s, for `user`.
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

/// `claims` with `key` set to `value` (Null removes it).
pub fn with(mut claims: Value, key: &str, value: Value) -> Value {
    if let Some(m) = claims.as_object_mut() {
        if value.is_null() {
            m.remove(key);
        } else {
            m.insert(key.to_string(), value);
        }
    }
    claims
}

fn b64_len(n: usize) -> usize {
    (4 * n).div_ceil(3)
}

/// An RS256 token (key A) of exactly `len` characters, padded with a `pad` claim and a
/// header member: for testing the part-by-part prompts at exact boundaries.
pub fn mint_exact_len(claims: &Value, len: usize) -> String {
    let sig_len = b64_len(256); // RSA-2048
    for header_pad in 0..4 {
        let header = json!({"alg": "RS256", "kid": Key::A.kid(), "typ": "JWT", "x-pad": "h".repeat(header_pad)});
        let h = b64_len(header.to_string().len());
        let base = with(claims.clone(), "pad", json!("")).to_string().len();
        for pad in 0..70_000 {
            let total = h + 1 + b64_len(base + pad) + 1 + sig_len;
            if total == len {
                let c = with(claims.clone(), "pad", json!("p".repeat(pad)));
                let t = sign_raw(&header, &c, Key::A, Algorithm::RS256);
                assert_eq!(t.len(), len);
                return t;
            }
            if total > len {
                break;
            }
        }
    }
    panic!("no token of length {len} can be made from these claims");
}

/// Seconds since the epoch: the module reads the real clock, so live tokens use it too.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// GitLab-shaped claims for `user`, issued now, valid 300 s, with this `jti`.
pub fn live_claims(user: &str, jti: &str) -> Value {
    let n = now();
    let c = with(gitlab_claims(user), "iat", json!(n));
    let c = with(with(c, "nbf", json!(n - 5)), "exp", json!(n + 300));
    with(c, "jti", json!(jti))
}
