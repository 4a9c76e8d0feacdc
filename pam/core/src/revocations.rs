//! The revocation list: tokens a site has withdrawn before they expire (`idtoken revoke`).
//!
//! One JSON document, `{"version": 1, "entries": [...]}`, written whole and atomically by
//! `idtoken revoke` and read at every login that reaches the revocation step. An entry
//! names what it withdraws (one jti, pipeline, project, user claim or granting rule),
//! optionally the issuer, a reason for the audit trail, and when it was made.
//!
//! An entry withdraws the tokens issued up to its creation (iat <= created + leeway): it is
//! a kill switch for what is already out there, not a standing policy (a deny rule is
//! that). So it lapses by itself: such a token has exp <= iat + max_lifetime and is valid
//! until exp + leeway, so once `now > created + max_lifetime + 2 * leeway` no token it can
//! match can still be valid, and the list cannot grow without bound.
//!
//! The file obeys the config's rules (regular, root-owned, not writable by group or others,
//! every directory above it too); a missing file is an empty list; anything else wrong with
//! it (unsafe, unreadable, too large, malformed, a newer version) leaves the decision
//! *unavailable*, never open.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::claims::match_texts;
use crate::sanitize::clean;
use crate::timefmt::utc;

/// The format this code reads and writes; a file of another version is refused.
pub const FORMAT_VERSION: u32 = 1;
/// A larger file is refused (10 000 entries of a few hundred bytes fit well).
pub const MAX_REVOCATIONS_BYTES: u64 = 4 * 1024 * 1024;
/// At most this many entries; bounds the per-login matching work.
pub const MAX_ENTRIES: usize = 10_000;
/// Bounds on an entry's texts, in characters.
pub const MAX_ID_CHARS: usize = 64;
pub const MAX_VALUE_CHARS: usize = 1024;
pub const MAX_REASON_CHARS: usize = 512;

/// What an entry withdraws. In the file: `"match": {"pipeline_id": "4242"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Target {
    /// The token with this `jti` claim.
    #[serde(rename = "jti")]
    Jti(String),
    /// The tokens whose `pipeline_id` claim is this.
    #[serde(rename = "pipeline_id")]
    Pipeline(String),
    /// The tokens whose `project_path` claim is this.
    #[serde(rename = "project_path")]
    Project(String),
    /// The tokens whose user claim (the issuer's `user_claim`) is this.
    #[serde(rename = "user")]
    User(String),
    /// The tokens this granting rule would let in. Which rule grants is known only once
    /// the account is (rules are tried against NSS's account and its groups), so these
    /// entries are applied at the grant.
    #[serde(rename = "rule")]
    Rule(String),
}

impl Target {
    /// The claim (or `rule`) and the value, as the file and `--list` name them.
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            Target::Jti(v) => ("jti", v),
            Target::Pipeline(v) => ("pipeline_id", v),
            Target::Project(v) => ("project_path", v),
            Target::User(v) => ("user", v),
            Target::Rule(v) => ("rule", v),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, value) = self.parts();
        write!(f, "{what} {:?}", clean(value))
    }
}

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// `[a-z0-9-]`, unique in the file; what `--remove` takes.
    pub id: String,
    #[serde(rename = "match")]
    pub target: Target,
    /// The configured issuer name it is limited to; absent: every issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Free text for the audit trail (`idtoken check`, `--list`); never sent to the client.
    #[serde(default)]
    pub reason: String,
    /// Seconds since the epoch, when `idtoken revoke` wrote it.
    pub created: i64,
    /// When the writer's config let it lapse ([`lapse_time`]); kept for readers of the
    /// file. A reader lapses it at the later of this and its own config's lapse time.
    pub lapses_at: i64,
}

/// The latest time a token an entry made at `created` can match is still valid under
/// these settings: issued by `created + leeway`, living at most `max_lifetime`, accepted
/// `leeway` past its exp.
pub fn lapse_time(created: i64, leeway: i64, max_lifetime: i64) -> i64 {
    created
        .saturating_add(leeway)
        .saturating_add(max_lifetime)
        .saturating_add(leeway)
}

impl Entry {
    /// When this entry lapses for a reader with these settings: never before the time the
    /// writer recorded, nor before no token it can match under the reader's settings can
    /// still be valid.
    pub fn lapses(&self, leeway: i64, max_lifetime: i64) -> i64 {
        self.lapses_at
            .max(lapse_time(self.created, leeway, max_lifetime))
    }

    pub fn in_force(&self, now: i64, leeway: i64, max_lifetime: i64) -> bool {
        now <= self.lapses(leeway, max_lifetime)
    }

    /// Whether the token is one this entry withdraws: from its issuer (when it names one),
    /// issued by its creation (plus leeway, for the issuer's clock), and carrying its
    /// claim value (or, for a rule entry, granted by that rule: `granting_rule`).
    pub fn matches(&self, token: &TokenFacts, granting_rule: Option<&str>, leeway: i64) -> bool {
        if self.issuer.as_deref().is_some_and(|i| i != token.issuer) {
            return false;
        }
        if token.iat > self.created.saturating_add(leeway) {
            return false;
        }
        let claim = |name: &str, want: &str| {
            token
                .claims
                .get(name)
                .is_some_and(|v| match_texts(v).iter().any(|t| t == want))
        };
        match &self.target {
            Target::Jti(j) => claim("jti", j),
            Target::Pipeline(p) => claim("pipeline_id", p),
            Target::Project(p) => claim("project_path", p),
            Target::User(u) => token.user == u,
            Target::Rule(r) => granting_rule == Some(r.as_str()),
        }
    }

    /// The entry for a trace line: id, what it matches, since when, and its reason.
    pub fn describe(&self) -> String {
        let issuer = self
            .issuer
            .as_deref()
            .map(|i| format!(" of issuer {:?}", clean(i)))
            .unwrap_or_default();
        let reason = if self.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", clean(&self.reason))
        };
        format!(
            "revocation {} ({}{issuer}, tokens issued by {}){reason}",
            clean(&self.id),
            self.target,
            utc(self.created)
        )
    }
}

/// What a verified token offers to the revocation entries.
#[derive(Debug, Clone, Copy)]
pub struct TokenFacts<'a> {
    /// The configured name of its issuer.
    pub issuer: &'a str,
    pub claims: &'a Map<String, Value>,
    /// The user claim.
    pub user: &'a str,
    pub iat: i64,
}

/// A parsed, checked revocation list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationList {
    pub version: u32,
    pub entries: Vec<Entry>,
}

impl RevocationList {
    pub fn empty() -> RevocationList {
        RevocationList {
            version: FORMAT_VERSION,
            entries: Vec::new(),
        }
    }

    /// The entries still in force at `now`.
    pub fn in_force(
        &self,
        now: i64,
        leeway: i64,
        max_lifetime: i64,
    ) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(move |e| e.in_force(now, leeway, max_lifetime))
    }

    /// The file's bytes: one entry per line, so a diff or `grep` of the file reads well.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{{\"version\": {}, \"entries\": [", self.version);
        for (i, e) in self.entries.iter().enumerate() {
            out.push_str(if i == 0 { "\n  " } else { ",\n  " });
            // An entry of strings and integers always serialises.
            out.push_str(&serde_json::to_string(e).unwrap_or_default());
        }
        out.push_str("\n]}\n");
        out.into_bytes()
    }
}

/// Parses and checks a revocation list. Every problem is an error: a list that cannot be
/// read in full cannot say which tokens it withdraws.
pub fn parse(bytes: &[u8]) -> Result<RevocationList, String> {
    let list: RevocationList =
        serde_json::from_slice(bytes).map_err(|e| format!("not a revocation list: {e}"))?;
    if list.version != FORMAT_VERSION {
        return Err(format!(
            "version {} is not one this pam_idtoken reads ({FORMAT_VERSION}); upgrade it",
            list.version
        ));
    }
    if list.entries.len() > MAX_ENTRIES {
        return Err(format!(
            "{} entries, more than the {MAX_ENTRIES} allowed",
            list.entries.len()
        ));
    }
    let mut ids = std::collections::HashSet::with_capacity(list.entries.len());
    for e in &list.entries {
        check_entry(e)?;
        if !ids.insert(e.id.as_str()) {
            return Err(format!("entry id {:?} appears twice", e.id));
        }
    }
    Ok(list)
}

/// The list's path unless `[defaults] revocations` says otherwise.
pub const DEFAULT_PATH: &str = "/var/lib/idtoken/revocations";

/// Whether `id` is a valid entry id.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The checks of one entry (also what `idtoken revoke` checks before writing one).
pub fn check_entry(e: &Entry) -> Result<(), String> {
    if !valid_id(&e.id) {
        return Err(format!(
            "entry id {:?} is not 1-{MAX_ID_CHARS} characters of a-z, 0-9 and -",
            clean(&e.id)
        ));
    }
    let at = |why: String| format!("entry {}: {why}", e.id);
    let (what, value) = e.target.parts();
    if value.is_empty() || value.chars().count() > MAX_VALUE_CHARS {
        return Err(at(format!("{what} must be 1-{MAX_VALUE_CHARS} characters")));
    }
    if e.issuer
        .as_deref()
        .is_some_and(|i| i.is_empty() || i.chars().count() > MAX_VALUE_CHARS)
    {
        return Err(at(format!("issuer must be 1-{MAX_VALUE_CHARS} characters")));
    }
    if e.reason.chars().count() > MAX_REASON_CHARS {
        return Err(at(format!(
            "reason is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    if e.created < 0 || e.lapses_at < e.created {
        return Err(at(
            "created must be a time, and lapses_at no earlier".to_string()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::{DataProblem, load_revocations as load};
    use serde_json::json;

    const CREATED: i64 = 1_800_000_000;
    const LEEWAY: i64 = 60;
    const MAX_LIFETIME: i64 = 3600;

    fn entry(id: &str, target: Target) -> Entry {
        Entry {
            id: id.to_string(),
            target,
            issuer: None,
            reason: "leaked in a job log".to_string(),
            created: CREATED,
            lapses_at: lapse_time(CREATED, LEEWAY, MAX_LIFETIME),
        }
    }

    fn claims() -> Map<String, Value> {
        let v = json!({"jti": "j-1", "pipeline_id": "4242", "project_path": "hpc/app",
                       "user_login": "alice", "job_id": 77});
        v.as_object().unwrap().clone()
    }

    fn facts<'a>(claims: &'a Map<String, Value>, iat: i64) -> TokenFacts<'a> {
        TokenFacts {
            issuer: "gitlab",
            claims,
            user: "alice",
            iat,
        }
    }

    #[test]
    fn each_kind_matches_its_claim_and_nothing_else() {
        let c = claims();
        let t = facts(&c, CREATED - 100);
        let yes = [
            Target::Jti("j-1".into()),
            Target::Pipeline("4242".into()),
            Target::Project("hpc/app".into()),
            Target::User("alice".into()),
        ];
        for target in yes {
            assert!(
                entry("a", target.clone()).matches(&t, None, LEEWAY),
                "{target}"
            );
        }
        let no = [
            Target::Jti("j-2".into()),
            Target::Pipeline("424".into()),
            Target::Project("hpc/*".into()), // values are exact, not globs
            Target::User("alice2".into()),
            Target::Rule("deployers".into()),
        ];
        for target in no {
            assert!(
                !entry("a", target.clone()).matches(&t, None, LEEWAY),
                "{target}"
            );
        }
    }

    #[test]
    fn a_rule_entry_matches_only_the_granting_rule() {
        let c = claims();
        let t = facts(&c, CREATED);
        let e = entry("r", Target::Rule("deployers".into()));
        assert!(e.matches(&t, Some("deployers"), LEEWAY));
        assert!(!e.matches(&t, Some("others"), LEEWAY));
        assert!(!e.matches(&t, None, LEEWAY));
    }

    #[test]
    fn a_numeric_claim_matches_by_its_json_text() {
        let v = json!({"pipeline_id": 4242});
        let c = v.as_object().unwrap();
        let t = facts(c, CREATED);
        assert!(entry("n", Target::Pipeline("4242".into())).matches(&t, None, LEEWAY));
    }

    #[test]
    fn an_issuer_limits_the_entry() {
        let c = claims();
        let t = facts(&c, CREATED);
        let mut e = entry("i", Target::Pipeline("4242".into()));
        e.issuer = Some("other".into());
        assert!(!e.matches(&t, None, LEEWAY));
        e.issuer = Some("gitlab".into());
        assert!(e.matches(&t, None, LEEWAY));
    }

    /// The entry withdraws what was issued up to its creation (plus leeway for the issuer's
    /// clock); a token issued later is the policy's business.
    #[test]
    fn tokens_issued_after_the_entry_are_not_matched() {
        let c = claims();
        let e = entry("t", Target::Pipeline("4242".into()));
        assert!(e.matches(&facts(&c, CREATED + LEEWAY), None, LEEWAY));
        assert!(!e.matches(&facts(&c, CREATED + LEEWAY + 1), None, LEEWAY));
    }

    /// Lapse: the latest moment a token it matches can be valid. A token issued at
    /// created + leeway with the longest lifetime is valid until exp + leeway.
    #[test]
    fn an_entry_lapses_when_no_token_it_matches_can_be_valid() {
        let e = entry("l", Target::User("alice".into()));
        let last_exp = CREATED + LEEWAY + MAX_LIFETIME;
        let last_valid = last_exp + LEEWAY;
        assert_eq!(e.lapses(LEEWAY, MAX_LIFETIME), last_valid);
        assert!(e.in_force(last_valid, LEEWAY, MAX_LIFETIME));
        assert!(!e.in_force(last_valid + 1, LEEWAY, MAX_LIFETIME));
        // A reader whose max_lifetime is longer keeps it in force longer: tokens that
        // live longer pass its lifetime check.
        assert!(e.in_force(last_valid + 1, LEEWAY, MAX_LIFETIME + 10));
        // One whose max_lifetime is shorter still honours the writer's lapses_at.
        assert!(e.in_force(last_valid, LEEWAY, 10));
        let list = RevocationList {
            version: 1,
            entries: vec![e.clone()],
        };
        assert_eq!(list.in_force(last_valid, LEEWAY, MAX_LIFETIME).count(), 1);
        assert_eq!(
            list.in_force(last_valid + 1, LEEWAY, MAX_LIFETIME).count(),
            0
        );
    }

    #[test]
    fn the_file_round_trips() {
        let mut with_issuer = entry("b-2", Target::Rule("deployers".into()));
        with_issuer.issuer = Some("gitlab".into());
        let list = RevocationList {
            version: 1,
            entries: vec![entry("a-1", Target::Jti("j".into())), with_issuer],
        };
        let bytes = list.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""match":{"jti":"j"}"#), "{text}");
        assert_eq!(text.lines().count(), 4, "{text}");
        assert_eq!(parse(&bytes).unwrap(), list);
        assert_eq!(
            parse(&RevocationList::empty().to_bytes()).unwrap().entries,
            []
        );
    }

    #[test]
    fn malformed_lists_are_refused() {
        let good = r#"{"id":"a","match":{"jti":"j"},"reason":"","created":1,"lapses_at":2}"#;
        let doc = |entries: &str| format!(r#"{{"version":1,"entries":[{entries}]}}"#);
        assert!(parse(doc(good).as_bytes()).is_ok());
        let bad = [
            String::new(),
            "[]".to_string(),
            "{\"version\":1}".to_string(),
            r#"{"version":2,"entries":[]}"#.to_string(),
            r#"{"version":1,"entries":[],"more":1}"#.to_string(),
            doc(&good.replace("\"jti\"", "\"job_id\"")), // a kind this version does not know
            doc(&good.replace("\"reason\"", "\"why\"")),
            doc(&good.replace("\"a\"", "\"A/\"")),
            doc(&good.replace("\"j\"", "\"\"")),
            doc(&good.replace("\"lapses_at\":2", "\"lapses_at\":0")),
            doc(&good.replace("\"created\":1", "\"created\":\"1\"")),
            doc(&format!("{good},{good}")), // an id twice
            doc(&good.replace("\"\"", &format!("\"{}\"", "x".repeat(MAX_REASON_CHARS + 1)))),
        ];
        for b in bad {
            assert!(parse(b.as_bytes()).is_err(), "accepted: {b}");
        }
    }

    #[test]
    fn the_entry_count_is_bounded() {
        let entries: Vec<String> = (0..=MAX_ENTRIES)
            .map(|i| format!(r#"{{"id":"e{i}","match":{{"jti":"j"}},"created":1,"lapses_at":2}}"#))
            .collect();
        let over = format!(r#"{{"version":1,"entries":[{}]}}"#, entries.join(","));
        assert!(parse(over.as_bytes()).unwrap_err().contains("more than"));
        let at = format!(
            r#"{{"version":1,"entries":[{}]}}"#,
            entries[..MAX_ENTRIES].join(",")
        );
        assert_eq!(parse(at.as_bytes()).unwrap().entries.len(), MAX_ENTRIES);
        assert!(u64::try_from(at.len()).unwrap() < MAX_REVOCATIONS_BYTES);
    }

    /// A temporary directory, removed on drop.
    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(tag: &str) -> Dir {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("idtoken-rev-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        Dir(d)
    }

    #[test]
    fn a_missing_file_is_no_revocation_and_a_bad_one_is_a_problem() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("load");
        let p = d.0.join("revocations");
        assert_eq!(load(&p).unwrap(), RevocationList::empty());
        // A missing directory is not "nothing revoked": a shared filesystem may be
        // missing. Only the default path's directory may be absent.
        let e = load(&d.0.join("none/revocations")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        std::fs::write(&p, RevocationList::empty().to_bytes()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(&p).is_ok());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.to_string().contains("chmod go-w"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&p, b"{\"version\":1,\"entries\":[").unwrap();
        assert!(matches!(load(&p), Err(DataProblem::Invalid { .. })));
        std::fs::write(&p, b"").unwrap();
        assert!(matches!(load(&p), Err(DataProblem::Invalid { .. })));
        // A directory others may write: whoever can could delete the list.
        std::fs::write(&p, RevocationList::empty().to_bytes()).unwrap();
        std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(load(&p), Err(DataProblem::File(_))));
        std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Its absence in such a directory is no better.
        std::fs::remove_file(&p).unwrap();
        std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(load(&p).is_err());
        std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A symlink is refused, not followed.
        let real = d.0.join("real");
        std::fs::write(&real, RevocationList::empty().to_bytes()).unwrap();
        std::os::unix::fs::symlink(&real, &p).unwrap();
        assert!(load(&p).is_err());
    }
}
