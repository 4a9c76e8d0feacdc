//! The decision: token → checks → verdict, in exactly the SPEC's order.
//!
//! Each step of the SPEC's decision order is one small function that either passes (and
//! leaves an `ok` line in the trace) or stops the pipeline with a [`Stop`]; [`evaluate`]
//! joins them with `?` and turns a stop into the verdict in one place. The signature is
//! checked before any claim is trusted; iss is read before that only to choose the
//! issuer's keys. Every rule says whether it matched and, if not, why.

use std::fmt;

use serde_json::Value;

use crate::accounts::{Account, AccountSource, LookupError};
use crate::claims::{display_text, lookup, numeric_date};
use crate::config::{Config, Issuer, SessionsPer};
use crate::jwks::{KeySet, VerifyKey};
use crate::jws::{self, UnverifiedToken, algorithm_name, parse_algorithm};
use crate::keystore::IssuerData;
use crate::packed;
use crate::policy::{self, TokenFacts};
use crate::reason::Reason;
use crate::revocations::{self, Target};
use crate::sanitize::clean;
use crate::session_record::{LiveSessions, SessionRecord};
use crate::timefmt::utc;
use crate::uses::{TokenId, UseLedger};

/// What the decision reads from outside: config, issuer files (and the revocation list),
/// accounts and the use ledger.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub config: &'a Config,
    pub issuer_data: &'a dyn IssuerData,
    pub accounts: &'a dyn AccountSource,
    pub uses: &'a dyn UseLedger,
    /// The live token sessions on this host (`max_sessions`).
    pub sessions: &'a dyn LiveSessions,
}

/// Whether an allowed login is counted against `max_uses` (the module) or only compared
/// with the count (`idtoken check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseMode {
    Record,
    ReadOnly,
}

/// One login attempt.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub token: &'a str,
    /// The requested local account (PAM_USER).
    pub account: &'a str,
    pub service: &'a str,
    /// PAM_RHOST: the remote host as the application names it (sshd: the client address).
    pub rhost: Option<&'a str>,
    /// Seconds since the epoch.
    pub now: i64,
    pub uses: UseMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(Reason),
    /// The decision could not be made: config, key cache, user map or state unusable.
    Unavailable(String),
}

/// The steps of the decision order. Their strings are a public interface (`check --json`,
/// the module's debug lines): keep them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepName {
    Token,
    Issuer,
    Algorithm,
    Key,
    Signature,
    Claims,
    Expiry,
    NotBefore,
    Audience,
    Lifetime,
    Revocation,
    Rules,
    Grant,
    Account,
    Sessions,
    Uses,
}

impl StepName {
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Token => "token",
            StepName::Issuer => "issuer",
            StepName::Algorithm => "algorithm",
            StepName::Key => "key",
            StepName::Signature => "signature",
            StepName::Claims => "claims",
            StepName::Expiry => "expiry",
            StepName::NotBefore => "not-before",
            StepName::Audience => "audience",
            StepName::Lifetime => "lifetime",
            StepName::Revocation => "revocation",
            StepName::Rules => "rules",
            StepName::Grant => "grant",
            StepName::Account => "account",
            StepName::Sessions => "sessions",
            StepName::Uses => "uses",
        }
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One checked step of the decision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: StepName,
    pub ok: bool,
    pub detail: String,
}

/// What one rule made of the token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleTrace {
    pub rule: String,
    /// A deny rule: when it matches, the token is refused.
    pub deny: bool,
    /// The token conditions hold.
    pub matched: bool,
    /// The account the rule grants, when it matched and a grant could be made.
    pub grants: Option<String>,
    /// It matched and grants the requested account, local_groups included.
    pub granted: bool,
    /// The first condition that failed, and why.
    pub failed: Option<String>,
    /// A matching deny rule's conditions that held only because they could not be
    /// evaluated (an absent claim, no remote address): a deny fails closed.
    pub unknown: Vec<String>,
}

/// Claims that exist to be named in the audit line and the PAM environment (cleaned when
/// printed). Read before the signature is checked: `Decision::verified` says whether they
/// are the issuer's word.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditClaims {
    pub project_path: Option<String>,
    pub pipeline_id: Option<String>,
    pub job_id: Option<String>,
    pub jti: Option<String>,
    pub exp: Option<i64>,
}

/// The outcome with everything that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The granting rule on allow.
    pub rule: Option<String>,
    /// The issuer's configured name, once iss selected one.
    pub issuer: Option<String>,
    /// The user claim.
    pub user: Option<String>,
    /// The account: as typed until NSS names it, then NSS's name (SPEC v3).
    pub account: String,
    /// The name as typed, when NSS calls the account otherwise (`Mallory` for `mallory`).
    pub typed: Option<String>,
    pub service: String,
    pub audit_claims: AuditClaims,
    /// Whether the signature verified (claims before that are the sender's word).
    pub verified: bool,
    pub steps: Vec<Step>,
    pub rules: Vec<RuleTrace>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    pub fn reason(&self) -> Option<Reason> {
        match self.verdict {
            Verdict::Deny(r) => Some(r),
            _ => None,
        }
    }

    fn pass(&mut self, name: StepName, detail: impl Into<String>) {
        self.steps.push(Step {
            name,
            ok: true,
            detail: detail.into(),
        });
    }

    /// The one place a stopped pipeline becomes a verdict.
    fn stop(&mut self, stop: Stop) {
        let (name, verdict, detail) = match stop {
            Stop::Deny(name, reason, detail) => (name, Verdict::Deny(reason), detail),
            Stop::Unavailable(name, problem) => {
                (name, Verdict::Unavailable(problem.clone()), problem)
            }
        };
        self.steps.push(Step {
            name,
            ok: false,
            detail,
        });
        self.verdict = verdict;
        // Only an allow has a granting rule; the trace still shows which rule matched.
        self.rule = None;
    }
}

/// Why the pipeline ended before an allow: a denial with its reason, or a decision that
/// could not be made. Each names the step it happened in and what the trace says.
enum Stop {
    Deny(StepName, Reason, String),
    Unavailable(StepName, String),
}

fn deny<T>(step: StepName, reason: Reason, detail: impl Into<String>) -> Result<T, Stop> {
    Err(Stop::Deny(step, reason, detail.into()))
}

/// Decides one login attempt.
pub fn evaluate(env: &Env, req: &Request) -> Decision {
    let mut d = Decision {
        verdict: Verdict::Deny(Reason::Malformed),
        rule: None,
        issuer: None,
        user: None,
        account: req.account.to_string(),
        typed: None,
        service: req.service.to_string(),
        audit_claims: AuditClaims::default(),
        verified: false,
        steps: Vec::new(),
        rules: Vec::new(),
    };
    match run_steps(env, req, &mut d) {
        Ok(()) => d.verdict = Verdict::Allow,
        Err(stop) => d.stop(stop),
    }
    d
}

/// The SPEC's decision order, one step per line; the first that stops decides.
fn run_steps(env: &Env, req: &Request, d: &mut Decision) -> Result<(), Stop> {
    // 1. malformed
    let token = parse_token(req, d)?;
    // 2. unknown_issuer
    let issuer = select_issuer(env.config, &token, d)?;
    // 3. alg_not_allowed
    let alg = check_algorithm(issuer, &token, d)?;
    // 4. unknown_key (only now is the issuer's key cache read)
    let keys = env
        .issuer_data
        .keys(issuer)
        .map_err(|problem| Stop::Unavailable(StepName::Key, problem.to_string()))?;
    let key = select_key(env.config, req.now, issuer, &keys, &token, alg, d)?;
    // 5. bad_signature
    verify_signature(&token, key, alg, d)?;
    // 6. missing_claim
    let claims = required_claims(env.config, issuer, &token, d)?;
    // 7. expired
    check_expiry(env.config, req.now, &claims, d)?;
    // 8. not_yet_valid
    check_not_before(env.config, req.now, &claims, d)?;
    // 9. wrong_audience
    check_audience(issuer, &token, d)?;
    // 10. lifetime_too_long
    check_lifetime(env.config, &claims, d)?;
    // 10a. revoked (an entry naming a granting rule waits for the grant: 13a)
    let rule_revocations = check_revocations(env, req, issuer, &token, &claims, d)?;
    // 11. policy_denied (a deny rule's `users` also sees NSS's name, so NSS may be asked here)
    let looked_up = match_rules(env, req, issuer, &token, claims.user, d)?;
    // 12. user_mismatch and 13. account_invalid: the account is NSS's; a rule must grant it
    let account = grant_and_account(env, req, looked_up, d)?;
    // 12, continued: local_groups, which needs the account NSS knows
    grant_through_local_groups(env, &account, d)?;
    // 13a. revoked, by an entry naming the granting rule (known only now)
    check_rule_revocations(&rule_revocations, d)?;
    // too_many_sessions (SPEC v3: after the grant, before a use is recorded)
    check_session_cap(env, req, issuer, claims.user, d)?;
    // 14. replayed
    count_use(env, req, issuer, &claims, d)
}

/// Step 1: a compact JWS with JSON-object header and payload (a packed one unpacked first).
fn parse_token(req: &Request, d: &mut Decision) -> Result<UnverifiedToken, Stop> {
    let malformed = |why| Stop::Deny(StepName::Token, Reason::Malformed, why);
    let unpacked = packed::unpack_if_packed(req.token).map_err(malformed)?;
    let token =
        jws::parse(unpacked.as_ref().map_or(req.token, |u| u.jws.as_str())).map_err(malformed)?;
    d.audit_claims = audit_claims_of(&token);
    d.pass(
        StepName::Token,
        "compact JWS with JSON-object header and payload",
    );
    Ok(token)
}

/// Step 2: iss selects a configured issuer (the sender's word until the signature verifies).
fn select_issuer<'c>(
    config: &'c Config,
    token: &UnverifiedToken,
    d: &mut Decision,
) -> Result<&'c Issuer, Stop> {
    let Some(issuer) = token
        .claim_str("iss")
        .and_then(|iss| config.issuer_by_url(iss))
    else {
        let why = match token.claims.get("iss") {
            None => "token has no iss".to_string(),
            Some(v) => format!(
                "iss {:?} is not the url of any configured issuer (compared byte for byte)",
                clean(&display_text(v))
            ),
        };
        return deny(StepName::Issuer, Reason::UnknownIssuer, why);
    };
    d.issuer = Some(issuer.name.clone());
    d.pass(StepName::Issuer, format!("iss is issuer {:?}", issuer.name));
    Ok(issuer)
}

/// Step 3: the header's alg is one the issuer allows.
fn check_algorithm(
    issuer: &Issuer,
    token: &UnverifiedToken,
    d: &mut Decision,
) -> Result<jsonwebtoken::Algorithm, Stop> {
    let alg_name = token.alg().unwrap_or_default();
    match parse_algorithm(alg_name) {
        Ok(a) if issuer.algorithms.contains(&a) => {
            d.pass(StepName::Algorithm, format!("alg {alg_name}"));
            Ok(a)
        }
        _ => {
            let allowed: Vec<&str> = issuer
                .algorithms
                .iter()
                .map(|a| algorithm_name(*a))
                .collect();
            deny(
                StepName::Algorithm,
                Reason::AlgNotAllowed,
                format!("alg {:?} is not in {allowed:?}", clean(alg_name)),
            )
        }
    }
}

/// Step 4: the header's kid names a key of the issuer's cache that can verify this alg and
/// that the issuer has not withdrawn for longer than key_grace.
fn select_key<'k>(
    config: &Config,
    now: i64,
    issuer: &Issuer,
    keys: &'k KeySet,
    token: &UnverifiedToken,
    alg: jsonwebtoken::Algorithm,
    d: &mut Decision,
) -> Result<&'k VerifyKey, Stop> {
    let alg_name = algorithm_name(alg);
    let Some(kid) = token.kid() else {
        return deny(StepName::Key, Reason::UnknownKey, "header has no kid");
    };
    let key = match keys.by_kid(kid) {
        Some(k) if k.kind.supports(alg) && k.alg.as_deref().is_none_or(|a| a == alg_name) => k,
        Some(k) => {
            let why = format!(
                "key {:?} ({}) cannot verify {alg_name}",
                clean(kid),
                k.kind.describe()
            );
            return deny(StepName::Key, Reason::UnknownKey, why);
        }
        None => {
            let why = format!(
                "no key with kid {:?} in {} (run `idtoken refresh` if the issuer rotated keys)",
                clean(kid),
                issuer.jwks_cache.display()
            );
            return deny(StepName::Key, Reason::UnknownKey, why);
        }
    };
    if let Some(why) = withdrawn(config, now, key) {
        return deny(StepName::Key, Reason::UnknownKey, why);
    }
    d.pass(
        StepName::Key,
        format!("kid {:?} ({})", key.kid, key.kind.describe()),
    );
    Ok(key)
}

/// Why a key the issuer withdrew may no longer verify, if it may not: key_grace has
/// passed since its `retired-at` stamp, or the stamp lies in the future (a refresh whose
/// clock ran ahead wrote it; trusting it would keep a withdrawn key as long as that clock
/// was wrong).
fn withdrawn(config: &Config, now: i64, key: &VerifyKey) -> Option<String> {
    let retired = key.retired_at?;
    let (grace, leeway) = (config.defaults.key_grace, config.defaults.leeway);
    if retired > now.saturating_add(leeway) {
        return Some(format!(
            "key {:?} is marked withdrawn at {}, later than now: the cache was written with a \
             wrong clock; run `idtoken refresh` with a correct clock",
            key.kid,
            utc(retired),
        ));
    }
    now_past(now, retired, grace).then(|| {
        format!(
            "key {:?} was withdrawn by the issuer at {} and key_grace ({grace} s) has passed",
            key.kid,
            utc(retired),
        )
    })
}

/// Step 5: the signature verifies; from here on the claims are the issuer's word.
fn verify_signature(
    token: &UnverifiedToken,
    key: &VerifyKey,
    alg: jsonwebtoken::Algorithm,
    d: &mut Decision,
) -> Result<(), Stop> {
    let input = token.signing_input.as_bytes();
    match crate::signature::verifies(alg, &key.key, input, &token.signature) {
        true => {
            d.verified = true;
            d.pass(StepName::Signature, "verifies");
            Ok(())
        }
        _ => deny(
            StepName::Signature,
            Reason::BadSignature,
            format!("signature does not verify with key {:?}", key.kid),
        ),
    }
}

/// The claims every later step relies on, read once in step 6.
struct RequiredClaims<'t> {
    exp: i64,
    iat: i64,
    nbf: Option<i64>,
    user: &'t str,
    /// Present and non-empty (required when max_uses is set).
    jti: Option<&'t str>,
}

/// Step 6: exp, iat and the user claim present with the right JSON type (nbf, when
/// present, a number; jti when max_uses must count it).
fn required_claims<'t>(
    config: &Config,
    issuer: &Issuer,
    token: &'t UnverifiedToken,
    d: &mut Decision,
) -> Result<RequiredClaims<'t>, Stop> {
    let missing = |why: String| Stop::Deny(StepName::Claims, Reason::MissingClaim, why);
    let date = |name: &str| token.claims.get(name).map(numeric_date);
    let Some(Some(exp)) = date("exp") else {
        return Err(missing("exp is missing or not a number".to_string()));
    };
    let Some(Some(iat)) = date("iat") else {
        return Err(missing("iat is missing or not a number".to_string()));
    };
    let nbf = match date("nbf") {
        None => None,
        Some(Some(n)) => Some(n),
        Some(None) => return Err(missing("nbf is not a number".to_string())),
    };
    let claim = &issuer.user_claim;
    let user = match lookup(&token.claims, claim) {
        Some(Value::String(u)) if !u.is_empty() => u.as_str(),
        Some(_) => {
            return Err(missing(format!(
                "user claim {claim} is not a non-empty string"
            )));
        }
        None => return Err(missing(format!("user claim {claim} is missing"))),
    };
    d.user = Some(user.to_string());
    let jti = token.claim_str("jti").filter(|j| !j.is_empty());
    if config.defaults.max_uses > 0 && jti.is_none() {
        return Err(missing(
            "max_uses is set, and the token has no jti to count".to_string(),
        ));
    }
    d.pass(StepName::Claims, format!("exp, iat and {claim} present"));
    Ok(RequiredClaims {
        exp,
        iat,
        nbf,
        user,
        jti,
    })
}

/// Step 7: now <= exp + leeway.
fn check_expiry(
    config: &Config,
    now: i64,
    claims: &RequiredClaims,
    d: &mut Decision,
) -> Result<(), Stop> {
    let leeway = config.defaults.leeway;
    if now > claims.exp.saturating_add(leeway) {
        let why = format!(
            "expired at {} (now {}, leeway {leeway} s)",
            utc(claims.exp),
            utc(now)
        );
        return deny(StepName::Expiry, Reason::Expired, why);
    }
    d.pass(StepName::Expiry, format!("valid until {}", utc(claims.exp)));
    Ok(())
}

/// Step 8: neither nbf nor iat lies beyond now + leeway.
fn check_not_before(
    config: &Config,
    now: i64,
    claims: &RequiredClaims,
    d: &mut Decision,
) -> Result<(), Stop> {
    let leeway = config.defaults.leeway;
    for (name, t) in [("nbf", claims.nbf), ("iat", Some(claims.iat))] {
        if let Some(t) = t
            && now < t.saturating_sub(leeway)
        {
            let why = format!("{name} is {} (now {}, leeway {leeway} s)", utc(t), utc(now));
            return deny(StepName::NotBefore, Reason::NotYetValid, why);
        }
    }
    d.pass(StepName::NotBefore, "nbf and iat are not in the future");
    Ok(())
}

/// Step 9: aud (a string or an array) names one of the issuer's audiences.
fn check_audience(issuer: &Issuer, token: &UnverifiedToken, d: &mut Decision) -> Result<(), Stop> {
    let accepted = |a: &str| issuer.audiences.iter().any(|x| x == a);
    let aud = token.claims.get("aud");
    let aud_ok = match aud {
        Some(Value::String(a)) => accepted(a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(accepted),
        _ => false,
    };
    if !aud_ok {
        let got = aud.map_or_else(
            || "no aud".to_string(),
            |a| format!("aud {}", clean(&a.to_string())),
        );
        let why = format!("{got}; this issuer accepts {:?}", issuer.audiences);
        return deny(StepName::Audience, Reason::WrongAudience, why);
    }
    d.pass(StepName::Audience, "aud names an accepted audience");
    Ok(())
}

/// Step 10: exp - iat <= max_lifetime.
fn check_lifetime(config: &Config, claims: &RequiredClaims, d: &mut Decision) -> Result<(), Stop> {
    let lifetime = claims.exp.saturating_sub(claims.iat);
    let max_lifetime = config.defaults.max_lifetime;
    if lifetime > max_lifetime {
        let why = format!("exp - iat = {lifetime} s, over max_lifetime {max_lifetime} s");
        return deny(StepName::Lifetime, Reason::LifetimeTooLong, why);
    }
    d.pass(StepName::Lifetime, format!("{lifetime} s"));
    Ok(())
}

/// Step 10a: no revocation entry in force withdraws the token. The list is read here, at
/// every decision that gets this far, so its facts are the issuer's word and the audit
/// line carries them. An entry naming a rule withdraws what that rule grants, which is
/// known only at step 12 (the grant depends on NSS's account and its groups): those that
/// hold for this token's issuer and iat are handed on to [`check_rule_revocations`].
fn check_revocations(
    env: &Env,
    req: &Request,
    issuer: &Issuer,
    token: &UnverifiedToken,
    claims: &RequiredClaims,
    d: &mut Decision,
) -> Result<Vec<revocations::Entry>, Stop> {
    let defaults = &env.config.defaults;
    let list = env
        .issuer_data
        .revocations(&defaults.revocations)
        .map_err(|p| Stop::Unavailable(StepName::Revocation, p.to_string()))?;
    let facts = revocations::TokenFacts {
        issuer: &issuer.name,
        claims: &token.claims,
        user: claims.user,
        iat: claims.iat,
    };
    let leeway = defaults.leeway;
    let mut in_force = 0usize;
    let mut by_rule = Vec::new();
    for e in list.in_force(req.now, leeway, defaults.max_lifetime) {
        in_force = in_force.saturating_add(1);
        match &e.target {
            Target::Rule(rule) if e.matches(&facts, Some(rule), leeway) => by_rule.push(e.clone()),
            Target::Rule(_) => {}
            _ if e.matches(&facts, None, leeway) => {
                let why = format!("{} withdraws this token", e.describe());
                return deny(StepName::Revocation, Reason::Revoked, why);
            }
            _ => {}
        }
    }
    let later = if by_rule.is_empty() {
        String::new()
    } else {
        format!("; {} naming rules apply at the grant", by_rule.len())
    };
    d.pass(
        StepName::Revocation,
        format!("no revocation withdraws this token ({in_force} in force{later})"),
    );
    Ok(by_rule)
}

/// Step 13a: no revocation entry names the granting rule. A refusal here comes after the
/// account checks: which rule grants is decided only with them.
fn check_rule_revocations(entries: &[revocations::Entry], d: &mut Decision) -> Result<(), Stop> {
    let Some(rule) = d.rule.clone() else {
        return Ok(());
    };
    if entries.is_empty() {
        return Ok(());
    }
    if let Some(e) = entries
        .iter()
        .find(|e| matches!(&e.target, Target::Rule(r) if *r == rule))
    {
        let why = format!("{} withdraws what rule {rule:?} grants", e.describe());
        return deny(StepName::Revocation, Reason::Revoked, why);
    }
    d.pass(
        StepName::Revocation,
        format!("the granting rule {rule:?} is not revoked"),
    );
    Ok(())
}

/// The account NSS knows by the typed name: `None` when there is none. Asked at most once
/// per decision.
type LookedUp = Option<Account>;

/// Step 11: every rule's token conditions and the account it would grant, traced; no deny
/// rule may match, and some granting rule must. The user map is read only when a matching
/// rule needs it. When a deny rule tests `users`, NSS is asked for the account here, so the
/// rule also holds for NSS's name of it; the answer is handed on to step 13.
fn match_rules(
    env: &Env,
    req: &Request,
    issuer: &Issuer,
    token: &UnverifiedToken,
    user: &str,
    d: &mut Decision,
) -> Result<Option<LookedUp>, Stop> {
    let looked_up = if env.config.rules.iter().any(|r| r.deny && r.users.is_some()) {
        Some(lookup_account(env, req, StepName::Rules)?)
    } else {
        None
    };
    let canonical = looked_up.as_ref().and_then(|a| a.as_ref());
    let mut names = vec![req.account];
    if let Some(a) = canonical.filter(|a| a.name != req.account) {
        names.push(a.name.as_str());
        // A deny here is audited under NSS's name, as a decision made later would be.
        name_the_account(d, req.account, a);
    }
    let facts = TokenFacts {
        issuer,
        claims: &token.claims,
        user,
        service: req.service,
        rhost: req.rhost,
        account_names: &names,
    };
    let mut user_map = None;
    d.rules = Vec::with_capacity(env.config.rules.len());
    for rule in &env.config.rules {
        let mut t = RuleTrace {
            rule: rule.name.clone(),
            deny: rule.deny,
            ..RuleTrace::default()
        };
        match policy::token_conditions(rule, &facts) {
            Err(why) => t.failed = Some(why),
            Ok(unknown) if rule.deny => {
                t.matched = true;
                t.unknown = unknown;
            }
            Ok(_) => {
                t.matched = true;
                if rule.login_as.is_none() && issuer.user_map.is_some() && user_map.is_none() {
                    let map = env.issuer_data.user_map(issuer);
                    user_map =
                        Some(map.map_err(|p| Stop::Unavailable(StepName::Rules, p.to_string()))?);
                }
                let map = user_map.as_ref().and_then(Option::as_ref);
                match policy::grant(rule, user, map) {
                    Ok(account) => t.grants = Some(account),
                    Err(why) => t.failed = Some(why),
                }
            }
        }
        d.rules.push(t);
    }
    if let Some(deny_rule) = d.rules.iter().find(|t| t.deny && t.matched) {
        let mut why = format!("deny rule {:?} matches the token", deny_rule.rule);
        if !deny_rule.unknown.is_empty() {
            why.push_str(&format!(
                " (what it cannot evaluate holds, a deny fails closed: {})",
                deny_rule.unknown.join("; ")
            ));
        }
        return deny(StepName::Rules, Reason::PolicyDenied, why);
    }
    if !d.rules.iter().any(|t| t.matched) {
        let granting = env.config.rules.iter().filter(|r| !r.deny).count();
        let why = format!("none of the {granting} rules matches the token");
        return deny(StepName::Rules, Reason::PolicyDenied, why);
    }
    d.pass(StepName::Rules, "a rule matches the token");
    Ok(looked_up)
}

/// Asks NSS for the typed account. An NSS error is not "no such account": the directory
/// could not be asked, so the decision cannot be made (SPEC v2).
fn lookup_account(env: &Env, req: &Request, step: StepName) -> Result<LookedUp, Stop> {
    env.accounts
        .account(req.account)
        .map_err(|e| nss_failed(step, &e))
}

/// Uids never granted, whatever min_uid says: `nobody` (65534), and (uid_t)-1 / -2, which
/// mean "no uid" to the kernel and to NFS.
fn uid_never_granted(uid: u32) -> bool {
    uid == 65534 || uid >= 4_294_967_294
}

/// An account or group lookup NSS could not answer: the decision cannot be made.
fn nss_failed(step: StepName, e: &LookupError) -> Stop {
    Stop::Unavailable(
        step,
        format!("NSS lookup failed: {}", clean(&e.to_string())),
    )
}

/// Steps 12 and 13: the account is the one NSS knows by the typed name, and a matching rule
/// must grant it under NSS's name (a login as `Mallory` that NSS resolves to `mallory` is a
/// login as `mallory`: a grant of `Mallory` alone does not make it, SPEC v3); then it must
/// not be in deny_users (by either name) and must have a uid that may log in. Without an
/// account, a grant of the typed name makes it account_invalid, else user_mismatch.
fn grant_and_account(
    env: &Env,
    req: &Request,
    looked_up: Option<LookedUp>,
    d: &mut Decision,
) -> Result<Account, Stop> {
    let invalid = |why: String| Stop::Deny(StepName::Account, Reason::AccountInvalid, why);
    let defaults = &env.config.defaults;
    let denied = |name: &str| defaults.deny_users.iter().any(|u| u == name);
    let typed = req.account;
    // deny_users by the typed name is refused without asking NSS.
    if denied(typed) {
        if !grants(d, typed) {
            return Err(mismatch(d, typed, None));
        }
        return Err(invalid(format!("{:?} is in deny_users", clean(typed))));
    }
    let found = match looked_up {
        Some(a) => a,
        None => lookup_account(env, req, StepName::Account)?,
    };
    let Some(account) = found else {
        if !grants(d, typed) {
            return Err(mismatch(d, typed, None));
        }
        return Err(invalid(format!("no account {:?} in NSS", clean(typed))));
    };
    name_the_account(d, typed, &account);
    if !grants(d, &account.name) {
        return Err(mismatch(d, typed, Some(&account.name)));
    }
    note_other_grants(d);
    if denied(&account.name) {
        return Err(invalid(format!(
            "{:?} is {:?} to NSS, which is in deny_users",
            clean(typed),
            clean(&account.name)
        )));
    }
    if uid_never_granted(account.uid) {
        return Err(invalid(format!(
            "{:?} has uid {}, which is never granted (nobody, or no uid)",
            clean(&account.name),
            account.uid
        )));
    }
    if account.uid < defaults.min_uid {
        return Err(invalid(format!(
            "{:?} has uid {}, under min_uid {}",
            account.name, account.uid, defaults.min_uid
        )));
    }
    d.pass(
        StepName::Account,
        format!("{:?} exists with uid {}", account.name, account.uid),
    );
    Ok(account)
}

/// The decision's account is NSS's name for it; the typed name is kept when it differs.
fn name_the_account(d: &mut Decision, typed: &str, account: &Account) {
    if account.name != typed {
        d.typed = Some(typed.to_string());
        d.account = account.name.clone();
    }
}

/// Whether some matching rule grants the account `name`.
fn grants(d: &Decision, name: &str) -> bool {
    d.rules.iter().any(|t| t.grants.as_deref() == Some(name))
}

/// Step 12's refusal: no matching rule grants the account (under NSS's name when it has one
/// that differs from the typed one).
fn mismatch(d: &mut Decision, typed: &str, nss_name: Option<&str>) -> Stop {
    note_other_grants(d);
    let why = match nss_name {
        Some(n) if n != typed => format!(
            "the account {:?} is {:?} to NSS, and no matching rule grants {:?}",
            clean(typed),
            clean(n),
            clean(n)
        ),
        _ => format!("no matching rule grants the account {:?}", clean(typed)),
    };
    Stop::Deny(StepName::Grant, Reason::UserMismatch, why)
}

/// In the trace, a matching rule that grants another account than this login's says so.
fn note_other_grants(d: &mut Decision) {
    let account = d.account.clone();
    for t in d.rules.iter_mut().filter(|t| t.failed.is_none()) {
        if let Some(g) = t.grants.as_deref().filter(|g| *g != account) {
            t.failed = Some(format!(
                "grant: grants {:?}, not the requested {:?}",
                clean(g),
                clean(&account)
            ));
        }
    }
}

/// Step 12, finished: a rule granting the account with `local_groups` grants only to
/// members of one of the groups. The first granting rule is the one the decision names.
fn grant_through_local_groups(env: &Env, account: &Account, d: &mut Decision) -> Result<(), Stop> {
    let mut group_list: Option<Vec<String>> = None;
    // The first granting rule, and how its local_groups held (for the trace).
    let mut grant: Option<(String, Option<String>)> = None;
    for (trace, rule) in d.rules.iter_mut().zip(&env.config.rules) {
        if trace.grants.as_deref() != Some(d.account.as_str()) {
            continue;
        }
        let membership = match &rule.local_groups {
            None => None,
            Some(wanted) => {
                match group_membership(env.accounts, account, wanted, &mut group_list)? {
                    Some(found) => Some(found),
                    None => {
                        trace.failed = Some(format!(
                            "local_groups: {:?} is in none of {wanted:?}",
                            account.name
                        ));
                        continue;
                    }
                }
            }
        };
        trace.granted = true;
        grant.get_or_insert_with(|| (trace.rule.clone(), membership));
    }
    let Some((name, membership)) = grant else {
        let why = format!(
            "every rule granting {:?} requires local_groups it is not in",
            account.name
        );
        return deny(StepName::Grant, Reason::UserMismatch, why);
    };
    let how = membership
        .map(|m| format!(" (local_groups: {m})"))
        .unwrap_or_default();
    d.pass(
        StepName::Grant,
        format!("rule {name:?} grants {:?}{how}", account.name),
    );
    d.rule = Some(name);
    Ok(())
}

/// How `account` is in one of the `wanted` groups, if it is. A group that lists the
/// account by name answers at once (getgrnam); only otherwise the account's whole group
/// list (getgrouplist and a getgrgid per group, the slow part of NSS) is fetched, once per
/// decision, for globs and for memberships the group entries do not show. A lookup NSS
/// could not answer makes the decision unavailable, unless another lookup already shows
/// the membership: a missing answer must not read as "not a member".
fn group_membership(
    accounts: &dyn AccountSource,
    account: &Account,
    wanted: &[String],
    group_list: &mut Option<Vec<String>>,
) -> Result<Option<String>, Stop> {
    let mut failure = None;
    for w in wanted.iter().filter(|w| crate::glob::is_literal(w)) {
        match accounts.listed_in(account, w) {
            Ok(true) => return Ok(Some(format!("group {w:?} lists {:?}", account.name))),
            Ok(false) => {}
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    if group_list.is_none() {
        let list = accounts
            .group_names(account)
            .map_err(|e| nss_failed(StepName::Grant, &e))?;
        *group_list = Some(list);
    }
    let found = group_list
        .iter()
        .flatten()
        .find(|g| crate::glob::any_matches(wanted, g))
        .map(|g| format!("{:?} is in group {g:?} (its group list)", account.name));
    match (found, failure) {
        (Some(how), _) => Ok(Some(how)),
        (None, Some(e)) => Err(nss_failed(StepName::Grant, &e)),
        (None, None) => Ok(None),
    }
}

/// SPEC v3, right before `replayed`: the granting rule's `max_sessions` over the live token
/// sessions on this host, counted per rule, project, pipeline or user. A login refused
/// here records no use. A value the token lacks (no pipeline_id) is counted with the
/// sessions that lack it too.
fn check_session_cap(
    env: &Env,
    req: &Request,
    issuer: &Issuer,
    user: &str,
    d: &mut Decision,
) -> Result<(), Stop> {
    let Some(rule) = d
        .rule
        .as_deref()
        .and_then(|name| env.config.rules.iter().find(|r| r.name == name))
    else {
        return Ok(());
    };
    let Some(max) = rule.max_sessions else {
        return Ok(());
    };
    let live = env
        .sessions
        .current(req.now)
        .map_err(|problem| Stop::Unavailable(StepName::Sessions, problem))?;
    let per = rule.max_sessions_per;
    let key: Option<&str> = match per {
        SessionsPer::Rule => None,
        SessionsPer::Project => d.audit_claims.project_path.as_deref(),
        SessionsPer::Pipeline => d.audit_claims.pipeline_id.as_deref(),
        SessionsPer::User => Some(user),
    };
    let same = |s: &&SessionRecord| {
        s.issuer == issuer.name
            && s.rule == rule.name
            && match per {
                SessionsPer::Rule => true,
                SessionsPer::Project => s.project_path.as_deref() == key,
                SessionsPer::Pipeline => s.pipeline_id.as_deref() == key,
                SessionsPer::User => Some(s.user.as_str()) == key,
            }
    };
    let open = live.iter().filter(same).count();
    let of = match (per, key) {
        (SessionsPer::Rule, _) => format!("rule {:?}", rule.name),
        (_, Some(k)) => format!("{} {:?} under rule {:?}", per.as_str(), clean(k), rule.name),
        (_, None) => format!(
            "{} (none in the token) under rule {:?}",
            per.as_str(),
            rule.name
        ),
    };
    if u32::try_from(open).unwrap_or(u32::MAX) >= max {
        return deny(
            StepName::Sessions,
            Reason::TooManySessions,
            format!("{open} live sessions of {of} on this host, max_sessions {max}"),
        );
    }
    d.pass(
        StepName::Sessions,
        format!("{open} live sessions of {of}, max_sessions {max}"),
    );
    Ok(())
}

/// Step 14: with max_uses set, this use is recorded (the module) or compared with the
/// count so far (`idtoken check`).
fn count_use(
    env: &Env,
    req: &Request,
    issuer: &Issuer,
    claims: &RequiredClaims,
    d: &mut Decision,
) -> Result<(), Stop> {
    let max = env.config.defaults.max_uses;
    let (true, Some(jti)) = (max > 0, claims.jti) else {
        return Ok(());
    };
    let id = TokenId::new(&issuer.url, jti, claims.exp);
    let within = match req.uses {
        UseMode::Record => env.uses.record(&id, max, req.now),
        UseMode::ReadOnly => env.uses.count(&id, max).map(|n| n < max),
    };
    match within {
        Ok(true) => {
            d.pass(StepName::Uses, format!("within max_uses {max}"));
            Ok(())
        }
        Ok(false) => deny(
            StepName::Uses,
            Reason::Replayed,
            format!("already used {max} times (max_uses)"),
        ),
        Err(problem) => Err(Stop::Unavailable(StepName::Uses, problem)),
    }
}

/// now > t + grace, without overflow.
fn now_past(now: i64, t: i64, grace: i64) -> bool {
    now > t.saturating_add(grace)
}

fn audit_claims_of(token: &UnverifiedToken) -> AuditClaims {
    let text = |name: &str| token.claims.get(name).map(display_text);
    AuditClaims {
        project_path: text("project_path"),
        pipeline_id: text("pipeline_id"),
        job_id: text("job_id"),
        jti: text("jti"),
        exp: token.claims.get("exp").and_then(numeric_date),
    }
}
