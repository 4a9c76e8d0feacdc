//! Ansible, a one-prompt client, through the real sshd: docs/ci.md's example (between
//! `<!-- ansible-example:start/end -->`: an inventory, a playbook and the job's commands)
//! run as printed by ansible-core's ssh connection with the packed GitLab-sized token as
//! `ansible_password`, both ways Ansible answers a prompt (its own SSH_ASKPASS helper, the
//! default since 2.19, and sshpass). The play runs its tasks on the login node over one
//! login (one audit line, so `max_uses = 1` holds); a refused token is tried once; without
//! the example's ControlPersist every task logs in again.
//!
//! ansible-core comes from PyPI into /opt/idtoken-test-venv (tests/support/install-deps);
//! `IDTOKEN_TEST_ANSIBLE=/path/to/ansible-playbook` points elsewhere.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use idtoken_e2e::keys::{self, now};
use idtoken_e2e::pam::PamHarness;
use idtoken_e2e::require;
use idtoken_e2e::sandbox::{Sandbox, set_mode};
use idtoken_e2e::sshd::{self, Sshd};

/// The documented stack: a token logs in or is refused; anything else goes to pam_unix.
const STACK: &str = "auth [success=done ignore=ignore default=die] MODULE config=CONFIG\nauth required pam_unix.so try_first_pass";
/// Where install-deps puts ansible-core.
const VENV_PLAYBOOK: &str = "/opt/idtoken-test-venv/bin/ansible-playbook";
/// The CI author's guide, which shows the example (`<!-- ansible-example:start/end -->`).
const DOC: &str = "docs/ci.md";

fn ansible_playbook() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IDTOKEN_TEST_ANSIBLE") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(VENV_PLAYBOOK);
    if venv.is_file() {
        return Some(venv);
    }
    sshd::which("ansible-playbook")
}

/// docs/ci.md's Ansible example: its files (a ```yaml block whose first line is
/// `# NAME`) and the job's commands (the ```sh block).
struct Example {
    files: Vec<(String, String)>,
    script: String,
}

fn doc_example() -> Example {
    let span = idtoken_e2e::docs::span(DOC, "ansible-example");
    let block = span.as_str();
    let mut files = Vec::new();
    let mut script = None;
    let mut rest = block;
    while let Some((_, after)) = rest.split_once("```") {
        let (info, body_and_rest) = after.split_once('\n').expect("a fence line");
        let (body, next) = body_and_rest
            .split_once("```")
            .expect("every ``` block between the ansible-example markers is closed");
        match info.trim() {
            "yaml" => {
                let (first, _) = body.split_once('\n').unwrap_or((body, ""));
                let name = first
                    .strip_prefix("# ")
                    .expect("a yaml block of the example starts with `# FILE NAME`")
                    .trim();
                files.push((name.to_string(), body.to_string()));
            }
            "sh" => {
                assert!(script.is_none(), "one ```sh block in the example");
                script = Some(body.to_string());
            }
            other => panic!("a ```{other} block in the ansible example"),
        }
        rest = next;
    }
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["inventory.yml", "playbook.yml"],
        "the example's files"
    );
    Example {
        files,
        script: script.expect("a ```sh block between the ansible-example markers"),
    }
}

fn start(tag: &str, defaults: &str) -> Sshd {
    let pam = PamHarness::new(tag);
    pam.sandbox.key_cache(&[keys::Key::A]);
    pam.sandbox.config(
        defaults,
        "[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n",
    );
    // A login node serves sftp, which Ansible uses to send its modules (scp and a piped
    // copy otherwise, with a warning each).
    Sshd::start_with_options(pam, STACK, &["Subsystem sftp internal-sftp"])
}

fn claims(user: &str, tag: &str) -> serde_json::Value {
    keys::live_claims(
        user,
        &format!("ansible-{tag}-{}-{}", now(), std::process::id()),
    )
}

/// The tag of a test token an audit line names (`jti=ansible-TAG-TIME-PID`).
fn jti_tag(line: &str) -> String {
    let jti = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("jti="))
        .unwrap_or("<no jti field>");
    let mut parts = jti.rsplitn(3, '-');
    let (_, _, rest) = (parts.next(), parts.next(), parts.next());
    rest.and_then(|r| r.strip_prefix("ansible-"))
        .unwrap_or(jti)
        .to_string()
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The audit lines so far, once no new one has come for a second (a client that logged in
/// again, or sent a second answer, shows here).
fn settled_audit(s: &Sshd) -> Vec<String> {
    let mut seen = s.pam.syslog.audit_lines();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = s.pam.syslog.audit_lines();
        if now.len() == seen.len() {
            return now;
        }
        seen = now;
    }
}

/// A CI runner: the job's directory holding the example's files, its own HOME (Ansible's
/// ~/.ansible: control sockets, temporary files) and TMPDIR.
struct Runner {
    sb: Sandbox,
    example: Example,
}

impl Runner {
    fn new(tag: &str) -> Runner {
        let sb = Sandbox::new(tag);
        for d in ["job", "home", "tmp"] {
            std::fs::create_dir_all(sb.path(d)).unwrap();
        }
        set_mode(&sb.path("home"), 0o700);
        set_mode(&sb.path("tmp"), 0o1777);
        let example = doc_example();
        for (name, body) in &example.files {
            std::fs::write(sb.path("job").join(name), body).unwrap();
        }
        Runner { sb, example }
    }

    /// Runs the job's commands as printed by `sh -e`, with the job's token and the site's
    /// variables for `s`; `ansible_args` are added to the `ansible-playbook` line and `env`
    /// to the job's environment (for the variants only: the example runs with neither).
    fn run(&self, s: &Sshd, token: &str, ansible_args: &str, env: &[(&str, &str)]) -> Output {
        let playbook = ansible_playbook().expect("ansible-playbook");
        let mut script = self.example.script.clone();
        if !ansible_args.is_empty() {
            let line = "ansible-playbook -i inventory.yml playbook.yml";
            assert!(script.contains(line), "{script}");
            script = script.replace(line, &format!("{line} {ansible_args}"));
        }
        let path = format!(
            "{}:{}:{}",
            idtoken_e2e::idtoken_bin().parent().unwrap().display(),
            playbook.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let public =
            std::fs::read_to_string(s.pam.sandbox.path("ssh_host_ed25519_key.pub")).unwrap();
        let mut key = public.split_whitespace();
        let known = format!(
            "[127.0.0.1]:{} {} {}",
            s.port,
            key.next().unwrap(),
            key.next().unwrap()
        );
        let mut c = Command::new("sh");
        c.arg("-e")
            .arg("-c")
            .arg(&script)
            .current_dir(self.sb.path("job"))
            .env("PATH", path)
            .env("HOME", self.sb.path("home"))
            .env("TMPDIR", self.sb.path("tmp"))
            .env("CI", "true")
            .env("CI_PIPELINE_ID", "5001")
            .env("IDTOKEN", token)
            .env("IDTOKEN_USER", "alice")
            .env("IDTOKEN_HOST", "127.0.0.1")
            .env("IDTOKEN_PORT", s.port.to_string())
            .env("IDTOKEN_KNOWN_HOSTS", known)
            .env("ANSIBLE_NOCOLOR", "1");
        for v in ["SSHPASS", "SSH_ASKPASS", "SSH_AUTH_SOCK", "DISPLAY"] {
            c.env_remove(v);
        }
        for (k, _) in std::env::vars() {
            if k.starts_with("ANSIBLE_") && k != "ANSIBLE_NOCOLOR" {
                c.env_remove(k);
            }
        }
        for (k, v) in env {
            c.env(k, v);
        }
        sshd::run_bounded(&mut c)
    }
}

/// Skips (fails under CI=true) a test without sshd, ansible-playbook or sshpass.
macro_rules! require_ansible {
    () => {
        require!(
        sshd::available().is_ok(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    require!(
        ansible_playbook().is_some_and(|p| p.is_file()),
        "ansible-playbook is missing (tests/support/install-deps installs ansible-core into /opt/idtoken-test-venv)"
    );
    require!(
        sshd::which("sshpass").is_some(),
        "sshpass is missing (apt-get install sshpass)"
    );
    };
}

/// How docs/ci.md says a play without ControlPersist logs in: its four-task play takes this
/// many logins with ansible-core 2.19 (and with `ansible_pipelining: true`).
const LOGINS_WITHOUT_CONTROLPERSIST: usize = 19;
const LOGINS_WITHOUT_CONTROLPERSIST_PIPELINING: usize = 10;

impl Runner {
    /// Processes whose command line names this runner's directory: the play's ssh master
    /// connection while it lives (a backgrounded master retitles itself "ssh: CONTROL_PATH
    /// [mux]", and its control socket is in the runner's ~/.ansible/cp).
    fn ssh_processes(&self) -> Vec<String> {
        let tmp = self.sb.dir.display().to_string();
        let me = std::process::id().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n != me && n.chars().all(|c| c.is_ascii_digit()))
            })
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&tmp))
            .collect()
    }

    /// Fails if `secret` is in the plays' output or in a file the runner kept.
    fn assert_no_secret(&self, outputs: &[Output], secret: &str) {
        let tail = &secret[secret.len() - 40..];
        for o in outputs {
            assert!(!text(o).contains(tail), "the token in Ansible's output");
        }
        let mut dirs = vec![self.sb.dir.clone()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let kind = e.file_type().unwrap();
                if kind.is_dir() {
                    dirs.push(p);
                } else if kind.is_file() {
                    let body = std::fs::read(&p).unwrap_or_default();
                    assert!(
                        !String::from_utf8_lossy(&body).contains(tail),
                        "the token in {}",
                        p.display()
                    );
                }
            }
        }
    }
}

fn assert_no_token_logged(s: &Sshd, secret: &str) {
    let tail = &secret[secret.len() - 40..];
    for l in s.pam.syslog.lines() {
        assert!(!l.contains(tail), "token in syslog: {l}");
    }
    assert!(!s.sshd_log().contains(tail), "token in the sshd log");
}

/// The play went through: `id -un` said alice, the copy wrote the file in her home.
fn assert_play_ran(o: &Output, s: &Sshd) {
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success()
            && out.contains("\"who.stdout\": \"alice\"")
            && out.contains("ok=3    changed=1    unreachable=0    failed=0"),
        "{}\nsshd log:\n{}",
        text(o),
        s.sshd_log()
    );
    let copied = s.pam.sandbox.path("home/alice/deployed-by-ci.txt");
    assert_eq!(
        std::fs::read_to_string(&copied).unwrap_or_default(),
        "pipeline 5001\n",
        "{}",
        copied.display()
    );
    let _ = std::fs::remove_file(copied);
}

fn assert_unreachable(o: &Output) {
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() && out.contains("UNREACHABLE!") && !out.contains("who.stdout"),
        "{}",
        text(o)
    );
}

/// One play, one login, and its master connection ended by the play's last task; the same
/// token again is one refusal, not several; with `ANSIBLE_SSH_RETRIES=2` it is tried
/// `retried` times.
fn one_login_per_play(tag: &str, env: &[(&str, &str)], retried: usize) {
    let s = start(tag, "max_uses = 1");
    let runner = Runner::new(&format!("{tag}-runner"));
    let token = keys::mint_gitlab_shaped(&claims("alice", tag));
    assert!(token.len() > 1023, "ssh would cut it: {}", token.len());
    let mut outputs = Vec::new();
    let o = runner.run(&s, &token, "", env);
    assert_play_ran(&o, &s);
    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
    outputs.push(o);
    let audit = settled_audit(&s);
    assert_eq!(audit.len(), 1, "one login for the play: {audit:#?}");
    assert!(
        audit[0].contains("decision=allow") && jti_tag(&audit[0]) == tag,
        "{}",
        audit[0]
    );
    eprintln!("{}", audit[0]);
    // `meta: reset_connection` ended the master connection: no ssh of the job is left
    // holding a logged-in session (it would stay ControlPersist=60s otherwise).
    let start = std::time::Instant::now();
    while !runner.ssh_processes().is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        runner.ssh_processes(),
        Vec::<String>::new(),
        "the master connection is still there"
    );
    assert!(
        s.sshd_log().contains("disconnected by user"),
        "{}",
        s.sshd_log()
    );

    // max_uses = 1: the same token again is refused, once (one answer, no retry).
    let o = runner.run(&s, &token, "", env);
    assert_unreachable(&o);
    outputs.push(o);
    let audit = settled_audit(&s);
    assert_eq!(audit.len(), 2, "one more login attempt: {audit:#?}");
    assert!(
        audit[1].contains("decision=deny") && audit[1].contains("reason=replayed"),
        "{}",
        audit[1]
    );
    eprintln!("{}", audit[1]);

    // Ansible runs ssh again after it exited 255 (a refused login, with its own helper), not
    // after sshpass said the answer was wrong (exit 5).
    let mut env2 = env.to_vec();
    env2.push(("ANSIBLE_SSH_RETRIES", "2"));
    let o = runner.run(&s, &token, "", &env2);
    assert_unreachable(&o);
    outputs.push(o);
    let audit = settled_audit(&s);
    assert_eq!(
        audit.len(),
        2 + retried,
        "{retried} more attempts: {audit:#?}"
    );
    assert!(
        audit[2..].iter().all(|l| l.contains("reason=replayed")),
        "{audit:#?}"
    );

    let packed = {
        let o = Command::new(idtoken_e2e::idtoken_bin())
            .arg("pack")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(token.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    assert!(packed.starts_with("~1.") && packed.len() < 1000, "{packed}");
    for secret in [&token, &packed] {
        assert_no_token_logged(&s, secret);
        runner.assert_no_secret(&outputs, secret);
    }
}

/// docs/ci.md's Ansible example as printed, with ansible-core's default way of answering
/// (its own SSH_ASKPASS helper): the play runs `id -un` and a copy on the login node over
/// one login, so `max_uses = 1` holds; the token used up is refused once per connection.
#[test]
fn the_documented_ansible_play_runs_on_the_login_node_with_one_login() {
    require_ansible!();
    one_login_per_play("play", &[], 3);
}

/// The same example with `ansible_ssh_password_mechanism=sshpass` (what ansible-core before
/// 2.19 always does): sshpass answers the `ID token` prompt, one login per play.
#[test]
fn the_documented_ansible_play_logs_in_once_through_sshpass_too() {
    require_ansible!();
    one_login_per_play(
        "sshpass",
        &[("ANSIBLE_SSH_PASSWORD_MECHANISM", "sshpass")],
        1,
    );
}

/// The example pins the login node's host key: a server with another key, or one the
/// job's known_hosts does not name, gets no answer (no login attempt reaches the module),
/// whichever way Ansible answers.
#[test]
fn the_documented_ansible_example_sends_nothing_to_a_host_it_does_not_know() {
    require_ansible!();
    let s = start("ansible-hostkey", "");
    let runner = Runner::new("ansible-hostkey-runner");
    let other = runner.sb.path("other_key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(made.success());
    let public = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut key = public.split_whitespace();
    let (kind, key) = (key.next().unwrap(), key.next().unwrap());
    let another_key = format!("[127.0.0.1]:{} {kind} {key}", s.port);
    let another_host = format!("login.hpc.example.org {kind} {key}");
    let token = keys::mint_gitlab_shaped(&claims("alice", "hostkey"));
    for known in [&another_host, &another_key] {
        for mechanism in ["ssh_askpass", "sshpass"] {
            let o = runner.run(
                &s,
                &token,
                "",
                &[
                    ("IDTOKEN_KNOWN_HOSTS", known),
                    ("ANSIBLE_SSH_PASSWORD_MECHANISM", mechanism),
                ],
            );
            let audit = settled_audit(&s);
            assert!(audit.is_empty(), "{known} {mechanism}: {audit:#?}");
            // ssh says "Host key verification failed" and Ansible says why.
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                !o.status.success()
                    && !out.contains("who.stdout")
                    && out.contains("Host Key checking is enabled"),
                "{known} {mechanism}: {}",
                text(&o)
            );
        }
    }
    let audit = settled_audit(&s);
    assert!(audit.is_empty(), "{audit:#?}");
    assert!(
        !s.sshd_log().contains("keyboard-interactive"),
        "{}",
        s.sshd_log()
    );
}

/// What docs/ci.md says of a play without ControlPersist: every task logs in again, the
/// four-task play takes LOGINS_WITHOUT_CONTROLPERSIST logins (fewer with pipelining), and
/// under `max_uses = 1` it fails at the second.
#[test]
fn without_controlpersist_every_task_logs_in_again() {
    require_ansible!();
    let doc = idtoken_e2e::docs::read(DOC);
    let said = format!(
        "takes {LOGINS_WITHOUT_CONTROLPERSIST} logins ({LOGINS_WITHOUT_CONTROLPERSIST_PIPELINING} with `ansible_pipelining: true`)"
    );
    assert!(doc.replace('\n', " ").contains(&said), "{DOC} says: {said}");
    let s = start("ansible-nocp", "");
    let runner = Runner::new("ansible-nocp-runner");
    for (args, logins) in [
        ("-e ansible_ssh_args=-C", LOGINS_WITHOUT_CONTROLPERSIST),
        (
            "-e ansible_ssh_args=-C -e ansible_pipelining=true",
            LOGINS_WITHOUT_CONTROLPERSIST_PIPELINING,
        ),
    ] {
        let before = settled_audit(&s).len();
        let token = keys::mint_gitlab_shaped(&claims("alice", "nocp"));
        let o = runner.run(&s, &token, args, &[]);
        assert_play_ran(&o, &s);
        let audit = settled_audit(&s);
        assert_eq!(audit.len() - before, logins, "{args}: {audit:#?}");
        assert!(audit[before..].iter().all(|l| l.contains("decision=allow")));
    }

    // max_uses = 1: the second login of the play is refused.
    s.pam.sandbox.config(
        "max_uses = 1",
        "[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n",
    );
    let before = settled_audit(&s).len();
    let token = keys::mint_gitlab_shaped(&claims("alice", "nocp-once"));
    let o = runner.run(&s, &token, "-e ansible_ssh_args=-C", &[]);
    assert!(!o.status.success(), "{}", text(&o));
    let audit = settled_audit(&s);
    assert!(
        audit.len() - before == 2
            && audit[before].contains("decision=allow")
            && audit[before + 1].contains("reason=replayed"),
        "{audit:#?}\n{}",
        text(&o)
    );
}
