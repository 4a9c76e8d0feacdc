//! A real directory: OpenLDAP slapd read through sssd as the NSS (`files sss`) of the
//! test's mount namespaces. LDAP-only accounts log in through a real sshd with the stock
//! ssh client; `local_groups` grants through an LDAP group and a nested one and refuses a
//! non-member; `min_uid` and `deny_users` hold; `idtoken check` says the same. Then the
//! directory outages (SPEC v2), through the real libpam and module, with their audit lines:
//! (a) sssd down, no memory cache: unavailable, the lookup named; (b) sssd up, LDAP down,
//! nothing cached: "no such user" (sssd answers exactly that, indistinguishable from an
//! account that does not exist); (c) LDAP down, cache warm: logs in from sssd's own cache
//! (libnss_sss's memory cache dropped first). And doctor names a lookup NSS could not answer.

use std::process::Output;
use std::time::Duration;

use idtoken_e2e::directory::{self, LdapGroup, LdapUser, Site};
use idtoken_e2e::keys::{self, mint, now};
use idtoken_e2e::pam::{PAM_AUTH_ERR, PAM_AUTHINFO_UNAVAIL, PAM_SUCCESS, PamHarness};
use idtoken_e2e::require;
use idtoken_e2e::sandbox::last_json_line;
use idtoken_e2e::sshd::Sshd;
use serde_json::Value;

const USERS: &[LdapUser] = &[
    LdapUser {
        name: "ldap-alice",
        uid: 7101,
        member_of: &["ldap-ci"],
    },
    LdapUser {
        name: "ldap-bob",
        uid: 7102,
        member_of: &["ldap-team"],
    },
    LdapUser {
        name: "ldap-carol",
        uid: 7103,
        member_of: &["ldap-other"],
    },
    LdapUser {
        name: "ldap-dave",
        uid: 7104,
        member_of: &[],
    },
    LdapUser {
        name: "ldap-low",
        uid: 500,
        member_of: &[],
    },
    LdapUser {
        name: "ldap-denied",
        uid: 7105,
        member_of: &[],
    },
    LdapUser {
        name: "ldap-erin",
        uid: 7106,
        member_of: &["ldap-team"],
    },
    LdapUser {
        name: "ldap-mallory",
        uid: 7107,
        member_of: &[],
    },
];

/// ldap-team is a member of ldap-all: ldap-bob is in ldap-all only through the nesting.
const GROUPS: &[LdapGroup] = &[
    LdapGroup {
        name: "ldap-ci",
        gid: 7201,
        groups: &[],
    },
    LdapGroup {
        name: "ldap-team",
        gid: 7202,
        groups: &[],
    },
    LdapGroup {
        name: "ldap-all",
        gid: 7203,
        groups: &["ldap-team"],
    },
    LdapGroup {
        name: "ldap-other",
        gid: 7204,
        groups: &[],
    },
];

const DEFAULTS: &str = "min_uid = 1000\ndeny_users = [\"root\", \"ldap-denied\"]";
const RULES: &str = "[[rule]]\nname = \"ldap-ci\"\nissuer = \"gitlab\"\nusers = [\"ldap-alice\", \"ldap-carol\"]\nlocal_groups = [\"ldap-ci\"]\n\n\
    [[rule]]\nname = \"ldap-all\"\nissuer = \"gitlab\"\nusers = [\"ldap-bob\", \"ldap-carol\"]\nlocal_groups = [\"ldap-all\"]\n\n\
    [[rule]]\nname = \"team-glob\"\nissuer = \"gitlab\"\nusers = [\"ldap-erin\"]\nlocal_groups = [\"ldap-a*\"]\n\n\
    [[rule]]\nname = \"any\"\nissuer = \"gitlab\"\nusers = [\"ldap-dave\", \"ldap-low\", \"ldap-denied\", \"alice\"]\n";

const STACK: &str = "auth [success=done ignore=ignore default=die] MODULE config=CONFIG";
const REMOTE: &str = "echo LOGIN-OK; id -un; id -Gn";

fn site(tag: &str) -> Site {
    let site = Site::start(tag, USERS, GROUPS);
    site.pam.sandbox.key_cache(&[keys::Key::A]);
    site.pam.sandbox.config(DEFAULTS, RULES);
    site.pam.module_only("test", "");
    site
}

fn available() -> Result<(), String> {
    directory::available()
}

fn token(user: &str, tag: &str) -> String {
    mint(&keys::live_claims(
        user,
        &format!("dir-{tag}-{}-{}", now(), std::process::id()),
    ))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The audit line of the `n`-th decision for `account` (waits for it).
fn audit(pam: &PamHarness, account: &str, n: usize) -> String {
    let needle = format!(" account={account} ");
    let mut found = Vec::new();
    for _ in 0..50 {
        found = pam
            .syslog
            .audit_lines()
            .into_iter()
            .filter(|l| l.contains(&needle))
            .collect();
        if found.len() >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(found.len() >= n, "audit lines for {account}: {found:?}");
    found.get(n - 1).cloned().unwrap_or_default()
}

/// `idtoken check --json` in the namespace of `pam`: exit code and JSON.
fn check(pam: &PamHarness, user: &str, token: &str) -> (i32, Value) {
    let file = pam.sandbox.token_file(&format!("token-{user}"), token);
    let config = pam.sandbox.path("idtoken.toml");
    let out = directory::idtoken_in(
        pam,
        &[
            "check",
            "--json",
            "--service",
            "sshd",
            "--config",
            &config.display().to_string(),
            "--user",
            user,
            "--token-file",
            &file.display().to_string(),
        ],
    );
    (out.status.code().unwrap_or(-1), last_json_line(&out.stdout))
}

fn field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("null")
}

#[test]
fn ldap_accounts_and_groups_through_sshd_and_check() {
    require!(
        available().is_ok(),
        "{}",
        available().err().unwrap_or_default()
    );
    let site = site("dir-ssh");
    // NSS in the namespace is sssd reading slapd: the account and the nesting are seen.
    let o = site.getent("passwd", "ldap-bob");
    assert!(
        text(&o).starts_with("ldap-bob:*:7102:7100:"),
        "{}\nsssd:\n{}",
        text(&o),
        site.sssd.logs()
    );
    let Site { sssd, slapd, pam } = site;
    let sshd = Sshd::start(pam, STACK);

    // (account, logs in, reason or granting rule, check's exit code)
    let cases = [
        // No local_groups: an LDAP-only account logs in with its token.
        ("ldap-dave", true, "any", 0),
        // local_groups through the LDAP group it is a member of.
        ("ldap-alice", true, "ldap-ci", 0),
        // local_groups through a group nested in the one named (sssd lists ldap-bob in
        // ldap-all's entry: getgrnam answers).
        ("ldap-bob", true, "ldap-all", 0),
        // The same nesting found by a glob, which only the group list (getgrouplist and
        // getgrgid through sssd) can answer.
        ("ldap-erin", true, "team-glob", 0),
        // In neither group: refused.
        ("ldap-carol", false, "user_mismatch", 1),
        // uid 500 < min_uid 1000.
        ("ldap-low", false, "account_invalid", 1),
        ("ldap-denied", false, "account_invalid", 1),
    ];
    for (account, allowed, why, exit) in cases {
        let t = token(account, "ssh");
        let o = sshd.login_with_askpass(account, &t, REMOTE);
        let out = String::from_utf8_lossy(&o.stdout);
        let line = audit(&sshd.pam, account, 1);
        if allowed {
            assert!(
                o.status.success() && out.contains(&format!("LOGIN-OK\n{account}\n")),
                "{account}: {}\n{line}\nsshd log:\n{}",
                text(&o),
                sshd.sshd_log()
            );
            assert!(
                line.contains("decision=allow") && line.contains(&format!(" rule={why} ")),
                "{account}: {line}"
            );
        } else {
            assert!(
                !o.status.success() && !out.contains("LOGIN-OK"),
                "{account}: {}",
                text(&o)
            );
            assert!(
                line.contains(&format!("decision=deny reason={why} ")),
                "{account}: {line}"
            );
        }
        let (code, v) = check(&sshd.pam, account, &t);
        assert_eq!(code, exit, "{account}: {v}");
        if allowed {
            assert_eq!((field(&v, "decision"), field(&v, "rule")), ("allow", why));
        } else {
            assert_eq!((field(&v, "decision"), field(&v, "reason")), ("deny", why));
        }
    }
    drop(sshd);
    drop(sssd);
    drop(slapd);
}

/// Drives the module through libpam for `user` with its token: the PAM code.
fn login(pam: &PamHarness, user: &str, tag: &str) -> (i64, String) {
    let t = token(user, tag);
    let d = pam.drive("test", user, &[Some(&t)], &[]);
    (d.rc, d.rc_name)
}

/// (a) sssd down. With its memory cache still there, libnss_sss answers from it; once
/// that is gone, getpwnam_r returns ECONNREFUSED: the decision is unavailable and the
/// audit line says which lookup failed. Accounts in files still log in.
#[test]
fn outage_a_sssd_down_without_memory_cache_is_unavailable() {
    require!(
        available().is_ok(),
        "{}",
        available().err().unwrap_or_default()
    );
    let mut site = site("dir-a");
    assert_eq!(login(&site.pam, "ldap-alice", "a1").0, PAM_SUCCESS);

    site.sssd.stop();
    let (rc, name) = login(&site.pam, "ldap-alice", "a2");
    assert_eq!(rc, PAM_SUCCESS, "{name}: the memory cache answers");

    site.sssd.drop_memory_cache();
    let (rc, name) = login(&site.pam, "ldap-alice", "a3");
    assert_eq!(rc, PAM_AUTHINFO_UNAVAIL, "{name}");
    let line = audit(&site.pam, "ldap-alice", 3);
    eprintln!("(a) audit line: {line}");
    assert!(
        line.contains("decision=deny reason=unavailable ")
            && line.contains(
                r#"problem="NSS lookup failed: getpwnam_r(\"ldap-alice\") failed: Connection refused (os error 111)""#
            ),
        "{line}"
    );
    let (code, v) = check(&site.pam, "ldap-alice", &token("ldap-alice", "a4"));
    assert_eq!((code, field(&v, "decision")), (2, "unavailable"), "{v}");
    assert!(
        field(&v, "error").contains("getpwnam_r(\"ldap-alice\")"),
        "{v}"
    );

    // A local group check asks sssd too (group: files sss): the same, for getgrnam_r.
    // An account in files needs no sssd at all.
    assert_eq!(login(&site.pam, "alice", "a5").0, PAM_SUCCESS);
}

/// (b) sssd runs, LDAP is down and nothing is cached: sssd answers "no such user"
/// (getpwnam_r returns 0 with no entry), exactly as for an account that does not exist.
/// Nothing on the client side tells them apart, so the decision is account_invalid.
#[test]
fn outage_b_ldap_down_with_empty_cache_is_no_such_user() {
    require!(
        available().is_ok(),
        "{}",
        available().err().unwrap_or_default()
    );
    let mut site = site("dir-b");
    site.slapd.stop();
    assert!(!site.slapd.answers());
    let (rc, name) = login(&site.pam, "ldap-alice", "b1");
    assert_eq!(rc, PAM_AUTH_ERR, "{name}");
    let line = audit(&site.pam, "ldap-alice", 1);
    eprintln!("(b) audit line: {line}");
    assert!(
        line.contains("decision=deny reason=account_invalid "),
        "{line}"
    );
    let (code, v) = check(&site.pam, "ldap-alice", &token("ldap-alice", "b2"));
    assert_eq!((code, field(&v, "reason")), (1, "account_invalid"), "{v}");
    let last = v
        .get("steps")
        .and_then(Value::as_array)
        .and_then(|s| s.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(field(&last, "detail"), "no account \"ldap-alice\" in NSS");
}

/// (c) LDAP goes down after the accounts were looked up: sssd serves them from its own
/// cache (offline), group memberships included, so logins go on. libnss_sss would answer
/// from the memory cache (/var/lib/sss/mc) without asking sssd at all, so the memory cache
/// is dropped first; and to show that nothing else answered, the same login with sssd
/// stopped too (and the memory cache dropped again) is unavailable.
#[test]
fn outage_c_ldap_down_with_warm_cache_still_logs_in() {
    require!(
        available().is_ok(),
        "{}",
        available().err().unwrap_or_default()
    );
    let mut site = site("dir-c");
    assert_eq!(login(&site.pam, "ldap-bob", "c1").0, PAM_SUCCESS);
    site.slapd.stop();
    assert!(!site.slapd.answers());
    site.sssd.drop_memory_cache();

    let (rc, name) = login(&site.pam, "ldap-bob", "c2");
    assert_eq!(rc, PAM_SUCCESS, "{name}: sssd's own cache answers");
    let line = audit(&site.pam, "ldap-bob", 2);
    eprintln!("(c) audit line: {line}");
    assert!(
        line.contains("decision=allow ") && line.contains(" rule=ldap-all "),
        "{line}"
    );
    let (code, v) = check(&site.pam, "ldap-bob", &token("ldap-bob", "c3"));
    assert_eq!((code, field(&v, "rule")), (0, "ldap-all"), "{v}");

    // What answered was sssd: without it (and without a memory cache) NSS cannot answer.
    site.sssd.stop();
    site.sssd.drop_memory_cache();
    let (rc, name) = login(&site.pam, "ldap-bob", "c4");
    assert_eq!(
        rc, PAM_AUTHINFO_UNAVAIL,
        "{name}: with sssd stopped and no memory cache something still answered"
    );
}

/// `idtoken doctor` where NSS cannot answer (sssd stopped, no memory cache): a `login_as`
/// account and a `local_groups` group that live in the directory are reported as lookups
/// that failed (not as typos), with the directory client to start; an account in files is
/// still found. With sssd up, the same checks are ok.
#[test]
fn doctor_says_when_the_directory_cannot_be_asked() {
    require!(
        available().is_ok(),
        "{}",
        available().err().unwrap_or_default()
    );
    let mut site = site("dir-doctor");
    let config = site.pam.sandbox.config(
        DEFAULTS,
        "[[rule]]\nname = \"deploy\"\nissuer = \"gitlab\"\nlogin_as = \"ldap-bob\"\n\
         local_groups = [\"ldap-ci\"]\n\n\
         [[rule]]\nname = \"local\"\nissuer = \"gitlab\"\nlogin_as = \"alice\"\n",
    );
    let doctor = |site: &Site| -> Vec<Value> {
        let out = site.idtoken(&[
            "doctor",
            "--json",
            "--config",
            &config.display().to_string(),
        ]);
        let v: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
            .unwrap_or_else(|e| panic!("doctor --json: {e}: {}", text(&out)));
        v["checks"].as_array().cloned().unwrap_or_default()
    };
    let status = |checks: &[Value], name: &str| -> Value {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no check {name}: {checks:#?}"))
    };
    let checks = doctor(&site);
    for name in ["login_as.ldap-bob", "local_group.ldap-ci", "login_as.alice"] {
        let c = status(&checks, name);
        assert_eq!(c["status"], "ok", "sssd up: {c}");
    }

    site.sssd.stop();
    site.sssd.drop_memory_cache();
    let checks = doctor(&site);
    for (name, what) in [
        (
            "login_as.ldap-bob",
            "login_as account \"ldap-bob\" cannot be looked up",
        ),
        (
            "local_group.ldap-ci",
            "local_groups group \"ldap-ci\" cannot be looked up",
        ),
    ] {
        let c = status(&checks, name);
        eprintln!("{c}");
        assert_eq!(c["status"], "fail", "{c}");
        let detail = field(&c, "detail");
        assert!(
            detail.contains(what) && detail.contains("Connection refused"),
            "{c}"
        );
        assert!(
            field(&c, "fix").contains("start the directory client"),
            "{c}"
        );
    }
    let c = status(&checks, "login_as.alice");
    assert_eq!(c["status"], "ok", "an account in files needs no sssd: {c}");
}

/// Rules for a case-insensitive directory: a deny rule written with the directory's own
/// spelling, a rule granting each token's user claim as the account, and rules granting
/// NSS's names of ldap-erin and ldap-denied to their tokens.
const CASE_RULES: &str = "[[rule]]\nname = \"no-mallory\"\nissuer = \"gitlab\"\ndeny = true\nusers = [\"ldap-mallory\"]\n\n\
    [[rule]]\nname = \"erin\"\nissuer = \"gitlab\"\nlogin_as = \"ldap-erin\"\n[rule.claims]\nuser_login = \"LDAP-Erin\"\n\n\
    [[rule]]\nname = \"denied\"\nissuer = \"gitlab\"\nlogin_as = \"ldap-denied\"\n[rule.claims]\nuser_login = \"LDAP-Denied\"\n\n\
    [[rule]]\nname = \"own-login\"\nissuer = \"gitlab\"\n";

/// Issue 19.2, through the real sssd with `case_sensitive = false` (as AD providers run it)
/// and a real sshd. Before SPEC v3 `ssh LDAP-Mallory@host` got a shell as ldap-mallory past
/// `users = ["ldap-mallory"]` (the deny compared the typed name) and the audit line said
/// `account=LDAP-Mallory`. Now the account is NSS's: the deny holds, a login whose typed
/// name is not NSS's is refused unless a rule grants NSS's name, and the audit line names
/// both.
#[test]
fn a_case_insensitive_directory_gives_one_account_whatever_the_spelling() {
    require!(
        available().is_ok(),
        "{}",
        available().err().unwrap_or_default()
    );
    let site = Site::start_with("dir-case", USERS, GROUPS, "case_sensitive = false");
    site.pam.sandbox.key_cache(&[keys::Key::A]);
    site.pam.sandbox.config(DEFAULTS, CASE_RULES);
    site.pam.module_only("test", "");
    // The directory answers another spelling with its own name.
    let o = site.getent("passwd", "LDAP-Mallory");
    assert!(
        text(&o).starts_with("ldap-mallory:*:7107:"),
        "{}\nsssd:\n{}",
        text(&o),
        site.sssd.logs()
    );
    let Site { sssd, slapd, pam } = site;
    let sshd = Sshd::start(pam, STACK);

    // (typed name = the token's user_login, NSS's name, logs in, reason or rule, check's exit)
    let cases = [
        // The deny rule holds for the other spelling.
        ("LDAP-Mallory", "ldap-mallory", false, "policy_denied", 1),
        // deny_users too, though a rule grants the account.
        ("LDAP-Denied", "ldap-denied", false, "account_invalid", 1),
        // own-login grants "LDAP-Carol", which NSS calls ldap-carol: not the same account.
        ("LDAP-Carol", "ldap-carol", false, "user_mismatch", 1),
        // A rule that grants NSS's name lets the other spelling in, as that account.
        ("LDAP-Erin", "ldap-erin", true, "erin", 0),
        // The directory's spelling is unchanged.
        ("ldap-dave", "ldap-dave", true, "own-login", 0),
    ];
    for (typed, account, allowed, why, exit) in cases {
        let t = token(typed, "case");
        let o = sshd.login_with_askpass(typed, &t, REMOTE);
        let out = String::from_utf8_lossy(&o.stdout);
        let line = audit(&sshd.pam, account, 1);
        eprintln!("{typed}: {line}");
        if typed != account {
            assert!(
                line.contains(&format!(" account={account} typed={typed} ")),
                "{line}"
            );
        } else {
            assert!(!line.contains(" typed="), "{line}");
        }
        if allowed {
            assert!(
                o.status.success() && out.contains(&format!("LOGIN-OK\n{account}\n")),
                "{typed}: {}\n{line}\nsshd log:\n{}",
                text(&o),
                sshd.sshd_log()
            );
            assert!(
                line.contains("decision=allow") && line.contains(&format!(" rule={why} ")),
                "{typed}: {line}"
            );
        } else {
            assert!(
                !o.status.success() && !out.contains("LOGIN-OK"),
                "{typed}: {}",
                text(&o)
            );
            assert!(
                line.contains(&format!("decision=deny reason={why} ")),
                "{typed}: {line}"
            );
        }
        let (code, v) = check(&sshd.pam, typed, &t);
        assert_eq!(code, exit, "{typed}: {v}");
        assert_eq!(field(&v, "account"), account, "{typed}: {v}");
    }
    drop(sshd);
    drop(sssd);
    drop(slapd);
}
