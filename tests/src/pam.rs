//! Driving the built module through the real libpam: a service directory naming the
//! module by absolute path (`pam_start_confdir`), `pam-drive` as the application, run in
//! `isolate` with the test accounts and the syslog socket.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value};

use crate::accounts;
use crate::sandbox::{Sandbox, last_json_line, set_mode};
use crate::syslog::Syslog;

/// Linux-PAM return codes the tests look for.
pub const PAM_SUCCESS: i64 = 0;
pub const PAM_PERM_DENIED: i64 = 6;
pub const PAM_AUTH_ERR: i64 = 7;
pub const PAM_AUTHINFO_UNAVAIL: i64 = 9;
pub const PAM_CONV_ERR: i64 = 19;

/// The module under test: `IDTOKEN_TEST_MODULE` (e.g. the packaged one) or the built one.
/// The auth line every test stack ends with. The module answers PAM_IGNORE in setcred (so
/// that the lines after it run, SPEC v3), and libpam fails a setcred walk in which every
/// module ignored it; sshd and su then fail the login. Every real stack has a module after
/// ours whose setcred succeeds (pam_unix, pam_permit, pam_env); pam_env stands in for them
/// here: its authenticate is PAM_IGNORE (Linux-PAM's pam_env.c), so it never changes an
/// authentication, and with no files to read it sets nothing.
pub const SETCRED_PARTNER: &str =
    "auth optional pam_env.so readenv=0 user_readenv=0 conffile=/dev/null";

pub fn module_path() -> PathBuf {
    std::env::var_os("IDTOKEN_TEST_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::artifact("libpam_idtoken.so"))
}

/// The module built with the `panic-injection` feature (tests/run-all builds it into
/// target/panic-injection).
pub fn panic_module_path() -> PathBuf {
    let p = crate::workspace_root().join("target/panic-injection/debug/libpam_idtoken.so");
    assert!(
        p.exists(),
        "{} is not built: cargo build -p pam-idtoken --features panic-injection --target-dir target/panic-injection",
        p.display()
    );
    p
}

pub fn isolate_script() -> PathBuf {
    crate::workspace_root().join("tests/support/isolate")
}

/// Whether this process can make mount namespaces (root).
pub fn can_isolate() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// What one `pam-drive` run saw.
#[derive(Debug, Clone)]
pub struct Drive {
    pub rc: i64,
    pub rc_name: String,
    /// The account phase's result (`--account`, after a successful authentication).
    pub account: Option<i64>,
    pub setcred: i64,
    pub prompts: Vec<String>,
    pub messages: Vec<String>,
    pub env: Map<String, Value>,
}

/// A sandbox with test accounts, a syslog socket and a PAM service directory.
pub struct PamHarness {
    pub sandbox: Sandbox,
    pub syslog: Syslog,
    pub etc: PathBuf,
    pub confdir: PathBuf,
    /// Also bind the confdir over /etc/pam.d in the namespace: Linux-PAM 1.5 looks for the
    /// files an `include`/`substack` line names in /etc/pam.d, not in the confdir.
    pub bind_pamd: std::sync::atomic::AtomicBool,
    /// Environment for pam-drive (e.g. nss_wrapper, for accounts NSS knows but
    /// /etc/passwd does not, as an LDAP account).
    pub drive_env: std::sync::Mutex<Vec<(String, String)>>,
    /// A test's own sssd (`isolate --sss`): its config, socket and caches, for every
    /// process the harness starts (tests/src/directory.rs).
    pub sss: Option<PathBuf>,
    /// The private /run of every process the harness starts (`isolate --run`): the
    /// module's session records (/run/idtoken/sessions), pam_faillock's tallies
    /// (/run/faillock) and sshd's privilege separation directory are the test's, never the
    /// host's.
    pub run: Option<PathBuf>,
    /// A fresh tmpfs as that /run instead of `run` (`isolate --run-tmpfs`), as /run is on a
    /// booted host: for the benchmarks, whose figures must not hold the inode allocation of
    /// the disk under the test's directory (a session record is a file made per login).
    pub run_tmpfs: bool,
}

impl PamHarness {
    pub fn new(tag: &str) -> PamHarness {
        let sandbox = Sandbox::new(tag);
        let syslog = Syslog::start(&sandbox.dir);
        let etc = accounts::write_etc(&sandbox.dir);
        let confdir = sandbox.path("pam.d");
        let _ = std::fs::create_dir_all(&confdir);
        set_mode(&confdir, 0o755);
        let run = sandbox.path("run");
        let _ = std::fs::create_dir_all(run.join("sshd"));
        set_mode(&run, 0o755);
        set_mode(&run.join("sshd"), 0o755);
        PamHarness {
            sandbox,
            syslog,
            etc,
            confdir,
            bind_pamd: std::sync::atomic::AtomicBool::new(false),
            drive_env: std::sync::Mutex::new(Vec::new()),
            sss: None,
            run: Some(run),
            run_tmpfs: false,
        }
    }

    /// The `isolate` options every process of this harness gets besides its own: its sssd
    /// and its private /run.
    pub fn isolate_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = match &self.sss {
            Some(dir) => vec!["--sss".into(), dir.into()],
            None => Vec::new(),
        };
        if self.run_tmpfs {
            args.push("--run-tmpfs".into());
        } else if let Some(run) = &self.run {
            args.extend(["--run".into(), run.into()]);
        }
        args
    }

    /// Writes the service `name` with these lines (`MODULE` stands for the module's path).
    pub fn service(&self, name: &str, lines: &str) -> &Self {
        self.service_with(name, lines, &module_path())
    }

    pub fn service_with(&self, name: &str, lines: &str, module: &Path) -> &Self {
        let text = lines.replace("MODULE", &module.display().to_string());
        let p = self.confdir.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        set_mode(&p, 0o644);
        self
    }

    /// Builds tests/support/pam_session_probe.c into the sandbox: the module that stands
    /// where pam_systemd (or pam_env) would and reports what it sees in setcred and the
    /// session phase (the `systemd.runtime_max_sec` data item, IDTOKEN_EXP).
    pub fn session_probe(&self) -> PathBuf {
        self.support_module("pam_session_probe")
    }

    /// Builds tests/support/NAME.c into the sandbox as NAME.so: a test module (the session
    /// probe, pam_info_first).
    pub fn support_module(&self, name: &str) -> PathBuf {
        let out = self.sandbox.path(&format!("{name}.so"));
        let src = crate::workspace_root().join(format!("tests/support/{name}.c"));
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-Wall", "-Werror", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-lpam")
            .status()
            .unwrap_or_else(|e| panic!("cc (build-essential): {e}"));
        assert!(status.success(), "{name} must build");
        set_mode(&out, 0o755);
        out
    }

    /// The usual test stack: the module with the documented controls (`success=done`; any
    /// failure ends the stack with the module's own code, as `required` would give it), the
    /// sandbox's config, and [`SETCRED_PARTNER`].
    ///
    /// Not `required`: in one process libpam walks setcred along the chain authenticate
    /// froze, and a module whose authenticate answer was PAM_IGNORE (pam_env) counts for
    /// nothing in setcred then; behind a `required` module that walk would end with no
    /// module succeeding. Behind `success=done` the partner never ran in authenticate, so
    /// its setcred counts (Linux-PAM's pam_dispatch.c, the cached chain).
    pub fn module_only(&self, name: &str, extra_args: &str) -> &Self {
        let config = self.sandbox.path("idtoken.toml");
        self.service(
            name,
            &format!(
                "auth [success=done ignore=ignore default=die] MODULE config={} {extra_args}\n{SETCRED_PARTNER}\naccount required pam_permit.so\n",
                config.display()
            ),
        )
    }

    /// `program` (a test binary) inside `isolate` with this harness's syslog socket, test
    /// accounts and sssd, given `--confdir` of this harness's PAM services: the start of
    /// every libpam driver's command line (pam-load, pam-memscan).
    pub fn isolated(&self, program: &Path) -> Command {
        let mut c = Command::new(isolate_script());
        c.arg("--log")
            .arg(&self.syslog.path)
            .arg("--etc")
            .arg(&self.etc)
            .args(self.isolate_args())
            .arg("--")
            .arg(program)
            .arg("--confdir")
            .arg(&self.confdir);
        c
    }

    /// Runs pam-drive for `user` on `service`, answering prompts with `answers` in order
    /// (`None`: the client gives up at that prompt).
    pub fn drive(
        &self,
        service: &str,
        user: &str,
        answers: &[Option<&str>],
        extra: &[&str],
    ) -> Drive {
        self.drive_as(None, service, user, answers, extra)
    }

    /// As [`drive`](Self::drive), with pam-drive running as `uid` (gid the same) when
    /// given: for files a root process could read anyway.
    pub fn drive_as(
        &self,
        uid: Option<u32>,
        service: &str,
        user: &str,
        answers: &[Option<&str>],
        extra: &[&str],
    ) -> Drive {
        let answers_file = self.sandbox.path(&format!("answers-{}", unique()));
        let text: String = answers
            .iter()
            .map(|a| format!("{}\n", a.unwrap_or("<NO-ANSWER>")))
            .collect();
        std::fs::write(&answers_file, text).unwrap_or_else(|e| panic!("answers: {e}"));
        set_mode(&answers_file, 0o644);
        let env = self.drive_env.lock().map(|e| e.clone()).unwrap_or_default();
        let out = Command::new(isolate_script())
            .envs(env)
            .arg("--log")
            .arg(&self.syslog.path)
            .arg("--etc")
            .arg(&self.etc)
            .args(
                if self.bind_pamd.load(std::sync::atomic::Ordering::Relaxed) {
                    vec![std::ffi::OsStr::new("--pamd"), self.confdir.as_os_str()]
                } else {
                    Vec::new()
                },
            )
            .args(self.isolate_args())
            .arg("--")
            .args(match uid {
                Some(u) => vec![
                    "setpriv".to_string(),
                    format!("--reuid={u}"),
                    format!("--regid={u}"),
                    "--clear-groups".to_string(),
                    "--".to_string(),
                ],
                None => Vec::new(),
            })
            .arg(crate::artifact("pam-drive"))
            .arg("--confdir")
            .arg(&self.confdir)
            .args(["--service", service, "--user", user, "--answers-file"])
            .arg(&answers_file)
            .args(extra)
            .output()
            .unwrap_or_else(|e| panic!("isolate: {e}"));
        assert!(
            out.status.success(),
            "pam-drive failed: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let v = last_json_line(&out.stdout);
        let strings = |k: &str| {
            v.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        Drive {
            rc: v.get("rc").and_then(Value::as_i64).unwrap_or(-1),
            rc_name: v
                .get("rc_name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            account: v.get("account").and_then(Value::as_i64),
            setcred: v.get("setcred").and_then(Value::as_i64).unwrap_or(-1),
            prompts: strings("prompts"),
            messages: strings("messages"),
            env: v
                .get("env")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// Waits briefly for `n` audit lines and returns them.
    pub fn audit(&self, n: usize) -> Vec<String> {
        self.syslog
            .wait_for("decision=", n, std::time::Duration::from_secs(3))
    }
}

/// The token cut into the parts the module asks for (1000 characters each).
pub fn parts(token: &str) -> Vec<String> {
    token
        .as_bytes()
        .chunks(1000)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The optimised module (tests/run-all builds it with `cargo build --release -p pam-idtoken`),
/// for the load test: the debug build's RSA is far slower than what a host runs.
pub fn release_module_path() -> PathBuf {
    let p = crate::workspace_root().join("target/release/libpam_idtoken.so");
    assert!(
        p.exists(),
        "{} is not built: cargo build --release -p pam-idtoken",
        p.display()
    );
    p
}
