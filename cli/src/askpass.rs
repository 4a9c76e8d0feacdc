//! `idtoken askpass PROMPT`: the SSH_ASKPASS helper of CI jobs.
//!
//! OpenSSH cuts every answer to 1023 characters, so the module asks for long tokens in
//! parts: `ID token: ` is part 1, `ID token (part N): ` part N, each 1000 characters of
//! `$IDTOKEN`. The token is replayable at the login node by whoever receives it, so it is
//! typed only for the login node: the prompt must be exactly `(USER@HOST) ID token: ` or
//! `(USER@HOST) ID token (part N): `, HOST must equal `$IDTOKEN_HOST` (ASCII case
//! ignored), and USER `$IDTOKEN_USER` when that is set. Anything else (a password, a host
//! key question, another server asking for an ID token) is refused with exit 1 and nothing
//! on stdout.
//!
//! How OpenSSH builds the prompt (sshconnect2.c, input_userauth_info_req, since 8.5):
//! `(USER@HOST) ` before every keyboard-interactive prompt, the client's own text, which no
//! server can change; HOST is `HostKeyAlias` when set, else the host name after ssh_config's
//! `HostName` substitution (not an alias as typed), lowercased unless it is an address
//! (ssh.c). Up to OpenSSH 10.2, sshd glues the PAM messages sent before a prompt onto it,
//! each ending in a newline (auth-pam.c, sshpam_query): `(USER@HOST) MESSAGE\nID token: `.
//! So the host is read from that leading prefix only, and the prompt proper is the last
//! line; the messages before it are the login node's own and change nothing.
//!
//! When the token's packed form (pam_idtoken(8) PACKED TOKENS) is under 1000 characters,
//! it is the whole answer to `ID token: `, and the module asks nothing more: one round
//! instead of two or three. Otherwise (or with `IDTOKEN_PACK=no`, for login nodes whose
//! module predates packed tokens) the token goes in 1000-character parts as before.

use std::io::Write;

use idtoken_core::packed;

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

/// What the job configured: the login node and, optionally, the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub host: &'a str,
    pub user: Option<&'a str>,
}

/// A prompt of the module's shape, split into its parts.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenPrompt<'a> {
    pub user: &'a str,
    pub host: &'a str,
    pub part: usize,
}

/// Why a prompt gets no answer; the message goes to stderr (the job log).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    NotATokenPrompt,
    OtherHost { asked: String },
    OtherUser { asked: String },
}

/// Prints the part of `$IDTOKEN` that `prompt` asks for; the exit code.
pub fn answer(prompt: &str) -> u8 {
    let host = std::env::var("IDTOKEN_HOST").unwrap_or_default();
    if host.is_empty() {
        eprintln!(
            "idtoken askpass: $IDTOKEN_HOST is not set; set it to the login node's name as given to ssh"
        );
        return 1;
    }
    // Set but empty (a CI variable that expanded to nothing) matches no account: refused.
    let user = std::env::var("IDTOKEN_USER").ok();
    let target = Target {
        host: &host,
        user: user.as_deref(),
    };
    let part = match decide(prompt, target) {
        Ok(part) => part,
        Err(refusal) => {
            match refusal {
                Refusal::NotATokenPrompt => eprintln!(
                    "idtoken askpass: not answering prompt {:?}: only `(user@host) ID token` prompts get the token",
                    prompt.trim()
                ),
                Refusal::OtherHost { asked } => eprintln!(
                    "idtoken askpass: not answering {asked:?}: the token is only for $IDTOKEN_HOST ({host:?})"
                ),
                Refusal::OtherUser { asked } => eprintln!(
                    "idtoken askpass: not answering for account {asked:?}: $IDTOKEN_USER is {:?}",
                    target.user.unwrap_or_default()
                ),
            }
            return 1;
        }
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
    let pack = !matches!(
        std::env::var("IDTOKEN_PACK").as_deref(),
        Ok("no" | "0" | "false")
    );
    let slice = answer_for(token.trim(), part, pack);
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{slice}").and_then(|()| out.flush()).is_err() {
        return 1;
    }
    0
}

/// The part to answer `prompt` with for `target`, or why not.
pub fn decide(prompt: &str, target: Target<'_>) -> Result<usize, Refusal> {
    let p = parse_prompt(prompt).ok_or(Refusal::NotATokenPrompt)?;
    if !p.host.eq_ignore_ascii_case(target.host) {
        return Err(Refusal::OtherHost {
            asked: p.host.to_string(),
        });
    }
    if let Some(user) = target.user
        && p.user != user
    {
        return Err(Refusal::OtherUser {
            asked: p.user.to_string(),
        });
    }
    Ok(p.part)
}

/// Splits `(USER@HOST) ID token: ` (part 1) and `(USER@HOST) ID token (part N): ` (part
/// N from 1 to 99999, no leading zero); None for any other text. Lines of PAM messages that
/// sshd glued in between (`(USER@HOST) MESSAGE\nID token: `) are passed over: the prompt
/// is the last line. Only trailing spaces are tolerated, so a prompt that merely contains
/// `ID token` somewhere is not one. The same rules as packaging/gitlab-ci/idtoken-askpass.sh.
pub fn parse_prompt(prompt: &str) -> Option<TokenPrompt<'_>> {
    let rest = prompt.trim_end_matches(' ').strip_prefix('(')?;
    // The first `) ` closes the prefix ssh itself wrote; what follows is the server's.
    let (inside, tail) = rest.split_once(") ")?;
    let tail = tail.rsplit_once('\n').map_or(tail, |(_, last)| last);
    // Account names hold no `@`; the last one separates user from host.
    let (user, host) = inside.rsplit_once('@')?;
    if user.is_empty()
        || host.is_empty()
        || host.contains(char::is_whitespace)
        || user.contains(char::is_whitespace)
    {
        return None;
    }
    let part = if tail == "ID token:" {
        1
    } else {
        let n = tail.strip_prefix("ID token (part ")?.strip_suffix("):")?;
        if n.is_empty()
            || n.len() > 5
            || n.starts_with('0')
            || !n.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        n.parse::<usize>().ok()?
    };
    Some(TokenPrompt { user, host, part })
}

/// The answer to part `part`: with `pack`, the packed token when it fits one answer (part
/// 1; nothing for a later part, which the module does not ask for after a short answer);
/// else the part's slice of the token as it is.
pub fn answer_for(token: &str, part: usize, pack: bool) -> String {
    if pack
        && let Ok(p) = packed::pack(token)
        && p.len() < packed::ONE_ANSWER
    {
        return if part == 1 { p } else { String::new() };
    }
    part_of(token, part)
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

    const LOGIN: Target<'static> = Target {
        host: "login1",
        user: None,
    };

    #[test]
    fn prompt_shapes() {
        let p = |s| parse_prompt(s).map(|p| (p.user, p.host, p.part));
        assert_eq!(p("(alice@login1) ID token: "), Some(("alice", "login1", 1)));
        assert_eq!(
            p("(alice@127.0.0.1) ID token (part 2): "),
            Some(("alice", "127.0.0.1", 2))
        );
        assert_eq!(p("(a@h) ID token (part 13): "), Some(("a", "h", 13)));
        assert_eq!(p("(a@h) ID token:"), Some(("a", "h", 1)));
        assert_eq!(
            p("(a@h) Last login: never\nTwo lines.\nID token (part 2): "),
            Some(("a", "h", 2))
        );
        for refused in [
            "ID token: ",
            "ID token (part 2): ",
            "Password: ",
            "(alice@login1) Password: ",
            "alice@login1's password: ",
            "(alice@login1) ID token (part 0): ",
            "(alice@login1) ID token (part 02): ",
            "(alice@login1) ID token (part -2): ",
            "(alice@login1) ID token (part 2x): ",
            "(alice@login1) ID token (part ): ",
            "(alice@login1) ID token (part 123456): ",
            "(alice@evil) x (alice@login1) ID token: ",
            "(alice@login1) Your ID token: ",
            "(alice@login1) ID token please: ",
            "(alice@login1) ID token: now",
            " (alice@login1) ID token: ",
            "(login1) ID token: ",
            "(@login1) ID token: ",
            "(alice@) ID token: ",
            "(alice@login1)ID token: ",
            "(alice@login1) Welcome\nPassword: ",
            "(alice@login1) ID token: \nPassword: ",
            "(alice@login1) Welcome\nID token: now",
            "(alice@login1) Welcome\nYour ID token: ",
            "(al ice@login1) ID token: ",
            "Are you sure you want to continue connecting (yes/no/[fingerprint])? ",
        ] {
            assert_eq!(p(refused), None, "{refused:?} must not parse");
        }
    }

    #[test]
    fn only_the_configured_host_and_user_get_an_answer() {
        assert_eq!(decide("(ci@login1) ID token: ", LOGIN), Ok(1));
        assert_eq!(decide("(ci@login1) ID token (part 3): ", LOGIN), Ok(3));
        assert_eq!(
            decide("(ci@git.example.org) ID token: ", LOGIN),
            Err(Refusal::OtherHost {
                asked: "git.example.org".into()
            })
        );
        // Host names are compared whole: a longer or shorter name is another host. Case is
        // ignored: ssh lowercases the host in the prompt, a job may not.
        assert!(decide("(ci@login1.example.org) ID token: ", LOGIN).is_err());
        assert!(decide("(ci@login) ID token: ", LOGIN).is_err());
        let upper = Target {
            host: "Login1",
            user: None,
        };
        assert_eq!(decide("(ci@login1) ID token: ", upper), Ok(1));
        assert_eq!(decide("(ci@LOGIN1) ID token (part 2): ", LOGIN), Ok(2));
        // A PAM message glued before the prompt (OpenSSH <= 10.2): the host is still the
        // prefix ssh wrote, never one quoted in the message.
        assert_eq!(
            decide("(ci@login1) Authorized use only.\nID token: ", LOGIN),
            Ok(1)
        );
        assert!(decide("(ci@evil) Welcome\n(ci@login1) ID token: ", LOGIN).is_err());
        assert_eq!(
            decide("(ci@evil) Welcome\nID token: ", LOGIN),
            Err(Refusal::OtherHost {
                asked: "evil".into()
            })
        );
        let alice = Target {
            host: "login1",
            user: Some("alice"),
        };
        assert_eq!(decide("(alice@login1) ID token: ", alice), Ok(1));
        assert_eq!(
            decide("(bob@login1) ID token: ", alice),
            Err(Refusal::OtherUser {
                asked: "bob".into()
            })
        );
        let empty_user = Target {
            host: "login1",
            user: Some(""),
        };
        assert!(decide("(alice@login1) ID token: ", empty_user).is_err());
        assert_eq!(
            decide("(alice@login1) Password: ", alice),
            Err(Refusal::NotATokenPrompt)
        );
    }

    #[test]
    fn a_token_whose_packed_form_fits_is_one_answer() {
        use idtoken_testkit::keys::{gitlab_claims, mint_gitlab_shaped};
        let t = mint_gitlab_shaped(&gitlab_claims("alice"));
        assert!(t.len() > 1400, "{}", t.len());
        let one = answer_for(&t, 1, true);
        assert!(one.starts_with("~1.") && one.len() < 1000, "{}", one.len());
        assert_eq!(*packed::unpack(&one).unwrap().jws, t);
        assert_eq!(answer_for(&t, 2, true), "");
        // Not packed: parts of the token as it is.
        assert_eq!(answer_for(&t, 1, false), part_of(&t, 1));
        assert_eq!(answer_for(&t, 2, false), part_of(&t, 2));
        // What cannot be packed (not a JWS, or packed already) goes as it is.
        assert_eq!(answer_for("not.a-token", 1, true), "not.a-token");
        assert_eq!(answer_for(&one, 1, true), one);
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
