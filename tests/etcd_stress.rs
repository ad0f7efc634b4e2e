//! Many clients on three gateways over one etcd, contending for one lock
//! with timeouts, disconnects and value joins mixed in: never two holders,
//! and fencing tokens only grow.

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use baton::proto::v1::{self as pb, release_request, wait_event};
use common::{Server, etcd::Etcd};
use tokio::sync::Mutex;

/// The ttl of every hold: far longer than a hold lasts here.
const HOLD_TTL_MS: u64 = 5_000;

/// The tokens granted so far.
#[derive(Default)]
struct Ledger {
    last_index: AtomicU64,
    grants: AtomicU64,
    gave_up: AtomicU64,
}

/// Entries believed held (with how many requests hold each), and shared
/// entries some member already released.
type Holders = (HashMap<u64, usize>, HashSet<u64>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_two_holders_across_three_gateways() {
    let etcd = Etcd::start();
    let gateways: Vec<Server> = (0..3)
        .map(|_| Server::etcd(&etcd, "/stress/", &[]))
        .collect();
    let ledger = Arc::new(Ledger::default());
    // Entries believed held (with how many joined requests hold each), and
    // the shared entries some member already released: a joined request
    // may learn of its grant only after another member released the entry,
    // which ended the hold for all of them; that late grant is not a hold.
    let holders: Arc<Mutex<Holders>> = Arc::default();
    let last_grant = Arc::new(Mutex::new(Instant::now()));
    let max_gap = Arc::new(Mutex::new(Duration::ZERO));
    let stop_at = Instant::now() + Duration::from_secs(8);
    let mut tasks = Vec::new();
    for client in 0..24usize {
        let url = gateways[client % 3].url.clone();
        let ledger = ledger.clone();
        let holders = holders.clone();
        let (last_grant, max_gap) = (last_grant.clone(), max_gap.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = pb::lock_client::LockClient::connect(url).await.unwrap();
            let mut round = 0u64;
            while Instant::now() < stop_at {
                round += 1;
                // Some requests share a value (and join), some give up soon,
                // some go away while queued.
                let value = if client % 4 == 0 {
                    "shared".to_owned()
                } else {
                    String::new()
                };
                let timeout_ms = round
                    .is_multiple_of(3)
                    .then_some(50 + (client as u64 * 7) % 200);
                let mut s = match c
                    .wait(pb::WaitRequest {
                        key: "mx".into(),
                        value: value.clone(),
                        // A request that goes away just as it is granted
                        // leaves a hold nobody releases; its ttl ends it.
                        ttl_ms: HOLD_TTL_MS,
                        timeout_ms,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(s) => s.into_inner(),
                    Err(e) => panic!("wait refused: {e:?}"),
                };
                let mut first = None;
                if round % 5 == 1 && client % 4 != 0 {
                    // Go away while queued.
                    match s.message().await {
                        Ok(Some(pb::WaitEvent {
                            event: Some(wait_event::Event::Queued(_)),
                        })) => {
                            drop(s);
                            continue;
                        }
                        other => first = Some(other),
                    }
                }
                let index = loop {
                    let next = match first.take() {
                        Some(m) => Ok(m),
                        None => tokio::time::timeout(Duration::from_secs(30), s.message()).await,
                    };
                    match next {
                        Err(_) => panic!("a waiter stalled"),
                        Ok(Err(e)) => {
                            // Timed out, or the shared entry was released.
                            assert!(
                                matches!(
                                    e.code(),
                                    tonic::Code::DeadlineExceeded | tonic::Code::Aborted
                                ),
                                "{e:?}"
                            );
                            ledger.gave_up.fetch_add(1, Ordering::Relaxed);
                            break None;
                        }
                        Ok(Ok(None)) => panic!("stream ended"),
                        Ok(Ok(Some(ev))) => match ev.event {
                            Some(wait_event::Event::Queued(_)) => continue,
                            Some(wait_event::Event::Acquired(a)) => break Some(a.index),
                            other => panic!("unexpected {other:?}"),
                        },
                    }
                };
                let Some(index) = index else { continue };
                let shared = !value.is_empty();
                {
                    // One entry holds at a time; requests joined to it
                    // (the shared value) hold it together.
                    let mut guard = holders.lock().await;
                    let (held, released) = &mut *guard;
                    let last = ledger.last_index.fetch_max(index, Ordering::SeqCst);
                    if !released.contains(&index) {
                        if let Some((&other, _)) = held.iter().find(|(i, _)| **i != index) {
                            panic!("two holders at once: {other} and {index}");
                        }
                        assert!(index >= last, "token {index} after {last}");
                        *held.entry(index).or_default() += 1;
                    }
                }
                ledger.grants.fetch_add(1, Ordering::Relaxed);
                {
                    let now = Instant::now();
                    let mut last = last_grant.lock().await;
                    let gap = now.duration_since(*last);
                    let mut max = max_gap.lock().await;
                    if gap > *max {
                        *max = gap;
                    }
                    *last = now;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                {
                    let mut guard = holders.lock().await;
                    let (held, released) = &mut *guard;
                    // The first of a joined group to release ends the hold
                    // for all of them.
                    if shared {
                        held.remove(&index);
                        released.insert(index);
                    } else if let Some(n) = held.get_mut(&index) {
                        *n -= 1;
                        if *n == 0 {
                            held.remove(&index);
                        }
                    }
                }
                match c
                    .release(pb::ReleaseRequest {
                        key: "mx".into(),
                        target: Some(release_request::Target::Index(index)),
                    })
                    .await
                {
                    Ok(_) => {}
                    Err(e) if shared && e.code() == tonic::Code::NotFound => {}
                    Err(e) => panic!("release failed: {e:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let grants = ledger.grants.load(Ordering::Relaxed);
    assert!(grants > 20, "only {grants} grants");
    // Everyone is gone: so is every entry.
    let mut c = gateways[0].lock().await;
    let mut empty = false;
    for _ in 0..200 {
        let v = c
            .get(pb::GetRequest { key: "mx".into() })
            .await
            .unwrap()
            .into_inner();
        if v.holder.is_none() && v.queue.is_empty() {
            empty = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(empty, "entries left behind after every client went");
    // For the record: a request that goes away in the instant its entry is
    // granted leaves a hold that lives by its ttl (HOLD_TTL_MS), which shows
    // here as a gap of about that long.
    eprintln!(
        "{grants} grants, {} gave up, longest time without a grant {:?}",
        ledger.gave_up.load(Ordering::Relaxed),
        *max_gap.lock().await
    );
}
