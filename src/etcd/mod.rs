//! The etcd backend: the lock-queue contract on an etcd v3 cluster, so that
//! baton processes become stateless gateways and any of them can die.
//!
//! All state lives in etcd under `--etcd-prefix`; see [`engine`] for how
//! each rule of the contract maps onto etcd's keys, revisions, leases,
//! transactions and watches, and [`keys`] for the key layout.
//!
//! - [`keys`]: the key layout and the escaping of lock names.
//! - [`record`]: what the keys hold.
//! - [`session`]: the link to etcd and this gateway's session lease.
//! - [`hub`]: the one watch stream every watcher of the gateway shares.
//! - [`ops`]: the compare-and-swap transactions (release with hand-over,
//!   renew).
//! - [`pacer`]: bounds and retries etcd requests so a burst does not
//!   overload etcd.
//! - [`waiter`]: queued requests: trackers and wait streams.
//! - [`expiry`]: precise expiry of holds.
//! - [`leases`]: the shared leases holds hang on.
//! - [`events`]: etcd changes as lock events, ranges as views.
//! - [`engine`]: the [`Engine`](crate::engine::Engine) implementation.

pub mod config;
pub mod engine;
pub mod error;
pub mod events;
pub mod expiry;
pub mod hub;
pub mod journal;
pub mod keys;
pub mod leases;
pub mod ops;
pub mod pacer;
pub mod primary;
pub mod record;
pub mod session;
pub mod waiter;

pub use config::EtcdConfig;
pub use engine::EtcdEngine;
pub use error::EtcdError;
