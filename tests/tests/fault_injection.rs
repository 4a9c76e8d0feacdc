//! Broken files in the login path (config, key cache, user map), through the real libpam
//! and the module: every one refuses with PAM_AUTHINFO_UNAVAIL and a log line that names
//! the file and the fix.

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
    /// Whether a log line says what it must, for the file `which` ("config", "cache" or
    /// "usermap").
    says: fn(which: &str, line: &str) -> bool,
    /// Run the login as an unprivileged uid (root can read any file).
    as_user: bool,
}

fn faults() -> Vec<Fault> {
    vec![
        Fault {
            name: "missing",
            break_it: |p| std::fs::remove_file(p).unwrap(),
            says: |_, l| l.contains("does not exist"),
            as_user: false,
        },
        Fault {
            name: "empty",
            break_it: |p| std::fs::write(p, "").unwrap(),
            says: |_, l| l.contains("empty"),
            as_user: false,
        },
        Fault {
            name: "truncated",
            break_it: |p| {
                let text = std::fs::read(p).unwrap();
                std::fs::write(p, &text[..text.len() / 2 + 7]).unwrap();
            },
            // The config's parser names the line it stopped at; the cache's says to refresh.
            says: |which, l| match which {
                "config" => l
                    .split_once("idtoken.toml:")
                    .is_some_and(|(_, rest)| rest.starts_with(|c: char| c.is_ascii_digit())),
                _ => l.contains("not JSON") && l.contains("idtoken refresh"),
            },
            as_user: false,
        },
        Fault {
            name: "unreadable",
            break_it: |p| set_mode(p, 0o600),
            says: |_, l| l.contains("cannot be read"),
            as_user: true,
        },
        Fault {
            name: "world-writable",
            break_it: |p| set_mode(p, 0o666),
            says: |_, l| l.contains("chmod go-w"),
            as_user: false,
        },
        Fault {
            name: "group-writable",
            break_it: |p| set_mode(p, 0o664),
            says: |_, l| l.contains("chmod go-w"),
            as_user: false,
        },
        Fault {
            name: "owned by another user",
            break_it: |p| std::os::unix::fs::chown(p, Some(2002), Some(2002)).unwrap(),
            says: |_, l| l.contains("chown root"),
            as_user: false,
        },
        Fault {
            name: "a directory",
            break_it: |p| {
                std::fs::remove_file(p).unwrap();
                std::fs::create_dir(p).unwrap();
            },
            says: |_, l| l.contains("not a regular file"),
            as_user: false,
        },
        Fault {
            name: "a symlink to elsewhere",
            break_it: |p| {
                let real = p.with_extension("real");
                std::fs::rename(p, &real).unwrap();
                symlink(&real, p).unwrap();
            },
            says: |_, l| l.contains("symbolic link"),
            as_user: false,
        },
    ]
}

/// Runs these faults against the file `which` ("config", "cache" or "usermap").
fn run_faults(which: &str, faults: Vec<Fault>) {
    let mut failures = Vec::new();
    for fault in faults {
        let h = PamHarness::new(&format!("fault-{which}"));
        let mut config = h.sandbox.standard();
        h.module_only("test", "");
        let target = match which {
            "config" => config.clone(),
            "cache" => h.sandbox.path("gitlab.jwks.json"),
            _ => {
                // The own-account rule has no login_as, so every login reads the user map.
                let map = h.sandbox.write("users.map", b"alice alice\n");
                config = h.sandbox.config(
                    "",
                    &format!(
                        "user_map = \"{}\"\n\n[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n",
                        map.display()
                    ),
                );
                map
            }
        };
        let uid = fault.as_user.then_some(RUNNER_UID);
        if fault.as_user && which != "config" {
            // The unprivileged process reads its own config; only the target is unreadable.
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
            .any(|l| l.contains(&file) && (fault.says)(which, l));
        if d.rc != PAM_AUTHINFO_UNAVAIL || !named {
            failures.push(format!(
                "{which} {}: rc {} ({}), log lines naming {file}, none saying what it must: {lines:?}",
                fault.name, d.rc, d.rc_name
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
    run_faults("config", faults());
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
        says: |_, l| l.contains("no usable signing key"),
        as_user: false,
    };
    let not_a_jwks = Fault {
        name: "JSON but not a JWKS",
        break_it: |p| std::fs::write(p, "[1, 2, 3]").unwrap(),
        says: |_, l| l.contains("idtoken refresh"),
        as_user: false,
    };
    run_faults(
        "cache",
        faults()
            .into_iter()
            .chain([no_usable_key, not_a_jwks])
            .collect(),
    );
}

/// The user map is trusted like the config: whoever can write it picks the account a token
/// opens. (Empty or cut maps are valid maps, so those faults do not apply.)
#[test]
fn a_broken_user_map_refuses_with_authinfo_unavail_and_says_why() {
    require!(
        pam::can_isolate(),
        "the libpam tests need root (mount namespaces)"
    );
    run_faults(
        "usermap",
        faults()
            .into_iter()
            .filter(|f| !matches!(f.name, "empty" | "truncated"))
            .collect(),
    );
}

/// The config and the user map are trusted like the key cache, down to the directories
/// above them (issue 19.7): whoever can write one of those can put another policy, or
/// another account mapping, in the file's place. A directory others can write (not sticky)
/// refuses every login, naming the directory and the fix; a sticky one (like /tmp) does not.
#[test]
fn a_config_or_user_map_in_a_directory_others_can_write_refuses() {
    require!(
        pam::can_isolate(),
        "the libpam tests need root (mount namespaces)"
    );
    for which in ["config", "usermap"] {
        let h = PamHarness::new(&format!("fault-dir-{which}"));
        let standard = h.sandbox.standard();
        let dir = h.sandbox.path("shared");
        std::fs::create_dir(&dir).unwrap();
        set_mode(&dir, 0o755);
        let config = if which == "config" {
            let moved = dir.join("idtoken.toml");
            std::fs::rename(&standard, &moved).unwrap();
            moved
        } else {
            let map = dir.join("users.map");
            std::fs::write(&map, "alice alice\n").unwrap();
            set_mode(&map, 0o644);
            h.sandbox.config(
                "",
                &format!(
                    "user_map = \"{}\"\n\n[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n",
                    map.display()
                ),
            )
        };
        h.service(
            "test",
            &format!(
                "auth required MODULE config={}\naccount required pam_permit.so\n",
                config.display()
            ),
        );
        let token = live_token();
        let d = h.drive("test", "alice", &[Some(&token)], &[]);
        assert_eq!(d.rc, PAM_SUCCESS, "{which}: a 0755 directory: {d:?}");
        set_mode(&dir, 0o775);
        let d = h.drive("test", "alice", &[Some(&token)], &[]);
        assert_eq!(
            d.rc, PAM_AUTHINFO_UNAVAIL,
            "{which}: a 0775 directory: {d:?}"
        );
        let lines = h.syslog.wait_for("shared", 1, Duration::from_secs(2));
        assert!(
            lines.iter().any(
                |l| l.contains(&format!("{}: is writable by group", dir.display()))
                    && l.contains("chmod go-w")
            ),
            "{which}: {lines:?}"
        );
        set_mode(&dir, 0o1777);
        let d = h.drive("test", "alice", &[Some(&token)], &[]);
        assert_eq!(d.rc, PAM_SUCCESS, "{which}: a sticky directory: {d:?}");
    }
}
