//! `idtoken revoke` and the revocation list (SPEC v3, reason `revoked`), end to end: the
//! command writes, lists and removes entries (atomically, under a lock, refusing an unsafe
//! directory), `idtoken check` names the entry, and the built module refuses a revoked
//! token through the real libpam and through a real sshd, while an unsafe list makes
//! logins unavailable, never open.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use idtoken_e2e::cli::{check, idtoken};
use idtoken_e2e::keys::{self, mint, now, with};
use idtoken_e2e::pam::{self, PAM_AUTH_ERR, PAM_AUTHINFO_UNAVAIL, PAM_SUCCESS, PamHarness};
use idtoken_e2e::require;
use idtoken_e2e::sandbox::{Sandbox, set_mode};
use idtoken_e2e::sshd::{self, Sshd};
use serde_json::{Value, json};

const RULE: &str = "[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n";

/// The revocation list's directory (0755) and path in a sandbox.
fn list_path(sb: &Sandbox) -> PathBuf {
    let dir = sb.path("revoked");
    std::fs::create_dir_all(&dir).unwrap();
    set_mode(&dir, 0o755);
    dir.join("revocations")
}

/// The standard config (key A, own-account rule) with its revocation list in the sandbox.
fn config(sb: &Sandbox) -> (PathBuf, PathBuf) {
    let list = list_path(sb);
    sb.key_cache(&[keys::Key::A]);
    let config = sb.config(&format!("revocations = \"{}\"", list.display()), RULE);
    (config, list)
}

fn revoke(sb: &Sandbox, config: &Path, args: &[&str]) -> Output {
    idtoken(sb)
        .arg("revoke")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn listed(sb: &Sandbox, config: &Path) -> Value {
    let o = revoke(sb, config, &["--list", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn ids(list: &Value) -> Vec<String> {
    list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// The id `idtoken revoke` printed: `revoked ID: ...`.
fn revoked_id(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout);
    let first = out.lines().next().unwrap_or_default();
    first
        .strip_prefix("revoked ")
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("no id in {out:?}"))
        .to_string()
}

/// A token of `pipeline` for `user`, valid now.
fn token(user: &str, pipeline: &str) -> String {
    let jti = format!("jti-{user}-{pipeline}-{}-{}", now(), std::process::id());
    let c = with(
        keys::live_claims(user, &jti),
        "pipeline_id",
        json!(pipeline),
    );
    mint(&c)
}

#[test]
fn revoke_adds_lists_and_removes_entries_atomically() {
    let sb = Sandbox::new("revoke-cli");
    let (config, list) = config(&sb);
    assert_eq!(
        listed(&sb, &config)["entries"],
        json!([]),
        "no file, no entry"
    );

    let o = revoke(
        &sb,
        &config,
        &["--pipeline", "5001", "--reason", "token in a job log"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let id = revoked_id(&o);
    let meta = std::fs::metadata(&list).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o644);
    if meta.uid() != 0 {
        // Not root: the file is this process's, which the module accepts too.
        assert_eq!(meta.uid(), std::fs::metadata(sb.path(".")).unwrap().uid());
    }
    let entries = std::fs::read_dir(list.parent().unwrap()).unwrap().count();
    assert_eq!(entries, 1, "a temporary file was left beside the list");

    let l = listed(&sb, &config);
    let e = &l["entries"][0];
    assert_eq!(e["id"], json!(id));
    assert_eq!(e["match"], json!({"pipeline_id": "5001"}));
    assert_eq!(e["reason"], json!("token in a job log"));
    assert_eq!(e["in_force"], json!(true));
    // The standard config: leeway 60, max_lifetime 86400.
    let created = e["created"].as_i64().unwrap();
    assert_eq!(e["lapses_at"].as_i64().unwrap(), created + 60 + 86_400 + 60);
    assert_eq!(l["in_force"], json!(1));
    let human = revoke(&sb, &config, &["--list"]);
    assert!(
        text(&human).contains(&id) && text(&human).contains("token in a job log"),
        "{}",
        text(&human)
    );

    let o = revoke(&sb, &config, &["--user", "mallory"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let second = revoked_id(&o);
    assert_eq!(ids(&listed(&sb, &config)), vec![id.clone(), second.clone()]);

    let o = revoke(&sb, &config, &["--remove", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(ids(&listed(&sb, &config)), vec![second]);
    let o = revoke(&sb, &config, &["--remove", &id]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an id no longer there: {}",
        text(&o)
    );
}

#[test]
fn revoke_refuses_what_it_cannot_do_with_exit_2_and_writes_nothing() {
    let sb = Sandbox::new("revoke-errors");
    let (config, list) = config(&sb);
    assert_eq!(revoke(&sb, &config, &["--jti", "j"]).status.code(), Some(0));
    let before = std::fs::read(&list).unwrap();
    let unchanged = |why: &str| assert_eq!(std::fs::read(&list).unwrap(), before, "{why}");

    for (args, why) in [
        (vec![], "nothing to revoke"),
        (vec!["--rule", "nosuch"], "a rule the config does not have"),
        (
            vec!["--user", "u", "--issuer", "nosuch"],
            "an unknown issuer",
        ),
        (vec!["--list", "--jti", "j"], "two things at once"),
        (vec!["--remove", "Not/An/Id"], "a malformed id"),
        (
            vec!["--list", "--end-sessions"],
            "--end-sessions with --list",
        ),
    ] {
        let o = revoke(&sb, &config, &args);
        assert_eq!(o.status.code(), Some(2), "{why}: {}", text(&o));
        unchanged(why);
    }

    // Several issuers: a pipeline id alone is ambiguous.
    let two = sb.write(
        "two.toml",
        format!(
            "[defaults]\nrevocations = \"{}\"\n[[issuer]]\nname = \"a\"\nurl = \"https://a.example\"\naudiences = [\"x\"]\n\
             [[issuer]]\nname = \"b\"\nurl = \"https://b.example\"\naudiences = [\"x\"]\n",
            list.display()
        )
        .as_bytes(),
    );
    assert_eq!(
        revoke(&sb, &two, &["--pipeline", "1"]).status.code(),
        Some(2)
    );
    unchanged("ambiguous issuer");
    let o = revoke(&sb, &two, &["--pipeline", "1", "--issuer", "b"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // A directory others may write: whoever can could swap the list; it is not written.
    let before = std::fs::read(&list).unwrap();
    let dir = list.parent().unwrap();
    set_mode(dir, 0o777);
    let o = revoke(&sb, &config, &["--jti", "k"]);
    set_mode(dir, 0o755);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("chmod go-w"), "{}", text(&o));
    assert_eq!(std::fs::read(&list).unwrap(), before);

    // A list the module would refuse is not silently replaced.
    set_mode(&list, 0o666);
    let o = revoke(&sb, &config, &["--jti", "k"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(revoke(&sb, &config, &["--list"]).status.code(), Some(2));
    set_mode(&list, 0o644);
    std::fs::write(&list, b"{\"version\": 1, \"entries\": [").unwrap();
    assert_eq!(revoke(&sb, &config, &["--jti", "k"]).status.code(), Some(2));
    assert_eq!(
        std::fs::read(&list).unwrap(),
        b"{\"version\": 1, \"entries\": ["
    );

    // A directory that does not exist (a shared filesystem not mounted) is not created.
    let elsewhere = sb.config(
        &format!(
            "revocations = \"{}\"",
            sb.path("absent/revocations").display()
        ),
        RULE,
    );
    assert_eq!(
        revoke(&sb, &elsewhere, &["--jti", "k"]).status.code(),
        Some(2)
    );
    assert!(!sb.path("absent").exists());
}

/// Lapsed entries are marked by --list and dropped by the next write.
#[test]
fn revoke_prunes_lapsed_entries_when_it_writes() {
    let sb = Sandbox::new("revoke-prune");
    let (config, list) = config(&sb);
    let t = now();
    let old = t - 86_400 - 200; // lapsed: created + 60 + 86400 + 60 < now
    std::fs::write(
        &list,
        format!(
            "{{\"version\": 1, \"entries\": [\n\
             {{\"id\":\"old\",\"match\":{{\"user\":\"a\"}},\"reason\":\"\",\"created\":{old},\"lapses_at\":{}}},\n\
             {{\"id\":\"new\",\"match\":{{\"user\":\"b\"}},\"reason\":\"\",\"created\":{t},\"lapses_at\":{}}}\n]}}\n",
            old + 86_520,
            t + 86_520
        ),
    )
    .unwrap();
    set_mode(&list, 0o644);
    let l = listed(&sb, &config);
    assert_eq!(ids(&l), vec!["old", "new"]);
    assert_eq!(l["entries"][0]["in_force"], json!(false));
    assert_eq!(l["in_force"], json!(1));
    assert!(text(&revoke(&sb, &config, &["--list"])).contains("LAPSED"));
    let o = revoke(&sb, &config, &["--jti", "x"]);
    assert!(text(&o).contains("1 lapsed removed"), "{}", text(&o));
    let l = listed(&sb, &config);
    assert_eq!(ids(&l)[0], "new");
    assert_eq!(ids(&l).len(), 2);
}

/// Two admins revoking at once: the directory lock keeps every entry.
#[test]
fn concurrent_revokes_lose_no_entry() {
    let sb = Sandbox::new("revoke-race");
    let (config, _list) = config(&sb);
    let children: Vec<_> = (0..12)
        .map(|i| {
            idtoken(&sb)
                .arg("revoke")
                .arg("--config")
                .arg(&config)
                .args(["--jti", &format!("jti-{i}")])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(ids(&listed(&sb, &config)).len(), 12);
}

#[test]
fn check_names_the_revocation_entry_and_its_reason() {
    let sb = Sandbox::new("revoke-check");
    let (config, _) = config(&sb);
    let o = revoke(
        &sb,
        &config,
        &["--pipeline", "7001", "--reason", "runner compromised"],
    );
    let id = revoked_id(&o);
    let (code, j, out) = check(&sb, &config, &token("alice", "7001"), "alice", now(), &[]);
    assert_eq!(code, 1, "{}", text(&out));
    assert_eq!(j["reason"], json!("revoked"));
    let step = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == json!("revocation") || s["name"] == json!("revocation"))
        .unwrap_or_else(|| panic!("no revocation step: {j}"));
    let detail = step.to_string();
    assert!(
        detail.contains(&id) && detail.contains("runner compromised"),
        "{detail}"
    );
    let human = idtoken(&sb)
        .args(["check", "--user", "alice", "--config"])
        .arg(&config)
        .arg("--token-file")
        .arg(sb.token_file("t", &token("alice", "7001")))
        .output()
        .unwrap();
    assert!(text(&human).contains(&id), "{}", text(&human));
    let (code, j, _) = check(&sb, &config, &token("alice", "7002"), "alice", now(), &[]);
    assert_eq!((code, j["decision"].clone()), (0, json!("allow")));
}

#[test]
fn through_libpam_a_revoked_pipeline_is_refused_and_an_unsafe_list_is_unavailable() {
    require!(
        pam::can_isolate(),
        "the libpam tests need root (mount namespaces)"
    );
    let h = PamHarness::new("revoke-pam");
    let (config, list) = config(&h.sandbox);
    h.module_only("test", "");
    let o = revoke(&h.sandbox, &config, &["--pipeline", "6001"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let d = h.drive("test", "alice", &[Some(&token("alice", "6001"))], &[]);
    assert_eq!(d.rc, PAM_AUTH_ERR, "{d:?}");
    let line = h.audit(1).pop().unwrap_or_default();
    assert!(
        line.contains("decision=deny reason=revoked") && line.contains("pipeline_id=6001"),
        "{line}"
    );
    let d = h.drive("test", "alice", &[Some(&token("alice", "6002"))], &[]);
    assert_eq!(d.rc, PAM_SUCCESS, "another pipeline: {d:?}");

    // Fail closed: a list (or its directory) others may write makes logins unavailable.
    let other = token("alice", "6002");
    set_mode(&list, 0o666);
    let d = h.drive("test", "alice", &[Some(&other)], &[]);
    set_mode(&list, 0o644);
    assert_eq!(d.rc, PAM_AUTHINFO_UNAVAIL, "{d:?}");
    set_mode(list.parent().unwrap(), 0o777);
    let d = h.drive("test", "alice", &[Some(&other)], &[]);
    set_mode(list.parent().unwrap(), 0o755);
    assert_eq!(d.rc, PAM_AUTHINFO_UNAVAIL, "{d:?}");
    let line = h.audit(4).pop().unwrap_or_default();
    assert!(line.contains("reason=unavailable"), "{line}");
    assert_eq!(
        h.drive("test", "alice", &[Some(&other)], &[]).rc,
        PAM_SUCCESS
    );
}

#[test]
fn through_sshd_a_revoked_pipeline_is_refused_and_an_unsafe_list_is_unavailable() {
    require!(
        sshd::available().is_ok(),
        "{}",
        sshd::available().err().unwrap_or_default()
    );
    let pam = PamHarness::new("revoke-ssh");
    let (config, list) = config(&pam.sandbox);
    let s = Sshd::start(
        pam,
        "auth [success=done ignore=ignore default=die] MODULE config=CONFIG",
    );
    let sb = &s.pam.sandbox;
    let o = revoke(sb, &config, &["--pipeline", "8001", "--reason", "leaked"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let remote = "echo LOGIN-OK; env | grep ^IDTOKEN_PIPELINE_ID";
    let audit = |n: usize| {
        let lines = s
            .pam
            .syslog
            .wait_for("decision=", n, Duration::from_secs(5));
        assert_eq!(lines.len(), n, "audit lines: {lines:?}");
        lines.last().cloned().unwrap_or_default()
    };

    let o = s.login_with_askpass("alice", &token("alice", "8001"), remote);
    assert!(
        !o.status.success() && !text(&o).contains("LOGIN-OK"),
        "{}",
        text(&o)
    );
    let line = audit(1);
    assert!(
        line.contains("reason=revoked") && line.contains("pipeline_id=8001"),
        "{line}"
    );

    let o = s.login_with_askpass("alice", &token("alice", "8002"), remote);
    assert!(
        o.status.success() && text(&o).contains("IDTOKEN_PIPELINE_ID=8002"),
        "{}\n{}",
        text(&o),
        s.sshd_log()
    );
    assert!(audit(2).contains("decision=allow"));

    set_mode(&list, 0o646);
    let o = s.login_with_askpass("alice", &token("alice", "8002"), remote);
    set_mode(&list, 0o644);
    assert!(!text(&o).contains("LOGIN-OK"), "{}", text(&o));
    assert!(audit(3).contains("reason=unavailable"));
}

/// docs/operations.md's example, extracted from the doc itself and run line by line against a
/// sandbox config (each `idtoken SUBCOMMAND` gets `--config`): every line exits 0, and the
/// token of the pipeline it revokes is then refused.
#[test]
fn the_readme_revoke_example_runs() {
    let span = idtoken_e2e::docs::span("docs/operations.md", "revoke-example");
    let block = idtoken_e2e::docs::fenced(&span, "sh", "the revoke-example span");
    let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() >= 3,
        "no revoke-example block in docs/operations.md: {lines:?}"
    );
    let sb = Sandbox::new("revoke-readme");
    let (config, _) = config(&sb);
    let wrapper = "idtoken() { sub=$1; shift; \"$IDTOKEN_BIN\" \"$sub\" --config \"$IDTOKEN_CONFIG\" \"$@\"; }";
    let mut revoked_pipeline = None;
    for line in &lines {
        assert!(line.starts_with("idtoken revoke"), "{line}");
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{wrapper}\n{line}"))
            .env("IDTOKEN_BIN", idtoken_e2e::idtoken_bin())
            .env("IDTOKEN_CONFIG", &config)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{line}: {}", text(&o));
        if line.contains("--json") {
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            assert!(v["in_force"].as_u64().unwrap() >= 1, "{v}");
        }
        if let Some(rest) = line.strip_prefix("idtoken revoke --pipeline ") {
            revoked_pipeline = rest.split_whitespace().next().map(str::to_string);
        }
    }
    let pipeline = revoked_pipeline.expect("the example revokes a pipeline");
    let (code, j, _) = check(
        &sb,
        &config,
        &token("carol", &pipeline),
        "carol",
        now(),
        &[],
    );
    assert_eq!((code, j["reason"].clone()), (1, json!("revoked")), "{j}");
}

/// `status` reports the list: the gauges count the entries in force, and an unsafe list
/// reads as unusable (exit 1), as the module would treat it.
#[test]
fn status_reports_the_revocations_in_force_and_an_unusable_list() {
    let sb = Sandbox::new("revoke-status");
    let (config, list) = config(&sb);
    let status = |extra: &str| {
        idtoken(&sb)
            .args(["status", extra, "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let o = status("--prometheus");
    assert!(
        text(&o)
            .lines()
            .any(|l| l == "idtoken_revocations_in_force 0"),
        "{}",
        text(&o)
    );
    assert_eq!(
        revoke(&sb, &config, &["--user", "mallory"]).status.code(),
        Some(0)
    );
    let o = status("--prometheus");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for line in [
        "idtoken_revocations_in_force 1",
        "idtoken_revocation_list_usable 1",
    ] {
        assert!(text(&o).lines().any(|l| l == line), "{line}: {}", text(&o));
    }
    set_mode(&list, 0o664);
    let o = status("--json");
    set_mode(&list, 0o644);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["revocations"]["usable"], json!(false), "{v}");
    assert!(
        v["revocations"]["problem"]
            .as_str()
            .unwrap()
            .contains("chmod go-w"),
        "{v}"
    );
}
