//! `idtoken check --json` against tokens minted in the tests: every SPEC reason code, an
//! adversarial suite, the GitHub Actions shape, and the exit codes. Accounts come from NSS
//! through libnss-wrapper.

use base64::Engine;
use idtoken_core::uses::{DiskLedger, TokenId, UseLedger};
use idtoken_e2e::cli::{self, check};
use idtoken_e2e::keys::{
    self, AUDIENCE, ISSUER, Key, NOW, b64, gitlab_claims, mint, mint_with, sign_raw, with,
};
use idtoken_e2e::require;
use idtoken_e2e::sandbox::{Sandbox, set_mode};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

fn header(kid: &str) -> Value {
    json!({"alg": "RS256", "kid": kid, "typ": "JWT"})
}

/// One adversarial or ordinary case: the token, the account asked for, the expected reason
/// (None: allow).
struct Case {
    name: &'static str,
    token: String,
    user: &'static str,
    expect: Option<&'static str>,
}

fn case(
    name: &'static str,
    token: String,
    user: &'static str,
    expect: Option<&'static str>,
) -> Case {
    Case {
        name,
        token,
        user,
        expect,
    }
}

/// The `x5c` value for a self-signed certificate of key B, made by openssl
/// (tests/fixtures/keys/README.md): the PEM's base64 lines are the DER's standard base64,
/// which is what `x5c` carries. Checked to hold key B's modulus, so a token signed by key B
/// would verify if the certificate were ever used.
fn x5c_of_key_b() -> String {
    let pem = std::fs::read_to_string(keys::fixtures().join("keys/rsa-b.cert.pem")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .unwrap();
    let modulus = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(Key::B.jwk()["n"].as_str().unwrap())
        .unwrap();
    assert!(
        modulus.len() >= 256 && der.windows(modulus.len()).any(|w| w == modulus),
        "the certificate fixture must carry key B"
    );
    b64
}

/// The cases. Writes key B's JWKS into the sandbox at `evil/b.jwks.json`, for the kids that
/// name it as a path: were a kid ever read as a path, key B would verify those tokens.
fn cases(sb: &Sandbox) -> Vec<Case> {
    let good = gitlab_claims("alice");
    let good_token = mint(&good);
    let (h, p, s) = {
        let mut it = good_token.split('.');
        (
            it.next().unwrap().to_string(),
            it.next().unwrap().to_string(),
            it.next().unwrap().to_string(),
        )
    };
    let a_jwk = Key::A.jwk();
    let a_modulus = a_jwk["n"].as_str().unwrap().to_string();
    let b_jwk = Key::B.jwk();
    let x5c_b = x5c_of_key_b();
    let evil = sb.write(
        "evil/b.jwks.json",
        keys::jwks(&[Key::B]).to_string().as_bytes(),
    );
    let sandbox_name = sb.dir.file_name().unwrap().to_string_lossy().to_string();
    let payload_bob = b64(with(good.clone(), "user_login", json!("bob"))
        .to_string()
        .as_bytes());
    let hs_with_public_key = {
        let input = format!(
            "{}.{}",
            b64(json!({"alg": "HS256", "kid": "test-a"})
                .to_string()
                .as_bytes()),
            p
        );
        let key = EncodingKey::from_secret(a_modulus.as_bytes());
        format!(
            "{input}.{}",
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).unwrap()
        )
    };
    vec![
        case("valid token", good_token.clone(), "alice", None),
        case(
            "valid token with surrounding whitespace",
            format!("  \n{good_token}\n\t"),
            "alice",
            None,
        ),
        case(
            "alg none, empty signature",
            format!("{}.{}.", b64(br#"{"alg":"none"}"#), p),
            "alice",
            Some("malformed"),
        ),
        case(
            "alg none with a signature",
            format!("{}.{}.{}", b64(br#"{"alg":"none","kid":"test-a"}"#), p, s),
            "alice",
            Some("alg_not_allowed"),
        ),
        case(
            "HS256 signed with the RSA public key",
            hs_with_public_key,
            "alice",
            Some("alg_not_allowed"),
        ),
        case(
            "PS256 when only RS256 is allowed",
            sign_raw(
                &json!({"alg":"PS256","kid":"test-a"}),
                &good,
                Key::A,
                Algorithm::PS256,
            ),
            "alice",
            Some("alg_not_allowed"),
        ),
        case(
            "ES256 token",
            mint_with(&good, Key::Ec),
            "alice",
            Some("alg_not_allowed"),
        ),
        case(
            "kid not in the cache",
            sign_raw(&header("nope"), &good, Key::A, Algorithm::RS256),
            "alice",
            Some("unknown_key"),
        ),
        case(
            "kid with path characters (absolute path to a JWKS of the signing key)",
            sign_raw(
                &header(&evil.display().to_string()),
                &good,
                Key::B,
                Algorithm::RS256,
            ),
            "alice",
            Some("unknown_key"),
        ),
        case(
            "kid with path characters (../ to a JWKS of the signing key)",
            sign_raw(
                &header(&format!("../{sandbox_name}/evil/b.jwks.json")),
                &good,
                Key::B,
                Algorithm::RS256,
            ),
            "alice",
            Some("unknown_key"),
        ),
        case(
            "no kid",
            sign_raw(&json!({"alg":"RS256"}), &good, Key::A, Algorithm::RS256),
            "alice",
            Some("unknown_key"),
        ),
        case(
            "jku pointing elsewhere, attacker kid",
            sign_raw(
                &json!({"alg":"RS256","kid":"test-b","jku":"https://evil.example/jwks"}),
                &good,
                Key::B,
                Algorithm::RS256,
            ),
            "alice",
            Some("unknown_key"),
        ),
        case(
            "jku pointing elsewhere, real kid",
            sign_raw(
                &json!({"alg":"RS256","kid":"test-a","jku":"https://evil.example/jwks"}),
                &good,
                Key::B,
                Algorithm::RS256,
            ),
            "alice",
            Some("bad_signature"),
        ),
        case(
            "embedded jwk header",
            sign_raw(
                &json!({"alg":"RS256","kid":"test-b","jwk": b_jwk}),
                &good,
                Key::B,
                Algorithm::RS256,
            ),
            "alice",
            Some("unknown_key"),
        ),
        case(
            "x5u and x5c headers (x5c: a certificate of the signing key)",
            sign_raw(
                &json!({"alg":"RS256","kid":"test-a","x5u":"https://evil.example/c","x5c":[x5c_b]}),
                &good,
                Key::B,
                Algorithm::RS256,
            ),
            "alice",
            Some("bad_signature"),
        ),
        case(
            "x5c of the signing key and no kid",
            sign_raw(
                &json!({"alg":"RS256","x5c":[x5c_b]}),
                &good,
                Key::B,
                Algorithm::RS256,
            ),
            "alice",
            Some("unknown_key"),
        ),
        case(
            "signature from another key under the right kid",
            sign_raw(&header("test-a"), &good, Key::B, Algorithm::RS256),
            "alice",
            Some("bad_signature"),
        ),
        case(
            "payload swapped under a good signature",
            format!("{h}.{payload_bob}.{s}"),
            "bob",
            Some("bad_signature"),
        ),
        case(
            "1024-bit key (refused in the cache)",
            sign_raw(&header("test-small"), &good, Key::Small, Algorithm::RS256),
            "alice",
            Some("unknown_key"),
        ),
        case(
            "4096-bit key",
            sign_raw(&header("test-4096"), &good, Key::Rsa4096, Algorithm::RS256),
            "alice",
            None,
        ),
        case(
            "expired",
            mint(&with(good.clone(), "exp", json!(NOW - 61))),
            "alice",
            Some("expired"),
        ),
        case(
            "expired inside the leeway",
            mint(&with(good.clone(), "exp", json!(NOW - 59))),
            "alice",
            None,
        ),
        case(
            "nbf in the future",
            mint(&with(good.clone(), "nbf", json!(NOW + 61))),
            "alice",
            Some("not_yet_valid"),
        ),
        case(
            "iat in the future",
            mint(&with(
                with(good.clone(), "iat", json!(NOW + 120)),
                "nbf",
                Value::Null,
            )),
            "alice",
            Some("not_yet_valid"),
        ),
        case(
            "iat in the future inside the leeway",
            mint(&with(
                with(good.clone(), "iat", json!(NOW + 30)),
                "nbf",
                Value::Null,
            )),
            "alice",
            None,
        ),
        case(
            "wrong aud",
            mint(&with(good.clone(), "aud", json!("https://other.example"))),
            "alice",
            Some("wrong_audience"),
        ),
        case(
            "missing aud",
            mint(&with(good.clone(), "aud", Value::Null)),
            "alice",
            Some("wrong_audience"),
        ),
        case(
            "aud array with ours",
            mint(&with(good.clone(), "aud", json!(["x", AUDIENCE]))),
            "alice",
            None,
        ),
        case(
            "aud array without ours",
            mint(&with(good.clone(), "aud", json!(["x", "y"]))),
            "alice",
            Some("wrong_audience"),
        ),
        case(
            "aud as a number",
            mint(&with(good.clone(), "aud", json!(7))),
            "alice",
            Some("wrong_audience"),
        ),
        case(
            "iss with a trailing slash",
            mint(&with(good.clone(), "iss", json!(format!("{ISSUER}/")))),
            "alice",
            Some("unknown_issuer"),
        ),
        case(
            "iss missing",
            mint(&with(good.clone(), "iss", Value::Null)),
            "alice",
            Some("unknown_issuer"),
        ),
        case(
            "iss not a string",
            mint(&with(
                good.clone(),
                "iss",
                json!(["https://gitlab.test.example"]),
            )),
            "alice",
            Some("unknown_issuer"),
        ),
        case(
            "oversized token",
            format!("{h}.{}.{s}", "A".repeat(70_000)),
            "alice",
            Some("malformed"),
        ),
        case(
            "bad base64 in the header",
            format!("{}+/.{p}.{s}", &h[..h.len() - 2]),
            "alice",
            Some("malformed"),
        ),
        case(
            "padded base64",
            format!("{h}=.{p}.{s}"),
            "alice",
            Some("malformed"),
        ),
        case(
            "payload is a JSON array",
            format!("{h}.{}.{s}", b64(b"[1,2]")),
            "alice",
            Some("malformed"),
        ),
        case(
            "payload is not JSON",
            format!("{h}.{}.{s}", b64(b"not json")),
            "alice",
            Some("malformed"),
        ),
        case(
            "four parts",
            format!("{good_token}.AAAA"),
            "alice",
            Some("malformed"),
        ),
        case("empty input", String::new(), "alice", Some("malformed")),
        case(
            "crit header",
            sign_raw(
                &json!({"alg":"RS256","kid":"test-a","crit":["exp"]}),
                &good,
                Key::A,
                Algorithm::RS256,
            ),
            "alice",
            Some("malformed"),
        ),
        case(
            "deeply nested payload",
            format!(
                "{h}.{}.{s}",
                b64(format!("{{\"a\":{}{}}}", "[".repeat(500), "]".repeat(500)).as_bytes())
            ),
            "alice",
            Some("malformed"),
        ),
        case(
            "exp as a string",
            mint(&with(good.clone(), "exp", json!(format!("{}", NOW + 300)))),
            "alice",
            Some("missing_claim"),
        ),
        case(
            "exp missing",
            mint(&with(good.clone(), "exp", Value::Null)),
            "alice",
            Some("missing_claim"),
        ),
        case(
            "iat missing",
            mint(&with(good.clone(), "iat", Value::Null)),
            "alice",
            Some("missing_claim"),
        ),
        case(
            "user claim missing",
            mint(&with(good.clone(), "user_login", Value::Null)),
            "alice",
            Some("missing_claim"),
        ),
        case(
            "user claim a number",
            mint(&with(good.clone(), "user_login", json!(2001))),
            "alice",
            Some("missing_claim"),
        ),
        case(
            "lifetime too long",
            mint(&with(good.clone(), "exp", json!(NOW + 90_000))),
            "alice",
            Some("lifetime_too_long"),
        ),
        case(
            "unicode look-alike user name",
            mint(&with(good.clone(), "user_login", json!("\u{0430}lice"))),
            "alice",
            Some("user_mismatch"),
        ),
        case(
            "token of another user",
            mint(&gitlab_claims("bob")),
            "alice",
            Some("user_mismatch"),
        ),
        case(
            "root",
            mint(&gitlab_claims("root")),
            "root",
            Some("account_invalid"),
        ),
        case(
            "uid under min_uid",
            mint(&gitlab_claims("lowuid")),
            "lowuid",
            Some("account_invalid"),
        ),
        case(
            "nonexistent account",
            mint(&gitlab_claims("ghost")),
            "ghost",
            Some("account_invalid"),
        ),
    ]
}

fn standard(tag: &str) -> (Sandbox, std::path::PathBuf) {
    let s = Sandbox::new(tag);
    s.key_cache(&[Key::A, Key::Small, Key::Rsa4096]);
    let config = s.config(
        "",
        "[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n",
    );
    (s, config)
}

#[test]
fn adversarial_suite() {
    require!(
        cli::nss_wrapper().is_some(),
        "libnss-wrapper is not installed (apt-get install libnss-wrapper)"
    );
    let (s, config) = standard("adversarial");
    let cases = cases(&s);
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for c in &cases {
        let (code, json, out) = check(&s, &config, &c.token, c.user, NOW, &[]);
        let reason = json["reason"].as_str();
        let ok = match c.expect {
            None => code == 0 && json["decision"] == "allow" && reason.is_none(),
            Some(r) => code == 1 && json["decision"] == "deny" && reason == Some(r),
        };
        if !ok {
            failures.push(format!(
                "{}: want {:?}, got exit {code} {json}\nstderr: {}",
                c.name,
                c.expect,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // Never the token in any output.
        let sig = c.token.trim().rsplit('.').next().unwrap_or_default();
        if sig.len() > 20 {
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!all.contains(sig), "{}: token text in the output", c.name);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_reason_code_through_the_cli() {
    require!(
        cli::nss_wrapper().is_some(),
        "libnss-wrapper is not installed"
    );
    let (s, config) = standard("reasons");
    let mut seen: std::collections::BTreeSet<String> = Default::default();
    for c in cases(&s) {
        let (_, json, _) = check(&s, &config, &c.token, c.user, NOW, &[]);
        if let Some(r) = json["reason"].as_str() {
            seen.insert(r.to_string());
        }
    }
    // policy_denied: a rule that matches nothing of this token.
    let s2 = Sandbox::new("policy");
    s2.key_cache(&[Key::A]);
    let c2 = s2.config(
        "",
        "[[rule]]\nname = \"main-only\"\n[rule.claims]\nref = \"release\"\n",
    );
    let (code, json, _) = check(&s2, &c2, &mint(&gitlab_claims("alice")), "alice", NOW, &[]);
    assert_eq!((code, json["reason"].as_str()), (1, Some("policy_denied")));
    let trace = json["rules"][0]["failed"].as_str().unwrap_or_default();
    assert!(trace.contains("claims.ref"), "{json}");
    seen.insert("policy_denied".into());
    // replayed: max_uses = 2 and two uses already recorded on this host. `check` never
    // records a use: three checks under max_uses = 2 all allow, and leave the ledger empty.
    let s3 = Sandbox::new("replay");
    s3.key_cache(&[Key::A]);
    let c3 = s3.config("max_uses = 2", "[[rule]]\nname = \"own\"\n");
    let claims = gitlab_claims("alice");
    let token = mint(&claims);
    let ledger = DiskLedger {
        dir: s3.path("uses"),
        keep_after_exp: 60,
    };
    let id = TokenId::new(ISSUER, claims["jti"].as_str().unwrap(), NOW + 300);
    let all_uses = idtoken_core::uses::MAX_USES_LIMIT;
    for n in 1..=3 {
        let (code, json, _) = check(&s3, &c3, &token, "alice", NOW, &[]);
        assert_eq!(code, 0, "check {n} of a token never used: {json}");
        assert_eq!(
            ledger.count(&id, all_uses).unwrap(),
            0,
            "check {n} recorded a use"
        );
    }
    assert!(ledger.record(&id, 2, NOW).unwrap());
    let (code, _, _) = check(&s3, &c3, &token, "alice", NOW, &[]);
    assert_eq!(code, 0, "one use of two recorded");
    assert!(ledger.record(&id, 2, NOW).unwrap());
    let (code, json, _) = check(&s3, &c3, &token, "alice", NOW, &[]);
    assert_eq!(
        (code, json["reason"].as_str()),
        (1, Some("replayed")),
        "{json}"
    );
    assert_eq!(
        ledger.count(&id, all_uses).unwrap(),
        2,
        "check sees the recorded uses and records none"
    );
    seen.insert("replayed".into());
    // too_many_sessions: the rule's cap over the session records of the host, which are in
    // /run: so `check` runs in a namespace of its own with a private /run holding one live
    // session (this process stands for its sshd).
    if idtoken_e2e::pam::can_isolate() {
        let h = idtoken_e2e::pam::PamHarness::new("reasons-sessions");
        h.sandbox.key_cache(&[Key::A]);
        let cfg = h.sandbox.config(
            "",
            "[[rule]]\nname = \"capped\"\nissuer = \"gitlab\"\nmax_sessions = 1\n",
        );
        let run = h.run.clone().expect("the harness's /run");
        let records = idtoken_core::session_record::SessionDir {
            dir: run.join("idtoken/sessions"),
        };
        std::fs::create_dir_all(run.join("idtoken")).unwrap();
        set_mode(&run.join("idtoken"), 0o700);
        let live = idtoken_e2e::keys::live_claims("alice", "reasons-sessions");
        let record = idtoken_core::session_record::SessionRecord {
            account: "alice".into(),
            issuer: "gitlab".into(),
            rule: "capped".into(),
            user: "alice".into(),
            project_path: None,
            pipeline_id: None,
            job_id: None,
            jti: None,
            rhost: None,
            created: idtoken_e2e::keys::now(),
            exp: idtoken_e2e::keys::now() + 300,
            ends_at_exp: false,
            memory_max: None,
            tasks_max: None,
            cpu_weight: None,
            io_weight: None,
            runtime_max: None,
            leader: Some(std::process::id()),
            opened: Some(idtoken_e2e::keys::now()),
            ended_by: None,
        };
        let name = records.create_pending(&record).unwrap();
        records.open_session(&name, &record).unwrap();
        let token = h.sandbox.token_file("t", &mint(&live));
        let out = idtoken_e2e::directory::idtoken_in(
            &h,
            &[
                "check",
                "--json",
                "--service",
                "sshd",
                "--config",
                &cfg.display().to_string(),
                "--user",
                "alice",
                "--token-file",
                &token.display().to_string(),
            ],
        );
        let json = idtoken_e2e::sandbox::last_json_line(&out.stdout);
        assert_eq!(
            (out.status.code(), json["reason"].as_str()),
            (Some(1), Some("too_many_sessions")),
            "{json} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // check counted, and removed nothing.
        assert_eq!(std::fs::read_dir(&records.dir).unwrap().count(), 1);
        seen.insert("too_many_sessions".into());
    }
    // revoked: an entry of the revocation list names the token's pipeline.
    let s4 = Sandbox::new("revoked");
    s4.key_cache(&[Key::A]);
    let list = s4.write(
        "revocations",
        format!(
            "{{\"version\": 1, \"entries\": [{{\"id\": \"r1\", \"match\": {{\"pipeline_id\": \"5001\"}}, \
             \"reason\": \"\", \"created\": {NOW}, \"lapses_at\": {}}}]}}",
            NOW + 86_520
        )
        .as_bytes(),
    );
    let c4 = s4.config(
        &format!("revocations = \"{}\"", list.display()),
        "[[rule]]\nname = \"own\"\n",
    );
    let (code, json, _) = check(&s4, &c4, &mint(&gitlab_claims("alice")), "alice", NOW, &[]);
    assert_eq!(
        (code, json["reason"].as_str()),
        (1, Some("revoked")),
        "{json}"
    );
    seen.insert("revoked".into());
    let all: Vec<&str> = idtoken_core::reason::Reason::ALL
        .iter()
        .map(|r| r.code())
        .collect();
    let missing: Vec<&&str> = all.iter().filter(|r| !seen.contains(**r)).collect();
    assert!(
        missing.is_empty(),
        "reason codes never produced: {missing:?}"
    );
}

#[test]
fn json_has_the_spec_fields_and_a_trace() {
    require!(
        cli::nss_wrapper().is_some(),
        "libnss-wrapper is not installed"
    );
    let (s, config) = standard("fields");
    let (code, json, _) = check(
        &s,
        &config,
        &mint(&gitlab_claims("alice")),
        "alice",
        NOW,
        &[],
    );
    assert_eq!(code, 0);
    assert_eq!(json["decision"], "allow");
    assert_eq!(json["reason"], Value::Null);
    assert_eq!(json["rule"], "own-account");
    assert_eq!(json["issuer"], "gitlab");
    assert_eq!(json["user"], "alice");
    assert_eq!(json["account"], "alice");
    assert!(json["steps"].as_array().unwrap().len() >= 10);
    assert_eq!(json["rules"][0]["granted"], true);
}

#[test]
fn groups_rule_without_groups_direct_explains_why() {
    require!(
        cli::nss_wrapper().is_some(),
        "libnss-wrapper is not installed"
    );
    let s = Sandbox::new("groups");
    s.key_cache(&[Key::A]);
    let config = s.config(
        "",
        "[[rule]]\nname = \"hpc-groups\"\ngroups = [\"hpc/*\"]\n",
    );
    let with_groups = mint(&gitlab_claims("alice"));
    assert_eq!(check(&s, &config, &with_groups, "alice", NOW, &[]).0, 0);
    let without = mint(&with(gitlab_claims("alice"), "groups_direct", Value::Null));
    let (code, json, out) = check(&s, &config, &without, "alice", NOW, &[]);
    assert_eq!((code, json["reason"].as_str()), (1, Some("policy_denied")));
    let failed = json["rules"][0]["failed"].as_str().unwrap_or_default();
    assert!(
        failed.contains("no groups_direct claim") && failed.contains("200 groups"),
        "{failed}"
    );
    // The human output carries the same trace.
    let mut cmd = cli::idtoken(&s);
    let human = cmd
        .args([
            "check",
            "--user",
            "alice",
            "--at",
            &NOW.to_string(),
            "--config",
        ])
        .arg(&config)
        .arg("--token-file")
        .arg(s.token_file("t", &without))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("DENY: policy_denied") && text.contains("no groups_direct claim"),
        "{text}"
    );
    drop(out);
}

#[test]
fn local_groups_primary_group_member_list_and_glob_through_nss() {
    require!(
        cli::nss_wrapper().is_some(),
        "libnss-wrapper is not installed"
    );
    let s = Sandbox::new("groups");
    s.key_cache(&[Key::A]);
    // (local_groups, account, how the membership is found or None when refused): through
    // the real NSS calls (nss_wrapper's files). "lists": the group's own entry (getgrnam);
    // "group list": the account's groups (getgrouplist).
    let cases = [
        // alice's primary group: its entry lists no members, the gid is the account's.
        (
            r#"["alice"]"#,
            "alice",
            Some("group \"alice\" lists \"alice\""),
        ),
        // hpc-ci names carol among its members.
        (
            r#"["hpc-ci"]"#,
            "carol",
            Some("group \"hpc-ci\" lists \"carol\""),
        ),
        (r#"["hpc-ci"]"#, "alice", None),
        (
            r#"["no-such-group", "hpc-ci"]"#,
            "carol",
            Some("group \"hpc-ci\" lists"),
        ),
        (r#"["no-such-group"]"#, "carol", None),
        // Another account's primary group.
        (r#"["alice"]"#, "carol", None),
        // Globs are matched against the account's group list (getgrouplist).
        (
            r#"["hpc-*"]"#,
            "carol",
            Some("\"carol\" is in group \"hpc-ci\" (its group list)"),
        ),
        (r#"["hpc-*"]"#, "alice", None),
        (
            r#"["car?l"]"#,
            "carol",
            Some("\"carol\" is in group \"carol\" (its group list)"),
        ),
    ];
    for (groups, account, how) in cases {
        let config = s.config(
            "",
            &format!("[[rule]]\nname = \"members\"\nlocal_groups = {groups}\n"),
        );
        let (code, json, _) = check(
            &s,
            &config,
            &mint(&gitlab_claims(account)),
            account,
            NOW,
            &[],
        );
        let grant = json["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["step"] == "grant"))
            .map(|s| s["detail"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        match how {
            Some(how) => {
                assert_eq!(code, 0, "local_groups = {groups} for {account}: {json}");
                assert!(grant.contains(how), "{how:?} not in {grant:?}");
            }
            None => {
                assert_eq!(code, 1, "local_groups = {groups} for {account}: {json}");
                assert_eq!(json["reason"], "user_mismatch", "{json}");
            }
        }
    }
}

#[test]
fn login_as_local_groups_and_user_map() {
    require!(
        cli::nss_wrapper().is_some(),
        "libnss-wrapper is not installed"
    );
    let s = Sandbox::new("grants");
    s.key_cache(&[Key::A]);
    let map = s.write(
        "users.map",
        b"# gitlab name -> local account\nalice.gitlab alice\n",
    );
    let _ = map;
    let config = s.config(
        "",
        "[[rule]]\nname = \"deploy\"\nusers = [\"alice\", \"carol\"]\nlogin_as = \"svc-deploy\"\nlocal_groups = [\"hpc-ci\"]\n\
         [[rule]]\nname = \"own\"\nusers = [\"alice\"]\n",
    );
    // alice may be alice; svc-deploy is granted but only to hpc-ci members: svc-deploy is not one.
    assert_eq!(
        check(
            &s,
            &config,
            &mint(&gitlab_claims("alice")),
            "alice",
            NOW,
            &[]
        )
        .0,
        0
    );
    let (code, json, _) = check(
        &s,
        &config,
        &mint(&gitlab_claims("alice")),
        "svc-deploy",
        NOW,
        &[],
    );
    assert_eq!(
        (code, json["reason"].as_str()),
        (1, Some("user_mismatch")),
        "{json}"
    );
    assert!(
        json["rules"][0]["failed"]
            .as_str()
            .unwrap_or_default()
            .contains("local_groups"),
        "{json}"
    );
    // carol's token may not be carol (no rule grants it), but is granted svc-deploy?
    // local_groups checks the granted account, svc-deploy, which is not in hpc-ci.
    let (code, _, _) = check(
        &s,
        &config,
        &mint(&gitlab_claims("carol")),
        "carol",
        NOW,
        &[],
    );
    assert_eq!(code, 1);
    // A rule granting carol herself with local_groups: carol is in hpc-ci.
    let config2 = s.config(
        "",
        "[[rule]]\nname = \"ci-members\"\nlocal_groups = [\"hpc-ci\"]\n",
    );
    assert_eq!(
        check(
            &s,
            &config2,
            &mint(&gitlab_claims("carol")),
            "carol",
            NOW,
            &[]
        )
        .0,
        0
    );
    assert_eq!(
        check(
            &s,
            &config2,
            &mint(&gitlab_claims("alice")),
            "alice",
            NOW,
            &[]
        )
        .0,
        1
    );
    // user_map translates the user claim for the default grant.
    let text = std::fs::read_to_string(&config2).unwrap().replace(
        "jwks_cache",
        &format!(
            "user_map = \"{}\"\njwks_cache",
            s.path("users.map").display()
        ),
    );
    let config3 = s.write("mapped.toml", text.as_bytes());
    let mapped = mint(&gitlab_claims("alice.gitlab"));
    let (code, json, _) = check(&s, &config3, &mapped, "alice", NOW, &[]);
    assert_eq!(code, 1, "alice is not in hpc-ci: {json}");
    let config4 = s.write(
        "mapped2.toml",
        std::fs::read_to_string(&config3)
            .unwrap()
            .replace("local_groups = [\"hpc-ci\"]\n", "")
            .as_bytes(),
    );
    assert_eq!(check(&s, &config4, &mapped, "alice", NOW, &[]).0, 0);
    let (code, json, _) = check(
        &s,
        &config4,
        &mint(&gitlab_claims("unmapped")),
        "unmapped",
        NOW,
        &[],
    );
    assert_eq!(
        (code, json["reason"].as_str()),
        (1, Some("user_mismatch")),
        "{json}"
    );
}

#[test]
fn github_actions_tokens_work_under_the_same_rules() {
    require!(
        cli::nss_wrapper().is_some(),
        "libnss-wrapper is not installed"
    );
    let s = Sandbox::new("github");
    s.write(
        "github.jwks.json",
        keys::jwks(&[Key::B]).to_string().as_bytes(),
    );
    let config = s.write(
        "github.toml",
        format!(
            "[[issuer]]\nname = \"github\"\nurl = \"https://token.actions.githubusercontent.com\"\n\
             audiences = [\"https://login.test.example\"]\nuser_claim = \"actor\"\njwks_cache = \"{}\"\n\n\
             [[rule]]\nname = \"deploy-from-main\"\nissuer = \"github\"\nlogin_as = \"svc-deploy\"\n\
             [rule.claims]\nrepository = \"hpc-org/*\"\nref = \"refs/heads/main\"\nenvironment = \"production\"\n",
            s.path("github.jwks.json").display()
        )
        .as_bytes(),
    );
    let claims = json!({
        "iss": "https://token.actions.githubusercontent.com", "aud": AUDIENCE,
        "sub": "repo:hpc-org/app:environment:production", "iat": NOW, "nbf": NOW, "exp": NOW + 300,
        "jti": "gh-1", "actor": "alice", "repository": "hpc-org/app", "ref": "refs/heads/main",
        "environment": "production", "run_id": "123", "repository_owner": "hpc-org"
    });
    let token = mint_with(&claims, Key::B);
    let (code, json, _) = check(&s, &config, &token, "svc-deploy", NOW, &[]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["user"], "alice");
    let (code, json, _) = check(
        &s,
        &config,
        &mint_with(&with(claims, "environment", json!("staging")), Key::B),
        "svc-deploy",
        NOW,
        &[],
    );
    assert_eq!((code, json["reason"].as_str()), (1, Some("policy_denied")));
}

#[test]
fn real_gitlab_tokens_from_the_fixtures() {
    require!(
        cli::nss_wrapper().is_some(),
        "libnss-wrapper is not installed"
    );
    let fixtures = keys::fixtures().join("gitlab-real");
    let read = |f: &str| std::fs::read_to_string(fixtures.join(f)).unwrap();
    let s = Sandbox::new("real");
    s.write(
        "rgl.jwks.json",
        read("selfhosted_rgl_id_token_v2.jwks.json").as_bytes(),
    );
    s.write(
        "gitlabcom.jwks.json",
        read("gitlabcom.jwks.json").as_bytes(),
    );
    let config = s.write(
        "real.toml",
        format!(
            "[[issuer]]\nname = \"rgl\"\nurl = \"https://gitlab.example.com\"\naudiences = [\"https://example.com\"]\njwks_cache = \"{d}/rgl.jwks.json\"\n\n\
             [[issuer]]\nname = \"gitlabcom\"\nurl = \"https://gitlab.com\"\naudiences = [\"pypi\"]\njwks_cache = \"{d}/gitlabcom.jwks.json\"\n\n\
             [[rule]]\nname = \"validate-jwt\"\nissuer = \"rgl\"\nlogin_as = \"alice\"\n[rule.claims]\nproject_path = \"example/gitlab-ci-validate-jwt\"\n",
            d = s.dir.display()
        )
        .as_bytes(),
    );
    // Evaluated one minute after each token's iat.
    let (code, json, _) = check(
        &s,
        &config,
        &read("selfhosted_rgl_id_token_v2.jwt"),
        "alice",
        1_677_188_547 + 60,
        &[],
    );
    assert_eq!(
        (code, json["decision"].as_str(), json["rule"].as_str()),
        (0, Some("allow"), Some("validate-jwt")),
        "{json}"
    );
    let (code, json, _) = check(
        &s,
        &config,
        &read("gitlabcom_ci_job_jwt_v1_2021_cgrotz.jwt"),
        "alice",
        1_626_701_104 + 60,
        &[],
    );
    // The v1 CI_JOB_JWT (removed in GitLab 17.0) names its issuer by bare host name, which
    // no config can trust since issuer urls are https:// only (SPEC v2).
    assert_eq!(
        (code, json["reason"].as_str()),
        (1, Some("unknown_issuer")),
        "{json}"
    );
    assert!(
        json.to_string()
            .contains("iss \\\"gitlab.com\\\" is not the url"),
        "{json}"
    );
    let forged = read("forged_gitlabcom_kid.jwt");
    let iat = {
        let out = cli::idtoken(&s)
            .args(["inspect", "--json", "--token-file"])
            .arg(fixtures.join("forged_gitlabcom_kid.jwt"))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["claims"]["iat"].as_i64().unwrap()
    };
    let (code, json, _) = check(&s, &config, &forged, "alice", iat + 60, &[]);
    assert_eq!(
        (code, json["reason"].as_str()),
        (1, Some("bad_signature")),
        "{json}"
    );
}

#[test]
fn exit_code_2_when_the_decision_cannot_be_made() {
    require!(
        cli::nss_wrapper().is_some(),
        "libnss-wrapper is not installed"
    );
    let (s, config) = standard("exit2");
    let token = mint(&gitlab_claims("alice"));
    let cache = s.path("gitlab.jwks.json");
    set_mode(&cache, 0o666);
    let (code, json, _) = check(&s, &config, &token, "alice", NOW, &[]);
    assert_eq!(code, 2, "world-writable cache: {json}");
    assert!(
        json["error"]
            .as_str()
            .unwrap_or_default()
            .contains("chmod go-w"),
        "{json}"
    );
    set_mode(&cache, 0o644);
    std::fs::write(&cache, b"{\"keys\":[]}").unwrap();
    assert_eq!(
        check(&s, &config, &token, "alice", NOW, &[]).0,
        2,
        "no usable key"
    );
    let bad = s.write("bad.toml", b"[defaults]\nleway = 3\n");
    let (code, json, out) = check(&s, &bad, &token, "alice", NOW, &[]);
    assert_eq!(code, 2);
    assert_eq!(json["decision"], "unavailable");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.toml:2"),
        "the line is named"
    );
    let out = cli::idtoken(&s)
        .args(["check", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "bad arguments");
}

#[test]
fn config_check_and_inspect() {
    let s = Sandbox::new("cfg");
    let good = s.config("", "[[rule]]\nname = \"r\"\n");
    let out = cli::idtoken(&s)
        .args(["config", "check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = s.write("bad.toml", b"[[issuer]]\nname = \"x\"\nurl = \"u\"\naudiences = []\nalgorithms = [\"HS256\"]\n\n[[rule]]\nname = \"r\"\nissuer = \"nope\"\nfoo = 1\n");
    let out = cli::idtoken(&s)
        .args(["config", "check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:10") && err.contains("foo"),
        "unknown key with its line: {err}"
    );
    let semantic = s.write("sem.toml", b"[[issuer]]\nname = \"x\"\nurl = \"u\"\naudiences = []\nalgorithms = [\"HS256\"]\n\n[[rule]]\nname = \"r\"\nissuer = \"nope\"\n");
    let out = cli::idtoken(&s)
        .args(["config", "check", "--config"])
        .arg(&semantic)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a semantically wrong config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sem.toml:4") && err.contains("sem.toml:5") && err.contains("sem.toml:9"),
        "every problem with its line: {err}"
    );
    // inspect: decoded, marked UNVERIFIED, dates readable; 2 for a non-JWT.
    let token = mint(&gitlab_claims("alice"));
    let t = s.token_file("t", &token);
    let out = cli::idtoken(&s)
        .args(["inspect", "--token-file"])
        .arg(&t)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    let sig = token.rsplit('.').next().unwrap_or_default();
    assert!(
        !text.contains(sig) && !String::from_utf8_lossy(&out.stderr).contains(sig),
        "inspect shows the claims, never the token itself"
    );
    assert!(
        text.contains("UNVERIFIED")
            && text.contains("2026-01-01 00:05:00 UTC")
            && text.contains("hpc/app"),
        "{text}"
    );
    let junk = s.token_file("junk", "not a token");
    let out = cli::idtoken(&s)
        .args(["inspect", "--token-file"])
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Security review 2, finding 6: `inspect` printed claim and header names raw, so a token
/// could clear the admin's screen, move the cursor or set the terminal title, and U+2028,
/// zero-width and BOM characters reached the output. Names and values, in both output
/// forms, now come without any Cc, Cf, Zl or Zp character.
#[test]
fn inspect_prints_no_control_or_format_character_from_the_token() {
    let s = Sandbox::new("inspect-clean");
    let hostile = [
        "\u{1b}]0;pwned\u{7}",
        "\u{1b}[2J",
        "\u{9b}31m",
        "\u{2028}",
        "\u{200b}",
        "\u{feff}",
        "\u{202e}",
        "\u{61c}",
    ];
    let mut claims = gitlab_claims("alice");
    for (n, h) in hostile.iter().enumerate() {
        claims[format!("name{n}{h}")] = json!(format!("value{n}{h}"));
    }
    let token = mint(&claims);
    let tf = s.token_file("t.jwt", &token);
    for json_out in [false, true] {
        let mut cmd = cli::idtoken(&s);
        cmd.args(["inspect", "--token-file"]).arg(&tf);
        if json_out {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        let bad: Vec<String> = text
            .chars()
            .filter(|c| *c != '\n' && idtoken_core::sanitize::is_removed(*c))
            .map(|c| format!("U+{:04X}", c as u32))
            .collect();
        assert!(bad.is_empty(), "json={json_out}: {bad:?} in\n{text}");
        // What is left of the names is still shown.
        assert!(
            text.contains("name0]0;pwned") && text.contains("value7"),
            "{text}"
        );
    }
}

/// The config docs/policy.md marks `<!-- config:NAME -->` (found there exactly once), with
/// each issuer's key cache pointed into the sandbox (the doc leaves it at its default path).
fn doc_config(s: &Sandbox, name: &str) -> std::path::PathBuf {
    let body = idtoken_e2e::docs::config("docs/policy.md", name);
    let mut text = String::new();
    for line in body.lines() {
        text.push_str(line);
        text.push('\n');
        if let Some(issuer) = line
            .strip_prefix("name = \"")
            .and_then(|n| n.strip_suffix('"'))
            .filter(|_| text.rfind("[[issuer]]") > text.rfind("[[rule]]"))
        {
            let cache = s.path(&format!("{issuer}.jwks.json"));
            text.push_str(&format!("jwks_cache = \"{}\"\n", cache.display()));
        }
    }
    s.write(&format!("{name}.toml"), text.as_bytes())
}

/// SPEC v2, other issuers on their real shapes: docs/policy.md's Keycloak config (token
/// exchange: `preferred_username`, `aud` a list with `account`, `azp`, realm and client
/// roles reached by JSON Pointer) and GitHub Actions config allow exactly the tokens they
/// describe; the runners-only config with a deny rule refuses the sandbox and foreign
/// networks, each traced in plain words.
#[test]
fn the_readme_configs_for_other_issuers_and_v2_rules_decide_as_documented() {
    require!(
        cli::nss_wrapper().is_some(),
        "libnss-wrapper is not installed"
    );
    let s = Sandbox::new("readme-issuers");
    s.write(
        "keycloak.jwks.json",
        keys::jwks(&[Key::B]).to_string().as_bytes(),
    );
    s.write(
        "github.jwks.json",
        keys::jwks(&[Key::B]).to_string().as_bytes(),
    );
    s.write(
        "gitlab.jwks.json",
        keys::jwks(&[Key::A]).to_string().as_bytes(),
    );

    // Keycloak after token exchange (RFC 8693), as Keycloak 2x issues it.
    let kc = doc_config(&s, "keycloak");
    let claims = json!({
        "exp": NOW + 300, "iat": NOW, "jti": "onrtac:3f1b-kc", "iss": "https://kc.example/realms/hpc",
        "aud": ["login-node", "account"], "sub": "6f0e0a2c-91aa-4bb0-9e1f-1c2f5d0b7a11", "typ": "Bearer",
        "azp": "gitlab-exchange", "sid": "d1f2", "acr": "1", "scope": "openid profile email",
        "allowed-origins": ["/*"],
        "realm_access": {"roles": ["offline_access", "uma_authorization", "hpc-ci"]},
        "resource_access": {"login-node": {"roles": ["deploy"]}, "account": {"roles": ["view-profile"]}},
        "email_verified": true, "preferred_username": "alice", "name": "Alice Example"
    });
    let token = mint_with(&claims, Key::B);
    let (code, json, _) = check(&s, &kc, &token, "alice", NOW, &[]);
    assert_eq!(
        (code, json["rule"].as_str()),
        (0, Some("hpc-ci-role")),
        "{json}"
    );
    let (code, json, _) = check(&s, &kc, &token, "svc-deploy", NOW, &[]);
    assert_eq!(
        (code, json["rule"].as_str()),
        (0, Some("deployers")),
        "{json}"
    );
    let no_role = with(
        claims.clone(),
        "realm_access",
        json!({"roles": ["offline_access"]}),
    );
    let (code, json, out) = check(&s, &kc, &mint_with(&no_role, Key::B), "alice", NOW, &[]);
    // Without the realm role only the client-role rule matches, and it grants svc-deploy.
    assert_eq!(
        (code, json["reason"].as_str()),
        (1, Some("user_mismatch")),
        "{json}"
    );
    assert!(
        json.to_string().contains("claims./realm_access/roles"),
        "the trace names the pointer: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // GitHub Actions.
    let gh = doc_config(&s, "github-actions");
    let claims = json!({
        "iss": "https://token.actions.githubusercontent.com", "aud": "https://login.hpc.example.org",
        "sub": "repo:hpc-org/app:environment:production", "iat": NOW, "nbf": NOW, "exp": NOW + 300,
        "jti": "gh-2", "actor": "alice", "repository": "hpc-org/app", "ref": "refs/heads/main",
        "environment": "production", "run_id": "123", "repository_owner": "hpc-org",
        "repository_owner_id": "31415926", "repository_id": "271828",
        "job_workflow_ref": "hpc-org/app/.github/workflows/deploy.yml@refs/heads/main"
    });
    let (code, json, _) = check(&s, &gh, &mint_with(&claims, Key::B), "svc-deploy", NOW, &[]);
    assert_eq!(
        (code, json["rule"].as_str()),
        (0, Some("deploy-from-main")),
        "{json}"
    );
    // Another organisation that took the name hpc-org after a rename: another owner id.
    let usurper = with(claims.clone(), "repository_owner_id", json!("99"));
    let (code, json, _) = check(
        &s,
        &gh,
        &mint_with(&usurper, Key::B),
        "svc-deploy",
        NOW,
        &[],
    );
    assert_eq!(
        (code, json["reason"].as_str()),
        (1, Some("policy_denied")),
        "{json}"
    );

    // The runners-only GitLab config: from the runners' network, never from the sandbox.
    let runners = doc_config(&s, "runners-only");
    let gitlab = |project: &str| {
        let c = with(
            gitlab_claims("alice"),
            "iss",
            json!("https://gitlab.example.org"),
        );
        let c = with(c, "aud", json!("https://login.hpc.example.org"));
        let c = with(c, "namespace_path", json!("hpc"));
        let c = with(c, "namespace_id", json!("1234"));
        let c = with(c, "ref_protected", json!("true"));
        mint(&with(c, "project_path", json!(project)))
    };
    // Each case's exit code, decision and rule or reason: an `unavailable` (exit 2, no
    // reason, no rule) is neither an allow nor a deny.
    const GRANT: (i32, &str, Option<&str>) = (0, "allow", Some("hpc-from-runners"));
    const DENY: (i32, &str, Option<&str>) = (1, "deny", Some("policy_denied"));
    for (project, rhost, want) in [
        ("hpc/app", "10.20.4.5", GRANT),
        ("hpc/app", "2001:db8:20::5", GRANT),
        // An IPv6 zone (sshd writes link-local clients so) is dropped before parsing.
        ("hpc/app", "2001:db8:20::5%eth0", GRANT),
        ("hpc/app", "192.0.2.9", DENY),
        // A host name (sshd with UseDNS yes) is not an address: a grant's from fails.
        ("hpc/app", "runner-7.example.org", DENY),
        ("hpc/sandbox/try", "10.20.4.5", DENY),
    ] {
        let (code, json, _) = check(
            &s,
            &runners,
            &gitlab(project),
            "alice",
            NOW,
            &["--rhost", rhost],
        );
        let got = (
            code,
            json["decision"].as_str().unwrap_or("(none)"),
            if code == 0 {
                json["rule"].as_str()
            } else {
                json["reason"].as_str()
            },
        );
        assert_eq!(got, want, "{project} from {rhost}: {json}");
    }
    let (_, json, out) = check(
        &s,
        &runners,
        &gitlab("hpc/sandbox/try"),
        "alice",
        NOW,
        &["--rhost", "10.20.4.5"],
    );
    assert!(
        json.to_string()
            .contains("deny rule \\\"no-sandbox\\\" matches the token"),
        "{json}"
    );
    // The text trace says it in words, deny rules included.
    let text = cli::idtoken(&s)
        .args(["check", "--config"])
        .arg(&runners)
        .args([
            "--user",
            "alice",
            "--at",
            &NOW.to_string(),
            "--rhost",
            "192.0.2.9",
            "--token-file",
        ])
        .arg(s.token_file("t.jwt", &gitlab("hpc/app")))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("from: remote host \"192.0.2.9\" is not an address inside")
            && text.contains("deny rule, no match"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Issues 19.1, 19.3, 19.8: `config check` names what each deny rule depends on (claims the
/// issuer may leave out; `from` without an address), and warns about rules that do not say
/// what they seem to: `::/0` alone in a deny rule, a grant anchored on a renameable name or
/// not pinned to CI tokens. Warnings and notes leave the exit code 0; each warning has its
/// line.
#[test]
fn config_check_says_what_deny_rules_depend_on_and_warns() {
    let s = Sandbox::new("cfg-deny");
    let config = s.config(
        "",
        "[[rule]]\nname = \"hpc\"\nissuer = \"gitlab\"\n[rule.claims]\nproject_path = \"hpc/*\"\n\n\
         [[rule]]\nname = \"anchored\"\nissuer = \"gitlab\"\n[rule.claims]\nproject_id = \"42\"\njob_id = \"*\"\n\n\
         [[rule]]\nname = \"no-untrusted\"\ndeny = true\ngroups = [\"hpc/untrusted\"]\n\n\
         [[rule]]\nname = \"no-production\"\ndeny = true\nif_absent = \"skip\"\n[rule.claims]\nenvironment = \"production\"\n\n\
         [[rule]]\nname = \"not-from-outside\"\ndeny = true\nfrom = [\"::/0\"]\n",
    );
    let out = cli::idtoken(&s)
        .args(["config", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{said}");
    assert_eq!(out.status.code(), Some(0), "{said}");
    // The line of the rule's [[rule]] header.
    let line_of = |name: &str| {
        let text = std::fs::read_to_string(&config).unwrap();
        let at = text.find(&format!("name = \"{name}\"")).unwrap();
        text[..at].lines().count()
    };
    let path = config.display().to_string();
    for (want, rule, line) in [
        (
            "names its jobs only by names that can be renamed (project_path)",
            "hpc",
            line_of("hpc"),
        ),
        ("does not pin the token class", "hpc", line_of("hpc")),
        // Said at the `from` line: [[rule]], name, deny, from.
        (
            "from has ::/0, which holds for IPv6 clients only",
            "not-from-outside",
            line_of("not-from-outside") + 3,
        ),
    ] {
        let at = format!("warning: {path}:{line}: rule \"{rule}\"");
        assert!(
            said.lines().any(|l| l.starts_with(&at) && l.contains(want)),
            "{at} ... {want}:\n{said}"
        );
    }
    assert!(!said.contains("rule \"anchored\""), "{said}");
    for (rule, want) in [
        ("no-untrusted", "depends on claim groups_direct"),
        (
            "no-untrusted",
            "a token without it is refused (if_absent = \"deny\"",
        ),
        (
            "no-production",
            "a token without it is not refused by this rule (if_absent = \"skip\")",
        ),
        (
            "not-from-outside",
            "without a remote address (su, the console) or with a host name",
        ),
    ] {
        assert!(
            said.lines()
                .any(|l| l.starts_with(&format!("note: deny rule \"{rule}\"")) && l.contains(want)),
            "{rule}: {want}:\n{said}"
        );
    }
}
