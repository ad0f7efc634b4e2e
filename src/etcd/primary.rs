//! Electing the primary among the gateways, through etcd.
//!
//! The primary's key (`P primary` under `--etcd-prefix`) holds the winner's
//! advertised URL on a lease of `--etcd-primary-ttl-secs`. A gateway wins
//! by creating the key in a transaction that requires it to be absent, as
//! etcd's own election recipe does (`client/v3/concurrency/election.go`);
//! the create revision it gets is its [`Fence`]: every journal write
//! compares it, so a gateway that lost the key can never write again.
//!
//! The winner keeps its lease alive from a task of its own and counts its
//! lease as lost at the *earliest* moment etcd may have let it lapse: the
//! time it sent its last acknowledged keep-alive plus the lease's ttl. It
//! then stops serving at once ([`Leadership::lost`]), before any other
//! gateway can have won, so two primaries never serve at the same time.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_client::{
    Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{error::EtcdError, journal::Fence};

/// Who is primary now, as etcd says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Primary {
    /// Its advertised gRPC URL.
    pub url: String,
    /// The create revision of its key: tells one term from the next.
    pub term: i64,
}

/// The election of one cluster of gateways.
#[derive(Clone)]
pub struct Election {
    client: Client,
    key: String,
    ttl_secs: i64,
    timeout: Duration,
}

/// This gateway's term as primary.
#[derive(Debug)]
pub struct Leadership {
    /// The write guard of this term.
    pub fence: Fence,
    /// The lease the primary's key is on.
    pub lease: i64,
    /// Cancelled the moment the lease may have lapsed (or on resign).
    lost: CancellationToken,
    /// The earliest moment the lease may lapse, as far as this process
    /// knows (moved on by every acknowledged keep-alive).
    deadline: Arc<Mutex<Instant>>,
}

impl Leadership {
    /// Resolves when this term is over: the lease may have lapsed, or
    /// [`resign`](Election::resign) was called.
    pub async fn lost(&self) {
        self.lost.cancelled().await;
    }

    /// Whether the term is over.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Whether this process may still act as primary right now: the term
    /// is not over and its lease cannot have lapsed yet. Read from the
    /// clock, not from the keep-alive task, so a process that was frozen
    /// (SIGSTOP, a long pause) knows at once on waking that its term may be
    /// over, whichever of its tasks runs first.
    pub fn is_valid(&self) -> bool {
        !self.is_lost() && Instant::now() < *lock(&self.deadline)
    }

    /// A cheap handle for [`is_valid`](Self::is_valid), for the code that
    /// routes calls.
    pub fn validity(&self) -> Validity {
        Validity {
            lost: self.lost.clone(),
            deadline: self.deadline.clone(),
        }
    }
}

/// See [`Leadership::validity`].
#[derive(Clone, Debug)]
pub struct Validity {
    lost: CancellationToken,
    deadline: Arc<Mutex<Instant>>,
}

impl Validity {
    /// See [`Leadership::is_valid`].
    pub fn is_valid(&self) -> bool {
        !self.lost.is_cancelled() && Instant::now() < *lock(&self.deadline)
    }
}

fn lock(m: &Mutex<Instant>) -> std::sync::MutexGuard<'_, Instant> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Election {
    /// The election under `prefix`, with leases of `ttl_secs`.
    pub fn new(client: Client, prefix: &str, ttl_secs: u64, timeout: Duration) -> Self {
        Self {
            client,
            key: format!("{prefix}primary"),
            ttl_secs: ttl_secs.max(1) as i64,
            timeout,
        }
    }

    /// The primary's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    async fn timed<T>(
        &self,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        Ok(tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| EtcdError::Timeout(self.timeout))??)
    }

    /// The primary now, if there is one, and the revision of the answer.
    pub async fn current(&self) -> Result<(Option<Primary>, i64), EtcdError> {
        let mut kv = self.client.kv_client();
        let resp = self.timed(kv.get(self.key.clone(), None)).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let primary = resp.kvs().first().map(|kv| Primary {
            url: String::from_utf8_lossy(kv.value()).into_owned(),
            term: kv.create_revision(),
        });
        Ok((primary, revision))
    }

    /// Waits until the primary's key changes after `revision` (deleted, or
    /// created by a new term), or `cancel`.
    pub async fn changed_after(
        &self,
        revision: i64,
        cancel: &CancellationToken,
    ) -> Result<(), EtcdError> {
        let mut watch = self.client.watch_client();
        let mut stream = self
            .timed(watch.watch(
                self.key.clone(),
                Some(WatchOptions::new().with_start_revision(revision + 1)),
            ))
            .await?;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                msg = stream.message() => match msg? {
                    Some(resp) if resp.canceled() => {
                        return Err(EtcdError::WatchLost(resp.cancel_reason().to_owned()));
                    }
                    Some(resp) if !resp.events().is_empty() => return Ok(()),
                    Some(_) => {}
                    None => return Err(EtcdError::WatchLost("the watch stream closed".into())),
                },
            }
        }
    }

    /// Tries once to become primary with `url`. `None`: another gateway is
    /// primary (the caller watches and tries again when its key goes).
    pub async fn try_win(&self, url: &str) -> Result<Option<Leadership>, EtcdError> {
        let mut lease = self.client.lease_client();
        let granted = self.timed(lease.grant(self.ttl_secs, None)).await?;
        // The lease may lapse from the moment etcd granted it: count from
        // before the request was sent.
        let sent = Instant::now();
        let id = granted.id();
        let mut kv = self.client.kv_client();
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                self.key.clone(),
                url,
                Some(PutOptions::new().with_lease(id)),
            )])
            .or_else([TxnOp::get(self.key.clone(), None)]);
        let resp = self.timed(kv.txn(txn)).await?;
        if !resp.succeeded() {
            let _ = self.timed(lease.revoke(id)).await;
            return Ok(None);
        }
        let create_revision = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Put(p) => p.header().map(|h| h.revision()),
                _ => None,
            })
            .or_else(|| resp.header().map(|h| h.revision()))
            .unwrap_or_default();
        let lost = CancellationToken::new();
        let deadline = Arc::new(Mutex::new(
            sent + Duration::from_secs(granted.ttl().max(1) as u64),
        ));
        tokio::spawn(keep_alive(
            self.client.clone(),
            id,
            deadline.clone(),
            self.timeout,
            lost.clone(),
        ));
        tracing::info!(key = %self.key, %url, term = create_revision, "elected primary");
        Ok(Some(Leadership {
            fence: Fence {
                key: self.key.clone(),
                create_revision,
            },
            lease: id,
            lost,
            deadline,
        }))
    }

    /// Ends a term at once: the key goes with its lease, and another
    /// gateway may win without waiting for the lease to lapse.
    pub async fn resign(&self, leadership: &Leadership) {
        leadership.lost.cancel();
        let mut lease = self.client.lease_client();
        if let Err(e) = self.timed(lease.revoke(leadership.lease)).await {
            tracing::warn!(error = %e, "could not revoke the primary's lease; it lapses by itself");
        }
    }
}

/// Keeps the primary's lease alive until `lost` is cancelled, and cancels
/// `lost` as soon as the lease may have lapsed.
async fn keep_alive(
    client: Client,
    lease: i64,
    shared: Arc<Mutex<Instant>>,
    timeout: Duration,
    lost: CancellationToken,
) {
    let mut deadline = *lock(&shared);
    let mut leases = client.lease_client();
    let opened = tokio::time::timeout(timeout, leases.keep_alive(lease)).await;
    let (mut keeper, mut stream) = match opened {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot keep the primary's lease alive");
            lost.cancel();
            return;
        }
        Err(_) => {
            tracing::warn!("cannot keep the primary's lease alive: etcd did not answer");
            lost.cancel();
            return;
        }
    };
    loop {
        // Renew at a third of what is left, as etcd's own client does.
        let left = deadline.saturating_duration_since(Instant::now());
        let next = Instant::now() + left / 3;
        tokio::select! {
            () = lost.cancelled() => return,
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!(lease, "the primary's lease may have lapsed; stepping down");
                lost.cancel();
                return;
            }
            () = tokio::time::sleep_until(next) => {}
        }
        let sent = Instant::now();
        if keeper.keep_alive().await.is_err() {
            continue;
        }
        let answer = tokio::select! {
            () = lost.cancelled() => return,
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!(lease, "the primary's lease may have lapsed; stepping down");
                lost.cancel();
                return;
            }
            answer = stream.message() => answer,
        };
        match answer {
            Ok(Some(resp)) if resp.ttl() > 0 => {
                deadline = sent + Duration::from_secs(resp.ttl() as u64);
                *lock(&shared) = deadline;
            }
            Ok(Some(_)) => {
                tracing::warn!(
                    lease,
                    "etcd says the primary's lease is gone; stepping down"
                );
                lost.cancel();
                return;
            }
            Ok(None) | Err(_) => {
                // The stream broke: try to open another until the deadline.
                match tokio::time::timeout(
                    deadline.saturating_duration_since(Instant::now()),
                    leases.keep_alive(lease),
                )
                .await
                {
                    Ok(Ok(pair)) => (keeper, stream) = pair,
                    _ => {
                        tracing::warn!(lease, "lost the primary's lease keep-alive; stepping down");
                        lost.cancel();
                        return;
                    }
                }
            }
        }
    }
}
