//! The accept loop: every connection of the one listener, served by hyper's
//! HTTP/1.1 + HTTP/2 connection builder (gRPC and HTTP alike), with the
//! limits a server reachable from browsers and the internet needs and that
//! `axum::serve` does not expose:
//!
//! - a header-read timeout (slowloris): a connection must send a complete
//!   request head within [`ConnLimits::header_read_timeout`] of the server
//!   starting to wait for one (also the time a new connection gets to say
//!   anything at all);
//! - a body-read timeout: a request body that sends nothing for
//!   [`ConnLimits::body_read_timeout`] fails (a slow-body slowloris), except
//!   a follower's forwarding stream, whose body is quiet while its calls
//!   wait (dead followers are found by PINGs);
//! - an idle timeout for HTTP/1.1 keep-alive connections with no request in
//!   progress. A request is in progress until its response body has been
//!   sent, so a wait that blocks for hours, or a stream, is never cut;
//! - `--max-connections`: beyond it, new connections are accepted and closed
//!   at once, so the ones already open keep being served;
//! - accept errors (out of file descriptors) back off instead of spinning,
//!   and are logged once per burst;
//! - dead peers (issue 11): HTTP/2 PINGs with a timeout, and TCP keep-alive
//!   plus `TCP_USER_TIMEOUT` for HTTP/1.1 long-polls, drop a connection whose
//!   client vanished without closing it, which withdraws its waits.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, body::Body};
use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use socket2::{SockRef, TcpKeepalive};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{either::Either, sync::CancellationToken};
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

/// The transport's limits; each is a command-line flag (see
/// [`ServeArgs::conn_limits`](crate::config::ServeArgs::conn_limits)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// How long a request head may take to arrive, counted from when the
    /// server starts waiting for it.
    pub header_read_timeout: Duration,
    /// How long a request body may go without sending anything.
    pub body_read_timeout: Duration,
    /// How long an HTTP/1.1 connection may sit with no request in progress.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Silence after which the peer is checked (HTTP/2 PING, TCP probe).
    pub keepalive_interval: Duration,
    /// How long the peer has to answer before the connection is dropped.
    pub keepalive_timeout: Duration,
}

impl Default for ConnLimits {
    /// Slowloris connections close within 15 s; a silent peer is found
    /// within 30 s + 20 s, under a minute, as DESIGN.md asks.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(15),
            body_read_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// How often at most a burst of refused connections or failed accepts is
/// logged.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// The longest pause after a failed accept.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// HTTP/2's connection preface, which a prior-knowledge (h2c) client sends
/// first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown`; then
/// lets open connections finish for at most `grace` and closes the rest.
pub async fn run(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ConnLimits,
    shutdown: CancellationToken,
    grace: Duration,
) -> io::Result<()> {
    let max = limits.max_connections.clamp(1, u32::MAX as usize);
    let permits = Arc::new(Semaphore::new(max));
    let force = CancellationToken::new();
    let builder = Arc::new(builder(&limits));
    let mut refused = BurstLog::default();
    let mut failed = BurstLog::default();
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shutdown.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, say: the connection waits in the
                // backlog while we pause, doubling the pause up to a second.
                backoff = (backoff * 2).clamp(Duration::from_millis(5), MAX_BACKOFF);
                if let Some(n) = failed.note() {
                    tracing::warn!(error = %e, failures = n, pause = ?backoff, "accept failed; pausing");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
        };
        backoff = Duration::ZERO;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(n) = refused.note() {
                tracing::warn!(
                    max_connections = max,
                    refused = n,
                    "connection limit reached; closing new connections"
                );
            }
            drop(tcp);
            continue;
        };
        configure(&tcp, &limits);
        tokio::spawn(serve_connection(Conn {
            tcp,
            peer,
            tls: tls.clone(),
            app: app.clone(),
            builder: builder.clone(),
            limits,
            shutdown: shutdown.clone(),
            force: force.clone(),
            _permit: permit,
        }));
    }
    drop(listener);
    tracing::info!("shutting down");
    // Every connection holds a permit until it ends.
    if tokio::time::timeout(grace, permits.acquire_many(max as u32))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing them");
        force.cancel();
    }
    Ok(())
}

/// hyper's connection builder with baton's timeouts.
fn builder(limits: &ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.keepalive_interval))
        .keep_alive_timeout(limits.keepalive_timeout);
    b
}

/// Socket options of an accepted connection.
fn configure(tcp: &TcpStream, limits: &ConnLimits) {
    // Without TCP_NODELAY a streamed gRPC reply can wait out the peer's
    // delayed ACK (40 ms per round trip, measured with baton-bench).
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    // A peer that vanished without closing (power loss, a NAT that dropped
    // the connection) answers no probe: after `interval` of silence, three
    // probes over `timeout`, and the kernel resets the connection.
    let probe = (limits.keepalive_timeout / 3).max(Duration::from_secs(1));
    let keepalive = TcpKeepalive::new()
        .with_time(limits.keepalive_interval)
        .with_interval(probe)
        .with_retries(3);
    let sock = SockRef::from(tcp);
    if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot set TCP keep-alive");
    }
    // Keep-alive probes only go out on a quiet connection; data the peer
    // never acknowledges is bounded by the user timeout instead.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) =
        sock.set_tcp_user_timeout(Some(limits.keepalive_interval + limits.keepalive_timeout))
    {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
}

/// Errors of one connection that `accept` reports; the listener is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Counts events and says when to log them: the first of a burst, then at
/// most once per [`LOG_EVERY`] with how many there were.
#[derive(Default)]
struct BurstLog {
    last: Option<Instant>,
    count: u64,
}

impl BurstLog {
    /// Notes one event; `Some(count)` when it should be logged.
    fn note(&mut self) -> Option<u64> {
        self.count += 1;
        match self.last {
            Some(t) if t.elapsed() < LOG_EVERY => None,
            _ => {
                self.last = Some(Instant::now());
                Some(std::mem::take(&mut self.count))
            }
        }
    }
}

/// One accepted connection and what serving it needs.
struct Conn {
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnLimits,
    shutdown: CancellationToken,
    force: CancellationToken,
    /// Returned when the connection ends.
    _permit: OwnedSemaphorePermit,
}

/// The future of one request through the router, boxed. hyper runs every
/// HTTP/2 stream as a task whose size is the larger of this future and the
/// response body; unboxed, the router's future made each task about 900
/// bytes, kept for the whole life of a wait stream although the future is
/// done once the response head is out. Boxed, the allocation is freed then
/// (BENCHMARKS.md, many waiters).
type RouteFuture = std::pin::Pin<
    Box<dyn Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send>,
>;

async fn serve_connection(c: Conn) {
    let within = c.limits.header_read_timeout;
    let (io, h2) = match c.tls {
        Some(tls) => match tokio::time::timeout(within, tls.accept(c.tcp)).await {
            Ok(Ok(stream)) => {
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                (Either::Left(stream), h2)
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %c.peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %c.peer, "TLS handshake timed out");
                return;
            }
        },
        None => match tokio::time::timeout(within, sniff_h2(&c.tcp)).await {
            Ok(Some(h2)) => (Either::Right(c.tcp), h2),
            Ok(None) => return,
            Err(_) => {
                tracing::debug!(peer = %c.peer, "closing a connection that sent nothing");
                return;
            }
        },
    };
    let (activity, quiet) = watch::channel(0usize);
    let activity = Arc::new(activity);
    let app = c.app;
    let body_timeout = c.limits.body_read_timeout;
    let service = tower::service_fn(move |req: Request<Incoming>| -> RouteFuture {
        let guard = InFlight::start(activity.clone());
        let app = app.clone();
        Box::pin(async move {
            // A request body that must keep coming, except the forwarding
            // stream's, which stays quiet while its calls wait.
            let quiet_by_design = req.uri().path() == crate::grpc::EXCHANGE_PATH;
            let req = if quiet_by_design {
                req.map(Body::new)
            } else {
                req.map(|body| Body::new(TimeoutBody::new(body_timeout, body)))
            };
            let response = app.oneshot(req).await?;
            Ok(response.map(|body| {
                Body::new(Tracked {
                    inner: body,
                    _guard: guard,
                })
            }))
        })
    });
    let conn = c
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    // HTTP/2 connections have PINGs to find dead peers, and gRPC clients
    // keep them open between calls; the idle timeout is for HTTP/1.1.
    let idle = idle_for(quiet, c.limits.idle_timeout, !h2);
    tokio::pin!(idle);
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %c.peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut idle => {
                tracing::debug!(peer = %c.peer, "closing an idle connection");
                return;
            }
            () = c.shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = c.force.cancelled() => return,
        }
    }
}

/// Waits for the first bytes of a plain connection; `Some(true)` if they
/// are HTTP/2's preface, `Some(false)` for anything else (HTTP/1.1), `None`
/// if the peer closed first.
async fn sniff_h2(tcp: &TcpStream) -> Option<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = tcp.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        // A partial preface: peek again once more has arrived.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Resolves once no request has been in progress for `idle` (never, when
/// `enabled` is false).
async fn idle_for(mut in_flight: watch::Receiver<usize>, idle: Duration, enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    loop {
        let busy = *in_flight.borrow_and_update() > 0;
        if busy {
            if in_flight.changed().await.is_err() {
                return std::future::pending().await;
            }
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(idle) => return,
            r = in_flight.changed() => if r.is_err() {
                return std::future::pending().await;
            },
        }
    }
}

/// One request in progress on a connection, until its response is sent.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn start(count: Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A response body that keeps its request in progress until it is done.
struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl HttpBody for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_log_logs_first_then_throttles() {
        let mut log = BurstLog::default();
        assert_eq!(log.note(), Some(1));
        assert_eq!(log.note(), None);
        assert_eq!(log.note(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_fires_only_without_requests_in_progress() {
        let (tx, rx) = watch::channel(0usize);
        let tx = Arc::new(tx);
        let guard = InFlight::start(tx.clone());
        let idle = idle_for(rx, Duration::from_secs(10), true);
        tokio::pin!(idle);
        // A request in progress for an hour: never idle.
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), &mut idle)
                .await
                .is_err()
        );
        drop(guard);
        assert!(
            tokio::time::timeout(Duration::from_secs(9), &mut idle)
                .await
                .is_err()
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(2), &mut idle)
                .await
                .is_ok()
        );
    }
}
