//! The durable journal on redb.
//!
//! Why redb: an established, pure-Rust embedded store with ACID write
//! transactions that are fsync'd on commit (`Durability::Immediate`), crash
//! safety without a recovery step of ours, and free-page reuse, so deleted
//! holds give their space back. baton's durable state is tiny (the current
//! holds and one counter), so a B-tree keyed by index is all it needs; the
//! engine task batches many requests into one transaction (group commit),
//! which is what makes one fsync per batch rather than per request.
//!
//! Layout of `DATA_DIR/`:
//! - `baton.redb`: tables `holds` (index -> JSON-encoded [`HeldRecord`]) and
//!   `meta` (`format` = [`FORMAT`], `index_ceiling`).
//! - `LOCK`: held with an exclusive file lock while a server runs, so a
//!   second server on the same directory refuses to start.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    sync::Arc,
};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Commit, HeldRecord, Journal, Record, Snapshot, StoreError};

const HOLDS: TableDefinition<u64, &[u8]> = TableDefinition::new("holds");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The on-disk format this baton writes and reads.
pub const FORMAT: u64 = 1;

/// Why a data directory could not be opened. Each message names the
/// directory, so an operator knows which one to look at.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory or its files could not be created or read.
    #[error("data directory {dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process holds the directory's lock.
    #[error("data directory {0} is in use by another baton server (its LOCK file is held)")]
    Locked(PathBuf),
    /// The database file is damaged or not a baton database.
    #[error("data directory {dir} has a damaged or unreadable baton.redb: {reason}")]
    Damaged {
        /// The directory.
        dir: PathBuf,
        /// What the store reported.
        reason: String,
    },
    /// The directory was written by a baton with another on-disk format.
    #[error("data directory {dir} was written in format {found}; this baton reads format {FORMAT}")]
    Format {
        /// The directory.
        dir: PathBuf,
        /// The format found.
        found: u64,
    },
}

/// A hold as stored.
#[derive(Serialize, Deserialize)]
struct StoredHold {
    key: String,
    value: Option<String>,
    ttl_ms: u64,
    acquired_at: u64,
    deadline: Option<u64>,
    /// The key's semaphore limit; absent in stores written before
    /// semaphores, which held locks only (limit 1).
    #[serde(default = "one")]
    limit: u32,
    /// The hold's lock-delay; absent in older stores (no delay).
    #[serde(default)]
    lock_delay_ms: u64,
}

fn one() -> u32 {
    1
}

/// The redb journal of one data directory. Dropping it releases the lock.
pub struct RedbJournal {
    /// Shared with the blocking thread that runs each commit.
    db: Arc<Database>,
    /// The ceiling last committed, so unchanged ceilings are not rewritten.
    index_ceiling: u64,
    _lock: File,
}

impl RedbJournal {
    /// Opens (creating on first start) the store in `dir`, takes its lock,
    /// and reads the snapshot to restore the engine from.
    pub fn open(dir: &Path) -> Result<(Self, Snapshot), OpenError> {
        let io = |source| OpenError::Io {
            dir: dir.to_owned(),
            source,
        };
        let damaged = |e: &dyn std::fmt::Display| OpenError::Damaged {
            dir: dir.to_owned(),
            reason: e.to_string(),
        };
        fs::create_dir_all(dir).map_err(io)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(OpenError::Locked(dir.to_owned())),
            Err(fs::TryLockError::Error(e)) => return Err(io(e)),
        }

        let path = dir.join("baton.redb");
        let fresh = !path.exists();
        let db = Database::create(&path).map_err(|e| damaged(&e))?;
        let txn = db.begin_write().map_err(|e| damaged(&e))?;
        let snapshot = {
            let mut meta = txn.open_table(META).map_err(|e| damaged(&e))?;
            let format = meta
                .get("format")
                .map_err(|e| damaged(&e))?
                .map(|v| v.value());
            match format {
                Some(FORMAT) => {}
                Some(found) => {
                    return Err(OpenError::Format {
                        dir: dir.to_owned(),
                        found,
                    });
                }
                None if fresh => {
                    meta.insert("format", FORMAT).map_err(|e| damaged(&e))?;
                }
                None => {
                    return Err(damaged(&"the file has no baton format marker"));
                }
            }
            let index_ceiling = meta
                .get("index_ceiling")
                .map_err(|e| damaged(&e))?
                .map_or(1, |v| v.value());
            let holds_table = txn.open_table(HOLDS).map_err(|e| damaged(&e))?;
            let mut holds = Vec::new();
            for row in holds_table.iter().map_err(|e| damaged(&e))? {
                let (index, bytes) = row.map_err(|e| damaged(&e))?;
                let h: StoredHold =
                    serde_json::from_slice(bytes.value()).map_err(|e| damaged(&e))?;
                holds.push(HeldRecord {
                    key: h.key,
                    index: index.value(),
                    value: h.value,
                    ttl_ms: h.ttl_ms,
                    acquired_at: h.acquired_at,
                    deadline: h.deadline,
                    limit: h.limit.max(1),
                    lock_delay_ms: h.lock_delay_ms,
                });
            }
            Snapshot {
                holds,
                index_ceiling,
            }
        };
        txn.commit().map_err(|e| damaged(&e))?;
        let index_ceiling = snapshot.index_ceiling;
        Ok((
            Self {
                db: Arc::new(db),
                index_ceiling,
                _lock: lock,
            },
            snapshot,
        ))
    }
}

impl Journal for RedbJournal {
    fn commit(
        &mut self,
        records: Vec<Record>,
        index_ceiling: u64,
        _snapshot: Option<Vec<HeldRecord>>,
    ) -> Commit {
        // The ceiling moves once per INDEX_RESERVATION entries; writing it
        // only then keeps most commits to the holds table alone. Commits
        // run one at a time (depth 1), so the last one asked for is the
        // last one stored, or the engine stopped on its failure.
        let ceiling = (index_ceiling != self.index_ceiling).then_some(index_ceiling);
        self.index_ceiling = index_ceiling;
        let db = Arc::clone(&self.db);
        // redb's commit blocks on fsync: a blocking thread runs it, so the
        // engine task goes on applying the next batch meanwhile.
        let task = tokio::task::spawn_blocking(move || write(&db, &records, ceiling));
        Box::pin(async move {
            task.await
                .map_err(|e| StoreError::Task(e.to_string()))
                .and_then(|r| r)
        })
    }
}

/// One batch in one write transaction, fsync'd on commit.
fn write(db: &Database, records: &[Record], ceiling: Option<u64>) -> Result<(), StoreError> {
    let db_err = |e: &dyn std::fmt::Display| StoreError::Database(e.to_string());
    let txn = db.begin_write().map_err(|e| db_err(&e))?;
    {
        let mut holds = txn.open_table(HOLDS).map_err(|e| db_err(&e))?;
        for r in records {
            match r {
                Record::Held(h) => {
                    let bytes = serde_json::to_vec(&StoredHold {
                        key: h.key.clone(),
                        value: h.value.clone(),
                        ttl_ms: h.ttl_ms,
                        acquired_at: h.acquired_at,
                        deadline: h.deadline,
                        limit: h.limit,
                        lock_delay_ms: h.lock_delay_ms,
                    })
                    .map_err(|e| db_err(&e))?;
                    holds
                        .insert(h.index, bytes.as_slice())
                        .map_err(|e| db_err(&e))?;
                }
                Record::Removed { index } => {
                    holds.remove(index).map_err(|e| db_err(&e))?;
                }
            }
        }
        if let Some(ceiling) = ceiling {
            let mut meta = txn.open_table(META).map_err(|e| db_err(&e))?;
            meta.insert("index_ceiling", ceiling)
                .map_err(|e| db_err(&e))?;
        }
    }
    txn.commit().map_err(|e| db_err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_stored_before_semaphores_reads_as_a_lock_without_delay() {
        let old = br#"{"key":"k","value":"v","ttl_ms":1000,"acquired_at":5,"deadline":1005}"#;
        let h: StoredHold = serde_json::from_slice(old).unwrap();
        assert_eq!((h.limit, h.lock_delay_ms), (1, 0));
    }
}
