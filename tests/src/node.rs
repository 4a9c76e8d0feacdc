//! A login node in a box: the host's own systemd booted as PID 1 of private PID, mount,
//! network, UTS, IPC and cgroup namespaces on a volatile root (an overlay of `/` on a
//! tmpfs), so a test meets systemd, logind, journald and the distro's sshd as a site runs
//! them, and nothing it does reaches the host. `tests/support/box` builds the root and
//! execs systemd (read it for the layout); [`Node`] boots it, waits for it, runs commands
//! in it (`nsenter`) and on drop kills its PID 1 and removes its cgroups.
//!
//! systemd ignores SIGTERM as PID 1, so the box ends by SIGKILL of its PID 1, which ends
//! its PID namespace. A killed test run leaves nothing either: the `unshare` holding the
//! box gets SIGKILL when the test's thread dies (PR_SET_PDEATHSIG) and passes it to
//! systemd (`--kill-child`).

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::accounts::PASSWORD;
use crate::https::{Server, TestCa};
use crate::sandbox::{Sandbox, set_mode};
use crate::{docs, keys, workspace_root};

/// The box's systemd: the host's own.
pub const SYSTEMD: &str = "/lib/systemd/systemd";

/// How long a box may take to reach `running` (or `degraded`). It takes ~5-25 s here; the
/// bound is for a machine busy with builds.
pub const BOOT_BOUND: Duration = Duration::from_secs(120);

/// The units every box runs: the image's other enabled units are masked.
pub const BASE_UNITS: &[&str] = &[
    "systemd-journald.service",
    "systemd-logind.service",
    "dbus.service",
];

/// Whether a box can boot here: root, systemd, unshare and nsenter.
pub fn available() -> Result<(), String> {
    if !crate::pam::can_isolate() {
        return Err("a booted box needs root".into());
    }
    if !Path::new(SYSTEMD).exists() {
        return Err(format!("{SYSTEMD} is missing (apt-get install systemd)"));
    }
    for tool in ["unshare", "nsenter", "systemctl"] {
        if crate::sshd::which(tool).is_none() {
            return Err(format!("{tool} is missing (util-linux, systemd)"));
        }
    }
    Ok(())
}

pub struct Node {
    pub name: String,
    /// The host directory the box's tmpfs is mounted on (in the box's mount namespace
    /// only: the host sees it empty).
    pub sandbox: Sandbox,
    /// The box's PID 1 (systemd), as the host numbers it.
    pub pid: u32,
    /// How long the boot took, until `systemctl is-system-running` said running/degraded.
    pub boot_time: Duration,
    /// What `systemctl is-system-running` said then.
    pub state: String,
    /// The cgroups made for the box (one per hierarchy), removed on drop.
    pub cgroups: Vec<PathBuf>,
    /// The `unshare` (stage 1) holding the box; None once killed.
    child: Option<Child>,
}

impl Node {
    /// Boots a box named after `tag` in which `units` (enabled in the image) may start too,
    /// and waits until systemd says it is up; panics with the box's journal if it does not
    /// come up within [`BOOT_BOUND`].
    pub fn boot(tag: &str, units: &[&str]) -> Node {
        let sandbox = Sandbox::new(&format!("box-{tag}"));
        let dir = sandbox.path("mnt");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        set_mode(&dir, 0o755);
        let name = format!("idtoken-{tag}");
        let script = workspace_root().join("tests/support/box");
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "--", "bash"])
            .arg(&script)
            .arg(&dir)
            .arg(&name)
            .args(BASE_UNITS)
            .args(units)
            .stdin(Stdio::null())
            .stdout(file(&sandbox.path("stage1.out")))
            .stderr(file(&sandbox.path("stage1.err")));
        crate::child::die_with_parent(&mut command);
        let start = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("unshare {}: {e}", script.display()));
        // The first line: the cgroups made; then the exec into `unshare --pid --fork`.
        let mut first = String::new();
        while start.elapsed() < BOOT_BOUND {
            let out = std::fs::read_to_string(sandbox.path("stage1.out")).unwrap_or_default();
            if let Some(line) = out.lines().find(|l| l.starts_with("cgroups ")) {
                first = line.to_string();
                break;
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let cgroups: Vec<PathBuf> = first
            .strip_prefix("cgroups ")
            .unwrap_or_default()
            .split_whitespace()
            .map(PathBuf::from)
            .collect();
        let mut node = Node {
            name,
            sandbox,
            pid: 0,
            boot_time: Duration::ZERO,
            state: String::new(),
            cgroups,
            child: Some(child),
        };
        if node.cgroups.is_empty() {
            let err = node.stage1_stderr();
            panic!("the box's first stage failed:\n{first}\n{err}");
        }
        node.pid = node.wait_for_systemd(start);
        loop {
            let out = node.run("systemctl is-system-running");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                node.state = state;
                break;
            }
            if start.elapsed() > BOOT_BOUND {
                panic!(
                    "the box did not boot within {BOOT_BOUND:?} (is-system-running: {state:?})\n\
                     units not active:\n{}\njournal:\n{}",
                    node.sh_lossy(
                        "systemctl list-units --no-pager --no-legend --state=failed,activating"
                    ),
                    node.journal()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        node.boot_time = start.elapsed();
        eprintln!(
            "box {}: {} after {:.1} s (PID 1 = host pid {})",
            node.name,
            node.state,
            node.boot_time.as_secs_f64(),
            node.pid
        );
        node
    }

    /// The host pid of the box's systemd: the child of the `unshare --pid --fork`, once it
    /// has exec'd systemd.
    fn wait_for_systemd(&mut self, start: Instant) -> u32 {
        let holder = self.child.as_ref().map(Child::id).unwrap_or_default();
        loop {
            if let Some(pid) = children(holder).first().copied()
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "systemd")
            {
                return pid;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "the box's unshare exited ({status}):\n{}",
                    self.stage1_stderr()
                );
            }
            if start.elapsed() > BOOT_BOUND {
                panic!("the box's systemd did not start:\n{}", self.stage1_stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the first stage (and systemd, whose stdout and stderr it hands on) printed.
    fn stage1_stderr(&mut self) -> String {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        format!(
            "{}{}",
            std::fs::read_to_string(self.sandbox.path("stage1.out")).unwrap_or_default(),
            std::fs::read_to_string(self.sandbox.path("stage1.err")).unwrap_or_default()
        )
    }

    /// A command run in the box (all its namespaces, its root): `sh -c script`, with `env`.
    pub fn command(&self, script: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-a", "-r", "-w", "--"])
            .args(["/bin/sh", "-c", script])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LC_ALL", "C.UTF-8")
            .env("SYSTEMD_PAGER", "")
            .stdin(Stdio::null());
        c
    }

    /// Runs `script` in the box, bounded (60 s).
    pub fn run(&self, script: &str) -> Output {
        crate::sshd::run_bounded(&mut self.command(script))
    }

    /// Runs `script` in the box and returns its stdout; panics with its output on failure.
    pub fn sh(&self, script: &str) -> String {
        let out = self.run(script);
        assert!(
            out.status.success(),
            "in the box: {script}\n{}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// stdout and stderr of `script`, whatever its exit status.
    pub fn sh_lossy(&self, script: &str) -> String {
        let out = self.run(script);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// A path of the box's file system as the host reaches it (through its PID 1's root).
    pub fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(inside.trim_start_matches('/'))
    }

    /// Writes a file in the box, owned by root, with `mode`.
    pub fn write(&self, inside: &str, contents: &[u8], mode: u32) {
        let p = self.path(inside);
        if let Some(parent) = p.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("{inside} in the box: {e}"));
        let _ = std::os::unix::fs::chown(&p, Some(0), Some(0));
        set_mode(&p, mode);
    }

    /// The box's journal of this boot (the last 300 lines).
    pub fn journal(&self) -> String {
        self.sh_lossy("journalctl -b --no-pager -n 300")
    }

    /// Kills the box: SIGKILL to its PID 1 (which ends its PID namespace), reaps the
    /// `unshare`, removes the cgroups (a cgroup with a process left in it cannot be removed:
    /// returns an error naming it).
    pub fn kill(&mut self) -> Result<(), String> {
        if self.pid != 0 {
            // SAFETY: kill(2) on the box's PID 1, a process this harness started.
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        }
        if let Some(mut c) = self.child.take() {
            let start = Instant::now();
            while !matches!(c.try_wait(), Ok(Some(_))) {
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.pid = 0;
        let mut left = Vec::new();
        for cg in std::mem::take(&mut self.cgroups) {
            if let Err(e) = remove_cgroup(&cg) {
                left.push(format!("{}: {e}", cg.display()));
            }
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(left.join("; "))
        }
    }

    /// The `unshare` holding the box, as the host numbers it (for the harness's own test).
    pub fn holder_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Removes a cgroup tree bottom-up, retrying while its last processes are exiting.
fn remove_cgroup(cg: &Path) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match remove_tree(cg) {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() > Duration::from_secs(10) => return Err(e.to_string()),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

fn file(p: &Path) -> Stdio {
    std::fs::File::create(p)
        .map(Stdio::from)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            eprintln!("box {}: {e}", self.name);
        }
    }
}

// ---------------------------------------------------------------------------------------
// A site install in a box, and logins to it

/// The built .debs (idtoken, libpam-idtoken): `tests/packaging/build-debs`' output in
/// target/packaging/deb (or `IDTOKEN_BOX_DEBS`), built now if missing (once per test
/// process, whichever test asks first).
pub fn debs() -> (PathBuf, PathBuf) {
    static BUILD: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = std::env::var_os("IDTOKEN_BOX_DEBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/packaging/deb"));
    let find = |prefix: &str| {
        std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with(prefix) && n.ends_with(".deb") && !n.contains("dbgsym"))
            .map(|n| dir.join(n))
    };
    if find("idtoken_").is_none() || find("libpam-idtoken_").is_none() {
        eprintln!(
            "building the .debs (tests/packaging/build-debs {})",
            dir.display()
        );
        let st = Command::new("bash")
            .arg(workspace_root().join("tests/packaging/build-debs"))
            .arg(&dir)
            .status()
            .unwrap_or_else(|e| panic!("build-debs: {e}"));
        assert!(st.success(), "build-debs failed");
    }
    match (find("idtoken_"), find("libpam-idtoken_")) {
        (Some(a), Some(b)) => (a, b),
        _ => panic!("no .debs in {}", dir.display()),
    }
}

impl Node {
    /// `dpkg -i` of the built .debs, copied in first: the box has a /tmp (and /var/tmp, /run)
    /// of its own, so a checkout under the host's /tmp is not there.
    pub fn install_debs(&self) {
        let (cmd_deb, lib_deb) = debs();
        let mut inside = Vec::new();
        for deb in [&cmd_deb, &lib_deb] {
            let name = deb
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bytes = std::fs::read(deb).unwrap_or_else(|e| panic!("{}: {e}", deb.display()));
            self.write(&format!("/root/{name}"), &bytes, 0o644);
            inside.push(format!("/root/{name}"));
        }
        self.sh(&format!("dpkg -i {}", inside.join(" ")));
    }

    /// Installs the site as an admin does, profile left off: `dpkg -i` of the built .debs,
    /// the key cache of [`keys::ISSUER`] (key A) and `config` as /etc/security/idtoken.toml
    /// (which `idtoken config check` must accept), the README's sshd lines
    /// (`stack:sshd-config`) in a drop-in and ssh reloaded when ssh.service runs, and a user
    /// alice (password [`PASSWORD`]).
    pub fn install_site(&self, config: &str) {
        self.install_debs();
        self.write(
            "/var/lib/idtoken/gitlab.jwks.json",
            keys::jwks(&[keys::Key::A]).to_string().as_bytes(),
            0o644,
        );
        self.write("/etc/security/idtoken.toml", config.as_bytes(), 0o644);
        self.sh("idtoken config check");
        let sshd_lines = docs::block("sshd-config").join("\n");
        self.write(
            "/etc/ssh/sshd_config.d/10-idtoken.conf",
            format!("{sshd_lines}\n").as_bytes(),
            0o644,
        );
        if self.sh_lossy("systemctl is-active ssh.service").trim() == "active" {
            self.sh("systemctl reload ssh");
        }
        self.sh(&format!(
            "useradd -m -s /bin/sh alice && echo 'alice:{PASSWORD}' | chpasswd"
        ));
    }

    /// `ssh` in the box to its own sshd as alice, keyboard-interactive, as a CI job runs
    /// it: the installed `idtoken-askpass` answering from `$IDTOKEN`.
    pub fn ssh_token(&self, token: &str, remote: &str) -> Command {
        let mut c = self.command(&format!(
            "exec ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
             -o PreferredAuthentications=keyboard-interactive -o PubkeyAuthentication=no \
             -o NumberOfPasswordPrompts=1 -o ConnectTimeout=10 alice@127.0.0.1 '{remote}'"
        ));
        c.env("SSH_ASKPASS", "/usr/bin/idtoken-askpass")
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("IDTOKEN_HOST", "127.0.0.1")
            .env("IDTOKEN", token);
        c
    }

    /// `ssh` in the box as alice with her password, typed at `ID token: ` (or `Password: `)
    /// by sshpass, keyboard-interactive.
    pub fn ssh_password(&self, remote: &str) -> Command {
        let mut c = self.command(&format!(
            "exec sshpass -P 'ID token' -e ssh -F /dev/null -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o PreferredAuthentications=keyboard-interactive \
             -o PubkeyAuthentication=no -o ConnectTimeout=10 alice@127.0.0.1 '{remote}'"
        ));
        c.env("SSHPASS", PASSWORD);
        c
    }

    /// The kit's HTTPS server ([`Server::https`]) listening on the box's own loopback
    /// (bound from a thread that joined the box's network namespace), for the box's units
    /// to reach; `url()` is as the box sees it.
    pub fn https_server(&self, ca: &TestCa) -> BoxServer {
        let netns: OwnedFd = std::fs::File::open(format!("/proc/{}/ns/net", self.pid))
            .unwrap_or_else(|e| panic!("the box's network namespace: {e}"))
            .into();
        let server = in_netns(&netns, || Server::https(ca));
        BoxServer {
            server: Some(server),
            netns,
        }
    }
}

/// A [`Server`] in a box's network namespace. Dropping it stops it from that namespace
/// too (its accept loop is woken by a connection to its own address), which the held
/// namespace descriptor keeps alive even after the box is gone.
pub struct BoxServer {
    server: Option<Server>,
    netns: OwnedFd,
}

impl std::ops::Deref for BoxServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        match &self.server {
            Some(s) => s,
            None => unreachable!("a BoxServer holds its server until dropped"),
        }
    }
}

impl Drop for BoxServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            in_netns(&self.netns, move || drop(s));
        }
    }
}

/// Runs `f` on a thread that has joined the network namespace `netns` (setns applies to
/// the calling thread only; sockets made there stay in that namespace).
fn in_netns<T: Send>(netns: &OwnedFd, f: impl FnOnce() -> T + Send) -> T {
    let fd = netns.as_raw_fd();
    std::thread::scope(|s| {
        let joined = s.spawn(move || {
            // SAFETY: setns(2) on a namespace descriptor this process holds open.
            let r = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        });
        joined
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// A login left running (`exec sleep 300` at its end): the client, and what it printed so far.
pub struct Running {
    pub child: Child,
    chunks: mpsc::Receiver<String>,
    pub seen: String,
}

impl Running {
    pub fn start(mut c: Command) -> Running {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = mpsc::channel();
        for r in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut r = r;
                let mut buf = [0u8; 4096];
                while let Ok(k) = r.read(&mut buf) {
                    if k == 0
                        || tx
                            .send(String::from_utf8_lossy(&buf[..k]).into_owned())
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
        Running {
            child,
            chunks: rx,
            seen: String::new(),
        }
    }

    /// Waits (30 s at most) until the output holds `needle` followed by a line's end;
    /// returns what is between them.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(at) = self.seen.find(needle) {
                let rest = &self.seen[at + needle.len()..];
                if let Some(end) = rest.find(['\r', '\n']) {
                    return rest[..end].to_string();
                }
            }
            match self.chunks.recv_timeout(Duration::from_millis(100)) {
                Ok(c) => self.seen.push_str(&c),
                Err(_) if start.elapsed() > Duration::from_secs(30) => {
                    let _ = self.child.kill();
                    panic!("no {needle:?} after 30 s: {:?}", self.seen)
                }
                Err(_) => {}
            }
        }
    }

    /// Waits (30 s at most) until the output holds `needle` (a prompt: no line end needed).
    pub fn wait_until(&mut self, needle: &str) {
        let start = Instant::now();
        while !self.seen.contains(needle) {
            match self.chunks.recv_timeout(Duration::from_millis(100)) {
                Ok(c) => self.seen.push_str(&c),
                Err(_) if start.elapsed() > Duration::from_secs(30) => {
                    let _ = self.child.kill();
                    panic!("no {needle:?} after 30 s: {:?}", self.seen)
                }
                Err(_) => {}
            }
        }
    }

    /// The logind session id the remote command printed (`SESSION=<id>`).
    pub fn session(&mut self) -> String {
        self.wait_for("SESSION=")
    }

    /// Waits up to `bound` for the login to end; its end time (unix seconds, fractional).
    pub fn ended_within(&mut self, bound: Duration) -> Option<f64> {
        let start = Instant::now();
        while start.elapsed() < bound {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(unix_now());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Seconds of a systemd time span such as `29s` or `1min 5s`.
pub fn span_seconds(span: &str) -> Option<u64> {
    let mut total = 0;
    for part in span.split_whitespace() {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        let unit = &part[digits.len()..];
        let v: u64 = digits.parse().ok()?;
        total += match unit {
            "s" => v,
            "min" => v * 60,
            "h" => v * 3600,
            _ => return None,
        };
    }
    Some(total)
}
