//! Locks: [`Client::lock`] builds a request, [`LockBuilder::acquire`] waits
//! for the grant and returns a [`LockGuard`] that renews the hold in the
//! background and releases it when dropped. Plus the one-shot calls behind
//! `baton status` and `baton release`.

use std::{
    future::{Future, IntoFuture},
    pin::Pin,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use tokio::sync::watch;

use super::connect::Stubs;
use super::{
    connect::Client,
    error::ClientError,
    hold::{self, Hold, Lost, Step, Want},
};
use crate::proto::v1::{self as pb, release_request, renew_request, wait_event};

/// The ttl a lock gets unless [`LockBuilder::ttl`] says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// A lock request being put together; see [`Client::lock`].
///
/// Awaiting the builder is the same as calling [`acquire`](Self::acquire).
#[derive(Clone, Debug)]
#[must_use = "a lock request does nothing until it is acquired"]
pub struct LockBuilder {
    client: Client,
    key: String,
    value: String,
    ttl: Duration,
    timeout: Option<Duration>,
    limit: u32,
    lock_delay: Duration,
}

impl LockBuilder {
    /// Makes the key a semaphore: up to `limit` holders at once, each with
    /// its own index (default 1, a lock). The key's first entry fixes the
    /// limit; another limit while it has entries fails with
    /// [`ClientError::LimitMismatch`].
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// Lock-delay: if this hold is lost by expiry (this process hung or
    /// died), nobody else is granted the key until `delay` after its
    /// deadline, so writes still in flight drain first. A release ends the
    /// hold without delay. The server caps it (`--max-lock-delay-secs`).
    pub fn lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = delay;
        self
    }

    /// How long the hold lasts without a renew (default 60 s). The guard
    /// renews every third of it; zero means the hold never expires (and is
    /// never renewed).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// A value for the entry. Requests with the same value join one entry
    /// and are granted together; a request with the holder's value renews
    /// the hold and is granted at once.
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.value = value.into();
        self
    }

    /// How long to wait for the lock: zero takes it only if it is free now;
    /// unset (the default) waits forever. On expiry [`acquire`](Self::acquire)
    /// fails with [`ClientError::Timeout`] and nothing is left queued.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Waits for the lock. Dropping the returned future before it completes
    /// withdraws the request.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), baton::client::ClientError> {
    /// use std::time::Duration;
    /// # let client = baton::client::Client::connect("http://127.0.0.1:4001").await?;
    ///
    /// match client.lock("jobs/nightly").timeout(Duration::ZERO).acquire().await {
    ///     Ok(guard) => println!("got it: {}", guard.index()),
    ///     Err(baton::client::ClientError::Timeout { .. }) => println!("busy"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn acquire(self) -> Result<LockGuard, ClientError> {
        let want = Want {
            key: self.key.clone(),
            ttl: self.ttl,
            timeout: self.timeout,
            joinable: !self.value.is_empty(),
        };
        let ttl_ms = super::error::millis("ttl", self.ttl)?;
        let lock_delay_ms = super::error::millis("lock_delay", self.lock_delay)?;
        let hold = hold::acquire(&self.client, want, |mut lock, _, timeout_ms| {
            let req = pb::WaitRequest {
                key: self.key.clone(),
                value: self.value.clone(),
                ttl_ms,
                timeout_ms,
                limit: self.limit,
                lock_delay_ms,
            };
            async move {
                let stream = lock.wait(req).await?.into_inner();
                Ok(stream.map(|ev| ev.map(wait_step)).boxed())
            }
        })
        .await?;
        Ok(LockGuard {
            hold,
            value: self.value,
        })
    }
}

impl IntoFuture for LockBuilder {
    type Output = Result<LockGuard, ClientError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.acquire())
    }
}

fn wait_step(ev: pb::WaitEvent) -> Step {
    match ev.event {
        Some(wait_event::Event::Queued(q)) => Step::Queued {
            index: q.index,
            position: q.position,
        },
        Some(wait_event::Event::Acquired(a)) => Step::Acquired { index: a.index },
        Some(wait_event::Event::Ended(e)) => Step::Ended { reason: e.reason },
        // An empty event carries nothing: treat it as a repeat of "queued".
        None => Step::Queued {
            index: 0,
            position: 0,
        },
    }
}

/// A held lock. While it lives, a background task renews the hold every
/// third of its ttl; dropping it releases the lock (in a spawned task, best
/// effort), [`release`](Self::release) does so and reports the outcome.
///
/// Hand [`index`](Self::index) to whatever the lock protects as a fencing
/// token, and stop work when [`lost`](Self::lost) resolves.
///
/// ```no_run
/// # async fn demo() -> Result<(), baton::client::ClientError> {
/// use std::time::Duration;
/// use baton::client::Client;
///
/// let client = Client::connect("http://127.0.0.1:4001").await?;
/// let guard = client.lock("jobs/nightly").ttl(Duration::from_secs(10)).await?;
/// tokio::select! {
///     _ = do_work(guard.index()) => guard.release().await?,
///     lost = guard.lost() => eprintln!("lost the lock: {lost}"),
/// }
/// # async fn do_work(_fencing_token: u64) {}
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct LockGuard {
    hold: Hold,
    value: String,
}

impl LockGuard {
    /// The lock's key.
    pub fn key(&self) -> &str {
        self.hold.key()
    }

    /// The fencing token: the index of this hold, higher than that of every
    /// earlier hold of any lock.
    pub fn index(&self) -> u64 {
        self.hold.index()
    }

    /// The value the lock was requested with (empty for none).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The ttl the hold is renewed with (zero: never expires).
    pub fn ttl(&self) -> Duration {
        self.hold.ttl()
    }

    /// Resolves when the hold is lost: it expired, someone else released
    /// it, or it could not be renewed before its deadline. Never resolves
    /// while the hold is kept. The future does not borrow the guard.
    pub fn lost(&self) -> impl Future<Output = Lost> + Send + 'static {
        self.hold.lost()
    }

    /// `Some(reason)` once the hold has been lost.
    pub fn is_lost(&self) -> Option<Lost> {
        self.hold.is_lost()
    }

    /// A channel that turns `Some(reason)` when the hold is lost, for code
    /// that wants to check without awaiting.
    pub fn lost_watch(&self) -> watch::Receiver<Option<Lost>> {
        self.hold.lost_watch()
    }

    /// Stops renewing and releases the lock, handing it to the next waiter.
    /// Fails with [`ClientError::Lost`] if the hold had already been lost.
    pub async fn release(self) -> Result<(), ClientError> {
        self.hold.release().await
    }

    /// Stops renewing and lets go of the guard without releasing: the hold
    /// lives on by its ttl (forever with ttl 0), to be renewed or released
    /// later by index or value, e.g. by another process (`baton acquire`
    /// then `baton renew` / `baton release`). Returns the index.
    pub fn detach(self) -> u64 {
        self.hold.detach()
    }
}

/// Which entry of a lock's queue to renew or release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The entry with this index.
    Index(u64),
    /// The entry with this value (or, in an election, this candidate name).
    Value(String),
}

/// What [`Client::release`] removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Released {
    /// The removed entry's index.
    pub index: u64,
    /// Whether it held the lock (the next entry, if any, now holds it).
    pub was_holder: bool,
}

/// A lock's state, from [`Client::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockStatus {
    /// The lock's key.
    pub key: String,
    /// The oldest holder, if the lock is held.
    pub holder: Option<Holder>,
    /// Every holder in grant order (more than one only for a semaphore).
    pub holders: Vec<Holder>,
    /// The entries waiting behind the holders, in the order they will
    /// acquire.
    pub queue: Vec<Waiting>,
    /// How many may hold at once; 0 when the key is not in use.
    pub limit: u32,
    /// While a lock-delay runs (a hold with one expired), when it ends
    /// (server clock).
    pub delayed_until: Option<SystemTime>,
}

/// What [`Client::check`] found about a fencing token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenCheck {
    /// Whether the index is one of the key's holders now.
    pub current: bool,
    /// The key's holders now, in grant order.
    pub holders: Vec<Holder>,
}

/// The entry holding a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Its fencing token.
    pub index: u64,
    /// Its value (empty for none).
    pub value: String,
    /// Its ttl; `None` if it never expires.
    pub ttl: Option<Duration>,
    /// When it was acquired (server clock).
    pub acquired_at: SystemTime,
    /// When it expires unless renewed (server clock); `None` if never.
    pub deadline: Option<SystemTime>,
    /// How long it had left when the server answered; `None` if it never
    /// expires.
    pub remaining: Option<Duration>,
    /// The lock-delay that applies if it expires; `None` for none.
    pub lock_delay: Option<Duration>,
}

/// An entry waiting for a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// Its index, the fencing token it will hold.
    pub index: u64,
    /// Its value (empty for none).
    pub value: String,
    /// The ttl it will get; `None` if it will never expire.
    pub ttl: Option<Duration>,
    /// When it was queued (server clock).
    pub queued_at: SystemTime,
    /// How many requests wait on it (more than one when they joined by value).
    pub waiters: u64,
}

/// A Unix time in milliseconds as a `SystemTime`.
pub(crate) fn unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Milliseconds where 0 means "none".
pub(crate) fn nonzero_ms(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

impl From<pb::Holder> for Holder {
    fn from(h: pb::Holder) -> Self {
        Self {
            index: h.index,
            value: h.value,
            ttl: nonzero_ms(h.ttl_ms),
            acquired_at: unix_ms(h.acquired_unix_ms),
            deadline: (h.deadline_unix_ms > 0).then(|| unix_ms(h.deadline_unix_ms)),
            remaining: (h.ttl_ms > 0).then(|| Duration::from_millis(h.remaining_ms)),
            lock_delay: nonzero_ms(h.lock_delay_ms),
        }
    }
}

impl From<pb::QueuedEntry> for Waiting {
    fn from(q: pb::QueuedEntry) -> Self {
        Self {
            index: q.index,
            value: q.value,
            ttl: nonzero_ms(q.ttl_ms),
            queued_at: unix_ms(q.queued_unix_ms),
            waiters: q.waiters,
        }
    }
}

fn release_target(entry: Entry) -> release_request::Target {
    match entry {
        Entry::Index(i) => release_request::Target::Index(i),
        Entry::Value(v) => release_request::Target::Value(v),
    }
}

fn renew_target(entry: Entry) -> renew_request::Target {
    match entry {
        Entry::Index(i) => renew_request::Target::Index(i),
        Entry::Value(v) => renew_request::Target::Value(v),
    }
}

impl Client {
    /// Starts a lock request for `key`; configure it, then
    /// [`acquire`](LockBuilder::acquire) it (or just `.await` it).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), baton::client::ClientError> {
    /// use std::time::Duration;
    /// use baton::client::Client;
    ///
    /// let client = Client::connect("http://127.0.0.1:4001").await?;
    /// let guard = client
    ///     .lock("customer1")
    ///     .ttl(Duration::from_secs(30))
    ///     .value("worker-7")
    ///     .timeout(Duration::from_secs(5))
    ///     .acquire()
    ///     .await?;
    /// println!("fencing token {}", guard.index());
    /// guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn lock(&self, key: impl Into<String>) -> LockBuilder {
        LockBuilder {
            client: self.clone(),
            key: key.into(),
            value: String::new(),
            ttl: DEFAULT_TTL,
            timeout: None,
            limit: 1,
            lock_delay: Duration::ZERO,
        }
    }

    /// A lock's holder and queue.
    ///
    /// ```no_run
    /// # async fn demo(client: baton::client::Client) -> Result<(), baton::client::ClientError> {
    /// let status = client.status("customer1").await?;
    /// match status.holder {
    ///     Some(h) => println!("held by {} ({} waiting)", h.index, status.queue.len()),
    ///     None => println!("free"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn status(&self, key: impl Into<String>) -> Result<LockStatus, ClientError> {
        let key = key.into();
        let r = self
            .unary(|Stubs { mut lock, .. }| {
                let req = pb::GetRequest { key: key.clone() };
                async move { lock.get(req).await }
            })
            .await?
            .into_inner();
        Ok(LockStatus {
            key: r.key,
            holder: r.holder.map(Holder::from),
            holders: r.holders.into_iter().map(Holder::from).collect(),
            queue: r.queue.into_iter().map(Waiting::from).collect(),
            limit: r.limit,
            delayed_until: (r.delayed_until_unix_ms > 0).then(|| unix_ms(r.delayed_until_unix_ms)),
        })
    }

    /// Whether `index` is one of `key`'s holders now: a resource handed a
    /// fencing token asks this before it applies a write (Chubby's
    /// CheckSequencer). Needs only the read right.
    ///
    /// ```no_run
    /// # async fn demo(client: baton::client::Client) -> Result<(), baton::client::ClientError> {
    /// if !client.check("customer1", 42).await?.current {
    ///     println!("stale token: refuse the write");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn check(
        &self,
        key: impl Into<String>,
        index: u64,
    ) -> Result<TokenCheck, ClientError> {
        let key = key.into();
        let r = self
            .unary(|Stubs { mut lock, .. }| {
                let req = pb::CheckRequest {
                    key: key.clone(),
                    index,
                };
                async move { lock.check(req).await }
            })
            .await?
            .into_inner();
        Ok(TokenCheck {
            current: r.current,
            holders: r.holders.into_iter().map(Holder::from).collect(),
        })
    }

    /// Removes an entry from a lock's queue: the holder (the next entry
    /// holds the lock at once) or a waiting entry (its waiters fail with
    /// [`ClientError::Aborted`]). [`ClientError::NotFound`] if none matches.
    ///
    /// ```no_run
    /// # async fn demo(client: baton::client::Client) -> Result<(), baton::client::ClientError> {
    /// use baton::client::Entry;
    ///
    /// let r = client.release("customer1", Entry::Value("worker-7".into())).await?;
    /// println!("released {} (was holder: {})", r.index, r.was_holder);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn release(
        &self,
        key: impl Into<String>,
        entry: Entry,
    ) -> Result<Released, ClientError> {
        let key = key.into();
        let target = release_target(entry);
        let r = self
            .unary(|Stubs { mut lock, .. }| {
                let req = pb::ReleaseRequest {
                    key: key.clone(),
                    target: Some(target.clone()),
                };
                async move { lock.release(req).await }
            })
            .await?
            .into_inner();
        Ok(Released {
            index: r.index,
            was_holder: r.was_holder,
        })
    }

    /// Renews an entry by hand: resets the holder's deadline to now + `ttl`,
    /// or sets the ttl a waiting entry will get. Returns whether the entry
    /// holds the lock. A [`LockGuard`] does this by itself.
    ///
    /// ```no_run
    /// # async fn demo(client: baton::client::Client) -> Result<(), baton::client::ClientError> {
    /// use std::time::Duration;
    /// use baton::client::Entry;
    ///
    /// let held = client.renew("customer1", Entry::Index(42), Duration::from_secs(30)).await?;
    /// # let _ = held;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn renew(
        &self,
        key: impl Into<String>,
        entry: Entry,
        ttl: Duration,
    ) -> Result<bool, ClientError> {
        let key = key.into();
        let ttl_ms = super::error::millis("ttl", ttl)?;
        let target = renew_target(entry);
        let r = self
            .unary(|Stubs { mut lock, .. }| {
                let req = pb::RenewRequest {
                    key: key.clone(),
                    target: Some(target.clone()),
                    ttl_ms,
                };
                async move { lock.renew(req).await }
            })
            .await?
            .into_inner();
        Ok(r.held)
    }
}
