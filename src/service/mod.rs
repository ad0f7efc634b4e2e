//! The service layer: validates requests, applies limits, and maps the API
//! (proto messages) onto [`Engine`] calls. gRPC, the JSON gateway and
//! `/mod/v2` all call this layer; none of them implements lock semantics.

pub mod convert;
pub mod election;
pub mod error;
pub mod guarded;
pub mod lock;
pub mod metrics;
pub mod status;

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::auth::{Caller, Right};
use crate::engine::{AcquireSpec, Engine, Target, WaitUpdate, clock::Clock};
use crate::proto::v1 as pb;
pub use error::ServiceError;
use metrics::Metrics;
pub use metrics::Rpc;

/// A server stream of API messages.
pub type ServiceStream<T> = Pin<Box<dyn Stream<Item = Result<T, ServiceError>> + Send>>;

/// Bounds on what one request may ask for. Each is a command-line flag.
#[derive(Clone, Copy, Debug)]
pub struct ServiceLimits {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Longest value (or candidate name), in bytes.
    pub max_value_bytes: usize,
    /// Longest ttl, in milliseconds.
    pub max_ttl_ms: u64,
    /// Open server streams (waits, watches, observes) at once.
    pub max_streams: usize,
    /// Longest lock-delay, in milliseconds (`--max-lock-delay-secs`).
    pub max_lock_delay_ms: u64,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 4096,
            max_value_bytes: 4096,
            max_ttl_ms: 365 * 24 * 3600 * 1000,
            max_streams: 100_000,
            max_lock_delay_ms: 60_000,
        }
    }
}

/// The largest page `List` returns.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// The page size when a `List` request gives none.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// The lock and election service over one engine.
#[derive(Clone)]
pub struct Service {
    engine: Arc<dyn Engine>,
    limits: ServiceLimits,
    streams: Arc<Semaphore>,
    shutdown: CancellationToken,
    /// Wall time for `remaining_ms` and monotonic time for the uptime: the
    /// engine's clock, so both agree with the deadlines it hands out.
    clock: Clock,
    started_at: tokio::time::Instant,
    metrics: Arc<Metrics>,
    /// Who is calling: every RPC asks it first (see [`crate::auth`]).
    caller: Caller,
    /// Waits are started with [`Engine::wait_confirmed`] (see
    /// [`Service::confirming`]).
    confirm_grants: bool,
}

impl Service {
    /// A service over `engine`, on the system clock (see
    /// [`with_clock`](Self::with_clock)). Cancelling `shutdown` ends every
    /// open stream with UNAVAILABLE.
    pub fn new(
        engine: Arc<dyn Engine>,
        limits: ServiceLimits,
        shutdown: CancellationToken,
    ) -> Self {
        let clock = Clock::system();
        Self {
            metrics: Arc::new(Metrics::new(engine.backend())),
            engine,
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            limits,
            shutdown,
            clock,
            started_at: clock.instant(),
            caller: Caller::Open,
            confirm_grants: false,
        }
    }

    /// The same service reading time from `clock`: give it the clock the
    /// engine's driver runs on, so the times it reports (`remaining_ms`)
    /// are the driver's.
    pub fn with_clock(self, clock: Clock) -> Self {
        Self {
            clock,
            started_at: clock.instant(),
            ..self
        }
    }

    /// Wall time now, in Unix milliseconds, by the service's clock.
    fn now_ms(&self) -> crate::engine::UnixMillis {
        self.clock.now_ms()
    }

    /// The same service acting for `caller`: the surfaces call this per
    /// request with the caller the transport authenticated. A service
    /// made by [`Service::new`] acts for [`Caller::Open`]; a server with
    /// `--auth-file` starts from [`Caller::Anonymous`], so a request that
    /// never had its credential looked at is refused, not let through.
    pub fn with_caller(&self, caller: Caller) -> Self {
        Self {
            caller,
            ..self.clone()
        }
    }

    /// Completes when the server starts shutting down. A transport that
    /// carries many calls on one long-lived stream (the primary's end of
    /// `Forward/Exchange`) ends it then, as the service ends its own
    /// streams.
    pub fn closing(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.shutdown.clone().cancelled_owned()
    }

    /// The same service, starting waits whose grant is heard only when the
    /// consumer of the stream asks for the item after it
    /// ([`Engine::wait_confirmed`]): for the primary's end of a forwarding
    /// stream, which asks only once the follower's client took the grant.
    pub fn confirming(&self) -> Self {
        Self {
            confirm_grants: true,
            ..self.clone()
        }
    }

    /// The caller this service acts for.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Refuses the call unless `decide` allows it; a refusal is logged
    /// (token name, RPC, key) and counted.
    fn allow(
        &self,
        rpc: Rpc,
        key: &str,
        decide: impl FnOnce(&Caller) -> Result<(), crate::auth::Refusal>,
    ) -> Result<(), ServiceError> {
        decide(&self.caller).map_err(|refusal| {
            let (service, method) = rpc.labels();
            tracing::warn!(
                target: "baton::audit",
                token = self.caller.name(),
                rpc = format!("{service}/{method}"),
                key,
                reason = refusal.reason(),
                why = %refusal,
                "refused"
            );
            self.metrics
                .refused(rpc, refusal.reason(), self.caller.known_name());
            ServiceError::from(refusal)
        })
    }

    /// Refuses the call unless the caller may use `right` on `key`.
    fn allow_key(&self, rpc: Rpc, right: Right, key: &str) -> Result<(), ServiceError> {
        self.allow(rpc, key, |c| c.check(right, key))
    }

    /// Refuses the call unless the caller may use `right` on some key under
    /// `prefix`; the answer is then filtered with [`Caller::may`].
    fn allow_prefix(&self, rpc: Rpc, right: Right, prefix: &str) -> Result<(), ServiceError> {
        self.allow(rpc, prefix, |c| c.check_prefix(right, prefix))
    }

    /// Refuses a caller whose credential is missing or unknown, whatever
    /// it asks for (used by `/mod/v2` before it reads the request, as etcd
    /// checked credentials first).
    pub fn authenticated(&self, rpc: Rpc, key: &str) -> Result<(), ServiceError> {
        self.allow(rpc, key, Caller::check_authenticated)
    }

    /// The backend's name (`embedded` or `etcd`).
    pub fn backend(&self) -> &'static str {
        self.engine.backend()
    }

    /// This process's part in its cluster (role, primary URL).
    pub fn cluster(&self) -> crate::engine::ClusterView {
        self.engine.cluster()
    }

    /// The engine's counts.
    pub async fn stats(&self) -> Result<crate::engine::EngineStats, ServiceError> {
        Ok(self.engine.stats().await?)
    }

    /// Whether the backend can serve now (see [`Engine::check`]).
    pub async fn health(&self) -> Result<(), ServiceError> {
        Ok(self.engine.check().await?)
    }

    /// How long the service has been up.
    pub fn uptime(&self) -> std::time::Duration {
        self.clock.instant() - self.started_at
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.limits.max_streams - self.streams.available_permits()
    }

    /// The metrics as OpenMetrics text (see [`metrics`]), with the engine's
    /// counts as of now.
    pub async fn metrics_text(&self) -> Result<String, ServiceError> {
        self.allow(Rpc::Metrics, "", |c| c.check_right(Right::Metrics))?;
        let stats = self.stats().await?;
        Ok(self.metrics.render(
            &stats,
            &self.engine.endpoints(),
            self.engine.journal_stats(),
            self.open_streams(),
            self.uptime(),
        ))
    }

    /// Runs one RPC's work and counts how it ended.
    async fn counted<T>(
        &self,
        rpc: Rpc,
        work: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        let result = work.await;
        self.metrics.call(rpc, &result);
        result
    }

    /// The limits in force.
    pub fn limits(&self) -> ServiceLimits {
        self.limits
    }

    /// `Wait` and `Campaign`, which differ only in how they name the steps:
    /// builds the request with `spec`, starts the wait, counts the call.
    async fn wait_as<E: Send + 'static>(
        &self,
        rpc: Rpc,
        spec: impl FnOnce() -> Result<AcquireSpec, ServiceError>,
        name: fn(WaitStep) -> E,
    ) -> Result<ServiceStream<E>, ServiceError> {
        self.counted(rpc, async {
            let steps = self.start_wait(spec()?).await?;
            let events: ServiceStream<E> = Box::pin(steps.map(move |step| step.map(name)));
            Ok(events)
        })
        .await
    }

    /// Starts a wait (a lock's or a campaign's) and streams its steps in API
    /// terms.
    async fn start_wait(&self, spec: AcquireSpec) -> Result<ServiceStream<WaitStep>, ServiceError> {
        let mut wait = self.metrics.wait_started();
        let started = async {
            let permit = self.stream_permit()?;
            let updates = if self.confirm_grants {
                self.engine.wait_confirmed(spec).await?
            } else {
                self.engine.wait(spec).await?
            };
            Ok((permit, updates))
        };
        let (permit, updates) = started.await.inspect_err(|e| wait.failed(e))?;
        let clock = self.clock;
        let steps = updates.map(move |u| {
            let u = u
                .map_err(ServiceError::from)
                .inspect_err(|e| wait.failed(e))?;
            if matches!(u, WaitUpdate::Acquired(_)) {
                wait.acquired();
            }
            Ok(match u {
                WaitUpdate::Queued {
                    index,
                    position,
                    holder,
                } => WaitStep::Queued(pb::Queued {
                    index,
                    position,
                    holder: holder.map(|h| convert::holder(&h, clock.now_ms())),
                }),
                WaitUpdate::Acquired(g) => WaitStep::Acquired(convert::acquired(&g)),
                WaitUpdate::Ended { index, reason } => {
                    WaitStep::Ended(convert::ended(index, reason))
                }
            })
        });
        Ok(self.guard(steps, permit))
    }

    /// Takes one stream slot, or fails with RESOURCE_EXHAUSTED.
    fn stream_permit(&self) -> Result<OwnedSemaphorePermit, ServiceError> {
        if self.shutdown.is_cancelled() {
            return Err(shutting_down());
        }
        self.streams.clone().try_acquire_owned().map_err(|_| {
            ServiceError::ResourceExhausted(format!(
                "too many open streams (at most {})",
                self.limits.max_streams
            ))
        })
    }

    /// Ties `stream` to its slot, to shutdown and to the caller's token: on
    /// shutdown the stream yields UNAVAILABLE and ends, when a reload
    /// removes or changes the token UNAUTHENTICATED; when it ends or is
    /// dropped, the slot is freed.
    fn guard<T: Send + 'static>(
        &self,
        stream: impl Stream<Item = Result<T, ServiceError>> + Send + 'static,
        permit: OwnedSemaphorePermit,
    ) -> ServiceStream<T> {
        // A token a reload removed or changed ends its streams too.
        let revoked = self.caller.revoked().map(|t| t.clone().cancelled_owned());
        Box::pin(guarded::Guarded::new(
            stream,
            permit,
            self.shutdown.clone().cancelled_owned(),
            revoked,
        ))
    }

    fn key(&self, what: &str, key: &str) -> Result<String, ServiceError> {
        if key.is_empty() {
            return Err(ServiceError::InvalidArgument(format!("{what} is required")));
        }
        if key.len() > self.limits.max_key_bytes {
            return Err(ServiceError::InvalidArgument(format!(
                "{what} is {} bytes, longer than the limit of {} bytes",
                key.len(),
                self.limits.max_key_bytes
            )));
        }
        Ok(key.to_owned())
    }

    fn value(&self, what: &str, value: &str) -> Result<Option<String>, ServiceError> {
        if value.len() > self.limits.max_value_bytes {
            return Err(ServiceError::InvalidArgument(format!(
                "{what} is {} bytes, longer than the limit of {} bytes",
                value.len(),
                self.limits.max_value_bytes
            )));
        }
        Ok((!value.is_empty()).then(|| value.to_owned()))
    }

    fn ttl(&self, ttl_ms: u64) -> Result<u64, ServiceError> {
        if ttl_ms > self.limits.max_ttl_ms {
            return Err(ServiceError::InvalidArgument(format!(
                "ttl of {ttl_ms} ms is longer than the limit of {} ms",
                self.limits.max_ttl_ms
            )));
        }
        Ok(ttl_ms)
    }

    fn lock_delay(&self, lock_delay_ms: u64) -> Result<u64, ServiceError> {
        if lock_delay_ms > self.limits.max_lock_delay_ms {
            return Err(ServiceError::InvalidArgument(format!(
                "lock_delay of {lock_delay_ms} ms is longer than the limit of {} ms (--max-lock-delay-secs)",
                self.limits.max_lock_delay_ms
            )));
        }
        Ok(lock_delay_ms)
    }

    fn target(&self, index: Option<u64>, value: Option<&str>) -> Result<Target, ServiceError> {
        match (index, value) {
            (Some(i), None) => Ok(Target::Index(i)),
            (None, Some(v)) if !v.is_empty() => {
                Ok(Target::Value(self.value("value", v)?.unwrap_or_default()))
            }
            (Some(_), Some(_)) => Err(ServiceError::InvalidArgument(
                "give either index or value, not both".into(),
            )),
            _ => Err(ServiceError::InvalidArgument(
                "index or value is required".into(),
            )),
        }
    }

    /// One page of the keys under `prefix` (locks and elections alike),
    /// and the token of the next page (empty after the last).
    async fn list_page(
        &self,
        prefix: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<crate::engine::KeySummary>, String), ServiceError> {
        let (size, mut after) = self.page(page_size, page_token);
        // Only keys the caller may read; pages of the engine are read
        // until one more than a page is found, or the keys run out.
        let mut keys = Vec::with_capacity(size + 1);
        loop {
            let batch = self.engine.list(prefix, after.as_deref(), size + 1).await?;
            let exhausted = batch.len() <= size;
            for k in batch {
                after = Some(k.key.clone());
                if self.caller.may(Right::Read, &k.key) {
                    keys.push(k);
                    if keys.len() > size {
                        break;
                    }
                }
            }
            if exhausted || keys.len() > size {
                break;
            }
        }
        let next_page_token = next_token(&mut keys, size, |k| &k.key);
        Ok((keys, next_page_token))
    }

    fn page(&self, page_size: u32, page_token: &str) -> (usize, Option<String>) {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = (!page_token.is_empty()).then(|| page_token.to_owned());
        (size as usize, after)
    }
}

/// One step of a wait, before it is named as a `WaitEvent` or a
/// `CampaignEvent`.
enum WaitStep {
    Queued(pb::Queued),
    Acquired(pb::Acquired),
    Ended(pb::Ended),
}

/// Cuts a page fetched with one extra item back to `size`, returning the
/// token for the next page (the last key) if there is one.
fn next_token<T>(items: &mut Vec<T>, size: usize, key: impl Fn(&T) -> &String) -> String {
    if items.len() > size {
        items.truncate(size);
        items.last().map(|i| key(i).clone()).unwrap_or_default()
    } else {
        String::new()
    }
}

fn shutting_down() -> ServiceError {
    ServiceError::Unavailable("the server is shutting down".into())
}
