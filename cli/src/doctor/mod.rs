//! `idtoken doctor`: checks everything a token login needs on this host — the config, the
//! key caches and their refresh, the service's PAM stack, sshd's effective settings, the
//! accounts and groups the rules name, the clock and the `max_uses` state directory — and
//! says for each what it saw and the exact fix. One file per concept; this one runs them,
//! prints them, and maps them to the exit code (0 all ok, 1 warnings only, 2 a failure).

mod accounts;
mod cgroups;
mod clock;
mod config;
mod key_cache;
mod pam_stack;
mod sshd;
mod state_dir;
mod timer;

use std::path::PathBuf;

use idtoken_core::config::{Config, DEFAULT_PATH};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// The PAM service whose stack is checked (and that the rules must cover).
    #[arg(long, default_value = "sshd")]
    service: String,
    /// The PAM configuration directory.
    #[arg(long, default_value = "/etc/pam.d")]
    pam_dir: PathBuf,
    /// The sshd configuration whose effective settings (`sshd -T`) are checked.
    #[arg(long, default_value = "/etc/ssh/sshd_config")]
    sshd_config: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The outcome of one check. `Skip`: it cannot be made on this host (no systemd, say),
/// which the detail says plainly; it does not change the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Skip,
    Warn,
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Skip => "skip",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check: a stable name, what it found, what it saw, and the fix when it is not ok.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn skip(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            status: Status::Skip,
            ..Check::ok(name, detail)
        }
    }

    pub fn warn(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            status: Status::Warn,
            fix: Some(fix.into()),
            ..Check::ok(name, detail)
        }
    }

    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            status: Status::Fail,
            fix: Some(fix.into()),
            ..Check::ok(name, detail)
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "status": self.status.as_str(),
            "detail": self.detail,
            "fix": self.fix,
        })
    }
}

/// Whether systemd is PID 1 here (sd_booted(3)'s test).
pub fn systemd_running() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

pub fn run(args: &Args) -> u8 {
    let checks = collect(args);
    if args.json {
        let all: Vec<Value> = checks.iter().map(Check::to_json).collect();
        println!("{}", json!({ "checks": all }));
    } else {
        print_text(&checks);
    }
    exit_code(&checks)
}

fn collect(args: &Args) -> Vec<Check> {
    let mut checks = Vec::new();
    let config = match Config::load(&args.config) {
        Ok(c) => Some(c),
        Err(e) => {
            checks.push(config::invalid(&args.config, &e));
            None
        }
    };
    if let Some(c) = &config {
        checks.extend(config::checks(&args.config, c, &args.service));
        checks.extend(key_cache::checks(c));
    }
    checks.push(timer::check());
    checks.extend(pam_stack::checks(
        &args.pam_dir,
        &args.service,
        &args.config,
    ));
    if let Some(c) = &config {
        checks.push(pam_stack::session_check(&args.pam_dir, &args.service, c));
        checks.push(cgroups::check(c));
    }
    checks.extend(sshd::checks(&args.sshd_config, config.as_ref()));
    if let Some(c) = &config {
        checks.extend(accounts::checks(c));
        checks.push(state_dir::check(c));
    }
    checks.push(clock::check(config.as_ref()));
    checks
}

fn exit_code(checks: &[Check]) -> u8 {
    match checks.iter().map(|c| c.status).max() {
        Some(Status::Fail) => 2,
        Some(Status::Warn) => 1,
        _ => 0,
    }
}

fn print_text(checks: &[Check]) {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        println!("{:<4}  {:<width$}  {}", c.status.as_str(), c.name, c.detail);
        if let Some(fix) = &c.fix {
            println!("{:<4}  {:<width$}  fix: {fix}", "", "");
        }
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    println!(
        "doctor: {} ok, {} warn, {} fail, {} not checked here",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::Skip)
    );
}

/// What a helper command said: success, stdout, stderr (trimmed). `None`: it could not be
/// started (not installed).
pub struct Ran {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

pub fn run_command(program: &str, args: &[&std::ffi::OsStr]) -> Option<Ran> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    Some(Ran {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}
