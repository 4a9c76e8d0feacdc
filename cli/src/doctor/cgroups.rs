//! The cgroup controllers the configured session limits need: logind applies `MemoryMax`
//! through the memory controller, `TasksMax` through pids, `CPUWeight` through cpu and
//! `IOWeight` through io (cgroup v2; cgroup v1 has no io controller). A limit whose
//! controller is missing is silently not enforced.

use std::path::Path;

use idtoken_core::config::Config;

use super::Check;

const NAME: &str = "cgroup.controllers";

/// The controllers the rules' limits need, each with the limit that needs it.
fn needed(config: &Config) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in config.rules.iter().filter(|r| !r.deny) {
        let l = &r.limits;
        for (set, controller, key) in [
            (l.memory_max.is_some(), "memory", "memory_max"),
            (l.tasks_max.is_some(), "pids", "tasks_max"),
            (l.cpu_weight.is_some(), "cpu", "cpu_weight"),
            (l.io_weight.is_some(), "io", "io_weight"),
        ] {
            if set && !out.iter().any(|(c, _)| *c == controller) {
                out.push((controller, key));
            }
        }
    }
    out
}

/// The controllers this host offers: cgroup v2's `cgroup.controllers`, or the v1
/// hierarchies mounted under /sys/fs/cgroup.
fn available(root: &Path) -> Vec<String> {
    match std::fs::read_to_string(root.join("cgroup.controllers")) {
        Ok(text) => text.split_whitespace().map(str::to_string).collect(),
        Err(_) => std::fs::read_dir(root)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .flat_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.split(',').map(str::to_string).collect::<Vec<_>>()
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

pub fn check(config: &Config) -> Check {
    verdict(&needed(config), &available(Path::new("/sys/fs/cgroup")))
}

fn verdict(needed: &[(&str, &str)], available: &[String]) -> Check {
    if needed.is_empty() {
        return Check::ok(
            NAME,
            "no rule sets a session limit that needs a cgroup controller",
        );
    }
    let missing: Vec<String> = needed
        .iter()
        .filter(|(c, _)| !available.iter().any(|a| a == c))
        .map(|(c, key)| format!("{c} (for {key})"))
        .collect();
    if missing.is_empty() {
        let names: Vec<&str> = needed.iter().map(|(c, _)| *c).collect();
        return Check::ok(
            NAME,
            format!("the limits' controllers are here: {}", names.join(", ")),
        );
    }
    Check::warn(
        NAME,
        format!(
            "this host has no cgroup controller {}: logind cannot apply those limits, and sessions \
             run without them",
            missing.join(", ")
        ),
        "boot with the unified cgroup hierarchy (systemd.unified_cgroup_hierarchy=1) and the \
         controllers enabled, or remove those limits from the rules",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_controller_is_named_with_its_limit() {
        let have = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let need = [
            ("memory", "memory_max"),
            ("pids", "tasks_max"),
            ("io", "io_weight"),
        ];
        let c = verdict(&need, &have(&["cpu", "memory", "pids"]));
        assert_eq!(c.status, super::super::Status::Warn);
        assert!(
            c.detail.contains("io (for io_weight)") && !c.detail.contains("memory ("),
            "{}",
            c.detail
        );
        let c = verdict(&need, &have(&["cpu", "memory", "pids", "io"]));
        assert_eq!(c.status, super::super::Status::Ok);
        assert_eq!(verdict(&[], &[]).status, super::super::Status::Ok);
    }
}
