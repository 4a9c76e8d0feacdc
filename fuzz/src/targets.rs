//! The bodies of the fuzz targets, as plain functions of the input: fuzz_targets/*.rs call
//! them, and pam/core/tests/fuzz_regressions.rs replays minimized inputs through them.

use idtoken_core::config::{self, Config};
use idtoken_core::decision::UseMode;
use idtoken_core::jwks::{self, KeyKind};
use idtoken_core::policy::{self, TokenFacts};
use idtoken_core::reason::Reason;
use idtoken_core::{glob, jws, usermap};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use std::sync::OnceLock;

use crate::checks as h;
use crate::fixtures as f;
use crate::oracle;

/// `token`: arbitrary bytes as the answer to the `ID token: ` prompt, through the whole
/// decision (`idtoken_core::decision::evaluate`) with the harness's fixed config and fakes.
///
/// Invariants: no panic; `verified` exactly when the decision got past the signature; an
/// allow only for a token that parses, verifies and has no reason; audit line and trace free
/// of control characters; and the verdict equals the reference decision of the SPEC
/// (`idtoken_fuzz::oracle`), which re-checks parsing, issuer, algorithm, key, signature (with
/// keys it reads itself), claims and rules independently.
pub fn token(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let token: &str = &token;
    // The PAM module's first question: is this a token attempt at all?
    let _ = jws::looks_like_jws(token);
    let (account, service) = h::request_of(token);
    let config = f::config();
    let d = h::decide(config, token, &account, &service, UseMode::Record);
    h::check_decision_invariants(&d);
    if d.allowed() {
        let parsed = jws::parse(token);
        assert!(parsed.is_ok(), "allowed, yet jws::parse refuses it");
        assert!(d.verified && d.reason().is_none());
    }
    h::check_against_oracle(config, token, &account, &service, &d);
}

fn glob_ok(g: &str) -> bool {
    !g.is_empty() && !g.chars().any(char::is_control)
}

fn check_loaded(c: &Config) {
    assert!(c.issuers.len() <= config::MAX_ISSUERS);
    assert!(c.rules.len() <= config::MAX_RULES);
    let d = &c.defaults;
    assert!((0..=3600).contains(&d.leeway), "leeway {}", d.leeway);
    assert!(d.max_lifetime > 0, "max_lifetime {}", d.max_lifetime);
    assert!(d.max_uses <= idtoken_core::uses::MAX_USES_LIMIT);
    assert!(d.key_grace >= 0 && d.stale_after >= 0);
    assert!(d.state_dir.is_absolute(), "state_dir {:?}", d.state_dir);
    assert!(d.deny_users.iter().all(|u| !u.is_empty()));
    for (n, i) in c.issuers.iter().enumerate() {
        assert!(
            !i.name.is_empty()
                && i.name.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'_'
                    || b == b'-'),
            "issuer name {:?}",
            i.name
        );
        assert!(
            !i.url.is_empty() && i.url.trim() == i.url,
            "url {:?}",
            i.url
        );
        assert!(!i.audiences.is_empty() && i.audiences.iter().all(|a| !a.is_empty()));
        assert!(
            !i.algorithms.is_empty(),
            "issuer {:?} has no algorithm",
            i.name
        );
        for a in &i.algorithms {
            assert!(
                !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512),
                "issuer {:?} accepts {a:?}",
                i.name
            );
        }
        assert!(!i.user_claim.is_empty());
        assert!(i.jwks_cache.is_absolute(), "jwks_cache {:?}", i.jwks_cache);
        for p in [&i.user_map, &i.ca_file].into_iter().flatten() {
            assert!(p.is_absolute(), "{p:?}");
        }
        for o in c.issuers.iter().skip(n + 1) {
            assert!(o.name != i.name, "issuer name {:?} twice", i.name);
            assert!(o.url != i.url, "issuer url {:?} twice", i.url);
        }
    }
    for (n, r) in c.rules.iter().enumerate() {
        assert!(!r.name.is_empty());
        assert!(
            c.rules.iter().skip(n + 1).all(|o| o.name != r.name),
            "rule {:?} twice",
            r.name
        );
        if let Some(i) = &r.issuer {
            assert!(
                c.issuer_by_name(i).is_some(),
                "rule {:?} names unknown issuer {i:?}",
                r.name
            );
        }
        for list in [&r.services, &r.users, &r.groups, &r.local_groups]
            .into_iter()
            .flatten()
        {
            assert!(
                !list.is_empty() && list.iter().all(|g| glob_ok(g)),
                "rule {:?}: {list:?}",
                r.name
            );
        }
        for (_, globs) in &r.claims {
            assert!(
                !globs.is_empty() && globs.iter().all(|g| glob_ok(g)),
                "rule {:?}: {globs:?}",
                r.name
            );
        }
        if let Some(a) = &r.login_as {
            assert!(!a.is_empty() && !a.contains(['*', '?']), "login_as {a:?}");
        }
    }
}

/// Valid tokens of the test issuer to decide with a fuzzed config (minted once).
fn tokens() -> &'static [(String, &'static str)] {
    static TOKENS: OnceLock<Vec<(String, &'static str)>> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let mut deploy = f::gitlab_claims("alice");
        deploy["project_path"] = "hpc/deploy-tools".into();
        vec![
            (
                f::sign_a(f::gitlab_claims("alice").to_string().as_bytes()),
                "alice",
            ),
            (f::sign_a(deploy.to_string().as_bytes()), "svc-deploy"),
        ]
    })
}

/// `config`: arbitrary text as each of the files the module reads: the config
/// (`Config::parse`), a key cache (`jwks::parse`) and a user map (`usermap::parse`). A config
/// that loads is then used for a real decision on a valid token of the test issuer.
///
/// Invariants: no panic; a config that loads satisfies what the SPEC promises of a loaded
/// config (issuer names [a-z0-9_-]+ and unique, urls unique, non-empty audiences, no none/HS*
/// algorithm, rules named and unique, known issuers, sane globs and bounds); a config that
/// does not load gives at least one problem, each with a plausible line; the decision with
/// the fuzzed config equals the reference decision; a parsed key set has unique kids, at
/// most 64 keys and no RSA key under 2048 bits.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Config::parse(&text) {
        Ok(c) => {
            check_loaded(&c);
            // Which token: a cheap, stable function of the input.
            let (token, account) = &tokens()[data.len() % 2];
            let d = h::decide(&c, token, account, "sshd", UseMode::ReadOnly);
            if d.allowed() {
                assert!(d.verified && d.reason().is_none() && d.rule.is_some());
            }
            h::check_against_oracle(&c, token, account, "sshd", &d);
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "refused without a problem");
            let lines = text.split('\n').count();
            for p in &problems {
                assert!(!p.message.is_empty());
                if let Some(l) = p.line {
                    assert!(
                        l >= 1 && l <= lines,
                        "problem on line {l} of {lines}: {p:?}"
                    );
                }
            }
        }
    }
    if let Ok(set) = jwks::parse(data) {
        assert!(set.keys.len() <= jwks::MAX_KEYS);
        for (n, k) in set.keys.iter().enumerate() {
            assert!(!k.kid.is_empty());
            assert!(
                set.keys.iter().skip(n + 1).all(|o| o.kid != k.kid),
                "kid {:?} twice",
                k.kid
            );
            if let KeyKind::Rsa { bits } = k.kind {
                assert!(bits >= jwks::MIN_RSA_BITS, "RSA key of {bits} bits kept");
            }
        }
    }
    if let Ok(map) = usermap::parse(data) {
        // A map that loads answers for the first word of its first mapping line.
        let first = std::str::from_utf8(data).ok().and_then(|t| {
            t.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .find(|l| !l.is_empty())
                .and_then(|l| l.split_whitespace().next())
        });
        if let Some(user) = first {
            assert!(map.get(user).is_some(), "map loses {user:?}");
        }
    }
}

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
    let config = f::config();
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

/// `policy`: structure-aware. The input is `ACCOUNT \n SERVICE \n CLAIMS`: the requested
/// account, the PAM service, and the payload bytes, which the harness signs with the fuzz
/// Ed25519 key (EdDSA, kid test-ed; RSA signing would cost ~60 ms an input under the fuzz
/// build's instrumentation) so that every input gets past the signature into the claim
/// checks and the rules.
///
/// Checks, each against the reference in `idtoken_fuzz::oracle`:
/// - `glob::matches` on fuzzed patterns and texts (the two lines, and the claims' texts);
/// - `policy::token_conditions` of every configured rule on the claims;
/// - the whole decision on the signed token: malformed exactly when the payload is not a
///   JSON object, verified whenever iss is the test issuer, alg_not_allowed for the other
///   issuers (they accept RS256 only), and the same verdict and granting rule as the
///   reference.
pub fn policy(data: &[u8]) {
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
    let token = f::sign_ed(payload);
    if token.len() > idtoken_core::MAX_TOKEN_BYTES {
        return;
    }
    let config = f::config();
    let d = h::decide(config, &token, &account, &service, UseMode::ReadOnly);
    h::check_decision_invariants(&d);
    match &claims {
        None => assert_eq!(d.reason(), Some(Reason::Malformed), "{:?}", d.steps),
        Some(c) => {
            assert!(jws::parse(&token).is_ok());
            match c.get("iss").and_then(Value::as_str) {
                Some(f::ISSUER) => {
                    assert!(d.verified, "signed token not verified: {:?}", d.steps)
                }
                Some(f::RGL_ISSUER | f::GITLABCOM_ISSUER) => {
                    // They accept RS256 only.
                    assert_eq!(d.reason(), Some(Reason::AlgNotAllowed))
                }
                _ => assert_eq!(d.reason(), Some(Reason::UnknownIssuer)),
            }
        }
    }
    h::check_against_oracle(config, &token, &account, &service, &d);
}
