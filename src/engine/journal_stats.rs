//! What the driver's journal commits cost: how many commits, how many
//! records, how long they took. `/metrics` shows them
//! (`baton_journal_*`), and `baton-bench` reads them after each scenario, so
//! that the time a durable request spends waiting for its commit is a
//! figure, not a guess: mean batch size is records per commit, mean commit
//! time is busy time per commit.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// The driver's running counts; one per engine, shared with its handle.
#[derive(Debug, Default)]
pub struct JournalCounters {
    commits: AtomicU64,
    records: AtomicU64,
    busy_micros: AtomicU64,
}

impl JournalCounters {
    /// Counts one commit of `records` records that took `took`.
    pub fn record(&self, records: usize, took: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.busy_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The counts as of now.
    pub fn snapshot(&self) -> JournalStats {
        JournalStats {
            commits: self.commits.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            busy: Duration::from_micros(self.busy_micros.load(Ordering::Relaxed)),
        }
    }
}

/// A durable engine's journal counts since it started (on the etcd
/// backend: since this gateway last became primary).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Commits made (batches with something to store).
    pub commits: u64,
    /// Records (holds created, renewed or removed) in them.
    pub records: u64,
    /// Time from handing a batch to the journal to its being durable,
    /// summed over commits.
    pub busy: Duration,
}
