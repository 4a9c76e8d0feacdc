//! A real OpenSSH sshd on 127.0.0.1 with pam_idtoken.so in its stack, and the stock `ssh`
//! client: tokens in parts through SSH_ASKPASS, short tokens through sshpass, refusals,
//! fall-through of a plain password, and the audit lines in a captured syslog.
//!
//! `IDTOKEN_TEST_MODULE=/path/pam_idtoken.so` runs the same tests against an installed
//! module (the packaging test does).

use std::process::Output;
use std::time::Duration;

use idtoken_e2e::accounts::PASSWORD;
use idtoken_e2e::keys::{self, mint, mint_exact_len, now, with};
use idtoken_e2e::pam::PamHarness;
use idtoken_e2e::require;
use idtoken_e2e::sshd::{self, Sshd};
use serde_json::json;

const REMOTE: &str = "echo LOGIN-OK; id -un; env | grep ^IDTOKEN_ | sort";

/// The documented stack: a token logs in or is refused; anything else goes to pam_unix.
const STACK: &str = "auth [success=done ignore=ignore default=die] MODULE config=CONFIG\nauth required pam_unix.so try_first_pass";

fn claims(user: &str, tag: &str) -> serde_json::Value {
    keys::live_claims(user, &format!("ssh-{tag}-{}-{}", now(), std::process::id()))
}

/// Claims small enough for a token under 1000 characters (one part).
fn short_claims(user: &str, tag: &str) -> serde_json::Value {
    let c = claims(user, tag);
    json!({
        "iss": c["iss"], "aud": c["aud"], "iat": c["iat"], "nbf": c["nbf"], "exp": c["exp"], "jti": c["jti"],
        "user_login": user, "project_path": "hpc/app", "pipeline_id": "5001", "job_id": "9001"
    })
}

fn start(tag: &str, defaults: &str) -> Sshd {
    let pam = PamHarness::new(tag);
    pam.sandbox.key_cache(&[keys::Key::A]);
    pam.sandbox.config(
        defaults,
        "[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n",
    );
    Sshd::start(pam, STACK)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_logged_in(o: &Output, sshd: &Sshd, user: &str) {
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("LOGIN-OK") && out.contains(&format!("\n{user}\n")),
        "login failed: {}\n{}\nsshd log:\n{}",
        o.status,
        text(o),
        sshd.sshd_log()
    );
}

fn assert_refused(o: &Output) {
    assert!(
        !o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("LOGIN-OK"),
        "{}",
        text(o)
    );
}

/// Waits for the n-th audit line and returns it.
fn nth_audit(s: &Sshd, n: usize) -> String {
    let lines = s
        .pam
        .syslog
        .wait_for("decision=", n, Duration::from_secs(5));
    assert_eq!(lines.len(), n, "audit lines: {lines:?}");
    lines.last().cloned().unwrap_or_default()
}

fn assert_no_token(s: &Sshd, token: &str) {
    let sig = token.rsplit('.').next().unwrap_or_default();
    for l in s.pam.syslog.lines() {
        assert!(!l.contains(sig), "token in syslog: {l}");
    }
    assert!(!s.sshd_log().contains(sig), "token in the sshd log");
}

#[test]
fn ssh_logins_with_tokens_and_refusals() {
    require!(
        sshd::available().is_ok(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    require!(
        sshd::which("sshpass").is_some(),
        "sshpass is missing (apt-get install sshpass)"
    );
    let s = start("ssh", "");

    // A ~2 KB token through SSH_ASKPASS in parts.
    let long = mint_exact_len(&claims("alice", "long"), 2100);
    let o = s.login_with_askpass_in_parts("alice", &long, REMOTE);
    assert_logged_in(&o, &s, "alice");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("IDTOKEN_PROJECT_PATH=hpc/app") && out.contains("IDTOKEN_JOB_ID=9001"),
        "{out}"
    );
    let line = nth_audit(&s, 1);
    assert!(
        line.contains("decision=allow")
            && line.contains("service=sshd")
            && line.contains("rhost=127.0.0.1"),
        "{line}"
    );

    // The same through docs/ci.md's POSIX sh askpass (CI images without idtoken).
    let long2 = mint_exact_len(&claims("alice", "long-sh"), 2600);
    assert_logged_in(
        &s.login_with_sh_askpass("alice", &long2, REMOTE),
        &s,
        "alice",
    );
    assert!(nth_audit(&s, 2).contains("decision=allow"));

    // A short token through sshpass.
    let short = mint(&short_claims("alice", "short"));
    assert!(short.len() < 1000);
    assert_logged_in(&s.login_with_sshpass("alice", &short, REMOTE), &s, "alice");
    assert!(nth_audit(&s, 3).contains("decision=allow"));

    // Refusals, each with its reason.
    let o = s.login_with_askpass(
        "bob",
        &mint_exact_len(&claims("alice", "wrong-account"), 1900),
        REMOTE,
    );
    assert_refused(&o);
    assert!(nth_audit(&s, 4).contains("reason=user_mismatch"));
    let expired = mint(&with(
        short_claims("alice", "expired"),
        "exp",
        json!(now() - 3600),
    ));
    assert_refused(&s.login_with_sshpass("alice", &expired, REMOTE));
    assert!(nth_audit(&s, 5).contains("reason=expired"));
    let wrong_aud = mint_exact_len(
        &with(
            claims("alice", "aud"),
            "aud",
            json!("https://elsewhere.example"),
        ),
        1500,
    );
    assert_refused(&s.login_with_askpass("alice", &wrong_aud, REMOTE));
    assert!(nth_audit(&s, 6).contains("reason=wrong_audience"));

    // A 1.6 KB token through sshpass: ssh cuts it to 1023 and cannot answer part 2. sshpass
    // hangs up at that prompt and sshd ends the PAM process, so the module's record of the
    // attempt is the hint it logs on seeing the 1023-character answer.
    let cut = mint_exact_len(&claims("alice", "cut"), 1600);
    assert_refused(&s.login_with_sshpass("alice", &cut, REMOTE));
    let hint = s
        .pam
        .syslog
        .wait_for("exactly 1023 characters", 1, Duration::from_secs(5));
    assert_eq!(hint.len(), 1, "{:?}", s.pam.syslog.lines());
    std::thread::sleep(Duration::from_millis(300));
    // Exactly one audit line per decided attempt, in the order of the attempts, each naming
    // its own token's jti. The cut token may add one deny line of its own, or none when
    // sshd ends the PAM process at the unanswered prompt first.
    let audit = s.pam.syslog.audit_lines();
    let tags: Vec<String> = audit.iter().map(|l| jti_tag(l)).collect();
    let decided = [
        "long",
        "long-sh",
        "short",
        "wrong-account",
        "expired",
        "aud",
    ];
    assert!(
        tags.len() >= decided.len() && tags[..decided.len()] == decided,
        "one audit line per attempt, in order: {tags:?}\n{audit:?}"
    );
    let after = &audit[decided.len()..];
    assert!(
        after.is_empty()
            || (after.len() == 1
                && after[0].contains("decision=deny")
                && !decided.contains(&tags[decided.len()].as_str())),
        "after the six decided attempts, at most one deny for the cut token: {after:?}"
    );

    for t in [&long, &long2, &short, &expired, &wrong_aud, &cut] {
        assert_no_token(&s, t);
    }
}

/// The tag of the test token an audit line names (`jti=ssh-TAG-TIME-PID`), or the line's
/// jti field as it is when it is not one of ours (`-` when the token had none).
fn jti_tag(line: &str) -> String {
    let jti = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("jti="))
        .unwrap_or("<no jti field>");
    let mut parts = jti.rsplitn(3, '-');
    let (pid, time, rest) = (parts.next(), parts.next(), parts.next());
    match (pid, time, rest.and_then(|r| r.strip_prefix("ssh-"))) {
        (Some(p), Some(t), Some(tag))
            if p.chars().all(|c| c.is_ascii_digit()) && t.chars().all(|c| c.is_ascii_digit()) =>
        {
            tag.to_string()
        }
        _ => jti.to_string(),
    }
}

#[test]
fn a_password_falls_through_to_pam_unix_but_a_bad_token_does_not() {
    require!(
        sshd::available().is_ok(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    require!(sshd::which("sshpass").is_some(), "sshpass is missing");
    let s = start("fallthrough", "");
    assert_logged_in(
        &s.login_with_sshpass("alice", PASSWORD, REMOTE),
        &s,
        "alice",
    );
    assert_refused(&s.login_with_sshpass("alice", "not-the-password", REMOTE));
    // A bad token ends the stack: pam_unix never sees it (one audit line, no unix failure).
    let forged = keys::mint_with(&short_claims("alice", "forged"), keys::Key::B);
    assert_refused(&s.login_with_sshpass("alice", &forged, REMOTE));
    let line = nth_audit(&s, 1);
    assert!(line.contains("reason=unknown_key"), "{line}");
    let unix_failures = s
        .pam
        .syslog
        .lines()
        .iter()
        .filter(|l| l.contains("pam_unix(sshd:auth): authentication failure"))
        .count();
    assert_eq!(
        unix_failures,
        1,
        "only the wrong password reached pam_unix: {:?}",
        s.pam.syslog.lines()
    );
}

#[test]
fn a_missing_config_refuses_even_the_right_password() {
    require!(
        sshd::available().is_ok(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    require!(sshd::which("sshpass").is_some(), "sshpass is missing");
    let s = start("noconfig", "");
    std::fs::remove_file(s.pam.sandbox.path("idtoken.toml")).unwrap();
    assert_refused(&s.login_with_askpass("alice", &mint(&claims("alice", "noconfig")), REMOTE));
    assert_refused(&s.login_with_sshpass("alice", PASSWORD, REMOTE));
    let errors = s
        .pam
        .syslog
        .wait_for("config unusable", 1, Duration::from_secs(5));
    assert!(!errors.is_empty(), "{:?}", s.pam.syslog.lines());
}

#[test]
fn explain_shows_the_refused_client_why() {
    require!(
        sshd::available().is_ok(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    let s = start("explain", "explain = true");
    let expired = mint_exact_len(
        &with(claims("alice", "explain"), "exp", json!(now() - 3600)),
        1300,
    );
    let o = s.login_with_askpass("alice", &expired, REMOTE);
    assert_refused(&o);
    assert!(
        text(&o).contains("Reason: expired"),
        "the client is told the reason: {}",
        text(&o)
    );
    // Without explain, one generic line and no reason.
    let s = start("no-explain", "");
    let o = s.login_with_askpass("alice", &expired, REMOTE);
    assert_refused(&o);
    assert!(
        text(&o).contains("ID token refused.") && !text(&o).contains("expired"),
        "{}",
        text(&o)
    );
}

/// SPEC v2 through a real sshd and the stock client: sshd sets PAM_RHOST to the client's
/// address (127.0.0.1 here), so a `from = ["127.0.0.0/8"]` rule lets the token in, a
/// `from = ["10.0.0.0/8"]` rule refuses it (policy_denied), and a matching deny rule
/// refuses it beside a granting rule; each attempt leaves its audit line with the rhost.
#[test]
fn source_networks_and_deny_rules_through_sshd() {
    require!(
        sshd::available().is_ok(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    require!(
        sshd::which("sshpass").is_some(),
        "sshpass is missing (apt-get install sshpass)"
    );
    for (tag, rules, allowed, reason) in [
        (
            "from-loopback",
            "[[rule]]\nname = \"runners\"\nissuer = \"gitlab\"\nfrom = [\"127.0.0.0/8\"]\n",
            true,
            "-",
        ),
        (
            "from-elsewhere",
            "[[rule]]\nname = \"runners\"\nissuer = \"gitlab\"\nfrom = [\"10.0.0.0/8\"]\n",
            false,
            "policy_denied",
        ),
        (
            "deny-rule",
            "[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n\
             [[rule]]\nname = \"no-hpc-app\"\nissuer = \"gitlab\"\ndeny = true\n[rule.claims]\nproject_path = \"hpc/app\"\n",
            false,
            "policy_denied",
        ),
    ] {
        let pam = PamHarness::new(tag);
        pam.sandbox.key_cache(&[keys::Key::A]);
        pam.sandbox.config("", rules);
        let s = Sshd::start(pam, STACK);
        let token = mint(&short_claims("alice", tag));
        let o = s.login_with_sshpass("alice", &token, REMOTE);
        if allowed {
            assert_logged_in(&o, &s, "alice");
        } else {
            assert_refused(&o);
        }
        let line = nth_audit(&s, 1);
        assert!(
            line.contains(if allowed {
                "decision=allow"
            } else {
                "decision=deny"
            }) && line.contains(&format!("reason={reason}"))
                && line.contains("rhost=127.0.0.1"),
            "{tag}: {line}"
        );
        assert_no_token(&s, &token);
    }
}

/// Security review 3, finding 3, through the real sshd: with `UseDNS yes` sshd sets
/// PAM_RHOST to the client's host name (`localhost` for 127.0.0.1), which a network cannot
/// contain. A deny rule's `from` then holds (SPEC v3: fail closed; before, the login was
/// allowed), and a granting rule's `from` never does; with `UseDNS no` the address decides.
#[test]
fn a_host_name_rhost_makes_a_deny_rules_from_hold_and_a_grants_fail() {
    require!(
        sshd::available().is_ok(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    require!(
        sshd::which("sshpass").is_some(),
        "sshpass is missing (apt-get install sshpass)"
    );
    let grant_and_fence = "[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n\
                           [[rule]]\nname = \"lab\"\ndeny = true\nfrom = [\"10.0.0.0/8\"]\n";
    let loopback_grant =
        "[[rule]]\nname = \"runners\"\nissuer = \"gitlab\"\nfrom = [\"127.0.0.0/8\"]\n";
    for (tag, rules, use_dns, allowed) in [
        ("dns-no-deny-from", grant_and_fence, "no", true),
        ("dns-yes-deny-from", grant_and_fence, "yes", false),
        ("dns-yes-grant-from", loopback_grant, "yes", false),
    ] {
        let pam = PamHarness::new(tag);
        pam.sandbox.key_cache(&[keys::Key::A]);
        pam.sandbox.config("", rules);
        let s = Sshd::start_with_options(pam, STACK, &[&format!("UseDNS {use_dns}")]);
        let token = mint(&short_claims("alice", tag));
        let o = s.login_with_sshpass("alice", &token, REMOTE);
        let line = nth_audit(&s, 1);
        if allowed {
            assert_logged_in(&o, &s, "alice");
            assert!(line.contains("rhost=127.0.0.1"), "{tag}: {line}");
        } else {
            assert_refused(&o);
            // The name sshd found for 127.0.0.1 (the test asserts it is not an address, so
            // a host whose resolver has no name for it fails here, not silently).
            let rhost = line
                .split(' ')
                .find_map(|f| f.strip_prefix("rhost="))
                .unwrap_or_default();
            assert!(
                rhost.parse::<std::net::IpAddr>().is_err() && rhost != "-",
                "{tag}: UseDNS yes should give a host name: {line}"
            );
            assert!(
                line.contains("decision=deny") && line.contains("reason=policy_denied"),
                "{tag}: {line}"
            );
        }
        assert_no_token(&s, &token);
    }
}

/// Issue 20 (SPEC v3), through a real sshd's two processes: authentication runs in a forked
/// child; setcred and the session phase run in the parent, which gets back only the PAM
/// environment.
/// - The setcred walk goes on past the module, for token and password logins alike: the
///   pam_env line after it runs, and what it sets reaches the session. Before, the module's
///   PAM_SUCCESS under `success=done` ended the walk there: the variable was missing.
/// - With `session_ends_at_exp`, the item pam_systemd reads reaches the session phase, set
///   there from IDTOKEN_EXP by the module's session line. Before, the item was set only in
///   the authenticating child and a session-phase probe read it unset. Without the setting,
///   and for a password login, it stays unset.
#[test]
fn setcred_goes_on_past_the_module_and_the_session_phase_gets_the_runtime_limit() {
    require!(sshd::available().is_ok(), "{:?}", sshd::available().err());
    require!(sshd::which("sshpass").is_some(), "sshpass is missing");
    let pam = PamHarness::new("seams");
    pam.sandbox.key_cache(&[keys::Key::A]);
    let probe = pam.session_probe();
    let env_conf = pam.sandbox.write(
        "pam_env.conf",
        b"IDTOKEN_TEST_FROM_PAM_ENV DEFAULT=reached\n",
    );
    let log = pam.sandbox.path("probe.log");
    let stack = format!(
        "auth [success=done ignore=ignore default=die] MODULE config=CONFIG\n\
         auth optional pam_env.so readenv=0 user_readenv=0 conffile={env}\n\
         auth optional {probe} out={log}\n\
         auth required pam_unix.so try_first_pass\n\
         account required pam_permit.so\n\
         session optional MODULE config=CONFIG\n\
         session optional {probe} out={log}\n\
         password required pam_deny.so\n",
        env = env_conf.display(),
        probe = probe.display(),
        log = log.display()
    );
    // The rule's session limits reach the session phase too (SPEC v3).
    let rule = "[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\nmemory_max = \"2G\"\ntasks_max = 64\n";
    pam.sandbox.config("session_ends_at_exp = true", rule);
    let records = pam.run.clone().unwrap_or_default().join("idtoken/sessions");
    let s = Sshd::start_with_stack(pam, &stack, &[]);
    let remote = "echo LOGIN-OK; id -un; echo ENV=$IDTOKEN_TEST_FROM_PAM_ENV";
    let probe_lines = |phase: &str| -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(&format!("phase={phase} ")))
            .map(str::to_string)
            .collect()
    };

    for (setting, limited) in [("session_ends_at_exp = true", true), ("", false)] {
        s.pam.sandbox.config(setting, rule);
        let _ = std::fs::remove_file(&log);
        let c = claims("alice", &format!("seams-{limited}"));
        let exp = c["exp"].as_i64().unwrap();
        let o = s.login_with_askpass("alice", &mint(&c), remote);
        assert_logged_in(&o, &s, "alice");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("ENV=reached\n"),
            "pam_env after the module ran: {out}"
        );
        let setcred = probe_lines("setcred");
        // sshd calls setcred twice: to establish credentials before the session opens, and
        // to reinitialize them in the session's process after.
        assert!(
            !setcred.is_empty(),
            "setcred went on past the module: {setcred:?}"
        );
        let session = probe_lines("open_session");
        eprintln!("{setting:?}: {setcred:?} {session:?}");
        assert_eq!(session.len(), 1, "{session:?}");
        assert!(
            session[0].ends_with(&format!(" memory_max=2G tasks_max=64 IDTOKEN_EXP={exp}")),
            "{session:?}"
        );
        // The session closed (sshd closes it after the client has gone): its record goes.
        let left = || -> Vec<std::ffi::OsString> {
            std::fs::read_dir(&records)
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default()
        };
        let start = std::time::Instant::now();
        while !left().is_empty() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(left().is_empty(), "records left after logout: {:?}", left());
        let seconds = session[0]
            .split(' ')
            .find_map(|f| f.strip_prefix("runtime_max_sec="))
            .unwrap_or_default();
        if limited {
            let seconds: i64 = seconds.parse().unwrap_or_else(|_| panic!("{session:?}"));
            let left = exp - now();
            assert!(
                (left - 5..=left + 1).contains(&seconds),
                "{seconds} s, {left} s left"
            );
        } else {
            assert_eq!(seconds, "unset", "{session:?}");
        }
    }

    // A password login: the same walk, and no limit.
    s.pam.sandbox.config("session_ends_at_exp = true", rule);
    let _ = std::fs::remove_file(&log);
    let o = s.login_with_sshpass("alice", PASSWORD, remote);
    assert_logged_in(&o, &s, "alice");
    assert!(String::from_utf8_lossy(&o.stdout).contains("ENV=reached\n"));
    let session = probe_lines("open_session");
    assert_eq!(
        session,
        vec!["phase=open_session runtime_max_sec=unset memory_max=unset tasks_max=unset IDTOKEN_EXP=unset".to_string()]
    );
}

/// `idtoken pack` run as a CI job runs it: the token on stdin, the packed form on stdout.
fn idtoken_pack(token: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(idtoken_e2e::idtoken_bin())
        .arg("pack")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "idtoken pack: {}", out.status);
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// SPEC v3 "One answer" through the real sshd: a GitLab-sized token (over 1400 characters,
/// which ssh would cut at 1023) packed by `idtoken pack` logs in with sshpass, the
/// one-prompt client, and the audit line says allow; `idtoken askpass` sends its packed
/// form in one answer; a packed token with one character changed is refused as malformed
/// and is not handed to pam_unix as a password.
#[test]
fn a_packed_gitlab_sized_token_logs_in_with_sshpass_in_one_answer() {
    require!(
        sshd::available().is_ok(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    require!(
        sshd::which("sshpass").is_some(),
        "sshpass is missing (apt-get install sshpass)"
    );
    let s = start("packed", "");
    let jws = keys::mint_gitlab_shaped(&claims("alice", "packed"));
    assert!(jws.len() >= 1400, "GitLab-sized: {}", jws.len());
    let packed = idtoken_pack(&jws);
    assert!(
        packed.starts_with("~1.") && packed.len() < 1000,
        "{} characters",
        packed.len()
    );
    let o = s.login_with_sshpass("alice", &packed, REMOTE);
    assert_logged_in(&o, &s, "alice");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("IDTOKEN_PROJECT_PATH=hpc/app") && out.contains("IDTOKEN_USER=alice"),
        "{out}"
    );
    let line = nth_audit(&s, 1);
    assert!(
        line.contains("decision=allow") && jti_tag(&line) == "packed",
        "{line}"
    );

    // The askpass helper packs by itself (one answer) when the packed form fits.
    let jws2 = keys::mint_gitlab_shaped(&claims("alice", "packed-askpass"));
    assert_logged_in(&s.login_with_askpass("alice", &jws2, REMOTE), &s, "alice");
    let line = nth_audit(&s, 2);
    assert!(
        line.contains("decision=allow") && jti_tag(&line) == "packed-askpass",
        "{line}"
    );

    // One character of the packed form changed: refused at step 1, and never a password.
    let packed3 = idtoken_pack(&keys::mint_gitlab_shaped(&claims("alice", "packed-bad")));
    let mut mutated = packed3.clone().into_bytes();
    let at = mutated.len() / 2;
    mutated[at] = if mutated[at] == b'Q' { b'R' } else { b'Q' };
    let mutated = String::from_utf8(mutated).unwrap();
    assert_refused(&s.login_with_sshpass("alice", &mutated, REMOTE));
    let line = nth_audit(&s, 3);
    assert!(
        line.contains("decision=deny") && line.contains("reason=malformed"),
        "{line}"
    );
    assert!(
        !s.pam
            .syslog
            .lines()
            .iter()
            .any(|l| l.contains("pam_unix(sshd:auth)")),
        "the mutated packed token reached pam_unix: {:?}",
        s.pam.syslog.lines()
    );
    for t in [&jws, &jws2, &packed, &packed3, &mutated] {
        assert_no_token(&s, t);
    }
}

/// The one-prompt example of docs/ci.md (between `<!-- sshpass-example:start/end -->`), run as
/// printed by `sh -e` with a GitLab-sized token, `idtoken` on PATH and the job's variables:
/// sshpass sends the packed token in the one answer and the login is allowed.
#[test]
fn the_readmes_sshpass_example_logs_in_as_printed() {
    require!(
        sshd::available().is_ok(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    require!(
        sshd::which("sshpass").is_some(),
        "sshpass is missing (apt-get install sshpass)"
    );
    let span = idtoken_e2e::docs::span("docs/ci.md", "sshpass-example");
    let script = idtoken_e2e::docs::fenced(&span, "sh", "the sshpass-example span");
    let s = start("readme-sshpass", "");
    let public = std::fs::read_to_string(s.pam.sandbox.path("ssh_host_ed25519_key.pub")).unwrap();
    let mut key = public.split_whitespace();
    let known = format!(
        "[127.0.0.1]:{} {} {}",
        s.port,
        key.next().unwrap(),
        key.next().unwrap()
    );
    let token = keys::mint_gitlab_shaped(&claims("alice", "readme-sshpass"));
    assert!(token.len() > 1023, "ssh would cut it: {}", token.len());
    let bin = idtoken_e2e::idtoken_bin();
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = std::process::Command::new("sh");
    c.arg("-e")
        .arg("-c")
        .arg(script)
        .env("PATH", path)
        .env("TMPDIR", s.pam.sandbox.path(""))
        .env("IDTOKEN", &token)
        .env("IDTOKEN_USER", "alice")
        .env("IDTOKEN_HOST", "127.0.0.1")
        .env("IDTOKEN_PORT", s.port.to_string())
        .env("IDTOKEN_KNOWN_HOSTS", known)
        .env_remove("SSHPASS")
        .env_remove("SSH_ASKPASS")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("DISPLAY");
    let o = sshd::run_bounded(&mut c);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with("alice\n"),
        "{}\nsshd log:\n{}",
        text(&o),
        s.sshd_log()
    );
    let line = nth_audit(&s, 1);
    assert!(
        line.contains("decision=allow") && jti_tag(&line) == "readme-sshpass",
        "{line}"
    );
    assert_no_token(&s, &token);
}

/// The askpass helpers as ssh really shows them the prompt (issue 23): through the real sshd
/// and the stock `ssh`, with a module before ours that sends a PAM message (sshd <= 10.2
/// glues it onto the token prompt: `(USER@HOST) MESSAGE\nID token: `), the helpers still
/// answer (packed, in parts, the sh script); and the HOST of the prompt is the
/// `HostKeyAlias`, lowercased, or the `HostName` after substitution, never an alias as typed.
#[test]
fn the_helpers_answer_the_prompt_as_ssh_builds_it() {
    require!(
        sshd::available().is_ok(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    let pam = PamHarness::new("ssh-glued");
    pam.sandbox.key_cache(&[keys::Key::A]);
    pam.sandbox.config(
        "",
        "[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n",
    );
    let info = pam.support_module("pam_info_first");
    let s = Sshd::start(pam, &format!("auth optional {}\n{STACK}", info.display()));
    // idtoken askpass, the packed token in one answer to the glued prompt; a wrapper keeps
    // the prompt ssh gave it, to show the glue is there (OpenSSH <= 10.2, as here).
    let seen = s.pam.sandbox.path("prompts");
    let wrapper = s.pam.sandbox.write(
        "askpass-recording",
        format!(
            "#!/bin/sh\nprintf '%s\\n--\\n' \"$1\" >> {}\nexec {} askpass \"$1\"\n",
            seen.display(),
            idtoken_e2e::idtoken_bin().display()
        )
        .as_bytes(),
    );
    idtoken_e2e::sandbox::set_mode(&wrapper, 0o755);
    let packed = keys::mint_gitlab_shaped(&claims("alice", "glued-packed"));
    let o = sshd::run_bounded(
        s.ssh("alice", REMOTE)
            .env("SSH_ASKPASS", &wrapper)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("IDTOKEN_HOST", "127.0.0.1")
            .env_remove("IDTOKEN_PACK")
            .env("IDTOKEN", &packed),
    );
    assert_logged_in(&o, &s, "alice");
    let prompts = std::fs::read_to_string(&seen).unwrap_or_default();
    assert!(
        prompts.starts_with("(alice@127.0.0.1) Authorized use only")
            && prompts.contains(" is not this line.\nID token: \n--\n"),
        "the helper was shown the message glued onto the prompt: {prompts:?}"
    );
    // ...in parts: the message comes with part 1 only.
    let long = mint_exact_len(&claims("alice", "glued-parts"), 2100);
    let o = s.login_with_askpass_in_parts("alice", &long, REMOTE);
    assert_logged_in(&o, &s, "alice");
    // ...and the POSIX sh helper.
    let long2 = mint_exact_len(&claims("alice", "glued-sh"), 2100);
    let o = s.login_with_sh_askpass("alice", &long2, REMOTE);
    assert_logged_in(&o, &s, "alice");
    assert_eq!(
        s.pam
            .syslog
            .wait_for("decision=allow", 3, Duration::from_secs(5))
            .len(),
        3
    );

    // HostKeyAlias: ssh shows it lowercased; IDTOKEN_HOST in any case matches it.
    let sh = idtoken_e2e::workspace_root().join("packaging/gitlab-ci/idtoken-askpass.sh");
    let askpass = s.askpass_script();
    for (helper, tag) in [(&askpass, "alias-bin"), (&sh, "alias-sh")] {
        let t = mint_exact_len(&claims("alice", tag), 2100);
        let o = sshd::run_bounded(
            s.ssh_to(
                &["HostKeyAlias=Login1.Example.ORG"],
                "alice@127.0.0.1",
                REMOTE,
            )
            .env("SSH_ASKPASS", helper)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("IDTOKEN_PACK", "no")
            .env("IDTOKEN_HOST", "LOGIN1.example.org")
            .env("IDTOKEN", &t),
        );
        assert_logged_in(&o, &s, "alice");
    }
    // An ssh_config alias: ssh shows the HostName, so IDTOKEN_HOST set to the alias gets
    // nothing (the token is never typed), and set to the HostName logs in.
    for (helper, tag) in [(&askpass, "hostname-bin"), (&sh, "hostname-sh")] {
        let t = mint_exact_len(&claims("alice", tag), 2100);
        let run = |host: &str| {
            sshd::run_bounded(
                s.ssh_to(&["HostName=127.0.0.1"], "alice@login-alias", REMOTE)
                    .env("SSH_ASKPASS", helper)
                    .env("SSH_ASKPASS_REQUIRE", "force")
                    .env("IDTOKEN_PACK", "no")
                    .env("IDTOKEN_HOST", host)
                    .env("IDTOKEN", &t),
            )
        };
        let o = run("login-alias");
        assert_refused(&o);
        assert!(
            text(&o).contains("not answering") && text(&o).contains("127.0.0.1"),
            "{}",
            text(&o)
        );
        assert_logged_in(&run("127.0.0.1"), &s, "alice");
    }
    assert_no_token(&s, &packed);
}

/// pam_idtoken(8)'s askpass example, as printed, with the login node's name made the test
/// sshd's (127.0.0.1, its port and host key) and the askpass path the built command's: it
/// names the host in `IDTOKEN_HOST` and logs in.
#[test]
fn the_man_pages_askpass_example_logs_in() {
    require!(
        sshd::available().is_ok(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    let example = idtoken_e2e::docs::man_example("packaging/man/pam_idtoken.8", "askpass-example");
    let host = "login.example.org";
    assert!(
        example.contains(&format!("IDTOKEN_HOST={host} "))
            && example.contains(&format!("@{host}\n")),
        "the example names its login node in IDTOKEN_HOST and as the destination: {example}"
    );
    let s = start("man-askpass", "");
    let link = s.pam.sandbox.path("idtoken-askpass");
    std::os::unix::fs::symlink(idtoken_e2e::idtoken_bin(), &link).unwrap();
    let script = example
        .replace(&format!("user@{host}"), "alice@127.0.0.1")
        .replace(host, "127.0.0.1")
        .replace("/usr/bin/idtoken-askpass", &link.display().to_string())
        .replace(
            "ssh -o",
            &format!(
                "ssh -F /dev/null -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o NumberOfPasswordPrompts=1 -o",
                s.port
            ),
        );
    let token = keys::mint_gitlab_shaped(&claims("alice", "man-askpass"));
    let mut c = std::process::Command::new("sh");
    c.arg("-e")
        .arg("-c")
        .arg(format!("{} {REMOTE:?} < /dev/null", script.trim_end()))
        .env("IDTOKEN", &token)
        .env_remove("IDTOKEN_HOST")
        .env_remove("SSH_ASKPASS")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("DISPLAY");
    let o = sshd::run_bounded(&mut c);
    assert_logged_in(&o, &s, "alice");
}
