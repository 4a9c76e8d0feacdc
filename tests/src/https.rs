//! A real HTTPS server on 127.0.0.1 for the key refresh tests, with a private CA made in
//! the test: the refresh code sees real TLS, real certificates and real sockets, and the
//! tests choose, per path, what the issuer answers (status, body, delay).
//!
//! Bounded by design: each connection thread reads one request head of at most 16 KiB with
//! a 5 s socket timeout, a delayed answer waits at most [`MAX_DELAY`] and stops early when
//! the server is dropped, and dropping the server stops its accept loop.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;

/// The longest a test may make the server wait before answering.
pub const MAX_DELAY: Duration = Duration::from_secs(20);
const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 16 * 1024;

/// A private certificate authority, made fresh for a test.
pub struct TestCa {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("idtoken test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes the CA certificate (PEM, mode 0644) to `path`, for `ca_file`.
    pub fn write_pem(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.pem).expect("write CA PEM");
        crate::sandbox::set_mode(path, 0o644);
        path.to_path_buf()
    }

    /// A server certificate for 127.0.0.1 and localhost, and its key.
    fn server_cert(&self) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "idtoken test server");
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), der)
    }
}

/// What the server answers on one path.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub delay: Duration,
    /// A `Location` header, for redirects.
    pub location: Option<String>,
}

impl Reply {
    pub fn json(v: &Value) -> Reply {
        Reply::raw(200, v.to_string().into_bytes())
    }

    pub fn raw(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            body: body.into(),
            delay: Duration::ZERO,
            location: None,
        }
    }

    /// A 302 to `location`.
    pub fn redirect(location: &str) -> Reply {
        Reply {
            location: Some(location.to_string()),
            ..Reply::raw(302, "")
        }
    }

    pub fn delayed(mut self, d: Duration) -> Reply {
        self.delay = d.min(MAX_DELAY);
        self
    }
}

type Routes = Arc<Mutex<HashMap<String, Reply>>>;

/// The server. Unknown paths get 404.
pub struct Server {
    addr: SocketAddr,
    tls: bool,
    routes: Routes,
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// An HTTPS server whose certificate `ca` signed.
    pub fn https(ca: &TestCa) -> Server {
        let (cert, key) = ca.server_cert();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server TLS config");
        Server::start(Some(Arc::new(config)))
    }

    /// A plain HTTP server (only loopback http is ever allowed by refresh).
    pub fn plain() -> Server {
        Server::start(None)
    }

    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let routes: Routes = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let is_tls = tls.is_some();
        let thread = {
            let (routes, stop, hits) = (routes.clone(), stop.clone(), hits.clone());
            std::thread::spawn(move || accept_loop(&listener, tls, &routes, &stop, &hits))
        };
        Server {
            addr,
            tls: is_tls,
            routes,
            stop,
            hits,
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:PORT` (or `http://` for a plain server), no trailing slash.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn set(&self, path: &str, reply: Reply) {
        if let Ok(mut r) = self.routes.lock() {
            r.insert(path.to_string(), reply);
        }
    }

    /// Requests received so far (connections that sent a request head).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Serves a discovery document naming `issuer` and pointing at `/oauth/discovery/keys`
    /// on this server, which serves `jwks`: GitLab's layout.
    pub fn gitlab(&self, issuer: &str, jwks: &Value) {
        self.set(
            "/.well-known/openid-configuration",
            Reply::json(&serde_json::json!({
                "issuer": issuer,
                "jwks_uri": format!("{}/oauth/discovery/keys", self.url()),
                "id_token_signing_alg_values_supported": ["RS256"],
            })),
        );
        self.set("/oauth/discovery/keys", Reply::json(jwks));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the loop sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port on 127.0.0.1 where nothing listens. The port is held by a socket that is bound
/// but never listens (connections to it are refused) and stays open to the end of the
/// test process: a port released at once could be taken by another test's server.
pub fn closed_port_url() -> String {
    // SAFETY: socket(2) has no memory preconditions.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a socket this function just made and nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_in is plain data; all zeroes is a valid value (port 0: any).
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let sa = std::ptr::addr_of_mut!(addr).cast::<libc::sockaddr>();
    // SAFETY: sa points to a sockaddr_in of len bytes, alive for both calls.
    let bound = unsafe {
        libc::bind(socket.as_raw_fd(), sa, len) == 0
            && libc::getsockname(socket.as_raw_fd(), sa, &mut len) == 0
    };
    assert!(
        bound,
        "bind 127.0.0.1:0: {}",
        std::io::Error::last_os_error()
    );
    let port = u16::from_be(addr.sin_port);
    // Deliberately never closed (see above); the process's exit releases it.
    std::mem::forget(socket);
    format!("https://127.0.0.1:{port}")
}

fn accept_loop(
    listener: &TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    routes: &Routes,
    stop: &Arc<AtomicBool>,
    hits: &Arc<AtomicUsize>,
) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else { continue };
        let (tls, routes, stop, hits) = (tls.clone(), routes.clone(), stop.clone(), hits.clone());
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(SOCKET_TIMEOUT));
            let _ = stream.set_write_timeout(Some(SOCKET_TIMEOUT));
            match tls {
                Some(config) => {
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut s = rustls::StreamOwned::new(conn, stream);
                    if serve(&mut s, &routes, &stop, &hits).is_ok() {
                        s.conn.send_close_notify();
                        let _ = s.flush();
                    }
                }
                None => {
                    let mut s = stream;
                    let _ = serve(&mut s, &routes, &stop, &hits);
                }
            }
        });
    }
}

fn serve(
    s: &mut (impl Read + Write),
    routes: &Routes,
    stop: &AtomicBool,
    hits: &AtomicUsize,
) -> std::io::Result<()> {
    let path = read_request_path(s)?;
    hits.fetch_add(1, Ordering::SeqCst);
    let reply = routes
        .lock()
        .ok()
        .and_then(|r| r.get(&path).cloned())
        .unwrap_or_else(|| Reply::raw(404, "not found"));
    let until = Instant::now() + reply.delay;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let location = reply
        .location
        .as_deref()
        .map(|l| format!("Location: {l}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{location}Connection: close\r\n\r\n",
        reply.status,
        if reply.status < 400 { "OK" } else { "Error" },
        reply.body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(&reply.body)?;
    s.flush()
}

/// The path of a `GET PATH HTTP/1.1` request, after reading its whole head.
fn read_request_path(s: &mut impl Read) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 || head.len() > MAX_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let path = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/");
    Ok(path.to_string())
}
