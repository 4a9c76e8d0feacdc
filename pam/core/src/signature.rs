//! The signature check (RFC 7515 §5.2 step 8): a JWS signing input, its signature, an
//! issuer's public key and the algorithm the header names and the config allows.
//!
//! ring, not a JWT library's crypto: the check is one call, and ring is the smallest of the
//! fast verifiers to load. A login node loads the module in every ssh connection's fresh
//! process, so what it costs to load and first use is paid per login (BENCHMARKS.md, "The
//! crypto library"): aws-lc, which jsonwebtoken's backend brought, relocated a 40 KB OID
//! table and 5,000 pointers at every load. The fuzz oracle (idtoken-testkit) still checks
//! signatures with jsonwebtoken over aws-lc: an independent implementation.

use jsonwebtoken::Algorithm;
use ring::signature::{self as ring_sig, RsaPublicKeyComponents, UnparsedPublicKey};

/// An issuer's public key in the form the verifier takes it, decoded from its JWK.
/// Public: its Debug form may be printed (the key cache is world-readable anyway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Modulus and public exponent, big-endian, without leading zero octets (ring refuses
    /// them; RFC 7518 §6.3.1 forbids them, but an issuer that sends one still means the
    /// same number).
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An uncompressed point (0x04 || x || y) on P-256 or P-384.
    Ec { point: Vec<u8> },
    /// The 32-octet public key.
    Ed25519 { x: Vec<u8> },
}

impl PublicKey {
    /// An RSA key from its JWK `n` and `e`, leading zero octets dropped.
    pub fn rsa(n: &[u8], e: &[u8]) -> PublicKey {
        let strip = |b: &[u8]| b.iter().copied().skip_while(|x| *x == 0).collect();
        PublicKey::Rsa {
            n: strip(n),
            e: strip(e),
        }
    }

    /// An EC key from its JWK `x` and `y`, each `len` octets (32 for P-256, 48 for P-384).
    pub fn ec(x: &[u8], y: &[u8], len: usize) -> Result<PublicKey, String> {
        if x.len() != len || y.len() != len {
            return Err(format!(
                "EC coordinates of {} and {} octets, not {len}",
                x.len(),
                y.len()
            ));
        }
        let mut point = Vec::with_capacity(len.saturating_mul(2).saturating_add(1));
        point.push(0x04);
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        Ok(PublicKey::Ec { point })
    }

    /// An Ed25519 key from its JWK `x`.
    pub fn ed25519(x: &[u8]) -> Result<PublicKey, String> {
        if x.len() != 32 {
            return Err(format!("Ed25519 key of {} octets, not 32", x.len()));
        }
        Ok(PublicKey::Ed25519 { x: x.to_vec() })
    }
}

/// Whether `signature` is `key`'s signature of `input` under `alg`. Any mismatch (an
/// algorithm of another key type, a key ring refuses, a point off the curve, a wrong
/// length) is `false`: the caller denies.
pub fn verifies(alg: Algorithm, key: &PublicKey, input: &[u8], signature: &[u8]) -> bool {
    match key {
        PublicKey::Rsa { n, e } => {
            let params: &ring_sig::RsaParameters = match alg {
                Algorithm::RS256 => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
                Algorithm::RS384 => &ring_sig::RSA_PKCS1_2048_8192_SHA384,
                Algorithm::RS512 => &ring_sig::RSA_PKCS1_2048_8192_SHA512,
                Algorithm::PS256 => &ring_sig::RSA_PSS_2048_8192_SHA256,
                Algorithm::PS384 => &ring_sig::RSA_PSS_2048_8192_SHA384,
                Algorithm::PS512 => &ring_sig::RSA_PSS_2048_8192_SHA512,
                _ => return false,
            };
            RsaPublicKeyComponents { n, e }
                .verify(params, input, signature)
                .is_ok()
        }
        PublicKey::Ec { point } => {
            let params: &ring_sig::EcdsaVerificationAlgorithm = match alg {
                Algorithm::ES256 => &ring_sig::ECDSA_P256_SHA256_FIXED,
                Algorithm::ES384 => &ring_sig::ECDSA_P384_SHA384_FIXED,
                _ => return false,
            };
            UnparsedPublicKey::new(params, point)
                .verify(input, signature)
                .is_ok()
        }
        PublicKey::Ed25519 { x } => {
            alg == Algorithm::EdDSA
                && UnparsedPublicKey::new(&ring_sig::ED25519, x)
                    .verify(input, signature)
                    .is_ok()
        }
    }
}
