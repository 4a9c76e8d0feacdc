//! Where the decision gets an issuer's keys and user map, and the revocation list. The trait lets tests hand in
//! keys directly; [`DiskIssuerData`] reads the files the SPEC names, with its safety rules.

use std::fmt;
use std::path::Path;

use crate::config::Issuer;
use crate::files::{self, FileProblem, FileProblemKind};
use crate::jwks::{self, KeySet};
use crate::revocations::{self, RevocationList};
use crate::usermap::{self, UserMap};

/// The issuer data the decision needs, loaded on demand: only the token's issuer's files
/// are ever read.
pub trait IssuerData {
    fn keys(&self, issuer: &Issuer) -> Result<KeySet, DataProblem>;
    fn user_map(&self, issuer: &Issuer) -> Result<Option<UserMap>, DataProblem>;
    /// The revocation list at `path` (`[defaults] revocations`), read at every decision
    /// that reaches the revocation step; an absent list is an empty one.
    fn revocations(&self, path: &Path) -> Result<RevocationList, DataProblem>;
}

/// Why a key cache or user map could not be used: the decision cannot be made
/// (`PAM_AUTHINFO_UNAVAIL`, exit 2), rather than the token being bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataProblem {
    File(FileProblem),
    Invalid { path: String, why: String },
}

impl fmt::Display for DataProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataProblem::File(p) => write!(f, "{p}"),
            DataProblem::Invalid { path, why } => write!(f, "{path}: {why}"),
        }
    }
}

/// Reads `jwks_cache`, `user_map` and the revocation list from disk.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiskIssuerData;

impl IssuerData for DiskIssuerData {
    fn keys(&self, issuer: &Issuer) -> Result<KeySet, DataProblem> {
        load_key_cache(issuer)
    }

    fn user_map(&self, issuer: &Issuer) -> Result<Option<UserMap>, DataProblem> {
        let Some(path) = &issuer.user_map else {
            return Ok(None);
        };
        // The directories above it are checked too: whoever can write one could map
        // another account to a user.
        let bytes = files::read_trusted_in_safe_dir(path, usermap::MAX_USER_MAP_BYTES)
            .map_err(DataProblem::File)?;
        usermap::parse(&bytes)
            .map(Some)
            .map_err(|why| DataProblem::Invalid {
                path: path.display().to_string(),
                why,
            })
    }

    fn revocations(&self, path: &Path) -> Result<RevocationList, DataProblem> {
        load_revocations(path)
    }
}

/// Reads and parses an issuer's key cache; a cache without one usable key is a problem.
pub fn load_key_cache(issuer: &Issuer) -> Result<KeySet, DataProblem> {
    let path = &issuer.jwks_cache;
    let bytes =
        files::read_trusted_in_safe_dir(path, jwks::MAX_JWKS_BYTES).map_err(DataProblem::File)?;
    let invalid = |why: String| DataProblem::Invalid {
        path: path.display().to_string(),
        why,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid(format!(
            "the file is empty (an interrupted copy?); run `idtoken refresh --issuer {}`",
            issuer.name
        )));
    }
    let set = jwks::parse(&bytes).map_err(|e| {
        invalid(format!(
            "{e}; run `idtoken refresh --issuer {}`",
            issuer.name
        ))
    })?;
    if set.keys.is_empty() {
        return Err(invalid(format!(
            "no usable signing key ({}); run `idtoken refresh --issuer {}`",
            if set.skipped.is_empty() {
                "the key set is empty".to_string()
            } else {
                set.skipped.join("; ")
            },
            issuer.name
        )));
    }
    Ok(set)
}

/// Reads the list at `path` with the config's file rules (the directories above it
/// included). No file is an empty list (nothing was revoked yet). Its directory must
/// exist, unless the path is [`revocations::DEFAULT_PATH`] (a host that never revoked anything need not
/// have one): a list on a shared filesystem that failed to mount must not read as "nothing
/// revoked". Every other problem is one.
pub fn load_revocations(path: &Path) -> Result<RevocationList, DataProblem> {
    let bytes = match files::read_trusted_in_safe_dir(path, revocations::MAX_REVOCATIONS_BYTES) {
        Ok(b) => b,
        Err(p)
            if p.kind == FileProblemKind::Missing
                && (p.path == path || path == Path::new(revocations::DEFAULT_PATH)) =>
        {
            return Ok(RevocationList::empty());
        }
        Err(p) if p.kind == FileProblemKind::Missing => {
            return Err(DataProblem::Invalid {
                path: p.path.display().to_string(),
                why: format!(
                    "the directory of the revocation list {} does not exist (a shared \
                     filesystem not mounted?); create it, or fix `revocations`",
                    path.display()
                ),
            });
        }
        Err(p) => return Err(DataProblem::File(p)),
    };
    revocations::parse(&bytes).map_err(|why| DataProblem::Invalid {
        path: path.display().to_string(),
        why,
    })
}
