//! The backends the conformance suite runs on, each as a [`Fixture`]: the
//! engine under test, a gRPC service over it, and clients of that service.
//!
//! Every backend but etcd lives in this process and is reached over
//! `tokio::io::duplex` pipes (no sockets), so the suite runs on tokio's
//! paused clock: a ttl or a timeout is a jump of virtual time, not a wait.
//! The etcd backend needs etcd's real leases, so it runs in real time with
//! short ttls; it is in process too (two gateways as tasks over a real
//! etcd), on loopback TCP.

use std::{io, sync::Arc, time::Duration};

use baton::{
    config::Cli,
    engine::{
        Engine,
        clock::Clock,
        embedded::{EmbeddedConfig, EmbeddedEngine},
        remote::{RemoteEngine, RemoteOptions},
    },
    etcd::ClusterEngine,
    proto::v1::{election_client::ElectionClient, lock_client::LockClient},
    service::{Service, ServiceLimits},
    store::redb_journal::RedbJournal,
};
use clap::Parser;
use futures::StreamExt;
use tokio::{io::DuplexStream, sync::mpsc};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::common::etcd::Etcd;

/// Where the in-process backends' wall clock starts: a fixed moment, so
/// every run sees the same deadlines.
pub const T0: u64 = 1_700_000_000_000;

/// A backend the conformance tests run on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// The embedded engine in memory.
    Memory,
    /// The embedded engine on its durable store (redb in a temp dir).
    Durable,
    /// A follower's forwarding engine ([`RemoteEngine`]) to a primary
    /// served over gRPC: the test's calls cross the gRPC stack twice.
    Forwarded,
    /// Two etcd gateways in process over a real etcd, the tests talking to
    /// the follower. Real time.
    Etcd,
}

/// What a test may set, as the server's flags would.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// `--max-lock-delay-secs`, in milliseconds.
    pub max_lock_delay_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_lock_delay_ms: ServiceLimits::default().max_lock_delay_ms,
        }
    }
}

/// One backend, served, for one test. Dropping it stops its servers.
pub struct Fixture {
    /// How clients reach the service under test.
    clients: Clients,
    /// The engine under the service the clients talk to.
    engine: Arc<dyn Engine>,
    clock: Clock,
    /// Whether the backend runs on paused time.
    paused: bool,
    stop: CancellationToken,
    _dir: Option<tempfile::TempDir>,
    _etcd: Option<Etcd>,
}

enum Clients {
    Pipes(Pipes),
    Url(String),
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Fixture {
    /// Starts `backend` with `opts`. In-process backends must be started
    /// inside the test's runtime, after time was paused, so that their
    /// clock is the paused one.
    pub async fn start(backend: Backend, opts: Options) -> Self {
        let stop = CancellationToken::new();
        let limits = ServiceLimits {
            max_lock_delay_ms: opts.max_lock_delay_ms,
            ..ServiceLimits::default()
        };
        let clock = match backend {
            Backend::Etcd => Clock::system(),
            _ => Clock::starting_at(T0),
        };
        let config = EmbeddedConfig {
            clock,
            ..EmbeddedConfig::default()
        };
        let mut dir = None;
        let mut etcd = None;
        let (engine, clients): (Arc<dyn Engine>, Clients) = match backend {
            Backend::Memory => {
                let engine: Arc<dyn Engine> = Arc::new(EmbeddedEngine::in_memory(config));
                let pipes = serve(service(&engine, limits, &stop, clock), &stop);
                (engine, Clients::Pipes(pipes))
            }
            Backend::Durable => {
                let d = tempfile::tempdir().expect("temp dir");
                let (journal, snapshot) = RedbJournal::open(d.path()).expect("open the store");
                dir = Some(d);
                let engine: Arc<dyn Engine> =
                    Arc::new(EmbeddedEngine::durable(config, Box::new(journal), snapshot));
                let pipes = serve(service(&engine, limits, &stop, clock), &stop);
                (engine, Clients::Pipes(pipes))
            }
            Backend::Forwarded => {
                let primary: Arc<dyn Engine> = Arc::new(EmbeddedEngine::in_memory(config));
                let to_primary = serve(service(&primary, limits, &stop, clock), &stop);
                let engine: Arc<dyn Engine> = Arc::new(
                    RemoteEngine::with_connector(
                        "http://primary.in-process",
                        RemoteOptions::default(),
                        to_primary.connector(),
                    )
                    .expect("remote engine"),
                );
                let pipes = serve(service(&engine, limits, &stop, clock), &stop);
                (engine, Clients::Pipes(pipes))
            }
            Backend::Etcd => {
                let e = tokio::task::spawn_blocking(Etcd::start)
                    .await
                    .expect("start etcd");
                let primary = gateway(&e, limits, &stop, clock).await;
                wait_for_role(&*primary.0, "primary").await;
                let follower = gateway(&e, limits, &stop, clock).await;
                wait_for_role(&*follower.0, "follower").await;
                etcd = Some(e);
                (follower.0, Clients::Url(follower.1))
            }
        };
        Self {
            clients,
            engine,
            clock,
            paused: !matches!(backend, Backend::Etcd),
            stop,
            _dir: dir,
            _etcd: etcd,
        }
    }

    /// A new connection to the service under test.
    pub fn channel(&self) -> Channel {
        match &self.clients {
            Clients::Pipes(p) => p.channel(),
            Clients::Url(url) => Endpoint::from_shared(url.clone())
                .expect("url")
                .connect_lazy(),
        }
    }

    /// A Lock client on its own connection.
    pub async fn lock(&self) -> LockClient<Channel> {
        LockClient::new(self.channel())
    }

    /// An Election client on its own connection.
    pub async fn election(&self) -> ElectionClient<Channel> {
        ElectionClient::new(self.channel())
    }

    /// The engine under the service the clients talk to.
    pub fn engine(&self) -> Arc<dyn Engine> {
        self.engine.clone()
    }

    /// Wall time now by the backend's clock, in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The tokio instant at which [`now_ms`](Self::now_ms) reaches `at`.
    pub fn instant_at(&self, at: u64) -> tokio::time::Instant {
        self.clock.instant_at(at)
    }

    /// How far a moment the test observes may be from the moment it aims
    /// at: nothing on paused time, the latency of a few calls in real time.
    pub fn margin(&self) -> Duration {
        if self.paused {
            Duration::ZERO
        } else {
            Duration::from_millis(250)
        }
    }
}

/// A service over `engine`, ended by `stop`, on `clock`.
fn service(
    engine: &Arc<dyn Engine>,
    limits: ServiceLimits,
    stop: &CancellationToken,
    clock: Clock,
) -> Service {
    Service::new(engine.clone(), limits, stop.clone()).with_clock(clock)
}

/// Serves `service`'s gRPC routes (as `baton` does on its port) on
/// in-memory pipes until `stop`.
fn serve(service: Service, stop: &CancellationToken) -> Pipes {
    let (tx, rx) = mpsc::unbounded_channel::<DuplexStream>();
    let incoming = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok::<_, io::Error>);
    serve_on(service, incoming, stop);
    Pipes(tx)
}

/// Serves `service`'s gRPC routes on the connections `incoming` yields,
/// until `stop`.
fn serve_on<IO>(
    service: Service,
    incoming: impl futures::Stream<Item = io::Result<IO>> + Send + 'static,
    stop: &CancellationToken,
) where
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
{
    let routes = baton::grpc::routes(service).expect("routes");
    let stop = stop.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
    });
}

/// Opens connections to a service [`serve`]d in process: each is one
/// `tokio::io::duplex` pipe, its server end handed to the server.
#[derive(Clone)]
struct Pipes(mpsc::UnboundedSender<DuplexStream>);

/// tonic's connector for a [`Pipes`]: every connection is a new pipe.
#[derive(Clone)]
struct PipeConnector(mpsc::UnboundedSender<DuplexStream>);

impl tower::Service<http::Uri> for PipeConnector {
    type Response = hyper_util::rt::TokioIo<DuplexStream>;
    type Error = io::Error;
    type Future = futures::future::Ready<Result<Self::Response, io::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let (client, server) = tokio::io::duplex(64 * 1024);
        futures::future::ready(
            self.0
                .send(server)
                .map(|()| hyper_util::rt::TokioIo::new(client))
                .map_err(|_| io::Error::other("the in-process server has stopped")),
        )
    }
}

impl Pipes {
    fn connector(&self) -> PipeConnector {
        PipeConnector(self.0.clone())
    }

    /// A channel on its own connection (opened on first use).
    fn channel(&self) -> Channel {
        Endpoint::from_static("http://in-process").connect_with_connector_lazy(self.connector())
    }
}

/// A `baton --backend etcd` gateway as tasks of this process: its cluster
/// engine and its service, served on a loopback port (the URL it
/// advertises and the tests connect to).
async fn gateway(
    etcd: &Etcd,
    limits: ServiceLimits,
    stop: &CancellationToken,
    clock: Clock,
) -> (Arc<dyn Engine>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let args = Cli::parse_from([
        "baton",
        "--backend",
        "etcd",
        "--etcd-endpoints",
        etcd.url.as_str(),
        "--etcd-prefix",
        "/conformance/",
    ])
    .serve;
    let engine: Arc<dyn Engine> = Arc::new(
        ClusterEngine::start(
            &args.etcd_config(),
            args.embedded_config(clock),
            url.clone(),
        )
        .expect("gateway"),
    );
    serve_on(
        service(&engine, limits, stop, clock),
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        stop,
    );
    (engine, url)
}

/// Waits (10 s at most) until `engine` says it is `role`.
async fn wait_for_role(engine: &dyn Engine, role: &str) {
    let start = tokio::time::Instant::now();
    while engine.cluster().role != role {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {role} within 10 s (it says {})",
            engine.cluster().role
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
