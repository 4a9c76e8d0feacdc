//! The reason codes of the SPEC, in decision order.

use std::fmt;

/// Why a token was denied. The order of the variants is the decision order: the first
/// failing step gives the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Malformed,
    UnknownIssuer,
    AlgNotAllowed,
    UnknownKey,
    BadSignature,
    MissingClaim,
    Expired,
    NotYetValid,
    WrongAudience,
    LifetimeTooLong,
    Revoked,
    PolicyDenied,
    UserMismatch,
    AccountInvalid,
    TooManySessions,
    Replayed,
}

impl Reason {
    /// Every reason, in decision order.
    pub const ALL: [Reason; 16] = [
        Reason::Malformed,
        Reason::UnknownIssuer,
        Reason::AlgNotAllowed,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::MissingClaim,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::WrongAudience,
        Reason::LifetimeTooLong,
        Reason::Revoked,
        Reason::PolicyDenied,
        Reason::UserMismatch,
        Reason::AccountInvalid,
        Reason::TooManySessions,
        Reason::Replayed,
    ];

    /// The code as it appears in logs, JSON output and the SPEC.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::UnknownIssuer => "unknown_issuer",
            Reason::AlgNotAllowed => "alg_not_allowed",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::MissingClaim => "missing_claim",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::WrongAudience => "wrong_audience",
            Reason::LifetimeTooLong => "lifetime_too_long",
            Reason::Revoked => "revoked",
            Reason::PolicyDenied => "policy_denied",
            Reason::UserMismatch => "user_mismatch",
            Reason::AccountInvalid => "account_invalid",
            Reason::TooManySessions => "too_many_sessions",
            Reason::Replayed => "replayed",
        }
    }

    /// A one-line hint for the person whose login was refused (sent to the client only
    /// when the site sets `explain = true`). It names no key, rule or account detail.
    pub fn client_hint(self) -> &'static str {
        match self {
            Reason::Malformed => {
                "the answer is not a complete ID token; long tokens must be sent in parts"
            }
            Reason::UnknownIssuer => "this host does not accept tokens from that issuer (iss)",
            Reason::AlgNotAllowed => "the token's signing algorithm is not accepted here",
            Reason::UnknownKey => "the token's signing key is not (yet) in this host's key cache",
            Reason::BadSignature => "the token's signature does not verify",
            Reason::MissingClaim => "the token lacks exp, iat or the user claim",
            Reason::Expired => "the token has expired",
            Reason::NotYetValid => "the token is not valid yet (check the clocks)",
            Reason::WrongAudience => {
                "the token's aud is not one this host accepts; set it in id_tokens:"
            }
            Reason::LifetimeTooLong => {
                "the token lives longer than this host allows; shorten the job timeout"
            }
            Reason::Revoked => "this host's administrators have withdrawn this token",
            Reason::PolicyDenied => "no rule of this host admits this project, ref or user",
            Reason::UserMismatch => "the token may not log in as this account",
            Reason::AccountInvalid => "this account may not log in with a token",
            Reason::TooManySessions => {
                "this host already holds as many sessions of this kind as it allows; try later"
            }
            Reason::Replayed => "this token has already been used as often as allowed",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
