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
//! Going away is total across the hop: a wait or watch is one gRPC stream to
//! the primary, and dropping the [`WaitStream`] or [`EventStream`] (or the
//! `wait` future before it returns) drops the stream, which resets it on the
//! wire; the primary withdraws the request as for any client that left. One
//! exception, for the primary's sake: a call dropped before the primary's
//! response headers is reset as soon as they arrive, not before (see
//! `open` in this file).

pub mod convert;
pub mod pool;
pub mod status;

use std::{
    sync::{Arc, RwLock},
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
    self as pb, lock_client::LockClient, release_request, renew_request,
    status_client::StatusClient,
};
use pool::{Pool, Slot};

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
    /// Long-lived streams (waits, watches) per connection before the pool
    /// opens another; see [`pool`] for why 100.
    pub streams_per_connection: usize,
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
            streams_per_connection: 100,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            credential: None,
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
    target: RwLock<Arc<Pool>>,
    /// `Bearer SECRET` of [`RemoteOptions::credential`].
    authorization: Option<MetadataValue<Ascii>>,
}

impl RemoteEngine {
    /// An engine forwarding to the baton at `url` (`http://host:port`).
    /// Nothing is connected until the first call.
    pub fn new(url: &str, opts: RemoteOptions) -> Result<Self, RemoteError> {
        let pool = pool(url, &opts)?;
        Self::on(pool, opts)
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
        C: tower::Service<http::Uri> + Clone + Send + Sync + 'static,
        C::Response: hyper::rt::Read + hyper::rt::Write + Send + Unpin,
        C::Future: Send,
        Box<dyn std::error::Error + Send + Sync>: From<C::Error> + Send,
    {
        let endpoint = endpoint(url, &opts)?;
        let connect: pool::Connect =
            Box::new(move || endpoint.connect_with_connector_lazy(connector.clone()));
        Self::on(
            Pool::new(url.to_owned(), connect, opts.streams_per_connection),
            opts,
        )
    }

    fn on(pool: Pool, opts: RemoteOptions) -> Result<Self, RemoteError> {
        let authorization = match &opts.credential {
            Some(ForwardSecret(s)) => Some(
                MetadataValue::try_from(format!("Bearer {s}"))
                    .map_err(|_| RemoteError::InvalidCredential)?,
            ),
            None => None,
        };
        Ok(Self {
            target: RwLock::new(Arc::new(pool)),
            opts,
            authorization,
        })
    }

    /// `message` as a request to the primary, with the cluster secret.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        if let Some(a) = &self.authorization {
            req.metadata_mut().insert("authorization", a.clone());
        }
        req
    }

    /// Moves the engine to the primary at `url` (after a fail-over): new
    /// calls go there, and every open wait and watch on the old primary
    /// ends with `Unavailable` (its clients re-queue, as the contract says
    /// of requests queued on a primary that died). The same URL again is a
    /// no-op.
    pub fn set_target(&self, url: &str) -> Result<(), RemoteError> {
        let new = Arc::new(pool(url, &self.opts)?);
        let old = {
            let mut target = self.target.write().unwrap_or_else(|p| p.into_inner());
            if target.url() == new.url() {
                return Ok(());
            }
            std::mem::replace(&mut *target, new)
        };
        tracing::info!(from = %old.url(), to = %url, "forwarding to a new primary");
        old.gone().cancel();
        Ok(())
    }

    /// The primary's URL calls go to now.
    pub fn target_url(&self) -> String {
        self.pool().url().to_owned()
    }

    /// Connections open to the current primary.
    pub fn connections(&self) -> usize {
        self.pool().connections()
    }

    fn pool(&self) -> Arc<Pool> {
        self.target
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs one unary call on the current primary, bounded by
    /// `call_timeout` and by a retarget.
    async fn unary<T, F, Fut>(&self, call: F) -> Result<T, EngineError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let pool = self.pool();
        let fut = call(pool.unary_channel());
        tokio::select! {
            r = tokio::time::timeout(self.opts.call_timeout, fut) => match r {
                Ok(Ok(resp)) => Ok(resp.into_inner()),
                Ok(Err(s)) => Err(status::engine_error(&s, None)),
                Err(_) => Err(no_answer(pool.url(), self.opts.call_timeout)),
            },
            () = pool.gone().cancelled() => Err(moved(pool.url())),
        }
    }
}

fn pool(url: &str, opts: &RemoteOptions) -> Result<Pool, RemoteError> {
    let endpoint = endpoint(url, opts)?;
    let connect: pool::Connect = Box::new(move || endpoint.connect_lazy());
    Ok(Pool::new(
        url.to_owned(),
        connect,
        opts.streams_per_connection,
    ))
}

/// The gRPC endpoint of the primary at `url`, with `opts`' timeouts and
/// keep-alive.
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
        endpoint
            .tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())
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

/// An open `Lock.Wait` stream to the primary, as [`WaitStream`] reads it.
struct WaitState {
    inner: tonic::Streaming<pb::WaitEvent>,
    first: Option<WaitUpdate>,
    /// The index the Queued step gave, for ABORTED (released while queued).
    queued_index: Option<u64>,
    done: bool,
    pool: Arc<Pool>,
    // Held for the stream's life: its place on the connection.
    _slot: Arc<Slot>,
}

impl WaitState {
    async fn next(&mut self) -> Option<Result<WaitUpdate, EngineError>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        if self.done {
            return None;
        }
        let update = match next_message(&mut self.inner, &self.pool).await {
            Next::Message(event) => convert::wait_update(event),
            Next::Ended(e) => Err(e),
            Next::Failed(s) => Err(status::engine_error(&s, self.queued_index)),
        };
        match &update {
            Ok(WaitUpdate::Queued { index, .. }) => self.queued_index = Some(*index),
            Ok(WaitUpdate::Acquired(_)) => {}
            Ok(WaitUpdate::Ended { .. }) | Err(_) => self.done = true,
        }
        Some(update)
    }
}

/// What a stream to the primary gave next.
enum Next<T> {
    Message(T),
    /// The engine moved to another primary, or the primary closed the
    /// stream.
    Ended(EngineError),
    /// The primary (or the connection) failed the stream.
    Failed(tonic::Status),
}

/// The next message of a stream to the primary, unless the engine moves
/// to another primary first.
async fn next_message<T>(inner: &mut tonic::Streaming<T>, pool: &Pool) -> Next<T> {
    let item = tokio::select! {
        m = inner.message() => m,
        () = pool.gone().cancelled() => return Next::Ended(moved(pool.url())),
    };
    match item {
        Ok(Some(m)) => Next::Message(m),
        Ok(None) => Next::Ended(closed(pool.url())),
        Err(s) => Next::Failed(s),
    }
}

/// An open `Lock.Watch` stream to the primary.
struct WatchState {
    inner: tonic::Streaming<pb::LockEvent>,
    done: bool,
    pool: Arc<Pool>,
    _slot: Arc<Slot>,
}

impl WatchState {
    async fn next(&mut self) -> Option<Result<super::LockEvent, EngineError>> {
        if self.done {
            return None;
        }
        let event = match next_message(&mut self.inner, &self.pool).await {
            Next::Message(e) => convert::lock_event(e),
            Next::Ended(e) => Err(e),
            Next::Failed(s) => Err(status::engine_error(&s, None)),
        };
        if event.is_err() {
            self.done = true;
        }
        Some(event)
    }
}

/// Starts a server-streaming call and returns it once the primary has
/// answered with its response headers.
///
/// The call runs on a task of its own so that a caller who goes away before
/// the headers arrive does not reset a stream the primary has not accepted
/// yet: h2 servers (hyper's included) count such resets as a "rapid reset"
/// attack and, past 20 pending at once, close the whole connection with
/// `GOAWAY(ENHANCE_YOUR_CALM, "too_many_resets")`, ending up to
/// `streams_per_connection` other clients' waits. Measured: 3,000 waits
/// dropped within 10 ms through one engine lost ~60 streams that way.
/// Instead the task waits for the headers (which the primary sends only
/// after its engine has registered the request) and then drops the stream,
/// which resets it and withdraws the request on the primary a round trip
/// later.
async fn open<T: Send + 'static>(
    pool: &Pool,
    slot: Arc<Slot>,
    after: Duration,
    call: impl Future<Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>>
    + Send
    + 'static,
) -> Result<tonic::Streaming<T>, EngineError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let gone = pool.gone().clone();
    tokio::spawn(async move {
        tokio::select! {
            r = tokio::time::timeout(after, call) => {
                // If the caller left, the stream is dropped (and reset) here,
                // and its place on the connection only now.
                let _ = tx.send(r);
                drop(slot);
            }
            () = gone.cancelled() => {}
        }
    });
    match rx.await {
        Ok(Ok(Ok(resp))) => Ok(resp.into_inner()),
        Ok(Ok(Err(s))) => Err(status::engine_error(&s, None)),
        Ok(Err(_)) => Err(no_answer(pool.url(), after)),
        Err(_) => Err(moved(pool.url())),
    }
}

/// Runs `fut` unless `gone` is cancelled or `after` passes first.
async fn first_step<T>(
    pool: &Pool,
    after: Duration,
    fut: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    let gone: &CancellationToken = pool.gone();
    tokio::select! {
        r = tokio::time::timeout(after, fut) => r.unwrap_or_else(|_| Err(no_answer(pool.url(), after))),
        () = gone.cancelled() => Err(moved(pool.url())),
    }
}

#[async_trait]
impl Engine for RemoteEngine {
    async fn wait(&self, spec: AcquireSpec) -> Result<WaitStream, EngineError> {
        let pool = self.pool();
        let slot = Arc::new(pool.stream_slot());
        let mut client = LockClient::new(slot.channel());
        let req = self.request(pb::WaitRequest {
            key: spec.key,
            value: spec.value.unwrap_or_default(),
            ttl_ms: spec.ttl_ms,
            timeout_ms: spec.timeout_ms,
            limit: spec.limit,
            lock_delay_ms: spec.lock_delay_ms,
        });
        // The primary answers a wait at once with Queued or Acquired (or
        // with the error that refuses it), so the first step is bounded like
        // a unary call. If this future is dropped meanwhile, the stream goes
        // with it and the primary withdraws the request.
        let after = self.opts.call_timeout;
        let (inner, first) = first_step(&pool, after, async {
            let mut inner = open(
                &pool,
                slot.clone(),
                after,
                async move { client.wait(req).await },
            )
            .await?;
            match inner.message().await {
                Ok(Some(event)) => Ok((inner, convert::wait_update(event)?)),
                Ok(None) => Err(closed(pool.url())),
                Err(s) => Err(status::engine_error(&s, None)),
            }
        })
        .await?;
        let state = WaitState {
            inner,
            queued_index: match &first {
                WaitUpdate::Queued { index, .. } => Some(*index),
                _ => None,
            },
            done: matches!(first, WaitUpdate::Ended { .. }),
            first: Some(first),
            pool: pool.clone(),
            _slot: slot,
        };
        let stream =
            futures::stream::unfold(
                state,
                |mut st| async move { st.next().await.map(|i| (i, st)) },
            );
        Ok(stream.boxed())
    }

    async fn renew(&self, key: &str, target: Target, ttl_ms: u64) -> Result<Renewal, EngineError> {
        let req = self.request(pb::RenewRequest {
            key: key.to_owned(),
            target: Some(match target {
                Target::Index(i) => renew_request::Target::Index(i),
                Target::Value(v) => renew_request::Target::Value(v),
            }),
            ttl_ms,
        });
        let r = self
            .unary(|ch| async move { LockClient::new(ch).renew(req).await })
            .await?;
        Ok(Renewal {
            index: r.index,
            held: r.held,
            deadline: (r.deadline_unix_ms != 0).then_some(r.deadline_unix_ms),
        })
    }

    async fn release(&self, key: &str, target: Target) -> Result<Release, EngineError> {
        let req = self.request(pb::ReleaseRequest {
            key: key.to_owned(),
            target: Some(match target {
                Target::Index(i) => release_request::Target::Index(i),
                Target::Value(v) => release_request::Target::Value(v),
            }),
        });
        let r = self
            .unary(|ch| async move { LockClient::new(ch).release(req).await })
            .await?;
        Ok(Release {
            index: r.index,
            was_holder: r.was_holder,
        })
    }

    async fn get(&self, key: &str) -> Result<KeyView, EngineError> {
        let req = self.request(pb::GetRequest {
            key: key.to_owned(),
        });
        let r = self
            .unary(|ch| async move { LockClient::new(ch).get(req).await })
            .await?;
        Ok(convert::key_view(r))
    }

    async fn check_token(&self, key: &str, index: u64) -> Result<TokenCheck, EngineError> {
        let req = self.request(pb::CheckRequest {
            key: key.to_owned(),
            index,
        });
        let r = self
            .unary(|ch| async move { LockClient::new(ch).check(req).await })
            .await?;
        Ok(TokenCheck {
            current: r.current,
            holders: r.holders.into_iter().map(convert::holder).collect(),
        })
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
            let req = self.request(pb::ListRequest {
                prefix: prefix.to_owned(),
                page_size: (limit - keys.len()).min(MAX_PAGE) as u32,
                page_token: token,
            });
            let page = self
                .unary(|ch| async move { LockClient::new(ch).list(req).await })
                .await?;
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
        let pool = self.pool();
        let slot = Arc::new(pool.stream_slot());
        let mut client = LockClient::new(slot.channel());
        let req = self.request(pb::WatchRequest {
            key: key.to_owned(),
            prefix,
        });
        // The primary subscribes before it sends the response headers, so
        // once this returns no later change is missed.
        let after = self.opts.call_timeout;
        let inner = first_step(
            &pool,
            after,
            open(&pool, slot.clone(), after, async move {
                client.watch(req).await
            }),
        )
        .await?;
        let state = WatchState {
            inner,
            done: false,
            pool: pool.clone(),
            _slot: slot,
        };
        let stream =
            futures::stream::unfold(
                state,
                |mut st| async move { st.next().await.map(|i| (i, st)) },
            );
        Ok(stream.boxed())
    }

    async fn stats(&self) -> Result<EngineStats, EngineError> {
        let req = self.request(pb::StatusRequest {});
        let r = self
            .unary(|ch| async move { StatusClient::new(ch).get(req).await })
            .await?;
        Ok(EngineStats {
            keys: r.keys,
            entries: r.entries,
            waiters: r.waiters,
        })
    }

    /// Forwarding followers are only made by the etcd backend.
    fn backend(&self) -> &'static str {
        "etcd"
    }
}
