//! The audit line: one per decision, `key=value` pairs that a log pipeline can parse.
//! Claim values come from the token, so they are cleaned: control characters stripped (no
//! forged log lines), quotes escaped, length capped. The token itself is never here.

use std::fmt::Write;

use crate::decision::{Decision, Verdict};
use crate::sanitize::clean;
use crate::session_record::SessionRecord;

/// A value as it stands in the line: bare when it is plain, quoted otherwise, `-` if absent.
fn field(out: &mut String, key: &str, value: Option<&str>) {
    let v = value.map(clean);
    let _ = match v.as_deref() {
        None | Some("") => write!(out, " {key}=-"),
        Some(v)
            if v.chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' && c != '=') =>
        {
            write!(out, " {key}={v}")
        }
        Some(v) => write!(
            out,
            " {key}=\"{}\"",
            v.replace('\\', "\\\\").replace('"', "\\\"")
        ),
    };
}

/// The audit line for a decision, without the syslog prefix.
pub fn line(d: &Decision, rhost: Option<&str>) -> String {
    let mut out = String::with_capacity(256);
    let (decision, reason) = match &d.verdict {
        Verdict::Allow => ("allow", None),
        Verdict::Deny(r) => ("deny", Some(r.code())),
        Verdict::Unavailable(_) => ("deny", Some("unavailable")),
    };
    out.push_str("decision=");
    out.push_str(decision);
    field(&mut out, "reason", reason);
    field(&mut out, "service", Some(&d.service));
    field(&mut out, "account", Some(&d.account));
    // The name as typed, only when NSS calls the account otherwise (SPEC v3).
    if let Some(typed) = &d.typed {
        field(&mut out, "typed", Some(typed));
    }
    field(&mut out, "issuer", d.issuer.as_deref());
    field(&mut out, "user", d.user.as_deref());
    field(
        &mut out,
        "project_path",
        d.audit_claims.project_path.as_deref(),
    );
    field(
        &mut out,
        "pipeline_id",
        d.audit_claims.pipeline_id.as_deref(),
    );
    field(&mut out, "job_id", d.audit_claims.job_id.as_deref());
    field(&mut out, "jti", d.audit_claims.jti.as_deref());
    field(&mut out, "rule", d.rule.as_deref());
    field(&mut out, "rhost", rhost);
    // Claims read before the signature verified are the sender's word only.
    out.push_str(if d.verified {
        " verified=yes"
    } else {
        " verified=no"
    });
    if let Verdict::Unavailable(why) = &d.verdict {
        field(&mut out, "problem", Some(why));
    }
    out
}

/// The audit line of a token session opening (`event` "open") or closing ("close", with
/// its duration and how it ended), with the session's facts (SPEC v3).
pub fn session_line(event: &str, id: &str, r: &SessionRecord, now: i64) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("session=");
    out.push_str(event);
    field(&mut out, "id", Some(id.get(..8).unwrap_or(id)));
    field(&mut out, "account", Some(&r.account));
    field(&mut out, "issuer", Some(&r.issuer));
    field(&mut out, "rule", Some(&r.rule));
    field(&mut out, "user", Some(&r.user));
    field(&mut out, "project_path", r.project_path.as_deref());
    field(&mut out, "pipeline_id", r.pipeline_id.as_deref());
    field(&mut out, "job_id", r.job_id.as_deref());
    field(&mut out, "jti", r.jti.as_deref());
    field(&mut out, "rhost", r.rhost.as_deref());
    if event == "close" {
        let start = r.opened.unwrap_or(r.created);
        field(
            &mut out,
            "duration",
            Some(&format!("{}s", now.saturating_sub(start).max(0))),
        );
        field(&mut out, "how", Some(r.how_ended(now)));
    } else {
        // Seconds since the epoch, like exp.
        field(&mut out, "ends", r.ends().map(|t| t.to_string()).as_deref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_lines_say_what_opened_and_how_it_ended() {
        let mut r = SessionRecord {
            account: "alice".into(),
            issuer: "gitlab".into(),
            rule: "ci".into(),
            user: "alice".into(),
            project_path: Some("hpc/app".into()),
            pipeline_id: Some("5001".into()),
            job_id: None,
            jti: Some("j-1".into()),
            rhost: Some("10.0.0.7".into()),
            created: 1000,
            exp: 1300,
            ends_at_exp: true,
            memory_max: None,
            tasks_max: None,
            cpu_weight: None,
            io_weight: None,
            runtime_max: Some(120),
            leader: Some(7),
            opened: Some(1010),
            ended_by: None,
        };
        let open = session_line("open", "0123456789abcdef0123456789abcdef", &r, 1010);
        assert_eq!(
            open,
            "session=open id=01234567 account=alice issuer=gitlab rule=ci user=alice \
             project_path=hpc/app pipeline_id=5001 job_id=- jti=j-1 rhost=10.0.0.7 \
             ends=1130"
        );
        let close = |r: &SessionRecord, now| session_line("close", "0123456789abcdef", r, now);
        assert!(
            close(&r, 1070).ends_with(" duration=60s how=logout"),
            "{}",
            close(&r, 1070)
        );
        assert!(close(&r, 1130).ends_with(" duration=120s how=runtime_max"));
        r.runtime_max = None;
        assert!(close(&r, 1300).ends_with(" duration=290s how=exp"));
        r.ended_by = Some("revoked".into());
        assert!(close(&r, 1100).ends_with(" how=revoked"));
    }

    #[test]
    fn fields_are_quoted_when_needed() {
        let mut s = String::new();
        field(&mut s, "k", Some("plain/value-1"));
        field(&mut s, "q", Some("has space \"and\" quote"));
        field(&mut s, "n", None);
        field(&mut s, "e", Some("a=b"));
        assert_eq!(
            s,
            " k=plain/value-1 q=\"has space \\\"and\\\" quote\" n=- e=\"a=b\""
        );
    }
}
