//! The decision order of the SPEC through `decision::evaluate`, with the outside world
//! faked: keys in memory, a table of accounts, a use ledger in memory. One test per reason
//! code, in order, plus the trace and the read-only use mode.

use idtoken_core::accounts::{Account, LookupError};
use idtoken_core::config::Config;
use idtoken_core::decision::{Decision, Env, Request, UseMode, Verdict, evaluate};
use idtoken_core::keystore::DataProblem;
use idtoken_core::reason::Reason;
use idtoken_core::session_record::NoSessions;
use idtoken_testkit::fakes::{AccountTable, Ledger, MemoryKeys, Recording, TestAccount};
use idtoken_testkit::keys::{AUDIENCE as AUD, ISSUER as ISS, Key, NOW, b64, sign_raw, with};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

/// No group entry lists anyone: every membership here is one NSS knows only from the
/// account's side (the group list), the path `local_groups` falls back to.
const ACCOUNTS: &[TestAccount] = &[
    TestAccount::nested("alice", 2001, &["alice"]),
    TestAccount::nested("svc", 2003, &["svc", "hpc-ci"]),
    TestAccount::nested("root", 0, &["root"]),
    TestAccount::nested("daemon", 1, &["daemon"]),
];

fn keys() -> MemoryKeys {
    MemoryKeys::of(&[Key::A])
}

fn config(defaults: &str) -> Config {
    Config::parse(&format!(
        "[defaults]\n{defaults}\n[[issuer]]\nname = \"gitlab\"\nurl = \"{ISS}\"\naudiences = [\"{AUD}\"]\n\n\
         [[rule]]\nname = \"own\"\nusers = [\"alice\", \"root\", \"daemon\", \"ghost\"]\n[rule.claims]\nref_protected = \"true\"\n\n\
         [[rule]]\nname = \"svc\"\nusers = [\"alice\"]\nlogin_as = \"svc\"\nlocal_groups = [\"hpc-ci\"]\n"
    ))
    .unwrap()
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "iat": NOW, "nbf": NOW - 5, "exp": NOW + 300, "jti": "j1",
           "user_login": "alice", "ref_protected": "true", "project_path": "hpc/app"})
}

fn sign(header: &Value, claims: &Value) -> String {
    sign_raw(header, claims, Key::A, Algorithm::RS256)
}

fn token(claims: &Value) -> String {
    sign(&json!({"alg": "RS256", "kid": "test-a"}), claims)
}

fn decide_with(
    cfg: &Config,
    keys: &MemoryKeys,
    ledger: &Ledger,
    token: &str,
    account: &str,
    mode: UseMode,
) -> Decision {
    let env = Env {
        config: cfg,
        issuer_data: keys,
        accounts: &AccountTable::new(ACCOUNTS),
        uses: ledger,
        sessions: &NoSessions,
    };
    evaluate(
        &env,
        &Request {
            token,
            account,
            service: "sshd",
            rhost: None,
            now: NOW,
            uses: mode,
        },
    )
}

fn decide(token: &str, account: &str) -> Decision {
    decide_with(
        &config(""),
        &keys(),
        &Ledger::default(),
        token,
        account,
        UseMode::Record,
    )
}

fn reason(token: &str, account: &str) -> Option<Reason> {
    decide(token, account).reason()
}

#[test]
fn allow_names_rule_issuer_user_and_facts() {
    let d = decide(&token(&claims()), "alice");
    assert_eq!(d.verdict, Verdict::Allow, "{:?}", d.steps);
    assert_eq!(d.rule.as_deref(), Some("own"));
    assert_eq!(d.issuer.as_deref(), Some("gitlab"));
    assert_eq!(d.user.as_deref(), Some("alice"));
    assert_eq!(d.audit_claims.project_path.as_deref(), Some("hpc/app"));
    assert!(d.verified);
    assert!(d.steps.iter().all(|s| s.ok));
}

#[test]
fn reason_1_malformed() {
    assert_eq!(reason("not a token", "alice"), Some(Reason::Malformed));
    assert_eq!(
        reason(&format!("{}.x", token(&claims())), "alice"),
        Some(Reason::Malformed)
    );
}

#[test]
fn reason_2_unknown_issuer() {
    assert_eq!(
        reason(
            &token(&with(claims(), "iss", json!("https://other"))),
            "alice"
        ),
        Some(Reason::UnknownIssuer)
    );
}

#[test]
fn reason_3_alg_not_allowed() {
    let t = sign(&json!({"alg": "RS512", "kid": "test-a"}), &claims());
    assert_eq!(reason(&t, "alice"), Some(Reason::AlgNotAllowed));
}

#[test]
fn reason_4_unknown_key() {
    let t = sign(&json!({"alg": "RS256", "kid": "test-b"}), &claims());
    assert_eq!(reason(&t, "alice"), Some(Reason::UnknownKey));
}

#[test]
fn reason_5_bad_signature() {
    let good = token(&claims());
    let mut parts: Vec<&str> = good.split('.').collect();
    let other = b64(with(claims(), "user_login", json!("root"))
        .to_string()
        .as_bytes());
    parts[1] = &other;
    let d = decide(&parts.join("."), "root");
    assert_eq!(d.reason(), Some(Reason::BadSignature));
    assert!(!d.verified);
}

#[test]
fn reason_6_missing_claim() {
    for (k, v) in [
        ("exp", Value::Null),
        ("iat", json!("1")),
        ("user_login", Value::Null),
        ("nbf", json!("soon")),
    ] {
        assert_eq!(
            reason(&token(&with(claims(), k, v.clone())), "alice"),
            Some(Reason::MissingClaim),
            "{k} = {v}"
        );
    }
    // With max_uses, a token without jti cannot be counted.
    let d = decide_with(
        &config("max_uses = 1"),
        &keys(),
        &Ledger::default(),
        &token(&with(claims(), "jti", Value::Null)),
        "alice",
        UseMode::Record,
    );
    assert_eq!(d.reason(), Some(Reason::MissingClaim));
}

#[test]
fn reason_7_expired_with_leeway() {
    assert_eq!(
        reason(&token(&with(claims(), "exp", json!(NOW - 61))), "alice"),
        Some(Reason::Expired)
    );
    assert_eq!(
        reason(&token(&with(claims(), "exp", json!(NOW - 60))), "alice"),
        None
    );
}

#[test]
fn reason_8_not_yet_valid() {
    assert_eq!(
        reason(&token(&with(claims(), "nbf", json!(NOW + 61))), "alice"),
        Some(Reason::NotYetValid)
    );
    let iat_future = with(with(claims(), "iat", json!(NOW + 61)), "nbf", Value::Null);
    assert_eq!(
        reason(&token(&iat_future), "alice"),
        Some(Reason::NotYetValid)
    );
    assert_eq!(
        reason(&token(&with(claims(), "nbf", json!(NOW + 60))), "alice"),
        None
    );
}

#[test]
fn reason_9_wrong_audience() {
    assert_eq!(
        reason(&token(&with(claims(), "aud", json!(["a", "b"]))), "alice"),
        Some(Reason::WrongAudience)
    );
    assert_eq!(
        reason(&token(&with(claims(), "aud", json!(["a", AUD]))), "alice"),
        None
    );
}

#[test]
fn reason_10_lifetime_too_long() {
    assert_eq!(
        reason(&token(&with(claims(), "exp", json!(NOW + 86_401))), "alice"),
        Some(Reason::LifetimeTooLong)
    );
}

#[test]
fn reason_11_policy_denied_with_trace() {
    let d = decide(&token(&with(claims(), "user_login", json!("bob"))), "bob");
    assert_eq!(d.reason(), Some(Reason::PolicyDenied));
    assert_eq!(d.rules.len(), 2);
    assert!(
        d.rules
            .iter()
            .all(|r| !r.matched && r.failed.as_deref().is_some_and(|f| f.starts_with("users:")))
    );
}

#[test]
fn reason_12_user_mismatch_including_local_groups() {
    assert_eq!(
        reason(&token(&claims()), "daemon"),
        Some(Reason::UserMismatch)
    );
    // svc is granted by rule "svc" (svc is in hpc-ci): allowed.
    assert_eq!(reason(&token(&claims()), "svc"), None);
}

/// The accounts, with `svc`'s group entries listing some of its memberships (`listed`, what
/// getgrnam shows) while NSS knows others only from the account's side (`nested`: sssd's
/// nested groups, member lists left out of entries); what is asked of them is recorded.
fn groups(
    listed: &'static [&'static str],
    nested: &'static [&'static str],
) -> Recording<AccountTable> {
    Recording::new(AccountTable::new(ACCOUNTS).with(TestAccount {
        name: "svc",
        uid: 2003,
        listed_in: listed,
        nested_in: nested,
    }))
}

/// alice's token asking for `svc`, which rule "svc" grants with `local_groups`.
fn decide_svc(local_groups: &str, accounts: &Recording<AccountTable>) -> Decision {
    let cfg = Config::parse(&format!(
        "[[issuer]]\nname = \"gitlab\"\nurl = \"{ISS}\"\naudiences = [\"{AUD}\"]\n\n\
         [[rule]]\nname = \"svc\"\nusers = [\"alice\"]\nlogin_as = \"svc\"\nlocal_groups = {local_groups}\n"
    ))
    .unwrap();
    let keys = keys();
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
            token: &token(&claims()),
            account: "svc",
            service: "sshd",
            rhost: None,
            now: NOW,
            uses: UseMode::ReadOnly,
        },
    )
}

#[test]
fn local_groups_listed_in_the_group_entry_needs_no_group_list() {
    let g = groups(&["hpc-ci"], &[]);
    let d = decide_svc(r#"["other", "hpc-ci"]"#, &g);
    assert_eq!(d.verdict, Verdict::Allow, "{:?}", d.rules);
    assert_eq!(g.lists(), 0, "getgrouplist was not needed");
    assert_eq!(g.asked(), ["other", "hpc-ci"]);
}

#[test]
fn local_groups_falls_back_to_the_group_list() {
    // Member only through the account's side (a nested group): found by the list.
    let g = groups(&[], &["hpc-ci"]);
    assert_eq!(decide_svc(r#"["hpc-ci"]"#, &g).verdict, Verdict::Allow);
    assert_eq!(g.lists(), 1);
    // A member of neither: refused, after one list.
    let g = groups(&["svc"], &["other"]);
    let d = decide_svc(r#"["hpc-ci"]"#, &g);
    assert_eq!(d.reason(), Some(Reason::UserMismatch));
    assert_eq!(g.lists(), 1);
    assert!(
        d.rules[0]
            .failed
            .as_deref()
            .is_some_and(|f| f.starts_with("local_groups:")),
        "{:?}",
        d.rules
    );
}

#[test]
fn local_groups_globs_are_matched_against_the_group_list() {
    // A glob is never looked up as a group name.
    let g = groups(&["hpc-ci"], &[]);
    assert_eq!(decide_svc(r#"["hpc-*"]"#, &g).verdict, Verdict::Allow);
    assert!(g.asked().is_empty(), "{:?}", g.asked());
    assert_eq!(g.lists(), 1);
    let g = groups(&["hpc-ci"], &[]);
    assert_eq!(
        decide_svc(r#"["gpu-*"]"#, &g).reason(),
        Some(Reason::UserMismatch)
    );
}

#[test]
fn reason_13_account_invalid() {
    for user in ["root", "daemon", "ghost"] {
        let t = token(&with(claims(), "user_login", json!(user)));
        assert_eq!(reason(&t, user), Some(Reason::AccountInvalid), "{user}");
    }
}

#[test]
fn reason_14_replayed_and_check_only_reads() {
    let cfg = config("max_uses = 2");
    let keys = keys();
    let ledger = Ledger::default();
    let t = token(&claims());
    for _ in 0..3 {
        assert_eq!(
            decide_with(&cfg, &keys, &ledger, &t, "alice", UseMode::ReadOnly).verdict,
            Verdict::Allow
        );
    }
    assert_eq!(
        decide_with(&cfg, &keys, &ledger, &t, "alice", UseMode::Record).verdict,
        Verdict::Allow
    );
    assert_eq!(
        decide_with(&cfg, &keys, &ledger, &t, "alice", UseMode::Record).verdict,
        Verdict::Allow
    );
    let replayed = decide_with(&cfg, &keys, &ledger, &t, "alice", UseMode::Record);
    assert_eq!(replayed.reason(), Some(Reason::Replayed));
    assert_eq!(replayed.rule, None, "a denial names no granting rule");
    assert!(
        replayed.rules.iter().any(|r| r.granted),
        "the trace still shows the rule"
    );
    assert_eq!(
        decide_with(&cfg, &keys, &ledger, &t, "alice", UseMode::ReadOnly).reason(),
        Some(Reason::Replayed)
    );
}

#[test]
fn an_unusable_key_cache_is_unavailable_not_a_denial() {
    let problem = DataProblem::Invalid {
        path: "/x".into(),
        why: "broken".into(),
    };
    let d = decide_with(
        &config(""),
        &MemoryKeys::failing(problem),
        &Ledger::default(),
        &token(&claims()),
        "alice",
        UseMode::Record,
    );
    assert!(
        matches!(d.verdict, Verdict::Unavailable(ref m) if m.contains("/x")),
        "{:?}",
        d.verdict
    );
}

#[test]
fn the_first_failing_step_decides() {
    // Expired *and* wrong audience *and* another user: expiry comes first.
    let c = with(
        with(with(claims(), "exp", json!(NOW - 1000)), "aud", json!("x")),
        "user_login",
        json!("bob"),
    );
    assert_eq!(reason(&token(&c), "alice"), Some(Reason::Expired));
}

/// Security review 2, finding 8: `nobody` (uid 65534) passed min_uid, and `ssh -N` forwards
/// ports even with a nologin shell. It is in the default deny_users, and whatever
/// deny_users says, uid 65534 and the "no uid" values (uid_t)-1 and -2 are never granted.
#[test]
fn nobody_and_no_uid_are_never_granted() {
    const ODD: &[TestAccount] = &[
        TestAccount::nested("nobody", 65534, &[]),
        TestAccount::nested("nfsnobody", 65534, &[]),
        TestAccount::nested("minus-two", 4_294_967_294, &[]),
        TestAccount::nested("minus-one", 4_294_967_295, &[]),
        TestAccount::nested("alice", 2001, &[]),
    ];
    let decide_as = |defaults: &str, account: &str| {
        let cfg = Config::parse(&format!(
            "[defaults]\n{defaults}\n[[issuer]]\nname = \"gitlab\"\nurl = \"{ISS}\"\naudiences = [\"{AUD}\"]\n\
             [[rule]]\nname = \"any\"\nlogin_as = \"{account}\"\n"
        ))
        .unwrap();
        let env = Env {
            config: &cfg,
            issuer_data: &keys(),
            accounts: &AccountTable::new(ODD),
            uses: &Ledger::default(),
            sessions: &NoSessions,
        };
        let t = token(&claims());
        let req = Request {
            token: &t,
            account,
            service: "sshd",
            rhost: None,
            now: NOW,
            uses: UseMode::Record,
        };
        evaluate(&env, &req)
    };
    let d = decide_as("", "nobody");
    assert_eq!(d.reason(), Some(Reason::AccountInvalid), "{d:?}");
    assert!(
        d.steps.last().unwrap().detail.contains("deny_users"),
        "{d:?}"
    );
    // A site that replaced deny_users still never grants these uids.
    for account in ["nobody", "nfsnobody", "minus-two", "minus-one"] {
        let d = decide_as("deny_users = [\"root\"]", account);
        assert_eq!(d.reason(), Some(Reason::AccountInvalid), "{account}: {d:?}");
        assert!(
            d.steps.last().unwrap().detail.contains("never granted"),
            "{account}: {d:?}"
        );
    }
    assert!(decide_as("deny_users = [\"root\"]", "alice").allowed());
}

/// NSS that answers names case-insensitively (sssd with `case_sensitive = false`) and gives
/// the account's canonical name back, as such a directory does.
struct CaseInsensitive(AccountTable);

impl idtoken_core::accounts::AccountSource for CaseInsensitive {
    fn account(&self, name: &str) -> Result<Option<Account>, LookupError> {
        self.0.account(&name.to_lowercase())
    }
    fn listed_in(&self, account: &Account, group: &str) -> Result<bool, LookupError> {
        self.0.listed_in(account, group)
    }
    fn group_names(&self, account: &Account) -> Result<Vec<String>, LookupError> {
        self.0.group_names(account)
    }
}

/// Security review 2, finding 9: deny_users compared the name as typed, so `ADMIN` passed
/// `deny_users = ["admin"]` under case-insensitive NSS. The name NSS gives counts too.
#[test]
fn deny_users_compares_the_name_nss_gives() {
    let d = decide_case_insensitive(
        "deny_users = [\"root\", \"admin\"]",
        "login_as = \"admin\"",
        "ADMIN",
    );
    assert_eq!(d.reason(), Some(Reason::AccountInvalid), "{d:?}");
    assert!(
        d.steps
            .last()
            .unwrap()
            .detail
            .contains("is \"admin\" to NSS, which is in deny_users"),
        "{d:?}"
    );
}

const CASE_ACCOUNTS: &[TestAccount] = &[
    TestAccount::nested("admin", 2010, &[]),
    TestAccount::nested("mallory", 2011, &[]),
];

/// Decides a token of GitLab user `user_login` for the typed account under NSS that answers
/// names case-insensitively, with these defaults and a second rule (after `any`, which grants
/// the user claim).
fn decide_case_insensitive(defaults: &str, rule: &str, typed: &str) -> Decision {
    decide_case_insensitive_as("Mallory", defaults, rule, typed)
}

fn decide_case_insensitive_as(
    user_login: &str,
    defaults: &str,
    rules: &str,
    typed: &str,
) -> Decision {
    let cfg = Config::parse(&format!(
        "[defaults]\n{defaults}\n[[issuer]]\nname = \"gitlab\"\nurl = \"{ISS}\"\naudiences = [\"{AUD}\"]\n\
         [[rule]]\nname = \"any\"\n{rules}\n"
    ))
    .unwrap();
    let accounts = CaseInsensitive(AccountTable::new(CASE_ACCOUNTS));
    let env = Env {
        config: &cfg,
        issuer_data: &keys(),
        accounts: &accounts,
        uses: &Ledger::default(),
        sessions: &NoSessions,
    };
    let t = token(&with(claims(), "user_login", json!(user_login)));
    evaluate(
        &env,
        &Request {
            token: &t,
            account: typed,
            service: "sshd",
            rhost: None,
            now: NOW,
            uses: UseMode::Record,
        },
    )
}

/// Security review 3, finding 2: under case-insensitive NSS, `ssh Mallory@host` with GitLab
/// user `Mallory`'s token got a shell as `mallory` past a deny rule written for `mallory`,
/// and the audit line said `account=Mallory`. The account is NSS's: a deny rule's `users`
/// holds for NSS's name, a grant must name NSS's name, and the decision names it.
#[test]
fn another_spelling_of_an_account_is_that_account() {
    let deny_mallory = "[[rule]]\nname = \"no-mallory\"\ndeny = true\nusers = [\"mallory\"]\n";
    // The deny rule, written for the local account, holds for the token of `Mallory`.
    let d = decide_case_insensitive("", deny_mallory, "Mallory");
    assert_eq!(d.reason(), Some(Reason::PolicyDenied), "{d:?}");
    // ... and the refusal names NSS's account, with the typed name beside it.
    assert_eq!(
        (d.account.as_str(), d.typed.as_deref()),
        ("mallory", Some("Mallory"))
    );
    assert!(
        d.steps.last().unwrap().detail.contains("no-mallory"),
        "{d:?}"
    );
    // Without a deny rule: the rule grants `Mallory` (the user claim), NSS says `mallory`:
    // a grant of the typed spelling does not make a login as NSS's account.
    let d = decide_case_insensitive("", "", "Mallory");
    assert_eq!(d.reason(), Some(Reason::UserMismatch), "{d:?}");
    assert!(
        d.steps
            .last()
            .unwrap()
            .detail
            .contains("\"Mallory\" is \"mallory\" to NSS, and no matching rule grants \"mallory\""),
        "{d:?}"
    );
    // A rule that grants NSS's name lets the other spelling in, and the decision (so the
    // audit line) names NSS's account and the typed name.
    let d = decide_case_insensitive("", "login_as = \"mallory\"", "MALLORY");
    assert!(d.allowed(), "{d:?}");
    assert_eq!(d.account, "mallory");
    assert_eq!(d.typed.as_deref(), Some("MALLORY"));
    let line = idtoken_core::audit::line(&d, None);
    assert!(line.contains(" account=mallory typed=MALLORY "), "{line}");
    // Typed as NSS spells it: no typed= field.
    let d = decide_case_insensitive_as("mallory", "", "", "mallory");
    assert!(d.allowed(), "{d:?}");
    assert_eq!(d.typed, None);
    assert!(!idtoken_core::audit::line(&d, None).contains("typed="));
}

/// Evaluates `token` for alice from `rhost` under a config of these rules (issuer gitlab).
fn decide_rules(rules: &str, token: &str, rhost: Option<&str>, service: &str) -> Decision {
    let cfg = Config::parse(&format!(
        "[[issuer]]\nname = \"gitlab\"\nurl = \"{ISS}\"\naudiences = [\"{AUD}\"]\n{rules}"
    ))
    .unwrap();
    let env = Env {
        config: &cfg,
        issuer_data: &keys(),
        accounts: &AccountTable::new(ACCOUNTS),
        uses: &Ledger::default(),
        sessions: &NoSessions,
    };
    evaluate(
        &env,
        &Request {
            token,
            account: "alice",
            service,
            rhost,
            now: NOW,
            uses: UseMode::Record,
        },
    )
}

/// SPEC v2 deny rules: "everything under hpc/ except hpc/sandbox". A matching deny rule
/// refuses with policy_denied and the trace names it, whatever grants; one that does not
/// match changes nothing; every rule, deny rules included, is traced.
#[test]
fn deny_rules_refuse_before_any_grant() {
    let rules = "[[rule]]\nname = \"hpc\"\n[rule.claims]\nproject_path = \"hpc/*\"\n\
                 [[rule]]\nname = \"no-sandbox\"\ndeny = true\n[rule.claims]\nproject_path = \"hpc/sandbox/*\"\n";
    let sandboxed = token(&with(claims(), "project_path", json!("hpc/sandbox/try")));
    let d = decide_rules(rules, &sandboxed, None, "sshd");
    assert_eq!(d.reason(), Some(Reason::PolicyDenied), "{d:?}");
    let step = d.steps.last().unwrap();
    assert_eq!(step.detail, "deny rule \"no-sandbox\" matches the token");
    assert_eq!(d.rule, None);
    let traced: Vec<(&str, bool, bool)> = d
        .rules
        .iter()
        .map(|t| (t.rule.as_str(), t.deny, t.matched))
        .collect();
    assert_eq!(
        traced,
        vec![("hpc", false, true), ("no-sandbox", true, true)]
    );

    let d = decide_rules(rules, &token(&claims()), None, "sshd");
    assert!(d.allowed(), "{d:?}");
    assert_eq!(d.rule.as_deref(), Some("hpc"));
    let no_sandbox = &d.rules[1];
    assert!(no_sandbox.deny && !no_sandbox.matched);
    assert!(
        no_sandbox
            .failed
            .as_deref()
            .unwrap()
            .starts_with("claims.project_path")
    );

    // A deny rule alone grants nothing: no granting rule, no login.
    let only_deny = "[[rule]]\nname = \"d\"\ndeny = true\nusers = [\"mallory\"]\n";
    let d = decide_rules(only_deny, &token(&claims()), None, "sshd");
    assert_eq!(d.reason(), Some(Reason::PolicyDenied));
    assert_eq!(
        d.steps.last().unwrap().detail,
        "none of the 0 rules matches the token"
    );
    // A deny rule names no services: it holds for every service, su included.
    let d = decide_rules(
        &format!("{rules}[[rule]]\nname = \"su-too\"\nservices = [\"su\"]\n"),
        &sandboxed,
        None,
        "su",
    );
    assert_eq!(d.reason(), Some(Reason::PolicyDenied), "{d:?}");
}

/// SPEC v2 source networks: a rule with `from` holds only when PAM_RHOST is an address
/// inside one of its networks; no rhost or a host name never matches; a deny rule with
/// `from` refuses what comes from there.
#[test]
fn from_networks_hold_for_addresses_inside_only() {
    let t = token(&claims());
    let rules = "[[rule]]\nname = \"runners\"\nfrom = [\"10.20.0.0/16\", \"2001:db8::/48\"]\n";
    for (rhost, allowed) in [
        (Some("10.20.3.4"), true),
        (Some("::ffff:10.20.3.4"), true),
        (Some("2001:db8::42"), true),
        (Some("10.21.0.1"), false),
        (Some("runner.example.org"), false),
        (None, false),
    ] {
        let d = decide_rules(rules, &t, rhost, "sshd");
        assert_eq!(d.allowed(), allowed, "{rhost:?}: {d:?}");
        if !allowed {
            assert_eq!(d.reason(), Some(Reason::PolicyDenied));
            assert!(
                d.rules[0].failed.as_deref().unwrap().starts_with("from:"),
                "{d:?}"
            );
        }
    }
    // Refuse everything that does not come from the runners' network, beside any grant.
    let fence = "[[rule]]\nname = \"own\"\n\
                 [[rule]]\nname = \"elsewhere\"\ndeny = true\nfrom = [\"0.0.0.0/0\", \"::/0\"]\n\
                 [[rule]]\nname = \"not-runners\"\ndeny = true\nfrom = [\"192.0.2.0/24\"]\n";
    let d = decide_rules(fence, &t, Some("192.0.2.9"), "sshd");
    assert_eq!(d.reason(), Some(Reason::PolicyDenied));
    assert!(
        d.steps.last().unwrap().detail.contains("\"elsewhere\""),
        "{d:?}"
    );
    // su has no rhost: a deny rule's `from` cannot be evaluated, so it holds (SPEC v3: a
    // deny fails closed); a site that fences ssh only says so with the deny rule's services.
    let d = decide_rules(fence, &t, None, "su");
    assert_eq!(d.reason(), Some(Reason::PolicyDenied), "{d:?}");
    assert!(
        d.steps.last().unwrap().detail.contains("no remote host"),
        "{d:?}"
    );
    let ssh_fence = fence.replace("deny = true\n", "deny = true\nservices = [\"sshd\"]\n");
    assert!(decide_rules(&ssh_fence, &t, None, "su").allowed());
}

/// Security review 3, finding 1: GitLab omits `groups_direct` unless the instance enables
/// it (and above 200 groups), and `environment` exists only when a job declares one. A deny
/// rule on an absent claim used to be skipped, so the same user got in without the claim. In
/// a deny rule a condition on an absent claim holds, unless the rule says
/// `if_absent = "skip"`.
#[test]
fn a_deny_rule_on_an_absent_claim_holds_unless_it_says_skip() {
    let rules = |extra: &str| {
        format!(
            "[[rule]]\nname = \"own\"\n\
             [[rule]]\nname = \"untrusted\"\ndeny = true\ngroups = [\"hpc/untrusted\"]\n{extra}\n\
             [[rule]]\nname = \"no-prod\"\ndeny = true\nif_absent = \"skip\"\n[rule.claims]\nenvironment = \"production\"\n"
        )
    };
    let rules = rules("");
    let member = token(&with(claims(), "groups_direct", json!(["hpc/untrusted"])));
    let other = token(&with(claims(), "groups_direct", json!(["hpc/ok"])));
    let absent = token(&claims());
    assert!(claims().get("groups_direct").is_none());
    let d = decide_rules(&rules, &member, None, "sshd");
    assert_eq!(d.reason(), Some(Reason::PolicyDenied), "{d:?}");
    assert!(decide_rules(&rules, &other, None, "sshd").allowed());
    // The claim is absent: the deny rule cannot tell, so it holds, and the trace says why.
    let d = decide_rules(&rules, &absent, None, "sshd");
    assert_eq!(d.reason(), Some(Reason::PolicyDenied), "{d:?}");
    let detail = &d.steps.last().unwrap().detail;
    assert!(
        detail.contains("\"untrusted\"") && detail.contains("no groups_direct claim"),
        "{detail}"
    );
    assert_eq!(d.rules[1].unknown.len(), 1, "{d:?}");
    // A claim of the wrong shape cannot be read either: it holds too.
    let odd = token(&with(claims(), "groups_direct", json!("hpc/untrusted")));
    assert_eq!(
        decide_rules(&rules, &odd, None, "sshd").reason(),
        Some(Reason::PolicyDenied)
    );
    // if_absent = "skip": absence is information (no environment: not a deployment).
    let groups = with(claims(), "groups_direct", json!(["hpc/ok"]));
    let d = decide_rules(&rules, &token(&groups), None, "sshd");
    assert!(d.allowed(), "{d:?}");
    assert!(
        d.rules[2]
            .failed
            .as_deref()
            .unwrap()
            .contains("if_absent = \"skip\""),
        "{d:?}"
    );
    let prod = token(&with(groups, "environment", json!("production")));
    assert_eq!(
        decide_rules(&rules, &prod, None, "sshd").reason(),
        Some(Reason::PolicyDenied)
    );
}

/// Security review 3, finding 3: a deny rule's `from` failed open when PAM_RHOST was not a
/// bare address: sshd with `UseDNS yes` sets a host name, su sets none, and a link-local
/// client has a zone. In a deny rule those hold; a granting rule's `from` stays strict.
#[test]
fn a_deny_rules_from_holds_when_the_rhost_is_not_an_address() {
    let t = token(&claims());
    let rules = "[[rule]]\nname = \"own\"\n\
                 [[rule]]\nname = \"lab\"\ndeny = true\nfrom = [\"10.0.0.0/8\", \"fe80::/10\"]\n";
    for (rhost, allowed) in [
        (Some("192.0.2.1"), true),
        (Some("10.1.2.3"), false),
        (Some("localhost"), false),
        (Some("runner.example.org"), false),
        (None, false),
        (Some("fe80::1%eth0"), false),
        (Some("2001:db8::1%eth0"), true),
    ] {
        let d = decide_rules(rules, &t, rhost, "sshd");
        assert_eq!(d.allowed(), allowed, "{rhost:?}: {d:?}");
    }
    // A granting rule's `from` holds only for an address inside (zone removed).
    let grant = "[[rule]]\nname = \"lab-only\"\nfrom = [\"fe80::/10\"]\n";
    assert!(decide_rules(grant, &t, Some("fe80::1%eth0"), "sshd").allowed());
    for rhost in [Some("localhost"), None] {
        let d = decide_rules(grant, &t, rhost, "sshd");
        assert_eq!(d.reason(), Some(Reason::PolicyDenied), "{rhost:?}");
    }
}

/// Security review 3, finding 7: numbers compare by value, so `runner_id = 42` matches a
/// token whose runner_id is written 42.0.
#[test]
fn numeric_claims_compare_by_value() {
    for (claim, allowed) in [(json!(42), true), (json!(42.0), true), (json!(42.5), false)] {
        let t = token(&with(claims(), "runner_id", claim.clone()));
        let d = decide_rules(
            "[[rule]]\nname = \"r\"\n[rule.claims]\nrunner_id = 42\n",
            &t,
            None,
            "sshd",
        );
        assert_eq!(d.allowed(), allowed, "{claim}: {d:?}");
    }
}

/// SPEC v2 JSON Pointer claim names, on a Keycloak-shaped token: nested roles, a client's
/// roles, arrays matched on any element; a dotted name is one top-level claim.
#[test]
fn pointer_claim_names_reach_into_nested_claims() {
    let kc = with(
        with(
            claims(),
            "realm_access",
            json!({"roles": ["offline_access", "hpc-ci"]}),
        ),
        "resource_access",
        json!({"login-node": {"roles": ["deploy"]}}),
    );
    let kc = with(kc, "https://example.org/groups", json!(["hpc"]));
    let t = token(&kc);
    for (rule, allowed) in [
        ("\"/realm_access/roles\" = \"hpc-ci\"", true),
        ("\"/realm_access/roles\" = \"admin\"", false),
        (
            "\"/resource_access/login-node/roles\" = [\"deploy\", \"ops\"]",
            true,
        ),
        ("\"/resource_access/other/roles\" = \"deploy\"", false),
        ("\"https://example.org/groups\" = \"hpc\"", true),
        ("\"realm_access.roles\" = \"hpc-ci\"", false),
    ] {
        let d = decide_rules(
            &format!("[[rule]]\nname = \"r\"\n[rule.claims]\n{rule}\n"),
            &t,
            None,
            "sshd",
        );
        assert_eq!(d.allowed(), allowed, "{rule}: {d:?}");
    }
    // The user claim may be a pointer too.
    let cfg_rules = "[[rule]]\nname = \"r\"\n";
    let cfg = Config::parse(&format!(
        "[[issuer]]\nname = \"gitlab\"\nurl = \"{ISS}\"\naudiences = [\"{AUD}\"]\nuser_claim = \"/profile/login\"\n{cfg_rules}"
    ))
    .unwrap();
    let nested = token(&with(claims(), "profile", json!({"login": "alice"})));
    let env = Env {
        config: &cfg,
        issuer_data: &keys(),
        accounts: &AccountTable::new(ACCOUNTS),
        uses: &Ledger::default(),
        sessions: &NoSessions,
    };
    let req = Request {
        token: &nested,
        account: "alice",
        service: "sshd",
        rhost: None,
        now: NOW,
        uses: UseMode::Record,
    };
    let d = evaluate(&env, &req);
    assert!(d.allowed(), "{d:?}");
    assert_eq!(d.user.as_deref(), Some("alice"));
}
