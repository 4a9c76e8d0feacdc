//! The authenticate hook driven through a scripted fake PAM context, without libpam, root or
//! host state: accounts, key cache and use ledger are in memory, the config is a 0600 file
//! of the running user in a temporary directory.
//!
//! Each test lists the calls it expects the hook to make, in order (ask for the user, prompt
//! with this text and get this answer, log this at that level, ...). The fake serves them in
//! that order, fails the test at the first call that differs, and fails it on drop if an
//! expected call never came.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use idtoken_core::MAX_TOKEN_BYTES;
use idtoken_core::keystore::DataProblem;
use idtoken_core::reason::Reason;
use idtoken_core::uses::{TokenId, UseLedger};
use idtoken_testkit::fakes::{AccountTable, Ledger, MemoryKeys, TestAccount};
use idtoken_testkit::keys::{AUDIENCE as AUD, ISSUER as ISS, Key, NOW, mint_with, with};
use pamsm::PamError;
use serde_json::{Value, json};

use crate::collect::{OPENSSH_CUT, Prompter, Secret};
use crate::handle::{Level, PamContext};
use crate::hooks::{
    GENERIC_REFUSAL, Sessions, Uses, World, authenticate_with, close_session_with,
    open_session_with,
};
use idtoken_core::session_record::{SessionDir, SessionRecord, valid_name};

// ---------------------------------------------------------------------------------------
// The scripted context.

/// A prompt's answer, shown by length only: failure output stays readable.
struct Answer(Option<Vec<u8>>);

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(a) => write!(f, "<{} bytes>", a.len()),
            None => f.write_str("<no answer>"),
        }
    }
}

/// One call the hook is expected to make, with what the fake answers.
#[derive(Debug)]
enum Event {
    User(Option<String>),
    Service(Option<String>),
    Rhost(Option<String>),
    CachedAuthtok(Answer),
    Prompt(String, Answer),
    ErrorMessage(String),
    Putenv(String, String),
    Getenv(String, Option<String>),
    SetData(String, String),
    SetAuthtok(Answer),
    /// A log line at this level containing this text.
    Log(Level, String),
}

fn user(name: &str) -> Event {
    Event::User(Some(name.to_string()))
}
fn service(name: &str) -> Event {
    Event::Service(Some(name.to_string()))
}
fn rhost(host: &str) -> Event {
    Event::Rhost(Some(host.to_string()))
}
fn no_cached_authtok() -> Event {
    Event::CachedAuthtok(Answer(None))
}
fn prompt(text: &str, answer: &[u8]) -> Event {
    Event::Prompt(text.to_string(), Answer(Some(answer.to_vec())))
}
fn prompt_unanswered(text: &str) -> Event {
    Event::Prompt(text.to_string(), Answer(None))
}
fn error_message(text: &str) -> Event {
    Event::ErrorMessage(text.to_string())
}
fn putenv(name: &str, value: &str) -> Event {
    Event::Putenv(name.to_string(), value.to_string())
}
fn getenv(name: &str, value: Option<&str>) -> Event {
    Event::Getenv(name.to_string(), value.map(str::to_string))
}
fn set_data(name: &str, value: &str) -> Event {
    Event::SetData(name.to_string(), value.to_string())
}
fn set_authtok(authtok: &[u8]) -> Event {
    Event::SetAuthtok(Answer(Some(authtok.to_vec())))
}
fn log(level: Level, text: &str) -> Event {
    Event::Log(level, text.to_string())
}

/// The fake PAM context: serves the script, and checks that nothing the client answered
/// (a token, a password) ever reaches a log line or a message.
struct Script {
    events: RefCell<VecDeque<Event>>,
    answers: RefCell<Vec<Vec<u8>>>,
}

impl Script {
    fn new(events: Vec<Event>) -> Script {
        Script {
            events: RefCell::new(events.into()),
            answers: RefCell::new(Vec::new()),
        }
    }

    fn next(&self, call: &str) -> Event {
        match self.events.borrow_mut().pop_front() {
            Some(e) => e,
            None => panic!("unexpected call {call}: the script has no more events"),
        }
    }

    fn remember(&self, answer: &Option<Vec<u8>>) {
        if let Some(a) = answer {
            self.answers.borrow_mut().push(a.clone());
        }
    }

    fn assert_no_secret(&self, what: &str, text: &str) {
        for a in self.answers.borrow().iter() {
            // Short answers ("", "x") occur in ordinary text by chance; tokens and
            // passwords in the tests are longer.
            if a.len() >= 8 {
                let a = String::from_utf8_lossy(a);
                assert!(!text.contains(&*a), "{what} contains an answer: {text:?}");
            }
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let left = self.events.borrow();
            assert!(left.is_empty(), "expected calls never made: {left:?}");
        }
    }
}

impl Prompter for Script {
    fn prompt(&mut self, text: &str) -> Option<Secret> {
        match self.next(&format!("prompt({text:?})")) {
            Event::Prompt(want, Answer(answer)) => {
                assert_eq!(text, want, "prompt text");
                self.remember(&answer);
                answer.map(Secret::new)
            }
            other => panic!("expected {other:?}, got prompt({text:?})"),
        }
    }
}

impl PamContext for Script {
    fn user(&mut self) -> Option<String> {
        match self.next("user()") {
            Event::User(u) => u,
            other => panic!("expected {other:?}, got user()"),
        }
    }

    fn service(&self) -> Option<String> {
        match self.next("service()") {
            Event::Service(s) => s,
            other => panic!("expected {other:?}, got service()"),
        }
    }

    fn rhost(&self) -> Option<String> {
        match self.next("rhost()") {
            Event::Rhost(r) => r,
            other => panic!("expected {other:?}, got rhost()"),
        }
    }

    fn cached_authtok(&self) -> Option<Secret> {
        match self.next("cached_authtok()") {
            Event::CachedAuthtok(Answer(a)) => {
                self.remember(&a);
                a.map(Secret::new)
            }
            other => panic!("expected {other:?}, got cached_authtok()"),
        }
    }

    fn set_authtok(&mut self, authtok: &[u8]) {
        let got = Answer(Some(authtok.to_vec()));
        match self.next("set_authtok()") {
            Event::SetAuthtok(Answer(want)) => {
                assert!(
                    want.as_deref() == Some(authtok),
                    "set_authtok: expected {:?}, got {got:?}",
                    Answer(want.clone())
                );
            }
            other => panic!("expected {other:?}, got set_authtok({got:?})"),
        }
    }

    fn error_message(&mut self, text: &str) {
        self.assert_no_secret("error message", text);
        match self.next(&format!("error_message({text:?})")) {
            Event::ErrorMessage(want) => assert_eq!(text, want, "error message"),
            other => panic!("expected {other:?}, got error_message({text:?})"),
        }
    }

    fn putenv(&mut self, name: &str, value: &str) {
        match self.next(&format!("putenv({name}={value})")) {
            Event::Putenv(n, v) if v == ANY_RECORD_NAME => {
                assert_eq!(name, n, "putenv");
                assert!(valid_name(value), "putenv {name}={value}");
            }
            Event::Putenv(n, v) => assert_eq!((name, value), (&*n, &*v), "putenv"),
            other => panic!("expected {other:?}, got putenv({name}={value})"),
        }
    }

    fn getenv(&self, name: &str) -> Option<String> {
        match self.next(&format!("getenv({name})")) {
            Event::Getenv(n, v) => {
                assert_eq!(name, n, "getenv");
                v
            }
            other => panic!("expected {other:?}, got getenv({name})"),
        }
    }

    fn set_data(&mut self, name: &str, value: &str) {
        match self.next(&format!("set_data({name}={value})")) {
            Event::SetData(n, v) => assert_eq!((name, value), (&*n, &*v), "set_data"),
            other => panic!("expected {other:?}, got set_data({name}={value})"),
        }
    }

    fn log(&self, level: Level, message: &str) {
        self.assert_no_secret("log line", message);
        match self.next(&format!("log({level:?}, {message:?})")) {
            Event::Log(l, fragment) => {
                assert_eq!(level, l, "log level of {message:?}");
                assert!(
                    message.contains(&fragment),
                    "log line {message:?} lacks {fragment:?}"
                );
            }
            other => panic!("expected {other:?}, got log({level:?}, {message:?})"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The outside world, in memory.

/// alice (uid 2001), the one local account, in her own group.
const ACCOUNTS: &[TestAccount] = &[TestAccount::listed("alice", 2001, &["alice"])];

fn key_a() -> MemoryKeys {
    MemoryKeys::of(&[Key::A])
}

/// How often the ledger counted this test's token (jti j1).
fn uses_of(ledger: &Ledger) -> u32 {
    ledger
        .count(&TokenId::new(ISS, "j1", NOW + 300), 100)
        .unwrap()
}

/// The config file: one issuer, one rule letting GitLab user alice in as alice from a
/// protected ref. `defaults` is the body of `[defaults]`.
struct Site {
    dir: PathBuf,
    args: Vec<String>,
}

impl Site {
    fn new(tag: &str, defaults: &str) -> Site {
        let dir =
            std::env::temp_dir().join(format!("pam-idtoken-hooks-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let path = dir.join("idtoken.toml");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        write!(
            f,
            "[defaults]\n{defaults}\n\n[[issuer]]\nname = \"gitlab\"\nurl = \"{ISS}\"\n\
             audiences = [\"{AUD}\"]\n\n[[rule]]\nname = \"own\"\nusers = [\"alice\"]\n\
             [rule.claims]\nref_protected = \"true\"\n"
        )
        .unwrap();
        Site {
            args: vec![format!("config={}", path.display())],
            dir,
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "iat": NOW, "nbf": NOW - 5, "exp": NOW + 300, "jti": "j1",
           "user_login": "alice", "ref_protected": "true", "project_path": "hpc/app",
           "pipeline_id": "4711", "job_id": 815})
}

fn token(claims: &Value) -> String {
    mint_with(claims, Key::A)
}

/// A valid token made long by `len` bytes of padding claim (GitLab's are over 1023).
fn long_token(len: usize) -> String {
    let mut c = claims();
    c["padding"] = json!("p".repeat(len));
    token(&c)
}

/// Runs the hook on the script with alice's world and the given key cache.
fn run(script: &mut Script, args: &[String], keys: &MemoryKeys, ledger: &Ledger) -> PamError {
    let sessions = test_sessions();
    let world = World {
        accounts: &AccountTable::new(ACCOUNTS),
        issuer_data: keys,
        uses: Uses::Ledger(ledger),
        sessions: Sessions::Dir(&sessions.0),
    };
    authenticate_with(script, args, NOW, &world)
}

/// The calls every login that gets as far as asking makes first.
fn start() -> Vec<Event> {
    vec![service("sshd"), user("alice"), no_cached_authtok()]
}

/// The calls after a JWT-shaped answer, up to the audit line.
fn decided(audit: &str) -> Vec<Event> {
    vec![rhost("192.0.2.7"), log(Level::Notice, audit)]
}

/// The PAM environment an allowed login of the test token (exp as given) sets, in order.
/// The environment of an allowed token, then its session record's name.
fn allowed_environment(exp: i64) -> Vec<Event> {
    let mut events = environment(exp);
    events.push(session_recorded());
    events
}

fn environment(exp: i64) -> Vec<Event> {
    vec![
        putenv("IDTOKEN_ISSUER", "gitlab"),
        putenv("IDTOKEN_PROJECT_PATH", "hpc/app"),
        putenv("IDTOKEN_PIPELINE_ID", "4711"),
        putenv("IDTOKEN_JOB_ID", "815"),
        putenv("IDTOKEN_USER", "alice"),
        putenv("IDTOKEN_EXP", &exp.to_string()),
    ]
}

/// IDTOKEN_SESSION, set to the random name of the login's session record.
fn session_recorded() -> Event {
    putenv("IDTOKEN_SESSION", ANY_RECORD_NAME)
}

/// In an expected putenv, stands for any valid session record name.
const ANY_RECORD_NAME: &str = "<any record name>";

/// A directory of session records of one test's own, removed when dropped (also when the
/// test fails).
struct TestSessions(SessionDir);

impl Drop for TestSessions {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0.dir);
    }
}

fn test_sessions() -> TestSessions {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    TestSessions(SessionDir {
        dir: std::env::temp_dir().join(format!(
            "pam-idtoken-hooks-sessions-{}-{n}",
            std::process::id()
        )),
    })
}

fn script(parts: Vec<Vec<Event>>) -> Script {
    Script::new(parts.into_iter().flatten().collect())
}

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn bad_module_argument_is_authinfo_unavail_and_logged() {
    let mut s = script(vec![vec![log(
        Level::Error,
        "unknown module argument \"try_first_pass\"; pam_idtoken.so takes config=PATH and debug; \
         refusing until the PAM stack is fixed",
    )]]);
    let code = run(
        &mut s,
        &["try_first_pass".to_string()],
        &key_a(),
        &Ledger::default(),
    );
    assert_eq!(code, PamError::AUTHINFO_UNAVAIL);
}

#[test]
fn unreadable_config_is_authinfo_unavail_and_logged() {
    let site = Site::new("noconfig", "");
    let args = vec![format!("config={}", site.dir.join("absent.toml").display())];
    let mut s = script(vec![vec![log(
        Level::Error,
        "config unusable, every token refused: ",
    )]]);
    let code = run(&mut s, &args, &key_a(), &Ledger::default());
    assert_eq!(code, PamError::AUTHINFO_UNAVAIL);
}

/// Finding 1 of the second security review: a token of a sudoer pasted at sudo's prompt
/// was a root login. No rule names sudo (the default services are sshd and su), so the
/// hook steps aside before asking anything: the only calls are the service and the
/// debug line; a prompt or a user lookup would fail the script.
#[test]
fn a_service_no_rule_applies_to_is_ignored_without_prompting() {
    let site = Site::new("sudo", "");
    let mut args = site.args.clone();
    args.push("debug".to_string());
    for svc in ["sudo", "polkit-1", "xscreensaver"] {
        let mut s = script(vec![vec![
            service(svc),
            log(
                Level::Debug,
                &format!("no rule applies to PAM service \"{svc}\"; not asking for a token"),
            ),
        ]]);
        let code = run(&mut s, &args, &key_a(), &Ledger::default());
        assert_eq!(code, PamError::IGNORE, "{svc}");
    }
    // su is a default service: it is asked.
    let mut s = script(vec![
        vec![service("su"), user("alice"), no_cached_authtok()],
        vec![prompt("ID token: ", b"pw"), set_authtok(b"pw")],
    ]);
    assert_eq!(
        run(&mut s, &site.args, &key_a(), &Ledger::default()),
        PamError::IGNORE
    );
}

#[test]
fn non_jwt_answer_is_ignored_and_passed_on_as_the_authtok() {
    let site = Site::new("password", "");
    let mut s = script(vec![
        start(),
        vec![
            prompt("ID token: ", b"correct horse battery"),
            set_authtok(b"correct horse battery"),
        ],
    ]);
    let code = run(&mut s, &site.args, &key_a(), &Ledger::default());
    assert_eq!(code, PamError::IGNORE);
}

/// SPEC v3 "One answer": a packed token in the one answer is unpacked and decided as its
/// JWS would be.
#[test]
fn packed_token_in_one_answer_is_allowed() {
    let site = Site::new("packed", "");
    let p = idtoken_core::packed::pack(&token(&claims())).unwrap();
    let mut s = script(vec![
        start(),
        vec![prompt("ID token: ", p.as_bytes())],
        decided(
            "decision=allow reason=- service=sshd account=alice issuer=gitlab user=alice \
             project_path=hpc/app pipeline_id=4711 job_id=815 jti=j1 rule=own rhost=192.0.2.7 \
             verified=yes",
        ),
        allowed_environment(NOW + 300),
    ]);
    let code = run(&mut s, &site.args, &key_a(), &Ledger::default());
    assert_eq!(code, PamError::SUCCESS);
}

/// A packed-shaped answer that does not unpack (a damaged one, an unknown version) is a
/// token attempt refused as malformed, never a password passed on to the next module.
#[test]
fn packed_shaped_answer_that_does_not_unpack_is_refused_not_passed_on() {
    let site = Site::new("packed-bad", "");
    let p = idtoken_core::packed::pack(&token(&claims())).unwrap();
    let mut damaged = p.clone().into_bytes();
    let at = damaged.len() / 2;
    damaged[at] = if damaged[at] == b'A' { b'B' } else { b'A' };
    let version_2 = format!("~2.{}", &p[3..]);
    for answer in [damaged, version_2.into_bytes()] {
        let mut s = script(vec![
            start(),
            vec![prompt("ID token: ", &answer)],
            decided("decision=deny reason=malformed"),
            vec![error_message("ID token refused.")],
        ]);
        let code = run(&mut s, &site.args, &key_a(), &Ledger::default());
        assert_eq!(code, PamError::AUTH_ERR);
    }
}

#[test]
fn non_jwt_answer_is_noted_at_debug_level_with_debug() {
    let site = Site::new("password-debug", "");
    let mut args = site.args.clone();
    args.push("debug".to_string());
    let mut s = script(vec![
        start(),
        vec![
            prompt("ID token: ", b"correct horse battery"),
            log(Level::Debug, "answer is not JWT-shaped; passing it on"),
            set_authtok(b"correct horse battery"),
        ],
    ]);
    let code = run(&mut s, &args, &key_a(), &Ledger::default());
    assert_eq!(code, PamError::IGNORE);
}

#[test]
fn empty_answer_is_ignored_and_sets_no_authtok() {
    // Enter at the prompt: not a token, and not a password either, so PAM_AUTHTOK stays
    // unset and the next module asks `Password: ` itself; no part prompt follows. The fake
    // fails the test on any call not scripted here, `set_authtok` included.
    let site = Site::new("empty", "");
    let mut s = script(vec![start(), vec![prompt("ID token: ", b"")]]);
    let code = run(&mut s, &site.args, &key_a(), &Ledger::default());
    assert_eq!(code, PamError::IGNORE);
}

#[test]
fn no_answer_at_all_is_conv_err_and_logged() {
    let site = Site::new("noanswer", "");
    let mut s = script(vec![
        start(),
        vec![
            prompt_unanswered("ID token: "),
            log(
                Level::Notice,
                "no answer to the ID token prompt for account alice",
            ),
        ],
    ]);
    let code = run(&mut s, &site.args, &key_a(), &Ledger::default());
    assert_eq!(code, PamError::CONV_ERR);
}

#[test]
fn allow_sets_the_pam_environment_and_records_the_use() {
    let site = Site::new("allow", "max_uses = 1");
    let ledger = Ledger::default();
    let t = token(&claims());
    let mut s = script(vec![
        start(),
        vec![prompt("ID token: ", t.as_bytes())],
        decided(
            "decision=allow reason=- service=sshd account=alice issuer=gitlab user=alice \
             project_path=hpc/app pipeline_id=4711 job_id=815 jti=j1 rule=own rhost=192.0.2.7 \
             verified=yes",
        ),
        allowed_environment(NOW + 300),
    ]);
    let code = run(&mut s, &site.args, &key_a(), &ledger);
    assert_eq!(code, PamError::SUCCESS);
    assert_eq!(uses_of(&ledger), 1, "the login is counted");
    drop(s);
    // max_uses = 1: the same token again is a replay, counted in the ledger handed in.
    let mut again = script(vec![
        start(),
        vec![prompt("ID token: ", t.as_bytes())],
        decided("decision=deny reason=replayed"),
        vec![error_message("ID token refused.")],
    ]);
    let code = run(&mut again, &site.args, &key_a(), &ledger);
    assert_eq!(code, PamError::AUTH_ERR);
}

/// SPEC v2: with session_ends_at_exp the module sets pam_systemd's runtime limit to the
/// whole seconds until exp (at least 1, for a token allowed within the leeway after exp);
/// without it, no data item is set (the other allow tests' scripts would fail on one).
#[test]
fn session_ends_at_exp_sets_the_runtime_limit_for_pam_systemd() {
    let site = Site::new("session-ends", "session_ends_at_exp = true");
    for (exp_in, limit) in [(300, "300"), (1, "1"), (-30, "1")] {
        let t = token(&with(claims(), "exp", json!(NOW + exp_in)));
        let mut s = script(vec![
            start(),
            vec![prompt("ID token: ", t.as_bytes())],
            decided("decision=allow"),
            environment(NOW + exp_in),
            vec![
                set_data("systemd.runtime_max_sec", limit),
                session_recorded(),
            ],
        ]);
        let code = run(&mut s, &site.args, &key_a(), &Ledger::default());
        assert_eq!(code, PamError::SUCCESS, "exp in {exp_in} s");
    }
}

/// SPEC v3: the session phase finds the login's record through IDTOKEN_SESSION (what
/// crosses from sshd's authentication child to the process that opens the session), hands
/// pam_systemd the rule's limits and the runtime to exp, and marks the record live with its
/// process; closing the session removes it. A login without IDTOKEN_SESSION (a password
/// login) is left alone; a name that names no record refuses the session.
#[test]
fn the_session_phase_applies_the_record_and_closing_removes_it() {
    let guard = test_sessions();
    let sessions = &guard.0;
    let record = SessionRecord {
        account: "alice".into(),
        issuer: "gitlab".into(),
        rule: "ci".into(),
        user: "alice".into(),
        project_path: None,
        pipeline_id: Some("4711".into()),
        job_id: None,
        jti: None,
        rhost: None,
        created: NOW,
        exp: NOW + 300,
        ends_at_exp: true,
        memory_max: Some("4G".into()),
        tasks_max: Some(64),
        cpu_weight: None,
        io_weight: None,
        runtime_max: Some(7200),
        leader: None,
        opened: None,
        ended_by: None,
    };
    let name = sessions.create_pending(&record).unwrap();
    let mut s = script(vec![vec![
        getenv("IDTOKEN_SESSION", Some(&name)),
        set_data("systemd.memory_max", "4G"),
        set_data("systemd.tasks_max", "64"),
        set_data("systemd.runtime_max_sec", "290"),
        log(Level::Notice, "session=open id="),
    ]]);
    assert_eq!(
        open_session_with(&mut s, sessions, NOW + 10, 4242),
        PamError::IGNORE
    );
    let live: Vec<_> = sessions
        .current(NOW + 10, &|pid| pid == 4242)
        .unwrap()
        .into_iter()
        .filter(|(n, _)| *n == name)
        .collect();
    assert_eq!(live.len(), 1);
    assert_eq!(
        (live[0].1.leader, live[0].1.opened),
        (Some(4242), Some(NOW + 10))
    );
    let mut s = script(vec![vec![
        getenv("IDTOKEN_SESSION", Some(&name)),
        log(Level::Notice, "session=close id="),
    ]]);
    assert_eq!(
        close_session_with(&mut s, sessions, NOW + 70),
        PamError::IGNORE
    );
    assert!(
        sessions
            .current(NOW + 10, &|_| true)
            .unwrap()
            .iter()
            .all(|(n, _)| *n != name)
    );
    // A password login: nothing read, nothing set.
    let mut s = script(vec![vec![getenv("IDTOKEN_SESSION", None)]]);
    assert_eq!(
        open_session_with(&mut s, sessions, NOW, 1),
        PamError::IGNORE
    );
    // A name that names no record (the closed one, or one made up): the session is refused.
    for bogus in [name.as_str(), "not-a-name"] {
        let mut s = script(vec![vec![
            getenv("IDTOKEN_SESSION", Some(bogus)),
            log(Level::Error, "its session limits cannot be applied"),
        ]]);
        assert_eq!(
            open_session_with(&mut s, sessions, NOW, 1),
            PamError::SESSION_ERR
        );
    }
}

/// A session record that cannot be written (a caller that is not root cannot write
/// /run/idtoken) refuses the login only when the session needs it: with
/// session_ends_at_exp the limit could not reach the session; without anything that needs
/// the record, the login goes on unrecorded and says so.
#[test]
fn an_unwritable_session_record_refuses_only_where_the_session_needs_it() {
    let nowhere = SessionDir {
        dir: std::path::PathBuf::from("/dev/null/sessions"),
    };
    let run_with = |script: &mut Script, args: &[String]| {
        let world = World {
            accounts: &AccountTable::new(ACCOUNTS),
            issuer_data: &key_a(),
            uses: Uses::Ledger(&Ledger::default()),
            sessions: Sessions::Dir(&nowhere),
        };
        authenticate_with(script, args, NOW, &world)
    };
    let t = token(&claims());
    let plain = Site::new("unrecorded", "");
    let mut s = script(vec![
        start(),
        vec![prompt("ID token: ", t.as_bytes())],
        decided("decision=allow"),
        environment(NOW + 300),
        vec![log(Level::Notice, "its session is not recorded")],
    ]);
    assert_eq!(run_with(&mut s, &plain.args), PamError::SUCCESS);
    let ends = Site::new("unrecorded-ends", "session_ends_at_exp = true");
    let mut s = script(vec![
        start(),
        vec![prompt("ID token: ", t.as_bytes())],
        decided("decision=allow"),
        environment(NOW + 300),
        vec![
            set_data("systemd.runtime_max_sec", "300"),
            log(Level::Error, "cannot be recorded"),
        ],
    ]);
    assert_eq!(run_with(&mut s, &ends.args), PamError::AUTHINFO_UNAVAIL);
}

#[test]
fn refusal_explains_the_reason_when_explain_is_set() {
    let site = Site::new("explain", "explain = true");
    let expired = token(&{
        let mut c = claims();
        c["exp"] = json!(NOW - 3600);
        c
    });
    let mut s = script(vec![
        start(),
        vec![prompt("ID token: ", expired.as_bytes())],
        decided("decision=deny reason=expired"),
        vec![error_message(&format!(
            "{GENERIC_REFUSAL} Reason: expired: {}",
            Reason::Expired.client_hint()
        ))],
    ]);
    let code = run(&mut s, &site.args, &key_a(), &Ledger::default());
    assert_eq!(code, PamError::AUTH_ERR);
}

#[test]
fn refusal_shows_only_the_generic_text_without_explain() {
    let site = Site::new("generic", "");
    let expired = token(&{
        let mut c = claims();
        c["exp"] = json!(NOW - 3600);
        c
    });
    let mut s = script(vec![
        start(),
        vec![prompt("ID token: ", expired.as_bytes())],
        decided("decision=deny reason=expired"),
        vec![error_message("ID token refused.")],
    ]);
    let code = run(&mut s, &site.args, &key_a(), &Ledger::default());
    assert_eq!(code, PamError::AUTH_ERR);
}

#[test]
fn unusable_key_cache_is_authinfo_unavail_with_the_generic_text_even_with_explain() {
    let site = Site::new("unavailable", "explain = true");
    let broken = MemoryKeys::failing(DataProblem::Invalid {
        path: "/var/cache/idtoken/gitlab.jwks".to_string(),
        why: "not JSON".to_string(),
    });
    let t = token(&claims());
    let mut s = script(vec![
        start(),
        vec![prompt("ID token: ", t.as_bytes())],
        vec![
            rhost("192.0.2.7"),
            log(Level::Error, "decision=deny reason=unavailable"),
            error_message("ID token refused."),
        ],
    ]);
    let code = run(&mut s, &site.args, &broken, &Ledger::default());
    assert_eq!(code, PamError::AUTHINFO_UNAVAIL);
}

#[test]
fn answer_of_exactly_1023_characters_logs_the_cut_hint_before_part_2() {
    // A real token cut by an OpenSSH client that then hangs up at the part 2 prompt: the
    // hint is in the log before the second prompt, and the client is told why.
    let site = Site::new("cut", "explain = true");
    let whole = long_token(1500);
    let cut = &whole.as_bytes()[..OPENSSH_CUT];
    let mut s = script(vec![
        start(),
        vec![
            prompt("ID token: ", cut),
            log(
                Level::Notice,
                "the first answer is exactly 1023 characters: OpenSSH clients cut longer answers",
            ),
            prompt_unanswered("ID token (part 2): "),
        ],
        decided("decision=deny"),
        vec![error_message(
            "ID token refused. Reason: malformed: the token was cut at 1023 characters; send it \
             in parts (idtoken askpass)",
        )],
    ]);
    let code = run(&mut s, &site.args, &key_a(), &Ledger::default());
    assert_eq!(code, PamError::AUTH_ERR);
}

#[test]
fn cached_authtok_of_exactly_1023_characters_logs_the_cut_hint_before_asking() {
    let site = Site::new("cut-authtok", "");
    let whole = long_token(1500);
    let (cut, rest) = whole.as_bytes().split_at(OPENSSH_CUT);
    let mut s = script(vec![
        vec![
            service("sshd"),
            user("alice"),
            Event::CachedAuthtok(Answer(Some(cut.to_vec()))),
            log(Level::Notice, "the first answer is exactly 1023 characters"),
            prompt("ID token (part 2): ", rest),
        ],
        decided("decision=allow"),
        allowed_environment(NOW + 300),
    ]);
    let code = run(&mut s, &site.args, &key_a(), &Ledger::default());
    assert_eq!(code, PamError::SUCCESS);
}

#[test]
fn long_token_in_parts_is_joined_and_allowed() {
    // Parts of 1000 and 1023 characters both mean "more follows"; a shorter one ends it.
    let site = Site::new("parts", "");
    let t = long_token(1300);
    let b = t.as_bytes();
    assert!(
        (2024..3023).contains(&b.len()),
        "a token of three parts: {}",
        b.len()
    );
    let mut s = script(vec![
        start(),
        vec![
            prompt("ID token: ", &b[..1000]),
            prompt("ID token (part 2): ", &b[1000..2023]),
            prompt("ID token (part 3): ", &b[2023..]),
        ],
        decided("decision=allow"),
        allowed_environment(NOW + 300),
    ]);
    let code = run(&mut s, &site.args, &key_a(), &Ledger::default());
    assert_eq!(code, PamError::SUCCESS);
}

#[test]
fn part_prompts_stop_at_the_64_kib_limit() {
    // 1000 + 63 × 1023 = 65449 bytes is still under 64 KiB (65536), so part 65 is asked
    // for; 1000 + 64 × 1023 = 66472 is not, so there is no part 66. The joined answer is
    // not JWT-shaped and goes on as a password would.
    assert_eq!(MAX_TOKEN_BYTES, 65536);
    let site = Site::new("limit", "");
    let first = vec![b'x'; 1000];
    let part = vec![b'x'; 1023];
    let mut events = start();
    events.push(prompt("ID token: ", &first));
    let mut joined = first.clone();
    for n in 2..=65 {
        events.push(prompt(&format!("ID token (part {n}): "), &part));
        joined.extend_from_slice(&part);
    }
    events.push(set_authtok(&joined));
    let mut s = Script::new(events);
    let code = run(&mut s, &site.args, &key_a(), &Ledger::default());
    assert_eq!(code, PamError::IGNORE);
}

#[test]
fn the_script_fails_a_test_whose_expected_call_never_came() {
    // The fake itself must be able to fail: a script with a prompt the hook never makes
    // (module arguments are refused first) panics on drop.
    let outcome = std::panic::catch_unwind(|| {
        let mut s = script(vec![vec![
            log(Level::Error, "unknown module argument"),
            prompt("ID token: ", b"never asked"),
        ]]);
        run(&mut s, &["bogus".to_string()], &key_a(), &Ledger::default())
    });
    assert!(
        outcome.is_err(),
        "a leftover expected call must fail the test"
    );
}
