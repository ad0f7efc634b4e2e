//! Random histories through the real driver (`EmbeddedEngine`), compared
//! step by step with the lock table driven directly.
//!
//! The table is the contract (tests/table_model.rs checks it against a
//! reference model); the driver around it batches commands, fans notices
//! out to wait streams, sleeps on timers, commits to the journal and
//! withdraws requests whose callers went away. None of that may change
//! what the table decides. So each history runs twice: through the engine,
//! on tokio's paused clock, and through a bare `LockTable` given the same
//! operations at the same `now`. Every answer (admission, renew, release,
//! get, stats), every step every wait stream yields, and every watch event
//! must be the same, and the invariants hold throughout: never more holders
//! than the key's limit, indexes of new entries rise, and once everyone has
//! left, nothing is left.
//!
//! Operations: acquire (with or without value, ttl, timeout, limit,
//! lock-delay), renew and release by index or value, get, reading some
//! wait streams and not others (a grant nobody read is undone when its
//! stream goes), dropping wait streams (before the command is applied,
//! after it was applied but before the reply was read, while queued, after
//! a grant), and moving paused time on by random amounts so that expiries,
//! lock-delays and timeouts fire inside the driver.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use baton::engine::{
    AcquireSpec, Engine, EngineError, EventStream, FailReason, Target, WaitStream, WaitUpdate,
    clock::Clock,
    embedded::{EmbeddedConfig, EmbeddedEngine},
    table::{Admission, Departure, LockTable, Notice, TableLimits, WaiterId},
};
use baton::store::{Snapshot, redb_journal::RedbJournal};
use futures::{FutureExt, StreamExt};

const KEYS: [&str; 3] = ["a", "b", "c/d"];
const VALUES: [&str; 3] = ["x", "y", "z"];
const T0: u64 = 1_700_000_000_000;

/// One wait stream the history holds, and what it must yield.
struct Live {
    stream: WaitStream,
    /// The table's id for the same request.
    waiter: WaiterId,
    /// Steps the stream owes, in order (its admission first).
    owed: VecDeque<Result<WaitUpdate, EngineError>>,
    /// Whether the stream yielded a grant (its departure is then Informed).
    informed: bool,
    /// Whether it yielded its last step.
    ended: bool,
}

struct History {
    engine: EmbeddedEngine,
    model: LockTable,
    clock: Clock,
    watch: EventStream,
    /// Events the watch owes.
    events: VecDeque<baton::engine::LockEvent>,
    live: Vec<Live>,
    rng: fastrand::Rng,
    /// Every index handed out, for targets and the rising-index check.
    indexes: BTreeSet<u64>,
    /// The kinds of event the watch saw (every kind must occur).
    kinds: BTreeSet<String>,
    steps: usize,
}

fn update_of(notice: Notice) -> Result<WaitUpdate, EngineError> {
    match notice {
        Notice::Granted(g) => Ok(WaitUpdate::Acquired(g)),
        Notice::Ended { index, reason } => Ok(WaitUpdate::Ended { index, reason }),
        Notice::Failed { index, reason } => Err(match reason {
            FailReason::TimedOut => EngineError::TimedOut,
            FailReason::Released => EngineError::ReleasedWhileQueued(index),
        }),
    }
}

impl History {
    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Takes what the table produced: notices go to the streams that owe
    /// them, events to the watch.
    fn collect(&mut self) {
        let out = self.model.take_output();
        for (waiter, notice) in out.notices {
            if let Some(l) = self.live.iter_mut().find(|l| l.waiter == waiter) {
                l.owed.push_back(update_of(notice));
            }
        }
        self.events.extend(out.events);
    }

    /// Lets the driver finish everything sent so far (a call answers only
    /// after every earlier command was applied and published), and compares
    /// the counts.
    async fn settle(&mut self) {
        let stats = self.engine.stats().await.expect("stats");
        assert_eq!(stats, self.model.stats(), "stats, step {}", self.steps);
        self.check_watch();
    }

    /// Everything the watch yields now is what the table said, in order.
    fn check_watch(&mut self) {
        while let Some(Some(ev)) = self.watch.next().now_or_never() {
            let ev = ev.expect("the watch lagged");
            let want = self.events.pop_front();
            assert_eq!(Some(&ev), want.as_ref(), "watch event, step {}", self.steps);
            self.kinds.insert(format!("{:?}", ev.kind));
        }
        assert!(
            self.events.is_empty(),
            "events never seen by the watch, step {}: {:?}",
            self.steps,
            self.events
        );
    }

    fn spec(&mut self) -> AcquireSpec {
        let r = &mut self.rng;
        AcquireSpec {
            key: KEYS[r.usize(..KEYS.len())].into(),
            value: r.bool().then(|| VALUES[r.usize(..VALUES.len())].into()),
            ttl_ms: [0, 0, 30, 200, 1_000][r.usize(..5)],
            timeout_ms: [None, None, Some(0), Some(40), Some(500)][r.usize(..5)],
            // Mostly locks; now and then a semaphore, which a busy lock
            // refuses (and the other way round).
            limit: [1, 1, 1, 0, 2, 3][r.usize(..6)],
            lock_delay_ms: [0, 0, 0, 100][r.usize(..4)],
        }
    }

    fn target(&mut self) -> Target {
        if self.rng.u8(..4) == 0 {
            Target::Value(VALUES[self.rng.usize(..VALUES.len())].into())
        } else if self.indexes.is_empty() || self.rng.u8(..8) == 0 {
            Target::Index(self.rng.u64(..1_000))
        } else {
            // Mostly recent indexes, so targets usually exist.
            let recent: Vec<u64> = self.indexes.iter().rev().take(12).copied().collect();
            Target::Index(recent[self.rng.usize(..recent.len())])
        }
    }

    /// An index the table handed out: an entry joined or renewed by value
    /// keeps its index, a new entry's is above every earlier one.
    fn saw_index(&mut self, index: u64, new_entry: bool) {
        if new_entry {
            assert!(
                self.indexes.last().is_none_or(|&last| index > last),
                "index {index} after {:?}, step {}",
                self.indexes.last(),
                self.steps
            );
        }
        self.indexes.insert(index);
    }

    async fn acquire(&mut self) {
        let spec = self.spec();
        let known: BTreeSet<u64> = self.indexes.clone();
        match self.rng.u8(..10) {
            // Given up before the engine applied it: polled once (the
            // command is sent) and dropped. Nothing happens.
            0 => {
                let mut fut = self.engine.wait(spec);
                assert!((&mut fut).now_or_never().is_none());
                drop(fut);
                self.settle().await;
            }
            // Given up after it was applied, before the reply was read:
            // the reply's registration withdraws it, uninformed.
            1 => {
                let engine = self.engine.clone();
                let mut fut = engine.wait(spec.clone());
                assert!((&mut fut).now_or_never().is_none());
                // A round trip: the acquire was applied and its reply
                // sent (not compared: the table has not seen it yet).
                self.engine.stats().await.expect("stats");
                drop(fut);
                let now = self.now();
                if let Ok((waiter, admission)) = self.model.acquire(spec, now) {
                    let (index, new) = admitted(&admission, &known);
                    self.saw_index(index, new);
                    self.model.withdraw(waiter, Departure::Uninformed, now);
                }
                self.collect();
                self.settle().await;
            }
            _ => {
                let got = self.engine.wait(spec.clone()).await;
                let now = self.now();
                let want = self.model.acquire(spec, now);
                match (got, want) {
                    (Ok(stream), Ok((waiter, admission))) => {
                        let (index, new) = admitted(&admission, &known);
                        self.saw_index(index, new);
                        self.live.push(Live {
                            stream,
                            waiter,
                            owed: VecDeque::from([Ok(WaitUpdate::from(admission))]),
                            informed: false,
                            ended: false,
                        });
                    }
                    (Err(got), Err(want)) => {
                        assert_eq!(got, EngineError::from(want), "step {}", self.steps)
                    }
                    (got, want) => panic!(
                        "step {}: the engine answered {:?}, the table {want:?}",
                        self.steps,
                        got.map(|_| "a stream")
                    ),
                }
                self.collect();
            }
        }
    }

    /// Reads what stream `i` yields now and compares it with what it owes.
    fn drain(&mut self, i: usize) {
        let steps = self.steps;
        let l = &mut self.live[i];
        while !l.ended {
            let Some(item) = l.stream.next().now_or_never() else {
                break;
            };
            let Some(item) = item else {
                l.ended = true;
                break;
            };
            let want = l.owed.pop_front();
            assert_eq!(Some(&item), want.as_ref(), "wait stream, step {steps}");
            match item {
                Ok(WaitUpdate::Acquired(_)) => l.informed = true,
                Ok(WaitUpdate::Ended { .. }) | Err(_) => l.ended = true,
                Ok(WaitUpdate::Queued { .. }) => {}
            }
        }
        assert!(
            l.ended || l.owed.is_empty(),
            "wait stream owes {:?}, step {steps}",
            l.owed
        );
    }

    /// Drops stream `i`, as a client going away does.
    async fn drop_stream(&mut self, i: usize) {
        let l = self.live.swap_remove(i);
        let departure = if l.informed {
            Departure::Informed
        } else {
            Departure::Uninformed
        };
        drop(l.stream);
        let now = self.now();
        self.model.withdraw(l.waiter, departure, now);
        self.collect();
    }

    async fn step(&mut self) {
        self.steps += 1;
        match self.rng.u8(..100) {
            0..30 => self.acquire().await,
            30..45 => {
                self.settle().await;
                if !self.live.is_empty() {
                    let i = self.rng.usize(..self.live.len());
                    self.drain(i);
                }
            }
            45..55 => {
                if !self.live.is_empty() {
                    // Sometimes read it first, so drops after a grant that
                    // was heard happen too.
                    let i = self.rng.usize(..self.live.len());
                    if self.rng.bool() {
                        self.settle().await;
                        self.drain(i);
                    }
                    self.drop_stream(i).await;
                }
            }
            55..70 => {
                let key = KEYS[self.rng.usize(..KEYS.len())];
                let target = self.target();
                let ttl = [0, 30, 200, 1_000][self.rng.usize(..4)];
                let got = self.engine.renew(key, target.clone(), ttl).await;
                let now = self.now();
                let want = self
                    .model
                    .renew(key, &target, ttl, now)
                    .map_err(EngineError::from);
                assert_eq!(got, want, "renew, step {}", self.steps);
                self.collect();
            }
            70..80 => {
                let key = KEYS[self.rng.usize(..KEYS.len())];
                let target = self.target();
                let got = self.engine.release(key, target.clone()).await;
                let now = self.now();
                let want = self
                    .model
                    .release(key, &target, now)
                    .map_err(EngineError::from);
                assert_eq!(got, want, "release, step {}", self.steps);
                self.collect();
            }
            80..88 => {
                let key = KEYS[self.rng.usize(..KEYS.len())];
                let got = self.engine.get(key).await.expect("get");
                let now = self.now();
                let want = self.model.get(key, now);
                assert_eq!(got, want, "get {key}, step {}", self.steps);
                self.collect();
                let limit = got.limit.max(1) as usize;
                assert!(got.holders.len() <= limit, "{got:?}");
            }
            _ => {
                let ms = [1, 5, 20, 60, 250, 1_200][self.rng.usize(..6)];
                // Whatever was sent (a dropped stream's withdrawal) is
                // applied before time moves, as the table saw it.
                self.settle().await;
                tokio::time::advance(Duration::from_millis(ms)).await;
                let now = self.now();
                self.model.advance(now);
                self.collect();
            }
        }
    }

    /// Everyone leaves; what is left are holds somebody heard of, which
    /// are released; then nothing at all is left.
    async fn finish(mut self) {
        self.settle().await;
        for i in 0..self.live.len() {
            self.drain(i);
        }
        while !self.live.is_empty() {
            self.drop_stream(0).await;
        }
        self.settle().await;
        for key in KEYS {
            let got = self.engine.get(key).await.expect("get");
            let now = self.now();
            assert_eq!(got, self.model.get(key, now), "get {key} at the end");
            assert!(got.queue.is_empty(), "queued with nobody waiting: {got:?}");
            for h in got.holders {
                let r = self.engine.release(key, Target::Index(h.index)).await;
                let now = self.now();
                assert_eq!(
                    r,
                    self.model
                        .release(key, &Target::Index(h.index), now)
                        .map_err(EngineError::from)
                );
            }
        }
        // Past every ttl and lock-delay.
        tokio::time::advance(Duration::from_secs(3_600)).await;
        let now = self.now();
        self.model.advance(now);
        self.collect();
        self.settle().await;
        let stats = self.engine.stats().await.expect("stats");
        assert_eq!(
            (stats.keys, stats.entries, stats.waiters),
            (0, 0, 0),
            "left behind after everyone left: {stats:?}"
        );
        let listed = self.engine.list("", None, 100).await.expect("list");
        assert!(listed.is_empty(), "keys left: {listed:?}");
    }
}

/// The index an admission names, and whether it is a new entry's (not a
/// join of a known entry or a holder's re-acquire).
fn admitted(admission: &Admission, known: &BTreeSet<u64>) -> (u64, bool) {
    let index = match admission {
        Admission::Granted(g) => g.index,
        Admission::Queued { index, .. } => *index,
    };
    (index, !known.contains(&index))
}

/// Runs `steps` random steps of seed `seed` on an engine in memory or on
/// a durable store in a temp dir.
async fn run(seed: u64, steps: usize, durable: bool) -> BTreeSet<String> {
    let clock = Clock::starting_at(T0);
    let config = EmbeddedConfig {
        clock,
        ..EmbeddedConfig::default()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (engine, ceiling) = if durable {
        let (journal, snapshot) = RedbJournal::open(dir.path()).expect("open store");
        assert!(snapshot.holds.is_empty());
        let ceiling = snapshot.index_ceiling;
        (
            EmbeddedEngine::durable(config, Box::new(journal), snapshot),
            ceiling,
        )
    } else {
        (EmbeddedEngine::in_memory(config), 0)
    };
    let model = LockTable::restore(
        TableLimits::default(),
        ceiling,
        Snapshot::default().holds,
        clock.now_ms(),
    );
    let watch = engine.watch("", true).await.expect("watch");
    let mut h = History {
        engine,
        model,
        clock,
        watch,
        events: VecDeque::new(),
        live: Vec::new(),
        rng: fastrand::Rng::with_seed(seed),
        indexes: BTreeSet::new(),
        kinds: BTreeSet::new(),
        steps: 0,
    };
    for _ in 0..steps {
        h.step().await;
        // Keep the watch drained well within its buffer.
        if h.steps.is_multiple_of(64) {
            h.settle().await;
        }
    }
    let counts = h.indexes.len();
    assert!(counts > steps / 20, "too few entries: {counts}");
    let kinds = h.kinds.clone();
    h.finish().await;
    kinds
}

/// The histories reached every kind of change (queued, acquired, renewed,
/// released, expired, cancelled, lock-delay ended): a generator that
/// stopped producing one would otherwise pass unnoticed.
fn assert_every_kind(kinds: &BTreeSet<String>) {
    assert_eq!(kinds.len(), 7, "the histories saw only {kinds:?}");
}

#[tokio::test(start_paused = true)]
async fn random_histories_through_the_driver_in_memory() {
    let mut kinds = BTreeSet::new();
    for seed in 0..8 {
        kinds.extend(run(seed, 4_000, false).await);
    }
    assert_every_kind(&kinds);
}

#[tokio::test(start_paused = true)]
async fn random_histories_through_the_driver_on_the_durable_store() {
    let mut kinds = BTreeSet::new();
    for seed in 100..103 {
        kinds.extend(run(seed, 1_000, true).await);
    }
    assert_every_kind(&kinds);
}
