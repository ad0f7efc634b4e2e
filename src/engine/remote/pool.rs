//! The connections from a follower to one primary.
//!
//! Every waiting client is one gRPC stream to the primary, and HTTP/2 caps
//! the streams one connection may carry: hyper's server allows 200 unless
//! told otherwise, and baton's accept loop does not raise it. A client
//! stream over the cap is not refused but parked until another ends, so a
//! single connection would serve 200 waiters and silently stall the rest.
//! The pool therefore opens a new connection whenever every open one carries
//! `streams_per_connection` long-lived streams (default 100: half the
//! server's cap, so unary calls sharing the connection never queue behind
//! waiters), and each stream goes on the least loaded connection. 10,000
//! waiters take 100 connections, which is cheap next to their streams and
//! needs no change on the primary, whatever its own setting. Measured in
//! `tests/remote_engine.rs`: on one connection 200 streams open and the
//! 201st waits; through the pool 10,000 waiters queue in 3.8 s (debug
//! build) over 101 connections. Connections are never closed while the
//! pool lives: idle ones cost a ping every keep-alive interval.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Opens one connection to the primary, lazily (nothing happens until the
/// first call on it): over TCP (or TLS) in production, over an in-memory
/// pipe in tests.
pub type Connect = Box<dyn Fn() -> Channel + Send + Sync>;

/// One connection and how many long-lived streams it carries.
struct Conn {
    channel: Channel,
    streams: AtomicUsize,
}

/// The connections to one primary URL. Cancelling [`Pool::gone`] ends every
/// stream to it (the engine was retargeted).
pub struct Pool {
    url: String,
    connect: Connect,
    per_connection: usize,
    conns: Mutex<Vec<Arc<Conn>>>,
    gone: CancellationToken,
}

/// A stream's place on a connection; dropping it frees the place.
pub struct Slot {
    conn: Arc<Conn>,
}

impl Slot {
    /// The connection the stream goes on.
    pub fn channel(&self) -> Channel {
        self.conn.channel.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conn.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// A pool for `url` with no connection yet: connections are opened
    /// by `connect`, on first use.
    pub fn new(url: String, connect: Connect, per_connection: usize) -> Self {
        Self {
            url,
            connect,
            per_connection: per_connection.max(1),
            conns: Mutex::new(Vec::new()),
            gone: CancellationToken::new(),
        }
    }

    /// The primary's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Cancelled when this pool's primary is no longer the target.
    pub fn gone(&self) -> &CancellationToken {
        &self.gone
    }

    /// How many connections are open (for tests and logs).
    pub fn connections(&self) -> usize {
        self.lock().len()
    }

    /// A place for one long-lived stream on the least loaded connection,
    /// opening a connection if every one is full.
    pub fn stream_slot(&self) -> Slot {
        let mut conns = self.lock();
        let least = conns
            .iter()
            .min_by_key(|c| c.streams.load(Ordering::Relaxed))
            .filter(|c| c.streams.load(Ordering::Relaxed) < self.per_connection)
            .cloned();
        let conn = match least {
            Some(c) => c,
            None => {
                let c = Arc::new(Conn {
                    channel: (self.connect)(),
                    streams: AtomicUsize::new(0),
                });
                conns.push(c.clone());
                tracing::debug!(url = %self.url, connections = conns.len(), "opened a connection to the primary");
                c
            }
        };
        conn.streams.fetch_add(1, Ordering::Relaxed);
        Slot { conn }
    }

    /// A connection for a short call: the least loaded one.
    pub fn unary_channel(&self) -> Channel {
        let mut conns = self.lock();
        if let Some(c) = conns
            .iter()
            .min_by_key(|c| c.streams.load(Ordering::Relaxed))
        {
            return c.channel.clone();
        }
        let c = Arc::new(Conn {
            channel: (self.connect)(),
            streams: AtomicUsize::new(0),
        });
        let channel = c.channel.clone();
        conns.push(c);
        channel
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Conn>>> {
        // The list is only pushed to under the lock; a panic elsewhere
        // cannot leave it half-changed, so a poisoned lock is still usable.
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}
