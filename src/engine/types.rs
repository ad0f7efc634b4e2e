//! The vocabulary every backend and every surface shares: what a request asks
//! for, what a waiter is told, what a key looks like and what changed.
//!
//! These types are plain data, free of tokio, protobuf and HTTP, so that the
//! clock-free state machine, the etcd backend and the service layer all speak
//! the same words.

/// Time as the state machine is given it, defined with the records that
/// store it (the store sits below the engine).
pub use crate::store::UnixMillis;

/// Names one entry of a key's queue, as renew and release do: by the index it
/// was created with, or by its (non-empty) value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The entry whose index this is.
    Index(u64),
    /// The entry whose value this is.
    Value(String),
}

/// A request to acquire a key, already validated by the service layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcquireSpec {
    /// The lock's name.
    pub key: String,
    /// The entry's value; `None` never joins another request.
    pub value: Option<String>,
    /// The hold's ttl in milliseconds; 0 = never expires.
    pub ttl_ms: u64,
    /// `None` = wait forever, `Some(0)` = only if free now, `Some(n)` = at
    /// most n milliseconds.
    pub timeout_ms: Option<u64>,
    /// How many entries may hold the key at once (a semaphore); 0 and 1
    /// both mean a lock. The key's first entry fixes it.
    pub limit: u32,
    /// If the hold ends by expiry, nobody else is granted the key until
    /// this long after its deadline (Chubby's lock-delay); 0 = no delay.
    pub lock_delay_ms: u64,
}

/// What a successful acquisition tells the holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The fencing token.
    pub index: u64,
    /// The ttl the hold runs with.
    pub ttl_ms: u64,
    /// When the hold expires unless renewed; `None` = never.
    pub deadline: Option<UnixMillis>,
}

/// Why a hold ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Released by index or value.
    Released,
    /// The deadline passed.
    Expired,
}

/// Why a waiting request failed before it acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// Its timeout passed first.
    TimedOut,
    /// Its queued entry was released by someone else.
    Released,
}

/// One step of a wait, as the waiting client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitUpdate {
    /// Queued behind the holder.
    Queued {
        /// The entry's index (its fencing token once acquired).
        index: u64,
        /// How many entries must leave before this one holds (1 = next).
        position: u64,
        /// The holder when the request was queued.
        holder: Option<HolderView>,
    },
    /// The lock is held by this request's entry.
    Acquired(Grant),
    /// The hold ended; the wait is over.
    Ended {
        /// The hold's index.
        index: u64,
        /// Why it ended.
        reason: EndReason,
    },
}

/// The holder of a key, as reads report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderView {
    /// The fencing token.
    pub index: u64,
    /// The holder's value, if any.
    pub value: Option<String>,
    /// The hold's ttl in milliseconds.
    pub ttl_ms: u64,
    /// When it was acquired.
    pub acquired_at: UnixMillis,
    /// When it expires unless renewed; `None` = never.
    pub deadline: Option<UnixMillis>,
    /// The lock-delay that applies if the hold expires.
    pub lock_delay_ms: u64,
}

/// An entry waiting behind the holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedView {
    /// The entry's index.
    pub index: u64,
    /// Its value, if any.
    pub value: Option<String>,
    /// The ttl it gets when acquired.
    pub ttl_ms: u64,
    /// When it was queued.
    pub queued_at: UnixMillis,
    /// How many requests wait on it.
    pub waiters: u64,
}

/// A key's whole state: its holders and its queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyView {
    /// The oldest holder, if the key is held (the only one of a lock).
    pub holder: Option<HolderView>,
    /// Every holder in grant order (more than one only for a semaphore).
    pub holders: Vec<HolderView>,
    /// The waiting entries in grant order.
    pub queue: Vec<QueuedView>,
    /// How many entries may hold at once; 0 when the key is not in use.
    pub limit: u32,
    /// While a lock-delay runs: the moment the key may be granted again.
    pub delayed_until: Option<UnixMillis>,
}

/// One key in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySummary {
    /// The lock's name.
    pub key: String,
    /// Its holder, if any.
    pub holder: Option<HolderView>,
    /// How many entries wait behind the holders.
    pub queue_length: u64,
    /// While a lock-delay runs: the moment the key may be granted again.
    pub delayed_until: Option<UnixMillis>,
}

/// What renew did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// The renewed entry.
    pub index: u64,
    /// Whether it holds the lock (deadline reset) or is queued (ttl changed).
    pub held: bool,
    /// The new deadline when held; `None` = never or not held.
    pub deadline: Option<UnixMillis>,
}

/// What release did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    /// The released entry.
    pub index: u64,
    /// Whether it held the lock.
    pub was_holder: bool,
}

/// What happened to an entry, for watchers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A new entry queued behind the holder.
    Queued,
    /// An entry became the holder.
    Acquired,
    /// An entry was renewed.
    Renewed,
    /// An entry was released.
    Released,
    /// The holder's deadline passed.
    Expired,
    /// A queued entry lost its last waiter (timeout or disconnect), or a
    /// grant nobody heard of was undone when its last waiter went away.
    Cancelled,
    /// A lock-delay ended: the key may be granted again.
    DelayEnded,
}

/// One change of one key, as `Watch`, `Observe` and the dashboard see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockEvent {
    /// The key.
    pub key: String,
    /// What happened.
    pub kind: EventKind,
    /// The entry it happened to.
    pub index: u64,
    /// That entry's value.
    pub value: Option<String>,
    /// That entry's ttl.
    pub ttl_ms: u64,
    /// When.
    pub at: UnixMillis,
    /// The key's holder after the change.
    pub holder: Option<HolderView>,
    /// Entries waiting behind the holders after the change.
    pub queue_length: u64,
    /// While a lock-delay runs after the change: the moment the key may be
    /// granted again (an expiry with a lock-delay starts one).
    pub delayed_until: Option<UnixMillis>,
}

/// Counts for status pages and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Keys with a holder or a queue.
    pub keys: u64,
    /// Entries (holders and queued) across all keys.
    pub entries: u64,
    /// Waiting or listening requests.
    pub waiters: u64,
}

/// What a fencing-token check found (Chubby's CheckSequencer).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenCheck {
    /// Whether the index is one of the key's holders now.
    pub current: bool,
    /// The key's holders now, in grant order.
    pub holders: Vec<HolderView>,
}
