//! Recorded histories, checked: 16 clients take turns on 4 keys through a
//! real `baton` with a mixed workload (waits, cancelled waits, timeouts,
//! try-once, renews, releases, expiries), each recording what it sent and
//! heard; `common::history` then checks that no two clients ever believed
//! they held one key at once and that fencing tokens only rose. Once in
//! memory, once durable with `kill -9` restarts in the middle of it, and
//! once over etcd through three gateways whose primary is killed twice.
//!
//! `BATON_HISTORY_RUNS=N` checks N histories of each kind instead of one.

mod common;

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use baton::proto::v1::{self as pb, lock_client::LockClient, release_request, wait_event};
use common::{
    Server,
    etcd::Etcd,
    history::{Event, History, check},
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

const CLIENTS: usize = 16;
const KEYS: [&str; 4] = ["h/0", "h/1", "h/2", "h/3"];
/// How long one history's workload runs.
const RUN: Duration = Duration::from_millis(2500);

/// Where the clients find the server now (it changes on each restart).
type Url = Arc<RwLock<String>>;

async fn connect(url: &Url) -> Option<LockClient<Channel>> {
    let url = url.read().expect("url lock").clone();
    let channel = Channel::from_shared(url).ok()?;
    let channel = tokio::time::timeout(Duration::from_secs(2), channel.connect())
        .await
        .ok()?
        .ok()?;
    Some(LockClient::new(channel))
}

/// Sends release of `index` until the server answers (it may be down or
/// restarting); the client stopped believing before the first try.
async fn release_until_answered(url: &Url, key: &str, index: u64) {
    let give_up = Instant::now() + Duration::from_secs(20);
    while Instant::now() < give_up {
        if let Some(mut c) = connect(url).await {
            let r = c
                .release(pb::ReleaseRequest {
                    key: key.into(),
                    target: Some(release_request::Target::Index(index)),
                })
                .await;
            match r {
                Ok(_) => return,
                Err(s) if s.code() == Code::NotFound => return,
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("could not release {key} index {index} within 20 s");
}

/// One client: acquire, hold a little (renewing or not), then release or
/// let it expire; sometimes cancel the wait, or try once, or time out.
async fn client(id: usize, url: Url, history: Arc<History>, stop: CancellationToken, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.is_cancelled() {
        let Some(mut c) = connect(&url).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let key = KEYS[rng.usize(..KEYS.len())];
        // Every hold has a ttl and every wait a timeout: a grant whose
        // answer is lost (the client gave up just as it was sent, or the
        // server was killed after committing it) ends by its ttl, as the
        // contract says, rather than blocking its key for the whole run.
        let ttl_ms = [100u64, 250, 400][rng.usize(..3)];
        let timeout_ms = [Some(300), Some(1000), Some(0), Some(60)][rng.usize(..4)];
        // A third of the waits are abandoned after a few milliseconds.
        let cancel_after = (rng.u8(..3) == 0).then(|| Duration::from_micros(rng.u64(..30_000)));
        let sent = Instant::now();
        let wait = async {
            let mut s = c
                .wait(pb::WaitRequest {
                    key: key.into(),
                    value: String::new(),
                    ttl_ms,
                    timeout_ms,
                    ..Default::default()
                })
                .await?
                .into_inner();
            while let Some(ev) = s.next().await {
                if let Some(wait_event::Event::Acquired(a)) = ev?.event {
                    return Ok(Some((a.index, s)));
                }
            }
            Ok::<_, tonic::Status>(None)
        };
        let outcome = match cancel_after {
            Some(d) => tokio::time::timeout(d, wait).await.ok(),
            None => Some(wait.await),
        };
        let Some(Ok(Some((index, mut stream)))) = outcome else {
            continue;
        };
        let heard = Instant::now();
        history.record(Event::Granted {
            client: id,
            key: key.into(),
            index,
            ttl_ms,
            sent,
            heard,
        });
        // Hold for a while: sometimes renew once, then release, or (for a
        // ttl) let the hold expire.
        let hold_for = Duration::from_millis(rng.u64(..60));
        let renew = rng.u8(..3) == 0;
        let expire = ttl_ms > 0 && rng.u8(..4) == 0;
        let ended = async {
            // The stream says when the hold ended (expired or released by
            // someone else). If it breaks (the server died), the hold may
            // well outlive it: keep holding and release as planned.
            while let Some(Ok(ev)) = stream.next().await {
                if let Some(wait_event::Event::Ended(_)) = ev.event {
                    return;
                }
            }
            std::future::pending::<()>().await;
        };
        tokio::pin!(ended);
        if renew {
            tokio::select! {
                () = tokio::time::sleep(hold_for / 2) => {}
                () = &mut ended => {}
            }
            let sent = Instant::now();
            let r = c.renew(common::renew_index(key, index, ttl_ms)).await;
            if r.is_ok() {
                history.record(Event::Renewed {
                    index,
                    ttl_ms,
                    sent,
                    acked: Instant::now(),
                });
            }
        }
        if expire {
            // Stop caring; the hold ends at its deadline on its own.
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(hold_for) => {}
            () = &mut ended => {
                history.record(Event::Stopped { index, at: Instant::now() });
                continue;
            }
        }
        history.record(Event::Stopped {
            index,
            at: Instant::now(),
        });
        release_until_answered(&url, key, index).await;
    }
}

/// Runs one history; with `restarts`, kills the durable server with
/// SIGKILL that many times during the run and starts it again.
async fn one_history(seed: u64, durable: bool, restarts: usize) -> Arc<History> {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path").to_owned();
    let args: Vec<&str> = if durable {
        vec!["--data-dir", &data]
    } else {
        vec!["--memory"]
    };
    let mut server = Server::start(&args);
    let url: Url = Arc::new(RwLock::new(server.url.clone()));
    let mut rng = fastrand::Rng::with_seed(seed);
    let clients = Clients::spawn(&mut rng, |_| url.clone());
    let started = Instant::now();
    for n in 0..restarts {
        let at = RUN * (n as u32 + 1) / (restarts as u32 + 1);
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        server.kill();
        // Down for a moment: clients see connection errors meanwhile.
        tokio::time::sleep(Duration::from_millis(rng.u64(..100))).await;
        server = Server::start(&args);
        *url.write().expect("url lock") = server.url.clone();
    }
    tokio::time::sleep(RUN.saturating_sub(started.elapsed())).await;
    let history = clients.finish().await;
    drop(server);
    history
}

/// Runs one history over etcd: three gateways, the clients spread over
/// them, and the primary killed with SIGKILL `kills` times during the run
/// (each time a new gateway takes the dead one's place, so the cluster
/// keeps three).
async fn etcd_history(seed: u64, kills: usize, run: Duration) -> Arc<History> {
    let etcd = Etcd::start();
    let args = ["--etcd-primary-ttl-secs", "1"];
    let mut gateways: Vec<Server> = (0..3)
        .map(|_| Server::etcd(&etcd, "/history/", &args))
        .collect();
    let urls: Vec<Url> = gateways
        .iter()
        .map(|g| Arc::new(RwLock::new(g.url.clone())))
        .collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    let clients = Clients::spawn(&mut rng, |id| urls[id % urls.len()].clone());
    let started = Instant::now();
    for n in 0..kills {
        let at = run * (n as u32 + 1) / (kills as u32 + 1);
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        let primary = tokio::task::block_in_place(|| {
            gateways
                .iter()
                .position(|g| common::etcd::role(g) == "primary")
        });
        let p = primary.expect("a primary to kill (none of the three says it is one)");
        gateways[p].kill();
        gateways[p] = Server::etcd(&etcd, "/history/", &args);
        *urls[p].write().expect("url lock") = gateways[p].url.clone();
    }
    tokio::time::sleep(run.saturating_sub(started.elapsed())).await;
    let history = clients.finish().await;
    drop(gateways);
    history
}

/// The [`CLIENTS`] clients of one history, and what they record.
struct Clients {
    history: Arc<History>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    /// Starts them; client `id` talks to the server `url(id)` names.
    fn spawn(rng: &mut fastrand::Rng, url: impl Fn(usize) -> Url) -> Self {
        let history = Arc::new(History::default());
        let stop = CancellationToken::new();
        let tasks = (0..CLIENTS)
            .map(|id| {
                tokio::spawn(client(
                    id,
                    url(id),
                    history.clone(),
                    stop.clone(),
                    rng.u64(..),
                ))
            })
            .collect();
        Self {
            history,
            stop,
            tasks,
        }
    }

    /// Stops them, waits for each to finish its turn, and hands the
    /// history over.
    async fn finish(self) -> Arc<History> {
        self.stop.cancel();
        for t in self.tasks {
            t.await.expect("client task");
        }
        self.history
    }
}

fn runs() -> u64 {
    std::env::var("BATON_HISTORY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn verify(history: &History, what: &str) {
    match history.check() {
        Ok(s) => {
            eprintln!(
                "{what}: history of {} grants ({} believed) checked",
                s.grants, s.believed
            );
            assert!(
                s.believed >= 30,
                "{what}: too few grants ({}) to test anything",
                s.believed
            );
        }
        Err(e) => panic!("{what}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_in_memory_never_show_two_holders() {
    for seed in 0..runs() {
        let h = one_history(seed, false, 0).await;
        verify(&h, &format!("memory, seed {seed}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_histories_across_kill_dash_nine_never_show_two_holders() {
    for seed in 0..runs() {
        let h = one_history(100 + seed, true, 4).await;
        verify(&h, &format!("durable with 4 kill -9, seed {seed}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_over_etcd_across_killed_primaries_never_show_two_holders() {
    for seed in 0..runs() {
        let h = etcd_history(200 + seed, 2, Duration::from_secs(7)).await;
        verify(
            &h,
            &format!("etcd, three gateways, 2 primaries killed, seed {seed}"),
        );
    }
}

/// The checker itself: it must catch what it is there to catch.
#[test]
fn the_checker_catches_two_holders_and_falling_tokens() {
    let t = Instant::now();
    let ms = |n| t + Duration::from_millis(n);
    let grant = |client, key: &str, index, ttl_ms, sent, heard| Event::Granted {
        client,
        key: key.into(),
        index,
        ttl_ms,
        sent: ms(sent),
        heard: ms(heard),
    };
    // Sequential holds with rising tokens: fine.
    let ok = [
        grant(0, "k", 1, 0, 0, 1),
        Event::Stopped {
            index: 1,
            at: ms(10),
        },
        grant(1, "k", 2, 0, 5, 11),
        Event::Stopped {
            index: 2,
            at: ms(20),
        },
    ];
    assert!(check(&ok).is_ok());
    // The second holder heard its grant before the first stopped.
    let overlap = [
        grant(0, "k", 1, 0, 0, 1),
        Event::Stopped {
            index: 1,
            at: ms(10),
        },
        grant(1, "k", 2, 0, 5, 9),
    ];
    assert!(check(&overlap).is_err());
    // A ttl bounds the first belief: sent at 0 with 100 ms, so a grant heard
    // at 150 overlaps nothing; but a renew acknowledged at 90 (sent at 80)
    // stretches it to 180, and the grant at 150 then overlaps.
    let expired = [grant(0, "k", 1, 100, 0, 1), grant(1, "k", 2, 100, 5, 150)];
    assert!(check(&expired).is_ok());
    let renewed = [
        grant(0, "k", 1, 100, 0, 1),
        Event::Renewed {
            index: 1,
            ttl_ms: 100,
            sent: ms(80),
            acked: ms(90),
        },
        grant(1, "k", 2, 100, 140, 150),
    ];
    assert!(check(&renewed).is_err());
    // Tokens falling, and one token for two grants.
    let falling = [grant(0, "k", 5, 10, 0, 1), grant(1, "k", 4, 10, 20, 21)];
    assert!(check(&falling).is_err());
    let twice = [grant(0, "a", 5, 10, 0, 1), grant(1, "b", 5, 10, 20, 21)];
    assert!(check(&twice).is_err());
}
