//! The audit line: one per decision, `key=value` pairs that a log pipeline can parse.
//! Claim values come from the token, so they are cleaned: control characters stripped (no
//! forged log lines), quotes escaped, length capped. The token itself is never here.

use std::fmt::Write;

use crate::decision::{Decision, Verdict};
use crate::sanitize::clean;

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

#[cfg(test)]
mod tests {
    use super::*;

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
