//! Test accounts: passwd, group and shadow files made of the host's own plus the test
//! users, which `isolate --etc` puts in place of /etc's inside a mount namespace, so NSS
//! (files) sees them in the module, sshd and su without the host changing.
//!
//! The tests must pass whatever accounts the host has: host entries that share a name or
//! an id with a test account (or a name the tests expect to be unknown) are left out, and
//! an nsswitch.conf that reads accounts from these files only keeps other sources (sss,
//! LDAP, systemd's userdb) from adding the host's groups to a test user's group list.

use std::path::{Path, PathBuf};

use idtoken_testkit::fakes::TestAccount;
use idtoken_testkit::site;

use crate::sandbox::set_mode;

/// The password of every test user that has one (for pam_unix fall-through tests).
pub const PASSWORD: &str = "correct-horse-battery";
const PASSWORD_HASH: &str = "$6$idtokentestsalt$mBC/NTXZwPOSC6zG9nrPUEvWkrOXq1g9BM8Hvfx6IPi7mijJa2LZ18fUT1GqDo4/2vPbQHg.DLQa9Tl5CiTJY0";

/// (name, uid) of the test users; each has a primary group of the same name and id. The
/// accounts are the test kit's standard site (`idtoken_testkit::site::USERS`), whose
/// in-memory table the benchmarks' decision uses: NSS here and the table there agree.
pub const USERS: [(&str, u32); 6] = name_and_uid(site::USERS);
/// A group carol is a member of (and alice is not).
pub use idtoken_testkit::site::HPC_CI_GROUP;
/// Names the tests use for accounts and groups that do not exist.
pub const UNKNOWN_NAMES: [&str; 3] = ["ghost", "nobody-idtoken-test", "no-such-group"];

const fn name_and_uid<const N: usize>(table: &[TestAccount]) -> [(&'static str, u32); N] {
    let mut out = [("", 0); N];
    let mut i = 0;
    while i < N {
        out[i] = (table[i].name, table[i].uid);
        i += 1;
    }
    out
}

/// Whether a host passwd, group or shadow line must go: its name (field 1) or id (field 3:
/// uid or gid) is one of the tests', so a lookup would find the host's entry first.
fn clashes(line: &str) -> bool {
    let mut fields = line.split(':');
    let name = fields.next().unwrap_or_default();
    let id = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
    let ours = USERS.iter().chain([&HPC_CI_GROUP]);
    ours.clone().any(|(n, _)| *n == name)
        || UNKNOWN_NAMES.contains(&name)
        || id.is_some_and(|id| ours.clone().any(|(_, i)| *i == id))
}

/// Writes passwd, group and shadow into `dir/etc` and returns that directory.
pub fn write_etc(dir: &Path) -> PathBuf {
    let etc = dir.join("etc");
    let _ = std::fs::create_dir_all(&etc);
    set_mode(&etc, 0o755);
    let host = |f: &str| {
        let t = std::fs::read_to_string(Path::new("/etc").join(f)).unwrap_or_default();
        // shadow's third field is a date, not an id: match its lines by name only.
        let keep = |l: &&str| match f {
            "shadow" => !clashes(l.split(':').next().unwrap_or_default()),
            _ => !clashes(l),
        };
        t.lines()
            .filter(keep)
            .map(|l| format!("{}\n", without_test_members(l)))
            .collect::<String>()
    };
    let mut passwd = host("passwd");
    let mut group = host("group");
    let mut shadow = host("shadow");
    for (name, uid) in USERS {
        let home = dir.join("home").join(name);
        let _ = std::fs::create_dir_all(&home);
        let _ = std::os::unix::fs::chown(&home, Some(uid), Some(uid));
        passwd.push_str(&format!(
            "{name}:x:{uid}:{uid}:test user:{}:/bin/sh\n",
            home.display()
        ));
        group.push_str(&format!("{name}:x:{uid}:\n"));
        shadow.push_str(&format!("{name}:{PASSWORD_HASH}:19000:0:99999:7:::\n"));
    }
    let (hpc_ci, gid) = HPC_CI_GROUP;
    let members: Vec<&str> = site::USERS
        .iter()
        .filter(|a| a.listed_in.contains(&hpc_ci))
        .map(|a| a.name)
        .collect();
    group.push_str(&format!("{hpc_ci}:x:{gid}:{}\n", members.join(",")));
    for (f, text, mode) in [
        ("passwd", passwd, 0o644),
        ("group", group, 0o644),
        ("shadow", shadow, 0o640),
        ("nsswitch.conf", nsswitch(), 0o644),
    ] {
        let p = etc.join(f);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        set_mode(&p, mode);
    }
    etc
}

/// A host group line without test users in its member list (field 4), which would give
/// them host groups; other lines unchanged.
fn without_test_members(line: &str) -> String {
    let fields: Vec<&str> = line.split(':').collect();
    let [name, password, gid, members] = fields[..] else {
        return line.to_string();
    };
    let members: Vec<&str> = members
        .split(',')
        .filter(|m| !USERS.iter().any(|(u, _)| u == m))
        .collect();
    format!("{name}:{password}:{gid}:{}", members.join(","))
}

/// The host's nsswitch.conf with the account databases read from files only.
fn nsswitch() -> String {
    let host = std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
    let accounts = ["passwd", "group", "shadow", "gshadow", "initgroups"];
    let others = host.lines().filter(|l| {
        let db = l.split(':').next().unwrap_or_default().trim();
        !accounts.contains(&db)
    });
    let mut text: String = others.map(|l| format!("{l}\n")).collect();
    for db in accounts {
        text.push_str(&format!("{db}: files\n"));
    }
    text
}
