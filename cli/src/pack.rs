//! `idtoken pack`: a token's packed form (pam_idtoken(8) PACKED TOKENS), which fits one
//! answer of an OpenSSH client where a GitLab token does not. `--check` prints the sizes
//! and whether it fits instead of the packed token.

use std::path::PathBuf;

use idtoken_core::packed::{self, ONE_ANSWER};

use crate::token_input;

#[derive(clap::Args)]
pub struct Args {
    /// File holding the token; `-` or absent: standard input.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Print the token's and the packed form's sizes and whether it fits one answer
    /// (fewer than 1000 characters) instead of the packed token; exit 1 if it does not fit.
    #[arg(long)]
    check: bool,
}

/// Exit codes: 0 packed (and, with --check, fits one answer); 1 with --check, does not
/// fit; 2 the token cannot be read or packed.
pub fn run(args: &Args) -> u8 {
    let raw = match token_input::read(args.token_file.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("idtoken pack: {e}");
            return 2;
        }
    };
    let token = raw.trim();
    if packed::looks_packed(token) {
        eprintln!("idtoken pack: the token is packed already");
        return 2;
    }
    let packed = match packed::pack(token) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("idtoken pack: cannot pack this token: {e}; send it unpacked");
            return 2;
        }
    };
    // The packer's own proof: what the module will unpack is the token, byte for byte.
    match packed::unpack(&packed) {
        Ok(u) if u.jws.as_str() == token => {}
        _ => {
            eprintln!(
                "idtoken pack: the packed form does not unpack to the token; send it unpacked"
            );
            return 2;
        }
    }
    if !args.check {
        println!("{packed}");
        return 0;
    }
    let fits = packed.len() < ONE_ANSWER;
    println!("token: {} characters", token.len());
    println!(
        "packed: {} characters ({}, dictionary {})",
        packed.len(),
        percent(packed.len(), token.len()),
        packed::DEFAULT_DICTIONARY.name
    );
    if fits {
        println!("one answer: yes (under {ONE_ANSWER} characters)");
        0
    } else {
        println!(
            "one answer: no ({ONE_ANSWER} characters or more: sent in parts, `idtoken askpass`)"
        );
        1
    }
}

/// `part` as a whole percentage of `whole`, rounded down.
fn percent(part: usize, whole: usize) -> String {
    match part.saturating_mul(100).checked_div(whole) {
        Some(p) => format!("{p}% of the token"),
        None => "-".to_string(),
    }
}
