//! `idtoken pack` (SPEC v3 "One answer"): the packed form of the real GitLab tokens and of
//! GitLab-shaped ones, the figures `--check` prints, `inspect` of a packed token, and the
//! refusals (a token whose packed form could not give it back, a packed one, not a JWS).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use idtoken_e2e::cli;
use idtoken_e2e::keys::{self, fixtures};
use idtoken_e2e::sandbox::Sandbox;
use serde_json::{Value, json};

fn idtoken(s: &Sandbox, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut c: Command = cli::idtoken(s);
    let mut child = c
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out: Output = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The real tokens: what the figures are measured on.
const REAL: [(&str, usize, usize); 3] = [
    ("forged_gitlabcom_kid.jwt", 1504, 726),
    ("gitlabcom_ci_job_jwt_v1_2021_cgrotz.jwt", 1052, 678),
    ("selfhosted_rgl_id_token_v2.jwt", 1162, 667),
];

#[test]
fn pack_check_prints_the_sizes_of_the_real_gitlab_tokens() {
    let s = Sandbox::new("pack-check");
    for (name, token_chars, packed_chars) in REAL {
        let file = fixtures().join("gitlab-real").join(name);
        let file = file.display().to_string();
        let (code, out, err) = idtoken(&s, &["pack", "--check", "--token-file", &file], "");
        assert_eq!(code, 0, "{name}: {err}");
        let percent = packed_chars * 100 / token_chars;
        assert_eq!(
            out,
            format!(
                "token: {token_chars} characters\npacked: {packed_chars} characters ({percent}% of the token, dictionary gitlab-1)\none answer: yes (under 1000 characters)\n"
            ),
            "{name}"
        );
        // Without --check: the packed form itself, which the core unpacks to the file's JWS.
        let (code, packed, _) = idtoken(&s, &["pack", "--token-file", &file], "");
        assert_eq!(code, 0);
        let packed = packed.trim();
        assert_eq!(packed.len(), packed_chars, "{name}");
        let jws = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            *idtoken_core::packed::unpack(packed).unwrap().jws,
            *jws.trim(),
            "{name}"
        );
        // And from stdin (`-` or no --token-file), as a CI job pipes it.
        assert_eq!(
            idtoken(&s, &["pack", "--token-file", "-"], &jws).1.trim(),
            packed
        );
        assert_eq!(idtoken(&s, &["pack"], &jws).1.trim(), packed);
    }
}

#[test]
fn pack_check_says_when_the_packed_form_does_not_fit_one_answer() {
    let s = Sandbox::new("pack-nofit");
    // 1200 characters of claim text that do not compress: a 2.6 KB token.
    let noise: String = (0..1200u32)
        .map(|i| {
            char::from(
                b"0123456789abcdefghijklmnopqrstuv"[(i.wrapping_mul(2_654_435_761) >> 27) as usize],
            )
        })
        .collect();
    let c = keys::with(keys::gitlab_claims("alice"), "noise", json!(noise));
    let t = keys::mint_gitlab_shaped(&c);
    let (code, out, _) = idtoken(&s, &["pack", "--check"], &t);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("token: {} characters", t.len()))
            && out.contains("one answer: no (1000 characters or more"),
        "{out}"
    );
}

#[test]
fn pack_refuses_what_it_cannot_give_back() {
    let s = Sandbox::new("pack-refuse");
    let t = keys::mint(&keys::gitlab_claims("alice"));
    let (h, rest) = t.split_once('.').unwrap();
    for (input, why) in [
        (
            format!("{h}=.{rest}"),
            "the header is not canonical base64url",
        ),
        ("hunter2".to_string(), "not a compact JWS"),
        (
            idtoken_core::packed::pack(&t).unwrap(),
            "the token is packed already",
        ),
    ] {
        let (code, out, err) = idtoken(&s, &["pack"], &input);
        assert_eq!(code, 2, "{why}: {out}{err}");
        assert!(out.is_empty() && err.contains(why), "{why}: {err}");
        assert!(
            !err.contains(&t[t.len() - 20..]),
            "the token is in the message"
        );
    }
}

#[test]
fn inspect_shows_a_packed_token_as_the_jws_it_unpacks_to() {
    let s = Sandbox::new("pack-inspect");
    let t = keys::mint_gitlab_shaped(&keys::gitlab_claims("alice"));
    let p = idtoken_core::packed::pack(&t).unwrap();
    let plain: Value = serde_json::from_str(&idtoken(&s, &["inspect", "--json"], &t).1).unwrap();
    let (code, out, err) = idtoken(&s, &["inspect", "--json"], &p);
    assert_eq!(code, 0, "{err}");
    let packed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(packed["claims"], plain["claims"]);
    assert_eq!(packed["header"], plain["header"]);
    assert_eq!(plain["packed"], Value::Null);
    assert_eq!(
        packed["packed"],
        json!({"dictionary": "gitlab-1", "packed_chars": p.len(), "token_chars": t.len()})
    );
    let (code, text, _) = idtoken(&s, &["inspect"], &p);
    assert_eq!(code, 0);
    assert!(
        text.contains(&format!(
            "Packed: {} characters, dictionary gitlab-1; unpacked to a {}-character JWS.",
            p.len(),
            t.len()
        )),
        "{text}"
    );
    // A damaged packed token: exit 2 and why.
    let damaged = format!("{}A", &p[..p.len() - 1]);
    let damaged = if damaged == p {
        format!("{}B", &p[..p.len() - 1])
    } else {
        damaged
    };
    let (code, _, err) = idtoken(&s, &["inspect"], &damaged);
    assert_eq!(code, 2);
    assert!(err.contains("not a packed token: packed token"), "{err}");
}

/// The reference packer of pam_idtoken(8) (PACKED TOKENS), taken from the man page itself
/// with roff's escapes undone, writes what `idtoken pack` writes, byte for byte, and refuses
/// what it refuses.
#[test]
fn the_man_pages_python_packer_writes_what_idtoken_pack_writes() {
    idtoken_e2e::require!(
        Command::new("python3").arg("--version").output().is_ok(),
        "python3 is missing"
    );
    let man =
        std::fs::read_to_string(idtoken_e2e::workspace_root().join("packaging/man/pam_idtoken.8"))
            .unwrap();
    let mut script = None;
    let mut current: Option<String> = None;
    for line in man.lines() {
        match &mut current {
            None if line.starts_with(".EX") => current = Some(String::new()),
            None => {}
            Some(_) if line.starts_with(".EE") => {
                let body = current.take().unwrap();
                if body.contains("pack.py") {
                    script = Some(body);
                }
            }
            Some(body) => {
                body.push_str(
                    &line
                        .replace("\\-", "-")
                        .replace("\\(ti", "~")
                        .replace("\\e", "\\"),
                );
                body.push('\n');
            }
        }
    }
    let s = Sandbox::new("pack-python");
    let script = s.write(
        "pack.py",
        script.expect("the man page shows pack.py").as_bytes(),
    );
    let dictionary = idtoken_e2e::workspace_root().join("pam/core/dictionaries/gitlab-1.dict");
    let python = |token: &str| {
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(&dictionary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(token.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let mut tokens: Vec<String> = REAL
        .iter()
        .map(|(name, _, _)| {
            std::fs::read_to_string(fixtures().join("gitlab-real").join(name)).unwrap()
        })
        .collect();
    for groups in [0, 6, 12] {
        let list: Vec<String> = (0..groups).map(|g| format!("hpc/group-{g}")).collect();
        let c = keys::with(keys::gitlab_claims("alice"), "groups_direct", json!(list));
        tokens.push(keys::mint_gitlab_shaped(&c));
    }
    tokens.push(keys::mint_with(
        &keys::gitlab_claims("alice"),
        keys::Key::Ed,
    ));
    for t in &tokens {
        let (code, ours, err) = idtoken(&s, &["pack"], t);
        assert_eq!(code, 0, "{err}");
        assert_eq!(python(t), (true, ours), "the Python packer differs");
    }
    let t = keys::mint(&keys::gitlab_claims("alice"));
    let (h, rest) = t.split_once('.').unwrap();
    for refused in [format!("{h}=.{rest}"), "a.b".to_string()] {
        assert_eq!(idtoken(&s, &["pack"], &refused).0, 2);
        assert_eq!(python(&refused), (false, String::new()), "{refused}");
    }
}

/// idtoken(1) shows `pack --check` on the real 1504-character token: the man page's block
/// is what the command prints for it.
#[test]
fn the_man_pages_pack_check_example_is_what_the_command_prints() {
    let man =
        std::fs::read_to_string(idtoken_e2e::workspace_root().join("packaging/man/idtoken.1"))
            .unwrap();
    let shown = man
        .split(".EX\n")
        .filter_map(|b| b.split_once(".EE").map(|(b, _)| b))
        .find(|b| b.starts_with("token: "))
        .expect("idtoken.1 shows pack --check")
        .replace("\\-", "-");
    let s = Sandbox::new("pack-man");
    let file = fixtures().join("gitlab-real/forged_gitlabcom_kid.jwt");
    let (code, out, _) = idtoken(
        &s,
        &[
            "pack",
            "--check",
            "--token-file",
            &file.display().to_string(),
        ],
        "",
    );
    assert_eq!((code, out), (0, shown));
}
