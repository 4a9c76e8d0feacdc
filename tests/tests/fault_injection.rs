//! Broken files in the login path, through the real libpam and the module: every one
//! refuses with PAM_AUTHINFO_UNAVAIL and a log line that names the file and the fix.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use idtoken_e2e::keys::{self, mint};
use idtoken_e2e::pam::{self, PAM_AUTHINFO_UNAVAIL, PAM_SUCCESS, PamHarness};
use idtoken_e2e::require;
use idtoken_e2e::sandbox::set_mode;

const RUNNER_UID: u32 = 2005;

fn live_token() -> String {
    mint(&keys::live_claims("alice", "fault-injection"))
}

/// A way to break a file, and what the log line must then say besides the path.
struct Fault {
    name: &'static str,
    break_it: fn(&Path),
    says: &'static str,
    /// Run the login as an unprivileged uid (root can read any file).
    as_user: bool,
}

fn faults() -> Vec<Fault> {
    vec![
        Fault {
            name: "missing",
            break_it: |p| std::fs::remove_file(p).unwrap(),
            says: "does not exist",
            as_user: false,
        },
        Fault {
            name: "empty",
            break_it: |p| std::fs::write(p, "").unwrap(),
            says: "empty",
            as_user: false,
        },
        Fault {
            name: "truncated",
            break_it: |p| {
                let text = std::fs::read(p).unwrap();
                std::fs::write(p, &text[..text.len() / 2 + 7]).unwrap();
            },
            says: "",
            as_user: false,
        },
        Fault {
            name: "unreadable",
            break_it: |p| set_mode(p, 0o600),
            says: "cannot be read",
            as_user: true,
        },
        Fault {
            name: "world-writable",
            break_it: |p| set_mode(p, 0o666),
            says: "chmod go-w",
            as_user: false,
        },
        Fault {
            name: "owned by another user",
            break_it: |p| std::os::unix::fs::chown(p, Some(2002), Some(2002)).unwrap(),
            says: "chown root",
            as_user: false,
        },
        Fault {
            name: "a directory",
            break_it: |p| {
                std::fs::remove_file(p).unwrap();
                std::fs::create_dir(p).unwrap();
            },
            says: "not a regular file",
            as_user: false,
        },
        Fault {
            name: "a symlink to elsewhere",
            break_it: |p| {
                let real = p.with_extension("real");
                std::fs::rename(p, &real).unwrap();
                symlink(&real, p).unwrap();
            },
            says: "symbolic link",
            as_user: false,
        },
    ]
}

/// Runs every fault against the file `which` ("config" or "cache").
fn run_faults(which: &str, extra: Vec<Fault>) {
    let mut failures = Vec::new();
    for fault in faults().into_iter().chain(extra) {
        let h = PamHarness::new(&format!("fault-{which}"));
        let config = h.sandbox.standard();
        h.module_only("test", "");
        let target = if which == "config" {
            config.clone()
        } else {
            h.sandbox.path("gitlab.jwks.json")
        };
        let uid = fault.as_user.then_some(RUNNER_UID);
        if fault.as_user && which == "cache" {
            // The unprivileged process reads its own config; only the cache is unreadable.
            std::os::unix::fs::chown(&config, Some(RUNNER_UID), Some(RUNNER_UID)).unwrap();
        }
        let token = live_token();
        let before = h.drive_as(uid, "test", "alice", &[Some(&token)], &[]);
        assert_eq!(
            before.rc, PAM_SUCCESS,
            "{which}/{}: the intact setup logs in: {before:?}",
            fault.name
        );
        (fault.break_it)(&target);
        let d = h.drive_as(uid, "test", "alice", &[Some(&token)], &[]);
        let file = target.file_name().unwrap().to_string_lossy().to_string();
        let lines = h.syslog.wait_for(&file, 1, Duration::from_secs(2));
        let named = lines
            .iter()
            .any(|l| l.contains(&file) && l.contains(fault.says));
        if d.rc != PAM_AUTHINFO_UNAVAIL || !named {
            failures.push(format!(
                "{which} {}: rc {} ({}), log lines naming {file} with {:?}: {lines:?}",
                fault.name, d.rc, d.rc_name, fault.says
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_broken_config_refuses_with_authinfo_unavail_and_says_why() {
    require!(
        pam::can_isolate(),
        "the libpam tests need root (mount namespaces)"
    );
    run_faults("config", vec![]);
}

#[test]
fn a_broken_key_cache_refuses_with_authinfo_unavail_and_says_why() {
    require!(
        pam::can_isolate(),
        "the libpam tests need root (mount namespaces)"
    );
    let no_usable_key = Fault {
        name: "valid JSON, no usable key",
        break_it: |p| {
            std::fs::write(p, keys::jwks(&[keys::Key::Small]).to_string()).unwrap();
            set_mode(p, 0o644);
        },
        says: "no usable signing key",
        as_user: false,
    };
    let not_a_jwks = Fault {
        name: "JSON but not a JWKS",
        break_it: |p| std::fs::write(p, "[1, 2, 3]").unwrap(),
        says: "idtoken refresh",
        as_user: false,
    };
    run_faults("cache", vec![no_usable_key, not_a_jwks]);
}
