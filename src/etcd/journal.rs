//! The primary's journal in etcd: the embedded engine's [`Journal`], so
//! that the one engine that runs the contract (the same table, the same
//! driver) can keep its state in a replicated log instead of a local file.
//!
//! Layout under `--etcd-prefix` (`P`):
//!
//! - `P journal/log/<seq>`: one committed batch: the holds it created or
//!   renewed, the indexes it removed, and the index ceiling. Written in one
//!   transaction guarded by a compare on the primary's election key, so a
//!   deposed primary can never write: that is what makes a batch durable
//!   and fenced at once. A batch too large for one etcd request is written
//!   as parts (`P journal/log/<seq>/<part>`) first, then its entry, which
//!   names how many parts it has: a batch without its entry never counts.
//! - `P journal/snap/<gen>/<chunk>` and `P journal/head`: a compacted copy
//!   of every hold (chunks, each well below etcd's request size), and the
//!   head naming the generation and the last batch it covers. Every
//!   [`COMPACT_EVERY`] batches the primary writes a new generation and, in
//!   the same guarded transaction as the new head, deletes the batches and
//!   the generations it replaces, so the log stays short however long the
//!   primary runs.
//!
//! Up to `--etcd-journal-depth` batches are in flight at once: batch N+1
//! is sent while N is still being replicated, so etcd can fsync both in
//! one go. Each commit resolves only once it and every batch before it are
//! in, and batches count only in order: a batch that landed while the one
//! before it failed (the primary stops on that failure) is after a gap,
//! and a new primary deletes it unread.
//!
//! A new primary restores from the head's generation and the batches after
//! it. Only holds and the index ceiling are stored, as in the redb journal:
//! queued requests die with their connections.
//!
//! Why not one etcd key per hold: a batch can hold thousands of records and
//! etcd caps a transaction at `--max-txn-ops` (128 by default) operations;
//! a log entry is one operation whatever the batch size.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use futures::{FutureExt, future::Shared};
use serde::{Deserialize, Serialize};

use super::{
    endpoints::{Call, Endpoints},
    error::EtcdError,
};
use crate::store::{Commit, HeldRecord, Journal, Record, Snapshot, StoreError};

/// Batches between two compactions.
pub const COMPACT_EVERY: u64 = 1024;
/// The largest value written in one request; etcd refuses requests over
/// 1.5 MiB by default (`--max-request-bytes`).
pub const MAX_PART_BYTES: usize = 1024 * 1024;
/// Operations in one transaction, at most: etcd's default
/// `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

/// The write guard: the primary's election key and the create revision it
/// had when this process won. Another primary's key has another revision.
#[derive(Clone, Debug)]
pub struct Fence {
    /// The election key.
    pub key: String,
    /// Its create revision when this process won.
    pub create_revision: i64,
}

impl Fence {
    fn compare(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.create_revision)
    }
}

/// Where the journal's keys live.
#[derive(Clone, Debug)]
struct Keys {
    log: String,
    snap: String,
    head: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            log: format!("{prefix}journal/log/"),
            snap: format!("{prefix}journal/snap/"),
            head: format!("{prefix}journal/head"),
        }
    }

    fn entry(&self, seq: u64) -> String {
        format!("{}{seq:020}", self.log)
    }

    fn part(&self, seq: u64, part: usize) -> String {
        format!("{}{seq:020}/{part:06}", self.log)
    }

    fn generation(&self, generation: u64) -> String {
        format!("{}{generation:020}/", self.snap)
    }
}

/// A hold as the journal stores it (short names: thousands go in a batch).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredHold {
    k: String,
    i: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<String>,
    t: u64,
    a: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<u64>,
    /// The key's semaphore limit; absent (as in journals written before
    /// semaphores) = 1.
    #[serde(default, skip_serializing_if = "is_lock")]
    n: u32,
    /// The hold's lock-delay in ms; absent = 0.
    #[serde(default, skip_serializing_if = "is_no_delay")]
    l: u64,
}

fn is_lock(n: &u32) -> bool {
    *n <= 1
}

fn is_no_delay(l: &u64) -> bool {
    *l == 0
}

impl From<&HeldRecord> for StoredHold {
    fn from(h: &HeldRecord) -> Self {
        Self {
            k: h.key.clone(),
            i: h.index,
            v: h.value.clone(),
            t: h.ttl_ms,
            a: h.acquired_at,
            d: h.deadline,
            n: h.limit,
            l: h.lock_delay_ms,
        }
    }
}

impl From<StoredHold> for HeldRecord {
    fn from(h: StoredHold) -> Self {
        Self {
            key: h.k,
            index: h.i,
            value: h.v,
            ttl_ms: h.t,
            acquired_at: h.a,
            deadline: h.d,
            limit: h.n.max(1),
            lock_delay_ms: h.l,
        }
    }
}

/// One batch, or one part of a batch too large for one request. Holds are
/// applied before removals; within a batch an index is never removed and
/// then held again (indexes are never reused), so that order is the
/// batch's order.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Batch {
    /// The index ceiling after the batch.
    c: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    h: Vec<StoredHold>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    r: Vec<u64>,
    /// Parts written before this entry (0: the records are inline).
    #[serde(default, skip_serializing_if = "is_zero")]
    parts: usize,
}

/// The head: which snapshot generation is current, and the last batch in it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Head {
    generation: u64,
    chunks: usize,
    seq: u64,
    ceiling: u64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The etcd journal of a primary. See the module docs.
pub struct EtcdJournal {
    writer: Arc<Writer>,
    /// The last batch started.
    seq: u64,
    /// The batches started since the last compaction.
    since_compaction: u64,
    /// Commits in flight at once, at most (`--etcd-journal-depth`).
    depth: usize,
    /// The last commit started. Each commit resolves only after the one
    /// before it, so this one resolving means every batch is in.
    last: Option<Shared<Commit>>,
}

/// What a commit in flight writes with: shared by the journal and its
/// commits, which run while the journal starts the next ones.
struct Writer {
    endpoints: Endpoints,
    keys: Keys,
    fence: Fence,
    /// The head as it is in etcd (`None`: none yet): a compaction writes
    /// its head only over this one. Compactions run one after another.
    head: Mutex<Option<Vec<u8>>>,
}

/// One batch, encoded for etcd.
enum Encoded {
    /// The batch's entry, records inline.
    Inline(Vec<u8>),
    /// Too large for one request: its parts, then the entry that names
    /// how many there are.
    Parts(Vec<Vec<u8>>, Vec<u8>),
}

/// A compaction to write once every batch up to `seq` is in.
struct Plan {
    seq: u64,
    ceiling: u64,
    /// Every hold once batch `seq` is in (the engine's table gave them).
    holds: Vec<HeldRecord>,
}

impl std::fmt::Debug for EtcdJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdJournal")
            .field("fence", &self.writer.fence)
            .field("seq", &self.seq)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

impl EtcdJournal {
    /// Reads the journal under `prefix` (the head's snapshot, then every
    /// complete batch after it) and returns a journal that writes behind
    /// `fence`, with the snapshot to restore the engine from. Batches that
    /// landed after a gap (a commit in flight behind one that failed) are
    /// deleted first: they never counted.
    pub async fn open(
        endpoints: Endpoints,
        prefix: &str,
        fence: Fence,
    ) -> Result<(Self, Snapshot), EtcdError> {
        let keys = Keys::new(prefix);
        // Reads: safe to send again, on any member.
        let get = |key: String, options: Option<GetOptions>| {
            endpoints.call(Call::safe(), move |mut c| {
                let (key, options) = (key.clone(), options.clone());
                async move { c.get(key, options).await }
            })
        };
        let head_resp = get(keys.head.clone(), None).await?;
        let head_value = head_resp.kvs().first().map(|kv| kv.value().to_vec());
        let head: Head = match &head_value {
            Some(v) => parse(&keys.head, v)?,
            None => Head::default(),
        };
        let mut holds = BTreeMap::new();
        if head.chunks > 0 {
            let generation = keys.generation(head.generation);
            let resp = get(generation.clone(), Some(GetOptions::new().with_prefix())).await?;
            if resp.kvs().len() != head.chunks {
                return Err(EtcdError::Corrupt {
                    key: generation,
                    reason: format!(
                        "the head names {} chunks, {} are there",
                        head.chunks,
                        resp.kvs().len()
                    ),
                });
            }
            for kv in resp.kvs() {
                let chunk: Vec<StoredHold> = parse(&generation, kv.value())?;
                for h in chunk {
                    holds.insert(h.i, HeldRecord::from(h));
                }
            }
        }
        let mut ceiling = head.ceiling;
        let mut seq = head.seq;
        // Every batch after the head, in order, with its parts.
        let from = keys.entry(head.seq + 1);
        let resp = get(
            from,
            Some(
                GetOptions::new()
                    .with_range(range_end(&keys.log))
                    .with_sort(SortTarget::Key, SortOrder::Ascend),
            ),
        )
        .await?;
        let mut parts: BTreeMap<u64, Vec<Batch>> = BTreeMap::new();
        let mut entries: BTreeMap<u64, Batch> = BTreeMap::new();
        for kv in resp.kvs() {
            let key = kv.key_str().map_err(EtcdError::Client)?;
            let rest = key.strip_prefix(&keys.log).unwrap_or_default();
            let (seq_text, part) = match rest.split_once('/') {
                Some((s, _)) => (s, true),
                None => (rest, false),
            };
            let n: u64 = seq_text.parse().map_err(|_| EtcdError::Corrupt {
                key: key.to_owned(),
                reason: "not a batch number".into(),
            })?;
            let batch: Batch = parse(key, kv.value())?;
            if part {
                parts.entry(n).or_default().push(batch);
            } else {
                entries.insert(n, batch);
            }
        }
        // Batches count in order: a batch after a gap landed while one
        // before it failed (commits are in flight together), so it never
        // counted either.
        let mut orphans: Vec<u64> = Vec::new();
        for (n, entry) in entries {
            if n != seq + 1 || !orphans.is_empty() {
                orphans.push(n);
                continue;
            }
            let mut batch_parts = parts.remove(&n).unwrap_or_default();
            if batch_parts.len() != entry.parts {
                // Parts without their entry would be an unfinished batch,
                // which never counted; parts missing under an entry are not.
                return Err(EtcdError::Corrupt {
                    key: keys.entry(n),
                    reason: format!(
                        "the batch names {} parts, {} are there",
                        entry.parts,
                        batch_parts.len()
                    ),
                });
            }
            batch_parts.push(entry);
            for b in batch_parts {
                apply(&mut holds, &mut ceiling, b);
            }
            seq = n;
        }
        let snapshot = Snapshot {
            holds: holds.values().cloned().collect(),
            index_ceiling: ceiling,
        };
        // Parts with no entry, and batches after a gap, never counted, and
        // their numbers are about to be used again.
        let mut unfinished: Vec<TxnOp> = orphans
            .iter()
            .map(|&n| TxnOp::delete(keys.entry(n), None))
            .collect();
        let with_parts: std::collections::BTreeSet<u64> =
            parts.keys().copied().chain(orphans).collect();
        unfinished.extend(with_parts.into_iter().map(|n| {
            let parts = format!("{}/", keys.entry(n));
            TxnOp::delete(
                parts.clone(),
                Some(DeleteOptions::new().with_range(range_end(&parts))),
            )
        }));
        let writer = Writer {
            endpoints: endpoints.clone(),
            keys,
            fence,
            head: Mutex::new(head_value),
        };
        for ops in unfinished.chunks(MAX_TXN_OPS) {
            // Not sent again once it may have reached etcd: a copy applied
            // late (by a member that was frozen) could delete a batch this
            // term writes under the same number. Failing here ends the
            // term instead; the next one has another fence, which the late
            // copy fails.
            writer
                .guarded_with(Call::once(), ops.to_vec())
                .await
                .map_err(|e| EtcdError::Fenced(e.to_string()))?;
        }
        let journal = Self {
            writer: Arc::new(writer),
            seq,
            since_compaction: 0,
            depth: 1,
            last: None,
        };
        Ok((journal, snapshot))
    }

    /// This journal with up to `depth` commits in flight at once
    /// (`--etcd-journal-depth`; at least 1).
    #[must_use]
    pub fn with_depth(mut self, depth: usize) -> Self {
        self.depth = depth.max(1);
        self
    }

    /// Writes `holds` (every hold once the last batch started is in) and
    /// the index ceiling as a new snapshot generation and moves the head to
    /// it, dropping the batches and generations it replaces, once every
    /// commit started is in. The journal does this itself every
    /// [`COMPACT_EVERY`] batches, with the snapshot the engine gives it.
    pub async fn compact(
        &mut self,
        holds: Vec<HeldRecord>,
        ceiling: u64,
    ) -> Result<(), StoreError> {
        if let Some(last) = self.last.take() {
            last.await?;
        }
        let plan = self.plan(self.seq, ceiling, holds);
        self.writer.compact(plan).await
    }

    /// A compaction into `holds` and `ceiling` as of batch `seq`; the
    /// count towards the next one starts again.
    fn plan(&mut self, seq: u64, ceiling: u64, holds: Vec<HeldRecord>) -> Plan {
        self.since_compaction = 0;
        Plan {
            seq,
            ceiling,
            holds,
        }
    }
}

impl Writer {
    /// Writes batch `seq` behind the fence: its parts first, if any, then
    /// its entry.
    async fn write(&self, seq: u64, batch: Encoded) -> Result<(), StoreError> {
        let entry = match batch {
            Encoded::Inline(entry) => entry,
            Encoded::Parts(parts, entry) => {
                for (i, part) in parts.into_iter().enumerate() {
                    self.guarded(vec![TxnOp::put(self.keys.part(seq, i), part, None)])
                        .await?;
                }
                entry
            }
        };
        self.guarded(vec![TxnOp::put(self.keys.entry(seq), entry, None)])
            .await
    }

    /// Writes `plan`'s holds as a new snapshot generation and moves the
    /// head to it, dropping the batches and generations it replaces.
    async fn compact(&self, plan: Plan) -> Result<(), StoreError> {
        let generation = plan.seq;
        let prefix = self.keys.generation(generation);
        // Encoding every hold is the one heavy step: off the runtime.
        let chunks = tokio::task::spawn_blocking(move || {
            chunk_holds(plan.holds.iter().map(StoredHold::from).collect())
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        let count = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.guarded(vec![TxnOp::put(format!("{prefix}{i:06}"), chunk, None)])
                .await?;
        }
        let head = encode(&Head {
            generation,
            chunks: count,
            seq: plan.seq,
            ceiling: plan.ceiling,
        })?;
        self.move_head(
            head,
            vec![
                // Batches up to and including seq (their parts sort among them).
                TxnOp::delete(
                    self.keys.log.clone(),
                    Some(DeleteOptions::new().with_range(self.keys.entry(plan.seq + 1))),
                ),
                // Older generations.
                TxnOp::delete(
                    self.keys.snap.clone(),
                    Some(DeleteOptions::new().with_range(self.keys.generation(generation))),
                ),
                // Newer ones (left by an earlier primary that died mid-way).
                TxnOp::delete(
                    self.keys.generation(generation + 1),
                    Some(DeleteOptions::new().with_range(range_end(&self.keys.snap))),
                ),
            ],
        )
        .await
    }

    /// One transaction, applied only while the fence holds.
    ///
    /// Sent again on another member if an attempt fails, even one that may
    /// have been applied: every guarded write puts keys that only this term
    /// writes, each always with the same value (batch `seq`, its parts, a
    /// snapshot chunk), so applying it twice is applying it once, and one
    /// applied late by a member that was frozen only writes what is already
    /// there or (once compacted away) a key that restore ignores and the
    /// next compaction deletes. A deposed primary's copy fails the fence.
    /// The one write that is not like this, the head, goes through
    /// [`move_head`](Self::move_head).
    async fn guarded(&self, ops: Vec<TxnOp>) -> Result<(), StoreError> {
        self.guarded_with(Call::safe(), ops).await
    }

    /// [`guarded`](Self::guarded), sent again as `call` says.
    async fn guarded_with(&self, call: Call, ops: Vec<TxnOp>) -> Result<(), StoreError> {
        let txn = Txn::new().when([self.fence.compare()]).and_then(ops);
        let resp = self.send(call, txn).await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(self.fenced())
        }
    }

    /// Moves the head to `head` and applies `ops`, only while the fence
    /// holds and the head is still the one this journal last saw. That
    /// second guard makes it safe to send again: a copy applied late (by a
    /// member that was frozen) after a later compaction finds another head
    /// and changes nothing, and an attempt that was applied before its
    /// answer was lost is recognised by the head it left.
    async fn move_head(&self, head: Vec<u8>, ops: Vec<TxnOp>) -> Result<(), StoreError> {
        let key = self.keys.head.clone();
        let seen = self.head.lock().map(|h| h.clone()).unwrap_or_default();
        let unchanged = match seen {
            Some(v) => Compare::value(key.clone(), CompareOp::Equal, v),
            None => Compare::version(key.clone(), CompareOp::Equal, 0),
        };
        let mut all = vec![TxnOp::put(key.clone(), head.clone(), None)];
        all.extend(ops);
        let txn = Txn::new()
            .when([self.fence.compare(), unchanged])
            .and_then(all)
            .or_else([
                TxnOp::get(self.fence.key.clone(), None),
                TxnOp::get(key, None),
            ]);
        let resp = self.send(Call::safe(), txn).await?;
        if !resp.succeeded() {
            let values: Vec<Option<(i64, Vec<u8>)>> = resp
                .op_responses()
                .into_iter()
                .map(|r| match r {
                    TxnOpResponse::Get(g) => g
                        .kvs()
                        .first()
                        .map(|kv| (kv.create_revision(), kv.value().to_vec())),
                    _ => None,
                })
                .collect();
            let fence_holds = matches!(values.first(), Some(Some((rev, _))) if *rev == self.fence.create_revision);
            if !fence_holds {
                return Err(self.fenced());
            }
            let applied = matches!(values.get(1), Some(Some((_, v))) if *v == head);
            if !applied {
                return Err(StoreError::Database(format!(
                    "the journal's head {} changed under the primary",
                    self.keys.head
                )));
            }
        }
        if let Ok(mut seen) = self.head.lock() {
            *seen = Some(head);
        }
        Ok(())
    }

    /// Sends one transaction through [`Endpoints`], on another member if an
    /// attempt fails as `call` allows.
    async fn send(&self, call: Call, txn: Txn) -> Result<etcd_client::TxnResponse, StoreError> {
        self.endpoints
            .call(call, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
            .map_err(|e| StoreError::Database(e.to_string()))
    }

    fn fenced(&self) -> StoreError {
        StoreError::Fenced(format!(
            "{} no longer has create revision {}: another primary was elected",
            self.fence.key, self.fence.create_revision
        ))
    }
}

impl Journal for EtcdJournal {
    fn commit(
        &mut self,
        records: Vec<Record>,
        index_ceiling: u64,
        snapshot: Option<Vec<HeldRecord>>,
    ) -> Commit {
        let seq = self.seq + 1;
        let batch = match encode_batch(&records, index_ceiling) {
            Ok(b) => b,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        self.seq = seq;
        self.since_compaction += 1;
        let compaction = snapshot.map(|holds| self.plan(seq, index_ceiling, holds));
        let writer = Arc::clone(&self.writer);
        let before = self.last.take();
        let commit: Commit = Box::pin(async move {
            writer.write(seq, batch).await?;
            // In only once every batch before it is: restore stops at a
            // gap, and a compaction must cover every batch up to its own.
            if let Some(before) = before {
                before.await?;
            }
            if let Some(plan) = compaction {
                writer.compact(plan).await?;
            }
            Ok(())
        });
        let commit = commit.shared();
        self.last = Some(commit.clone());
        Box::pin(commit)
    }

    fn wants_snapshot(&self) -> bool {
        self.since_compaction + 1 >= COMPACT_EVERY
    }

    fn depth(&self) -> usize {
        self.depth
    }
}

/// Encodes a batch: inline, or as parts when too large for one request.
fn encode_batch(records: &[Record], ceiling: u64) -> Result<Encoded, StoreError> {
    let mut batch = Batch {
        c: ceiling,
        ..Batch::default()
    };
    for r in records {
        match r {
            Record::Held(h) => batch.h.push(StoredHold::from(h)),
            Record::Removed { index } => batch.r.push(*index),
        }
    }
    let value = encode(&batch)?;
    if value.len() <= MAX_PART_BYTES {
        return Ok(Encoded::Inline(value));
    }
    let parts = split(batch);
    let entry = encode(&Batch {
        c: ceiling,
        parts: parts.len(),
        ..Batch::default()
    })?;
    let parts = parts.iter().map(encode).collect::<Result<_, _>>()?;
    Ok(Encoded::Parts(parts, entry))
}

fn apply(holds: &mut BTreeMap<u64, HeldRecord>, ceiling: &mut u64, b: Batch) {
    for h in b.h {
        holds.insert(h.i, HeldRecord::from(h));
    }
    for i in b.r {
        holds.remove(&i);
    }
    *ceiling = (*ceiling).max(b.c);
}

/// Splits a batch into parts that each encode below [`MAX_PART_BYTES`].
fn split(batch: Batch) -> Vec<Batch> {
    // A hold encodes in well under 9 KiB (key and value are bounded by
    // --max-key-bytes and --max-value-bytes, 4 KiB each by default), an
    // index in at most 21 bytes: 100 holds or 20,000 indexes a part.
    let mut parts = Vec::new();
    for h in batch.h.chunks(100) {
        parts.push(Batch {
            c: batch.c,
            h: h.to_vec(),
            ..Batch::default()
        });
    }
    for r in batch.r.chunks(20_000) {
        parts.push(Batch {
            c: batch.c,
            r: r.to_vec(),
            ..Batch::default()
        });
    }
    parts
}

/// The holds in chunks of at most [`MAX_PART_BYTES`] each.
fn chunk_holds(holds: Vec<StoredHold>) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    let mut current: Vec<StoredHold> = Vec::new();
    let mut size = 2;
    for h in holds {
        let len = serde_json::to_vec(&h)
            .map_err(|e| StoreError::Database(e.to_string()))?
            .len()
            + 1;
        if size + len > MAX_PART_BYTES && !current.is_empty() {
            out.push(encode(&std::mem::take(&mut current))?);
            size = 2;
        }
        size += len;
        current.push(h);
    }
    if !current.is_empty() {
        out.push(encode(&current)?);
    }
    Ok(out)
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Database(format!("cannot encode: {e}")))
}

fn parse<T: for<'de> Deserialize<'de>>(key: &str, value: &[u8]) -> Result<T, EtcdError> {
    serde_json::from_slice(value).map_err(|e| EtcdError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// The end of the range of keys that start with `prefix`.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_journaled_before_semaphores_reads_as_a_lock_without_delay() {
        let old = br#"{"k":"key","i":7,"t":1000,"a":5,"d":1005}"#;
        let h = HeldRecord::from(serde_json::from_slice::<StoredHold>(old).unwrap());
        assert_eq!((h.index, h.limit, h.lock_delay_ms), (7, 1, 0));
        // A lock is still written as before; a semaphore and a delay add
        // their fields.
        let lock = serde_json::to_string(&StoredHold::from(&h)).unwrap();
        assert_eq!(lock, r#"{"k":"key","i":7,"t":1000,"a":5,"d":1005}"#);
        let sem = HeldRecord {
            limit: 4,
            lock_delay_ms: 250,
            ..h
        };
        let back = HeldRecord::from(
            serde_json::from_str::<StoredHold>(
                &serde_json::to_string(&StoredHold::from(&sem)).unwrap(),
            )
            .unwrap(),
        );
        assert_eq!(back, sem);
    }
}
