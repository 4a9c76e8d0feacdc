//! The core's signature check (ring) against tokens the test kit signs with jsonwebtoken
//! over aws-lc: every key type and algorithm family the config accepts, and what must not
//! verify (a changed byte, another key's algorithm, another key).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idtoken_core::jwks;
use idtoken_core::signature::{PublicKey, verifies};
use idtoken_testkit::keys::{Key, gitlab_claims, sign_raw};
use jsonwebtoken::Algorithm;
use serde_json::json;

/// (signing input, signature) of a token `key` signs under `alg`.
fn signed(key: Key, alg: Algorithm) -> (String, Vec<u8>) {
    let alg_name = format!("{alg:?}");
    let header = json!({"alg": alg_name, "kid": key.kid(), "typ": "JWT"});
    let token = sign_raw(&header, &gitlab_claims("alice"), key, alg);
    let (input, sig) = token.rsplit_once('.').unwrap();
    (input.to_string(), URL_SAFE_NO_PAD.decode(sig).unwrap())
}

/// `key`'s public key as the core parses it from its JWK.
fn public(key: Key) -> PublicKey {
    let doc = json!({"keys": [key.jwk()]}).to_string();
    let set = jwks::parse(doc.as_bytes()).unwrap();
    assert_eq!(set.keys.len(), 1, "{:?}", set.skipped);
    set.keys[0].key.clone()
}

#[test]
fn every_key_type_and_algorithm_verifies() {
    let cases = [
        (Key::A, Algorithm::RS256),
        (Key::A, Algorithm::RS384),
        (Key::A, Algorithm::RS512),
        (Key::A, Algorithm::PS256),
        (Key::A, Algorithm::PS384),
        (Key::A, Algorithm::PS512),
        (Key::Rsa4096, Algorithm::RS256),
        (Key::Ec, Algorithm::ES256),
        (Key::Ed, Algorithm::EdDSA),
    ];
    for (key, alg) in cases {
        let (input, sig) = signed(key, alg);
        let k = public(key);
        assert!(verifies(alg, &k, input.as_bytes(), &sig), "{key:?} {alg:?}");
        let mut changed = sig.clone();
        changed[sig.len() / 2] ^= 1;
        assert!(
            !verifies(alg, &k, input.as_bytes(), &changed),
            "{key:?} {alg:?}: a changed signature verified"
        );
        let mut other_input = input.clone().into_bytes();
        other_input[3] ^= 1;
        assert!(
            !verifies(alg, &k, &other_input, &sig),
            "{key:?} {alg:?}: a changed signing input verified"
        );
    }
}

#[test]
fn an_algorithm_of_another_family_or_another_key_never_verifies() {
    let (input, sig) = signed(Key::A, Algorithm::RS256);
    let a = public(Key::A);
    // The same RSA signature read as PSS, or under another hash: no.
    for alg in [
        Algorithm::PS256,
        Algorithm::RS384,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        assert!(!verifies(alg, &a, input.as_bytes(), &sig), "{alg:?}");
    }
    assert!(!verifies(
        Algorithm::RS256,
        &public(Key::B),
        input.as_bytes(),
        &sig
    ));
    assert!(!verifies(
        Algorithm::RS256,
        &public(Key::Ec),
        input.as_bytes(),
        &sig
    ));
    let (input, sig) = signed(Key::Ec, Algorithm::ES256);
    assert!(!verifies(
        Algorithm::ES384,
        &public(Key::Ec),
        input.as_bytes(),
        &sig
    ));
    assert!(!verifies(
        Algorithm::EdDSA,
        &public(Key::Ec),
        input.as_bytes(),
        &sig
    ));
}

#[test]
fn an_rsa_modulus_with_a_leading_zero_octet_is_the_same_key() {
    // RFC 7518 forbids the zero octet, but an issuer that sends one means the same number;
    // ring refuses leading zeros, so the key drops them.
    let mut jwk = Key::A.jwk();
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let mut padded = vec![0u8];
    padded.extend_from_slice(&n);
    jwk["n"] = json!(URL_SAFE_NO_PAD.encode(&padded));
    let set = jwks::parse(json!({"keys": [jwk]}).to_string().as_bytes()).unwrap();
    assert_eq!(set.keys[0].key, public(Key::A));
    let (input, sig) = signed(Key::A, Algorithm::RS256);
    assert!(verifies(
        Algorithm::RS256,
        &set.keys[0].key,
        input.as_bytes(),
        &sig
    ));
}

#[test]
fn malformed_ec_and_ed25519_keys_are_skipped_with_a_reason() {
    let short = URL_SAFE_NO_PAD.encode([7u8; 31]);
    let doc = json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "short-x", "x": short, "y": URL_SAFE_NO_PAD.encode([7u8; 32])},
        {"kty": "EC", "crv": "P-384", "kid": "p256-sized", "x": URL_SAFE_NO_PAD.encode([7u8; 32]), "y": URL_SAFE_NO_PAD.encode([7u8; 32])},
        {"kty": "OKP", "crv": "Ed25519", "kid": "short-ed", "x": short},
        {"kty": "EC", "crv": "P-256", "kid": "not-b64", "x": "*", "y": "*"},
    ]});
    let set = jwks::parse(doc.to_string().as_bytes()).unwrap();
    assert!(
        set.keys.is_empty(),
        "{:?}",
        set.keys.iter().map(|k| &k.kid).collect::<Vec<_>>()
    );
    assert_eq!(set.skipped.len(), 4, "{:?}", set.skipped);
    assert!(
        set.skipped[0].contains("31 and 32 octets, not 32"),
        "{:?}",
        set.skipped
    );
    assert!(set.skipped[1].contains("not 48"), "{:?}", set.skipped);
    assert!(set.skipped[2].contains("not 32"), "{:?}", set.skipped);
    assert!(
        set.skipped[3].contains("not base64url"),
        "{:?}",
        set.skipped
    );
}

#[test]
fn a_point_off_the_curve_does_not_verify() {
    let (input, sig) = signed(Key::Ec, Algorithm::ES256);
    let off = PublicKey::ec(&[1u8; 32], &[2u8; 32], 32).unwrap();
    assert!(!verifies(Algorithm::ES256, &off, input.as_bytes(), &sig));
}
