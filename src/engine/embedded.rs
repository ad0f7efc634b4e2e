//! The embedded backend: one tokio task that owns a [`LockTable`], sleeps
//! until its next timer, and turns its output into replies, waiter
//! notifications, watch events and durable commits.
//!
//! Every request is a [`Command`] on an unbounded channel. The task takes all
//! commands that are waiting (up to [`MAX_BATCH`]), applies them, commits the
//! resulting records in one journal transaction (one fsync, or one etcd
//! transaction: group commit), and only then answers. So nobody hears of a
//! grant, renew or release that a crash could undo, and many concurrent
//! clients share one commit. The commit is pipelined: while batch N is in
//! the journal, the task applies batch N+1, which is committed, and heard
//! of, only after N (see `Driver::run`).

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc};

use async_trait::async_trait;
use futures::{StreamExt, stream::FuturesOrdered};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    AcquireSpec, Engine, EngineError, EngineStats, EventStream, KeySummary, KeyView, LockEvent,
    Release, Renewal, Target, WaitStream, WaitUpdate,
    clock::Clock,
    journal_stats::{JournalCounters, JournalStats},
    table::{Admission, Departure, LockTable, Notice, TableLimits, WaiterId},
    types::FailReason,
};
use crate::store::{HeldRecord, Journal, Record, Snapshot, StoreError};

/// Commands applied before one commit, at most.
pub const MAX_BATCH: usize = 4096;

/// Indexes reserved per durable write of the index ceiling: the ceiling is
/// written again only after this many new entries, not for every queued
/// request. A restart skips at most this many indexes.
pub const INDEX_RESERVATION: u64 = 1024;

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// The engine's side of one waiter's notices (a grant, then its end).
///
/// futures' unbounded channel, not tokio's: a waiter hears two or three
/// notices in its life, and tokio's channel allocates a block of 32 slots
/// plus cache-padded ends (about 1.8 KB) up front, where this one allocates
/// a node per message. Every waiting request keeps one, so at 100,000
/// waiters that is most of the difference (BENCHMARKS.md, many waiters).
type NoticeSender = futures::channel::mpsc::UnboundedSender<Notice>;
type NoticeReceiver = futures::channel::mpsc::UnboundedReceiver<Notice>;

fn notice_channel() -> (NoticeSender, NoticeReceiver) {
    futures::channel::mpsc::unbounded()
}

/// A request to the engine task.
enum Command {
    Acquire {
        spec: AcquireSpec,
        notices: NoticeSender,
        reply: Reply<(Registration, Admission)>,
    },
    Withdraw {
        waiter: WaiterId,
        departure: Departure,
    },
    Renew {
        key: String,
        target: Target,
        ttl_ms: u64,
        reply: Reply<Renewal>,
    },
    Release {
        key: String,
        target: Target,
        reply: Reply<Release>,
    },
    Get {
        key: String,
        reply: Reply<KeyView>,
    },
    Stats(Reply<EngineStats>),
    List {
        prefix: String,
        after: Option<String>,
        limit: usize,
        reply: Reply<Vec<KeySummary>>,
    },
}

/// Settings of the embedded backend.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedConfig {
    /// Bounds on entries and waiters.
    pub limits: TableLimits,
    /// Events buffered per watcher before it is cut off as lagging.
    pub watch_buffer: usize,
    /// The time the driver gives the table and sleeps on: the server's one
    /// clock, so the service reports the times the driver decides by
    /// (tests pass a clock on paused tokio time).
    pub clock: Clock,
}

impl Default for EmbeddedConfig {
    /// Default limits, the system clock (made now).
    fn default() -> Self {
        Self {
            limits: TableLimits::default(),
            watch_buffer: 4096,
            clock: Clock::system(),
        }
    }
}

/// The handle the service layer holds; cheap to share.
#[derive(Clone)]
pub struct EmbeddedEngine {
    commands: mpsc::UnboundedSender<Command>,
    events: broadcast::Sender<Arc<LockEvent>>,
    halt: tokio_util::sync::CancellationToken,
    /// Cancelled when the engine task has ended, whatever the reason.
    finished: tokio_util::sync::CancellationToken,
    /// The journal's counts; `None` in memory.
    journal_stats: Option<Arc<JournalCounters>>,
}

impl EmbeddedEngine {
    /// An engine whose state lives in memory only.
    pub fn in_memory(config: EmbeddedConfig) -> Self {
        Self::start(config, None, Snapshot::default())
    }

    /// An engine restored from `snapshot` that commits every change to
    /// `journal` before acknowledging it.
    pub fn durable(config: EmbeddedConfig, journal: Box<dyn Journal>, snapshot: Snapshot) -> Self {
        Self::start(config, Some(journal), snapshot)
    }

    fn start(
        config: EmbeddedConfig,
        journal: Option<Box<dyn Journal>>,
        snapshot: Snapshot,
    ) -> Self {
        let clock = config.clock;
        let table = LockTable::restore(
            config.limits,
            snapshot.index_ceiling,
            snapshot.holds,
            clock.now_ms(),
        );
        let (commands, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(config.watch_buffer.max(1));
        let halt = tokio_util::sync::CancellationToken::new();
        let finished = tokio_util::sync::CancellationToken::new();
        let journal_stats = journal
            .as_ref()
            .map(|_| Arc::new(JournalCounters::default()));
        let task = Driver {
            journal_stats: journal_stats.clone(),
            table,
            clock,
            commands: commands.downgrade(),
            journal,
            index_ceiling: snapshot.index_ceiling,
            notices: HashMap::new(),
            events: events.clone(),
            halt: halt.clone(),
        };
        let done = finished.clone().drop_guard();
        tokio::spawn(async move {
            let _done = done;
            task.run(rx).await;
        });
        Self {
            commands,
            events,
            halt,
            finished,
            journal_stats,
        }
    }

    /// Resolves once the engine has stopped: halted, or a journal commit
    /// failed (so nobody may hear of anything any more).
    pub async fn stopped(&self) {
        self.finished.cancelled().await;
    }

    /// Stops the engine at once, without another commit: every open wait
    /// stream and every pending or later call fails with UNAVAILABLE. The
    /// etcd backend's primary calls it the moment it may no longer be
    /// primary, so that it answers nothing it could not stand behind.
    pub fn halt(&self) {
        self.halt.cancel();
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> EngineError {
    EngineError::Unavailable("the lock engine has stopped".into())
}

impl EmbeddedEngine {
    /// A wait whose grant counts as heard when the consumer is handed it
    /// (`confirmed` false), or only when the consumer asks for the next
    /// item after it (`confirmed` true: see [`Engine::wait_confirmed`]).
    async fn start_wait(
        &self,
        spec: AcquireSpec,
        confirmed: bool,
    ) -> Result<WaitStream, EngineError> {
        // Going away is total: if this future is dropped before the reply
        // comes, the reply (and the registration in it) is dropped with the
        // channel, and the registration withdraws the request. The engine
        // skips a command whose caller left before it was applied.
        let (notices, notice_rx) = notice_channel();
        let (registration, admission) = self
            .call(|reply| Command::Acquire {
                spec,
                notices,
                reply,
            })
            .await?;
        let first = WaitUpdate::from(admission);
        let state = WaitState {
            first: Some(first),
            notices: notice_rx,
            done: false,
            registration,
            handed: false,
        };
        let stream = futures::stream::unfold(state, move |mut st| async move {
            // Asked for the item after the grant: a confirmed wait's grant
            // is heard now.
            if st.handed {
                st.registration.informed = true;
            }
            if st.done {
                return None;
            }
            let item = match st.first.take() {
                Some(first) => Ok(first),
                None => match st.notices.next().await {
                    Some(Notice::Granted(g)) => Ok(WaitUpdate::Acquired(g)),
                    Some(Notice::Ended { index, reason }) => {
                        st.done = true;
                        Ok(WaitUpdate::Ended { index, reason })
                    }
                    Some(Notice::Failed { index, reason }) => {
                        st.done = true;
                        Err(match reason {
                            FailReason::TimedOut => EngineError::TimedOut,
                            FailReason::Released => EngineError::ReleasedWhileQueued(index),
                        })
                    }
                    None => {
                        st.done = true;
                        Err(stopped())
                    }
                },
            };
            // The grant is heard the moment it is handed to the consumer of
            // this stream (or, confirmed, when the consumer asks for more);
            // from then on the hold lives by its ttl alone.
            if matches!(item, Ok(WaitUpdate::Acquired(_))) {
                if confirmed {
                    st.handed = true;
                } else {
                    st.registration.informed = true;
                }
            }
            Some((item, st))
        });
        Ok(Box::pin(stream))
    }
}

#[async_trait]
impl Engine for EmbeddedEngine {
    async fn wait(&self, spec: AcquireSpec) -> Result<WaitStream, EngineError> {
        self.start_wait(spec, false).await
    }

    async fn wait_confirmed(&self, spec: AcquireSpec) -> Result<WaitStream, EngineError> {
        self.start_wait(spec, true).await
    }

    async fn renew(&self, key: &str, target: Target, ttl_ms: u64) -> Result<Renewal, EngineError> {
        let key = key.to_owned();
        self.call(|reply| Command::Renew {
            key,
            target,
            ttl_ms,
            reply,
        })
        .await
    }

    async fn release(&self, key: &str, target: Target) -> Result<Release, EngineError> {
        let key = key.to_owned();
        self.call(|reply| Command::Release { key, target, reply })
            .await
    }

    async fn get(&self, key: &str) -> Result<KeyView, EngineError> {
        let key = key.to_owned();
        self.call(|reply| Command::Get { key, reply }).await
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeySummary>, EngineError> {
        let prefix = prefix.to_owned();
        let after = after.map(str::to_owned);
        self.call(|reply| Command::List {
            prefix,
            after,
            limit,
            reply,
        })
        .await
    }

    async fn watch(&self, key: &str, prefix: bool) -> Result<EventStream, EngineError> {
        Ok(watch_stream(
            self.events.subscribe(),
            key.to_owned(),
            prefix,
        ))
    }

    async fn stats(&self) -> Result<EngineStats, EngineError> {
        self.call(Command::Stats).await
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn journal_stats(&self) -> Option<JournalStats> {
        self.journal_stats.as_ref().map(|s| s.snapshot())
    }
}

/// A watch over a broadcast of every event: keeps those for `key` (or under
/// it), and ends with [`EngineError::Lagged`] if the watcher fell behind.
pub fn watch_stream(
    rx: broadcast::Receiver<Arc<LockEvent>>,
    key: String,
    prefix: bool,
) -> EventStream {
    use broadcast::error::RecvError;
    let stream = futures::stream::unfold(Some(rx), move |state| {
        let key = key.clone();
        async move {
            let mut rx = state?;
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let hit = if prefix {
                            ev.key.starts_with(&key)
                        } else {
                            ev.key == key
                        };
                        if hit {
                            return Some((Ok((*ev).clone()), Some(rx)));
                        }
                    }
                    Err(RecvError::Lagged(n)) => return Some((Err(EngineError::Lagged(n)), None)),
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    Box::pin(stream)
}

/// The state of one wait stream. The registration lives as long as the
/// stream; on drop it withdraws the request.
struct WaitState {
    first: Option<WaitUpdate>,
    notices: NoticeReceiver,
    done: bool,
    registration: Registration,
    /// A confirmed wait's grant was handed out; it is heard on the next
    /// poll.
    handed: bool,
}

/// A waiter the engine registered, owned by whoever must hear of it: first
/// the reply on its way to the caller, then the caller's wait stream.
/// Whenever it is dropped (reply undeliverable, caller's future dropped
/// before it read the reply, stream dropped) it withdraws the waiter, saying
/// whether the grant was heard. Withdrawing a waiter that already ended or
/// failed is a no-op, so it always fires.
struct Registration {
    waiter: WaiterId,
    /// Set once the consumer of the wait stream was handed the grant.
    informed: bool,
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let departure = if self.informed {
            Departure::Informed
        } else {
            Departure::Uninformed
        };
        let _ = self.commands.send(Command::Withdraw {
            waiter: self.waiter,
            departure,
        });
    }
}

/// The engine task's state.
struct Driver {
    table: LockTable,
    clock: Clock,
    /// The driver's own command channel, for the registrations it hands out
    /// (weak, so that the task ends when every handle is gone).
    commands: mpsc::WeakUnboundedSender<Command>,
    journal: Option<Box<dyn Journal>>,
    /// What the journal's commits cost (with a journal).
    journal_stats: Option<Arc<JournalCounters>>,
    /// Indexes below this are safe to hand out: the store keeps it.
    index_ceiling: u64,
    notices: HashMap<WaiterId, NoticeSender>,
    events: broadcast::Sender<Arc<LockEvent>>,
    /// Cancelled by [`EmbeddedEngine::halt`].
    halt: tokio_util::sync::CancellationToken,
}

/// A reply held back until the batch it belongs to is durable.
type Deferred = Box<dyn FnOnce() + Send>;

/// One batch, closed: what the table produced and the replies it owes. None
/// of it may leave the driver before the batch is durable.
struct Batch {
    records: Vec<Record>,
    notices: Vec<(WaiterId, Notice)>,
    events: Vec<LockEvent>,
    deferred: Vec<Deferred>,
    /// The index ceiling this batch stores; `None` if it keeps the last one.
    ceiling: Option<u64>,
}

impl Batch {
    fn must_commit(&self) -> bool {
        !self.records.is_empty() || self.ceiling.is_some()
    }

    /// Nothing to store and nobody to tell.
    fn is_empty(&self) -> bool {
        !self.must_commit()
            && self.notices.is_empty()
            && self.events.is_empty()
            && self.deferred.is_empty()
    }
}

/// A batch being made durable, with the replies waiting for it.
type InFlight = Pin<Box<dyn Future<Output = Stored> + Send>>;

/// A batch whose commit ended, and how.
struct Stored {
    batch: Batch,
    result: Result<(), StoreError>,
    /// When the batch went to the journal, and its size, for the counts;
    /// `None`: nothing was stored (it only waited for the batch before).
    committed: Option<(std::time::Instant, usize)>,
}

impl Driver {
    /// The pipeline: while batch N is being made durable, the task goes on
    /// applying commands into batch N+1. Up to the journal's
    /// [`depth`](Journal::depth) batches are in the journal at once (one
    /// for redb, whose commits are fsyncs one after another); a new batch
    /// closes as soon as there is room for it. Batches are heard of in the
    /// order the table produced them, each only once it and every batch
    /// before it are durable: replies, notices and events of N+1 wait for
    /// N, even when N+1 was stored first, and a failed commit stops the
    /// engine before anything after it is heard of. A read applied in N+1
    /// sees N's changes, and its answer waits for N+1, so nobody reads what
    /// a crash could undo.
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let depth = self.journal.as_ref().map_or(1, |j| j.depth().max(1));
        // Holds that expired while the server was down come out of restore
        // and are the first batch.
        let mut open: Vec<Deferred> = Vec::new();
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        loop {
            if in_flight.len() < depth {
                let batch = self.close(std::mem::take(&mut open));
                match self.journal.as_deref_mut() {
                    Some(journal) if batch.must_commit() => {
                        let ceiling = batch.ceiling.unwrap_or(self.index_ceiling);
                        let snapshot = journal.wants_snapshot().then(|| self.table.stored());
                        in_flight.push_back(store(journal, ceiling, snapshot, batch));
                    }
                    // Nothing to store, but it may answer a read of what
                    // a batch still in the journal did: it is heard of
                    // after that batch.
                    _ if !in_flight.is_empty() => {
                        if !batch.is_empty() {
                            in_flight.push_back(Box::pin(std::future::ready(Stored {
                                batch,
                                result: Ok(()),
                                committed: None,
                            })));
                        }
                    }
                    _ => self.publish(batch),
                }
            }
            let wake = self.table.next_timer().map(|at| self.clock.instant_at(at));
            // A full batch waits for a commit ahead of it: the channel
            // holds the rest.
            let room = open.len() < MAX_BATCH;
            tokio::select! {
                biased;
                () = self.halt.cancelled() => break,
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Err(e) = done.result {
                        tracing::error!(error = %e, "journal commit failed; engine stopped");
                        break;
                    }
                    if let (Some((sent, records)), Some(stats)) = (done.committed, &self.journal_stats) {
                        stats.record(records, sent.elapsed());
                    }
                    self.publish(done.batch);
                }
                cmd = rx.recv(), if room => match cmd {
                    Some(cmd) => {
                        self.apply(cmd, &mut open);
                        while open.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(cmd) => self.apply(cmd, &mut open),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                () = sleep_until(wake) => {}
            }
            let now = self.clock.now_ms();
            self.table.advance(now);
        }
        // Stopped, halted or failed: whatever was not published is dropped
        // unheard. Dropping the notice senders ends every wait stream with
        // UNAVAILABLE; dropped replies fail their calls the same way.
        self.notices.clear();
    }

    /// Closes the open batch: takes what the table produced since the last
    /// one and reserves indexes past every index it handed out.
    fn close(&mut self, deferred: Vec<Deferred>) -> Batch {
        let out = self.table.take_output();
        let next_index = self.table.next_index();
        let ceiling = (next_index > self.index_ceiling).then(|| {
            self.index_ceiling = next_index + INDEX_RESERVATION;
            self.index_ceiling
        });
        Batch {
            records: out.records,
            notices: out.notices,
            events: out.events,
            deferred,
            ceiling,
        }
    }

    /// Tells everyone what a durable (or memory-only) batch did.
    fn publish(&mut self, batch: Batch) {
        for d in batch.deferred {
            d();
        }
        for (waiter, notice) in batch.notices {
            let terminal = !matches!(notice, Notice::Granted(_));
            if let Some(tx) = self.notices.get(&waiter) {
                let _ = tx.unbounded_send(notice);
            }
            if terminal {
                self.notices.remove(&waiter);
            }
        }
        for ev in batch.events {
            let _ = self.events.send(Arc::new(ev));
        }
        // After a burst of waiters left, give back what it grew.
        self.table.trim();
        super::table::shrink_if_sparse(&mut self.notices);
    }

    fn apply(&mut self, cmd: Command, deferred: &mut Vec<Deferred>) {
        let now = self.clock.now_ms();
        // Timers due by now fire first, whatever the command: a command can
        // be taken before the timer branch of the same wake-up, and `Stats`
        // (unlike the table's other operations) does not move time itself,
        // so it would count entries that had already expired or timed out.
        self.table.advance(now);
        match cmd {
            Command::Acquire {
                spec,
                notices,
                reply,
            } => {
                // The caller left before the command was applied: nothing
                // was done, so nothing needs undoing.
                if reply.is_closed() {
                    return;
                }
                let Some(commands) = self.commands.upgrade() else {
                    // No handle is left, so no caller either.
                    return;
                };
                let result = match self.table.acquire(spec, now) {
                    Ok((waiter, admission)) => {
                        self.notices.insert(waiter, notices);
                        let registration = Registration {
                            waiter,
                            informed: false,
                            commands,
                        };
                        Ok((registration, admission))
                    }
                    Err(e) => Err(EngineError::from(e)),
                };
                // If the caller is gone by the time the batch is durable,
                // the undelivered reply drops its registration, which
                // withdraws the waiter (and undoes a grant nobody heard).
                deferred.push(Box::new(move || {
                    let _ = reply.send(result);
                }));
            }
            Command::Withdraw { waiter, departure } => {
                self.notices.remove(&waiter);
                self.table.withdraw(waiter, departure, now);
            }
            Command::Renew {
                key,
                target,
                ttl_ms,
                reply,
            } => {
                let r = self
                    .table
                    .renew(&key, &target, ttl_ms, now)
                    .map_err(Into::into);
                deferred.push(Box::new(move || {
                    let _ = reply.send(r);
                }));
            }
            Command::Release { key, target, reply } => {
                let r = self.table.release(&key, &target, now).map_err(Into::into);
                deferred.push(Box::new(move || {
                    let _ = reply.send(r);
                }));
            }
            Command::Get { key, reply } => {
                let view = self.table.get(&key, now);
                deferred.push(Box::new(move || {
                    let _ = reply.send(Ok(view));
                }));
            }
            Command::Stats(reply) => {
                let stats = self.table.stats();
                deferred.push(Box::new(move || {
                    let _ = reply.send(Ok(stats));
                }));
            }
            Command::List {
                prefix,
                after,
                limit,
                reply,
            } => {
                let keys = self.table.list(&prefix, after.as_deref(), limit, now);
                deferred.push(Box::new(move || {
                    let _ = reply.send(Ok(keys));
                }));
            }
        }
    }
}

/// Hands the batch's records to the journal; the future resolves with the
/// batch once its commit ended.
fn store(
    journal: &mut dyn Journal,
    ceiling: u64,
    snapshot: Option<Vec<HeldRecord>>,
    mut batch: Batch,
) -> InFlight {
    let records = std::mem::take(&mut batch.records);
    let count = records.len();
    let commit = journal.commit(records, ceiling, snapshot);
    let sent = std::time::Instant::now();
    Box::pin(async move {
        let result = commit.await;
        Stored {
            batch,
            result,
            committed: Some((sent, count)),
        }
    })
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
