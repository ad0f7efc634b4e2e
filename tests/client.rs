//! The Rust client (`baton::client`) against a real `baton` process.

mod common;

use std::time::Duration;

use baton::client::{Client, ClientError, Entry, Lost};
use baton::proto::v1::{self as pb, release_request};
use common::{Server, eventually};
use futures::StreamExt;

/// Generous bound for anything that should happen "at once".
const SOON: Duration = Duration::from_secs(10);

async fn client(server: &Server) -> Client {
    Client::connect(&server.url).await.expect("connect")
}

async fn holder_index(client: &Client, key: &str) -> Option<u64> {
    client
        .status(key)
        .await
        .expect("status")
        .holder
        .map(|h| h.index)
}

/// A loopback address where nothing listens.
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_exposes_its_index_and_release_frees_the_lock() {
    let server = Server::memory();
    let c = client(&server).await;
    let guard = c.lock("g").value("me").acquire().await.expect("acquire");
    assert!(guard.index() > 0);
    assert_eq!(guard.key(), "g");
    assert_eq!(guard.value(), "me");
    let status = c.status("g").await.expect("status");
    let holder = status.holder.expect("held");
    assert_eq!(holder.index, guard.index());
    assert_eq!(holder.value, "me");
    assert_eq!(holder.ttl, Some(Duration::from_secs(60)));

    // The next hold has a higher index: a fencing token.
    let first = guard.index();
    guard.release().await.expect("release");
    assert_eq!(holder_index(&c, "g").await, None);
    let again = c.lock("g").await.expect("acquire again");
    assert!(again.index() > first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_a_one_second_lock_held_for_three_seconds() {
    let server = Server::memory();
    let c = client(&server).await;
    let guard = c
        .lock("renew")
        .ttl(Duration::from_secs(1))
        .acquire()
        .await
        .expect("acquire");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(guard.is_lost(), None);
    assert_eq!(holder_index(&c, "renew").await, Some(guard.index()));
    guard.release().await.expect("release");
    assert_eq!(holder_index(&c, "renew").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_guard_releases_the_lock() {
    let server = Server::memory();
    let c = client(&server).await;
    let guard = c.lock("drop").acquire().await.expect("acquire");
    assert!(holder_index(&c, "drop").await.is_some());
    drop(guard);
    let freed = eventually(SOON, || {
        let c = c.clone();
        async move { holder_index(&c, "drop").await.is_none() }
    })
    .await;
    assert!(freed, "the dropped guard's lock stayed held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_when_someone_else_releases_the_lock() {
    let server = Server::memory();
    let c = client(&server).await;
    let guard = c.lock("stolen").acquire().await.expect("acquire");
    let mut watch = guard.lost_watch();
    assert!(watch.borrow().is_none());

    let mut raw = server.lock().await;
    raw.release(pb::ReleaseRequest {
        key: "stolen".into(),
        target: Some(release_request::Target::Index(guard.index())),
    })
    .await
    .expect("raw release");

    let lost = tokio::time::timeout(SOON, guard.lost())
        .await
        .expect("lost() did not fire");
    assert_eq!(lost, Lost::Released);
    assert_eq!(guard.is_lost(), Some(Lost::Released));
    watch.changed().await.expect("watch");
    assert_eq!(*watch.borrow(), Some(Lost::Released));
    assert_eq!(
        guard.release().await,
        Err(ClientError::Lost(Lost::Released))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_dropped_as_its_grant_is_sent_leaves_no_hold() {
    let server = Server::memory();
    let c = client(&server).await;
    for round in 0..20 {
        let key = format!("abandoned/{round}");
        let first = c.lock(&key).acquire().await.expect("first holder");
        // A second request queues (with an hour's ttl: a hold that nobody
        // releases would outlast the test) ...
        let mut second = Box::pin(c.lock(&key).ttl(Duration::from_secs(3600)).acquire());
        let deadline = std::time::Instant::now() + SOON;
        loop {
            // Poll the acquire a while so its request reaches the server.
            tokio::select! {
                biased;
                _ = &mut second => panic!("the second request must queue"),
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
            if c.status(&key).await.map(|s| s.queue.len()).ok() == Some(1) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: the second request never queued"
            );
        }
        // ... and is dropped just as the first release grants it, so its
        // grant is on the wire with nobody left to read it.
        first.release().await.expect("release");
        drop(second);
        let freed = eventually(SOON, || async { holder_index(&c, &key).await.is_none() }).await;
        assert!(freed, "round {round}: an abandoned grant still holds {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_fails_and_leaves_nothing_queued() {
    let server = Server::memory();
    let c = client(&server).await;
    let _held = c.lock("busy").acquire().await.expect("acquire");
    let err = c
        .lock("busy")
        .timeout(Duration::from_millis(300))
        .acquire()
        .await
        .expect_err("acquired a held lock");
    assert!(
        matches!(err, ClientError::Timeout { ref key, .. } if key == "busy"),
        "{err:?}"
    );
    let err = c
        .lock("busy")
        .timeout(Duration::ZERO)
        .acquire()
        .await
        .expect_err("acquired a held lock");
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(c.status("busy").await.expect("status").queue.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_acquire_in_turn_and_a_shared_value_joins() {
    let server = Server::memory();
    let c = client(&server).await;
    let first = c.lock("turns").acquire().await.expect("acquire");
    let (a, b) = (c.clone(), c.clone());
    let wa = tokio::spawn(async move { a.lock("turns").value("v").acquire().await });
    let wb = tokio::spawn(async move { b.lock("turns").value("v").acquire().await });
    let queued = eventually(SOON, || {
        let c = c.clone();
        async move {
            c.status("turns")
                .await
                .map(|s| s.queue.first().map(|w| w.waiters) == Some(2))
                .unwrap_or(false)
        }
    })
    .await;
    assert!(queued, "the two requests did not join one entry");
    first.release().await.expect("release");
    let ga = wa.await.expect("task").expect("acquire a");
    let gb = wb.await.expect("task").expect("acquire b");
    assert_eq!(ga.index(), gb.index());
    assert_eq!(holder_index(&c, "turns").await, Some(ga.index()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_from_a_dead_endpoint_to_a_live_one() {
    let server = Server::memory();
    let dead = dead_endpoint();
    let c = Client::builder()
        .endpoints([dead.as_str(), server.url.as_str()])
        .connect()
        .await
        .expect("connect with fail-over");
    assert_eq!(c.current_endpoint(), server.url);
    let guard = c
        .lock("fo")
        .ttl(Duration::from_secs(1))
        .acquire()
        .await
        .expect("acquire");
    assert_eq!(holder_index(&c, "fo").await, Some(guard.index()));

    // A comma-separated list works the same, and so does a lazy client.
    let lazy = Client::builder()
        .endpoints([format!("{dead},{}", server.url)])
        .build()
        .expect("build");
    assert_eq!(holder_index(&lazy, "fo").await, Some(guard.index()));

    // Only dead endpoints: a clear error.
    let err = Client::connect(&dead)
        .await
        .expect_err("connected to nothing");
    assert!(matches!(err, ClientError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains(&dead), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_campaign_observe_resign() {
    let server = Server::memory();
    let c = client(&server).await;
    let observed = c.observe("svc");
    tokio::pin!(observed);
    let mut next = async || {
        tokio::time::timeout(SOON, observed.next())
            .await
            .expect("observe stalled")
            .expect("observe ended")
            .expect("observe failed")
            .map(|l| l.name)
    };
    assert_eq!(next().await, None);
    assert_eq!(c.leader("svc").await.expect("leader"), None);

    let a = c
        .campaign("svc", "a")
        .ttl(Duration::from_secs(1))
        .await
        .expect("campaign a");
    assert_eq!(a.name(), "a");
    assert_eq!(a.election(), "svc");
    assert_eq!(next().await.as_deref(), Some("a"));

    let cb = c.clone();
    let b = tokio::spawn(async move { cb.campaign("svc", "b").elected().await });
    let queued = eventually(SOON, || {
        let c = c.clone();
        async move {
            c.status("svc")
                .await
                .map(|s| s.queue.len() == 1)
                .unwrap_or(false)
        }
    })
    .await;
    assert!(queued, "b did not queue");

    // a renews past its 1 s ttl while b waits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = c.leader("svc").await.expect("leader").expect("a leads");
    assert_eq!((leader.name.as_str(), leader.index), ("a", a.index()));

    a.resign().await.expect("resign a");
    assert_eq!(next().await.as_deref(), Some("b"));
    let b = b.await.expect("task").expect("b elected");
    assert!(b.index() > leader.index);

    // Resigned by name from elsewhere: b's handle learns it lost.
    let r = c.resign("svc", "b").await.expect("resign b");
    assert!(r.was_leader);
    assert_eq!(r.index, b.index());
    let lost = tokio::time::timeout(SOON, b.lost())
        .await
        .expect("lost() did not fire");
    assert_eq!(lost, Lost::Released);
    assert_eq!(next().await, None);

    let err = c
        .resign("svc", "nobody")
        .await
        .expect_err("resigned nobody");
    assert!(matches!(err, ClientError::NotFound(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_and_renew_by_value() {
    let server = Server::memory();
    let c = client(&server).await;
    let guard = c
        .lock("byval")
        .value("w1")
        .acquire()
        .await
        .expect("acquire");
    assert!(
        c.renew("byval", Entry::Value("w1".into()), Duration::from_secs(5))
            .await
            .expect("renew")
    );
    let r = c
        .release("byval", Entry::Value("w1".into()))
        .await
        .expect("release");
    assert_eq!(r.index, guard.index());
    assert!(r.was_holder);
    let err = c
        .release("byval", Entry::Index(guard.index()))
        .await
        .expect_err("released twice");
    assert!(matches!(err, ClientError::NotFound(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_when_renewals_fail_until_the_deadline() {
    let mut server = Server::memory();
    let c = client(&server).await;
    let guard = c
        .lock("gone")
        .ttl(Duration::from_secs(1))
        .acquire()
        .await
        .expect("acquire");
    let server = tokio::task::spawn_blocking(move || {
        server.terminate(SOON).expect("baton did not stop");
        server
    })
    .await
    .expect("task");
    let lost = tokio::time::timeout(SOON, guard.lost())
        .await
        .expect("lost() did not fire");
    assert!(matches!(lost, Lost::RenewFailed(_)), "{lost:?}");
    drop(server);
}

/// Two gateways over one etcd share their locks: when the gateway a guard
/// talks to goes away, the guard renews through the other and keeps the
/// lock, and a waiter on the dead gateway fails over and still acquires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_survives_its_gateway_going_away() {
    let etcd = common::etcd::Etcd::start();
    // a is the follower that goes away; b, the primary, serves on.
    let (b, mut a) = Server::etcd_pair(&etcd, "/client-failover/", &[]);
    let c = Client::builder()
        .endpoints([a.url.as_str(), b.url.as_str()])
        .connect()
        .await
        .expect("connect");
    assert_eq!(c.current_endpoint(), a.url);
    let guard = c
        .lock("ha")
        .ttl(Duration::from_secs(2))
        .acquire()
        .await
        .expect("acquire");
    let index = guard.index();

    // A waiter queued through a, behind a holder on b.
    let only_b = Client::connect(&b.url).await.expect("connect b");
    let blocker = only_b.lock("ha/queue").await.expect("acquire on b");
    let cw = c.clone();
    let waiter = tokio::spawn(async move { cw.lock("ha/queue").acquire().await });
    let queued = eventually(SOON, || {
        let only_b = only_b.clone();
        async move {
            only_b
                .status("ha/queue")
                .await
                .map(|s| s.queue.len() == 1)
                .unwrap_or(false)
        }
    })
    .await;
    assert!(queued, "the waiter did not queue");

    let a_url = a.url.clone();
    let a = tokio::task::spawn_blocking(move || {
        a.terminate(SOON).expect("gateway a did not stop");
        a
    })
    .await
    .expect("task");

    // The waiter lost its stream with a and queued again through b (behind
    // a's leftover entry until a's queue lease runs out).
    blocker.release().await.expect("release the blocker");
    let waited = tokio::time::timeout(SOON, waiter)
        .await
        .expect("the waiter never acquired")
        .expect("task")
        .expect("the waiter failed");
    assert_eq!(
        holder_index(&only_b, "ha/queue").await,
        Some(waited.index())
    );

    // Well past the ttl: the guard has renewed through b.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(guard.is_lost(), None);
    assert_eq!(holder_index(&only_b, "ha").await, Some(index));
    assert_ne!(c.current_endpoint(), a_url);

    guard.release().await.expect("release through b");
    assert_eq!(holder_index(&only_b, "ha").await, None);
    drop(a);
}

/// A long-lived client that locks and releases again and again must keep its
/// connection: giving up a hold must not leave the server writing to a stream
/// the client reset (HTTP/2 peers end a connection after ~1,000 of those).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_holds_on_one_connection_all_succeed() {
    let server = Server::memory();
    let c = client(&server).await;
    let mut last = 0;
    for i in 0..1_500 {
        let guard = c
            .lock("cycle")
            .ttl(Duration::from_secs(5))
            .acquire()
            .await
            .unwrap_or_else(|e| panic!("acquire #{i}: {e}"));
        assert!(guard.index() > last, "fencing tokens rise");
        last = guard.index();
        if i % 2 == 0 {
            guard
                .release()
                .await
                .unwrap_or_else(|e| panic!("release #{i}: {e}"));
        } else {
            drop(guard);
            let freed = eventually(SOON, || {
                let c = c.clone();
                async move { holder_index(&c, "cycle").await.is_none() }
            })
            .await;
            assert!(freed, "hold #{i} stayed held after its guard was dropped");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semaphore_guard_check_and_detach() {
    let server = Server::memory();
    let c = client(&server).await;
    let a = c.lock("sem").limit(2).acquire().await.expect("first");
    let b = c.lock("sem").limit(2).acquire().await.expect("second");
    assert_ne!(a.index(), b.index());
    let status = c.status("sem").await.expect("status");
    assert_eq!(status.limit, 2);
    let holders: Vec<u64> = status.holders.iter().map(|h| h.index).collect();
    assert_eq!(holders, vec![a.index(), b.index()]);
    assert_eq!(status.holder.map(|h| h.index), Some(a.index()));

    // Full: a third does not get in at once; another limit is refused.
    let busy = c
        .lock("sem")
        .limit(2)
        .timeout(Duration::ZERO)
        .acquire()
        .await;
    assert!(matches!(busy, Err(ClientError::Timeout { .. })), "{busy:?}");
    let other = c.lock("sem").limit(3).acquire().await;
    match other {
        Err(ClientError::LimitMismatch(m)) => assert!(m.contains("limit 2"), "{m}"),
        other => panic!("expected a limit mismatch, got {other:?}"),
    }

    // Check: both tokens current; after a release, that one is not.
    assert!(c.check("sem", a.index()).await.expect("check").current);
    let gone = a.index();
    a.release().await.expect("release");
    let check = c.check("sem", gone).await.expect("check");
    assert!(!check.current);
    assert_eq!(
        check.holders.iter().map(|h| h.index).collect::<Vec<_>>(),
        vec![b.index()]
    );

    // A detached guard stops renewing but leaves the hold in place.
    let index = b.detach();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(c.check("sem", index).await.expect("check").current);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_delay_holds_off_the_next_holder_after_an_expiry() {
    let server = Server::memory();
    let c = client(&server).await;
    let first = c
        .lock("ld")
        .ttl(Duration::from_millis(300))
        .lock_delay(Duration::from_millis(1200))
        .acquire()
        .await
        .expect("acquire");
    let deadline = c
        .status("ld")
        .await
        .expect("status")
        .holder
        .and_then(|h| h.deadline)
        .expect("a deadline");
    assert_eq!(
        c.status("ld").await.expect("status").holders[0].lock_delay,
        Some(Duration::from_millis(1200))
    );
    // Let the hold expire: detach stops the renewals.
    first.detach();
    let next = c.lock("ld").acquire().await.expect("next");
    let granted = c
        .status("ld")
        .await
        .expect("status")
        .holder
        .expect("held")
        .acquired_at;
    assert!(
        granted >= deadline + Duration::from_millis(1200),
        "granted inside the delay"
    );
    drop(next);
}
