//! `idtoken`: the admin command of pam_idtoken. Each subcommand lives in its own file;
//! this one only parses arguments and maps outcomes to the SPEC's exit codes.
//!
//! Outside tests nothing here may panic: every failure is a message and an exit code.
//! Nor is there any unsafe code: the command needs no FFI of its own.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod askpass;
mod atomic_file;
mod check;
mod config_check;
mod doctor;
mod http;
mod inspect;
mod pack;
mod refresh;
mod revoke;
mod rotation;
mod sessions;
mod status;
mod token_input;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "idtoken",
    version,
    about = "Log in to this host with CI ID tokens: key cache, status, policy checks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decide a token as the PAM module would, with a trace of every step and rule.
    Check(check::Args),
    /// Show a token's header and claims, decoded and UNVERIFIED.
    Inspect(inspect::Args),
    /// Fetch each issuer's keys over HTTPS and atomically replace its key cache.
    Refresh(refresh::Args),
    /// Show each issuer's key cache: path, age, keys, and any problem.
    Status(status::Args),
    /// Validate the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Write a token's packed form, which fits one prompt's answer (pam_idtoken(8)).
    Pack(pack::Args),
    /// SSH_ASKPASS helper: print the part of $IDTOKEN that PROMPT asks for.
    Askpass(askpass::Args),
    /// Check everything a token login needs on this host, each with its fix.
    Doctor(doctor::Args),
    /// List the live token sessions on this host.
    Sessions(sessions::Args),
    /// Withdraw tokens before they expire (by jti, pipeline, project, user or rule);
    /// --list, --remove ID.
    Revoke(revoke::Args),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the config file; every problem is printed with its line.
    Check {
        #[arg(long, default_value = idtoken_core::config::DEFAULT_PATH)]
        config: PathBuf,
    },
}

/// Installed as a symlink under this name, the command is the SSH_ASKPASS program itself:
/// ssh runs `SSH_ASKPASS PROMPT`, with no room for a subcommand.
const ASKPASS_NAME: &str = "idtoken-askpass";

/// What a shell reports for a command killed by SIGPIPE (128 + 13), as `yes | head -1` does.
const EXIT_CLOSED_PIPE: i32 = 141;

/// A closed output pipe (`idtoken check ... | head -1`) ends every command quietly: `println!`
/// panics on EPIPE, and this crate has no unsafe code to restore SIGPIPE's default action,
/// so the panic hook recognises that one panic and exits at once, printing nothing. Any
/// other panic goes to the default hook as before.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // std's message for a failed print; os error 32 is EPIPE.
        if msg.starts_with("failed printing to") && msg.contains("(os error 32)") {
            std::process::exit(EXIT_CLOSED_PIPE);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let mut argv = std::env::args_os();
    let invoked_as = argv.next().map(std::path::PathBuf::from);
    if invoked_as.as_deref().and_then(std::path::Path::file_name) == Some(ASKPASS_NAME.as_ref()) {
        let prompt = argv
            .next()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        return ExitCode::from(askpass::answer(&prompt));
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors; bad arguments are "could not decide".
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let code = match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Refresh(args) => refresh::run(&args),
        Command::Status(args) => status::run(&args),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => config_check::run(&config),
        Command::Pack(args) => pack::run(&args),
        Command::Askpass(args) => askpass::run(&args),
        Command::Doctor(args) => doctor::run(&args),
        Command::Sessions(args) => sessions::run(&args),
        Command::Revoke(args) => revoke::run(&args),
    };
    ExitCode::from(code)
}
