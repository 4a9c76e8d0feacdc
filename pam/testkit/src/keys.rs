//! The test keys and token minting: header and claims in, a signed compact JWS out.
//!
//! The keys are those of tests/fixtures/keys (RSA A, B, 1024-bit, 4096-bit; EC P-256) and
//! the Ed25519 key of keys/ (cheap to sign with under the fuzz build's instrumentation).
//! They are built into the crate, so no test depends on its working directory.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

/// The test issuer: its url and the audience its tokens are for.
pub const ISSUER: &str = "https://gitlab.test.example";
pub const AUDIENCE: &str = "https://login.test.example";
/// The fixed "now" of tests that do not read the clock: 2026-01-01 00:00:00 UTC.
pub const NOW: i64 = 1_767_225_600;

const MEMBERS: &str = include_str!("../../../tests/fixtures/keys/public-jwks-members.json");
// Private keys: PKCS#1 for RSA, PKCS#8 for EC and Ed25519, as jsonwebtoken's *_der wants.
const RSA_A_PEM: &str = include_str!("../../../tests/fixtures/keys/rsa-a.pem");
const RSA_B_PEM: &str = include_str!("../../../tests/fixtures/keys/rsa-b.pem");
const RSA_SMALL_PEM: &str = include_str!("../../../tests/fixtures/keys/rsa-small.pem");
const RSA_4096_PEM: &str = include_str!("../../../tests/fixtures/keys/rsa-4096.pem");
const EC_PEM: &str = include_str!("../../../tests/fixtures/keys/ec-p256.pem");
const ED_PEM: &str = include_str!("../keys/ed25519.pem");
/// The public half of the Ed25519 key (keys/README.md): not in public-jwks-members.json.
pub const ED_PUBLIC_X: &str = "Xetmr47fN0nDJXznwbSsa3ij6bJhZ49wYV4P7p8dokA";

/// A test key: RSA `A`, `B`, `Small` (1024 bits, which the module must refuse) and
/// `Rsa4096`, `Ec` (P-256) and `Ed` (Ed25519).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    A,
    B,
    Small,
    Rsa4096,
    Ec,
    Ed,
}

impl Key {
    const ALL: [Key; 6] = [Key::A, Key::B, Key::Small, Key::Rsa4096, Key::Ec, Key::Ed];

    fn stem(self) -> &'static str {
        match self {
            Key::A => "a",
            Key::B => "b",
            Key::Small => "small",
            Key::Rsa4096 => "4096",
            Key::Ec => "ec",
            Key::Ed => "ed",
        }
    }

    /// The kid of its JWK: `test-a`, `test-b`, `test-small`, `test-4096`, `test-ec`, `test-ed`.
    pub fn kid(self) -> &'static str {
        match self {
            Key::A => "test-a",
            Key::B => "test-b",
            Key::Small => "test-small",
            Key::Rsa4096 => "test-4096",
            Key::Ec => "test-ec",
            Key::Ed => "test-ed",
        }
    }

    /// The private key, PEM.
    pub fn pem(self) -> &'static str {
        match self {
            Key::A => RSA_A_PEM,
            Key::B => RSA_B_PEM,
            Key::Small => RSA_SMALL_PEM,
            Key::Rsa4096 => RSA_4096_PEM,
            Key::Ec => EC_PEM,
            Key::Ed => ED_PEM,
        }
    }

    /// The algorithm [`mint_with`] signs with: RS256, ES256 or EdDSA.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Key::Ec => Algorithm::ES256,
            Key::Ed => Algorithm::EdDSA,
            _ => Algorithm::RS256,
        }
    }

    /// The signing key, decoded once.
    pub fn encoding_key(self) -> &'static EncodingKey {
        static KEYS: OnceLock<Vec<EncodingKey>> = OnceLock::new();
        let keys = KEYS.get_or_init(|| {
            Key::ALL
                .iter()
                .map(|k| {
                    let der = pem_der(k.pem());
                    match k {
                        Key::Ec => EncodingKey::from_ec_der(&der),
                        Key::Ed => EncodingKey::from_ed_der(&der),
                        _ => EncodingKey::from_rsa_der(&der),
                    }
                })
                .collect()
        });
        let i = Key::ALL.iter().position(|k| *k == self).unwrap();
        &keys[i]
    }

    /// The public JWK, as a JSON object.
    pub fn jwk(self) -> Value {
        if self == Key::Ed {
            return json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid(), "use": "sig",
                          "x": ED_PUBLIC_X});
        }
        let all: Value = serde_json::from_str(MEMBERS).unwrap();
        all[self.stem()].clone()
    }
}

/// The DER inside a PEM document (one block, no encryption).
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD.decode(body).unwrap()
}

/// A JWKS document holding these keys' public halves.
pub fn jwks(keys: &[Key]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The header [`mint_with`] signs: `{"alg","kid","typ":"JWT"}`, compact JSON.
pub fn header(alg: &str, kid: &str) -> Vec<u8> {
    json!({"alg": alg, "kid": kid, "typ": "JWT"})
        .to_string()
        .into_bytes()
}

/// A compact JWS of exactly these header and payload bytes, signed with `key` under `alg`
/// (any bytes: the fuzz harness and the tests forge headers and payloads at will).
pub fn sign_bytes(header: &[u8], payload: &[u8], key: Key, alg: Algorithm) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = if key == Key::Small {
        openssl_sign(input.as_bytes(), key, alg)
    } else {
        jsonwebtoken::crypto::sign(input.as_bytes(), key.encoding_key(), alg)
            .unwrap_or_else(|e| panic!("signing with {key:?} under {alg:?} failed: {e}"))
    };
    format!("{input}.{sig}")
}

/// Signs `header` and `claims` (JSON values, used as given) with `key` under `alg`.
pub fn sign_raw(header: &Value, claims: &Value, key: Key, alg: Algorithm) -> String {
    sign_bytes(
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
        key,
        alg,
    )
}

/// An RSA PKCS#1 v1.5 signature made by `openssl dgst`: the test kit's backend (aws-lc)
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
    let pem = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/keys")
        .join(format!("rsa-{}.pem", key.stem()));
    let mut child = Command::new("openssl")
        .args(["dgst", digest, "-sign"])
        .arg(&pem)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("openssl (apt-get install openssl): {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "openssl dgst -sign failed"
    );
    b64(&out.stdout)
}

/// A token of these payload bytes signed with `key` under its [`Key::algorithm`], with the
/// standard [`header`].
pub fn mint_bytes(payload: &[u8], key: Key) -> String {
    let alg = key.algorithm();
    sign_bytes(&header(alg_name(alg), key.kid()), payload, key, alg)
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        _ => "RS256",
    }
}

/// An RS256 token signed with key A, header `{alg, kid, typ}`.
pub fn mint(claims: &Value) -> String {
    mint_with(claims, Key::A)
}

/// A token of these claims signed with `key` under its [`Key::algorithm`].
pub fn mint_with(claims: &Value, key: Key) -> String {
    mint_bytes(claims.to_string().as_bytes(), key)
}

/// GitLab-shaped ID token claims of the test issuer for `user`, issued at NOW, valid 300 s.
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

/// GitLab's id_tokens claims in the order GitLab writes them (its `jwt.rb` and
/// `jwt_v2.rb`), as [`gitlab_shaped`] lays them out.
pub const GITLAB_CLAIM_ORDER: &[&str] = &[
    "namespace_id",
    "namespace_path",
    "project_id",
    "project_path",
    "user_id",
    "user_login",
    "user_email",
    "user_access_level",
    "pipeline_id",
    "pipeline_source",
    "job_id",
    "ref",
    "ref_type",
    "ref_path",
    "ref_protected",
    "groups_direct",
    "environment",
    "environment_protected",
    "deployment_tier",
    "environment_action",
    "runner_id",
    "runner_environment",
    "sha",
    "project_visibility",
    "ci_config_ref_uri",
    "ci_config_sha",
    "jti",
    "iat",
    "nbf",
    "exp",
    "iss",
    "sub",
    "aud",
];

/// The payload of a token shaped as GitLab signs one for `id_tokens`: every claim of
/// `claims` kept, the other claims GitLab sends added with values as long and as random
/// as real ones (ids of 8-10 digits, a 40-hex sha, nested paths, a UUID-shaped jti when
/// `claims` has none), members in GitLab's order ([`GITLAB_CLAIM_ORDER`], then the rest).
/// Its JWS is 1.5-1.7 KB with an RSA-2048 signature, like a real one (more with `pad`).
pub fn gitlab_shaped(claims: &Value) -> String {
    // Values derived from the claims, so a payload is reproducible and two differ.
    let mut state = claims
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut hex = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[(next() % 16) as usize]))
            .collect()
    };
    let sha = hex(40);
    let jti = format!("{}-{}-{}-{}-{}", hex(8), hex(4), hex(4), hex(4), hex(12));
    let id = |h: &str, n: usize| u64::from_str_radix(&h[..n], 16).unwrap().to_string();
    let project = "research-computing/cluster-tools/deploy-pipelines";
    let user = claims["user_login"].as_str().unwrap_or("alice");
    let generated = json!({
        "namespace_id": id(&sha[10..], 7),
        "namespace_path": "research-computing/cluster-tools",
        "project_id": id(&sha[17..], 7),
        "project_path": project,
        "user_id": id(&sha[24..], 6),
        "user_login": user,
        "user_email": format!("{user}.lastname@university.example.edu"),
        "user_access_level": "developer",
        "pipeline_id": id(&sha[3..], 8),
        "pipeline_source": "push",
        "job_id": id(&sha[5..], 9),
        "ref": "main",
        "ref_type": "branch",
        "ref_path": "refs/heads/main",
        "ref_protected": "true",
        "runner_id": id(&sha[30..], 6).parse::<u64>().unwrap(),
        "runner_environment": "self-hosted",
        "sha": &sha,
        "project_visibility": "internal",
        "ci_config_ref_uri": format!("gitlab.university.example.edu/{project}//.gitlab-ci.yml@refs/heads/main"),
        "ci_config_sha": &sha,
        "jti": jti,
        "sub": format!("project_path:{project}:ref_type:branch:ref:main"),
    });
    let given = claims.as_object().cloned().unwrap_or_default();
    let pick = |k: &str| given.get(k).or_else(|| generated.get(k));
    let mut members: Vec<String> = GITLAB_CLAIM_ORDER
        .iter()
        .filter_map(|k| pick(k).map(|v| format!("{}:{v}", Value::from(*k))))
        .collect();
    members.extend(
        given
            .iter()
            .filter(|(k, _)| !GITLAB_CLAIM_ORDER.contains(&k.as_str()))
            .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str()))),
    );
    format!("{{{}}}", members.join(","))
}

/// [`gitlab_shaped`] claims signed with key A under RS256, with GitLab's header member
/// order (`kid`, `typ`, `alg`).
pub fn mint_gitlab_shaped(claims: &Value) -> String {
    let header = format!(r#"{{"kid":"{}","typ":"JWT","alg":"RS256"}}"#, Key::A.kid());
    sign_bytes(
        header.as_bytes(),
        gitlab_shaped(claims).as_bytes(),
        Key::A,
        Algorithm::RS256,
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each key signs what its public JWK verifies, under the algorithm mint_with uses.
    #[test]
    fn every_key_verifies_with_its_jwk() {
        for key in [Key::A, Key::B, Key::Rsa4096, Key::Ec, Key::Ed] {
            let t = mint_with(&gitlab_claims("alice"), key);
            let (input, sig) = t.rsplit_once('.').unwrap();
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk()).unwrap();
            let dk = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
            let ok = jsonwebtoken::crypto::verify(sig, input.as_bytes(), &dk, key.algorithm());
            assert!(ok.unwrap(), "{key:?}");
            assert_eq!(key.jwk()["kid"], key.kid(), "{key:?}");
        }
    }

    #[test]
    fn mint_exact_len_hits_the_length() {
        for len in [1200, 1201, 1202, 1203] {
            assert_eq!(mint_exact_len(&gitlab_claims("alice"), len).len(), len);
        }
    }
}
