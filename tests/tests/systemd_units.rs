//! The refresh units in packaging/systemd pass `systemd-analyze verify`, and say what the
//! contract asks: a sandboxed oneshot that may write the cache directory only, run every
//! 15 minutes with a randomized delay, catching up after downtime. The textfile unit
//! (metrics for node_exporter) runs after it in a sandbox where the key caches are
//! read-only, and its ExecStart line, run as root against a textfile directory whose
//! owner plants symlinks (or swaps the directory for one), never touches the key cache:
//! the drop-in it replaced is run the same way as a control, and overwrites the cache.
//!
//! `verify` insists that ExecStart's binary exists, and it is not installed here, so a copy
//! of the units is verified with ExecStart pointing at the built `idtoken`; `--man=no`
//! because the man pages named in Documentation= are not installed either.

use std::path::{Path, PathBuf};
use std::process::Command;

use idtoken_e2e::sandbox::Sandbox;
use idtoken_e2e::{idtoken_bin, require, workspace_root};

const INSTALLED_BIN: &str = "/usr/bin/idtoken";

fn unit(name: &str) -> String {
    let p = workspace_root().join("packaging/systemd").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn systemd_analyze() -> Option<PathBuf> {
    ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Lines of a unit that set `key`, values only.
fn values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let analyze = systemd_analyze();
    require!(
        analyze.is_some(),
        "systemd-analyze is missing (apt-get install systemd)"
    );
    let Some(analyze) = analyze else { return };
    let sb = Sandbox::new("units");
    let bin = idtoken_bin().display().to_string();
    let service = unit("idtoken-refresh.service");
    assert!(service.contains(INSTALLED_BIN));
    sb.write(
        "idtoken-refresh.service",
        service.replace(INSTALLED_BIN, &bin).as_bytes(),
    );
    sb.write(
        "idtoken-refresh.timer",
        unit("idtoken-refresh.timer").as_bytes(),
    );
    let textfile = unit("idtoken-textfile.service");
    assert!(textfile.contains(INSTALLED_BIN));
    sb.write(
        "idtoken-textfile.service",
        textfile.replace(INSTALLED_BIN, &bin).as_bytes(),
    );
    let out = Command::new(analyze)
        .arg("verify")
        .arg("--man=no")
        .arg(sb.path("idtoken-refresh.service"))
        .arg(sb.path("idtoken-refresh.timer"))
        .arg(sb.path("idtoken-textfile.service"))
        .current_dir(Path::new(&sb.dir))
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Other units on the host may draw unrelated notes; ours must draw none.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("idtoken-")).collect();
    assert!(out.status.success(), "verify failed:\n{stderr}");
    assert!(ours.is_empty(), "verify complained:\n{stderr}");
}

#[test]
fn service_is_a_sandboxed_oneshot_writing_the_cache_dir_only() {
    let s = unit("idtoken-refresh.service");
    assert_eq!(values(&s, "Type"), ["oneshot"]);
    assert_eq!(
        values(&s, "ExecStart"),
        [format!("{INSTALLED_BIN} refresh")]
    );
    assert_eq!(values(&s, "ProtectSystem"), ["strict"]);
    assert_eq!(values(&s, "ReadWritePaths"), ["/var/lib/idtoken"]);
    assert_eq!(values(&s, "NoNewPrivileges"), ["yes"]);
    assert_eq!(values(&s, "ProtectHome"), ["yes"]);
    assert_eq!(values(&s, "PrivateTmp"), ["yes"]);
    let families = values(&s, "RestrictAddressFamilies").join(" ");
    assert!(
        families.contains("AF_INET") && families.contains("AF_INET6"),
        "the network must be allowed: {families}"
    );
    assert!(values(&s, "PrivateNetwork").is_empty());
    assert!(values(&s, "IPAddressDeny").is_empty());
}

#[test]
fn timer_runs_every_15_minutes_randomized_and_persistent() {
    let t = unit("idtoken-refresh.timer");
    assert_eq!(values(&t, "OnCalendar"), ["*:0/15"]);
    assert_eq!(values(&t, "Persistent"), ["true"]);
    assert_eq!(values(&t, "RandomizedDelaySec").len(), 1);
    assert_eq!(values(&t, "WantedBy"), ["timers.target"]);
}

/// Where node_exporter's textfile collector reads on Debian, as the unit names it.
const TEXTFILE_DIR: &str = "/var/lib/prometheus/node-exporter";

#[test]
fn textfile_unit_runs_after_refresh_and_can_write_only_the_textfile_dir() {
    let t = unit("idtoken-textfile.service");
    assert_eq!(values(&t, "Type"), ["oneshot"]);
    assert_eq!(values(&t, "After"), ["idtoken-refresh.service"]);
    assert_eq!(values(&t, "WantedBy"), ["idtoken-refresh.service"]);
    let exec = values(&t, "ExecStart");
    assert_eq!(exec.len(), 1, "{exec:?}");
    assert!(
        exec[0].starts_with(&format!(
            "{INSTALLED_BIN} status --prometheus --output {TEXTFILE_DIR}/"
        )),
        "{exec:?}"
    );
    assert_eq!(values(&t, "ProtectSystem"), ["strict"]);
    assert_eq!(values(&t, "ReadWritePaths"), [TEXTFILE_DIR]);
    assert_eq!(values(&t, "ReadOnlyPaths"), ["/var/lib/idtoken"]);
    assert_eq!(values(&t, "CapabilityBoundingSet"), [""]);
    assert_eq!(values(&t, "NoNewPrivileges"), ["yes"]);
    assert_eq!(values(&t, "PrivateNetwork"), ["yes"]);
    // Not a step of the refresh service (which may write the key caches) any more.
    let refresh = unit("idtoken-refresh.service");
    assert!(
        !refresh.contains("prometheus"),
        "the refresh unit writes metrics"
    );
}

/// The ExecStopPost line of the drop-in the textfile unit replaced
/// (packaging/prometheus/idtoken-refresh-textfile.conf): it ran in idtoken-refresh.service,
/// as root, with /var/lib/idtoken writable. Kept as the control that shows the attack.
const OLD_DROP_IN_LINE: &str = r#"/bin/sh -c 'd=/var/lib/prometheus/node-exporter; /usr/bin/idtoken status --prometheus > "$d/idtoken.prom.$$"; mv -f "$d/idtoken.prom.$$" "$d/idtoken.prom"'"#;

/// Splits a unit's command line as systemd does for the forms used here: words separated
/// by spaces, single or double quotes around a word (no escapes inside).
fn exec_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (word, after) = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let end = rest[1..].find(q).expect("an unclosed quote") + 1;
                (&rest[1..end], &rest[end + 1..])
            }
            _ => rest.split_at(rest.find(' ').unwrap_or(rest.len())),
        };
        assert!(!word.contains('\\'), "escapes are not supported: {line}");
        words.push(word.to_string());
        rest = after.trim_start();
    }
    words
}

/// A login node in a sandbox: `keys/` stands for /var/lib/idtoken (the key cache and the
/// config), `prometheus/node-exporter` for the textfile directory, whose parent the
/// prometheus account owns on Debian.
struct TextfileSite {
    sb: Sandbox,
}

impl TextfileSite {
    fn new(tag: &str) -> TextfileSite {
        let sb = Sandbox::new(tag);
        sb.key_cache(&[idtoken_e2e::keys::Key::A]);
        sb.config(
            "",
            "[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n",
        );
        std::fs::create_dir_all(sb.path("prometheus/node-exporter")).unwrap();
        TextfileSite { sb }
    }

    fn cache(&self) -> std::path::PathBuf {
        self.sb.path("gitlab.jwks.json")
    }

    fn textfile_dir(&self) -> std::path::PathBuf {
        self.sb.path("prometheus/node-exporter")
    }

    /// The names in the key cache's directory and the cache's bytes.
    fn cache_state(&self) -> (Vec<String>, Vec<u8>) {
        let mut names: Vec<String> = std::fs::read_dir(&self.sb.dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        (names, std::fs::read(self.cache()).unwrap_or_default())
    }

    /// `line` (a unit's command line) with the installed paths replaced by the sandbox's:
    /// the built binary, this config, this textfile directory.
    fn command(&self, line: &str) -> Command {
        let bin = idtoken_bin().display().to_string();
        let config = self.sb.path("idtoken.toml").display().to_string();
        let line = line
            .replace(
                &format!("{INSTALLED_BIN} status"),
                &format!("{bin} status --config {config}"),
            )
            .replace(TEXTFILE_DIR, &self.textfile_dir().display().to_string());
        let words = exec_words(&line);
        let mut c = Command::new(&words[0]);
        c.args(&words[1..]);
        c
    }

    /// Runs `line` as the unit would, the attacker having planted `idtoken.prom.PID` (the
    /// old drop-in's temporary name) for the very process that runs it: a shell line waits
    /// on stdin until the link is there, so the race the attacker wins by spraying PIDs is
    /// won every time here.
    fn run_with_planted_pid_link(&self, line: &str) -> std::process::Output {
        let mut c = self.command(line);
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        if args.first().map(String::as_str) == Some("-c") {
            // The same shell, so the same $$: only a gate in front of the script.
            c = Command::new(c.get_program());
            c.arg("-c")
                .arg(format!("read gate; {}", args[1]))
                .args(&args[2..]);
        }
        let mut child = c
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::os::unix::fs::symlink(
            self.cache(),
            self.textfile_dir()
                .join(format!("idtoken.prom.{}", child.id())),
        )
        .unwrap();
        if let Some(mut stdin) = child.stdin.take() {
            let _ = std::io::Write::write_all(&mut stdin, b"\n");
        }
        child.wait_with_output().unwrap()
    }
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_textfile_line_never_writes_through_links_planted_in_the_textfile_dir() {
    let shipped = values(&unit("idtoken-textfile.service"), "ExecStart");
    assert_eq!(shipped.len(), 1);

    // Control: the old drop-in's line, the cache overwritten through the planted link.
    let control = TextfileSite::new("textfile-control");
    let before = control.cache_state();
    let o = control.run_with_planted_pid_link(OLD_DROP_IN_LINE);
    let after = control.cache_state();
    assert_ne!(
        after.1,
        before.1,
        "control: the old line did not overwrite the cache: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&after.1).contains("idtoken_key_cache_usable"),
        "control: the cache should now hold metrics: {}",
        String::from_utf8_lossy(&after.1)
    );

    // The shipped line, with the same link, and a link at the target name too.
    let site = TextfileSite::new("textfile-shipped");
    std::os::unix::fs::symlink(site.cache(), site.textfile_dir().join("idtoken.prom")).unwrap();
    let before = site.cache_state();
    let o = site.run_with_planted_pid_link(&shipped[0]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        site.cache_state(),
        before,
        "the key cache or its directory changed"
    );
    let prom = site.textfile_dir().join("idtoken.prom");
    let meta = std::fs::symlink_metadata(&prom).unwrap();
    assert!(
        meta.file_type().is_file(),
        "idtoken.prom is still the planted link"
    );
    assert_eq!(std::os::unix::fs::MetadataExt::mode(&meta) & 0o7777, 0o644);
    let metrics = std::fs::read_to_string(&prom).unwrap();
    assert!(
        metrics.contains("idtoken_config_valid 1")
            && metrics.contains("idtoken_key_cache_usable{issuer=\"gitlab\"} 1"),
        "{metrics}"
    );
    // Nothing else: the planted PID link (left alone) and the metrics, no temporary file.
    let mut names: Vec<String> = std::fs::read_dir(site.textfile_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], "idtoken.prom", "{names:?}");
}

#[test]
fn the_textfile_line_refuses_a_textfile_dir_swapped_for_a_link_to_the_cache_dir() {
    let shipped = values(&unit("idtoken-textfile.service"), "ExecStart");
    assert_eq!(shipped.len(), 1);
    // The prometheus account owns the parent: it replaces node-exporter with a link.
    let swap = |site: &TextfileSite| {
        std::fs::remove_dir(site.textfile_dir()).unwrap();
        std::os::unix::fs::symlink(&site.sb.dir, site.textfile_dir()).unwrap();
    };

    // Control: the old line writes into the cache's directory.
    let control = TextfileSite::new("textfile-swap-control");
    swap(&control);
    let before = control.cache_state();
    let o = control.command(OLD_DROP_IN_LINE).output().unwrap();
    assert_ne!(
        control.cache_state().0,
        before.0,
        "control: the old line wrote nothing into the cache's directory: {}",
        text(&o)
    );

    let site = TextfileSite::new("textfile-swap");
    swap(&site);
    let before = site.cache_state();
    let o = site.command(&shipped[0]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("symlink"),
        "{}",
        text(&o)
    );
    assert_eq!(site.cache_state(), before, "the cache's directory changed");
}
