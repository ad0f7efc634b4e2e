//! The engine: the lock-queue contract behind one trait with two backends.
//!
//! The service layer talks only to [`Engine`]. The embedded backend
//! ([`embedded`]) drives the clock-free [`table::LockTable`] from one tokio
//! task and makes it durable through a [`store`](crate::store) journal. The
//! etcd backend runs that same engine on an elected primary, with its
//! journal in etcd; the other gateways forward to it through [`remote`].

pub mod clock;
pub mod embedded;
pub mod error;
pub mod journal_stats;
pub mod remote;
pub mod table;
pub mod types;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

pub use error::EngineError;
pub use types::*;

/// A stream of a waiting request's progress. Dropping it before acquisition
/// withdraws the request, as a disconnecting client does.
pub type WaitStream = Pin<Box<dyn Stream<Item = Result<WaitUpdate, EngineError>> + Send>>;

/// A stream of changes for watchers.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<LockEvent, EngineError>> + Send>>;

/// The contract of DESIGN.md, as every backend offers it to the service
/// layer. Inputs are validated before they get here.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Queues for `spec.key` and reports progress. The first item says
    /// whether the request was queued or acquired at once; errors that
    /// refuse the request (limits, `timeout = 0` on a held lock) come back
    /// here rather than in the stream.
    async fn wait(&self, spec: AcquireSpec) -> Result<WaitStream, EngineError>;
    /// As [`wait`](Self::wait), but the grant counts as heard (and stands
    /// if the stream is dropped) only once the consumer asks for the item
    /// after it, not when it is handed over. For a consumer that passes the
    /// grant on to someone who may be gone by then: the primary's end of a
    /// follower's forwarding stream asks for more only once the follower
    /// says its own client took the grant, so a grant that client never
    /// heard is undone here, by the engine's own rule. By default the same
    /// as `wait` (a backend that cannot tell).
    async fn wait_confirmed(&self, spec: AcquireSpec) -> Result<WaitStream, EngineError> {
        self.wait(spec).await
    }
    /// Renews the entry `target` of `key` with `ttl_ms`.
    async fn renew(&self, key: &str, target: Target, ttl_ms: u64) -> Result<Renewal, EngineError>;
    /// Releases the entry `target` of `key`.
    async fn release(&self, key: &str, target: Target) -> Result<Release, EngineError>;
    /// The holder and queue of `key`.
    async fn get(&self, key: &str) -> Result<KeyView, EngineError>;
    /// Whether `index` holds `key` now (a fencing-token check), with the
    /// key's holders. It is a read of the table's holders, so every backend
    /// answers it through `get` (the embedded driver and a follower's
    /// forwarded `Get` alike) and the rule stays in the table.
    async fn check_token(&self, key: &str, index: u64) -> Result<TokenCheck, EngineError> {
        let view = self.get(key).await?;
        Ok(TokenCheck {
            current: view.holders.iter().any(|h| h.index == index),
            holders: view.holders,
        })
    }
    /// Keys in use under `prefix`, after `after`, at most `limit`.
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeySummary>, EngineError>;
    /// Every change of `key` (or of every key under it, with `prefix`) from
    /// now on.
    async fn watch(&self, key: &str, prefix: bool) -> Result<EventStream, EngineError>;
    /// Counts of keys, entries and waiters.
    async fn stats(&self) -> Result<EngineStats, EngineError>;
    /// Whether the backend can serve now, as cheaply as it can tell (health
    /// probes call it every few seconds). By default: it answers `stats`.
    async fn check(&self) -> Result<(), EngineError> {
        self.stats().await.map(|_| ())
    }
    /// Called once when the server stops, after its streams have ended: a
    /// backend gives up what it holds for the others. The embedded backend
    /// has nothing to do; an etcd gateway that is primary resigns, so
    /// another gateway takes over at once rather than when its lease
    /// lapses.
    async fn shutdown(&self) {}
    /// The backend's name for status pages: `embedded` or `etcd`.
    fn backend(&self) -> &'static str;
    /// This process's part in a cluster, for status pages.
    fn cluster(&self) -> ClusterView {
        ClusterView {
            role: "embedded",
            primary_url: None,
        }
    }
    /// What the journal's commits cost so far; `None` for an engine that
    /// stores nothing (memory, or a follower).
    fn journal_stats(&self) -> Option<journal_stats::JournalStats> {
        None
    }
    /// The backend's connections to the members of what stores its state
    /// (etcd's members), for `/metrics`; empty for the embedded backend.
    fn endpoints(&self) -> Vec<EndpointStats> {
        Vec::new()
    }
}

/// One member of the store a backend talks to (an etcd member), as the
/// metrics show it: whether requests go to it, and how often a request was
/// tried again elsewhere after failing on it. The backend counts; the
/// service layer only reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStats {
    /// The member's URL.
    pub endpoint: String,
    /// Whether it is in rotation.
    pub healthy: bool,
    /// Retries away from it, by cause, counted since the process started.
    pub retries: Vec<(&'static str, u64)>,
}

/// What a process is in its cluster: `embedded` (one machine), or, over
/// etcd, `primary`, `follower` or `electing`, with the primary's URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    /// `embedded`, `primary`, `follower` or `electing`.
    pub role: &'static str,
    /// The primary's advertised URL, when one is known.
    pub primary_url: Option<String>,
}
