//! The scenarios of a run. Each returns rows for the report; none asserts
//! anything about speed.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;

use crate::{
    report::{Row, RssBurst},
    target::{Session, Target},
};

/// Timing of a run's measured phase.
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    /// Not measured, to warm caches and connections.
    pub warmup: Duration,
    /// Measured.
    pub duration: Duration,
}

fn histogram() -> Histogram<u64> {
    // Microseconds from 1 us to 10 min, three significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// Sessions for `clients` clients: one connection per `per` clients.
async fn sessions(target: &Target, clients: usize, per: usize) -> Result<Vec<Arc<dyn Session>>> {
    let mut out = Vec::new();
    for _ in 0..clients.div_ceil(per.max(1)) {
        out.push(target.session().await?);
    }
    Ok(out)
}

/// Runs `op` in `clients` loops for the phase; returns the merged latency
/// histogram of the measured part and the operations per second.
async fn closed_loop<F, Fut>(
    target: &Target,
    clients: usize,
    phase: Phase,
    op: F,
) -> Result<(Histogram<u64>, f64)>
where
    F: Fn(Arc<dyn Session>, usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let sessions = sessions(target, clients, 1).await?;
    let start = Instant::now();
    let measure_from = start + phase.warmup;
    let stop = measure_from + phase.duration;
    let mut tasks = Vec::new();
    for (i, s) in sessions.into_iter().enumerate() {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut n = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= stop {
                    break;
                }
                op(s.clone(), i, n).await?;
                n += 1;
                if t0 >= measure_from {
                    let _ = h.record(micros(t0.elapsed()));
                }
            }
            Ok::<_, anyhow::Error>(h)
        }));
    }
    let mut total = histogram();
    for t in tasks {
        let h = t.await.map_err(|e| anyhow!("client task: {e}"))??;
        let _ = total.add(&h);
    }
    let secs = phase.duration.as_secs_f64();
    let rate = total.len() as f64 / secs;
    Ok((total, rate))
}

/// Scenario 1, uncontended: each client on its own key, acquire+release pairs.
pub async fn uncontended(target: &Target, clients: usize, phase: Phase, run: u64) -> Result<Row> {
    let (h, rate) = closed_loop(target, clients, phase, move |s, i, _| async move {
        let key = format!("bench/u/{run}/{i}");
        let held = s.acquire(&key, 0).await?;
        s.release(&key, held).await
    })
    .await?;
    Ok(Row::latency("uncontended", target.kind, clients, rate, &h))
}

/// Scenario 5, the floor: a gRPC health check per operation at the same concurrency.
pub async fn floor(target: &Target, clients: usize, phase: Phase) -> Result<Row> {
    let (h, rate) = closed_loop(
        target,
        clients,
        phase,
        |s, _, _| async move { s.ping().await },
    )
    .await?;
    Ok(Row::latency(
        "floor (health check)",
        target.kind,
        clients,
        rate,
        &h,
    ))
}

/// Scenario 2, handoff: `clients` on one key. Reports pairs per second and the time
/// from one holder's release returning to the next grant arriving.
pub async fn handoff(target: &Target, clients: usize, phase: Phase, run: u64) -> Result<Row> {
    let last_release: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let handoffs = Arc::new(Mutex::new(histogram()));
    let measure_from = Instant::now() + phase.warmup;
    let key = format!("bench/h/{run}");
    let (lr, hs) = (last_release.clone(), handoffs.clone());
    let (_, rate) = closed_loop(target, clients, phase, move |s, _, _| {
        let (lr, hs, key) = (lr.clone(), hs.clone(), key.clone());
        async move {
            let held = s.acquire(&key, 0).await?;
            let granted = Instant::now();
            if let Some(released) = lr.lock().await.take()
                && granted >= measure_from
            {
                let _ = hs
                    .lock()
                    .await
                    .record(micros(granted.saturating_duration_since(released)));
            }
            s.release(&key, held).await?;
            *lr.lock().await = Some(Instant::now());
            Ok(())
        }
    })
    .await?;
    let h = handoffs.lock().await;
    Ok(Row::latency(
        "handoff (one key)",
        target.kind,
        clients,
        rate,
        &h,
    ))
}

/// Scenario 3, many waiters: `waiters` blocked on `keys` keys. Reports server memory
/// per waiter and how long granting them all in turn takes.
pub async fn many_waiters(target: &Target, waiters: usize, keys: usize, run: u64) -> Result<Row> {
    let holder = target.session().await?;
    let mut held = Vec::new();
    for k in 0..keys {
        let key = format!("bench/w/{run}/{k}");
        held.push((key.clone(), holder.acquire(&key, 0).await?));
    }
    let before = target.rss_kib();
    let sessions = sessions(target, waiters, 100).await?;
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..waiters {
        let s = sessions[w / 100].clone();
        let key = format!("bench/w/{run}/{}", w % keys);
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let h = s.acquire(&key, 0).await?;
            s.release(&key, h).await?;
            done.fetch_add(1, Ordering::Relaxed);
            Ok::<_, anyhow::Error>(())
        }));
    }
    // Let every wait reach the server: memory stops growing.
    let peak = settled_rss(target).await;
    let start = Instant::now();
    for (key, h) in held {
        holder.release(&key, h).await?;
    }
    for t in tasks {
        tokio::time::timeout(crate::target::STUCK, t)
            .await
            .context("a waiter was never granted")?
            .map_err(|e| anyhow!("waiter task: {e}"))??;
    }
    let drain = start.elapsed();
    // The burst has left: whatever the server keeps now, it keeps.
    drop(sessions);
    let after = settled_rss(target).await;
    let rss = RssBurst {
        before,
        peak,
        after,
    };
    Ok(Row::waiters(target.kind, waiters, rss, drain))
}

/// The server's RSS once it stops changing by more than 2 % in half a
/// second (at most 15 s).
async fn settled_rss(target: &Target) -> u64 {
    let mut last = 0;
    let settle = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = target.rss_kib();
        if (now as i64 - last as i64).unsigned_abs() * 50 <= now.max(1)
            || settle.elapsed() > Duration::from_secs(15)
        {
            return now;
        }
        last = now;
    }
}

/// Scenario 4, expiry accuracy: `holders` keys held with `ttl_ms`, one waiter behind
/// each; how late after the holder's deadline the waiter is granted.
pub async fn expiry(target: &Target, holders: usize, ttl_ms: u64, run: u64) -> Result<Row> {
    let sessions = sessions(target, holders * 2, 100).await?;
    let mut tasks = Vec::new();
    for i in 0..holders {
        let s = sessions[(2 * i) / 100].clone();
        let key = format!("bench/e/{run}/{i}");
        tasks.push(tokio::spawn(async move {
            let h = s.acquire(&key, ttl_ms).await?;
            let deadline = h
                .deadline_ms
                .ok_or_else(|| anyhow!("a hold with a ttl has no deadline"))?;
            let w = s.acquire(&key, 0).await?;
            let late = crate::now_ms().saturating_sub(deadline);
            s.release(&key, w).await?;
            Ok::<_, anyhow::Error>(late)
        }));
    }
    let mut h = histogram();
    for t in tasks {
        let late_ms = tokio::time::timeout(crate::target::STUCK, t)
            .await
            .context("an expiry never happened")?
            .map_err(|e| anyhow!("expiry task: {e}"))??;
        let _ = h.record(late_ms.max(1) * 1000);
    }
    Ok(Row::latency(
        "expiry lateness",
        target.kind,
        holders,
        0.0,
        &h,
    ))
}

/// The disk's own pace: small write + fsync in a loop, in the directory
/// the durable target uses (the system temp dir). One fsync per
/// acquire+release pair could go no faster than this; group commit should.
pub fn disk_fsync(phase: Phase) -> Result<Row> {
    use std::io::Write;
    let dir = tempfile::tempdir()?;
    let mut f = std::fs::File::create(dir.path().join("probe"))?;
    let mut h = histogram();
    let start = Instant::now();
    while start.elapsed() < phase.duration {
        let t0 = Instant::now();
        f.write_all(&[0u8; 4096])?;
        f.sync_data()?;
        let _ = h.record(micros(t0.elapsed()));
    }
    let rate = h.len() as f64 / start.elapsed().as_secs_f64();
    let mut row = Row::latency(
        "disk fsync (one writer)",
        crate::target::TargetKind::Durable,
        1,
        rate,
        &h,
    );
    row.target = "disk (4 KiB write + fdatasync)";
    Ok(row)
}

/// A reference row for the etcd targets: one etcd put after another, by one
/// client, on an etcd of its own. A handoff on one key over etcd is one etcd
/// write after another (the release and the next grant commit together), so
/// this is the ceiling of that scenario's rate on this machine, measured in
/// the same run.
pub async fn etcd_put(phase: Phase) -> Result<Row> {
    let dir = tempfile::tempdir()?;
    let (_etcd, url) = crate::procs::start_etcd(&dir.path().join("etcd"))?;
    let mut client = etcd_client::Client::connect([url.as_str()], None).await?;
    let began = Instant::now();
    // etcd elects itself leader first; wait for the first put to land.
    while client.put("bench/put", "warm", None).await.is_err() {
        if began.elapsed() > Duration::from_secs(30) {
            return Err(anyhow!("etcd never accepted a put"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut h = histogram();
    let start = Instant::now();
    let measure_from = start + phase.warmup;
    let stop = measure_from + phase.duration;
    let mut n = 0u64;
    loop {
        let t0 = Instant::now();
        if t0 >= stop {
            break;
        }
        client.put("bench/put", n.to_string(), None).await?;
        n += 1;
        if t0 >= measure_from {
            let _ = h.record(micros(t0.elapsed()));
        }
    }
    let rate = h.len() as f64 / phase.duration.as_secs_f64();
    let mut row = Row::latency(
        "etcd put (one writer)",
        crate::target::TargetKind::EtcdV3lock,
        1,
        rate,
        &h,
    );
    row.target = "etcd (one put after another)";
    Ok(row)
}

/// The fail-over scenario: a client holds a lock through the follower and
/// renews it every 100 ms; the primary gateway is killed with SIGKILL. Two
/// rows: the time from the kill to the first new grant through the
/// survivor (polled every 10 ms with try-once acquires), and the latency
/// of the holder's renewals from a second before the kill to three after
/// the first grant (a renew that fails is retried; its latency runs until
/// one succeeds).
pub async fn failover(target: &mut Target, run: u64) -> Result<Vec<Row>> {
    use baton::proto::v1::{self as pb, lock_client::LockClient, renew_request, wait_event};
    let channel = tonic::transport::Channel::from_shared(target.url().to_owned())?
        .connect()
        .await?;
    let lock = LockClient::new(channel);
    let key = format!("bench/failover/{run}");
    let mut c = lock.clone();
    let mut s = c
        .wait(pb::WaitRequest {
            key: key.clone(),
            value: String::new(),
            ttl_ms: 10_000,
            timeout_ms: None,
            ..Default::default()
        })
        .await?
        .into_inner();
    let index = match s.message().await?.and_then(|e| e.event) {
        Some(wait_event::Event::Acquired(a)) => a.index,
        other => anyhow::bail!("the fail-over lock was not granted: {other:?}"),
    };
    let renewals = Arc::new(Mutex::new(histogram()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renewer = {
        let (mut c, key, renewals, stop) =
            (lock.clone(), key.clone(), renewals.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                loop {
                    let r = c
                        .renew(pb::RenewRequest {
                            key: key.clone(),
                            target: Some(renew_request::Target::Index(index)),
                            ttl_ms: 10_000,
                        })
                        .await;
                    match r {
                        Ok(_) => break,
                        Err(e) if e.code() == tonic::Code::NotFound => {
                            return Err(anyhow::anyhow!("the hold was lost across the fail-over"));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                    if started.elapsed() > Duration::from_secs(9) {
                        return Err(anyhow::anyhow!("no renew succeeded for 9 s"));
                    }
                }
                let _ = renewals.lock().await.record(micros(started.elapsed()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok::<_, anyhow::Error>(())
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    if !target.kill_primary() {
        anyhow::bail!("the target has no primary to kill");
    }
    let killed = Instant::now();
    let mut n = 0u64;
    let first_grant = loop {
        n += 1;
        let mut c = lock.clone();
        let attempt = c
            .wait(pb::WaitRequest {
                key: format!("bench/failover/{run}/probe/{n}"),
                value: String::new(),
                ttl_ms: 0,
                timeout_ms: Some(0),
                ..Default::default()
            })
            .await;
        if let Ok(s) = attempt {
            let mut s = s.into_inner();
            if let Ok(Some(pb::WaitEvent {
                event: Some(wait_event::Event::Acquired(_)),
            })) = s.message().await
            {
                break killed.elapsed();
            }
        }
        if killed.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("no grant within 60 s of killing the primary");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    renewer.await??;
    let mut first = histogram();
    let _ = first.record(micros(first_grant));
    let kind = target.kind;
    let h = renewals.lock().await;
    Ok(vec![
        Row::latency("fail-over: kill -9 to first grant", kind, 1, 0.0, &first),
        Row::latency("fail-over: renew latency across it", kind, 1, 0.0, &h),
    ])
}
