//! A login node in a box (tests/src/node.rs), the package's systemd units as systemd runs
//! them: `idtoken-refresh.service` under its sandbox refreshes the key cache from an HTTPS
//! issuer on the box's own network (the kit's server, bound in the box's network namespace,
//! trusted through `ca_file`), may write its cache directory and nothing outside it, and
//! `systemd-analyze security` rates it; `idtoken doctor`'s timer and clock checks read
//! systemd and timedated: ok on the healthy box, a warning with its fix when the timer is
//! disabled, enabled but not started, or its last run failed, and when NTP is not
//! synchronised.
//!
//! The clock: timedated's NTPSynchronized is the kernel's `maxerror < 16 s` (adjtimex;
//! systemd 252 `ntp_synced()`), one figure for the whole machine, which no namespace
//! separates. The test sets it (ADJ_MAXERROR: bookkeeping only, the time itself is not
//! touched) to show both verdicts and puts the value it found back, also on failure.

use std::time::Instant;

use idtoken_e2e::https::{Reply, TestCa};
use idtoken_e2e::keys::{self, AUDIENCE, Key};
use idtoken_e2e::node::{self, Node};
use idtoken_e2e::require;
use serde_json::Value;

const SERVICE: &str = "idtoken-refresh.service";
const TIMER: &str = "idtoken-refresh.timer";
const CACHE: &str = "/var/lib/idtoken/gitlab.jwks.json";
const CA: &str = "/etc/idtoken/test-ca.pem";

/// One check of `idtoken doctor --json` in the box: (status, detail, fix).
fn doctor(n: &Node, name: &str) -> (String, String, String) {
    let out = n.sh_lossy("idtoken doctor --json");
    let all: Value = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("doctor said no JSON:\n{out}"));
    let c = all["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no check {name}:\n{out}"));
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    let got = (s("status"), s("detail"), s("fix"));
    eprintln!("doctor {name}: {} | {} | fix: {}", got.0, got.1, got.2);
    got
}

fn kids(doc: &str) -> Vec<String> {
    serde_json::from_str::<Value>(doc)
        .ok()
        .and_then(|v| v["keys"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_string))
        .collect()
}

/// The kernel's NTP maximum error (µs), as adjtimex reports it; `set` writes it first.
fn maxerror(set: Option<i64>) -> i64 {
    // SAFETY: timex is plain data; all zeroes is a valid value (modes 0: read only).
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    if let Some(v) = set {
        t.modes = libc::ADJ_MAXERROR;
        t.maxerror = v;
    }
    // SAFETY: adjtimex(2) on a timex this function owns.
    let r = unsafe { libc::adjtimex(&mut t) };
    assert!(r >= 0, "adjtimex: {}", std::io::Error::last_os_error());
    t.maxerror
}

/// Puts the kernel's maxerror back as the test found it.
struct RestoreMaxerror(i64);

impl Drop for RestoreMaxerror {
    fn drop(&mut self) {
        maxerror(Some(self.0));
    }
}

#[test]
fn the_refresh_unit_runs_under_its_sandbox_and_doctor_reads_the_timer_and_the_clock() {
    require!(
        node::available().is_ok(),
        "{}",
        node::available().err().unwrap_or_default()
    );
    node::debs();
    let start = Instant::now();
    let n = Node::boot("units", &[]);
    let ca = TestCa::new("box-units");
    let server = n.https_server(&ca);
    server.gitlab(&server.url(), &keys::jwks(&[Key::B]));
    n.write(CA, ca.pem.as_bytes(), 0o644);
    n.install_site(&format!(
        "[[issuer]]\nname = \"gitlab\"\nurl = \"{}\"\naudiences = [\"{AUDIENCE}\"]\n\
         ca_file = \"{CA}\"\n\n[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n",
        server.url()
    ));
    let kid_a = kids(&keys::jwks(&[Key::A]).to_string());
    let kid_b = kids(&keys::jwks(&[Key::B]).to_string());
    assert_eq!(kids(&n.sh(&format!("cat {CACHE}"))), kid_a);

    // The timer as the README has it; nothing has run yet.
    n.sh(&format!("systemctl enable --now {TIMER}"));
    let next = n.sh(&format!(
        "systemctl show -p NextElapseUSecRealtime --value {TIMER}"
    ));
    eprintln!("{TIMER}: next elapse {}", next.trim());
    assert!(!next.trim().is_empty() && next.trim() != "n/a", "{next:?}");
    let (status, detail, _) = doctor(&n, "refresh_timer");
    assert_eq!(status, "ok");
    assert!(detail.contains("has not run since boot"), "{detail}");

    // The unit, under its sandbox, refreshes the cache from the box's issuer.
    let hits = server.hits();
    n.sh(&format!("systemctl start {SERVICE}"));
    assert_eq!(
        n.sh(&format!("systemctl show -p Result --value {SERVICE}"))
            .trim(),
        "success"
    );
    assert!(server.hits() >= hits + 2, "discovery and keys fetched");
    // The issuer's key first; the key it no longer serves is kept as retired.
    let cache = n.sh(&format!("cat {CACHE}"));
    assert_eq!(
        kids(&cache).first(),
        kid_b.first(),
        "the cache holds the issuer's keys now: {cache}"
    );
    let (status, detail, _) = doctor(&n, "refresh_timer");
    assert_eq!(status, "ok");
    assert!(detail.contains("the last refresh succeeded"), "{detail}");

    // Its sandbox: a command run in the unit (a drop-in's ExecStartPost) may write the
    // cache directory and /tmp (its own), nothing of the system. (`$$`: systemd expands `$`.)
    n.write(
        &format!("/etc/systemd/system/{SERVICE}.d/50-sandbox-probe.conf"),
        b"[Service]\nExecStartPost=/bin/sh -c 'for p in /etc/idtoken-probe /usr/idtoken-probe \
          /var/idtoken-probe /root/idtoken-probe /var/lib/idtoken/probe /tmp/idtoken-probe; do \
          if touch $$p 2>/tmp/err; then echo \"PROBE $$p written\"; else echo \"PROBE $$p refused: \
          $$(cat /tmp/err)\"; fi; done'\n",
        0o644,
    );
    n.sh(&format!(
        "systemctl daemon-reload && systemctl start {SERVICE}"
    ));
    let probe = n.sh(&format!(
        "journalctl --no-pager -o cat -u {SERVICE} | grep '^PROBE'"
    ));
    eprintln!("{probe}");
    for p in ["/etc", "/usr", "/var", "/root"] {
        let line = probe
            .lines()
            .find(|l| l.starts_with(&format!("PROBE {p}/idtoken-probe ")))
            .unwrap_or_default();
        assert!(line.contains(" refused: "), "{p}: {line:?}");
        assert!(!n.path(&format!("{p}/idtoken-probe")).exists(), "{p}");
    }
    assert!(
        probe.contains("PROBE /etc/idtoken-probe refused: touch: cannot touch '/etc/idtoken-probe': Read-only file system"),
        "{probe}"
    );
    assert!(
        probe.contains("PROBE /var/lib/idtoken/probe written"),
        "{probe}"
    );
    assert!(
        probe.contains("PROBE /tmp/idtoken-probe written"),
        "{probe}"
    );
    assert!(
        !n.path("/tmp/idtoken-probe").exists(),
        "its /tmp is its own"
    );
    n.sh(&format!(
        "rm -r /etc/systemd/system/{SERVICE}.d /var/lib/idtoken/probe && systemctl daemon-reload"
    ));

    // systemd's own rating of the sandbox.
    let security = n.sh_lossy(&format!("systemd-analyze security --no-pager {SERVICE}"));
    let overall = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default()
        .to_string();
    // The figure, and what systemd holds against the unit (the ✗ rows).
    for l in security
        .lines()
        .filter(|l| l.starts_with('✗') || l.contains("Overall exposure level"))
    {
        eprintln!("{}", l.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    let score: f64 = overall
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no score: {security}"));
    assert!(score <= 2.0, "{overall}");

    // The clock, both ways: timedated reads the kernel's maxerror.
    let found = maxerror(None);
    let _restore = RestoreMaxerror(found);
    let ntp = |n: &Node| {
        n.sh("timedatectl show -p NTPSynchronized --value")
            .trim()
            .to_string()
    };
    eprintln!(
        "clock as found: maxerror {found} µs, NTPSynchronized={}",
        ntp(&n)
    );
    maxerror(Some(0));
    assert_eq!(ntp(&n), "yes");
    let (status, detail, _) = doctor(&n, "clock");
    assert_eq!(status, "ok", "{detail}");
    maxerror(Some(16_000_000));
    assert_eq!(ntp(&n), "no");
    let (status, detail, fix) = doctor(&n, "clock");
    assert_eq!(status, "warn", "{detail}");
    assert!(detail.contains("not synchronised"), "{detail}");
    assert!(
        fix.contains("systemctl enable --now systemd-timesyncd"),
        "{fix}"
    );
    maxerror(Some(found));

    // The timer enabled but not started: nothing runs before the next boot.
    n.sh(&format!("systemctl stop {TIMER}"));
    let (status, detail, fix) = doctor(&n, "refresh_timer");
    assert_eq!(status, "warn", "{detail}");
    assert!(detail.contains("not started"), "{detail}");
    assert_eq!(fix, format!("systemctl start {TIMER}"));
    // Disabled.
    n.sh(&format!("systemctl disable --now {TIMER}"));
    let (status, detail, fix) = doctor(&n, "refresh_timer");
    assert_eq!(status, "warn", "{detail}");
    assert!(detail.contains("disabled"), "{detail}");
    assert!(
        fix.contains(&format!("systemctl enable --now {TIMER}")),
        "{fix}"
    );
    // Running again, and its last run failed: the issuer answers 500.
    n.sh(&format!("systemctl enable --now {TIMER}"));
    server.set("/oauth/discovery/keys", Reply::raw(500, "down"));
    let failed = n.run(&format!("systemctl start {SERVICE}"));
    assert!(!failed.status.success(), "the refresh did not fail");
    let (status, detail, fix) = doctor(&n, "refresh_timer");
    assert_eq!(status, "warn", "{detail}");
    assert!(detail.contains("exit-code"), "{detail}");
    assert!(fix.contains(&format!("journalctl -u {SERVICE}")), "{fix}");
    assert_eq!(
        n.sh(&format!("cat {CACHE}")),
        cache,
        "a failed refresh keeps the last good cache"
    );
    eprintln!(
        "box timings: boot {:.1} s; total {:.1} s",
        n.boot_time.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
}
