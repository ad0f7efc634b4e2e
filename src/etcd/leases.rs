//! Leases for holds, shared by the holds of one ttl granted close together.
//!
//! A hold's lease is only its backstop: the gateway that grants or renews a
//! hold expires it at its deadline itself ([`expiry`](super::expiry)); the
//! lease ends it when no gateway is left to. So a lease need not be exact,
//! only never shorter than the ttl, and one lease can carry every hold of
//! the same ttl (in whole seconds) that this gateway grants within a short
//! *window*: granted with `ttl + 1 s + window`, it outlives each of them by
//! at least a second. That takes the lease grant (an etcd write) off nearly
//! every acquire and makes release a single write, as in etcd's own lock.
//!
//! Shared leases are never revoked while a hold may use them: releasing or
//! renewing a hold moves its key off the lease, and the lease runs out by
//! itself. Long ones (ttl over a minute) are revoked early once their
//! window has closed and no key is left on them (checked with
//! `LeaseTimeToLive`); no key can join a lease after its window.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::{sync::Mutex, time::Instant};

use super::{error::EtcdError, session::Connector};

/// The shortest window; etcd leases count whole seconds anyway.
const MIN_WINDOW: Duration = Duration::from_secs(1);
/// The longest window, for very long ttls.
const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// Leases at most this long just run out; longer ones are revoked once
/// unused.
const REVOKE_ABOVE_SECS: i64 = 60;
/// How often unused long leases are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
struct Window {
    id: i64,
    /// Keys may be put on it until then.
    open_until: Instant,
    epoch: u64,
}

#[derive(Clone, Copy)]
struct Closed {
    id: i64,
    recheck_at: Instant,
}

/// The pool of shared hold leases of one gateway.
pub struct HoldLeases {
    conn: Arc<Connector>,
    open: Mutex<HashMap<i64, Window>>,
    closed: Mutex<Vec<Closed>>,
}

impl HoldLeases {
    /// An empty pool; its sweeper runs while the pool lives.
    pub fn new(conn: Arc<Connector>) -> Arc<Self> {
        let pool = Arc::new(Self {
            conn,
            open: Mutex::new(HashMap::new()),
            closed: Mutex::new(Vec::new()),
        });
        tokio::spawn(sweep(Arc::downgrade(&pool)));
        pool
    }

    /// A lease a hold of `ttl_ms` granted now may hang on; 0 for ttl 0.
    pub async fn lease_for(&self, ttl_ms: u64) -> Result<i64, EtcdError> {
        if ttl_ms == 0 {
            return Ok(0);
        }
        let ttl_secs = ttl_ms.div_ceil(1000).min(i64::MAX as u64 / 4) as i64;
        let window = Duration::from_millis(ttl_ms / 60).clamp(MIN_WINDOW, MAX_WINDOW);
        let session = self.conn.session().await?;
        let mut open = self.open.lock().await;
        let now = Instant::now();
        if let Some(w) = open.get(&ttl_secs)
            && w.open_until > now
            && w.epoch == session.epoch
        {
            return Ok(w.id);
        }
        // The lease counts from when etcd grants it, after `now`: a hold put
        // on it before `now + window` ends on it no sooner than a second
        // after its ttl.
        let lease_secs = ttl_secs + 1 + window.as_secs() as i64;
        let timeout = self.conn.timeout();
        let mut leases = session.client.lease_client();
        let resp = tokio::time::timeout(timeout, leases.grant(lease_secs, None))
            .await
            .map_err(|_| EtcdError::Timeout(timeout))??;
        let fresh = Window {
            id: resp.id(),
            open_until: now + window,
            epoch: session.epoch,
        };
        if let Some(old) = open.insert(ttl_secs, fresh)
            && ttl_secs + 1 > REVOKE_ABOVE_SECS
        {
            self.closed.lock().await.push(Closed {
                id: old.id,
                recheck_at: now,
            });
        }
        Ok(fresh.id)
    }

    /// Forgets every open lease (etcd said one is gone): the next hold gets
    /// a fresh one.
    pub async fn reset(&self) {
        self.open.lock().await.clear();
    }
}

/// Revokes long leases whose window closed and that carry no key any more.
async fn sweep(pool: Weak<HoldLeases>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        // Windows that closed become candidates.
        {
            let mut open = pool.open.lock().await;
            let mut closed = pool.closed.lock().await;
            open.retain(|&ttl_secs, w| {
                let keep = w.open_until > now;
                if !keep && ttl_secs + 1 > REVOKE_ABOVE_SECS {
                    closed.push(Closed {
                        id: w.id,
                        recheck_at: now,
                    });
                }
                keep
            });
        }
        let Some(session) = pool.conn.current() else {
            continue;
        };
        let due: Vec<Closed> = {
            let mut closed = pool.closed.lock().await;
            let (due, later) = closed.drain(..).partition(|c| c.recheck_at <= now);
            *closed = later;
            due
        };
        let timeout = pool.conn.timeout();
        for c in due {
            let mut leases = session.client.lease_client();
            let ttl = tokio::time::timeout(
                timeout,
                leases.time_to_live(
                    c.id,
                    Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
                ),
            )
            .await;
            match ttl {
                Ok(Ok(r)) if r.ttl() <= 0 => {} // gone already
                Ok(Ok(r)) if r.keys().is_empty() => {
                    let _ = tokio::time::timeout(timeout, leases.revoke(c.id)).await;
                }
                // Still carrying a hold, or etcd did not answer: look again
                // later.
                _ => pool.closed.lock().await.push(Closed {
                    id: c.id,
                    recheck_at: now + Duration::from_secs(300),
                }),
            }
        }
    }
}
