//! Precise expiry of holds.
//!
//! etcd leases count whole seconds and etcd enforces a minimum TTL (about
//! two seconds with default settings), while baton's ttl is in milliseconds.
//! So the gateway that grants or renews a hold also sets a timer for the
//! deadline it told the client, on its own monotonic clock, and removes the
//! hold then (with an `expired` tombstone, handing the lock on at once) if
//! the hold was not changed since: a renew through any gateway moves the
//! key's mod revision and turns the old timer into a no-op. The hold's lease
//! (the ttl rounded up to seconds, plus one) is the backstop when that
//! gateway is gone, so a hold never ends before its ttl, and ends at most
//! about a second and a half late when no gateway is left to time it.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Weak,
    time::Duration,
};

use tokio::sync::mpsc;

use super::{ops::Ctx, record::Reason};
use crate::engine::{Target, UnixMillis, clock::Clock};

/// How long to wait before trying an expiry again when etcd did not answer.
const RETRY: Duration = Duration::from_millis(500);
/// How long to keep trying; past this the lease has long taken over.
const GIVE_UP_AFTER_MS: u64 = 10 * 60 * 1000;

enum Command {
    Schedule(Job),
    Forget(String),
}

#[derive(Clone, Debug)]
struct Job {
    lock: String,
    key: String,
    index: u64,
    mod_rev: i64,
    at: UnixMillis,
    first_at: UnixMillis,
}

/// The handle: schedules and forgets expiry timers.
pub struct Expirer {
    tx: mpsc::UnboundedSender<Command>,
}

/// The timer task, before it is started.
pub struct ExpirerTask {
    rx: mpsc::UnboundedReceiver<Command>,
}

impl Expirer {
    /// A handle and its (not yet started) task.
    pub fn new() -> (Self, ExpirerTask) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, ExpirerTask { rx })
    }

    /// Expires the hold `key` (index `index`) of `lock` at `at`, unless it
    /// changed after revision `mod_rev`. Replaces an earlier timer for the
    /// key.
    pub fn schedule(&self, lock: &str, key: &str, index: u64, mod_rev: i64, at: UnixMillis) {
        let _ = self.tx.send(Command::Schedule(Job {
            lock: lock.to_owned(),
            key: key.to_owned(),
            index,
            mod_rev,
            at,
            first_at: at,
        }));
    }

    /// Drops the timer for `key` (it was released or renewed with ttl 0).
    pub fn forget(&self, key: &str) {
        let _ = self.tx.send(Command::Forget(key.to_owned()));
    }
}

impl ExpirerTask {
    /// Runs the timers until the context is gone.
    pub fn start(self, ctx: Weak<Ctx>, clock: Clock) {
        tokio::spawn(run(self.rx, ctx, clock));
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Command>, ctx: Weak<Ctx>, clock: Clock) {
    let mut jobs: HashMap<String, Job> = HashMap::new();
    let mut due: BTreeSet<(UnixMillis, String)> = BTreeSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Job, bool)>();
    loop {
        let wake = due.first().map(|(at, _)| clock.instant_at(*at));
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Command::Schedule(job)) => {
                    if let Some(old) = jobs.remove(&job.key) {
                        due.remove(&(old.at, old.key));
                    }
                    due.insert((job.at, job.key.clone()));
                    jobs.insert(job.key.clone(), job);
                }
                Some(Command::Forget(key)) => {
                    if let Some(old) = jobs.remove(&key) {
                        due.remove(&(old.at, old.key));
                    }
                }
            },
            () = sleep_until(wake) => {
                let now = clock.now();
                while let Some((at, key)) = due.first().cloned() {
                    if at > now {
                        break;
                    }
                    due.pop_first();
                    let Some(job) = jobs.remove(&key) else { continue };
                    let Some(ctx) = ctx.upgrade() else { return };
                    let done = done_tx.clone();
                    tokio::spawn(async move {
                        let target = Target::Index(job.index);
                        let r = ctx
                            .remove(&job.lock, &target, Reason::Expired, Some(job.mod_rev))
                            .await;
                        if let Err(e) = &r {
                            tracing::debug!(key = %job.key, error = %e, "expiry failed; retrying");
                        }
                        let _ = done.send((job, r.is_err()));
                    });
                }
            }
            Some((mut job, failed)) = done_rx.recv() => {
                // Retry a failed expiry unless a newer timer replaced it.
                if failed && !jobs.contains_key(&job.key)
                    && clock.now().saturating_sub(job.first_at) < GIVE_UP_AFTER_MS
                {
                    job.at = clock.now() + RETRY.as_millis() as u64;
                    due.insert((job.at, job.key.clone()));
                    jobs.insert(job.key.clone(), job);
                }
            }
        }
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
