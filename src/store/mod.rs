//! Durability for the embedded backend: the journal the engine task commits
//! each batch of [`Record`]s to before it answers, and the snapshot it is
//! restored from at start.
//!
//! The records themselves ([`record`]) live here too, not in the engine that
//! produces them: the store is the layer below the engine, and a journal
//! (this one on redb, or the etcd backend's) must be able to write and
//! restore them without importing the engine. `store` imports nothing from
//! the layers above it (`tests/layering.rs` checks).

use std::{future::Future, pin::Pin};

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

/// A batch on its way to stable storage: resolves once it is there (or
/// the commit failed).
pub type Commit = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// A durable log of holds, written one batch at a time.
///
/// `commit` is called once per batch, in the order the engine produced
/// them, and starts storing it at once; the future it returns resolves
/// once `records` and the new index ceiling are on stable storage (fsync'd,
/// or in etcd's replicated log), in one atomic step.
///
/// Why a future and not a blocking call: the etcd journal's commit is
/// network I/O, and up to [`depth`](Journal::depth) of them can be in
/// flight at once; redb's runs on a blocking thread inside its future.
pub trait Journal: Send + 'static {
    /// Starts making `records` and `index_ceiling` durable, atomically.
    /// `snapshot` is every hold as stored once this batch is in, given
    /// when [`wants_snapshot`](Journal::wants_snapshot) asked for it before
    /// the batch.
    fn commit(
        &mut self,
        records: Vec<Record>,
        index_ceiling: u64,
        snapshot: Option<Vec<HeldRecord>>,
    ) -> Commit;

    /// Whether the next commit should come with a snapshot of every hold:
    /// a journal that is a log compacts it into one, and the engine's
    /// table is the one place the holds are kept (the journal keeps no
    /// copy of its own).
    fn wants_snapshot(&self) -> bool {
        false
    }

    /// How many commits the engine may have in flight at once (at least
    /// 1). A journal that allows more than one keeps batches in order on
    /// restore: a batch counts only together with every batch before it,
    /// so a batch that landed while an earlier one failed is never
    /// restored. The engine still tells nobody of a batch before it and
    /// every earlier batch are durable.
    fn depth(&self) -> usize {
        1
    }
}

/// Why the store failed. `Clone`, so that one failed commit can fail the
/// commits that were in flight behind it with the same cause.
#[derive(Clone, Debug, Error)]
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
