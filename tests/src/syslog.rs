//! A syslog receiver: a datagram socket the tests bind in place of /dev/log (through
//! `isolate --log`), collecting every line the module (or sshd) writes.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Syslog {
    pub path: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Syslog {
    pub fn start(dir: &Path) -> Syslog {
        let path = dir.join("log.sock");
        let _ = std::fs::remove_file(&path);
        let socket =
            UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666));
        let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (lines.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text =
                        String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
                    if let Ok(mut v) = l.lock() {
                        v.push(text);
                    }
                }
            }
        });
        Syslog {
            path,
            lines,
            stop,
            thread: Some(thread),
        }
    }

    /// Every line received so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Lines containing `needle` (waits up to `timeout` for at least `count` of them).
    pub fn wait_for(&self, needle: &str, count: usize, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let found: Vec<String> = self
                .lines()
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect();
            if found.len() >= count || start.elapsed() > timeout {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The audit lines (`decision=`) of the module.
    pub fn audit_lines(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.contains("pam_idtoken(") && l.contains("decision="))
            .collect()
    }

    pub fn clear(&self) {
        if let Ok(mut v) = self.lines.lock() {
            v.clear();
        }
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
