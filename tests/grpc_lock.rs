//! The Lock and Election gRPC services against a real `baton` process.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use baton::proto::v1::{
    self as pb, campaign_event, lock_client::LockClient, release_request, renew_request, wait_event,
};
use common::{Server, eventually};
use tokio::sync::Mutex;
use tonic::{Code, Streaming, transport::Channel};

fn wait_req(key: &str, value: &str, ttl_ms: u64, timeout_ms: Option<u64>) -> pb::WaitRequest {
    pb::WaitRequest {
        key: key.into(),
        value: value.into(),
        ttl_ms,
        timeout_ms,
    }
}

async fn next_event(s: &mut Streaming<pb::WaitEvent>) -> Result<wait_event::Event, tonic::Status> {
    let item = tokio::time::timeout(Duration::from_secs(30), s.message())
        .await
        .expect("stream stalled")?;
    Ok(item.expect("stream ended").event.expect("event"))
}

/// Takes the lock at once; returns the stream and the index.
async fn acquire(
    c: &mut LockClient<Channel>,
    key: &str,
    value: &str,
    ttl_ms: u64,
) -> (Streaming<pb::WaitEvent>, u64) {
    let mut s = c
        .wait(wait_req(key, value, ttl_ms, None))
        .await
        .unwrap()
        .into_inner();
    match next_event(&mut s).await.unwrap() {
        wait_event::Event::Acquired(a) => (s, a.index),
        other => panic!("expected acquired, got {other:?}"),
    }
}

async fn queue_len(c: &mut LockClient<Channel>, key: &str) -> usize {
    c.get(pb::GetRequest { key: key.into() })
        .await
        .unwrap()
        .into_inner()
        .queue
        .len()
}

async fn release(c: &mut LockClient<Channel>, key: &str, index: u64) {
    c.release(pb::ReleaseRequest {
        key: key.into(),
        target: Some(release_request::Target::Index(index)),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_waiters_are_granted_in_fifo_order_one_at_a_time() {
    let server = Server::memory();
    let mut admin = server.lock().await;
    let (_holder, first) = acquire(&mut admin, "fifo", "", 0).await;

    // Queue 50 waiters one after another, so their arrival order is known.
    let mut streams = Vec::new();
    let mut queued_indexes = Vec::new();
    for i in 0..50 {
        let mut c = server.lock().await;
        let mut s = c
            .wait(wait_req("fifo", "", 0, None))
            .await
            .unwrap()
            .into_inner();
        match next_event(&mut s).await.unwrap() {
            wait_event::Event::Queued(q) => {
                assert_eq!(q.position, i + 1);
                queued_indexes.push(q.index);
            }
            other => panic!("expected queued, got {other:?}"),
        }
        streams.push((c, s));
    }
    assert!(queued_indexes.windows(2).all(|w| w[0] < w[1]));

    let holding = Arc::new(AtomicBool::new(false));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (mut c, mut s) in streams {
        let holding = holding.clone();
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let index = match next_event(&mut s).await.unwrap() {
                wait_event::Event::Acquired(a) => a.index,
                other => panic!("expected acquired, got {other:?}"),
            };
            assert!(!holding.swap(true, Ordering::SeqCst), "two holders at once");
            order.lock().await.push(index);
            tokio::time::sleep(Duration::from_millis(2)).await;
            holding.store(false, Ordering::SeqCst);
            release(&mut c, "fifo", index).await;
        }));
    }
    release(&mut admin, "fifo", first).await;
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().await, queued_indexes);
    assert_eq!(queue_len(&mut admin, "fifo").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnecting_a_queued_stream_removes_its_entry() {
    let server = Server::memory();
    let mut c = server.lock().await;
    let (_holder, _) = acquire(&mut c, "dc", "", 0).await;
    {
        let mut w = server.lock().await;
        let mut s = w
            .wait(wait_req("dc", "", 0, None))
            .await
            .unwrap()
            .into_inner();
        assert!(matches!(
            next_event(&mut s).await.unwrap(),
            wait_event::Event::Queued(_)
        ));
        assert_eq!(queue_len(&mut c, "dc").await, 1);
        // The stream and its connection are dropped here.
    }
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut c = c.clone();
            async move { queue_len(&mut c, "dc").await == 0 }
        })
        .await,
        "queued entry survived its client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_zero_and_timeout_n() {
    let server = Server::memory();
    let mut c = server.lock().await;
    // Free: timeout 0 acquires.
    let (_h, index) = {
        let mut s = c
            .wait(wait_req("t", "", 0, Some(0)))
            .await
            .unwrap()
            .into_inner();
        match next_event(&mut s).await.unwrap() {
            wait_event::Event::Acquired(a) => (s, a.index),
            other => panic!("{other:?}"),
        }
    };
    // Held: timeout 0 fails at once, leaving nothing.
    let err = c.wait(wait_req("t", "", 0, Some(0))).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(queue_len(&mut c, "t").await, 0);

    // Held: timeout 500 ms fails after about that long, leaving nothing.
    let start = Instant::now();
    let mut s = c
        .wait(wait_req("t", "", 0, Some(500)))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        next_event(&mut s).await.unwrap(),
        wait_event::Event::Queued(_)
    ));
    let err = next_event(&mut s).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert_eq!(queue_len(&mut c, "t").await, 0);
    // The holder is untouched.
    let got = c
        .get(pb::GetRequest { key: "t".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.holder.unwrap().index, index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expiry_hands_the_lock_on() {
    let server = Server::memory();
    let mut c = server.lock().await;
    let (mut holder, first) = acquire(&mut c, "exp", "", 300).await;
    let mut w = server.lock().await;
    let mut s = w
        .wait(wait_req("exp", "", 0, None))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        next_event(&mut s).await.unwrap(),
        wait_event::Event::Queued(_)
    ));
    match next_event(&mut s).await.unwrap() {
        wait_event::Event::Acquired(a) => assert!(a.index > first),
        other => panic!("{other:?}"),
    }
    // The first holder, still listening, hears its hold expired.
    match next_event(&mut holder).await.unwrap() {
        wait_event::Event::Ended(e) => {
            assert_eq!(e.index, first);
            assert_eq!(e.reason, pb::EndReason::Expired as i32);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_a_queued_entry_fails_its_waiters() {
    let server = Server::memory();
    let mut c = server.lock().await;
    let (_h, _) = acquire(&mut c, "rq", "", 0).await;
    let mut w = server.lock().await;
    let mut s = w
        .wait(wait_req("rq", "bob", 0, None))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        next_event(&mut s).await.unwrap(),
        wait_event::Event::Queued(_)
    ));
    c.release(pb::ReleaseRequest {
        key: "rq".into(),
        target: Some(release_request::Target::Value("bob".into())),
    })
    .await
    .unwrap();
    let err = next_event(&mut s).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(err.message().contains("released"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_by_index_and_by_value() {
    let server = Server::memory();
    let mut c = server.lock().await;
    let (_h, index) = acquire(&mut c, "rn", "me", 400).await;
    let r = c
        .renew(pb::RenewRequest {
            key: "rn".into(),
            target: Some(renew_request::Target::Index(index)),
            ttl_ms: 2000,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.held);
    assert_eq!(r.index, index);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = c
        .get(pb::GetRequest { key: "rn".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.holder.as_ref().unwrap().index,
        index,
        "renewed hold expired"
    );
    let r = c
        .renew(pb::RenewRequest {
            key: "rn".into(),
            target: Some(renew_request::Target::Value("me".into())),
            ttl_ms: 2000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.index, index);
    let err = c
        .renew(pb::RenewRequest {
            key: "rn".into(),
            target: Some(renew_request::Target::Index(index + 100)),
            ttl_ms: 1000,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .release(pb::ReleaseRequest {
            key: "rn".into(),
            target: Some(release_request::Target::Value("nobody".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_value_joins_and_holder_reacquire_renews() {
    let server = Server::memory();
    let mut c = server.lock().await;
    let (_h, first) = acquire(&mut c, "j", "", 0).await;
    let mut a = server.lock().await;
    let mut b = server.lock().await;
    let mut sa = a
        .wait(wait_req("j", "x", 5000, None))
        .await
        .unwrap()
        .into_inner();
    let mut sb = b
        .wait(wait_req("j", "x", 5000, None))
        .await
        .unwrap()
        .into_inner();
    let qa = next_event(&mut sa).await.unwrap();
    let qb = next_event(&mut sb).await.unwrap();
    match (qa, qb) {
        (wait_event::Event::Queued(qa), wait_event::Event::Queued(qb)) => {
            assert_eq!(qa.index, qb.index)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(queue_len(&mut c, "j").await, 1);
    release(&mut c, "j", first).await;
    let (ga, gb) = (
        next_event(&mut sa).await.unwrap(),
        next_event(&mut sb).await.unwrap(),
    );
    let index = match (ga, gb) {
        (wait_event::Event::Acquired(ga), wait_event::Event::Acquired(gb)) => {
            assert_eq!(ga, gb);
            ga.index
        }
        other => panic!("{other:?}"),
    };
    // The holder's value again: answered at once with the same index.
    let (_again, again) = acquire(&mut c, "j", "x", 5000).await;
    assert_eq!(again, index);
}

async fn next_leader(o: &mut Streaming<pb::LeaderResponse>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(10), o.message())
        .await
        .expect("observe stalled")
        .unwrap()
        .unwrap()
        .leader
        .map(|l| l.name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_campaign_observe_resign() {
    let server = Server::memory();
    let mut e = server.election().await;
    let mut observe = e
        .observe(pb::ObserveRequest {
            election: "svc".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_leader(&mut observe).await, None);

    let campaign = |name: &'static str| {
        let server_url = server.url.clone();
        async move {
            let mut e = pb::election_client::ElectionClient::connect(server_url)
                .await
                .unwrap();
            e.campaign(pb::CampaignRequest {
                election: "svc".into(),
                name: name.into(),
                ttl_ms: 0,
                timeout_ms: None,
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let mut a = campaign("a").await;
    assert!(matches!(
        a.message().await.unwrap().unwrap().event,
        Some(campaign_event::Event::Elected(_))
    ));
    assert_eq!(next_leader(&mut observe).await.as_deref(), Some("a"));
    let mut b = campaign("b").await;
    assert!(matches!(
        b.message().await.unwrap().unwrap().event,
        Some(campaign_event::Event::Queued(_))
    ));
    let leader = e
        .leader(pb::LeaderRequest {
            election: "svc".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(leader.leader.unwrap().name, "a");

    let r = e
        .resign(pb::ResignRequest {
            election: "svc".into(),
            name: "a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.was_leader);
    assert_eq!(next_leader(&mut observe).await.as_deref(), Some("b"));
    assert!(matches!(
        b.message().await.unwrap().unwrap().event,
        Some(campaign_event::Event::Elected(_))
    ));
    e.resign(pb::ResignRequest {
        election: "svc".into(),
        name: "b".into(),
    })
    .await
    .unwrap();
    assert_eq!(next_leader(&mut observe).await, None);

    let err = e
        .campaign(pb::CampaignRequest {
            election: "svc".into(),
            name: String::new(),
            ttl_ms: 0,
            timeout_ms: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument() {
    let server = Server::start(&["--memory", "--max-key-bytes", "16", "--max-ttl-secs", "60"]);
    let mut c = server.lock().await;
    for req in [
        wait_req("", "", 0, None),
        wait_req(&"k".repeat(17), "", 0, None),
        wait_req("k", "", 61_000, None),
        wait_req("k", &"v".repeat(5000), 0, None),
    ] {
        let err = c.wait(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    let err = c
        .release(pb::ReleaseRequest {
            key: "k".into(),
            target: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limit_is_resource_exhausted() {
    let server = Server::start(&["--memory", "--max-streams", "1"]);
    let mut c = server.lock().await;
    let (_h, _) = acquire(&mut c, "lim", "", 0).await;
    let err = c.wait(wait_req("lim2", "", 0, None)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_list_see_every_key_under_a_prefix() {
    let server = Server::memory();
    let mut c = server.lock().await;
    let mut watch = c
        .watch(pb::WatchRequest {
            key: "jobs/".into(),
            prefix: true,
        })
        .await
        .unwrap()
        .into_inner();
    let (_a, ia) = acquire(&mut c, "jobs/a", "", 0).await;
    let (_b, _) = acquire(&mut c, "other", "", 0).await;
    let (_c, ic) = acquire(&mut c, "jobs/c", "", 0).await;
    release(&mut c, "jobs/a", ia).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push((ev.key, ev.kind, ev.index));
    }
    assert_eq!(
        seen,
        vec![
            ("jobs/a".into(), pb::EventKind::Acquired as i32, ia),
            ("jobs/c".into(), pb::EventKind::Acquired as i32, ic),
            ("jobs/a".into(), pb::EventKind::Released as i32, ia),
        ]
    );
    let page = c
        .list(pb::ListRequest {
            prefix: "".into(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.keys.len(), 1);
    assert_eq!(page.keys[0].key, "jobs/c");
    let page = c
        .list(pb::ListRequest {
            prefix: "".into(),
            page_size: 1,
            page_token: page.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.keys[0].key, "other");
    assert!(page.next_page_token.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_streams_and_exits_zero() {
    let mut server = Server::memory();
    let mut c = server.lock().await;
    let (_h, _) = acquire(&mut c, "bye", "", 0).await;
    let mut s = c
        .wait(wait_req("bye", "", 0, None))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        next_event(&mut s).await.unwrap(),
        wait_event::Event::Queued(_)
    ));
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate(Duration::from_secs(10));
        (server, status)
    });
    let err = next_event(&mut s).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let (_server, status) = status.await.unwrap();
    assert!(status.expect("baton did not exit").success());
}
