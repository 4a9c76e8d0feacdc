//! The one HTTP client of the project: GET a small JSON document from an issuer, for
//! `idtoken refresh`. It lives in the `idtoken` command only, so the PAM module never links
//! an HTTP client and the login path never touches the network.
//!
//! What it guarantees: HTTPS only (plain http is allowed for loopback hosts alone, which is
//! what the tests use), certificates checked against the host's trust store plus the
//! issuer's `ca_file`, bounded connect and total time, responses capped at 1 MiB, redirects
//! only to https.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use idtoken_core::files;
use ureq::http::Uri;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};

/// The largest response accepted; a JWKS or discovery document is a few KiB.
pub const MAX_RESPONSE_BYTES: u64 = 1024 * 1024;
/// Time allowed to open the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a whole request: resolve, connect, TLS, headers and body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Hidden override of [`REQUEST_TIMEOUT`] in seconds, so the tests of a slow server stay fast.
pub const TIMEOUT_ENV: &str = "IDTOKEN_HTTP_TIMEOUT";
/// Redirects followed (https to https only).
const MAX_REDIRECTS: u32 = 5;

/// PEM bundles of the system trust store, first found wins: Debian and Ubuntu, RHEL and
/// Fedora (two spellings), SUSE, Alpine. `SSL_CERT_FILE`, when set, is used instead, as
/// OpenSSL does.
const SYSTEM_BUNDLES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// A client for one issuer: its trust roots and time limits.
pub struct Client {
    roots: Arc<Vec<Certificate<'static>>>,
    connect: Duration,
    total: Duration,
}

impl Client {
    /// A client trusting the system store plus `ca_file`. Errors name what to fix.
    pub fn new(ca_file: Option<&Path>) -> Result<Client, String> {
        let mut roots = system_roots();
        if let Some(path) = ca_file {
            roots.extend(certificates_in(path)?);
        }
        if roots.is_empty() {
            return Err(format!(
                "no trust roots: none of {} exists and no ca_file is set; install the \
                 ca-certificates package or set ca_file for this issuer",
                SYSTEM_BUNDLES.join(", ")
            ));
        }
        let total = request_timeout();
        Ok(Client {
            roots: Arc::new(roots),
            connect: CONNECT_TIMEOUT.min(total),
            total,
        })
    }

    /// GETs `url` and returns the body of a 2xx response, at most [`MAX_RESPONSE_BYTES`].
    pub fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let target = Target::of(url)?;
        let mut response = self
            .agent(target)
            .get(url)
            .header("Accept", "application/json")
            .call()
            .map_err(|e| self.describe(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the server answered HTTP {status}"));
        }
        response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| self.describe(&e))
    }

    fn agent(&self, target: Target) -> ureq::Agent {
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::Specific(Arc::clone(&self.roots)))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let mut config = ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_connect(Some(self.connect))
            .timeout_global(Some(self.total))
            .http_status_as_error(false)
            .user_agent(concat!("idtoken/", env!("CARGO_PKG_VERSION")))
            .max_idle_connections(0);
        config = match target {
            // https_only also refuses a redirect to http.
            Target::Https => config.https_only(true).max_redirects(MAX_REDIRECTS),
            // A proxy from the environment could not reach this host's loopback.
            Target::LoopbackHttps => config
                .https_only(true)
                .max_redirects(MAX_REDIRECTS)
                .proxy(None),
        };
        config.build().into()
    }

    /// A sysadmin's reading of a client error.
    fn describe(&self, e: &ureq::Error) -> String {
        match e {
            ureq::Error::Timeout(_) => format!(
                "no complete answer within {} s (connect limit {} s): the server is slow or \
                 unreachable",
                self.total.as_secs(),
                self.connect.as_secs()
            ),
            ureq::Error::BodyExceedsLimit(_) => {
                format!("the response is larger than {MAX_RESPONSE_BYTES} bytes, which is refused")
            }
            ureq::Error::RequireHttpsOnly(url) => {
                format!("refused to follow a redirect to {url}: keys are fetched over https only")
            }
            ureq::Error::Rustls(t) => tls_failed(t),
            // rustls errors met while reading arrive wrapped in an io::Error.
            ureq::Error::Io(io) if io.get_ref().is_some_and(|e| e.is::<rustls::Error>()) => {
                tls_failed(io)
            }
            ureq::Error::HostNotFound => "the host name does not resolve".to_string(),
            ureq::Error::ConnectionFailed => {
                "could not connect (is the server up and reachable from here?)".to_string()
            }
            ureq::Error::Io(io) => format!("network error: {io}"),
            other => other.to_string(),
        }
    }
}

fn tls_failed(e: &dyn std::fmt::Display) -> String {
    format!(
        "TLS failed: {e}; if the server's certificate comes from a private CA, set ca_file \
         for this issuer to that CA's PEM certificate"
    )
}

/// What kind of URL a fetch may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Https,
    LoopbackHttps,
}

impl Target {
    /// https:// only. Plain http is refused everywhere, loopback included: any local user
    /// can bind a loopback port and serve keys there (security review 2, finding 2).
    pub fn of(url: &str) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
        let host = uri.host().unwrap_or_default();
        match uri.scheme_str() {
            Some("https") if is_loopback(host) => Ok(Target::LoopbackHttps),
            Some("https") if !host.is_empty() => Ok(Target::Https),
            Some("http") => Err(format!(
                "{url} is plain http, which is refused (loopback included: any local user could \
                 serve keys there): keys must come over https; use ca_file for a private CA"
            )),
            _ => Err(format!("{url:?} is not an https:// URL")),
        }
    }
}

/// localhost, 127.0.0.0/8 or ::1.
pub fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn request_timeout() -> Duration {
    std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(REQUEST_TIMEOUT, Duration::from_secs)
}

/// The host's trust roots: `SSL_CERT_FILE` or the first system bundle that exists. A
/// certificate the bundle holds but that does not parse is skipped, as OpenSSL does.
fn system_roots() -> Vec<Certificate<'static>> {
    let chosen: Option<PathBuf> = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .or_else(|| {
            SYSTEM_BUNDLES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        });
    let Some(path) = chosen else {
        return Vec::new();
    };
    // Trust roots decide whose keys are fetched: read with the config's rules (root-owned,
    // not writable by others), so a bundle someone else can write adds no root.
    let Ok(pem) = files::read_trusted(&path, MAX_PEM_BYTES) else {
        return Vec::new();
    };
    ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// A PEM bundle larger than this is refused (Debian's whole bundle is ~220 KB).
const MAX_PEM_BYTES: u64 = 16 * 1024 * 1024;

/// The certificates of a PEM file such as `ca_file`; a file that holds none is an error.
/// It is read with the trusted-file checks of the config: whoever can write it can make
/// refresh trust their own server (security review 2, finding 7).
pub fn certificates_in(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let pem = files::read_trusted(path, MAX_PEM_BYTES).map_err(|p| format!("ca_file {p}"))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("ca_file {}: bad PEM: {e}", path.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "ca_file {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_loopback_included() {
        assert_eq!(
            Target::of("https://gitlab.example.org/oauth/discovery/keys"),
            Ok(Target::Https)
        );
        assert_eq!(
            Target::of("https://127.0.0.1:8443/keys"),
            Ok(Target::LoopbackHttps)
        );
        for loopback in [
            "http://127.0.0.1:8080/keys",
            "http://127.8.9.10/k",
            "http://localhost/k",
            "http://[::1]:99/k",
        ] {
            let e = Target::of(loopback).unwrap_err();
            assert!(e.contains("plain http"), "{loopback}: {e}");
        }
        assert!(Target::of("http://gitlab.example.org/k").is_err());
        assert!(Target::of("http://10.0.0.1/k").is_err());
        assert!(Target::of("http://localhost.example.org/k").is_err());
        assert!(Target::of("ftp://gitlab.example.org/k").is_err());
        assert!(Target::of("gitlab.example.org").is_err());
    }

    #[test]
    fn ca_file_must_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("idtoken-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("empty.pem");
        std::fs::write(&p, "nothing here\n").unwrap();
        assert!(
            certificates_in(&p)
                .unwrap_err()
                .contains("no PEM certificate")
        );
        assert!(certificates_in(&dir.join("absent.pem")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
