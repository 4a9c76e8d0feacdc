//! The refresh units in packaging/systemd pass `systemd-analyze verify`, and say what the
//! contract asks: a sandboxed oneshot that may write the cache directory only, run every
//! 15 minutes with a randomized delay, catching up after downtime.
//!
//! `verify` insists that ExecStart's binary exists, and it is not installed here, so a copy
//! of the units is verified with ExecStart pointing at the built `idtoken`; `--man=no`
//! because the man pages named in Documentation= are not installed either.

use std::path::{Path, PathBuf};
use std::process::Command;

use idtoken_e2e::sandbox::Sandbox;
use idtoken_e2e::{idtoken_bin, require, workspace_root};

const INSTALLED_BIN: &str = "/usr/bin/idtoken";

fn unit(name: &str) -> String {
    let p = workspace_root().join("packaging/systemd").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn systemd_analyze() -> Option<PathBuf> {
    ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Lines of a unit that set `key`, values only.
fn values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let analyze = systemd_analyze();
    require!(
        analyze.is_some(),
        "systemd-analyze is missing (apt-get install systemd)"
    );
    let Some(analyze) = analyze else { return };
    let sb = Sandbox::new("units");
    let bin = idtoken_bin().display().to_string();
    let service = unit("idtoken-refresh.service");
    assert!(service.contains(INSTALLED_BIN));
    sb.write(
        "idtoken-refresh.service",
        service.replace(INSTALLED_BIN, &bin).as_bytes(),
    );
    sb.write(
        "idtoken-refresh.timer",
        unit("idtoken-refresh.timer").as_bytes(),
    );
    let out = Command::new(analyze)
        .arg("verify")
        .arg("--man=no")
        .arg(sb.path("idtoken-refresh.service"))
        .arg(sb.path("idtoken-refresh.timer"))
        .current_dir(Path::new(&sb.dir))
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Other units on the host may draw unrelated notes; ours must draw none.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("idtoken-refresh"))
        .collect();
    assert!(out.status.success(), "verify failed:\n{stderr}");
    assert!(ours.is_empty(), "verify complained:\n{stderr}");
}

#[test]
fn service_is_a_sandboxed_oneshot_writing_the_cache_dir_only() {
    let s = unit("idtoken-refresh.service");
    assert_eq!(values(&s, "Type"), ["oneshot"]);
    assert_eq!(
        values(&s, "ExecStart"),
        [format!("{INSTALLED_BIN} refresh")]
    );
    assert_eq!(values(&s, "ProtectSystem"), ["strict"]);
    assert_eq!(values(&s, "ReadWritePaths"), ["/var/lib/idtoken"]);
    assert_eq!(values(&s, "NoNewPrivileges"), ["yes"]);
    assert_eq!(values(&s, "ProtectHome"), ["yes"]);
    assert_eq!(values(&s, "PrivateTmp"), ["yes"]);
    let families = values(&s, "RestrictAddressFamilies").join(" ");
    assert!(
        families.contains("AF_INET") && families.contains("AF_INET6"),
        "the network must be allowed: {families}"
    );
    assert!(values(&s, "PrivateNetwork").is_empty());
    assert!(values(&s, "IPAddressDeny").is_empty());
}

#[test]
fn timer_runs_every_15_minutes_randomized_and_persistent() {
    let t = unit("idtoken-refresh.timer");
    assert_eq!(values(&t, "OnCalendar"), ["*:0/15"]);
    assert_eq!(values(&t, "Persistent"), ["true"]);
    assert_eq!(values(&t, "RandomizedDelaySec").len(), 1);
    assert_eq!(values(&t, "WantedBy"), ["timers.target"]);
}
