//! `idtoken sessions`: the live token sessions on this host (SPEC v3), from the records the
//! module keeps under /run/idtoken/sessions: account, issuer, rule, project, pipeline, job,
//! short jti, source address, started, ends, and the logind session when there is one.

use std::path::PathBuf;

use clap::Parser;
use idtoken_core::sanitize::clean;
use idtoken_core::session_record::{SessionDir, SessionRecord, process_alive};
use idtoken_core::timefmt::utc;
use serde_json::{Value, json};

#[derive(Parser)]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the records are (the module's: /run/idtoken/sessions).
    #[arg(long, default_value = idtoken_core::session_record::SESSIONS_DIR, hide = true)]
    pub sessions_dir: PathBuf,
}

pub fn run(args: &Args) -> u8 {
    let dir = SessionDir {
        dir: args.sessions_dir.clone(),
    };
    let now = crate::token_input::now();
    let records = match dir.current_read_only(now, &process_alive) {
        Ok(r) => r,
        Err(why) => {
            eprintln!("idtoken sessions: {why}");
            return 2;
        }
    };
    if args.json {
        let list: Vec<Value> = records.iter().map(|(name, r)| to_json(name, r)).collect();
        println!("{}", json!({ "sessions": list }));
        return 0;
    }
    if records.is_empty() {
        println!("no live token sessions");
        return 0;
    }
    for (name, r) in &records {
        println!("{}", line(name, r));
    }
    0
}

/// The logind session the record's process is in: its cgroup path's `session-N.scope`.
pub fn logind_session(pid: Option<u32>) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{}/cgroup", pid?)).ok()?;
    text.split(['/', '\n'])
        .find_map(|part| part.strip_prefix("session-")?.strip_suffix(".scope"))
        .map(str::to_string)
}

/// The first 8 characters of a jti: enough to tell sessions apart, not a credential.
fn short(jti: &Option<String>) -> String {
    jti.as_deref()
        .map(|j| clean(j).chars().take(8).collect())
        .unwrap_or_else(|| "-".to_string())
}

fn state(r: &SessionRecord) -> &'static str {
    if r.leader.is_some() {
        "live"
    } else {
        "pending"
    }
}

fn to_json(name: &str, r: &SessionRecord) -> Value {
    json!({
        "id": name,
        "state": state(r),
        "account": r.account,
        "issuer": r.issuer,
        "rule": r.rule,
        "user": r.user,
        "project_path": r.project_path,
        "pipeline_id": r.pipeline_id,
        "job_id": r.job_id,
        "jti": short(&r.jti),
        "rhost": r.rhost,
        "started": r.opened.unwrap_or(r.created),
        "exp": r.exp,
        "ends": r.ends(),
        "leader": r.leader,
        "logind_session": logind_session(r.leader),
    })
}

fn line(name: &str, r: &SessionRecord) -> String {
    let dash = |v: &Option<String>| v.as_deref().map(clean).unwrap_or_else(|| "-".into());
    format!(
        "{} {} account={} issuer={} rule={} user={} project_path={} pipeline_id={} job_id={} jti={} \
         rhost={} started={} ends={} logind_session={}",
        name.get(..8).unwrap_or(name),
        state(r),
        clean(&r.account),
        clean(&r.issuer),
        clean(&r.rule),
        clean(&r.user),
        dash(&r.project_path),
        dash(&r.pipeline_id),
        dash(&r.job_id),
        short(&r.jti),
        dash(&r.rhost),
        utc(r.opened.unwrap_or(r.created)),
        r.ends().map(utc).unwrap_or_else(|| "-".into()),
        logind_session(r.leader).unwrap_or_else(|| "-".into()),
    )
}
