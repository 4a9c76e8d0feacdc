//! NSS errors in the decision (SPEC v2): a lookup NSS could not answer makes the decision
//! unavailable and names the lookup, in the trace and the audit line; "no such account"
//! stays `account_invalid`; a membership another lookup proves still grants.

use idtoken_core::accounts::{Account, AccountSource, LookupError};
use idtoken_core::audit;
use idtoken_core::config::Config;
use idtoken_core::decision::{Decision, Env, Request, StepName, UseMode, Verdict, evaluate};
use idtoken_core::reason::Reason;
use idtoken_core::session_record::NoSessions;
use idtoken_testkit::fakes::{AccountTable, Ledger, MemoryKeys, TestAccount};
use idtoken_testkit::keys::{AUDIENCE as AUD, ISSUER as ISS, Key, NOW, sign_raw};
use jsonwebtoken::Algorithm;
use serde_json::json;

/// svc's group entries list `listed`; `nested` it is in only by its group list.
const ACCOUNTS: &[TestAccount] = &[
    TestAccount::nested("alice", 2001, &["alice"]),
    TestAccount {
        name: "svc",
        uid: 2003,
        listed_in: &["svc", "local-ci"],
        nested_in: &["ldap-nested"],
    },
];

/// NSS whose directory part cannot be reached: lookups of the names in `down` fail with
/// sssd's ECONNREFUSED text, the rest are answered by the table.
struct Down {
    table: AccountTable,
    down: &'static [&'static str],
    group_list_down: bool,
}

fn refused(call: &str, key: &str) -> LookupError {
    LookupError::new(format!(
        "{call}(\"{key}\") failed: Connection refused (os error 111)"
    ))
}

impl AccountSource for Down {
    fn account(&self, name: &str) -> Result<Option<Account>, LookupError> {
        if self.down.contains(&name) {
            return Err(refused("getpwnam_r", name));
        }
        self.table.account(name)
    }
    fn listed_in(&self, account: &Account, group: &str) -> Result<bool, LookupError> {
        if self.down.contains(&group) {
            return Err(refused("getgrnam_r", group));
        }
        self.table.listed_in(account, group)
    }
    fn group_names(&self, account: &Account) -> Result<Vec<String>, LookupError> {
        if self.group_list_down {
            return Err(refused("getgrouplist", &account.name));
        }
        self.table.group_names(account)
    }
}

fn down(names: &'static [&'static str], group_list_down: bool) -> Down {
    Down {
        table: AccountTable::new(ACCOUNTS),
        down: names,
        group_list_down,
    }
}

/// alice's token asking for `account`; rule "own" grants alice, rule "svc" grants svc to
/// members of `local_groups`.
fn decide(accounts: &Down, account: &str, local_groups: &str) -> Decision {
    let cfg = Config::parse(&format!(
        "[[issuer]]\nname = \"gitlab\"\nurl = \"{ISS}\"\naudiences = [\"{AUD}\"]\n\n\
         [[rule]]\nname = \"own\"\nusers = [\"alice\", \"ghost\"]\n\n\
         [[rule]]\nname = \"svc\"\nusers = [\"alice\"]\nlogin_as = \"svc\"\nlocal_groups = {local_groups}\n"
    ))
    .unwrap();
    let claims = json!({"iss": ISS, "aud": AUD, "iat": NOW, "exp": NOW + 300, "user_login":
                        if account == "svc" { "alice" } else { account }});
    let token = sign_raw(
        &json!({"alg": "RS256", "kid": "test-a"}),
        &claims,
        Key::A,
        Algorithm::RS256,
    );
    let keys = MemoryKeys::of(&[Key::A]);
    let env = Env {
        config: &cfg,
        issuer_data: &keys,
        accounts,
        uses: &Ledger::default(),
        sessions: &NoSessions,
    };
    evaluate(
        &env,
        &Request {
            token: &token,
            account,
            service: "sshd",
            rhost: Some("127.0.0.1"),
            now: NOW,
            uses: UseMode::ReadOnly,
        },
    )
}

fn last_step(d: &Decision) -> (StepName, bool, &str) {
    let s = d.steps.last().unwrap();
    (s.name, s.ok, s.detail.as_str())
}

#[test]
fn account_lookup_error_is_unavailable_and_named() {
    let d = decide(&down(&["alice"], false), "alice", r#"["svc"]"#);
    let problem =
        "NSS lookup failed: getpwnam_r(\"alice\") failed: Connection refused (os error 111)";
    assert_eq!(d.verdict, Verdict::Unavailable(problem.to_string()));
    assert_eq!(last_step(&d), (StepName::Account, false, problem));
    let line = audit::line(&d, Some("127.0.0.1"));
    assert!(
        line.starts_with("decision=deny reason=unavailable service=sshd account=alice"),
        "{line}"
    );
    // The audit line quotes the problem, its own quotes escaped.
    let quoted = problem.replace('"', "\\\"");
    assert!(line.ends_with(&format!(" problem=\"{quoted}\"")), "{line}");
}

#[test]
fn no_such_account_stays_account_invalid() {
    let d = decide(&down(&[], false), "ghost", r#"["svc"]"#);
    assert_eq!(d.reason(), Some(Reason::AccountInvalid));
    assert_eq!(
        last_step(&d),
        (StepName::Account, false, "no account \"ghost\" in NSS")
    );
}

#[test]
fn group_entry_error_without_other_proof_is_unavailable() {
    let d = decide(&down(&["ldap-ci"], false), "svc", r#"["ldap-ci"]"#);
    let problem =
        "NSS lookup failed: getgrnam_r(\"ldap-ci\") failed: Connection refused (os error 111)";
    assert_eq!(d.verdict, Verdict::Unavailable(problem.to_string()));
    assert_eq!(last_step(&d), (StepName::Grant, false, problem));
}

#[test]
fn group_entry_error_does_not_hide_a_membership_another_lookup_shows() {
    // Another group's entry lists svc.
    let d = decide(
        &down(&["ldap-ci"], false),
        "svc",
        r#"["ldap-ci", "local-ci"]"#,
    );
    assert_eq!(d.verdict, Verdict::Allow, "{:?}", d.steps);
    // The group list shows it.
    let d = decide(
        &down(&["ldap-ci"], false),
        "svc",
        r#"["ldap-ci", "ldap-nested"]"#,
    );
    assert_eq!(d.verdict, Verdict::Allow, "{:?}", d.steps);
    assert_eq!(
        last_step(&d).2,
        "rule \"svc\" grants \"svc\" (local_groups: \"svc\" is in group \"ldap-nested\" (its group list))"
    );
}

#[test]
fn group_list_error_is_unavailable() {
    let d = decide(&down(&[], true), "svc", r#"["ldap-*"]"#);
    let problem =
        "NSS lookup failed: getgrouplist(\"svc\") failed: Connection refused (os error 111)";
    assert_eq!(d.verdict, Verdict::Unavailable(problem.to_string()));
    assert_eq!(last_step(&d), (StepName::Grant, false, problem));
    // Not a member, NSS answering: still user_mismatch, as before.
    let d = decide(&down(&[], false), "svc", r#"["other-*"]"#);
    assert_eq!(d.reason(), Some(Reason::UserMismatch));
}
