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
    };
}

pub fn authenticate(pamh: &Pam, args: &[String]) -> PamError {
    let mut ctx = PamHandleContext { pamh };
    authenticate_with(&mut ctx, args, now(), &World::HOST)
}

pub fn setcred(_pamh: &Pam, _args: &[String]) -> PamError {
    // Nothing to establish, but PAM_SUCCESS: sshd fails the login if setcred errs.
    PamError::SUCCESS
}

pub fn ignore(_pamh: &Pam, _args: &[String]) -> PamError {
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
    let decision = decide(world, &config, &request);
    report(ctx, &args, &config, &decision, &collected, rhost.as_deref());
    answer(ctx, &config, &decision, now)
}

fn decide(world: &World, config: &Config, request: &Request) -> Decision {
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

fn answer(ctx: &mut dyn PamContext, config: &Config, d: &Decision, now: i64) -> PamError {
    match &d.verdict {
        Verdict::Allow => {
            set_environment(ctx, d);
            if config.defaults.session_ends_at_exp {
                end_session_at_exp(ctx, d, now);
            }
            PamError::SUCCESS
        }
        Verdict::Deny(_) => PamError::AUTH_ERR,
        Verdict::Unavailable(_) => PamError::AUTHINFO_UNAVAIL,
    }
}

/// The PAM data item pam_systemd (systemd >= 244) reads to limit the session scope's
/// runtime: the session, and what runs in it, ends when the token expires.
pub const RUNTIME_MAX_SEC: &str = "systemd.runtime_max_sec";

/// Asks pam_systemd to end the session at the token's exp: whole seconds from now, at
/// least 1 (a token allowed within the leeway after exp still gets a session of 1 s).
fn end_session_at_exp(ctx: &mut dyn PamContext, d: &Decision, now: i64) {
    let Some(exp) = d.audit_claims.exp else {
        return; // an allowed token always has exp; nothing to limit otherwise
    };
    let seconds = exp.saturating_sub(now).max(1);
    ctx.set_data(RUNTIME_MAX_SEC, &seconds.to_string());
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
