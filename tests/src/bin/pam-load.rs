//! pam-load: many threads authenticating through the real libpam and the module at once,
//! while another thread replaces the key cache atomically in a loop. Prints one JSON line:
//! counts of right and wrong answers, file descriptors before and after, and after each
//! round the process's RSS and the bytes malloc has handed out and not had back (glibc's
//! mallinfo2: `uordblks + hblkhd`, every arena), which a leak grows by its size exactly
//! while RSS moves with the arenas' fragmentation.
//!
//!   pam-load --confdir DIR --service NAME --user ACCOUNT --threads N --iterations M
//!            --valid FILE --invalid FILE --cache PATH --key-sets FILE,FILE
//!
//! `--valid` holds one token that must be allowed; `--invalid` one token per line that must
//! be denied with `PAM_AUTH_ERR` (a refused token; `PAM_AUTHINFO_UNAVAIL` or `PAM_IGNORE`
//! would mean the module failed or stepped aside, which a load must not cause). Even iterations use the valid token, odd ones the invalid ones in turn. Each
//! thread runs `--iterations` logins per round, and there are three rounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use idtoken_e2e::libpam::{Handle, PAM_SUCCESS};
use idtoken_e2e::pam::PAM_AUTH_ERR;
use serde_json::json;

fn arg(args: &[String], name: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| panic!("pam-load: {name} is required"))
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes allocated with malloc and not freed, over all arenas and mmapped chunks.
fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as u64
}

/// Waits (up to 10 s) until only `n` threads are left: a scoped thread counts as joined
/// when its closure returns, before its thread-local destructors (glibc's tcache, the
/// crypto library's per-thread state) have given their memory back.
fn wait_for_threads(n: usize) {
    let count = || {
        std::fs::read_dir("/proc/self/task")
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let start = std::time::Instant::now();
    while count() > n && start.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (confdir, service, user) = (
        arg(&args, "--confdir"),
        arg(&args, "--service"),
        arg(&args, "--user"),
    );
    let threads: usize = arg(&args, "--threads").parse().unwrap();
    let iterations: usize = arg(&args, "--iterations").parse().unwrap();
    let valid = std::fs::read_to_string(arg(&args, "--valid"))
        .unwrap()
        .trim()
        .to_string();
    let invalid: Vec<String> = std::fs::read_to_string(arg(&args, "--invalid"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let cache = std::path::PathBuf::from(arg(&args, "--cache"));
    let key_sets: Vec<Vec<u8>> = arg(&args, "--key-sets")
        .split(',')
        .map(|f| std::fs::read(f).unwrap())
        .collect();

    let one = |token: &str| {
        let mut h = Handle::start(&confdir, &service, &user, vec![Some(token.to_string())]);
        h.authenticate()
    };
    // Warm up: libpam, the module and NSS load their caches once.
    for _ in 0..20 {
        assert_eq!(one(&valid), PAM_SUCCESS, "warm-up login failed");
    }
    let (fds_before, rss_before) = (open_fds(), rss_kb());

    let stop = Arc::new(AtomicBool::new(false));
    let rotations = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, rotations, cache) = (stop.clone(), rotations.clone(), cache.clone());
        std::thread::spawn(move || {
            let tmp = cache.with_extension("tmp");
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                std::fs::write(&tmp, &key_sets[i % key_sets.len()]).unwrap();
                std::fs::rename(&tmp, &cache).unwrap();
                rotations.fetch_add(1, Ordering::Relaxed);
                i += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let (right, wrong) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // Three identical rounds: the first grows the allocator's arenas to their working size,
    // so growth through all three is what a leak would look like.
    let mut rss_after_round = Vec::new();
    let mut heap_after_round = Vec::new();
    for _round in 0..3 {
        std::thread::scope(|s| {
            for t in 0..threads {
                let (right, wrong, valid, invalid, one) = (&right, &wrong, &valid, &invalid, &one);
                s.spawn(move || {
                    for i in 0..iterations {
                        let ok = if i % 2 == 0 {
                            one(valid) == PAM_SUCCESS
                        } else {
                            i64::from(one(&invalid[(i / 2 + t) % invalid.len()])) == PAM_AUTH_ERR
                        };
                        if ok { right } else { wrong }.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        // This thread and the key writer.
        wait_for_threads(2);
        rss_after_round.push(rss_kb());
        heap_after_round.push(heap_in_use());
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    println!(
        "{}",
        json!({
            "right": right.load(Ordering::Relaxed), "wrong": wrong.load(Ordering::Relaxed),
            "rotations": rotations.load(Ordering::Relaxed),
            "fds_before": fds_before, "fds_after": open_fds(),
            "rss_kb_before": rss_before, "rss_kb_after_round": rss_after_round,
            "heap_in_use_after_round": heap_after_round,
        })
    );
}
