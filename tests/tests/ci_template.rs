//! The client side as CI users get it, run against real sshds: docs/ci.md's job example
//! exactly as printed, the CI template's before_script (one login per job over
//! ControlMaster, no retry of a refused token, retry of a connection closed before
//! authentication), and a rogue server asking for `ID token: ` that must get nothing from
//! either askpass helper, the helper embedded in the template, or a job that uses the
//! template. A cancelled job (its process group killed, TERM or INT as a runner sends, or
//! its shell alone SIGKILLed) leaves no master connection past the token's exp and no
//! socket another process of the runner's account could use.
//!
//! The jobs are taken from docs/ci.md (between `<!-- job-example:start/end -->`) and from
//! packaging/gitlab-ci/idtoken-ssh.gitlab-ci.yml by a small reader of the YAML subset they
//! use, and run as GitLab would: variables exported (CI/CD variables set by the site
//! override the file's, as in GitLab), before_script then script in one `sh -e`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idtoken_e2e::docs;
use idtoken_e2e::keys::{self, mint_exact_len, now};
use idtoken_e2e::pam::PamHarness;
use idtoken_e2e::require;
use idtoken_e2e::sandbox::{Sandbox, set_mode};
use idtoken_e2e::sshd::{self, Sshd};

const STACK: &str = "auth [success=done ignore=ignore default=die] MODULE config=CONFIG\nauth required pam_unix.so try_first_pass";
const TEMPLATE: &str = "packaging/gitlab-ci/idtoken-ssh.gitlab-ci.yml";
/// The name a rogue server is not: the login node every test job names in $IDTOKEN_HOST.
const LOGIN_NAME: &str = "login.hpc.example.org";

/// One job of a .gitlab-ci.yml: what a runner would execute.
#[derive(Debug, Default)]
struct Job {
    variables: Vec<(String, String)>,
    before_script: Vec<String>,
    script: Vec<String>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Cuts a ` # comment` off a plain YAML value.
fn strip_comment(v: &str) -> &str {
    let mut quote = None;
    let bytes = v.as_bytes();
    for (i, c) in v.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if i == 0 || bytes[i - 1] == b' ' => return v[..i].trim_end(),
            _ => {}
        }
    }
    v.trim_end()
}

fn unquote(v: &str) -> String {
    let v = strip_comment(v).trim();
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            assert!(
                !v[1..v.len() - 1].contains('\\'),
                "escapes in quoted values are not supported: {v}"
            );
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}

/// Reads the jobs of a YAML document written in the subset our examples use: top-level
/// jobs, `variables:` of scalars, `before_script:`/`script:` lists of plain, `|` and `>-`
/// items. Anything else under those keys fails the test, so an example is never half-read.
fn parse_jobs(yaml: &str) -> BTreeMap<String, Job> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut jobs = BTreeMap::new();
    let (mut job, mut section): (Option<String>, Option<String>) = (None, None);
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        match indent(line) {
            0 => {
                job = Some(t.trim_end_matches(':').to_string());
                jobs.entry(t.trim_end_matches(':').to_string())
                    .or_insert_with(Job::default);
                section = None;
            }
            2 => section = Some(t.trim_end_matches(':').to_string()),
            4 => {
                let Some(j) = job.as_ref().and_then(|j| jobs.get_mut(j)) else {
                    panic!("line outside a job: {line}")
                };
                match section.as_deref() {
                    Some("variables") => {
                        let (k, v) = t
                            .split_once(':')
                            .unwrap_or_else(|| panic!("not a variable: {line}"));
                        j.variables.push((k.to_string(), unquote(v)));
                    }
                    Some(s @ ("script" | "before_script")) => {
                        let item = t
                            .strip_prefix("- ")
                            .unwrap_or_else(|| panic!("not a list item: {line}"));
                        // The item's continuation: every following line indented deeper.
                        let mut block = Vec::new();
                        while i < lines.len()
                            && (lines[i].trim().is_empty() || indent(lines[i]) > 4)
                        {
                            block.push(lines[i]);
                            i += 1;
                        }
                        while block.last().is_some_and(|l| l.trim().is_empty()) {
                            block.pop();
                        }
                        let depth = block
                            .iter()
                            .filter(|l| !l.trim().is_empty())
                            .map(|l| indent(l))
                            .min()
                            .unwrap_or(0);
                        let dedented: Vec<&str> =
                            block.iter().map(|l| l.get(depth..).unwrap_or("")).collect();
                        let text = match item.trim() {
                            "|" => dedented.join("\n"),
                            ">-" | ">" => dedented.join(" "),
                            plain => {
                                assert!(
                                    !plain.starts_with(['"', '\'', '|', '>', '{', '[']),
                                    "unsupported list item: {line}"
                                );
                                std::iter::once(strip_comment(plain))
                                    .chain(dedented.iter().map(|l| strip_comment(l.trim())))
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            }
                        };
                        if s == "script" {
                            j.script.push(text);
                        } else {
                            j.before_script.push(text);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    jobs
}

fn shell_double_quote(v: &str) -> String {
    // GitLab expands $VARIABLES in variable values; the shell does the same here, and
    // nothing else in the value is special.
    let escaped: String = v
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' | '`' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

/// The job example of docs/ci.md, between its markers (found there exactly once).
fn readme_job() -> Job {
    let span = docs::span("docs/ci.md", "job-example");
    let yaml = docs::fenced(&span, "yaml", "the job-example span");
    let mut jobs = parse_jobs(&yaml);
    assert_eq!(jobs.len(), 1, "one job in docs/ci.md's example: {jobs:?}");
    jobs.pop_first().map(|(_, j)| j).unwrap()
}

/// The template's hidden job, with `script` lines added as a job that extends it would.
fn template_job(script: &[&str]) -> Job {
    let text = std::fs::read_to_string(idtoken_e2e::workspace_root().join(TEMPLATE)).unwrap();
    let mut jobs = parse_jobs(&text);
    let mut job = jobs
        .remove(".idtoken-ssh")
        .expect("the template defines .idtoken-ssh");
    assert!(!job.before_script.is_empty(), "{job:?}");
    job.script = script.iter().map(|s| s.to_string()).collect();
    job
}

/// Where a job runs: its build directory, a TMPDIR of its own (empty again when the job
/// cleaned up), and `idtoken-askpass` on PATH as an image with the idtoken package has it.
struct Runner {
    sb: Sandbox,
}

impl Runner {
    fn new(tag: &str) -> Runner {
        let sb = Sandbox::new(tag);
        for d in ["build", "tmp", "bin"] {
            std::fs::create_dir_all(sb.path(d)).unwrap();
        }
        set_mode(&sb.path("tmp"), 0o1777);
        std::os::unix::fs::symlink(idtoken_e2e::idtoken_bin(), sb.path("bin/idtoken-askpass"))
            .unwrap();
        Runner { sb }
    }

    fn tmp_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.sb.path("tmp"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Runs `job` with the job token and the site's CI/CD variables.
    fn run(&self, job: &Job, token: &str, site: &[(&str, String)]) -> Output {
        sshd::run_bounded(&mut self.command(job, token, site))
    }

    /// The job's shell, as `run` starts it.
    fn command(&self, job: &Job, token: &str, site: &[(&str, String)]) -> Command {
        let mut script = String::new();
        for (k, v) in &job.variables {
            if !site.iter().any(|(s, _)| s == k) {
                script.push_str(&format!("{k}={}; export {k}\n", shell_double_quote(v)));
            }
        }
        for line in job.before_script.iter().chain(&job.script) {
            script.push_str(line);
            script.push('\n');
        }
        let file = self.sb.write("job.sh", script.as_bytes());
        let path = format!(
            "{}:{}",
            self.sb.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new("sh");
        c.arg("-e")
            .arg(&file)
            .current_dir(self.sb.path("build"))
            .env("PATH", path)
            .env("TMPDIR", self.sb.path("tmp"))
            .env("IDTOKEN", token)
            .env("GITLAB_USER_LOGIN", "alice")
            .env("CI", "true");
        for v in [
            "SSH_ASKPASS",
            "SSH_ASKPASS_REQUIRE",
            "SSH_AUTH_SOCK",
            "DISPLAY",
            "IDTOKEN_HOST",
            "IDTOKEN_USER",
            "IDTOKEN_PORT",
        ] {
            c.env_remove(v);
        }
        for (k, v) in site {
            c.env(k, v);
        }
        c
    }

    /// PIDs of processes whose command line names this runner's TMPDIR: the job's ssh
    /// master (its ControlPath and known_hosts are there) and any ssh talking to it.
    fn masters(&self) -> Vec<i32> {
        let tmp = self.sb.path("tmp").display().to_string();
        let o = Command::new("pgrep").args(["-f", &tmp]).output().unwrap();
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// The job's control socket, `TMPDIR/idtoken.XXXXXXXX/c`.
    fn control_socket(&self) -> Option<std::path::PathBuf> {
        self.tmp_entries()
            .iter()
            .map(|d| self.sb.path("tmp").join(d).join("c"))
            .find(|c| c.exists())
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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

/// The host key line for 127.0.0.1:`port`, as `ssh-keyscan -p PORT 127.0.0.1` prints it.
fn known_hosts_line(s: &Sshd, port: u16) -> String {
    let public = std::fs::read_to_string(s.pam.sandbox.path("ssh_host_ed25519_key.pub")).unwrap();
    let mut fields = public.split_whitespace();
    let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
    format!("[127.0.0.1]:{port} {kind} {key}")
}

/// The site's CI/CD variables for a login node on 127.0.0.1:`port`.
fn site(host: &str, port: u16, known_hosts: String) -> Vec<(&'static str, String)> {
    vec![
        ("IDTOKEN_HOST", host.to_string()),
        ("IDTOKEN_PORT", port.to_string()),
        ("IDTOKEN_KNOWN_HOSTS", known_hosts),
        ("IDTOKEN_RETRY_MS", "100".to_string()),
    ]
}

fn token(user: &str, tag: &str, len: usize) -> (String, String) {
    let jti = format!("ci-{tag}-{}-{}", now(), std::process::id());
    (mint_exact_len(&keys::live_claims(user, &jti), len), jti)
}

/// Waits for `n` audit lines, then a little longer to see that no more come.
fn audit_settled(s: &Sshd, n: usize) -> Vec<String> {
    s.pam
        .syslog
        .wait_for("decision=", n, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1500));
    s.pam.syslog.audit_lines()
}

fn require_sshd() -> bool {
    sshd::available().is_ok() && sshd::which("ssh-keyscan").is_some()
}

#[test]
fn the_readme_job_example_logs_in_as_printed() {
    require!(
        require_sshd(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    let job = readme_job();
    let s = start("ci-readme", "");
    // The documented way: ssh-keyscan, checked, pasted into IDTOKEN_KNOWN_HOSTS.
    let scan = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &s.port.to_string(), "127.0.0.1"])
        .output()
        .unwrap();
    let known = String::from_utf8_lossy(&scan.stdout).trim().to_string();
    assert_eq!(known, known_hosts_line(&s, s.port), "ssh-keyscan's line");
    let runner = Runner::new("ci-readme-runner");
    let (tok, jti) = token("alice", "readme", 2300);
    let o = runner.run(&job, &tok, &site("127.0.0.1", s.port, known));
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with("alice\n"),
        "docs/ci.md's job did not log in: {}\nsshd log:\n{}",
        text(&o),
        s.sshd_log()
    );
    let audit = audit_settled(&s, 1);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(
        audit[0].contains("decision=allow") && audit[0].contains(&jti),
        "{audit:?}"
    );
}

#[test]
fn the_template_logs_in_once_for_ssh_and_scp_and_cleans_up() {
    require!(
        require_sshd(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    // max_uses = 1: a second login with the job's token would be refused.
    let s = start("ci-once", "max_uses = 1");
    let runner = Runner::new("ci-once-runner");
    let job = template_job(&[
        "idtoken_ssh 'echo first; id -un'",
        "mkdir -p results && echo data-42 > results/out.txt",
        // -O: the harness's sshd has no sftp Subsystem line; the copy is the same session.
        "idtoken_scp -O -r results/ \"$IDTOKEN_USER@$IDTOKEN_HOST:project/\"",
        "idtoken_ssh 'cat project/out.txt'",
    ]);
    let (tok, jti) = token("alice", "once", 2100);
    let o = runner.run(
        &job,
        &tok,
        &site("127.0.0.1", s.port, known_hosts_line(&s, s.port)),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out == "first\nalice\ndata-42\n",
        "{}\nsshd log:\n{}",
        text(&o),
        s.sshd_log()
    );
    let copied = s.pam.sandbox.path("home/alice/project/out.txt");
    assert_eq!(
        std::fs::read_to_string(&copied).unwrap_or_default(),
        "data-42\n"
    );
    let audit = audit_settled(&s, 1);
    assert_eq!(audit.len(), 1, "one login for the whole job: {audit:?}");
    assert!(
        audit[0].contains("decision=allow") && audit[0].contains(&jti),
        "{audit:?}"
    );
    // The trap closed the master and removed the private directory.
    assert_eq!(runner.tmp_entries(), Vec::<String>::new(), "left in TMPDIR");
    let tmp = runner.sb.path("tmp").display().to_string();
    let masters = Command::new("pgrep").args(["-f", &tmp]).output().unwrap();
    assert!(
        masters.stdout.is_empty(),
        "ssh master left running: {}",
        text(&masters)
    );
}

#[test]
fn the_template_never_retries_a_refused_token() {
    require!(
        require_sshd(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    let s = start("ci-refused", "");
    let runner = Runner::new("ci-refused-runner");
    let job = template_job(&["idtoken_ssh 'echo LOGIN-OK'"]);
    // A token of bob's for alice's account: refused by the module.
    let (tok, _) = token("bob", "refused", 1800);
    let o = runner.run(
        &job,
        &tok,
        &site("127.0.0.1", s.port, known_hosts_line(&s, s.port)),
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("LOGIN-OK"));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("idtoken_connect: closed before"),
        "a refused token was retried: {}",
        text(&o)
    );
    let audit = audit_settled(&s, 1);
    assert_eq!(audit.len(), 1, "one attempt, one audit line: {audit:?}");
    assert!(audit[0].contains("reason=user_mismatch"), "{audit:?}");
}

/// A TCP front of sshd that closes its first `drop` connections at once, as sshd does
/// beyond MaxStartups, and relays the later ones. Returns its port and connection count.
fn dropping_front(sshd_port: u16, drop: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            if count.fetch_add(1, Ordering::SeqCst) < drop {
                drop_now(client);
                continue;
            }
            let Ok(server) = TcpStream::connect(("127.0.0.1", sshd_port)) else {
                continue;
            };
            relay(client, server);
        }
    });
    (port, seen)
}

fn drop_now(s: TcpStream) {
    let _ = s.shutdown(std::net::Shutdown::Both);
}

fn relay(a: TcpStream, b: TcpStream) {
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
        pipe(a, b2);
        pipe(b, a2);
    }
}

#[test]
fn the_template_retries_a_connection_closed_before_authentication() {
    require!(
        require_sshd(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    let s = start("ci-retry", "max_uses = 1");
    let (front, seen) = dropping_front(s.port, 2);
    let runner = Runner::new("ci-retry-runner");
    let job = template_job(&["idtoken_ssh 'echo LOGIN-OK'"]);
    let (tok, _) = token("alice", "retry", 2000);
    let o = runner.run(
        &job,
        &tok,
        &site("127.0.0.1", front, known_hosts_line(&s, front)),
    );
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("LOGIN-OK"),
        "{}",
        text(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.matches("idtoken_connect: closed before authentication")
            .count(),
        2,
        "two retries: {err}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 3, "three connections");
    let audit = audit_settled(&s, 1);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(audit[0].contains("decision=allow"), "{audit:?}");
}

/// How a job reaches the rogue server.
fn rogue_ssh(port: u16) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-p", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "PreferredAuthentications=keyboard-interactive"])
        .args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
        ])
        .arg("alice@127.0.0.1")
        .arg("echo ROGUE-LOGIN")
        .stdin(std::process::Stdio::null())
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("DISPLAY")
        .env("IDTOKEN_HOST", LOGIN_NAME)
        .env("IDTOKEN_USER", "alice");
    c
}

/// Whether the rogue's PAM stack saw the token: the module logs the jti of every token it
/// decides on (the rogue accepts our test key, so a token that arrives is allowed).
fn rogue_saw(rogue: &Sshd, jti: &str) -> bool {
    std::thread::sleep(Duration::from_millis(500));
    rogue.pam.syslog.lines().iter().any(|l| l.contains(jti))
}

#[test]
fn a_rogue_server_asking_for_the_token_gets_nothing() {
    require!(
        require_sshd(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    // The rogue: a server the job talks to that is not the login node, whose PAM stack
    // prompts `ID token: ` (the module) and would accept, and so replay, what it receives.
    let rogue = start("ci-rogue", "");
    let root = idtoken_e2e::workspace_root();
    let runner = Runner::new("ci-rogue-runner");
    let link = runner.sb.path("bin/idtoken-askpass");

    // Control: a helper that answers any `ID token` prompt (the template's before v2)
    // hands the token over, so the check below can see a leak.
    let (tok, jti) = token("alice", "rogue-control", 1500);
    let loose = runner.sb.write(
        "loose-askpass",
        b"#!/bin/sh\ncase \"$1\" in *\"ID token\"*) ;; *) exit 1 ;; esac\n\
          n=$(printf '%s\\n' \"$1\" | sed -n 's/.*ID token (part \\([0-9][0-9]*\\)).*/\\1/p'); n=${n:-1}\n\
          printf '%s\\n' \"$IDTOKEN\" | cut -c \"$(( (n - 1) * 1000 + 1 ))-$(( n * 1000 ))\"\n",
    );
    set_mode(&loose, 0o755);
    let o = sshd::run_bounded(
        rogue_ssh(rogue.port)
            .env("SSH_ASKPASS", &loose)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("IDTOKEN", &tok),
    );
    assert!(
        rogue_saw(&rogue, &jti) && String::from_utf8_lossy(&o.stdout).contains("ROGUE-LOGIN"),
        "control: a loose helper leaks the token to the rogue: {}\n{:?}",
        text(&o),
        rogue.pam.syslog.lines()
    );

    // Both helpers, set for the whole job as the old template did, reaching the rogue as
    // 127.0.0.1 while $IDTOKEN_HOST names the login node.
    let script = root.join("packaging/gitlab-ci/idtoken-askpass.sh");
    let embedded = embedded_helper(&runner.sb);
    for (name, helper) in [
        ("idtoken-askpass", &link),
        ("idtoken-askpass.sh", &script),
        ("the template's embedded helper", &embedded),
    ] {
        let (tok, jti) = token("alice", &format!("rogue-{name}"), 1500);
        let o = sshd::run_bounded(
            rogue_ssh(rogue.port)
                .env("SSH_ASKPASS", helper)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("IDTOKEN", &tok),
        );
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("ROGUE-LOGIN"),
            "{name}: {}",
            text(&o)
        );
        assert!(
            !rogue_saw(&rogue, &jti),
            "{name} gave the token to the rogue: {:?}",
            rogue.pam.syslog.lines()
        );
    }

    // A job using the template that also talks to the rogue (say git over ssh to a host
    // whose key checking the image turned off): ssh there has no askpass at all.
    let (tok, jti) = token("alice", "rogue-template", 1500);
    let rogue_line = format!(
        "ssh -F /dev/null -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
         -o PreferredAuthentications=keyboard-interactive -o PubkeyAuthentication=no \
         -o NumberOfPasswordPrompts=1 alice@127.0.0.1 'echo ROGUE-LOGIN' < /dev/null || echo REFUSED",
        rogue.port
    );
    let job = template_job(&[&rogue_line]);
    let o = runner.run(
        &job,
        &tok,
        &site(
            LOGIN_NAME,
            22,
            format!("{LOGIN_NAME} ssh-ed25519 AAAA-unused"),
        ),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("REFUSED") && !out.contains("ROGUE-LOGIN"),
        "{}",
        text(&o)
    );
    assert!(
        !rogue_saw(&rogue, &jti),
        "the template's job gave the token to the rogue: {:?}",
        rogue.pam.syslog.lines()
    );
}

/// idtoken(1)'s CI job is the job of docs/ci.md that the tests run against a real sshd, so
/// it sets `IDTOKEN_HOST` (the helper answers nothing without it) and pins the host key.
#[test]
fn the_man_pages_ci_job_is_the_tested_one() {
    let span = docs::span("docs/ci.md", "job-example");
    let yaml = docs::fenced(&span, "yaml", "the job-example span");
    let man = docs::man_example("packaging/man/idtoken.1", "ci-job");
    assert_eq!(man, yaml, "idtoken(1)'s CI job differs from docs/ci.md's");
    let job = readme_job();
    assert!(
        job.variables.iter().any(|(k, _)| k == "IDTOKEN_HOST"),
        "{job:?}"
    );
}

#[test]
fn the_helpers_in_readme_and_template_are_the_packaged_script() {
    let root = idtoken_e2e::workspace_root();
    let script =
        std::fs::read_to_string(root.join("packaging/gitlab-ci/idtoken-askpass.sh")).unwrap();
    let span = docs::span("docs/ci.md", "askpass-sh");
    let in_doc = span
        .strip_prefix("\n```sh\n")
        .and_then(|s| s.strip_suffix("```\n"))
        .expect("docs/ci.md's askpass-sh span is one ```sh block");
    assert_eq!(
        in_doc, script,
        "docs/ci.md's sh helper differs from the packaged one"
    );
    let job = template_job(&[]);
    let before = job.before_script.join("\n");
    for line in script.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            before.contains(line),
            "the template's helper lacks a line of idtoken-askpass.sh: {line}"
        );
    }
}

/// A job's shell started in a process group of its own, as a runner starts it; on drop
/// (a failed test too) the group and any master that left it are killed, by PID.
struct RunningJob<'a> {
    runner: &'a Runner,
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl<'a> RunningJob<'a> {
    fn start(runner: &'a Runner, job: &Job, token: &str, site: &[(&str, String)]) -> Self {
        use std::os::unix::process::CommandExt;
        let mut child = runner
            .command(job, token, site)
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        RunningJob {
            runner,
            child,
            lines,
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// Waits for the job to print `line`; panics after 30 s.
    fn wait_for(&self, line: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l == line => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("the job never printed {line}");
    }

    /// Waits until the job's foreground command `cmd` runs (a signal sent while the shell
    /// is still forking it would leave it running, and the shell's trap waiting for it).
    fn wait_for_command(&self, cmd: &str) {
        for _ in 0..100 {
            let o = Command::new("pgrep")
                .args(["-g", &self.pid().to_string(), "-f", &format!("^{cmd}$")])
                .output()
                .unwrap();
            if o.status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the job never ran {cmd}");
    }

    /// Sends `signal` to the job's process group (`group`) or to its shell alone.
    fn signal(&self, signal: i32, group: bool) {
        let target = if group { -self.pid() } else { self.pid() };
        // SAFETY: kill(2) on the process (group) this test started.
        assert_eq!(unsafe { libc::kill(target, signal) }, 0);
    }

    /// The shell's exit status, waiting at most 20 s.
    fn exit_status(&mut self) -> std::process::ExitStatus {
        for _ in 0..200 {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the job's shell did not end");
    }
}

impl Drop for RunningJob<'_> {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the group this test started and on the masters it left.
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        for pid in self.runner.masters() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// A token of alice's for the job, valid for `secs` more seconds.
fn short_token(tag: &str, secs: i64) -> (String, i64) {
    let exp = now() + secs;
    let jti = format!("ci-{tag}-{}-{}", now(), std::process::id());
    let claims = keys::with(
        keys::live_claims("alice", &jti),
        "exp",
        serde_json::json!(exp),
    );
    (mint_exact_len(&claims, 1800), exp)
}

/// Whether another process of the runner's account can run a command through `socket`:
/// `ssh -O check` on it, and a command over it with no way to log in by itself.
fn socket_works(socket: &std::path::Path, s: &Sshd) -> Option<String> {
    let path = format!("ControlPath={}", socket.display());
    let check = Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            &path,
            "-O",
            "check",
            "alice@127.0.0.1",
        ])
        .output()
        .unwrap();
    if check.status.success() {
        return Some(format!("ssh -O check answered: {}", text(&check)));
    }
    let o = sshd::run_bounded(
        Command::new("ssh")
            .args(["-F", "/dev/null", "-p", &s.port.to_string(), "-o", &path])
            .args(["-o", "ControlMaster=no", "-o", "BatchMode=yes"])
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["alice@127.0.0.1", "echo THROUGH-THE-SOCKET"])
            .stdin(std::process::Stdio::null())
            .env_remove("SSH_ASKPASS")
            .env_remove("SSH_AUTH_SOCK"),
    );
    String::from_utf8_lossy(&o.stdout)
        .contains("THROUGH-THE-SOCKET")
        .then(|| format!("a command ran over it: {}", text(&o)))
}

/// Waits until the job's masters are gone, at the latest `exp` + `bound` seconds; returns
/// whether they went (and when, relative to exp).
fn masters_gone_by(runner: &Runner, exp: i64, bound: i64) -> Result<i64, Vec<i32>> {
    loop {
        let left = runner.masters();
        if left.is_empty() {
            return Ok(now() - exp);
        }
        if now() > exp + bound {
            return Err(left);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A job that logged in, then is cancelled while a long command runs.
fn cancelled_job(tag: &str, kill: impl FnOnce(&RunningJob), expect_exit: Option<i32>) {
    let s = start(tag, "");
    let runner = Runner::new(&format!("{tag}-runner"));
    let job = template_job(&["idtoken_ssh 'echo MASTER-UP'", "echo READY", "sleep 300"]);
    let (tok, exp) = short_token(tag, 20);
    let mut running = RunningJob::start(
        &runner,
        &job,
        &tok,
        &site("127.0.0.1", s.port, known_hosts_line(&s, s.port)),
    );
    running.wait_for("MASTER-UP");
    running.wait_for("READY");
    let socket = runner
        .control_socket()
        .unwrap_or_else(|| panic!("no control socket in {:?}", runner.tmp_entries()));
    assert!(
        socket_works(&socket, &s).is_some(),
        "control: the live master's socket does not work"
    );
    kill(&running);
    if let Some(code) = expect_exit {
        let st = running.exit_status();
        assert_eq!(st.code(), Some(code), "the job's shell: {st}");
    }
    // The bound: exp, plus what a watchdog and ssh need to act (the server's leeway would
    // still accept the token for 60 s more).
    match masters_gone_by(&runner, exp, 5) {
        Ok(at) => eprintln!("{tag}: master gone {at} s relative to exp"),
        Err(left) => panic!(
            "the master outlived exp + 5 s: {left:?}; socket: {:?}",
            socket_works(&socket, &s)
        ),
    }
    if let Some(how) = socket_works(&socket, &s) {
        panic!("the socket still works after the job was cancelled: {how}");
    }
}

#[test]
fn a_job_killed_with_its_process_group_leaves_no_master_nor_socket() {
    require!(
        require_sshd(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    cancelled_job("ci-killpg", |j| j.signal(libc::SIGKILL, true), None);
}

#[test]
fn a_job_whose_shell_alone_is_killed_loses_its_master_by_exp() {
    require!(
        require_sshd(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    cancelled_job("ci-killsh", |j| j.signal(libc::SIGKILL, false), None);
}

#[test]
fn a_job_stopped_with_term_or_int_runs_the_cleanup() {
    require!(
        require_sshd(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    for (name, signal, code) in [("term", libc::SIGTERM, 143), ("int", libc::SIGINT, 130)] {
        let tag = format!("ci-{name}");
        let s = start(&tag, "");
        let runner = Runner::new(&format!("{tag}-runner"));
        let job = template_job(&["idtoken_ssh 'echo MASTER-UP'", "echo READY", "sleep 300"]);
        let (tok, _) = short_token(&tag, 60);
        let mut running = RunningJob::start(
            &runner,
            &job,
            &tok,
            &site("127.0.0.1", s.port, known_hosts_line(&s, s.port)),
        );
        running.wait_for("READY");
        running.wait_for_command("sleep 300");
        running.signal(signal, true);
        let st = running.exit_status();
        assert_eq!(st.code(), Some(code), "{name}: the job's shell: {st}");
        // The trap ran: master closed (within 5 s, well before exp), directory removed.
        if let Err(left) = masters_gone_by(&runner, now(), 5) {
            panic!("{name}: master left running: {left:?}");
        }
        assert_eq!(
            runner.tmp_entries(),
            Vec::<String>::new(),
            "{name}: the private directory was left"
        );
    }
}

/// The askpass helper the template writes (its `<<'ASKPASS'` here-document, as the
/// runner's shell sees it), written to `dir/askpass` and made executable.
fn embedded_helper(dir: &Sandbox) -> std::path::PathBuf {
    let job = template_job(&[]);
    let before = job.before_script.join("\n");
    let (_, rest) = before
        .split_once("<<'ASKPASS'\n")
        .expect("the template writes its helper with <<'ASKPASS'");
    let (body, _) = rest
        .split_once("\nASKPASS\n")
        .expect("the here-document ends with ASKPASS");
    let p = dir.write("embedded-askpass", format!("{body}\n").as_bytes());
    set_mode(&p, 0o700);
    p
}

#[test]
fn the_templates_embedded_helper_answers_the_login_node_and_no_one_else() {
    require!(
        require_sshd(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    let s = start("ci-embedded", "");
    let runner = Runner::new("ci-embedded-runner");
    let helper = embedded_helper(&runner.sb);
    let login = |tok: &str, host: &str, user: Option<&str>| {
        let mut c = s.ssh("alice", "id -un");
        c.env("SSH_ASKPASS", &helper)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("IDTOKEN_HOST", host)
            .env("IDTOKEN", tok)
            .env_remove("IDTOKEN_USER");
        if let Some(u) = user {
            c.env("IDTOKEN_USER", u);
        }
        sshd::run_bounded(&mut c)
    };
    // The login node's prompt, a token in three parts: answered, logged in.
    let (tok, jti) = token("alice", "embedded", 2300);
    let o = login(&tok, "127.0.0.1", Some("alice"));
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout) == "alice\n",
        "the embedded helper did not log in: {}\nsshd log:\n{}",
        text(&o),
        s.sshd_log()
    );
    let audit = audit_settled(&s, 1);
    assert!(
        audit.len() == 1 && audit[0].contains("decision=allow") && audit[0].contains(&jti),
        "{audit:?}"
    );
    // Another host (the server asking is not $IDTOKEN_HOST), another account: nothing sent.
    for (host, user) in [(LOGIN_NAME, Some("alice")), ("127.0.0.1", Some("bob"))] {
        let (tok, jti) = token("alice", "embedded-no", 1500);
        let o = login(&tok, host, user);
        assert!(!o.status.success(), "{host} {user:?}: {}", text(&o));
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            !s.pam.syslog.lines().iter().any(|l| l.contains(&jti)),
            "the embedded helper sent the token for host {host}, user {user:?}"
        );
    }
}
