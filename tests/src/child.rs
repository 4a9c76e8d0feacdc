//! Children that die with the test: a daemon or box the test starts must not outlive a
//! test run that was killed (no drop guard runs then).

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes `command`'s process get SIGKILL when the thread that spawns it dies
/// (PR_SET_PDEATHSIG), and exit at once if that thread died before the prctl took effect.
/// The process should be `isolate --pid` or `unshare --kill-child`, so its death takes
/// every process under it along.
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    let parent = std::process::id();
    // SAFETY: between fork and exec the closure calls only prctl, getppid and _exit, which
    // are async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        })
    }
}
