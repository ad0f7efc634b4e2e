//! [`EtcdEngine`]: the [`Engine`] contract on etcd, so that several baton
//! processes can serve one etcd cluster as stateless gateways.
//!
//! How each rule of the contract (DESIGN.md) maps onto etcd:
//!
//! - **entry, index, FIFO**: an entry is a key under its lock's prefix
//!   ([`keys`]); its index is the key's create revision, which
//!   etcd makes strictly increasing across all keys, never reused, and
//!   durable, so fencing tokens hold across gateways, restarts and
//!   fail-over. The queue is the lock's entries in create-revision order.
//! - **value joins**: an entry with a value has the key `e/v<value>`,
//!   created only if absent (`create_revision == 0` in the transaction), so
//!   two gateways racing with one value end up on one entry; every request
//!   joined to it learns of the grant from the same key write.
//! - **holder**: the head entry, once its record says held. It is written
//!   held by the acquire itself (free lock, checked in the transaction), by
//!   the release that removes its predecessor (in the same transaction, when
//!   the releasing gateway tracks the next entry), or by the next entry's
//!   own gateway when it sees its predecessor go (checking in the
//!   transaction that nothing older is left). Never two holders.
//! - **ttl**: the gateway that grants or renews a hold expires it at the
//!   deadline it announced ([`expiry`](super::expiry)); the hold's key also
//!   hangs on a lease at least a second longer than the ttl, shared with
//!   other holds of that ttl ([`leases`](super::leases)), which ends it if
//!   no gateway is left to. ttl 0 = no lease, no expiry.
//! - **waiting**: queued entries hang on the session lease of a gateway
//!   whose requests wait on them, kept alive while that gateway lives
//!   ([`session`](super::session)); each gateway with requests waiting on
//!   an entry has a registration key, so the last request leaving
//!   (anywhere) removes the entry, and a killed gateway's entries go with
//!   its lease, never granted. Waiters watch only their predecessor.
//! - **timeouts, renew, release, re-acquire**: as the embedded backend, in
//!   compare-and-swap transactions ([`ops`](super::ops)); a hold this
//!   gateway wrote is released or renewed in one write.
//! - **events**: etcd watches, translated by [`events`](super::events).
//! - **lost etcd**: requests fail with UNAVAILABLE, queued requests fail
//!   rather than being granted, and the gateway reconnects by itself.
//!
//! Remaining differences from the embedded backend:
//!
//! - A hold whose granting (or last renewing) gateway died or restarted
//!   ends by its lease: at least a second late, at most about two seconds
//!   plus the lease window (`ttl/60`, 1 s to 1 h) late.
//! - When a hold ends by its lease, or the next entry is on another gateway,
//!   the removal and the new holder are two etcd revisions; watchers get
//!   the removal held back (up to a second) and reported with the new
//!   holder, so `Observe` goes leader to leader, but a little later than the
//!   removal itself (see [`events`](super::events)).
//! - A joined entry lives on the lease of one gateway with requests on it
//!   (handed to another when that gateway's requests leave); if that
//!   gateway dies, the requests on other gateways fail with UNAVAILABLE.
//! - A request that goes away just as its entry is granted leaves a hold
//!   that lives by its ttl, as in the embedded backend, but the window is a
//!   round trip to etcd rather than an instant.
//! - When the etcd session is lost, every queued request on the gateway
//!   fails (UNAVAILABLE), even if etcd comes back before the session lease
//!   would have run out; the entries go when the gateway revokes that lease
//!   on reconnecting.
//! - Counts: [`QueuedView::waiters`](crate::engine::QueuedView) counts the
//!   gateways with requests on an entry, not the requests;
//!   [`EngineStats::waiters`] counts this gateway's open wait streams only.
//!   `--max-entries` and `--max-entries-per-key` are not enforced (etcd's
//!   own quotas apply); `--max-waiters` applies per gateway.
//! - `list` and `stats` read the whole range under the prefix (escaped
//!   names do not sort like names), so they cost as much as there are
//!   entries.

use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::{
    config::EtcdConfig,
    error::EtcdError,
    events::{Mirror, Smoother},
    expiry::Expirer,
    hub::Hub,
    keys::{self, Keys},
    ops::{Ctx, MAX_RACES, TrackerHandle, first_entries, not_acquired, not_found, range, revision},
    record::{Entry, EntryRecord, Reason},
    session::Connector,
    waiter::{
        CountGuard, DetachGuard, LocalWaiter, Notice, Then, TrackerCommand, TrackerInit,
        spawn_tracker, wait_stream,
    },
};
use crate::engine::{
    AcquireSpec, Engine, EngineError, EngineStats, EventStream, Grant, KeySummary, KeyView,
    Release, Renewal, Target, WaitStream, WaitUpdate,
};

/// The etcd backend's handle; cheap to share.
#[derive(Clone)]
pub struct EtcdEngine {
    ctx: Arc<Ctx>,
}

impl EtcdEngine {
    /// Checks `config` and starts connecting in the background; requests
    /// made before etcd answers wait for it up to the request timeout.
    pub fn start(config: &EtcdConfig) -> Result<Self, EtcdError> {
        let conn = Connector::start(config)?;
        let hub = Hub::start(conn.clone(), config.watch_buffer);
        let (expirer, task) = Expirer::new();
        let ctx = Arc::new(Ctx::new(
            Keys::new(&config.prefix),
            conn,
            hub,
            expirer,
            config.max_waiters,
        ));
        task.start(Arc::downgrade(&ctx), ctx.clock);
        Ok(Self { ctx })
    }

    /// One attempt at queueing; `None` when it lost a race and should be
    /// tried again.
    async fn try_wait(
        &self,
        spec: &AcquireSpec,
        timeout_at: Option<tokio::time::Instant>,
    ) -> Result<Option<WaitStream>, EngineError> {
        let ctx = &self.ctx;
        let session = ctx.session().await?;
        if ctx.waiters.load(std::sync::atomic::Ordering::Relaxed) >= ctx.max_waiters {
            return Err(EngineError::LimitReached(format!(
                "too many waiting requests (at most {})",
                ctx.max_waiters
            )));
        }
        let lock = spec.key.as_str();
        let entry_id = match &spec.value {
            Some(v) => keys::value_entry_id(v),
            None => keys::anonymous_entry_id(&ctx.gateway, ctx.next_id()),
        };
        let key = ctx.keys.entry(lock, &entry_id);
        let reg_key = ctx.keys.registration(
            lock,
            &entry_id,
            &format!("{}-{}", ctx.gateway, ctx.next_id()),
        );
        let now = ctx.now();
        // Granted at once if the lock is free: that hold needs its lease in
        // the same transaction (a shared one, usually at hand already).
        let lease = ctx.hold_lease(spec.ttl_ms).await?;
        let queued = EntryRecord::queued(spec.value.clone(), spec.ttl_ms, now);
        let held = queued.held_at(now);
        let entries = ctx.keys.entries(lock);
        let entries_end = keys::prefix_end(entries.as_bytes());
        let queue_up = if spec.timeout_ms == Some(0) {
            Vec::new()
        } else {
            vec![
                TxnOp::put(
                    key.clone(),
                    queued.to_bytes(),
                    Some(PutOptions::new().with_lease(session.lease)),
                ),
                TxnOp::put(
                    reg_key.clone(),
                    ctx.gateway.clone(),
                    Some(PutOptions::new().with_lease(session.lease)),
                ),
            ]
        };
        let if_free = Txn::new()
            .when([
                Compare::create_revision(entries.clone(), CompareOp::Equal, 0)
                    .with_range(entries_end),
            ])
            .and_then([TxnOp::put(
                key.clone(),
                held.to_bytes(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else(queue_up);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::get(entries.clone(), Some(first_entries(1))),
                TxnOp::get(
                    entries.clone(),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                ),
                TxnOp::txn(if_free),
            ])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = match ctx.txn(txn).await {
            Ok(r) => r,
            Err(e) => {
                if e.is_lease_not_found() {
                    // A cached lease or the session lease ran out under us:
                    // forget them, and check the link.
                    ctx.lease_gone().await;
                }
                return Err(e.into());
            }
        };
        let rev = revision(&resp);
        let ops = resp.op_responses();
        let count = CountGuard::new(ctx);
        if resp.succeeded() {
            // Something was written: nothing below may fail before its
            // tracker or stream owns it.
            let head = range(&ops, 0)
                .ok()
                .and_then(|r| r.kvs().first().and_then(|kv| Entry::from_kv(kv).ok()));
            let position = range(&ops, 1).map_or(0, |r| r.count() as u64);
            let free =
                matches!(ops.get(2), Some(etcd_client::TxnOpResponse::Txn(t)) if t.succeeded());
            let index = rev as u64;
            if free {
                if let Some(deadline) = held.deadline() {
                    ctx.expirer.schedule(lock, &key, index, rev, deadline);
                }
                ctx.remember_hold(
                    lock,
                    &Entry {
                        key: key.clone(),
                        index,
                        mod_rev: rev,
                        lease,
                        rec: held.clone(),
                    },
                );
                let grant = Grant {
                    index,
                    ttl_ms: spec.ttl_ms,
                    deadline: held.deadline(),
                };
                return Ok(Some(wait_stream(
                    ctx.clone(),
                    lock.to_owned(),
                    key,
                    index,
                    WaitUpdate::Acquired(grant),
                    Then::Held { rev },
                    count,
                )));
            }
            if spec.timeout_ms == Some(0) {
                return Err(not_acquired(head.map_or(0, |h| h.index)));
            }
            let (waiter, rx) = self.new_waiter(timeout_at);
            let waiter_id = waiter.id;
            let handle = spawn_tracker(
                ctx,
                TrackerInit {
                    lock: lock.to_owned(),
                    key: key.clone(),
                    entry_id,
                    index,
                    mod_rev: rev,
                    rec: queued,
                    reg_key,
                    epoch: session.epoch,
                    waiter,
                },
            );
            let first = WaitUpdate::Queued {
                index,
                position,
                holder: head.and_then(|h| h.holder_view()),
            };
            return Ok(Some(self.queued_stream(
                lock, key, index, first, waiter_id, rx, handle, count,
            )));
        }

        // An entry with this value exists: re-acquire or join it.
        let Some(existing) = range(&ops, 0)?
            .kvs()
            .first()
            .map(Entry::from_kv)
            .transpose()?
        else {
            return Ok(None);
        };
        if existing.is_held() {
            // The holder's value again: renew with this request's ttl and
            // answer at once with the holder's index.
            let Some((renewal, rev)) = ctx
                .renew_entry(lock, &existing, spec.ttl_ms, Some(lease))
                .await?
            else {
                return Ok(None);
            };
            let grant = Grant {
                index: existing.index,
                ttl_ms: spec.ttl_ms,
                deadline: renewal.deadline,
            };
            return Ok(Some(wait_stream(
                ctx.clone(),
                lock.to_owned(),
                key,
                existing.index,
                WaitUpdate::Acquired(grant),
                Then::Held { rev },
                count,
            )));
        }
        if spec.timeout_ms == Some(0) {
            let head = ctx.head(lock).await?;
            return Err(not_acquired(head.map_or(0, |h| h.index)));
        }
        self.join(spec, existing, entry_id, reg_key, timeout_at, count)
            .await
    }

    /// Joins the queued entry `existing` (same value): the newest request's
    /// ttl becomes the entry's, and the request waits with the others.
    #[allow(clippy::too_many_arguments)]
    async fn join(
        &self,
        spec: &AcquireSpec,
        existing: Entry,
        entry_id: String,
        reg_key: String,
        timeout_at: Option<tokio::time::Instant>,
        count: CountGuard,
    ) -> Result<Option<WaitStream>, EngineError> {
        let ctx = &self.ctx;
        let lock = spec.key.as_str();
        let session = ctx.session().await?;
        let local = ctx
            .trackers
            .lock()
            .ok()
            .and_then(|m| m.get(&existing.key).cloned())
            .filter(|h| h.index == existing.index);
        let rec = existing.rec.renewed(spec.ttl_ms, ctx.now());
        let mut then = vec![TxnOp::put(
            existing.key.clone(),
            rec.to_bytes(),
            Some(PutOptions::new().with_ignore_lease()),
        )];
        if local.is_none() {
            then.push(TxnOp::put(
                reg_key.clone(),
                ctx.gateway.clone(),
                Some(PutOptions::new().with_lease(session.lease)),
            ));
        }
        let entries = ctx.keys.entries(lock);
        then.push(TxnOp::get(entries.clone(), Some(first_entries(1))));
        then.push(TxnOp::get(
            entries,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_count_only()
                    .with_max_create_revision(existing.index as i64 - 1),
            ),
        ));
        let txn = Txn::new()
            .when([Compare::mod_revision(
                existing.key.clone(),
                CompareOp::Equal,
                existing.mod_rev,
            )])
            .and_then(then);
        let resp = ctx.txn(txn).await?;
        if !resp.succeeded() {
            return Ok(None);
        }
        let rev = revision(&resp);
        let ops = resp.op_responses();
        let n = ops.len();
        // Written: nothing below may fail before a tracker owns it.
        let head = range(&ops, n.saturating_sub(2))
            .ok()
            .and_then(|r| r.kvs().first().and_then(|kv| Entry::from_kv(kv).ok()));
        let position = range(&ops, n.saturating_sub(1)).map_or(0, |r| r.count() as u64);
        let first = WaitUpdate::Queued {
            index: existing.index,
            position,
            holder: head.and_then(|h| h.holder_view()),
        };
        let (waiter, rx) = self.new_waiter(timeout_at);
        let waiter_id = waiter.id;
        let tracker = match local {
            Some(handle) => {
                let (ack, acked) = oneshot::channel();
                if handle
                    .commands
                    .send(TrackerCommand::Attach { waiter, ack })
                    .is_err()
                    || acked.await.is_err()
                {
                    // The tracker ended meanwhile (granted or withdrawn):
                    // look again.
                    return Ok(None);
                }
                handle
            }
            None => spawn_tracker(
                ctx,
                TrackerInit {
                    lock: lock.to_owned(),
                    key: existing.key.clone(),
                    entry_id,
                    index: existing.index,
                    mod_rev: rev,
                    rec,
                    reg_key,
                    epoch: session.epoch,
                    waiter,
                },
            ),
        };
        Ok(Some(self.queued_stream(
            lock,
            existing.key,
            existing.index,
            first,
            waiter_id,
            rx,
            tracker,
            count,
        )))
    }

    fn new_waiter(
        &self,
        timeout_at: Option<tokio::time::Instant>,
    ) -> (LocalWaiter, mpsc::UnboundedReceiver<Notice>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            LocalWaiter {
                id: self.ctx.next_id(),
                tx,
                timeout_at,
            },
            rx,
        )
    }

    /// The stream of a queued request `waiter` of `tracker`.
    #[allow(clippy::too_many_arguments)]
    fn queued_stream(
        &self,
        lock: &str,
        key: String,
        index: u64,
        first: WaitUpdate,
        waiter: u64,
        rx: mpsc::UnboundedReceiver<Notice>,
        tracker: TrackerHandle,
        count: CountGuard,
    ) -> WaitStream {
        wait_stream(
            self.ctx.clone(),
            lock.to_owned(),
            key,
            index,
            first,
            Then::Queued {
                rx,
                guard: DetachGuard { waiter, tracker },
            },
            count,
        )
    }

    /// Reads everything of the locks under `range_key` (a prefix) at one
    /// revision.
    async fn load(&self, range_key: String) -> Result<(Mirror, i64), EtcdError> {
        let resp = self
            .ctx
            .get(range_key, GetOptions::new().with_prefix())
            .await?;
        let mut mirror = Mirror::default();
        mirror.load(&self.ctx.keys, resp.kvs());
        Ok((mirror, resp.header().map_or(0, |h| h.revision())))
    }
}

#[async_trait]
impl Engine for EtcdEngine {
    async fn wait(&self, spec: AcquireSpec) -> Result<WaitStream, EngineError> {
        let timeout_at = spec
            .timeout_ms
            .map(|t| tokio::time::Instant::now() + std::time::Duration::from_millis(t));
        for _ in 0..MAX_RACES {
            if let Some(stream) = self.try_wait(&spec, timeout_at).await? {
                return Ok(stream);
            }
        }
        Err(
            EtcdError::Contention("the lock changed too often to queue for; try again".into())
                .into(),
        )
    }

    async fn renew(&self, key: &str, target: Target, ttl_ms: u64) -> Result<Renewal, EngineError> {
        self.ctx.renew(key, &target, ttl_ms).await
    }

    async fn release(&self, key: &str, target: Target) -> Result<Release, EngineError> {
        match self
            .ctx
            .remove(key, &target, Reason::Released, None)
            .await?
        {
            Some(r) => Ok(r),
            None => Err(not_found(&target)),
        }
    }

    async fn get(&self, key: &str) -> Result<KeyView, EngineError> {
        let (mirror, _) = self.load(self.ctx.keys.lock(key)).await?;
        Ok(mirror.view(key))
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeySummary>, EngineError> {
        // Escaped names do not sort like names, so the page is cut from the
        // whole range, sorted by name.
        let (mirror, _) = self.load(self.ctx.keys.locks_with_prefix(prefix)).await?;
        Ok(mirror.summaries(after, limit))
    }

    async fn watch(&self, key: &str, prefix: bool) -> Result<EventStream, EngineError> {
        let range_key = if prefix {
            self.ctx.keys.locks_with_prefix(key)
        } else {
            self.ctx.keys.lock(key)
        };
        self.ctx.session().await?;
        // Watch, then read: every change after the read is seen, and the
        // ones the read already shows are skipped.
        let end = keys::prefix_end(range_key.as_bytes());
        let mut sub = self
            .ctx
            .hub
            .subscribe(range_key.clone().into_bytes(), Some(end));
        sub.created().await?;
        let (mirror, rev) = self.load(range_key).await?;
        let ctx = self.ctx.clone();
        let state = WatchState {
            ctx,
            mirror,
            sub,
            smoother: Smoother::default(),
            error: None,
            done: false,
        };
        let stream = futures::stream::unfold(state, move |mut st| async move {
            loop {
                if let Some(ev) = st.smoother.pop() {
                    return Some((Ok(ev), st));
                }
                if let Some(e) = st.error.take() {
                    return Some((Err(e), st));
                }
                if st.done {
                    return None;
                }
                let deadline = st.smoother.deadline();
                tokio::select! {
                    item = st.sub.next() => match item {
                        Ok(mut changes) => {
                            changes.retain(|c| c.mod_rev > rev);
                            let now = st.ctx.now();
                            for (lock, evs) in st.mirror.apply_by_lock(&st.ctx.keys, &changes, now) {
                                st.smoother.push(&st.mirror, lock, evs);
                            }
                        }
                        Err(e) => {
                            st.error = Some(match e {
                                EtcdError::Lagged => EngineError::from(e),
                                e => EngineError::Unavailable(e.to_string()),
                            });
                            // What was held back goes out before the error.
                            st.smoother.flush(true);
                            st.done = true;
                        }
                    },
                    () = sleep_until(deadline) => st.smoother.flush(false),
                }
            }
        });
        Ok(Box::pin(stream.fuse()))
    }

    async fn stats(&self) -> Result<EngineStats, EngineError> {
        let resp = self
            .ctx
            .get(
                self.ctx.keys.all(),
                GetOptions::new().with_prefix().with_keys_only(),
            )
            .await?;
        let mut locks = std::collections::HashSet::new();
        let mut entries = 0;
        for kv in resp.kvs() {
            if let Some(keys::KeyKind::Entry { lock }) = self.ctx.keys.parse(kv.key()) {
                entries += 1;
                locks.insert(lock);
            }
        }
        Ok(EngineStats {
            keys: locks.len() as u64,
            entries,
            waiters: self.ctx.waiters.load(std::sync::atomic::Ordering::Relaxed) as u64,
        })
    }

    async fn check(&self) -> Result<(), EngineError> {
        // The session's keep-alive already proves etcd answers; a range
        // scan (what `stats` does) per probe would cost etcd for nothing.
        self.ctx
            .session()
            .await
            .map(|_| ())
            .map_err(EngineError::from)
    }

    async fn shutdown(&self) {
        // Queued entries and registrations hang on the session lease (holds
        // never do): revoking it withdraws this gateway's waiters now, not
        // `--etcd-queue-lease-secs` later, so other gateways' waiters are
        // not kept behind entries nobody waits on.
        if let Some(session) = self.ctx.conn.current() {
            let mut leases = session.client.lease_client();
            let timeout = self.ctx.conn.timeout();
            match tokio::time::timeout(timeout, leases.revoke(session.lease)).await {
                Ok(Ok(_)) => tracing::info!("revoked the etcd session lease"),
                Ok(Err(e)) => tracing::warn!(error = %e, "could not revoke the etcd session lease"),
                Err(_) => tracing::warn!("etcd did not answer the session lease revoke in time"),
            }
        }
    }

    fn backend(&self) -> &'static str {
        "etcd"
    }
}

/// The state of one `watch` stream.
struct WatchState {
    ctx: Arc<Ctx>,
    mirror: Mirror,
    sub: super::hub::Subscription,
    smoother: Smoother,
    error: Option<EngineError>,
    done: bool,
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
