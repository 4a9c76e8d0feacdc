//! Doctor: the service's PAM auth stack. The files are read as Linux-PAM reads them
//! (`include` and `@include` inline, `substack` one level down, a missing service file
//! falling back to `other`), and the stack is then walked the way libpam's dispatcher walks
//! it, once per answer the module can give, to see what each answer does: a valid token
//! must log in without a password module running, a refused one must end the stack, and a
//! password (PAM_IGNORE) or a broken setup (PAM_AUTHINFO_UNAVAIL) must still reach the
//! password modules and be able to log in.

use std::path::{Path, PathBuf};

use super::Check;

/// Linux-PAM's limit on nested includes (PAM_SUBSTACK_MAX_LEVEL).
const MAX_DEPTH: usize = 16;

/// What libpam does with a return code (`man pam.conf`: actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Ignore,
    Bad,
    Die,
    Ok,
    Done,
    Reset,
    Jump(u32),
}

/// The return codes the walk needs; every other code of the control maps to `default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rc {
    Success,
    AuthErr,
    Ignore,
    AuthinfoUnavail,
    /// What libpam returns for a broken line or a bad jump (PAM_PERM_DENIED).
    MustFail,
}

#[derive(Debug, Clone)]
struct Controls {
    success: Option<Action>,
    auth_err: Option<Action>,
    ignore: Option<Action>,
    authinfo_unavail: Option<Action>,
    perm_denied: Option<Action>,
    default: Action,
}

impl Controls {
    fn action(&self, rc: Rc) -> Action {
        match rc {
            Rc::Success => self.success,
            Rc::AuthErr => self.auth_err,
            Rc::Ignore => self.ignore,
            Rc::AuthinfoUnavail => self.authinfo_unavail,
            Rc::MustFail => self.perm_denied,
        }
        .unwrap_or(self.default)
    }

    /// The keyword controls as libpam expands them, or a `[value=action ...]` list.
    fn parse(text: &str) -> Option<Controls> {
        let keyword = |success, ignore, default| Controls {
            success: Some(success),
            auth_err: None,
            ignore,
            authinfo_unavail: None,
            perm_denied: None,
            default,
        };
        match text.to_ascii_lowercase().as_str() {
            "required" => return Some(keyword(Action::Ok, Some(Action::Ignore), Action::Bad)),
            "requisite" => return Some(keyword(Action::Ok, Some(Action::Ignore), Action::Die)),
            "optional" => return Some(keyword(Action::Ok, None, Action::Ignore)),
            "sufficient" => return Some(keyword(Action::Done, None, Action::Ignore)),
            _ => {}
        }
        let inner = text.strip_prefix('[')?.strip_suffix(']')?;
        let mut c = keyword(Action::Bad, None, Action::Bad);
        c.success = None;
        for pair in inner.split_whitespace() {
            let (value, action) = pair.split_once('=')?;
            let action = match action.to_ascii_lowercase().as_str() {
                "ignore" => Action::Ignore,
                "bad" => Action::Bad,
                "die" => Action::Die,
                "ok" => Action::Ok,
                "done" => Action::Done,
                "reset" => Action::Reset,
                n => Action::Jump(n.parse().ok()?),
            };
            match value.to_ascii_lowercase().as_str() {
                "success" => c.success = Some(action),
                "auth_err" => c.auth_err = Some(action),
                "ignore" => c.ignore = Some(action),
                "authinfo_unavail" => c.authinfo_unavail = Some(action),
                "perm_denied" => c.perm_denied = Some(action),
                "default" => c.default = action,
                // Codes the walk never produces.
                _ => {}
            }
        }
        Some(c)
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Module {
        path: String,
        args: Vec<String>,
        controls: Controls,
    },
    /// The marker libpam puts before a substack's lines (skipped as one by a jump).
    Substack,
    /// A line libpam cannot use (missing include, bad control): it fails when reached.
    Broken(String),
}

#[derive(Debug, Clone)]
struct Entry {
    /// `file:line`, for the messages.
    at: String,
    level: usize,
    kind: Kind,
}

impl Entry {
    fn module_name(&self) -> Option<&str> {
        match &self.kind {
            Kind::Module { path, .. } => Some(path.rsplit('/').next().unwrap_or(path)),
            _ => None,
        }
    }

    /// pam_idtoken.so as installed, or the build's libpam_idtoken.so named by path.
    fn is_idtoken(&self) -> bool {
        self.module_name()
            .is_some_and(|n| n.ends_with("pam_idtoken.so"))
    }

    fn is_password(&self) -> bool {
        self.module_name()
            .is_some_and(|n| PASSWORD_MODULES.contains(&n))
            && !self.is_smartcard_requirement()
            && !self.has_arg("try_cert_auth")
    }

    fn has_arg(&self, want: &str) -> bool {
        matches!(&self.kind, Kind::Module { args, .. } if args.iter().any(|a| a == want))
    }

    /// What a failure of this line does in the auth stack.
    fn on_failure(&self) -> Option<Action> {
        match &self.kind {
            Kind::Module { controls, .. } => Some(controls.action(Rc::AuthErr)),
            _ => None,
        }
    }

    fn is_smartcard_requirement(&self) -> bool {
        self.module_name() == Some("pam_sss.so") && self.has_arg("require_cert_auth")
    }
}

/// A line that must hold for every login of the stack, tokens included: faillock's
/// `preauth` (the lock), a `pam_deny.so` before any password module (authselect's
/// with-smartcard-required), pam_sss's `require_cert_auth`, and a `pam_u2f.so` whose
/// failure fails the stack (with-pam-u2f-2fa). What each is, for the messages.
fn requirement(e: &Entry, first_password: Option<usize>, index: usize) -> Option<&'static str> {
    let name = e.module_name()?;
    let fails_stack = matches!(e.on_failure(), Some(Action::Bad | Action::Die));
    if name == "pam_faillock.so" && e.has_arg("preauth") {
        Some("pam_faillock.so preauth: the lock of an account with too many failures")
    } else if name == "pam_deny.so" && fails_stack && first_password.is_none_or(|p| index < p) {
        Some(
            "pam_deny.so before every password module: a smartcard is required (authselect's with-smartcard-required)",
        )
    } else if e.is_smartcard_requirement() {
        Some("pam_sss.so require_cert_auth: a smartcard is required")
    } else if name == "pam_u2f.so" && fails_stack {
        Some("pam_u2f.so: the second factor (authselect's with-pam-u2f-2fa)")
    } else {
        None
    }
}

/// Modules that check a password: what a refused token must never reach.
const PASSWORD_MODULES: &[&str] = &[
    "pam_unix.so",
    "pam_sss.so",
    "pam_krb5.so",
    "pam_ldap.so",
    "pam_winbind.so",
];

/// The auth lines of a service, with the files read and the broken lines found.
struct Stack {
    entries: Vec<Entry>,
    /// The file the stack starts at (the service's, or `other`).
    top: PathBuf,
}

fn load(dir: &Path, service: &str) -> Result<Stack, String> {
    load_phase(dir, service, "auth")
}

/// The lines of one phase (`auth`, `account`) of a service, includes followed.
fn load_phase(dir: &Path, service: &str, phase: &str) -> Result<Stack, String> {
    let own = dir.join(service);
    let top = if own.is_file() {
        own
    } else {
        let other = dir.join("other");
        if !other.is_file() {
            return Err(format!(
                "neither {} nor {} exists",
                own.display(),
                other.display()
            ));
        }
        other
    };
    let mut entries = Vec::new();
    read_file(dir, &top, phase, 0, 0, &mut entries);
    Ok(Stack { entries, top })
}

fn read_file(
    dir: &Path,
    file: &Path,
    phase: &str,
    depth: usize,
    level: usize,
    out: &mut Vec<Entry>,
) {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            out.push(Entry {
                at: file.display().to_string(),
                level,
                kind: Kind::Broken(format!("{} cannot be read: {e}", file.display())),
            });
            return;
        }
    };
    for (n, line) in logical_lines(&text) {
        let at = format!("{}:{n}", file.display());
        let words = tokens(&line);
        let Some((first, rest)) = words.split_first() else {
            continue;
        };
        let first = first.to_ascii_lowercase();
        // `@include FILE`: every line of FILE, as `auth include FILE` does for auth.
        let (kind_word, rest) = if first == "@include" {
            (phase.to_string(), [&["include".to_string()], rest].concat())
        } else {
            (first.trim_start_matches('-').to_string(), rest.to_vec())
        };
        if kind_word != phase {
            continue;
        }
        let Some((control, rest)) = rest.split_first() else {
            out.push(broken(&at, level, "no control"));
            continue;
        };
        let control_lc = control.to_ascii_lowercase();
        if control_lc == "include" || control_lc == "substack" {
            let Some(name) = rest.first() else {
                out.push(broken(&at, level, "include without a file"));
                continue;
            };
            let target = if name.starts_with('/') {
                PathBuf::from(name)
            } else {
                dir.join(name)
            };
            if depth >= MAX_DEPTH {
                out.push(broken(&at, level, "includes nested too deep"));
            } else if !target.is_file() {
                out.push(broken(
                    &at,
                    level,
                    &format!("includes {}, which does not exist", target.display()),
                ));
            } else if control_lc == "substack" {
                out.push(Entry {
                    at: at.clone(),
                    level,
                    kind: Kind::Substack,
                });
                read_file(
                    dir,
                    &target,
                    phase,
                    depth.saturating_add(1),
                    level.saturating_add(1),
                    out,
                );
            } else {
                read_file(dir, &target, phase, depth.saturating_add(1), level, out);
            }
            continue;
        }
        let Some(controls) = Controls::parse(control) else {
            out.push(broken(
                &at,
                level,
                &format!("control {control:?} is not understood"),
            ));
            continue;
        };
        let Some((path, args)) = rest.split_first() else {
            out.push(broken(&at, level, "no module"));
            continue;
        };
        out.push(Entry {
            at,
            level,
            kind: Kind::Module {
                path: path.clone(),
                args: args.to_vec(),
                controls,
            },
        });
    }
}

fn broken(at: &str, level: usize, why: &str) -> Entry {
    Entry {
        at: at.to_string(),
        level,
        kind: Kind::Broken(format!("{at}: {why}")),
    }
}

/// Lines with comments removed and `\` continuations joined, each with its first line number.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default();
        let (start, mut acc) = pending
            .take()
            .unwrap_or((i.saturating_add(1), String::new()));
        if let Some(cont) = line.strip_suffix('\\') {
            acc.push_str(cont);
            acc.push(' ');
            pending = Some((start, acc));
        } else {
            acc.push_str(line);
            out.push((start, acc));
        }
    }
    out.extend(pending);
    out
}

/// Words of a line; a `[...]` control is one word, spaces inside it included.
fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let end = if rest.starts_with('[') {
            rest.find(']').map_or(rest.len(), |i| i.saturating_add(1))
        } else {
            rest.find(char::is_whitespace).unwrap_or(rest.len())
        };
        let (word, tail) = rest.split_at(end);
        out.push(word.to_string());
        rest = tail.trim_start();
    }
    out
}

/// What one walk of the stack did.
struct Walk {
    result: Rc,
    password_ran: bool,
    /// The entries (indices) whose module ran.
    ran: Vec<usize>,
}

/// Walks the stack as libpam's `_pam_dispatch_aux` does, with the module answering `ours`
/// and the password modules `password`. The other modules are taken to pass (pam_env,
/// pam_faildelay, pam_succeed_if, faillock's preauth), except the ones whose answer is
/// known: pam_deny fails, pam_permit passes, faillock's `authfail` fails, pam_systemd_home
/// steps aside for accounts it does not manage.
fn walk(entries: &[Entry], ours: Rc, password: Rc) -> Walk {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Impression {
        Undef,
        Positive,
        Negative,
    }
    let mut impression = Impression::Undef;
    let mut status = Rc::MustFail;
    let mut saved = vec![(Impression::Undef, Rc::MustFail); MAX_DEPTH.saturating_add(2)];
    let mut password_ran = false;
    let mut ran = Vec::new();
    let mut prev_level = 0;
    let mut i = 0usize;
    let level_at = |k: usize| entries.get(k).map(|e| e.level);
    while let Some(e) = entries.get(i) {
        let level = e.level;
        if prev_level < level
            && let Some(slot) = saved.get_mut(level)
        {
            *slot = (impression, status);
        }
        prev_level = level;
        let (rc, controls) = match &e.kind {
            Kind::Substack => {
                i = i.saturating_add(1);
                continue;
            }
            Kind::Broken(_) => (Rc::MustFail, Controls::parse("required")),
            Kind::Module { args, controls, .. } => {
                ran.push(i);
                let name = e.module_name().unwrap_or_default();
                let rc = if e.is_idtoken() {
                    ours
                } else if e.is_password() {
                    password_ran = true;
                    password
                } else if name == "pam_deny.so"
                    || (name == "pam_faillock.so" && args.iter().any(|a| a == "authfail"))
                {
                    Rc::AuthErr
                } else if name == "pam_systemd_home.so"
                    || e.is_smartcard_requirement()
                    || e.has_arg("try_cert_auth")
                {
                    // No card for this account (and pam_u2f passes: nouserok or touched).
                    Rc::Ignore
                } else {
                    Rc::Success
                };
                (rc, Some(controls.clone()))
            }
        };
        let action = controls.map_or(Action::Bad, |c| c.action(rc));
        let mut decided = false;
        match action {
            Action::Reset => {
                if let Some(s) = saved.get(level) {
                    (impression, status) = *s;
                }
            }
            Action::Ok | Action::Done => {
                if impression == Impression::Undef
                    || (impression == Impression::Positive && status == Rc::Success)
                {
                    impression = Impression::Positive;
                    status = rc;
                }
                decided = impression == Impression::Positive && action == Action::Done;
            }
            Action::Bad | Action::Die => {
                if impression != Impression::Negative {
                    impression = Impression::Negative;
                    status = if rc == Rc::Ignore { Rc::MustFail } else { rc };
                }
                decided = action == Action::Die;
            }
            Action::Ignore => {}
            Action::Jump(n) => {
                let mut left = n;
                // Skip `n` lines of this level; a substack counts as one.
                while left > 0 && level_at(i.saturating_add(1)).is_some_and(|l| l >= level) {
                    i = i.saturating_add(1);
                    while level_at(i.saturating_add(1)).is_some_and(|l| l > level) {
                        i = i.saturating_add(1);
                    }
                    left = left.saturating_sub(1);
                }
                if left > 0 {
                    // libpam: "bad jump in stack".
                    impression = Impression::Negative;
                    status = Rc::MustFail;
                }
            }
        }
        if decided {
            // `done`/`die` end this level: the stack, or only the substack.
            while level_at(i.saturating_add(1)).is_some_and(|l| l >= level) {
                i = i.saturating_add(1);
            }
        }
        i = i.saturating_add(1);
    }
    if status == Rc::Success && impression != Impression::Positive {
        status = Rc::MustFail;
    }
    Walk {
        result: status,
        password_ran,
        ran,
    }
}

pub fn checks(dir: &Path, service: &str, config: &Path) -> Vec<Check> {
    let stack = match load(dir, service) {
        Ok(s) => s,
        Err(why) => {
            return vec![Check::fail(
                "pam_stack",
                format!("PAM service {service:?}: {why}; libpam refuses every login"),
                format!(
                    "create {} (see docs/install.md, \"Put the module in the login stack\")",
                    dir.join(service).display()
                ),
            )];
        }
    };
    let mut out = Vec::new();
    let top = stack.top.display().to_string();
    let line = "auth [success=done auth_err=die default=ignore] pam_idtoken.so";
    let broken: Vec<&str> = stack
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::Broken(why) => Some(why.as_str()),
            _ => None,
        })
        .collect();
    if !broken.is_empty() {
        out.push(Check::fail(
            "pam_stack.lines",
            format!(
                "lines libpam cannot use (they fail when reached): {}",
                broken.join("; ")
            ),
            "correct or remove those lines",
        ));
    }
    let ours: Vec<&Entry> = stack.entries.iter().filter(|e| e.is_idtoken()).collect();
    let Some(first) = ours.first() else {
        out.push(Check::fail(
            "pam_stack.module",
            format!("pam_idtoken.so is not in the auth stack of {service:?} (read from {top}, includes followed)"),
            format!(
                "Debian: `pam-auth-update --enable idtoken` (on common-* files edited by hand it \
                 prints \"Local modifications to /etc/pam.d/common-*, not updating\" and exits 0 \
                 without adding the module: move the hand edits into a profile of \
                 /usr/share/pam-configs, then `pam-auth-update --force --enable idtoken`, which \
                 rewrites the common-* files from the profiles; or add the module's line by hand); \
                 or, for this service only, add `{line}` before `@include common-auth` in {top}"
            ),
        ));
        return out;
    };
    out.push(Check::ok(
        "pam_stack.module",
        format!(
            "pam_idtoken.so is in the auth stack of {service:?} at {}",
            first.at
        ),
    ));
    let password_first = stack
        .entries
        .iter()
        .take_while(|e| !e.is_idtoken())
        .find(|e| e.is_password());
    out.push(match password_first {
        Some(p) => Check::fail(
            "pam_stack.order",
            format!(
                "{} ({}) comes before pam_idtoken.so ({}): users are asked for a password \
                 before the module can ask for a token",
                p.module_name().unwrap_or_default(),
                p.at,
                first.at
            ),
            format!(
                "move the pam_idtoken.so line above the {} line",
                p.module_name().unwrap_or_default()
            ),
        ),
        None => Check::ok(
            "pam_stack.order",
            "pam_idtoken.so comes before every password module",
        ),
    });
    out.push(config_argument(first, config));
    out.push(requirements(&stack.entries, first));
    let has_password = stack.entries.iter().any(Entry::is_password);
    match refuses_every_login(&stack.entries) {
        Some(deny) => out.push(Check::warn(
            "pam_stack.valid_token",
            format!(
                "pam_deny.so at {} comes before every password module (authselect's \
                 with-smartcard-required): this service refuses every login it authenticates, \
                 tokens as passwords",
                deny.at
            ),
            "a token cannot stand in for a smartcard: log in over ssh with a public key or \
             GSSAPI, or turn with-smartcard-required off",
        )),
        None => out.extend(outcomes(&stack.entries, first, has_password)),
    }
    out.extend(account_stack(dir, service));
    out
}

/// The requirements of the stack ([`requirement`]) a valid token skips: those a password
/// login runs and a token login does not.
fn requirements(entries: &[Entry], module: &Entry) -> Check {
    let first_password = entries.iter().position(Entry::is_password);
    let found: Vec<(usize, &Entry, &str)> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| requirement(e, first_password, i).map(|what| (i, e, what)))
        .collect();
    if found.is_empty() {
        return Check::ok(
            "pam_stack.requirements",
            "no faillock lock, smartcard or pam_u2f requirement in the stack",
        );
    }
    let token = walk(entries, Rc::Success, Rc::AuthErr);
    let password = walk(entries, Rc::Ignore, Rc::Success);
    let skipped: Vec<&(usize, &Entry, &str)> = found
        .iter()
        .filter(|(i, ..)| password.ran.contains(i) && !token.ran.contains(i))
        .collect();
    let Some((_, first_skipped, _)) = skipped.first() else {
        let at: Vec<&str> = found.iter().map(|(_, e, _)| e.at.as_str()).collect();
        return Check::ok(
            "pam_stack.requirements",
            format!(
                "a token passes the same requirements as a password ({})",
                at.join(", ")
            ),
        );
    };
    let what: Vec<String> = skipped
        .iter()
        .map(|(_, e, what)| format!("{} ({what})", e.at))
        .collect();
    Check::fail(
        "pam_stack.requirements",
        format!(
            "pam_idtoken.so at {} sits above {}: a valid token ends the stack before it runs, \
             so token logins skip it",
            module.at,
            what.join("; ")
        ),
        format!(
            "move the module below {}: on RHEL, in an authselect custom profile, directly above \
             the first pam_usertype.so, pam_localuser.so or pam_unix.so auth line, with \
             `account [success=1 default=ignore] pam_idtoken.so` directly above \
             `account required pam_faillock.so` (docs/install.md, \"RHEL family, every service\")",
            first_skipped.at
        ),
    )
}

/// A requirement `pam_deny.so` that every login of the stack reaches: the service
/// authenticates no one (tokens and passwords alike).
fn refuses_every_login(entries: &[Entry]) -> Option<&Entry> {
    let first_password = entries.iter().position(Entry::is_password);
    let token = walk(entries, Rc::Success, Rc::AuthErr);
    let password = walk(entries, Rc::Ignore, Rc::Success);
    entries.iter().enumerate().find_map(|(i, e)| {
        (e.module_name() == Some("pam_deny.so")
            && requirement(e, first_password, i).is_some()
            && token.ran.contains(&i)
            && password.ran.contains(&i))
        .then_some(e)
    })
}

/// Whether an account line of the module jumps over exactly the next line on a token login.
fn jumps_one(e: &Entry) -> bool {
    e.is_idtoken()
        && matches!(&e.kind, Kind::Module { controls, .. } if controls.action(Rc::Success) == Action::Jump(1))
}

/// The account stack: faillock's account line clears the failure tally after every login
/// that reaches it (Linux-PAM's pam_sm_acct_mgmt resets unconditionally), so a token login
/// must jump over it; and the module's account line must jump over nothing else.
fn account_stack(dir: &Path, service: &str) -> Vec<Check> {
    let Ok(stack) = load_phase(dir, service, "account") else {
        return Vec::new();
    };
    let modules: Vec<&Entry> = stack
        .entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::Module { .. }))
        .collect();
    let mut out = Vec::new();
    for (k, e) in modules.iter().enumerate() {
        if !e.is_idtoken() {
            continue;
        }
        let next = k.checked_add(1).and_then(|n| modules.get(n));
        let next_name = next
            .and_then(|n| n.module_name())
            .unwrap_or("the end of the stack");
        if !jumps_one(e) || next_name != "pam_faillock.so" {
            out.push(Check::fail(
                "pam_stack.account_line",
                format!(
                    "the account line of pam_idtoken.so at {} must be `[success=1 default=ignore]` \
                     directly above pam_faillock.so; it stands above {next_name}, which token \
                     logins would skip",
                    e.at
                ),
                "put `account [success=1 default=ignore] pam_idtoken.so` directly above \
                 `account required pam_faillock.so`, or remove it where faillock is off",
            ));
        }
    }
    let faillock: Vec<(usize, &&Entry)> = modules
        .iter()
        .enumerate()
        .filter(|(_, e)| e.module_name() == Some("pam_faillock.so"))
        .collect();
    if faillock.is_empty() {
        out.push(Check::ok(
            "pam_stack.faillock_account",
            "no pam_faillock.so in the account stack",
        ));
        return out;
    }
    for (k, e) in faillock {
        let guarded = k
            .checked_sub(1)
            .and_then(|p| modules.get(p))
            .is_some_and(|p| jumps_one(p));
        out.push(if guarded {
            Check::ok(
                "pam_stack.faillock_account",
                format!("token logins jump over pam_faillock.so at {}: they leave its tally alone", e.at),
            )
        } else {
            Check::warn(
                "pam_stack.faillock_account",
                format!(
                    "pam_faillock.so at {} clears the failure tally after every login, token logins \
                     included: a job logging in with a token every few minutes wipes the count of \
                     password guesses made between its logins",
                    e.at
                ),
                "add `account [success=1 default=ignore] pam_idtoken.so` directly above it (in an \
                 authselect custom profile, with `{include if \"with-faillock\"}`)",
            )
        });
    }
    out
}

/// What in the config needs the module's session line: session limits, `max_sessions`,
/// `session_ends_at_exp` (SPEC v3). None when nothing does.
fn session_needs(config: &idtoken_core::config::Config) -> Option<String> {
    let mut needs = Vec::new();
    if config.defaults.session_ends_at_exp {
        needs.push("session_ends_at_exp".to_string());
    }
    for r in config.rules.iter().filter(|r| !r.deny) {
        if !r.limits.is_empty() {
            needs.push(format!("rule {:?}'s session limits", r.name));
        }
        if r.max_sessions.is_some() {
            needs.push(format!("rule {:?}'s max_sessions", r.name));
        }
    }
    (!needs.is_empty()).then(|| needs.join(", "))
}

/// Where the config limits token sessions, the service's session stack must run the
/// module's session line (it hands pam_systemd the limits sshd's process split would lose,
/// and records the session for max_sessions) and pam_systemd after it (which applies them).
pub fn session_check(dir: &Path, service: &str, config: &idtoken_core::config::Config) -> Check {
    const NAME: &str = "pam_stack.session";
    let Some(needs) = session_needs(config) else {
        return Check::ok(
            NAME,
            "no session limit, max_sessions or session_ends_at_exp is configured",
        );
    };
    let Ok(stack) = load_phase(dir, service, "session") else {
        return Check::fail(
            NAME,
            format!("PAM service {service:?} has no session stack, and the config sets {needs}"),
            "add the session lines of your distribution's stack",
        );
    };
    let modules: Vec<&Entry> = stack
        .entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::Module { .. }))
        .collect();
    let ours = modules.iter().position(|e| e.is_idtoken());
    let systemd = modules
        .iter()
        .position(|e| e.module_name() == Some("pam_systemd.so"));
    let line = "session optional pam_idtoken.so";
    match (ours, systemd) {
        (None, _) => Check::fail(
            NAME,
            format!(
                "the config sets {needs}, but the session stack of {service:?} has no pam_idtoken.so \
                 line: through sshd the limits never reach pam_systemd, and sessions are not counted"
            ),
            format!(
                "Debian: `pam-auth-update --enable idtoken` adds `{line}` to common-session; \
                 elsewhere put `{line}` in {} before the line that includes the session stack",
                dir.join(service).display()
            ),
        ),
        (Some(_), None) => Check::fail(
            NAME,
            format!(
                "the config sets {needs}, but the session stack of {service:?} has no \
                 pam_systemd.so: nothing applies the limits"
            ),
            "install and enable pam_systemd (Debian: apt-get install libpam-systemd; RHEL: it is \
             in password-auth and system-auth as `-session optional pam_systemd.so`)",
        ),
        (Some(a), Some(b)) if a > b => Check::fail(
            NAME,
            format!(
                "pam_idtoken.so at {} comes after pam_systemd.so at {}: pam_systemd has read its \
                 items before the module sets them",
                modules.get(a).map(|e| e.at.as_str()).unwrap_or_default(),
                modules.get(b).map(|e| e.at.as_str()).unwrap_or_default()
            ),
            format!("move `{line}` above pam_systemd.so"),
        ),
        (Some(a), Some(_)) => Check::ok(
            NAME,
            format!(
                "pam_idtoken.so at {} hands pam_systemd {needs}",
                modules.get(a).map(|e| e.at.as_str()).unwrap_or_default()
            ),
        ),
    }
}

/// The setcred walk as sshd runs it after a login (in the process that did not
/// authenticate, so each line acts on its own setcred answer): the module answers
/// PAM_IGNORE (SPEC v3), so some line after it must succeed, and none may end the walk in a
/// failure first, or sshd and su end every login, token logins included.
fn setcred_walk(entries: &[Entry], at: &str) -> Check {
    // The other modules' setcred answers: pam_deny fails, the rest succeed (pam_unix,
    // pam_sss, pam_permit, pam_env, pam_cap); the same as a password login's walk.
    let setcred = walk(entries, Rc::Ignore, Rc::Success);
    if setcred.result == Rc::Success {
        return Check::ok(
            "pam_stack.setcred",
            "the setcred walk goes on past the module (PAM_IGNORE) and ends in success",
        );
    }
    Check::fail(
        "pam_stack.setcred",
        format!(
            "the module answers PAM_IGNORE to setcred, and after it this stack's setcred walk \
             fails (the line at {at} maps ignore to a failure, or no line after it succeeds, as \
             with a lone `pam_deny.so`): sshd and su then end every login"
        ),
        format!(
            "give the line at {at} `ignore=ignore`, and after it a line whose setcred succeeds: \
             a token-only stack ends with `auth optional pam_env.so`, not pam_deny"
        ),
    )
}

/// The module's `config=` argument must name the config being checked (none: the default).
fn config_argument(module: &Entry, config: &Path) -> Check {
    let Kind::Module { args, .. } = &module.kind else {
        return Check::ok("pam_stack.config", "");
    };
    let named = args
        .iter()
        .find_map(|a| a.strip_prefix("config="))
        .unwrap_or(idtoken_core::config::DEFAULT_PATH);
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    };
    if same(Path::new(named), config) {
        Check::ok(
            "pam_stack.config",
            format!("the module reads {named}, the config checked here"),
        )
    } else {
        Check::fail(
            "pam_stack.config",
            format!(
                "the module at {} reads {named}, not {} (the config checked here)",
                module.at,
                config.display()
            ),
            format!(
                "give the module `config={}`, or run doctor with `--config {named}`",
                config.display()
            ),
        )
    }
}

/// What each answer of the module does to a login through this stack.
fn outcomes(entries: &[Entry], module: &Entry, has_password: bool) -> Vec<Check> {
    let at = &module.at;
    let mut out = Vec::new();
    let valid = walk(entries, Rc::Success, Rc::AuthErr);
    out.push(if valid.password_ran {
        Check::fail(
            "pam_stack.valid_token",
            "after a valid token (PAM_SUCCESS) the stack still runs a password module, which refuses the token",
            format!("use `success=done` in the control at {at} (or a `success=N` that jumps past every password module, as the documented common-auth line does)"),
        )
    } else if valid.result != Rc::Success {
        Check::fail(
            "pam_stack.valid_token",
            "a valid token (PAM_SUCCESS) is still refused: the control's jump lands on a failing module or records no success",
            format!("use `success=done` in the control at {at}"),
        )
    } else {
        Check::ok("pam_stack.valid_token", "a valid token logs in without a password module running")
    });
    let refused = walk(entries, Rc::AuthErr, Rc::Success);
    out.push(if refused.password_ran || refused.result == Rc::Success {
        Check::fail(
            "pam_stack.refused_token",
            "a refused token (PAM_AUTH_ERR) does not end the stack: it falls through to the password modules",
            format!("add `auth_err=die` to the control at {at}"),
        )
    } else {
        Check::ok("pam_stack.refused_token", "a refused token ends the stack (no password check)")
    });
    out.push(setcred_walk(entries, at));
    if !has_password {
        out.push(Check::ok(
            "pam_stack.password",
            "no password module (pam_unix, pam_sss, ...) in the stack: only tokens log in through this service",
        ));
        return out;
    }
    let password = walk(entries, Rc::Ignore, Rc::Success);
    out.push(if !password.password_ran || password.result != Rc::Success {
        Check::fail(
            "pam_stack.password",
            "a password typed at the token prompt (PAM_IGNORE) never logs in: password users are locked out",
            format!("use `default=ignore` (not required/requisite, no `ignore=die`) in the control at {at}"),
        )
    } else {
        Check::ok("pam_stack.password", "a password (PAM_IGNORE) goes on to the password modules")
    });
    let unavailable = walk(entries, Rc::AuthinfoUnavail, Rc::Success);
    out.push(if !unavailable.password_ran || unavailable.result != Rc::Success {
        Check::warn(
            "pam_stack.unavailable",
            "when the module cannot decide (PAM_AUTHINFO_UNAVAIL: broken config or key cache) password logins are refused too",
            format!("unless this host is token-only on purpose, use `default=ignore` (not `default=die`, required or requisite) in the control at {at}"),
        )
    } else {
        Check::ok("pam_stack.unavailable", "a broken token setup (PAM_AUTHINFO_UNAVAIL) leaves password logins working")
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(lines: &str) -> Vec<Entry> {
        let dir =
            std::env::temp_dir().join(format!("doctor-pam-{}-{}", std::process::id(), lines.len()));
        let _ = std::fs::create_dir_all(&dir);
        std::fs::write(dir.join("svc"), lines).unwrap();
        let s = load(&dir, "svc").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        s.entries
    }

    const DEBIAN: &str = "auth [success=2 auth_err=die default=ignore] pam_idtoken.so\n\
        auth [success=1 default=ignore] pam_unix.so nullok try_first_pass\n\
        auth requisite pam_deny.so\nauth required pam_permit.so\n";

    #[test]
    fn the_debian_profile_lines_behave_as_the_readme_says() {
        let e = stack(DEBIAN);
        let v = walk(&e, Rc::Success, Rc::AuthErr);
        assert!(v.result == Rc::Success && !v.password_ran);
        let r = walk(&e, Rc::AuthErr, Rc::Success);
        assert!(r.result == Rc::AuthErr && !r.password_ran);
        let p = walk(&e, Rc::Ignore, Rc::Success);
        assert!(p.result == Rc::Success && p.password_ran);
        let u = walk(&e, Rc::AuthinfoUnavail, Rc::Success);
        assert!(u.result == Rc::Success && u.password_ran);
    }

    #[test]
    fn a_jump_one_short_lands_on_pam_deny() {
        let e = stack(&DEBIAN.replace("success=2", "success=1"));
        assert_eq!(walk(&e, Rc::Success, Rc::AuthErr).result, Rc::AuthErr);
    }

    #[test]
    fn success_1_over_a_substack_records_no_success() {
        // The RHEL shape of FIELD-NOTES: the jump skips the substack and nothing after it
        // says success, so libpam refuses the login.
        let dir = std::env::temp_dir().join(format!("doctor-pam-sub-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        std::fs::write(
            dir.join("password-auth"),
            "auth required pam_env.so\nauth sufficient pam_unix.so\nauth required pam_deny.so\n",
        )
        .unwrap();
        std::fs::write(dir.join("sshd"), "auth [success=1 auth_err=die default=ignore] pam_idtoken.so\nauth substack password-auth\n").unwrap();
        let s = load(&dir, "sshd").unwrap();
        assert_eq!(
            walk(&s.entries, Rc::Success, Rc::AuthErr).result,
            Rc::MustFail
        );
        std::fs::write(dir.join("sshd"), "auth [success=done auth_err=die default=ignore] pam_idtoken.so\nauth substack password-auth\n").unwrap();
        let s = load(&dir, "sshd").unwrap();
        assert_eq!(
            walk(&s.entries, Rc::Success, Rc::AuthErr).result,
            Rc::Success
        );
        let p = walk(&s.entries, Rc::Ignore, Rc::Success);
        assert!(p.result == Rc::Success && p.password_ran);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sufficient_lets_a_refused_token_fall_through() {
        let e = stack("auth sufficient pam_idtoken.so\nauth required pam_unix.so\n");
        assert!(walk(&e, Rc::AuthErr, Rc::Success).password_ran);
    }

    #[test]
    fn required_locks_out_password_users_when_unavailable() {
        let e = stack("auth required pam_idtoken.so\nauth required pam_unix.so\n");
        assert_eq!(
            walk(&e, Rc::AuthinfoUnavail, Rc::Success).result,
            Rc::AuthinfoUnavail
        );
        // required's ignore=ignore: a password still works.
        assert_eq!(walk(&e, Rc::Ignore, Rc::Success).result, Rc::Success);
    }

    #[test]
    fn bracket_controls_and_continuations_tokenise() {
        assert_eq!(
            tokens("auth  [success=2 auth_err=die]  pam_x.so a=1"),
            vec!["auth", "[success=2 auth_err=die]", "pam_x.so", "a=1"]
        );
        let l = logical_lines("auth required \\\n pam_permit.so # c\n");
        assert_eq!(tokens(&l[0].1), vec!["auth", "required", "pam_permit.so"]);
    }
}
