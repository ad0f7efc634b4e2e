//! What a lock guard and a leadership share: acquiring through a wait
//! stream, a background keeper that renews before the ttl runs out and
//! listens on the stream for the end of the hold, and giving the hold up.
//!
//! The keeper is one task per hold. It sleeps until the next renew (every
//! third of the ttl, sooner after a failed renew) and meanwhile reads the
//! wait stream, which the server ends with `ended` when the hold ends. The
//! hold counts as lost when the server says it ended, when a renew finds no
//! such entry, or when renewals keep failing until the deadline passes.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream::BoxStream};
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::connect::Stubs;
use super::{
    connect::{Client, Failure, Transport, fails_over},
    error::{ClientError, millis},
};
use crate::proto::v1::{
    self as pb, election_client::ElectionClient, lock_client::LockClient, release_request,
    renew_request,
};

/// How a hold was lost. After this the index is no longer a valid fencing
/// token, and whatever the hold guarded must stop.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lost {
    /// The server let it expire: its deadline passed without a renew.
    #[error("it expired")]
    Expired,
    /// Someone else released it (by index, value or name).
    #[error("it was released by someone else")]
    Released,
    /// A renew found no such entry: it expired or was released.
    #[error("the server no longer has it")]
    Gone,
    /// Renewals failed until its deadline passed; it has probably expired.
    #[error("it could not be renewed before its deadline: {0}")]
    RenewFailed(String),
}

/// One step of a wait stream, whether Lock.Wait or Election.Campaign.
#[derive(Debug)]
pub(crate) enum Step {
    /// In line behind the holder.
    Queued { index: u64, position: u64 },
    /// Held, with this index.
    Acquired { index: u64 },
    /// The hold ended for this reason (an `EndReason`).
    Ended { reason: i32 },
}

/// A wait stream reduced to its steps.
pub(crate) type Steps = BoxStream<'static, Result<Step, Status>>;

/// What to wait for.
pub(crate) struct Want {
    /// The lock's key or the election's name.
    pub key: String,
    pub ttl: Duration,
    pub timeout: Option<Duration>,
    /// The request has a value (or a candidate's name), so its entry may be
    /// shared with other requests of the same value.
    pub joinable: bool,
}

/// Covers the one window the server cannot: the caller drops the acquire
/// future after the server sent the grant but before it arrived. The server
/// counts a grant it sent as heard, so the hold would live until its ttl
/// (forever with ttl 0). On drop before the acquire returned, this releases
/// the entry by the index its `queued` step gave, best effort. A queued
/// entry is withdrawn by the server anyway, so the release then finds
/// nothing. An entry that others may share by value is left alone: its
/// release would end their requests too.
struct AbandonGuard {
    client: Client,
    key: String,
    index: Option<u64>,
    armed: bool,
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        let (true, Some(index)) = (self.armed, self.index) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (client, key) = (self.client.clone(), self.key.clone());
        runtime.spawn(async move {
            if let Err(e) = release(&client, &key, index).await {
                tracing::debug!(%key, index, error = %e, "release of an abandoned request failed");
            }
        });
    }
}

/// Waits until the request is granted, failing over to the next endpoint if
/// the current one becomes unavailable before the grant. `open` opens the
/// wait stream with the given timeout in milliseconds.
pub(crate) async fn acquire<F, Fut>(
    client: &Client,
    want: Want,
    mut open: F,
) -> Result<Hold, ClientError>
where
    F: FnMut(LockClient<Transport>, ElectionClient<Transport>, Option<u64>) -> Fut,
    Fut: Future<Output = Result<Steps, Status>>,
{
    // Validate before touching the network.
    millis("ttl", want.ttl)?;
    let timeout_ms = want.timeout.map(|t| millis("timeout", t)).transpose()?;
    let started = Instant::now();
    let mut failovers = 0;
    let mut abandon = AbandonGuard {
        client: client.clone(),
        key: want.key.clone(),
        index: None,
        armed: !want.joinable,
    };
    let outcome = loop {
        // What is left of the timeout after earlier attempts (0 stays 0).
        let left = match (want.timeout, timeout_ms) {
            (Some(t), Some(ms)) if ms > 0 => {
                let left = t.saturating_sub(started.elapsed());
                if left.is_zero() {
                    break Err(timeout_error(&want));
                }
                millis("timeout", left).map(Some)
            }
            (_, ms) => Ok(ms),
        };
        let left = match left {
            Ok(left) => left,
            Err(e) => break Err(e),
        };
        let steps = client
            .with_failover(|s| open(s.lock, s.election, left))
            .await
            .map_err(|f| match f {
                Failure::Status(s) => ClientError::from_wait_status(&s, &want.key, want.timeout),
                Failure::Unavailable(e) => e,
            });
        let mut steps = match steps {
            Ok(steps) => steps,
            Err(e) => break Err(e),
        };
        let attempt = loop {
            match steps.next().await {
                Some(Ok(Step::Queued { index, position })) => {
                    tracing::debug!(key = %want.key, index, position, "queued");
                    abandon.index = Some(index);
                }
                Some(Ok(Step::Acquired { index })) => {
                    tracing::debug!(key = %want.key, index, "acquired");
                    break Attempt::Granted(Hold::start(client.clone(), &want, index, steps));
                }
                Some(Ok(Step::Ended { .. })) => {
                    break Attempt::Failed(ClientError::Protocol(format!(
                        "the wait for {:?} ended before it was granted",
                        want.key
                    )));
                }
                Some(Err(s)) if fails_over(&s) => break Attempt::Broke(s),
                Some(Err(s)) => {
                    break Attempt::Failed(ClientError::from_wait_status(
                        &s,
                        &want.key,
                        want.timeout,
                    ));
                }
                None => {
                    break Attempt::Failed(ClientError::Protocol(format!(
                        "the wait for {:?} closed before it was granted",
                        want.key
                    )));
                }
            }
        };
        let broke = match attempt {
            Attempt::Granted(hold) => break Ok(hold),
            Attempt::Failed(e) => break Err(e),
            Attempt::Broke(status) => status,
        };
        // The entry on the endpoint that broke is that server's to clean up.
        abandon.index = None;
        failovers += 1;
        if failovers >= client.endpoint_count() {
            break Err(client.unavailable(broke.message().to_owned()));
        }
        tracing::warn!(key = %want.key, error = %broke.message(), "wait interrupted; trying the next endpoint");
    };
    // The caller hears the outcome: nothing is left to clean up for it.
    abandon.armed = false;
    outcome
}

/// How one attempt on one endpoint ended.
enum Attempt {
    Granted(Hold),
    /// Final: the caller hears this error.
    Failed(ClientError),
    /// The endpoint became unavailable: try the next.
    Broke(Status),
}

fn timeout_error(want: &Want) -> ClientError {
    ClientError::Timeout {
        key: want.key.clone(),
        timeout: want.timeout.unwrap_or_default(),
    }
}

/// A granted lock or leadership, kept alive by a background keeper until it
/// is released (explicitly or by drop) or lost.
#[derive(Debug)]
pub(crate) struct Hold {
    client: Client,
    key: String,
    index: u64,
    ttl: Duration,
    lost: watch::Receiver<Option<Lost>>,
    stop: CancellationToken,
    done: bool,
}

impl Hold {
    fn start(client: Client, want: &Want, index: u64, steps: Steps) -> Self {
        let (tx, rx) = watch::channel(None);
        let stop = CancellationToken::new();
        let keeper = Keeper {
            client: client.clone(),
            key: want.key.clone(),
            index,
            ttl: want.ttl,
            expires: Instant::now() + want.ttl,
            steps: Some(steps),
            lost: tx,
        };
        tokio::spawn(keeper.run(stop.clone()));
        Self {
            client,
            key: want.key.clone(),
            index,
            ttl: want.ttl,
            lost: rx,
            stop,
            done: false,
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn index(&self) -> u64 {
        self.index
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    pub(crate) fn is_lost(&self) -> Option<Lost> {
        self.lost.borrow().clone()
    }

    pub(crate) fn lost_watch(&self) -> watch::Receiver<Option<Lost>> {
        self.lost.clone()
    }

    pub(crate) fn lost(&self) -> impl Future<Output = Lost> + Send + 'static {
        let mut rx = self.lost.clone();
        async move {
            let lost = rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|l| l.clone());
            match lost {
                Some(l) => l,
                // The keeper stopped without a loss: the hold was given up.
                None => std::future::pending().await,
            }
        }
    }

    /// Stops the keeper without releasing: the hold lives on by its ttl,
    /// for whoever renews or releases it by index or value later.
    pub(crate) fn detach(mut self) -> u64 {
        self.done = true;
        self.stop.cancel();
        self.index
    }

    /// Stops the keeper and releases the entry by its index.
    pub(crate) async fn release(mut self) -> Result<(), ClientError> {
        self.done = true;
        self.stop.cancel();
        if let Some(lost) = self.is_lost() {
            return Err(ClientError::Lost(lost));
        }
        match release(&self.client, &self.key, self.index).await {
            Err(ClientError::NotFound(_)) => {
                Err(ClientError::Lost(self.is_lost().unwrap_or(Lost::Gone)))
            }
            other => other,
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.stop.cancel();
        if self.is_lost().is_some() {
            return;
        }
        // Best effort: without a runtime the hold simply expires by its ttl.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key = %self.key, index = self.index, "dropped outside a runtime; the hold lives until its ttl");
            return;
        };
        let (client, key, index) = (self.client.clone(), self.key.clone(), self.index);
        runtime.spawn(async move {
            if let Err(e) = release(&client, &key, index).await {
                tracing::debug!(%key, index, error = %e, "release on drop failed");
            }
        });
    }
}

/// Lock.Release by index (elections share the locks' namespace).
async fn release(client: &Client, key: &str, index: u64) -> Result<(), ClientError> {
    client
        .unary(|Stubs { mut lock, .. }| {
            let req = pb::ReleaseRequest {
                key: key.to_owned(),
                target: Some(release_request::Target::Index(index)),
            };
            async move { lock.release(req).await }
        })
        .await
        .map(|_| ())
}

/// The background task that keeps one hold alive.
struct Keeper {
    client: Client,
    key: String,
    index: u64,
    ttl: Duration,
    /// When the hold expires unless renewed, as far as we know.
    expires: Instant,
    /// The wait stream, while it is open.
    steps: Option<Steps>,
    lost: watch::Sender<Option<Lost>>,
}

impl Keeper {
    async fn run(mut self, stop: CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => {}
            lost = self.keep() => {
                tracing::info!(key = %self.key, index = self.index, reason = %lost, "hold lost");
                let _ = self.lost.send(Some(lost));
            }
        }
    }

    /// Renews and listens until the hold is lost.
    async fn keep(&mut self) -> Lost {
        // ttl 0 never expires: nothing to renew, only the stream to watch.
        let renews = !self.ttl.is_zero();
        let period = (self.ttl / 3).max(Duration::from_millis(10));
        let retry = (self.ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut next = tokio::time::Instant::now() + period;
        loop {
            tokio::select! {
                step = next_step(&mut self.steps) => {
                    if let Some(lost) = self.on_step(step) {
                        return lost;
                    }
                }
                _ = tokio::time::sleep_until(next), if renews => {
                    let sent = Instant::now();
                    let left = self.expires.saturating_duration_since(sent);
                    let renewed = tokio::time::timeout(left, self.renew()).await;
                    match renewed {
                        Ok(Ok(())) => {
                            self.expires = sent + self.ttl;
                            next = tokio::time::Instant::now() + period;
                        }
                        Ok(Err(ClientError::NotFound(_))) => return self.why_gone().await,
                        Ok(Err(e)) if Instant::now() < self.expires => {
                            tracing::warn!(key = %self.key, index = self.index, error = %e, "renew failed; retrying");
                            let until_expiry = self.expires.saturating_duration_since(Instant::now());
                            next = tokio::time::Instant::now() + retry.min(until_expiry);
                        }
                        Ok(Err(e)) => return Lost::RenewFailed(e.to_string()),
                        Err(_) => return Lost::RenewFailed("no answer before the deadline".into()),
                    }
                }
            }
        }
    }

    /// Handles one step of the wait stream after the grant.
    fn on_step(&mut self, step: Option<Result<Step, Status>>) -> Option<Lost> {
        match step {
            Some(Ok(Step::Ended { reason })) => Some(end_reason(reason)),
            Some(Ok(other)) => {
                tracing::debug!(key = %self.key, step = ?other, "unexpected step after the grant");
                None
            }
            Some(Err(s)) => {
                // The hold lives on by its ttl; renewals go on elsewhere.
                tracing::debug!(key = %self.key, error = %s, "wait stream broke; renewing without it");
                self.steps = None;
                None
            }
            None => {
                self.steps = None;
                None
            }
        }
    }

    /// After a renew found nothing: the stream usually says why at once.
    async fn why_gone(&mut self) -> Lost {
        if self.steps.is_some()
            && let Ok(step) =
                tokio::time::timeout(Duration::from_millis(500), next_step(&mut self.steps)).await
            && let Some(lost) = self.on_step(step)
        {
            return lost;
        }
        Lost::Gone
    }

    /// Lock.Renew by index (elections share the locks' namespace). The
    /// future owns what it needs, so the keeper need not be `Sync`.
    fn renew(&self) -> impl Future<Output = Result<(), ClientError>> + Send + 'static {
        let (client, key, index, ttl) =
            (self.client.clone(), self.key.clone(), self.index, self.ttl);
        async move {
            let ttl_ms = millis("ttl", ttl)?;
            client
                .unary(|Stubs { mut lock, .. }| {
                    let req = pb::RenewRequest {
                        key: key.clone(),
                        target: Some(renew_request::Target::Index(index)),
                        ttl_ms,
                    };
                    async move { lock.renew(req).await }
                })
                .await
                .map(|_| ())
        }
    }
}

/// The next step of the stream, or never if it is closed.
async fn next_step(steps: &mut Option<Steps>) -> Option<Result<Step, Status>> {
    match steps {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

fn end_reason(reason: i32) -> Lost {
    match pb::EndReason::try_from(reason) {
        Ok(pb::EndReason::Released) => Lost::Released,
        Ok(pb::EndReason::Expired) => Lost::Expired,
        _ => Lost::Gone,
    }
}
