//! The decision: token → checks → verdict, in exactly the SPEC's order.
//!
//! The first failing step gives the reason. The signature is checked before any claim is
//! trusted; iss is read before that only to choose the issuer's keys. Every step leaves a
//! line in the trace, and every rule says whether it matched and, if not, why.

use serde_json::Value;

use crate::accounts::AccountSource;
use crate::audit::clean;
use crate::claims::{display_text, numeric_date};
use crate::config::{Config, Issuer, algorithm_name, parse_algorithm};
use crate::jws::{self, UnverifiedToken};
use crate::keystore::IssuerData;
use crate::policy::{self, TokenFacts};
use crate::reason::Reason;
use crate::uses::{TokenId, UseLedger};

/// What the decision reads from outside: config, issuer files, accounts and the use ledger.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub config: &'a Config,
    pub issuer_data: &'a dyn IssuerData,
    pub accounts: &'a dyn AccountSource,
    pub uses: &'a dyn UseLedger,
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

/// One checked step of the decision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// What one rule made of the token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleTrace {
    pub rule: String,
    /// The token conditions hold.
    pub matched: bool,
    /// The account the rule grants, when it matched and a grant could be made.
    pub grants: Option<String>,
    /// It matched and grants the requested account, local_groups included.
    pub granted: bool,
    /// The first condition that failed, and why.
    pub failed: Option<String>,
}

/// Claims worth naming in the audit line (cleaned when printed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
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
    pub account: String,
    pub service: String,
    pub facts: Facts,
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

    fn pass(&mut self, name: &'static str, detail: impl Into<String>) {
        self.steps.push(Step {
            name,
            ok: true,
            detail: detail.into(),
        });
    }

    fn fail(mut self, name: &'static str, reason: Reason, detail: impl Into<String>) -> Decision {
        self.steps.push(Step {
            name,
            ok: false,
            detail: detail.into(),
        });
        self.verdict = Verdict::Deny(reason);
        // Only an allow has a granting rule; the trace still shows which rule matched.
        self.rule = None;
        self
    }

    fn unavailable(mut self, name: &'static str, problem: String) -> Decision {
        self.steps.push(Step {
            name,
            ok: false,
            detail: problem.clone(),
        });
        self.verdict = Verdict::Unavailable(problem);
        self.rule = None;
        self
    }
}

/// Decides one login attempt.
pub fn evaluate(env: &Env, req: &Request) -> Decision {
    let d = Decision {
        verdict: Verdict::Deny(Reason::Malformed),
        rule: None,
        issuer: None,
        user: None,
        account: req.account.to_string(),
        service: req.service.to_string(),
        facts: Facts::default(),
        verified: false,
        steps: Vec::new(),
        rules: Vec::new(),
    };
    // 1. malformed
    let token = match jws::parse(req.token) {
        Ok(t) => t,
        Err(why) => return d.fail("token", Reason::Malformed, why),
    };
    let mut d = d;
    d.facts = facts_of(&token);
    d.pass("token", "compact JWS with JSON-object header and payload");
    // 2. unknown_issuer
    let Some(issuer) = token
        .claim_str("iss")
        .and_then(|iss| env.config.issuer_by_url(iss))
    else {
        let why = match token.claims.get("iss") {
            None => "token has no iss".to_string(),
            Some(v) => format!(
                "iss {:?} is not the url of any configured issuer (compared byte for byte)",
                clean(&display_text(v))
            ),
        };
        return d.fail("issuer", Reason::UnknownIssuer, why);
    };
    d.issuer = Some(issuer.name.clone());
    d.pass("issuer", format!("iss is issuer {:?}", issuer.name));
    // 3. alg_not_allowed
    let alg_name = token.alg().unwrap_or_default();
    let alg = match parse_algorithm(alg_name) {
        Ok(a) if issuer.algorithms.contains(&a) => a,
        _ => {
            let allowed: Vec<&str> = issuer
                .algorithms
                .iter()
                .map(|a| algorithm_name(*a))
                .collect();
            return d.fail(
                "algorithm",
                Reason::AlgNotAllowed,
                format!("alg {:?} is not in {allowed:?}", clean(alg_name)),
            );
        }
    };
    d.pass("algorithm", format!("alg {alg_name}"));
    // 4. unknown_key (only now is the issuer's key cache read)
    let keys = match env.issuer_data.keys(issuer) {
        Ok(k) => k,
        Err(problem) => return d.unavailable("key", problem.to_string()),
    };
    let Some(kid) = token.kid() else {
        return d.fail("key", Reason::UnknownKey, "header has no kid");
    };
    let key = match keys.by_kid(kid) {
        Some(k) if k.kind.supports(alg) && k.alg.as_deref().is_none_or(|a| a == alg_name) => k,
        Some(k) => {
            return d.fail(
                "key",
                Reason::UnknownKey,
                format!(
                    "key {:?} ({}) cannot verify {alg_name}",
                    clean(kid),
                    k.kind.describe()
                ),
            );
        }
        None => {
            return d.fail(
                "key",
                Reason::UnknownKey,
                format!(
                    "no key with kid {:?} in {} (run `idtoken refresh` if the issuer rotated keys)",
                    clean(kid),
                    issuer.jwks_cache.display()
                ),
            );
        }
    };
    if let Some(retired) = key.retired_at
        && now_past(req.now, retired, env.config.defaults.key_grace)
    {
        return d.fail(
            "key",
            Reason::UnknownKey,
            format!(
                "key {:?} was withdrawn by the issuer at {} and key_grace ({} s) has passed",
                key.kid,
                crate::timefmt::utc(retired),
                env.config.defaults.key_grace
            ),
        );
    }
    d.pass(
        "key",
        format!("kid {:?} ({})", key.kid, key.kind.describe()),
    );
    // 5. bad_signature
    match jsonwebtoken::crypto::verify(
        &token.signature,
        token.signing_input.as_bytes(),
        &key.key,
        alg,
    ) {
        Ok(true) => {}
        _ => {
            return d.fail(
                "signature",
                Reason::BadSignature,
                format!("signature does not verify with key {:?}", key.kid),
            );
        }
    }
    d.verified = true;
    d.pass("signature", "verifies");
    // 6. missing_claim
    let claims = &token.claims;
    let date = |name: &str| claims.get(name).map(numeric_date);
    let (exp, iat) = match (date("exp"), date("iat")) {
        (Some(Some(exp)), Some(Some(iat))) => (exp, iat),
        (e, i) => {
            let which = if !matches!(e, Some(Some(_))) {
                "exp"
            } else {
                "iat"
            };
            let _ = i;
            return d.fail(
                "claims",
                Reason::MissingClaim,
                format!("{which} is missing or not a number"),
            );
        }
    };
    let nbf = match date("nbf") {
        None => None,
        Some(Some(n)) => Some(n),
        Some(None) => return d.fail("claims", Reason::MissingClaim, "nbf is not a number"),
    };
    let user = match claims.get(&issuer.user_claim) {
        Some(Value::String(u)) if !u.is_empty() => u.as_str(),
        Some(_) => {
            return d.fail(
                "claims",
                Reason::MissingClaim,
                format!("user claim {} is not a non-empty string", issuer.user_claim),
            );
        }
        None => {
            return d.fail(
                "claims",
                Reason::MissingClaim,
                format!("user claim {} is missing", issuer.user_claim),
            );
        }
    };
    d.user = Some(user.to_string());
    let jti = token.claim_str("jti").filter(|j| !j.is_empty());
    if env.config.defaults.max_uses > 0 && jti.is_none() {
        return d.fail(
            "claims",
            Reason::MissingClaim,
            "max_uses is set, and the token has no jti to count",
        );
    }
    d.pass(
        "claims",
        format!("exp, iat and {} present", issuer.user_claim),
    );
    // 7. expired, 8. not_yet_valid
    let leeway = env.config.defaults.leeway;
    let now = req.now;
    if now > exp.saturating_add(leeway) {
        return d.fail(
            "expiry",
            Reason::Expired,
            format!(
                "expired at {} (now {}, leeway {leeway} s)",
                crate::timefmt::utc(exp),
                crate::timefmt::utc(now)
            ),
        );
    }
    d.pass(
        "expiry",
        format!("valid until {}", crate::timefmt::utc(exp)),
    );
    for (name, t) in [("nbf", nbf), ("iat", Some(iat))] {
        if let Some(t) = t
            && now < t.saturating_sub(leeway)
        {
            return d.fail(
                "not-before",
                Reason::NotYetValid,
                format!(
                    "{name} is {} (now {}, leeway {leeway} s)",
                    crate::timefmt::utc(t),
                    crate::timefmt::utc(now)
                ),
            );
        }
    }
    d.pass("not-before", "nbf and iat are not in the future");
    // 9. wrong_audience
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => issuer.audiences.iter().any(|x| x == a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| issuer.audiences.iter().any(|x| x == a)),
        _ => false,
    };
    if !aud_ok {
        let got = claims.get("aud").map_or_else(
            || "no aud".to_string(),
            |a| format!("aud {}", clean(&a.to_string())),
        );
        return d.fail(
            "audience",
            Reason::WrongAudience,
            format!("{got}; this issuer accepts {:?}", issuer.audiences),
        );
    }
    d.pass("audience", "aud names an accepted audience");
    // 10. lifetime_too_long
    let lifetime = exp.saturating_sub(iat);
    let max_lifetime = env.config.defaults.max_lifetime;
    if lifetime > max_lifetime {
        return d.fail(
            "lifetime",
            Reason::LifetimeTooLong,
            format!("exp - iat = {lifetime} s, over max_lifetime {max_lifetime} s"),
        );
    }
    d.pass("lifetime", format!("{lifetime} s"));
    // 11-13: rules, grant, account
    let mut d = match apply_rules(env, req, issuer, &token, user, d) {
        Ok(d) => d,
        Err(denied) => return *denied,
    };
    // 14. replayed
    let max = env.config.defaults.max_uses;
    if let (true, Some(jti)) = (max > 0, jti) {
        let id = TokenId::new(&issuer.url, jti, exp);
        let result = match req.uses {
            UseMode::Record => env.uses.record(&id, max, now),
            UseMode::ReadOnly => env.uses.count(&id, max).map(|n| n < max),
        };
        match result {
            Ok(true) => d.pass("uses", format!("within max_uses {max}")),
            Ok(false) => {
                return d.fail(
                    "uses",
                    Reason::Replayed,
                    format!("already used {max} times (max_uses)"),
                );
            }
            Err(problem) => return d.unavailable("uses", problem),
        }
    }
    d.verdict = Verdict::Allow;
    d
}

/// Steps 11-13: which rules match the token, which grant the requested account, and
/// whether that account may log in at all. `Err` carries the denied (or undecidable)
/// decision; `Ok` the decision with its granting rule, still to be counted.
fn apply_rules(
    env: &Env,
    req: &Request,
    issuer: &Issuer,
    token: &UnverifiedToken,
    user: &str,
    mut d: Decision,
) -> Result<Decision, Box<Decision>> {
    let facts = TokenFacts {
        issuer,
        claims: &token.claims,
        user,
        service: req.service,
    };
    let mut user_map = None;
    let mut traces = Vec::with_capacity(env.config.rules.len());
    for rule in &env.config.rules {
        let mut t = RuleTrace {
            rule: rule.name.clone(),
            ..RuleTrace::default()
        };
        match policy::token_conditions(rule, &facts) {
            Err(why) => t.failed = Some(why),
            Ok(()) => {
                t.matched = true;
                if rule.login_as.is_none() && issuer.user_map.is_some() && user_map.is_none() {
                    match env.issuer_data.user_map(issuer) {
                        Ok(m) => user_map = Some(m),
                        Err(problem) => {
                            d.rules = traces;
                            return Err(Box::new(d.unavailable("rules", problem.to_string())));
                        }
                    }
                }
                match policy::grant(rule, user, user_map.as_ref().and_then(Option::as_ref)) {
                    Ok(account) => {
                        if account != req.account {
                            t.failed = Some(format!(
                                "grant: grants {:?}, not the requested {:?}",
                                clean(&account),
                                clean(req.account)
                            ));
                        }
                        t.grants = Some(account);
                    }
                    Err(why) => t.failed = Some(why),
                }
            }
        }
        traces.push(t);
    }
    d.rules = traces;
    // 11. policy_denied
    if !d.rules.iter().any(|t| t.matched) {
        return Err(Box::new(d.fail(
            "rules",
            Reason::PolicyDenied,
            format!(
                "none of the {} rules matches the token",
                env.config.rules.len()
            ),
        )));
    }
    d.pass("rules", "a rule matches the token");
    // 12. user_mismatch
    if !d
        .rules
        .iter()
        .any(|t| t.grants.as_deref() == Some(req.account))
    {
        return Err(Box::new(d.fail(
            "grant",
            Reason::UserMismatch,
            format!(
                "no matching rule grants the account {:?}",
                clean(req.account)
            ),
        )));
    }
    // 13. account_invalid
    let defaults = &env.config.defaults;
    if defaults.deny_users.iter().any(|u| u == req.account) {
        return Err(Box::new(d.fail(
            "account",
            Reason::AccountInvalid,
            format!("{:?} is in deny_users", clean(req.account)),
        )));
    }
    let Some(account) = env.accounts.account(req.account) else {
        return Err(Box::new(d.fail(
            "account",
            Reason::AccountInvalid,
            format!("no account {:?} in NSS", clean(req.account)),
        )));
    };
    if account.uid < defaults.min_uid {
        return Err(Box::new(d.fail(
            "account",
            Reason::AccountInvalid,
            format!(
                "{:?} has uid {}, under min_uid {}",
                account.name, account.uid, defaults.min_uid
            ),
        )));
    }
    d.pass(
        "account",
        format!("{:?} exists with uid {}", account.name, account.uid),
    );
    // local_groups: a granting rule with it grants only to members of one of the groups.
    let mut groups: Option<Vec<String>> = None;
    // The first granting rule, and how its local_groups held (for the trace).
    let mut grant: Option<(String, Option<String>)> = None;
    for (trace, rule) in d.rules.iter_mut().zip(&env.config.rules) {
        if trace.grants.as_deref() != Some(req.account) {
            continue;
        }
        // How the rule's local_groups held, for the trace (None: the rule has none).
        let membership = match &rule.local_groups {
            None => None,
            Some(wanted) => {
                // A group that lists the account by name answers at once (getgrnam); only
                // otherwise the account's whole group list (getgrouplist and a getgrgid per
                // group, the slow part of NSS) is fetched, once, for globs and for
                // memberships the group entries do not show.
                let listed = wanted
                    .iter()
                    .find(|w| crate::glob::is_literal(w) && env.accounts.listed_in(&account, w));
                let found = match listed {
                    Some(g) => Some(format!("group {g:?} lists {:?}", account.name)),
                    None => groups
                        .get_or_insert_with(|| env.accounts.group_names(&account))
                        .iter()
                        .find(|g| crate::glob::any_matches(wanted, g))
                        .map(|g| format!("{:?} is in group {g:?} (its group list)", account.name)),
                };
                let Some(found) = found else {
                    trace.failed = Some(format!(
                        "local_groups: {:?} is in none of {wanted:?}",
                        account.name
                    ));
                    continue;
                };
                Some(found)
            }
        };
        trace.granted = true;
        grant.get_or_insert_with(|| (trace.rule.clone(), membership));
    }
    match grant {
        Some((name, membership)) => {
            let how = membership
                .map(|m| format!(" (local_groups: {m})"))
                .unwrap_or_default();
            d.pass(
                "grant",
                format!("rule {name:?} grants {:?}{how}", account.name),
            );
            d.rule = Some(name);
            Ok(d)
        }
        None => Err(Box::new(d.fail(
            "grant",
            Reason::UserMismatch,
            format!(
                "every rule granting {:?} requires local_groups it is not in",
                account.name
            ),
        ))),
    }
}

/// now > t + grace, without overflow.
fn now_past(now: i64, t: i64, grace: i64) -> bool {
    now > t.saturating_add(grace)
}

fn facts_of(token: &UnverifiedToken) -> Facts {
    let text = |name: &str| token.claims.get(name).map(display_text);
    Facts {
        project_path: text("project_path"),
        pipeline_id: text("pipeline_id"),
        job_id: text("job_id"),
        jti: text("jti"),
        exp: token.claims.get("exp").and_then(numeric_date),
    }
}
