//! Waiting on etcd: the tracker of a queued entry, and the stream a waiting
//! client reads.
//!
//! A gateway runs one *tracker* per queued entry it has waiting requests on
//! (several requests share it when they joined by value). The tracker:
//!
//! - watches its **predecessor** (the entry created just before it) and its
//!   own key, never the whole queue, so a release wakes one tracker, not all
//!   of them (no thundering herd);
//! - when it has no predecessor, makes its entry the holder: it puts the key
//!   again with the hold's record on a fresh lease for the entry's ttl, in a
//!   transaction that checks nothing older is left in the queue; the create
//!   revision, i.e. the index, stays. (Usually the releasing gateway already
//!   did this in the release transaction, and the tracker just sees its own
//!   key become held.)
//! - applies timeouts, and when its last waiting request goes (timeout,
//!   disconnect) withdraws the entry, unless requests on other gateways
//!   still wait on it (their registrations), in which case it only removes
//!   its own registration and, if the entry hangs on this gateway's session
//!   lease, moves it onto theirs;
//! - fails its requests with UNAVAILABLE when the etcd session is lost, and
//!   with ABORTED when someone releases the queued entry.
//!
//! The wait stream then turns the grant into `Acquired`, and while the
//! client keeps listening watches the held key to report `Ended` (released
//! or expired, from the tombstone written with the delete).

use std::{sync::Arc, time::Duration};

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{
    error::EtcdError,
    hub::Change,
    keys,
    ops::{Ctx, MAX_RACES, Seen, TrackerHandle, range, revision},
    record::{Entry, EntryRecord, Reason, Tombstone},
    session::Link,
};
use crate::engine::{EndReason, EngineError, Grant, WaitStream, WaitUpdate};

/// A request waiting on a queued entry of this gateway.
pub struct LocalWaiter {
    /// Unique within the gateway.
    pub id: u64,
    /// Where its news go.
    pub tx: mpsc::UnboundedSender<Notice>,
    /// When it gives up, if it has a timeout.
    pub timeout_at: Option<Instant>,
}

/// News for a waiting request.
pub enum Notice {
    /// Its entry holds the lock, as of revision `rev`.
    Granted {
        /// What to tell the client.
        grant: Grant,
        /// The revision at which it was seen held.
        rev: i64,
    },
    /// It failed before acquiring.
    Failed(EngineError),
}

/// What a tracker is asked to do.
pub enum TrackerCommand {
    /// Another request of this gateway joined the entry; `ack` answers once
    /// it is attached (dropped unanswered if the tracker already ended).
    Attach {
        /// The request.
        waiter: LocalWaiter,
        /// Acknowledges the attachment.
        ack: oneshot::Sender<()>,
    },
    /// A request went away (its stream was dropped).
    Detach(u64),
}

/// What a new tracker starts from: the entry as this gateway just wrote it.
pub struct TrackerInit {
    /// The lock's name.
    pub lock: String,
    /// The entry's key.
    pub key: String,
    /// The entry's id within the lock.
    pub entry_id: String,
    /// The entry's index.
    pub index: u64,
    /// The entry's mod revision as written.
    pub mod_rev: i64,
    /// The entry's record as written.
    pub rec: EntryRecord,
    /// This gateway's registration on the entry.
    pub reg_key: String,
    /// The session epoch the registration was written under.
    pub epoch: u64,
    /// The first waiting request.
    pub waiter: LocalWaiter,
}

/// Starts a tracker and makes it the one joins on this gateway find.
pub fn spawn_tracker(ctx: &Arc<Ctx>, init: TrackerInit) -> TrackerHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(std::sync::Mutex::new(Seen {
        mod_rev: init.mod_rev,
        rec: init.rec.clone(),
        pred: None,
        leaving: false,
        waiting: std::collections::HashSet::from([init.waiter.id]),
    }));
    let handle = TrackerHandle {
        id: ctx.next_id(),
        index: init.index,
        reg_key: init.reg_key.clone(),
        seen: seen.clone(),
        commands: tx,
    };
    if let Ok(mut map) = ctx.trackers.lock() {
        map.insert(init.key.clone(), handle.clone());
    }
    let tracker = Tracker {
        ctx: ctx.clone(),
        id: handle.id,
        lock: init.lock,
        key: init.key,
        entry_id: init.entry_id,
        index: init.index,
        mod_rev: init.mod_rev,
        rec: init.rec,
        reg_key: init.reg_key,
        seen,
        epoch: init.epoch,
        waiters: vec![init.waiter],
        commands: rx,
    };
    tokio::spawn(tracker.run());
    handle
}

struct Tracker {
    ctx: Arc<Ctx>,
    id: u64,
    lock: String,
    key: String,
    entry_id: String,
    index: u64,
    mod_rev: i64,
    rec: EntryRecord,
    reg_key: String,
    seen: Arc<std::sync::Mutex<Seen>>,
    epoch: u64,
    waiters: Vec<LocalWaiter>,
    commands: mpsc::UnboundedReceiver<TrackerCommand>,
}

/// Consecutive watch failures a tracker rides out (re-reading the queue
/// each time) before it gives up on etcd.
const MAX_WATCH_FAILURES: u32 = 10;

impl Tracker {
    async fn run(mut self) {
        self.track().await;
        if let Ok(mut map) = self.ctx.trackers.lock()
            && map.get(&self.key).is_some_and(|h| h.id == self.id)
        {
            map.remove(&self.key);
        }
        // Joins that raced with the end are not acknowledged: they retry.
        self.commands.close();
        while self.commands.try_recv().is_ok() {}
    }

    async fn track(&mut self) {
        let mut link = self.ctx.conn.link();
        let mut watch_failures = 0;
        'outer: loop {
            if self.waiters.is_empty() {
                self.leave(Vec::new()).await;
                return;
            }
            let (own, pred, rev) = match self.read().await {
                Ok(s) => s,
                Err(e) => return self.fail_and_clean_up(e),
            };
            let own = match own {
                Some(o) if o.index == self.index => o,
                _ => return self.gone().await,
            };
            if own.is_held() {
                return self.grant_all(&own, rev);
            }
            self.saw(own.mod_rev, own.rec);
            self.saw_pred(pred.as_ref());
            let Some(pred) = pred else {
                if !self.seen.lock().is_ok_and(|s| s.wanted()) {
                    // Its requests are going: do not take the lock for
                    // nobody.
                    self.waiters.clear();
                    self.leave(Vec::new()).await;
                    return;
                }
                match self.promote().await {
                    Ok(Some((held, rev))) => return self.grant_all(&held, rev),
                    Ok(None) => continue 'outer,
                    Err(e) => return self.fail_and_clean_up(e),
                }
            };
            let hub = &self.ctx.hub;
            let mut pred_sub = hub.subscribe(pred.key.clone().into_bytes(), None);
            let mut own_sub = hub.subscribe(self.key.clone().into_bytes(), None);
            let watched_from = match (pred_sub.created().await, own_sub.created().await) {
                (Ok(a), Ok(b)) => a.max(b),
                (Err(e), _) | (_, Err(e)) => {
                    watch_failures += 1;
                    if watch_failures > MAX_WATCH_FAILURES {
                        return self.fail_and_clean_up(e);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue 'outer;
                }
            };
            if watched_from > rev {
                // Something was written between the read and the watches:
                // read again now that they are in place.
                match self.read().await {
                    Ok((Some(o), Some(p), _))
                        if o.index == self.index
                            && o.mod_rev == self.mod_rev
                            && p.key == pred.key
                            && p.index == pred.index => {}
                    Ok(_) => continue 'outer,
                    Err(e) => return self.fail_and_clean_up(e),
                }
            }
            loop {
                let next_timeout = self.waiters.iter().filter_map(|w| w.timeout_at).min();
                tokio::select! {
                    cmd = self.commands.recv() => match cmd {
                        Some(TrackerCommand::Attach { waiter, ack }) => {
                            if ack.send(()).is_ok() {
                                if let Ok(mut seen) = self.seen.lock() {
                                    seen.waiting.insert(waiter.id);
                                }
                                self.waiters.push(waiter);
                            }
                        }
                        Some(TrackerCommand::Detach(id)) => {
                            self.waiters.retain(|w| w.id != id);
                            if self.waiters.is_empty() {
                                self.leave(Vec::new()).await;
                                return;
                            }
                        }
                        None => {
                            self.waiters.clear();
                            self.leave(Vec::new()).await;
                            return;
                        }
                    },
                    () = sleep_until(next_timeout) => {
                        let now = Instant::now();
                        let (expired, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
                            .into_iter()
                            .partition(|w| w.timeout_at.is_some_and(|t| t <= now));
                        self.waiters = keep;
                        if let Ok(mut seen) = self.seen.lock() {
                            for w in &expired {
                                seen.waiting.remove(&w.id);
                            }
                        }
                        if self.waiters.is_empty() {
                            self.leave(expired).await;
                            return;
                        }
                        for w in expired {
                            let _ = w.tx.send(Notice::Failed(EngineError::TimedOut));
                        }
                    }
                    item = pred_sub.next() => match item {
                        Ok(changes) => {
                            watch_failures = 0;
                            if changes.iter().any(|c| c.deleted) {
                                continue 'outer;
                            }
                        }
                        Err(e) => {
                            watch_failures += 1;
                            if watch_failures > MAX_WATCH_FAILURES {
                                return self.fail_and_clean_up(e);
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue 'outer;
                        }
                    },
                    item = own_sub.next() => match item {
                        Ok(changes) => {
                            watch_failures = 0;
                            for c in changes {
                                if c.deleted || c.create_rev as u64 != self.index {
                                    return self.gone().await;
                                }
                                let held = match entry_of(&c) {
                                    Ok(e) => e,
                                    Err(e) => return self.fail_and_clean_up(e),
                                };
                                if held.is_held() {
                                    return self.grant_all(&held, c.mod_rev);
                                }
                                self.saw(held.mod_rev, held.rec);
                            }
                        }
                        Err(e) => {
                            watch_failures += 1;
                            if watch_failures > MAX_WATCH_FAILURES {
                                return self.fail_and_clean_up(e);
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue 'outer;
                        }
                    },
                    changed = link.changed() => {
                        let same = changed.is_ok()
                            && matches!(&*link.borrow(), Link::Up(s) if s.epoch == self.epoch);
                        if !same {
                            // The entry hangs on the lost session's lease,
                            // which the gateway revokes once etcd is back.
                            self.fail_all(|| EngineError::Unavailable(
                                "lost the connection to etcd; the queued request was withdrawn".into(),
                            ));
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Takes note of the entry's latest state, for this tracker and for
    /// releases that may hand the lock to it.
    fn saw(&mut self, mod_rev: i64, rec: EntryRecord) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.mod_rev = mod_rev;
            seen.rec = rec.clone();
        }
        self.mod_rev = mod_rev;
        self.rec = rec;
    }

    /// Takes note of the entry's predecessor as last read.
    fn saw_pred(&self, pred: Option<&Entry>) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.pred = pred.map(|p| (p.key.clone(), p.index));
        }
    }

    /// The entry and its predecessor, at one revision.
    async fn read(&self) -> Result<(Option<Entry>, Option<Entry>, i64), EtcdError> {
        let before = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(self.index as i64 - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(1);
        let txn = Txn::new().and_then([
            TxnOp::get(self.key.clone(), None),
            TxnOp::get(self.ctx.keys.entries(&self.lock), Some(before)),
        ]);
        let resp = self.ctx.txn(txn).await?;
        let ops = resp.op_responses();
        let own = range(&ops, 0)?
            .kvs()
            .first()
            .map(Entry::from_kv)
            .transpose()?;
        let pred = range(&ops, 1)?
            .kvs()
            .first()
            .map(Entry::from_kv)
            .transpose()?;
        Ok((own, pred, revision(&resp)))
    }

    /// Makes the entry the holder if nothing older is left in the queue.
    /// `None` if the queue or the entry changed meanwhile.
    async fn promote(&mut self) -> Result<Option<(Entry, i64)>, EtcdError> {
        let ctx = &self.ctx;
        let lease = ctx.hold_lease(self.rec.ttl_ms).await?;
        let rec = self.rec.held_at(ctx.now());
        let entries = ctx.keys.entries(&self.lock);
        let entries_end = keys::prefix_end(entries.as_bytes());
        let txn = Txn::new()
            .when([
                Compare::mod_revision(self.key.clone(), CompareOp::Equal, self.mod_rev),
                Compare::create_revision(entries, CompareOp::Greater, self.index as i64 - 1)
                    .with_range(entries_end),
            ])
            .and_then([
                TxnOp::put(
                    self.key.clone(),
                    rec.to_bytes(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::delete(
                    ctx.keys.registrations(&self.lock, &self.entry_id),
                    Some(DeleteOptions::new().with_prefix()),
                ),
            ]);
        let resp = match ctx.txn(txn).await {
            Ok(r) => r,
            Err(e) => {
                if e.is_lease_not_found() {
                    ctx.lease_gone().await;
                }
                return Err(e);
            }
        };
        if !resp.succeeded() {
            return Ok(None);
        }
        let rev = revision(&resp);
        if let Some(deadline) = rec.deadline() {
            ctx.expirer
                .schedule(&self.lock, &self.key, self.index, rev, deadline);
        }
        Ok(Some((
            Entry {
                key: self.key.clone(),
                index: self.index,
                mod_rev: rev,
                lease,
                rec,
            },
            rev,
        )))
    }

    /// Tells every waiting request it acquired.
    fn grant_all(&mut self, held: &Entry, rev: i64) {
        self.ctx.remember_hold(&self.lock, held);
        let grant = grant_of(held);
        let mut told = 0;
        for w in self.waiters.drain(..) {
            if w.tx.send(Notice::Granted { grant, rev }).is_ok() {
                told += 1;
            }
        }
        if told == 0 {
            // Every request here went in the moment before: the hold lives
            // by its ttl, as any hold whose client went away.
            tracing::debug!(key = %self.key, index = self.index, "acquired as its requests went away");
        }
    }

    fn fail_all(&mut self, err: impl Fn() -> EngineError) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.leaving = true;
        }
        for w in self.waiters.drain(..) {
            let _ = w.tx.send(Notice::Failed(err()));
        }
    }

    /// etcd failed under the tracker: its requests fail with UNAVAILABLE
    /// and the entry is withdrawn as soon as etcd answers again.
    fn fail_and_clean_up(&mut self, e: EtcdError) {
        tracing::warn!(key = %self.key, error = %e, "a queued request lost etcd");
        let msg = format!("lost etcd while queued: {e}");
        self.fail_all(|| EngineError::Unavailable(msg.clone()));
        clean_up_later(self.ctx.clone(), self.withdrawal());
    }

    /// The entry is gone: released by someone (ABORTED), or lost with the
    /// lease of the gateway it hung on (UNAVAILABLE).
    async fn gone(&mut self) {
        let reason = tombstone(&self.ctx, &self.lock, self.index).await;
        let index = self.index;
        match reason {
            Ok(Some(Reason::Released)) => {
                self.fail_all(|| EngineError::ReleasedWhileQueued(index));
            }
            Ok(_) => self.fail_all(|| {
                EngineError::Unavailable(
                    "the queued entry was lost (the gateway keeping it alive went away); retry"
                        .into(),
                )
            }),
            Err(e) => {
                let msg = format!("lost etcd while queued: {e}");
                self.fail_all(|| EngineError::Unavailable(msg.clone()));
            }
        }
    }

    /// The last waiting request went; `timed_out` are the ones that went by
    /// timing out, told after the entry is gone.
    async fn leave(&mut self, timed_out: Vec<LocalWaiter>) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.leaving = true;
        }
        match withdraw(&self.ctx, &self.withdrawal()).await {
            Ok(Withdrawn::Held(held, rev)) => {
                // The entry acquired just before they gave up: it is theirs.
                if timed_out.is_empty() {
                    tracing::warn!(key = %self.key, index = self.index, "acquired as its last request went away; the hold lives by its ttl");
                }
                let grant = grant_of(&held);
                for w in timed_out {
                    let _ = w.tx.send(Notice::Granted { grant, rev });
                }
            }
            Ok(_) => {
                for w in timed_out {
                    let _ = w.tx.send(Notice::Failed(EngineError::TimedOut));
                }
            }
            Err(e) => {
                tracing::warn!(key = %self.key, error = %e, "could not withdraw a queued entry; retrying in the background");
                for w in timed_out {
                    let _ = w.tx.send(Notice::Failed(EngineError::TimedOut));
                }
                clean_up_later(self.ctx.clone(), self.withdrawal());
            }
        }
    }

    fn withdrawal(&self) -> Withdrawal {
        Withdrawal {
            lock: self.lock.clone(),
            key: self.key.clone(),
            entry_id: self.entry_id.clone(),
            index: self.index,
            reg_key: self.reg_key.clone(),
            epoch: self.epoch,
        }
    }
}

/// A grant as clients see it.
pub fn grant_of(held: &Entry) -> Grant {
    Grant {
        index: held.index,
        ttl_ms: held.rec.ttl_ms,
        deadline: held.rec.deadline(),
    }
}

fn entry_of(c: &Change) -> Result<Entry, EtcdError> {
    let key = String::from_utf8_lossy(&c.key).into_owned();
    let rec = serde_json::from_slice(&c.value).map_err(|e| EtcdError::Corrupt {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    Ok(Entry {
        key,
        index: c.create_rev as u64,
        mod_rev: c.mod_rev,
        lease: 0,
        rec,
    })
}

/// Why entry `index` of `lock` was removed: known here if this gateway
/// removed it, else from its tombstone; `None` when there is none (it went
/// with its lease).
pub async fn tombstone(ctx: &Ctx, lock: &str, index: u64) -> Result<Option<Reason>, EtcdError> {
    if let Some(reason) = ctx.removed_here(index) {
        return Ok(Some(reason));
    }
    let resp = ctx
        .get(ctx.keys.tombstone(lock, index), GetOptions::new())
        .await?;
    Ok(resp
        .kvs()
        .first()
        .and_then(|kv| Tombstone::parse(kv.value())))
}

/// What withdrawing one gateway's interest in a queued entry needs.
#[derive(Clone)]
pub struct Withdrawal {
    lock: String,
    key: String,
    entry_id: String,
    index: u64,
    reg_key: String,
    epoch: u64,
}

/// How a withdrawal ended.
pub enum Withdrawn {
    /// The entry was removed (this gateway's requests were its last).
    Removed,
    /// Requests on other gateways still wait on it; only this gateway's
    /// registration went.
    Detached,
    /// It was already gone.
    Gone,
    /// It had acquired the lock meanwhile (at that revision).
    Held(Entry, i64),
}

/// Withdraws this gateway's interest in a queued entry (see the module
/// docs).
async fn withdraw(ctx: &Ctx, w: &Withdrawal) -> Result<Withdrawn, EtcdError> {
    let regs = ctx.keys.registrations(&w.lock, &w.entry_id);
    let regs_end = keys::prefix_end(regs.as_bytes());
    let index = w.index as i64;
    for _ in 0..MAX_RACES {
        let txn = Txn::new().and_then([
            TxnOp::get(w.key.clone(), None),
            TxnOp::get(regs.clone(), Some(GetOptions::new().with_prefix())),
        ]);
        let resp = ctx.txn(txn).await?;
        let rev = revision(&resp);
        let ops = resp.op_responses();
        let own = range(&ops, 0)?
            .kvs()
            .first()
            .map(Entry::from_kv)
            .transpose()?;
        let Some(own) = own.filter(|o| o.index == w.index) else {
            return Ok(Withdrawn::Gone);
        };
        if own.is_held() {
            return Ok(Withdrawn::Held(own, rev));
        }
        let others: Vec<_> = range(&ops, 1)?
            .kvs()
            .iter()
            .filter(|kv| kv.key() != w.reg_key.as_bytes() && kv.create_revision() >= index)
            .collect();
        let unchanged = Compare::mod_revision(w.key.clone(), CompareOp::Equal, own.mod_rev);
        let txn = match others.first() {
            None => {
                let session = ctx.session().await?;
                let tomb = session.tomb_lease(ctx.conn.timeout()).await?;
                Txn::new()
                    .when([
                        unchanged,
                        Compare::create_revision(regs.clone(), CompareOp::Less, index)
                            .with_range(w.reg_key.clone()),
                        Compare::create_revision(
                            keys::key_after(w.reg_key.as_bytes()),
                            CompareOp::Less,
                            index,
                        )
                        .with_range(regs_end.clone()),
                    ])
                    .and_then([
                        TxnOp::delete(w.key.clone(), None),
                        TxnOp::delete(regs.clone(), Some(DeleteOptions::new().with_prefix())),
                        TxnOp::put(
                            ctx.keys.tombstone(&w.lock, w.index),
                            Tombstone {
                                reason: Reason::Cancelled,
                            }
                            .to_bytes(),
                            Some(PutOptions::new().with_lease(tomb)),
                        ),
                    ])
            }
            Some(other) => {
                let mut then = vec![TxnOp::delete(w.reg_key.clone(), None)];
                let ours = ctx.conn.current().is_some_and(|s| s.lease == own.lease);
                if ours && other.lease() != 0 {
                    // Hand the entry to a gateway that still waits on it.
                    then.push(TxnOp::put(
                        w.key.clone(),
                        Vec::new(),
                        Some(
                            PutOptions::new()
                                .with_ignore_value()
                                .with_lease(other.lease()),
                        ),
                    ));
                }
                Txn::new()
                    .when([
                        unchanged,
                        Compare::create_revision(
                            other.key().to_vec(),
                            CompareOp::Equal,
                            other.create_revision(),
                        ),
                    ])
                    .and_then(then)
            }
        };
        match ctx.txn(txn).await {
            Ok(r) if r.succeeded() => {
                if others.is_empty() {
                    ctx.note_removed(w.index, Reason::Cancelled);
                    return Ok(Withdrawn::Removed);
                }
                return Ok(Withdrawn::Detached);
            }
            Ok(_) => continue,
            Err(e) if e.is_lease_not_found() => {
                ctx.lease_gone().await;
                continue;
            }
            Err(e) => return Err(e),
        }
    }
    Err(EtcdError::Contention(
        "the lock changed too often to withdraw from; try again".into(),
    ))
}

/// Retries a withdrawal in the background until etcd answers, for a minute;
/// if the session is lost meanwhile its lease takes the entry with it.
fn clean_up_later(ctx: Arc<Ctx>, w: Withdrawal) {
    tokio::spawn(async move {
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match ctx.conn.current() {
                Some(s) if s.epoch == w.epoch => {}
                // A new session: the old lease is revoked, and the entry and
                // registration with it.
                _ => return,
            }
            match withdraw(&ctx, &w).await {
                Ok(Withdrawn::Held(held, _)) => {
                    // Acquired while nobody was there to hear it; it lives
                    // by its ttl, as any hold whose client went away.
                    tracing::warn!(key = %held.key, index = held.index, "a queued entry acquired after its requests failed; it lives by its ttl");
                    return;
                }
                Ok(_) => return,
                Err(_) => continue,
            }
        }
    });
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Withdraws a request from its tracker when its stream is dropped.
pub struct DetachGuard {
    /// The request.
    pub waiter: u64,
    /// Its tracker.
    pub tracker: TrackerHandle,
}

impl Drop for DetachGuard {
    fn drop(&mut self) {
        // At once, so that no release hands the lock to an entry nobody
        // waits on any more while the tracker catches up.
        if let Ok(mut seen) = self.tracker.seen.lock() {
            seen.waiting.remove(&self.waiter);
        }
        let _ = self
            .tracker
            .commands
            .send(TrackerCommand::Detach(self.waiter));
    }
}

/// Counts an open wait stream for the gateway's stats and limit.
pub struct CountGuard(Arc<Ctx>);

impl CountGuard {
    /// Counts one more stream (the limit is checked before queueing).
    pub fn new(ctx: &Arc<Ctx>) -> Self {
        ctx.waiters
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(ctx.clone())
    }
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.0
            .waiters
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Where a wait stream is after its first update.
pub enum Then {
    /// Queued: news come from the tracker.
    Queued {
        /// The news.
        rx: mpsc::UnboundedReceiver<Notice>,
        /// Detaches the request when the stream is dropped.
        guard: DetachGuard,
    },
    /// Holding since revision `rev`: listen for the end of the hold.
    Held {
        /// The revision the hold was seen at.
        rev: i64,
    },
}

enum Phase {
    Queued {
        rx: mpsc::UnboundedReceiver<Notice>,
        _guard: DetachGuard,
    },
    Held {
        from_rev: i64,
    },
    Listening {
        sub: super::hub::Subscription,
    },
    Done,
}

struct StreamState {
    ctx: Arc<Ctx>,
    lock: String,
    key: String,
    index: u64,
    first: Option<WaitUpdate>,
    phase: Phase,
    _count: CountGuard,
}

/// The stream a waiting client reads: `first`, then what `then` brings.
pub fn wait_stream(
    ctx: Arc<Ctx>,
    lock: String,
    key: String,
    index: u64,
    first: WaitUpdate,
    then: Then,
    count: CountGuard,
) -> WaitStream {
    let phase = match then {
        Then::Queued { rx, guard } => Phase::Queued { rx, _guard: guard },
        Then::Held { rev } => Phase::Held { from_rev: rev + 1 },
    };
    let state = StreamState {
        ctx,
        lock,
        key,
        index,
        first: Some(first),
        phase,
        _count: count,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        if let Some(first) = st.first.take() {
            return Some((Ok(first), st));
        }
        let item = st.step().await?;
        Some((item, st))
    }))
}

impl StreamState {
    async fn step(&mut self) -> Option<Result<WaitUpdate, EngineError>> {
        loop {
            match &mut self.phase {
                Phase::Done => return None,
                Phase::Queued { rx, .. } => {
                    let notice = rx.recv().await;
                    return Some(match notice {
                        Some(Notice::Granted { grant, rev }) => {
                            self.phase = Phase::Held { from_rev: rev + 1 };
                            Ok(WaitUpdate::Acquired(grant))
                        }
                        Some(Notice::Failed(e)) => {
                            self.phase = Phase::Done;
                            Err(e)
                        }
                        None => {
                            self.phase = Phase::Done;
                            Err(EngineError::Unavailable(
                                "the gateway stopped tracking this request".into(),
                            ))
                        }
                    });
                }
                Phase::Held { from_rev } => {
                    let from_rev = *from_rev;
                    let mut sub = self.ctx.hub.subscribe(self.key.clone().into_bytes(), None);
                    let watched_from = match sub.created().await {
                        Ok(r) => r,
                        Err(e) => return Some(self.lost(e)),
                    };
                    if watched_from >= from_rev {
                        // Written since the grant: is the hold still there?
                        match self.ctx.get(self.key.clone(), GetOptions::new()).await {
                            Ok(resp) => {
                                let alive = resp
                                    .kvs()
                                    .first()
                                    .is_some_and(|kv| kv.create_revision() as u64 == self.index);
                                if !alive {
                                    self.phase = Phase::Done;
                                    return Some(self.ended().await);
                                }
                            }
                            Err(e) => return Some(self.lost(e)),
                        }
                    }
                    self.phase = Phase::Listening { sub };
                }
                Phase::Listening { sub } => match sub.next().await {
                    Ok(changes) => {
                        let ended = changes
                            .iter()
                            .any(|c| c.deleted || c.create_rev as u64 != self.index);
                        if ended {
                            self.phase = Phase::Done;
                            return Some(self.ended().await);
                        }
                    }
                    Err(e) => {
                        // Re-read: the watch may have ended for a reason
                        // other than a lost etcd.
                        match self.ctx.get(self.key.clone(), GetOptions::new()).await {
                            Ok(resp) => {
                                let alive = resp
                                    .kvs()
                                    .first()
                                    .is_some_and(|kv| kv.create_revision() as u64 == self.index);
                                if !alive {
                                    self.phase = Phase::Done;
                                    return Some(self.ended().await);
                                }
                                let rev = resp.header().map_or(0, |h| h.revision());
                                self.phase = Phase::Held { from_rev: rev + 1 };
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            Err(_) => return Some(self.lost(e)),
                        }
                    }
                },
            }
        }
    }

    /// etcd went away while the client listened to its hold.
    fn lost(&mut self, e: EtcdError) -> Result<WaitUpdate, EngineError> {
        self.phase = Phase::Done;
        Err(EngineError::Unavailable(format!(
            "lost etcd while holding (the hold lives on by its ttl): {e}"
        )))
    }

    async fn ended(&self) -> Result<WaitUpdate, EngineError> {
        self.ctx.forget_hold(&self.key);
        let reason = match tombstone(&self.ctx, &self.lock, self.index).await {
            Ok(Some(Reason::Released | Reason::Cancelled)) => EndReason::Released,
            // Expired by a gateway's timer, or by the lease with no gateway
            // left to time it.
            Ok(Some(Reason::Expired) | None) => EndReason::Expired,
            Err(e) => {
                return Err(EngineError::Unavailable(format!(
                    "lost etcd while holding (the hold lives on by its ttl): {e}"
                )));
            }
        };
        Ok(WaitUpdate::Ended {
            index: self.index,
            reason,
        })
    }
}
