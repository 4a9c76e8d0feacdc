//! `idtoken check`: the decision the PAM module would make, with its trace.
//! Exit 0 allow, 1 deny, 2 could not decide.

use std::path::PathBuf;

use idtoken_core::config::{Config, DEFAULT_PATH};
use idtoken_core::decision::{self, Decision, Env, Request, UseMode, Verdict};
use idtoken_core::keystore::DiskIssuerData;
use idtoken_core::sanitize::clean;
use idtoken_core::session_record::{ReadOnlySessions, SessionDir};
use idtoken_core::uses::DiskLedger;
use idtoken_nss::Nss;
use serde_json::{Value, json};

use crate::token_input;

#[derive(clap::Args)]
pub struct Args {
    /// The local account the token would log in as.
    #[arg(long)]
    user: String,
    /// File holding the token; `-` or absent: standard input.
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[arg(long, default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// The PAM service to decide for.
    #[arg(long, default_value = "sshd")]
    service: String,
    /// The remote host (PAM_RHOST) to decide for, as sshd would set it: the client's IP
    /// address. Rules with `from` hold only for addresses inside their networks.
    #[arg(long)]
    rhost: Option<String>,
    /// Evaluate time checks at this instant (seconds since the epoch) instead of now.
    #[arg(long)]
    at: Option<i64>,
    /// Print one JSON object on the last line of output.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> u8 {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return could_not_decide(args.json, &e.to_string()),
    };
    let token = match token_input::read(args.token_file.as_deref()) {
        Ok(t) => t,
        Err(e) => return could_not_decide(args.json, &e),
    };
    let ledger = DiskLedger {
        dir: config.defaults.state_dir.clone(),
        keep_after_exp: config.defaults.leeway,
    };
    let env = Env {
        config: &config,
        issuer_data: &DiskIssuerData,
        accounts: &Nss,
        uses: &ledger,
        sessions: &ReadOnlySessions(&SessionDir::default()),
    };
    let request = Request {
        token: &token,
        account: &args.user,
        service: &args.service,
        rhost: args.rhost.as_deref(),
        now: args.at.unwrap_or_else(token_input::now),
        uses: UseMode::ReadOnly,
    };
    let d = decision::evaluate(&env, &request);
    if args.json {
        println!("{}", to_json(&d));
    } else {
        print_human(&d);
    }
    match d.verdict {
        Verdict::Allow => 0,
        Verdict::Deny(_) => 1,
        Verdict::Unavailable(_) => 2,
    }
}

fn could_not_decide(json: bool, message: &str) -> u8 {
    eprintln!("idtoken check: could not decide: {message}");
    if json {
        println!(
            "{}",
            json!({"decision": "unavailable", "reason": null, "error": message})
        );
    }
    2
}

fn print_human(d: &Decision) {
    let headline = match &d.verdict {
        Verdict::Allow => format!(
            "ALLOW: {} may log in as {:?}{} via {} (rule {:?})",
            d.user.as_deref().map(clean).unwrap_or_default(),
            d.account,
            d.typed
                .as_deref()
                .map(|t| format!(" (typed {:?})", clean(t)))
                .unwrap_or_default(),
            d.service,
            d.rule.as_deref().unwrap_or_default()
        ),
        Verdict::Deny(r) => format!("DENY: {r}"),
        Verdict::Unavailable(why) => format!("COULD NOT DECIDE: {why}"),
    };
    println!("{headline}");
    println!();
    println!("Steps (in the decision order; the first failing one decides):");
    for s in &d.steps {
        println!(
            "  [{}] {:<10} {}",
            if s.ok { " ok " } else { "FAIL" },
            s.name,
            s.detail
        );
    }
    if !d.rules.is_empty() {
        println!();
        println!("Rules:");
        for r in &d.rules {
            let state = if r.deny && r.matched {
                "DENIES (deny rule)".to_string()
            } else if r.deny {
                "deny rule, no match".to_string()
            } else if r.granted {
                "GRANTS".to_string()
            } else if r.matched {
                "matches".to_string()
            } else {
                "no match".to_string()
            };
            let grants = r
                .grants
                .as_deref()
                .map(|g| format!(" (grants {})", clean(g)))
                .unwrap_or_default();
            match &r.failed {
                Some(why) => println!("  {:<20} {state}{grants}: {why}", r.rule),
                None => println!("  {:<20} {state}{grants}", r.rule),
            }
            for why in &r.unknown {
                println!("  {:<20}   holds, as it cannot be evaluated: {why}", "");
            }
        }
    }
}

/// The SPEC's fields, plus the trace.
pub fn to_json(d: &Decision) -> Value {
    let (decision, reason) = match &d.verdict {
        Verdict::Allow => ("allow", Value::Null),
        Verdict::Deny(r) => ("deny", Value::from(r.code())),
        Verdict::Unavailable(_) => ("unavailable", Value::Null),
    };
    let error = match &d.verdict {
        Verdict::Unavailable(why) => Value::from(why.as_str()),
        _ => Value::Null,
    };
    json!({
        "decision": decision,
        "reason": reason,
        "rule": d.rule,
        "issuer": d.issuer,
        "user": d.user.as_deref().map(clean),
        "account": d.account,
        "typed": d.typed,
        "service": d.service,
        "verified": d.verified,
        "error": error,
        "claims": {
            "project_path": d.audit_claims.project_path.as_deref().map(clean),
            "pipeline_id": d.audit_claims.pipeline_id.as_deref().map(clean),
            "job_id": d.audit_claims.job_id.as_deref().map(clean),
            "jti": d.audit_claims.jti.as_deref().map(clean),
            "exp": d.audit_claims.exp,
        },
        "steps": d.steps.iter().map(|s| json!({"step": s.name.as_str(), "ok": s.ok, "detail": s.detail})).collect::<Vec<_>>(),
        "rules": d.rules.iter().map(|r| json!({
            "rule": r.rule, "deny": r.deny, "matched": r.matched, "grants": r.grants, "granted": r.granted, "failed": r.failed,
            "unknown": r.unknown
        })).collect::<Vec<_>>(),
    })
}
