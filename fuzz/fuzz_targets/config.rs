//! `config`: arbitrary text as each of the files the module reads: the config
//! (`Config::parse`), a key cache (`jwks::parse`) and a user map (`usermap::parse`). A config
//! that loads is then used for a real decision on a valid token of the test issuer.
//!
//! Invariants: no panic; a config that loads satisfies what the SPEC promises of a loaded
//! config (issuer names [a-z0-9_-]+ and unique, urls unique, non-empty audiences, no none/HS*
//! algorithm, rules named and unique, known issuers, sane globs and bounds); a config that
//! does not load gives at least one problem, each with a plausible line; the decision with
//! the fuzzed config equals the reference decision; a parsed key set has unique kids, at
//! most 64 keys and no RSA key under 2048 bits.
#![no_main]

use idtoken_core::config::{self, Config};
use idtoken_core::decision::UseMode;
use idtoken_core::jwks::{self, KeyKind};
use idtoken_core::usermap;
use idtoken_fuzz as h;
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

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
        let mut deploy = h::gitlab_claims("alice");
        deploy["project_path"] = "hpc/deploy-tools".into();
        vec![
            (
                h::sign_a(h::gitlab_claims("alice").to_string().as_bytes()),
                "alice",
            ),
            (h::sign_a(deploy.to_string().as_bytes()), "svc-deploy"),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
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
});
