//! The askpass helpers, `idtoken askpass` (also under its `idtoken-askpass` name), the POSIX
//! sh script packaging/gitlab-ci/idtoken-askpass.sh, the copy the CI template writes into
//! every job, and the copy pam_idtoken(8) prints, run side by side: the parts a
//! `(USER@HOST) ID token` prompt of the configured login host asks for (host case ignored,
//! as ssh lowercases it; PAM message lines that sshd <= 10.2 glues before the prompt passed
//! over), and exit 1 with nothing on stdout for every other prompt, another host or
//! account, and a missing $IDTOKEN or $IDTOKEN_HOST.

use std::path::PathBuf;
use std::process::Command;

use idtoken_e2e::sandbox::Sandbox;

const HOST: &str = "login1.example.org";

fn token() -> String {
    (0..2345)
        .map(|i| char::from(b'A' + (i % 26) as u8))
        .collect()
}

/// One way to run a helper with a prompt.
#[derive(Clone)]
enum Helper {
    Subcommand(PathBuf),
    AskpassName(PathBuf),
    Sh(PathBuf),
}

impl Helper {
    fn command(&self, prompt: &str) -> Command {
        let mut c = match self {
            Helper::Subcommand(bin) => {
                let mut c = Command::new(bin);
                c.arg("askpass");
                c
            }
            Helper::AskpassName(link) => Command::new(link),
            Helper::Sh(script) => {
                let mut c = Command::new("sh");
                c.arg(script);
                c
            }
        };
        c.arg(prompt)
            .env_remove("IDTOKEN")
            .env_remove("IDTOKEN_HOST")
            .env_remove("IDTOKEN_USER");
        c
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn helpers(s: &Sandbox) -> Vec<(&'static str, Helper)> {
    let bin = idtoken_e2e::idtoken_bin();
    let link = s.path("idtoken-askpass");
    std::os::unix::fs::symlink(&bin, &link).unwrap();
    let script = idtoken_e2e::workspace_root().join("packaging/gitlab-ci/idtoken-askpass.sh");
    // What jobs run: the helper the template's before_script writes (its heredoc).
    let template = std::fs::read_to_string(
        idtoken_e2e::workspace_root().join("packaging/gitlab-ci/idtoken-ssh.gitlab-ci.yml"),
    )
    .unwrap();
    let embedded: String = template
        .split_once("<<'ASKPASS'\n")
        .and_then(|(_, rest)| rest.split_once("\n      ASKPASS\n"))
        .map(|(body, _)| body)
        .expect("the template writes its helper with a <<'ASKPASS' heredoc")
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("      ").unwrap_or(l)))
        .collect();
    assert!(embedded.starts_with("#!/bin/sh\n"), "{embedded}");
    let embedded_path = s.write("template-askpass", embedded.as_bytes());
    let man = idtoken_e2e::docs::man_example("packaging/man/pam_idtoken.8", "askpass-sh");
    let man_path = s.write("man-askpass", man.as_bytes());
    vec![
        ("idtoken askpass", Helper::Subcommand(bin)),
        ("idtoken-askpass", Helper::AskpassName(link)),
        ("idtoken-askpass.sh", Helper::Sh(script)),
        ("the template's helper", Helper::Sh(embedded_path)),
        ("pam_idtoken(8)'s helper", Helper::Sh(man_path)),
    ]
}

/// pam_idtoken(8) prints the packaged script, byte for byte.
#[test]
fn the_man_pages_sh_helper_is_the_packaged_script() {
    let script = std::fs::read_to_string(
        idtoken_e2e::workspace_root().join("packaging/gitlab-ci/idtoken-askpass.sh"),
    )
    .unwrap();
    assert_eq!(
        idtoken_e2e::docs::man_example("packaging/man/pam_idtoken.8", "askpass-sh"),
        script
    );
}

fn assert_refused(name: &str, r: &Run, why: &str) {
    assert_eq!(r.code, 1, "{name}: {why} must exit 1 ({})", r.stderr);
    assert!(
        r.stdout.is_empty(),
        "{name}: {why}: nothing on stdout, got {} bytes",
        r.stdout.len()
    );
}

#[test]
fn askpass_answers_the_parts_the_login_host_asks_for() {
    let s = Sandbox::new("askpass");
    let t = token();
    for (name, h) in helpers(&s) {
        for (prompt, user, expect) in [
            (format!("(ci@{HOST}) ID token: "), None, &t[..1000]),
            (
                format!("(ci@{HOST}) ID token (part 2): "),
                None,
                &t[1000..2000],
            ),
            (
                format!("(ci@{HOST}) ID token (part 3): "),
                Some("ci"),
                &t[2000..],
            ),
            (format!("(ci@{HOST}) ID token (part 4): "), Some("ci"), ""),
            // OpenSSH passes the module's prompt with its trailing space, or without.
            (format!("(ci@{HOST}) ID token:"), Some("ci"), &t[..1000]),
            // ssh lowercases the host it shows; a job may write it otherwise.
            (
                format!("(ci@{}) ID token: ", HOST.to_uppercase()),
                None,
                &t[..1000],
            ),
            // sshd (OpenSSH <= 10.2) glues PAM messages sent before the prompt onto it.
            (
                format!("(ci@{HOST}) Authorized use only.\nID token: "),
                Some("ci"),
                &t[..1000],
            ),
            (
                format!("(ci@{HOST}) One (x@evil) ID token: \nTwo\nID token (part 2): "),
                None,
                &t[1000..2000],
            ),
        ] {
            let mut c = h.command(&prompt);
            c.env("IDTOKEN", &t).env("IDTOKEN_HOST", HOST);
            if let Some(u) = user {
                c.env("IDTOKEN_USER", u);
            }
            let r = run(&mut c);
            assert_eq!(
                (r.code, r.stdout.as_str()),
                (0, format!("{expect}\n").as_str()),
                "{name} {prompt:?} ({})",
                r.stderr
            );
        }
    }
}

#[test]
fn askpass_refuses_other_prompts_hosts_and_accounts() {
    let s = Sandbox::new("askpass-refuse");
    let t = token();
    for (name, h) in helpers(&s) {
        for (prompt, user, why) in [
            (
                "ID token: ".to_string(),
                None,
                "a prompt without (user@host)",
            ),
            ("Password: ".to_string(), None, "a password prompt"),
            (
                format!("(ci@{HOST}) Password: "),
                None,
                "a password prompt of the login host",
            ),
            (
                "Are you sure you want to continue connecting (yes/no/[fingerprint])? ".to_string(),
                None,
                "the host key question",
            ),
            (
                "(ci@git.example.org) ID token: ".to_string(),
                None,
                "another host",
            ),
            (
                format!("(ci@{HOST}.evil) ID token: "),
                None,
                "a longer host name",
            ),
            (
                "(ci@login1) ID token: ".to_string(),
                None,
                "a shorter host name",
            ),
            (
                format!("(ci@evil.example) x (ci@{HOST}) ID token: "),
                None,
                "another host whose prompt quotes the login host",
            ),
            (
                format!("(bob@{HOST}) ID token: "),
                Some("ci"),
                "another account",
            ),
            (
                format!("(ci@{HOST}) ID token: "),
                Some(""),
                "an empty $IDTOKEN_USER",
            ),
            (format!("(ci@{HOST}) ID token (part 0): "), None, "part 0"),
            (
                format!("(ci@{HOST}) ID token (part 02): "),
                None,
                "a part with a leading zero",
            ),
            (
                format!("(ci@{HOST}) ID token (part 2x): "),
                None,
                "a part that is no number",
            ),
            (
                format!("(ci@{HOST}) Your ID token: "),
                None,
                "a prompt that contains ID token",
            ),
            (
                format!("(ci@{HOST}) ID token: now"),
                None,
                "text after the prompt",
            ),
            (
                format!("(ci@evil.example) Welcome\n(ci@{HOST}) ID token: "),
                None,
                "another host whose message quotes the login host's prompt",
            ),
            (
                format!("(ci@{HOST}) ID token: \nPassword: "),
                None,
                "a password prompt after a line that looks like the token prompt",
            ),
            (
                format!("(ci@{HOST}) Welcome\nID token: now"),
                None,
                "text after a glued prompt",
            ),
            (
                format!("(c i@{HOST}) ID token: "),
                None,
                "an account with a space",
            ),
        ] {
            let mut c = h.command(&prompt);
            c.env("IDTOKEN", &t).env("IDTOKEN_HOST", HOST);
            if let Some(u) = user {
                c.env("IDTOKEN_USER", u);
            }
            assert_refused(name, &run(&mut c), why);
        }
        let prompt = format!("(ci@{HOST}) ID token: ");
        let r = run(h.command(&prompt).env("IDTOKEN", &t));
        assert_refused(name, &r, "no $IDTOKEN_HOST");
        assert!(r.stderr.contains("IDTOKEN_HOST"), "{name}: {}", r.stderr);
        let r = run(h
            .command(&prompt)
            .env("IDTOKEN", &t)
            .env("IDTOKEN_HOST", ""));
        assert_refused(name, &r, "an empty $IDTOKEN_HOST");
        let r = run(h.command(&prompt).env("IDTOKEN_HOST", HOST));
        assert_refused(name, &r, "no $IDTOKEN");
        assert!(r.stderr.contains("IDTOKEN"), "{name}: {}", r.stderr);
        let r = run(h
            .command(&prompt)
            .env("IDTOKEN", "")
            .env("IDTOKEN_HOST", HOST));
        assert_refused(name, &r, "an empty $IDTOKEN");
    }
}
