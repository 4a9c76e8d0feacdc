//! `idtoken askpass PROMPT`: the SSH_ASKPASS helper of CI jobs.
//!
//! OpenSSH cuts every answer to 1023 characters, so the module asks for long tokens in
//! parts: `ID token: ` is part 1, `ID token (part N): ` part N, each 1000 characters of
//! `$IDTOKEN`. Any other prompt (a password, a host key question) is refused, so the
//! token is only ever typed where the token was asked for.

use std::io::Write;

/// Characters per part, as the module expects them.
pub const PART_CHARS: usize = 1000;

#[derive(clap::Args)]
pub struct Args {
    /// The prompt ssh passes to its askpass program.
    prompt: String,
}

pub fn run(args: &Args) -> u8 {
    answer(&args.prompt)
}

/// Prints the part of `$IDTOKEN` that `prompt` asks for; the exit code.
pub fn answer(prompt: &str) -> u8 {
    let args = Args {
        prompt: prompt.to_string(),
    };
    let Some(part) = part_number(&args.prompt) else {
        eprintln!(
            "idtoken askpass: not answering prompt {:?}: only `ID token` prompts get the token",
            args.prompt.trim()
        );
        return 1;
    };
    let token = match std::env::var("IDTOKEN") {
        Ok(t) if !t.trim().is_empty() => t,
        _ => {
            eprintln!(
                "idtoken askpass: $IDTOKEN is not set; add the id_tokens: entry to the job and export IDTOKEN"
            );
            return 1;
        }
    };
    let slice = part_of(token.trim(), part);
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{slice}").and_then(|()| out.flush()).is_err() {
        return 1;
    }
    0
}

/// 1 for `ID token: `, N for `ID token (part N): `, None for any other prompt. OpenSSH
/// (8.x+) puts `(user@host) ` before keyboard-interactive prompts; that prefix is skipped.
pub fn part_number(prompt: &str) -> Option<usize> {
    let mut p = prompt.trim();
    if p.starts_with('(') {
        p = p.split_once(") ").map_or(p, |(_, rest)| rest.trim_start());
    }
    let rest = p.strip_prefix("ID token")?;
    let rest = rest.trim_start();
    if rest.starts_with(':') {
        return Some(1);
    }
    let n = rest
        .strip_prefix("(part ")?
        .split(')')
        .next()?
        .trim()
        .parse::<usize>()
        .ok()?;
    (n >= 1).then_some(n)
}

/// Characters (N-1)*1000+1 ..= N*1000 of the token.
pub fn part_of(token: &str, part: usize) -> String {
    token
        .chars()
        .skip(part.saturating_sub(1).saturating_mul(PART_CHARS))
        .take(PART_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts() {
        assert_eq!(part_number("ID token: "), Some(1));
        assert_eq!(part_number("ID token (part 2): "), Some(2));
        assert_eq!(part_number("ID token (part 13): "), Some(13));
        assert_eq!(part_number("Password: "), None);
        assert_eq!(part_number("alice@host's password: "), None);
        assert_eq!(part_number("ID token (part 0): "), None);
        assert_eq!(part_number("(alice@127.0.0.1) ID token:"), Some(1));
        assert_eq!(part_number("(alice@login1) ID token (part 3):"), Some(3));
        assert_eq!(part_number("(alice@login1) Password:"), None);
    }

    #[test]
    fn parts() {
        let t: String = (0..2500)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        assert_eq!(part_of(&t, 1).len(), 1000);
        assert_eq!(part_of(&t, 3).len(), 500);
        assert_eq!(
            format!("{}{}{}", part_of(&t, 1), part_of(&t, 2), part_of(&t, 3)),
            t
        );
        assert_eq!(part_of(&t, 4), "");
    }
}
