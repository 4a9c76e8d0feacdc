//! The bounds SECURITY.md promises at the core's edge, each checked on both sides of the
//! line: the `leeway` and `max_uses` caps, the config's size, issuer and rule caps, the key
//! cache's size and key caps, and a key's own `alg` restricting what it verifies.

use std::io::Write;
use std::path::PathBuf;

use idtoken_core::config::{Config, ConfigError, Issuer, MAX_CONFIG_BYTES, MAX_ISSUERS, MAX_RULES};
use idtoken_core::decision::{Decision, Env, Request, UseMode, Verdict, evaluate};
use idtoken_core::files::FileProblemKind;
use idtoken_core::jwks::{self, KeySet, MAX_JWKS_BYTES, MAX_KEYS};
use idtoken_core::keystore::{DataProblem, load_key_cache};
use idtoken_core::reason::Reason;
use idtoken_core::session_record::NoSessions;
use idtoken_core::uses::MAX_USES_LIMIT;
use idtoken_testkit::fakes::{AccountTable, Ledger, MemoryKeys, TestAccount};
use idtoken_testkit::keys::{AUDIENCE as AUD, ISSUER as ISS, Key, NOW, sign_raw};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

/// A config text with `issuers` issuers and `rules` rules, the first issuer the test's.
fn config_text(issuers: usize, rules: usize) -> String {
    let mut t = String::from("[defaults]\n");
    for i in 0..issuers {
        let url = if i == 0 {
            ISS.to_string()
        } else {
            format!("https://gitlab{i}.test.example")
        };
        t.push_str(&format!(
            "[[issuer]]\nname = \"i{i}\"\nurl = \"{url}\"\naudiences = [\"{AUD}\"]\n"
        ));
    }
    for r in 0..rules {
        // With several issuers a rule names one (SPEC v2).
        t.push_str(&format!("[[rule]]\nname = \"r{r}\"\nissuer = \"i0\"\n"));
    }
    t
}

fn problems(text: &str) -> Vec<String> {
    match Config::parse(text) {
        Ok(_) => Vec::new(),
        Err(p) => p.into_iter().map(|p| p.message).collect(),
    }
}

#[test]
fn leeway_is_capped_at_3600_seconds() {
    let at = |l: i64| problems(&format!("[defaults]\nleeway = {l}\n"));
    assert_eq!(at(3600), Vec::<String>::new(), "3600 s is allowed");
    let over = at(3601);
    assert!(
        over.iter()
            .any(|m| m.contains("leeway may be at most 3600")),
        "3601 s must be refused: {over:?}"
    );
    let c = Config::parse("[defaults]\nleeway = 3600\n").unwrap();
    assert_eq!(c.defaults.leeway, 3600);
}

#[test]
fn max_uses_is_capped_at_1000() {
    assert_eq!(MAX_USES_LIMIT, 1000, "SECURITY.md names 1000");
    let at = |n: u32| problems(&format!("[defaults]\nmax_uses = {n}\n"));
    assert_eq!(at(1000), Vec::<String>::new());
    let over = at(1001);
    assert!(
        over.iter()
            .any(|m| m.contains("max_uses may be at most 1000")),
        "1001 must be refused: {over:?}"
    );
}

#[test]
fn at_most_64_issuers() {
    assert_eq!(MAX_ISSUERS, 64, "SECURITY.md names 64");
    assert_eq!(problems(&config_text(64, 1)), Vec::<String>::new());
    let p = problems(&config_text(65, 1));
    assert!(
        p.iter().any(|m| m.contains("more than 64 [[issuer]]")),
        "65 issuers must be refused: {p:?}"
    );
}

#[test]
fn at_most_4096_rules() {
    assert_eq!(MAX_RULES, 4096, "SECURITY.md names 4096");
    assert_eq!(problems(&config_text(1, 4096)), Vec::<String>::new());
    let p = problems(&config_text(1, 4097));
    assert!(
        p.iter().any(|m| m.contains("more than 4096 [[rule]]")),
        "4097 rules must be refused: {p:?}"
    );
}

/// A scratch directory under the temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("idtoken-limits-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a valid config padded with a comment to exactly `len` bytes (mode 0644).
fn padded_config(dir: &std::path::Path, name: &str, len: usize) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let body = config_text(1, 1);
    let pad = len - body.len() - 2; // "#" and "\n" around the padding
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(body.as_bytes()).unwrap();
    f.write_all(b"#").unwrap();
    f.write_all(&vec![b'x'; pad]).unwrap();
    f.write_all(b"\n").unwrap();
    drop(f);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), len as u64);
    p
}

#[test]
fn a_config_over_1_mib_is_refused_unread() {
    assert_eq!(MAX_CONFIG_BYTES, 1024 * 1024, "SECURITY.md names 1 MiB");
    let s = Scratch::new("size");
    let limit = 1024 * 1024;
    let at = padded_config(&s.0, "at-limit.toml", limit);
    assert!(
        Config::load(&at).is_ok(),
        "a config of exactly 1 MiB loads: {:?}",
        Config::load(&at).err().map(|e| e.to_string())
    );
    let over = padded_config(&s.0, "over-limit.toml", limit + 1);
    match Config::load(&over) {
        Err(ConfigError::File(p)) => {
            assert!(matches!(p.kind, FileProblemKind::TooLarge { .. }), "{p}")
        }
        other => panic!(
            "1 MiB + 1 byte must be refused as too large: {:?}",
            other.map(|_| ()).map_err(|e| e.to_string())
        ),
    }
}

/// `n` copies of key A's public JWK under distinct kids.
fn jwks_of(n: usize) -> Value {
    let keys: Vec<Value> = (0..n)
        .map(|i| {
            let mut k = Key::A.jwk();
            k["kid"] = json!(format!("k{i}"));
            k
        })
        .collect();
    json!({ "keys": keys })
}

#[test]
fn a_key_cache_holds_at_most_64_keys() {
    assert_eq!(MAX_KEYS, 64, "SECURITY.md names 64");
    let set = jwks::parse(jwks_of(64).to_string().as_bytes()).unwrap();
    assert_eq!(set.keys.len(), 64);
    let err = jwks::parse(jwks_of(65).to_string().as_bytes()).unwrap_err();
    assert!(err.contains("65 keys, more than the 64"), "{err}");
}

/// The issuer `gitlab` whose key cache is `cache`.
fn issuer_with_cache(cache: &std::path::Path) -> Issuer {
    let cfg = Config::parse(&format!(
        "[[issuer]]\nname = \"gitlab\"\nurl = \"{ISS}\"\naudiences = [\"{AUD}\"]\njwks_cache = \"{}\"\n",
        cache.display()
    ))
    .unwrap();
    cfg.issuers[0].clone()
}

#[test]
fn a_key_cache_over_1_mib_is_refused_unread() {
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(MAX_JWKS_BYTES, 1024 * 1024, "SECURITY.md names 1 MiB");
    let s = Scratch::new("cache-size");
    // A valid JWKS padded with trailing whitespace (valid JSON) to the size wanted.
    let write = |name: &str, len: usize| {
        let mut text = jwks_of(1).to_string();
        text.push_str(&" ".repeat(len - text.len()));
        let p = s.0.join(name);
        std::fs::write(&p, &text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    };
    let at = write("at.jwks.json", 1024 * 1024);
    assert_eq!(
        load_key_cache(&issuer_with_cache(&at)).map(|k| k.keys.len()),
        Ok(1),
        "a cache of exactly 1 MiB is read"
    );
    let over = write("over.jwks.json", 1024 * 1024 + 1);
    match load_key_cache(&issuer_with_cache(&over)) {
        Err(DataProblem::File(p)) => {
            assert!(matches!(p.kind, FileProblemKind::TooLarge { .. }), "{p}")
        }
        other => panic!("1 MiB + 1 byte must be refused as too large: {other:?}"),
    }
}

// --- A key's own `alg` ---

/// alice (uid 2001), the only account this test needs.
const ACCOUNTS: &[TestAccount] = &[TestAccount::listed("alice", 2001, &["alice"])];

/// Key A's public JWK with `alg` set to `key_alg`.
fn key_a_with_alg(key_alg: &str) -> KeySet {
    let mut a = Key::A.jwk();
    a["alg"] = json!(key_alg);
    jwks::parse(json!({"keys": [a]}).to_string().as_bytes()).unwrap()
}

/// A token signed by key A with `alg`, under kid test-a.
fn token(alg: Algorithm, alg_name: &str) -> String {
    let claims = json!({"iss": ISS, "aud": AUD, "iat": NOW, "exp": NOW + 300, "jti": "alg-1",
                        "user_login": "alice"});
    sign_raw(
        &json!({"alg": alg_name, "kid": "test-a"}),
        &claims,
        Key::A,
        alg,
    )
}

fn decide(key_alg: &str, alg: Algorithm, alg_name: &str) -> Decision {
    // Both algorithms allowed for the issuer: only the key's own alg can refuse.
    let cfg = Config::parse(&format!(
        "[[issuer]]\nname = \"gitlab\"\nurl = \"{ISS}\"\naudiences = [\"{AUD}\"]\n\
         algorithms = [\"RS256\", \"RS384\"]\n\n[[rule]]\nname = \"own\"\n"
    ))
    .unwrap();
    let keys = MemoryKeys::set(key_a_with_alg(key_alg));
    let env = Env {
        config: &cfg,
        issuer_data: &keys,
        accounts: &AccountTable::new(ACCOUNTS),
        uses: &Ledger::default(),
        sessions: &NoSessions,
    };
    evaluate(
        &env,
        &Request {
            token: &token(alg, alg_name),
            account: "alice",
            service: "sshd",
            rhost: None,
            now: NOW,
            uses: UseMode::Record,
        },
    )
}

#[test]
fn a_keys_own_alg_restricts_what_it_verifies() {
    // The same key, the same valid signature: allowed when the key's alg is the header's...
    let d = decide("RS256", Algorithm::RS256, "RS256");
    assert_eq!(d.verdict, Verdict::Allow, "{:?}", d.steps);
    let d = decide("RS384", Algorithm::RS384, "RS384");
    assert_eq!(d.verdict, Verdict::Allow, "{:?}", d.steps);
    // ...and refused, before any signature check, when they differ.
    for (key_alg, alg, name) in [
        ("RS384", Algorithm::RS256, "RS256"),
        ("RS256", Algorithm::RS384, "RS384"),
    ] {
        let d = decide(key_alg, alg, name);
        assert_eq!(
            d.reason(),
            Some(Reason::UnknownKey),
            "a key with alg {key_alg} must not verify an {name} token: {:?}",
            d.steps
        );
        assert!(!d.verified, "the signature was never trusted");
    }
}
