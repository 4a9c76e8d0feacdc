//! A throwaway OpenSSH sshd on 127.0.0.1 with the module in its PAM stack, inside a mount
//! namespace (`isolate`) that holds the test accounts, the test PAM stack as /etc/pam.d
//! and the syslog socket as /dev/log; and the stock `ssh` client to log in to it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::pam::{self, PamHarness};
use crate::sandbox::set_mode;

pub const SSHD: &str = "/usr/sbin/sshd";

/// Whether a real sshd test can run here: root (mount namespaces, sshd), sshd and ssh.
pub fn available() -> Result<(), String> {
    if !pam::can_isolate() {
        return Err("sshd tests need root".into());
    }
    if !std::path::Path::new(SSHD).exists() {
        return Err(format!(
            "{SSHD} is missing (apt-get install openssh-server)"
        ));
    }
    if which("ssh").is_none() {
        return Err("ssh is missing (apt-get install openssh-client)".into());
    }
    Ok(())
}

pub fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// How many ports sshd is tried on before the test gives up.
const PORT_ATTEMPTS: u32 = 5;

/// What became of a starting sshd.
enum Ready {
    Listening,
    /// Someone else bound the port first; sshd exited.
    PortTaken,
    Failed,
}

pub struct Sshd {
    pub pam: PamHarness,
    pub port: u16,
    pub log: PathBuf,
    /// isolate (unshare); None once [`Sshd::stop`] reaped it.
    child: Option<Child>,
}

impl Sshd {
    /// Starts sshd whose PAM service `sshd` is `auth_lines` (with `MODULE` and `CONFIG`
    /// standing for the module's and the sandbox config's paths) and
    /// [`pam::SETCRED_PARTNER`], account/session permit.
    pub fn start(pam: PamHarness, auth_lines: &str) -> Sshd {
        Sshd::start_with_options(pam, auth_lines, &[])
    }

    /// [`Sshd::start`] with `options`, sshd_config lines (`Keyword value`) that replace the
    /// harness's line of the same keyword (ssh-bench sets the stock `MaxStartups 10:30:100`
    /// this way). Not `sshd -o`: sshd takes the last MaxStartups it reads, the file's.
    pub fn start_with_options(pam: PamHarness, auth_lines: &str, options: &[&str]) -> Sshd {
        Sshd::start_with_stack(
            pam,
            &format!(
                "{auth_lines}\n{}\naccount required pam_permit.so\nsession required pam_permit.so\npassword required pam_deny.so\n",
                pam::SETCRED_PARTNER
            ),
            options,
        )
    }

    /// [`Sshd::start_with_options`] with the whole PAM service `sshd` given: every phase's
    /// lines, `MODULE` and `CONFIG` standing for the module's and the config's paths.
    pub fn start_with_stack(pam: PamHarness, stack: &str, options: &[&str]) -> Sshd {
        let sb = &pam.sandbox;
        let stack = stack.replace("CONFIG", &sb.path("idtoken.toml").display().to_string());
        pam.service("sshd", &stack);
        let hostkey = sb.path("ssh_host_ed25519_key");
        ed25519_key(&hostkey);
        // sshd's privilege separation directory is the harness's private /run/sshd.
        let log = sb.path("sshd.log");
        // sshd cannot be handed a listening socket, so the port is chosen here and may be
        // taken by another process before sshd binds it: sshd then says so and exits, and
        // it is started again on another port.
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            let config = sb.write(
                "sshd_config",
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nUsePAM yes\n\
                     KbdInteractiveAuthentication yes\nPasswordAuthentication no\nPubkeyAuthentication no\n\
                     AuthenticationMethods keyboard-interactive\nPermitRootLogin no\nUseDNS no\n\
                     StrictModes no\nLogLevel VERBOSE\nMaxAuthTries 3\nLoginGraceTime 30\n\
                     MaxStartups 110:30:210\n",
                    hostkey.display(),
                    sb.path("sshd.pid").display()
                )
                .lines()
                .filter(|line| !options.iter().any(|o| same_keyword(line, o)))
                .chain(options.iter().copied())
                .map(|line| format!("{line}\n"))
                .collect::<String>()
                .as_bytes(),
            );
            let _ = std::fs::remove_file(&log);
            let mut command = Command::new(pam::isolate_script());
            // --pid: sshd and every session process it forks live in a PID namespace that
            // dies with isolate, and isolate dies with this thread (PR_SET_PDEATHSIG): a
            // killed test run leaves no sshd behind.
            command
                .arg("--pid")
                .arg("--log")
                .arg(&pam.syslog.path)
                .arg("--etc")
                .arg(&pam.etc)
                .arg("--pamd")
                .arg(&pam.confdir)
                .args(pam.isolate_args())
                .arg("--")
                .arg(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null());
            crate::child::die_with_parent(&mut command);
            let mut child = command.spawn().unwrap_or_else(|e| panic!("sshd: {e}"));
            match wait_ready(&mut child, &log, port) {
                Ready::Listening => {
                    return Sshd {
                        pam,
                        port,
                        log,
                        child: Some(child),
                    };
                }
                Ready::PortTaken if attempt < PORT_ATTEMPTS => {
                    eprintln!("sshd: port {port} was taken before sshd bound it; trying another");
                }
                Ready::PortTaken | Ready::Failed => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "sshd did not start; its log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
        panic!("sshd found no free port in {PORT_ATTEMPTS} attempts")
    }

    /// The `ssh` command line for `user`, keyboard-interactive only, one attempt.
    pub fn ssh(&self, user: &str, remote_command: &str) -> Command {
        self.ssh_to(&[], &format!("{user}@127.0.0.1"), remote_command)
    }

    /// [`Sshd::ssh`] with more `-o` options (HostName, HostKeyAlias...) and the destination
    /// as typed on the command line.
    pub fn ssh_to(&self, options: &[&str], destination: &str, remote_command: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-F", "/dev/null", "-p", &self.port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args([
                "-o",
                "PreferredAuthentications=keyboard-interactive",
                "-o",
                "PubkeyAuthentication=no",
            ])
            .args(["-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=10"])
            .args(options.iter().flat_map(|o| ["-o", o]))
            .arg(destination)
            .arg(remote_command)
            .stdin(Stdio::null())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("DISPLAY");
        c
    }

    /// Logs in as `user` the way a CI job does: `SSH_ASKPASS` answering the prompts from
    /// `$IDTOKEN` (its packed form in one answer when that fits, else in parts).
    pub fn login_with_askpass(&self, user: &str, token: &str, remote_command: &str) -> Output {
        run_bounded(&mut self.askpass_login(user, token, remote_command))
    }

    /// The `ssh` command of [`login_with_askpass`](Self::login_with_askpass), not yet run (to
    /// keep a session open while the test goes on).
    pub fn askpass_login(&self, user: &str, token: &str, remote_command: &str) -> Command {
        let mut c = self.ssh(user, remote_command);
        c.env("SSH_ASKPASS", self.askpass_script())
            .env_remove("IDTOKEN_PACK")
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("IDTOKEN_HOST", "127.0.0.1")
            .env("IDTOKEN", token);
        c
    }

    /// `program args` inside sshd's mount and PID namespaces (its private /run, its
    /// processes): what an admin on the login node runs, `idtoken sessions` say.
    pub fn run_inside(&self, program: &Path, args: &[&str]) -> Output {
        let pid = self
            .listener_pid()
            .unwrap_or_else(|| panic!("no sshd listener found; its log:\n{}", self.sshd_log()));
        Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "-p", "--"])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter: {e}"))
    }

    /// The host pid of this harness's listening sshd: the process whose command line names
    /// this sandbox's sshd_config.
    fn listener_pid(&self) -> Option<u32> {
        let config = self.pam.sandbox.path("sshd_config");
        let config = config.to_string_lossy();
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            // sshd rewrites its title ("sshd: /usr/sbin/sshd -D -e -f CONFIG ... [listener]"),
            // so the command line is read as one text.
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            // The process itself, not the isolate/unshare wrapper whose arguments name it.
            let exe = std::fs::read_link(e.path().join("exe")).ok()?;
            let is_listener = exe.file_name().is_some_and(|n| n == "sshd")
                && text.contains(" -D ")
                && text.contains(&format!(" {config} "));
            is_listener.then_some(pid)
        })
    }

    /// [`Sshd::login_with_askpass`] with `IDTOKEN_PACK=no`: the token as it is, in
    /// 1000-character parts (as for a login node whose module predates packed tokens).
    pub fn login_with_askpass_in_parts(
        &self,
        user: &str,
        token: &str,
        remote_command: &str,
    ) -> Output {
        let askpass = self.askpass_script();
        run_bounded(
            self.ssh(user, remote_command)
                .env("SSH_ASKPASS", askpass)
                .env("IDTOKEN_PACK", "no")
                .env("SSH_ASKPASS_REQUIRE", "force")
                // The helpers answer only the login host's prompt (SPEC v2): the host as
                // the ssh command line names it.
                .env("IDTOKEN_HOST", "127.0.0.1")
                .env("IDTOKEN", token),
        )
    }

    /// Logs in with the POSIX sh askpass of docs/ci.md (packaging/gitlab-ci/idtoken-askpass.sh),
    /// for CI images without `idtoken`.
    pub fn login_with_sh_askpass(&self, user: &str, token: &str, remote_command: &str) -> Output {
        let askpass = crate::workspace_root().join("packaging/gitlab-ci/idtoken-askpass.sh");
        run_bounded(
            self.ssh(user, remote_command)
                .env("SSH_ASKPASS", askpass)
                .env("SSH_ASKPASS_REQUIRE", "force")
                // The helpers answer only the login host's prompt (SPEC v2): the host as
                // the ssh command line names it.
                .env("IDTOKEN_HOST", "127.0.0.1")
                .env("IDTOKEN", token),
        )
    }

    /// Logs in with `sshpass -P 'ID token'`: one answer to one prompt.
    pub fn login_with_sshpass(&self, user: &str, answer: &str, remote_command: &str) -> Output {
        let mut ssh = self.ssh(user, remote_command);
        let mut c = Command::new("sshpass");
        c.args(["-P", "ID token", "-e"])
            .env("SSHPASS", answer)
            .arg(ssh.get_program())
            .args(ssh.get_args())
            .stdin(Stdio::null());
        let _ = &mut ssh;
        run_bounded(&mut c)
    }

    /// What CI images use: the askpass helper (`idtoken askpass`) behind a one-line script.
    pub fn askpass_script(&self) -> PathBuf {
        let p = self.pam.sandbox.path("askpass");
        if !p.exists() {
            std::fs::write(
                &p,
                format!(
                    "#!/bin/sh\nexec {} askpass \"$1\"\n",
                    crate::idtoken_bin().display()
                ),
            )
            .unwrap_or_else(|e| panic!("askpass: {e}"));
            set_mode(&p, 0o755);
        }
        p
    }

    pub fn sshd_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Waits until sshd says it listens on `port` (a connection would also reach someone else
/// who took the port), exits, or 10 s pass.
fn wait_ready(child: &mut Child, log: &Path, port: u16) -> Ready {
    let listening = format!("Server listening on 127.0.0.1 port {port}.");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if std::fs::read_to_string(log).is_ok_and(|l| l.contains(&listening)) {
            return Ready::Listening;
        }
        if let Ok(Some(_)) = child.try_wait() {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            return if said.contains("Address already in use") {
                Ready::PortTaken
            } else {
                Ready::Failed
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ready::Failed
}

/// Makes an ed25519 key pair without a passphrase at `path` (and `path.pub`), mode 0600:
/// sshd's host key, or a client's key.
pub fn ed25519_key(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap_or_else(|e| panic!("ssh-keygen: {e}"));
    assert!(status.success(), "ssh-keygen -f {} failed", path.display());
    set_mode(path, 0o600);
}

/// Runs a client command with a time bound, so a hung login fails the test, not CI.
pub fn run_bounded(cmd: &mut Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{:?}: {e}", cmd.get_program()));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            // SAFETY: kill(2) on the child we started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait: {e}"));
    let _ = tx.send(());
    out
}

impl Sshd {
    /// Stops sshd the way an init system does (SIGTERM) once every connection it forked has
    /// ended and been reaped, and returns the resource usage `wait4` reports for isolate:
    /// sshd's own CPU plus that of every process it and its descendants waited for (the
    /// per-connection sshd, its privilege-separated child, the session's shell), plus
    /// isolate's own set-up (a constant: ssh-bench subtracts an idle sshd's figure).
    pub fn stop(mut self) -> Result<libc::rusage, String> {
        let Some(child) = self.child.take() else {
            return Err("sshd was stopped already".into());
        };
        let unshare = child.id();
        let sshd = children(unshare)
            .first()
            .copied()
            .ok_or("isolate has no sshd child")?;
        // A connection's sshd may still be closing when the client has exited: until the
        // listener reaped it, its CPU is not in the listener's figure.
        let start = Instant::now();
        while !children(sshd).is_empty() {
            if start.elapsed() > Duration::from_secs(20) {
                return Err("sshd still has children after 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill(2) on sshd, the only child of the unshare we started; sshd (process
        // 1 of its PID namespace) has a SIGTERM handler, so the signal is delivered.
        unsafe { libc::kill(sshd as i32, libc::SIGTERM) };
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let mut status = 0;
        // SAFETY: wait4 on our own child with valid pointers; the std Child is dropped
        // after without waiting or signalling, so the reaped pid is never touched again.
        let reaped = unsafe { libc::wait4(unshare as i32, &mut status, 0, &mut usage) };
        drop(child);
        if reaped != unshare as i32 {
            return Err(format!("wait4: {}", std::io::Error::last_os_error()));
        }
        Ok(usage)
    }
}

/// Whether two sshd_config lines set the same keyword (keywords are case-insensitive).
fn same_keyword(a: &str, b: &str) -> bool {
    let keyword = |l: &str| l.split_whitespace().next().map(str::to_ascii_lowercase);
    keyword(a).is_some() && keyword(a) == keyword(b)
}

/// The pids of `pid`'s children (Linux >= 3.5 with CONFIG_PROC_CHILDREN).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // The child is isolate's unshare, which blocks SIGTERM: SIGKILL it, which kills
        // sshd (--kill-child) and so everything in its PID namespace.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
