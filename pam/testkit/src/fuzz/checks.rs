//! What every decision must satisfy, and how the fuzz targets make one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idtoken_core::config::Config;
use idtoken_core::decision::{Decision, Env, Request, UseMode, Verdict, evaluate};
use idtoken_core::session_record::NoSessions;
use serde_json::Value;

use super::oracle;
use super::world::{self, ACCOUNT_CLAIM, NOW, RHOST, RHOST_CLAIM, SERVICE_CLAIM};
use crate::fakes::Ledger;

/// Evaluates `token` for `account` and `service` with the fixed fakes and `config`, from the
/// remote host the token's unverified `x-fuzz-rhost` names ([`rhost_of`]).
pub fn decide(
    config: &Config,
    token: &str,
    account: &str,
    service: &str,
    uses: UseMode,
) -> Decision {
    let env = Env {
        config,
        issuer_data: world::issuer_data(),
        accounts: &world::ACCOUNT_TABLE,
        uses: &Ledger::by_digest(),
        sessions: &NoSessions,
    };
    let rhost = rhost_of(&unverified_claims(token));
    let req = Request {
        token,
        account,
        service,
        rhost: rhost.as_deref(),
        now: NOW,
        uses,
    };
    evaluate(&env, &req)
}

/// Characters that must never reach a log line or a terminal from a token.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// Invariants of every decision made with the fixed config, whatever the token:
/// - `verified` is true exactly when the decision got past the signature step;
/// - an allow names its rule and has no reason;
/// - the audit line is one line without control or bidi characters;
/// - the trace (step details, rule failures), which `idtoken check` prints as it is, holds
///   no control or bidi characters either: everything from the token in it is cleaned.
pub fn check_decision_invariants(d: &Decision) {
    use idtoken_core::reason::Reason;
    let past_signature = match &d.verdict {
        Verdict::Allow => true,
        Verdict::Deny(r) => *r > Reason::BadSignature,
        // With these fakes, only the use ledger can be unavailable, and it is read last.
        Verdict::Unavailable(_) => true,
    };
    assert_eq!(
        d.verified, past_signature,
        "verified={} but verdict {:?}",
        d.verified, d.verdict
    );
    if d.allowed() {
        assert!(d.reason().is_none(), "allow with a reason");
        assert!(d.rule.is_some(), "allow without a granting rule");
        assert!(
            d.issuer.is_some() && d.user.is_some(),
            "allow without issuer/user"
        );
    } else if !matches!(
        d.verdict,
        Verdict::Deny(Reason::Replayed) | Verdict::Unavailable(_)
    ) {
        // Only the use count, checked after the grant, may refuse a token a rule granted.
        assert!(d.rule.is_none(), "deny with a granting rule {:?}", d.rule);
    }
    let line = idtoken_core::audit::line(d, Some(RHOST));
    assert!(line.starts_with("decision="), "audit line: {line:?}");
    if let Some(c) = line.chars().find(|c| is_unsafe_char(*c)) {
        panic!("audit line holds {c:?}: {line:?}");
    }
    for s in &d.steps {
        if let Some(c) = s.detail.chars().find(|c| is_unsafe_char(*c)) {
            panic!("trace step {} holds {c:?}: {:?}", s.name, s.detail);
        }
    }
    for r in &d.rules {
        if let Some(why) = &r.failed
            && let Some(c) = why.chars().find(|c| is_unsafe_char(*c))
        {
            panic!("rule {} trace holds {c:?}: {why:?}", r.rule);
        }
    }
}

/// Compares the core's decision with the reference decision, and panics on any difference.
pub fn check_against_oracle(
    config: &Config,
    token: &str,
    account: &str,
    service: &str,
    d: &Decision,
) {
    let want = oracle::decide(config, token, account, service);
    let got = oracle::Outcome::of(d);
    if want != got {
        let claims = token
            .trim()
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        panic!(
            "the core and the reference decision disagree\n  core:      {got:?}\n  reference: {want:?}\n  \
             account {account:?} service {service:?}\n  claims: {claims}\n  steps: {:#?}\n  rules: {:#?}",
            d.steps, d.rules
        );
    }
}

/// The `token` target's choice of request: the requested account and service come from the
/// unverified claims `x-fuzz-account` / `x-fuzz-service` when present (so seeds can ask for
/// a service account), else the user claim and `sshd`.
pub fn request_of(token: &str) -> (String, String) {
    let claims = unverified_claims(token);
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
    let account = text(ACCOUNT_CLAIM)
        .or_else(|| text("user_login"))
        .unwrap_or_else(|| "alice".to_string());
    let service = text(SERVICE_CLAIM).unwrap_or_else(|| "sshd".to_string());
    (account, service)
}

/// The payload of `token` as JSON, nothing checked (Null when it has none).
fn unverified_claims(token: &str) -> Value {
    token
        .trim()
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or(Value::Null)
}

/// The request's PAM_RHOST: the claim `x-fuzz-rhost` when it is a string, none when it is
/// null (as `su` gives), else [`RHOST`]; so seeds and the builder can vary the remote host.
pub fn rhost_of(claims: &Value) -> Option<String> {
    match claims.get(RHOST_CLAIM) {
        Some(Value::String(h)) => Some(h.clone()),
        Some(Value::Null) => None,
        _ => Some(RHOST.to_string()),
    }
}
