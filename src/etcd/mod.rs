//! Several machines: the etcd backend. Every `baton --backend etcd` is a
//! gateway; the gateways elect one primary through etcd, the primary runs
//! the embedded engine (the same table and driver as on one machine) with
//! its journal in etcd, and the others forward every call to it. This is
//! the design of Chubby, with etcd as the replicated log and the election;
//! no rule of the lock-queue contract is implemented here.
//!
//! - [`primary`]: electing the primary, its term and fence.
//! - [`journal`]: the primary's journal in etcd.
//! - [`cluster`]: the [`Engine`](crate::engine::Engine) a gateway serves:
//!   the primary's engine, or the forwarding one.
//! - [`compaction`]: compacting etcd's history while primary.
//! - [`endpoints`]: the members of the etcd cluster and the rotation over
//!   them, which every etcd request goes through.
//! - [`config`], [`error`]: the connection options and failures.

pub mod cluster;
pub mod compaction;
pub mod config;
pub mod endpoints;
pub mod error;
pub mod journal;
pub mod primary;

pub use cluster::ClusterEngine;
pub use config::EtcdConfig;
pub use endpoints::Endpoints;
pub use error::EtcdError;
