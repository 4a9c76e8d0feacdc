//! The demo behind `tests/demo`: a throwaway sshd on 127.0.0.1 with pam_idtoken.so in its
//! PAM stack, a CI-style login with a GitLab-shaped ID token, a refusal, the audit lines,
//! and `idtoken check` explaining the refusal. Needs root (it uses a mount namespace so
//! the host's /etc and syslog are untouched).

use std::process::Output;
use std::time::Duration;

use idtoken_e2e::keys::{self, mint_exact_len};
use idtoken_e2e::pam::PamHarness;
use idtoken_e2e::sshd::{self, Sshd};

fn show(title: &str, o: &Output) {
    println!("\n== {title}");
    println!("   exit status: {}", o.status.code().unwrap_or(-1));
    for l in String::from_utf8_lossy(&o.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&o.stderr).lines())
    {
        if !l.starts_with("Warning: Permanently added") {
            println!("   | {l}");
        }
    }
}

fn main() {
    if let Err(why) = sshd::available() {
        eprintln!("demo: {why}");
        std::process::exit(2);
    }
    let pam = PamHarness::new("demo");
    pam.sandbox.key_cache(&[keys::Key::A]);
    let config = pam.sandbox.config(
        "explain = true",
        "[[rule]]\nname = \"hpc-app-main\"\nissuer = \"gitlab\"\nusers = [\"alice\"]\n[rule.claims]\nproject_path = \"hpc/*\"\nref_protected = \"true\"\n",
    );
    let s = Sshd::start(
        pam,
        "auth [success=done ignore=ignore default=die] MODULE config=CONFIG\nauth required pam_unix.so try_first_pass",
    );
    println!(
        "== pam_idtoken demo: sshd on 127.0.0.1:{} with this auth stack:",
        s.port
    );
    println!(
        "   auth [success=done ignore=ignore default=die] pam_idtoken.so config={}",
        config.display()
    );
    println!("   auth required pam_unix.so try_first_pass");
    println!("\n== the config ({}):", config.display());
    for l in std::fs::read_to_string(&config).unwrap_or_default().lines() {
        println!("   | {l}");
    }
    let claims = keys::live_claims("alice", &format!("demo-{}", keys::now()));
    let token = mint_exact_len(&claims, 2100);
    println!(
        "\n== a GitLab-shaped ID token for user_login=alice, project hpc/app, {} characters",
        token.len()
    );
    println!("   (too long for one OpenSSH answer: SSH_ASKPASS sends it in parts of 1000)");

    let remote = "echo \"logged in as $(id -un)\"; env | grep ^IDTOKEN_ | sort";
    show(
        "1. the CI job logs in: IDTOKEN=<token> SSH_ASKPASS=idtoken-askpass SSH_ASKPASS_REQUIRE=force ssh alice@127.0.0.1",
        &s.login_with_askpass("alice", &token, remote),
    );
    show(
        "2. the same token asks for another account, bob: refused (explain = true tells the client why)",
        &s.login_with_askpass("bob", &token, remote),
    );
    let lines = s
        .pam
        .syslog
        .wait_for("decision=", 2, Duration::from_secs(5));
    println!("\n== 3. the audit lines pam_idtoken wrote (syslog, facility authpriv):");
    for l in lines {
        println!(
            "   | {}",
            l.split_once("pam_idtoken(")
                .map(|(_, r)| format!("pam_idtoken({r}"))
                .unwrap_or(l)
        );
    }
    let token_file = s.pam.sandbox.token_file("token", &token);
    let out = idtoken_e2e::cli::idtoken(&s.pam.sandbox)
        .args(["check", "--user", "bob", "--config"])
        .arg(&config)
        .arg("--token-file")
        .arg(&token_file)
        .output()
        .unwrap_or_else(|e| panic!("idtoken: {e}"));
    show(
        "4. the sysadmin asks why: idtoken check --user bob --token-file token",
        &out,
    );
}
