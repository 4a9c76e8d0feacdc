//! What the commands print where the docs send them (issue 14, items 7 and 8): every
//! `idtoken` command ends quietly when its output pipe is closed (`idtoken check ... | true`),
//! `config check` warns, exit 0, about each file a valid config names that does not exist,
//! and `ssh-bench --help` prints its usage instead of starting a benchmark.

use std::process::{Output, Stdio};

use idtoken_e2e::cli;
use idtoken_e2e::keys::{self, mint};
use idtoken_e2e::sandbox::Sandbox;

/// Runs `args` with stdout a pipe whose reader is already closed (as `| true` leaves it
/// once `true` has exited) and a long token file at hand.
fn with_closed_stdout(s: &Sandbox, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap_or_else(|e| panic!("pipe: {e}"));
    drop(reader);
    cli::idtoken(s)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("idtoken: {e}"))
}

#[test]
fn every_command_ends_quietly_on_a_closed_pipe() {
    let s = Sandbox::new("epipe");
    let config = s.standard();
    let config = config.display().to_string();
    let jti = format!("jti-epipe-{}", std::process::id());
    let token = s.token_file("t.jwt", &mint(&keys::live_claims("alice", &jti)));
    let token = token.display().to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "check",
            "--config",
            &config,
            "--user",
            "alice",
            "--token-file",
            &token,
        ],
        vec![
            "check",
            "--json",
            "--config",
            &config,
            "--user",
            "alice",
            "--token-file",
            &token,
        ],
        vec!["inspect", "--token-file", &token],
        vec!["inspect", "--json", "--token-file", &token],
        vec!["pack", "--token-file", &token],
        vec!["pack", "--check", "--token-file", &token],
        vec!["status", "--config", &config],
        vec!["status", "--json", "--config", &config],
        vec!["config", "check", "--config", &config],
    ];
    for args in cases {
        let out = with_closed_stdout(&s, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "idtoken {args:?} on a closed pipe printed: {err}"
        );
        assert_ne!(
            out.status.code(),
            Some(101),
            "idtoken {args:?} panicked on a closed pipe: {err}"
        );
        assert!(
            err.is_empty(),
            "idtoken {args:?} on a closed pipe is quiet: {err}"
        );
    }
}

#[test]
fn config_check_warns_about_missing_files_and_still_exits_0() {
    let s = Sandbox::new("cfg-missing");
    s.key_cache(&[keys::Key::A]);
    let map = s.path("users.map");
    let ca = s.path("site-ca.pem");
    let text = format!(
        "[[issuer]]\nname = \"gitlab\"\nurl = \"https://gitlab.example.org\"\n\
         audiences = [\"x\"]\njwks_cache = \"{}\"\nuser_map = \"{}\"\nca_file = \"{}\"\n",
        s.path("gitlab.jwks.json").display(),
        map.display(),
        ca.display()
    );
    let config = s.write("idtoken.toml", text.as_bytes());
    let run = || {
        let out = cli::idtoken(&s)
            .args(["config", "check", "--config"])
            .arg(&config)
            .output()
            .unwrap_or_else(|e| panic!("idtoken: {e}"));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, said) = run();
    assert_eq!(
        code,
        Some(0),
        "missing files warn, the config is valid: {said}"
    );
    let warnings: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 2, "user_map and ca_file: {said}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("user_map") && w.contains(&map.display().to_string())),
        "{said}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("ca_file") && w.contains(&ca.display().to_string())),
        "{said}"
    );
    // With the files in place, and the key cache gone, only the key cache is named.
    s.write("users.map", b"alice alice\n");
    s.write("site-ca.pem", b"");
    let _ = std::fs::remove_file(s.path("gitlab.jwks.json"));
    let (code, said) = run();
    assert_eq!(code, Some(0), "{said}");
    let warnings: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 1, "{said}");
    assert!(warnings[0].contains("jwks_cache"), "{said}");
}

#[test]
fn ssh_bench_help_prints_usage_and_starts_nothing() {
    let bench = idtoken_e2e::artifact("ssh-bench");
    let started = std::time::Instant::now();
    for flag in ["--help", "-h"] {
        let out = std::process::Command::new(&bench)
            .arg(flag)
            .output()
            .unwrap_or_else(|e| panic!("ssh-bench: {e}"));
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{flag}: {said}");
        assert!(said.starts_with("usage: ssh-bench"), "{flag}: {said}");
    }
    let out = std::process::Command::new(&bench)
        .arg("--logins=5")
        .output()
        .unwrap_or_else(|e| panic!("ssh-bench: {e}"));
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown argument starts nothing"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "no benchmark ran"
    );
}
