//! Durability for the embedded backend: the journal the engine task commits
//! each batch of [`Record`]s to before it answers, and the snapshot it is
//! restored from at start.
//!
//! The records themselves ([`record`]) live here too, not in the engine that
//! produces them: the store is the layer below the engine, and a journal
//! (this one on redb, or the etcd backend's) must be able to write and
//! restore them without importing the engine. `store` imports nothing from
//! the layers above it (`tests/layering.rs` checks).

use thiserror::Error;

pub use record::{HeldRecord, Record, UnixMillis};

/// What a durable store hands the engine at start.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every hold that was committed and not removed.
    pub holds: Vec<HeldRecord>,
    /// Every index ever handed out is below this: the next index starts
    /// here (or higher).
    pub index_ceiling: u64,
}

/// A durable log of holds. `commit` returns only once `records` and the new
/// index ceiling are on stable storage (fsync'd), in one atomic step.
pub trait Journal: Send + 'static {
    /// Makes `records` and `index_ceiling` durable, atomically.
    fn commit(&mut self, records: &[Record], index_ceiling: u64) -> Result<(), StoreError>;
}

/// Why the store failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The underlying database failed.
    #[error("storage error: {0}")]
    Database(String),
    /// The blocking commit task could not run.
    #[error("commit task failed: {0}")]
    Task(String),
    /// The journal refused the write because this process may no longer
    /// write: another primary was elected (the etcd backend's fence).
    #[error("fenced off: {0}")]
    Fenced(String),
}

pub mod record;
pub mod redb_journal;
