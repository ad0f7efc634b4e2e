//! Acquire+release pairs per second and their latency (p50, p99) for
//! baton over etcd, next to the embedded backend (`--memory`) and next to
//! etcd's own v3lock API called directly, at 1 and 64 clients, in one run.
//!
//! ```text
//! cargo run --release --example etcd_compare [-- SECONDS_PER_MEASUREMENT]
//! ```
//!
//! It starts a single-member etcd (Debian's `etcd-server` must be
//! installed) on free loopback ports with a temporary data directory, and
//! the two batons in this process (each on its own runtime, reached over
//! loopback gRPC like any client). Each client holds its own lock (`own
//! key`: the service's throughput) or all share one (`one key`: hand-over
//! under contention). baton holds get a 10 s ttl; v3lock holds hang on a
//! per-client lease, as `etcdctl lock` does. Nothing here asserts speed.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use baton::proto::v1::{self as pb, lock_client::LockClient, release_request, wait_event};
use clap::Parser;
use tokio_util::sync::CancellationToken;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5.0);
    let measure = Duration::from_secs_f64(secs);
    let warmup = Duration::from_secs(1);

    let etcd = Etcd::start()?;
    let memory = InProcess::start(&["--memory"])?;
    let over_etcd = InProcess::start(&[
        "--backend",
        "etcd",
        "--etcd-endpoints",
        &etcd.url,
        "--etcd-prefix",
        "/bench/",
    ])?;

    let mut rows = Vec::new();
    for shared in [false, true] {
        for clients in [1, 64] {
            let keying = if shared { "one key" } else { "own key" };
            for (name, target) in [
                ("baton --memory", Target::Baton(memory.url.clone())),
                ("baton over etcd", Target::Baton(over_etcd.url.clone())),
                ("etcd v3lock", Target::V3lock(etcd.url.clone())),
            ] {
                let r = run(&target, clients, shared, warmup, measure).await?;
                eprintln!("{name:16} {clients:3} clients, {keying}: {r:?}");
                rows.push((name, clients, keying, r));
            }
        }
    }

    println!();
    println!(
        "| target | clients | keys | pairs/s | p50 ms | p99 ms |\n| --- | ---: | --- | ---: | ---: | ---: |"
    );
    for (name, clients, keying, r) in rows {
        println!(
            "| {name} | {clients} | {keying} | {:.0} | {:.2} | {:.2} |",
            r.pairs_per_sec, r.p50_ms, r.p99_ms
        );
    }
    memory.stop();
    over_etcd.stop();
    Ok(())
}

/// What is measured.
#[derive(Clone)]
enum Target {
    /// baton's gRPC API at this URL.
    Baton(String),
    /// etcd's v3lock API at this URL.
    V3lock(String),
}

/// One measurement's result.
#[derive(Debug)]
struct Outcome {
    pairs_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// A client's connection, ready to take and give back locks.
enum Conn {
    Baton(LockClient<tonic::transport::Channel>),
    V3lock(Box<etcd_client::Client>, i64),
}

impl Conn {
    async fn open(target: &Target) -> Result<Self, Error> {
        Ok(match target {
            Target::Baton(url) => Conn::Baton(LockClient::connect(url.clone()).await?),
            Target::V3lock(url) => {
                let mut c = etcd_client::Client::connect([url.as_str()], None).await?;
                let lease = c.lease_grant(600, None).await?.id();
                Conn::V3lock(Box::new(c), lease)
            }
        })
    }

    /// One acquire, then its release; returns a baton wait stream to drain
    /// (outside the timed part).
    async fn pair(&mut self, key: &str) -> Result<Option<tonic::Streaming<pb::WaitEvent>>, Error> {
        Ok(match self {
            Conn::Baton(c) => {
                let mut s = c
                    .wait(pb::WaitRequest {
                        key: key.into(),
                        value: String::new(),
                        ttl_ms: 10_000,
                        timeout_ms: None,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let index = loop {
                    let ev = s.message().await?.ok_or("stream ended")?;
                    match ev.event {
                        Some(wait_event::Event::Acquired(a)) => break a.index,
                        Some(wait_event::Event::Queued(_)) => continue,
                        other => return Err(format!("unexpected {other:?}").into()),
                    }
                };
                c.release(pb::ReleaseRequest {
                    key: key.into(),
                    target: Some(release_request::Target::Index(index)),
                })
                .await?;
                // The server tells the holder its hold ended; read that
                // rather than drop the stream under it (an HTTP/2 client
                // that keeps resetting streams the server still writes to
                // is cut off after ~1000 of them).
                Some(s)
            }
            Conn::V3lock(c, lease) => {
                let held = c
                    .lock(
                        key,
                        Some(etcd_client::LockOptions::new().with_lease(*lease)),
                    )
                    .await?;
                c.unlock(held.key()).await?;
                None
            }
        })
    }
}

async fn run(
    target: &Target,
    clients: usize,
    shared: bool,
    warmup: Duration,
    measure: Duration,
) -> Result<Outcome, Error> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(Conn::open(target).await?);
    }
    let start = Instant::now();
    let from = start + warmup;
    let stop = from + measure;
    let run_id = start.elapsed().as_nanos() ^ std::process::id() as u128;
    let mut tasks = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let key = if shared {
            format!("cmp-{run_id}-shared")
        } else {
            format!("cmp-{run_id}-{i}")
        };
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let t0 = Instant::now();
                if t0 >= stop {
                    break;
                }
                let rest = conn.pair(&key).await?;
                if t0 >= from {
                    lat.push(t0.elapsed());
                }
                if let Some(mut s) = rest {
                    while let Ok(Some(_)) = s.message().await {}
                }
            }
            Ok::<_, Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i].as_secs_f64() * 1000.0
    };
    Ok(Outcome {
        pairs_per_sec: all.len() as f64 / measure.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

/// A baton served from this process, on its own runtime and threads.
struct InProcess {
    url: String,
    stop: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

impl InProcess {
    fn start(flags: &[&str]) -> Result<Self, Error> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut argv = vec!["baton", "--listen", addr.as_str()];
        argv.extend_from_slice(flags);
        let cli = baton::config::Cli::try_parse_from(argv)?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return eprintln!("runtime: {e}"),
            };
            if let Err(e) = rt.block_on(baton::server::serve(cli.serve, token)) {
                eprintln!("baton: {e}");
            }
        });
        let t0 = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(format!("baton did not listen on {addr}").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            url: format!("http://{addr}"),
            stop,
            thread,
        })
    }

    fn stop(self) {
        self.stop.cancel();
        let _ = self.thread.join();
    }
}

/// A single-member etcd on free ports, killed on drop.
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let url = format!("http://127.0.0.1:{}", free_port()?);
        let peer = format!("http://127.0.0.1:{}", free_port()?);
        let child = Command::new("etcd")
            .args(["--name", "cmp", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("cmp={peer}")])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start etcd (install Debian's etcd-server): {e}"))?;
        let etcd = Self {
            child,
            url,
            _dir: dir,
        };
        // Wait for it to serve (and elect itself).
        let rt_wait = Instant::now();
        let addr = etcd.url.trim_start_matches("http://").to_owned();
        while std::net::TcpStream::connect(&addr).is_err() {
            if rt_wait.elapsed() > Duration::from_secs(20) {
                return Err("etcd did not start".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(etcd)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
