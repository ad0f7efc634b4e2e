//! The records a journal stores: what a crash must not lose.
//!
//! They live here, with the store that owns their format, rather than in the
//! engine that produces them: the engine's table emits them and its driver
//! commits them (both import `store`), and every journal (redb here, etcd in
//! [`etcd`](crate::etcd)) writes and restores them without importing the
//! engine. So durability sits below the engine, and nothing imports upward.

/// Milliseconds since the Unix epoch: how records store time, and the
/// number the engine's state machine is given as time (it never reads a
/// clock itself; `engine::types` re-exports it).
pub type UnixMillis = u64;

/// A change to durable state: what a crash must not lose. Only holds are
/// durable; queued entries die with their connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// This hold exists with these fields (created or renewed).
    Held(HeldRecord),
    /// The hold with this index is gone.
    Removed {
        /// The hold's index.
        index: u64,
    },
}

impl Record {
    /// Applies this change to `holds` (by index), as replaying a journal
    /// does: the one way records add up to the stored holds, for restores
    /// and for the tests that check a snapshot against its records.
    pub fn apply_to(self, holds: &mut std::collections::BTreeMap<u64, HeldRecord>) {
        match self {
            Record::Held(h) => {
                holds.insert(h.index, h);
            }
            Record::Removed { index } => {
                holds.remove(&index);
            }
        }
    }
}

/// A hold as it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRecord {
    /// The lock's name.
    pub key: String,
    /// The fencing token.
    pub index: u64,
    /// The holder's value.
    pub value: Option<String>,
    /// The hold's ttl.
    pub ttl_ms: u64,
    /// When it was acquired.
    pub acquired_at: UnixMillis,
    /// When it expires; `None` = never.
    pub deadline: Option<UnixMillis>,
    /// The key's limit (1 for a lock). Stored data from before semaphores
    /// reads as 1.
    pub limit: u32,
    /// The hold's lock-delay. A hold that expired with one stays stored
    /// until the delay is over, so a restart (or a new primary) restores
    /// the delay from its deadline: only then is its `Removed` committed.
    pub lock_delay_ms: u64,
}
