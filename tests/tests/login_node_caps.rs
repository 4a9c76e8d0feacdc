//! A login node in a box (tests/src/node.rs), CI sessions counted and ended on it (SPEC v3):
//! the installed module with the Debian profile (its session line above pam_systemd), a
//! rule with `max_sessions = 2` per pipeline. Two sessions of one pipeline hold, the third is
//! refused `too_many_sessions`; `idtoken sessions --json` lists exactly the sessions
//! `loginctl` knows for them, with their logind session; a session that ends frees its
//! slot; `idtoken revoke --pipeline N --end-sessions` ends the pipeline's sessions through
//! logind, and its next login is refused `revoked`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use idtoken_e2e::keys::{self, AUDIENCE, ISSUER, mint_exact_len, now, with};
use idtoken_e2e::node::{self, Node, Running};
use idtoken_e2e::require;
use serde_json::{Value, json};

fn config() -> String {
    format!(
        "[defaults]\nsession_ends_at_exp = true\n\n\
         [[issuer]]\nname = \"gitlab\"\nurl = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\n\n\
         [[rule]]\nname = \"ci\"\nissuer = \"gitlab\"\nmax_sessions = 2\nmax_sessions_per = \"pipeline\"\n"
    )
}

/// A token of alice's job in `pipeline`, valid 300 s, ~1900 characters (two answers).
fn token(pipeline: &str, tag: &str) -> String {
    let n = now();
    let c = keys::live_claims("alice", &format!("caps-{tag}-{n}-{}", std::process::id()));
    let c = with(with(c, "exp", json!(n + 300)), "iat", json!(n));
    mint_exact_len(&with(c, "pipeline_id", json!(pipeline)), 1900)
}

/// `idtoken sessions --json` in the box: (pipeline, logind session) of each live one.
fn sessions(n: &Node) -> BTreeSet<(String, String)> {
    let v: Value = serde_json::from_str(&n.sh("idtoken sessions --json")).expect("JSON");
    v["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|s| s["state"] == "live")
        .map(|s| {
            (
                s["pipeline_id"].as_str().unwrap_or("-").to_string(),
                s["logind_session"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

/// The logind sessions of alice, as `loginctl` lists them.
fn loginctl_sessions(n: &Node) -> BTreeSet<String> {
    let v: Value =
        serde_json::from_str(&n.sh("loginctl list-sessions --output=json")).unwrap_or(Value::Null);
    v.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|s| s["user"] == "alice")
        .filter_map(|s| s["session"].as_str().map(str::to_string))
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn max_sessions_and_end_sessions_on_a_login_node_agree_with_logind() {
    require!(
        node::available().is_ok(),
        "{}",
        node::available().err().unwrap_or_default()
    );
    node::debs();
    let n = Node::boot("caps", &["ssh.service"]);
    n.install_site(&config());
    n.sh("pam-auth-update --enable idtoken");

    let hold = "echo SESSION=$XDG_SESSION_ID; exec sleep 300";
    let mut a = Running::start(n.ssh_token(&token("5001", "a"), hold));
    let sa = a.session();
    let mut b = Running::start(n.ssh_token(&token("5001", "b"), hold));
    let sb = b.session();
    let mut c = Running::start(n.ssh_token(&token("5002", "c"), hold));
    let sc = c.session();
    assert!(
        !sa.is_empty() && !sb.is_empty() && !sc.is_empty(),
        "{sa:?} {sb:?} {sc:?}"
    );

    // idtoken sessions and loginctl name the same sessions.
    let listed = sessions(&n);
    let expected: BTreeSet<(String, String)> = [
        ("5001".to_string(), sa.clone()),
        ("5001".to_string(), sb.clone()),
        ("5002".to_string(), sc.clone()),
    ]
    .into_iter()
    .collect();
    assert_eq!(listed, expected);
    assert_eq!(
        loginctl_sessions(&n),
        [sa.clone(), sb.clone(), sc.clone()]
            .into_iter()
            .collect::<BTreeSet<_>>()
    );

    // A third session of 5001 is refused before it opens.
    let o = idtoken_e2e::sshd::run_bounded(&mut n.ssh_token(&token("5001", "d"), "echo LOGIN-OK"));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("LOGIN-OK"));
    let journal =
        n.sh_lossy("journalctl --no-pager -o cat SYSLOG_FACILITY=10 | grep pam_idtoken || true");
    assert!(
        journal
            .lines()
            .any(|l| l.contains("decision=deny reason=too_many_sessions ")
                && l.contains(" pipeline_id=5001 ")),
        "{journal}"
    );

    // One ends (logind ends it, as an admin would): its slot comes back.
    n.sh(&format!("loginctl terminate-session {sa}"));
    assert!(
        a.ended_within(Duration::from_secs(15)).is_some(),
        "session {sa} still runs"
    );
    wait_until("the first session's record to go", || {
        sessions(&n).len() == 2
    });
    let mut e = Running::start(n.ssh_token(&token("5001", "e"), hold));
    let se = e.session();
    assert!(!se.is_empty());

    // revoke --end-sessions ends 5001's sessions through logind; 5002's runs on.
    let said = n.sh("idtoken revoke --pipeline 5001 --reason test --end-sessions");
    assert_eq!(said.matches("ended session ").count(), 2, "{said}");
    assert!(said.contains("terminated"), "through logind: {said}");
    assert!(
        b.ended_within(Duration::from_secs(15)).is_some(),
        "session {sb} still runs"
    );
    assert!(
        e.ended_within(Duration::from_secs(15)).is_some(),
        "session {se} still runs"
    );
    wait_until("logind to drop the revoked sessions", || {
        loginctl_sessions(&n) == [sc.clone()].into_iter().collect::<BTreeSet<_>>()
    });
    assert_eq!(
        sessions(&n),
        [("5002".to_string(), sc.clone())]
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    let o = idtoken_e2e::sshd::run_bounded(&mut n.ssh_token(&token("5001", "f"), "echo LOGIN-OK"));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("LOGIN-OK"));
    let journal =
        n.sh_lossy("journalctl --no-pager -o cat SYSLOG_FACILITY=10 | grep pam_idtoken || true");
    assert!(
        journal.lines().any(|l| l.contains("reason=revoked")),
        "{journal}"
    );
    assert!(
        journal
            .lines()
            .any(|l| l.contains("session=close ") && l.contains(" how=revoked")),
        "{journal}"
    );
    drop(c);
}
