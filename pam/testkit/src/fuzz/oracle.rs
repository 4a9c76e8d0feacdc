//! A reference implementation of the SPEC's decision order, written apart from the core (it
//! shares only the base64, JSON and signature-verification libraries with it), so that the
//! fuzz targets can compare every decision the core makes with what the SPEC says it must be.
//!
//! It is written for clarity, not speed: a quadratic glob matcher, linear searches, and its
//! own reading of the key caches and user map. Of the harness's stand-ins it uses only their
//! data: the account table ([`super::world::ACCOUNTS`]) and the ledger's rule
//! ([`crate::fakes::ledger_answer`]).
//!
//! It is deliberately a second implementation, not a caller of the core's helpers: a
//! comparison with code that shares the core's mistakes would find none of them. Do not
//! "deduplicate" it against pam/core/src, even where the two read alike.
//!
//! Where the core makes a choice the SPEC leaves open, the reference follows the core and
//! says so:
//! - the 64 KiB limit applies to the answer as given, before whitespace is stripped;
//! - a NumericDate is a JSON integer, or a finite number under 1e15 in magnitude (floored);
//! - a number claim's text is its value: an integral number as an integer (`1e3` and
//!   `1000.0` read as `1000`, below 9e15 in magnitude), any other as serde_json renders it;
//! - `local_groups` is checked after the account checks (it needs the account from NSS), so
//!   a rule whose local_groups exclude an account that is also invalid gives
//!   `account_invalid`, not `user_mismatch`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idtoken_core::config::{Config, Issuer, Rule};
use idtoken_core::decision::{Decision, Verdict};
use idtoken_core::reason::Reason;
use idtoken_core::uses::TokenId;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};
use std::sync::OnceLock;

use super::world::{ACCOUNTS, NOW};
use crate::fakes::{LedgerAnswer, ledger_answer};

/// What a decision came to, as far as the SPEC fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed by this rule: the first rule, in config order, that grants the account.
    Allow {
        rule: String,
    },
    Deny(Reason),
    Unavailable,
}

impl Outcome {
    pub fn of(d: &Decision) -> Outcome {
        match &d.verdict {
            Verdict::Allow => Outcome::Allow {
                rule: d.rule.clone().unwrap_or_default(),
            },
            Verdict::Deny(r) => Outcome::Deny(*r),
            Verdict::Unavailable(_) => Outcome::Unavailable,
        }
    }
}

const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// A compact JWS split and decoded, nothing checked.
pub struct Jws {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    pub signing_input: String,
    pub signature: String,
}

/// SPEC step 1: three base64url parts (no padding), JSON-object header and payload, a
/// non-empty base64url signature, no `crit`, and (core) an `alg` that is a string. An
/// answer starting with `~` is a packed token (v3): unpacked by [`unpack`], or malformed.
pub fn parse(raw: &str) -> Option<Jws> {
    if raw.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let token = raw.trim();
    if token.starts_with('~') {
        return parse(&unpack(token)?);
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts.as_slice() else {
        return None;
    };
    let object = |part: &str| -> Option<Map<String, Value>> {
        let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
        match serde_json::from_slice::<Value>(&bytes).ok()? {
            Value::Object(m) => Some(m),
            _ => None,
        }
    };
    let header = object(h)?;
    let claims = object(p)?;
    if s.is_empty() || URL_SAFE_NO_PAD.decode(s).is_err() {
        return None;
    }
    if header.contains_key("crit") || !header.get("alg").is_some_and(Value::is_string) {
        return None;
    }
    Some(Jws {
        header,
        claims,
        signing_input: format!("{h}.{p}"),
        signature: s.to_string(),
    })
}

/// The released dictionaries of pam_idtoken(8) PACKED TOKENS, read from their files; the
/// id is what zlib says their Adler-32 is (checked in [`unpack`]).
const PACK_DICTIONARIES: &[&[u8]] = &[include_bytes!("../../../core/dictionaries/gitlab-1.dict")];

/// The reference unpacker, as pam_idtoken(8) describes the packed form, with another
/// inflater than the core's (zlib-rs through flate2, where the core uses miniz_oxide):
/// `~1.` + base64url (no padding) of a zlib stream whose header names a known dictionary;
/// it must end exactly after its (correct) checksum and inflate to at most 49152 bytes and
/// at most 64 times its own size; the content is `header NUL payload NUL signature`.
pub fn unpack(token: &str) -> Option<String> {
    use flate2::{Decompress, FlushDecompress, Status};
    let stream = URL_SAFE_NO_PAD.decode(token.strip_prefix("~1.")?).ok()?;
    let cap = (64 * stream.len()).min(49_152);
    let mut z = Decompress::new(true);
    let mut out = Vec::with_capacity(cap + 1);
    // zlib stops after the header and asks for the dictionary its DICTID names.
    let wanted = match z.decompress_vec(&stream, &mut out, FlushDecompress::None) {
        Err(e) => e.needs_dictionary()?,
        Ok(_) => return None,
    };
    let dictionary = PACK_DICTIONARIES.iter().find(|d| {
        // zlib's deflateSetDictionary answers the dictionary's Adler-32.
        flate2::Compress::new(flate2::Compression::none(), true)
            .set_dictionary(d)
            .is_ok_and(|id| id == wanted)
    })?;
    z.set_dictionary(dictionary).ok()?;
    let header_len = z.total_in() as usize;
    let status = z
        .decompress_vec(&stream[header_len..], &mut out, FlushDecompress::Finish)
        .ok()?;
    if status != Status::StreamEnd || z.total_in() as usize != stream.len() || out.len() > cap {
        return None;
    }
    let mut parts = out.splitn(3, |b| *b == 0);
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(h),
        URL_SAFE_NO_PAD.encode(p),
        URL_SAFE_NO_PAD.encode(s)
    ))
}

/// The algorithms a config can name (the SPEC's list; none and HS* cannot load).
fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// One usable key of a key cache, read independently of `idtoken_core::jwks`.
pub struct RefKey {
    pub kid: String,
    pub algorithms: Vec<Algorithm>,
    pub jwk_alg: Option<String>,
    pub retired_at: Option<i64>,
    pub key: DecodingKey,
}

fn bits(be: &[u8]) -> usize {
    let v: Vec<u8> = be.iter().copied().skip_while(|b| *b == 0).collect();
    match v.first() {
        None => 0,
        Some(first) => (v.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
    }
}

/// The usable keys of a JWKS: `use` absent or `sig`, a kid, RSA of 2048 bits or more, EC
/// P-256/P-384 or Ed25519; the first of two keys with one kid wins.
pub fn usable_keys(doc: &Value) -> Vec<RefKey> {
    let mut out: Vec<RefKey> = Vec::new();
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return out;
    };
    for jwk in keys {
        let s = |n: &str| jwk.get(n).and_then(Value::as_str);
        let Some(kid) = s("kid").filter(|k| !k.is_empty()) else {
            continue;
        };
        if jwk.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
            continue;
        }
        use Algorithm::*;
        let algorithms = match (s("kty"), s("crv")) {
            (Some("RSA"), _) => {
                let n = s("n").and_then(|n| URL_SAFE_NO_PAD.decode(n).ok());
                let e = s("e").and_then(|e| URL_SAFE_NO_PAD.decode(e).ok());
                match (n, e) {
                    (Some(n), Some(e)) if bits(&n) >= 2048 && (1..=8).contains(&e.len()) => {
                        vec![RS256, RS384, RS512, PS256, PS384, PS512]
                    }
                    _ => continue,
                }
            }
            (Some("EC"), Some("P-256")) => vec![ES256],
            (Some("EC"), Some("P-384")) => vec![ES384],
            (Some("OKP"), Some("Ed25519")) => vec![EdDSA],
            _ => continue,
        };
        let retired_at = match jwk.get("x-idtoken-retired-at") {
            None => None,
            Some(v) => match v.as_i64() {
                Some(t) => Some(t),
                None => continue,
            },
        };
        let Some(key) = serde_json::from_value::<Jwk>(jwk.clone())
            .ok()
            .and_then(|j| DecodingKey::from_jwk(&j).ok())
        else {
            continue;
        };
        if out.iter().any(|k| k.kid == kid) {
            continue;
        }
        out.push(RefKey {
            kid: kid.to_string(),
            algorithms,
            jwk_alg: s("alg").map(str::to_string),
            retired_at,
            key,
        });
    }
    out
}

/// The reference key sets, by issuer url (the same documents the fake serves).
fn keys_for(url: &str) -> Option<&'static [RefKey]> {
    static KEYS: OnceLock<Vec<(String, Vec<RefKey>)>> = OnceLock::new();
    KEYS.get_or_init(|| {
        super::world::jwks_documents()
            .iter()
            .map(|(u, doc)| (u.to_string(), usable_keys(doc)))
            .collect()
    })
    .iter()
    .find(|(u, _)| u == url)
    .map(|(_, k)| k.as_slice())
}

/// Anchored glob, `*` any run of characters, `?` one character: a dynamic program over
/// (pattern prefix, text prefix), written to be obviously right rather than fast.
pub fn glob(pattern: &str, text: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let mut dp = vec![false; t.len() + 1];
    dp[0] = true;
    for pc in pattern.chars() {
        let mut next = vec![false; t.len() + 1];
        match pc {
            '*' => {
                let mut reached = false;
                for j in 0..=t.len() {
                    reached |= dp[j];
                    next[j] = reached;
                }
            }
            // One character, whatever it is: shift by one.
            '?' => next[1..].copy_from_slice(&dp[..t.len()]),
            c => {
                for j in 1..=t.len() {
                    next[j] = dp[j - 1] && t[j - 1] == c;
                }
            }
        }
        dp = next;
    }
    dp[t.len()]
}

fn any_glob(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| glob(p, text))
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_f64() => Some(match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
            _ => n.to_string(),
        }),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The texts a claim offers to globs: a scalar its text, an array its scalar elements.
pub fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(scalar_text).collect(),
        other => scalar_text(other).into_iter().collect(),
    }
}

/// How one condition of a rule came out for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cond {
    Holds,
    Fails,
    /// Cannot be evaluated: the claim is absent or no glob can read it (`claim`), or the
    /// remote host is absent or not an address.
    Unknown {
        claim: bool,
    },
}

/// A claim a rule names (SPEC v2): a name starting with `/` is an RFC 6901 JSON Pointer into
/// the payload (serde_json's own implementation), anything else one top-level claim.
fn claim_at(claims: &Map<String, Value>, name: &str) -> Option<Value> {
    if name.starts_with('/') {
        Value::Object(claims.clone()).pointer(name).cloned()
    } else {
        claims.get(name).cloned()
    }
}

/// `text` as an IP address when it is one: a bare IPv4 or IPv6 address, or an IPv6 address
/// with a non-empty zone (`%eth0`), which is dropped; an IPv4-mapped IPv6 address is its IPv4
/// address (sshd on a dual-stack socket writes them).
fn address(text: &str) -> Option<std::net::IpAddr> {
    use std::net::IpAddr;
    let bare = match text.find('%') {
        None => text,
        Some(i) if text[..i].contains(':') && i + 1 < text.len() => &text[..i],
        Some(_) => return None,
    };
    match bare.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }),
        v4 => Some(v4),
    }
}

/// Whether `ip` is in the network written `ADDR/PREFIX`: the same family, and the first
/// PREFIX bits equal, compared one bit at a time.
fn in_network(ip: std::net::IpAddr, network: &str) -> bool {
    use std::net::IpAddr;
    let Some((addr, prefix)) = network.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(prefix)) = (addr.parse::<IpAddr>(), prefix.parse::<u32>()) else {
        return false;
    };
    let (a, b, width): (u128, u128, u32) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a).into(), u32::from(b).into(), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    (0..prefix.min(width)).all(|i| {
        let bit = width - 1 - i;
        (a >> bit) & 1 == (b >> bit) & 1
    })
}

/// Whether a rule's token conditions hold (SPEC: every condition; any value within one).
/// A granting rule needs every condition to hold. A deny rule holds unless a condition
/// fails: what it cannot evaluate holds (SPEC v3, a deny fails closed), except an absent or
/// unreadable claim in a rule with `if_absent = "skip"`. A deny rule's `users` also hold
/// for the requested account's name.
#[allow(clippy::too_many_arguments)]
pub fn rule_matches(
    rule: &Rule,
    issuer: &Issuer,
    claims: &Map<String, Value>,
    user: &str,
    service: &str,
    rhost: Option<&str>,
    account: &str,
) -> bool {
    if rule.issuer.as_ref().is_some_and(|n| *n != issuer.name) {
        return false;
    }
    // Every rule has services after loading: its own, or [defaults] services.
    if !any_glob(&rule.services, service) {
        return false;
    }
    let mut conds = Vec::new();
    if let Some(users) = &rule.users {
        let holds = any_glob(users, user) || (rule.deny && any_glob(users, account));
        conds.push(if holds { Cond::Holds } else { Cond::Fails });
    }
    if let Some(networks) = &rule.from {
        conds.push(match rhost.and_then(address) {
            None => Cond::Unknown { claim: false },
            Some(ip) if networks.iter().any(|n| in_network(ip, &n.to_string())) => Cond::Holds,
            Some(_) => Cond::Fails,
        });
    }
    let readable = |v: &Value, globs: &[String]| -> Cond {
        let t = texts(v);
        if t.iter().any(|x| any_glob(globs, x)) {
            Cond::Holds
        } else if t.is_empty() && v.as_array().is_none_or(|a| !a.is_empty()) {
            Cond::Unknown { claim: true }
        } else {
            Cond::Fails
        }
    };
    if let Some(groups) = &rule.groups {
        conds.push(match claims.get("groups_direct") {
            Some(v @ Value::Array(_)) => match readable(v, groups) {
                // A list of nothing readable is a real answer: none of the groups.
                Cond::Unknown { .. } => Cond::Fails,
                c => c,
            },
            _ => Cond::Unknown { claim: true },
        });
    }
    for (name, globs) in &rule.claims {
        conds.push(match claim_at(claims, name) {
            None => Cond::Unknown { claim: true },
            Some(v) => readable(&v, globs),
        });
    }
    if !rule.deny {
        return conds.iter().all(|c| *c == Cond::Holds);
    }
    let skip = rule.if_absent == idtoken_core::config::IfAbsent::Skip;
    conds.iter().all(|c| match c {
        Cond::Holds => true,
        Cond::Fails => false,
        Cond::Unknown { claim } => !(*claim && skip),
    })
}

/// The harness's user map, read by the reference itself.
fn mapped(user: &str) -> Option<String> {
    super::world::USER_MAP.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        (w.len() == 2 && w[0] == user).then(|| w[1].to_string())
    })
}

fn numeric_date(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    let f = v.as_f64()?;
    (f.is_finite() && f.abs() < 1e15).then(|| f.floor() as i64)
}

/// The reference decision for `raw` asking for `account` through `service`, at [`NOW`].
pub fn decide(config: &Config, raw: &str, account: &str, service: &str) -> Outcome {
    use Outcome::Deny;
    use Reason::*;
    // 1. malformed
    let Some(t) = parse(raw) else {
        return Deny(Malformed);
    };
    // 2. unknown_issuer
    let Some(issuer) = t
        .claims
        .get("iss")
        .and_then(Value::as_str)
        .and_then(|iss| config.issuers.iter().find(|i| i.url == iss))
    else {
        return Deny(UnknownIssuer);
    };
    // 3. alg_not_allowed
    let alg_name = t.header.get("alg").and_then(Value::as_str).unwrap_or("");
    let Some(alg) = algorithm(alg_name).filter(|a| issuer.algorithms.contains(a)) else {
        return Deny(AlgNotAllowed);
    };
    // 4. unknown_key (the cache is read first: the harness has none for unknown urls)
    let Some(keys) = keys_for(&issuer.url) else {
        return Outcome::Unavailable;
    };
    let Some(key) = t
        .header
        .get("kid")
        .and_then(Value::as_str)
        .and_then(|kid| keys.iter().find(|k| k.kid == kid))
    else {
        return Deny(UnknownKey);
    };
    if !key.algorithms.contains(&alg) || key.jwk_alg.as_deref().is_some_and(|a| a != alg_name) {
        return Deny(UnknownKey);
    }
    if key
        .retired_at
        .is_some_and(|r| NOW > r.saturating_add(config.defaults.key_grace))
    {
        return Deny(UnknownKey);
    }
    // 5. bad_signature
    let verified =
        jsonwebtoken::crypto::verify(&t.signature, t.signing_input.as_bytes(), &key.key, alg);
    if !matches!(verified, Ok(true)) {
        return Deny(BadSignature);
    }
    // The harness's request: PAM_RHOST from the unverified `x-fuzz-rhost` (a string; null
    // for none), else the world's.
    let rhost = match t.claims.get(super::world::RHOST_CLAIM) {
        Some(Value::String(h)) => Some(h.as_str()),
        Some(Value::Null) => None,
        _ => Some(super::world::RHOST),
    };
    verified_claims(config, issuer, &t.claims, account, service, rhost)
}

/// Steps 6 to 14, for claims whose signature verified.
pub fn verified_claims(
    config: &Config,
    issuer: &Issuer,
    claims: &Map<String, Value>,
    account: &str,
    service: &str,
    rhost: Option<&str>,
) -> Outcome {
    use Outcome::Deny;
    use Reason::*;
    let defaults = &config.defaults;
    // 6. missing_claim
    let date = |n: &str| claims.get(n).map(numeric_date);
    let (Some(Some(exp)), Some(Some(iat))) = (date("exp"), date("iat")) else {
        return Deny(MissingClaim);
    };
    let nbf = match date("nbf") {
        None => None,
        Some(Some(n)) => Some(n),
        Some(None) => return Deny(MissingClaim),
    };
    let Some(user) = claims
        .get(&issuer.user_claim)
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    else {
        return Deny(MissingClaim);
    };
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty());
    if defaults.max_uses > 0 && jti.is_none() {
        return Deny(MissingClaim);
    }
    // 7, 8: times, with leeway
    let leeway = defaults.leeway;
    if NOW > exp.saturating_add(leeway) {
        return Deny(Expired);
    }
    if nbf.is_some_and(|n| NOW < n.saturating_sub(leeway)) || NOW < iat.saturating_sub(leeway) {
        return Deny(NotYetValid);
    }
    // 9. wrong_audience
    let accepted = |a: &str| issuer.audiences.iter().any(|x| x == a);
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => accepted(a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(accepted),
        _ => false,
    };
    if !aud_ok {
        return Deny(WrongAudience);
    }
    // 10. lifetime_too_long
    if exp.saturating_sub(iat) > defaults.max_lifetime {
        return Deny(LifetimeTooLong);
    }
    // 11. policy_denied: a deny rule holds, or no granting rule matches.
    let (deny_rules, granting_rules): (Vec<&Rule>, Vec<&Rule>) =
        config.rules.iter().partition(|r| r.deny);
    let holds = |r: &&Rule| rule_matches(r, issuer, claims, user, service, rhost, account);
    if deny_rules.iter().any(holds) {
        return Deny(PolicyDenied);
    }
    let matching: Vec<&Rule> = granting_rules.into_iter().filter(holds).collect();
    if matching.is_empty() {
        return Deny(PolicyDenied);
    }
    // 12. user_mismatch
    let grant = |r: &Rule| -> Option<String> {
        match (&r.login_as, &issuer.user_map) {
            (Some(a), _) => Some(a.clone()),
            (None, Some(_)) => mapped(user),
            (None, None) => Some(user.to_string()),
        }
    };
    let granting: Vec<&Rule> = matching
        .into_iter()
        .filter(|r| grant(r).as_deref() == Some(account))
        .collect();
    if granting.is_empty() {
        return Deny(UserMismatch);
    }
    // 13. account_invalid
    if defaults.deny_users.iter().any(|u| u == account) {
        return Deny(AccountInvalid);
    }
    let Some(entry) = ACCOUNTS.iter().find(|a| a.name == account) else {
        return Deny(AccountInvalid);
    };
    if entry.uid < defaults.min_uid {
        return Deny(AccountInvalid);
    }
    // local_groups
    let Some(rule) = granting.into_iter().find(|r| {
        r.local_groups
            .as_ref()
            .is_none_or(|wanted| entry.groups().any(|g| any_glob(wanted, g)))
    }) else {
        return Deny(UserMismatch);
    };
    // 14. replayed
    if defaults.max_uses > 0
        && let Some(jti) = jti
    {
        match ledger_answer(&TokenId::new(&issuer.url, jti, exp)) {
            LedgerAnswer::Fresh => {}
            LedgerAnswer::UsedUp => return Deny(Replayed),
            LedgerAnswer::Broken => return Outcome::Unavailable,
        }
    }
    Outcome::Allow {
        rule: rule.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn reference_glob() {
        assert!(glob("", ""));
        assert!(!glob("", "a"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("b?b", "bob"));
        assert!(!glob("b?b", "bb"));
        assert!(glob("?", "é"));
        assert!(glob("hpc/*", "hpc/a/b"));
    }
}
