//! Pacing of etcd requests, so that a burst of clients on this gateway does
//! not become a burst of proposals that etcd refuses.
//!
//! etcd turns requests away with "etcdserver: too many requests" when its
//! applied index falls more than 5,000 entries behind its committed one.
//! Ten thousand clients queueing at once through one gateway did exactly
//! that on a 2-core machine (BENCHMARKS.md), and every one of them got
//! UNAVAILABLE although etcd was healthy. Two rules keep a gateway on the
//! right side of that line:
//!
//! - at most `--etcd-max-inflight` requests are outstanding at once; the rest
//!   wait their turn here, where waiting is cheap;
//! - "too many requests" is retried with a growing pause. etcd checks the gap
//!   before it proposes anything, so the refused request had no effect and
//!   sending it again is safe even for a transaction.
//!
//! Both count against the request timeout: a client hears UNAVAILABLE no
//! later than it did before pacing existed.

use std::{future::Future, time::Duration};

use tokio::{sync::Semaphore, time::Instant};

use super::error::EtcdError;

/// First pause after etcd says "too many requests"; doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// Longest pause between two tries of one request.
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// Bounds and retries this gateway's etcd requests (see the module docs).
#[derive(Debug)]
pub struct Pacer {
    permits: Semaphore,
    max_inflight: usize,
    timeout: Duration,
}

impl Pacer {
    /// A pacer allowing `max_inflight` outstanding requests, each answered
    /// (or failed) within `timeout` of being asked for.
    pub fn new(max_inflight: usize, timeout: Duration) -> Self {
        let max_inflight = max_inflight.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Semaphore::new(max_inflight),
            max_inflight,
            timeout,
        }
    }

    /// Runs the request `send` makes, once it may go out, again while etcd
    /// says it is overloaded, all within the timeout.
    pub async fn run<T, F, Fut>(&self, mut send: F) -> Result<T, EtcdError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.timeout;
        let _permit = match tokio::time::timeout_at(deadline, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; treat it as a busy gateway anyway.
            Ok(Err(_)) | Err(_) => {
                return Err(EtcdError::Busy {
                    inflight: self.max_inflight,
                    waited: self.timeout,
                });
            }
        };
        let mut pause = FIRST_PAUSE;
        loop {
            match tokio::time::timeout_at(deadline, send()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if is_overloaded(&e) && Instant::now() + pause < deadline => {
                    tracing::debug!(
                        pause_ms = pause.as_millis() as u64,
                        "etcd is overloaded; trying again"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                Ok(Err(e)) => return Err(EtcdError::Client(e)),
                Err(_) => return Err(EtcdError::Timeout(self.timeout)),
            }
        }
    }
}

/// Whether etcd refused the request as overloaded, before proposing it.
fn is_overloaded(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.message().contains("too many requests"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    fn overloaded() -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::unknown("etcdserver: too many requests"))
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_requests_is_retried_until_it_succeeds() {
        let pacer = Pacer::new(4, Duration::from_secs(5));
        let tries = AtomicUsize::new(0);
        let r = pacer
            .run(|| {
                let n = tries.fetch_add(1, Ordering::SeqCst);
                async move { if n < 3 { Err(overloaded()) } else { Ok(n) } }
            })
            .await;
        assert_eq!(r.ok(), Some(3));
        assert_eq!(tries.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_are_not_retried() {
        let pacer = Pacer::new(4, Duration::from_secs(5));
        let tries = AtomicUsize::new(0);
        let r: Result<(), _> = pacer
            .run(|| {
                tries.fetch_add(1, Ordering::SeqCst);
                async {
                    Err(etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
                        "down",
                    )))
                }
            })
            .await;
        assert!(matches!(r, Err(EtcdError::Client(_))));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn endless_overload_ends_with_the_error_within_the_timeout() {
        let pacer = Pacer::new(4, Duration::from_secs(2));
        let start = Instant::now();
        let r: Result<(), _> = pacer.run(|| async { Err(overloaded()) }).await;
        assert!(matches!(r, Err(EtcdError::Client(_))), "{r:?}");
        assert!(start.elapsed() <= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_max_inflight_requests_are_outstanding() {
        let pacer = Arc::new(Pacer::new(3, Duration::from_secs(60)));
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (pacer, now, peak) = (pacer.clone(), now.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                pacer
                    .run(|| {
                        let (now, peak) = (now.clone(), peak.clone());
                        async move {
                            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(n, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            now.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, etcd_client::Error>(())
                        }
                    })
                    .await
            }));
        }
        for t in tasks {
            assert!(matches!(t.await, Ok(Ok(()))));
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_cannot_get_a_turn_is_told_the_gateway_is_busy() {
        let pacer = Arc::new(Pacer::new(1, Duration::from_secs(1)));
        let blocker = {
            let pacer = pacer.clone();
            tokio::spawn(async move {
                pacer
                    .run(|| async {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        Ok::<_, etcd_client::Error>(())
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        let r: Result<(), _> = pacer.run(|| async { Ok(()) }).await;
        assert!(matches!(r, Err(EtcdError::Busy { .. })), "{r:?}");
        assert!(matches!(blocker.await, Ok(Err(EtcdError::Timeout(_)))));
    }
}
