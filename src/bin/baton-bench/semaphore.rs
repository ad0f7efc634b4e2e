//! The semaphore handoff scenario: `clients` contend for one key with limit
//! `limit` (a semaphore), each acquiring and releasing in a loop, so up to
//! `limit` hold at once and every release hands a slot to the next waiter.
//! It reports pairs per second and the time from a release being sent to the
//! next grant arriving (releases and grants matched in order). baton's Lock
//! API only (etcd has no semaphore).

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow, bail};
use baton::proto::v1::{self as pb, lock_client::LockClient, release_request, wait_event};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;

use crate::{
    report::Row,
    scenarios::Phase,
    target::{Target, TargetKind},
};

/// The name its rows carry.
pub const NAME: &str = "semaphore handoff (one key)";

/// Whether the target serves baton's Lock API (the etcd ones do not, and
/// the election target measures elections).
pub fn applies(kind: TargetKind) -> bool {
    matches!(
        kind,
        TargetKind::Memory
            | TargetKind::Durable
            | TargetKind::BatonEtcd
            | TargetKind::BatonEtcdFollower
    )
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// Acquires a slot of `key` and returns its index.
async fn acquire(
    lock: &mut LockClient<tonic::transport::Channel>,
    key: &str,
    limit: u32,
) -> Result<u64> {
    let mut s = lock
        .wait(pb::WaitRequest {
            key: key.into(),
            limit,
            ..Default::default()
        })
        .await?
        .into_inner();
    while let Some(ev) = s.message().await? {
        if let Some(wait_event::Event::Acquired(a)) = ev.event {
            return Ok(a.index);
        }
    }
    bail!("wait stream ended before acquisition")
}

/// Runs the scenario: `clients` loops on one key of `limit` slots.
pub async fn handoff(
    target: &Target,
    clients: usize,
    limit: u32,
    phase: Phase,
    run: u64,
) -> Result<Row> {
    let key = format!("bench/sem/{run}");
    // Releases not yet matched with the grant they made room for.
    let releases: Arc<Mutex<VecDeque<Instant>>> = Arc::new(Mutex::new(VecDeque::new()));
    let start = Instant::now();
    let measure_from = start + phase.warmup;
    let stop = measure_from + phase.duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let channel = target.channel().await?;
        let (key, releases) = (key.clone(), releases.clone());
        tasks.push(tokio::spawn(async move {
            let mut lock = LockClient::new(channel);
            let mut handoffs = histogram();
            let mut pairs = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= stop {
                    break;
                }
                let index = acquire(&mut lock, &key, limit).await?;
                let granted = Instant::now();
                if let Some(released) = releases.lock().await.pop_front()
                    && granted >= measure_from
                {
                    let _ = handoffs.record(micros(granted.saturating_duration_since(released)));
                }
                // Stamped as the release is sent: the grant it makes room
                // for can reach its waiter before the release's own reply
                // reaches us, so a stamp taken after the reply would be
                // matched with a later grant and skew the figure.
                releases.lock().await.push_back(Instant::now());
                lock.release(pb::ReleaseRequest {
                    key: key.clone(),
                    target: Some(release_request::Target::Index(index)),
                })
                .await?;
                if t0 >= measure_from {
                    pairs += 1;
                }
            }
            Ok::<_, anyhow::Error>((handoffs, pairs))
        }));
    }
    let mut total = histogram();
    let mut pairs = 0u64;
    for t in tasks {
        let (h, n) = t.await.map_err(|e| anyhow!("client task: {e}"))??;
        let _ = total.add(&h);
        pairs += n;
    }
    let rate = pairs as f64 / phase.duration.as_secs_f64();
    Ok(Row::latency(NAME, target.kind, clients, rate, &total))
}
