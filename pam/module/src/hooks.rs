//! The hooks: arguments → config → token → core decision → audit line → PAM answer.

use std::time::{SystemTime, UNIX_EPOCH};

use idtoken_core::accounts::AccountSource;
use idtoken_core::audit;
use idtoken_core::config::Config;
use idtoken_core::decision::{self, Decision, Env, Request, UseMode, Verdict};
use idtoken_core::jws::looks_like_jws;
use idtoken_core::keystore::{DiskIssuerData, IssuerData};
use idtoken_core::packed;
use idtoken_core::policy;
use idtoken_core::sanitize::clean;
use idtoken_core::session_record::{SESSION_ENV, SessionDir, SessionRecord};
use idtoken_core::uses::{DiskLedger, UseLedger};
use idtoken_nss::Nss;
use pamsm::{Pam, PamError};

use crate::args::{self, ModuleArgs};
use crate::collect::{self, Collected};
use crate::handle::{Level, PamContext, PamHandleContext};

/// The one line a refused client sees when the site does not set `explain`.
pub const GENERIC_REFUSAL: &str = "ID token refused.";

/// What the authenticate hook decides against, besides the PAM handle and the config:
/// the host's accounts, issuer files and use ledger in production, fakes in the tests.
#[derive(Clone, Copy)]
pub struct World<'a> {
    pub accounts: &'a dyn AccountSource,
    pub issuer_data: &'a dyn IssuerData,
    pub uses: Uses<'a>,
    pub sessions: Sessions<'a>,
}

/// Where the records of token sessions are kept.
#[derive(Clone, Copy)]
pub enum Sessions<'a> {
    /// /run/idtoken/sessions.
    Run,
    Dir(&'a SessionDir),
}

impl Sessions<'_> {
    fn dir(&self) -> SessionDir {
        match self {
            Sessions::Run => SessionDir::default(),
            Sessions::Dir(d) => (*d).clone(),
        }
    }
}

/// Where `max_uses` is counted.
#[derive(Clone, Copy)]
pub enum Uses<'a> {
    /// In the config's `state_dir` (the ledger can only be made once the config is read).
    StateDir,
    Ledger(&'a dyn UseLedger),
}

impl World<'static> {
    /// The real host: NSS, the key caches and user maps on disk, the ledger in `state_dir`.
    pub const HOST: World<'static> = World {
        accounts: &Nss,
        issuer_data: &DiskIssuerData,
        uses: Uses::StateDir,
        sessions: Sessions::Run,
    };
}

pub fn authenticate(pamh: &Pam, args: &[String]) -> PamError {
    let mut ctx = PamHandleContext { pamh };
    authenticate_with(&mut ctx, args, now(), &World::HOST)
}

/// setcred, close_session, chauthtok: not this module's business.
/// setcred in particular must not answer PAM_SUCCESS: with the documented `success=done`
/// (or `success=end`) that would end the setcred walk at this line, for password logins
/// too, and the lines after it (pam_env, pam_unix) would never run (SPEC v3). The stack's
/// other auth modules establish credentials.
pub fn ignore(_pamh: &Pam, _args: &[String]) -> PamError {
    PamError::IGNORE
}

pub fn open_session(pamh: &Pam, _args: &[String]) -> PamError {
    let mut ctx = PamHandleContext { pamh };
    open_session_with(&mut ctx, &SessionDir::default(), now(), std::process::id())
}

pub fn close_session(pamh: &Pam, _args: &[String]) -> PamError {
    let mut ctx = PamHandleContext { pamh };
    close_session_with(&mut ctx, &SessionDir::default(), now())
}

/// The session phase of a token login: hands pam_systemd the session's limits (the
/// granting rule's, and the runtime up to the token's exp with `session_ends_at_exp`) and
/// marks the login's record live, opened by `leader`.
///
/// authenticate sets the items too, which is enough where one process runs every phase
/// (su, a libpam driver). sshd does not: it authenticates in a forked child and opens the
/// session in the parent, which gets back only the PAM environment, so PAM data set in the
/// child never reaches pam_systemd. What crosses is `IDTOKEN_SESSION`, the name of the
/// root-only record authenticate wrote ([`idtoken_core::session_record`]); this module's
/// session line must come before pam_systemd's. A login without it (a password login) is
/// left alone.
///
/// PAM_IGNORE: the session's success is not this module's to decide; PAM_SESSION_ERR when
/// a token login's record cannot be read or written (its limits could not be applied).
pub fn open_session_with(
    ctx: &mut dyn PamContext,
    sessions: &SessionDir,
    now: i64,
    leader: u32,
) -> PamError {
    let Some(name) = ctx.getenv(SESSION_ENV) else {
        return PamError::IGNORE;
    };
    let mut record = match sessions.pending(&name) {
        Ok(r) => r,
        Err(why) => {
            ctx.log(
                Level::Error,
                &format!(
                    "session of a token login: {}; its session limits cannot be applied",
                    clean(&why)
                ),
            );
            return PamError::SESSION_ERR;
        }
    };
    for (item, value) in record.limits().items(record.ends_at_exp, record.exp, now) {
        ctx.set_data(item, &value);
    }
    record.leader = Some(leader);
    record.opened = Some(now);
    if let Err(why) = sessions.open_session(&name, &record) {
        ctx.log(
            Level::Error,
            &format!("session of a token login: {}", clean(&why)),
        );
        return PamError::SESSION_ERR;
    }
    ctx.log(
        Level::Notice,
        &audit::session_line("open", &name, &record, now),
    );
    PamError::IGNORE
}

/// The end of a token login's session: one audit line (its facts, duration and how it
/// ended), and its record goes (it no longer counts).
pub fn close_session_with(ctx: &mut dyn PamContext, sessions: &SessionDir, now: i64) -> PamError {
    let Some(name) = ctx.getenv(SESSION_ENV) else {
        return PamError::IGNORE;
    };
    if let Ok(record) = sessions.live(&name) {
        ctx.log(
            Level::Notice,
            &audit::session_line("close", &name, &record, now),
        );
    }
    if let Err(why) = sessions.close_session(&name) {
        ctx.log(
            Level::Error,
            &format!("end of a token login's session: {}", clean(&why)),
        );
    }
    PamError::IGNORE
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The authenticate hook over any PAM context and outside world: what the tests drive with
/// fakes, and the real hook with the handle and [`World::HOST`].
pub fn authenticate_with(
    ctx: &mut dyn PamContext,
    raw_args: &[String],
    now: i64,
    world: &World,
) -> PamError {
    let args = match args::parse(raw_args) {
        Ok(a) => a,
        Err(why) => {
            ctx.log(
                Level::Error,
                &format!("{why}; refusing until the PAM stack is fixed"),
            );
            return PamError::AUTHINFO_UNAVAIL;
        }
    };
    inject_panic(&args);
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            let lines = e.to_string().replace('\n', "; ");
            ctx.log(
                Level::Error,
                &format!("config unusable, every token refused: {lines}"),
            );
            return PamError::AUTHINFO_UNAVAIL;
        }
    };
    // SPEC v2: where no granting rule can ever apply to this PAM service (sudo, polkit, a
    // screen locker in common-auth), step aside before prompting, so their own `Password: `
    // prompt is the only one the person sees, and a CI token is never asked for there.
    let service = ctx.service().unwrap_or_default();
    if !policy::may_grant_for_service(&config.rules, &service) {
        if args.debug {
            ctx.log(
                Level::Debug,
                &format!(
                    "no rule applies to PAM service {:?}; not asking for a token (PAM_IGNORE)",
                    clean(&service)
                ),
            );
        }
        return PamError::IGNORE;
    }
    let Some(account) = ctx.user().filter(|u| !u.is_empty()) else {
        ctx.log(Level::Error, "no user name for this login");
        return PamError::USER_UNKNOWN;
    };
    let first = ctx.cached_authtok();
    if first
        .as_ref()
        .is_some_and(|f| f.len() == collect::OPENSSH_CUT)
    {
        log_cut_hint(ctx);
    }
    let mut watched = CutWatch { ctx, answers: 0 };
    let collected = collect::collect(first, &mut watched);
    let ctx = watched.ctx;
    let Some(collected) = collected else {
        ctx.log(
            Level::Notice,
            &format!(
                "no answer to the ID token prompt for account {}",
                clean(&account)
            ),
        );
        return PamError::CONV_ERR;
    };
    let Some(token) = std::str::from_utf8(&collected.token)
        .ok()
        .filter(|t| looks_like_jws(t) || packed::looks_packed(t))
    else {
        // Not a token: most likely a password for the next module.
        if args.debug {
            ctx.log(
                Level::Debug,
                "answer is not JWT-shaped; passing it on (PAM_IGNORE)",
            );
        }
        // Enter at the prompt sets nothing: the next module then asks `Password: ` itself,
        // where an empty PAM_AUTHTOK would be checked as an empty password and fail.
        if !collected.token.is_empty() {
            ctx.set_authtok(&collected.token);
        }
        return PamError::IGNORE;
    };
    let rhost = ctx.rhost();
    let request = Request {
        token,
        account: &account,
        service: &service,
        rhost: rhost.as_deref(),
        now,
        uses: UseMode::Record,
    };
    let sessions = world.sessions.dir();
    let decision = decide(world, &config, &request, &sessions);
    report(ctx, &args, &config, &decision, &collected, rhost.as_deref());
    answer(ctx, &config, &decision, now, &sessions, rhost.as_deref())
}

fn decide(world: &World, config: &Config, request: &Request, sessions: &SessionDir) -> Decision {
    let disk;
    let uses: &dyn UseLedger = match world.uses {
        Uses::StateDir => {
            disk = DiskLedger {
                dir: config.defaults.state_dir.clone(),
                keep_after_exp: config.defaults.leeway,
            };
            &disk
        }
        Uses::Ledger(ledger) => ledger,
    };
    let env = Env {
        config,
        issuer_data: world.issuer_data,
        accounts: world.accounts,
        uses,
        sessions,
    };
    decision::evaluate(&env, request)
}

/// The audit line, and the client's view of a refusal.
fn report(
    ctx: &mut dyn PamContext,
    args: &ModuleArgs,
    config: &Config,
    d: &Decision,
    collected: &Collected,
    rhost: Option<&str>,
) {
    let level = match d.verdict {
        Verdict::Unavailable(_) => Level::Error,
        _ => Level::Notice,
    };
    ctx.log(level, &audit::line(d, rhost));
    if args.debug {
        for s in &d.steps {
            ctx.log(
                Level::Debug,
                &format!(
                    "step {} {}: {}",
                    s.name,
                    if s.ok { "ok" } else { "FAILED" },
                    s.detail
                ),
            );
        }
        for r in &d.rules {
            ctx.log(
                Level::Debug,
                &format!(
                    "rule {:?}: matched={} granted={} {}",
                    r.rule,
                    r.matched,
                    r.granted,
                    r.failed.as_deref().unwrap_or("")
                ),
            );
        }
    }
    if d.allowed() {
        return;
    }
    let cut = collect::looks_cut(collected);
    let to_client = match (&d.verdict, config.defaults.explain) {
        (Verdict::Deny(r), true) => {
            let hint = if cut {
                "the token was cut at 1023 characters; send it in parts (idtoken askpass)"
            } else {
                r.client_hint()
            };
            format!("{GENERIC_REFUSAL} Reason: {r}: {hint}")
        }
        _ => GENERIC_REFUSAL.to_string(),
    };
    ctx.error_message(&to_client);
}

/// Watches the answers for one of exactly the OpenSSH cut length. The hint is logged at
/// once, not with the decision: a client that cut the token usually hangs up at the part 2
/// prompt, and sshd then ends the PAM process before any decision is made.
struct CutWatch<'a> {
    ctx: &'a mut dyn PamContext,
    answers: usize,
}

impl collect::Prompter for CutWatch<'_> {
    fn prompt(&mut self, text: &str) -> Option<collect::Secret> {
        let answer = self.ctx.prompt(text);
        if self.answers == 0
            && answer
                .as_ref()
                .is_some_and(|a| a.len() == collect::OPENSSH_CUT)
        {
            log_cut_hint(self.ctx);
        }
        self.answers = self.answers.saturating_add(1);
        answer
    }
}

fn log_cut_hint(ctx: &mut dyn PamContext) {
    ctx.log(
        Level::Notice,
        "the first answer is exactly 1023 characters: OpenSSH clients cut longer answers there, so this \
         is likely a cut token; asking for part 2 (clients must send long tokens in parts with \
         SSH_ASKPASS and `idtoken askpass`, see pam_idtoken(8))",
    );
}

fn answer(
    ctx: &mut dyn PamContext,
    config: &Config,
    d: &Decision,
    now: i64,
    sessions: &SessionDir,
    rhost: Option<&str>,
) -> PamError {
    match &d.verdict {
        Verdict::Allow => {
            set_environment(ctx, d);
            prepare_session(ctx, config, d, now, sessions, rhost)
        }
        Verdict::Deny(_) => PamError::AUTH_ERR,
        Verdict::Unavailable(_) => PamError::AUTHINFO_UNAVAIL,
    }
}

/// An allowed token's session: the granting rule's limits as pam_systemd's data items (for
/// callers that run every phase in this process), and the record the session phase finds
/// through `IDTOKEN_SESSION` (for sshd, which does not). A record that cannot be written
/// refuses the login when the session needs it (limits, `max_sessions`,
/// `session_ends_at_exp`: they could not be applied or counted); otherwise the login goes
/// on unrecorded, and says so (a caller that is not root cannot write /run/idtoken).
fn prepare_session(
    ctx: &mut dyn PamContext,
    config: &Config,
    d: &Decision,
    now: i64,
    sessions: &SessionDir,
    rhost: Option<&str>,
) -> PamError {
    let rule = config
        .rules
        .iter()
        .find(|r| d.rule.as_deref() == Some(r.name.as_str()));
    let limits = rule.map(|r| r.limits.clone()).unwrap_or_default();
    let ends_at_exp = config.defaults.session_ends_at_exp;
    let needs_record =
        ends_at_exp || !limits.is_empty() || rule.is_some_and(|r| r.max_sessions.is_some());
    // An allowed token always has exp.
    let exp = d.audit_claims.exp.unwrap_or(now);
    for (item, value) in limits.items(ends_at_exp, exp, now) {
        ctx.set_data(item, &value);
    }
    let mut record = SessionRecord {
        account: d.account.clone(),
        issuer: d.issuer.clone().unwrap_or_default(),
        rule: d.rule.clone().unwrap_or_default(),
        user: d.user.clone().unwrap_or_default(),
        project_path: d.audit_claims.project_path.clone(),
        pipeline_id: d.audit_claims.pipeline_id.clone(),
        job_id: d.audit_claims.job_id.clone(),
        jti: d.audit_claims.jti.clone(),
        rhost: rhost.map(clean),
        created: now,
        exp,
        ends_at_exp,
        memory_max: None,
        tasks_max: None,
        cpu_weight: None,
        io_weight: None,
        runtime_max: None,
        leader: None,
        opened: None,
        ended_by: None,
    };
    record.set_limits(&limits);
    match sessions.create_pending(&record) {
        Ok(name) => {
            ctx.putenv(SESSION_ENV, &name);
            PamError::SUCCESS
        }
        Err(why) if needs_record => {
            ctx.log(
                Level::Error,
                &format!(
                    "token allowed, but its session cannot be recorded: {}; refusing the login \
                     (its session limits, max_sessions or session_ends_at_exp need the record)",
                    clean(&why)
                ),
            );
            PamError::AUTHINFO_UNAVAIL
        }
        Err(why) => {
            ctx.log(
                Level::Notice,
                &format!(
                    "token allowed; its session is not recorded ({}), so `idtoken sessions` \
                     will not list it",
                    clean(&why)
                ),
            );
            PamError::SUCCESS
        }
    }
}

fn set_environment(ctx: &mut dyn PamContext, d: &Decision) {
    let exp = d.audit_claims.exp.map(|e| e.to_string());
    let vars = [
        ("IDTOKEN_ISSUER", d.issuer.as_deref()),
        (
            "IDTOKEN_PROJECT_PATH",
            d.audit_claims.project_path.as_deref(),
        ),
        ("IDTOKEN_PIPELINE_ID", d.audit_claims.pipeline_id.as_deref()),
        ("IDTOKEN_JOB_ID", d.audit_claims.job_id.as_deref()),
        ("IDTOKEN_USER", d.user.as_deref()),
        ("IDTOKEN_EXP", exp.as_deref()),
    ];
    for (name, value) in vars {
        if let Some(v) = value {
            ctx.putenv(name, &clean(v));
        }
    }
}

#[cfg(feature = "panic-injection")]
#[allow(clippy::panic)] // the point of this test-only feature
fn inject_panic(args: &ModuleArgs) {
    if args.test_panic {
        panic!("injected by the test_panic module argument");
    }
}

#[cfg(not(feature = "panic-injection"))]
fn inject_panic(_args: &ModuleArgs) {}
