//! The forwarding engine against a real `baton --memory`: every `Engine`
//! call through `RemoteEngine` must behave as the primary's own engine does,
//! and going away must be total across the hop.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use baton::engine::{
    AcquireSpec, EndReason, Engine, EngineError, EventKind, Target, WaitStream, WaitUpdate,
    remote::{RemoteEngine, RemoteOptions},
};
use baton::proto::v1::status_client::StatusClient;
use baton::service::ServiceError;
use common::{Server, eventually};
use futures::StreamExt;

/// The error of a call that must fail.
fn err<T, E>(r: Result<T, E>) -> E {
    match r {
        Err(e) => e,
        Ok(_) => panic!("expected an error"),
    }
}

fn engine(s: &Server) -> RemoteEngine {
    RemoteEngine::new(&s.url, RemoteOptions::default()).expect("engine")
}

fn spec(key: &str, value: &str, ttl_ms: u64, timeout_ms: Option<u64>) -> AcquireSpec {
    AcquireSpec {
        key: key.into(),
        value: (!value.is_empty()).then(|| value.into()),
        ttl_ms,
        timeout_ms,
        limit: 1,
        lock_delay_ms: 0,
    }
}

async fn next(s: &mut WaitStream) -> Result<WaitUpdate, EngineError> {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("wait stream stalled")
        .expect("wait stream ended")
}

async fn acquire(e: &RemoteEngine, key: &str, value: &str, ttl_ms: u64) -> (WaitStream, u64) {
    let mut s = e.wait(spec(key, value, ttl_ms, None)).await.expect("wait");
    match next(&mut s).await {
        Ok(WaitUpdate::Acquired(g)) => (s, g.index),
        other => panic!("expected acquired, got {other:?}"),
    }
}

async fn queue(e: &RemoteEngine, key: &str, value: &str) -> (WaitStream, u64, u64) {
    let mut s = e.wait(spec(key, value, 0, None)).await.expect("wait");
    match next(&mut s).await {
        Ok(WaitUpdate::Queued {
            index, position, ..
        }) => (s, index, position),
        other => panic!("expected queued, got {other:?}"),
    }
}

#[test]
fn every_error_maps_back_to_itself() {
    // What the follower's service layer makes of the primary's status must
    // be what the primary's service layer made of the engine error: same
    // code, same message.
    for e in [
        EngineError::NotFound("no entry with index 3 on this key".into()),
        EngineError::NotAcquired("held".into()),
        EngineError::TimedOut,
        EngineError::ReleasedWhileQueued(42),
        EngineError::LimitReached("too many".into()),
        EngineError::Lagged(7),
        EngineError::Unavailable("down".into()),
        EngineError::Internal("bug".into()),
    ] {
        let service = ServiceError::from(e.clone());
        let status = tonic::Status::from(service.clone());
        let back = baton::engine::remote::status::engine_error(&status, None);
        assert_eq!(back, e);
        assert_eq!(ServiceError::from(back), service);
    }
    // The index of the Queued step wins over the message.
    let status = tonic::Status::aborted("released");
    assert_eq!(
        baton::engine::remote::status::engine_error(&status, Some(9)),
        EngineError::ReleasedWhileQueued(9)
    );
}

#[tokio::test]
async fn queue_grants_in_order_and_ends_holds() {
    let s = Server::memory();
    let e = engine(&s);
    let (mut holder, h) = acquire(&e, "k", "", 0).await;
    let (mut a, ai, ap) = queue(&e, "k", "").await;
    let (mut b, bi, bp) = queue(&e, "k", "").await;
    assert!(h < ai && ai < bi, "indexes rise: {h} {ai} {bi}");
    assert_eq!((ap, bp), (1, 2));

    let r = e.release("k", Target::Index(h)).await.expect("release");
    assert_eq!((r.index, r.was_holder), (h, true));
    assert_eq!(
        next(&mut holder).await,
        Ok(WaitUpdate::Ended {
            index: h,
            reason: EndReason::Released
        })
    );
    assert!(holder.next().await.is_none(), "the stream ends after Ended");
    match next(&mut a).await {
        Ok(WaitUpdate::Acquired(g)) => assert_eq!((g.index, g.deadline), (ai, None)),
        other => panic!("{other:?}"),
    }
    e.release("k", Target::Index(ai)).await.expect("release");
    assert!(matches!(next(&mut b).await, Ok(WaitUpdate::Acquired(g)) if g.index == bi));

    let view = e.get("k").await.expect("get");
    assert_eq!(view.holder.map(|h| h.index), Some(bi));
    assert!(view.queue.is_empty());
}

#[tokio::test]
async fn values_join_one_entry() {
    let s = Server::memory();
    let e = engine(&s);
    let (_holder, h) = acquire(&e, "j", "owner", 0).await;
    let (mut a, ai, _) = queue(&e, "j", "v").await;
    let (mut b, bi, _) = queue(&e, "j", "v").await;
    assert_eq!(ai, bi, "same value, same entry");
    let view = e.get("j").await.expect("get");
    assert_eq!(view.queue.len(), 1);
    assert_eq!(view.queue[0].waiters, 2);
    assert_eq!(view.queue[0].value.as_deref(), Some("v"));
    assert_eq!(view.holder.and_then(|h| h.value).as_deref(), Some("owner"));

    e.release("j", Target::Value("owner".into()))
        .await
        .expect("release by value");
    for s in [&mut a, &mut b] {
        assert!(matches!(next(s).await, Ok(WaitUpdate::Acquired(g)) if g.index == ai));
    }
    // Re-acquiring with the holder's value answers at once with its index.
    let (_again, idx) = acquire(&e, "j", "v", 5_000).await;
    assert_eq!(idx, ai);
    assert!(h < ai);
}

#[tokio::test]
async fn timeouts_fail_and_leave_nothing() {
    let s = Server::memory();
    let e = engine(&s);
    let (_holder, _) = acquire(&e, "t", "", 0).await;
    match e.wait(spec("t", "", 0, Some(0))).await {
        Err(EngineError::NotAcquired(_)) => {}
        Err(other) => panic!("expected NotAcquired, got {other:?}"),
        Ok(_) => panic!("expected NotAcquired, got a stream"),
    }
    let mut w = e.wait(spec("t", "", 0, Some(100))).await.expect("wait");
    assert!(matches!(next(&mut w).await, Ok(WaitUpdate::Queued { .. })));
    assert_eq!(next(&mut w).await, Err(EngineError::TimedOut));
    assert!(w.next().await.is_none());
    assert!(e.get("t").await.expect("get").queue.is_empty());
    // A free key with timeout 0 is acquired.
    let mut free = e.wait(spec("t2", "", 0, Some(0))).await.expect("wait");
    assert!(matches!(next(&mut free).await, Ok(WaitUpdate::Acquired(_))));
}

#[tokio::test]
async fn renew_and_release_by_index_and_value() {
    let s = Server::memory();
    let e = engine(&s);
    let (_holder, h) = acquire(&e, "r", "me", 1_000).await;
    let (_q, qi, _) = queue(&e, "r", "next").await;

    let r = e
        .renew("r", Target::Index(h), 60_000)
        .await
        .expect("renew by index");
    assert_eq!((r.index, r.held), (h, true));
    assert!(r.deadline.is_some());
    let r = e
        .renew("r", Target::Value("me".into()), 0)
        .await
        .expect("renew by value");
    assert_eq!((r.index, r.held, r.deadline), (h, true, None));
    let r = e
        .renew("r", Target::Value("next".into()), 5_000)
        .await
        .expect("renew a queued entry");
    assert_eq!((r.index, r.held, r.deadline), (qi, false, None));
    assert_eq!(e.get("r").await.expect("get").queue[0].ttl_ms, 5_000);

    for err in [
        e.renew("r", Target::Index(999_999), 1_000).await.err(),
        e.renew("r", Target::Value("nobody".into()), 1_000)
            .await
            .err(),
        e.release("r", Target::Index(999_999)).await.err(),
        e.release("nokey", Target::Value("x".into())).await.err(),
    ] {
        assert!(matches!(err, Some(EngineError::NotFound(_))), "{err:?}");
    }
    let r = e
        .release("r", Target::Value("me".into()))
        .await
        .expect("release by value");
    assert_eq!((r.index, r.was_holder), (h, true));
    let r = e
        .release("r", Target::Index(qi))
        .await
        .expect("release by index");
    assert_eq!((r.index, r.was_holder), (qi, true));
    assert_eq!(e.get("r").await.expect("get"), Default::default());
}

#[tokio::test]
async fn released_while_queued_fails_the_waiter() {
    let s = Server::memory();
    let e = engine(&s);
    let (_holder, _) = acquire(&e, "q", "", 0).await;
    let (mut w, qi, _) = queue(&e, "q", "").await;
    let r = e.release("q", Target::Index(qi)).await.expect("release");
    assert!(!r.was_holder);
    assert_eq!(
        next(&mut w).await,
        Err(EngineError::ReleasedWhileQueued(qi))
    );
    assert!(w.next().await.is_none());
}

#[tokio::test]
async fn list_pages_across_the_primarys_page_size() {
    let s = Server::memory();
    let e = Arc::new(engine(&s));
    // 1,234 held keys: more than one page of the primary's (1,000), each
    // held by a 60 s ttl after its stream is dropped.
    let n = 1_234;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let e = e.clone();
            tokio::spawn(async move {
                let (_s, _) = acquire(&e, &format!("page/{i:05}"), "", 60_000).await;
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("acquire");
    }
    let _other = acquire(&e, "zother", "", 60_000).await;

    let all = e.list("page/", None, 5_000).await.expect("list");
    let names: Vec<String> = all.iter().map(|k| k.key.clone()).collect();
    let expected: Vec<String> = (0..n).map(|i| format!("page/{i:05}")).collect();
    assert_eq!(names, expected);
    assert!(
        all.iter()
            .all(|k| k.holder.is_some() && k.queue_length == 0)
    );

    let some = e
        .list("page/", Some("page/00100"), 1_001)
        .await
        .expect("list");
    assert_eq!(some.len(), 1_001);
    assert_eq!(some[0].key, "page/00101");
    assert_eq!(some[1_000].key, "page/01101");

    let tail = e
        .list("page/", Some("page/01200"), 100)
        .await
        .expect("list");
    assert_eq!(tail.len(), 33);
    assert!(e.list("page/", None, 0).await.expect("list").is_empty());
    let everything = e.list("", None, 10_000).await.expect("list");
    assert_eq!(everything.len(), n + 1);
}

#[tokio::test]
async fn watch_by_key_and_prefix() {
    let s = Server::memory();
    let e = engine(&s);
    let mut key = e.watch("w/a", false).await.expect("watch");
    let mut prefix = e.watch("w/", true).await.expect("watch");
    let (_ha, a) = acquire(&e, "w/a", "va", 0).await;
    let (_hb, b) = acquire(&e, "w/b", "", 0).await;
    e.release("w/a", Target::Index(a)).await.expect("release");

    let mut got = Vec::new();
    for _ in 0..2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), key.next())
            .await
            .expect("key watch stalled")
            .expect("ended")
            .expect("event");
        got.push((ev.key, ev.kind, ev.index, ev.value));
    }
    assert_eq!(
        got,
        vec![
            ("w/a".into(), EventKind::Acquired, a, Some("va".into())),
            ("w/a".into(), EventKind::Released, a, Some("va".into())),
        ]
    );
    let mut got = Vec::new();
    for _ in 0..3 {
        let ev = tokio::time::timeout(Duration::from_secs(5), prefix.next())
            .await
            .expect("prefix watch stalled")
            .expect("ended")
            .expect("event");
        got.push((ev.key, ev.kind, ev.index));
    }
    assert_eq!(
        got,
        vec![
            ("w/a".into(), EventKind::Acquired, a),
            ("w/b".into(), EventKind::Acquired, b),
            ("w/a".into(), EventKind::Released, a),
        ]
    );
}

#[tokio::test]
async fn stats_are_the_primarys() {
    let s = Server::memory();
    let e = engine(&s);
    let (_h, _) = acquire(&e, "s1", "", 0).await;
    let (_q, _, _) = queue(&e, "s1", "").await;
    let (_h2, _) = acquire(&e, "s2", "", 0).await;
    let stats = e.stats().await.expect("stats");
    let direct = StatusClient::new(s.channel().await)
        .get(baton::proto::v1::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        (stats.keys, stats.entries, stats.waiters),
        (direct.keys, direct.entries, direct.waiters)
    );
    assert_eq!((stats.keys, stats.entries), (2, 3));
    assert_eq!(direct.backend, "embedded");
    assert_eq!(direct.role, "embedded");
    e.check().await.expect("check");
    assert_eq!(e.backend(), "etcd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_dropped_at_any_moment_leave_nothing_behind() {
    let s = Server::memory();
    let e = Arc::new(engine(&s));
    let (_holder, h) = acquire(&e, "busy", "", 0).await;
    let baseline = e.stats().await.expect("stats").waiters;
    let mut rng = fastrand::Rng::with_seed(13);
    let reached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // In waves of 20, each dropped at random moments within a window, so
    // that the moments fall before, during and after the primary's answer
    // rather than all before it. The window starts at 10 ms (a debug build
    // queues about 20 waits in 10 ms on two shared cores) and follows the
    // machine's load: doubled after a wave where almost none queued before
    // being dropped, halved after one where almost all did. At least 3,000
    // waits, and more (up to 20,000) until at least 100 were dropped after
    // queueing and 100 before.
    let load = |r: &std::sync::atomic::AtomicUsize| r.load(std::sync::atomic::Ordering::Relaxed);
    let mut window_us = 10_000;
    let mut sent = 0;
    while sent < 3_000 || ((load(&reached) < 100 || load(&reached) + 100 > sent) && sent < 20_000) {
        let wave = sent / 20;
        sent += 20;
        let before = load(&reached);
        let tasks: Vec<_> = (wave * 20..(wave + 1) * 20)
            .map(|i| {
                let e = e.clone();
                let reached = reached.clone();
                let after = Duration::from_micros(rng.u64(0..window_us));
                let value = if i % 5 == 0 { "shared" } else { "" };
                tokio::spawn(async move {
                    let waiting = async {
                        let mut s = e.wait(spec("busy", value, 0, None)).await?;
                        while let Some(u) = s.next().await {
                            if matches!(u?, WaitUpdate::Queued { .. }) {
                                reached.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                        Ok::<_, EngineError>(())
                    };
                    // Dropped before, during or after the call reached the
                    // primary: all must leave nothing behind.
                    let r = tokio::time::timeout(after, waiting).await;
                    assert!(r.is_err(), "nothing grants or fails here: {r:?}");
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("waiter");
        }
        match load(&reached) - before {
            0..=2 => window_us = (window_us * 2).min(1_000_000),
            18.. => window_us = (window_us / 2).max(1_000),
            _ => {}
        }
    }
    // Some were dropped before they were sent, some while queued.
    let reached = reached.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{reached} of {sent} dropped waits had queued (window at the end: {window_us} us)");
    assert!(
        reached >= 100 && reached < sent - 100,
        "{reached} of {sent} queued"
    );

    let mut primary = s.lock().await;
    let clean = eventually(Duration::from_secs(10), || {
        let mut primary = primary.clone();
        async move { common::view(&mut primary, "busy").await.queue.is_empty() }
    })
    .await;
    let view = common::view(&mut primary, "busy").await;
    assert!(clean, "queued entries left: {}", view.queue.len());
    assert_eq!(view.holder.map(|h| h.index), Some(h));
    let settled = eventually(Duration::from_secs(10), || {
        let e = e.clone();
        async move { e.stats().await.map(|s| s.waiters) == Ok(baseline) }
    })
    .await;
    assert!(
        settled,
        "waiters {:?}, only the holder's {baseline} expected",
        e.stats().await
    );
}

#[tokio::test]
async fn set_target_moves_calls_and_ends_old_streams() {
    let a = Server::memory();
    let b = Server::memory();
    let e = engine(&a);
    let (mut held, _) = acquire(&e, "m", "", 0).await;
    let (mut queued, _, _) = queue(&e, "m", "").await;
    let mut watching = e.watch("m", false).await.expect("watch");

    e.set_target(&b.url).expect("retarget");
    assert_eq!(e.target_url(), b.url);
    for s in [&mut held, &mut queued] {
        assert!(
            matches!(next(s).await, Err(EngineError::Unavailable(_))),
            "streams to the old primary end with Unavailable"
        );
        assert!(s.next().await.is_none());
    }
    assert!(matches!(
        watching.next().await,
        Some(Err(EngineError::Unavailable(_)))
    ));
    // New calls reach b, where "m" is free.
    assert_eq!(e.get("m").await.expect("get"), Default::default());
    let (_on_b, _) = acquire(&e, "m", "", 0).await;
    // And a forgot the queued request whose stream went away.
    let mut on_a = a.lock().await;
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut c = on_a.clone();
            async move { common::view(&mut c, "m").await.queue.is_empty() }
        })
        .await
    );
    assert!(common::view(&mut on_a, "m").await.holder.is_some());
    // The same URL again changes nothing.
    e.set_target(&b.url).expect("same");
    assert!(e.get("m").await.expect("get").holder.is_some());
    assert!(e.set_target("not a url").is_err());
}

#[tokio::test]
async fn a_dead_primary_ends_waits_and_fails_calls_fast() {
    let mut s = Server::memory();
    let e = engine(&s);
    let (mut held, _) = acquire(&e, "d", "", 0).await;
    let (mut queued, _, _) = queue(&e, "d", "").await;
    s.kill();
    for w in [&mut held, &mut queued] {
        match next(w).await {
            Err(EngineError::Unavailable(_)) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    let start = Instant::now();
    let get = e.get("d").await;
    assert!(matches!(get, Err(EngineError::Unavailable(_))), "{get:?}");
    match e.wait(spec("d", "", 0, None)).await {
        Err(EngineError::Unavailable(_)) => {}
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("expected Unavailable, got a stream"),
    }
    assert!(matches!(e.stats().await, Err(EngineError::Unavailable(_))));
    assert!(matches!(e.check().await, Err(EngineError::Unavailable(_))));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "failing took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn an_unreachable_primary_fails_within_the_connect_timeout() {
    // A black-holed address (TEST-NET-1) never answers the SYN.
    let opts = RemoteOptions {
        connect_timeout: Duration::from_millis(300),
        ..RemoteOptions::default()
    };
    let e = RemoteEngine::new("http://192.0.2.1:4001", opts).expect("engine");
    let start = Instant::now();
    assert!(matches!(e.get("x").await, Err(EngineError::Unavailable(_))));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

/// Waiters queued at once through one `RemoteEngine` (override with
/// `BATON_REMOTE_WAITERS`).
fn many() -> usize {
    std::env::var("BATON_REMOTE_WAITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

// Every call goes on one forwarding stream (`Forward/Exchange`), so the
// HTTP/2 cap on streams per connection (hyper's 200) no longer bounds the
// waiters one follower can queue: the crowd must queue and drain over one
// connection. (Before the exchange, one gRPC stream per waiter needed a pool
// of 101 connections for 10,000 waiters.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_waiters_queue_and_drain_in_order() {
    let n = many();
    let s = Server::start(&["--memory", "--max-entries-per-key", "20000"]);
    let opts = RemoteOptions::default();
    let e = Arc::new(RemoteEngine::new(&s.url, opts).expect("engine"));
    let (_holder, h) = acquire(&e, "crowd", "", 0).await;

    let start = Instant::now();
    let (queued_tx, mut queued_rx) = tokio::sync::mpsc::unbounded_channel();
    let order = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let e = e.clone();
            let queued_tx = queued_tx.clone();
            let order = order.clone();
            tokio::spawn(async move {
                let mut s = e.wait(spec("crowd", "", 0, None)).await?;
                let index = match s.next().await {
                    Some(Ok(WaitUpdate::Queued { index, .. })) => index,
                    other => panic!("expected queued, got {other:?}"),
                };
                let _ = queued_tx.send(index);
                match s.next().await {
                    Some(Ok(WaitUpdate::Acquired(g))) => assert_eq!(g.index, index),
                    other => panic!("expected acquired, got {other:?}"),
                }
                order.lock().expect("order").push(index);
                e.release("crowd", Target::Index(index)).await?;
                Ok::<_, EngineError>(())
            })
        })
        .collect();
    drop(queued_tx);
    for k in 0..n {
        let got = tokio::time::timeout(Duration::from_secs(30), queued_rx.recv()).await;
        assert!(
            matches!(got, Ok(Some(_))),
            "only {k} of {n} waiters queued ({got:?})"
        );
    }
    let queued_in = start.elapsed();
    let view = e.get("crowd").await.expect("get");
    assert_eq!(view.queue.len(), n);
    let connections = e.connections();
    assert_eq!(connections, 1, "{n} waiters on one forwarding stream");

    let drain = Instant::now();
    e.release("crowd", Target::Index(h)).await.expect("release");
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("drained")
            .expect("task")
            .expect("waiter");
    }
    let order = order.lock().expect("order").clone();
    let expected: Vec<u64> = view.queue.iter().map(|q| q.index).collect();
    assert_eq!(order, expected, "granted in queue order");
    assert!(order.windows(2).all(|w| w[0] < w[1]));
    eprintln!(
        "{n} waiters: queued in {queued_in:?} over {connections} connections, drained in {:?}",
        drain.elapsed()
    );
}

async fn open_streams(s: &Server) -> u64 {
    StatusClient::new(s.channel().await)
        .get(baton::proto::v1::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .open_streams
}

#[tokio::test]
async fn dropping_a_watch_ends_it_on_the_primary() {
    let s = Server::memory();
    let e = engine(&s);
    let before = open_streams(&s).await;
    let w = e.watch("x", true).await.expect("watch");
    assert_eq!(open_streams(&s).await, before + 1);
    drop(w);
    assert!(
        eventually(Duration::from_secs(5), || async {
            open_streams(&s).await == before
        })
        .await,
        "the primary still serves the watch"
    );
}

/// What a client sees from `call` made on the primary directly and through
/// a follower's service layer over a `RemoteEngine`: code and message.
#[tokio::test]
async fn a_followers_clients_see_what_the_primarys_see() {
    use baton::proto::v1::{self as pb, release_request};
    use baton::service::{Service, ServiceLimits};

    let s = Server::memory();
    let follower = Service::new(
        Arc::new(engine(&s)),
        ServiceLimits::default(),
        tokio_util::sync::CancellationToken::new(),
    );
    let mut primary = s.lock().await;
    let (_h, _) = common::acquire(&mut primary, "f", "", 0).await;

    let seen = |r: Result<tonic::Status, ServiceError>| match r {
        Ok(st) => (st.code(), st.message().to_owned()),
        Err(e) => (e.code(), e.to_string()),
    };
    // Busy with timeout 0.
    let req = common::wait_req("f", "", 0, Some(0));
    let direct = err(primary.wait(req.clone()).await);
    let forwarded = err(follower.wait(req).await);
    assert_eq!(seen(Ok(direct)), seen(Err(forwarded)));
    // Renew and release of nothing.
    let renew = common::renew_index("f", 999_999, 1);
    let direct = err(primary.renew(renew.clone()).await);
    let forwarded = err(follower.renew(renew).await);
    assert_eq!(seen(Ok(direct)), seen(Err(forwarded)));
    let release = pb::ReleaseRequest {
        key: "f".into(),
        target: Some(release_request::Target::Value("nobody".into())),
    };
    let direct = err(primary.release(release.clone()).await);
    let forwarded = err(follower.release(release).await);
    assert_eq!(seen(Ok(direct)), seen(Err(forwarded)));
    // Timed out and released while queued, in the stream.
    let req = common::wait_req("f", "", 0, Some(50));
    let mut d = common::wait(&mut primary, req.clone()).await;
    common::queued(&mut d).await;
    let direct = err(common::next_event(&mut d).await);
    let mut f = follower.wait(req).await.expect("wait");
    assert!(f.next().await.expect("queued").is_ok());
    let forwarded = err(f.next().await.expect("an item"));
    assert_eq!(seen(Ok(direct)), seen(Err(forwarded)));

    let mut d = common::wait(&mut primary, common::wait_req("f", "", 0, None)).await;
    let dq = common::queued(&mut d).await.index;
    let mut f = follower
        .wait(common::wait_req("f", "", 0, None))
        .await
        .expect("wait");
    let fq = match f.next().await.expect("queued").expect("queued").event {
        Some(pb::wait_event::Event::Queued(q)) => q.index,
        other => panic!("{other:?}"),
    };
    common::release(&mut primary, "f", dq).await;
    common::release(&mut primary, "f", fq).await;
    let direct = err(common::next_event(&mut d).await);
    let forwarded = err(f.next().await.expect("an item"));
    assert_eq!(direct.code(), tonic::Code::Aborted);
    assert_eq!(
        seen(Ok(direct)).1.replace(&dq.to_string(), "N"),
        seen(Err(forwarded)).1.replace(&fq.to_string(), "N")
    );
}

/// A watch whose caller stops reading must not hold up the other calls on
/// the forwarding stream, nor buffer without bound: once `STREAM_BUFFER`
/// events wait unread, it ends with `Lagged` here and is withdrawn on the
/// primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_is_cut_off_and_others_go_on() {
    use baton::engine::remote::exchange::STREAM_BUFFER;

    let s = Server::memory();
    let e = engine(&s);
    let before = open_streams(&s).await;
    let mut w = e.watch("lag/", true).await.expect("watch");
    assert_eq!(open_streams(&s).await, before + 1);
    // Two events (acquired, released) per round, made on the primary
    // directly while the watch is not read.
    let mut c = s.lock().await;
    for _ in 0..STREAM_BUFFER / 2 + 100 {
        let (_s, index) = common::acquire(&mut c, "lag/k", "", 0).await;
        common::release(&mut c, "lag/k", index).await;
    }
    // Other calls on the same stream still answer.
    assert_eq!(e.get("lag/k").await.expect("get"), Default::default());
    assert!(
        eventually(Duration::from_secs(10), || async {
            open_streams(&s).await == before
        })
        .await,
        "the primary still serves the watch nobody reads"
    );
    let mut seen = 0;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), w.next()).await;
        match next.expect("the watch neither gave an event nor ended") {
            Some(Ok(_)) => seen += 1,
            Some(Err(EngineError::Lagged(_))) => break,
            other => panic!("expected events then Lagged, got {other:?} after {seen}"),
        }
    }
    assert_eq!(seen, STREAM_BUFFER, "every buffered event, then the cut");
    assert!(w.next().await.is_none());
}

/// A grant the caller read stands by its ttl however soon the caller goes
/// away after: the follower's `heard` reaches the primary before its
/// `cancel`, and the primary counts the grant as heard first. (Reading a
/// grant and dropping the stream at once is what every `/mod/v2` lock
/// request through a follower does.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_read_then_dropped_at_once_stands() {
    let s = Server::memory();
    let e = engine(&s);
    for i in 0..200 {
        let key = format!("read/{i}");
        let (stream, index) = acquire(&e, &key, "", 0).await;
        drop(stream);
        let view = e.get(&key).await.expect("get");
        assert_eq!(
            view.holder.map(|h| h.index),
            Some(index),
            "round {i}: the hold read by its caller was undone"
        );
    }
}

/// A follower whose clients only wait sends nothing on its forwarding
/// stream for as long as they wait. The primary's body-read timeout (a
/// slow-body defence for requests that should finish) must not end that
/// stream: its waits would all fail UNAVAILABLE and lose their places.
/// Dead followers are found by HTTP/2 PINGs instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_forwarding_stream_outlives_the_body_read_timeout() {
    let s = Server::start(&["--memory", "--body-read-timeout-secs", "1"]);
    let e = engine(&s);
    let mut c = s.lock().await;
    let (_holder, index) = common::acquire(&mut c, "quiet", "", 0).await;
    let mut w = e.wait(spec("quiet", "", 0, None)).await.expect("wait");
    assert!(matches!(next(&mut w).await, Ok(WaitUpdate::Queued { .. })));
    // Three body-read timeouts with nothing sent on the stream.
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    common::release(&mut c, "quiet", index).await;
    let got = next(&mut w).await;
    assert!(
        matches!(got, Ok(WaitUpdate::Acquired(_))),
        "the queued wait through the quiet stream: {got:?}"
    );
}
