//! The built pam_idtoken.so through the real libpam (pam_start_confdir), with test
//! accounts from NSS files and its syslog captured: return codes, part-by-part prompts,
//! PAM_AUTHTOK reuse, the environment, audit lines, and panic safety.

use idtoken_e2e::keys::{self, AUDIENCE, mint, mint_exact_len, with};
use idtoken_e2e::pam::{
    self, Drive, PAM_AUTH_ERR, PAM_AUTHINFO_UNAVAIL, PAM_PERM_DENIED, PAM_SUCCESS, PamHarness,
    parts,
};
use idtoken_e2e::require;
use idtoken_e2e::sandbox::set_mode;
use serde_json::json;

/// A harness with the standard config (key A, rule: own account) and the `test` service.
fn harness(tag: &str) -> Option<PamHarness> {
    if !pam::can_isolate() {
        return None;
    }
    let h = PamHarness::new(tag);
    h.sandbox.standard();
    h.module_only("test", "");
    Some(h)
}

/// A token for `user`, valid now (real time: the module reads the clock).
fn live_token(user: &str) -> String {
    mint(&live_claims(user))
}

fn live_claims(user: &str) -> serde_json::Value {
    let jti = format!("jti-{user}-{}-{}", keys::now(), std::process::id());
    keys::live_claims(user, &jti)
}

fn one(h: &PamHarness, user: &str, answer: &str) -> Drive {
    h.drive("test", user, &[Some(answer)], &[])
}

macro_rules! harness_or_skip {
    ($tag:expr) => {{
        require!(
            pam::can_isolate(),
            "the libpam tests need root (mount namespaces)"
        );
        harness($tag).unwrap()
    }};
}

#[test]
fn valid_token_logs_in_sets_environment_and_audits() {
    let h = harness_or_skip!("allow");
    let claims = live_claims("alice");
    let token = mint(&claims);
    let jti = format!("jti={}", claims["jti"].as_str().unwrap());
    let d = h.drive("test", "alice", &[Some(&token)], &["--rhost", "192.0.2.7"]);
    assert_eq!(d.rc, PAM_SUCCESS, "{d:?}");
    assert_eq!(
        d.setcred, PAM_SUCCESS,
        "setcred must succeed or sshd fails the login"
    );
    assert_eq!(d.prompts, vec!["ID token: "]);
    assert_eq!(
        d.env.get("IDTOKEN_PROJECT_PATH").and_then(|v| v.as_str()),
        Some("hpc/app")
    );
    assert_eq!(
        d.env.get("IDTOKEN_PIPELINE_ID").and_then(|v| v.as_str()),
        Some("5001")
    );
    assert_eq!(
        d.env.get("IDTOKEN_JOB_ID").and_then(|v| v.as_str()),
        Some("9001")
    );
    assert_eq!(
        d.env.get("IDTOKEN_ISSUER").and_then(|v| v.as_str()),
        Some("gitlab")
    );
    let audit = h.audit(1);
    assert_eq!(audit.len(), 1, "{audit:?}");
    let line = &audit[0];
    for part in [
        "decision=allow",
        "service=test",
        "account=alice",
        "issuer=gitlab",
        "user=alice",
        "project_path=hpc/app",
        "pipeline_id=5001",
        "job_id=9001",
        "rhost=192.0.2.7",
        "rule=own-account",
        &jti,
    ] {
        assert!(line.contains(part), "{part} missing in {line}");
    }
    assert!(
        line.contains("authpriv") || line.starts_with("<86>") || line.starts_with("<85>"),
        "facility authpriv: {line}"
    );
    assert_no_token_in_logs(&h, &token);
}

/// No line the module logged holds the token's signature or the start of its payload. The
/// module's lines must have arrived, or the check would pass on an empty log.
fn assert_no_token_in_logs(h: &PamHarness, token: &str) {
    let sig = token.rsplit('.').next().unwrap_or_default();
    let payload = token.split('.').nth(1).unwrap_or_default();
    let ours = h
        .syslog
        .wait_for("pam_idtoken(", 1, std::time::Duration::from_secs(2));
    assert!(
        !ours.is_empty(),
        "no line of the module was captured: {:?}",
        h.syslog.lines()
    );
    for l in h.syslog.lines() {
        assert!(
            !l.contains(sig) && !l.contains(&payload[..40.min(payload.len())]),
            "token text in a log line: {l}"
        );
    }
}

#[test]
fn every_denial_is_auth_err_with_its_reason_in_the_audit_line() {
    let h = harness_or_skip!("deny");
    let expired = mint(&with(live_claims("alice"), "exp", json!(1_000_000)));
    let wrong_aud = mint(&with(
        live_claims("alice"),
        "aud",
        json!("https://elsewhere"),
    ));
    let forged = keys::mint_with(&live_claims("alice"), keys::Key::B);
    let cases: [(&str, &str, String); 4] = [
        ("expired", "alice", expired),
        ("wrong_audience", "alice", wrong_aud),
        ("user_mismatch", "bob", live_token("alice")),
        ("unknown_key", "alice", forged),
    ];
    for (i, (reason, user, token)) in cases.iter().enumerate() {
        let d = one(&h, user, token);
        assert_eq!(d.rc, PAM_AUTH_ERR, "{reason}: {d:?}");
        assert!(d.env.is_empty(), "no environment on denial");
        assert_eq!(
            d.messages,
            vec!["ID token refused."],
            "one generic line without explain"
        );
        let audit = h.audit(i + 1);
        let line = audit.last().cloned().unwrap_or_default();
        assert!(
            line.contains("decision=deny") && line.contains(&format!("reason={reason}")),
            "{line}"
        );
        assert_no_token_in_logs(&h, token);
    }
    assert_eq!(h.audit(4).len(), 4, "exactly one audit line per attempt");
}

#[test]
fn explain_tells_the_client_the_reason() {
    let h = harness_or_skip!("explain");
    h.sandbox
        .config("explain = true", "[[rule]]\nname = \"own-account\"\n");
    let expired = mint(&with(live_claims("alice"), "exp", json!(1_000_000)));
    let d = one(&h, "alice", &expired);
    assert_eq!(d.rc, PAM_AUTH_ERR);
    assert_eq!(d.messages.len(), 1, "{d:?}");
    assert!(
        d.messages[0].contains("expired") && d.messages[0].contains("Reason"),
        "{:?}",
        d.messages
    );
    assert_no_token_in_logs(&h, &expired);
}

#[test]
fn config_and_key_cache_problems_are_authinfo_unavail() {
    let h = harness_or_skip!("unavail");
    let token = live_token("alice");
    let config = h.sandbox.path("idtoken.toml");
    let cache = h.sandbox.path("gitlab.jwks.json");

    set_mode(&config, 0o666);
    assert_eq!(
        one(&h, "alice", &token).rc,
        PAM_AUTHINFO_UNAVAIL,
        "world-writable config"
    );
    set_mode(&config, 0o644);

    set_mode(&cache, 0o646);
    assert_eq!(
        one(&h, "alice", &token).rc,
        PAM_AUTHINFO_UNAVAIL,
        "world-writable key cache"
    );
    set_mode(&cache, 0o644);

    std::fs::write(&cache, "{\"keys\": []}").unwrap();
    assert_eq!(
        one(&h, "alice", &token).rc,
        PAM_AUTHINFO_UNAVAIL,
        "no usable key"
    );
    h.sandbox.key_cache(&[keys::Key::A]);
    assert_eq!(one(&h, "alice", &token).rc, PAM_SUCCESS, "restored");

    std::fs::rename(&config, h.sandbox.path("moved.toml")).unwrap();
    let d = one(&h, "alice", &token);
    assert_eq!(d.rc, PAM_AUTHINFO_UNAVAIL, "missing config");
    assert!(
        d.prompts.is_empty(),
        "no token is asked for when nothing could check it"
    );
    let errors = h
        .syslog
        .wait_for("config unusable", 1, std::time::Duration::from_secs(2));
    assert!(
        errors
            .iter()
            .any(|l| l.contains("moved.toml") || l.contains("idtoken.toml")),
        "{errors:?}"
    );

    std::fs::rename(h.sandbox.path("moved.toml"), &config).unwrap();
    let d = h.drive("test", "alice", &[None], &[]);
    assert_eq!(
        d.rc,
        pam::PAM_CONV_ERR,
        "a client that gives no answer: {d:?}"
    );

    h.module_only("badarg", "bogus_option");
    assert_eq!(
        h.drive("badarg", "alice", &[Some(&token)], &[]).rc,
        PAM_AUTHINFO_UNAVAIL
    );
    assert!(
        !h.syslog
            .wait_for(
                "unknown module argument",
                1,
                std::time::Duration::from_secs(2)
            )
            .is_empty()
    );
    assert_no_token_in_logs(&h, &token);
}

#[test]
fn a_password_is_ignored_and_reaches_pam_unix() {
    let h = harness_or_skip!("ignore");
    // Alone in the stack, PAM_IGNORE leaves libpam with no verdict: PAM_PERM_DENIED.
    let d = one(&h, "alice", idtoken_e2e::accounts::PASSWORD);
    assert_eq!(d.rc, PAM_PERM_DENIED, "{d:?}");
    assert!(
        h.audit(1).is_empty() || h.audit(1).iter().all(|l| !l.contains("decision=")),
        "a password is not a decision"
    );
    // In the documented stack, the password goes on to pam_unix and logs in...
    let config = h.sandbox.path("idtoken.toml");
    h.service(
        "stack",
        &format!(
            "auth [success=done ignore=ignore default=die] MODULE config={}\nauth required pam_unix.so try_first_pass\naccount required pam_permit.so\n",
            config.display()
        ),
    );
    let d = h.drive(
        "stack",
        "alice",
        &[Some(idtoken_e2e::accounts::PASSWORD)],
        &[],
    );
    assert_eq!(d.rc, PAM_SUCCESS, "password through pam_unix: {d:?}");
    assert_eq!(
        d.prompts,
        vec!["ID token: "],
        "pam_unix reused the answer, no second prompt"
    );
    let d = h.drive(
        "stack",
        "alice",
        &[Some("wrong-password"), Some("again")],
        &[],
    );
    assert_eq!(d.rc, PAM_AUTH_ERR);
    // ...while a bad token stops the stack: it never becomes a password attempt.
    let expired = mint(&with(live_claims("alice"), "exp", json!(1_000_000)));
    let d = h.drive(
        "stack",
        "alice",
        &[Some(&expired), Some(idtoken_e2e::accounts::PASSWORD)],
        &[],
    );
    assert_eq!(d.rc, PAM_AUTH_ERR, "{d:?}");
    assert_eq!(
        d.prompts.len(),
        1,
        "pam_unix must not be reached: {:?}",
        d.prompts
    );
    assert_no_token_in_logs(&h, &expired);
}

#[test]
fn long_tokens_arrive_in_parts() {
    let h = harness_or_skip!("parts");
    // Small claims, so that even a 999-character token is possible.
    let full = live_claims("alice");
    let claims = json!({
        "iss": keys::ISSUER, "aud": AUDIENCE, "iat": full["iat"], "nbf": full["nbf"],
        "exp": full["exp"], "user_login": "alice"
    });
    for (len, expected_prompts) in [
        (2000usize, 3usize),
        (2500, 3),
        (1000, 2),
        (1500, 2),
        (999, 1),
    ] {
        let token = mint_exact_len(
            &with(claims.clone(), "jti", json!(format!("parts-{len}"))),
            len,
        );
        let mut answers: Vec<String> = parts(&token);
        if len % 1000 == 0 {
            answers.push(String::new()); // the client has no more: an empty part ends it
        }
        let refs: Vec<Option<&str>> = answers.iter().map(|a| Some(a.as_str())).collect();
        let d = h.drive("test", "alice", &refs, &[]);
        assert_eq!(d.rc, PAM_SUCCESS, "{len}: {d:?}");
        assert_eq!(d.prompts.len(), expected_prompts, "{len}: {:?}", d.prompts);
        assert_eq!(d.prompts[0], "ID token: ");
        if expected_prompts > 1 {
            assert_eq!(d.prompts[1], "ID token (part 2): ");
        }
        if expected_prompts > 2 {
            assert_eq!(d.prompts[2], "ID token (part 3): ");
        }
        assert_no_token_in_logs(&h, &token);
    }
    // A long answer in one piece (su, non-OpenSSH clients) is taken whole.
    let token = mint_exact_len(&with(claims.clone(), "jti", json!("whole")), 2300);
    let d = one(&h, "alice", &token);
    assert_eq!(d.rc, PAM_SUCCESS);
    assert_eq!(d.prompts.len(), 1);
    assert_no_token_in_logs(&h, &token);
}

#[test]
fn a_token_cut_at_1023_characters_is_refused_with_a_hint() {
    let h = harness_or_skip!("cut");
    let token = mint_exact_len(&live_claims("alice"), 1600);
    let cut = &token[..1023];
    // The client cannot answer part 2 (sshpass answers one prompt only).
    let d = h.drive("test", "alice", &[Some(cut), None], &[]);
    assert_eq!(d.rc, PAM_AUTH_ERR, "{d:?}");
    assert_eq!(d.prompts, vec!["ID token: ", "ID token (part 2): "]);
    let hint = h.syslog.wait_for(
        "exactly 1023 characters",
        1,
        std::time::Duration::from_secs(2),
    );
    assert_eq!(hint.len(), 1, "{:?}", h.syslog.lines());
    assert_no_token_in_logs(&h, &token);
}

#[test]
fn pam_authtok_from_an_earlier_module_is_part_one() {
    let h = harness_or_skip!("authtok");
    // pam_unix first (optional): it prompts "Password: ", sets PAM_AUTHTOK and fails;
    // the module must then take that answer as part 1 instead of prompting again.
    let config = h.sandbox.path("idtoken.toml");
    h.service(
        "after-unix",
        &format!(
            "auth optional pam_unix.so
auth required MODULE config={}
account required pam_permit.so
",
            config.display()
        ),
    );
    let token = live_token("alice");
    let d = h.drive("after-unix", "alice", &[Some(&token)], &[]);
    assert_eq!(d.rc, PAM_SUCCESS, "{d:?}");
    assert_eq!(
        d.prompts,
        vec!["Password: "],
        "no second prompt when PAM_AUTHTOK holds the token"
    );
    let long = mint_exact_len(
        &with(live_claims("alice"), "jti", json!("long-authtok")),
        1800,
    );
    let p = parts(&long);
    let d = h.drive("after-unix", "alice", &[Some(&p[0]), Some(&p[1])], &[]);
    assert_eq!(d.rc, PAM_SUCCESS, "{d:?}");
    assert_eq!(d.prompts, vec!["Password: ", "ID token (part 2): "]);
    assert_no_token_in_logs(&h, &token);
    assert_no_token_in_logs(&h, &long);
}

#[test]
fn debug_logs_the_trace_but_never_the_token() {
    let h = harness_or_skip!("debug");
    h.module_only("dbg", "debug");
    let token = live_token("bob");
    let d = h.drive("dbg", "alice", &[Some(&token)], &[]);
    assert_eq!(d.rc, PAM_AUTH_ERR);
    let steps = h
        .syslog
        .wait_for("step ", 5, std::time::Duration::from_secs(2));
    assert!(steps.len() >= 5, "{:?}", h.syslog.lines());
    assert_no_token_in_logs(&h, &token);
}

#[test]
fn control_characters_in_claims_never_reach_the_log() {
    let h = harness_or_skip!("ctrl");
    let claims = with(
        live_claims("alice"),
        "project_path",
        json!("hpc/app\nJan  1 00:00:00 host sshd: Accepted root"),
    );
    let token = mint(&claims);
    let d = one(&h, "alice", &token);
    assert_eq!(d.rc, PAM_SUCCESS);
    let audit = h.audit(1);
    assert_eq!(audit.len(), 1);
    assert!(!audit[0].contains('\n'), "{:?}", audit[0]);
    assert!(
        audit[0].contains("project_path=\"hpc/appJan  1"),
        "{}",
        audit[0]
    );
    assert!(
        !d.env
            .get("IDTOKEN_PROJECT_PATH")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .contains('\n')
    );
    assert_no_token_in_logs(&h, &token);
}

#[test]
fn an_injected_panic_denies_and_is_logged() {
    require!(
        pam::can_isolate(),
        "the libpam tests need root (mount namespaces)"
    );
    let module = pam::panic_module_path();
    let h = harness("panic").unwrap();
    let config = h.sandbox.path("idtoken.toml");
    h.service_with(
        "panic",
        &format!(
            "auth required MODULE config={} test_panic\n",
            config.display()
        ),
        &module,
    );
    let token = live_token("alice");
    let d = h.drive("panic", "alice", &[Some(&token)], &[]);
    assert_eq!(d.rc, PAM_AUTH_ERR, "a panic must deny: {d:?}");
    // The module's own line (every line's prefix names the service `panic`, so the word
    // alone would prove nothing).
    let caught = h.syslog.wait_for(
        "internal error (panic) caught at the module boundary; the request is denied",
        1,
        std::time::Duration::from_secs(2),
    );
    assert_eq!(caught.len(), 1, "{:?}", h.syslog.lines());
    assert!(caught[0].contains("pam_idtoken(panic:auth)"), "{caught:?}");
    assert_no_token_in_logs(&h, &token);
    // The same module without the argument works: the feature adds nothing else.
    h.service_with(
        "nopanic",
        &format!("auth required MODULE config={}\n", config.display()),
        &module,
    );
    assert_eq!(
        h.drive("nopanic", "alice", &[Some(&live_token("alice"))], &[])
            .rc,
        PAM_SUCCESS
    );
    let _ = AUDIENCE;
}

/// Security review 2, finding 1: with the Debian profile enabled the module sits in
/// common-auth, which sudo includes too, and a sudoer's CI token pasted at sudo's prompt was
/// a root login. Through the real libpam, with the stack pam-auth-update writes and a config
/// that leaves `services` at its default (sshd, su): sudo keeps pam_unix's own `Password: `
/// prompt (the module never prompts), a password works there, a token does not, and no
/// decision is logged; the same stack as `sshd` asks for and accepts the token.
#[test]
fn sudo_in_the_debian_profile_stack_never_sees_the_module() {
    require!(
        pam::can_isolate(),
        "the libpam tests need root (mount namespaces)"
    );
    let h = PamHarness::new("sudo");
    h.sandbox.key_cache(&[keys::Key::A]);
    // "services" named in a comment only: the sandbox then leaves the default in force.
    let config = h.sandbox.config(
        "# services: not set, so the default [\"sshd\", \"su\"] applies",
        "[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n",
    );
    let common_auth = format!(
        "auth [success=2 auth_err=die default=ignore] MODULE config={}\n\
         auth [success=1 default=ignore] pam_unix.so nullok try_first_pass\n\
         auth requisite pam_deny.so\n\
         auth required pam_permit.so\n\
         account required pam_permit.so\n",
        config.display()
    );
    h.service("sudo", &common_auth)
        .service("sshd", &common_auth);
    let token = live_token("alice");

    let d = h.drive(
        "sudo",
        "alice",
        &[Some(idtoken_e2e::accounts::PASSWORD)],
        &[],
    );
    assert_eq!(d.rc, PAM_SUCCESS, "a password at sudo: {d:?}");
    assert_eq!(
        d.prompts,
        vec!["Password: "],
        "pam_unix asks, the module never"
    );

    let d = h.drive("sudo", "alice", &[Some(&token)], &[]);
    assert_eq!(d.rc, PAM_AUTH_ERR, "a token at sudo must not log in: {d:?}");
    assert_eq!(
        d.prompts,
        vec!["Password: "],
        "the module never prompts at sudo"
    );
    assert!(
        h.syslog
            .wait_for("decision=", 1, std::time::Duration::from_secs(1))
            .is_empty(),
        "the module made no decision for sudo"
    );

    let d = h.drive("sshd", "alice", &[Some(&token)], &[]);
    assert_eq!(
        d.rc, PAM_SUCCESS,
        "the same stack as sshd takes the token: {d:?}"
    );
    assert_eq!(d.prompts, vec!["ID token: "]);
    assert!(
        h.audit(1)
            .iter()
            .any(|l| l.contains("decision=allow") && l.contains("service=sshd"))
    );
    assert_no_token_in_logs(&h, &token);
}

/// SPEC v2 `session_ends_at_exp`: through the real libpam, a later session module (a probe
/// reading the item as pam_systemd does) finds `systemd.runtime_max_sec` set to the seconds
/// until the token's exp when the setting is on, and nothing when it is off.
#[test]
fn session_ends_at_exp_hands_pam_systemd_the_seconds_left() {
    require!(
        pam::can_isolate(),
        "the libpam tests need root (mount namespaces)"
    );
    let h = PamHarness::new("session-exp");
    h.sandbox.key_cache(&[keys::Key::A]);
    let probe = h.session_probe();
    let config = h.sandbox.path("idtoken.toml");
    h.service(
        "test",
        &format!(
            "auth required MODULE config={}\naccount required pam_permit.so\nsession required {}\n",
            config.display(),
            probe.display()
        ),
    );
    let rule = "[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n";
    for (setting, want) in [("session_ends_at_exp = true", true), ("", false)] {
        h.sandbox.config(setting, rule);
        let now = keys::now();
        let claims = with(live_claims("alice"), "exp", json!(now + 600));
        let token = mint(&claims);
        let d = h.drive("test", "alice", &[Some(&token)], &["--open-session"]);
        assert_eq!(d.rc, PAM_SUCCESS, "{d:?}");
        let seen: Vec<&String> = d
            .messages
            .iter()
            .filter(|m| m.starts_with("probe: "))
            .collect();
        assert_eq!(
            seen.len(),
            1,
            "the probe ran once in the session phase: {d:?}"
        );
        if want {
            let secs: i64 = seen[0]
                .strip_prefix("probe: systemd.runtime_max_sec=")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{seen:?}"));
            let expected = now + 600 - keys::now();
            assert!(
                (secs - expected).abs() <= 2,
                "{secs} s, expected about {expected}"
            );
        } else {
            assert_eq!(seen[0], "probe: systemd.runtime_max_sec unset");
        }
        // IDTOKEN_USER and IDTOKEN_EXP (SPEC v2) in the PAM environment.
        assert_eq!(
            d.env.get("IDTOKEN_USER").and_then(|v| v.as_str()),
            Some("alice")
        );
        assert_eq!(
            d.env.get("IDTOKEN_EXP").and_then(|v| v.as_str()),
            Some((now + 600).to_string().as_str())
        );
        assert_no_token_in_logs(&h, &token);
    }
}
