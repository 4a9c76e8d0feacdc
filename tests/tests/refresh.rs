//! `idtoken refresh` and `idtoken status` against a real HTTPS server on 127.0.0.1 with a
//! private CA made in the test. Every failure must exit 1 and leave the last good key cache
//! byte for byte; a rotation must be picked up without locking anyone out; concurrent
//! `idtoken check` calls must never see a partial cache.
//!
//! Run `cargo build --workspace` first: these tests drive the built `idtoken`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use idtoken_core::jwks::RETIRED_AT;
use idtoken_e2e::https::{Reply, Server, TestCa, closed_port_url};
use idtoken_e2e::idtoken_bin;
use idtoken_e2e::keys::{self, AUDIENCE, Key};
use idtoken_e2e::sandbox::{Sandbox, last_json_line, set_mode};
use serde_json::{Value, json};

const KEYS_PATH: &str = "/oauth/discovery/keys";
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

use idtoken_e2e::keys::now;

/// A sandbox, a CA, an HTTPS server of that CA, and a config whose one issuer `gitlab` is
/// that server (discovery), trusting the CA through `ca_file`.
struct Site {
    sb: Sandbox,
    server: Server,
}

impl Site {
    fn new(tag: &str) -> Site {
        let sb = Sandbox::new(tag);
        let ca = TestCa::new(tag);
        ca.write_pem(&sb.path("ca.pem"));
        let server = Server::https(&ca);
        Site { sb, server }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    fn cache(&self) -> PathBuf {
        self.sb.path("gitlab.jwks.json")
    }

    /// Writes the config: `defaults` and `issuer` lines are appended to their tables.
    fn config_with(&self, defaults: &str, issuer: &str) -> PathBuf {
        let text = format!(
            "[defaults]\nstate_dir = \"{state}\"\n{defaults}\n\n[[issuer]]\nname = \"gitlab\"\n\
             url = \"{url}\"\naudiences = [\"{AUDIENCE}\"]\njwks_cache = \"{cache}\"\n\
             ca_file = \"{ca}\"\n{issuer}\n\n[[rule]]\nname = \"own-account\"\nissuer = \"gitlab\"\n",
            state = self.sb.path("uses").display(),
            url = self.url(),
            cache = self.cache().display(),
            ca = self.sb.path("ca.pem").display(),
        );
        self.sb.write("idtoken.toml", text.as_bytes())
    }

    fn config(&self) -> PathBuf {
        self.config_with("", "")
    }

    /// GitLab's layout on the server: discovery naming this server, keys at KEYS_PATH.
    fn publish(&self, keys: &[Key]) {
        self.server.gitlab(&self.url(), &keys::jwks(keys));
    }

    /// A good cache holding these keys (mode 0644), as a previous refresh left it.
    fn seed(&self, keys: &[Key]) -> Vec<u8> {
        self.sb.key_cache(keys);
        std::fs::read(self.cache()).expect("seeded cache")
    }

    fn cache_doc(&self) -> Value {
        let text = std::fs::read_to_string(self.cache()).expect("cache");
        serde_json::from_str(&text).expect("cache is JSON")
    }

    /// A token of this issuer signed with `key`, issued now (real time), valid 300 s.
    fn token(&self, key: Key) -> String {
        let t = now();
        let claims = keys::gitlab_claims("nobody-idtoken-test");
        let claims = keys::with(claims, "iss", json!(self.url()));
        let claims = keys::with(claims, "iat", json!(t));
        let claims = keys::with(claims, "nbf", json!(t - 5));
        let claims = keys::with(claims, "exp", json!(t + 300));
        keys::mint_with(&claims, key)
    }
}

/// Runs `idtoken ARGS` with a clean network environment (no proxies, no SSL_CERT_FILE) and
/// `extra` env vars.
fn idtoken(args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(idtoken_bin());
    cmd.args(args);
    for var in [
        "https_proxy",
        "HTTPS_PROXY",
        "http_proxy",
        "HTTP_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "SSL_CERT_FILE",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().expect("run idtoken")
}

fn refresh(config: &Path) -> Output {
    idtoken(&["refresh", "--config", &config.display().to_string()], &[])
}

fn status_json(config: &Path) -> (i32, Value) {
    let out = idtoken(
        &[
            "status",
            "--json",
            "--config",
            &config.display().to_string(),
        ],
        &[],
    );
    (code(&out), last_json_line(&out.stdout))
}

fn check(config: &Path, sb: &Sandbox, token: &str) -> (i32, Value) {
    let tf = sb.token_file("token.jwt", token);
    let out = idtoken(
        &[
            "check",
            "--json",
            "--user",
            "nobody-idtoken-test",
            "--config",
            &config.display().to_string(),
            "--token-file",
            &tf.display().to_string(),
        ],
        &[],
    );
    (code(&out), last_json_line(&out.stdout))
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn kids(doc: &Value) -> Vec<(String, Option<i64>)> {
    doc["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap_or_default().to_string(),
                k[RETIRED_AT].as_i64(),
            )
        })
        .collect()
}

fn no_temp_files(dir: &Path) {
    let leftovers: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn discovery_refresh_writes_the_cache_safely() {
    let site = Site::new("refresh-ok");
    site.publish(&[Key::A, Key::Rsa4096]);
    let config = site.config();
    let out = refresh(&config);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("gitlab: refreshed"), "{stdout}");
    assert!(stdout.contains("test-a (RSA 2048)"), "{stdout}");
    assert_eq!(
        kids(&site.cache_doc()),
        vec![("test-a".into(), None), ("test-4096".into(), None)]
    );
    let meta = std::fs::metadata(site.cache()).expect("cache");
    assert_eq!(meta.mode() & 0o7777, 0o644);
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    no_temp_files(&site.sb.dir);
    // Discovery then keys: two requests.
    assert_eq!(site.server.hits(), 2);

    let (rc, st) = status_json(&config);
    assert_eq!(rc, 0, "{st}");
    assert_eq!(st["ok"], true);
    let issuer = &st["issuers"][0];
    assert_eq!(issuer["problems"], json!([]));
    assert_eq!(issuer["keys"][0]["kid"], "test-a");
    assert_eq!(issuer["keys"][0]["type"], "RSA 2048");
    assert_eq!(issuer["keys"][1]["type"], "RSA 4096");
    assert!(issuer["age_seconds"].as_i64().is_some_and(|a| a < 60));

    // The login path accepts the refreshed keys.
    let (rc, d) = check(&config, &site.sb, &site.token(Key::A));
    assert!(rc == 0 || rc == 1, "{d}");
    assert_eq!(d["verified"], true, "{d}");
}

#[test]
fn jwks_url_skips_discovery() {
    let site = Site::new("refresh-jwksurl");
    site.server
        .set("/keys", Reply::json(&keys::jwks(&[Key::B])));
    let config = site.config_with("", &format!("jwks_url = \"{}/keys\"", site.url()));
    let out = refresh(&config);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(kids(&site.cache_doc()), vec![("test-b".into(), None)]);
    assert_eq!(site.server.hits(), 1, "discovery must not be asked");
}

/// Security review 2, finding 2: a local user who binds a loopback port could hand refresh
/// their own keys over plain http. Plain http is refused everywhere now, loopback
/// included: the config is invalid, nothing is fetched, the cache stays as it was.
#[test]
fn plain_http_is_refused_loopback_included() {
    let site = Site::new("refresh-http");
    let plain = Server::plain();
    plain.set("/keys", Reply::json(&keys::jwks(&[Key::A])));
    let good = site.seed(&[Key::B]);
    for jwks_url in [
        format!("{}/keys", plain.url()),
        "http://gitlab.invalid/keys".to_string(),
    ] {
        let config = site.config_with("", &format!("jwks_url = \"{jwks_url}\""));
        let out = refresh(&config);
        assert_ne!(code(&out), 0, "{jwks_url}: {}", stderr(&out));
        assert!(stderr(&out).contains("plain http"), "{}", stderr(&out));
        assert_eq!(std::fs::read(site.cache()).expect("cache"), good);
        let check = Command::new(idtoken_bin())
            .args(["config", "check", "--config"])
            .arg(&config)
            .output()
            .expect("idtoken config check");
        assert_eq!(check.status.code(), Some(2), "{jwks_url}");
        assert!(
            String::from_utf8_lossy(&check.stderr).contains("plain http"),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    assert_eq!(plain.hits(), 0, "the http server must never be asked");
}

#[test]
fn an_untrusted_certificate_is_refused() {
    let site = Site::new("refresh-untrusted");
    site.publish(&[Key::B]);
    let good = site.seed(&[Key::A]);
    // ca_file names another CA: the server's certificate does not chain to any root.
    TestCa::new("other").write_pem(&site.sb.path("ca.pem"));
    let out = refresh(&site.config());
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains("issuer gitlab"), "{err}");
    assert!(err.contains("TLS") && err.contains("ca_file"), "{err}");
    assert_eq!(std::fs::read(site.cache()).expect("cache"), good);

    // Without ca_file only the system store is trusted, which knows nothing of the test CA.
    let config = site.config();
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .lines()
        .filter(|l| !l.starts_with("ca_file"))
        .collect::<Vec<_>>()
        .join("\n");
    site.sb.write("idtoken.toml", text.as_bytes());
    let out = refresh(&config);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(std::fs::read(site.cache()).expect("cache"), good);
}

#[test]
fn a_discovery_issuer_mismatch_is_refused() {
    let site = Site::new("refresh-mismatch");
    site.server
        .gitlab("https://gitlab.elsewhere.example", &keys::jwks(&[Key::B]));
    let good = site.seed(&[Key::A]);
    let out = refresh(&site.config());
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains("issuer gitlab") && err.contains("gitlab.elsewhere.example"),
        "{err}"
    );
    assert_eq!(std::fs::read(site.cache()).expect("cache"), good);
    assert_eq!(site.server.hits(), 1, "the keys must not even be fetched");
}

/// Each bad answer exits 1, names the issuer and what failed, keeps the cache byte for byte
/// (and its mtime), and leaves no temporary file.
#[test]
fn every_failure_keeps_the_last_good_cache() {
    let site = Site::new("refresh-failures");
    let small = json!({"keys": [Key::Small.jwk()]});
    let mut oversized = b"{\"keys\": [], \"pad\": \"".to_vec();
    oversized.resize(1024 * 1024 + 10, b'x');
    oversized.extend_from_slice(b"\"}");
    let cases: Vec<(&str, Option<Reply>, &str)> = vec![
        (
            "garbage",
            Some(Reply::raw(200, "<html>oops</html>")),
            "not JSON",
        ),
        (
            "not a JWKS",
            Some(Reply::json(&json!({"k": 1}))),
            "not a JWKS",
        ),
        (
            "empty key set",
            Some(Reply::json(&json!({"keys": []}))),
            "no usable signing key",
        ),
        (
            "only a small key",
            Some(Reply::json(&small)),
            "under the 2048",
        ),
        ("404", None, "HTTP 404"),
        ("500", Some(Reply::raw(500, "boom")), "HTTP 500"),
        (
            "oversized",
            Some(Reply::raw(200, oversized)),
            "larger than 1048576",
        ),
        (
            "slow",
            Some(Reply::json(&keys::jwks(&[Key::B])).delayed(Duration::from_secs(6))),
            "no complete answer within 2 s",
        ),
    ];
    for (what, reply, expect) in cases {
        site.publish(&[Key::B]);
        match reply {
            Some(r) => site.server.set(KEYS_PATH, r),
            None => site.server.set(KEYS_PATH, Reply::raw(404, "nope")),
        }
        let good = site.seed(&[Key::A]);
        let mtime = std::fs::metadata(site.cache()).expect("cache").mtime();
        let started = Instant::now();
        let out = idtoken(
            &["refresh", "--config", &site.config().display().to_string()],
            &[("IDTOKEN_HTTP_TIMEOUT", "2")],
        );
        let err = stderr(&out);
        assert_eq!(code(&out), 1, "{what}: {err}");
        assert!(err.contains("issuer gitlab"), "{what}: {err}");
        assert!(
            err.contains(expect),
            "{what}: expected {expect:?} in: {err}"
        );
        assert!(err.contains("left as it was"), "{what}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{what}: took {:?}",
            started.elapsed()
        );
        assert_eq!(std::fs::read(site.cache()).expect("cache"), good, "{what}");
        assert_eq!(
            std::fs::metadata(site.cache()).expect("cache").mtime(),
            mtime,
            "{what}"
        );
        no_temp_files(&site.sb.dir);
    }
}

#[test]
fn discovery_failures_keep_the_cache() {
    let site = Site::new("refresh-discovery-bad");
    let cases: Vec<(&str, Reply, &str)> = vec![
        ("garbage", Reply::raw(200, "nope"), "not JSON"),
        ("500", Reply::raw(500, ""), "HTTP 500"),
        (
            "no jwks_uri",
            Reply::json(&json!({"issuer": site.url()})),
            "no jwks_uri",
        ),
        (
            "http jwks_uri",
            Reply::json(&json!({"issuer": site.url(), "jwks_uri": "http://gitlab.invalid/keys"})),
            "plain http",
        ),
    ];
    for (what, reply, expect) in cases {
        site.server.set(DISCOVERY_PATH, reply);
        let good = site.seed(&[Key::A]);
        let out = refresh(&site.config());
        let err = stderr(&out);
        assert_eq!(code(&out), 1, "{what}: {err}");
        assert!(
            err.contains("issuer gitlab") && err.contains(expect),
            "{what}: expected {expect:?} in: {err}"
        );
        assert_eq!(std::fs::read(site.cache()).expect("cache"), good, "{what}");
    }
}

#[test]
fn a_server_that_is_down_keeps_the_cache() {
    let sb = Sandbox::new("refresh-down");
    let good = sb.key_cache(&[Key::A]);
    let good = std::fs::read(good).expect("cache");
    let text = format!(
        "[[issuer]]\nname = \"gitlab\"\nurl = \"{}\"\naudiences = [\"{AUDIENCE}\"]\njwks_cache = \"{}\"\n",
        closed_port_url(),
        sb.path("gitlab.jwks.json").display()
    );
    let config = sb.write("idtoken.toml", text.as_bytes());
    let started = Instant::now();
    let out = idtoken(
        &["refresh", "--config", &config.display().to_string()],
        &[("IDTOKEN_HTTP_TIMEOUT", "5")],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("issuer gitlab"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(
        std::fs::read(sb.path("gitlab.jwks.json")).expect("cache"),
        good
    );
}

#[test]
fn https_redirects_are_followed_but_never_to_http() {
    let site = Site::new("refresh-redirect");
    let plain = Server::plain();
    plain.set("/keys", Reply::json(&keys::jwks(&[Key::B])));
    site.server
        .set("/moved", Reply::redirect(&format!("{}/keys", site.url())));
    site.server
        .set("/keys", Reply::json(&keys::jwks(&[Key::Rsa4096])));
    site.server.set(
        "/to-http",
        Reply::redirect(&format!("{}/keys", plain.url())),
    );

    let config = site.config_with("", &format!("jwks_url = \"{}/moved\"", site.url()));
    let out = refresh(&config);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(kids(&site.cache_doc()), vec![("test-4096".into(), None)]);

    let good = std::fs::read(site.cache()).expect("cache");
    let config = site.config_with("", &format!("jwks_url = \"{}/to-http\"", site.url()));
    let out = refresh(&config);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(plain.hits(), 0, "the http target must not be asked");
    assert_eq!(std::fs::read(site.cache()).expect("cache"), good);
}

#[test]
fn a_missing_ca_file_fails_that_issuer() {
    let site = Site::new("refresh-noca");
    site.publish(&[Key::B]);
    let good = site.seed(&[Key::A]);
    std::fs::remove_file(site.sb.path("ca.pem")).expect("rm ca");
    let out = refresh(&site.config());
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("ca_file"), "{}", stderr(&out));
    assert_eq!(std::fs::read(site.cache()).expect("cache"), good);
}

/// GitLab's rotation: B is published beside A, then A is withdrawn. A stays trusted for
/// key_grace, keeping its first retired-at stamp; after the grace refresh drops it; a key
/// published again loses its mark.
#[test]
fn a_key_rotation_is_picked_up() {
    let site = Site::new("refresh-rotation");
    let config = site.config();
    site.seed(&[Key::A]);

    site.publish(&[Key::A, Key::B]);
    let out = refresh(&config);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("new keys: test-b"));
    assert_eq!(
        kids(&site.cache_doc()),
        vec![("test-a".into(), None), ("test-b".into(), None)]
    );
    let (_, d) = check(&config, &site.sb, &site.token(Key::B));
    assert_eq!(d["verified"], true, "{d}");

    // A withdrawn: kept, marked, still accepted.
    site.publish(&[Key::B]);
    let before = now();
    let out = refresh(&config);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("trusted until"));
    let k = kids(&site.cache_doc());
    assert_eq!(k[0], ("test-b".into(), None));
    assert_eq!(k[1].0, "test-a");
    let stamp = k[1].1.expect("test-a is marked retired");
    assert!(stamp >= before && stamp <= now(), "{stamp}");
    let (rc, d) = check(&config, &site.sb, &site.token(Key::A));
    assert!(rc == 0 || rc == 1, "{d}");
    assert_eq!(
        d["verified"], true,
        "a retired key is trusted during key_grace: {d}"
    );
    let (_, st) = status_json(&config);
    assert_eq!(st["issuers"][0]["keys"][1]["retired_at"], stamp);
    assert_eq!(st["issuers"][0]["keys"][1]["trusted_until"], stamp + 86_400);

    // Another refresh keeps the first stamp.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(code(&refresh(&config)), 0);
    assert_eq!(kids(&site.cache_doc())[1], ("test-a".into(), Some(stamp)));

    // Published again: no longer retired.
    site.publish(&[Key::A, Key::B]);
    assert_eq!(code(&refresh(&config)), 0);
    assert_eq!(
        kids(&site.cache_doc()),
        vec![("test-a".into(), None), ("test-b".into(), None)]
    );

    // Withdrawn longer ago than key_grace: refused by the login path, dropped by refresh.
    let mut old = Key::A.jwk();
    old[RETIRED_AT] = json!(now() - 2 * 86_400);
    site.sb.write(
        "gitlab.jwks.json",
        json!({"keys": [Key::B.jwk(), old]}).to_string().as_bytes(),
    );
    let (rc, d) = check(&config, &site.sb, &site.token(Key::A));
    assert_eq!(rc, 1, "{d}");
    assert_eq!(d["reason"], "unknown_key", "{d}");
    let (_, st) = status_json(&config);
    assert_eq!(st["issuers"][0]["keys"][1]["expired"], true, "{st}");
    site.publish(&[Key::B]);
    let out = refresh(&config);
    assert!(String::from_utf8_lossy(&out.stdout).contains("dropped"));
    assert_eq!(kids(&site.cache_doc()), vec![("test-b".into(), None)]);
}

#[test]
fn key_grace_zero_drops_withdrawn_keys_at_once() {
    let site = Site::new("refresh-nograce");
    let config = site.config_with("key_grace = 0", "");
    site.seed(&[Key::A, Key::B]);
    site.publish(&[Key::B]);
    assert_eq!(code(&refresh(&config)), 0);
    assert_eq!(kids(&site.cache_doc()), vec![("test-b".into(), None)]);
}

/// The cache is replaced while `idtoken check` reads it in a loop: every check decides
/// (exit 0 or 1, never 2 "could not decide") with the token's signature verified (every key
/// set holds its key, so an `unknown_key` would be a half-written cache), and every raw
/// read is a whole JWKS.
#[test]
fn concurrent_checks_never_see_a_partial_cache() {
    let site = Site::new("refresh-concurrent");
    let config = site.config();
    site.seed(&[Key::A, Key::B]);
    let token = site.token(Key::A);
    let token_file = site.sb.token_file("token.jwt", &token);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let deadline = Instant::now() + Duration::from_secs(90);

    let mut readers = Vec::new();
    for n in 0..2 {
        let (stop, failures) = (stop.clone(), failures.clone());
        let (config, token_file) = (config.clone(), token_file.clone());
        readers.push(std::thread::spawn(move || {
            let mut checks = 0;
            while !stop.load(Ordering::SeqCst) && checks < 400 && Instant::now() < deadline {
                let out = idtoken(
                    &[
                        "check",
                        "--json",
                        "--user",
                        "nobody-idtoken-test",
                        "--config",
                        &config.display().to_string(),
                        "--token-file",
                        &token_file.display().to_string(),
                    ],
                    &[],
                );
                let rc = code(&out);
                let json: Value = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .last()
                    .and_then(|l| serde_json::from_str(l).ok())
                    .unwrap_or(Value::Null);
                let signature_ok = json["steps"].as_array().is_some_and(|steps| {
                    steps
                        .iter()
                        .any(|s| s["step"] == "signature" && s["ok"] == true)
                });
                let verified = json["verified"] == true && signature_ok;
                if (!(rc == 0 || rc == 1) || !verified)
                    && let Ok(mut f) = failures.lock()
                {
                    f.push(format!(
                        "reader {n}: check exited {rc} without a verified signature: {}{}",
                        String::from_utf8_lossy(&out.stdout),
                        stderr(&out)
                    ));
                }
                checks += 1;
            }
            checks
        }));
    }
    let raw_reader = {
        let (stop, failures, cache) = (stop.clone(), failures.clone(), site.cache());
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(Ordering::SeqCst) && reads < 200_000 && Instant::now() < deadline {
                let bytes = std::fs::read(&cache).unwrap_or_default();
                let whole = serde_json::from_slice::<Value>(&bytes)
                    .is_ok_and(|v| v["keys"].as_array().is_some_and(|k| !k.is_empty()));
                if !whole && let Ok(mut f) = failures.lock() {
                    f.push(format!(
                        "raw read {reads}: {} bytes, not a whole JWKS",
                        bytes.len()
                    ));
                }
                reads += 1;
            }
            reads
        })
    };

    // Rotate through key sets so every refresh writes different bytes.
    let sets: [&[Key]; 4] = [
        &[Key::A, Key::B],
        &[Key::B, Key::A, Key::Rsa4096],
        &[Key::A],
        &[Key::Rsa4096, Key::A],
    ];
    let mut refreshes = 0;
    for n in 0..24 {
        if Instant::now() > deadline {
            break;
        }
        site.publish(sets[n % sets.len()]);
        let out = refresh(&config);
        assert_eq!(code(&out), 0, "refresh {n}: {}", stderr(&out));
        refreshes += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let checks: i32 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    let reads = raw_reader.join().expect("raw reader");
    let failures = failures.lock().expect("failures").clone();
    eprintln!("{refreshes} refreshes, {checks} checks, {reads} raw reads during them");
    assert!(
        failures.is_empty(),
        "{} failures: {:#?}",
        failures.len(),
        failures
    );
    assert!(refreshes >= 10, "only {refreshes} refreshes");
    assert!(
        checks >= 10,
        "only {checks} checks ran during the refreshes"
    );
    assert!(reads >= 100, "only {reads} raw reads");
    no_temp_files(&site.sb.dir);
}

/// Acceptance: a world-writable cache is flagged by status, `check` cannot decide (2), and
/// a refresh replaces it with a safe file without carrying its keys over.
#[test]
fn status_flags_a_world_writable_cache_and_check_exits_2() {
    let site = Site::new("status-unsafe");
    let config = site.config();
    site.seed(&[Key::A]);
    set_mode(&site.cache(), 0o666);

    let (rc, st) = status_json(&config);
    assert_eq!(rc, 1, "{st}");
    assert_eq!(st["ok"], false);
    assert_eq!(
        st["issuers"][0]["problems"][0]["code"], "unsafe_mode",
        "{st}"
    );
    assert_eq!(st["issuers"][0]["usable"], false);
    let human = idtoken(&["status", "--config", &config.display().to_string()], &[]);
    assert_eq!(code(&human), 1);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("PROBLEM") && text.contains("chmod go-w"),
        "{text}"
    );

    let (rc, d) = check(&config, &site.sb, &site.token(Key::A));
    assert_eq!(rc, 2, "{d}");

    site.publish(&[Key::B]);
    let out = refresh(&config);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("not trusted"), "{}", stderr(&out));
    assert_eq!(kids(&site.cache_doc()), vec![("test-b".into(), None)]);
    assert_eq!(
        std::fs::metadata(site.cache()).expect("cache").mode() & 0o7777,
        0o644
    );
    assert_eq!(status_json(&config).0, 0);
}

#[test]
fn status_reports_missing_invalid_empty_and_stale_caches() {
    let site = Site::new("status-problems");
    let config = site.config_with("stale_after = 3600", "");

    let (rc, st) = status_json(&config);
    assert_eq!(rc, 1);
    assert_eq!(st["issuers"][0]["problems"][0]["code"], "missing", "{st}");

    site.sb.write("gitlab.jwks.json", b"{not json");
    let (rc, st) = status_json(&config);
    assert_eq!(rc, 1);
    assert_eq!(st["issuers"][0]["problems"][0]["code"], "invalid", "{st}");

    site.sb.write(
        "gitlab.jwks.json",
        json!({"keys": [Key::Small.jwk()]}).to_string().as_bytes(),
    );
    let (rc, st) = status_json(&config);
    assert_eq!(rc, 1);
    assert_eq!(
        st["issuers"][0]["problems"][0]["code"], "no_usable_key",
        "{st}"
    );
    assert!(
        st["issuers"][0]["skipped"][0]
            .as_str()
            .is_some_and(|s| s.contains("test-small"))
    );

    site.seed(&[Key::A]);
    assert_eq!(status_json(&config).0, 0);
    let old = SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(site.cache())
        .and_then(|f| f.set_modified(old))
        .expect("set mtime");
    let (rc, st) = status_json(&config);
    assert_eq!(rc, 1);
    let issuer = &st["issuers"][0];
    assert_eq!(issuer["problems"][0]["code"], "stale", "{st}");
    assert_eq!(issuer["usable"], true, "a stale cache still works: {st}");
    assert!(issuer["age_seconds"].as_i64().is_some_and(|a| a >= 7200));

    // stale_after = 0 turns the age check off (air-gapped hosts).
    let config = site.config_with("stale_after = 0", "");
    assert_eq!(status_json(&config).0, 0);
    let human = idtoken(&["status", "--config", &config.display().to_string()], &[]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("gitlab: OK") && text.contains(&site.cache().display().to_string()),
        "{text}"
    );
    assert!(text.contains("test-a (RSA 2048, RS256)"), "{text}");
}

#[test]
fn issuer_selection_and_exit_codes() {
    let site = Site::new("refresh-select");
    site.publish(&[Key::A]);
    let config = site.config();
    let cfg = config.display().to_string();

    let out = idtoken(&["refresh", "--config", &cfg, "--issuer", "nope"], &[]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("gitlab"), "{}", stderr(&out));

    let out = idtoken(&["refresh", "--config", &cfg, "--issuer", "gitlab"], &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Two issuers, one down: the other is still refreshed, and the run exits 1.
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "[[rule]]",
        &format!(
            "[[issuer]]\nname = \"down\"\nurl = \"{}\"\naudiences = [\"x\"]\njwks_cache = \"{}\"\n\n[[rule]]",
            closed_port_url(),
            site.sb.path("down.jwks.json").display()
        ),
    );
    site.sb.write("idtoken.toml", text.as_bytes());
    std::fs::remove_file(site.cache()).expect("rm cache");
    let out = refresh(&config);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("issuer down"), "{}", stderr(&out));
    assert!(
        site.cache().exists(),
        "the working issuer is refreshed anyway"
    );
    assert!(!site.sb.path("down.jwks.json").exists());

    let out = idtoken(
        &[
            "refresh",
            "--config",
            &site.sb.path("absent.toml").display().to_string(),
        ],
        &[],
    );
    assert_eq!(code(&out), 2);
}

/// The HTTP client lives in `idtoken` only: the PAM module must not link it. Crate paths
/// (panic locations, symbols) betray a linked crate; the command's own binary proves the
/// probe finds them when they are there.
#[test]
fn the_module_does_not_link_an_http_client() {
    let module = std::fs::read(idtoken_e2e::artifact("libpam_idtoken.so")).expect("module");
    let command = std::fs::read(idtoken_bin()).expect("idtoken");
    let has =
        |bytes: &[u8], marker: &str| bytes.windows(marker.len()).any(|w| w == marker.as_bytes());
    for marker in ["/ureq-", "ureq::", "/rustls-", "rustls::"] {
        assert!(
            has(&command, marker),
            "probe {marker:?} not found in idtoken"
        );
        assert!(!has(&module, marker), "the PAM module links {marker:?}");
    }
}

fn real_fixture(name: &str) -> Value {
    let p = keys::fixtures().join("gitlab-real").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

/// Real GitLab documents: gitlab.com's discovery document (its issuer and jwks_uri pointed
/// at the test server) and JWKS, and a self-hosted instance's JWKS whose real token then
/// verifies from the refreshed cache.
#[test]
fn real_gitlab_documents_refresh_and_verify() {
    let site = Site::new("refresh-real");
    let mut discovery = real_fixture("gitlabcom.openid-configuration.json");
    discovery["issuer"] = json!(site.url());
    discovery["jwks_uri"] = json!(format!("{}{KEYS_PATH}", site.url()));
    site.server.set(DISCOVERY_PATH, Reply::json(&discovery));
    site.server
        .set(KEYS_PATH, Reply::json(&real_fixture("gitlabcom.jwks.json")));
    let out = refresh(&site.config());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let cached: Vec<String> = kids(&site.cache_doc()).into_iter().map(|k| k.0).collect();
    assert_eq!(
        cached,
        [
            "kewiQq9jiC84CvSsJYOB-N6A8WFLSV20Mb-y7IlWDSQ",
            "4i3sFE7sxqNPOT7FdvcGA1ZVGGI_r-tsDXnEuYT4ZqE"
        ]
    );

    // The self-hosted instance: its keys through jwks_url, then its real token.
    site.server.set(
        "/selfhosted/keys",
        Reply::json(&real_fixture("selfhosted_rgl_id_token_v2.jwks.json")),
    );
    let text = format!(
        "[defaults]\nstate_dir = \"{state}\"\n\n[[issuer]]\nname = \"gitlab\"\n\
         url = \"https://gitlab.example.com\"\naudiences = [\"https://example.com\"]\n\
         jwks_cache = \"{cache}\"\nca_file = \"{ca}\"\njwks_url = \"{url}/selfhosted/keys\"\n\n\
         [[rule]]\nname = \"any\"\nlogin_as = \"nobody-idtoken-test\"\n",
        state = site.sb.path("uses").display(),
        cache = site.cache().display(),
        ca = site.sb.path("ca.pem").display(),
        url = site.url(),
    );
    let config = site.sb.write("idtoken.toml", text.as_bytes());
    let out = refresh(&config);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let token = std::fs::read_to_string(
        keys::fixtures().join("gitlab-real/selfhosted_rgl_id_token_v2.jwt"),
    )
    .expect("token");
    let tf = site.sb.token_file("real.jwt", token.trim());
    let out = idtoken(
        &[
            "check",
            "--json",
            "--user",
            "nobody-idtoken-test",
            "--at",
            "1677188607",
            "--config",
            &config.display().to_string(),
            "--token-file",
            &tf.display().to_string(),
        ],
        &[],
    );
    let d = last_json_line(&out.stdout);
    assert!(code(&out) == 0 || code(&out) == 1, "{d}");
    assert_eq!(d["verified"], true, "{d}");
}

/// Security review 2, finding 7: a user-writable ca_file let a local user add a root CA.
/// It is read with the config's rules now: refresh fails for that issuer without fetching,
/// and status names the problem.
#[test]
fn a_ca_file_others_can_write_is_refused_and_reported() {
    let site = Site::new("refresh-ca-unsafe");
    site.publish(&[Key::B]);
    let good = site.seed(&[Key::A]);
    let config = site.config();
    set_mode(&site.sb.path("ca.pem"), 0o666);
    let out = refresh(&config);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod go-w"), "{}", stderr(&out));
    assert_eq!(
        site.server.hits(),
        0,
        "nothing may be fetched with that trust"
    );
    assert_eq!(std::fs::read(site.cache()).expect("cache"), good);
    let (rc, st) = status_json(&config);
    assert_eq!(rc, 1, "{st}");
    assert!(
        st["issuers"][0]["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["code"] == "ca_file"),
        "{st}"
    );
    set_mode(&site.sb.path("ca.pem"), 0o644);
    assert_eq!(code(&refresh(&config)), 0);
    assert_eq!(status_json(&config).0, 0);
}

/// Security review 2, finding 13: whoever can write the cache's directory can swap an older
/// cache (with a withdrawn key) back in. Such a directory is refused by the login path
/// (check exits 2), by status, and by refresh, which writes nothing there.
#[test]
fn a_cache_directory_others_can_write_is_refused_everywhere() {
    let site = Site::new("refresh-dir-unsafe");
    site.publish(&[Key::B]);
    let good = site.seed(&[Key::A]);
    // The config in a safe directory of its own: the config's directories are checked too
    // (issue 19.7), and here only the cache's is the subject.
    let config_dir = Sandbox::new("refresh-dir-unsafe-config");
    let config = config_dir.write(
        "idtoken.toml",
        &std::fs::read(site.config()).expect("config"),
    );
    set_mode(&config, 0o644);
    set_mode(&site.sb.dir, 0o777);
    let (rc, d) = check(&config, &site.sb, &site.token(Key::A));
    assert_eq!(rc, 2, "{d}");
    let (rc, st) = status_json(&config);
    assert_eq!(
        (rc, st["issuers"][0]["problems"][0]["code"].as_str()),
        (1, Some("unsafe_mode")),
        "{st}"
    );
    let out = refresh(&config);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("directory is not safe"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(site.cache()).expect("cache"), good);
    // Sticky, like /tmp: nobody can replace what root owns in it. The token's account does
    // not exist, so a usable cache takes the decision past the signature to the account.
    set_mode(&site.sb.dir, 0o1777);
    let (_, d) = check(&config, &site.sb, &site.token(Key::A));
    assert_eq!(d["reason"], "account_invalid", "{d}");
    set_mode(&site.sb.dir, 0o755);
}

/// Security review 2, finding 12: a retired-at stamp in the future (a refresh run while the
/// clock was ahead) kept a withdrawn key trusted for the clock error. The login path
/// refuses the key, and status flags the cache.
#[test]
fn a_retired_stamp_in_the_future_is_refused_and_flagged() {
    let site = Site::new("refresh-future-stamp");
    let config = site.config();
    let mut doc = keys::jwks(&[Key::A]);
    doc["keys"][0][RETIRED_AT] = json!(now() + 3 * 3600);
    site.sb
        .write("gitlab.jwks.json", doc.to_string().as_bytes());
    let (rc, d) = check(&config, &site.sb, &site.token(Key::A));
    assert_eq!((rc, d["reason"].as_str()), (1, Some("unknown_key")), "{d}");
    assert!(d.to_string().contains("later than now"), "{d}");
    let (rc, st) = status_json(&config);
    assert_eq!(rc, 1, "{st}");
    assert!(
        st["issuers"][0]["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["code"] == "retired_in_future"),
        "{st}"
    );
    // Within the leeway the stamp is honoured: the key verifies (the token's account does
    // not exist, so the decision ends at the account).
    doc["keys"][0][RETIRED_AT] = json!(now() + 30);
    site.sb
        .write("gitlab.jwks.json", doc.to_string().as_bytes());
    let (_, d) = check(&config, &site.sb, &site.token(Key::A));
    assert_eq!(d["reason"], "account_invalid", "{d}");
}
