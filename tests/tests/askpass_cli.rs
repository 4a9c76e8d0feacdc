//! `idtoken askpass` and the `idtoken-askpass` name: the parts a prompt asks for, and
//! refusals of every other prompt.

use std::process::Command;

use idtoken_e2e::sandbox::Sandbox;

fn token() -> String {
    (0..2345)
        .map(|i| char::from(b'A' + (i % 26) as u8))
        .collect()
}

fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.env("IDTOKEN", token()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn askpass_answers_parts_and_refuses_other_prompts() {
    let bin = idtoken_e2e::idtoken_bin();
    let s = Sandbox::new("askpass");
    let link = s.path("idtoken-askpass");
    std::os::unix::fs::symlink(&bin, &link).unwrap();
    let t = token();
    for (prompt, expect) in [
        ("ID token: ", &t[..1000]),
        ("(ci@login1) ID token (part 2): ", &t[1000..2000]),
        ("ID token (part 3): ", &t[2000..]),
        ("ID token (part 4): ", ""),
    ] {
        let (code, out) = run(Command::new(&bin).args(["askpass", prompt]));
        assert_eq!(
            (code, out.as_str()),
            (0, format!("{expect}\n").as_str()),
            "idtoken askpass {prompt:?}"
        );
        let (code, out) = run(Command::new(&link).arg(prompt));
        assert_eq!(
            (code, out.as_str()),
            (0, format!("{expect}\n").as_str()),
            "idtoken-askpass {prompt:?}"
        );
    }
    for prompt in [
        "Password: ",
        "(ci@login1) Password: ",
        "Are you sure you want to continue connecting (yes/no)?",
    ] {
        let (code, out) = run(Command::new(&link).arg(prompt));
        assert_ne!(code, 0, "{prompt:?} must be refused");
        assert!(out.is_empty(), "nothing printed for {prompt:?}");
    }
    let out = Command::new(&link)
        .arg("ID token: ")
        .env_remove("IDTOKEN")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("IDTOKEN"));
}
