//! Every PAM stack the documentation shows, built from the documentation's own lines and
//! driven through the real libpam (issue 14): the Debian pam-auth-update result (from the
//! package's profile, with and without pam_sss), the Debian sshd-only line, the RHEL 9 sshd
//! line over password-auth and postlogin, and authselect custom profiles made from `sssd`
//! and from `minimal` and `local`. The blocks are found by their `stack:NAME` marks in the
//! files tests/src/docs.rs lists (README.md, docs/*.md, pam_idtoken(8), the RPM spec), so a
//! doc edit that breaks a stack fails here. RHEL's own files are fixtures in tests/fixtures/pam, written by
//! authselect 1.2.6 itself (tests/fixtures/pam/generate-rhel9), with and without the features
//! whose requirements a token must not skip: with-faillock (a locked account stays locked,
//! and a token login never clears the failure tally), with-smartcard-required and
//! with-pam-u2f-2fa, each driven through the real pam_faillock, pam_deny and pam_u2f; and
//! what the ssh-only line gives up with each, as docs/install.md says.

use std::path::{Path, PathBuf};
use std::process::Command;

use idtoken_e2e::accounts::PASSWORD;
use idtoken_e2e::docs::{STACKS, block, blocks_in, norm, read};
use idtoken_e2e::keys::{self, mint, with};
use idtoken_e2e::pam::{self, Drive, PAM_AUTH_ERR, PAM_SUCCESS, PamHarness};
use idtoken_e2e::require;
use idtoken_e2e::sandbox::set_mode;
use idtoken_e2e::workspace_root;
use serde_json::json;

/// The files that may hold marked blocks.
/// The auth lines of a PAM file (comments and other phases dropped), normalised.
fn auth_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| l.starts_with("auth") || l.starts_with("-auth"))
        .map(norm)
        .collect()
}

/// A documented line made to load the built module with the test's config.
fn with_module(line: &str, config: &Path) -> String {
    line.replace(
        "pam_idtoken.so",
        &format!("MODULE config={}", config.display()),
    )
}

fn fixture(rel: &str) -> String {
    read(&format!("tests/fixtures/pam/{rel}"))
}

/// Runs the real pam-auth-update with only `profiles` (from /usr/share/pam-configs, and
/// `idtoken` from debian/pam-configs) in a private mount namespace, where /etc/pam.d,
/// /usr/share/pam-configs, /var/lib/pam and debconf's database are the sandbox's: the
/// common-auth it writes, as it wrote it.
fn pam_auth_update(h: &PamHarness, tag: &str, profiles: &[&str]) -> String {
    let root = h.sandbox.path(&format!("pam-auth-update-{tag}"));
    let (pamd, configs, varlib, debconf) = (
        root.join("pam.d"),
        root.join("pam-configs"),
        root.join("var-lib-pam"),
        root.join("debconf"),
    );
    for d in [&pamd, &configs, &varlib, &debconf] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
    for p in profiles {
        let src = if *p == "idtoken" {
            workspace_root().join("debian/pam-configs/idtoken")
        } else {
            PathBuf::from("/usr/share/pam-configs").join(p)
        };
        std::fs::copy(&src, configs.join(p)).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    }
    let cp = Command::new("cp")
        .arg("-a")
        .arg("/var/cache/debconf/.")
        .arg(&debconf)
        .status()
        .unwrap_or_else(|e| panic!("cp: {e}"));
    assert!(cp.success(), "copying debconf's database");
    let script = format!(
        "set -e; mount --bind {pamd} /etc/pam.d; mount --bind {configs} /usr/share/pam-configs; \
         mount --bind {varlib} /var/lib/pam; mount --bind {debconf} /var/cache/debconf; \
         DEBIAN_FRONTEND=noninteractive pam-auth-update --force {enable}",
        pamd = pamd.display(),
        configs = configs.display(),
        varlib = varlib.display(),
        debconf = debconf.display(),
        enable = if profiles.contains(&"idtoken") {
            "--enable idtoken"
        } else {
            ""
        },
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("unshare: {e}"));
    assert!(
        out.status.success(),
        "pam-auth-update: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_abs(&pamd.join("common-auth"))
}

fn read_abs(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn live_token(user: &str) -> String {
    let jti = format!("jti-{user}-{}-{}", keys::now(), std::process::id());
    mint(&keys::live_claims(user, &jti))
}

fn refused_token(user: &str) -> String {
    let jti = format!("jti-exp-{user}-{}", std::process::id());
    mint(&with(
        keys::live_claims(user, &jti),
        "exp",
        json!(1_000_000),
    ))
}

/// The cases every documented stack must pass, through its `sshd` service.
fn drive_documented_cases(h: &PamHarness, stack: &str) {
    let config = h.sandbox.path("idtoken.toml");
    let show = |d: &Drive| format!("{stack}: {d:?}\nlog: {:?}", h.syslog.lines());

    let d = h.drive("sshd", "alice", &[Some(&live_token("alice"))], &[]);
    assert_eq!(d.rc, PAM_SUCCESS, "valid token must log in: {}", show(&d));
    assert_eq!(d.prompts, vec!["ID token: "], "{}", show(&d));
    assert!(
        h.audit(1).iter().any(|l| l.contains("decision=allow")),
        "{stack}: allow logged"
    );

    let d = h.drive(
        "sshd",
        "alice",
        &[Some(&refused_token("alice")), Some(PASSWORD)],
        &[],
    );
    assert_eq!(d.rc, PAM_AUTH_ERR, "refused token must fail: {}", show(&d));
    assert_eq!(
        d.prompts,
        vec!["ID token: "],
        "a refused token never leads to a password prompt: {}",
        show(&d)
    );

    let d = h.drive("sshd", "alice", &[Some(""), Some(PASSWORD)], &[]);
    assert_eq!(
        d.prompts,
        vec!["ID token: ", "Password: "],
        "Enter at `ID token: ` leads to `Password: `: {}",
        show(&d)
    );
    assert_eq!(d.rc, PAM_SUCCESS, "then the password logs in: {}", show(&d));

    // A password typed at `ID token: ` goes on as PAM_AUTHTOK, and pam_unix (and pam_sss)
    // take a PAM_AUTHTOK an earlier module stored whether or not the line says
    // try_first_pass (Linux-PAM >= 1.3.0): it logs in without a second prompt on every
    // documented stack.
    let d = h.drive("sshd", "alice", &[Some(PASSWORD)], &[]);
    assert_eq!(
        d.rc,
        PAM_SUCCESS,
        "a password at `ID token: ` logs in: {}",
        show(&d)
    );
    assert_eq!(d.prompts, vec!["ID token: "], "{}", show(&d));
    // A wrong one is refused.
    let d = h.drive("sshd", "alice", &[Some("not-the-password")], &[]);
    assert_ne!(d.rc, PAM_SUCCESS, "{}", show(&d));

    // Unsafe config (group-writable): the module cannot decide (PAM_AUTHINFO_UNAVAIL)
    // and every documented stack promises that passwords keep working.
    set_mode(&config, 0o664);
    let d = h.drive("sshd", "alice", &[Some(PASSWORD)], &[]);
    set_mode(&config, 0o644);
    assert_eq!(
        d.rc,
        PAM_SUCCESS,
        "with an unsafe config a password still logs in: {}",
        show(&d)
    );
    assert_eq!(d.prompts, vec!["Password: "], "{}", show(&d));
    assert!(
        !h.syslog
            .wait_for("config unusable", 1, std::time::Duration::from_secs(2))
            .is_empty(),
        "{stack}: the module did refuse the unsafe config"
    );
}

/// A user that NSS knows (through nss_wrapper, as sssd would serve an LDAP account) but
/// /etc/passwd does not is asked for a token and the module decides: the module is not
/// behind the pam_usertype/pam_localuser jumps that skip such accounts.
fn assert_non_local_user_reaches_the_module(h: &PamHarness, stack: &str) {
    let user = "ldapuser";
    let Some(wrapper) = idtoken_e2e::cli::nss_wrapper() else {
        panic!("libnss-wrapper is needed (tests/support/install-deps)");
    };
    let local_passwd = read_abs(&h.etc.join("passwd"));
    assert!(
        !local_passwd.lines().any(|l| l.starts_with("ldapuser:")),
        "ldapuser must not be local"
    );
    let home = h.sandbox.path("home/ldapuser");
    let passwd = h.sandbox.write(
        "nss-passwd",
        format!(
            "{local_passwd}{user}:x:5001:5001:LDAP user:{}:/bin/sh\n",
            home.display()
        )
        .as_bytes(),
    );
    let group = h.sandbox.write(
        "nss-group",
        format!("{}{user}:x:5001:\n", read_abs(&h.etc.join("group"))).as_bytes(),
    );
    if let Ok(mut env) = h.drive_env.lock() {
        *env = vec![
            ("LD_PRELOAD".into(), wrapper.display().to_string()),
            ("NSS_WRAPPER_PASSWD".into(), passwd.display().to_string()),
            ("NSS_WRAPPER_GROUP".into(), group.display().to_string()),
        ];
    }
    let d = h.drive("sshd", user, &[Some(&live_token(user))], &[]);
    if let Ok(mut env) = h.drive_env.lock() {
        env.clear();
    }
    assert_eq!(
        d.prompts.first().map(String::as_str),
        Some("ID token: "),
        "{stack}: a non-local account must reach the module: {d:?}"
    );
    assert!(
        !h.syslog
            .wait_for(
                &format!("account={user}"),
                1,
                std::time::Duration::from_secs(2)
            )
            .is_empty(),
        "{stack}: the module made a decision for {user}: {:?}",
        h.syslog.lines()
    );
    assert_eq!(
        d.rc, PAM_SUCCESS,
        "{stack}: {user} logs in with a token: {d:?}"
    );
}

fn harness(tag: &str) -> PamHarness {
    let h = PamHarness::new(tag);
    h.sandbox.standard();
    // The stacks include and substack each other, which libpam resolves in /etc/pam.d.
    h.bind_pamd
        .store(true, std::sync::atomic::Ordering::Relaxed);
    h
}

macro_rules! root_or_skip {
    () => {
        require!(
            pam::can_isolate(),
            "the libpam tests need root (mount namespaces)"
        );
    };
}

/// Debian's pam-auth-update (libpam-runtime) and debconf's database, for the Debian stacks.
macro_rules! pam_auth_update_or_skip {
    () => {
        require!(
            Path::new("/usr/sbin/pam-auth-update").exists()
                && Path::new("/var/cache/debconf").is_dir(),
            "pam-auth-update (libpam-runtime) for the Debian stacks"
        );
    };
}

fn has_pam_sss() -> bool {
    Path::new("/usr/share/pam-configs/sss").exists()
        && [
            "/usr/lib/x86_64-linux-gnu/security",
            "/usr/lib/security",
            "/lib/security",
        ]
        .iter()
        .any(|d| Path::new(d).join("pam_sss.so").exists())
}

#[test]
fn every_documented_stack_is_marked() {
    // The whole map (which file shows which stack, how often) is docs_map.rs's; here, that
    // each stack this file drives is in it, so a stack cannot leave the test by losing its mark.
    for name in [
        "debian-common-auth",
        "debian-common-session",
        "debian-sshd",
        "rhel-sshd",
        "authselect-module-line",
        "authselect-sssd",
        "authselect-minimal",
        "authselect-local",
    ] {
        let files: Vec<&str> = STACKS
            .iter()
            .filter(|(_, n, _)| *n == name)
            .map(|(f, _, _)| *f)
            .collect();
        assert!(!files.is_empty(), "no document is listed with stack:{name}");
        for file in files {
            assert!(
                !blocks_in(file, &read(file), name).is_empty(),
                "{file} lost its stack:{name} block"
            );
        }
    }
}

#[test]
fn debian_pam_auth_update_stack_works_as_documented() {
    root_or_skip!();
    pam_auth_update_or_skip!();
    let h = harness("stack-deb");
    let common_auth = pam_auth_update(&h, "unix", &["unix", "idtoken"]);
    let documented: Vec<String> = block("debian-common-auth")
        .iter()
        .map(|l| norm(l))
        .collect();
    assert_eq!(
        auth_lines(&common_auth),
        documented,
        "docs/install.md shows what pam-auth-update really writes"
    );
    let config = h.sandbox.path("idtoken.toml");
    h.service("common-auth", &with_module(&common_auth, &config))
        .service(
            "sshd",
            "@include common-auth\naccount required pam_permit.so\n",
        );
    drive_documented_cases(&h, "debian-common-auth");
}

/// The profile's session line lands above pam_systemd's in common-session (priority 768
/// against systemd's 0), where the session phase can hand pam_systemd the token's runtime
/// limit (`session_ends_at_exp`, SPEC v3), as docs/policy.md shows.
#[test]
fn debian_profile_puts_the_session_line_above_pam_systemd() {
    root_or_skip!();
    pam_auth_update_or_skip!();
    require!(
        Path::new("/usr/share/pam-configs/systemd").exists(),
        "libpam-systemd's pam-auth-update profile (tests/support/install-deps)"
    );
    let h = harness("stack-deb-session");
    pam_auth_update(&h, "session", &["unix", "systemd", "idtoken"]);
    let common_session = read_abs(
        &h.sandbox
            .path("pam-auth-update-session/pam.d/common-session"),
    );
    let session: Vec<String> = common_session
        .lines()
        .filter(|l| l.starts_with("session"))
        .map(norm)
        .collect();
    let documented: Vec<String> = block("debian-common-session")
        .iter()
        .map(|l| norm(l))
        .collect();
    assert!(
        session.ends_with(&documented),
        "docs/policy.md shows what pam-auth-update writes at the end of common-session:\n{common_session}"
    );
    let at = |module: &str| session.iter().position(|l| l.contains(module));
    assert!(
        matches!((at("pam_idtoken.so"), at("pam_systemd.so")), (Some(a), Some(b)) if a < b),
        "{common_session}"
    );
}

#[test]
fn debian_pam_auth_update_stack_with_pam_sss_works() {
    root_or_skip!();
    pam_auth_update_or_skip!();
    require!(
        has_pam_sss(),
        "pam_sss.so and its pam-auth-update profile (libpam-sss; tests/support/install-deps)"
    );
    let h = harness("stack-deb-sss");
    let common_auth = pam_auth_update(&h, "sss", &["unix", "sss", "idtoken"]);
    let lines = auth_lines(&common_auth);
    assert!(
        lines.first().is_some_and(|l| l.contains("pam_idtoken.so"))
            && lines.iter().any(|l| l.contains("pam_sss.so")),
        "the module first, pam_sss after it: {lines:?}"
    );
    let config = h.sandbox.path("idtoken.toml");
    h.service("common-auth", &with_module(&common_auth, &config))
        .service(
            "sshd",
            "@include common-auth\naccount required pam_permit.so\n",
        );
    drive_documented_cases(&h, "debian-common-auth+sss");
    assert_non_local_user_reaches_the_module(&h, "debian-common-auth+sss");
}

#[test]
fn debian_sshd_only_line_works_as_documented() {
    root_or_skip!();
    pam_auth_update_or_skip!();
    let h = harness("stack-deb-sshd");
    // The profile left off: Debian's own common-auth (pam_unix without try_first_pass).
    let common_auth = pam_auth_update(&h, "plain", &["unix"]);
    let config = h.sandbox.path("idtoken.toml");
    let line = block("debian-sshd");
    let sshd = format!(
        "{}\n@include common-auth\naccount required pam_permit.so\n",
        line.iter()
            .map(|l| with_module(l, &config))
            .collect::<Vec<_>>()
            .join("\n")
    );
    h.service("common-auth", &common_auth)
        .service("sshd", &sshd);
    drive_documented_cases(&h, "debian-sshd");
}

/// The RHEL 9 files (sshd, password-auth, system-auth, postlogin) in the harness's confdir.
fn rhel_files(h: &PamHarness, auth_dir: &str) {
    for f in ["password-auth", "system-auth"] {
        h.service(f, &fixture(&format!("{auth_dir}/{f}")));
    }
    h.service("postlogin", &fixture("rhel9/postlogin"));
}

#[test]
fn rhel_sshd_line_works_as_documented() {
    root_or_skip!();
    let h = harness("stack-rhel");
    let config = h.sandbox.path("idtoken.toml");
    rhel_files(&h, "rhel9");
    let block = block("rhel-sshd");
    let Some((anchor, module_lines)) = block.split_last() else {
        panic!("stack:rhel-sshd is empty");
    };
    assert_eq!(
        norm(anchor),
        "auth substack password-auth",
        "the RHEL block ends with the line the module goes before"
    );
    let shipped = fixture("rhel9/sshd");
    let mut sshd = String::new();
    let mut placed = false;
    for l in shipped.lines() {
        if norm(l) == norm(anchor) && !placed {
            for m in module_lines {
                sshd.push_str(&with_module(m, &config));
                sshd.push('\n');
            }
            placed = true;
        }
        sshd.push_str(l);
        sshd.push('\n');
    }
    assert!(placed, "RHEL's sshd has `{anchor}`");
    h.service("sshd", &sshd);
    drive_documented_cases(&h, "rhel-sshd");
}

/// A line of the documentation's authselect template with its `{include if "FEATURE"}`
/// condition split off.
fn template_line(line: &str) -> (String, Option<String>) {
    match line.split_once("{include if \"") {
        Some((l, rest)) => {
            let feature = rest.split('"').next().unwrap_or_default().to_string();
            (norm(l), Some(feature))
        }
        None => (norm(line), None),
    }
}

/// Whether `feature` is on in a file authselect wrote, told by the lines it adds.
fn feature_on(file: &str, feature: &str) -> bool {
    match feature {
        "with-faillock" => file.contains("pam_faillock.so"),
        other => panic!("the module's template lines name {other:?}: teach feature_on it"),
    }
}

/// The documented custom profile applied to a file authselect wrote: the template lines of
/// `stack:authselect-module-line` whose condition holds, the auth line directly above the
/// first pam_usertype/pam_localuser/pam_unix auth line, the account line directly above
/// faillock's account line, and `try_first_pass` on pam_unix's auth line.
fn custom_profile(file: &str) -> String {
    let lines: Vec<(String, Option<String>)> = block("authselect-module-line")
        .iter()
        .map(|l| template_line(l))
        .collect();
    let wanted: Vec<&String> = lines
        .iter()
        .filter(|(_, f)| f.as_deref().is_none_or(|f| feature_on(file, f)))
        .map(|(l, _)| l)
        .collect();
    let auth = wanted.iter().find(|l| l.starts_with("auth "));
    let account = wanted.iter().find(|l| l.starts_with("account "));
    let Some(auth) = auth else {
        panic!("stack:authselect-module-line has no auth line");
    };
    let mut out = String::new();
    let (mut auth_placed, mut account_placed) = (false, false);
    for l in file.lines() {
        let n = norm(l.split('#').next().unwrap_or_default());
        let module = n
            .split_whitespace()
            .find(|w| w.ends_with(".so"))
            .unwrap_or_default();
        if !auth_placed
            && n.starts_with("auth ")
            && ["pam_usertype.so", "pam_localuser.so", "pam_unix.so"].contains(&module)
        {
            out.push_str(&format!("{auth}\n"));
            auth_placed = true;
        }
        if let Some(account) = account
            && !account_placed
            && n.starts_with("account ")
            && module == "pam_faillock.so"
        {
            out.push_str(&format!("{account}\n"));
            account_placed = true;
        }
        if n.starts_with("auth ") && module == "pam_unix.so" && !n.contains("try_first_pass") {
            out.push_str(&format!("{n} try_first_pass\n"));
        } else {
            out.push_str(&format!("{l}\n"));
        }
    }
    assert!(
        auth_placed,
        "no pam_usertype/pam_localuser/pam_unix auth line in {file}"
    );
    assert!(
        account.is_none() || account_placed,
        "the account line has no pam_faillock line to go above in {file}"
    );
    out
}

/// The lines of `phase` in a PAM file, comments dropped and whitespace made single.
fn phase_lines(text: &str, phase: &str) -> Vec<String> {
    text.lines()
        .map(|l| norm(l.split('#').next().unwrap_or_default()))
        .filter(|l| l.trim_start_matches('-').split_whitespace().next() == Some(phase))
        .collect()
}

/// The RHEL 9 files of fixture set `set` with the documented custom profile in system-auth
/// and password-auth, the module pointed at the test's config, and RHEL's sshd, postlogin
/// and an `su` that uses system-auth as RHEL's does.
fn custom_profile_files(h: &PamHarness, set: &str) {
    let config = h.sandbox.path("idtoken.toml");
    for f in ["password-auth", "system-auth"] {
        h.service(
            f,
            &with_module(&custom_profile(&fixture(&format!("{set}/{f}"))), &config),
        );
    }
    rhel_common_files(h);
}

fn rhel_common_files(h: &PamHarness) {
    h.service("postlogin", &fixture("rhel9/postlogin"))
        .service("sshd", &fixture("rhel9/sshd"))
        .service(
            "su",
            "auth substack system-auth\naccount include system-auth\n",
        );
}

/// The documented profile, with its base's own lines: the block's lines of each phase it
/// shows, less the module's and `try_first_pass`, are the fixture's; and the block is what
/// the placement rule makes of the fixture.
fn assert_documented_profile(set: &str, name: &str) {
    let documented = block(name);
    for f in ["password-auth", "system-auth"] {
        let shipped = fixture(&format!("{set}/{f}"));
        let placed = custom_profile(&shipped);
        for phase in ["auth", "account"] {
            let doc = phase_lines(&documented.join("\n"), phase);
            if doc.is_empty() {
                continue;
            }
            let without_ours: Vec<String> = doc
                .iter()
                .filter(|l| !l.contains("pam_idtoken.so"))
                .map(|l| l.replace(" try_first_pass", ""))
                .collect();
            assert_eq!(
                without_ours,
                phase_lines(&shipped, phase),
                "{name}: the documented {phase} lines are {set}'s own plus the module's"
            );
            assert_eq!(
                doc,
                phase_lines(&placed, phase),
                "{name}: the documented {phase} lines are the placement rule applied to {set}/{f}"
            );
        }
    }
}

#[test]
fn authselect_profile_from_sssd_works_as_documented() {
    root_or_skip!();
    assert_documented_profile("rhel9-faillock", "authselect-sssd");
    let h = faillock_harness("stack-as-sssd");
    custom_profile_files(&h, "rhel9-faillock");
    drive_documented_cases(&h, "authselect-sssd");
    require!(
        has_pam_sss(),
        "pam_sss.so (libpam-sss; tests/support/install-deps) for the non-local account case"
    );
    assert_non_local_user_reaches_the_module(&h, "authselect-sssd");
}

/// authselect >= 1.5 has no `minimal`: `local` replaces it (the default on RHEL 10 and
/// Fedora >= 40). The documented profile from `local` with `with-faillock`, and the
/// placement rule applied to `local` without features.
#[test]
fn authselect_profile_from_local_works_as_documented() {
    root_or_skip!();
    assert_documented_profile("authselect-local-faillock", "authselect-local");
    let h = faillock_harness("stack-as-local");
    custom_profile_files(&h, "authselect-local-faillock");
    drive_documented_cases(&h, "authselect-local");
    let h = harness("stack-as-local-plain");
    custom_profile_files(&h, "authselect-local");
    drive_documented_cases(&h, "authselect-local (no features)");
}

#[test]
fn authselect_profile_from_minimal_works_as_documented() {
    root_or_skip!();
    assert_documented_profile("authselect-minimal", "authselect-minimal");
    let h = harness("stack-as-min");
    custom_profile_files(&h, "authselect-minimal");
    drive_documented_cases(&h, "authselect-minimal");
}

/// A harness whose pam_faillock keeps its tally in the test's own /run (never the host's)
/// and reads the test's faillock.conf: RHEL's defaults, written out.
fn faillock_harness(tag: &str) -> PamHarness {
    let mut h = harness(tag);
    let run = h.sandbox.path("run");
    std::fs::create_dir_all(&run).unwrap_or_else(|e| panic!("{}: {e}", run.display()));
    set_mode(&run, 0o755);
    h.run = Some(run);
    let conf = h.etc.join("faillock.conf");
    std::fs::write(&conf, "deny = 3\nunlock_time = 600\nfail_interval = 900\n")
        .unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
    set_mode(&conf, 0o644);
    h
}

/// The failures pam_faillock counts for `user`: the valid 64-byte records of its tally file
/// (Linux-PAM's `struct tally`: source[52], reserved u16, status u16, time u64).
fn tally(h: &PamHarness, user: &str) -> usize {
    let Some(run) = &h.run else {
        panic!("not a faillock harness");
    };
    let bytes = std::fs::read(run.join("faillock").join(user)).unwrap_or_default();
    bytes
        .chunks_exact(64)
        .filter(|r| u16::from_ne_bytes([r[54], r[55]]) & 1 == 1)
        .count()
}

fn clear_tally(h: &PamHarness, user: &str) {
    if let Some(run) = &h.run {
        let _ = std::fs::remove_file(run.join("faillock").join(user));
    }
}

/// `n` failed password logins for `user` through sshd, each counted by faillock.
fn fail_passwords(h: &PamHarness, user: &str, n: usize) {
    for _ in 0..n {
        let before = tally(h, user);
        // Enter at `ID token: `, then a wrong password at `Password: ` (or no second prompt).
        let d = h.drive(
            "sshd",
            user,
            &[Some(""), Some("wrong-password")],
            &["--account"],
        );
        assert_eq!(d.rc, PAM_AUTH_ERR, "a wrong password fails: {d:?}");
        assert_eq!(tally(h, user), before + 1, "faillock counted it: {d:?}");
    }
}

#[test]
fn faillock_lock_holds_for_tokens_in_the_custom_profile() {
    root_or_skip!();
    faillock_lock_holds("rhel9-faillock", "stack-faillock");
}

/// The same with authselect >= 1.5's `local` profile (RHEL 10, Fedora >= 40).
#[test]
fn faillock_lock_holds_for_tokens_in_the_custom_profile_from_local() {
    root_or_skip!();
    faillock_lock_holds("authselect-local-faillock", "stack-faillock-local");
}

fn faillock_lock_holds(set: &str, tag: &str) {
    let h = faillock_harness(tag);
    custom_profile_files(&h, set);

    // Locked: three wrong passwords (deny = 3), then a valid token is refused.
    fail_passwords(&h, "alice", 3);
    let d = h.drive(
        "sshd",
        "alice",
        &[Some(&live_token("alice"))],
        &["--account"],
    );
    assert_eq!(
        d.rc, PAM_AUTH_ERR,
        "a locked account is refused a token login: {d:?}"
    );
    // The documented give-up: the token was checked (and logged allow), and since `done`
    // ends a stack only when nothing before failed, the stack went on to `Password: `.
    assert_eq!(
        d.prompts.get(..2),
        Some(&["ID token: ".to_string(), "Password: ".to_string()][..]),
        "{d:?}"
    );
    assert!(
        h.audit(1).iter().any(|l| l.contains("decision=allow")),
        "the token's own verdict is logged: {:?}",
        h.syslog.lines()
    );
    assert_eq!(
        tally(&h, "alice"),
        3,
        "a token login leaves the tally as it was"
    );
    let d = h.drive("sshd", "alice", &[Some(PASSWORD)], &["--account"]);
    assert_eq!(
        d.rc, PAM_AUTH_ERR,
        "the right password is refused while locked: {d:?}"
    );
    // A refused token ends the stack before `authfail`: it is not counted.
    clear_tally(&h, "alice");
    let d = h.drive(
        "sshd",
        "alice",
        &[Some(&refused_token("alice"))],
        &["--account"],
    );
    assert_eq!(d.rc, PAM_AUTH_ERR, "{d:?}");
    assert_eq!(
        tally(&h, "alice"),
        0,
        "a refused token is not a faillock failure"
    );

    // Not locked: two failures, a token login, and the two are still counted.
    fail_passwords(&h, "alice", 2);
    let d = h.drive(
        "sshd",
        "alice",
        &[Some(&live_token("alice"))],
        &["--account"],
    );
    assert_eq!(d.rc, PAM_SUCCESS, "a token logs in below the limit: {d:?}");
    assert_eq!(
        d.account,
        Some(PAM_SUCCESS),
        "the account phase passes: {d:?}"
    );
    assert_eq!(
        tally(&h, "alice"),
        2,
        "a token login does not clear faillock's tally (the account line jumps over it)"
    );
    // Password logins as before: the right one logs in and clears the tally.
    let d = h.drive("sshd", "alice", &[Some(PASSWORD)], &["--account"]);
    assert_eq!((d.rc, d.account), (PAM_SUCCESS, Some(PAM_SUCCESS)), "{d:?}");
    assert_eq!(
        tally(&h, "alice"),
        0,
        "a password login clears the tally as before"
    );
    // A wrong password typed at `ID token: ` counts as before.
    let d = h.drive("sshd", "alice", &[Some("wrong-password")], &["--account"]);
    assert_eq!(d.rc, PAM_AUTH_ERR, "{d:?}");
    assert_eq!(
        tally(&h, "alice"),
        1,
        "a wrong password at `ID token: ` is counted"
    );

    // su through system-auth keeps the lock too.
    fail_passwords(&h, "bob", 3);
    let d = h.drive("su", "bob", &[Some(&live_token("bob"))], &["--account"]);
    assert_eq!(
        d.rc, PAM_AUTH_ERR,
        "su: a locked account is refused a token: {d:?}"
    );
}

/// The RHEL ssh-only line over the stock password-auth of fixture set `set`.
fn ssh_only_files(h: &PamHarness, set: &str) {
    let config = h.sandbox.path("idtoken.toml");
    let block = block("rhel-sshd");
    let Some((anchor, module_lines)) = block.split_last() else {
        panic!("stack:rhel-sshd is empty");
    };
    let mut sshd = String::new();
    for l in fixture("rhel9/sshd").lines() {
        if norm(l) == norm(anchor) {
            for m in module_lines {
                sshd.push_str(&format!("{}\n", with_module(m, &config)));
            }
        }
        sshd.push_str(&format!("{l}\n"));
    }
    for f in ["password-auth", "system-auth"] {
        h.service(f, &fixture(&format!("{set}/{f}")));
    }
    h.service("postlogin", &fixture("rhel9/postlogin"))
        .service("sshd", &sshd);
}

#[test]
fn the_rhel_ssh_only_line_gives_up_faillock_as_documented() {
    root_or_skip!();
    let h = faillock_harness("stack-sshonly-faillock");
    ssh_only_files(&h, "rhel9-faillock");
    fail_passwords(&h, "alice", 3);
    let d = h.drive(
        "sshd",
        "alice",
        &[Some(&live_token("alice"))],
        &["--account"],
    );
    assert_eq!(
        (d.rc, d.account),
        (PAM_SUCCESS, Some(PAM_SUCCESS)),
        "docs/install.md: with the ssh-only line a locked account logs in with a token: {d:?}"
    );
    assert_eq!(
        tally(&h, "alice"),
        0,
        "docs/install.md: ...and the account phase clears faillock's tally"
    );
    let d = h.drive("sshd", "alice", &[Some(""), Some(PASSWORD)], &["--account"]);
    assert_eq!(
        d.rc, PAM_SUCCESS,
        "...which unlocks password logins too: {d:?}"
    );
}

/// pam_u2f from libpam-u2f (Debian's build of Yubico's module, as RHEL's EPEL has it).
fn has_pam_u2f() -> bool {
    ["/usr/lib/x86_64-linux-gnu/security", "/usr/lib/security"]
        .iter()
        .any(|d| Path::new(d).join("pam_u2f.so").exists())
}

/// Gives `user` a registered U2F key (pam_u2f's default authfile in the home directory).
/// No device is ever present in the test's /dev, so pam_u2f cannot pass for that user.
fn register_u2f_key(h: &PamHarness, user: &str, uid: u32) {
    let dir = h.sandbox.path(&format!("home/{user}/.config/Yubico"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let keys = dir.join("u2f_keys");
    // user:KeyHandle,UserKey,CoseType,Options (pam_u2f's format).
    std::fs::write(
        &keys,
        format!("{user}:dGVzdC1rZXktaGFuZGxl,BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA,es256,+presence\n"),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", keys.display()));
    for p in [
        h.sandbox.path(&format!("home/{user}/.config")),
        dir.clone(),
        keys.clone(),
    ] {
        let _ = std::os::unix::fs::chown(&p, Some(uid), Some(uid));
    }
    set_mode(&keys, 0o600);
}

#[test]
fn u2f_2fa_holds_for_tokens_in_the_custom_profile() {
    root_or_skip!();
    require!(
        has_pam_u2f(),
        "pam_u2f.so (libpam-u2f; tests/support/install-deps)"
    );
    let h = harness("stack-u2f");
    custom_profile_files(&h, "rhel9-u2f-2fa");
    register_u2f_key(&h, "alice", 2001);
    let d = h.drive(
        "sshd",
        "alice",
        &[Some(&live_token("alice"))],
        &["--account"],
    );
    assert_eq!(
        d.rc, PAM_AUTH_ERR,
        "an account with a registered key cannot log in with a token alone: {d:?}"
    );
    let d = h.drive("sshd", "bob", &[Some(&live_token("bob"))], &["--account"]);
    assert_eq!(
        (d.rc, d.account),
        (PAM_SUCCESS, Some(PAM_SUCCESS)),
        "an account without keys passes pam_u2f (nouserok) and logs in with a token: {d:?}"
    );
    let d = h.drive("su", "alice", &[Some(&live_token("alice"))], &[]);
    assert_eq!(
        d.rc, PAM_AUTH_ERR,
        "su (system-auth) keeps the second factor: {d:?}"
    );

    // The ssh-only line gives it up (docs/install.md).
    let h = harness("stack-sshonly-u2f");
    ssh_only_files(&h, "rhel9-u2f-2fa");
    register_u2f_key(&h, "alice", 2001);
    let d = h.drive(
        "sshd",
        "alice",
        &[Some(&live_token("alice"))],
        &["--account"],
    );
    assert_eq!(
        d.rc, PAM_SUCCESS,
        "docs/install.md: the ssh-only line lets a token skip pam_u2f: {d:?}"
    );
}

#[test]
fn smartcard_requirement_holds_for_tokens_in_the_custom_profile() {
    root_or_skip!();
    let h = harness("stack-smartcard");
    custom_profile_files(&h, "rhel9-smartcard-required");
    let d = h.drive(
        "sshd",
        "alice",
        &[Some(&live_token("alice"))],
        &["--account"],
    );
    assert_eq!(
        d.rc, PAM_AUTH_ERR,
        "password-auth refuses a token as it refuses a password (pam_deny first): {d:?}"
    );
    let d = h.drive("sshd", "alice", &[Some(PASSWORD)], &["--account"]);
    assert_eq!(
        d.rc, PAM_AUTH_ERR,
        "...and a password, as authselect means: {d:?}"
    );
    require!(
        has_pam_sss(),
        "pam_sss.so (libpam-sss; tests/support/install-deps) for system-auth's smartcard lines"
    );
    let d = h.drive("su", "alice", &[Some(&live_token("alice"))], &["--account"]);
    assert_eq!(
        d.rc, PAM_SUCCESS,
        "system-auth asks for the card only for login, gdm and the like: su takes a token: {d:?}"
    );

    // The ssh-only line gives it up (docs/install.md).
    let h = harness("stack-sshonly-smartcard");
    ssh_only_files(&h, "rhel9-smartcard-required");
    let d = h.drive(
        "sshd",
        "alice",
        &[Some(&live_token("alice"))],
        &["--account"],
    );
    assert_eq!(
        d.rc, PAM_SUCCESS,
        "docs/install.md: the ssh-only line lets a token skip password-auth's pam_deny: {d:?}"
    );
}
