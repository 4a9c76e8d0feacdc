//! JSON Web Key Sets (RFC 7517): the issuer's public keys as the cache file holds them.
//!
//! Only keys that can verify are kept: `use` absent or `sig`, a `kid`, and a key type the
//! verifier supports (RSA of at least 2048 bits, EC P-256/P-384, Ed25519). Everything else
//! is skipped with a note, so `idtoken status` can say why a key is not used.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;

use crate::signature::PublicKey;
use serde_json::Value;

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Bounds on what a key cache may hold.
pub const MAX_KEYS: usize = 64;
pub const MAX_JWKS_BYTES: u64 = 1024 * 1024;

/// A member `idtoken refresh` adds to a cached key that vanished from the issuer's
/// endpoint: when (seconds since the epoch) it was first seen missing. Such a key is
/// trusted for `key_grace` seconds more, so a refresh racing a rotation never locks CI out,
/// and a withdrawn key does not live forever. Other JWKS readers ignore unknown members.
pub const RETIRED_AT: &str = "x-idtoken-retired-at";

/// The family of algorithms a key can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    /// Whether this key can verify a signature made with `alg`.
    pub fn supports(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa { .. } => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::EcP256 => alg == ES256,
            KeyKind::EcP384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }

    pub fn describe(self) -> String {
        match self {
            KeyKind::Rsa { bits } => format!("RSA {bits}"),
            KeyKind::EcP256 => "EC P-256".to_string(),
            KeyKind::EcP384 => "EC P-384".to_string(),
            KeyKind::Ed25519 => "Ed25519".to_string(),
        }
    }
}

/// One usable verification key.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: String,
    pub kind: KeyKind,
    /// The JWK's own `alg`, when it names one: the key is then used for that alone.
    pub alg: Option<String>,
    /// Set when the issuer no longer publishes the key (see [`RETIRED_AT`]).
    pub retired_at: Option<i64>,
    pub key: PublicKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

/// The usable keys of a JWKS, and why the others were skipped.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<VerifyKey>,
    pub skipped: Vec<String>,
}

impl KeySet {
    pub fn by_kid(&self, kid: &str) -> Option<&VerifyKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}

/// Parses a JWKS document. An error means the document itself is unusable (not JSON, no
/// `keys` array, too many keys); a document whose keys are all skipped parses to an empty
/// set, which callers treat as unusable.
pub fn parse(bytes: &[u8]) -> Result<KeySet, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JWKS: no \"keys\" array")?;
    if keys.len() > MAX_KEYS {
        return Err(format!(
            "{} keys, more than the {MAX_KEYS} accepted",
            keys.len()
        ));
    }
    let mut set = KeySet::default();
    for (n, jwk) in keys.iter().enumerate() {
        match parse_key(jwk) {
            Ok(k) => {
                if set.by_kid(&k.kid).is_some() {
                    set.skipped.push(format!(
                        "key {n}: kid {:?} appears twice; the first is used",
                        k.kid
                    ));
                } else {
                    set.keys.push(k);
                }
            }
            Err(why) => set.skipped.push(format!("key {n}: {why}")),
        }
    }
    Ok(set)
}

fn parse_key(jwk: &Value) -> Result<VerifyKey, String> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    let kid = field("kid").filter(|k| !k.is_empty()).ok_or("has no kid")?;
    if let Some(u) = jwk.get("use")
        && u.as_str() != Some("sig")
    {
        return Err(format!("kid {kid:?}: use is {u}, not \"sig\""));
    }
    // RFC 7517 §4.3: a key whose key_ops are given but exclude verify must not verify.
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|list| list.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            return Err(format!("kid {kid:?}: key_ops is {ops}, without \"verify\""));
        }
    }
    let alg = field("alg").map(str::to_string);
    let (kind, key) = match field("kty") {
        Some("RSA") => {
            let n = b64_field(jwk, "n", kid)?;
            let e = b64_field(jwk, "e", kid)?;
            let bits = bit_length(&n);
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "kid {kid:?}: RSA key of {bits} bits, under the {MIN_RSA_BITS} accepted"
                ));
            }
            if e.is_empty() || e.len() > 8 {
                return Err(format!("kid {kid:?}: implausible RSA exponent"));
            }
            (KeyKind::Rsa { bits }, PublicKey::rsa(&n, &e))
        }
        Some("EC") => {
            let (kind, len) = match field("crv") {
                Some("P-256") => (KeyKind::EcP256, 32),
                Some("P-384") => (KeyKind::EcP384, 48),
                other => return Err(format!("kid {kid:?}: unsupported EC curve {other:?}")),
            };
            let x = b64_field(jwk, "x", kid)?;
            let y = b64_field(jwk, "y", kid)?;
            let key = PublicKey::ec(&x, &y, len).map_err(|e| format!("kid {kid:?}: {e}"))?;
            (kind, key)
        }
        Some("OKP") if field("crv") == Some("Ed25519") => {
            let x = b64_field(jwk, "x", kid)?;
            let key = PublicKey::ed25519(&x).map_err(|e| format!("kid {kid:?}: {e}"))?;
            (KeyKind::Ed25519, key)
        }
        Some(other) => return Err(format!("kid {kid:?}: unsupported key type {other:?}")),
        None => return Err(format!("kid {kid:?}: no kty")),
    };
    let retired_at = match jwk.get(RETIRED_AT) {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or(format!("kid {kid:?}: {RETIRED_AT} is not a number"))?,
        ),
    };
    Ok(VerifyKey {
        kid: kid.to_string(),
        kind,
        alg,
        retired_at,
        key,
    })
}

fn b64_field(jwk: &Value, name: &str, kid: &str) -> Result<Vec<u8>, String> {
    let text = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or(format!("kid {kid:?}: no {name}"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("kid {kid:?}: {name} is not base64url"))
}

/// Bit length of a big-endian unsigned integer.
fn bit_length(be: &[u8]) -> usize {
    let mut rest = be.iter().skip_while(|b| **b == 0);
    match rest.next() {
        None => 0,
        Some(first) => {
            let tail = rest.count();
            let top = 8usize.saturating_sub(first.leading_zeros() as usize);
            tail.saturating_mul(8).saturating_add(top)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0xff; 256]), 2048);
    }

    #[test]
    fn skips_unusable_keys_with_reasons() {
        let n2048 = URL_SAFE_NO_PAD.encode([0xc5u8; 256]);
        let n1024 = URL_SAFE_NO_PAD.encode([0xc5u8; 128]);
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "good", "n": n2048, "e": "AQAB", "use": "sig"},
            {"kty": "RSA", "kid": "enc", "n": n2048, "e": "AQAB", "use": "enc"},
            {"kty": "RSA", "kid": "small", "n": n1024, "e": "AQAB"},
            {"kty": "RSA", "n": n2048, "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "good", "n": n2048, "e": "AQAB"}
        ]});
        let set = parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].kind, KeyKind::Rsa { bits: 2048 });
        assert_eq!(set.skipped.len(), 5, "{:?}", set.skipped);
    }

    /// Security review 2, finding 15: a JWK whose key_ops exclude verify was used.
    #[test]
    fn a_key_whose_key_ops_exclude_verify_is_skipped() {
        let n = URL_SAFE_NO_PAD.encode([0xc5u8; 256]);
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "sign-only", "n": n, "e": "AQAB", "key_ops": ["sign"]},
            {"kty": "RSA", "kid": "odd", "n": n, "e": "AQAB", "key_ops": "verify"},
            {"kty": "RSA", "kid": "ok", "n": n, "e": "AQAB", "key_ops": ["sign", "verify"]},
            {"kty": "RSA", "kid": "plain", "n": n, "e": "AQAB"}
        ]});
        let set = parse(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<&str> = set.keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, vec!["ok", "plain"]);
        assert!(
            set.skipped[0].contains("without \"verify\""),
            "{:?}",
            set.skipped
        );
    }

    #[test]
    fn refuses_non_jwks() {
        assert!(parse(b"[]").is_err());
        assert!(parse(b"{}").is_err());
        assert!(parse(b"nope").is_err());
        assert!(parse(br#"{"keys":[]}"#).unwrap().keys.is_empty());
    }
}
