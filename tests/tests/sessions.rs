//! CI sessions on a shared node (SPEC v3), through a real sshd with the module's session
//! line: a rule's `max_sessions` per pipeline holds over live sessions (a third login of one
//! pipeline is refused `too_many_sessions`, another pipeline is not), a session that ends
//! frees its slot, a session whose process died counts for nothing, and `idtoken sessions`,
//! run in sshd's own namespaces as an admin on the node would, lists exactly the live ones.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use idtoken_e2e::keys::{self, mint, now, with};
use idtoken_e2e::pam::{self, PamHarness};
use idtoken_e2e::require;
use idtoken_e2e::sshd::{self, Sshd};
use serde_json::{Value, json};

const RULE: &str = "[[rule]]\nname = \"ci\"\nissuer = \"gitlab\"\nmax_sessions = 2\nmax_sessions_per = \"pipeline\"\n";

fn stack() -> String {
    format!(
        "auth [success=done ignore=ignore default=die] MODULE config=CONFIG\n{}\n\
         account required pam_permit.so\n\
         session optional MODULE config=CONFIG\n\
         session required pam_permit.so\n\
         password required pam_deny.so\n",
        pam::SETCRED_PARTNER
    )
}

fn token(pipeline: &str, tag: &str) -> String {
    let c = keys::live_claims(
        "alice",
        &format!("sessions-{tag}-{}-{}", now(), std::process::id()),
    );
    mint(&with(c, "pipeline_id", json!(pipeline)))
}

/// An open session: `ssh … sleep`, once the remote side said READY.
struct Open(Child);

impl Drop for Open {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn open(s: &Sshd, pipeline: &str, tag: &str) -> Open {
    let mut child = s
        .askpass_login("alice", &token(pipeline, tag), "echo READY; exec sleep 60")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let _ = BufReader::new(out).read_line(&mut line);
    assert_eq!(
        line,
        "READY\n",
        "session {tag} did not open; sshd log:\n{}",
        s.sshd_log()
    );
    Open(child)
}

/// `idtoken sessions --json` in sshd's namespaces.
fn sessions(s: &Sshd) -> Vec<Value> {
    let o = s.run_inside(&idtoken_e2e::idtoken_bin(), &["sessions", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    v["sessions"].as_array().cloned().unwrap_or_default()
}

/// Waits until `idtoken sessions` lists `n` sessions.
fn wait_for_sessions(s: &Sshd, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let list = sessions(s);
        if list.len() == n || start.elapsed() > Duration::from_secs(10) {
            return list;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn max_sessions_per_pipeline_holds_over_live_sessions_and_idtoken_sessions_lists_them() {
    require!(sshd::available().is_ok(), "{:?}", sshd::available().err());
    let pam = PamHarness::new("sessions-cap");
    pam.sandbox.key_cache(&[keys::Key::A]);
    pam.sandbox.config("", RULE);
    let s = Sshd::start_with_stack(pam, &stack(), &[]);

    let first = open(&s, "5001", "a1");
    let second = open(&s, "5001", "a2");
    let list = wait_for_sessions(&s, 2);
    assert_eq!(list.len(), 2, "{list:#?}");
    for v in &list {
        assert_eq!(
            (
                v["state"].as_str(),
                v["account"].as_str(),
                v["rule"].as_str(),
                v["pipeline_id"].as_str()
            ),
            (Some("live"), Some("alice"), Some("ci"), Some("5001")),
            "{v}"
        );
        assert_eq!(v["rhost"].as_str(), Some("127.0.0.1"), "{v}");
        assert!(v["leader"].as_u64().is_some(), "{v}");
    }

    // The metrics count them per rule.
    let cfg = s.pam.sandbox.path("idtoken.toml").display().to_string();
    let m = s.run_inside(
        &idtoken_e2e::idtoken_bin(),
        &["status", "--prometheus", "--config", &cfg],
    );
    let metrics = String::from_utf8_lossy(&m.stdout);
    assert!(
        metrics.contains("\nidtoken_sessions_live{rule=\"ci\"} 2\n"),
        "{metrics}"
    );

    // A third session of pipeline 5001 is refused before it opens, and says why.
    let o = s.login_with_askpass("alice", &token("5001", "a3"), "echo LOGIN-OK");
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let refused = s
        .pam
        .syslog
        .wait_for("too_many_sessions", 1, Duration::from_secs(5));
    assert!(
        refused
            .iter()
            .any(|l| l.contains("decision=deny reason=too_many_sessions ")
                && l.contains(" pipeline_id=5001 ")),
        "{refused:?}"
    );
    // Another pipeline is not counted against it.
    let o = s.login_with_askpass("alice", &token("5002", "b1"), "echo LOGIN-OK");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("LOGIN-OK"),
        "{}",
        s.sshd_log()
    );

    // One audit line when a session opens, with its facts.
    let opened = s
        .pam
        .syslog
        .wait_for("session=open", 2, Duration::from_secs(5));
    assert!(
        opened
            .iter()
            .filter(|l| l.contains(" account=alice issuer=gitlab rule=ci ")
                && l.contains(" pipeline_id=5001 "))
            .count()
            >= 2,
        "{opened:?}"
    );

    // A session that ends frees its slot, and says so, with its duration.
    drop(first);
    assert_eq!(wait_for_sessions(&s, 1).len(), 1);
    let closed = s
        .pam
        .syslog
        .wait_for("session=close", 1, Duration::from_secs(5));
    assert!(
        closed.iter().any(|l| l.contains(" pipeline_id=5001 ")
            && l.contains(" how=logout")
            && l.contains(" duration=")),
        "{closed:?}"
    );
    let third = open(&s, "5001", "a4");
    assert_eq!(wait_for_sessions(&s, 2).len(), 2);

    // A session whose sshd process died (no close) counts for nothing: kill -9 its leader.
    let leader = sessions(&s)
        .iter()
        .find_map(|v| v["leader"].as_u64())
        .expect("a leader");
    let killed = s.run_inside(
        std::path::Path::new("/bin/kill"),
        &["-9", &leader.to_string()],
    );
    assert!(
        killed.status.success(),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    assert_eq!(
        wait_for_sessions(&s, 1).len(),
        1,
        "the dead session is stale"
    );
    let fourth = open(&s, "5001", "a5");
    drop((second, third, fourth));
    assert!(wait_for_sessions(&s, 0).is_empty());
}

/// `idtoken revoke --pipeline N --end-sessions`, run on the node as an admin would: the
/// pipeline's live session ends within seconds, another pipeline's stays, and the
/// pipeline's next login is refused `revoked`.
#[test]
fn revoke_end_sessions_ends_the_pipelines_live_sessions_only() {
    require!(sshd::available().is_ok(), "{:?}", sshd::available().err());
    let pam = PamHarness::new("sessions-revoke");
    pam.sandbox.key_cache(&[keys::Key::A]);
    let list = pam.sandbox.path("revocations");
    let config = pam.sandbox.config(
        &format!("revocations = \"{}\"", list.display()),
        "[[rule]]\nname = \"ci\"\nissuer = \"gitlab\"\n",
    );
    let s = Sshd::start_with_stack(pam, &stack(), &[]);
    let mut doomed = open(&s, "7001", "r1");
    let spared = open(&s, "7002", "r2");
    assert_eq!(wait_for_sessions(&s, 2).len(), 2);

    let config = config.display().to_string();
    let o = s.run_inside(
        &idtoken_e2e::idtoken_bin(),
        &[
            "revoke",
            "--config",
            &config,
            "--pipeline",
            "7001",
            "--reason",
            "test",
            "--end-sessions",
        ],
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        said.contains("ended session ") && said.contains("pipeline_id=7001"),
        "{said}"
    );
    assert!(!said.contains("pipeline_id=7002"), "{said}");

    // The revoked pipeline's ssh ends; the other's runs on.
    let start = Instant::now();
    while doomed.0.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        doomed.0.try_wait().ok().flatten().is_some(),
        "the session of pipeline 7001 still runs"
    );
    let left = wait_for_sessions(&s, 1);
    assert_eq!(
        left.iter()
            .map(|v| v["pipeline_id"].as_str())
            .collect::<Vec<_>>(),
        vec![Some("7002")],
        "{left:#?}"
    );
    let closed = s
        .pam
        .syslog
        .wait_for("how=revoked", 1, Duration::from_secs(5));
    assert!(
        closed
            .iter()
            .any(|l| l.contains("session=close ") && l.contains(" pipeline_id=7001 ")),
        "{closed:?}"
    );
    // Its next login is refused.
    let o = s.login_with_askpass("alice", &token("7001", "r3"), "echo LOGIN-OK");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("LOGIN-OK"));
    let refused = s
        .pam
        .syslog
        .wait_for("reason=revoked", 1, Duration::from_secs(5));
    assert!(
        refused.iter().any(|l| l.contains(" pipeline_id=7001 ")),
        "{refused:?}"
    );
    drop(spared);
}
