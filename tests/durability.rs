//! The durable embedded store against `kill -9`: held locks, releases and
//! fencing tokens survive crashes; deadlines keep counting while the server
//! is down; a locked or damaged data directory is refused.

mod common;

use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use baton::proto::v1::{self as pb, release_request, wait_event};
use common::Server;
use tonic::Code;

/// What the test knows about one key from acknowledged operations.
#[derive(Clone, Debug, PartialEq)]
enum Known {
    /// Nothing acknowledged yet, or acknowledged released.
    Free,
    /// Acknowledged held by this index with this ttl.
    Held { index: u64, ttl_ms: u64 },
    /// An operation was in flight at the crash: either outcome is fine.
    Uncertain { before: Box<Known>, op: Op },
}

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Acquire,
    Renew { ttl_ms: u64 },
    Release,
}

/// A small deterministic xorshift, so failures can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const KEYS: usize = 8;
const TTLS: [u64; 2] = [600_000, 700_000];

/// One worker per key: acquire (timeout 0), renew, release, over and over,
/// recording what was acknowledged. Stops at the first error (the crash).
async fn worker(
    url: String,
    key: String,
    state: Arc<Mutex<Known>>,
    seen: Arc<Mutex<Vec<u64>>>,
    seed: u64,
) {
    let Ok(mut c) = pb::lock_client::LockClient::connect(url).await else {
        return;
    };
    let mut rng = Rng(seed | 1);
    loop {
        let current = state.lock().unwrap().clone();
        match current {
            Known::Free => {
                *state.lock().unwrap() = Known::Uncertain {
                    before: Box::new(Known::Free),
                    op: Op::Acquire,
                };
                let ttl_ms = TTLS[0];
                let r = c
                    .wait(pb::WaitRequest {
                        key: key.clone(),
                        value: String::new(),
                        ttl_ms,
                        timeout_ms: Some(0),
                        ..Default::default()
                    })
                    .await;
                let Ok(mut s) = r else { return };
                let Ok(Some(ev)) = s.get_mut().message().await else {
                    return;
                };
                match ev.event {
                    Some(wait_event::Event::Acquired(a)) => {
                        seen.lock().unwrap().push(a.index);
                        *state.lock().unwrap() = Known::Held {
                            index: a.index,
                            ttl_ms,
                        };
                    }
                    other => panic!("{key}: expected a grant on a free key, got {other:?}"),
                }
            }
            Known::Held { index, ttl_ms } => {
                if rng.below(3) == 0 {
                    let new_ttl = TTLS[rng.below(2) as usize];
                    *state.lock().unwrap() = Known::Uncertain {
                        before: Box::new(Known::Held { index, ttl_ms }),
                        op: Op::Renew { ttl_ms: new_ttl },
                    };
                    let r = c.renew(common::renew_index(&key, index, new_ttl)).await;
                    if r.is_err() {
                        return;
                    }
                    *state.lock().unwrap() = Known::Held {
                        index,
                        ttl_ms: new_ttl,
                    };
                } else {
                    *state.lock().unwrap() = Known::Uncertain {
                        before: Box::new(Known::Held { index, ttl_ms }),
                        op: Op::Release,
                    };
                    let r = c
                        .release(pb::ReleaseRequest {
                            key: key.clone(),
                            target: Some(release_request::Target::Index(index)),
                        })
                        .await;
                    if r.is_err() {
                        return;
                    }
                    *state.lock().unwrap() = Known::Free;
                }
            }
            Known::Uncertain { .. } => return,
        }
    }
}

/// Checks the restarted server against what was acknowledged, and returns
/// what it holds now.
async fn reconcile(server: &Server, key: &str, known: &Known) -> Known {
    let mut c = server.lock().await;
    let got = c
        .get(pb::GetRequest { key: key.into() })
        .await
        .unwrap()
        .into_inner();
    assert!(got.queue.is_empty(), "{key}: queued entries do not survive");
    let holder = got.holder.map(|h| (h.index, h.ttl_ms));
    let ok = match known {
        Known::Free => holder.is_none(),
        Known::Held { index, ttl_ms } => holder == Some((*index, *ttl_ms)),
        Known::Uncertain { before, op } => match (&**before, op) {
            // A grant in flight may or may not have been stored.
            (Known::Free, Op::Acquire) => true,
            (Known::Held { index, ttl_ms }, Op::Renew { ttl_ms: new }) => {
                holder == Some((*index, *ttl_ms)) || holder == Some((*index, *new))
            }
            (Known::Held { index, ttl_ms }, Op::Release) => {
                holder.is_none() || holder == Some((*index, *ttl_ms))
            }
            _ => false,
        },
    };
    assert!(
        ok,
        "{key}: after restart holder {holder:?}, acknowledged {known:?}"
    );
    match holder {
        Some((index, ttl_ms)) => Known::Held { index, ttl_ms },
        None => Known::Free,
    }
}

/// Every index granted in the last round is above every index granted
/// before it (rounds are separated by a crash); returns the new maximum.
fn check_rising(seen: &Mutex<Vec<u64>>, max_before: u64) -> u64 {
    let mut seen = seen.lock().unwrap();
    let mut max = max_before;
    let mut distinct = std::collections::HashSet::new();
    for i in seen.drain(..) {
        assert!(
            i > max_before,
            "index {i} reused or went back (had {max_before})"
        );
        assert!(distinct.insert(i), "index {i} granted twice");
        max = max.max(i);
    }
    max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_state_survives_kill_dash_nine() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap().to_owned();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("crash/{i}")).collect();
    let states: Vec<Arc<Mutex<Known>>> = (0..KEYS)
        .map(|_| Arc::new(Mutex::new(Known::Free)))
        .collect();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut rng = Rng(0x5eed_1234_abcd);
    let mut max_index_before = 0u64;

    for _round in 0..24 {
        let mut server = Server::start(&["--data-dir", &data]);
        for (key, state) in keys.iter().zip(&states) {
            let known = state.lock().unwrap().clone();
            let now = reconcile(&server, key, &known).await;
            *state.lock().unwrap() = now;
        }
        // Indexes keep rising across restarts.
        max_index_before = check_rising(&seen, max_index_before);
        let tasks: Vec<_> = keys
            .iter()
            .zip(&states)
            .enumerate()
            .map(|(i, (key, state))| {
                tokio::spawn(worker(
                    server.url.clone(),
                    key.clone(),
                    state.clone(),
                    seen.clone(),
                    rng.next() ^ (i as u64),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50 + rng.below(400))).await;
        server.kill();
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }
    // A last start: the final state must still match.
    let server = Server::start(&["--data-dir", &data]);
    for (key, state) in keys.iter().zip(&states) {
        let known = state.lock().unwrap().clone();
        reconcile(&server, key, &known).await;
    }
    max_index_before = check_rising(&seen, max_index_before);
    assert!(
        max_index_before > 24,
        "the workers did too little to test anything"
    );
    // And the next index is above every index ever handed out.
    let mut c = server.lock().await;
    let mut s = c
        .wait(pb::WaitRequest {
            key: "fresh".into(),
            value: String::new(),
            ttl_ms: 0,
            timeout_ms: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    match s.message().await.unwrap().unwrap().event {
        Some(wait_event::Event::Acquired(a)) => assert!(a.index > max_index_before),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_keeps_counting_while_the_server_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let mut server = Server::start(&["--data-dir", &data]);
    let mut c = server.lock().await;
    let (_s, acquired) = common::acquired(&mut c, common::wait_req("d", "v", 3000, None)).await;
    let index = acquired.index;
    server.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server = Server::start(&["--data-dir", &data]);
    let restarted = Instant::now();
    let mut c = server.lock().await;
    let h = c
        .get(pb::GetRequest { key: "d".into() })
        .await
        .unwrap()
        .into_inner()
        .holder
        .expect("the hold survived");
    assert_eq!((h.index, h.value.as_str()), (index, "v"));
    assert!(
        h.remaining_ms <= 2100,
        "the downtime was not counted: {h:?}"
    );
    loop {
        let got = c
            .get(pb::GetRequest { key: "d".into() })
            .await
            .unwrap()
            .into_inner();
        if got.holder.is_none() {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "never expired"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let after = restarted.elapsed();
    assert!(
        after >= Duration::from_millis(800) && after <= Duration::from_millis(3500),
        "expired {after:?} after the restart; about 2 s expected"
    );
}

/// Runs `baton --data-dir DIR` expecting it to refuse; returns stderr.
fn refused(dir: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["--listen", "127.0.0.1:0", "--data-dir", dir])
        .output()
        .unwrap();
    assert!(!out.status.success(), "baton started on {dir}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_locked_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let _first = Server::start(&["--data-dir", data]);
    let err = refused(data);
    assert!(err.contains("in use") && err.contains(data), "{err}");
}

#[test]
fn a_damaged_or_foreign_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    std::fs::write(dir.path().join("baton.redb"), b"not a database at all").unwrap();
    let err = refused(data);
    assert!(err.contains("damaged") && err.contains(data), "{err}");

    // A store written in another format is named as such.
    let other = tempfile::tempdir().unwrap();
    {
        let db = redb::Database::create(other.path().join("baton.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .unwrap();
            meta.insert("format", 99).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = refused(other.path().to_str().unwrap());
    assert!(err.contains("format 99"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_space_is_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let server = Server::start(&["--data-dir", &data]);
    let size = || {
        std::fs::metadata(dir.path().join("baton.redb"))
            .unwrap()
            .len()
    };
    let cycles = |n: usize| {
        let url = server.url.clone();
        async move {
            let tasks: Vec<_> = (0..16)
                .map(|t| {
                    let url = url.clone();
                    tokio::spawn(async move {
                        let mut c = pb::lock_client::LockClient::connect(url).await.unwrap();
                        for i in 0..n / 16 {
                            let key = format!("space/{t}/{i}");
                            let mut s = c
                                .wait(pb::WaitRequest {
                                    key: key.clone(),
                                    value: "x".repeat(200),
                                    ttl_ms: 60_000,
                                    timeout_ms: Some(0),
                                    ..Default::default()
                                })
                                .await
                                .unwrap()
                                .into_inner();
                            let index = match s.message().await.unwrap().unwrap().event {
                                Some(wait_event::Event::Acquired(a)) => a.index,
                                other => panic!("{other:?}"),
                            };
                            let r = c
                                .release(pb::ReleaseRequest {
                                    key,
                                    target: Some(release_request::Target::Index(index)),
                                })
                                .await;
                            assert!(r.is_ok() || r.unwrap_err().code() == Code::NotFound);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    cycles(1600).await;
    let warm = size();
    cycles(6400).await;
    let later = size();
    // Four times the work must not take four times the space: freed pages
    // are reused. (A store that kept every hold would grow by ~1.5 MB.)
    assert!(
        later <= warm + 512 * 1024,
        "store grew from {warm} to {later} bytes over released locks"
    );
    let mut c = server.lock().await;
    let list = c
        .list(pb::ListRequest {
            prefix: "space/".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(list.keys.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_delay_survives_kill_dash_nine() {
    const DELAY: u64 = 6_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let mut server = Server::start(&["--data-dir", &data]);
    let mut c = server.lock().await;
    let (_s, acquired) = common::acquired(
        &mut c,
        pb::WaitRequest {
            lock_delay_ms: DELAY,
            ..common::wait_req("ld", "", 300, None)
        },
    )
    .await;
    let until = acquired.deadline_unix_ms + DELAY;
    // The hold expires while the server runs; the delay starts.
    common::expect_delay_until(&mut c, "ld", until).await;
    server.kill();
    let server = Server::start(&["--data-dir", &data]);
    let mut c = server.lock().await;
    let before = common::wall_ms();
    let got = common::view(&mut c, "ld").await;
    if before < until {
        assert_eq!(
            got.delayed_until_unix_ms, until,
            "the delay was lost: {got:?}"
        );
        assert!(got.holder.is_none());
    }
    let mut w = common::wait(&mut c, common::wait_req("ld", "", 10_000, None)).await;
    common::expect_granted_from(&mut w, until).await;
}
