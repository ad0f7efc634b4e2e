//! The lock-queue contract of DESIGN.md through the gRPC API: the tests
//! that were `tests/contract.rs` (run there against `baton` processes),
//! written against a [`Fixture`] so that each runs on every backend. Times
//! are read from the fixture's clock, so under paused time they are exact.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use baton::proto::v1::{
    self as pb, campaign_event, lock_client::LockClient, release_request, renew_request, wait_event,
};
use tokio::{sync::Mutex, time::Instant};
use tonic::{Code, Streaming, transport::Channel};

use crate::common::{
    self, acquire, eventually, next_event, next_leader, release, view, wait_req, watch,
};
use crate::fixture::{Backend, Fixture, Options};

/// Opens a wait that must queue, and returns its stream past the
/// `Queued` event.
async fn queued(c: &mut LockClient<Channel>, req: pb::WaitRequest) -> Streaming<pb::WaitEvent> {
    let mut s = common::wait(c, req).await;
    let first = next_event(&mut s).await.unwrap();
    assert!(matches!(first, wait_event::Event::Queued(_)), "{first:?}");
    s
}

pub async fn queue_len(c: &mut LockClient<Channel>, key: &str) -> usize {
    view(c, key).await.queue.len()
}

pub async fn fifty_waiters_are_granted_in_fifo_order_one_at_a_time(backend: Backend) {
    let server = Fixture::start(backend, Options::default()).await;
    let mut admin = server.lock().await;
    let (_holder, first) = acquire(&mut admin, "fifo", "", 0).await;

    // Queue 50 waiters one after another, so their arrival order is known.
    let mut streams = Vec::new();
    let mut queued_indexes = Vec::new();
    for i in 0..50 {
        let mut c = server.lock().await;
        let mut s = common::wait(&mut c, wait_req("fifo", "", 0, None)).await;
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

pub async fn disconnecting_a_queued_stream_removes_its_entry(backend: Backend) {
    let server = Fixture::start(backend, Options::default()).await;
    let mut c = server.lock().await;
    let (_holder, _) = acquire(&mut c, "dc", "", 0).await;
    {
        let mut w = server.lock().await;
        let _queued = queued(&mut w, wait_req("dc", "", 0, None)).await;
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

pub async fn timeout_zero_and_timeout_n(backend: Backend) {
    let server = Fixture::start(backend, Options::default()).await;
    let mut c = server.lock().await;
    // Free: timeout 0 acquires.
    let (_h, index) = {
        let mut s = common::wait(&mut c, wait_req("t", "", 0, Some(0))).await;
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
    let mut s = queued(&mut c, wait_req("t", "", 0, Some(500))).await;
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

pub async fn ttl_expiry_hands_the_lock_on(backend: Backend) {
    let server = Fixture::start(backend, Options::default()).await;
    let mut c = server.lock().await;
    let (mut holder, first) = acquire(&mut c, "exp", "", 300).await;
    let mut w = server.lock().await;
    let mut s = queued(&mut w, wait_req("exp", "", 0, None)).await;
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

pub async fn releasing_a_queued_entry_fails_its_waiters(backend: Backend) {
    let server = Fixture::start(backend, Options::default()).await;
    let mut c = server.lock().await;
    let (_h, _) = acquire(&mut c, "rq", "", 0).await;
    let mut w = server.lock().await;
    let mut s = queued(&mut w, wait_req("rq", "bob", 0, None)).await;
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

pub async fn renew_by_index_and_by_value(backend: Backend) {
    let server = Fixture::start(backend, Options::default()).await;
    let mut c = server.lock().await;
    let (_h, index) = acquire(&mut c, "rn", "me", 400).await;
    let r = c
        .renew(common::renew_index("rn", index, 2000))
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
        .renew(common::renew_value("rn", "me", 2000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.index, index);
    let err = c
        .renew(common::renew_index("rn", index + 100, 1000))
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

pub async fn same_value_joins_and_holder_reacquire_renews(backend: Backend) {
    let server = Fixture::start(backend, Options::default()).await;
    let mut c = server.lock().await;
    let (_h, first) = acquire(&mut c, "j", "", 0).await;
    let mut a = server.lock().await;
    let mut b = server.lock().await;
    let mut sa = common::wait(&mut a, wait_req("j", "x", 5000, None)).await;
    let mut sb = common::wait(&mut b, wait_req("j", "x", 5000, None)).await;
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

pub async fn election_campaign_observe_resign(backend: Backend) {
    let server = Fixture::start(backend, Options::default()).await;
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
        let channel = server.channel();
        async move {
            let mut e = pb::election_client::ElectionClient::new(channel);
            e.campaign(pb::CampaignRequest {
                election: "svc".into(),
                name: name.into(),
                ttl_ms: 0,
                timeout_ms: None,
                ..Default::default()
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
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

pub async fn watch_and_list_see_every_key_under_a_prefix(backend: Backend) {
    let server = Fixture::start(backend, Options::default()).await;
    let mut c = server.lock().await;
    let mut watch = watch(&mut c, "jobs/", true).await;
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

async fn holder_index(c: &mut LockClient<Channel>, key: &str) -> Option<u64> {
    c.get(pb::GetRequest { key: key.into() })
        .await
        .unwrap()
        .into_inner()
        .holder
        .map(|h| h.index)
}

pub async fn renew_with_another_ttl_moves_a_deadline_or_the_ttl_on_acquire(backend: Backend) {
    let server = Fixture::start(backend, Options::default()).await;
    let mut c = server.lock().await;
    // A holder renewed with a shorter ttl expires by the new one.
    let (_h, index) = acquire(&mut c, "rt", "", 600_000).await;
    let before = server.now_ms();
    let r = c
        .renew(common::renew_index("rt", index, 300))
        .await
        .unwrap()
        .into_inner();
    assert!(r.held);
    assert_eq!(r.index, index);
    assert!(
        r.deadline_unix_ms >= before + 300 && r.deadline_unix_ms < before + 60_000,
        "deadline {} is not about 300 ms after {before}",
        r.deadline_unix_ms
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut c = c.clone();
            async move { holder_index(&mut c, "rt").await.is_none() }
        })
        .await,
        "the hold kept its old ttl"
    );

    // A queued entry renewed with another ttl is held with that ttl.
    let (_h2, first) = acquire(&mut c, "rt", "", 0).await;
    let mut w = server.lock().await;
    let mut s = common::wait(&mut w, wait_req("rt", "next", 1000, None)).await;
    let queued = match next_event(&mut s).await.unwrap() {
        wait_event::Event::Queued(q) => q.index,
        other => panic!("expected queued, got {other:?}"),
    };
    let r = c
        .renew(common::renew_value("rt", "next", 120_000))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.held);
    assert_eq!(r.index, queued);
    assert_eq!(r.deadline_unix_ms, 0);
    let got = c
        .get(pb::GetRequest { key: "rt".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.queue.len(), 1);
    assert_eq!(got.queue[0].ttl_ms, 120_000);
    release(&mut c, "rt", first).await;
    match next_event(&mut s).await.unwrap() {
        wait_event::Event::Acquired(a) => {
            assert_eq!(a.index, queued);
            assert_eq!(a.ttl_ms, 120_000);
            assert!(a.deadline_unix_ms > server.now_ms() + 60_000);
        }
        other => panic!("expected acquired, got {other:?}"),
    }
    let got = c
        .get(pb::GetRequest { key: "rt".into() })
        .await
        .unwrap()
        .into_inner();
    let holder = got.holder.expect("held");
    assert_eq!((holder.index, holder.ttl_ms), (queued, 120_000));
}

pub async fn a_released_holder_hears_it_ended(backend: Backend) {
    let server = Fixture::start(backend, Options::default()).await;
    let mut c = server.lock().await;
    let (mut holder, index) = acquire(&mut c, "end", "", 0).await;
    let mut other = server.lock().await;
    let r = other
        .release(pb::ReleaseRequest {
            key: "end".into(),
            target: Some(release_request::Target::Index(index)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.index, r.was_holder), (index, true));
    match next_event(&mut holder).await.unwrap() {
        wait_event::Event::Ended(e) => {
            assert_eq!(e.index, index);
            assert_eq!(e.reason, pb::EndReason::Released as i32);
        }
        other => panic!("expected ended, got {other:?}"),
    }
    // Released twice: the entry is gone.
    let err = other
        .release(pb::ReleaseRequest {
            key: "end".into(),
            target: Some(release_request::Target::Index(index)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(holder_index(&mut c, "end").await, None);
}

async fn campaign(server: &Fixture, election: &str, name: &str) -> Streaming<pb::CampaignEvent> {
    let mut e = server.election().await;
    e.campaign(pb::CampaignRequest {
        election: election.into(),
        name: name.into(),
        ttl_ms: 0,
        timeout_ms: None,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

async fn next_campaign(s: &mut Streaming<pb::CampaignEvent>) -> campaign_event::Event {
    tokio::time::timeout(Duration::from_secs(30), s.message())
        .await
        .expect("campaign stalled")
        .unwrap()
        .expect("campaign ended")
        .event
        .expect("event")
}

pub async fn recampaigning_renews_and_same_name_candidates_win_together(backend: Backend) {
    let server = Fixture::start(backend, Options::default()).await;
    let mut lead = campaign(&server, "svc2", "lead").await;
    let index = match next_campaign(&mut lead).await {
        campaign_event::Event::Elected(a) => a.index,
        other => panic!("expected elected, got {other:?}"),
    };
    // The leader campaigning again is answered at once with its index.
    let mut again = campaign(&server, "svc2", "lead").await;
    match next_campaign(&mut again).await {
        campaign_event::Event::Elected(a) => assert_eq!(a.index, index),
        other => panic!("expected elected, got {other:?}"),
    }
    // Two candidates with one name share one entry and win together.
    let mut b1 = campaign(&server, "svc2", "b").await;
    let mut b2 = campaign(&server, "svc2", "b").await;
    let (q1, q2) = match (next_campaign(&mut b1).await, next_campaign(&mut b2).await) {
        (campaign_event::Event::Queued(q1), campaign_event::Event::Queued(q2)) => (q1, q2),
        other => panic!("expected queued twice, got {other:?}"),
    };
    assert_eq!(q1.index, q2.index);
    assert!(q1.index > index);
    let mut e = server.election().await;
    e.resign(pb::ResignRequest {
        election: "svc2".into(),
        name: "lead".into(),
    })
    .await
    .unwrap();
    match (next_campaign(&mut b1).await, next_campaign(&mut b2).await) {
        (campaign_event::Event::Elected(a1), campaign_event::Event::Elected(a2)) => {
            assert_eq!(a1, a2);
            assert_eq!(a1.index, q1.index);
        }
        other => panic!("expected elected twice, got {other:?}"),
    }
    let leader = e
        .leader(pb::LeaderRequest {
            election: "svc2".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .leader
        .expect("a leader");
    assert_eq!((leader.name.as_str(), leader.index), ("b", q1.index));
}

async fn next_lock_event(w: &mut Streaming<pb::LockEvent>) -> pb::LockEvent {
    tokio::time::timeout(Duration::from_secs(30), w.message())
        .await
        .expect("watch stalled")
        .unwrap()
        .expect("watch ended")
}

pub async fn watch_reports_every_kind_of_change(backend: Backend) {
    use pb::EventKind as K;
    let server = Fixture::start(backend, Options::default()).await;
    let mut c = server.lock().await;
    let mut watch = watch(&mut c, "ev", false).await;
    let (_a, a) = acquire(&mut c, "ev", "a", 0).await;
    let mut wb = server.lock().await;
    let mut sb = common::wait(&mut wb, wait_req("ev", "b", 400, None)).await;
    let b = match next_event(&mut sb).await.unwrap() {
        wait_event::Event::Queued(q) => q.index,
        other => panic!("expected queued, got {other:?}"),
    };
    let mut wc = server.lock().await;
    let mut sc = common::wait(&mut wc, wait_req("ev", "", 0, Some(300))).await;
    let cq = match next_event(&mut sc).await.unwrap() {
        wait_event::Event::Queued(q) => q.index,
        other => panic!("expected queued, got {other:?}"),
    };
    c.renew(common::renew_value("ev", "a", 0)).await.unwrap();
    let err = next_event(&mut sc).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    // Wait for the cancellation before releasing, so the order is known.
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next_lock_event(&mut watch).await);
    }
    c.release(pb::ReleaseRequest {
        key: "ev".into(),
        target: Some(release_request::Target::Value("a".into())),
    })
    .await
    .unwrap();
    for _ in 0..3 {
        seen.push(next_lock_event(&mut watch).await);
    }
    let kinds: Vec<(i32, u64)> = seen.iter().map(|e| (e.kind, e.index)).collect();
    assert_eq!(
        kinds,
        vec![
            (K::Acquired as i32, a),
            (K::Queued as i32, b),
            (K::Queued as i32, cq),
            (K::Renewed as i32, a),
            (K::Cancelled as i32, cq),
            (K::Released as i32, a),
            (K::Acquired as i32, b),
            (K::Expired as i32, b),
        ]
    );
    assert!(seen.iter().all(|e| e.key == "ev"));
    // Each event reports the lock after the change: the release hands over
    // at once, the expiry leaves it free.
    assert_eq!(seen[1].queue_length, 1);
    assert_eq!(seen[2].queue_length, 2);
    assert_eq!(seen[4].queue_length, 1);
    assert_eq!(seen[5].holder.as_ref().map(|h| h.index), Some(b));
    assert_eq!(seen[6].holder.as_ref().map(|h| h.index), Some(b));
    assert_eq!(seen[6].value, "b");
    assert_eq!(seen[6].ttl_ms, 400);
    assert_eq!(seen[7].holder, None);
    assert_eq!(seen[7].queue_length, 0);
}

pub async fn indexes_increase_across_keys(backend: Backend) {
    let server = Fixture::start(backend, Options::default()).await;
    let mut c = server.lock().await;
    let mut last = 0;
    for key in ["i/1", "i/2", "i/1", "i/3", "i/2"] {
        let (_s, index) = acquire(&mut c, key, "", 0).await;
        assert!(index > last, "{index} after {last}");
        last = index;
        release(&mut c, key, index).await;
    }
}

pub async fn unknown_entries_are_not_found_and_touch_nothing(backend: Backend) {
    let server = Fixture::start(backend, Options::default()).await;
    let mut c = server.lock().await;
    let (_h, index) = acquire(&mut c, "nf", "v", 0).await;
    for target in [
        release_request::Target::Index(0),
        release_request::Target::Index(index + 1),
        release_request::Target::Index(u64::MAX),
        release_request::Target::Value("other".into()),
    ] {
        let err = c
            .release(pb::ReleaseRequest {
                key: "nf".into(),
                target: Some(target.clone()),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{target:?}: {err:?}");
    }
    for target in [
        renew_request::Target::Index(0),
        renew_request::Target::Index(u64::MAX),
        renew_request::Target::Value("other".into()),
    ] {
        let err = c
            .renew(pb::RenewRequest {
                key: "nf".into(),
                target: Some(target.clone()),
                ttl_ms: 1000,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{target:?}: {err:?}");
    }
    // The same index on another key is not this key's.
    let err = c
        .release(pb::ReleaseRequest {
            key: "nf-other".into(),
            target: Some(release_request::Target::Index(index)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(holder_index(&mut c, "nf").await, Some(index));
}

fn sem_req(key: &str, ttl_ms: u64, limit: u32, lock_delay_ms: u64) -> pb::WaitRequest {
    pb::WaitRequest {
        limit,
        lock_delay_ms,
        ..wait_req(key, "", ttl_ms, None)
    }
}

async fn acquired(s: &mut Streaming<pb::WaitEvent>) -> pb::Acquired {
    match next_event(s).await.expect("an event") {
        wait_event::Event::Acquired(a) => a,
        other => panic!("expected acquired, got {other:?}"),
    }
}

pub async fn a_semaphore_holds_up_to_its_limit_and_hands_over_in_order(backend: Backend) {
    let server = Fixture::start(backend, Options::default()).await;
    let mut c = server.lock().await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = common::wait(&mut c, sem_req("sem", 0, 3, 0)).await;
        let a = acquired(&mut s).await;
        held.push((s, a.index));
    }
    let mut fourth = common::wait(&mut c, sem_req("sem", 0, 3, 0)).await;
    let q4 = common::queued(&mut fourth).await;
    let mut fifth = common::wait(&mut c, sem_req("sem", 0, 3, 0)).await;
    let q5 = common::queued(&mut fifth).await;
    assert_eq!((q4.position, q5.position), (1, 2));
    assert_eq!(
        q4.holder.map(|h| h.index),
        Some(held[0].1),
        "the oldest holder"
    );

    let got = view(&mut c, "sem").await;
    let holders: Vec<u64> = got.holders.iter().map(|h| h.index).collect();
    assert_eq!(holders, vec![held[0].1, held[1].1, held[2].1]);
    assert_eq!(got.holder.map(|h| h.index), Some(held[0].1));
    assert_eq!((got.limit, got.queue.len()), (3, 2));

    // Another limit while the key has entries: refused, naming the limit.
    for other in [1, 0, 4] {
        let err = c.wait(sem_req("sem", 0, other, 0)).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("limit 3"), "{}", err.message());
    }
    // A lock (limit 1) refuses a semaphore request the same way.
    let (_l, _) = acquire(&mut c, "plain", "", 0).await;
    let err = c.wait(sem_req("plain", 0, 2, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // The middle holder leaves: the first queued entry holds at once, with
    // its own index; the next one moves up.
    release(&mut c, "sem", held[1].1).await;
    let a4 = acquired(&mut fourth).await;
    assert_eq!(a4.index, q4.index);
    let holders: Vec<u64> = view(&mut c, "sem")
        .await
        .holders
        .iter()
        .map(|h| h.index)
        .collect();
    assert_eq!(holders, vec![held[0].1, held[2].1, q4.index]);
    // Each holder renews on its own.
    let r = c
        .renew(common::renew_index("sem", held[2].1, 60_000))
        .await
        .unwrap()
        .into_inner();
    assert!(r.held);
    let got = view(&mut c, "sem").await;
    assert_eq!(got.holders[1].ttl_ms, 60_000);
    assert_eq!(got.holders[0].ttl_ms, 0);
}

pub async fn a_lock_delay_follows_an_expiry_and_never_a_release(backend: Backend) {
    let server = Fixture::start(
        backend,
        Options {
            max_lock_delay_ms: 5_000,
        },
    )
    .await;
    let mut c = server.lock().await;
    // Over the cap: refused.
    let err = c.wait(sem_req("d", 300, 1, 5_001)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("lock_delay"), "{}", err.message());

    let mut events = watch(&mut c, "d", false).await;
    let mut first = common::wait(&mut c, sem_req("d", 300, 1, 1_500)).await;
    let a1 = acquired(&mut first).await;
    let mut w = server.lock().await;
    let mut second = common::wait(&mut w, sem_req("d", 10_000, 1, 0)).await;
    common::queued(&mut second).await;
    let until = a1.deadline_unix_ms + 1_500;

    // The holder expires: the key is granted to nobody until deadline +
    // delay, and the watchers are told when that is.
    loop {
        let e = next_lock_event(&mut events).await;
        if e.kind == pb::EventKind::Expired as i32 {
            assert_eq!(e.index, a1.index);
            assert_eq!(e.delayed_until_unix_ms, until);
            assert!(e.holder.is_none(), "{e:?}");
            break;
        }
    }
    let got = view(&mut c, "d").await;
    if got.holder.is_none() {
        // Still in the delay when the server answered.
        assert_eq!(got.delayed_until_unix_ms, until);
        let err = c.wait(wait_req("d", "", 0, Some(0))).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    }
    let a2 = acquired(&mut second).await;
    // Watchers hear the delay end, then the grant it let through.
    let e = next_lock_event(&mut events).await;
    assert_eq!(
        (e.kind, e.index, e.at_unix_ms, e.delayed_until_unix_ms),
        (pb::EventKind::DelayEnded as i32, a1.index, until, 0)
    );
    let e = next_lock_event(&mut events).await;
    assert_eq!(
        (e.kind, e.index),
        (pb::EventKind::Acquired as i32, a2.index)
    );
    let granted_at = a2.deadline_unix_ms - a2.ttl_ms;
    assert!(
        granted_at >= until,
        "granted {} ms before the delay ended",
        until - granted_at
    );
    assert_eq!(view(&mut c, "d").await.delayed_until_unix_ms, 0);

    // A release ends a hold with a lock-delay at once: the next waiter is
    // granted without waiting out the delay (5 s here, past the bound
    // below).
    let mut third = common::wait(&mut c, sem_req("r", 300, 1, 5_000)).await;
    let a3 = acquired(&mut third).await;
    let mut fourth = common::wait(&mut w, sem_req("r", 0, 1, 0)).await;
    common::queued(&mut fourth).await;
    let released = Instant::now();
    release(&mut c, "r", a3.index).await;
    acquired(&mut fourth).await;
    assert!(released.elapsed() < Duration::from_secs(5));
}

pub async fn check_says_whether_a_fencing_token_is_current(backend: Backend) {
    let server = Fixture::start(backend, Options::default()).await;
    let mut c = server.lock().await;
    let check = |index| pb::CheckRequest {
        key: "fence".into(),
        index,
    };
    // A key never used: nobody is current.
    let r = c.check(check(1)).await.unwrap().into_inner();
    assert!(!r.current && r.holders.is_empty());

    let mut s1 = common::wait(&mut c, sem_req("fence", 0, 2, 0)).await;
    let i1 = acquired(&mut s1).await.index;
    let mut s2 = common::wait(&mut c, sem_req("fence", 0, 2, 0)).await;
    let i2 = acquired(&mut s2).await.index;
    let mut s3 = common::wait(&mut c, sem_req("fence", 0, 2, 0)).await;
    let i3 = common::queued(&mut s3).await.index;
    for (index, current) in [(i1, true), (i2, true), (i3, false), (i3 + 100, false)] {
        let r = c.check(check(index)).await.unwrap().into_inner();
        assert_eq!(r.current, current, "index {index}");
        let holders: Vec<u64> = r.holders.iter().map(|h| h.index).collect();
        assert_eq!(holders, vec![i1, i2]);
    }
    release(&mut c, "fence", i1).await;
    acquired(&mut s3).await;
    assert!(!c.check(check(i1)).await.unwrap().into_inner().current);
    assert!(c.check(check(i3)).await.unwrap().into_inner().current);
}
