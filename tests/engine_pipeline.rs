//! The pipelined group commit, checked through the real driver with a
//! journal the test holds at the gate: while batch N is being stored the
//! driver applies batch N+1, yet nothing of N+1 (reply, grant, read, event)
//! leaves before N+1 is durable, and a failed commit of N+1 is never heard
//! of even though N was.

use std::{
    collections::VecDeque,
    sync::{Mutex, mpsc},
    time::Duration,
};

use baton::engine::{
    AcquireSpec, Engine, EngineError, WaitUpdate,
    embedded::{EmbeddedConfig, EmbeddedEngine},
};
use baton::store::{Commit, HeldRecord, Journal, Record, Snapshot, StoreError};
use futures::StreamExt;
use tokio::{sync::oneshot, task::JoinHandle};

/// Time the driver gets to apply a command it was sent. Applying takes
/// microseconds; this only bounds how long the test waits for it.
const SETTLE: Duration = Duration::from_millis(300);

/// A journal that hands every commit to the test and stores it only when
/// the test says so (`true`) or fails it (`false`).
struct GatedJournal {
    commits: mpsc::Sender<(Vec<Record>, oneshot::Sender<bool>)>,
    depth: usize,
}

impl Journal for GatedJournal {
    fn commit(
        &mut self,
        records: Vec<Record>,
        _index_ceiling: u64,
        _snapshot: Option<Vec<HeldRecord>>,
    ) -> Commit {
        let (verdict, decided) = oneshot::channel();
        let sent = self.commits.send((records, verdict));
        Box::pin(async move {
            sent.map_err(|e| StoreError::Database(e.to_string()))?;
            match decided.await {
                Ok(true) => Ok(()),
                Ok(false) => Err(StoreError::Database("the test failed this commit".into())),
                Err(e) => Err(StoreError::Database(e.to_string())),
            }
        })
    }

    fn depth(&self) -> usize {
        self.depth
    }
}

struct Gate {
    commits: mpsc::Receiver<(Vec<Record>, oneshot::Sender<bool>)>,
    /// The commits started and not yet decided, oldest first.
    open: Mutex<VecDeque<oneshot::Sender<bool>>>,
}

impl Gate {
    /// The next commit the driver started, within `SETTLE`.
    async fn next_commit(&self) -> Option<Vec<Record>> {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            if let Ok((records, verdict)) = self.commits.try_recv() {
                self.open.lock().expect("gate").push_back(verdict);
                return Some(records);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stores (or fails) the oldest commit not yet decided.
    fn decide(&self, store: bool) {
        self.decide_at(0, store);
    }

    /// Stores (or fails) the `i`th oldest commit not yet decided.
    fn decide_at(&self, i: usize, store: bool) {
        let verdict = self
            .open
            .lock()
            .expect("gate")
            .remove(i)
            .expect("a commit in flight");
        verdict.send(store).expect("the journal is waiting");
    }
}

fn gated_engine() -> (EmbeddedEngine, Gate) {
    gated_engine_of_depth(1)
}

fn gated_engine_of_depth(depth: usize) -> (EmbeddedEngine, Gate) {
    let (commits_tx, commits) = mpsc::channel();
    let journal = GatedJournal {
        commits: commits_tx,
        depth,
    };
    let engine = EmbeddedEngine::durable(
        EmbeddedConfig::default(),
        Box::new(journal),
        Snapshot::default(),
    );
    (
        engine,
        Gate {
            commits,
            open: Mutex::new(VecDeque::new()),
        },
    )
}

fn spec(key: &str) -> AcquireSpec {
    AcquireSpec {
        key: key.into(),
        value: None,
        ttl_ms: 60_000,
        timeout_ms: None,
        limit: 1,
        lock_delay_ms: 0,
    }
}

/// Waits on `key` and returns what the first step of the wait was.
fn wait_first(engine: &EmbeddedEngine, key: &str) -> JoinHandle<Result<WaitUpdate, EngineError>> {
    let engine = engine.clone();
    let spec = spec(key);
    tokio::spawn(async move {
        let mut stream = engine.wait(spec).await?;
        let first = stream.next().await.ok_or(EngineError::TimedOut)??;
        // Keep the stream (and so the registration) past the test's checks.
        std::mem::forget(stream);
        Ok(first)
    })
}

fn holds_key(records: &[Record], key: &str) -> bool {
    records
        .iter()
        .any(|r| matches!(r, Record::Held(h) if h.key == key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_is_applied_during_a_commit_and_heard_only_after_its_own() {
    let (engine, gate) = gated_engine();
    // The first batch stores the index ceiling of a fresh store.
    let start = gate.next_commit().await.expect("the start commit");
    assert!(start.is_empty());
    gate.decide(true);

    // Batch 1: "a" is granted, and held at the gate.
    let a = wait_first(&engine, "a");
    let batch1 = gate.next_commit().await.expect("batch 1 is committed");
    assert!(holds_key(&batch1, "a"), "batch 1: {batch1:?}");

    // While batch 1 is being stored: a grant of "b", a read of "a", and a
    // wait on "c" whose caller leaves before anything is durable.
    let b = wait_first(&engine, "b");
    let read = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.get("a").await })
    };
    let c = wait_first(&engine, "c");
    tokio::time::sleep(SETTLE).await;
    c.abort();
    assert!(
        gate.next_commit().await.is_none(),
        "one commit in flight at a time"
    );
    assert!(!a.is_finished(), "a grant was heard before it was durable");
    assert!(!b.is_finished() && !read.is_finished());

    // Batch 1 is durable: its grant is heard; batch 2 goes to the journal.
    gate.decide(true);
    let granted = a.await.expect("task").expect("a is granted");
    assert!(matches!(granted, WaitUpdate::Acquired(_)), "{granted:?}");
    let batch2 = gate.next_commit().await.expect("batch 2 is committed");
    assert!(holds_key(&batch2, "b"), "batch 2: {batch2:?}");
    // "c" was applied while batch 1 was in the journal (its caller was still
    // there), so its grant is in batch 2; the caller's leaving undoes it in
    // a later batch. A driver that applied nothing during a commit would
    // have skipped the abandoned request.
    assert!(
        holds_key(&batch2, "c"),
        "batch 2 was not applied during batch 1's commit: {batch2:?}"
    );
    tokio::time::sleep(SETTLE).await;
    assert!(!b.is_finished(), "b heard of a batch not yet durable");
    assert!(
        !read.is_finished(),
        "a read answered from a batch not yet durable"
    );

    // Batch 2 fails: nobody hears of it, and the engine stops.
    gate.decide(false);
    let b = b.await.expect("task");
    assert!(matches!(b, Err(EngineError::Unavailable(_))), "{b:?}");
    let read = read.await.expect("task");
    assert!(matches!(read, Err(EngineError::Unavailable(_))), "{read:?}");
    tokio::time::timeout(Duration::from_secs(5), engine.stopped())
        .await
        .expect("the engine stops after a failed commit");
    let late = engine.get("a").await;
    assert!(matches!(late, Err(EngineError::Unavailable(_))), "{late:?}");
}

/// With two commits in flight (the etcd journal's depth), a batch stored
/// before the one ahead of it is heard of only after that one, a third
/// batch waits for room, and a failure of the one ahead silences the one
/// behind it even though it was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_flight_together_are_heard_in_order_and_only_if_all_before_stored() {
    let (engine, gate) = gated_engine_of_depth(2);
    gate.next_commit().await.expect("the start commit");
    gate.decide(true);

    let a = wait_first(&engine, "a");
    let batch1 = gate.next_commit().await.expect("batch 1");
    assert!(holds_key(&batch1, "a"), "batch 1: {batch1:?}");
    let b = wait_first(&engine, "b");
    let batch2 = gate
        .next_commit()
        .await
        .expect("batch 2 goes to the journal while batch 1 is there");
    assert!(holds_key(&batch2, "b"), "batch 2: {batch2:?}");
    let x = wait_first(&engine, "x");
    assert!(
        gate.next_commit().await.is_none(),
        "a third commit started with a depth of two"
    );

    // Batch 2 is stored first: still nobody hears of it.
    gate.decide_at(1, true);
    tokio::time::sleep(SETTLE).await;
    assert!(
        !a.is_finished() && !b.is_finished(),
        "heard before batch 1 was stored"
    );
    gate.decide(true);
    for (name, task) in [("a", a), ("b", b)] {
        let got = task.await.expect("task");
        assert!(
            matches!(got, Ok(WaitUpdate::Acquired(_))),
            "{name}: {got:?}"
        );
    }
    let batch3 = gate
        .next_commit()
        .await
        .expect("batch 3, once there was room");
    assert!(holds_key(&batch3, "x"), "batch 3: {batch3:?}");
    gate.decide(true);
    let x = x.await.expect("task");
    assert!(matches!(x, Ok(WaitUpdate::Acquired(_))), "x: {x:?}");

    // Batch 5 is stored, batch 4 (ahead of it) fails: neither is heard of.
    let c = wait_first(&engine, "c");
    gate.next_commit().await.expect("batch 4");
    let d = wait_first(&engine, "d");
    gate.next_commit().await.expect("batch 5");
    gate.decide_at(1, true);
    gate.decide(false);
    for (name, task) in [("c", c), ("d", d)] {
        let got = task.await.expect("task");
        assert!(
            matches!(got, Err(EngineError::Unavailable(_))),
            "{name}: {got:?}"
        );
    }
    tokio::time::timeout(Duration::from_secs(5), engine.stopped())
        .await
        .expect("the engine stops after a failed commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_during_a_commit_answers_nothing_of_it() {
    let (engine, gate) = gated_engine();
    gate.next_commit().await.expect("the start commit");
    gate.decide(true);

    let a = wait_first(&engine, "a");
    gate.next_commit().await.expect("batch 1 is committed");
    engine.halt();
    tokio::time::timeout(Duration::from_secs(5), engine.stopped())
        .await
        .expect("halt stops the engine while a commit is in flight");
    // The journal may even store the batch afterwards: still nobody hears.
    if let Some(verdict) = gate.open.lock().expect("gate").pop_front() {
        let _ = verdict.send(true);
    }
    let a = a.await.expect("task");
    assert!(matches!(a, Err(EngineError::Unavailable(_))), "{a:?}");
}

/// A journal whose every commit takes this much real time.
struct SlowJournal(Duration);

impl Journal for SlowJournal {
    fn commit(
        &mut self,
        _records: Vec<Record>,
        _index_ceiling: u64,
        _snapshot: Option<Vec<HeldRecord>>,
    ) -> Commit {
        // In tokio's blocking pool, as the redb journal's commits run.
        let pause = self.0;
        let task = tokio::task::spawn_blocking(move || std::thread::sleep(pause));
        Box::pin(async move { task.await.map_err(|e| StoreError::Task(e.to_string())) })
    }
}

/// The in-process suites (tests/conformance, tests/driver_history) run the
/// durable engine on paused time. That is sound only because tokio does not
/// auto-advance paused time while a blocking task runs: a commit that takes
/// real time must not let the driver's timers (expiries, timeouts) fire
/// early. The control half shows the check can fail: real time spent
/// outside tokio's blocking pool does let paused time run on.
#[tokio::test(start_paused = true)]
async fn paused_time_stands_still_while_a_commit_runs() {
    let clock = baton::engine::clock::Clock::starting_at(1_000_000);
    let engine = EmbeddedEngine::durable(
        EmbeddedConfig {
            clock,
            ..EmbeddedConfig::default()
        },
        Box::new(SlowJournal(Duration::from_millis(200))),
        Snapshot::default(),
    );
    // A hold of 100 ms: its expiry is the driver's next timer.
    let mut held = engine
        .wait(AcquireSpec {
            ttl_ms: 100,
            ..spec("short")
        })
        .await
        .expect("wait");
    assert!(matches!(
        held.next().await,
        Some(Ok(WaitUpdate::Acquired(_)))
    ));
    let before = clock.now_ms();
    // Another commit, 200 ms of real time in the blocking pool.
    let mut other = engine.wait(spec("other")).await.expect("wait");
    assert!(matches!(
        other.next().await,
        Some(Ok(WaitUpdate::Acquired(_)))
    ));
    assert_eq!(clock.now_ms(), before, "paused time ran on during a commit");
    let view = engine.get("short").await.expect("get");
    assert!(view.holder.is_some(), "the hold expired during a commit");

    // Control: waiting for a plain thread (not the blocking pool) leaves
    // the runtime idle, and paused time jumps to the hold's expiry.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let _ = tx.send(());
    });
    rx.await.expect("thread");
    assert!(
        clock.now_ms() >= before + 100,
        "the control did not advance"
    );
    let view = engine.get("short").await.expect("get");
    assert!(view.holder.is_none(), "the control did not expire the hold");
}

/// The holds a journal's records add up to, and what the snapshots the
/// driver gave said.
#[derive(Default)]
struct Snapshots {
    /// Per snapshot: the indexes in it, or how it differed.
    seen: Vec<Result<Vec<u64>, String>>,
}

/// A journal that asks for a snapshot before every batch and checks it
/// against the holds its records add up to once that batch is in.
struct CheckingJournal {
    stored: std::collections::BTreeMap<u64, HeldRecord>,
    snapshots: std::sync::Arc<Mutex<Snapshots>>,
}

impl Journal for CheckingJournal {
    fn commit(
        &mut self,
        records: Vec<Record>,
        _index_ceiling: u64,
        snapshot: Option<Vec<HeldRecord>>,
    ) -> Commit {
        for r in records {
            r.apply_to(&mut self.stored);
        }
        if let Some(mut snapshot) = snapshot {
            snapshot.sort_by_key(|h| h.index);
            let want: Vec<HeldRecord> = self.stored.values().cloned().collect();
            let seen = if snapshot == want {
                Ok(snapshot.iter().map(|h| h.index).collect())
            } else {
                Err(format!("snapshot {snapshot:?}, records add up to {want:?}"))
            };
            self.snapshots.lock().expect("snapshots").seen.push(seen);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn wants_snapshot(&self) -> bool {
        true
    }
}

/// The snapshot the driver hands a journal (what the etcd journal compacts
/// into, from the table, so that no journal keeps a copy of the holds) is
/// exactly the holds the journal's records add up to, a hold kept stored
/// through its lock-delay included.
#[tokio::test(start_paused = true)]
async fn the_snapshot_a_journal_gets_is_what_its_records_add_up_to() {
    let snapshots = std::sync::Arc::new(Mutex::new(Snapshots::default()));
    let engine = EmbeddedEngine::durable(
        EmbeddedConfig {
            clock: baton::engine::clock::Clock::starting_at(1_000_000),
            ..EmbeddedConfig::default()
        },
        Box::new(CheckingJournal {
            stored: Default::default(),
            snapshots: snapshots.clone(),
        }),
        Snapshot::default(),
    );
    // "a" expires after 100 ms and keeps the key for 500 ms more.
    let mut a = engine
        .wait(AcquireSpec {
            ttl_ms: 100,
            lock_delay_ms: 500,
            ..spec("a")
        })
        .await
        .expect("wait a");
    let Some(Ok(WaitUpdate::Acquired(a_grant))) = a.next().await else {
        panic!("a is granted");
    };
    let mut b = engine.wait(spec("b")).await.expect("wait b");
    assert!(matches!(b.next().await, Some(Ok(WaitUpdate::Acquired(_)))));
    let mut c = engine.wait(spec("c")).await.expect("wait c");
    let Some(Ok(WaitUpdate::Acquired(c_grant))) = c.next().await else {
        panic!("c is granted");
    };
    engine
        .release("c", baton::engine::Target::Index(c_grant.index))
        .await
        .expect("release c");
    // Past a's deadline, inside its delay: a is no holder, yet stored.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(engine.get("a").await.expect("get").holder.is_none());
    let _ = engine.wait(spec("d")).await.expect("wait d").next().await;
    let during = snapshots.lock().expect("snapshots").seen.len();
    // Past the delay: a is gone from the store too.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _ = engine.wait(spec("e")).await.expect("wait e").next().await;

    let seen = std::mem::take(&mut snapshots.lock().expect("snapshots").seen);
    assert!(seen.len() >= 5, "a snapshot with every batch: {seen:?}");
    let seen: Vec<Vec<u64>> = seen
        .into_iter()
        .map(|s| s.expect("a snapshot that differs from the records"))
        .collect();
    assert!(
        seen[..during]
            .last()
            .is_some_and(|s| s.contains(&a_grant.index)),
        "a hold in its lock-delay is part of the snapshot: {seen:?}"
    );
    assert!(
        seen.last().is_some_and(|s| !s.contains(&a_grant.index)),
        "a hold whose delay ended is not: {seen:?}"
    );
}
