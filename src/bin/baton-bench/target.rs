//! What a benchmark measures: a lock service behind one small interface, so
//! every scenario runs unchanged against baton (memory, durable, over etcd)
//! and against etcd's own v3lock API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use async_trait::async_trait;
use baton::proto::v1::{self as pb, lock_client::LockClient, release_request, wait_event};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::procs::{Proc, start_baton, start_etcd};

/// The systems a run can measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// `baton --memory`.
    Memory,
    /// `baton --data-dir` (fsync'd group commits).
    Durable,
    /// `baton --backend etcd` over a local etcd.
    BatonEtcd,
    /// etcd's v3lock API, called directly.
    EtcdV3lock,
}

impl TargetKind {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "baton --memory",
            Self::Durable => "baton durable",
            Self::BatonEtcd => "baton over etcd",
            Self::EtcdV3lock => "etcd v3lock",
        }
    }
}

/// A lock held by a session: what it needs to release it.
#[derive(Clone, Debug)]
pub struct Held {
    /// When the hold expires, in Unix ms, if it has a ttl.
    pub deadline_ms: Option<u64>,
    token: Token,
}

#[derive(Clone, Debug)]
enum Token {
    Baton(u64),
    Etcd(Vec<u8>, EtcdLease),
}

/// One client connection to the target.
#[async_trait]
pub trait Session: Send + Sync {
    /// Acquires `key` (waiting as long as it takes) with this ttl (0 = none).
    async fn acquire(&self, key: &str, ttl_ms: u64) -> Result<Held>;
    /// Releases what `acquire` returned.
    async fn release(&self, key: &str, held: Held) -> Result<()>;
    /// The cheapest round trip: a gRPC health check.
    async fn ping(&self) -> Result<()>;
}

/// A running target and how to open sessions on it.
pub struct Target {
    /// Which system.
    pub kind: TargetKind,
    url: String,
    procs: Vec<Proc>,
    _dir: tempfile::TempDir,
}

impl Target {
    /// Starts the processes the target needs.
    pub fn start(kind: TargetKind) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data").display().to_string();
        let (procs, url) = match kind {
            TargetKind::Memory => {
                let (p, url) = start_baton(&["--memory".into()])?;
                (vec![p], url)
            }
            TargetKind::Durable => {
                let (p, url) = start_baton(&["--data-dir".into(), data])?;
                (vec![p], url)
            }
            TargetKind::BatonEtcd => {
                let (etcd, etcd_url) = start_etcd(&dir.path().join("etcd"))?;
                let (p, url) = start_baton(&[
                    "--backend".into(),
                    "etcd".into(),
                    "--etcd-endpoints".into(),
                    etcd_url,
                ])?;
                (vec![p, etcd], url)
            }
            TargetKind::EtcdV3lock => {
                let (etcd, etcd_url) = start_etcd(&dir.path().join("etcd"))?;
                (vec![etcd], etcd_url)
            }
        };
        Ok(Self {
            kind,
            url,
            procs,
            _dir: dir,
        })
    }

    /// Waits until the target answers and grants a lock (etcd elects
    /// itself leader first), so no measurement includes start-up.
    pub async fn ready(&self) -> Result<()> {
        let start = std::time::Instant::now();
        loop {
            let attempt = async {
                let s = self.session().await?;
                s.ping().await?;
                let held = s.acquire("bench/ready", 0).await?;
                s.release("bench/ready", held).await
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(())) => return Ok(()),
                _ if start.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(Err(e)) => {
                    return Err(e.context(format!("{} never became ready", self.kind.name())));
                }
                Err(_) => bail!("{} never became ready", self.kind.name()),
            }
        }
    }

    /// Server memory (all of the target's processes), in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.procs.iter().map(Proc::rss_kib).sum()
    }

    /// Opens a session on a connection of its own.
    pub async fn session(&self) -> Result<std::sync::Arc<dyn Session>> {
        let channel = Channel::from_shared(self.url.clone())?
            .connect()
            .await
            .with_context(|| format!("connecting to {}", self.url))?;
        Ok(match self.kind {
            TargetKind::EtcdV3lock => {
                let client = etcd_client::Client::connect([self.url.as_str()], None).await?;
                std::sync::Arc::new(EtcdSession {
                    client,
                    health: HealthClient::new(channel),
                    idle: std::sync::Mutex::new(Vec::new()),
                })
            }
            _ => std::sync::Arc::new(BatonSession {
                lock: LockClient::new(channel.clone()),
                health: HealthClient::new(channel),
            }),
        })
    }
}

struct BatonSession {
    lock: LockClient<Channel>,
    health: HealthClient<Channel>,
}

#[async_trait]
impl Session for BatonSession {
    async fn acquire(&self, key: &str, ttl_ms: u64) -> Result<Held> {
        let mut s = self
            .lock
            .clone()
            .wait(pb::WaitRequest {
                key: key.into(),
                value: String::new(),
                ttl_ms,
                timeout_ms: None,
            })
            .await?
            .into_inner();
        while let Some(ev) = s.message().await? {
            if let Some(wait_event::Event::Acquired(a)) = ev.event {
                return Ok(Held {
                    deadline_ms: (a.deadline_unix_ms > 0).then_some(a.deadline_unix_ms),
                    token: Token::Baton(a.index),
                });
            }
        }
        bail!("wait stream ended before acquisition")
    }

    async fn release(&self, key: &str, held: Held) -> Result<()> {
        let Token::Baton(index) = held.token else {
            bail!("not a baton hold");
        };
        self.lock
            .clone()
            .release(pb::ReleaseRequest {
                key: key.into(),
                target: Some(release_request::Target::Index(index)),
            })
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        self.health
            .clone()
            .check(HealthCheckRequest::default())
            .await?;
        Ok(())
    }
}

/// etcd's v3lock as `etcdctl lock` uses it: a session lease per waiting
/// client for holds without a ttl, a lease of the hold's ttl otherwise.
///
/// etcd names a waiter's entry after its lease (`<lock>/<lease id>`), so two
/// acquires that share a lease on one lock are one entry: they would be
/// granted together and one's release would end the other's hold. A session
/// therefore lends each concurrent ttl-less acquire a lease of its own, kept
/// in `idle` between uses so a client that locks again and again pays for
/// one grant only, as a long-lived etcd session does.
struct EtcdSession {
    client: etcd_client::Client,
    health: HealthClient<Channel>,
    idle: std::sync::Mutex<Vec<i64>>,
}

/// The ttl of a lent lease, in seconds. Longer than any run, so nothing has
/// to keep it alive: liveness traffic is not what this harness measures, and
/// a lapsed lease would leave its waiter blocked in etcd's Lock call forever.
const LENT_LEASE_TTL_SECS: i64 = 3_600;

/// Which lease an etcd hold rides on, and what to do with it at release.
#[derive(Clone, Debug)]
enum EtcdLease {
    /// Lent by the session: back to its idle list.
    Lent(i64),
    /// Granted for this hold's ttl: revoked.
    Own(i64),
}

impl EtcdSession {
    async fn lend_lease(&self) -> Result<i64> {
        let idle = self
            .idle
            .lock()
            .map_err(|_| anyhow!("lease list poisoned"))?
            .pop();
        match idle {
            Some(id) => Ok(id),
            None => Ok(self
                .client
                .clone()
                .lease_grant(LENT_LEASE_TTL_SECS, None)
                .await?
                .id()),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[async_trait]
impl Session for EtcdSession {
    async fn acquire(&self, key: &str, ttl_ms: u64) -> Result<Held> {
        let mut client = self.client.clone();
        let (lease, deadline_ms) = if ttl_ms == 0 {
            (EtcdLease::Lent(self.lend_lease().await?), None)
        } else {
            let granted = now_ms();
            let secs = ttl_ms.div_ceil(1000).max(1) as i64;
            let lease = client.lease_grant(secs, None).await?;
            // etcd may raise a short ttl to its minimum: use what it granted.
            let ttl = lease.ttl().max(secs) as u64;
            (EtcdLease::Own(lease.id()), Some(granted + ttl * 1000))
        };
        let id = match lease {
            EtcdLease::Lent(id) | EtcdLease::Own(id) => id,
        };
        let r = client
            .lock(key, Some(etcd_client::LockOptions::new().with_lease(id)))
            .await?;
        Ok(Held {
            deadline_ms,
            token: Token::Etcd(r.key().to_vec(), lease),
        })
    }

    async fn release(&self, _key: &str, held: Held) -> Result<()> {
        let Token::Etcd(lock_key, lease) = held.token else {
            bail!("not an etcd hold");
        };
        let mut client = self.client.clone();
        client.unlock(lock_key).await?;
        match lease {
            EtcdLease::Lent(id) => self
                .idle
                .lock()
                .map_err(|_| anyhow!("lease list poisoned"))?
                .push(id),
            EtcdLease::Own(id) => {
                let _ = client.lease_revoke(id).await;
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        // etcd serves grpc.health.v1 too, so the floor is measured alike.
        self.health
            .clone()
            .check(HealthCheckRequest::default())
            .await?;
        Ok(())
    }
}

/// How long to wait before giving up on a stuck operation.
pub const STUCK: Duration = Duration::from_secs(120);
