//! docs/install.md's "Build from source" (issue 14, item 9): `packaging/install-from-source` run into
//! a DESTDIR installs every file the packages install, where the packages put them (the
//! module next to the host's pam_unix.so, the unit pointing at the installed binary), and
//! never replaces an existing config. The build itself is cargo's: the script is given the
//! already built debug artifacts as its "release" directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use idtoken_e2e::sandbox::Sandbox;
use idtoken_e2e::{artifact, workspace_root};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The host's PAM module directory, as the script finds it.
fn security_dir() -> PathBuf {
    [
        "/usr/lib/x86_64-linux-gnu/security",
        "/usr/lib/aarch64-linux-gnu/security",
        "/usr/lib64/security",
        "/usr/lib/security",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|d| d.join("pam_unix.so").exists())
    .unwrap_or_else(|| panic!("no pam_unix.so on this host"))
}

fn run(s: &Sandbox, destdir: &Path, prefix: &str) -> String {
    // A stand-in target dir whose release/ holds the debug builds.
    let release = s.path("target/release");
    std::fs::create_dir_all(&release).unwrap_or_else(|e| panic!("{e}"));
    for f in ["libpam_idtoken.so", "idtoken"] {
        std::fs::copy(artifact(f), release.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let out = Command::new(workspace_root().join("packaging/install-from-source"))
        .arg("--no-build")
        .env("DESTDIR", destdir)
        .env("PREFIX", prefix)
        .env("CARGO_TARGET_DIR", s.path("target"))
        .env_remove("SECURITYDIR")
        .env_remove("UNITDIR")
        .output()
        .unwrap_or_else(|e| panic!("install-from-source: {e}"));
    assert!(
        out.status.success(),
        "install-from-source: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn install_from_source_installs_what_the_packages_do() {
    let s = Sandbox::new("from-source");
    let root = s.path("root");
    run(&s, &root, "/usr/local");
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let sec = security_dir();
    let module = at(&sec.join("pam_idtoken.so").display().to_string());
    let expected = [
        (module.clone(), 0o644),
        (at("/usr/local/bin/idtoken"), 0o755),
        (at("/usr/lib/systemd/system/idtoken-refresh.service"), 0o644),
        (at("/usr/lib/systemd/system/idtoken-refresh.timer"), 0o644),
        (at("/usr/local/share/man/man1/idtoken.1"), 0o644),
        (at("/usr/local/share/man/man5/idtoken.toml.5"), 0o644),
        (at("/usr/local/share/man/man8/pam_idtoken.8"), 0o644),
        (at("/usr/local/share/doc/idtoken/idtoken-askpass.sh"), 0o644),
        (at("/usr/local/share/doc/idtoken/install.md"), 0o644),
        (at("/usr/local/share/doc/idtoken/ci.md"), 0o644),
        (
            at("/usr/local/share/doc/idtoken/idtoken-ssh.gitlab-ci.yml"),
            0o644,
        ),
        (at("/etc/security/idtoken.toml"), 0o644),
        (at("/var/lib/idtoken"), 0o755),
    ];
    for (p, m) in &expected {
        assert_eq!(mode(p), *m, "{}", p.display());
    }
    assert_eq!(
        std::fs::read_link(at("/usr/local/bin/idtoken-askpass")).ok(),
        Some(PathBuf::from("idtoken")),
        "the askpass name is a link to idtoken"
    );
    assert_eq!(
        std::fs::read(&module).ok(),
        std::fs::read(artifact("libpam_idtoken.so")).ok(),
        "the module as built"
    );
    let unit = std::fs::read_to_string(at("/usr/lib/systemd/system/idtoken-refresh.service"))
        .unwrap_or_default();
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/local/bin/idtoken refresh"),
        "the unit runs the installed binary: {unit}"
    );
    let config = at("/etc/security/idtoken.toml");
    assert_eq!(
        std::fs::read(&config).ok(),
        std::fs::read(workspace_root().join("packaging/idtoken.toml")).ok()
    );
    // A second run keeps the admin's config.
    std::fs::write(&config, "# mine\n").unwrap_or_else(|e| panic!("{e}"));
    run(&s, &root, "/usr/local");
    assert_eq!(
        std::fs::read_to_string(&config).ok().as_deref(),
        Some("# mine\n"),
        "an existing config is never replaced"
    );
    // The default prefix is the packages' /usr, and the unit's path stays as shipped.
    let usr = s.path("root-usr");
    run(&s, &usr, "/usr");
    assert_eq!(mode(&usr.join("usr/bin/idtoken")), 0o755);
    let unit = std::fs::read_to_string(usr.join("usr/lib/systemd/system/idtoken-refresh.service"))
        .unwrap_or_default();
    assert_eq!(
        unit,
        std::fs::read_to_string(workspace_root().join("packaging/systemd/idtoken-refresh.service"))
            .unwrap_or_default()
    );
}
