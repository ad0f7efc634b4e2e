//! The primary's election and its etcd journal, against a real etcd: one
//! winner at a time, batches that come back on restore (inline, in parts,
//! after compaction), a fence that refuses a deposed primary's writes, and
//! a term that ends when the lease can no longer be kept.

mod common;

use std::time::{Duration, Instant};

use baton::etcd::{
    Endpoints, EtcdConfig,
    journal::{COMPACT_EVERY, EtcdJournal, MAX_PART_BYTES},
    primary::{Election, Leadership},
};
use baton::store::{HeldRecord, Journal, Record, StoreError};
use common::etcd::Etcd;
use etcd_client::{Client, GetOptions};
use futures::StreamExt;

const TIMEOUT: Duration = Duration::from_secs(5);

/// What the gateway talks to etcd through, over this one member.
fn endpoints(etcd: &Etcd, timeout: Duration) -> Endpoints {
    EtcdConfig {
        endpoints: vec![etcd.url.clone()],
        timeout,
        ..EtcdConfig::default()
    }
    .endpoints()
    .expect("endpoints")
}

async fn client(etcd: &Etcd) -> Client {
    Client::connect([etcd.url.as_str()], None)
        .await
        .expect("connect to etcd")
}

fn held(index: u64, key: &str, value: Option<String>) -> HeldRecord {
    HeldRecord {
        key: key.into(),
        index,
        value,
        ttl_ms: 60_000,
        acquired_at: 1_000 + index,
        deadline: Some(61_000 + index),
        limit: 1,
        lock_delay_ms: 0,
    }
}

/// Commits one batch and waits until it is in.
async fn commit(
    mut journal: EtcdJournal,
    records: Vec<Record>,
    ceiling: u64,
) -> (EtcdJournal, Result<(), StoreError>) {
    let r = journal.commit(records, ceiling, None).await;
    (journal, r)
}

/// A primary alone under `prefix`: its endpoints, the term it won, and its
/// journal with up to `depth` commits in flight.
async fn primary_journal(
    etcd: &Etcd,
    prefix: &str,
    depth: usize,
) -> (Endpoints, Leadership, EtcdJournal) {
    let e = endpoints(etcd, TIMEOUT);
    let term = Election::new(e.clone(), prefix, 5)
        .try_win("http://a:1")
        .await
        .expect("etcd")
        .expect("wins");
    let (journal, _) = EtcdJournal::open(e.clone(), prefix, term.fence.clone())
        .await
        .expect("open");
    (e, term, journal.with_depth(depth))
}

/// How many keys the journal's log under `/j/` has.
async fn log_keys(c: &Client) -> usize {
    c.clone()
        .get(
            "/j/journal/log/",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .expect("etcd")
        .kvs()
        .len()
}

fn sorted(mut holds: Vec<HeldRecord>) -> Vec<HeldRecord> {
    holds.sort_by_key(|h| h.index);
    holds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_primary_at_a_time_and_the_journal_survives_it() {
    let etcd = Etcd::start();
    let c = client(&etcd).await;
    let e = endpoints(&etcd, TIMEOUT);
    let a = Election::new(e.clone(), "/j/", 5);
    let b = Election::new(endpoints(&etcd, TIMEOUT), "/j/", 5);
    let term_a = a
        .try_win("http://a:1")
        .await
        .expect("etcd")
        .expect("a wins");
    assert!(
        b.try_win("http://b:1").await.expect("etcd").is_none(),
        "b must lose while a holds"
    );
    let (now, _) = b.current().await.expect("etcd");
    assert_eq!(now.expect("a primary").url, "http://a:1");

    // A's journal: batches, one of them too large for one etcd request.
    let (journal, snapshot) = EtcdJournal::open(e.clone(), "/j/", term_a.fence.clone())
        .await
        .expect("open");
    assert!(snapshot.holds.is_empty());
    let (journal, r) = commit(
        journal,
        vec![
            Record::Held(held(1, "x", None)),
            Record::Held(held(2, "y", Some("v".into()))),
        ],
        1025,
    )
    .await;
    r.expect("first batch");
    let (journal, r) = commit(journal, vec![Record::Removed { index: 1 }], 1025).await;
    r.expect("second batch");
    let big: Vec<Record> = (10..1510)
        .map(|i| Record::Held(held(i, &format!("big/{i}"), Some("x".repeat(1000)))))
        .collect();
    let mut want: Vec<HeldRecord> = vec![held(2, "y", Some("v".into()))];
    want.extend((10..1510).map(|i| held(i, &format!("big/{i}"), Some("x".repeat(1000)))));
    let (mut journal, r) = commit(journal, big, 4000).await;
    r.expect("a batch of 1.5 MB goes in parts");
    let parts = log_keys(&c).await;
    assert!(
        parts > 3,
        "the large batch was written in parts ({parts} log keys); MAX_PART_BYTES is {MAX_PART_BYTES}"
    );

    let (_, restored) = EtcdJournal::open(e.clone(), "/j/", term_a.fence.clone())
        .await
        .expect("reopen");
    assert_eq!(sorted(restored.holds), want);
    assert_eq!(restored.index_ceiling, 4000);

    // Compaction keeps the state and empties the log.
    journal.compact(want.clone(), 4000).await.expect("compact");
    let log = log_keys(&c).await;
    assert_eq!(log, 0, "compaction leaves no batch behind");
    let (journal, r) = commit(journal, vec![Record::Removed { index: 2 }], 4000).await;
    r.expect("a batch after compaction");
    let (_, restored) = EtcdJournal::open(e.clone(), "/j/", term_a.fence.clone())
        .await
        .expect("reopen after compaction");
    assert_eq!(sorted(restored.holds), want[1..].to_vec());

    // A resigns; B wins a new term, and A's journal can no longer write.
    a.resign(&term_a).await;
    assert!(term_a.is_lost());
    let term_b = b
        .try_win("http://b:1")
        .await
        .expect("etcd")
        .expect("b wins now");
    assert_ne!(term_b.fence.create_revision, term_a.fence.create_revision);
    let (_, r) = commit(journal, vec![Record::Removed { index: 10 }], 4000).await;
    assert!(
        matches!(r, Err(StoreError::Fenced(_))),
        "a deposed primary's write must be refused, got {r:?}"
    );
    let (journal_b, restored) = EtcdJournal::open(e.clone(), "/j/", term_b.fence.clone())
        .await
        .expect("b opens");
    assert_eq!(
        restored.holds.len(),
        1500,
        "the refused write changed nothing"
    );
    let (_, r) = commit(journal_b, vec![Record::Removed { index: 10 }], 4000).await;
    r.expect("b writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_term_ends_before_its_lease_can_have_lapsed_when_etcd_is_gone() {
    let mut etcd = Etcd::start();
    let e = Election::new(endpoints(&etcd, Duration::from_secs(1)), "/l/", 2);
    let term = e.try_win("http://a:1").await.expect("etcd").expect("wins");
    // Kept alive well past its ttl while etcd is up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!term.is_lost(), "the lease must be kept alive");
    etcd.stop();
    let stopped = Instant::now();
    // By the time the lease may have lapsed (2 s after the last keep-alive
    // etcd acknowledged, so at most 2 s after etcd went away) the term is
    // no longer valid: read from the clock, whatever the tasks are doing.
    tokio::time::sleep_until((stopped + Duration::from_millis(2_010)).into()).await;
    assert!(
        !term.is_valid(),
        "the term was still valid 2 s after etcd went away; the lease may have lapsed"
    );
    tokio::time::timeout(Duration::from_secs(5), term.lost())
        .await
        .expect("the term must end once the lease cannot be renewed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_compacts_etcds_history() {
    let etcd = Etcd::start();
    let server = common::Server::etcd(
        &etcd,
        "/compact/",
        &["--etcd-compaction-interval-secs", "1"],
    );
    common::etcd::wait_for_role(&server, "primary");
    let mut c = server.lock().await;
    // Every grant and release is a batch, and so a revision, in etcd.
    for _ in 0..20 {
        let (_s, index) = common::acquire(&mut c, "churn", "", 0).await;
        common::release(&mut c, "churn", index).await;
    }
    let mut kv = client(&etcd).await;
    let compacted = common::eventually(Duration::from_secs(10), || {
        let mut kv = kv.clone();
        async move {
            let old = kv
                .get(
                    "/compact/",
                    Some(GetOptions::new().with_prefix().with_revision(2)),
                )
                .await;
            matches!(old, Err(e) if e.to_string().contains("compacted"))
        }
    })
    .await;
    assert!(compacted, "etcd's early revisions were never compacted");
    // The lock service goes on as before.
    let (_s, index) = common::acquire(&mut c, "churn", "", 0).await;
    assert!(index > 0);
    let _ = kv.status().await.expect("etcd still serves");
}

/// Commits in flight together (`--etcd-journal-depth`) all come back in
/// order; a batch that landed after a gap (the one before it failed, so
/// the primary stopped and nobody heard of either) never counts, and the
/// next primary deletes it and its parts before it writes under those
/// numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_flight_together_count_only_in_order() {
    let etcd = Etcd::start();
    let c = client(&etcd).await;
    let (e, term, mut journal) = primary_journal(&etcd, "/d/", 4).await;
    let commits: Vec<_> = (1..=4u64)
        .map(|i| {
            journal.commit(
                vec![Record::Held(held(i, &format!("k{i}"), None))],
                1025,
                None,
            )
        })
        .collect();
    for r in futures::future::join_all(commits).await {
        r.expect("a commit in flight with others");
    }
    let (_, restored) = EtcdJournal::open(e.clone(), "/d/", term.fence.clone())
        .await
        .expect("reopen");
    let want: Vec<HeldRecord> = (1..=4).map(|i| held(i, &format!("k{i}"), None)).collect();
    assert_eq!(sorted(restored.holds), want);

    // Batches 6 and 7 (7 in parts) landed, 5 never did.
    let mut raw = c.clone();
    let entry = |seq: u64| format!("/d/journal/log/{seq:020}");
    raw.put(
        entry(6),
        r#"{"c":9000,"h":[{"k":"gap","i":60,"t":1000,"a":1,"d":2}]}"#,
        None,
    )
    .await
    .expect("etcd");
    raw.put(
        format!("{}/000000", entry(7)),
        r#"{"c":9000,"h":[{"k":"gap","i":70,"t":1000,"a":1,"d":2}]}"#,
        None,
    )
    .await
    .expect("etcd");
    raw.put(entry(7), r#"{"c":9000,"parts":1}"#, None)
        .await
        .expect("etcd");
    let (journal, restored) = EtcdJournal::open(e.clone(), "/d/", term.fence.clone())
        .await
        .expect("reopen past a gap");
    assert_eq!(sorted(restored.holds), want, "batches after a gap count");
    assert_eq!(restored.index_ceiling, 1025);
    assert_eq!(
        log_keys_under(&c, "/d/").await,
        4,
        "only the four batches that count stay"
    );
    // The next batch is 5, and 6 and 7 are gone: restore sees only it.
    let (_, r) = commit(journal, vec![Record::Removed { index: 1 }], 1025).await;
    r.expect("batch 5");
    let (_, restored) = EtcdJournal::open(e.clone(), "/d/", term.fence.clone())
        .await
        .expect("reopen");
    assert_eq!(sorted(restored.holds), want[1..].to_vec());
}

/// How many keys the journal's log under `prefix` has.
async fn log_keys_under(c: &Client, prefix: &str) -> usize {
    c.clone()
        .get(
            format!("{prefix}journal/log/"),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .expect("etcd")
        .kvs()
        .len()
}

/// The journal asks for a snapshot every `COMPACT_EVERY` batches and
/// compacts itself into it while later batches are in flight; a restore
/// after it has every hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_compacts_itself_with_commits_in_flight() {
    let etcd = Etcd::start();
    let c = client(&etcd).await;
    let (e, term, mut journal) = primary_journal(&etcd, "/cj/", 4).await;
    let batches = COMPACT_EVERY + 100;
    // Polled together, as the engine's driver polls its commits.
    let mut in_flight = futures::stream::FuturesOrdered::new();
    // The holds as the engine's table would have them.
    let mut model = std::collections::BTreeMap::new();
    let mut snapshots = 0;
    for i in 1..=batches {
        // Every batch holds a new index; every other one drops the one
        // before it.
        let mut records = vec![Record::Held(held(i, &format!("k{i}"), None))];
        if i % 2 == 0 {
            records.push(Record::Removed { index: i - 1 });
        }
        for r in &records {
            r.clone().apply_to(&mut model);
        }
        let snapshot = journal.wants_snapshot().then(|| {
            snapshots += 1;
            model.values().cloned().collect()
        });
        in_flight.push_back(journal.commit(records, 1_000_000, snapshot));
        if in_flight.len() == 4 {
            in_flight.next().await.expect("one").expect("commit");
        }
    }
    while let Some(r) = in_flight.next().await {
        r.expect("commit");
    }
    assert_eq!(snapshots, 1, "one snapshot asked for in {batches} batches");
    let log = log_keys_under(&c, "/cj/").await;
    assert!(
        log < 200,
        "{log} batches in the log after {batches}: the journal never compacted"
    );
    let (_, restored) = EtcdJournal::open(e.clone(), "/cj/", term.fence.clone())
        .await
        .expect("reopen");
    let want: Vec<HeldRecord> = (1..=batches)
        .filter(|i| i % 2 == 0)
        .map(|i| held(i, &format!("k{i}"), None))
        .collect();
    assert_eq!(sorted(restored.holds), want);
    assert_eq!(restored.index_ceiling, 1_000_000);
}
