//! Several baton gateways over one real etcd: one primary runs the engine,
//! the others forward to it. A lock is shared across gateways, joins work
//! across them, a follower killed with `kill -9` or stopped with SIGTERM
//! takes its queued requests with it and never a hold, and a primary
//! killed with `kill -9` is replaced: holds keep their index, value and
//! deadline, indexes keep rising, its queued requests fail with
//! UNAVAILABLE.

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
    let (a, b) = Server::etcd_pair(&etcd, "/two/", &[]);
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
        .renew(common::renew_value("shared", "via-b", 5_000))
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
    let (a, b) = Server::etcd_pair(&etcd, "/join/", &[]);
    let mut ca = a.lock().await;
    let (_h, first) = acquire(&mut ca, "j", "", 0).await;

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

    // The request through B goes away, and B with it: A's request keeps
    // the entry alive.
    drop(sb);
    drop(wb);
    let mut b = b;
    b.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = view(&mut ca, "j").await;
    assert_eq!(seen.queue.len(), 1, "{seen:?}");
    assert_eq!(seen.queue[0].index, qa.index);

    release(&mut ca, "j", first).await;
    match next_event(&mut sa).await.unwrap() {
        wait_event::Event::Acquired(g) => assert_eq!(g.index, qa.index),
        other => panic!("expected acquired, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_follower_loses_its_queued_requests_at_once_and_never_its_holds() {
    let etcd = Etcd::start();
    let (p, mut f) = Server::etcd_pair(&etcd, "/kill/", &[]);
    let mut cf = f.lock().await;
    let mut cp = p.lock().await;

    // Holds taken through the follower live on the primary.
    let (_h1, held_ttl) = acquire(&mut cf, "hold-ttl", "", 60_000).await;
    let (_h2, held_forever) = acquire(&mut cf, "hold-forever", "", 0).await;

    // Requests queued through the follower behind a holder.
    let (_hp, holder) = acquire(&mut cp, "k", "", 0).await;
    let mut streams = Vec::new();
    for i in 0..3 {
        let mut c = f.lock().await;
        let mut s = wait(&mut c, wait_req("k", &format!("dead-{i}"), 0, None)).await;
        queued(&mut s).await;
        streams.push((c, s));
    }
    assert_eq!(view(&mut cp, "k").await.queue.len(), 3);

    f.kill();
    // Its streams to the primary broke with it: nobody waits on those
    // entries any more, so they go, and none is ever granted.
    let start = Instant::now();
    loop {
        let seen = view(&mut cp, "k").await;
        assert_eq!(seen.holder.as_ref().map(|h| h.index), Some(holder));
        if seen.queue.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a dead follower's queued requests stayed: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    release(&mut cp, "k", holder).await;
    assert!(view(&mut cp, "k").await.holder.is_none());

    // The holds taken through the follower outlived it.
    let seen = view(&mut cp, "hold-ttl").await;
    assert_eq!(seen.holder.map(|h| h.index), Some(held_ttl));
    let seen = view(&mut cp, "hold-forever").await;
    assert_eq!(seen.holder.map(|h| h.index), Some(held_forever));
    drop(streams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_is_replaced_and_its_holds_survive() {
    let etcd = Etcd::start();
    let (mut p, f) = Server::etcd_pair(&etcd, "/failover/", &["--etcd-primary-ttl-secs", "2"]);
    let mut cf = f.lock().await;

    let (_h1, held_ttl) = acquire(&mut cf, "hold-ttl", "v1", 60_000).await;
    let (_h2, held_forever) = acquire(&mut cf, "hold-forever", "", 0).await;
    let (_h3, held_short) = acquire(&mut cf, "hold-short", "", 4_000).await;
    let short = view(&mut cf, "hold-short").await.holder.expect("held");
    let (_hk, holder) = acquire(&mut cf, "k", "", 0).await;
    let mut queued_stream = wait(&mut cf, wait_req("k", "", 0, None)).await;
    let q = queued(&mut queued_stream).await;

    p.kill();
    let killed = Instant::now();
    // The request queued on the dead primary fails: the client re-queues.
    let failed = tokio::time::timeout(Duration::from_secs(30), queued_stream.message())
        .await
        .expect("the queued stream must end");
    match failed {
        Err(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        Ok(m) => panic!("expected UNAVAILABLE, got {m:?}"),
    }

    // The follower wins the next term and restores the holds.
    common::etcd::wait_for_role(&f, "primary");
    let (_n, next) = acquire(&mut cf, "after", "", 0).await;
    let first_grant = killed.elapsed();
    eprintln!("kill -9 of the primary to the first grant through the survivor: {first_grant:?}");
    assert!(
        next > q.index,
        "indexes must keep rising: {next} after {}",
        q.index
    );

    let seen = view(&mut cf, "hold-ttl")
        .await
        .holder
        .expect("hold-ttl survives");
    assert_eq!((seen.index, seen.value.as_str()), (held_ttl, "v1"));
    let seen = view(&mut cf, "hold-forever")
        .await
        .holder
        .expect("hold-forever survives");
    assert_eq!(seen.index, held_forever);
    let seen = view(&mut cf, "k").await;
    assert_eq!(seen.holder.as_ref().map(|h| h.index), Some(holder));
    assert!(
        seen.queue.is_empty(),
        "queued requests do not survive: {seen:?}"
    );

    // The short hold keeps its wall-clock deadline: held until then, gone
    // right after.
    let wall = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64
    };
    loop {
        // The server answered between `before` and `after`.
        let before = wall();
        let holder = view(&mut cf, "hold-short").await.holder;
        let after = wall();
        match holder {
            Some(h) => {
                assert_eq!(
                    (h.index, h.deadline_unix_ms),
                    (held_short, short.deadline_unix_ms)
                );
                assert!(before < short.deadline_unix_ms, "held past its deadline");
            }
            None => {
                assert!(
                    after >= short.deadline_unix_ms,
                    "expired {} ms before its deadline",
                    short.deadline_unix_ms - after
                );
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_frozen_past_its_lease_answers_nothing_stale_when_it_wakes() {
    let etcd = Etcd::start();
    let (p, f) = Server::etcd_pair(&etcd, "/frozen/", &["--etcd-primary-ttl-secs", "1"]);
    let mut cp = p.lock().await;
    let (_h, first) = acquire(&mut cp, "f", "", 60_000).await;

    // Cut the primary off (SIGSTOP) for longer than its lease: the
    // follower takes over, and the lock changes hands there.
    p.signal("STOP");
    common::etcd::wait_for_role(&f, "primary");
    let mut cf = f.lock().await;
    release(&mut cf, "f", first).await;
    let (_h2, second) = acquire(&mut cf, "f", "", 60_000).await;

    // Questions sent to the old primary while it sleeps are the first
    // thing it sees on waking: it must not answer them from its old term.
    let mut cp2 = cp.clone();
    let get = tokio::spawn(async move { cp.get(pb::GetRequest { key: "f".into() }).await });
    let try_once = tokio::spawn(async move {
        cp2.wait(wait_req("f", "", 60_000, Some(0)))
            .await
            .map(|s| s.into_inner())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.signal("CONT");
    match get.await.expect("get task") {
        Ok(r) => assert_eq!(
            r.into_inner().holder.map(|h| h.index),
            Some(second),
            "the woken primary answered from its old term"
        ),
        Err(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
    }
    match try_once.await.expect("wait task") {
        Ok(mut s) => match s.message().await {
            Ok(Some(ev)) => panic!("the woken primary granted a held lock: {ev:?}"),
            Ok(None) => panic!("the wait ended with no answer"),
            Err(s) => assert!(
                matches!(s.code(), Code::FailedPrecondition | Code::Unavailable),
                "{s:?}"
            ),
        },
        Err(s) => assert!(
            matches!(s.code(), Code::FailedPrecondition | Code::Unavailable),
            "{s:?}"
        ),
    }
    // And it rejoins as a follower of the new primary.
    common::etcd::wait_for_role(&p, "follower");
    assert_eq!(
        view(&mut cf, "f").await.holder.map(|h| h.index),
        Some(second)
    );
}

async fn campaign(server: &Server, name: &str, ttl_ms: u64) -> Streaming<pb::CampaignEvent> {
    let mut e = server.election().await;
    e.campaign(pb::CampaignRequest {
        election: "lead".into(),
        name: name.into(),
        ttl_ms,
        timeout_ms: None,
        ..Default::default()
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
    // A is the follower: it is the one that dies below.
    let (b, mut a) = Server::etcd_pair(&etcd, "/elect/", &[]);
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
async fn a_follower_stopped_with_sigterm_withdraws_its_queued_entries_at_once() {
    let etcd = Etcd::start();
    // A is the follower that stops; B, the primary, serves on.
    let (b, mut a) = Server::etcd_pair(&etcd, "/term/", &[]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_delay_survives_the_primary_being_killed() {
    const DELAY: u64 = 8_000;
    let etcd = Etcd::start();
    let (mut p, f) = Server::etcd_pair(&etcd, "/delay/", &["--etcd-primary-ttl-secs", "2"]);
    let mut cf = f.lock().await;
    let (_s, acquired) = common::acquired(
        &mut cf,
        pb::WaitRequest {
            lock_delay_ms: DELAY,
            ..wait_req("ld", "", 300, None)
        },
    )
    .await;
    let until = acquired.deadline_unix_ms + DELAY;
    common::expect_delay_until(&mut cf, "ld", until).await;
    p.kill();
    common::etcd::wait_for_role(&f, "primary");
    let before = common::wall_ms();
    let got = view(&mut cf, "ld").await;
    if before < until {
        assert_eq!(
            got.delayed_until_unix_ms, until,
            "the delay was lost: {got:?}"
        );
    }
    let mut w = wait(&mut cf, wait_req("ld", "", 10_000, None)).await;
    common::expect_granted_from(&mut w, until).await;
}

/// `baton status` without a key says which gateway it reached and where the
/// primary is, so an operator can tell the roles apart from a shell.
#[test]
fn baton_status_names_each_gateways_role_and_the_primary() {
    let etcd = Etcd::start();
    let (p, f) = Server::etcd_pair(&etcd, "/status/", &[]);
    let status = |server: &Server| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["status"])
            .env("BATON_ENDPOINT", &server.url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run baton status");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let of_follower = status(&f);
    assert!(
        of_follower.contains("backend etcd, role follower"),
        "{of_follower}"
    );
    assert!(
        of_follower.contains(&format!("primary: {}", p.url.trim_end_matches('/'))),
        "{of_follower} (primary at {})",
        p.url
    );
    let of_primary = status(&p);
    assert!(of_primary.contains("role primary"), "{of_primary}");
}

/// The role a TLS gateway reports, asked with the test CA and a client
/// certificate.
fn tls_role(server: &Server, certs: &common::etcd::Certs) -> String {
    let r = certs.curl(&server.addr, &["--max-time", "5", "https://ADDR/v1/status"]);
    serde_json::from_str::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["role"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{r:?}"))
}

/// Gateways whose listeners use certificates from a private CA and require
/// client certificates: a follower forwards only with the peer flags (the
/// CA to check the primary against, and a client certificate to show it),
/// and without them its clients get a clear UNAVAILABLE, never a grant.
#[test]
fn followers_forward_over_mutual_tls_with_the_peer_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = common::etcd::Certs::make(dir.path());
    let etcd = Etcd::start();
    let p = |path: &std::path::Path| path.display().to_string();
    let tls = [
        "--tls-cert-file".to_owned(),
        p(&certs.server_cert),
        "--tls-key-file".to_owned(),
        p(&certs.server_key),
        "--tls-client-ca-file".to_owned(),
        p(&certs.ca),
    ];
    let peer = [
        "--peer-trusted-ca-file".to_owned(),
        p(&certs.ca),
        "--peer-cert-file".to_owned(),
        p(&certs.client_cert),
        "--peer-key-file".to_owned(),
        p(&certs.client_key),
    ];
    let with_peer: Vec<&str> = tls.iter().chain(peer.iter()).map(String::as_str).collect();
    let without_peer: Vec<&str> = tls.iter().map(String::as_str).collect();
    let wait_role = |s: &Server, want: &str| {
        let start = Instant::now();
        while tls_role(s, &certs) != want {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} did not become {want}: it says {:?}",
                s.addr,
                tls_role(s, &certs)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let primary = Server::etcd(&etcd, "/mtls/", &with_peer);
    wait_role(&primary, "primary");
    let follower = Server::etcd(&etcd, "/mtls/", &with_peer);
    wait_role(&follower, "follower");
    let stranger = Server::etcd(&etcd, "/mtls/", &without_peer);

    let tls_curl = |s: &Server, extra: &[&str]| {
        let mut args = vec!["--max-time", "10"];
        args.extend_from_slice(extra);
        certs.curl(&s.addr, &args)
    };
    // Through the follower with the peer flags: taken on the primary.
    let r = tls_curl(
        &follower,
        &[
            "-X",
            "POST",
            "-d",
            "value=via-follower",
            "https://ADDR/mod/v2/lock/m?ttl=60",
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = tls_curl(&primary, &["https://ADDR/mod/v2/lock/m?field=value"]);
    assert_eq!((r.status, r.body.as_str()), (200, "via-follower"), "{r:?}");

    // Through the gateway without them: the primary's certificate is from
    // a CA it does not trust, so the call fails, and nothing is taken.
    let r = tls_curl(
        &stranger,
        &[
            "-X",
            "POST",
            "-d",
            "value=stranger",
            "https://ADDR/mod/v2/lock/s?ttl=60&timeout=0",
        ],
    );
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.body.contains("primary is unreachable") && r.body.contains("certificate"),
        "{r:?}"
    );
    let r = tls_curl(&primary, &["https://ADDR/mod/v2/lock/s?field=value"]);
    assert_ne!(r.body, "stranger", "{r:?}");
}
