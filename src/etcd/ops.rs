//! The backend's context and the etcd transactions that change a queue.
//!
//! Every change is one etcd transaction guarded by compares on the keys it
//! read (their mod revision, and where it matters that a range is empty or
//! holds only older keys), so concurrent gateways never act on a state that
//! has moved: the loser of a race re-reads and tries again.
//!
//! Removing an entry (release, precise expiry) hands the lock on in the same
//! transaction: if the removed entry was the head, the next entry is written
//! as the holder (on a fresh lease for its ttl) atomically with the delete,
//! so "the next entry is holder at once" holds on etcd too, and watchers see
//! the release and the new holder at one revision.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, GetResponse, KvClient, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use tokio::sync::mpsc;

use super::{
    error::EtcdError,
    expiry::Expirer,
    hub::Hub,
    keys::{self, Keys},
    leases::HoldLeases,
    record::{Entry, EntryRecord, Reason, Tombstone},
    session::{Connector, Session},
    waiter::TrackerCommand,
};
use crate::engine::{EngineError, UnixMillis};
use crate::engine::{Release, Renewal, Target, clock::Clock, table::TableError};

/// How often a transaction is retried after losing a race before the
/// client is told to try again.
pub const MAX_RACES: usize = 64;

/// A gateway-local tracker of a queued entry, as the join path finds it.
#[derive(Clone)]
pub struct TrackerHandle {
    /// Tells trackers apart when one replaces another for the same key.
    pub id: u64,
    /// The entry's index.
    pub index: u64,
    /// This gateway's registration on the entry.
    pub reg_key: String,
    /// The entry as its tracker last saw it, for a release that hands the
    /// lock on to it without reading first.
    pub seen: Arc<Mutex<Seen>>,
    /// Where to send waiters that join it.
    pub commands: mpsc::UnboundedSender<TrackerCommand>,
}

/// A queued entry as its tracker last saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The entry's mod revision.
    pub mod_rev: i64,
    /// Its record.
    pub rec: EntryRecord,
    /// The entry just before it (key, index), when the tracker last read
    /// the queue. If that is the holder, nothing can be between them: a
    /// newer entry has a greater index than this one.
    pub pred: Option<(String, u64)>,
    /// Its last waiting request went and it is being withdrawn: no release
    /// may hand the lock to it (nobody would hear of the grant).
    pub leaving: bool,
    /// The requests of this gateway still waiting on it; a request's stream
    /// takes itself out the moment it is dropped, before its tracker hears.
    pub waiting: std::collections::HashSet<u64>,
}

impl Seen {
    /// Whether a release may hand the lock to this entry: someone here
    /// still waits for it.
    pub fn wanted(&self) -> bool {
        !self.leaving && !self.waiting.is_empty()
    }
}

/// Everything the backend's parts share: the link to etcd, the key layout,
/// the watch hub, the local trackers and timers.
pub struct Ctx {
    /// The key layout.
    pub keys: Keys,
    /// The link to etcd.
    pub conn: Arc<Connector>,
    /// The shared watch stream.
    pub hub: Hub,
    /// Wall-clock milliseconds, monotonic within the process.
    pub clock: Clock,
    /// This gateway's id in key names; random per process.
    pub gateway: String,
    counter: AtomicU64,
    /// Queued entries this gateway has waiters on, by entry key (so the
    /// trackers of one lock are one range).
    pub trackers: Mutex<BTreeMap<String, TrackerHandle>>,
    /// Holds this gateway wrote last, so that releasing or renewing them
    /// through it needs no read first (a stale one just fails its compare).
    held: Mutex<HeldCache>,
    /// Precise expiry of the holds this gateway granted or renewed.
    pub expirer: Expirer,
    /// Shared leases for holds.
    pub leases: Arc<HoldLeases>,
    /// Why this gateway removed its recent entries, so that its own waiters
    /// and listeners need not read the tombstone back from etcd.
    removed: Mutex<Removed>,
    /// Open wait streams on this gateway.
    pub waiters: AtomicUsize,
    /// The bound on [`waiters`](Self::waiters).
    pub max_waiters: usize,
}

impl Ctx {
    /// A context over `conn`; the expirer is attached by the engine.
    pub fn new(
        keys: Keys,
        conn: Arc<Connector>,
        hub: Hub,
        expirer: Expirer,
        max_waiters: usize,
    ) -> Self {
        let leases = HoldLeases::new(conn.clone());
        Self {
            leases,
            removed: Mutex::new(Removed::default()),
            keys,
            conn,
            hub,
            clock: Clock::new(),
            gateway: gateway_id(),
            counter: AtomicU64::new(1),
            trackers: Mutex::new(BTreeMap::new()),
            held: Mutex::new(HeldCache::default()),
            expirer,
            waiters: AtomicUsize::new(0),
            max_waiters,
        }
    }

    /// A number unique within this process.
    pub fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// Now, in Unix milliseconds.
    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// The live session, or UNAVAILABLE.
    pub async fn session(&self) -> Result<Arc<Session>, EtcdError> {
        self.conn.session().await
    }

    /// Runs one etcd request, paced and within the request timeout (see
    /// [`pacer`](super::pacer)); a failure that looks like a lost connection
    /// makes the session check itself at once.
    pub async fn rpc<T, F, Fut>(&self, send: F) -> Result<T, EtcdError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let r = self.conn.pacer().run(send).await;
        if let Err(e) = &r
            && e.is_connectivity()
        {
            self.conn.probe();
        }
        r
    }

    /// A KV client of the live session.
    pub async fn kv(&self) -> Result<KvClient, EtcdError> {
        Ok(self.session().await?.client.kv_client())
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, EtcdError> {
        let kv = self.kv().await?;
        self.rpc(|| {
            let (mut kv, txn) = (kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await
    }

    /// Reads a key or range.
    pub async fn get(&self, key: String, opts: GetOptions) -> Result<GetResponse, EtcdError> {
        let kv = self.kv().await?;
        self.rpc(|| {
            let (mut kv, key, opts) = (kv.clone(), key.clone(), opts.clone());
            async move { kv.get(key, Some(opts)).await }
        })
        .await
    }

    /// A lease for a hold of `ttl_ms` granted now (0 for ttl 0): shared
    /// with other holds of that ttl, never shorter than the ttl plus a
    /// second (see [`leases`](super::leases)).
    pub async fn hold_lease(&self, ttl_ms: u64) -> Result<i64, EtcdError> {
        self.leases.lease_for(ttl_ms).await
    }

    /// Remembers `held` as this gateway last wrote (or saw) it.
    pub fn remember_hold(&self, lock: &str, held: &Entry) {
        if let Ok(mut c) = self.held.lock() {
            c.insert(lock, held.clone());
        }
    }

    /// Forgets the hold `key`.
    pub fn forget_hold(&self, key: &str) {
        if let Ok(mut c) = self.held.lock() {
            c.remove(key);
        }
    }

    /// The hold `target` names, as this gateway last wrote it, if it did.
    fn cached_hold(&self, lock: &str, target: &Target) -> Option<Entry> {
        let c = self.held.lock().ok()?;
        let key = match target {
            Target::Value(v) => self.keys.entry(lock, &keys::value_entry_id(v)),
            Target::Index(i) => c.by_index.get(i)?.clone(),
        };
        let (l, e) = c.by_key.get(&key)?;
        (l == lock).then(|| e.clone())
    }

    /// The queued entry this gateway tracks that comes right after `held`
    /// (its tracker read `held` as its predecessor), with its registration:
    /// the one a release of `held` may hand the lock to without a read.
    fn local_successor(&self, lock: &str, held: &Entry) -> Option<(Entry, String)> {
        let map = self.trackers.lock().ok()?;
        let prefix = self.keys.entries(lock);
        map.range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .find_map(|(key, h)| {
                let seen = h.seen.lock().ok()?.clone();
                let after_held = seen.wanted()
                    && seen
                        .pred
                        .as_ref()
                        .is_some_and(|(k, i)| *k == held.key && *i == held.index);
                after_held.then(|| {
                    (
                        Entry {
                            key: key.clone(),
                            index: h.index,
                            mod_rev: seen.mod_rev,
                            lease: 0,
                            rec: seen.rec,
                        },
                        h.reg_key.clone(),
                    )
                })
            })
    }

    /// Notes why this gateway removed entry `index`.
    pub fn note_removed(&self, index: u64, reason: Reason) {
        if let Ok(mut r) = self.removed.lock() {
            r.insert(index, reason);
        }
    }

    /// Why entry `index` was removed, if this gateway removed it recently.
    pub fn removed_here(&self, index: u64) -> Option<Reason> {
        self.removed.lock().ok()?.reasons.get(&index).copied()
    }

    /// After etcd said a lease is gone: forget the cached ones.
    pub async fn lease_gone(&self) {
        self.leases.reset().await;
        if let Some(s) = self.conn.current() {
            s.drop_tomb_lease().await;
        }
        self.conn.probe();
    }

    /// Reads the entry `target` names, if it exists.
    pub async fn find(&self, lock: &str, target: &Target) -> Result<Option<Entry>, EtcdError> {
        let (key, opts) = self.find_query(lock, target);
        let resp = self.get(key, opts).await?;
        let found = resp.kvs().first().map(Entry::from_kv).transpose()?;
        Ok(found.filter(|e| is_target(e, target)))
    }

    fn find_query(&self, lock: &str, target: &Target) -> (String, GetOptions) {
        match target {
            Target::Value(v) => (
                self.keys.entry(lock, &keys::value_entry_id(v)),
                GetOptions::new(),
            ),
            Target::Index(i) => {
                let rev = (*i).min(i64::MAX as u64) as i64;
                (
                    self.keys.entries(lock),
                    GetOptions::new()
                        .with_prefix()
                        .with_min_create_revision(rev)
                        .with_max_create_revision(rev),
                )
            }
        }
    }

    /// Reads the entry `target` names and the first two entries of the
    /// queue, at one revision.
    async fn find_with_heads(
        &self,
        lock: &str,
        target: &Target,
    ) -> Result<(Option<Entry>, Vec<Entry>), EtcdError> {
        let (key, opts) = self.find_query(lock, target);
        let txn = Txn::new().and_then([
            TxnOp::get(key, Some(opts)),
            TxnOp::get(self.keys.entries(lock), Some(first_entries(2))),
        ]);
        let resp = self.txn(txn).await?;
        let ops = resp.op_responses();
        let own = range(&ops, 0)?
            .kvs()
            .first()
            .map(Entry::from_kv)
            .transpose()?;
        let heads = entries(range(&ops, 1)?)?;
        Ok((own.filter(|e| is_target(e, target)), heads))
    }

    /// Removes the entry `target` names, for `reason`, handing the lock on
    /// to the next entry in the same transaction if it was the head. With
    /// `expect_mod`, only if the entry was not changed since (the precise
    /// expiry of a hold that may have been renewed elsewhere). `None` if
    /// there is no such entry (or it changed).
    pub async fn remove(
        &self,
        lock: &str,
        target: &Target,
        reason: Reason,
        expect_mod: Option<i64>,
    ) -> Result<Option<Release>, EtcdError> {
        if let Some(own) = self.cached_hold(lock, target)
            && expect_mod.is_none_or(|m| m == own.mod_rev)
            && let Some(released) = self.remove_held(lock, &own, reason).await?
        {
            return Ok(Some(released));
        }
        for _ in 0..MAX_RACES {
            let (own, heads) = self.find_with_heads(lock, target).await?;
            let Some(own) = own else { return Ok(None) };
            if expect_mod.is_some_and(|m| m != own.mod_rev) {
                return Ok(None);
            }
            let is_head = heads.first().is_some_and(|h| h.key == own.key);
            // Hand over only to an entry this gateway tracks: then someone
            // alive is waiting on it. An entry of another gateway is
            // promoted by that gateway when it sees its predecessor go, and
            // one whose gateway died is never granted: it goes with that
            // gateway's lease.
            let successor = heads
                .get(1)
                .filter(|s| is_head && !s.is_held())
                .and_then(|s| self.local_registration(s).map(|reg| (s.clone(), reg)));
            match self.try_remove(lock, &own, reason, successor).await? {
                Removal::Done(released) => return Ok(Some(released)),
                Removal::Changed | Removal::LeaseGone => continue,
            }
        }
        Err(EtcdError::Contention(
            "the lock changed too often to release; try again".into(),
        ))
    }

    /// Removes the hold `own` as this gateway last wrote it, in one write:
    /// no read first, and the lock handed on to the next entry if this
    /// gateway tracks it. `None` if the hold changed since (the caller
    /// reads and tries the general way).
    async fn remove_held(
        &self,
        lock: &str,
        own: &Entry,
        reason: Reason,
    ) -> Result<Option<Release>, EtcdError> {
        let successor = self.local_successor(lock, own);
        Ok(match self.try_remove(lock, own, reason, successor).await? {
            Removal::Done(released) => Some(released),
            Removal::Changed => {
                self.forget_hold(&own.key);
                None
            }
            Removal::LeaseGone => None,
        })
    }

    /// One try at removing `own` as read (unchanged since, by its mod
    /// revision): deletes it and its registrations, leaves a tombstone saying
    /// why, and makes `successor` (an entry this gateway tracks, with its
    /// registration key) the holder in the same transaction.
    async fn try_remove(
        &self,
        lock: &str,
        own: &Entry,
        reason: Reason,
        successor: Option<(Entry, String)>,
    ) -> Result<Removal, EtcdError> {
        let succ_lease = match &successor {
            Some((s, _)) => self.hold_lease(s.rec.ttl_ms).await?,
            None => 0,
        };
        let session = self.session().await?;
        let tomb = session.tomb_lease(self.conn.timeout()).await?;
        let own_id = self
            .keys
            .entry_id(lock, &own.key)
            .unwrap_or_default()
            .to_owned();
        let mut then = vec![
            TxnOp::delete(own.key.clone(), None),
            TxnOp::delete(
                self.keys.registrations(lock, &own_id),
                Some(DeleteOptions::new().with_prefix()),
            ),
            TxnOp::put(
                self.keys.tombstone(lock, own.index),
                Tombstone { reason }.to_bytes(),
                Some(PutOptions::new().with_lease(tomb)),
            ),
        ];
        let succ_rec = successor.as_ref().map(|(s, _)| s.rec.held_at(self.now()));
        if let (Some((s, reg)), Some(rec)) = (&successor, &succ_rec) {
            then.push(TxnOp::txn(self.handover_txn(lock, s, reg, rec, succ_lease)));
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                own.key.clone(),
                CompareOp::Equal,
                own.mod_rev,
            )])
            .and_then(then);
        let resp = match self.txn(txn).await {
            Ok(r) => r,
            Err(e) if e.is_lease_not_found() => {
                // A cached lease ran out under us: forget it, try again.
                self.lease_gone().await;
                return Ok(Removal::LeaseGone);
            }
            Err(e) => return Err(e),
        };
        if !resp.succeeded() {
            return Ok(Removal::Changed);
        }
        let rev = revision(&resp);
        let handed = resp
            .op_responses()
            .get(3)
            .is_some_and(|op| matches!(op, TxnOpResponse::Txn(t) if t.succeeded()));
        if let (Some((s, _)), Some(rec)) = (&successor, succ_rec)
            && handed
        {
            self.handed_over(lock, s, rec, succ_lease, rev);
        }
        self.forget_hold(&own.key);
        self.expirer.forget(&own.key);
        self.note_removed(own.index, reason);
        Ok(Removal::Done(Release {
            index: own.index,
            was_holder: own.is_held(),
        }))
    }

    /// Bookkeeping after this gateway made `succ` the holder with `rec`.
    fn handed_over(&self, lock: &str, succ: &Entry, rec: EntryRecord, lease: i64, rev: i64) {
        if let Some(deadline) = rec.deadline() {
            self.expirer
                .schedule(lock, &succ.key, succ.index, rev, deadline);
        }
        self.remember_hold(
            lock,
            &Entry {
                key: succ.key.clone(),
                index: succ.index,
                mod_rev: rev,
                lease,
                rec,
            },
        );
    }

    /// This gateway's registration on `entry`, if one of its trackers
    /// waits on it.
    fn local_registration(&self, entry: &Entry) -> Option<String> {
        let map = self.trackers.lock().ok()?;
        map.get(&entry.key)
            .filter(|h| h.index == entry.index)
            .filter(|h| h.seen.lock().is_ok_and(|s| s.wanted()))
            .map(|h| h.reg_key.clone())
    }

    /// The nested transaction that makes `succ` the holder: only if it did
    /// not change and this gateway's registration on it is still there.
    fn handover_txn(
        &self,
        lock: &str,
        succ: &Entry,
        reg: &str,
        rec: &EntryRecord,
        lease: i64,
    ) -> Txn {
        let id = self.keys.entry_id(lock, &succ.key).unwrap_or_default();
        let regs = self.keys.registrations(lock, id);
        let compares = vec![
            Compare::mod_revision(succ.key.clone(), CompareOp::Equal, succ.mod_rev),
            Compare::create_revision(reg.to_owned(), CompareOp::Greater, 0),
        ];
        Txn::new().when(compares).and_then([
            TxnOp::put(
                succ.key.clone(),
                rec.to_bytes(),
                Some(PutOptions::new().with_lease(lease)),
            ),
            TxnOp::delete(regs, Some(DeleteOptions::new().with_prefix())),
        ])
    }

    /// Renews the entry `target` names: a holder gets a fresh lease for
    /// `ttl_ms` and a new deadline; a queued entry gets the ttl it will be
    /// held with.
    pub async fn renew(
        &self,
        lock: &str,
        target: &Target,
        ttl_ms: u64,
    ) -> Result<Renewal, EngineError> {
        if let Some(own) = self.cached_hold(lock, target)
            && let Some((renewal, _)) = self.renew_entry(lock, &own, ttl_ms, None).await?
        {
            return Ok(renewal);
        }
        for _ in 0..MAX_RACES {
            let Some(own) = self.find(lock, target).await? else {
                return Err(not_found(target));
            };
            match self.renew_entry(lock, &own, ttl_ms, None).await? {
                Some((renewal, _)) => return Ok(renewal),
                None => continue,
            }
        }
        Err(EtcdError::Contention("the lock changed too often to renew; try again".into()).into())
    }

    /// Renews `own` as read (see [`renew`](Self::renew)); `None` if it
    /// changed meanwhile. Also returns the revision of the write. `lease`
    /// is a lease for `ttl_ms` at hand already, used for a holder.
    pub async fn renew_entry(
        &self,
        lock: &str,
        own: &Entry,
        ttl_ms: u64,
        lease: Option<i64>,
    ) -> Result<Option<(Renewal, i64)>, EtcdError> {
        let now = self.now();
        let rec = own.rec.renewed(ttl_ms, now);
        let lease = match (own.is_held(), lease) {
            (true, Some(l)) => l,
            (true, None) => self.hold_lease(ttl_ms).await?,
            (false, _) => 0,
        };
        let opts = if own.is_held() {
            PutOptions::new().with_lease(lease)
        } else {
            PutOptions::new().with_ignore_lease()
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(
                own.key.clone(),
                CompareOp::Equal,
                own.mod_rev,
            )])
            .and_then([TxnOp::put(own.key.clone(), rec.to_bytes(), Some(opts))]);
        let resp = match self.txn(txn).await {
            Ok(r) => r,
            Err(e) => {
                if e.is_lease_not_found() {
                    self.lease_gone().await;
                }
                return Err(e);
            }
        };
        if !resp.succeeded() {
            self.forget_hold(&own.key);
            return Ok(None);
        }
        let rev = revision(&resp);
        if own.is_held() {
            self.remember_hold(
                lock,
                &Entry {
                    key: own.key.clone(),
                    index: own.index,
                    mod_rev: rev,
                    lease,
                    rec: rec.clone(),
                },
            );
            match rec.deadline() {
                Some(d) => self.expirer.schedule(lock, &own.key, own.index, rev, d),
                None => self.expirer.forget(&own.key),
            }
        }
        Ok(Some((
            Renewal {
                index: own.index,
                held: own.is_held(),
                deadline: rec.deadline(),
            },
            rev,
        )))
    }

    /// The head of `lock`'s queue, if any.
    pub async fn head(&self, lock: &str) -> Result<Option<Entry>, EtcdError> {
        let resp = self.get(self.keys.entries(lock), first_entries(1)).await?;
        Ok(entries(&resp)?.into_iter().next())
    }
}

/// How one try at removing an entry ended.
enum Removal {
    /// Removed (and the lock handed on, where it could be).
    Done(Release),
    /// The entry changed since it was read; read again.
    Changed,
    /// A lease the transaction used was gone; it is forgotten, try again.
    LeaseGone,
}

/// The holds a gateway wrote last, by key and by index, at most
/// [`HeldCache::KEEP`] of them.
#[derive(Default)]
struct HeldCache {
    by_key: HashMap<String, (String, Entry)>,
    by_index: HashMap<u64, String>,
}

impl HeldCache {
    const KEEP: usize = 100_000;

    fn insert(&mut self, lock: &str, e: Entry) {
        if self.by_key.len() >= Self::KEEP && !self.by_key.contains_key(&e.key) {
            // Full: start over rather than track ages; a miss only costs a
            // read.
            self.by_key.clear();
            self.by_index.clear();
        }
        self.by_index.insert(e.index, e.key.clone());
        self.by_key.insert(e.key.clone(), (lock.to_owned(), e));
    }

    fn remove(&mut self, key: &str) {
        if let Some((_, e)) = self.by_key.remove(key) {
            self.by_index.remove(&e.index);
        }
    }
}

/// The reasons of the last [`Removed::KEEP`] removals of a gateway.
#[derive(Default)]
struct Removed {
    reasons: HashMap<u64, Reason>,
    order: std::collections::VecDeque<u64>,
}

impl Removed {
    const KEEP: usize = 4096;

    fn insert(&mut self, index: u64, reason: Reason) {
        if self.reasons.insert(index, reason).is_none() {
            self.order.push_back(index);
        }
        while self.order.len() > Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.reasons.remove(&old);
            }
        }
    }
}

/// Whether `e` is the entry `target` names. (etcd reads a create-revision
/// bound of 0 as "no bound", so index 0 must not be left to the range.)
fn is_target(e: &Entry, target: &Target) -> bool {
    match target {
        Target::Index(i) => e.index == *i,
        Target::Value(v) => e.rec.value.as_deref() == Some(v.as_str()),
    }
}

/// "Not found" in the embedded backend's words.
pub fn not_found(target: &Target) -> EngineError {
    let what = match target {
        Target::Index(i) => format!("index {i}"),
        Target::Value(v) => format!("value {v:?}"),
    };
    TableError::NotFound(what).into()
}

/// "Held, and timeout 0 does not wait" in the embedded backend's words.
pub fn not_acquired(holder_index: u64) -> EngineError {
    TableError::NotImmediatelyAvailable { holder_index }.into()
}

/// Options for the first `n` entries of a queue (in index order).
pub fn first_entries(n: i64) -> GetOptions {
    GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(n)
}

/// The revision a response was served at (for a write: the write's).
pub fn revision(resp: &TxnResponse) -> i64 {
    resp.header().map_or(0, |h| h.revision())
}

/// The range response of operation `i` of a transaction.
pub fn range(ops: &[TxnOpResponse], i: usize) -> Result<&GetResponse, EtcdError> {
    match ops.get(i) {
        Some(TxnOpResponse::Get(g)) => Ok(g),
        _ => Err(EtcdError::Corrupt {
            key: format!("transaction operation {i}"),
            reason: "etcd did not answer with a range".into(),
        }),
    }
}

/// The entries of a range response.
pub fn entries(resp: &GetResponse) -> Result<Vec<Entry>, EtcdError> {
    resp.kvs().iter().map(Entry::from_kv).collect()
}

fn gateway_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}
