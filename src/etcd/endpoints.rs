//! The one way baton talks to etcd: every request (the election, the
//! primary's lease keep-alive, journal commits, reads, watches, compaction)
//! goes through [`Endpoints`], which keeps the cluster's members in and out
//! of rotation as etcd's own Go client does.
//!
//! Why not the `etcd-client` crate's balanced channel alone: it keeps
//! sending a share of the requests to a member that is down (its issues 12
//! and 39), and it cannot say which member a failed request went to, so a
//! retry could land on the same dead member again. Adding and removing
//! endpoints on it (`add_endpoint`/`remove_endpoint`) would still leave
//! both problems for the requests in flight. So we keep **one
//! [`Client`] per member** (each the crate's client over that one URL) and
//! choose the member ourselves:
//!
//! - requests go round-robin over the members in rotation;
//! - a member whose request fails at the transport level (connection
//!   refused or reset, no answer within `--etcd-attempt-timeout-ms`, or "no
//!   leader") leaves the rotation at once, with one log line; a task probes
//!   it every `--etcd-health-interval-ms` with a linearizable read and puts
//!   it back, with one log line, when it answers;
//! - a request that failed **before it reached a server** (connect refused,
//!   the member refused it for having no leader) is retried at once on
//!   another member. A request that **may have reached** one (it timed out,
//!   the connection broke after it was sent) is retried only when the caller
//!   says it is safe ([`Retry::Safe`]); each call site says why it is;
//! - attempts after the first get twice the time of the one before, all
//!   within `--etcd-timeout-ms`; when every member has failed, the next
//!   round waits a little (50 ms, doubling to 500 ms), so a cluster that is
//!   electing a leader or restarting is waited for, not hammered;
//! - watches ([`Watch`]) reopen on another member from the revision after
//!   the last event they delivered, so no event is lost or repeated, and ask
//!   the member for a progress notice when quiet, so a frozen member is
//!   noticed too.
//!
//! The counts ([`EndpointStats`]) are read by the service layer's metrics.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use etcd_client::{
    Client, ConnectOptions, Event, GetOptions, WatchOptions, WatchResponse, WatchStream,
};
use tokio::{sync::OnceCell, time::Instant};

use super::error::EtcdError;
use crate::engine::EndpointStats;

/// Whether a request that may have reached etcd can be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Applying it twice is the same as once (a read, a guarded write that
    /// writes the same thing, a keep-alive): retried whatever happened.
    Safe,
    /// Only retried when it certainly did not reach a server.
    NotSent,
}

/// Why a request was tried again on another member: the `cause` label of
/// `baton_etcd_retries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Cause {
    /// The connection could not be made (refused, unreachable): the request
    /// was never sent.
    Connect = 0,
    /// The member answered that it has no leader (it refuses before doing
    /// anything).
    NoLeader = 1,
    /// No answer within the attempt's time: the member may be frozen or
    /// cut off. The request may have reached it.
    Timeout = 2,
    /// The connection broke after the request was sent, or the member said
    /// its request timed out: it may have been applied.
    Broken = 3,
    /// A watch stream ended or went quiet and was reopened elsewhere.
    Watch = 4,
}

impl Cause {
    const ALL: [Cause; 5] = [
        Cause::Connect,
        Cause::NoLeader,
        Cause::Timeout,
        Cause::Broken,
        Cause::Watch,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Connect => "connect",
            Cause::NoLeader => "no_leader",
            Cause::Timeout => "timeout",
            Cause::Broken => "broken",
            Cause::Watch => "watch",
        }
    }

    /// Whether the request certainly did not reach a server.
    fn not_sent(self) -> bool {
        matches!(self, Cause::Connect | Cause::NoLeader)
    }
}

/// How one failed attempt is handled.
#[derive(Debug)]
enum Failure {
    /// Another member may well answer: try it (see [`Cause::not_sent`] for
    /// whether the request may have been applied).
    Member(Cause),
    /// The answer would be the same anywhere (bad request, compacted,
    /// permission denied, lease not found): give it to the caller.
    Final,
}

/// Sorts an etcd client error into [`Failure`].
fn classify(e: &etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => classify_status(status),
        E::TransportError(t) => {
            if chain_has_connect_error(t) {
                Failure::Member(Cause::Connect)
            } else {
                Failure::Member(Cause::Broken)
            }
        }
        E::IoError(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => Failure::Member(Cause::Connect),
            _ => Failure::Member(Cause::Broken),
        },
        // The request channel of a stream closed under us.
        E::WatchError(_) | E::LeaseKeepAliveError(_) => Failure::Member(Cause::Broken),
        _ => Failure::Final,
    }
}

fn classify_status(status: &tonic::Status) -> Failure {
    use tonic::Code;
    let message = status.message();
    match status.code() {
        Code::Unavailable => {
            // etcd's own refusals and timeouts (rpctypes): "no leader" is
            // answered before the request is looked at; the others come
            // after it was proposed, so it may have been applied.
            if message.contains("etcdserver: no leader") {
                Failure::Member(Cause::NoLeader)
            } else if message.starts_with("etcdserver:") {
                Failure::Member(Cause::Broken)
            } else if chain_has_connect_error(status)
                || message.contains("tcp connect error")
                || message.contains("error trying to connect")
            {
                Failure::Member(Cause::Connect)
            } else {
                Failure::Member(Cause::Broken)
            }
        }
        // h2 REFUSED_STREAM is mapped to Unavailable above; a reset or
        // broken connection comes as Unknown/Internal/Cancelled.
        Code::Unknown | Code::Internal | Code::Cancelled | Code::DeadlineExceeded => {
            Failure::Member(Cause::Broken)
        }
        _ => Failure::Final,
    }
}

/// Whether the error or one of its sources is tonic's "could not connect".
fn chain_has_connect_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if err.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        next = err.source();
    }
    false
}

/// How [`Endpoints`] behaves; see the module docs and the `--etcd-*`
/// flags.
#[derive(Clone, Debug)]
pub struct EndpointsConfig {
    /// The members' client URLs.
    pub urls: Vec<String>,
    /// The crate's options for each member's client.
    pub options: ConnectOptions,
    /// A key under baton's prefix, read by the health probe (users with
    /// etcd permissions on baton's prefix only may read it).
    pub probe_key: String,
    /// The whole time one request may take, over all its attempts.
    pub timeout: Duration,
    /// The first attempt's time at one member.
    pub attempt_timeout: Duration,
    /// How often members out of rotation are probed.
    pub health_interval: Duration,
}

/// One member.
struct Member {
    url: String,
    /// Made on first use: with etcd authentication on, making it asks the
    /// member for a token, which may fail while the member is down.
    client: OnceCell<Client>,
    healthy: AtomicBool,
    /// Retries away from this member, by [`Cause`].
    retries: [AtomicU64; Cause::ALL.len()],
    /// Serializes the out/back transitions, so each logs once.
    transition: Mutex<()>,
}

struct Inner {
    members: Vec<Member>,
    options: ConnectOptions,
    probe_key: String,
    timeout: Duration,
    attempt_timeout: Duration,
    health_interval: Duration,
    next: AtomicUsize,
}

/// The etcd cluster's members and the rotation over them. Cheap to clone;
/// see the module docs.
#[derive(Clone)]
pub struct Endpoints {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field(
                "members",
                &self
                    .inner
                    .members
                    .iter()
                    .map(|m| &m.url)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Options of one call.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    /// Whether a request that may have reached etcd may be sent again.
    pub retry: Retry,
    /// When to give up (default: `--etcd-timeout-ms` from now).
    pub deadline: Option<Instant>,
    /// The first attempt's time (default: `--etcd-attempt-timeout-ms`).
    pub attempt_timeout: Option<Duration>,
}

impl Call {
    /// A call that may be sent again whatever happened to an attempt.
    pub fn safe() -> Self {
        Self {
            retry: Retry::Safe,
            deadline: None,
            attempt_timeout: None,
        }
    }

    /// A call retried only when it certainly did not reach etcd.
    pub fn once() -> Self {
        Self {
            retry: Retry::NotSent,
            ..Self::safe()
        }
    }
}

/// The first pause after every member failed, and the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_millis(500));

impl Endpoints {
    /// The members of `config.urls`, all in rotation until they fail. No
    /// connection is made yet; a health task runs for as long as a clone
    /// lives. Call from within a tokio runtime.
    pub fn new(config: EndpointsConfig) -> Result<Self, EtcdError> {
        if config.urls.is_empty() {
            return Err(EtcdError::Config(
                "--etcd-endpoints needs at least one URL".into(),
            ));
        }
        let members = config
            .urls
            .iter()
            .map(|url| Member {
                url: url.clone(),
                client: OnceCell::new(),
                healthy: AtomicBool::new(true),
                retries: Default::default(),
                transition: Mutex::new(()),
            })
            .collect();
        let inner = Arc::new(Inner {
            members,
            options: config.options,
            probe_key: config.probe_key,
            timeout: config.timeout,
            attempt_timeout: config.attempt_timeout.max(Duration::from_millis(1)),
            health_interval: config.health_interval.max(Duration::from_millis(10)),
            next: AtomicUsize::new(0),
        });
        tokio::spawn(health(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// `--etcd-timeout-ms`: how long one call may take over all attempts.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// `--etcd-attempt-timeout-ms`.
    pub fn attempt_timeout(&self) -> Duration {
        self.inner.attempt_timeout
    }

    /// Each member's health and retries, for `/metrics`.
    pub fn stats(&self) -> Vec<EndpointStats> {
        self.inner
            .members
            .iter()
            .map(|m| EndpointStats {
                endpoint: m.url.clone(),
                healthy: m.healthy.load(Ordering::Relaxed),
                retries: Cause::ALL
                    .iter()
                    .map(|c| (c.name(), m.retries[*c as usize].load(Ordering::Relaxed)))
                    .collect(),
            })
            .collect()
    }

    /// Runs `f` on a member's client, and again on others as the module
    /// docs say, until it succeeds, fails for good, or the call's time is
    /// up.
    pub async fn call<T, F, Fut>(&self, call: Call, mut f: F) -> Result<T, EtcdError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_on(call, |_, client| f(client))
            .await
            .map(|(_, v)| v)
    }

    /// [`call`](Self::call), also saying which member answered.
    async fn call_on<T, F, Fut>(&self, call: Call, mut f: F) -> Result<(usize, T), EtcdError>
    where
        F: FnMut(usize, Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let inner = &self.inner;
        let deadline = call
            .deadline
            .unwrap_or_else(|| Instant::now() + inner.timeout);
        let mut attempt_timeout = call.attempt_timeout.unwrap_or(inner.attempt_timeout);
        let mut tried = vec![false; inner.members.len()];
        let mut backoff = BACKOFF.0;
        let mut last: Option<EtcdError> = None;
        loop {
            let Some(i) = self.pick(&tried) else {
                // Every member failed this round: wait a little, then go
                // round again (a leader election, a restart).
                tried.iter_mut().for_each(|t| *t = false);
                let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(BACKOFF.1);
                continue;
            };
            tried[i] = true;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(last.unwrap_or(EtcdError::Timeout(inner.timeout)));
            }
            let member = &inner.members[i];
            let this_attempt = attempt_timeout.min(left);
            let outcome = tokio::time::timeout(this_attempt, async {
                let client = self.client(member).await?;
                f(i, client).await
            })
            .await;
            let cause = match outcome {
                Ok(Ok(v)) => {
                    self.mark_up(member);
                    return Ok((i, v));
                }
                Ok(Err(e)) => match classify(&e) {
                    Failure::Final => return Err(EtcdError::Client(e)),
                    Failure::Member(cause) => {
                        last = Some(EtcdError::Client(e));
                        cause
                    }
                },
                Err(_) => {
                    last = Some(EtcdError::Timeout(this_attempt));
                    // A slow cluster gets more time on the next attempt.
                    attempt_timeout = attempt_timeout.saturating_mul(2);
                    Cause::Timeout
                }
            };
            let why = last.as_ref().map(ToString::to_string).unwrap_or_default();
            self.mark_down(member, &why);
            if call.retry == Retry::NotSent && !cause.not_sent() {
                // It may have been applied: the caller decides.
                return Err(last.unwrap_or(EtcdError::Timeout(this_attempt)));
            }
            member.retries[cause as usize].fetch_add(1, Ordering::Relaxed);
            tracing::debug!(endpoint = %member.url, cause = cause.name(), error = %why, "retrying an etcd request on another member");
        }
    }

    /// Opens a watch of `key` (with `options`, whose start revision the
    /// watch sets) from `start_revision`, kept open across members.
    pub fn watch(
        &self,
        key: impl Into<Vec<u8>>,
        options: WatchOptions,
        start_revision: i64,
    ) -> Watch {
        Watch {
            endpoints: self.clone(),
            key: key.into(),
            options,
            next_revision: start_revision,
            open: None,
        }
    }

    /// The next member to try: round-robin over those in rotation not yet
    /// tried, then those out of rotation (it may be back before the probe
    /// says so), `None` when every member was tried.
    fn pick(&self, tried: &[bool]) -> Option<usize> {
        let members = &self.inner.members;
        let n = members.len();
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let order = (0..n).map(|k| (start + k) % n);
        order
            .clone()
            .find(|&i| !tried[i] && members[i].healthy.load(Ordering::Relaxed))
            .or_else(|| order.clone().find(|&i| !tried[i]))
    }

    async fn client(&self, member: &Member) -> Result<Client, etcd_client::Error> {
        member
            .client
            .get_or_try_init(|| {
                Client::connect([member.url.as_str()], Some(self.inner.options.clone()))
            })
            .await
            .cloned()
    }

    fn mark_down(&self, member: &Member, why: &str) {
        let _t = member.transition.lock().unwrap_or_else(|p| p.into_inner());
        if member.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(endpoint = %member.url, error = %why, "etcd endpoint out of rotation");
        }
    }

    fn mark_up(&self, member: &Member) {
        let _t = member.transition.lock().unwrap_or_else(|p| p.into_inner());
        if !member.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!(endpoint = %member.url, "etcd endpoint back in rotation");
        }
    }
}

/// Probes the members out of rotation until the [`Endpoints`] are gone.
async fn health(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(interval) = inner.upgrade().map(|i| i.health_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let endpoints = Endpoints { inner };
        let down: Vec<usize> = (0..endpoints.inner.members.len())
            .filter(|&i| !endpoints.inner.members[i].healthy.load(Ordering::Relaxed))
            .collect();
        let probes = down.into_iter().map(|i| {
            let endpoints = endpoints.clone();
            async move {
                let member = &endpoints.inner.members[i];
                // A linearizable read needs a member in touch with a leader
                // and a quorum: what every request of ours needs.
                let probe = async {
                    let mut client = endpoints.client(member).await?;
                    client
                        .get(
                            endpoints.inner.probe_key.clone(),
                            Some(GetOptions::new().with_count_only()),
                        )
                        .await
                };
                if let Ok(Ok(_)) =
                    tokio::time::timeout(endpoints.inner.attempt_timeout, probe).await
                {
                    endpoints.mark_up(member);
                }
            }
        });
        futures::future::join_all(probes).await;
    }
}

/// A watch that survives the loss of the member it is on. Events come in
/// revision order, each once: after a member is lost the watch reopens
/// on another from the revision after the last event it delivered.
pub struct Watch {
    endpoints: Endpoints,
    key: Vec<u8>,
    options: WatchOptions,
    /// The revision the next event must have at least.
    next_revision: i64,
    /// The stream and its member, and whether a progress notice was asked
    /// for and not yet answered.
    open: Option<(usize, WatchStream, bool)>,
}

impl Watch {
    /// The next events (one etcd revision's or more, never empty). Errors:
    /// the history from the watch's revision was compacted, etcd cancelled
    /// the watch, or no member could open it within `--etcd-timeout-ms`.
    pub async fn next(&mut self) -> Result<Vec<Event>, EtcdError> {
        let quiet = self
            .endpoints
            .inner
            .health_interval
            .max(Duration::from_millis(500));
        loop {
            let (i, stream, asked) = match &mut self.open {
                Some(open) => open,
                None => {
                    self.open = Some(self.reopen().await?);
                    continue;
                }
            };
            let member_index = *i;
            let wait = if *asked {
                self.endpoints.inner.attempt_timeout
            } else {
                quiet
            };
            let failure = match tokio::time::timeout(wait, stream.message()).await {
                // A member that lost its leader cancels its watches (we
                // ask it to, with require-leader): go to another.
                Ok(Ok(Some(resp)))
                    if resp.canceled()
                        && resp.compact_revision() == 0
                        && resp.cancel_reason().contains("no leader") =>
                {
                    resp.cancel_reason().to_owned()
                }
                Ok(Ok(Some(resp))) => {
                    *asked = false;
                    if let Some(events) = self.take(&resp)? {
                        return Ok(events);
                    }
                    continue;
                }
                Ok(Ok(None)) => "the watch stream closed".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(_) if !*asked => {
                    // Quiet: ask for a progress notice, which a live member
                    // answers at once.
                    *asked = stream.request_progress().await.is_ok();
                    if *asked {
                        continue;
                    }
                    "the watch stream closed".to_owned()
                }
                Err(_) => format!(
                    "no progress notice within {:?}",
                    self.endpoints.inner.attempt_timeout
                ),
            };
            let member = &self.endpoints.inner.members[member_index];
            self.endpoints.mark_down(member, &failure);
            member.retries[Cause::Watch as usize].fetch_add(1, Ordering::Relaxed);
            self.open = None;
            // A short pause, so a cluster that cancels every watch (while
            // it elects a leader) is not asked again in a tight loop.
            tokio::time::sleep(BACKOFF.0).await;
        }
    }

    /// The events of a response, `None` for one without any; errors for a
    /// cancelled watch.
    fn take(&mut self, resp: &WatchResponse) -> Result<Option<Vec<Event>>, EtcdError> {
        if resp.canceled() {
            let reason = if resp.compact_revision() > 0 {
                format!(
                    "history before revision {} was compacted",
                    resp.compact_revision()
                )
            } else {
                resp.cancel_reason().to_owned()
            };
            return Err(EtcdError::WatchLost(reason));
        }
        if resp.events().is_empty() {
            // A progress notice (not the answer to opening the watch, whose
            // header is the revision now, not what was sent): every event
            // up to its revision was delivered, so a reopened watch may
            // start after it, which keeps it clear of compaction.
            if !resp.created()
                && let Some(h) = resp.header()
            {
                self.next_revision = self.next_revision.max(h.revision() + 1);
            }
            return Ok(None);
        }
        // Drop anything before the next revision: a reopened watch must
        // not repeat an event, whatever a member sends.
        let events: Vec<Event> = resp
            .events()
            .iter()
            .filter(|e| {
                e.kv()
                    .is_some_and(|kv| kv.mod_revision() >= self.next_revision)
            })
            .cloned()
            .collect();
        if let Some(last) = events
            .iter()
            .filter_map(|e| e.kv())
            .map(|kv| kv.mod_revision())
            .max()
        {
            self.next_revision = last + 1;
        }
        Ok((!events.is_empty()).then_some(events))
    }

    async fn reopen(&self) -> Result<(usize, WatchStream, bool), EtcdError> {
        let options = self.options.clone().with_start_revision(self.next_revision);
        // Opening a watch is a read: safe on any member, any number of
        // times.
        let (i, stream) = self
            .endpoints
            .call_on(Call::safe(), |_, mut client| {
                let key = self.key.clone();
                let options = options.clone();
                async move { client.watch(key, Some(options)).await }
            })
            .await?;
        Ok((i, stream, false))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn status(s: tonic::Status) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(s)
    }

    fn cause(e: etcd_client::Error) -> Option<Cause> {
        match classify(&e) {
            Failure::Member(c) => Some(c),
            Failure::Final => None,
        }
    }

    #[test]
    fn failures_are_sorted_by_whether_the_request_may_have_been_applied() {
        use tonic::Status;
        assert_eq!(
            cause(status(Status::unavailable("tcp connect error"))),
            Some(Cause::Connect)
        );
        assert_eq!(
            cause(status(Status::unavailable("etcdserver: no leader"))),
            Some(Cause::NoLeader)
        );
        // Proposed, then timed out: it may have been applied.
        assert_eq!(
            cause(status(Status::unavailable("etcdserver: request timed out"))),
            Some(Cause::Broken)
        );
        assert_eq!(
            cause(status(Status::unknown("transport error"))),
            Some(Cause::Broken)
        );
        assert_eq!(
            cause(etcd_client::Error::IoError(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused
            ))),
            Some(Cause::Connect)
        );
        // The same answer from any member: not retried.
        for s in [
            Status::invalid_argument("etcdserver: key is not provided"),
            Status::not_found("etcdserver: requested lease not found"),
            Status::out_of_range("etcdserver: mvcc: required revision has been compacted"),
            Status::permission_denied("etcdserver: permission denied"),
            Status::resource_exhausted("etcdserver: mvcc: database space exceeded"),
        ] {
            assert_eq!(cause(status(s.clone())), None, "{s:?}");
        }
        assert!(Cause::Connect.not_sent() && Cause::NoLeader.not_sent());
        assert!(!Cause::Timeout.not_sent() && !Cause::Broken.not_sent());
    }

    fn endpoints(n: usize) -> Endpoints {
        Endpoints::new(EndpointsConfig {
            urls: (0..n)
                .map(|i| format!("http://127.0.0.1:{}", 1 + i))
                .collect(),
            options: ConnectOptions::new(),
            probe_key: "/t/primary".into(),
            timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_millis(100),
            health_interval: Duration::from_secs(3600),
        })
        .expect("endpoints")
    }

    #[tokio::test]
    async fn members_out_of_rotation_are_tried_last_and_each_once_a_round() {
        let e = endpoints(3);
        e.mark_down(&e.inner.members[1], "test");
        for _ in 0..6 {
            let first = e.pick(&[false, false, false]).expect("a member");
            assert_ne!(first, 1, "a member out of rotation came first");
        }
        assert_eq!(e.pick(&[true, false, true]), Some(1));
        assert_eq!(e.pick(&[true, true, true]), None);
        // Round-robin over those in rotation.
        let picks: BTreeSet<usize> = (0..4).map(|_| e.pick(&[false; 3]).unwrap()).collect();
        assert_eq!(picks, BTreeSet::from([0, 2]));
        let stats = e.stats();
        assert!(!stats[1].healthy && stats[0].healthy && stats[2].healthy);
        e.mark_up(&e.inner.members[1]);
        assert!(e.stats()[1].healthy);
    }

    #[tokio::test]
    async fn a_request_nobody_can_take_fails_within_the_timeout_having_tried_every_member() {
        // Nothing listens on these ports: every attempt is refused.
        let e = endpoints(2);
        let started = Instant::now();
        let r = e
            .call(Call::safe(), |mut c| async move { c.get("k", None).await })
            .await;
        assert!(r.is_err());
        assert!(started.elapsed() < Duration::from_secs(3));
        let stats = e.stats();
        assert!(stats.iter().all(|s| !s.healthy), "{stats:?}");
        for s in &stats {
            let connect = s.retries.iter().find(|(c, _)| *c == "connect").unwrap().1;
            assert!(connect >= 1, "{stats:?}");
        }
    }
}
