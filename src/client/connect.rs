//! Endpoints and fail-over: a [`Client`] knows one or several baton
//! endpoints and sends each call to the one that answered last, moving on to
//! the next when a call fails with `UNAVAILABLE` (which is also how tonic
//! reports connection errors).

use std::{
    future::Future,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tonic::{
    Code, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use super::error::ClientError;
use crate::proto::v1::{
    self as pb, election_client::ElectionClient, lock_client::LockClient,
    status_client::StatusClient,
};

/// A connection that sends the client's token with every call.
pub(crate) type Transport = InterceptedService<Channel, TokenHeader>;

/// The generated clients of every baton service, on one endpoint's channel:
/// what a call through [`Client::with_failover`] is handed.
pub(crate) struct Stubs {
    pub(crate) lock: LockClient<Transport>,
    pub(crate) election: ElectionClient<Transport>,
    pub(crate) status: StatusClient<Transport>,
}

/// What a server says of itself (`baton.v1.Status/Get`): which backend it
/// runs, its role among gateways over etcd, and its size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerStatus {
    /// The server's version.
    pub version: String,
    /// `embedded` or `etcd`.
    pub backend: String,
    /// `embedded` (one machine), `primary` or `follower` (gateways over
    /// etcd).
    pub role: String,
    /// The primary's URL, for gateways over etcd; empty otherwise.
    pub primary_url: String,
    /// Keys with at least one entry.
    pub keys: u64,
    /// Entries (held or queued) across all keys.
    pub entries: u64,
    /// Waiting requests.
    pub waiters: u64,
    /// How long the server has run.
    pub uptime: Duration,
}

/// Adds `authorization: Bearer TOKEN` to each call, when a token was given.
#[derive(Clone, Default)]
pub(crate) struct TokenHeader(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for TokenHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "TokenHeader(..)"
        } else {
            "TokenHeader(None)"
        })
    }
}

impl Interceptor for TokenHeader {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The endpoint the command line and [`Client::connect`] use by default.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4001";

/// A handle on a baton service, cheap to clone (clones share connections).
///
/// Calls go to the endpoint that answered last; a call that fails with
/// `UNAVAILABLE` or cannot connect is retried once on each other endpoint,
/// in the order given, before it fails with [`ClientError::Unavailable`].
/// Fail-over is meant for gateways that share state (the etcd backend);
/// separate embedded servers are separate lock services.
///
/// ```no_run
/// # async fn demo() -> Result<(), baton::client::ClientError> {
/// use baton::client::Client;
///
/// // One endpoint, or several separated by commas.
/// let client = Client::connect("http://10.0.0.1:4001,http://10.0.0.2:4001").await?;
/// let status = client.status("jobs/nightly").await?;
/// println!("held by {:?}", status.holder.map(|h| h.index));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoints: Vec<Target>,
    /// Index into `endpoints` of the endpoint to try first.
    current: AtomicUsize,
    request_timeout: Duration,
    token: TokenHeader,
}

#[derive(Debug)]
struct Target {
    uri: String,
    endpoint: Endpoint,
    /// Made on first use, inside the runtime (tonic's channels need one).
    channel: OnceLock<Channel>,
}

impl Target {
    /// The endpoint's channel, connecting lazily. Fails (as unavailable)
    /// outside a Tokio runtime rather than panicking in tonic.
    fn channel(&self) -> Result<Channel, Status> {
        if let Some(c) = self.channel.get() {
            return Ok(c.clone());
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Status::unavailable(
                "the baton client must run inside a Tokio runtime",
            ));
        }
        Ok(self
            .channel
            .get_or_init(|| self.endpoint.clone().connect_lazy())
            .clone())
    }
}

/// Settings for a [`Client`]: endpoints and timeouts.
///
/// ```no_run
/// # async fn demo() -> Result<(), baton::client::ClientError> {
/// use std::time::Duration;
/// use baton::client::Client;
///
/// let client = Client::builder()
///     .endpoints(["http://10.0.0.1:4001", "http://10.0.0.2:4001"])
///     .connect_timeout(Duration::from_secs(2))
///     .connect()
///     .await?;
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, PrivateKey)>,
    token: Option<PrivateKey>,
}

/// A private key's PEM, kept out of `Debug` output so that logging a
/// builder never prints it.
#[derive(Clone)]
struct PrivateKey(Vec<u8>);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            ca_pem: None,
            identity: None,
            token: None,
        }
    }
}

impl ClientBuilder {
    /// Adds endpoints, in fail-over order. Each string may itself hold
    /// several, separated by commas; `host:port` means `http://host:port`.
    pub fn endpoints<I, S>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for e in endpoints {
            self.endpoints.extend(
                e.as_ref()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        self
    }

    /// How long to wait for a TCP connection before trying the next
    /// endpoint (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a single call (not a wait) may take on one endpoint before it
    /// counts as unavailable there (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Trusts the CA certificate(s) in `pem` for `https://` endpoints instead
    /// of the system's roots (for a baton started with `--tls-cert-file`
    /// signed by a private CA).
    pub fn ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Presents this PEM certificate and key to `https://` endpoints, for a
    /// baton started with `--tls-client-ca-file`.
    pub fn identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert_pem.into(), PrivateKey(key_pem.into())));
        self
    }

    /// Sends `token` with every call (`authorization: Bearer TOKEN`), for a
    /// baton started with `--auth-file`. An empty token sends nothing.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.token = (!token.is_empty()).then(|| PrivateKey(token.into_bytes()));
        self
    }

    /// Builds the client without connecting: connections are made on first
    /// use, so this only fails on malformed endpoints.
    ///
    /// ```
    /// use baton::client::{Client, ClientError};
    ///
    /// let client = Client::builder().endpoints(["10.0.0.1:4001,10.0.0.2:4001"]).build()?;
    /// assert_eq!(
    ///     client.endpoints().collect::<Vec<_>>(),
    ///     ["http://10.0.0.1:4001", "http://10.0.0.2:4001"],
    /// );
    /// assert!(matches!(Client::builder().build(), Err(ClientError::NoEndpoints)));
    /// # Ok::<(), ClientError>(())
    /// ```
    pub fn build(self) -> Result<Client, ClientError> {
        if self.endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let token = match &self.token {
            Some(PrivateKey(t)) => {
                let header = std::str::from_utf8(t)
                    .ok()
                    .and_then(|t| MetadataValue::try_from(format!("Bearer {}", t.trim())).ok())
                    .ok_or_else(|| {
                        ClientError::InvalidArgument("the token must be visible ASCII".into())
                    })?;
                TokenHeader(Some(header))
            }
            None => TokenHeader(None),
        };
        let mut targets = Vec::with_capacity(self.endpoints.len());
        for given in self.endpoints {
            let uri = if given.contains("://") {
                given.clone()
            } else {
                format!("http://{given}")
            };
            let tls = uri.starts_with("https://");
            if !tls && !uri.starts_with("http://") {
                return Err(ClientError::InvalidEndpoint {
                    endpoint: given,
                    reason: "only http:// and https:// endpoints are supported".into(),
                });
            }
            let invalid = |e: &dyn std::fmt::Display| ClientError::InvalidEndpoint {
                endpoint: given.clone(),
                reason: e.to_string(),
            };
            let mut endpoint = Endpoint::from_shared(uri.clone()).map_err(|e| invalid(&e))?;
            if tls {
                let mut config = match &self.ca_pem {
                    Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                    None => ClientTlsConfig::new().with_native_roots(),
                };
                if let Some((cert, key)) = &self.identity {
                    config = config.identity(Identity::from_pem(cert, &key.0));
                }
                endpoint = endpoint.tls_config(config).map_err(|e| invalid(&e))?;
            }
            let endpoint = endpoint
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(true);
            targets.push(Target {
                uri,
                endpoint,
                channel: OnceLock::new(),
            });
        }
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints: targets,
                current: AtomicUsize::new(0),
                request_timeout: self.request_timeout,
                token,
            }),
        })
    }

    /// Builds the client and connects to the first endpoint that answers, so
    /// an unreachable service is reported now rather than on first use.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let client = self.build()?;
        client.ping().await?;
        Ok(client)
    }
}

impl Client {
    /// Settings for a client, starting with no endpoints.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects to `endpoints` (one, or several separated by commas) with the
    /// default timeouts. See [`ClientBuilder::connect`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), baton::client::ClientError> {
    /// let client = baton::client::Client::connect("http://127.0.0.1:4001").await?;
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(endpoints: &str) -> Result<Client, ClientError> {
        Self::builder().endpoints([endpoints]).connect().await
    }

    /// The endpoints, in fail-over order.
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.inner.endpoints.iter().map(|t| t.uri.as_str())
    }

    /// The endpoint calls go to first (the last one that answered).
    pub fn current_endpoint(&self) -> &str {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.endpoints.len();
        &self.inner.endpoints[i].uri
    }

    /// Checks that some endpoint answers (a cheap `Lock.Get`). A token
    /// that may not read the key still proves the server answered and knows
    /// the token; an unknown token fails here, early.
    async fn ping(&self) -> Result<(), ClientError> {
        let answered = self
            .unary(|Stubs { mut lock, .. }| async move {
                lock.get(crate::proto::v1::GetRequest {
                    key: "baton/ping".into(),
                })
                .await
                .map(|_| ())
            })
            .await;
        match answered {
            Err(ClientError::PermissionDenied(_)) => Ok(()),
            other => other,
        }
    }

    /// Runs `op` on the current endpoint, failing over to the others in turn
    /// while it fails with `UNAVAILABLE`. Each attempt is bounded by the
    /// request timeout.
    pub(crate) async fn unary<T, F, Fut>(&self, mut op: F) -> Result<T, ClientError>
    where
        F: FnMut(Stubs) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let timeout = self.inner.request_timeout;
        self.with_failover(|stubs| {
            let call = op(stubs);
            async move {
                match tokio::time::timeout(timeout, call).await {
                    Ok(r) => r,
                    Err(_) => Err(Status::unavailable(format!(
                        "no answer within {}s",
                        timeout.as_secs_f64()
                    ))),
                }
            }
        })
        .await
        .map_err(|e| match e {
            Failure::Status(s) => ClientError::from_status(&s),
            Failure::Unavailable(e) => e,
        })
    }

    /// What the server says of itself: backend, role (`embedded`,
    /// `primary`, `follower`) and the primary's URL, and its size.
    pub async fn server_status(&self) -> Result<ServerStatus, ClientError> {
        let r = self
            .unary(|Stubs { mut status, .. }| async move { status.get(pb::StatusRequest {}).await })
            .await?
            .into_inner();
        Ok(ServerStatus {
            version: r.version,
            backend: r.backend,
            role: r.role,
            primary_url: r.primary_url,
            keys: r.keys,
            entries: r.entries,
            waiters: r.waiters,
            uptime: Duration::from_millis(r.uptime_ms),
        })
    }

    /// Runs `op` on each endpoint in turn, starting with the current one,
    /// until it succeeds or fails with something other than `UNAVAILABLE`.
    pub(crate) async fn with_failover<T, F, Fut>(&self, mut op: F) -> Result<T, Failure>
    where
        F: FnMut(Stubs) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let n = self.inner.endpoints.len();
        let start = self.inner.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for attempt in 0..n {
            let i = (start + attempt) % n;
            let target = &self.inner.endpoints[i];
            let result = match target.channel() {
                Ok(channel) => {
                    op(Stubs {
                        lock: LockClient::with_interceptor(
                            channel.clone(),
                            self.inner.token.clone(),
                        ),
                        election: ElectionClient::with_interceptor(
                            channel.clone(),
                            self.inner.token.clone(),
                        ),
                        status: StatusClient::with_interceptor(channel, self.inner.token.clone()),
                    })
                    .await
                }
                Err(s) => Err(s),
            };
            match result {
                Ok(v) => {
                    self.inner.current.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(s) if fails_over(&s) => {
                    tracing::debug!(endpoint = %target.uri, error = %s, "endpoint unavailable");
                    last = describe(&s);
                    // Start the next call with the next endpoint, unless
                    // another call already moved on.
                    let _ = self.inner.current.compare_exchange(
                        i,
                        (i + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                Err(s) => {
                    self.inner.current.store(i, Ordering::Relaxed);
                    return Err(Failure::Status(s));
                }
            }
        }
        Err(Failure::Unavailable(self.unavailable(last)))
    }

    /// The error for "every endpoint failed, the last with `message`".
    pub(crate) fn unavailable(&self, message: String) -> ClientError {
        ClientError::Unavailable {
            endpoints: self.endpoints().collect::<Vec<_>>().join(","),
            message,
        }
    }

    /// How many endpoints there are.
    pub(crate) fn endpoint_count(&self) -> usize {
        self.inner.endpoints.len()
    }
}

/// How a fail-over attempt ended badly.
#[derive(Debug)]
pub(crate) enum Failure {
    /// An endpoint answered with this non-`UNAVAILABLE` status.
    Status(Status),
    /// No endpoint answered.
    Unavailable(ClientError),
}

/// Whether a status means "try another endpoint": `UNAVAILABLE` (the server
/// is shutting down, or the connection was refused or timed out), or any
/// status tonic made up on this side from a transport failure (those carry
/// the failure as their source; a status the server sent never does). That
/// covers a connection that is closing (`CANCELLED`, "operation was
/// canceled") or was reset mid-stream (`UNKNOWN`/`INTERNAL`).
pub(crate) fn fails_over(s: &Status) -> bool {
    s.code() == Code::Unavailable || std::error::Error::source(s).is_some()
}

/// A status as one line, with its source (the connection error) if any.
fn describe(s: &Status) -> String {
    let mut out = s.message().to_owned();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

#[cfg(test)]
mod private_key_tests {
    use super::ClientBuilder;

    #[test]
    fn debug_output_never_shows_the_private_key() {
        let key = b"-----BEGIN PRIVATE KEY-----\nSECRET\n".to_vec();
        let builder = ClientBuilder::default().identity("cert", key.clone());
        let shown = format!("{builder:?}");
        assert!(!shown.contains(&format!("{key:?}")), "{shown}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("PrivateKey(..)"), "{shown}");
    }
}
