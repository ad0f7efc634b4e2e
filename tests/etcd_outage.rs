//! etcd stopped (`kill -9`) and started again under a running gateway:
//! clear UNAVAILABLE errors while it is down, waiters told rather than
//! granted, no second holder, and service back by itself afterwards.

mod common;

use std::time::{Duration, Instant};

use baton::proto::v1::{self as pb, release_request, wait_event};
use common::{Server, acquire, curl, etcd::Etcd, eventually, next_event, queued, wait, wait_req};
use tonic::Code;

/// Asserts `status` is UNAVAILABLE and came back within a few seconds.
fn unavailable<T: std::fmt::Debug>(r: Result<T, tonic::Status>, since: Instant, what: &str) {
    let took = since.elapsed();
    let err = r.expect_err(what);
    assert_eq!(err.code(), Code::Unavailable, "{what}: {err:?}");
    assert!(!err.message().is_empty(), "{what}: no message");
    assert!(took < Duration::from_secs(10), "{what} took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stopped_and_restarted_under_a_gateway() {
    let mut etcd = Etcd::start();
    let g = Server::etcd(&etcd, "/outage/", &["--etcd-timeout-ms", "2000"]);
    let mut c = g.lock().await;
    let (_holder_stream, holder) = acquire(&mut c, "o", "h", 0).await;
    let (_ttl_stream, held_ttl) = acquire(&mut c, "o-ttl", "", 60_000).await;
    let mut w = g.lock().await;
    let mut ws = wait(&mut w, wait_req("o", "w", 0, None)).await;
    let q = queued(&mut ws).await;
    assert!(q.index > holder);

    etcd.stop();

    // The queued request is told, not granted.
    let err = next_event(&mut ws).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // Every kind of request fails clearly while etcd is down.
    let t = Instant::now();
    unavailable(
        c.wait(wait_req("o", "", 0, None)).await,
        t,
        "wait while down",
    );
    let t = Instant::now();
    unavailable(
        c.get(pb::GetRequest { key: "o".into() }).await,
        t,
        "get while down",
    );
    let t = Instant::now();
    unavailable(
        c.renew(common::renew_index("o", holder, 0)).await,
        t,
        "renew while down",
    );
    let t = Instant::now();
    unavailable(
        c.release(pb::ReleaseRequest {
            key: "o".into(),
            target: Some(release_request::Target::Index(holder)),
        })
        .await,
        t,
        "release while down",
    );
    let r = curl(
        &g.addr,
        &["-X", "POST", "http://ADDR/mod/v2/lock/o?ttl=5&timeout=0"],
    );
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("\"errorCode\""), "{r:?}");
    let r = curl(&g.addr, &["http://ADDR/mod/v2/lock/o"]);
    assert_eq!(r.status, 503, "{r:?}");
    // A load balancer's probe sees the gateway unhealthy, and why, once the
    // gateway has noticed (its session's keep-alive fails within seconds).
    let t = Instant::now();
    let r = loop {
        let r = curl(&g.addr, &["http://ADDR/health"]);
        if r.status != 200 || t.elapsed() > Duration::from_secs(15) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains(r#""health":"false""#), "{r:?}");

    etcd.restart();

    // The gateway comes back by itself.
    assert!(
        eventually(Duration::from_secs(30), || {
            let mut c = c.clone();
            async move { c.get(pb::GetRequest { key: "o".into() }).await.is_ok() }
        })
        .await,
        "the gateway did not recover"
    );
    let r = curl(&g.addr, &["http://ADDR/health"]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"health":"true","reason":""}"#),
        "{r:?}"
    );
    // The holds survived the outage; the failed waiter's entry is gone
    // (with the session lease the gateway revoked on reconnecting).
    assert!(
        eventually(Duration::from_secs(15), || {
            let mut c = c.clone();
            async move {
                let v = c
                    .get(pb::GetRequest { key: "o".into() })
                    .await
                    .unwrap()
                    .into_inner();
                v.queue.is_empty()
            }
        })
        .await,
        "the failed waiter's entry stayed"
    );
    let v = c
        .get(pb::GetRequest { key: "o".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.holder.map(|h| h.index), Some(holder));
    let v = c
        .get(pb::GetRequest {
            key: "o-ttl".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.holder.map(|h| h.index), Some(held_ttl));

    // No second holder: the lock is still held.
    let err = c
        .wait(wait_req("o", "", 0, Some(0)))
        .await
        .expect_err("granted while held");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Service as usual: a new waiter gets the lock when the holder goes.
    let mut w2 = g.lock().await;
    let mut s2 = wait(&mut w2, wait_req("o", "", 0, None)).await;
    let q2 = queued(&mut s2).await;
    c.release(pb::ReleaseRequest {
        key: "o".into(),
        target: Some(release_request::Target::Value("h".into())),
    })
    .await
    .unwrap();
    match next_event(&mut s2).await.unwrap() {
        wait_event::Event::Acquired(a) => assert_eq!(a.index, q2.index),
        other => panic!("expected acquired, got {other:?}"),
    }
}
