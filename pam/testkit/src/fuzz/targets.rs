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

use super::checks as h;
use super::oracle;
use super::world as f;
use crate::keys::{self, Key};

/// `token`: arbitrary bytes as the answer to the `ID token: ` prompt, through the whole
/// decision (`idtoken_core::decision::evaluate`) with the harness's fixed config and fakes.
///
/// Invariants: no panic; `verified` exactly when the decision got past the signature; an
/// allow only for a token that parses, verifies and has no reason; audit line and trace free
/// of control characters; and the verdict equals the reference decision of the SPEC
/// (`idtoken_testkit::fuzz::oracle`), which re-checks parsing, issuer, algorithm, key, signature (with
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
        assert!(
            jws::looks_like_jws(token),
            "allowed, but not token-shaped for the module"
        );
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
        for list in [
            Some(&r.services),
            r.users.as_ref(),
            r.groups.as_ref(),
            r.local_groups.as_ref(),
        ]
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
        let mut deploy = keys::gitlab_claims("alice");
        deploy["project_path"] = "hpc/deploy-tools".into();
        vec![
            (
                keys::mint_bytes(keys::gitlab_claims("alice").to_string().as_bytes(), Key::A),
                "alice",
            ),
            (
                keys::mint_bytes(deploy.to_string().as_bytes(), Key::A),
                "svc-deploy",
            ),
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

/// The request and the claims bytes of a `policy` input: text (`ACCOUNT\nSERVICE\nCLAIMS`),
/// or, when the input starts with a NUL byte, built from the bytes that follow ([`Builder`]).
fn split(data: &[u8]) -> Input {
    if let Some((0, rest)) = data.split_first() {
        return Builder(rest).request();
    }
    let mut it = data.splitn(3, |b| *b == b'\n');
    let account = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
    let service = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
    let payload = it.next().unwrap_or_default().to_vec();
    Input {
        account,
        service,
        payload,
        header: STANDARD_HEADER.as_bytes().to_vec(),
        header_verifies: true,
    }
}

/// One `policy` input: the request, and the header and payload to sign.
struct Input {
    account: String,
    service: String,
    payload: Vec<u8>,
    header: Vec<u8>,
    /// The header names the signing key and its algorithm, with nothing that refuses it.
    header_verifies: bool,
}

const STANDARD_HEADER: &str = r#"{"alg":"EdDSA","kid":"test-ed","typ":"JWT"}"#;

/// Headers a built input may be signed under: (header, whether it verifies). Whitespace
/// before and inside the JSON, other member orders, the headers the SPEC says are never
/// used (jku, x5u, jwk), and ones that must be refused.
const HEADERS: &[(&str, bool)] = &[
    (STANDARD_HEADER, true),
    (r#"{"kid":"test-ed","alg":"EdDSA"}"#, true),
    (r#"{ "alg" : "EdDSA" , "kid" : "test-ed" }"#, true),
    ("\n\t{\"alg\":\"EdDSA\",\"kid\":\"test-ed\"}\r\n", true),
    (
        r#"{"alg":"EdDSA","kid":"test-ed","jku":"https://evil.example/k","x5u":"https://evil.example/c"}"#,
        true,
    ),
    (
        r#"{"alg":"EdDSA","kid":"test-ed","jwk":{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}"#,
        true,
    ),
    (r#"{"alg":"EdDSA","kid":"test-ed","kid":"test-a"}"#, false),
    (r#"{"alg":"EdDSA","kid":"test-a"}"#, false),
    (r#"{"alg":"EdDSA"}"#, false),
    (r#"{"alg":"EdDSA","kid":"test-ed","crit":["exp"]}"#, false),
    (r#"{"alg":"eddsa","kid":"test-ed"}"#, false),
    (r#"{"alg":["EdDSA"],"kid":"test-ed"}"#, false),
    (r#"{"alg":"EdDSA","alg":"none","kid":"test-ed"}"#, false),
];

/// Builds a request from bytes, a few bytes a decision: the header, the account and service,
/// and for each claim of an allowed token whether it is kept, dropped or replaced by a value
/// of any JSON type, from the harness's vocabulary or the bytes themselves, times on either
/// side of every boundary. One byte changed flips a claim's type or value, which text
/// mutations of JSON rarely do cleanly (turning `["hpc/ci"]` into `"hpc/ci"`, say).
struct Builder<'a>(&'a [u8]);

/// Words the config, the fakes and GitLab use.
const WORDS: &[&str] = &[
    f::ISSUER,
    f::AUDIENCE,
    f::RGL_ISSUER,
    f::GITLABCOM_ISSUER,
    "hpc",
    "pypi",
    "https://example.com",
    "alice",
    "bob",
    "carol",
    "carol2",
    "alice.smith",
    "root",
    "admin",
    "daemon",
    "dave",
    "nobody-here",
    "svc-deploy",
    "",
    "*",
    "?",
    "b",
    "hpc/ci",
    "hpc/x/y",
    "hpc/deploy-tools",
    "hpc/app",
    "example/gitlab-ci-validate-jwt",
    "main",
    "release/1",
    "release/",
    "branch",
    "tag",
    "true",
    "false",
    "push",
    "web",
    "schedule",
    "12",
    "12.0",
    "1e1",
    "sshd",
    "su",
    "su-l",
    "cron",
    "hpc-ci",
    "deploy-ops",
    "x\u{0}\n\u{1b}[1m\u{202e}",
    "é",
    "\u{0430}lice",
    "hpc/untrusted",
    "production",
    "untrusted",
    "ci-runner",
    "z1",
    "roles",
    "203.0.113.7",
    "198.51.100.9",
    "2001:db8::5",
    "fe80::1%eth0",
    "fe80::1%",
    "::ffff:198.51.100.9",
    "host.example",
];
/// The claims the config's rules and the decision read, and one they do not.
const CLAIMS: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "user_login",
    "groups_direct",
    "project_path",
    "namespace_path",
    "ref",
    "ref_type",
    "ref_protected",
    "pipeline_source",
    "runner_id",
    "flag",
    "environment",
    "x-fuzz-rhost",
    "other",
];
/// Seconds from NOW at and around the boundaries (leeway 60, max_lifetime 3600).
const OFFSETS: &[i64] = &[
    -86_400, -3661, -3601, -3600, -401, -400, -61, -60, -59, -5, -1, 0, 1, 59, 60, 61, 300, 3540,
    3599, 3600, 3601, 3660, 3661, 86_400,
];

impl Builder<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.byte()) % from.len()]
    }

    fn text(&mut self) -> String {
        match self.byte() % 4 {
            0 | 1 => self.pick(WORDS).to_string(),
            2 => {
                let n = usize::from(self.byte() % 24).min(self.0.len());
                let (raw, rest) = self.0.split_at(n);
                self.0 = rest;
                String::from_utf8_lossy(raw).into_owned()
            }
            _ => format!("{}{}", self.pick(WORDS), self.pick(WORDS)),
        }
    }

    fn value(&mut self, depth: u8) -> Option<Value> {
        Some(match self.byte() % 12 {
            0 => return None,
            1 | 2 => Value::from(self.text()),
            3 | 4 => Value::from(f::NOW + self.pick(OFFSETS)),
            5 => Value::from(self.pick(&[-1i64, 0, 1, 12, 42, 1 << 53, i64::MAX, i64::MIN])),
            6 => match self.byte() % 4 {
                0 => Value::from(u64::MAX),
                1 => Value::from(f::NOW as f64 + 0.5),
                2 => Value::from(1e15),
                _ => Value::from(12.0),
            },
            7 => Value::from(self.byte().is_multiple_of(2)),
            8 => Value::Null,
            9 | 10 if depth < 3 => {
                let n = self.byte() % 4;
                Value::Array((0..n).filter_map(|_| self.value(depth + 1)).collect())
            }
            11 if depth < 3 => {
                let mut m = Map::new();
                if let Some(v) = self.value(depth + 1) {
                    m.insert(self.text(), v);
                }
                Value::Object(m)
            }
            _ => Value::from(self.pick(WORDS)),
        })
    }

    fn request(mut self) -> Input {
        let (header, header_verifies) = match self.byte() % 8 {
            // Mostly the standard header; else a variant, or whitespace before it.
            0..=4 => (STANDARD_HEADER.to_string(), true),
            5 | 6 => {
                let (h, ok) = self.pick(HEADERS);
                (h.to_string(), ok)
            }
            _ => {
                let n = usize::from(self.byte() % 24);
                let ws = self.pick(&[" ", "\n", "\t", "\r"]);
                (format!("{}{STANDARD_HEADER}", ws.repeat(n)), true)
            }
        };
        let account = match self.byte() % 4 {
            3 => self.text(),
            _ => self
                .pick(&[
                    "alice",
                    "bob",
                    "carol2",
                    "svc-deploy",
                    "root",
                    "daemon",
                    "admin",
                    "nobody-here",
                ])
                .to_string(),
        };
        let service = match self.byte() % 4 {
            3 => self.text(),
            _ => self.pick(&["sshd", "su", "su-l", "cron"]).to_string(),
        };
        // An allowed token's claims, each kept, dropped or replaced: allow stays within reach
        // while every claim varies.
        let mut claims = match keys::gitlab_claims("alice") {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        for name in CLAIMS {
            match self.byte() % 8 {
                0..=4 => {}
                5 => {
                    claims.remove(*name);
                }
                _ => match self.value(0) {
                    Some(v) => {
                        claims.insert(name.to_string(), v);
                    }
                    None => {
                        claims.remove(*name);
                    }
                },
            }
        }
        // The JSON Pointer claims of the rules: /realm_access/roles(/0) and /x~1y/0.
        match self.byte() % 4 {
            0 => {
                let roles = self.value(1).unwrap_or(Value::Null);
                claims.insert("realm_access".into(), serde_json::json!({ "roles": roles }));
            }
            1 => {
                let first = self.pick(WORDS);
                claims.insert("x/y".into(), serde_json::json!([first, self.pick(WORDS)]));
            }
            _ => {}
        }
        Input {
            account,
            service,
            payload: Value::Object(claims).to_string().into_bytes(),
            header: header.into_bytes(),
            header_verifies,
        }
    }
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
    let rhost = h::rhost_of(&Value::Object(claims.clone()));
    let facts = TokenFacts {
        issuer,
        claims,
        user,
        service,
        rhost: rhost.as_deref(),
        account_names: &[account],
    };
    for rule in &config.rules {
        let got = policy::token_conditions(rule, &facts);
        let want = oracle::rule_matches(
            rule,
            issuer,
            claims,
            user,
            service,
            rhost.as_deref(),
            account,
        );
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

/// Largest magnitude of a time claim read as seconds from NOW.
const RELATIVE_TIME: i64 = 10_000_000;

/// Rewrites `exp`, `iat` and `nbf` that are integers within ±[`RELATIVE_TIME`] as NOW plus
/// that many seconds; the re-serialized claims when any was rewritten.
fn relative_times(claims: &mut Map<String, Value>) -> Option<Vec<u8>> {
    let mut changed = false;
    for name in ["exp", "iat", "nbf"] {
        if let Some(v) = claims.get_mut(name)
            && let Some(n) = v
                .as_i64()
                .filter(|n| (-RELATIVE_TIME..=RELATIVE_TIME).contains(n))
        {
            *v = Value::from(f::NOW + n);
            changed = true;
        }
    }
    changed.then(|| serde_json::to_vec(claims).unwrap_or_default())
}

/// `policy`: structure-aware. The input is `ACCOUNT \n SERVICE \n CLAIMS`: the requested
/// account, the PAM service, and the payload bytes; or a NUL byte and bytes from which
/// [`Builder`] makes the three and picks a header ([`HEADERS`], or whitespace before the
/// standard one). The harness signs the payload with the fuzz
/// Ed25519 key (EdDSA, kid test-ed: the cheapest signature, whatever the crypto backend) so
/// that every input gets past the signature into the claim checks and the rules. Integer
/// `exp`, `iat` and `nbf` within ±10^7 count from NOW (the claims are then re-serialized
/// before signing), so that the fuzzer reaches the time boundaries.
///
/// Checks, each against the reference in `idtoken_testkit::fuzz::oracle`:
/// - `glob::matches` on fuzzed patterns and texts (the two lines, and the claims' texts);
/// - `policy::token_conditions` of every configured rule on the claims;
/// - the whole decision on the signed token: malformed exactly when the payload is not a
///   JSON object; under a header that names the key, verified whenever iss is the test
///   issuer and alg_not_allowed for the other issuers (they accept RS256 only); the same
///   verdict and granting rule as the reference; and an allowed token looks like a token to
///   the PAM module (`jws::looks_like_jws`), which otherwise passes it on as a password.
pub fn policy(data: &[u8]) {
    let input = split(data);
    let (account, service) = (input.account.as_str(), input.service.as_str());
    let payload = input.payload.as_slice();
    check_glob(account, service);
    check_glob(service, account);
    let mut claims = match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    };
    // Relative times: byte mutations of decimal text rarely land on an exact boundary such
    // as exp = NOW - leeway, so small integer times count from NOW, and the claims are then
    // signed as re-serialized JSON instead of the input's bytes.
    let rewritten = claims.as_mut().and_then(relative_times);
    let payload: &[u8] = rewritten.as_deref().unwrap_or(payload);
    if let Some(claims) = &claims {
        for v in claims.values().take(32) {
            for t in oracle::texts(v).iter().take(32) {
                check_glob(account, t);
            }
        }
        check_conditions(claims, account, service);
    }
    let token = keys::sign_bytes(&input.header, payload, Key::Ed, Algorithm::EdDSA);
    if token.len() > idtoken_core::MAX_TOKEN_BYTES {
        return;
    }
    let config = f::config();
    let d = h::decide(config, &token, account, service, UseMode::ReadOnly);
    h::check_decision_invariants(&d);
    if d.allowed() {
        // The PAM module passes answers that do not look like a token to the next module.
        assert!(
            jws::looks_like_jws(&token),
            "allowed, but not token-shaped for the module"
        );
    }
    match &claims {
        None => assert_eq!(d.reason(), Some(Reason::Malformed), "{:?}", d.steps),
        Some(c) if input.header_verifies => {
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
        // Other headers: the reference decides.
        Some(_) => {}
    }
    h::check_against_oracle(config, &token, account, service, &d);
}

/// `packed`: packed tokens (pam_idtoken(8) PACKED TOKENS). Two kinds of input:
/// - any bytes but a leading NUL: the answer to `ID token: ` as it is (seeds: packed forms
///   of the token seeds and of the real GitLab tokens, and broken ones);
/// - a NUL, then a choice of one of two allowed tokens (EdDSA, and a GitLab-shaped RS256
///   one) and a list of edits of its packed zlib stream (flip, cut, insert, overwrite a
///   byte, 3 bytes an edit), re-encoded behind `~1.`.
///
/// Checks: the core's unpacking (`packed::unpack`, miniz_oxide) gives exactly what the
/// reference unpacker gives (`oracle::unpack`, zlib-rs), or both refuse; whatever unpacks
/// packs again to something that unpacks to the same JWS (round trip); a packed-shaped
/// answer that does not unpack is `malformed`; the whole decision agrees with the
/// reference; an unedited stream is allowed, and an edited one is allowed only if it still
/// unpacks to the very token that was signed: a mutated packed token is never allowed.
pub fn packed(data: &[u8]) {
    match data.split_first() {
        Some((0, edits)) => packed_edits(edits),
        _ => {
            let answer = String::from_utf8_lossy(data);
            let _ = packed_answer(&answer);
        }
    }
}

/// Decides `answer` and checks it against the reference; the JWS the core unpacked.
fn packed_answer(answer: &str) -> (Option<String>, bool) {
    let core = idtoken_core::packed::unpack(answer)
        .ok()
        .map(|u| u.jws.to_string());
    if answer.len() <= idtoken_core::MAX_TOKEN_BYTES {
        assert_eq!(
            core,
            oracle::unpack(answer.trim()),
            "the core and the reference unpack differently"
        );
    }
    if let Some(jws) = &core {
        let again = idtoken_core::packed::pack(jws)
            .unwrap_or_else(|e| panic!("an unpacked token does not pack again: {e}"));
        let back = idtoken_core::packed::unpack(&again).map(|u| u.jws.to_string());
        assert_eq!(back.as_ref(), Ok(jws), "round trip");
    }
    let (account, service) = h::request_of(core.as_deref().unwrap_or(answer));
    let config = f::config();
    let d = h::decide(config, answer, &account, &service, UseMode::ReadOnly);
    h::check_decision_invariants(&d);
    if core.is_none() && answer.trim_start().starts_with('~') {
        assert_eq!(d.reason(), Some(Reason::Malformed), "{:?}", d.steps);
    }
    if d.allowed() {
        assert!(
            idtoken_core::packed::looks_packed(answer) || jws::looks_like_jws(answer),
            "allowed, but not token-shaped for the module"
        );
    }
    h::check_against_oracle(config, answer, &account, &service, &d);
    (core, d.allowed())
}

/// The allowed tokens the edits start from, with their packed zlib streams.
fn packed_originals() -> &'static [(String, Vec<u8>)] {
    static ORIGINALS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    ORIGINALS.get_or_init(|| {
        let claims = keys::gitlab_claims("alice");
        [
            keys::mint_bytes(claims.to_string().as_bytes(), Key::Ed),
            keys::mint_gitlab_shaped(&claims),
        ]
        .into_iter()
        .map(|jws| {
            let p = idtoken_core::packed::pack(&jws).unwrap();
            let stream =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &p[3..])
                    .unwrap();
            (jws, stream)
        })
        .collect()
    })
}

fn packed_edits(data: &[u8]) {
    let originals = packed_originals();
    let (choice, edits) = data.split_first().map_or((0, &[][..]), |(c, e)| (*c, e));
    let (jws, stream) = &originals[usize::from(choice) % originals.len()];
    let mut s = stream.clone();
    for e in edits.chunks(3).take(16) {
        let (op, at, value) = (e[0], e.get(1).copied().unwrap_or(0), e.get(2).copied());
        let at = usize::from(at) * 3 + usize::from(op >> 2);
        match op % 4 {
            0 if !s.is_empty() => {
                let i = at % s.len();
                s[i] ^= value.filter(|v| *v != 0).unwrap_or(1);
            }
            1 => s.truncate(at % (s.len() + 1)),
            2 => s.insert(at % (s.len() + 1), value.unwrap_or(0)),
            3 if !s.is_empty() => {
                let i = at % s.len();
                s[i] = value.unwrap_or(0);
            }
            _ => {}
        }
    }
    let answer = format!(
        "~1.{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &s)
    );
    let (core, allowed) = packed_answer(&answer);
    if s == *stream {
        assert!(allowed, "the unedited packed token is refused");
        assert_eq!(core.as_ref(), Some(jws), "round trip of the original");
    }
    if allowed {
        assert_eq!(
            core.as_ref(),
            Some(jws),
            "an edited packed token was allowed as another token"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unedited, both originals are allowed; a flipped byte in the deflate data is not.
    #[test]
    fn packed_originals_are_allowed_and_an_edit_is_not() {
        packed(&[0, 0]);
        packed(&[0, 1]);
        for choice in [0u8, 1] {
            let (jws, stream) = &packed_originals()[usize::from(choice)];
            let answer = format!(
                "~1.{}",
                base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, stream)
            );
            assert_eq!(packed_answer(&answer), (Some(jws.clone()), true));
            let mut bad = stream.clone();
            bad[20] ^= 0x10;
            let answer = format!(
                "~1.{}",
                base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &bad)
            );
            assert!(!packed_answer(&answer).1);
        }
    }

    /// A built input that runs out of bytes keeps the allowed token's claims.
    #[test]
    fn built_input_starts_from_an_allowed_token() {
        let input = split(b"\0");
        assert_eq!(
            (input.account.as_str(), input.service.as_str()),
            ("alice", "sshd")
        );
        let token = keys::sign_bytes(&input.header, &input.payload, Key::Ed, Algorithm::EdDSA);
        let d = h::decide(f::config(), &token, "alice", "sshd", UseMode::ReadOnly);
        assert!(d.allowed(), "{:#?}", d.steps);
    }
}
