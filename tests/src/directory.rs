//! A real directory for the tests: OpenLDAP `slapd` with its own database on a loopback
//! port, read through `sssd -i` (id_provider = ldap) as the NSS of the test's mount
//! namespaces (`passwd: files sss`, `group: files sss`), the host's /etc untouched.
//!
//! Schema, as it works with what Debian ships: users are `inetOrgPerson` + `posixAccount`
//! (nis.schema). Debian has no rfc2307bis schema, and nis.schema's `posixGroup` is
//! structural, so it cannot share an entry with `groupOfNames`; groups are therefore
//! `groupOfNames` + `extensibleObject` (core.schema; it allows `gidNumber`), their members
//! DNs, and a group that is a member of another group nests. sssd reads them with
//! `ldap_schema = rfc2307bis`, `ldap_group_object_class = groupOfNames`,
//! `ldap_group_member = member`, and flattens the nesting: a nested member is in the outer
//! group's member list (getgrnam) and in the account's group list (getgrouplist).
//!
//! Every daemon runs in `isolate --pid` with PR_SET_PDEATHSIG, so a killed test leaves no
//! slapd or sssd behind; the harness stops them on drop too.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pam::{self, PamHarness};
use crate::sandbox::{Sandbox, set_mode};

pub const SLAPD: &str = "/usr/sbin/slapd";
pub const SSSD: &str = "/usr/sbin/sssd";
pub const SUFFIX: &str = "dc=idtoken,dc=test";

/// An account in the directory: name, uid, and the groups whose `member` lists it.
#[derive(Debug, Clone, Copy)]
pub struct LdapUser {
    pub name: &'static str,
    pub uid: u32,
    pub member_of: &'static [&'static str],
}

/// A group in the directory: its members are users and other groups (nesting), by name.
#[derive(Debug, Clone, Copy)]
pub struct LdapGroup {
    pub name: &'static str,
    pub gid: u32,
    pub groups: &'static [&'static str],
}

/// Every user's primary group (its gidNumber); it lists them all.
pub const USERS_GROUP: (&str, u32) = ("ldap-users", 7100);

/// Whether the directory tests can run here: root, slapd, sssd, libnss_sss, the tools.
pub fn available() -> Result<(), String> {
    crate::sshd::available()?;
    for (path, package) in [
        (SLAPD, "slapd"),
        ("/usr/sbin/slapadd", "slapd"),
        (SSSD, "sssd-common"),
        ("/usr/libexec/sssd/sssd_be", "sssd-common"),
        ("/var/lib/sss", "sssd-common"),
    ] {
        if !Path::new(path).exists() {
            return Err(format!("{path} is missing (apt-get install {package})"));
        }
    }
    if crate::sshd::which("ldapsearch").is_none() {
        return Err("ldapsearch is missing (apt-get install ldap-utils)".into());
    }
    if !nss_sss_installed() {
        return Err("libnss_sss.so.2 is missing (apt-get install libnss-sss)".into());
    }
    Ok(())
}

fn nss_sss_installed() -> bool {
    ["/usr/lib", "/lib"].iter().any(|base| {
        std::fs::read_dir(base).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.path().join("libnss_sss.so.2").exists())
        })
    })
}

/// Starts `isolate OPTIONS -- COMMAND`, killed (SIGKILL) if this test process dies.
fn spawn_isolated(options: &[OsString], command: &[OsString], log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let mut c = Command::new(pam::isolate_script());
    c.arg("--pid")
        .args(options)
        .arg("--")
        .args(command)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    crate::child::die_with_parent(&mut c);
    c.spawn()
        .unwrap_or_else(|e| panic!("isolate {command:?}: {e}"))
}

/// Kills an isolated daemon: isolate's unshare blocks SIGTERM, and its death kills the
/// PID namespace (--kill-child), daemon and children included.
fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// slapd on 127.0.0.1 with its own config file, database directory and port.
pub struct Slapd {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    /// Removed after the daemon is killed (Drop kills first).
    _sandbox: Sandbox,
}

impl Slapd {
    /// Loads `users` and `groups` (plus [`USERS_GROUP`]) into a new database in a
    /// directory of its own and starts slapd on a free port.
    pub fn start(users: &[LdapUser], groups: &[LdapGroup]) -> Slapd {
        let sandbox = Sandbox::new("slapd");
        let dir = sandbox.dir.clone();
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
        set_mode(&data, 0o700);
        let conf = dir.join("slapd.conf");
        let schema = "/etc/ldap/schema";
        std::fs::write(
            &conf,
            format!(
                "include {schema}/core.schema\ninclude {schema}/cosine.schema\n\
                 include {schema}/inetorgperson.schema\ninclude {schema}/nis.schema\n\
                 pidfile {pid}\nmodulepath /usr/lib/ldap\nmoduleload back_mdb\n\
                 database mdb\nsuffix \"{SUFFIX}\"\nrootdn \"cn=admin,{SUFFIX}\"\n\
                 directory {data}\nmaxsize 10485760\n",
                pid = dir.join("slapd.pid").display(),
                data = data.display()
            ),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
        let ldif = dir.join("data.ldif");
        std::fs::write(&ldif, ldif_of(users, groups))
            .unwrap_or_else(|e| panic!("{}: {e}", ldif.display()));
        // slapadd writes the database offline: no bind, no password, no race with a client.
        let out = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&ldif)
            .output()
            .unwrap_or_else(|e| panic!("slapadd: {e}"));
        assert!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut slapd = Slapd {
            dir,
            port: 0,
            child: None,
            _sandbox: sandbox,
        };
        // The port is chosen here and could be taken before slapd binds it: slapd then
        // exits, and another port is tried.
        for _ in 0..5 {
            slapd.port = free_port();
            if slapd.run() {
                return slapd;
            }
        }
        panic!(
            "slapd did not start; its log:\n{}",
            std::fs::read_to_string(slapd.dir.join("slapd.log")).unwrap_or_default()
        )
    }

    /// Starts slapd on `self.port`; whether it serves our suffix within 10 s.
    fn run(&mut self) -> bool {
        let command: Vec<OsString> = vec![
            SLAPD.into(),
            "-d".into(),
            "0".into(), // foreground
            "-h".into(),
            self.uri().into(),
            "-f".into(),
            self.dir.join("slapd.conf").into(),
        ];
        let mut child = spawn_isolated(&[], &command, &self.dir.join("slapd.log"));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if self.answers() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    pub fn uri(&self) -> String {
        format!("ldap://127.0.0.1:{}/", self.port)
    }

    /// Whether an anonymous search finds the base entry: this slapd, not whoever holds
    /// the port.
    pub fn answers(&self) -> bool {
        Command::new("ldapsearch")
            .args(["-x", "-LLL", "-o", "nettimeout=2", "-H", &self.uri()])
            .args(["-b", SUFFIX, "-s", "base", "dn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The directory goes down (the port closed).
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ldif_of(users: &[LdapUser], groups: &[LdapGroup]) -> String {
    let mut out = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: idtoken test\ndc: idtoken\n\n\
         dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n"
    );
    let user_dn = |n: &str| format!("uid={n},ou=people,{SUFFIX}");
    let group_dn = |n: &str| format!("cn={n},ou=groups,{SUFFIX}");
    for u in users {
        out.push_str(&format!(
            "dn: {}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\nuid: {n}\ncn: {n}\nsn: {n}\n\
             uidNumber: {}\ngidNumber: {}\nhomeDirectory: /\nloginShell: /bin/sh\n\n",
            user_dn(u.name),
            u.uid,
            USERS_GROUP.1,
            n = u.name
        ));
    }
    let all: Vec<LdapGroup> = std::iter::once(LdapGroup {
        name: USERS_GROUP.0,
        gid: USERS_GROUP.1,
        groups: &[],
    })
    .chain(groups.iter().copied())
    .collect();
    for g in &all {
        let mut members: Vec<String> = users
            .iter()
            .filter(|u| g.name == USERS_GROUP.0 || u.member_of.contains(&g.name))
            .map(|u| user_dn(u.name))
            .collect();
        members.extend(g.groups.iter().map(|n| group_dn(n)));
        // groupOfNames must have a member; the admin DN stands in for "nobody".
        if members.is_empty() {
            members.push(format!("cn=admin,{SUFFIX}"));
        }
        out.push_str(&format!(
            "dn: {}\nobjectClass: groupOfNames\nobjectClass: extensibleObject\ncn: {}\ngidNumber: {}\n",
            group_dn(g.name),
            g.name,
            g.gid
        ));
        for m in members {
            out.push_str(&format!("member: {m}\n"));
        }
        out.push('\n');
    }
    out
}

/// `sssd -i` with id_provider = ldap, its own config (0600), cache and logs under `dir`,
/// which `isolate --sss` puts in place of /etc/sssd, /var/lib/sss and /var/log/sssd.
pub struct Sssd {
    pub dir: PathBuf,
    child: Option<Child>,
    /// Removed after the daemon is killed (Drop kills first).
    _sandbox: Sandbox,
}

impl Sssd {
    /// Writes sssd's config for the directory at `ldap_uri`, in a directory of its own,
    /// and starts it.
    pub fn start(ldap_uri: &str) -> Sssd {
        Sssd::start_with(ldap_uri, "")
    }

    /// As `start`, with `domain_options` (`key = value` lines) added to the domain's
    /// section, e.g. `case_sensitive = false` as AD sites run it.
    pub fn start_with(ldap_uri: &str, domain_options: &str) -> Sssd {
        let sandbox = Sandbox::new("sss");
        let dir = sandbox.dir.clone();
        for sub in [
            "etc/conf.d",
            "lib/db",
            "lib/mc",
            "lib/pipes/private",
            "lib/pubconf/krb5.include.d",
            "lib/gpo_cache",
            "lib/deskprofile",
            "lib/secrets",
            "log",
            "run",
        ] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        set_mode(&dir.join("etc"), 0o711);
        set_mode(&dir.join("lib/db"), 0o700);
        set_mode(&dir.join("lib/pipes/private"), 0o700);
        let conf = dir.join("etc/sssd.conf");
        std::fs::write(
            &conf,
            format!(
                "[sssd]\nservices = nss\ndomains = LDAP\n\n[nss]\n\n\
                 [domain/LDAP]\nid_provider = ldap\nldap_uri = {ldap_uri}\n\
                 ldap_search_base = {SUFFIX}\nldap_schema = rfc2307bis\n\
                 ldap_group_object_class = groupOfNames\nldap_group_member = member\n\
                 ldap_id_use_start_tls = false\ncache_credentials = false\n\
                 enumerate = false\ndebug_level = 3\n{domain_options}\n"
            ),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
        // sssd refuses a config others can read.
        set_mode(&conf, 0o600);
        let mut sssd = Sssd {
            dir,
            child: None,
            _sandbox: sandbox,
        };
        sssd.run();
        sssd
    }

    /// The `isolate` options that make a namespace's NSS this sssd.
    pub fn isolate_args(&self) -> Vec<OsString> {
        vec!["--sss".into(), self.dir.clone().into()]
    }

    fn run(&mut self) {
        let socket = self.dir.join("lib/pipes/nss");
        let _ = std::fs::remove_file(&socket);
        let command: Vec<OsString> = vec![SSSD.into(), "-i".into(), "--logger=files".into()];
        // Its own /run: sssd's pid file is /run/sssd.pid, whatever the config says.
        let mut options = self.isolate_args();
        options.extend(["--run".into(), self.dir.join("run").into()]);
        let mut child = spawn_isolated(&options, &command, &self.dir.join("sssd.stdout"));
        let start = Instant::now();
        while !socket.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("sssd exited ({status}); its logs:\n{}", self.logs());
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sssd made no NSS socket in 20 s; its logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child = Some(child);
    }

    /// sssd stops (killed, as a crash or an OOM kill would). Its socket file stays, so
    /// clients get ECONNREFUSED; its memory cache stays too, unless dropped. Returns once
    /// nothing listens on the socket: the daemons die with their PID namespace a little
    /// after `isolate` does, and until then the NSS responder may still answer, or write
    /// its memory cache again after a test dropped it.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        kill(&mut self.child);
        let socket = self.dir.join("lib/pipes/nss");
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            if start.elapsed() > Duration::from_secs(10) {
                panic!("sssd's NSS socket still answers 10 s after sssd was killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Removes the memory cache (/var/lib/sss/mc), which libnss_sss reads without asking
    /// the daemon.
    pub fn drop_memory_cache(&self) {
        let mc = self.dir.join("lib/mc");
        for e in std::fs::read_dir(&mc).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }

    /// sssd's own logs and stdout, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = std::fs::read_to_string(self.dir.join("sssd.stdout")).unwrap_or_default();
        for e in std::fs::read_dir(self.dir.join("log"))
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push_str(&format!("--- {}\n", e.path().display()));
            out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
        out
    }
}

impl Drop for Sssd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PAM harness (test accounts in files, syslog, PAM stacks) whose NSS is `files sss`
/// with this test's sssd reading this test's slapd. Hand `pam` to `Sshd::start` for a
/// real sshd on the same NSS.
pub struct Site {
    pub sssd: Sssd,
    pub slapd: Slapd,
    pub pam: PamHarness,
}

impl Site {
    pub fn start(tag: &str, users: &[LdapUser], groups: &[LdapGroup]) -> Site {
        Site::start_with(tag, users, groups, "")
    }

    /// As `start`, with `sssd_domain_options` in sssd's domain section.
    pub fn start_with(
        tag: &str,
        users: &[LdapUser],
        groups: &[LdapGroup],
        sssd_domain_options: &str,
    ) -> Site {
        let mut pam = PamHarness::new(tag);
        let slapd = Slapd::start(users, groups);
        let sssd = Sssd::start_with(&slapd.uri(), sssd_domain_options);
        write_nsswitch(&pam.etc);
        pam.sss = Some(sssd.dir.clone());
        Site { sssd, slapd, pam }
    }

    /// `idtoken ARGS` inside the site's namespace (its NSS), as root.
    pub fn idtoken(&self, args: &[&str]) -> std::process::Output {
        idtoken_in(&self.pam, args)
    }

    /// `getent DB KEY` inside the site's namespace: what NSS answers there.
    pub fn getent(&self, db: &str, key: &str) -> std::process::Output {
        Command::new(pam::isolate_script())
            .arg("--etc")
            .arg(&self.pam.etc)
            .args(self.pam.isolate_args())
            .args(["--", "getent", db, key])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("isolate getent: {e}"))
    }
}

/// `idtoken ARGS` inside the namespace of `pam` (its accounts, and its sssd if it has one).
pub fn idtoken_in(pam: &PamHarness, args: &[&str]) -> std::process::Output {
    Command::new(pam::isolate_script())
        .arg("--etc")
        .arg(&pam.etc)
        .args(pam.isolate_args())
        .arg("--")
        .arg(crate::idtoken_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("isolate idtoken: {e}"))
}

/// The site's nsswitch.conf: accounts and groups from files, then sssd.
pub fn write_nsswitch(etc: &Path) {
    let p = etc.join("nsswitch.conf");
    std::fs::write(
        &p,
        "passwd: files sss\ngroup: files sss\ninitgroups: files sss\nshadow: files\n\
         gshadow: files\nhosts: files\n",
    )
    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    set_mode(&p, 0o644);
}
