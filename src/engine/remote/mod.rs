//! The forwarding engine: an [`Engine`] whose every call goes to another
//! baton's public gRPC API (`baton.v1.Lock` and `baton.v1.Status`).
//!
//! With `--backend etcd`, every gateway that is not the elected primary
//! serves its clients through this engine, so every surface (gRPC, JSON,
//! `/mod/v2`) works on every gateway with the primary's one lock table
//! behind it. It maps the primary's answers back to the engine's types and
//! errors, so the follower's service layer maps them to exactly the codes
//! and messages the primary's own clients get.
//!
//! With `--auth-file`, the follower's service layer has already checked its
//! caller; every forwarded call carries the cluster secret
//! ([`RemoteOptions::credential`]), without which the primary treats the
//! call as any other client's and refuses it.
//!
//! All calls travel on one `baton.v1.Forward/Exchange` stream to the
//! primary ([`exchange`]). Going away is total across the hop: dropping a
//! [`WaitStream`] or [`EventStream`] (or the `wait` future before it
//! returns) withdraws the call on the primary with a `cancel` message, and
//! the primary ends it as it ends a call whose client left.

pub mod convert;
pub mod exchange;
pub mod status;

use std::{
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use async_trait::async_trait;
use futures::StreamExt;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};

use super::{
    AcquireSpec, Engine, EngineError, EngineStats, EventStream, KeySummary, KeyView, Release,
    Renewal, Target, TokenCheck, WaitStream, WaitUpdate,
};
use crate::proto::v1::{
    self as pb, forward_reply::Reply, forward_request::Call as Request, release_request,
    renew_request,
};
use exchange::{Call, Ending, Exchange, StreamReplies};

/// How a [`RemoteEngine`] talks to the primary. Each is meant to become a
/// command-line flag of the etcd backend.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// How long to try to connect before a call fails with `Unavailable`.
    pub connect_timeout: Duration,
    /// How long a unary call (and the first step of a wait or watch) may take
    /// before it fails with `Unavailable`. A wait's own timeout is the
    /// primary's business and is not bounded by this.
    pub call_timeout: Duration,
    /// HTTP/2 ping interval on idle connections, so a primary that vanished
    /// silently is noticed and its streams end with `Unavailable`.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is dropped.
    pub keepalive_timeout: Duration,
    /// The cluster secret (`--cluster-secret-file`), sent with every call
    /// as `authorization: Bearer`: a primary with `--auth-file` accepts
    /// forwarded calls only with it, since this gateway has already checked
    /// its own caller's rights.
    pub credential: Option<ForwardSecret>,
    /// How to check an https:// primary's certificate, and the client
    /// certificate to present (`--peer-trusted-ca-file`, `--peer-cert-file`);
    /// `None`: the system's roots and no client certificate.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// A secret gateways forward with; never shown by `Debug`.
#[derive(Clone)]
pub struct ForwardSecret(pub String);

impl std::fmt::Debug for ForwardSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForwardSecret(..)")
    }
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            credential: None,
            tls: None,
        }
    }
}

/// Why a [`RemoteEngine`] could not be made or retargeted.
#[derive(Debug, Error)]
pub enum RemoteError {
    /// The primary's URL is not a valid gRPC endpoint.
    #[error("invalid primary URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The cluster secret cannot be sent in a header.
    #[error("the cluster secret must be visible ASCII")]
    InvalidCredential,
}

/// An [`Engine`] that forwards to a primary baton over gRPC. Share it
/// behind an `Arc` (the service layer does); [`RemoteEngine::set_target`]
/// moves it to a new primary.
pub struct RemoteEngine {
    opts: RemoteOptions,
    target: RwLock<Arc<Primary>>,
    /// `Bearer SECRET` of [`RemoteOptions::credential`].
    authorization: Option<MetadataValue<Ascii>>,
}

/// One primary: its connection and the exchange open on it.
struct Primary {
    url: String,
    channel: Channel,
    /// The exchange calls go on; replaced when it breaks.
    exchange: Mutex<Option<Arc<Exchange>>>,
    /// Held while an exchange is being opened, so callers that find none
    /// open one between them.
    opening: tokio::sync::Mutex<()>,
    /// Cancelled when this is no longer the primary calls go to.
    gone: CancellationToken,
}

impl Primary {
    /// The open exchange, if it is still usable.
    fn live(&self) -> Option<Arc<Exchange>> {
        self.exchange
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|e| !e.is_over())
            .cloned()
    }
}

impl RemoteEngine {
    /// An engine forwarding to the baton at `url` (`http://host:port`).
    /// Nothing is connected until the first call.
    pub fn new(url: &str, opts: RemoteOptions) -> Result<Self, RemoteError> {
        let channel = endpoint(url, &opts)?.connect_lazy();
        Self::on(url, channel, opts)
    }

    /// An engine forwarding to a primary reached through `connector`
    /// instead of the network (`url` names it, as an `http://` URL): the
    /// in-process test suites connect it to a served primary over
    /// `tokio::io::duplex` pipes, so the whole gRPC stack runs on tokio's
    /// paused clock. [`set_target`](Self::set_target) moves it to a
    /// network URL as usual.
    pub fn with_connector<C>(
        url: &str,
        opts: RemoteOptions,
        connector: C,
    ) -> Result<Self, RemoteError>
    where
        C: tower::Service<http::Uri> + Send + 'static,
        C::Response: hyper::rt::Read + hyper::rt::Write + Send + Unpin,
        C::Future: Send,
        Box<dyn std::error::Error + Send + Sync>: From<C::Error> + Send,
    {
        let channel = endpoint(url, &opts)?.connect_with_connector_lazy(connector);
        Self::on(url, channel, opts)
    }

    fn on(url: &str, channel: Channel, opts: RemoteOptions) -> Result<Self, RemoteError> {
        let authorization = match &opts.credential {
            Some(ForwardSecret(s)) => Some(
                MetadataValue::try_from(format!("Bearer {s}"))
                    .map_err(|_| RemoteError::InvalidCredential)?,
            ),
            None => None,
        };
        Ok(Self {
            target: RwLock::new(Arc::new(primary(url, channel))),
            opts,
            authorization,
        })
    }

    /// Moves the engine to the primary at `url` (after a fail-over): new
    /// calls go there, and every open call on the old primary ends with
    /// `Unavailable` (its clients re-queue, as the contract says of
    /// requests queued on a primary that died). The same URL again is a
    /// no-op.
    pub fn set_target(&self, url: &str) -> Result<(), RemoteError> {
        let new = Arc::new(primary(url, endpoint(url, &self.opts)?.connect_lazy()));
        let old = {
            let mut target = self.target.write().unwrap_or_else(|p| p.into_inner());
            if target.url == new.url {
                return Ok(());
            }
            std::mem::replace(&mut *target, new)
        };
        tracing::info!(from = %old.url, to = %url, "forwarding to a new primary");
        old.gone.cancel();
        Ok(())
    }

    /// The primary's URL calls go to now.
    pub fn target_url(&self) -> String {
        self.primary().url.clone()
    }

    /// Forwarding streams open to the current primary: 1 once a call has
    /// been made and the stream holds, else 0.
    pub fn connections(&self) -> usize {
        usize::from(self.primary().live().is_some())
    }

    fn primary(&self) -> Arc<Primary> {
        self.target
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The exchange on the current primary, opened if there is none; bounded
    /// by `call_timeout` and by a retarget.
    async fn exchange(&self) -> Result<Arc<Exchange>, EngineError> {
        let primary = self.primary();
        if let Some(e) = primary.live() {
            return Ok(e);
        }
        let after = self.opts.call_timeout;
        let open = async {
            let _opening = primary.opening.lock().await;
            if let Some(e) = primary.live() {
                return Ok(e);
            }
            let e = Exchange::open(
                &primary.url,
                primary.channel.clone(),
                self.authorization.clone(),
                primary.gone.clone(),
            )
            .await?;
            *primary.exchange.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            Ok(e)
        };
        tokio::select! {
            r = tokio::time::timeout(after, open) => r.unwrap_or_else(|_| Err(no_answer(&primary.url, after))),
            () = primary.gone.cancelled() => Err(moved(&primary.url)),
        }
    }

    /// Runs one unary call on the current primary, bounded by
    /// `call_timeout`. Dropping the future withdraws the call.
    async fn unary(&self, request: Request) -> Result<Reply, EngineError> {
        let exchange = self.exchange().await?;
        let (_call, reply) = exchange.unary(request)?;
        let after = self.opts.call_timeout;
        match tokio::time::timeout(after, reply).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(ending))) => Err(ending_error(ending, None)),
            Ok(Err(_)) => Err(closed(&self.primary().url)),
            Err(_) => Err(no_answer(&self.primary().url, after)),
        }
    }

    /// Opens a wait or watch and reads its first reply, bounded by
    /// `call_timeout`. Dropping the future withdraws the call.
    async fn open_stream(
        &self,
        request: Request,
    ) -> Result<(Call, StreamReplies, Reply), EngineError> {
        let exchange = self.exchange().await?;
        let (call, mut replies) = exchange.stream(request)?;
        let after = self.opts.call_timeout;
        match tokio::time::timeout(after, replies.next()).await {
            Ok(Ok(first)) => Ok((call, replies, first)),
            Ok(Err(ending)) => Err(ending_error(ending, None)),
            Err(_) => Err(no_answer(&self.primary().url, after)),
        }
    }
}

/// The primary at `url`, reached over `channel`; nothing is open yet.
fn primary(url: &str, channel: Channel) -> Primary {
    Primary {
        url: url.to_owned(),
        channel,
        exchange: Mutex::new(None),
        opening: tokio::sync::Mutex::new(()),
        gone: CancellationToken::new(),
    }
}

/// The gRPC endpoint of the primary at `url`, with `opts`' timeouts,
/// keep-alive and TLS.
fn endpoint(url: &str, opts: &RemoteOptions) -> Result<Endpoint, RemoteError> {
    let invalid = |reason: String| RemoteError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(opts.connect_timeout)
        .http2_keep_alive_interval(opts.keepalive_interval)
        .keep_alive_timeout(opts.keepalive_timeout)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    let endpoint = if url.starts_with("https://") {
        let tls = opts
            .tls
            .clone()
            .unwrap_or_else(|| tonic::transport::ClientTlsConfig::new().with_native_roots());
        endpoint
            .tls_config(tls)
            .map_err(|e| invalid(e.to_string()))?
    } else {
        endpoint
    };
    Ok(endpoint)
}

/// The largest page the primary's `Lock.List` returns. A primary that
/// returns less only costs more pages: the loop follows the tokens.
const MAX_PAGE: usize = 1000;

fn moved(url: &str) -> EngineError {
    EngineError::Unavailable(format!("the primary at {url} is no longer the primary"))
}

fn no_answer(url: &str, after: Duration) -> EngineError {
    EngineError::Unavailable(format!(
        "the primary at {url} did not answer within {} ms",
        after.as_millis()
    ))
}

fn closed(url: &str) -> EngineError {
    EngineError::Unavailable(format!("the primary at {url} closed the stream"))
}

/// The engine error a call that ended without its reply stands for.
fn ending_error(ending: Ending, queued_index: Option<u64>) -> EngineError {
    match ending {
        Ending::Failed(s) => status::engine_error(&s, queued_index),
        Ending::Gone(e) => e,
        Ending::Ended => EngineError::Internal("the primary ended a call without answering".into()),
    }
}

/// A reply of the wrong kind: the primary runs another version of baton.
fn unexpected(what: &str, reply: &Reply) -> EngineError {
    EngineError::Internal(format!(
        "the primary answered a forwarded {what} with {reply:?}"
    ))
}

/// An open wait on the primary, as [`WaitStream`] reads it.
struct WaitState {
    replies: StreamReplies,
    first: Option<WaitUpdate>,
    /// The index the Queued step gave, for ABORTED (released while queued).
    queued_index: Option<u64>,
    done: bool,
    // Held for the stream's life: dropping it withdraws the wait.
    call: Call,
}

impl WaitState {
    async fn next(&mut self) -> Option<Result<WaitUpdate, EngineError>> {
        let update = self.take().await;
        // The grant is handed on now: the primary may count it as heard.
        if matches!(update, Some(Ok(WaitUpdate::Acquired(_)))) {
            self.call.heard();
        }
        update
    }

    async fn take(&mut self) -> Option<Result<WaitUpdate, EngineError>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        if self.done {
            return None;
        }
        let update = match self.replies.next().await {
            Ok(Reply::WaitEvent(event)) => convert::wait_update(event),
            Ok(other) => Err(unexpected("wait", &other)),
            Err(Ending::Ended) => {
                self.done = true;
                return None;
            }
            Err(ending) => Err(ending_error(ending, self.queued_index)),
        };
        match &update {
            Ok(WaitUpdate::Queued { index, .. }) => self.queued_index = Some(*index),
            Ok(WaitUpdate::Acquired(_)) => {}
            Ok(WaitUpdate::Ended { .. }) | Err(_) => self.done = true,
        }
        Some(update)
    }
}

/// An open watch on the primary.
struct WatchState {
    replies: StreamReplies,
    done: bool,
    _call: Call,
}

impl WatchState {
    async fn next(&mut self) -> Option<Result<super::LockEvent, EngineError>> {
        if self.done {
            return None;
        }
        let event = match self.replies.next().await {
            Ok(Reply::LockEvent(e)) => convert::lock_event(e),
            Ok(other) => Err(unexpected("watch", &other)),
            Err(Ending::Ended) => {
                self.done = true;
                return None;
            }
            Err(ending) => Err(ending_error(ending, None)),
        };
        if event.is_err() {
            self.done = true;
        }
        Some(event)
    }
}

#[async_trait]
impl Engine for RemoteEngine {
    async fn wait(&self, spec: AcquireSpec) -> Result<WaitStream, EngineError> {
        let request = Request::Wait(pb::WaitRequest {
            key: spec.key,
            value: spec.value.unwrap_or_default(),
            ttl_ms: spec.ttl_ms,
            timeout_ms: spec.timeout_ms,
            limit: spec.limit,
            lock_delay_ms: spec.lock_delay_ms,
        });
        // The primary answers a wait at once with Queued or Acquired (or
        // with the error that refuses it), so the first step is bounded like
        // a unary call. If this future is dropped meanwhile, the call goes
        // with it and the primary withdraws the request.
        let (call, replies, first) = self.open_stream(request).await?;
        let first = match first {
            Reply::WaitEvent(event) => convert::wait_update(event)?,
            other => return Err(unexpected("wait", &other)),
        };
        let state = WaitState {
            replies,
            queued_index: match &first {
                WaitUpdate::Queued { index, .. } => Some(*index),
                _ => None,
            },
            done: matches!(first, WaitUpdate::Ended { .. }),
            first: Some(first),
            call,
        };
        let stream =
            futures::stream::unfold(
                state,
                |mut st| async move { st.next().await.map(|i| (i, st)) },
            );
        Ok(stream.boxed())
    }

    async fn renew(&self, key: &str, target: Target, ttl_ms: u64) -> Result<Renewal, EngineError> {
        let request = Request::Renew(pb::RenewRequest {
            key: key.to_owned(),
            target: Some(match target {
                Target::Index(i) => renew_request::Target::Index(i),
                Target::Value(v) => renew_request::Target::Value(v),
            }),
            ttl_ms,
        });
        match self.unary(request).await? {
            Reply::Renew(r) => Ok(Renewal {
                index: r.index,
                held: r.held,
                deadline: (r.deadline_unix_ms != 0).then_some(r.deadline_unix_ms),
            }),
            other => Err(unexpected("renew", &other)),
        }
    }

    async fn release(&self, key: &str, target: Target) -> Result<Release, EngineError> {
        let request = Request::Release(pb::ReleaseRequest {
            key: key.to_owned(),
            target: Some(match target {
                Target::Index(i) => release_request::Target::Index(i),
                Target::Value(v) => release_request::Target::Value(v),
            }),
        });
        match self.unary(request).await? {
            Reply::Release(r) => Ok(Release {
                index: r.index,
                was_holder: r.was_holder,
            }),
            other => Err(unexpected("release", &other)),
        }
    }

    async fn get(&self, key: &str) -> Result<KeyView, EngineError> {
        let request = Request::Get(pb::GetRequest {
            key: key.to_owned(),
        });
        match self.unary(request).await? {
            Reply::Get(r) => Ok(convert::key_view(r)),
            other => Err(unexpected("get", &other)),
        }
    }

    async fn check_token(&self, key: &str, index: u64) -> Result<TokenCheck, EngineError> {
        let request = Request::Check(pb::CheckRequest {
            key: key.to_owned(),
            index,
        });
        match self.unary(request).await? {
            Reply::Check(r) => Ok(TokenCheck {
                current: r.current,
                holders: r.holders.into_iter().map(convert::holder).collect(),
            }),
            other => Err(unexpected("check", &other)),
        }
    }

    /// Pages through `Lock.List` until `limit` keys: a page token is the
    /// last key of the previous page, so `after` is the first token.
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeySummary>, EngineError> {
        let mut keys = Vec::new();
        let mut token = after.unwrap_or_default().to_owned();
        while keys.len() < limit {
            let request = Request::List(pb::ListRequest {
                prefix: prefix.to_owned(),
                page_size: (limit - keys.len()).min(MAX_PAGE) as u32,
                page_token: token,
            });
            let page = match self.unary(request).await? {
                Reply::List(page) => page,
                other => return Err(unexpected("list", &other)),
            };
            keys.extend(page.keys.into_iter().map(convert::key_summary));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        keys.truncate(limit);
        Ok(keys)
    }

    async fn watch(&self, key: &str, prefix: bool) -> Result<EventStream, EngineError> {
        let request = Request::Watch(pb::WatchRequest {
            key: key.to_owned(),
            prefix,
        });
        // The primary says `opened` once it has subscribed, so once this
        // returns no later change is missed.
        let (call, replies, first) = self.open_stream(request).await?;
        if !matches!(first, Reply::Opened(_)) {
            return Err(unexpected("watch", &first));
        }
        let state = WatchState {
            replies,
            done: false,
            _call: call,
        };
        let stream =
            futures::stream::unfold(
                state,
                |mut st| async move { st.next().await.map(|i| (i, st)) },
            );
        Ok(stream.boxed())
    }

    async fn stats(&self) -> Result<EngineStats, EngineError> {
        match self.unary(Request::Status(pb::StatusRequest {})).await? {
            Reply::Status(r) => Ok(EngineStats {
                keys: r.keys,
                entries: r.entries,
                waiters: r.waiters,
            }),
            other => Err(unexpected("status", &other)),
        }
    }

    /// Forwarding followers are only made by the etcd backend.
    fn backend(&self) -> &'static str {
        "etcd"
    }
}
