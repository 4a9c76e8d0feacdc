//! The account hook: tells the account stack whether this login was made with a token, so a
//! site can keep pam_faillock's account line, which clears the failure tally, for password
//! logins only (`account [success=1 default=ignore] pam_idtoken.so` directly above
//! `account required pam_faillock.so`). A token login must not wipe the count of password
//! guesses: otherwise a CI job logging in every few minutes would lift faillock's limit.
//!
//! The mark is the PAM environment this module's authenticate hook sets on an allow
//! (`IDTOKEN_ISSUER`): it is what crosses from sshd's authenticating child to the parent
//! that runs the account phase. Nothing a user controls sets it before the account phase
//! (pam_env reads its files in setcred and the session phase), and a forged mark could
//! only keep a tally, never clear one or grant anything.

use pamsm::{LogLvl, Pam, PamError, PamLibExt};

use crate::args;

/// The PAM environment variable whose presence marks a token login.
pub const TOKEN_LOGIN_MARK: &str = "IDTOKEN_ISSUER";

/// What the account hook answers: `PAM_SUCCESS` after a token login (a `success=1` control
/// then jumps over the next line), `PAM_IGNORE` otherwise (the stack goes on unchanged).
pub fn answer(token_login: bool) -> PamError {
    if token_login {
        PamError::SUCCESS
    } else {
        PamError::IGNORE
    }
}

pub fn hook(pamh: &Pam, raw_args: &[String]) -> PamError {
    let debug = match args::parse(raw_args) {
        Ok(a) => a.debug,
        Err(why) => {
            // Not a login decision: the account stack goes on as if the line were absent.
            let _ = pamh.syslog(LogLvl::ERR, &format!("{why}; account line ignored"));
            return PamError::IGNORE;
        }
    };
    let token_login = pamh
        .getenv(TOKEN_LOGIN_MARK)
        .ok()
        .flatten()
        .is_some_and(|v| !v.to_bytes().is_empty());
    if debug {
        let _ = pamh.syslog(
            LogLvl::DEBUG,
            if token_login {
                "account: a token login (PAM_SUCCESS)"
            } else {
                "account: not a token login (PAM_IGNORE)"
            },
        );
    }
    answer(token_login)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_token_login_answers_success() {
        assert_eq!(answer(true), PamError::SUCCESS);
        assert_eq!(answer(false), PamError::IGNORE);
    }
}
