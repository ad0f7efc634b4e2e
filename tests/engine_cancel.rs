//! Going away is total, checked through the real driver in-process: thousands
//! of waits dropped at random moments (before the command is applied, while
//! it is applied, while the batch is being committed, after the reply, after
//! the grant), mixed with renews and releases, in memory and on the durable
//! store. Afterwards nothing is left that nobody waits on or heard of.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use baton::engine::{
    AcquireSpec, Engine, Target, WaitUpdate,
    embedded::{EmbeddedConfig, EmbeddedEngine},
};
use baton::store::redb_journal::RedbJournal;
use futures::StreamExt;

const KEYS: [&str; 4] = ["busy", "a", "b", "c"];

fn spec(key: &str, value: Option<String>, ttl_ms: u64, timeout_ms: Option<u64>) -> AcquireSpec {
    AcquireSpec {
        key: key.into(),
        value,
        ttl_ms,
        timeout_ms,
        limit: 1,
        lock_delay_ms: 0,
    }
}

/// Runs `requests` abandoned waits against `engine` and checks what is left.
async fn churn(engine: Arc<dyn Engine>, requests: usize, seed: u64) {
    // "busy" is held for the whole run by a waiter that stays connected, and
    // renewed all the time, so the engine is never idle.
    let mut holder = engine
        .wait(spec("busy", None, 0, None))
        .await
        .expect("wait");
    let Some(Ok(WaitUpdate::Acquired(g))) = holder.next().await else {
        panic!("busy must be free at the start");
    };
    let busy_index = g.index;
    let stop = tokio_util::sync::CancellationToken::new();
    let renewer = {
        let engine = engine.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let _ = engine
                    .renew("busy", Target::Index(busy_index), 0)
                    .await
                    .expect("renew the busy holder");
            }
        })
    };

    // Indexes whose grant a request heard, and did not release for sure.
    let heard = Arc::new(Mutex::new(BTreeSet::new()));
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tasks = Vec::with_capacity(requests);
    for n in 0..requests {
        let engine = engine.clone();
        let heard = heard.clone();
        let key = KEYS[rng.usize(..KEYS.len())];
        // Some requests share a value, so joins are abandoned too.
        let value = rng.bool().then(|| format!("v{}", rng.u8(..4)));
        let ttl_ms = [0, 60_000][rng.usize(..2)];
        let timeout_ms = [None, Some(0), Some(3)][rng.usize(..3)];
        let give_up = Duration::from_micros(rng.u64(..10_000));
        let release_after = rng.bool();
        tasks.push(tokio::spawn(async move {
            let work = async {
                let mut s = engine.wait(spec(key, value, ttl_ms, timeout_ms)).await?;
                while let Some(step) = s.next().await {
                    if let WaitUpdate::Acquired(g) = step? {
                        heard.lock().unwrap().insert(g.index);
                        if release_after {
                            engine.release(key, Target::Index(g.index)).await?;
                            heard.lock().unwrap().remove(&g.index);
                        }
                        return Ok(());
                    }
                }
                Ok::<_, baton::engine::EngineError>(())
            };
            // Every fourth request gives up without ever being polled: its
            // future is dropped before the command is even sent.
            if n % 4 == 0 {
                drop(work);
                return;
            }
            let _ = tokio::time::timeout(give_up, work).await;
        }));
        if n % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
    stop.cancel();
    renewer.await.expect("renewer");

    // A request dropped before its reply left has its registration
    // dropped by the engine itself when the batch's commit completes, so
    // that withdrawal comes a batch later: poll a few batches (a bound, not
    // a timing assumption: each stats call is a batch of its own).
    let heard = heard.lock().unwrap().clone();
    let mut stats = engine.stats().await.expect("stats");
    for _ in 0..100 {
        if stats.waiters == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        stats = engine.stats().await.expect("stats");
    }
    assert_eq!(
        stats.waiters, 1,
        "only the busy holder's stream still waits: {stats:?}"
    );
    let mut left = BTreeSet::new();
    for key in KEYS {
        let view = engine.get(key).await.expect("get");
        assert!(
            view.queue.is_empty(),
            "{key}: queued entries nobody waits on: {:?}",
            view.queue
        );
        if let Some(h) = view.holder {
            left.insert(h.index);
        }
    }
    assert!(left.contains(&busy_index));
    for index in &left {
        assert!(
            *index == busy_index || heard.contains(index),
            "index {index} holds, but no request heard it was granted (left {left:?}, heard {heard:?})"
        );
    }

    // The busy holder goes: no phantom takes its place.
    drop(holder);
    engine
        .release("busy", Target::Index(busy_index))
        .await
        .expect("release busy");
    let view = engine.get("busy").await.expect("get");
    assert!(
        view.holder.is_none(),
        "a phantom holds busy: {:?}",
        view.holder
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_waits_leave_nothing_in_memory() {
    for seed in 0..3 {
        let engine: Arc<dyn Engine> =
            Arc::new(EmbeddedEngine::in_memory(EmbeddedConfig::default()));
        churn(engine, 3000, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_waits_leave_nothing_in_the_durable_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (journal, snapshot) = RedbJournal::open(dir.path()).expect("open store");
        let engine: Arc<dyn Engine> = Arc::new(EmbeddedEngine::durable(
            EmbeddedConfig::default(),
            Box::new(journal),
            snapshot,
        ));
        churn(engine.clone(), 2000, 7).await;
        // Let the engine task finish its last commit and let go of the store.
        drop(engine);
    }
    // What was stored agrees: no hold but those somebody heard of. The
    // store is reopened once the previous engine task has let it go.
    let mut tries = 0;
    let reopened = loop {
        match RedbJournal::open(dir.path()) {
            Ok(r) => break r,
            Err(e) if tries < 250 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the store did not reopen within 5 s: {e}"),
        }
    };
    let (_journal, snapshot) = reopened;
    assert!(
        snapshot.holds.iter().all(|h| h.key != "busy"),
        "the released busy lock was stored as held: {:?}",
        snapshot.holds
    );
}
