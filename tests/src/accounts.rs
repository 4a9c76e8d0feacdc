//! Test accounts: passwd, group and shadow files made of the host's own plus the test
//! users, which `isolate --etc` puts in place of /etc's inside a mount namespace, so NSS
//! (files) sees them in the module, sshd and su without the host changing.

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

const fn name_and_uid<const N: usize>(table: &[TestAccount]) -> [(&'static str, u32); N] {
    let mut out = [("", 0); N];
    let mut i = 0;
    while i < N {
        out[i] = (table[i].name, table[i].uid);
        i += 1;
    }
    out
}

/// Writes passwd, group and shadow into `dir/etc` and returns that directory.
pub fn write_etc(dir: &Path) -> PathBuf {
    let etc = dir.join("etc");
    let _ = std::fs::create_dir_all(&etc);
    set_mode(&etc, 0o755);
    let host = |f: &str| {
        let mut t = std::fs::read_to_string(Path::new("/etc").join(f)).unwrap_or_default();
        // Drop host entries that clash with a test name.
        t = t
            .lines()
            .filter(|l| {
                let name = l.split(':').next().unwrap_or_default();
                !USERS.iter().any(|(u, _)| *u == name) && name != HPC_CI_GROUP.0
            })
            .map(|l| format!("{l}\n"))
            .collect();
        t
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
    ] {
        let p = etc.join(f);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        set_mode(&p, mode);
    }
    etc
}
