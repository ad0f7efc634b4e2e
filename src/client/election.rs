//! Leader election: [`Client::campaign`] waits to lead and returns a
//! [`Leadership`] that renews itself like a lock guard; [`Client::leader`]
//! and [`Client::observe`] tell who leads; [`Client::resign`] withdraws a
//! candidate by name.
//!
//! An election is a lock whose entries are named by candidate: election `x`
//! is lock `x`, and the leadership's index is a fencing token like a lock's.

use std::{
    future::{Future, IntoFuture},
    pin::Pin,
    time::{Duration, SystemTime},
};

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tonic::Streaming;

use super::connect::Stubs;
use super::{
    connect::{Client, Failure, fails_over},
    error::{ClientError, millis},
    hold::{self, Hold, Lost, Step, Want},
    lock::{DEFAULT_TTL, nonzero_ms, unix_ms},
};
use crate::proto::v1::{self as pb, campaign_event};

/// A campaign being put together; see [`Client::campaign`].
///
/// Awaiting the builder is the same as calling [`elected`](Self::elected).
#[derive(Clone, Debug)]
#[must_use = "a campaign does nothing until it is awaited"]
pub struct CampaignBuilder {
    client: Client,
    election: String,
    name: String,
    ttl: Duration,
    timeout: Option<Duration>,
    lock_delay: Duration,
}

impl CampaignBuilder {
    /// Lock-delay: if this leadership is lost by expiry, nobody is elected
    /// until `delay` after its deadline (see [`LockBuilder::lock_delay`](super::LockBuilder::lock_delay)).
    pub fn lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = delay;
        self
    }

    /// How long the leadership lasts without a renew (default 60 s). The
    /// handle renews every third of it; zero means it never expires.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long to wait to be elected: zero only if nobody leads now; unset
    /// (the default) waits forever. On expiry the campaign fails with
    /// [`ClientError::Timeout`] and the candidate is withdrawn.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Enters the candidate and waits until it leads. Dropping the future
    /// before then withdraws the candidate.
    ///
    /// ```no_run
    /// # async fn demo(client: baton::client::Client) -> Result<(), baton::client::ClientError> {
    /// let leadership = client.campaign("scheduler", "node-1").elected().await?;
    /// println!("leading with token {}", leadership.index());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn elected(self) -> Result<Leadership, ClientError> {
        let want = Want {
            key: self.election.clone(),
            ttl: self.ttl,
            timeout: self.timeout,
            // Every campaign has a name, and others may campaign with it.
            joinable: true,
        };
        let ttl_ms = millis("ttl", self.ttl)?;
        let lock_delay_ms = millis("lock_delay", self.lock_delay)?;
        let hold = hold::acquire(&self.client, want, |_, mut election, timeout_ms| {
            let req = pb::CampaignRequest {
                election: self.election.clone(),
                name: self.name.clone(),
                ttl_ms,
                timeout_ms,
                lock_delay_ms,
            };
            async move {
                let stream = election.campaign(req).await?.into_inner();
                Ok(stream.map(|ev| ev.map(campaign_step)).boxed())
            }
        })
        .await?;
        Ok(Leadership {
            hold,
            name: self.name,
        })
    }
}

impl IntoFuture for CampaignBuilder {
    type Output = Result<Leadership, ClientError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.elected())
    }
}

fn campaign_step(ev: pb::CampaignEvent) -> Step {
    match ev.event {
        Some(campaign_event::Event::Queued(q)) => Step::Queued {
            index: q.index,
            position: q.position,
        },
        Some(campaign_event::Event::Elected(a)) => Step::Acquired { index: a.index },
        Some(campaign_event::Event::Ended(e)) => Step::Ended { reason: e.reason },
        None => Step::Queued {
            index: 0,
            position: 0,
        },
    }
}

/// This process leads an election. Like a [`LockGuard`](super::LockGuard):
/// it renews in the background, tells when the leadership is lost, and
/// resigns when dropped (best effort) or on [`resign`](Self::resign).
///
/// Resigning releases the leadership's own entry (by its index), so it
/// never removes a later candidate that happens to use the same name.
///
/// ```no_run
/// # async fn demo() -> Result<(), baton::client::ClientError> {
/// use std::time::Duration;
/// use baton::client::Client;
///
/// let client = Client::connect("http://127.0.0.1:4001").await?;
/// let leadership = client.campaign("scheduler", "node-1").ttl(Duration::from_secs(10)).await?;
/// tokio::select! {
///     _ = lead(leadership.index()) => leadership.resign().await?,
///     lost = leadership.lost() => eprintln!("no longer leader: {lost}"),
/// }
/// # async fn lead(_fencing_token: u64) {}
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Leadership {
    hold: Hold,
    name: String,
}

impl Leadership {
    /// The election's name.
    pub fn election(&self) -> &str {
        self.hold.key()
    }

    /// The candidate name that leads.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The leadership's fencing token.
    pub fn index(&self) -> u64 {
        self.hold.index()
    }

    /// The ttl the leadership is renewed with (zero: never expires).
    pub fn ttl(&self) -> Duration {
        self.hold.ttl()
    }

    /// Resolves when the leadership is lost (expired, resigned by someone
    /// else, or not renewable before its deadline). Never resolves while it
    /// is kept. The future does not borrow the handle.
    pub fn lost(&self) -> impl Future<Output = Lost> + Send + 'static {
        self.hold.lost()
    }

    /// `Some(reason)` once the leadership has been lost.
    pub fn is_lost(&self) -> Option<Lost> {
        self.hold.is_lost()
    }

    /// A channel that turns `Some(reason)` when the leadership is lost.
    pub fn lost_watch(&self) -> watch::Receiver<Option<Lost>> {
        self.hold.lost_watch()
    }

    /// Stops renewing and steps down: the next candidate leads at once.
    /// Fails with [`ClientError::Lost`] if the leadership had been lost.
    pub async fn resign(self) -> Result<(), ClientError> {
        self.hold.release().await
    }
}

/// Who leads an election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The leader's candidate name.
    pub name: String,
    /// The leadership's fencing token.
    pub index: u64,
    /// Its ttl; `None` if it never expires.
    pub ttl: Option<Duration>,
    /// When it was elected (server clock).
    pub elected_at: SystemTime,
    /// When it expires unless renewed (server clock); `None` if never.
    pub deadline: Option<SystemTime>,
}

impl From<pb::Leader> for Leader {
    fn from(l: pb::Leader) -> Self {
        Self {
            name: l.name,
            index: l.index,
            ttl: nonzero_ms(l.ttl_ms),
            elected_at: unix_ms(l.elected_unix_ms),
            deadline: (l.deadline_unix_ms > 0).then(|| unix_ms(l.deadline_unix_ms)),
        }
    }
}

/// What [`Client::resign`] withdrew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resigned {
    /// The candidate's entry index.
    pub index: u64,
    /// Whether it was leading (the next candidate now leads).
    pub was_leader: bool,
}

impl Client {
    /// Starts a campaign for `name` in `election`; configure it, then await
    /// it (or call [`elected`](CampaignBuilder::elected)).
    ///
    /// ```no_run
    /// # async fn demo(client: baton::client::Client) -> Result<(), baton::client::ClientError> {
    /// use std::time::Duration;
    ///
    /// let leadership = client
    ///     .campaign("scheduler", "node-1")
    ///     .ttl(Duration::from_secs(15))
    ///     .await?;
    /// # let _ = leadership;
    /// # Ok(())
    /// # }
    /// ```
    pub fn campaign(
        &self,
        election: impl Into<String>,
        name: impl Into<String>,
    ) -> CampaignBuilder {
        CampaignBuilder {
            client: self.clone(),
            election: election.into(),
            name: name.into(),
            ttl: DEFAULT_TTL,
            timeout: None,
            lock_delay: Duration::ZERO,
        }
    }

    /// The election's current leader, if any.
    ///
    /// ```no_run
    /// # async fn demo(client: baton::client::Client) -> Result<(), baton::client::ClientError> {
    /// match client.leader("scheduler").await? {
    ///     Some(leader) => println!("{} leads", leader.name),
    ///     None => println!("nobody leads"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn leader(&self, election: impl Into<String>) -> Result<Option<Leader>, ClientError> {
        let election = election.into();
        let r = self
            .unary(
                |Stubs {
                     election: mut e, ..
                 }| {
                    let req = pb::LeaderRequest {
                        election: election.clone(),
                    };
                    async move { e.leader(req).await }
                },
            )
            .await?
            .into_inner();
        Ok(r.leader.map(Leader::from))
    }

    /// Withdraws the candidate `name` from `election`: if it leads, the next
    /// candidate leads at once. [`ClientError::NotFound`] if no candidate
    /// has the name.
    ///
    /// ```no_run
    /// # async fn demo(client: baton::client::Client) -> Result<(), baton::client::ClientError> {
    /// let r = client.resign("scheduler", "node-1").await?;
    /// println!("was leader: {}", r.was_leader);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn resign(
        &self,
        election: impl Into<String>,
        name: impl Into<String>,
    ) -> Result<Resigned, ClientError> {
        let (election, name) = (election.into(), name.into());
        let r = self
            .unary(
                |Stubs {
                     election: mut e, ..
                 }| {
                    let req = pb::ResignRequest {
                        election: election.clone(),
                        name: name.clone(),
                    };
                    async move { e.resign(req).await }
                },
            )
            .await?
            .into_inner();
        Ok(Resigned {
            index: r.index,
            was_leader: r.was_leader,
        })
    }

    /// Streams the election's leader: the current one first (`None` when
    /// nobody leads), then each change. If the endpoint goes away the stream
    /// resubscribes on the next one (skipping a repeat of the last leader);
    /// it ends after yielding an error when no endpoint answers.
    ///
    /// ```no_run
    /// # async fn demo(client: baton::client::Client) -> Result<(), baton::client::ClientError> {
    /// use futures::StreamExt;
    ///
    /// let mut leaders = std::pin::pin!(client.observe("scheduler"));
    /// while let Some(leader) = leaders.next().await {
    ///     match leader? {
    ///         Some(l) => println!("{} leads ({})", l.name, l.index),
    ///         None => println!("nobody leads"),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn observe(
        &self,
        election: impl Into<String>,
    ) -> impl Stream<Item = Result<Option<Leader>, ClientError>> + Send + 'static {
        let state = Observing {
            client: self.clone(),
            election: election.into(),
            stream: None,
            last: None,
            broken: 0,
            done: false,
        };
        futures::stream::unfold(state, |mut st| async move {
            let item = st.next().await?;
            Some((item, st))
        })
    }
}

/// The state behind [`Client::observe`].
struct Observing {
    client: Client,
    election: String,
    stream: Option<Streaming<pb::LeaderResponse>>,
    /// The last leader yielded (name and index), to skip repeats after a
    /// resubscription.
    last: Option<Option<(String, u64)>>,
    /// Streams broken in a row without a message.
    broken: usize,
    done: bool,
}

impl Observing {
    async fn next(&mut self) -> Option<Result<Option<Leader>, ClientError>> {
        loop {
            if self.done {
                return None;
            }
            let stream = match self.stream.as_mut() {
                Some(s) => s,
                None => match self.subscribe().await {
                    Ok(s) => self.stream.insert(s),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
            };
            match stream.message().await {
                Ok(Some(r)) => {
                    self.broken = 0;
                    let leader = r.leader.map(Leader::from);
                    let id = leader.as_ref().map(|l| (l.name.clone(), l.index));
                    if self.last.as_ref() == Some(&id) {
                        continue;
                    }
                    self.last = Some(id);
                    return Some(Ok(leader));
                }
                Ok(None) => {
                    if let Some(e) = self.broke("the server closed the stream".into()) {
                        return Some(Err(e));
                    }
                }
                Err(s) if fails_over(&s) => {
                    if let Some(e) = self.broke(s.message().to_owned()) {
                        return Some(Err(e));
                    }
                }
                Err(s) => {
                    self.done = true;
                    return Some(Err(ClientError::from_status(&s)));
                }
            }
        }
    }

    /// Notes a broken stream; the error to end with when streams keep
    /// breaking without a message on every endpoint.
    fn broke(&mut self, message: String) -> Option<ClientError> {
        self.stream = None;
        self.broken += 1;
        tracing::debug!(election = %self.election, %message, "observe stream broke; resubscribing");
        if self.broken > self.client.endpoint_count() {
            self.done = true;
            return Some(self.client.unavailable(message));
        }
        None
    }

    async fn subscribe(&self) -> Result<Streaming<pb::LeaderResponse>, ClientError> {
        let election = self.election.clone();
        self.client
            .with_failover(
                |Stubs {
                     election: mut e, ..
                 }| {
                    let req = pb::ObserveRequest {
                        election: election.clone(),
                    };
                    async move { Ok(e.observe(req).await?.into_inner()) }
                },
            )
            .await
            .map_err(|f| match f {
                Failure::Status(s) => ClientError::from_status(&s),
                Failure::Unavailable(e) => e,
            })
    }
}
