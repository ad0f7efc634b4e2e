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

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    endpoints::{Call, Endpoints},
    error::EtcdError,
    journal::Fence,
};

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
    endpoints: Endpoints,
    key: String,
    ttl_secs: i64,
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
    /// A term that is valid until `deadline` unless `lost` is cancelled
    /// first, for tests of the code that checks terms.
    #[cfg(test)]
    pub(crate) fn new(lost: CancellationToken, deadline: Instant) -> Self {
        Self {
            lost,
            deadline: Arc::new(Mutex::new(deadline)),
        }
    }

    /// See [`Leadership::is_valid`].
    pub fn is_valid(&self) -> bool {
        !self.lost.is_cancelled() && Instant::now() < *lock(&self.deadline)
    }
}

fn lock(m: &Mutex<Instant>) -> std::sync::MutexGuard<'_, Instant> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Election {
    /// The election under `prefix`, with leases of `ttl_secs`, talking to
    /// etcd through `endpoints`.
    pub fn new(endpoints: Endpoints, prefix: &str, ttl_secs: u64) -> Self {
        Self {
            endpoints,
            key: format!("{prefix}primary"),
            ttl_secs: ttl_secs.max(1) as i64,
        }
    }

    /// The primary's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The primary now, if there is one, and the revision of the answer.
    pub async fn current(&self) -> Result<(Option<Primary>, i64), EtcdError> {
        // A read: safe to send again, on any member.
        let resp = self
            .endpoints
            .call(Call::safe(), |mut c| {
                let key = self.key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let primary = resp.kvs().first().map(|kv| Primary {
            url: String::from_utf8_lossy(kv.value()).into_owned(),
            term: kv.create_revision(),
        });
        Ok((primary, revision))
    }

    /// Waits until the primary's key changes after `revision` (deleted, or
    /// created by a new term), or `cancel`. The watch moves to another
    /// member if the one it is on goes, from the same revision, so no
    /// change is missed.
    pub async fn changed_after(
        &self,
        revision: i64,
        cancel: &CancellationToken,
    ) -> Result<(), EtcdError> {
        let mut watch = self
            .endpoints
            .watch(self.key.clone(), WatchOptions::new(), revision + 1);
        tokio::select! {
            () = cancel.cancelled() => Ok(()),
            events = watch.next() => events.map(|_| ()),
        }
    }

    /// Tries once to become primary with `url`. `None`: another gateway is
    /// primary (the caller watches and tries again when its key goes).
    pub async fn try_win(&self, url: &str) -> Result<Option<Leadership>, EtcdError> {
        // Sending a grant again after its answer was lost leaves a lease
        // nobody uses; nothing is attached to it and it lapses after its
        // ttl. So it is safe to retry.
        let (sent, granted) = self
            .endpoints
            .call(Call::safe(), |mut c| {
                let ttl = self.ttl_secs;
                async move {
                    // The lease may lapse from the moment etcd granted it:
                    // count from before this attempt was sent.
                    let sent = Instant::now();
                    Ok((sent, c.lease_grant(ttl, None).await?))
                }
            })
            .await?;
        let id = granted.id();
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
        // Safe to send again: if an earlier attempt created the key, this
        // one fails its compare and reads the key, which is then on our own
        // lease (a lease is one process's alone): we won, with that key's
        // create revision. Nothing is written twice.
        let resp = self
            .endpoints
            .call(Call::safe(), |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        let create_revision = if resp.succeeded() {
            resp.op_responses()
                .into_iter()
                .find_map(|r| match r {
                    TxnOpResponse::Put(p) => p.header().map(|h| h.revision()),
                    _ => None,
                })
                .or_else(|| resp.header().map(|h| h.revision()))
                .unwrap_or_default()
        } else {
            let ours = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .filter(|kv| kv.lease() == id)
                    .map(|kv| kv.create_revision()),
                _ => None,
            });
            match ours {
                Some(rev) => rev,
                None => {
                    self.revoke(id).await.ok();
                    return Ok(None);
                }
            }
        };
        let lost = CancellationToken::new();
        let ttl = Duration::from_secs(granted.ttl().max(1) as u64);
        let deadline = Arc::new(Mutex::new(sent + ttl));
        tokio::spawn(keep_alive(
            self.endpoints.clone(),
            id,
            ttl,
            deadline.clone(),
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

    /// Revokes `lease`. Safe to send again: a second revoke finds the lease
    /// gone, which is what was wanted.
    async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        match self
            .endpoints
            .call(
                Call::safe(),
                |mut c| async move { c.lease_revoke(lease).await },
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(EtcdError::Client(etcd_client::Error::GRpcStatus(s)))
                if s.code() == tonic::Code::NotFound =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Ends a term at once: the key goes with its lease, and another
    /// gateway may win without waiting for the lease to lapse.
    pub async fn resign(&self, leadership: &Leadership) {
        leadership.lost.cancel();
        if let Err(e) = self.revoke(leadership.lease).await {
            tracing::warn!(error = %e, "could not revoke the primary's lease; it lapses by itself");
        }
    }
}

/// Keeps the primary's lease alive until `lost` is cancelled, and cancels
/// `lost` as soon as the lease may have lapsed.
///
/// Each renewal is one keep-alive request and its answer, sent through
/// [`Endpoints`] like any other request: a member that is down or frozen
/// costs one short attempt (a quarter of the lease's ttl at most) and the
/// renewal goes on at another member, well before the lease may lapse.
/// Sending a keep-alive again is safe: it only moves the lease's expiry to
/// a full ttl after etcd handles it, and this process counts its deadline
/// from when it sent the attempt that was answered, so a late or repeated
/// one can only make etcd's expiry later than the one counted here.
async fn keep_alive(
    endpoints: Endpoints,
    lease: i64,
    ttl: Duration,
    shared: Arc<Mutex<Instant>>,
    lost: CancellationToken,
) {
    let mut deadline = *lock(&shared);
    let attempt = endpoints
        .attempt_timeout()
        .min((ttl / 4).max(Duration::from_millis(100)));
    loop {
        // Renew at a third of what is left, as etcd's own client does.
        let left = deadline.saturating_duration_since(Instant::now());
        let next = Instant::now() + left / 3;
        tokio::select! {
            () = lost.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        let renew = endpoints.call(
            Call {
                deadline: Some(deadline),
                attempt_timeout: Some(attempt),
                ..Call::safe()
            },
            |mut c| async move {
                let sent = Instant::now();
                // Opening the stream sends one keep-alive and reads its
                // answer (the crate checks it): the lease was renewed to
                // its full ttl, or it is gone.
                match c.lease_keep_alive(lease).await {
                    Ok(_) => Ok((sent, true)),
                    Err(etcd_client::Error::LeaseKeepAliveError(m))
                        if m.contains("lease not found") =>
                    {
                        Ok((sent, false))
                    }
                    Err(e) => Err(e),
                }
            },
        );
        let answer = tokio::select! {
            () = lost.cancelled() => return,
            a = renew => a,
        };
        match answer {
            Ok((sent, true)) => {
                deadline = sent + ttl;
                *lock(&shared) = deadline;
            }
            Ok(_) => {
                tracing::warn!(
                    lease,
                    "etcd says the primary's lease is gone; stepping down"
                );
                lost.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(lease, error = %e, "could not renew the primary's lease before it may have lapsed; stepping down");
                lost.cancel();
                return;
            }
        }
    }
}
