//! Doctor: the refresh timer is enabled and started and its last run succeeded, where
//! systemd runs; where it does not, the check says so instead of guessing.

use std::ffi::OsStr;

use super::{Check, run_command, systemd_running};

const TIMER: &str = "idtoken-refresh.timer";
const SERVICE: &str = "idtoken-refresh.service";

pub fn check() -> Check {
    const NAME: &str = "refresh_timer";
    if !systemd_running() {
        return Check::skip(
            NAME,
            format!(
                "systemd is not running on this host (no /run/systemd/system), so there is no \
                 {TIMER} to check: whatever runs `idtoken refresh` here must keep the key \
                 caches fresh (their age is checked above)"
            ),
        );
    }
    let enabled = run_command("systemctl", &[OsStr::new("is-enabled"), OsStr::new(TIMER)]);
    let state = enabled
        .as_ref()
        .map(|r| r.stdout.clone())
        .unwrap_or_default();
    if state != "enabled" {
        return Check::warn(
            NAME,
            format!(
                "{TIMER} is {}",
                if state.is_empty() {
                    "unknown to systemd"
                } else {
                    &state
                }
            ),
            format!("idtoken refresh && systemctl enable --now {TIMER}"),
        );
    }
    // Enabled is not running: `systemctl enable` without `--now` starts nothing until the
    // next boot, and no refresh runs until then.
    let active = run_command("systemctl", &[OsStr::new("is-active"), OsStr::new(TIMER)])
        .map(|r| r.stdout)
        .unwrap_or_default();
    if active != "active" {
        return Check::warn(
            NAME,
            format!(
                "{TIMER} is enabled but not started ({}): no refresh runs before the next boot",
                if active.is_empty() {
                    "unknown"
                } else {
                    &active
                }
            ),
            format!("systemctl start {TIMER}"),
        );
    }
    let show = |property: &str| {
        run_command(
            "systemctl",
            &[
                OsStr::new("show"),
                OsStr::new(SERVICE),
                OsStr::new("-p"),
                OsStr::new(property),
                OsStr::new("--value"),
            ],
        )
        .map(|r| r.stdout)
        .unwrap_or_default()
    };
    let result = show("Result");
    if result != "success" {
        return Check::warn(
            NAME,
            format!("{TIMER} is enabled, but the last run of {SERVICE} ended with {result:?}"),
            format!(
                "see `journalctl -u {SERVICE}`, fix what it says, then `systemctl start {SERVICE}`"
            ),
        );
    }
    // A unit that never ran also says Result=success: tell the two apart.
    if show("ExecMainExitTimestampMonotonic") == "0" {
        Check::ok(
            NAME,
            format!("{TIMER} is enabled and started; {SERVICE} has not run since boot"),
        )
    } else {
        Check::ok(
            NAME,
            format!("{TIMER} is enabled and started; the last refresh succeeded"),
        )
    }
}
