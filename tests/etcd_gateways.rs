//! Several baton gateways over one real etcd: state is shared through etcd
//! only, a gateway killed with `kill -9` takes its queued entries with it
//! (after its lease runs out) and never a hold, and joins work across
//! gateways.

mod common;

use std::time::{Duration, Instant};

use baton::proto::v1::{self as pb, release_request, wait_event};
use common::{
    Server, acquire, etcd::Etcd, next_event, next_leader, queued, release, view, wait, wait_req,
    watch,
};
use tonic::{Code, Streaming};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_taken_through_one_gateway_is_seen_and_handed_on_through_another() {
    let etcd = Etcd::start();
    let a = Server::etcd(&etcd, "/two/", &[]);
    let b = Server::etcd(&etcd, "/two/", &[]);
    let mut ca = a.lock().await;
    let mut cb = b.lock().await;

    let mut watch_b = watch(&mut cb, "shared", false).await;
    let (_held, first) = acquire(&mut ca, "shared", "via-a", 60_000).await;
    let seen = view(&mut cb, "shared").await;
    let holder = seen.holder.expect("B sees A's holder");
    assert_eq!((holder.index, holder.value.as_str()), (first, "via-a"));

    // Held: timeout 0 through B fails, leaving nothing.
    let err = cb
        .wait(wait_req("shared", "", 0, Some(0)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // A waiter on B is granted when A's holder releases.
    let mut wb = b.lock().await;
    let mut sb = wait(&mut wb, wait_req("shared", "via-b", 0, None)).await;
    let q = queued(&mut sb).await;
    assert_eq!(q.position, 1);
    assert_eq!(q.holder.map(|h| h.index), Some(first));
    let r = release(&mut ca, "shared", first).await;
    assert!(r.was_holder);
    match next_event(&mut sb).await.unwrap() {
        wait_event::Event::Acquired(g) => assert_eq!(g.index, q.index),
        other => panic!("expected acquired, got {other:?}"),
    }
    let seen = view(&mut ca, "shared").await;
    assert_eq!(seen.holder.map(|h| h.index), Some(q.index));

    // B's watch saw A's changes.
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(10), watch_b.message())
            .await
            .expect("watch stalled")
            .unwrap()
            .unwrap();
        kinds.push((ev.kind, ev.index));
    }
    assert_eq!(
        kinds,
        vec![
            (pb::EventKind::Acquired as i32, first),
            (pb::EventKind::Queued as i32, q.index),
            (pb::EventKind::Released as i32, first),
            (pb::EventKind::Acquired as i32, q.index),
        ]
    );
    // Renew and release through the other gateway, by value.
    let r = ca
        .renew(pb::RenewRequest {
            key: "shared".into(),
            target: Some(pb::renew_request::Target::Value("via-b".into())),
            ttl_ms: 5_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.held);
    ca.release(pb::ReleaseRequest {
        key: "shared".into(),
        target: Some(release_request::Target::Value("via-b".into())),
    })
    .await
    .unwrap();
    match next_event(&mut sb).await.unwrap() {
        wait_event::Event::Ended(e) => assert_eq!(e.reason, pb::EndReason::Released as i32),
        other => panic!("expected ended, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_value_requests_on_two_gateways_join_one_entry() {
    let etcd = Etcd::start();
    let a = Server::etcd(&etcd, "/join/", &["--etcd-queue-lease-secs", "2"]);
    let b = Server::etcd(&etcd, "/join/", &[]);
    let mut ca = a.lock().await;
    let mut cb = b.lock().await;
    let (_h, first) = acquire(&mut cb, "j", "", 0).await;

    // Racing joins from both gateways end on one entry.
    let (mut wa, mut wb) = (a.lock().await, b.lock().await);
    let (sa, sb) = tokio::join!(
        wait(&mut wa, wait_req("j", "x", 0, None)),
        wait(&mut wb, wait_req("j", "x", 0, None))
    );
    let (mut sa, mut sb) = (sa, sb);
    let (qa, qb) = (queued(&mut sa).await, queued(&mut sb).await);
    assert_eq!(qa.index, qb.index);
    assert_eq!(view(&mut ca, "j").await.queue.len(), 1);

    // The requests on A go away (and A with them): B's request keeps the
    // entry alive, whichever gateway created it.
    drop(sa);
    drop(wa);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut a = a;
    a.kill();
    // Longer than A's queue lease: had the entry stayed on A's lease, it
    // would be gone now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let seen = view(&mut cb, "j").await;
    assert_eq!(seen.queue.len(), 1, "{seen:?}");
    assert_eq!(seen.queue[0].index, qa.index);

    release(&mut cb, "j", first).await;
    match next_event(&mut sb).await.unwrap() {
        wait_event::Event::Acquired(g) => assert_eq!(g.index, qa.index),
        other => panic!("expected acquired, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_loses_its_queued_entries_and_never_its_holds() {
    let etcd = Etcd::start();
    let mut a = Server::etcd(&etcd, "/kill/", &["--etcd-queue-lease-secs", "2"]);
    let b = Server::etcd(&etcd, "/kill/", &[]);
    let mut ca = a.lock().await;
    let mut cb = b.lock().await;

    // Holds taken through A: a long one, one that never expires, and a
    // short one that only the lease can end once A is gone.
    let (_h1, held_ttl) = acquire(&mut ca, "hold-ttl", "", 60_000).await;
    let (_h2, held_forever) = acquire(&mut ca, "hold-forever", "", 0).await;
    let short_at = Instant::now();
    let (_h3, held_short) = acquire(&mut ca, "hold-short", "", 3_000).await;

    // Queued requests on A behind a holder on B.
    let (_hb, holder) = acquire(&mut cb, "k", "", 0).await;
    let mut streams = Vec::new();
    for i in 0..3 {
        let mut c = a.lock().await;
        let mut s = wait(&mut c, wait_req("k", &format!("dead-{i}"), 0, None)).await;
        queued(&mut s).await;
        streams.push((c, s));
    }
    assert_eq!(view(&mut cb, "k").await.queue.len(), 3);

    a.kill();
    // The holder goes before A's lease has run out: A's entries are next,
    // but nobody may be granted them.
    release(&mut cb, "k", holder).await;
    let start = Instant::now();
    let mut emptied = None;
    while start.elapsed() < Duration::from_secs(20) {
        let seen = view(&mut cb, "k").await;
        assert!(
            seen.holder.is_none(),
            "a dead gateway's entry was granted: {seen:?}"
        );
        if seen.queue.is_empty() {
            emptied = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let emptied = emptied.expect("the dead gateway's queued entries stayed");
    assert!(
        emptied >= Duration::from_secs(1),
        "gone after {emptied:?}: too soon for a lease"
    );

    // The lock is free for the living.
    let (_s, next) = acquire(&mut cb, "k", "", 0).await;
    assert!(next > holder);

    // The holds taken through A outlived A (and its queue lease).
    let seen = view(&mut cb, "hold-ttl").await;
    assert_eq!(seen.holder.map(|h| h.index), Some(held_ttl));
    let seen = view(&mut cb, "hold-forever").await;
    assert_eq!(seen.holder.map(|h| h.index), Some(held_forever));
    // The short one ends by its lease, A being gone: never before its ttl.
    let mut gone = None;
    while short_at.elapsed() < Duration::from_secs(20) {
        let seen = view(&mut cb, "hold-short").await;
        match seen.holder {
            Some(h) => assert_eq!(h.index, held_short),
            None => {
                gone = Some(short_at.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone = gone.expect("the short hold never expired");
    assert!(
        gone >= Duration::from_secs(3),
        "expired after {gone:?}, before its ttl"
    );
    drop(streams);
}

async fn campaign(server: &Server, name: &str, ttl_ms: u64) -> Streaming<pb::CampaignEvent> {
    let mut e = server.election().await;
    e.campaign(pb::CampaignRequest {
        election: "lead".into(),
        name: name.into(),
        ttl_ms,
        timeout_ms: None,
    })
    .await
    .unwrap()
    .into_inner()
}

async fn first_campaign_event(s: &mut Streaming<pb::CampaignEvent>) -> pb::campaign_event::Event {
    tokio::time::timeout(Duration::from_secs(30), s.message())
        .await
        .expect("campaign stalled")
        .unwrap()
        .expect("campaign ended")
        .event
        .expect("event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_across_gateways_goes_from_leader_to_leader() {
    let etcd = Etcd::start();
    let mut a = Server::etcd(&etcd, "/elect/", &[]);
    let b = Server::etcd(&etcd, "/elect/", &[]);
    let mut observe = b
        .election()
        .await
        .observe(pb::ObserveRequest {
            election: "lead".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_leader(&mut observe).await, None);

    let mut ca = campaign(&a, "a", 0).await;
    assert!(matches!(
        first_campaign_event(&mut ca).await,
        pb::campaign_event::Event::Elected(_)
    ));
    assert_eq!(next_leader(&mut observe).await.as_deref(), Some("a"));
    let mut cb = campaign(&b, "b", 0).await;
    assert!(matches!(
        first_campaign_event(&mut cb).await,
        pb::campaign_event::Event::Queued(_)
    ));

    // Resigned through A, the next candidate is on B: observers see the
    // new leader, with no moment without one.
    a.election()
        .await
        .resign(pb::ResignRequest {
            election: "lead".into(),
            name: "a".into(),
        })
        .await
        .unwrap();
    assert_eq!(next_leader(&mut observe).await.as_deref(), Some("b"));

    // The same the other way round, and then through a lease: "c" leads
    // through A with a ttl, "d" waits on B, and A dies.
    let mut cc = campaign(&a, "c", 2_000).await;
    assert!(matches!(
        first_campaign_event(&mut cc).await,
        pb::campaign_event::Event::Queued(_)
    ));
    b.election()
        .await
        .resign(pb::ResignRequest {
            election: "lead".into(),
            name: "b".into(),
        })
        .await
        .unwrap();
    assert_eq!(next_leader(&mut observe).await.as_deref(), Some("c"));
    let mut cd = campaign(&b, "d", 0).await;
    assert!(matches!(
        first_campaign_event(&mut cd).await,
        pb::campaign_event::Event::Queued(_)
    ));
    a.kill();
    assert_eq!(next_leader(&mut observe).await.as_deref(), Some("d"));
    assert!(matches!(
        first_campaign_event(&mut cd).await,
        pb::campaign_event::Event::Elected(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stopped_with_sigterm_withdraws_its_queued_entries_at_once() {
    let etcd = Etcd::start();
    // A long queue lease: only a withdrawal at shutdown can clear A's
    // entries within the test's bound.
    let mut a = Server::etcd(&etcd, "/term/", &["--etcd-queue-lease-secs", "60"]);
    let b = Server::etcd(&etcd, "/term/", &[]);
    let mut cb = b.lock().await;
    let (_hb, holder) = acquire(&mut cb, "k", "", 0).await;
    let mut ca = a.lock().await;
    let mut s = wait(&mut ca, wait_req("k", "on-a", 0, None)).await;
    queued(&mut s).await;
    assert_eq!(view(&mut cb, "k").await.queue.len(), 1);

    let status = a.terminate(Duration::from_secs(15));
    assert!(status.expect("gateway A did not exit").success());
    let start = Instant::now();
    while !view(&mut cb, "k").await.queue.is_empty() {
        if start.elapsed() > Duration::from_secs(20) {
            panic!(
                "a stopped gateway's queued entry outlived its shutdown; in etcd:\n{}",
                etcd_dump(&etcd, "/term/").await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The lock hands on through B as if A's waiter had never been there.
    release(&mut cb, "k", holder).await;
    let mut w = wait(&mut cb, wait_req("k", "", 0, Some(5_000))).await;
    match next_event(&mut w).await.unwrap() {
        wait_event::Event::Acquired(_) => {}
        other => panic!("expected the free lock, got {other:?}"),
    }
}

/// Every key under `prefix` with its lease and that lease's remaining ttl,
/// for a failure message that says what was left behind and why.
async fn etcd_dump(etcd: &Etcd, prefix: &str) -> String {
    let mut client = match etcd_client::Client::connect([etcd.url.as_str()], None).await {
        Ok(c) => c,
        Err(e) => return format!("cannot connect to etcd: {e}"),
    };
    let resp = match client
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
    {
        Ok(r) => r,
        Err(e) => return format!("cannot read etcd: {e}"),
    };
    let mut out = String::new();
    for kv in resp.kvs() {
        let ttl = match kv.lease() {
            0 => "no lease".to_owned(),
            id => match client.lease_time_to_live(id, None).await {
                Ok(t) => format!("lease {id:x} ttl {} s", t.ttl()),
                Err(e) => format!("lease {id:x}: {e}"),
            },
        };
        out.push_str(&format!(
            "{} = {} (create rev {}, {ttl})\n",
            String::from_utf8_lossy(kv.key()),
            String::from_utf8_lossy(kv.value()),
            kv.create_revision()
        ));
    }
    out
}
