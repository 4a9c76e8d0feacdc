//! The revocation step (SPEC v3, reason `revoked`) through `decision::evaluate`, with the
//! revocation list in memory: where it sits in the decision order, what each kind of entry
//! withdraws, lapse, the granting-rule entries applied at the grant, and an unusable list
//! making the decision unavailable.

use idtoken_core::config::Config;
use idtoken_core::decision::{Decision, Env, Request, StepName, UseMode, Verdict, evaluate};
use idtoken_core::files::{FileProblem, FileProblemKind};
use idtoken_core::keystore::DataProblem;
use idtoken_core::reason::Reason;
use idtoken_core::revocations::{Entry, RevocationList, Target, lapse_time};
use idtoken_core::session_record::NoSessions;
use idtoken_testkit::fakes::{AccountTable, Ledger, MemoryKeys, TestAccount};
use idtoken_testkit::keys::{AUDIENCE as AUD, ISSUER as ISS, Key, NOW, mint, with};
use serde_json::{Value, json};

const ACCOUNTS: &[TestAccount] = &[
    TestAccount::listed("alice", 2001, &["alice"]),
    TestAccount::listed("svc", 2003, &["svc", "hpc-ci"]),
];
const LEEWAY: i64 = 60;
const MAX_LIFETIME: i64 = 3600;

fn config() -> Config {
    Config::parse(&format!(
        "[defaults]\nleeway = {LEEWAY}\nmax_lifetime = {MAX_LIFETIME}\n\
         [[issuer]]\nname = \"gitlab\"\nurl = \"{ISS}\"\naudiences = [\"{AUD}\"]\n\n\
         [[rule]]\nname = \"own\"\nusers = [\"alice\"]\n\n\
         [[rule]]\nname = \"deployers\"\nusers = [\"alice\"]\nlogin_as = \"svc\"\n"
    ))
    .unwrap()
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "iat": NOW, "nbf": NOW - 5, "exp": NOW + 300, "jti": "j1",
           "user_login": "alice", "project_path": "hpc/app", "pipeline_id": "4242"})
}

/// An entry made `age` seconds before NOW.
fn entry(id: &str, target: Target, age: i64) -> Entry {
    let created = NOW - age;
    Entry {
        id: id.to_string(),
        target,
        issuer: None,
        reason: "token printed in a job log".to_string(),
        created,
        lapses_at: lapse_time(created, LEEWAY, MAX_LIFETIME),
    }
}

fn list(entries: Vec<Entry>) -> Result<RevocationList, DataProblem> {
    Ok(RevocationList {
        version: 1,
        entries,
    })
}

fn decide_at(
    revocations: Result<RevocationList, DataProblem>,
    claims: &Value,
    account: &str,
    now: i64,
) -> Decision {
    let cfg = config();
    let keys = MemoryKeys::of(&[Key::A]).with_revocations(revocations);
    let env = Env {
        config: &cfg,
        issuer_data: &keys,
        accounts: &AccountTable::new(ACCOUNTS),
        uses: &Ledger::default(),
        sessions: &NoSessions,
    };
    evaluate(
        &env,
        &Request {
            token: &mint(claims),
            account,
            service: "sshd",
            rhost: None,
            now,
            uses: UseMode::Record,
        },
    )
}

fn decide(revocations: Result<RevocationList, DataProblem>, claims: &Value) -> Decision {
    decide_at(revocations, claims, "alice", NOW)
}

fn failed_step(d: &Decision) -> (StepName, String) {
    let s = d.steps.iter().find(|s| !s.ok).expect("a failed step");
    (s.name, s.detail.clone())
}

#[test]
fn a_revoked_pipeline_is_refused_with_the_entry_in_the_trace() {
    let e = entry("r-7", Target::Pipeline("4242".into()), 10);
    let d = decide(list(vec![e.clone()]), &claims());
    assert_eq!(d.verdict, Verdict::Deny(Reason::Revoked), "{:?}", d.steps);
    let (step, detail) = failed_step(&d);
    assert_eq!(step.as_str(), "revocation");
    assert!(detail.contains("r-7"), "{detail}");
    assert!(detail.contains("token printed in a job log"), "{detail}");
    // Refused after the signature: the audit line carries the token's verified facts.
    assert!(d.verified);
    assert_eq!(d.audit_claims.pipeline_id.as_deref(), Some("4242"));
    assert_eq!(d.issuer.as_deref(), Some("gitlab"));
    // Another pipeline's token logs in.
    let other = with(claims(), "pipeline_id", json!("4243"));
    assert_eq!(decide(list(vec![e]), &other).verdict, Verdict::Allow);
}

#[test]
fn each_kind_of_entry_withdraws_its_tokens() {
    for target in [
        Target::Jti("j1".into()),
        Target::Project("hpc/app".into()),
        Target::User("alice".into()),
    ] {
        let d = decide(list(vec![entry("e", target.clone(), 10)]), &claims());
        assert_eq!(d.reason(), Some(Reason::Revoked), "{target}");
    }
    let d = decide(
        list(vec![entry("e", Target::Jti("j2".into()), 10)]),
        &claims(),
    );
    assert_eq!(d.verdict, Verdict::Allow);
}

#[test]
fn an_entry_for_another_issuer_does_not_apply() {
    let mut e = entry("e", Target::User("alice".into()), 10);
    e.issuer = Some("other".into());
    assert_eq!(
        decide(list(vec![e.clone()]), &claims()).verdict,
        Verdict::Allow
    );
    e.issuer = Some("gitlab".into());
    assert_eq!(
        decide(list(vec![e]), &claims()).reason(),
        Some(Reason::Revoked)
    );
}

/// SPEC v3: `revoked` right after `lifetime_too_long`, before `policy_denied`.
#[test]
fn revoked_sits_between_lifetime_and_policy() {
    let revoke_user = || list(vec![entry("e", Target::User("alice".into()), 10)]);
    // A token too long-lived is refused for that first.
    let long = with(claims(), "exp", json!(NOW + MAX_LIFETIME + 1));
    assert_eq!(
        decide(revoke_user(), &long).reason(),
        Some(Reason::LifetimeTooLong)
    );
    // A token no rule admits is refused as revoked: the revocation comes first.
    let nobody = with(claims(), "user_login", json!("mallory"));
    let d = decide(
        list(vec![entry("e", Target::User("mallory".into()), 10)]),
        &nobody,
    );
    assert_eq!(d.reason(), Some(Reason::Revoked));
    assert!(d.rules.is_empty(), "rules were evaluated: {:?}", d.rules);
    assert_eq!(
        Reason::ALL
            .iter()
            .position(|r| *r == Reason::Revoked)
            .unwrap(),
        Reason::ALL
            .iter()
            .position(|r| *r == Reason::LifetimeTooLong)
            .unwrap()
            + 1
    );
    assert_eq!(Reason::Revoked.code(), "revoked");
}

/// An entry withdraws the tokens issued up to its making (plus leeway for the issuer's
/// clock); a job started afterwards gets a token it does not touch.
#[test]
fn a_token_issued_after_the_entry_is_not_withdrawn() {
    let e = entry("e", Target::Pipeline("4242".into()), 100);
    let later = with(claims(), "iat", json!(NOW - 100 + LEEWAY + 1));
    assert_eq!(
        decide(list(vec![e.clone()]), &later).verdict,
        Verdict::Allow
    );
    let within = with(claims(), "iat", json!(NOW - 100 + LEEWAY));
    assert_eq!(
        decide(list(vec![e]), &within).reason(),
        Some(Reason::Revoked)
    );
}

/// A lapsed entry is ignored; it lapses only when every token it matches has expired.
#[test]
fn an_entry_lapses_after_the_last_token_it_can_match() {
    let e = entry("e", Target::Pipeline("4242".into()), 0);
    // The longest-lived token it can match: issued at created + leeway.
    let iat = NOW + LEEWAY;
    let last = with(
        with(claims(), "iat", json!(iat)),
        "exp",
        json!(iat + MAX_LIFETIME),
    );
    let last_valid = iat + MAX_LIFETIME + LEEWAY;
    assert_eq!(e.lapses_at, last_valid);
    let d = decide_at(list(vec![e.clone()]), &last, "alice", last_valid);
    assert_eq!(d.reason(), Some(Reason::Revoked), "{:?}", d.steps);
    // A moment later the token has expired, whatever the list says.
    let d = decide_at(list(vec![e]), &last, "alice", last_valid + 1);
    assert_eq!(d.reason(), Some(Reason::Expired));
}

#[test]
fn the_trace_counts_the_entries_in_force() {
    let old = entry("old", Target::User("alice".into()), 100_000);
    let fresh = entry("fresh", Target::Jti("other".into()), 10);
    let d = decide(list(vec![old, fresh]), &claims());
    assert_eq!(d.verdict, Verdict::Allow);
    let s = d
        .steps
        .iter()
        .find(|s| s.name.as_str() == "revocation")
        .unwrap();
    assert!(s.detail.contains("1 in force"), "{}", s.detail);
}

/// `--rule NAME`: the granting rule is known only after the account checks; an entry
/// naming it refuses the login as `revoked` there, and leaves other rules' grants alone.
#[test]
fn a_rule_entry_withdraws_what_that_rule_grants() {
    let revoke_rule = |r: &str| list(vec![entry("rr", Target::Rule(r.into()), 10)]);
    let d = decide_at(revoke_rule("deployers"), &claims(), "svc", NOW);
    assert_eq!(d.reason(), Some(Reason::Revoked), "{:?}", d.steps);
    let (step, detail) = failed_step(&d);
    assert_eq!(step, StepName::Revocation);
    assert!(detail.contains("\"deployers\""), "{detail}");
    // The rule matched and granted: the trace shows it, the verdict does not name it.
    assert!(d.rules.iter().any(|r| r.rule == "deployers" && r.granted));
    assert_eq!(d.rule, None);
    // The same token as alice is granted by rule "own": untouched.
    let d = decide_at(revoke_rule("deployers"), &claims(), "alice", NOW);
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.rule.as_deref(), Some("own"));
    // An account no rule grants is user_mismatch, as without the entry.
    let d = decide_at(revoke_rule("own"), &claims(), "nosuch", NOW);
    assert_eq!(d.reason(), Some(Reason::UserMismatch));
    // A token issued after the entry is not withdrawn.
    let later = with(claims(), "iat", json!(NOW + LEEWAY));
    let d = decide_at(
        list(vec![entry(
            "rr",
            Target::Rule("deployers".into()),
            LEEWAY + 1,
        )]),
        &later,
        "svc",
        NOW + LEEWAY,
    );
    assert_eq!(d.verdict, Verdict::Allow, "{:?}", d.steps);
}

/// Fail closed: a list that cannot be used makes the decision unavailable, never open.
#[test]
fn an_unusable_list_makes_the_decision_unavailable() {
    let problems = [
        DataProblem::File(FileProblem {
            path: "/var/lib/idtoken/revocations".into(),
            kind: FileProblemKind::UnsafeMode { mode: 0o666 },
        }),
        DataProblem::Invalid {
            path: "/var/lib/idtoken/revocations".into(),
            why: "not a revocation list".into(),
        },
    ];
    for p in problems {
        let d = decide(Err(p.clone()), &claims());
        assert!(
            matches!(&d.verdict, Verdict::Unavailable(why) if *why == p.to_string()),
            "{:?}",
            d.verdict
        );
        assert_eq!(failed_step(&d).0, StepName::Revocation);
    }
    // A token refused earlier never needs the list.
    let expired = with(claims(), "exp", json!(NOW - 1000));
    let d = decide(
        Err(DataProblem::Invalid {
            path: "x".into(),
            why: "y".into(),
        }),
        &expired,
    );
    assert_eq!(d.reason(), Some(Reason::Expired));
}
