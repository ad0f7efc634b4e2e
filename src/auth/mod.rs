//! Who may touch which keys: tokens with rights per key prefix
//! (`--auth-file`), and the cluster secret gateways forward with
//! (`--cluster-secret-file`).
//!
//! One decision for every surface. The transport reads the caller's
//! credential from the request's headers ([`credential`]: gRPC metadata and
//! HTTP headers are both HTTP headers) and turns it into a [`Caller`] with
//! [`Authorizer::authenticate`]; the service layer asks that caller, per
//! RPC, whether it may [`Caller::check`] a right on a key, and filters lists
//! and prefix watches with [`Caller::may`]. No surface decides anything.
//!
//! Secrets are matched by their SHA-256 digests, compared in constant time
//! against every token, so neither a secret's content nor which token it is
//! close to shows in the timing.

pub mod credential;
pub mod file;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use credential::Credential;
pub use file::AuthFileError;

/// What a token may do on the keys under its prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Right {
    /// Get, List, Watch, Leader, Observe, List elections.
    Read,
    /// Wait, Renew, Release, Campaign, Resign.
    Write,
    /// `GET /metrics` (not tied to keys).
    Metrics,
}

impl Right {
    /// The right's name in the auth file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Metrics => "metrics",
        }
    }
}

/// A set of [`Right`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rights {
    read: bool,
    write: bool,
    metrics: bool,
}

impl Rights {
    /// Adds `right`.
    pub fn insert(&mut self, right: Right) {
        match right {
            Right::Read => self.read = true,
            Right::Write => self.write = true,
            Right::Metrics => self.metrics = true,
        }
    }

    /// Whether `right` is in the set.
    pub fn has(self, right: Right) -> bool {
        match right {
            Right::Read => self.read,
            Right::Write => self.write,
            Right::Metrics => self.metrics,
        }
    }
}

/// One `[[token]]` of the auth file.
#[derive(Clone)]
pub struct Token {
    /// Shown in logs and metrics; never the secret.
    pub name: String,
    /// Keys starting with one of these are the token's; `""` is every key.
    pub prefixes: Vec<String>,
    /// What it may do there.
    pub rights: Rights,
    /// SHA-256 of the secret.
    pub digest: [u8; 32],
    /// Cancelled when a reload removes or changes the token: streams it
    /// opened end then, rather than keep serving under rules that are gone.
    pub revoked: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("prefixes", &self.prefixes)
            .field("rights", &self.rights)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Whether `other` is the same token with the same rules.
    fn same_as(&self, other: &Token) -> bool {
        self.name == other.name
            && self.digest == other.digest
            && self.prefixes == other.prefixes
            && self.rights == other.rights
    }

    fn covers(&self, key: &str) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// Whether some key under `prefix` can be the token's.
    fn overlaps(&self, prefix: &str) -> bool {
        self.prefixes
            .iter()
            .any(|p| prefix.starts_with(p.as_str()) || p.starts_with(prefix))
    }
}

/// Who made a request, as far as authorization cares. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Caller {
    /// No `--auth-file`: everything is allowed, as before tokens existed.
    Open,
    /// Another gateway forwarding a call it has already authorized
    /// (it presented the cluster secret): every key, read and write.
    Gateway,
    /// A token from the auth file.
    Token(Arc<Token>),
    /// No credential was sent.
    Anonymous,
    /// A credential that matches no token; with HTTP Basic, the user name
    /// given (for the audit log).
    Unknown(Option<String>),
    /// An `Authorization` header that is not a usable credential.
    Malformed(String),
}

/// Why a caller may not do what it asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No valid credential: UNAUTHENTICATED, HTTP 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token without this right on this key: PERMISSION_DENIED,
    /// HTTP 403.
    #[error("{0}")]
    PermissionDenied(String),
}

impl Refusal {
    /// `unauthenticated` or `permission_denied`, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::PermissionDenied(_) => "permission_denied",
        }
    }
}

impl Caller {
    /// The token's name for logs and metrics: a token's name, `gateway`,
    /// or empty when the caller is not known.
    pub fn name(&self) -> &str {
        match self {
            Self::Token(t) => &t.name,
            Self::Gateway => "gateway",
            Self::Unknown(Some(user)) => user,
            _ => "",
        }
    }

    /// The name of a token the file defines (or `gateway`), else empty:
    /// what metrics label a call with, since a name merely claimed (HTTP
    /// Basic with a wrong secret) would let anyone mint label values.
    pub fn known_name(&self) -> &str {
        match self {
            Self::Token(t) => &t.name,
            Self::Gateway => "gateway",
            _ => "",
        }
    }

    /// Cancelled when the caller's token is removed or changed by a reload;
    /// `None` for callers no reload can change.
    pub fn revoked(&self) -> Option<&tokio_util::sync::CancellationToken> {
        match self {
            Self::Token(t) => Some(&t.revoked),
            _ => None,
        }
    }

    fn token(&self) -> Result<Option<&Token>, Refusal> {
        match self {
            Self::Open | Self::Gateway => Ok(None),
            Self::Token(t) => Ok(Some(t)),
            Self::Anonymous => Err(Refusal::Unauthenticated(
                "the request requires authentication: send `authorization: Bearer TOKEN`".into(),
            )),
            Self::Unknown(_) => Err(Refusal::Unauthenticated(
                "the request requires authentication: the token is not valid".into(),
            )),
            Self::Malformed(why) => Err(Refusal::Unauthenticated(format!(
                "the request requires authentication: {why}"
            ))),
        }
    }

    /// Succeeds for any known caller (Status needs no more).
    pub fn check_authenticated(&self) -> Result<(), Refusal> {
        self.token().map(|_| ())
    }

    /// Whether the caller has `right` at all (`metrics` is not tied to keys).
    pub fn check_right(&self, right: Right) -> Result<(), Refusal> {
        match self.token()? {
            None if right == Right::Metrics && matches!(self, Self::Gateway) => Err(
                Refusal::PermissionDenied("the cluster secret does not give metrics".into()),
            ),
            None => Ok(()),
            Some(t) if t.rights.has(right) => Ok(()),
            Some(t) => Err(Refusal::PermissionDenied(format!(
                "token {:?} lacks the right {:?}",
                t.name,
                right.name()
            ))),
        }
    }

    /// Whether the caller may use `right` on `key`.
    pub fn check(&self, right: Right, key: &str) -> Result<(), Refusal> {
        self.check_right(right)?;
        match self.token()? {
            Some(t) if !t.covers(key) => Err(Refusal::PermissionDenied(format!(
                "token {:?} may not {} {key:?}: outside its prefixes",
                t.name,
                right.name()
            ))),
            _ => Ok(()),
        }
    }

    /// Whether the caller may use `right` on some key under `prefix` (List
    /// and prefix Watch, whose answers are then filtered with [`Self::may`]).
    pub fn check_prefix(&self, right: Right, prefix: &str) -> Result<(), Refusal> {
        self.check_right(right)?;
        match self.token()? {
            Some(t) if !t.overlaps(prefix) => Err(Refusal::PermissionDenied(format!(
                "token {:?} may not {} any key under {prefix:?}: outside its prefixes",
                t.name,
                right.name()
            ))),
            _ => Ok(()),
        }
    }

    /// Whether [`Self::check`] would succeed, for filtering.
    pub fn may(&self, right: Right, key: &str) -> bool {
        self.check(right, key).is_ok()
    }
}

/// Why the authorizer cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The auth file or the cluster secret file is unusable.
    #[error(transparent)]
    File(#[from] AuthFileError),
}

/// The rules in force: the auth file's tokens and the cluster secrets.
/// [`Authorizer::reload`] swaps the tokens whole, so a request sees either
/// the old file or the new one, never half of each.
pub struct Authorizer {
    path: PathBuf,
    tokens: RwLock<Arc<Vec<Arc<Token>>>>,
    cluster: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("path", &self.path)
            .field("tokens", &self.current().len())
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// Loads the auth file at `path`; `cluster_secrets` (from
    /// `--cluster-secret-file`) authenticate other gateways.
    pub fn load(path: &Path, cluster_secrets: &[String]) -> Result<Self, AuthError> {
        file::warn_if_exposed(path);
        let tokens = file::load(path)?;
        if tokens.is_empty() {
            tracing::warn!(file = %path.display(), "the auth file has no tokens: every call that needs one is refused");
        }
        let cluster = cluster_secrets
            .iter()
            .map(|s| Sha256::digest(s.as_bytes()).into())
            .collect();
        Ok(Self {
            path: path.to_owned(),
            tokens: RwLock::new(Arc::new(tokens.into_iter().map(Arc::new).collect())),
            cluster,
        })
    }

    /// Re-reads the auth file (on SIGHUP). A file that does not parse is
    /// refused and the rules in force stay; the error names the line.
    /// Tokens removed or changed are revoked (their open streams end);
    /// tokens left as they were keep serving. Returns how many tokens are
    /// now in force.
    pub fn reload(&self) -> Result<usize, AuthFileError> {
        file::warn_if_exposed(&self.path);
        let loaded = file::load(&self.path)?;
        let mut current = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        let old = current.clone();
        let tokens: Vec<Arc<Token>> = loaded
            .into_iter()
            .map(|t| match old.iter().find(|o| o.same_as(&t)) {
                Some(same) => same.clone(),
                None => Arc::new(t),
            })
            .collect();
        for o in old.iter() {
            if !tokens.iter().any(|t| Arc::ptr_eq(t, o)) {
                o.revoked.cancel();
            }
        }
        let n = tokens.len();
        *current = Arc::new(tokens);
        Ok(n)
    }

    /// The auth file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn current(&self) -> Arc<Vec<Arc<Token>>> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Who sent `credential`. Every token (and cluster secret) is compared,
    /// each in constant time, whichever matches.
    pub fn authenticate(&self, credential: Credential) -> Caller {
        let (user, secret) = match credential {
            Credential::None => return Caller::Anonymous,
            Credential::Malformed(why) => return Caller::Malformed(why),
            Credential::Bearer(secret) => (None, secret),
            Credential::Basic { user, password } => (Some(user), password),
        };
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut gateway = subtle::Choice::from(0);
        for c in &self.cluster {
            gateway |= c.ct_eq(&digest);
        }
        let tokens = self.current();
        let mut found = None;
        for t in tokens.iter() {
            if bool::from(t.digest.ct_eq(&digest)) {
                found = Some(t.clone());
            }
        }
        if user.is_none() && bool::from(gateway) {
            return Caller::Gateway;
        }
        match found {
            // With HTTP Basic the user name must be the token's name.
            Some(t) if user.as_deref().is_none_or(|u| u == t.name) => Caller::Token(t),
            _ => Caller::Unknown(user),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorizer(text: &str) -> Authorizer {
        let tokens = file::parse(Path::new("t.toml"), text).unwrap();
        Authorizer {
            path: "t.toml".into(),
            tokens: RwLock::new(Arc::new(tokens.into_iter().map(Arc::new).collect())),
            cluster: vec![Sha256::digest(b"cluster-secret-0123456789").into()],
        }
    }

    const FILE: &str = "[[token]]\nname = \"deployer\"\nsecret = \"deployer-secret-0123\"\nprefixes = [\"jobs/\"]\nrights = [\"read\", \"write\"]\n[[token]]\nname = \"reader\"\nsecret = \"reader-secret-012345\"\nprefixes = [\"\"]\nrights = [\"read\"]\n";

    #[test]
    fn rights_per_prefix() {
        let a = authorizer(FILE);
        let d = a.authenticate(Credential::Bearer("deployer-secret-0123".into()));
        assert_eq!(d.name(), "deployer");
        assert!(d.check(Right::Write, "jobs/a").is_ok());
        assert!(matches!(
            d.check(Right::Write, "other"),
            Err(Refusal::PermissionDenied(_))
        ));
        assert!(d.check_prefix(Right::Read, "").is_ok());
        assert!(d.check_prefix(Right::Read, "jobs/x/").is_ok());
        assert!(d.check_prefix(Right::Read, "web/").is_err());
        assert!(d.check_right(Right::Metrics).is_err());
        let r = a.authenticate(Credential::Bearer("reader-secret-012345".into()));
        assert!(r.check(Right::Read, "anything").is_ok());
        assert!(matches!(
            r.check(Right::Write, "jobs/a"),
            Err(Refusal::PermissionDenied(_))
        ));
    }

    #[test]
    fn unknown_missing_and_basic() {
        let a = authorizer(FILE);
        for c in [
            a.authenticate(Credential::None),
            a.authenticate(Credential::Bearer("nope-nope-nope-nope".into())),
            a.authenticate(Credential::Basic {
                user: "reader".into(),
                password: "deployer-secret-0123".into(),
            }),
            a.authenticate(Credential::Malformed("bad".into())),
        ] {
            assert!(matches!(
                c.check(Right::Read, "jobs/a"),
                Err(Refusal::Unauthenticated(_))
            ));
        }
        let b = a.authenticate(Credential::Basic {
            user: "deployer".into(),
            password: "deployer-secret-0123".into(),
        });
        assert!(b.check(Right::Write, "jobs/a").is_ok());
    }

    #[test]
    fn a_reload_revokes_removed_and_changed_tokens_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.toml");
        std::fs::write(&path, FILE).unwrap();
        let a = Authorizer::load(&path, &[]).unwrap();
        let deployer = a.authenticate(Credential::Bearer("deployer-secret-0123".into()));
        let reader = a.authenticate(Credential::Bearer("reader-secret-012345".into()));
        assert_eq!(a.reload().unwrap(), 2);
        assert!(!deployer.revoked().unwrap().is_cancelled());
        // The deployer loses a prefix; the reader stays as it was.
        std::fs::write(&path, FILE.replace("[\"jobs/\"]", "[\"jobs/a\"]")).unwrap();
        assert_eq!(a.reload().unwrap(), 2);
        assert!(deployer.revoked().unwrap().is_cancelled());
        assert!(!reader.revoked().unwrap().is_cancelled());
        let again = a.authenticate(Credential::Bearer("deployer-secret-0123".into()));
        assert!(again.check(Right::Read, "jobs/b").is_err());
        // A bad file changes nothing.
        std::fs::write(&path, "[[token]]\nname = 1\n").unwrap();
        assert!(a.reload().is_err());
        assert!(!reader.revoked().unwrap().is_cancelled());
        assert!(again.check(Right::Read, "jobs/a").is_ok());
    }

    #[test]
    fn the_cluster_secret_is_a_gateway_for_keys_only() {
        let a = authorizer(FILE);
        let g = a.authenticate(Credential::Bearer("cluster-secret-0123456789".into()));
        assert!(matches!(g, Caller::Gateway));
        assert!(g.check(Right::Write, "any/key").is_ok());
        assert!(g.check_right(Right::Metrics).is_err());
        // Not as HTTP Basic: gateways forward over gRPC with Bearer.
        let b = a.authenticate(Credential::Basic {
            user: "gateway".into(),
            password: "cluster-secret-0123456789".into(),
        });
        assert!(matches!(b, Caller::Unknown(_)));
    }
}
