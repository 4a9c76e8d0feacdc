//! Doctor: the clock is synchronised, since token times (exp, nbf, iat) are checked against
//! it with only `leeway` seconds of slack.

use std::ffi::OsStr;

use idtoken_core::config::{Config, DEFAULT_LEEWAY};

use super::{Check, run_command, systemd_running};

pub fn check(config: Option<&Config>) -> Check {
    const NAME: &str = "clock";
    let leeway = config.map_or(DEFAULT_LEEWAY, |c| c.defaults.leeway);
    if !systemd_running() {
        return Check::skip(
            NAME,
            "cannot tell whether the clock is synchronised: `timedatectl` needs a running \
             systemd, which this host does not have; check the NTP client by hand \
             (`chronyc tracking`, `ntpq -p`)",
        );
    }
    let ran = run_command(
        "timedatectl",
        &[
            OsStr::new("show"),
            OsStr::new("-p"),
            OsStr::new("NTPSynchronized"),
            OsStr::new("--value"),
        ],
    );
    match ran {
        Some(r) if r.success && r.stdout == "yes" => Check::ok(
            NAME,
            "the clock is synchronised (timedatectl: NTPSynchronized=yes)",
        ),
        Some(r) if r.success => Check::warn(
            NAME,
            format!(
                "the clock is not synchronised (timedatectl: NTPSynchronized={}); tokens are \
                 checked against it with only {leeway}s of leeway",
                r.stdout
            ),
            "enable an NTP client: `systemctl enable --now systemd-timesyncd` (or chrony)",
        ),
        Some(r) => Check::skip(
            NAME,
            format!(
                "cannot tell whether the clock is synchronised: timedatectl said {:?}",
                r.stderr
            ),
        ),
        None => Check::skip(
            NAME,
            "cannot tell whether the clock is synchronised: timedatectl is not installed",
        ),
    }
}
