//! `idtoken doctor` against a complete working setup in a private directory (config, key
//! cache, docs/install.md's Debian PAM stack, an sshd_config checked by the real `sshd -T`), then
//! each fault on its own, each reported with its fix and the right exit code; a
//! doctor-clean sshd and PAM stack of the ssh harness that then accepts a token login; and
//! `idtoken status --prometheus` parsed by `promtool check metrics`.
//!
//! Accounts come from the test accounts through nss_wrapper, never the host's. Runs as root
//! (sshd -T needs it).

use std::path::PathBuf;
use std::process::Command;

use idtoken_e2e::cli::{idtoken, nss_wrapper};
use idtoken_e2e::keys::{self, Key, mint_exact_len, now};
use idtoken_e2e::pam::{self, PamHarness};
use idtoken_e2e::require;
use idtoken_e2e::sandbox::{Sandbox, set_mode};
use idtoken_e2e::sshd::{self, Sshd};
use serde_json::Value;

/// docs/install.md's Debian profile lines (step 5), as pam-auth-update writes common-auth.
const COMMON_AUTH: &str = "auth    [success=2 auth_err=die default=ignore]    pam_idtoken.so config=CONFIG\n\
auth    [success=1 default=ignore]                 pam_unix.so nullok try_first_pass\n\
auth    requisite                                  pam_deny.so\n\
auth    required                                   pam_permit.so\n";

const SSHD_CONFIG: &str = "Port 2222\nListenAddress 127.0.0.1\nHostKey HOSTKEY\nUsePAM yes\n\
KbdInteractiveAuthentication yes\nPasswordAuthentication no\nMaxStartups 110:30:210\n";

const RULES: &str = "[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n\n\
[[rule]]\nname = \"deploy\"\nissuer = \"gitlab\"\nlogin_as = \"svc-deploy\"\nlocal_groups = [\"hpc-ci\"]\n";

/// One private setup; `fault` changes one thing before doctor runs.
struct Setup {
    sb: Sandbox,
    config: PathBuf,
    pamd: PathBuf,
    sshd_config: PathBuf,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let sb = Sandbox::new(&format!("doctor-{tag}"));
        sb.key_cache(&[Key::A]);
        let config = sb.config("max_uses = 1", RULES);
        let uses = sb.path("uses");
        std::fs::create_dir_all(&uses).unwrap();
        set_mode(&uses, 0o700);
        let pamd = sb.path("pam.d");
        sb.write(
            "pam.d/sshd",
            b"@include common-auth\naccount required pam_permit.so\n",
        );
        let common = COMMON_AUTH.replace("CONFIG", &config.display().to_string());
        sb.write("pam.d/common-auth", common.as_bytes());
        // A host key that does not exist: doctor must still get sshd's settings.
        let cfg = SSHD_CONFIG.replace(
            "HOSTKEY",
            &sb.path("no-such-host-key").display().to_string(),
        );
        let sshd_config = sb.write("sshd_config", cfg.as_bytes());
        Setup {
            sb,
            config,
            pamd,
            sshd_config,
        }
    }

    fn rewrite(&self, name: &str, from: &str, to: &str) {
        let p = self.sb.path(name);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{name} has no {from:?}");
        self.sb.write(name, text.replace(from, to).as_bytes());
    }

    /// Runs doctor --json; returns the exit code and the checks.
    fn doctor(&self) -> (i32, Vec<Value>) {
        let out = idtoken(&self.sb)
            .arg("doctor")
            .arg("--json")
            .arg("--config")
            .arg(&self.config)
            .arg("--pam-dir")
            .arg(&self.pamd)
            .arg("--sshd-config")
            .arg(&self.sshd_config)
            .args(["--service", "sshd"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let checks = v["checks"].as_array().cloned().unwrap_or_default();
        (out.status.code().unwrap_or(-1), checks)
    }
}

fn prerequisites() -> bool {
    pam::can_isolate() && nss_wrapper().is_some() && std::path::Path::new(sshd::SSHD).exists()
}

/// The exit code the host's own facts add (timer and clock: "skip" without systemd).
fn host_code(checks: &[Value]) -> i32 {
    checks
        .iter()
        .filter(|c| c["name"] == "refresh_timer" || c["name"] == "clock")
        .map(|c| match c["status"].as_str() {
            Some("fail") => 2,
            Some("warn") => 1,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

fn find<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:#?}"))
}

/// Every check but the host's own facts is ok, and the exit code says so.
fn assert_clean(code: i32, checks: &[Value]) {
    for c in checks {
        if c["name"] != "refresh_timer" && c["name"] != "clock" {
            assert_eq!(c["status"], "ok", "{c}\nall: {checks:#?}");
            assert!(c["fix"].is_null(), "{c}");
        }
        for k in ["name", "status", "detail", "fix"] {
            assert!(c.get(k).is_some(), "{k} missing in {c}");
        }
    }
    assert_eq!(code, host_code(checks), "{checks:#?}");
}

/// `name` has `status` with a fix containing `fix`; every other check (host facts aside)
/// is ok, with no fix; the exit code is the fault's.
fn assert_fault(setup: &Setup, name: &str, status: &str, fix: &str) {
    assert_fault_and(setup, name, status, fix, &[]);
}

/// As `assert_fault`, where the one fault also changes the checks `others` (name and
/// status, exactly these): every check not named is ok.
fn assert_fault_and(setup: &Setup, name: &str, status: &str, fix: &str, others: &[(&str, &str)]) {
    let (code, checks) = setup.doctor();
    let c = find(&checks, name);
    assert_eq!(c["status"], status, "{c}");
    let f = c["fix"].as_str().unwrap_or_default();
    assert!(f.contains(fix), "fix of {name} {f:?} lacks {fix:?}");
    let mut unexpected = Vec::new();
    for c in &checks {
        let n = c["name"].as_str().unwrap_or_default();
        if n == name || n == "refresh_timer" || n == "clock" {
            continue;
        }
        let want = others
            .iter()
            .find(|(o, _)| *o == n)
            .map_or("ok", |(_, st)| *st);
        if c["status"] != want || (want == "ok" && !c["fix"].is_null()) {
            unexpected.push(format!("{n}: {} (expected {want}): {c}", c["status"]));
        }
    }
    for (o, _) in others {
        if !checks.iter().any(|c| c["name"] == *o) {
            unexpected.push(format!("{o}: missing"));
        }
    }
    assert!(
        unexpected.is_empty(),
        "the fault {name} changed other checks:\n{}",
        unexpected.join("\n")
    );
    let want = if status == "fail" { 2 } else { 1 };
    assert_eq!(code, want.max(host_code(&checks)), "{checks:#?}");
}

#[test]
fn a_complete_setup_is_all_ok_and_each_fault_is_reported_with_its_fix() {
    require!(
        prerequisites(),
        "doctor tests need root, libnss-wrapper and openssh-server"
    );
    let (code, checks) = Setup::new("ok").doctor();
    assert_clean(code, &checks);
    for name in [
        "config",
        "config.service",
        "key_cache.gitlab",
        "pam_stack.module",
        "pam_stack.order",
        "pam_stack.config",
        "pam_stack.valid_token",
        "pam_stack.refused_token",
        "pam_stack.password",
        "pam_stack.unavailable",
        "sshd.use_pam",
        "sshd.kbd_interactive",
        "sshd.authentication_methods",
        "sshd.max_startups",
        "login_as.svc-deploy",
        "local_group.hpc-ci",
        "state_dir",
    ] {
        find(&checks, name);
    }
    if !std::path::Path::new("/run/systemd/system").exists() {
        // No systemd here: said plainly, not guessed.
        for name in ["refresh_timer", "clock"] {
            let c = find(&checks, name);
            assert_eq!(c["status"], "skip", "{c}");
            assert!(
                c["detail"].as_str().unwrap_or_default().contains("systemd"),
                "{c}"
            );
        }
    }

    let s = Setup::new("no-module");
    s.rewrite("pam.d/common-auth", "pam_idtoken.so", "pam_env.so");
    assert_fault(
        &s,
        "pam_stack.module",
        "fail",
        "pam-auth-update --enable idtoken",
    );
    // What pam-auth-update does on hand-edited files (Debian 12's prints this and exits 0).
    assert_fault(
        &s,
        "pam_stack.module",
        "fail",
        "\"Local modifications to /etc/pam.d/common-*, not updating\"",
    );

    let s = Setup::new("after-unix");
    let swapped = {
        let mut l: Vec<&str> = COMMON_AUTH.lines().collect();
        l.swap(0, 1);
        l.join("\n") + "\n"
    };
    s.sb.write(
        "pam.d/common-auth",
        swapped
            .replace("CONFIG", &s.config.display().to_string())
            .as_bytes(),
    );
    // Below pam_unix, a token is a wrong password: every verdict's path is wrong too.
    assert_fault_and(
        &s,
        "pam_stack.order",
        "fail",
        "above the pam_unix.so line",
        &[
            ("pam_stack.valid_token", "fail"),
            ("pam_stack.refused_token", "fail"),
            ("pam_stack.password", "fail"),
            ("pam_stack.unavailable", "warn"),
            // pam_unix's success jumps past the module onto pam_deny: setcred fails too.
            ("pam_stack.setcred", "fail"),
        ],
    );

    let s = Setup::new("no-die");
    s.rewrite(
        "pam.d/common-auth",
        "success=2 auth_err=die default=ignore",
        "success=2 default=ignore",
    );
    assert_fault(&s, "pam_stack.refused_token", "fail", "auth_err=die");

    let s = Setup::new("required");
    s.rewrite(
        "pam.d/common-auth",
        "[success=2 auth_err=die default=ignore]",
        "required",
    );
    // `required` also lets a refused token fall through and locks passwords out when the
    // module cannot decide.
    assert_fault_and(
        &s,
        "pam_stack.valid_token",
        "fail",
        "success=done",
        &[
            ("pam_stack.refused_token", "fail"),
            ("pam_stack.unavailable", "warn"),
        ],
    );

    let s = Setup::new("other-config");
    s.rewrite(
        "pam.d/common-auth",
        &format!("config={}", s.config.display()),
        "config=/etc/elsewhere.toml",
    );
    assert_fault(&s, "pam_stack.config", "fail", "config=");

    let s = Setup::new("kbd");
    s.rewrite(
        "sshd_config",
        "KbdInteractiveAuthentication yes",
        "KbdInteractiveAuthentication no",
    );
    assert_fault(
        &s,
        "sshd.kbd_interactive",
        "fail",
        "KbdInteractiveAuthentication yes",
    );

    kbd_interactive_fix_names_the_line_that_wins();

    let s = Setup::new("usepam");
    s.rewrite("sshd_config", "UsePAM yes", "UsePAM no");
    assert_fault(&s, "sshd.use_pam", "fail", "UsePAM yes");

    let s = Setup::new("maxstartups");
    s.rewrite("sshd_config", "MaxStartups 110:30:210\n", "");
    assert_fault(&s, "sshd.max_startups", "warn", "MaxStartups 110:30:210");

    let s = Setup::new("stale");
    let old = format!("@{}", now() - 3 * 86_400);
    let cache = s.sb.path("gitlab.jwks.json");
    assert!(
        Command::new("touch")
            .args(["-d", &old])
            .arg(&cache)
            .status()
            .unwrap()
            .success()
    );
    assert_fault(
        &s,
        "key_cache.gitlab",
        "warn",
        "idtoken refresh --issuer gitlab",
    );

    let s = Setup::new("no-cache");
    std::fs::remove_file(s.sb.path("gitlab.jwks.json")).unwrap();
    assert_fault(
        &s,
        "key_cache.gitlab",
        "fail",
        "idtoken refresh --issuer gitlab",
    );

    let s = Setup::new("no-account");
    s.rewrite(
        "idtoken.toml",
        "login_as = \"svc-deploy\"",
        "login_as = \"svc-deplo\"",
    );
    assert_fault(&s, "login_as.svc-deplo", "fail", "create the account");

    let s = Setup::new("low-uid");
    s.rewrite(
        "idtoken.toml",
        "login_as = \"svc-deploy\"",
        "login_as = \"lowuid\"",
    );
    assert_fault(&s, "login_as.lowuid", "fail", "min_uid");

    let s = Setup::new("group-typo");
    s.rewrite("idtoken.toml", "[\"hpc-ci\"]", "[\"hpc-cl\"]");
    assert_fault(&s, "local_group.hpc-cl", "fail", "correct the group name");

    let s = Setup::new("unsafe-state");
    set_mode(&s.sb.path("uses"), 0o777);
    assert_fault(&s, "state_dir", "fail", "chmod 0700");

    let s = Setup::new("no-service");
    s.rewrite("idtoken.toml", "services = [\"*\"]", "services = [\"su\"]");
    assert_fault(&s, "config.service", "fail", "\"sshd\"");

    let s = Setup::new("invalid");
    s.rewrite("idtoken.toml", "[[rule]]", "[[rule]]\nbogus_key = 1");
    assert_fault(&s, "config", "fail", "idtoken config check");

    // Issue 19.7: a deny rule that names the service does not cover it (only grants do).
    let s = Setup::new("deny-only");
    s.rewrite(
        "idtoken.toml",
        "services = [\"*\"]",
        "services = [\"su\"]\n\n[[rule]]\nname = \"no-sandbox\"\nissuer = \"gitlab\"\ndeny = true\nservices = [\"sshd\"]\n[rule.claims]\nproject_path = \"hpc/sandbox/*\"\n",
    );
    assert_fault(&s, "config.service", "fail", "\"sshd\"");

    // SPEC v3: the module answers PAM_IGNORE to setcred: a token-only stack ending in
    // pam_deny would end every login in sshd's setcred.
    let s = Setup::new("setcred");
    s.sb.write(
        "pam.d/common-auth",
        format!(
            "auth [success=done ignore=ignore default=die] pam_idtoken.so config={}\nauth requisite pam_deny.so\n",
            s.config.display()
        )
        .as_bytes(),
    );
    let (_, checks) = s.doctor();
    let c = find(&checks, "pam_stack.setcred");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        c["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("auth optional pam_env.so"),
        "{c}"
    );
    s.sb.write(
        "pam.d/common-auth",
        format!(
            "auth [success=done ignore=ignore default=die] pam_idtoken.so config={}\nauth optional pam_env.so\n",
            s.config.display()
        )
        .as_bytes(),
    );
    let (_, checks) = s.doctor();
    assert_eq!(find(&checks, "pam_stack.setcred")["status"], "ok");

    // SPEC v3: session limits need the module's session line above pam_systemd's.
    let s = Setup::new("session-none");
    s.rewrite(
        "idtoken.toml",
        "max_uses = 1",
        "max_uses = 1\nsession_ends_at_exp = true",
    );
    assert_fault(
        &s,
        "pam_stack.session",
        "fail",
        "pam-auth-update --enable idtoken",
    );
    let s = Setup::new("session-order");
    s.rewrite(
        "idtoken.toml",
        "max_uses = 1",
        "max_uses = 1\nsession_ends_at_exp = true",
    );
    s.rewrite(
        "pam.d/sshd",
        "account required pam_permit.so\n",
        "account required pam_permit.so\nsession optional pam_systemd.so\nsession optional pam_idtoken.so\n",
    );
    assert_fault(
        &s,
        "pam_stack.session",
        "fail",
        "move `session optional pam_idtoken.so` above pam_systemd.so",
    );
    let s = Setup::new("session-ok");
    s.rewrite(
        "idtoken.toml",
        "name = \"own-account\"",
        "name = \"own-account\"\ntasks_max = 64",
    );
    s.rewrite(
        "pam.d/sshd",
        "account required pam_permit.so\n",
        "account required pam_permit.so\nsession optional pam_idtoken.so\nsession optional pam_systemd.so\n",
    );
    let (code, checks) = s.doctor();
    let c = find(&checks, "pam_stack.session");
    assert_eq!(c["status"], "ok", "{c}");
    assert!(
        c["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("session limits"),
        "{c}"
    );
    assert_clean(code, &checks);

    // Issue 19.3: UseDNS yes with a rule that has `from`.
    let s = Setup::new("use-dns");
    s.rewrite("sshd_config", "UsePAM yes", "UsePAM yes\nUseDNS yes");
    s.rewrite(
        "idtoken.toml",
        "name = \"own-account\"",
        "name = \"own-account\"\nfrom = [\"10.0.0.0/8\"]",
    );
    assert_fault(&s, "sshd.use_dns", "warn", "set `UseDNS no`");
    let (_, checks) = s.doctor();
    eprintln!("use-dns: {}", find(&checks, "sshd.use_dns"));

    // Issue 19.8: a rule anchored on a renameable name, not pinned to CI tokens.
    let s = Setup::new("anchor");
    s.rewrite(
        "idtoken.toml",
        "name = \"own-account\"\n",
        "name = \"own-account\"\n[rule.claims]\nproject_path = \"hpc/app\"\n",
    );
    assert_fault(&s, "config.warnings", "warn", "idtoken config check");
    let (_, checks) = s.doctor();
    let c = find(&checks, "config.warnings");
    eprintln!("anchor: {c}");
    let detail = c["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("renamed (project_path)") && detail.contains("job_id = \"*\""),
        "{c}"
    );
}

#[test]
fn text_output_names_each_check_and_its_fix() {
    require!(
        prerequisites(),
        "doctor tests need root, libnss-wrapper and openssh-server"
    );
    let s = Setup::new("text");
    s.rewrite("sshd_config", "UsePAM yes", "UsePAM no");
    let out = idtoken(&s.sb)
        .arg("doctor")
        .arg("--config")
        .arg(&s.config)
        .arg("--pam-dir")
        .arg(&s.pamd)
        .arg("--sshd-config")
        .arg(&s.sshd_config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("fail") && l.contains("sshd.use_pam")),
        "{text}"
    );
    assert!(text.contains("fix: set `UsePAM yes`"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok") && l.contains("pam_stack.module")),
        "{text}"
    );
}

/// The ssh harness's sshd and PAM stack, as doctor says they should be, accept a token.
#[test]
fn a_doctor_clean_sshd_accepts_a_token_login() {
    require!(
        sshd::available().is_ok() && nss_wrapper().is_some(),
        "{}",
        sshd::available()
            .err()
            .unwrap_or("libnss-wrapper is missing".into())
    );
    let pam = PamHarness::new("doctor-ssh");
    pam.sandbox.key_cache(&[Key::A]);
    pam.sandbox.config(
        "",
        "[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n",
    );
    let s = Sshd::start(
        pam,
        "auth [success=done auth_err=die default=ignore] MODULE config=CONFIG\nauth required pam_unix.so try_first_pass",
    );
    let sb = &s.pam.sandbox;
    let out = idtoken(sb)
        .arg("doctor")
        .arg("--json")
        .arg("--config")
        .arg(sb.path("idtoken.toml"))
        .arg("--pam-dir")
        .arg(&s.pam.confdir)
        .arg("--sshd-config")
        .arg(sb.path("sshd_config"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    assert_clean(out.status.code().unwrap_or(-1), &checks);

    let token = mint_exact_len(
        &keys::live_claims("alice", &format!("doctor-{}-{}", now(), std::process::id())),
        1800,
    );
    let o = s.login_with_askpass("alice", &token, "echo LOGIN-OK; id -un");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && stdout.contains("LOGIN-OK") && stdout.contains("\nalice\n"),
        "{}\n{}\nsshd log:\n{}",
        stdout,
        String::from_utf8_lossy(&o.stderr),
        s.sshd_log()
    );
}

fn promtool() -> Option<PathBuf> {
    sshd::which("promtool")
}

fn check_metrics(text: &[u8]) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn status_prometheus_is_valid_textfile_metrics() {
    require!(
        promtool().is_some(),
        "promtool is missing (apt-get install prometheus)"
    );
    let sb = Sandbox::new("prometheus");
    let config = sb.standard();
    let run = |config: &PathBuf| {
        idtoken(&sb)
            .args(["status", "--prometheus", "--config"])
            .arg(config)
            .output()
            .unwrap()
    };
    let out = run(&config);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let (ok, why) = check_metrics(&out.stdout);
    assert!(ok, "promtool: {why}\n{text}");
    for line in [
        "idtoken_config_valid 1",
        "idtoken_key_cache_keys{issuer=\"gitlab\"} 1",
        "idtoken_key_cache_usable{issuer=\"gitlab\"} 1",
        "idtoken_key_cache_stale{issuer=\"gitlab\"} 0",
        "# TYPE idtoken_key_cache_age_seconds gauge",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }
    assert!(
        text.contains("idtoken_key_cache_age_seconds{issuer=\"gitlab\"} "),
        "{text}"
    );

    // A stale cache, then a missing one: still valid metrics, with the numbers that alert.
    let old = format!("@{}", now() - 3 * 86_400);
    assert!(
        Command::new("touch")
            .args(["-d", &old])
            .arg(sb.path("gitlab.jwks.json"))
            .status()
            .unwrap()
            .success()
    );
    let out = run(&config);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(check_metrics(&out.stdout).0, "{text}");
    assert!(
        text.contains("idtoken_key_cache_stale{issuer=\"gitlab\"} 1"),
        "{text}"
    );
    std::fs::remove_file(sb.path("gitlab.jwks.json")).unwrap();
    let out = run(&config);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(check_metrics(&out.stdout).0, "{text}");
    assert!(
        text.contains("idtoken_key_cache_usable{issuer=\"gitlab\"} 0"),
        "{text}"
    );
    assert!(!text.contains("idtoken_key_cache_age_seconds{"), "{text}");

    // An invalid config: exit 2, and the metric says so.
    let bad = sb.write("bad.toml", b"[defaults]\nnonsense = 1\n");
    let out = run(&bad);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(check_metrics(&out.stdout).0, "{text}");
    assert!(
        text.lines().any(|l| l == "idtoken_config_valid 0"),
        "{text}"
    );
}

#[test]
fn the_shipped_alert_rules_load() {
    require!(
        promtool().is_some(),
        "promtool is missing (apt-get install prometheus)"
    );
    let rules = idtoken_e2e::workspace_root().join("packaging/prometheus/idtoken-alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rhel_fixture(rel: &str) -> String {
    let p = idtoken_e2e::workspace_root()
        .join("tests/fixtures/pam")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A setup whose sshd stack is RHEL 9's: /etc/pam.d/sshd, postlogin, and password-auth of
/// fixture set `set` (written by authselect 1.2.6), with `place` putting the module in.
fn rhel_setup(tag: &str, set: &str, sshd_line: bool, profile_lines: bool) -> Setup {
    let s = Setup::new(tag);
    let module = format!(
        "auth [success=done auth_err=die default=ignore] pam_idtoken.so config={}",
        s.config.display()
    );
    let mut sshd = String::new();
    for l in rhel_fixture("rhel9/sshd").lines() {
        if sshd_line && l.starts_with("auth") && l.contains("substack") {
            sshd.push_str(&format!("{module}\n"));
        }
        sshd.push_str(&format!("{l}\n"));
    }
    let mut pa = String::new();
    let (mut auth_done, mut account_done) = (false, false);
    for l in rhel_fixture(&format!("{set}/password-auth")).lines() {
        if profile_lines && !auth_done && l.starts_with("auth") && l.contains("pam_usertype.so") {
            pa.push_str(&format!("{module}\n"));
            auth_done = true;
        }
        if profile_lines
            && !account_done
            && l.starts_with("account")
            && l.contains("pam_faillock.so")
        {
            pa.push_str("account [success=1 default=ignore] pam_idtoken.so\n");
            account_done = true;
        }
        pa.push_str(&format!("{l}\n"));
    }
    s.sb.write("pam.d/sshd", sshd.as_bytes());
    s.sb.write("pam.d/password-auth", pa.as_bytes());
    s.sb.write(
        "pam.d/postlogin",
        rhel_fixture("rhel9/postlogin").as_bytes(),
    );
    s
}

#[test]
fn doctor_reports_a_module_above_faillock_smartcard_and_u2f_requirements() {
    require!(
        prerequisites(),
        "doctor tests need root, libnss-wrapper and openssh-server"
    );
    // The ssh-only line over password-auth with all three features: each is skipped.
    let s = rhel_setup("rhel-sshonly", "rhel9-all", true, false);
    let (code, checks) = s.doctor();
    let c = find(&checks, "pam_stack.requirements");
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&checks).unwrap_or_default()
    );
    assert_eq!(c["status"], "fail", "{c}");
    let detail = c["detail"].as_str().unwrap_or_default();
    for (line, what) in [
        (6, "pam_deny.so"),
        (7, "pam_faillock.so preauth"),
        (8, "pam_u2f.so"),
    ] {
        assert!(
            detail.contains(&format!("password-auth:{line} ({what}")),
            "names password-auth:{line} ({what}): {detail}"
        );
    }
    assert!(
        c["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("authselect custom profile"),
        "{c}"
    );
    assert_eq!(
        find(&checks, "pam_stack.faillock_account")["status"],
        "warn"
    );
    assert_eq!(code, 2);

    // Each requirement alone, above the module: reported.
    for set in [
        "rhel9-faillock",
        "rhel9-smartcard-required",
        "rhel9-u2f-2fa",
    ] {
        let s = rhel_setup(&format!("rhel-sshonly-{set}"), set, true, false);
        let (_, checks) = s.doctor();
        assert_eq!(
            find(&checks, "pam_stack.requirements")["status"],
            "fail",
            "{set}"
        );
    }

    // The custom profile's placement keeps them: requirements and the tally are ok.
    let s = rhel_setup("rhel-profile", "rhel9-faillock", false, true);
    let (_, checks) = s.doctor();
    for name in [
        "pam_stack.requirements",
        "pam_stack.faillock_account",
        "pam_stack.valid_token",
        "pam_stack.refused_token",
        "pam_stack.password",
        "pam_stack.order",
    ] {
        assert_eq!(find(&checks, name)["status"], "ok", "{name}: {checks:#?}");
    }
    let s = rhel_setup("rhel-profile-sc", "rhel9-smartcard-required", false, true);
    let (_, checks) = s.doctor();
    assert_eq!(find(&checks, "pam_stack.requirements")["status"], "ok");
    let c = find(&checks, "pam_stack.valid_token");
    assert_eq!(
        c["status"], "warn",
        "smartcard-required refuses every login: {c}"
    );

    // An account line that would jump over pam_unix's (faillock off) is a failure.
    let s = rhel_setup("rhel-account-line", "rhel9", false, true);
    s.rewrite(
        "pam.d/password-auth",
        "account     required                                     pam_unix.so",
        "account [success=1 default=ignore] pam_idtoken.so\naccount required pam_unix.so",
    );
    let (_, checks) = s.doctor();
    let c = find(&checks, "pam_stack.account_line");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        c["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("pam_unix.so"),
        "{c}"
    );
}

/// sshd keeps the first value it reads (issue 23): RHEL 9's drop-in
/// `50-redhat.conf` (`ChallengeResponseAuthentication no`, the same option) read through the
/// Include at the top, or Debian 12's stock `KbdInteractiveAuthentication no` above the
/// `yes` a sysadmin appended, wins; doctor's fix names that file and line, and the drop-in
/// the docs give (sorting before 50-redhat.conf) makes it pass, as `sshd -T` agrees.
fn kbd_interactive_fix_names_the_line_that_wins() {
    // RHEL 9: an Include at the top, 50-redhat.conf in it, the `yes` later in sshd_config.
    let s = Setup::new("kbd-rhel");
    let dir = s.sb.path("sshd_config.d");
    s.sb.write(
        "sshd_config.d/50-redhat.conf",
        b"# as RHEL 9 ships it\nChallengeResponseAuthentication no\n",
    );
    s.rewrite(
        "sshd_config",
        "Port 2222\n",
        &format!("Include {}/*.conf\nPort 2222\n", dir.display()),
    );
    let redhat = format!("{}/50-redhat.conf:2", dir.display());
    assert_fault(&s, "sshd.kbd_interactive", "fail", &redhat);
    assert_fault(
        &s,
        "sshd.kbd_interactive",
        "fail",
        "`ChallengeResponseAuthentication no`",
    );
    // The documented drop-in, 10-idtoken.conf, is read first and wins.
    s.sb.write(
        "sshd_config.d/10-idtoken.conf",
        b"UsePAM yes\nKbdInteractiveAuthentication yes\n",
    );
    let (_, checks) = s.doctor();
    assert_eq!(find(&checks, "sshd.kbd_interactive")["status"], "ok");

    // Debian 12: the stock `no` (its line 62) above a `yes` appended at the end.
    let s = Setup::new("kbd-debian");
    s.rewrite(
        "sshd_config",
        "UsePAM yes\n",
        "UsePAM yes\nKbdInteractiveAuthentication no\n",
    );
    let line = format!("{}:5", s.sshd_config.display());
    assert_fault(&s, "sshd.kbd_interactive", "fail", &line);
}
