//! Doctor: where `max_uses` is set, its state directory passes the SPEC's path checks (the
//! module's own `open_trusted_dir`, private: no group or other write anywhere on it).

use idtoken_core::config::Config;
use idtoken_core::files::{self, DirUse, FileProblemKind};

use super::Check;

pub fn check(c: &Config) -> Check {
    const NAME: &str = "state_dir";
    let dir = &c.defaults.state_dir;
    if c.defaults.max_uses == 0 {
        return Check::ok(NAME, "max_uses is 0 (off): no state directory is used");
    }
    let fail = |p: files::FileProblem| {
        Check::fail(
            NAME,
            format!(
                "max_uses = {}: state_dir {}: {p}; every token is refused \
                 (PAM_AUTHINFO_UNAVAIL) until it is fixed",
                c.defaults.max_uses,
                dir.display()
            ),
            format!(
                "make every directory from / to {} owned by root and not writable by group \
                 or others: chown root:root DIR; chmod 0700 {} (chmod go-w on its parents)",
                dir.display(),
                dir.display()
            ),
        )
    };
    match files::open_trusted_dir(dir, DirUse::Private, false) {
        Ok(_) => Check::ok(
            NAME,
            format!(
                "{}: safe (max_uses = {})",
                dir.display(),
                c.defaults.max_uses
            ),
        ),
        // The module creates it (0700) at the first counted login, if its parents are safe.
        Err(p) if p.kind == FileProblemKind::Missing && p.path == *dir => {
            match dir
                .parent()
                .map(|d| files::open_trusted_dir(d, DirUse::Shared, false))
            {
                Some(Ok(_)) => Check::ok(
                    NAME,
                    format!(
                        "{}: does not exist yet; the module creates it (0700) at the first login",
                        dir.display()
                    ),
                ),
                Some(Err(p)) => fail(p),
                None => fail(p),
            }
        }
        Err(p) => fail(p),
    }
}
