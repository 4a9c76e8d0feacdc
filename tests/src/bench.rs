//! Benchmark scenarios, shared by the criterion benches (`tests/benches`) and `perf-iter`
//! (instruction counts under callgrind), so both measure exactly the same work.
//!
//! Every scenario uses the same site-like config (three rules after the shipped example
//! config, the matching one with `local_groups`), the same key cache (the issuer's current
//! key and a 4096-bit one being rotated in) and the same GitLab-shaped token of about 1.1 KB.
//! The scenarios that go through NSS, syslog or libpam run inside `isolate` (test accounts
//! in /etc, a syslog socket at /dev/log that a thread drains): see [`isolated`].

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pam_idtoken::collect::{Prompter, Secret};
use pam_idtoken::handle::{Level, PamContext};

use crate::keys;
use crate::libpam::Handle;
use crate::sandbox::set_mode;

// The scenario's accounts, config, key cache and token, and the two in-memory measurements,
// are the test kit's standard site: pam/core/benches/verify.rs measures the same.
pub use idtoken_testkit::site::{
    ACCOUNT, Decide, RawVerify, SERVICE, config_text, key_cache_json, token,
};

pub use crate::keys::now;

/// `ssh-bench --burst` and `--tree-cpu`: many logins at once, and the sshd tree's CPU.
pub mod ssh;

/// The files of a scenario: config, key cache and PAM service directory, with the modes the
/// module demands. Not removed on drop: the parent of an isolated run removes them.
#[derive(Debug, Clone)]
pub struct Files {
    pub dir: PathBuf,
}

impl Files {
    pub fn config(&self) -> PathBuf {
        self.dir.join("idtoken.toml")
    }

    pub fn confdir(&self) -> PathBuf {
        self.dir.join("pam.d")
    }

    /// The same config without `local_groups`: no getgrouplist(3) in the login path.
    pub fn config_without_groups(&self) -> PathBuf {
        self.dir.join("idtoken-nogroups.toml")
    }

    /// A service directory whose `sshd` uses [`config_without_groups`](Self::config_without_groups).
    pub fn confdir_without_groups(&self) -> PathBuf {
        self.dir.join("pam.d-nogroups")
    }

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        set_mode(path, mode);
    }

    /// Writes config, key cache, test accounts and the PAM services: `sshd` (the module,
    /// then `account required pam_permit.so`), `permit` (pam_permit only), `loaded` (the
    /// module loaded, never called) and `passing-on` (the module, then pam_permit).
    pub fn create(dir: &Path, module: &Path) -> Files {
        let f = Files {
            dir: dir.to_path_buf(),
        };
        std::fs::create_dir_all(f.confdir()).unwrap();
        set_mode(dir, 0o755);
        set_mode(&f.confdir(), 0o755);
        let cache = dir.join("gitlab.jwks.json");
        Files::write(&cache, &key_cache_json(), 0o644);
        Files::write(&f.config(), &config_text(&cache, &dir.join("uses")), 0o644);
        let nogroups =
            config_text(&cache, &dir.join("uses")).replace("local_groups = [\"hpc-ci\"]\n", "");
        assert!(!nogroups.contains("local_groups"));
        Files::write(&f.config_without_groups(), &nogroups, 0o644);
        std::fs::create_dir_all(f.confdir_without_groups()).unwrap();
        set_mode(&f.confdir_without_groups(), 0o755);
        let module_line =
            |config: &Path| format!("{} config={}", module.display(), config.display());
        let services = [
            (
                f.confdir(),
                SERVICE,
                format!(
                    "auth required {}\naccount required pam_permit.so\n",
                    module_line(&f.config())
                ),
            ),
            (
                f.confdir_without_groups(),
                SERVICE,
                format!(
                    "auth required {}\naccount required pam_permit.so\n",
                    module_line(&f.config_without_groups())
                ),
            ),
            (
                f.confdir(),
                "permit",
                "auth required pam_permit.so\naccount required pam_permit.so\n".to_string(),
            ),
            // The module loaded (libpam loads every module of a service) but never called.
            (
                f.confdir(),
                "loaded",
                format!(
                    "auth [success=done default=die] pam_permit.so\nauth required {}\n",
                    module_line(&f.config())
                ),
            ),
            // The module in front of a password module, as a site stacks it: a password
            // answer is passed on (PAM_IGNORE) to pam_permit.
            (
                f.confdir(),
                "passing-on",
                format!(
                    "auth [success=done ignore=ignore default=die] {}\nauth required pam_permit.so\n",
                    module_line(&f.config())
                ),
            ),
        ];
        for (confdir, name, text) in services {
            Files::write(&confdir.join(name), &text, 0o644);
        }
        crate::accounts::write_etc(dir);
        f
    }
}

/// A PAM handle seen by the module, without libpam: what `authenticate_with` gets from
/// the real one. The token is the answer to the prompt; log lines go to syslog(3) as
/// pam_syslog sends them (facility authpriv, `pam_idtoken(sshd:auth):` prefix).
pub struct FakeSession {
    pub token: Vec<u8>,
    pub logged: u64,
}

impl Prompter for FakeSession {
    fn prompt(&mut self, _text: &str) -> Option<Secret> {
        Some(Secret::new(self.token.clone()))
    }
}

impl PamContext for FakeSession {
    fn user(&mut self) -> Option<String> {
        Some(ACCOUNT.to_string())
    }
    fn service(&self) -> Option<String> {
        Some(SERVICE.to_string())
    }
    fn rhost(&self) -> Option<String> {
        Some("127.0.0.1".to_string())
    }
    fn cached_authtok(&self) -> Option<Secret> {
        None
    }
    fn set_authtok(&mut self, _authtok: &[u8]) {}
    fn error_message(&mut self, _text: &str) {}
    fn putenv(&mut self, _name: &str, _value: &str) {}
    fn getenv(&self, _name: &str) -> Option<String> {
        None
    }
    fn set_data(&mut self, _name: &str, _value: &str) {}
    fn log(&self, level: Level, message: &str) {
        let prio = match level {
            Level::Error => libc::LOG_ERR,
            Level::Notice => libc::LOG_NOTICE,
            Level::Debug => libc::LOG_DEBUG,
        };
        let line = std::ffi::CString::new(format!("pam_idtoken(sshd:auth): {message}"))
            .unwrap_or_default();
        // SAFETY: a "%s" format with one C string.
        unsafe { libc::syslog(libc::LOG_AUTHPRIV | prio, c"%s".as_ptr(), line.as_ptr()) };
    }
}

/// The whole per-login path as the module runs it, minus libpam: read and parse the config
/// and key cache, verify, policy, NSS (passwd and getgrouplist), the audit line to syslog.
pub struct PerLogin {
    args: Vec<String>,
    sessions: idtoken_core::session_record::SessionDir,
    session: FakeSession,
    now: i64,
}

impl PerLogin {
    pub fn new(config: &Path) -> PerLogin {
        PerLogin {
            args: vec![format!("config={}", config.display())],
            // Next to the config, not the host's /run/idtoken/sessions.
            sessions: idtoken_core::session_record::SessionDir {
                dir: config
                    .parent()
                    .unwrap_or(Path::new("/nonexistent"))
                    .join("sessions"),
            },
            session: FakeSession {
                token: token(keys::NOW).into_bytes(),
                logged: 0,
            },
            now: keys::NOW + 10,
        }
    }

    /// The PAM answer: 0 (PAM_SUCCESS) when the login is allowed.
    pub fn run(&mut self) -> i32 {
        let world = pam_idtoken::hooks::World {
            sessions: pam_idtoken::hooks::Sessions::Dir(&self.sessions),
            ..pam_idtoken::hooks::World::HOST
        };
        pam_idtoken::hooks::authenticate_with(&mut self.session, &self.args, self.now, &world)
            as i32
    }
}

/// One libpam handle started once, the module authenticating on it again and again.
pub struct LibpamOneHandle {
    handle: Handle,
}

impl LibpamOneHandle {
    pub fn new(confdir: &Path, service: &str) -> LibpamOneHandle {
        let t = token(now());
        LibpamOneHandle {
            handle: Handle::start(
                &confdir.display().to_string(),
                service,
                ACCOUNT,
                vec![Some(t)],
            ),
        }
    }

    pub fn run(&mut self) -> i32 {
        let c = &mut self.handle.client;
        c.next = 0;
        c.prompts.clear();
        c.messages.clear();
        self.handle.authenticate()
    }
}

/// pam_start, pam_authenticate, pam_end: libpam loads the module (dlopen) and unloads it
/// (dlclose) each time, as a fresh sshd child does.
pub struct LibpamStartEnd {
    confdir: String,
    service: String,
    token: String,
}

impl LibpamStartEnd {
    pub fn new(confdir: &Path, service: &str) -> LibpamStartEnd {
        LibpamStartEnd {
            confdir: confdir.display().to_string(),
            service: service.to_string(),
            token: token(now()),
        }
    }

    pub fn run(&self) -> i32 {
        let mut h = Handle::start(
            &self.confdir,
            &self.service,
            ACCOUNT,
            vec![Some(self.token.clone())],
        );
        h.authenticate()
    }
}

/// One login in a fresh process, as sshd forks a child for each connection: `pam-cold`
/// (tests/bench/pam-cold.c: pam_start, pam_authenticate, pam_end), a C program linking
/// libpam alone, spawned for each run. Against the same with the `permit` service, the
/// difference is the module's cold cost: loading it and what it brings (libgcc_s, which a
/// Rust driver would already have loaded, and sshd has not), relocating it, its first NSS
/// and syslog calls, and the login itself.
pub struct ColdProcess {
    driver: PathBuf,
    confdir: PathBuf,
    service: String,
    answers: PathBuf,
}

impl ColdProcess {
    pub fn new(files: &Files, service: &str) -> ColdProcess {
        ColdProcess::answering(files, service, &token(now()))
    }

    /// [`ColdProcess::new`] answering every prompt with `answer`.
    pub fn answering(files: &Files, service: &str, answer: &str) -> ColdProcess {
        let answers = files.dir.join(format!("answers-{service}"));
        Files::write(&answers, &format!("{answer}\n"), 0o600);
        ColdProcess {
            driver: cold_driver(files),
            confdir: files.confdir(),
            service: service.to_string(),
            answers,
        }
    }

    pub fn run(&self) -> bool {
        Command::new(&self.driver)
            .arg(&self.confdir)
            .arg(&self.service)
            .arg(ACCOUNT)
            .arg(&self.answers)
            .status()
            .unwrap_or_else(|e| panic!("{}: {e}", self.driver.display()))
            .success()
    }
}

/// Compiles tests/bench/pam-cold.c into the benchmark's directory (once per run).
fn cold_driver(files: &Files) -> PathBuf {
    let out = files.dir.join("pam-cold");
    if !out.exists() {
        let src = crate::workspace_root().join("tests/bench/pam-cold.c");
        let status = Command::new("cc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-lpam")
            .status()
            .unwrap_or_else(|e| panic!("cc (needed for {}): {e}", src.display()));
        assert!(status.success(), "cc could not build {}", src.display());
    }
    out
}

/// The environment variable that tells a re-executed benchmark where its files are.
const FILES_ENV: &str = "IDTOKEN_BENCH_FILES";
/// Extra command words put before the re-executed benchmark (e.g. valgrind's).
pub const WRAP_ENV: &str = "IDTOKEN_BENCH_WRAP";

/// The module the libpam scenarios load: `IDTOKEN_TEST_MODULE`, or the release build.
pub fn module() -> PathBuf {
    std::env::var_os("IDTOKEN_TEST_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(crate::pam::release_module_path)
}

/// Runs the calling benchmark inside `isolate`: test accounts, and a syslog socket at
/// /dev/log that a thread of this (outer) process drains. In the outer process this never
/// returns: it re-executes the program with the same arguments inside the namespace, waits,
/// removes the files and exits with the inner run's status. In the inner process it returns
/// the files. `None`: not root, so the scenario cannot run (the caller skips it).
pub fn isolated(tag: &str) -> Option<Files> {
    if let Some(dir) = std::env::var_os(FILES_ENV) {
        return Some(Files {
            dir: PathBuf::from(dir),
        });
    }
    if !crate::pam::can_isolate() {
        eprintln!(
            "SKIPPED: the {tag} benchmarks need root (mount namespaces for test accounts and /dev/log)"
        );
        return None;
    }
    let base = std::env::var_os("IDTOKEN_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("idtoken-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Files::create(&dir, &module());
    let drain = Drain::start(&dir.join("log.sock"));
    let wrap: Vec<String> = std::env::var(WRAP_ENV)
        .map(|w| w.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let exe = std::env::current_exe().unwrap();
    let status = Command::new(crate::pam::isolate_script())
        .arg("--log")
        .arg(&drain.path)
        .arg("--etc")
        .arg(dir.join("etc"))
        // A private /run on tmpfs, as on a login node: the module, loaded by libpam in this
        // process, writes its session records under /run/idtoken, which must not be the
        // host's, and a record on the disk under the test's directory would cost an inode
        // allocation that a login node's tmpfs does not.
        .arg("--run-tmpfs")
        .arg("--")
        .args(&wrap)
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(FILES_ENV, &dir)
        .status()
        .unwrap_or_else(|e| panic!("isolate: {e}"));
    let lines = drain.stop();
    eprintln!("(syslog lines received and discarded: {lines})");
    let _ = std::fs::remove_dir_all(&dir);
    std::process::exit(status.code().unwrap_or(1));
}

/// A syslog socket that counts and discards what it receives.
struct Drain {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Drain {
    fn start(path: &Path) -> Drain {
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        set_mode(path, 0o666);
        let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let (s, c) = (stop.clone(), count.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                if socket.recv(&mut buf).is_ok() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Drain {
            path: path.to_path_buf(),
            stop,
            count,
            thread,
        }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.count.load(Ordering::Relaxed)
    }
}
