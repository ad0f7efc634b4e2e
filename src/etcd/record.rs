//! What the etcd backend stores in its keys' values: an entry's fields, and
//! a tombstone's reason. JSON, so `etcdctl get --prefix /baton/` is readable.

use etcd_client::KeyValue;
use serde::{Deserialize, Serialize};

use super::error::EtcdError;
use crate::engine::{HolderView, QueuedView, UnixMillis};

/// An entry's fields. Its index is not stored: it is the key's create
/// revision, which etcd keeps for as long as the key exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    /// The entry's value; `None` never joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The ttl the hold runs with (or will, once acquired).
    pub ttl_ms: u64,
    /// When the entry was created.
    pub queued_at: UnixMillis,
    /// Set once the entry holds the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<HoldRecord>,
    /// When this record was last written. Every deliberate write (renew,
    /// join) changes it, so watchers can tell a renew from a lease hand-off,
    /// which rewrites the key with the same value.
    pub updated_at: UnixMillis,
}

/// The hold part of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    /// When the entry became the holder.
    pub acquired_at: UnixMillis,
    /// When the hold expires unless renewed; `None` = never (ttl 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<UnixMillis>,
}

impl EntryRecord {
    /// A new entry, not yet holding.
    pub fn queued(value: Option<String>, ttl_ms: u64, now: UnixMillis) -> Self {
        Self {
            value,
            ttl_ms,
            queued_at: now,
            held: None,
            updated_at: now,
        }
    }

    /// This entry as the holder from `now`, with its ttl.
    pub fn held_at(&self, now: UnixMillis) -> Self {
        Self {
            held: Some(HoldRecord {
                acquired_at: now,
                deadline: deadline_after(now, self.ttl_ms),
            }),
            updated_at: now,
            ..self.clone()
        }
    }

    /// This entry renewed at `now` with `ttl_ms`: a holder's deadline moves,
    /// a queued entry will be held with the new ttl.
    pub fn renewed(&self, ttl_ms: u64, now: UnixMillis) -> Self {
        Self {
            ttl_ms,
            held: self.held.map(|h| HoldRecord {
                acquired_at: h.acquired_at,
                deadline: deadline_after(now, ttl_ms),
            }),
            updated_at: now,
            ..self.clone()
        }
    }

    /// The hold's deadline, if held with a ttl.
    pub fn deadline(&self) -> Option<UnixMillis> {
        self.held.and_then(|h| h.deadline)
    }

    /// The JSON stored in etcd.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain fields cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `now + ttl`, or never for ttl 0.
pub fn deadline_after(now: UnixMillis, ttl_ms: u64) -> Option<UnixMillis> {
    (ttl_ms > 0).then(|| now.saturating_add(ttl_ms))
}

/// An entry as read from etcd: its record and the key's revisions.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The entry's etcd key.
    pub key: String,
    /// Its index: the key's create revision.
    pub index: u64,
    /// The key's last modification, for compare-and-swap.
    pub mod_rev: i64,
    /// The lease the key is attached to (0 = none).
    pub lease: i64,
    /// The stored fields.
    pub rec: EntryRecord,
}

impl Entry {
    /// Reads an entry from a key-value pair.
    pub fn from_kv(kv: &KeyValue) -> Result<Self, EtcdError> {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let rec = serde_json::from_slice(kv.value()).map_err(|e| EtcdError::Corrupt {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            key,
            index: kv.create_revision() as u64,
            mod_rev: kv.mod_revision(),
            lease: kv.lease(),
            rec,
        })
    }

    /// Whether it holds the lock.
    pub fn is_held(&self) -> bool {
        self.rec.held.is_some()
    }

    /// The holder view, if it holds.
    pub fn holder_view(&self) -> Option<HolderView> {
        let h = self.rec.held?;
        Some(HolderView {
            index: self.index,
            value: self.rec.value.clone(),
            ttl_ms: self.rec.ttl_ms,
            acquired_at: h.acquired_at,
            deadline: h.deadline,
        })
    }

    /// The queued view, with `waiters` requests waiting on it.
    pub fn queued_view(&self, waiters: u64) -> QueuedView {
        QueuedView {
            index: self.index,
            value: self.rec.value.clone(),
            ttl_ms: self.rec.ttl_ms,
            queued_at: self.rec.queued_at,
            waiters,
        }
    }
}

/// Why an entry was removed, as its tombstone says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// Released by index or value.
    Released,
    /// The holder's deadline passed.
    Expired,
    /// A queued entry lost its last waiter.
    Cancelled,
}

/// A tombstone's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// Why the entry went.
    pub reason: Reason,
}

impl Tombstone {
    /// The JSON stored in etcd.
    pub fn to_bytes(self) -> Vec<u8> {
        serde_json::to_vec(&self).unwrap_or_default()
    }

    /// Reads a tombstone; `None` if it is not one.
    pub fn parse(bytes: &[u8]) -> Option<Reason> {
        serde_json::from_slice::<Tombstone>(bytes)
            .ok()
            .map(|t| t.reason)
    }
}
