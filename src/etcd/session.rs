//! The gateway's link to etcd: one client, one *session lease* kept alive
//! while the link is up, and the state everybody else watches.
//!
//! The session lease carries this gateway's queued entries and
//! registrations (never a hold). While etcd answers, a background task keeps
//! it alive; when etcd stops answering (the keep-alive stream breaks, a
//! request times out, or etcd says the lease is gone) the link goes
//! [`Link::Down`], every queued request on this gateway fails with
//! UNAVAILABLE, and the task keeps trying to reach etcd. Once it can, it
//! revokes the old session lease (removing whatever queued entries survived
//! the outage, since nobody waits on them any more), grants a new one and
//! goes [`Link::Up`] again: the gateway recovers by itself.
//!
//! A gateway killed with `kill -9` stops keeping its lease alive, so etcd
//! removes its queued entries `--etcd-queue-lease-secs` later; held locks are
//! on leases of their own and are not affected.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use etcd_client::{Client, ConnectOptions};
use futures::StreamExt;
use tokio::sync::{Mutex, Notify, watch};

use super::{config::EtcdConfig, error::EtcdError, pacer::Pacer};

/// How long a tombstone lease lives; tombstones only need to outlive the
/// watchers that read them right after the delete.
const TOMB_LEASE_SECS: i64 = 60;
/// Tombstones go on a fresh lease once the current one is this old, so no
/// tombstone lives less than `TOMB_LEASE_SECS - TOMB_ROTATE` seconds.
const TOMB_ROTATE: Duration = Duration::from_secs(20);

/// A live link to etcd: the client and this gateway's session lease.
pub struct Session {
    /// The etcd client (cheap to clone; one connection pool).
    pub client: Client,
    /// The session lease: queued entries and registrations hang on it.
    pub lease: i64,
    /// Counts sessions; a tracker started under one epoch gives up when the
    /// link moves to another.
    pub epoch: u64,
    /// The lease tombstones go on, and when it was granted.
    tomb: Mutex<Option<(i64, Instant)>>,
}

impl Session {
    /// The lease to put tombstones on: short-lived, rotated, shared by every
    /// tombstone this gateway writes meanwhile.
    pub async fn tomb_lease(&self, timeout: Duration) -> Result<i64, EtcdError> {
        let mut tomb = self.tomb.lock().await;
        if let Some((id, at)) = *tomb
            && at.elapsed() < TOMB_ROTATE
        {
            return Ok(id);
        }
        let mut lease = self.client.lease_client();
        let resp = tokio::time::timeout(timeout, lease.grant(TOMB_LEASE_SECS, None))
            .await
            .map_err(|_| EtcdError::Timeout(timeout))??;
        *tomb = Some((resp.id(), Instant::now()));
        Ok(resp.id())
    }

    /// Forgets the tombstone lease (etcd said it is gone).
    pub async fn drop_tomb_lease(&self) {
        *self.tomb.lock().await = None;
    }
}

/// The state of the link, as watchers of [`Connector::link`] see it.
#[derive(Clone)]
pub enum Link {
    /// Not connected yet since the gateway started.
    Connecting(String),
    /// Connected, with a live session.
    Up(Arc<Session>),
    /// Lost; the reason says why. The gateway keeps trying.
    Down(String),
}

/// The handle the rest of the backend uses to reach etcd.
pub struct Connector {
    link: watch::Receiver<Link>,
    probe: Arc<Notify>,
    timeout: Duration,
    pacer: Pacer,
}

impl Connector {
    /// Checks `config` and starts the background task that connects and
    /// keeps the session alive. Connecting happens in the background, so
    /// the server starts even while etcd is unreachable.
    pub fn start(config: &EtcdConfig) -> Result<Arc<Self>, EtcdError> {
        let options = config.connect_options()?;
        let (tx, link) = watch::channel(Link::Connecting("connecting to etcd".into()));
        let probe = Arc::new(Notify::new());
        let manager = Manager {
            endpoints: config.endpoints.clone(),
            options,
            ttl: config.queue_lease_secs as i64,
            timeout: config.timeout,
            tx,
            probe: probe.clone(),
        };
        tokio::spawn(manager.run());
        Ok(Arc::new(Self {
            link,
            probe,
            timeout: config.timeout,
            pacer: Pacer::new(config.max_inflight, config.timeout),
        }))
    }

    /// The live session. Before the first connection this waits (at most
    /// the request timeout); once the link has been up, a lost link fails
    /// at once, so clients hear UNAVAILABLE quickly during an outage.
    pub async fn session(&self) -> Result<Arc<Session>, EtcdError> {
        let mut link = self.link.clone();
        let wait = async {
            loop {
                let state = link.borrow_and_update().clone();
                match state {
                    Link::Up(s) => return Ok(s),
                    Link::Down(why) => return Err(EtcdError::NoSession(why)),
                    Link::Connecting(_) => {
                        if link.changed().await.is_err() {
                            return Err(EtcdError::NoSession("the etcd link has stopped".into()));
                        }
                    }
                }
            }
        };
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(EtcdError::NoSession(match &*self.link.borrow() {
                Link::Connecting(why) | Link::Down(why) => why.clone(),
                Link::Up(_) => "connecting to etcd".into(),
            })),
        }
    }

    /// The session if the link is up now.
    pub fn current(&self) -> Option<Arc<Session>> {
        match &*self.link.borrow() {
            Link::Up(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// A receiver that changes whenever the link does.
    pub fn link(&self) -> watch::Receiver<Link> {
        self.link.clone()
    }

    /// Asks the background task to check the link now (a request failed in
    /// a way that suggests etcd is gone).
    pub fn probe(&self) {
        self.probe.notify_one();
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// What every KV request goes through (see [`pacer`](super::pacer)).
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }
}

/// The background task behind [`Connector`].
struct Manager {
    endpoints: Vec<String>,
    options: ConnectOptions,
    ttl: i64,
    timeout: Duration,
    tx: watch::Sender<Link>,
    probe: Arc<Notify>,
}

impl Manager {
    async fn run(self) {
        let Some(client) = self.connect().await else {
            return;
        };
        let mut epoch = 0;
        let mut old_lease: Option<i64> = None;
        let mut backoff = Backoff::new();
        while !self.tx.is_closed() {
            let mut leases = client.lease_client();
            let lease = match tokio::time::timeout(self.timeout, leases.grant(self.ttl, None)).await
            {
                Ok(Ok(resp)) => resp.id(),
                Ok(Err(e)) => {
                    self.down(format!("etcd is unavailable: {e}"));
                    backoff.wait().await;
                    continue;
                }
                Err(_) => {
                    self.down(format!("etcd did not answer within {:?}", self.timeout));
                    backoff.wait().await;
                    continue;
                }
            };
            backoff.reset();
            if let Some(old) = old_lease.take() {
                // Whatever queued entries outlived the outage have no waiter
                // any more: they all failed when the link went down.
                let mut leases = client.lease_client();
                let timeout = self.timeout;
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(timeout, leases.revoke(old)).await;
                });
            }
            epoch += 1;
            tracing::info!(lease, epoch, "etcd session is up");
            let _ = self.tx.send(Link::Up(Arc::new(Session {
                client: client.clone(),
                lease,
                epoch,
                tomb: Mutex::new(None),
            })));
            let why = self.keep_alive(&client, lease).await;
            tracing::warn!(reason = %why, "etcd session lost; queued requests fail until it is back");
            self.down(why);
            old_lease = Some(lease);
            backoff.wait().await;
        }
    }

    /// Creates the client; with a user, this authenticates, so it is retried
    /// until etcd answers.
    async fn connect(&self) -> Option<Client> {
        let mut backoff = Backoff::new();
        loop {
            if self.tx.is_closed() {
                return None;
            }
            let attempt = Client::connect(&self.endpoints, Some(self.options.clone()));
            let why = match tokio::time::timeout(self.timeout, attempt).await {
                Ok(Ok(client)) => return Some(client),
                Ok(Err(e)) => format!("cannot connect to etcd at {:?}: {e}", self.endpoints),
                Err(_) => format!(
                    "cannot connect to etcd at {:?} within {:?}",
                    self.endpoints, self.timeout
                ),
            };
            tracing::warn!(reason = %why, "etcd is not reachable yet");
            self.tx.send_modify(|l| {
                if let Link::Connecting(r) = l {
                    *r = why.clone();
                }
            });
            backoff.wait().await;
        }
    }

    fn down(&self, why: String) {
        self.tx.send_modify(|l| match l {
            Link::Connecting(r) => *r = why,
            _ => *l = Link::Down(why),
        });
    }

    /// Keeps `lease` alive until that fails; returns why.
    async fn keep_alive(&self, client: &Client, lease: i64) -> String {
        let mut leases = client.lease_client();
        let (mut keeper, mut stream) =
            match tokio::time::timeout(self.timeout, leases.keep_alive(lease)).await {
                Ok(Ok(k)) => k,
                Ok(Err(e)) => return format!("cannot keep the etcd session alive: {e}"),
                Err(_) => return format!("etcd did not answer within {:?}", self.timeout),
            };
        let interval = Duration::from_millis((self.ttl as u64 * 1000 / 3).max(500));
        let mut next = tokio::time::Instant::now() + interval;
        let mut pending: Option<tokio::time::Instant> = None;
        loop {
            let overdue = pending.map(|at| at + self.timeout);
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = self.probe.notified() => {}
                msg = stream.next() => {
                    match msg {
                        Some(Ok(resp)) if resp.ttl() > 0 => {
                            pending = None;
                            continue;
                        }
                        Some(Ok(_)) => return "the etcd session lease expired".into(),
                        Some(Err(e)) => return format!("etcd keep-alive failed: {e}"),
                        None => return "etcd closed the keep-alive stream".into(),
                    }
                }
                () = sleep_until_opt(overdue) => {
                    return format!("etcd did not answer a keep-alive within {:?}", self.timeout);
                }
            }
            if self.tx.is_closed() {
                return "the gateway is stopping".into();
            }
            if let Err(e) = keeper.keep_alive().await {
                return format!("etcd keep-alive failed: {e}");
            }
            pending.get_or_insert_with(tokio::time::Instant::now);
            next = tokio::time::Instant::now() + interval;
        }
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Retry pacing: 100 ms doubling to 2 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(100))
    }

    fn reset(&mut self) {
        self.0 = Duration::from_millis(100);
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(2));
    }
}
