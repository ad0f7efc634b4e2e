//! The etcd backend's settings, from `--etcd-*` flags (see
//! [`ServeArgs::etcd_config`](crate::config::ServeArgs::etcd_config)).

use std::{path::PathBuf, time::Duration};

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use tonic::transport::{
    Certificate as TonicCertificate, ClientTlsConfig, Identity as TonicIdentity,
};

use super::{
    endpoints::{Endpoints, EndpointsConfig},
    error::EtcdError,
};

/// The most journal commits in flight at once: a new primary deletes the
/// batches that landed after a failed one in one etcd transaction each
/// 128 operations, so the bound keeps that short.
pub const MAX_JOURNAL_DEPTH: usize = 16;

/// How to reach etcd and how to use it.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs of the cluster's members (`http://` or `https://`).
    pub endpoints: Vec<String>,
    /// Every key baton writes starts with this.
    pub prefix: String,
    /// etcd user, when etcd has authentication on.
    pub user: Option<String>,
    /// That user's password.
    pub password: Option<String>,
    /// PEM CA bundle that signed etcd's server certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
    /// How long one etcd request may take before the client is told
    /// UNAVAILABLE, and how long a call waits for a primary.
    pub timeout: Duration,
    /// TTL of the primary's election lease, in seconds.
    pub primary_ttl_secs: u64,
    /// How often the primary compacts etcd's history; zero: never.
    pub compaction_interval: Duration,
    /// Journal commits the primary keeps in flight at once.
    pub journal_depth: usize,
    /// How long the first attempt of a request at one member may take
    /// before it is tried on another (a frozen member accepts connections
    /// and never answers); later attempts get twice as long, all within
    /// `timeout`. Keep it well below the primary's lease ttl.
    pub attempt_timeout: Duration,
    /// How often a member out of rotation is probed to bring it back.
    pub health_interval: Duration,
    /// The cluster secret this gateway forwards to the primary with
    /// (`--cluster-secret-file`).
    pub forward_secret: Option<crate::engine::remote::ForwardSecret>,
    /// The CA the primary's certificate is checked against when forwarding
    /// over https (`--peer-trusted-ca-file`); `None`: the system's roots.
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// The client certificate presented to the primary
    /// (`--peer-cert-file`).
    pub peer_cert_file: Option<PathBuf>,
    /// Its key (`--peer-key-file`).
    pub peer_key_file: Option<PathBuf>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/baton/".into(),
            user: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            timeout: Duration::from_secs(5),
            primary_ttl_secs: 2,
            compaction_interval: Duration::from_secs(300),
            journal_depth: 2,
            attempt_timeout: Duration::from_millis(1000),
            health_interval: Duration::from_millis(500),
            forward_secret: None,
            peer_trusted_ca_file: None,
            peer_cert_file: None,
            peer_key_file: None,
        }
    }
}

impl EtcdConfig {
    /// Checks the settings and reads the TLS files, so that a bad flag stops
    /// the server at start rather than at the first request.
    pub fn connect_options(&self) -> Result<ConnectOptions, EtcdError> {
        if self.endpoints.is_empty() {
            return Err(EtcdError::Config(
                "--etcd-endpoints needs at least one URL".into(),
            ));
        }
        for e in &self.endpoints {
            e.parse::<http::Uri>()
                .map_err(|err| EtcdError::Config(format!("bad etcd endpoint {e:?}: {err}")))?;
        }
        if self.primary_ttl_secs < 1 {
            return Err(EtcdError::Config(
                "--etcd-primary-ttl-secs must be at least 1".into(),
            ));
        }
        if !(1..=MAX_JOURNAL_DEPTH).contains(&self.journal_depth) {
            return Err(EtcdError::Config(format!(
                "--etcd-journal-depth must be between 1 and {MAX_JOURNAL_DEPTH}"
            )));
        }
        if self.attempt_timeout.is_zero() || self.health_interval.is_zero() {
            return Err(EtcdError::Config(
                "--etcd-attempt-timeout-ms and --etcd-health-interval-ms must be above 0".into(),
            ));
        }
        // Connecting is part of an attempt: a member that does not accept
        // within the attempt's time is skipped. HTTP/2 pings close a
        // connection to a member that stopped answering.
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(self.attempt_timeout)
            .with_keep_alive(
                Duration::from_secs(2),
                self.attempt_timeout.max(Duration::from_secs(1)),
            )
            .with_keep_alive_while_idle(true)
            .with_require_leader(true)
            .with_auto_token_refresh(true);
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => opts = opts.with_user(u.clone(), p.clone()),
            (Some(u), None) => opts = opts.with_user(u.clone(), String::new()),
            (None, Some(_)) => {
                return Err(EtcdError::Config(
                    "--etcd-password needs --etcd-user".into(),
                ));
            }
            (None, None) => {}
        }
        let tls_wanted = self.ca_file.is_some() || self.cert_file.is_some();
        if tls_wanted {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&self.cert_file, &self.key_file) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                (None, None) => {}
                _ => {
                    return Err(EtcdError::Config(
                        "--etcd-cert-file and --etcd-key-file go together".into(),
                    ));
                }
            }
            if let Some(e) = self.endpoints.iter().find(|e| e.starts_with("http://")) {
                return Err(EtcdError::Config(format!(
                    "TLS flags are given but endpoint {e} is http://; use https://"
                )));
            }
            opts = opts.with_tls(tls);
        } else if self.key_file.is_some() {
            return Err(EtcdError::Config(
                "--etcd-key-file needs --etcd-cert-file".into(),
            ));
        }
        Ok(opts)
    }
}

impl EtcdConfig {
    /// How this gateway's forwarded calls reach an https:// primary: the
    /// peer CA and client certificate, read now so that a bad file stops
    /// the server at start. `None` when no peer TLS flag is given (the
    /// system's roots, no client certificate).
    pub fn forward_tls(&self) -> Result<Option<ClientTlsConfig>, EtcdError> {
        let mut tls = match &self.peer_trusted_ca_file {
            Some(ca) => {
                ClientTlsConfig::new().ca_certificate(TonicCertificate::from_pem(read(ca)?))
            }
            None => ClientTlsConfig::new().with_native_roots(),
        };
        match (&self.peer_cert_file, &self.peer_key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(TonicIdentity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) if self.peer_trusted_ca_file.is_none() => return Ok(None),
            (None, None) => {}
            _ => {
                return Err(EtcdError::Config(
                    "--peer-cert-file and --peer-key-file go together".into(),
                ));
            }
        }
        Ok(Some(tls))
    }

    /// The members and the rotation over them (see
    /// [`Endpoints`](super::endpoints::Endpoints)): every etcd request
    /// goes through it. Checks the settings first, as
    /// [`connect_options`](Self::connect_options) does. Call from within a
    /// tokio runtime.
    pub fn endpoints(&self) -> Result<Endpoints, EtcdError> {
        Endpoints::new(EndpointsConfig {
            urls: self.endpoints.clone(),
            options: self.connect_options()?,
            probe_key: format!("{}primary", self.prefix),
            timeout: self.timeout,
            attempt_timeout: self.attempt_timeout,
            health_interval: self.health_interval,
        })
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path)
        .map_err(|e| EtcdError::Config(format!("cannot read {}: {e}", path.display())))
}
