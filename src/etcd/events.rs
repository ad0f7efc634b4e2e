//! From etcd key changes to lock events, and from key-value ranges to views.
//!
//! A [`Mirror`] holds the entries of a range of locks as read at one
//! revision, then applies etcd's changes revision by revision. Each
//! revision becomes the lock events it means, in the order etcd applied the
//! writes, each reporting the lock's holder and queue length *after* the
//! whole revision, as the embedded backend reports a release and the hand-
//! over it causes:
//!
//! | etcd change                               | event       |
//! | ----------------------------------------- | ----------- |
//! | entry created, not held                   | `queued`    |
//! | entry created held, or queued -> held     | `acquired`  |
//! | held -> held, or queued -> queued (ttl)   | `renewed`   |
//! | entry deleted, tombstone `released`       | `released`  |
//! | entry deleted, tombstone `expired`        | `expired`   |
//! | entry deleted, tombstone `cancelled`      | `cancelled` |
//! | held entry deleted, no tombstone          | `expired` (its lease ran out) |
//! | queued entry deleted, no tombstone        | `cancelled` (its gateway's lease ran out) |
//!
//! A rewrite that changes only the lease (a queued entry handed to another
//! gateway's lease) leaves the value as it was and produces no event.
//!
//! When a hold ends by its lease (its gateway gone), or the next entry is
//! on another gateway than the release, the removal and the new holder are
//! two revisions: for a moment the head entry is queued, waiting for its
//! gateway to make it the holder. The embedded backend reports the release
//! and the new holder at once, so [`Smoother`] holds a key's events back
//! while its head is pending (at most [`HOLD_BACK`]) and reports them with
//! the holder that follows, as `Observe` expects: leader to leader, with no
//! "no leader" in between. Events of one key keep their order; events of
//! different keys may pass each other by that much. Remaining gap: if the
//! head's gateway is gone too, the events come after [`HOLD_BACK`] with no
//! holder, and the head is promoted (or goes with its lease) later.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::Duration,
};

use tokio::time::Instant;

use etcd_client::KeyValue;

use super::{
    hub::Change,
    keys::{KeyKind, Keys},
    record::{Entry, EntryRecord, Reason, Tombstone},
};
use crate::engine::{EventKind, HolderView, KeySummary, KeyView, LockEvent, UnixMillis};

/// One entry as the mirror keeps it.
#[derive(Clone, Debug)]
struct Mirrored {
    id: String,
    value: Vec<u8>,
    rec: EntryRecord,
}

/// The entries of a range of locks, kept current from etcd's changes.
#[derive(Default)]
pub struct Mirror {
    /// Entries per lock, by index.
    locks: BTreeMap<String, BTreeMap<u64, Mirrored>>,
    /// Which lock and index each entry key is.
    by_key: HashMap<Vec<u8>, (String, u64)>,
    /// Registrations per entry key (lock, entry id) and their create
    /// revisions.
    registrations: HashMap<(String, String), Vec<i64>>,
}

impl Mirror {
    /// Loads key-value pairs read from a range (entries and registrations;
    /// other keys are skipped).
    pub fn load(&mut self, keys: &Keys, kvs: &[KeyValue]) {
        for kv in kvs {
            match keys.parse(kv.key()) {
                Some(KeyKind::Entry { lock }) => {
                    if let Ok(rec) = serde_json::from_slice::<EntryRecord>(kv.value()) {
                        let index = kv.create_revision() as u64;
                        let id = entry_id(kv.key());
                        self.by_key.insert(kv.key().to_vec(), (lock.clone(), index));
                        self.locks.entry(lock).or_default().insert(
                            index,
                            Mirrored {
                                id,
                                value: kv.value().to_vec(),
                                rec,
                            },
                        );
                    }
                }
                Some(KeyKind::Registration { lock }) => {
                    if let Some(entry_id) = registration_entry(keys, &lock, kv.key()) {
                        self.registrations
                            .entry((lock, entry_id))
                            .or_default()
                            .push(kv.create_revision());
                    }
                }
                _ => {}
            }
        }
    }

    /// Applies a batch of changes (in revision order) and returns the events
    /// they mean, stamped `now`.
    pub fn apply(&mut self, keys: &Keys, changes: &[Change], now: UnixMillis) -> Vec<LockEvent> {
        self.apply_by_lock(keys, changes, now)
            .into_iter()
            .flat_map(|(_, evs)| evs)
            .collect()
    }

    /// Like [`apply`](Self::apply), with the events of each revision grouped
    /// by key, in order.
    pub fn apply_by_lock(
        &mut self,
        keys: &Keys,
        changes: &[Change],
        now: UnixMillis,
    ) -> Vec<(String, Vec<LockEvent>)> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < changes.len() {
            let rev = changes[start].mod_rev;
            let end = changes[start..]
                .iter()
                .position(|c| c.mod_rev != rev)
                .map_or(changes.len(), |n| start + n);
            let mut events = Vec::new();
            self.apply_revision(keys, &changes[start..end], now, &mut events);
            let mut by_lock: Vec<(String, Vec<LockEvent>)> = Vec::new();
            for ev in events {
                match by_lock.iter_mut().find(|(l, _)| *l == ev.key) {
                    Some((_, evs)) => evs.push(ev),
                    None => by_lock.push((ev.key.clone(), vec![ev])),
                }
            }
            out.extend(by_lock);
            start = end;
        }
        out
    }

    /// Whether `lock`'s head entry is queued: its gateway is about to make
    /// it the holder (or it goes with its gateway's lease).
    pub fn head_pending(&self, lock: &str) -> bool {
        self.locks
            .get(lock)
            .and_then(|q| q.first_key_value())
            .is_some_and(|(_, m)| m.rec.held.is_none())
    }

    fn apply_revision(
        &mut self,
        keys: &Keys,
        changes: &[Change],
        now: UnixMillis,
        out: &mut Vec<LockEvent>,
    ) {
        // Tombstones are written after the delete they explain, in the same
        // transaction: read them first.
        let tombs: HashMap<u64, Reason> = changes
            .iter()
            .filter(|c| !c.deleted)
            .filter_map(|c| match keys.parse(&c.key) {
                Some(KeyKind::Tombstone { index, .. }) => {
                    Tombstone::parse(&c.value).map(|r| (index, r))
                }
                _ => None,
            })
            .collect();
        let mut pending: Vec<(String, EventKind, u64, Option<String>, u64)> = Vec::new();
        for c in changes {
            let Some(KeyKind::Entry { lock }) = keys.parse(&c.key) else {
                continue;
            };
            if c.deleted {
                let Some((lock, index)) = self.by_key.remove(&c.key) else {
                    continue;
                };
                let Some(queue) = self.locks.get_mut(&lock) else {
                    continue;
                };
                let Some(gone) = queue.remove(&index) else {
                    continue;
                };
                if queue.is_empty() {
                    self.locks.remove(&lock);
                }
                let kind = match tombs.get(&index) {
                    Some(Reason::Released) => EventKind::Released,
                    Some(Reason::Expired) => EventKind::Expired,
                    Some(Reason::Cancelled) => EventKind::Cancelled,
                    None if gone.rec.held.is_some() => EventKind::Expired,
                    None => EventKind::Cancelled,
                };
                pending.push((lock, kind, index, gone.rec.value, gone.rec.ttl_ms));
                continue;
            }
            let Ok(rec) = serde_json::from_slice::<EntryRecord>(&c.value) else {
                continue;
            };
            let index = c.create_rev as u64;
            let queue = self.locks.entry(lock.clone()).or_default();
            let kind = match queue.get(&index) {
                None => Some(if rec.held.is_some() {
                    EventKind::Acquired
                } else {
                    EventKind::Queued
                }),
                Some(prev) if prev.value == c.value => None,
                Some(prev) => Some(match (prev.rec.held.is_some(), rec.held.is_some()) {
                    (false, true) => EventKind::Acquired,
                    _ => EventKind::Renewed,
                }),
            };
            self.by_key.insert(c.key.clone(), (lock.clone(), index));
            if let Some(kind) = kind {
                pending.push((lock, kind, index, rec.value.clone(), rec.ttl_ms));
            }
            queue.insert(
                index,
                Mirrored {
                    id: entry_id(&c.key),
                    value: c.value.clone(),
                    rec,
                },
            );
        }
        for (lock, kind, index, value, ttl_ms) in pending {
            let (holder, queue_length) = self.summary(&lock);
            out.push(LockEvent {
                key: lock,
                kind,
                index,
                value,
                ttl_ms,
                at: now,
                holder,
                queue_length,
            });
        }
    }

    /// The holder of `lock` and how many entries wait behind the head.
    pub fn summary(&self, lock: &str) -> (Option<HolderView>, u64) {
        let Some(queue) = self.locks.get(lock) else {
            return (None, 0);
        };
        let holder = queue
            .first_key_value()
            .and_then(|(&i, m)| holder_view(i, &m.rec));
        (holder, queue.len().saturating_sub(1) as u64)
    }

    /// `lock`'s holder and queue. A lock never used reads as free.
    pub fn view(&self, lock: &str) -> KeyView {
        let Some(queue) = self.locks.get(lock) else {
            return KeyView::default();
        };
        let holder = queue
            .first_key_value()
            .and_then(|(&i, m)| holder_view(i, &m.rec));
        let queue = queue
            .iter()
            .filter(|(_, m)| m.rec.held.is_none())
            .map(|(&index, m)| {
                let waiters = self.live_registrations(lock, index, &m.id);
                Entry {
                    key: String::new(),
                    index,
                    mod_rev: 0,
                    lease: 0,
                    rec: m.rec.clone(),
                }
                .queued_view(waiters)
            })
            .collect();
        KeyView { holder, queue }
    }

    /// Requests waiting on an entry, as far as etcd knows: the gateways
    /// registered on it (each has at least one request waiting on it).
    fn live_registrations(&self, lock: &str, index: u64, id: &str) -> u64 {
        self.registrations
            .get(&(lock.to_owned(), id.to_owned()))
            .map_or(0, |revs| {
                revs.iter().filter(|&&r| r >= index as i64).count() as u64
            })
    }

    /// Up to `limit` locks in use, sorted by name, after `after`.
    pub fn summaries(&self, after: Option<&str>, limit: usize) -> Vec<KeySummary> {
        self.locks
            .iter()
            .filter(|(name, _)| after.is_none_or(|a| name.as_str() > a))
            .take(limit)
            .map(|(name, _)| {
                let (holder, queue_length) = self.summary(name);
                KeySummary {
                    key: name.clone(),
                    holder,
                    queue_length,
                }
            })
            .collect()
    }

    /// Locks and entries in the mirror.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.locks.len() as u64,
            self.locks.values().map(|q| q.len() as u64).sum(),
        )
    }
}

fn holder_view(index: u64, rec: &EntryRecord) -> Option<HolderView> {
    let h = rec.held?;
    Some(HolderView {
        index,
        value: rec.value.clone(),
        ttl_ms: rec.ttl_ms,
        acquired_at: h.acquired_at,
        deadline: h.deadline,
    })
}

/// The entry id of an entry key: what follows the last `/`.
fn entry_id(key: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    key.rsplit_once('/')
        .map_or(String::new(), |(_, id)| id.to_owned())
}

/// The entry id a registration key belongs to.
fn registration_entry(keys: &Keys, lock: &str, key: &[u8]) -> Option<String> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(&format!("{}w/", keys.lock(lock)))?;
    let (entry_id, _) = rest.split_once('/')?;
    Some(entry_id.to_owned())
}

/// How long a key's events wait for its pending head to become the holder.
pub const HOLD_BACK: Duration = Duration::from_secs(1);

/// Holds back the events of keys whose head is pending (see the module
/// docs) and releases them with the holder that follows.
#[derive(Default)]
pub struct Smoother {
    held: HashMap<String, (Vec<LockEvent>, Instant)>,
    ready: VecDeque<LockEvent>,
}

impl Smoother {
    /// Takes one key's events of one revision, as the mirror left it.
    pub fn push(&mut self, mirror: &Mirror, lock: String, events: Vec<LockEvent>) {
        let pending = mirror.head_pending(&lock);
        match self.held.remove(&lock) {
            Some((mut waiting, since)) => {
                waiting.extend(events);
                if pending {
                    self.held.insert(lock, (waiting, since));
                } else {
                    let (holder, queue_length) = mirror.summary(&lock);
                    for mut ev in waiting {
                        if ev.holder.is_none() {
                            ev.holder = holder.clone();
                            ev.queue_length = queue_length;
                        }
                        self.ready.push_back(ev);
                    }
                }
            }
            None if pending => {
                self.held.insert(lock, (events, Instant::now()));
            }
            None => self.ready.extend(events),
        }
    }

    /// The next event ready to go out.
    pub fn pop(&mut self) -> Option<LockEvent> {
        self.ready.pop_front()
    }

    /// When the oldest held-back key must go out anyway.
    pub fn deadline(&self) -> Option<Instant> {
        self.held
            .values()
            .map(|(_, since)| *since + HOLD_BACK)
            .min()
    }

    /// Lets out, as they are, the keys held back for [`HOLD_BACK`] (or all
    /// of them).
    pub fn flush(&mut self, all: bool) {
        let now = Instant::now();
        let due: Vec<String> = self
            .held
            .iter()
            .filter(|(_, (_, since))| all || *since + HOLD_BACK <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some((evs, _)) = self.held.remove(&k) {
                self.ready.extend(evs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EventKind as K;

    fn put(keys: &Keys, lock: &str, id: &str, create: i64, rev: i64, rec: &EntryRecord) -> Change {
        Change {
            deleted: false,
            key: keys.entry(lock, id).into_bytes(),
            value: rec.to_bytes(),
            create_rev: create,
            mod_rev: rev,
        }
    }

    fn del(keys: &Keys, lock: &str, id: &str, rev: i64) -> Change {
        Change {
            deleted: true,
            key: keys.entry(lock, id).into_bytes(),
            value: Vec::new(),
            create_rev: 0,
            mod_rev: rev,
        }
    }

    fn tomb(keys: &Keys, lock: &str, index: u64, reason: Reason, rev: i64) -> Change {
        Change {
            deleted: false,
            key: keys.tombstone(lock, index).into_bytes(),
            value: Tombstone { reason }.to_bytes(),
            create_rev: rev,
            mod_rev: rev,
        }
    }

    fn kinds(evs: &[LockEvent]) -> Vec<(K, u64, Option<u64>)> {
        evs.iter()
            .map(|e| (e.kind, e.index, e.holder.as_ref().map(|h| h.index)))
            .collect()
    }

    #[test]
    fn revisions_become_events_with_the_state_after_them() {
        let keys = Keys::new("/p/");
        let mut m = Mirror::default();
        let a = EntryRecord::queued(None, 0, 1);
        let b = EntryRecord::queued(Some("b".into()), 500, 2);
        let evs = m.apply(
            &keys,
            &[
                put(&keys, "k", "na", 10, 10, &a.held_at(1)),
                put(&keys, "k", "vb", 11, 11, &b),
            ],
            5,
        );
        assert_eq!(
            kinds(&evs),
            vec![(K::Acquired, 10, Some(10)), (K::Queued, 11, Some(10))]
        );
        // A lease hand-off rewrites the same value: no event.
        assert!(
            m.apply(&keys, &[put(&keys, "k", "vb", 11, 12, &b)], 6)
                .is_empty()
        );
        // Release and hand-over in one transaction: both report the new
        // holder.
        let evs = m.apply(
            &keys,
            &[
                del(&keys, "k", "na", 13),
                tomb(&keys, "k", 10, Reason::Released, 13),
                put(&keys, "k", "vb", 11, 13, &b.held_at(7)),
            ],
            7,
        );
        assert_eq!(
            kinds(&evs),
            vec![(K::Released, 10, Some(11)), (K::Acquired, 11, Some(11))]
        );
        // Gone with its lease, no tombstone: a hold expired.
        let evs = m.apply(&keys, &[del(&keys, "k", "vb", 14)], 8);
        assert_eq!(kinds(&evs), vec![(K::Expired, 11, None)]);
        assert_eq!(m.counts(), (0, 0));
    }

    #[test]
    fn a_pending_head_holds_a_key_back_until_it_holds() {
        let keys = Keys::new("/p/");
        let mut m = Mirror::default();
        let mut s = Smoother::default();
        let a = EntryRecord::queued(None, 0, 1);
        let b = EntryRecord::queued(None, 0, 1);
        for (lock, evs) in m.apply_by_lock(
            &keys,
            &[
                put(&keys, "k", "na", 10, 10, &a.held_at(1)),
                put(&keys, "k", "nb", 11, 11, &b),
            ],
            1,
        ) {
            s.push(&m, lock, evs);
        }
        assert_eq!(s.pop().map(|e| e.kind), Some(K::Acquired));
        assert_eq!(s.pop().map(|e| e.kind), Some(K::Queued));
        // Released on its own: the head (b) is queued, so nothing yet.
        for (lock, evs) in m.apply_by_lock(
            &keys,
            &[
                del(&keys, "k", "na", 12),
                tomb(&keys, "k", 10, Reason::Released, 12),
            ],
            2,
        ) {
            s.push(&m, lock, evs);
        }
        assert!(s.pop().is_none());
        assert!(s.deadline().is_some());
        // b's gateway makes it the holder: both go out, with b holding.
        for (lock, evs) in
            m.apply_by_lock(&keys, &[put(&keys, "k", "nb", 11, 13, &b.held_at(3))], 3)
        {
            s.push(&m, lock, evs);
        }
        let out: Vec<_> = std::iter::from_fn(|| s.pop()).collect();
        assert_eq!(
            kinds(&out),
            vec![(K::Released, 10, Some(11)), (K::Acquired, 11, Some(11))]
        );
        assert!(s.deadline().is_none());
    }
}
