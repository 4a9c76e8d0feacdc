//! pam-drive: drives the real libpam through one service, as an application would, and
//! prints what happened as one JSON line. The PAM tests run it inside `isolate`, so the
//! module's syslog lines reach the test's socket.
//!
//!   pam-drive --confdir DIR --service NAME --user ACCOUNT [--rhost HOST] [--answers-file FILE]
//!             [--account] [--open-session]
//!
//! FILE holds one answer per line, given in order to the module's prompts; a line
//! `<NO-ANSWER>` makes the conversation fail at that prompt (a client that gives up).
//! `--account`: after a successful authentication, the account phase (`pam_acct_mgmt`, as
//! sshd and su run it before setcred; its result as "account", a failure ending the run's
//! phases there like the login it fails).
//! `--open-session`: after a successful authentication, the session phase too (its result
//! as "session"; messages modules send there join "messages").
//! Output: {"rc":..,"rc_name":..,"account":..,"setcred":..,"session":..,"prompts":[..],"messages":[..],"env":{..}}.

use idtoken_e2e::libpam::{Handle, PAM_RHOST};
use serde_json::{Map, Value, json};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let need =
        |name: &str| arg(&args, name).unwrap_or_else(|| panic!("pam-drive: {name} is required"));
    let answers: Vec<Option<String>> = match arg(&args, "--answers-file") {
        Some(f) => std::fs::read_to_string(&f)
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .lines()
            .map(|l| {
                if l == "<NO-ANSWER>" {
                    None
                } else {
                    Some(l.to_string())
                }
            })
            .collect(),
        None => Vec::new(),
    };
    let mut h = Handle::start(
        &need("--confdir"),
        &need("--service"),
        &need("--user"),
        answers,
    );
    if let Some(rhost) = arg(&args, "--rhost") {
        h.set_item(PAM_RHOST, &rhost);
    }
    let rc = h.authenticate();
    let account = (args.iter().any(|a| a == "--account") && rc == 0).then(|| h.acct_mgmt());
    let setcred = h.setcred();
    let session =
        (args.iter().any(|a| a == "--open-session") && rc == 0 && account.unwrap_or(0) == 0)
            .then(|| h.open_session());
    let env: Map<String, Value> = h
        .env()
        .into_iter()
        .map(|(k, v)| (k, Value::from(v)))
        .collect();
    println!(
        "{}",
        json!({"rc": rc, "rc_name": h.strerror(rc), "account": account, "setcred": setcred, "session": session, "prompts": h.client.prompts,
               "messages": h.client.messages, "env": env})
    );
}
