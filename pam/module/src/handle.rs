//! What a hook needs from the PAM handle, as a small trait: the real handle implements it
//! through pamsm, and the hook tests implement it with a scripted fake. Answers and
//! PAM_AUTHTOK copies are [`Secret`]s, wiped when dropped.

use std::ffi::{CStr, CString};

use pamsm::{LogLvl, Pam, PamLibExt};
use zeroize::Zeroizing;

use crate::collect::{Prompter, Secret};
use crate::conversation;

/// Severity of a log line (mapped to syslog levels, facility authpriv).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Notice,
    Debug,
}

/// The PAM handle as the hooks see it.
pub trait PamContext: Prompter {
    /// PAM_USER (asking the application for it if unset).
    fn user(&mut self) -> Option<String>;
    fn service(&self) -> Option<String>;
    fn rhost(&self) -> Option<String>;
    /// PAM_AUTHTOK when an earlier module set it.
    fn cached_authtok(&self) -> Option<Secret>;
    /// Hands the answer on to later modules (pam_unix try_first_pass).
    fn set_authtok(&mut self, authtok: &[u8]);
    fn error_message(&mut self, text: &str);
    fn putenv(&mut self, name: &str, value: &str);
    /// A variable of the PAM environment (what sshd carries from its authentication child
    /// to the process that opens the session).
    fn getenv(&self, name: &str) -> Option<String>;
    /// Stores a C-string PAM data item for later modules (pam_systemd).
    fn set_data(&mut self, name: &str, value: &str);
    fn log(&self, level: Level, message: &str);
}

/// The real handle, through pamsm and [`conversation`].
pub struct PamHandleContext<'a> {
    pub pamh: &'a Pam,
}

fn text(item: Result<Option<&CStr>, pamsm::PamError>) -> Option<String> {
    item.ok()
        .flatten()
        .map(|c| c.to_string_lossy().into_owned())
}

impl Prompter for PamHandleContext<'_> {
    fn prompt(&mut self, text: &str) -> Option<Secret> {
        conversation::prompt_echo_off(self.pamh, text)
    }
}

impl PamContext for PamHandleContext<'_> {
    fn user(&mut self) -> Option<String> {
        text(self.pamh.get_user(None))
    }

    fn service(&self) -> Option<String> {
        text(self.pamh.get_service())
    }

    fn rhost(&self) -> Option<String> {
        text(self.pamh.get_rhost())
    }

    fn cached_authtok(&self) -> Option<Secret> {
        self.pamh
            .get_cached_authtok()
            .ok()
            .flatten()
            .map(|c| Zeroizing::new(c.to_bytes().to_vec()))
            .filter(|b| !b.is_empty())
    }

    fn set_authtok(&mut self, authtok: &[u8]) {
        // libpam keeps its own copy (and wipes it at pam_end); ours is wiped on drop. The
        // buffer is sized for the NUL so CString::new neither grows nor shrinks it, and a
        // refused answer (an inner NUL) is wiped too.
        let mut bytes = Vec::with_capacity(authtok.len().saturating_add(1));
        bytes.extend_from_slice(authtok);
        match CString::new(bytes) {
            Ok(c) => {
                let c = Zeroizing::new(c);
                let _ = self.pamh.set_authtok(&c);
            }
            Err(e) => drop(Zeroizing::new(e.into_vec())),
        }
    }

    fn error_message(&mut self, text: &str) {
        conversation::error_message(self.pamh, text);
    }

    fn putenv(&mut self, name: &str, value: &str) {
        let _ = self.pamh.putenv(&format!("{name}={value}"));
    }

    fn getenv(&self, name: &str) -> Option<String> {
        text(self.pamh.getenv(name))
    }

    fn set_data(&mut self, name: &str, value: &str) {
        if !crate::session_data::set_string(self.pamh, name, value) {
            self.log(
                Level::Error,
                &format!("could not set the PAM data item {name}; the session will not end with the token"),
            );
        }
    }

    fn log(&self, level: Level, message: &str) {
        let lvl = match level {
            Level::Error => LogLvl::ERR,
            Level::Notice => LogLvl::NOTICE,
            Level::Debug => LogLvl::DEBUG,
        };
        let _ = self.pamh.syslog(lvl, message);
    }
}
