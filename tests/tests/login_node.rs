//! A login node in a box (tests/src/node.rs): the host's systemd booted with journald,
//! logind, dbus and the distro's sshd, the built .debs installed as a site installs them,
//! and what only a whole node shows: a CI-style ssh login through pam-auth-update's
//! stack and the stock /etc/pam.d/sshd, the audit line in the journal, the refresh timer
//! under systemd, and a token session that systemd ends at the token's exp.
//!
//! The .debs are `tests/packaging/build-debs`' (target/packaging/deb, or
//! `IDTOKEN_BOX_DEBS`); tests/run-all builds them before `cargo test`, and this test builds
//! them itself when they are missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use idtoken_e2e::accounts::PASSWORD;
use idtoken_e2e::keys::{self, AUDIENCE, ISSUER, mint_exact_len, now, with};
use idtoken_e2e::node::{self, Node, Running, span_seconds};
use idtoken_e2e::{docs, require};
use serde_json::json;

// ---------------------------------------------------------------------------------------
// The harness

/// What of the host a box must not change.
#[derive(Debug, PartialEq)]
struct HostState {
    tmp: BTreeSet<String>,
    run: BTreeSet<String>,
    dev: BTreeSet<String>,
    /// /etc: every path with its size and mtime.
    etc: BTreeSet<String>,
    /// The top of each cgroup hierarchy, other boxes' cgroups left out.
    cgroups: BTreeSet<String>,
}

fn listing(dir: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn host_state() -> HostState {
    let etc = Command::new("find")
        .args(["/etc", "-xdev", "-printf", "%p %s %T@\\n"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut cgroups = BTreeSet::new();
    for h in listing("/sys/fs/cgroup") {
        for e in listing(&format!("/sys/fs/cgroup/{h}")) {
            if !e.starts_with("idtoken-box-") {
                cgroups.insert(format!("{h}/{e}"));
            }
        }
    }
    HostState {
        // Other tests' sandboxes come and go in /tmp, and so do a compiler's temporary files
        // while something builds beside the tests: the markers and systemd's names matter.
        tmp: listing("/tmp")
            .into_iter()
            .filter(|n| {
                !n.starts_with("idtoken-")
                    && !n.starts_with(".tmp")
                    && !n.starts_with("rustc")
                    && !(n.starts_with("cc") && (n.ends_with(".s") || n.ends_with(".o")))
            })
            .collect(),
        run: listing("/run"),
        dev: listing("/dev"),
        etc,
        cgroups,
    }
}

/// Whether a host pid is gone (or a zombie waiting for the host's init to reap it).
fn dead(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|state| state == "Z" || state == "X")
        })
        .unwrap_or(true)
}

#[test]
fn the_box_boots_systemd_and_leaves_the_host_as_it_was() {
    require!(
        node::available().is_ok(),
        "{}",
        node::available().err().unwrap_or_default()
    );
    let marker = PathBuf::from(format!("/tmp/idtoken-box-marker-{}", std::process::id()));
    std::fs::write(&marker, "the host's /tmp").unwrap();
    // Removed when the test ends, also when it fails.
    struct RemoveOnDrop(PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _marker_guard = RemoveOnDrop(marker.clone());
    let before = host_state();

    let mut n = Node::boot("harness", &[]);
    assert!(n.boot_time < node::BOOT_BOUND);
    // PID 1 of its own PID namespace, its own host name, its own /tmp, /run and /dev.
    assert_eq!(n.sh("cat /proc/1/comm").trim(), "systemd");
    assert_eq!(n.sh("hostname").trim(), n.name);
    for unit in [
        "systemd-journald.service",
        "systemd-logind.service",
        "dbus.service",
    ] {
        assert_eq!(
            n.sh_lossy(&format!("systemctl is-active {unit}")).trim(),
            "active",
            "{unit}"
        );
    }
    // The image's own services are masked: none of them runs in the box.
    let running = n.sh("systemctl list-units --type=service --state=running --no-legend --plain");
    let names: Vec<&str> = running
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for name in &names {
        assert!(
            [
                "systemd-journald.service",
                "systemd-logind.service",
                "dbus.service"
            ]
            .contains(name),
            "a unit the box did not ask for runs: {name}\n{running}"
        );
    }
    let box_tmp = n.sh("ls -A /tmp");
    assert!(
        !box_tmp.contains("idtoken-box-marker-"),
        "the box sees the host's /tmp: {box_tmp}"
    );
    // The box writes where systemd writes on a host: none of it reaches the host.
    n.sh("echo box > /tmp/idtoken-box-wrote; echo box > /run/idtoken-box-wrote; echo box > /etc/idtoken-box-wrote; test -S /dev/log");
    for p in [
        "/tmp/idtoken-box-wrote",
        "/run/idtoken-box-wrote",
        "/etc/idtoken-box-wrote",
    ] {
        assert!(!Path::new(p).exists(), "{p} reached the host");
    }
    // The box's cgroups are under its own; systemd's tree (init.scope, system.slice) is there.
    let systemd_cg = n
        .cgroups
        .iter()
        .find(|c| c.starts_with("/sys/fs/cgroup/systemd/"))
        .cloned()
        .unwrap_or_default();
    assert!(
        systemd_cg.join("init.scope").is_dir(),
        "{}",
        systemd_cg.display()
    );
    assert!(!Path::new("/sys/fs/cgroup/systemd/init.scope").exists());

    // A killed test run: the unshare holding the box dies by SIGKILL (as PR_SET_PDEATHSIG
    // sends it when the test's thread dies), and the box's systemd dies with it.
    let pid1 = n.pid;
    let holder = n.holder_pid().unwrap_or_default();
    // SAFETY: kill(2) on the unshare this test's harness started.
    unsafe { libc::kill(holder as i32, libc::SIGKILL) };
    let start = Instant::now();
    while !dead(pid1) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        dead(pid1),
        "the box's systemd (pid {pid1}) outlived its holder"
    );
    // Every process of the box is gone: its cgroups (which cannot be removed while a
    // process is in them) are removed.
    let cgroups = n.cgroups.clone();
    n.kill().unwrap_or_else(|e| panic!("cgroups left: {e}"));
    for c in cgroups {
        assert!(!c.exists(), "{} left", c.display());
    }
    drop(n);

    let after = host_state();
    assert!(marker.exists(), "the box emptied the host's /tmp");
    let _ = std::fs::remove_file(&marker);
    assert_eq!(before.tmp, after.tmp, "host /tmp");
    assert_eq!(before.run, after.run, "host /run");
    assert_eq!(
        before.dev, after.dev,
        "host /dev (no /dev/log, /dev/initctl left)"
    );
    assert_eq!(before.cgroups, after.cgroups, "host cgroups");
    let changed: Vec<_> = before.etc.symmetric_difference(&after.etc).collect();
    assert!(changed.is_empty(), "host /etc changed: {changed:?}");
}

// ---------------------------------------------------------------------------------------
// A site install

fn config(session_ends_at_exp: bool) -> String {
    format!(
        "[defaults]\nsession_ends_at_exp = {session_ends_at_exp}\n\n[[issuer]]\nname = \"gitlab\"\n\
         url = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\n\n[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n"
    )
}

/// A token for alice expiring `ttl` seconds from now, ~1900 characters (two answers).
fn token(tag: &str, ttl: i64) -> (String, i64) {
    let n = now();
    let c = keys::live_claims("alice", &format!("box-{tag}-{n}-{}", std::process::id()));
    let c = with(with(c, "exp", json!(n + ttl)), "iat", json!(n));
    (mint_exact_len(&c, 1900), n + ttl)
}

/// The session scope's RuntimeMaxUSec as systemd reports it (`infinity`, `29s`, ...).
fn runtime_max(n: &Node, session: &str) -> String {
    n.sh(&format!(
        "systemctl show -p RuntimeMaxUSec --value session-{session}.scope"
    ))
    .trim()
    .to_string()
}

#[test]
fn a_site_install_logs_in_by_ssh_and_systemd_ends_the_session_at_exp() {
    require!(
        node::available().is_ok(),
        "{}",
        node::available().err().unwrap_or_default()
    );
    let start = Instant::now();
    let n = Node::boot("site", &["ssh.service"]);

    // Installed as a site installs it.
    n.install_debs();
    n.write(
        "/var/lib/idtoken/gitlab.jwks.json",
        keys::jwks(&[keys::Key::A]).to_string().as_bytes(),
        0o644,
    );
    n.write("/etc/security/idtoken.toml", config(true).as_bytes(), 0o644);
    n.sh("idtoken config check");
    n.sh("pam-auth-update --enable idtoken");
    let auth = n.sh("grep -E '^auth' /etc/pam.d/common-auth");
    assert!(
        auth.lines()
            .next()
            .is_some_and(|l| l.contains("pam_idtoken.so")),
        "{auth}"
    );
    // The session line as docs/policy.md shows it: the module above pam_unix and pam_systemd.
    let session: Vec<String> = n
        .sh("grep -E '^session' /etc/pam.d/common-session")
        .lines()
        .map(docs::norm)
        .collect();
    let documented: Vec<String> = docs::block("debian-common-session")
        .iter()
        .map(|l| docs::norm(l))
        .collect();
    let at = |line: &String| session.iter().position(|l| l == line);
    let positions: Vec<Option<usize>> = documented.iter().map(at).collect();
    assert!(
        positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1]),
        "common-session {session:?} lacks, in order, the documented {documented:?}"
    );
    // The distro's own /etc/pam.d/sshd (@include common-auth), the sshd lines of docs/install.md in a
    // drop-in that wins over the stock `KbdInteractiveAuthentication no`.
    assert!(n.sh("cat /etc/pam.d/sshd").contains("@include common-auth"));
    let sshd_lines = docs::block("sshd-config").join("\n");
    n.write(
        "/etc/ssh/sshd_config.d/10-idtoken.conf",
        format!("{sshd_lines}\n").as_bytes(),
        0o644,
    );
    n.sh("systemctl reload ssh");
    let effective = n.sh("sshd -T -C user=alice,host=localhost,addr=127.0.0.1");
    assert!(
        effective.contains("\nkbdinteractiveauthentication yes\n"),
        "{effective}"
    );
    assert!(effective.contains("\nusepam yes\n"), "{effective}");
    n.sh(&format!(
        "useradd -m -s /bin/sh alice && echo 'alice:{PASSWORD}' | chpasswd"
    ));
    // The refresh timer, as docs/install.md says: enabled and started.
    n.sh("systemctl enable --now idtoken-refresh.timer");
    assert_eq!(
        n.sh_lossy("systemctl is-active idtoken-refresh.timer")
            .trim(),
        "active"
    );
    let next = n.sh("systemctl show -p NextElapseUSecRealtime --value idtoken-refresh.timer");
    assert!(
        !next.trim().is_empty() && next.trim() != "n/a",
        "next elapse: {next:?}"
    );
    let installed = start.elapsed();

    // A CI-style login: a 2-part token through the installed askpass helper.
    let (t, _) = token("login", 300);
    let o = idtoken_e2e::sshd::run_bounded(
        &mut n.ssh_token(&t, "echo LOGIN-OK; id -un; echo EXP=$IDTOKEN_EXP"),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("LOGIN-OK\nalice\n"),
        "login failed: {}\n{out}{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        n.journal()
    );
    let audit = n.sh("journalctl --no-pager -o cat SYSLOG_FACILITY=10 | grep 'decision=' || true");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("pam_idtoken(sshd:auth): decision=allow")
                && l.contains("account=alice")
                && l.contains("rhost=127.0.0.1")),
        "no audit line in the journal:\n{audit}"
    );
    let sig = t.rsplit('.').next().unwrap_or_default();
    assert!(
        !n.sh("journalctl --no-pager -o cat").contains(sig),
        "the token is in the journal"
    );
    let first_login = start.elapsed();

    // Session end at exp. A: session_ends_at_exp on, the token expires in 30 s.
    let (ta, exp_a) = token("exp-on", 30);
    let mut a = Running::start(n.ssh_token(&ta, "echo SESSION=$XDG_SESSION_ID; exec sleep 300"));
    let sa = a.session();
    let limit = runtime_max(&n, &sa);
    let secs =
        span_seconds(&limit).unwrap_or_else(|| panic!("RuntimeMaxUSec of session {sa}: {limit:?}"));
    let left = exp_a - now();
    assert!(
        secs as i64 >= left - 2 && secs as i64 <= left + 1 && secs <= 30,
        "RuntimeMaxUSec={limit} with {left} s left"
    );
    let logind = n.sh(&format!(
        "loginctl show-session {sa} -p Name -p Scope -p Service -p Remote"
    ));
    // C: a password login (typed at `ID token: `, pam_unix takes it) with the setting on.
    let pw = n.ssh_password("echo SESSION=$XDG_SESSION_ID; exec sleep 300");
    let mut c = Running::start(pw);
    let sc = c.session();
    assert_eq!(runtime_max(&n, &sc), "infinity", "a password login's scope");
    // B: the setting off, the token expires in 30 s too: the session stays.
    n.write(
        "/etc/security/idtoken.toml",
        config(false).as_bytes(),
        0o644,
    );
    let (tb, exp_b) = token("exp-off", 30);
    let mut b = Running::start(n.ssh_token(&tb, "echo SESSION=$XDG_SESSION_ID; exec sleep 300"));
    let sb = b.session();
    assert_eq!(runtime_max(&n, &sb), "infinity", "the setting off");

    let bound = Duration::from_secs(u64::try_from(exp_a - now() + 20).unwrap_or(20));
    let ended = a.ended_within(bound);
    let Some(ended) = ended else {
        panic!(
            "session {sa} outlived its token's exp ({exp_a}) by 20 s\n{}",
            n.sh_lossy(&format!("systemctl status session-{sa}.scope"))
        );
    };
    let late = ended - exp_a as f64;
    eprintln!(
        "session {sa}: RuntimeMaxUSec={limit}, ended {late:+.1} s from exp ({logind})",
        logind = logind.replace('\n', " ")
    );
    assert!(
        (-2.0..=5.0).contains(&late),
        "the session ended {late:+.1} s from exp"
    );
    let scope_log = n.sh_lossy(&format!(
        "journalctl --no-pager -o cat -u session-{sa}.scope"
    ));
    // B and C stay past B's exp.
    while now() < exp_b + 5 {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        matches!(b.child.try_wait(), Ok(None)),
        "the session with the setting off ended: {:?}",
        b.seen
    );
    assert!(
        matches!(c.child.try_wait(), Ok(None)),
        "the password session ended: {:?}",
        c.seen
    );
    assert_eq!(
        n.sh_lossy(&format!("systemctl is-active session-{sb}.scope"))
            .trim(),
        "active"
    );
    n.sh(&format!("loginctl terminate-session {sb} {sc}"));
    assert!(b.ended_within(Duration::from_secs(10)).is_some());
    assert!(c.ended_within(Duration::from_secs(10)).is_some());

    // doctor on the box: the timer and the clock, as systemd and timedated see them.
    let doctor = n.sh_lossy("idtoken doctor --json");
    let checks: serde_json::Value = doctor
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("doctor said no JSON:\n{doctor}"));
    let status = |name: &str| {
        checks["checks"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == name))
            .cloned()
            .unwrap_or_default()
    };
    eprintln!(
        "doctor refresh_timer: {}\ndoctor clock: {}",
        status("refresh_timer"),
        status("clock")
    );
    assert_eq!(status("refresh_timer")["status"], "ok", "{doctor}");
    eprintln!(
        "box timings: boot {:.1} s; installed at {:.1} s; first login at {:.1} s; total {:.1} s\n\
         the scope's end in its journal:\n{scope_log}",
        n.boot_time.as_secs_f64(),
        installed.as_secs_f64(),
        first_login.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
}
