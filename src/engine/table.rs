//! The lock-queue contract as a pure, clock-free state machine.
//!
//! `LockTable` holds every key's FIFO queue and applies the contract of
//! DESIGN.md: indexes, value joins, ttl deadlines, waiters that keep queued
//! entries alive, timeouts, renew, release and immediate hand-over. It never
//! reads a clock and performs no I/O: every operation takes `now`, and what
//! the outside world must learn comes out as [`Output`] (notices for waiting
//! requests, events for watchers, records for the durable store), drained by
//! a driver. That keeps it deterministic, so property tests can run it over
//! random histories (see the tests at the bottom and `tests/` for the model).
//!
//! A key may hold more than one entry at once (a semaphore: the first
//! `limit` entries of its queue hold, `limit` fixed by the key's first
//! entry), and a hold that expires with a lock-delay keeps the key from
//! everyone else until that long after its deadline. Both rules live here
//! and nowhere else, so every backend and surface gets them alike.
//!
//! Time only moves forward: an operation given an earlier `now` than one
//! already seen acts at the later time. Every operation first fires the
//! timers that are due, so an expired holder is never reported as holding,
//! whether or not the driver's timer has woken yet.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use thiserror::Error;

use super::types::{
    AcquireSpec, EndReason, EngineStats, EventKind, FailReason, Grant, HolderView, KeySummary,
    KeyView, LockEvent, QueuedView, Release, Renewal, Target, UnixMillis, WaitUpdate,
};
use crate::store::{HeldRecord, Record};

/// Identifies one waiting request (one open stream or HTTP request). Several
/// waiters may share an entry when they joined it by value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaiterId(pub u64);

/// What a request had heard when it went away. It decides whether a grant
/// the request never heard of stands: a hold nobody learned of would
/// otherwise live on (with ttl 0, forever) with nobody behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Departure {
    /// The request heard every notice it was sent, its grant included (or
    /// it was never granted). A hold it heard of lives on by its ttl.
    Informed,
    /// The request went away before it heard that it was granted (its
    /// reply or its grant notice was never delivered). If nobody else on
    /// the entry heard of the grant either, the hold is undone, as if the
    /// request had been withdrawn a moment earlier.
    Uninformed,
}

/// The table's own bounds; the service layer bounds key and value sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableLimits {
    /// Entries (holder plus queue) one key may have.
    pub max_entries_per_key: usize,
    /// Entries across all keys.
    pub max_entries: usize,
    /// Waiting requests across all keys.
    pub max_waiters: usize,
}

impl Default for TableLimits {
    fn default() -> Self {
        Self {
            max_entries_per_key: 10_000,
            max_entries: 1_000_000,
            max_waiters: 1_000_000,
        }
    }
}

/// Why the table refused an operation.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TableError {
    /// Renew or release named an entry that does not exist.
    #[error("no entry with {0} on this key")]
    NotFound(String),
    /// `timeout = 0` and the lock could not be had at once.
    #[error("lock is held (index {holder_index}) and timeout 0 does not wait")]
    NotImmediatelyAvailable {
        /// The index holding the lock.
        holder_index: u64,
    },
    /// `timeout = 0` and the key is in a lock-delay.
    #[error(
        "lock is in its lock-delay until {until} (Unix ms) after a hold expired, and timeout 0 does not wait"
    )]
    Delayed {
        /// When the delay ends.
        until: UnixMillis,
    },
    /// The request's limit differs from the one the key's entries have.
    #[error(
        "limit mismatch: key has limit {limit} while it has entries; this request asked for {asked}"
    )]
    LimitMismatch {
        /// The key's limit.
        limit: u32,
        /// The request's limit.
        asked: u32,
    },
    /// A bound of [`TableLimits`] was reached.
    #[error("{0}")]
    LimitReached(String),
}

/// A message for one waiting request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The request's entry acquired the lock.
    Granted(Grant),
    /// The hold this request acquired ended; the waiter is forgotten.
    Ended {
        /// The hold's index.
        index: u64,
        /// Why.
        reason: EndReason,
    },
    /// The request failed before acquiring; the waiter is forgotten.
    Failed {
        /// The entry's index.
        index: u64,
        /// Why.
        reason: FailReason,
    },
}

/// How an acquire was answered right away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The lock is this request's now (free, or its value already held it).
    Granted(Grant),
    /// The request waits behind the holder.
    Queued {
        /// The entry's index.
        index: u64,
        /// Entries ahead of it, counting the holder.
        position: u64,
        /// The holder at this moment.
        holder: Option<HolderView>,
    },
}

/// A wait's first step, as its caller hears it.
impl From<Admission> for WaitUpdate {
    fn from(admission: Admission) -> Self {
        match admission {
            Admission::Granted(g) => WaitUpdate::Acquired(g),
            Admission::Queued {
                index,
                position,
                holder,
            } => WaitUpdate::Queued {
                index,
                position,
                holder,
            },
        }
    }
}

/// Everything the table produced since it was last drained, in order.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages for waiting requests.
    pub notices: Vec<(WaiterId, Notice)>,
    /// Changes for watchers.
    pub events: Vec<LockEvent>,
    /// Changes for the durable store, to commit before anyone hears of them.
    pub records: Vec<Record>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    // Ordered before timeouts due at the same millisecond, so a waiter whose
    // timeout falls on the instant the lock frees up gets the lock.
    Expiry(u64),
    // The lock-delay after the expiry of the hold with this index ends;
    // before timeouts, so a waiter timing out that instant gets the key.
    DelayEnd(u64),
    WaitTimeout(WaiterId),
}

#[derive(Debug)]
struct Hold {
    acquired_at: UnixMillis,
    deadline: Option<UnixMillis>,
}

#[derive(Debug)]
struct Entry {
    value: Option<String>,
    ttl_ms: u64,
    lock_delay_ms: u64,
    queued_at: UnixMillis,
    hold: Option<Hold>,
    /// Before acquisition: the requests keeping the entry alive. After: the
    /// requests still listening for the end of the hold.
    waiters: Vec<WaiterId>,
    /// Someone outside learned of the hold: a waiter heard its grant, or a
    /// renew named it. A hold nobody heard of dies with its last waiter.
    heard: bool,
}

#[derive(Debug)]
struct KeyQueue {
    /// Entries by index; index order is arrival order. The holders are
    /// always a prefix of it: at most `limit` entries, and exactly
    /// `min(limit, entries)` unless a lock-delay runs.
    entries: BTreeMap<u64, Entry>,
    by_value: HashMap<String, u64>,
    /// How many may hold at once, fixed by the first entry of an empty key.
    limit: u32,
    /// While a lock-delay runs, when it ends: nobody new holds before.
    delayed_until: Option<UnixMillis>,
}

impl KeyQueue {
    fn new(limit: u32) -> Self {
        Self {
            entries: BTreeMap::new(),
            by_value: HashMap::new(),
            limit: limit.max(1),
            delayed_until: None,
        }
    }

    /// The stored form of this key's entry `e` (at `index`), if it holds.
    fn held_record(&self, key: &str, index: u64, e: &Entry) -> Option<HeldRecord> {
        let hold = e.hold.as_ref()?;
        Some(HeldRecord {
            key: key.to_owned(),
            index,
            value: e.value.clone(),
            ttl_ms: e.ttl_ms,
            acquired_at: hold.acquired_at,
            deadline: hold.deadline,
            limit: self.limit,
            lock_delay_ms: e.lock_delay_ms,
        })
    }

    fn held(&self) -> usize {
        self.entries
            .values()
            .take_while(|e| e.hold.is_some())
            .count()
    }
}

#[derive(Debug)]
struct Waiter {
    key: String,
    index: u64,
    timeout_at: Option<UnixMillis>,
}

/// Every key's queue, and the rules that change them. See the module docs.
#[derive(Debug)]
pub struct LockTable {
    keys: BTreeMap<String, KeyQueue>,
    key_of_index: HashMap<u64, String>,
    /// Holds that expired with a lock-delay still running, by index, as
    /// they are stored: their records are removed only when the delay
    /// ends, and until then they are part of [`stored`](Self::stored).
    delayed: HashMap<u64, HeldRecord>,
    waiters: HashMap<WaiterId, Waiter>,
    timers: BTreeSet<(UnixMillis, Timer)>,
    next_index: u64,
    next_waiter: u64,
    now: UnixMillis,
    limits: TableLimits,
    out: Output,
}

impl LockTable {
    /// An empty table whose first index is 1.
    pub fn new(limits: TableLimits) -> Self {
        Self {
            keys: BTreeMap::new(),
            key_of_index: HashMap::new(),
            delayed: HashMap::new(),
            waiters: HashMap::new(),
            timers: BTreeSet::new(),
            next_index: 1,
            next_waiter: 1,
            now: 0,
            limits,
            out: Output::default(),
        }
    }

    /// Rebuilds a table from durable state: the holds that were stored and
    /// the lowest index that may be handed out next. Holds whose deadline
    /// passed before `now` expire at once (their records come out in the
    /// output, to be committed like any other change).
    pub fn restore(
        limits: TableLimits,
        next_index: u64,
        holds: impl IntoIterator<Item = HeldRecord>,
        now: UnixMillis,
    ) -> Self {
        let mut table = Self::new(limits);
        table.next_index = next_index.max(1);
        for h in holds {
            table.next_index = table.next_index.max(h.index + 1);
            if let Some(deadline) = h.deadline {
                table.timers.insert((deadline, Timer::Expiry(h.index)));
            }
            let queue = table
                .keys
                .entry(h.key.clone())
                .or_insert_with(|| KeyQueue::new(h.limit));
            if let Some(v) = &h.value {
                queue.by_value.insert(v.clone(), h.index);
            }
            queue.entries.insert(
                h.index,
                Entry {
                    value: h.value,
                    ttl_ms: h.ttl_ms,
                    lock_delay_ms: h.lock_delay_ms,
                    queued_at: h.acquired_at,
                    hold: Some(Hold {
                        acquired_at: h.acquired_at,
                        deadline: h.deadline,
                    }),
                    waiters: Vec::new(),
                    heard: true,
                },
            );
            table.key_of_index.insert(h.index, h.key);
        }
        table.advance(now);
        table
    }

    /// The index the next new entry will get. Every index handed out so far
    /// is below it; a durable store keeps it (or a ceiling above it).
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// The earliest moment at which [`advance`](Self::advance) has work to
    /// do (an expiry or a waiter's timeout), if any.
    pub fn next_timer(&self) -> Option<UnixMillis> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Number of waiting or listening requests.
    pub fn waiter_count(&self) -> usize {
        self.waiters.len()
    }

    /// Counts of keys, entries and waiters.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            keys: self.keys.len() as u64,
            entries: self.key_of_index.len() as u64,
            waiters: self.waiters.len() as u64,
        }
    }

    /// Gives back the memory of maps that a burst grew and that are now
    /// mostly empty (hash maps never shrink by themselves). Shrinks a map
    /// only once it is four times larger than it needs, so a steady load
    /// never reallocates back and forth.
    pub fn trim(&mut self) {
        shrink_if_sparse(&mut self.waiters);
        shrink_if_sparse(&mut self.key_of_index);
        shrink_if_sparse(&mut self.delayed);
    }

    /// Every hold as it is stored once the output taken so far is: each
    /// holder of every key, and the holds that expired with a lock-delay
    /// still running. What a journal compacts its log into, so that no
    /// journal keeps a copy of the holds of its own.
    pub fn stored(&self) -> Vec<HeldRecord> {
        // About one holder a key (a lock's); not every entry, which would
        // count the waiters too.
        let mut holds = Vec::with_capacity(self.keys.len() + self.delayed.len());
        holds.extend(self.keys.iter().flat_map(|(key, q)| {
            // The holders are a prefix of the entries; each is read where
            // it lies, without looking its key up again.
            q.entries
                .iter()
                .map_while(move |(&index, e)| q.held_record(key, index, e))
        }));
        holds.extend(self.delayed.values().cloned());
        holds
    }

    /// Takes what was produced since the last call.
    pub fn take_output(&mut self) -> Output {
        std::mem::take(&mut self.out)
    }

    /// Moves time to `now` and fires every timer due by then, in order.
    pub fn advance(&mut self, now: UnixMillis) {
        self.now = self.now.max(now);
        while let Some(&(at, timer)) = self.timers.first() {
            if at > self.now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Expiry(index) => {
                    if let Some(key) = self.key_of_index.get(&index).cloned() {
                        self.remove_entry(&key, index, Removal::Expired, at);
                    }
                }
                Timer::DelayEnd(index) => self.end_delay(index, at),
                Timer::WaitTimeout(waiter) => self.time_out(waiter, at),
            }
        }
    }

    /// Joins `spec.key`'s queue, or joins the entry with the same value, or
    /// renews the hold if the value is the holder's. On success the request
    /// is a waiter until it is told it ended or failed, or is withdrawn.
    pub fn acquire(
        &mut self,
        spec: AcquireSpec,
        now: UnixMillis,
    ) -> Result<(WaiterId, Admission), TableError> {
        self.advance(now);
        let now = self.now;
        if self.waiters.len() >= self.limits.max_waiters {
            return Err(TableError::LimitReached(format!(
                "too many waiting requests (at most {})",
                self.limits.max_waiters
            )));
        }
        let limit = spec.limit.max(1);
        if let Some(q) = self.keys.get(&spec.key)
            && !q.entries.is_empty()
            && q.limit != limit
        {
            return Err(TableError::LimitMismatch {
                limit: q.limit,
                asked: limit,
            });
        }
        let existing = spec.value.as_ref().and_then(|v| {
            self.keys
                .get(&spec.key)
                .and_then(|q| q.by_value.get(v).copied())
        });
        if let Some(index) = existing {
            return self.join(spec, index, now);
        }
        let queue_len = self.keys.get(&spec.key).map_or(0, |q| q.entries.len());
        let delayed_until = self.keys.get(&spec.key).and_then(|q| q.delayed_until);
        // Every entry holds unless the key is full or delayed (see KeyQueue).
        let free = delayed_until.is_none() && queue_len < limit as usize;
        if !free && spec.timeout_ms == Some(0) {
            return Err(self.not_now(&spec.key));
        }
        if queue_len >= self.limits.max_entries_per_key {
            return Err(TableError::LimitReached(format!(
                "key has too many entries (at most {})",
                self.limits.max_entries_per_key
            )));
        }
        if self.key_of_index.len() >= self.limits.max_entries {
            return Err(TableError::LimitReached(format!(
                "too many entries (at most {})",
                self.limits.max_entries
            )));
        }

        let index = self.next_index;
        self.next_index += 1;
        let waiter = self.new_waiter(&spec.key, index);
        let queue = self
            .keys
            .entry(spec.key.clone())
            .or_insert_with(|| KeyQueue::new(limit));
        // A key kept only by a lock-delay takes the limit of its new entry.
        if queue.entries.is_empty() {
            queue.limit = limit;
        }
        if let Some(v) = &spec.value {
            queue.by_value.insert(v.clone(), index);
        }
        queue.entries.insert(
            index,
            Entry {
                value: spec.value.clone(),
                ttl_ms: spec.ttl_ms,
                lock_delay_ms: spec.lock_delay_ms,
                queued_at: now,
                hold: None,
                waiters: vec![waiter],
                heard: false,
            },
        );
        self.key_of_index.insert(index, spec.key.clone());

        if free {
            // Free: this entry holds at once. Its waiter is granted in the
            // reply, not through a notice.
            let grant = self.start_hold(&spec.key, index, now);
            self.emit(&spec.key, EventKind::Acquired, index, now);
            Ok((waiter, Admission::Granted(grant)))
        } else {
            if let Some(t) = spec.timeout_ms {
                self.set_wait_timeout(waiter, now.saturating_add(t));
            }
            self.emit(&spec.key, EventKind::Queued, index, now);
            Ok((
                waiter,
                Admission::Queued {
                    index,
                    position: self.position(&spec.key, index),
                    holder: self.holder_view(&spec.key),
                },
            ))
        }
    }

    /// Why a `timeout = 0` request cannot have the key now.
    fn not_now(&self, key: &str) -> TableError {
        match self.keys.get(key).and_then(|q| q.delayed_until) {
            Some(until) => TableError::Delayed { until },
            None => TableError::NotImmediatelyAvailable {
                holder_index: self.head_index(key).unwrap_or_default(),
            },
        }
    }

    /// How many entries must leave before the queued entry `index` holds.
    fn position(&self, key: &str, index: u64) -> u64 {
        let Some(q) = self.keys.get(key) else {
            return 0;
        };
        let ahead = q.entries.range(..index).count() as u64;
        (ahead + 1).saturating_sub(u64::from(q.limit)).max(1)
    }

    /// A request with the same value as entry `index`: renew if it holds,
    /// otherwise wait on it too.
    fn join(
        &mut self,
        spec: AcquireSpec,
        index: u64,
        now: UnixMillis,
    ) -> Result<(WaiterId, Admission), TableError> {
        let is_holder = self
            .keys
            .get(&spec.key)
            .and_then(|q| q.entries.get(&index))
            .is_some_and(|e| e.hold.is_some());
        if !is_holder && spec.timeout_ms == Some(0) {
            return Err(self.not_now(&spec.key));
        }
        let waiter = self.new_waiter(&spec.key, index);
        if let Some(e) = self.entry_mut(&spec.key, index) {
            e.waiters.push(waiter);
        }
        if is_holder {
            let renewal = self.renew_entry(&spec.key, index, spec.ttl_ms, now);
            let grant = Grant {
                index,
                ttl_ms: spec.ttl_ms,
                deadline: renewal.deadline,
            };
            return Ok((waiter, Admission::Granted(grant)));
        }
        if let Some(t) = spec.timeout_ms {
            self.set_wait_timeout(waiter, now.saturating_add(t));
        }
        // The newest request's ttl is the one the entry will be held with,
        // as a renew of a queued entry would set it.
        let _ = self.renew_entry(&spec.key, index, spec.ttl_ms, now);
        let position = self.position(&spec.key, index);
        Ok((
            waiter,
            Admission::Queued {
                index,
                position,
                holder: self.holder_view(&spec.key),
            },
        ))
    }

    /// The request went away (disconnect, cancelled stream, dropped
    /// future). Before acquisition its entry dies with its last waiter.
    /// After, a hold somebody heard of lives on by its ttl and nothing
    /// changes but that nobody listens; a hold nobody heard of
    /// ([`Departure::Uninformed`] from every waiter) dies with its last
    /// waiter and the next entry holds. Unknown waiters are ignored.
    pub fn withdraw(&mut self, waiter: WaiterId, departure: Departure, now: UnixMillis) {
        self.advance(now);
        let now = self.now;
        let Some(w) = self.waiters.remove(&waiter) else {
            return;
        };
        if let Some(at) = w.timeout_at {
            self.timers.remove(&(at, Timer::WaitTimeout(waiter)));
        }
        if departure == Departure::Informed
            && let Some(e) = self.entry_mut(&w.key, w.index)
            && e.hold.is_some()
        {
            e.heard = true;
        }
        self.detach(&w.key, w.index, waiter, now);
    }

    /// Renews the entry named by `target`: a holder's deadline becomes
    /// `now + ttl_ms` (never, for 0); a queued entry will be held with
    /// `ttl_ms`.
    pub fn renew(
        &mut self,
        key: &str,
        target: &Target,
        ttl_ms: u64,
        now: UnixMillis,
    ) -> Result<Renewal, TableError> {
        self.advance(now);
        let index = self.find(key, target)?;
        // Whoever renews it knows of it: a hold renewed is a hold heard of.
        if let Some(e) = self.entry_mut(key, index) {
            e.heard = true;
        }
        Ok(self.renew_entry(key, index, ttl_ms, self.now))
    }

    /// Removes the entry named by `target`. A holder's listeners hear it
    /// ended and the next entry holds at once; a queued entry's waiters fail.
    pub fn release(
        &mut self,
        key: &str,
        target: &Target,
        now: UnixMillis,
    ) -> Result<Release, TableError> {
        self.advance(now);
        let index = self.find(key, target)?;
        let was_holder = self
            .keys
            .get(key)
            .and_then(|q| q.entries.get(&index))
            .is_some_and(|e| e.hold.is_some());
        self.remove_entry(key, index, Removal::Released, self.now);
        Ok(Release { index, was_holder })
    }

    /// The key's holders and queue at `now`. A key never used reads as
    /// free.
    pub fn get(&mut self, key: &str, now: UnixMillis) -> KeyView {
        self.advance(now);
        let Some(queue) = self.keys.get(key) else {
            return KeyView::default();
        };
        let holders = self.holder_views(key);
        KeyView {
            holder: holders.first().cloned(),
            holders,
            limit: queue.limit,
            delayed_until: queue.delayed_until,
            queue: queue
                .entries
                .iter()
                .filter(|(_, e)| e.hold.is_none())
                .map(|(&index, e)| QueuedView {
                    index,
                    value: e.value.clone(),
                    ttl_ms: e.ttl_ms,
                    queued_at: e.queued_at,
                    waiters: e.waiters.len() as u64,
                })
                .collect(),
        }
    }

    /// Up to `limit` keys in use that start with `prefix` and sort after
    /// `after`, in key order.
    pub fn list(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now: UnixMillis,
    ) -> Vec<KeySummary> {
        use std::ops::Bound;
        self.advance(now);
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        self.keys
            .range::<String, _>((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, q)| KeySummary {
                key: k.clone(),
                holder: self.holder_view(k),
                queue_length: (q.entries.len() - q.held()) as u64,
                delayed_until: q.delayed_until,
            })
            .collect()
    }

    /// The key's oldest holder, without moving time.
    pub fn holder_view(&self, key: &str) -> Option<HolderView> {
        let (&index, e) = self.keys.get(key)?.entries.first_key_value()?;
        view(index, e)
    }

    /// Every holder of the key in grant order, without moving time.
    pub fn holder_views(&self, key: &str) -> Vec<HolderView> {
        self.keys.get(key).map_or_else(Vec::new, |q| {
            q.entries.iter().map_while(|(&i, e)| view(i, e)).collect()
        })
    }

    /// A hold that expired with a lock-delay reaches the end of it: its
    /// stored record goes, and when no later delay runs on the key the
    /// queue fills up to the limit, granted at the current time.
    fn end_delay(&mut self, index: u64, at: UnixMillis) {
        let Some(HeldRecord { key, .. }) = self.delayed.remove(&index) else {
            return;
        };
        self.out.records.push(Record::Removed { index });
        let Some(queue) = self.keys.get_mut(&key) else {
            return;
        };
        if queue.delayed_until.is_some_and(|until| until <= at) {
            queue.delayed_until = None;
            if queue.entries.is_empty() {
                self.keys.remove(&key);
            }
            // Watchers learn that the key may be granted again, then of the
            // grants that follow.
            let granted_at = self.now.max(at);
            let grants = self.promote(&key, granted_at);
            self.push_event(&key, EventKind::DelayEnded, index, None, 0, at);
            for (next, grant) in grants {
                self.announce(&key, next, grant, granted_at);
            }
        }
    }

    /// Makes queued entries holders while the key has room and no delay
    /// runs; returns their grants for the caller to announce.
    fn promote(&mut self, key: &str, granted_at: UnixMillis) -> Vec<(u64, Grant)> {
        let next: Vec<u64> = match self.keys.get(key) {
            Some(q) if q.delayed_until.is_none() => {
                let held = q.held();
                let room = (q.limit as usize).saturating_sub(held);
                q.entries.keys().skip(held).take(room).copied().collect()
            }
            _ => Vec::new(),
        };
        next.into_iter()
            .map(|i| (i, self.start_hold(key, i, granted_at)))
            .collect()
    }

    /// Tells a new holder's waiters and the watchers of its grant.
    fn announce(&mut self, key: &str, index: u64, grant: Grant, at: UnixMillis) {
        let waiters = self
            .keys
            .get(key)
            .and_then(|q| q.entries.get(&index))
            .map(|e| e.waiters.clone())
            .unwrap_or_default();
        for w in waiters {
            self.out.notices.push((w, Notice::Granted(grant)));
        }
        self.emit(key, EventKind::Acquired, index, at);
    }

    /// The stored form of the entry `index` of `key` as it holds now.
    fn held_record(&self, key: &str, index: u64) -> Option<HeldRecord> {
        let q = self.keys.get(key)?;
        q.held_record(key, index, q.entries.get(&index)?)
    }

    fn head_index(&self, key: &str) -> Option<u64> {
        self.keys
            .get(key)
            .and_then(|q| q.entries.first_key_value())
            .map(|(&i, _)| i)
    }

    fn entry_mut(&mut self, key: &str, index: u64) -> Option<&mut Entry> {
        self.keys.get_mut(key)?.entries.get_mut(&index)
    }

    fn find(&self, key: &str, target: &Target) -> Result<u64, TableError> {
        let queue = self.keys.get(key);
        match target {
            Target::Index(i) => queue
                .filter(|q| q.entries.contains_key(i))
                .map(|_| *i)
                .ok_or_else(|| TableError::NotFound(format!("index {i}"))),
            Target::Value(v) => queue
                .and_then(|q| q.by_value.get(v).copied())
                .ok_or_else(|| TableError::NotFound(format!("value {v:?}"))),
        }
    }

    fn new_waiter(&mut self, key: &str, index: u64) -> WaiterId {
        let id = WaiterId(self.next_waiter);
        self.next_waiter += 1;
        self.waiters.insert(
            id,
            Waiter {
                key: key.to_owned(),
                index,
                timeout_at: None,
            },
        );
        id
    }

    fn set_wait_timeout(&mut self, waiter: WaiterId, at: UnixMillis) {
        if let Some(w) = self.waiters.get_mut(&waiter) {
            w.timeout_at = Some(at);
            self.timers.insert((at, Timer::WaitTimeout(waiter)));
        }
    }

    fn time_out(&mut self, waiter: WaiterId, at: UnixMillis) {
        let Some(w) = self.waiters.remove(&waiter) else {
            return;
        };
        self.out.notices.push((
            waiter,
            Notice::Failed {
                index: w.index,
                reason: FailReason::TimedOut,
            },
        ));
        self.detach(&w.key, w.index, waiter, at);
    }

    /// Takes `waiter` off its entry; a queued entry, or a hold nobody heard
    /// of, left with no waiter dies.
    fn detach(&mut self, key: &str, index: u64, waiter: WaiterId, now: UnixMillis) {
        let Some(e) = self.entry_mut(key, index) else {
            return;
        };
        e.waiters.retain(|&w| w != waiter);
        if e.waiters.is_empty() && (e.hold.is_none() || !e.heard) {
            self.remove_entry(key, index, Removal::Cancelled, now);
        }
    }

    fn renew_entry(&mut self, key: &str, index: u64, ttl_ms: u64, now: UnixMillis) -> Renewal {
        let Some(e) = self.entry_mut(key, index) else {
            return Renewal {
                index,
                held: false,
                deadline: None,
            };
        };
        e.ttl_ms = ttl_ms;
        let (old, new, acquired_at) = match e.hold.as_mut() {
            Some(hold) => {
                let old = hold.deadline;
                hold.deadline = deadline_after(now, ttl_ms);
                (old, hold.deadline, Some(hold.acquired_at))
            }
            None => (None, None, None),
        };
        if let Some(old) = old {
            self.timers.remove(&(old, Timer::Expiry(index)));
        }
        if let Some(new) = new {
            self.timers.insert((new, Timer::Expiry(index)));
        }
        if let Some(record) = self.held_record(key, index) {
            self.out.records.push(Record::Held(record));
        }
        self.emit(key, EventKind::Renewed, index, now);
        Renewal {
            index,
            held: acquired_at.is_some(),
            deadline: new,
        }
    }

    /// Makes the head entry `index` the holder and returns its grant. The
    /// caller tells its waiters.
    fn start_hold(&mut self, key: &str, index: u64, now: UnixMillis) -> Grant {
        let Some(e) = self.entry_mut(key, index) else {
            return Grant {
                index,
                ttl_ms: 0,
                deadline: None,
            };
        };
        let deadline = deadline_after(now, e.ttl_ms);
        e.hold = Some(Hold {
            acquired_at: now,
            deadline,
        });
        let grant = Grant {
            index,
            ttl_ms: e.ttl_ms,
            deadline,
        };
        let waiters = e.waiters.clone();
        if let Some(d) = deadline {
            self.timers.insert((d, Timer::Expiry(index)));
        }
        // Waiting is over for everyone on this entry: their timeouts no
        // longer apply.
        for w in waiters {
            if let Some(state) = self.waiters.get_mut(&w)
                && let Some(at) = state.timeout_at.take()
            {
                self.timers.remove(&(at, Timer::WaitTimeout(w)));
            }
        }
        if let Some(record) = self.held_record(key, index) {
            self.out.records.push(Record::Held(record));
        }
        grant
    }

    fn remove_entry(&mut self, key: &str, index: u64, removal: Removal, now: UnixMillis) {
        let Some(queue) = self.keys.get_mut(key) else {
            return;
        };
        let Some(entry) = queue.entries.remove(&index) else {
            return;
        };
        let limit = queue.limit;
        if let Some(v) = &entry.value {
            queue.by_value.remove(v);
        }
        // A hold that expires with a lock-delay keeps the key from everyone
        // else until that long after its deadline (not after the moment the
        // timer ran, so a late timer does not lengthen it).
        let delay_until = match (&entry.hold, removal) {
            (
                Some(Hold {
                    deadline: Some(d), ..
                }),
                Removal::Expired,
            ) if entry.lock_delay_ms > 0 => Some(d.saturating_add(entry.lock_delay_ms)),
            _ => None,
        };
        if let Some(until) = delay_until {
            queue.delayed_until = Some(queue.delayed_until.map_or(until, |u| u.max(until)));
        }
        if queue.entries.is_empty() && queue.delayed_until.is_none() {
            self.keys.remove(key);
        }
        self.key_of_index.remove(&index);

        // Tell the entry's own waiters.
        for w in &entry.waiters {
            if let Some(state) = self.waiters.remove(w)
                && let Some(at) = state.timeout_at
            {
                self.timers.remove(&(at, Timer::WaitTimeout(*w)));
            }
            let notice = match (&entry.hold, removal) {
                (Some(_), Removal::Expired) => Notice::Ended {
                    index,
                    reason: EndReason::Expired,
                },
                (Some(_), _) => Notice::Ended {
                    index,
                    reason: EndReason::Released,
                },
                (None, _) => Notice::Failed {
                    index,
                    reason: FailReason::Released,
                },
            };
            self.out.notices.push((*w, notice));
        }
        if let Some(hold) = &entry.hold {
            if let Some(d) = hold.deadline {
                self.timers.remove(&(d, Timer::Expiry(index)));
            }
            match delay_until {
                // Stored until the delay ends, so a restart keeps it.
                Some(until) => {
                    self.delayed.insert(
                        index,
                        HeldRecord {
                            key: key.to_owned(),
                            index,
                            value: entry.value.clone(),
                            ttl_ms: entry.ttl_ms,
                            acquired_at: hold.acquired_at,
                            deadline: hold.deadline,
                            limit,
                            lock_delay_ms: entry.lock_delay_ms,
                        },
                    );
                    self.timers.insert((until, Timer::DelayEnd(index)));
                }
                None => self.out.records.push(Record::Removed { index }),
            }
        }

        // Hand over at once, then report both steps with the new holders.
        // A new hold counts from now, the moment it is granted, not from
        // `now` of the removal (an expiry's deadline): a timer that fires
        // late must not shorten the next hold.
        let granted_at = self.now.max(now);
        let grants = if entry.hold.is_some() || removal == Removal::Cancelled {
            self.promote(key, granted_at)
        } else {
            Vec::new()
        };
        let kind = match removal {
            Removal::Released => EventKind::Released,
            Removal::Expired => EventKind::Expired,
            Removal::Cancelled => EventKind::Cancelled,
        };
        self.push_event(key, kind, index, entry.value, entry.ttl_ms, now);
        for (next, grant) in grants {
            self.announce(key, next, grant, granted_at);
        }
    }

    fn emit(&mut self, key: &str, kind: EventKind, index: u64, now: UnixMillis) {
        let (value, ttl_ms) = self
            .keys
            .get(key)
            .and_then(|q| q.entries.get(&index))
            .map(|e| (e.value.clone(), e.ttl_ms))
            .unwrap_or((None, 0));
        self.push_event(key, kind, index, value, ttl_ms, now);
    }

    fn push_event(
        &mut self,
        key: &str,
        kind: EventKind,
        index: u64,
        value: Option<String>,
        ttl_ms: u64,
        at: UnixMillis,
    ) {
        let (queue_length, delayed_until) = self.keys.get(key).map_or((0, None), |q| {
            ((q.entries.len() - q.held()) as u64, q.delayed_until)
        });
        self.out.events.push(LockEvent {
            key: key.to_owned(),
            kind,
            index,
            value,
            ttl_ms,
            at,
            holder: self.holder_view(key),
            queue_length,
            delayed_until,
        });
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Removal {
    Released,
    Expired,
    Cancelled,
}

fn view(index: u64, e: &Entry) -> Option<HolderView> {
    let hold = e.hold.as_ref()?;
    Some(HolderView {
        index,
        value: e.value.clone(),
        ttl_ms: e.ttl_ms,
        acquired_at: hold.acquired_at,
        deadline: hold.deadline,
        lock_delay_ms: e.lock_delay_ms,
    })
}

fn deadline_after(now: UnixMillis, ttl_ms: u64) -> Option<UnixMillis> {
    (ttl_ms > 0).then(|| now.saturating_add(ttl_ms))
}

/// Shrinks `map` when it has more than four times the room it needs (and
/// more than a trivial amount), to twice what it needs.
pub fn shrink_if_sparse<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 1024 && map.capacity() / 4 > map.len() {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_gives_back_what_a_burst_of_waiters_grew() {
        let mut t = LockTable::new(TableLimits::default());
        let waiters: Vec<WaiterId> = (0..10_000)
            .map(|_| t.acquire(spec("k", None, 0, None), 1).expect("acquire").0)
            .collect();
        let grown = t.waiters.capacity();
        t.trim();
        assert_eq!(t.waiters.capacity(), grown, "a busy table keeps its room");
        for w in waiters {
            t.withdraw(w, Departure::Uninformed, 2);
        }
        t.trim();
        assert!(
            t.waiters.capacity() < grown / 4,
            "{} of {grown}",
            t.waiters.capacity()
        );
        assert!(t.key_of_index.capacity() < grown / 4);
    }

    fn spec(key: &str, value: Option<&str>, ttl_ms: u64, timeout_ms: Option<u64>) -> AcquireSpec {
        AcquireSpec {
            key: key.into(),
            value: value.map(Into::into),
            ttl_ms,
            timeout_ms,
            limit: 1,
            lock_delay_ms: 0,
        }
    }

    fn table() -> LockTable {
        LockTable::new(TableLimits::default())
    }

    #[test]
    fn free_lock_is_granted_and_second_request_queues() {
        let mut t = table();
        let (_, a) = t.acquire(spec("k", None, 1000, None), 10).unwrap();
        assert_eq!(
            a,
            Admission::Granted(Grant {
                index: 1,
                ttl_ms: 1000,
                deadline: Some(1010)
            })
        );
        let (_, b) = t.acquire(spec("k", None, 1000, None), 20).unwrap();
        assert!(matches!(
            b,
            Admission::Queued {
                index: 2,
                position: 1,
                ..
            }
        ));
    }

    #[test]
    fn expiry_hands_over_exactly_at_the_deadline() {
        let mut t = table();
        t.acquire(spec("k", None, 100, None), 0).unwrap();
        let (w2, _) = t.acquire(spec("k", None, 100, None), 1).unwrap();
        t.take_output();
        t.advance(99);
        assert_eq!(t.holder_view("k").unwrap().index, 1);
        t.advance(100);
        assert_eq!(t.holder_view("k").unwrap().index, 2);
        let out = t.take_output();
        assert!(out.notices.contains(&(
            w2,
            Notice::Granted(Grant {
                index: 2,
                ttl_ms: 100,
                deadline: Some(200)
            })
        )));
    }

    #[test]
    fn a_late_expiry_hands_over_with_a_full_ttl() {
        let mut t = table();
        t.acquire(spec("k", None, 100, None), 0).unwrap();
        let (w2, _) = t.acquire(spec("k", None, 100, None), 1).unwrap();
        t.take_output();
        // The timer fires 40 ms after the deadline (a busy core, an fsync).
        t.advance(140);
        let h = t.holder_view("k").unwrap();
        assert_eq!((h.index, h.acquired_at, h.deadline), (2, 140, Some(240)));
        let out = t.take_output();
        assert!(out.notices.contains(&(
            w2,
            Notice::Granted(Grant {
                index: 2,
                ttl_ms: 100,
                deadline: Some(240)
            })
        )));
        // The expiry itself is reported at the deadline, the grant at now.
        let at: Vec<(EventKind, u64)> = out.events.iter().map(|e| (e.kind, e.at)).collect();
        assert_eq!(
            at,
            vec![(EventKind::Expired, 100), (EventKind::Acquired, 140)]
        );
    }

    #[test]
    fn an_unheard_grant_dies_with_its_last_waiter() {
        let mut t = table();
        let (w1, _) = t.acquire(spec("k", None, 0, None), 0).unwrap();
        let (w2, _) = t.acquire(spec("k", None, 0, None), 0).unwrap();
        t.take_output();
        // w1's reply never reached its caller: the hold is undone and w2,
        // which is still waiting, holds.
        t.withdraw(w1, Departure::Uninformed, 5);
        assert_eq!(t.holder_view("k").unwrap().index, 2);
        let out = t.take_output();
        assert!(out.records.contains(&Record::Removed { index: 1 }));
        assert!(out.notices.contains(&(
            w2,
            Notice::Granted(Grant {
                index: 2,
                ttl_ms: 0,
                deadline: None
            })
        )));
        // w2 heard it: the hold outlives its waiter.
        t.withdraw(w2, Departure::Informed, 6);
        assert_eq!(t.holder_view("k").unwrap().index, 2);
    }

    #[test]
    fn a_grant_heard_by_one_joined_waiter_stands() {
        let mut t = table();
        let (a, _) = t.acquire(spec("k", Some("v"), 0, None), 0).unwrap();
        let (b, _) = t.acquire(spec("k", Some("v"), 0, None), 0).unwrap();
        t.withdraw(a, Departure::Informed, 1);
        t.withdraw(b, Departure::Uninformed, 2);
        assert_eq!(t.holder_view("k").unwrap().index, 1);
    }

    #[test]
    fn a_renewed_hold_counts_as_heard() {
        let mut t = table();
        let (a, _) = t.acquire(spec("k", None, 0, None), 0).unwrap();
        t.renew("k", &Target::Index(1), 1000, 1).unwrap();
        t.withdraw(a, Departure::Uninformed, 2);
        assert_eq!(t.holder_view("k").unwrap().index, 1);
    }

    #[test]
    fn released_queued_entry_fails_its_waiters() {
        let mut t = table();
        t.acquire(spec("k", None, 0, None), 0).unwrap();
        let (w, _) = t.acquire(spec("k", Some("v"), 0, None), 0).unwrap();
        let r = t.release("k", &Target::Value("v".into()), 5).unwrap();
        assert!(!r.was_holder);
        let out = t.take_output();
        assert!(out.notices.contains(&(
            w,
            Notice::Failed {
                index: 2,
                reason: FailReason::Released
            }
        )));
        assert_eq!(t.holder_view("k").unwrap().index, 1);
    }

    #[test]
    fn restore_expires_holds_whose_deadline_passed() {
        let held = |index, deadline| HeldRecord {
            key: format!("k{index}"),
            index,
            value: None,
            ttl_ms: 10,
            acquired_at: 0,
            deadline,
            limit: 1,
            lock_delay_ms: 0,
        };
        let mut t = LockTable::restore(
            TableLimits::default(),
            5,
            [held(3, Some(50)), held(4, Some(500)), held(7, None)],
            100,
        );
        assert_eq!(t.next_index(), 8);
        assert!(t.holder_view("k3").is_none());
        assert!(t.holder_view("k4").is_some());
        assert!(t.holder_view("k7").is_some());
        let out = t.take_output();
        assert_eq!(out.records, vec![Record::Removed { index: 3 }]);
    }
}

#[cfg(test)]
mod semaphore_and_delay_tests {
    use super::*;

    fn spec(key: &str, value: Option<&str>, ttl_ms: u64, limit: u32, delay: u64) -> AcquireSpec {
        AcquireSpec {
            key: key.into(),
            value: value.map(Into::into),
            ttl_ms,
            timeout_ms: None,
            limit,
            lock_delay_ms: delay,
        }
    }

    fn holders(t: &mut LockTable, key: &str, now: UnixMillis) -> Vec<u64> {
        t.get(key, now).holders.iter().map(|h| h.index).collect()
    }

    #[test]
    fn the_first_limit_entries_hold_and_the_next_waits() {
        let mut t = LockTable::new(TableLimits::default());
        for _ in 0..3 {
            let (_, a) = t.acquire(spec("s", None, 0, 3, 0), 0).unwrap();
            assert!(matches!(a, Admission::Granted(_)));
        }
        let (w4, a) = t.acquire(spec("s", None, 0, 3, 0), 0).unwrap();
        assert!(matches!(
            a,
            Admission::Queued {
                index: 4,
                position: 1,
                ..
            }
        ));
        let (_, a) = t.acquire(spec("s", None, 0, 3, 0), 0).unwrap();
        assert!(matches!(a, Admission::Queued { position: 2, .. }));
        assert_eq!(holders(&mut t, "s", 0), vec![1, 2, 3]);
        let view = t.get("s", 0);
        assert_eq!((view.limit, view.holder.map(|h| h.index)), (3, Some(1)));
        t.take_output();
        // The middle holder leaves: the next queued entry holds at once.
        let r = t.release("s", &Target::Index(2), 1).unwrap();
        assert!(r.was_holder);
        assert_eq!(holders(&mut t, "s", 1), vec![1, 3, 4]);
        let out = t.take_output();
        assert!(
            out.notices
                .iter()
                .any(|(w, n)| *w == w4 && matches!(n, Notice::Granted(Grant { index: 4, .. })))
        );
    }

    #[test]
    fn another_limit_on_a_busy_key_is_refused_and_an_empty_key_takes_a_new_one() {
        let mut t = LockTable::new(TableLimits::default());
        t.acquire(spec("s", None, 0, 2, 0), 0).unwrap();
        let e = t.acquire(spec("s", None, 0, 1, 0), 0).unwrap_err();
        assert_eq!(e, TableError::LimitMismatch { limit: 2, asked: 1 });
        assert!(e.to_string().contains("limit 2"));
        // 0 is a lock, the same as 1.
        t.acquire(spec("l", None, 0, 0, 0), 0).unwrap();
        t.acquire(spec("l", None, 0, 1, 0), 0).unwrap();
        t.release("s", &Target::Index(1), 1).unwrap();
        let (_, a) = t.acquire(spec("s", None, 0, 5, 0), 2).unwrap();
        assert!(matches!(a, Admission::Granted(_)));
        assert_eq!(t.get("s", 2).limit, 5);
    }

    #[test]
    fn a_value_join_on_a_semaphore_renews_a_holder_and_waits_on_a_queued_entry() {
        let mut t = LockTable::new(TableLimits::default());
        t.acquire(spec("s", Some("a"), 100, 2, 0), 0).unwrap();
        t.acquire(spec("s", Some("b"), 100, 2, 0), 0).unwrap();
        t.acquire(spec("s", Some("c"), 100, 2, 0), 0).unwrap();
        let (_, a) = t.acquire(spec("s", Some("b"), 500, 2, 0), 10).unwrap();
        assert_eq!(
            a,
            Admission::Granted(Grant {
                index: 2,
                ttl_ms: 500,
                deadline: Some(510)
            })
        );
        let (_, a) = t.acquire(spec("s", Some("c"), 100, 2, 0), 10).unwrap();
        assert!(matches!(
            a,
            Admission::Queued {
                index: 3,
                position: 1,
                ..
            }
        ));
    }

    #[test]
    fn an_expiry_with_a_lock_delay_grants_nobody_until_deadline_plus_delay() {
        let mut t = LockTable::new(TableLimits::default());
        t.acquire(spec("k", None, 100, 1, 50), 0).unwrap();
        let (w, _) = t.acquire(spec("k", None, 100, 1, 0), 1).unwrap();
        t.take_output();
        // The timer runs 20 ms late: the delay still counts from the
        // deadline.
        t.advance(120);
        assert!(holders(&mut t, "k", 120).is_empty());
        assert_eq!(t.get("k", 120).delayed_until, Some(150));
        let out = t.take_output();
        // Still stored: a restart must see the delay.
        assert!(out.records.is_empty());
        let expired = out
            .events
            .iter()
            .find(|e| e.kind == EventKind::Expired)
            .unwrap();
        assert_eq!(expired.delayed_until, Some(150));
        let e = t
            .acquire(
                AcquireSpec {
                    timeout_ms: Some(0),
                    ..spec("k", None, 0, 1, 0)
                },
                149,
            )
            .unwrap_err();
        assert_eq!(e, TableError::Delayed { until: 150 });
        t.advance(150);
        assert_eq!(holders(&mut t, "k", 150), vec![2]);
        let out = t.take_output();
        assert!(out.records.contains(&Record::Removed { index: 1 }));
        let kinds: Vec<(EventKind, u64, u64)> =
            out.events.iter().map(|e| (e.kind, e.index, e.at)).collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::DelayEnded, 1, 150),
                (EventKind::Acquired, 2, 150)
            ]
        );
        assert!(out.notices.contains(&(
            w,
            Notice::Granted(Grant {
                index: 2,
                ttl_ms: 100,
                deadline: Some(250)
            })
        )));
    }

    #[test]
    fn a_release_ends_a_hold_without_delay() {
        let mut t = LockTable::new(TableLimits::default());
        t.acquire(spec("k", None, 100, 1, 5000), 0).unwrap();
        t.acquire(spec("k", None, 100, 1, 0), 0).unwrap();
        t.release("k", &Target::Index(1), 10).unwrap();
        assert_eq!(holders(&mut t, "k", 10), vec![2]);
        assert_eq!(t.get("k", 10).delayed_until, None);
    }

    #[test]
    fn a_delay_on_a_semaphore_stops_new_grants_but_not_other_holders() {
        let mut t = LockTable::new(TableLimits::default());
        t.acquire(spec("s", None, 100, 2, 1000), 0).unwrap();
        t.acquire(spec("s", None, 0, 2, 0), 0).unwrap();
        t.acquire(spec("s", None, 0, 2, 0), 0).unwrap();
        t.advance(100);
        assert_eq!(holders(&mut t, "s", 100), vec![2]);
        assert_eq!(holders(&mut t, "s", 1099), vec![2]);
        assert_eq!(holders(&mut t, "s", 1100), vec![2, 3]);
    }

    #[test]
    fn a_delay_survives_a_restore_from_the_stored_records() {
        let mut t = LockTable::new(TableLimits::default());
        t.acquire(spec("k", Some("x"), 100, 1, 500), 0).unwrap();
        let mut stored = std::collections::BTreeMap::new();
        let mut apply = |out: Output| {
            for r in out.records {
                r.apply_to(&mut stored);
            }
        };
        apply(t.take_output());
        t.advance(200);
        apply(t.take_output());
        // A restart in the delay: the stored hold brings the delay back.
        let mut r = LockTable::restore(TableLimits::default(), 2, stored.values().cloned(), 300);
        assert_eq!(r.get("k", 300).delayed_until, Some(600));
        let (_, a) = r.acquire(spec("k", None, 0, 1, 0), 300).unwrap();
        assert!(matches!(a, Admission::Queued { .. }));
        r.advance(600);
        assert_eq!(holders(&mut r, "k", 600), vec![2]);
        // A restart after the delay: nothing holds, the record goes.
        let mut late = LockTable::restore(TableLimits::default(), 2, stored.values().cloned(), 700);
        assert_eq!(late.get("k", 700), KeyView::default());
        assert_eq!(
            late.take_output().records,
            vec![Record::Removed { index: 1 }]
        );
    }

    #[test]
    fn a_restored_semaphore_keeps_its_limit() {
        let held = |index| HeldRecord {
            key: "s".into(),
            index,
            value: None,
            ttl_ms: 0,
            acquired_at: 0,
            deadline: None,
            limit: 3,
            lock_delay_ms: 0,
        };
        let mut t = LockTable::restore(TableLimits::default(), 1, [held(1), held(2)], 10);
        let (_, a) = t.acquire(spec("s", None, 0, 3, 0), 10).unwrap();
        assert!(matches!(a, Admission::Granted(Grant { index: 3, .. })));
        assert!(matches!(
            t.acquire(spec("s", None, 0, 1, 0), 10),
            Err(TableError::LimitMismatch { limit: 3, .. })
        ));
    }
}
