//! The Rust client: locks that renew themselves and release on drop, and
//! leader election, over gRPC with fail-over between endpoints.
//!
//! ```no_run
//! use std::time::Duration;
//! use baton::client::Client;
//!
//! # async fn demo() -> Result<(), baton::client::ClientError> {
//! let client = Client::connect("http://127.0.0.1:4001").await?;
//!
//! // Wait for the lock; the guard renews it every ttl/3 while it lives.
//! let guard = client.lock("jobs/nightly").ttl(Duration::from_secs(10)).acquire().await?;
//! println!("fencing token: {}", guard.index());
//! tokio::select! {
//!     _ = tokio::time::sleep(Duration::from_secs(30)) => {}   // the work
//!     lost = guard.lost() => eprintln!("lost the lock: {lost}"),
//! }
//! guard.release().await.ok(); // or just drop it
//!
//! // Lead an election while this process lives.
//! let leadership = client.campaign("scheduler", "node-1").await?;
//! println!("leading as {} with token {}", leadership.name(), leadership.index());
//! # Ok(())
//! # }
//! ```
//!
//! The pieces: [`connect`] (endpoints, fail-over), [`lock`] (the lock
//! builder and guard, status, release), [`election`] (campaigns, leader,
//! observe, resign), [`error`] (the error type). A guard's background
//! keeper is in `hold`, shared by locks and leaderships.

pub mod connect;
pub mod election;
pub mod error;
mod hold;
pub mod lock;

pub use connect::{Client, ClientBuilder, DEFAULT_ENDPOINT, ServerStatus};
pub use election::{CampaignBuilder, Leader, Leadership, Resigned};
pub use error::ClientError;
pub use hold::Lost;
pub use lock::{
    DEFAULT_TTL, Entry, Holder, LockBuilder, LockGuard, LockStatus, Released, TokenCheck, Waiting,
};
