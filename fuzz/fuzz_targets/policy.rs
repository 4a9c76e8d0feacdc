//! `policy`: structure-aware. The input is `ACCOUNT \n SERVICE \n CLAIMS`: the requested
//! account, the PAM service, and the payload bytes, which the harness signs with the fuzz
//! Ed25519 key (EdDSA, kid test-ed; RSA signing would cost ~60 ms an input under the fuzz
//! build's instrumentation) so that every input gets past the signature into the claim
//! checks and the rules.
//!
//! Checks, each against the reference in `idtoken_fuzz::oracle`:
//! - `glob::matches` on fuzzed patterns and texts (the two lines, and the claims' texts);
//! - `policy::token_conditions` of every configured rule on the claims;
//! - the whole decision on the signed token: malformed exactly when the payload is not a
//!   JSON object, verified whenever iss is the test issuer, alg_not_allowed for the other
//!   issuers (they accept RS256 only), and the same verdict and granting rule as the
//!   reference.
#![no_main]

use idtoken_core::decision::UseMode;
use idtoken_core::policy::{self, TokenFacts};
use idtoken_core::reason::Reason;
use idtoken_core::{glob, jws};
use idtoken_fuzz::{self as h, oracle};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// Longest strings handed to the quadratic reference glob.
const GLOB_CHARS: usize = 512;

fn split(data: &[u8]) -> (String, String, &[u8]) {
    let mut it = data.splitn(3, |b| *b == b'\n');
    let account = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
    let service = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
    (account, service, it.next().unwrap_or_default())
}

fn check_glob(pattern: &str, text: &str) {
    if pattern.chars().count() > GLOB_CHARS || text.chars().count() > GLOB_CHARS {
        let _ = glob::matches(pattern, text);
        return;
    }
    let got = glob::matches(pattern, text);
    let want = oracle::glob(pattern, text);
    assert_eq!(got, want, "glob::matches({pattern:?}, {text:?})");
}

fn check_conditions(claims: &Map<String, Value>, account: &str, service: &str) {
    let config = h::config();
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .and_then(|iss| config.issuer_by_url(iss))
        .unwrap_or(&config.issuers[0]);
    let user = claims
        .get(&issuer.user_claim)
        .and_then(Value::as_str)
        .unwrap_or(account);
    let facts = TokenFacts {
        issuer,
        claims,
        user,
        service,
    };
    for rule in &config.rules {
        let got = policy::token_conditions(rule, &facts);
        let want = oracle::rule_matches(rule, issuer, claims, user, service);
        assert_eq!(got.is_ok(), want, "rule {:?}: core says {got:?}", rule.name);
        if let Err(why) = got {
            assert!(
                !why.chars().any(h::is_unsafe_char),
                "rule {:?}: {why:?}",
                rule.name
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (account, service, payload) = split(data);
    check_glob(&account, &service);
    check_glob(&service, &account);
    let claims = match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    };
    if let Some(claims) = &claims {
        for v in claims.values().take(32) {
            for t in oracle::texts(v).iter().take(32) {
                check_glob(&account, t);
            }
        }
        check_conditions(claims, &account, &service);
    }
    let token = h::sign_ed(payload);
    if token.len() > idtoken_core::MAX_TOKEN_BYTES {
        return;
    }
    let config = h::config();
    let d = h::decide(config, &token, &account, &service, UseMode::ReadOnly);
    h::check_decision_invariants(&d);
    match &claims {
        None => assert_eq!(d.reason(), Some(Reason::Malformed), "{:?}", d.steps),
        Some(c) => {
            assert!(jws::parse(&token).is_ok());
            match c.get("iss").and_then(Value::as_str) {
                Some(h::ISSUER) => {
                    assert!(d.verified, "signed token not verified: {:?}", d.steps)
                }
                Some(h::RGL_ISSUER | h::GITLABCOM_ISSUER) => {
                    // They accept RS256 only.
                    assert_eq!(d.reason(), Some(Reason::AlgNotAllowed))
                }
                _ => assert_eq!(d.reason(), Some(Reason::UnknownIssuer)),
            }
        }
    }
    h::check_against_oracle(config, &token, &account, &service, &d);
});
