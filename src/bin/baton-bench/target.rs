//! What a benchmark measures: a lock service behind one small interface, so
//! every scenario runs unchanged against baton (memory, durable, over etcd;
//! its Lock API, and its Election API where campaigning is acquiring and
//! resigning is releasing) and against etcd's own v3lock and v3election APIs.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, anyhow, bail};
use async_trait::async_trait;
use baton::proto::v1::{
    self as pb, campaign_event, election_client::ElectionClient, lock_client::LockClient,
    release_request, wait_event,
};
use clap::ValueEnum;
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
    /// `baton --backend etcd` over a local etcd: one gateway, the primary.
    BatonEtcd,
    /// Two `baton --backend etcd` gateways; clients talk to the follower,
    /// which forwards to the primary.
    BatonEtcdFollower,
    /// etcd's v3lock API, called directly.
    EtcdV3lock,
    /// `baton --memory` through its Election API (campaign, resign).
    BatonElection,
    /// etcd's v3election API, called directly (campaign, resign).
    EtcdV3election,
    /// `baton --memory` through `/mod/v2` over HTTP/1.1, a connection per
    /// request as curl makes them: what a waiting curl costs.
    MemoryModv2,
}

impl TargetKind {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "baton --memory",
            Self::Durable => "baton durable",
            Self::BatonEtcd => "baton over etcd",
            Self::BatonEtcdFollower => "baton over etcd, via a follower",
            Self::EtcdV3lock => "etcd v3lock",
            Self::BatonElection => "baton --memory, election",
            Self::EtcdV3election => "etcd v3election",
            Self::MemoryModv2 => "baton --memory, /mod/v2 HTTP/1.1",
        }
    }

    /// The etcd API this target's rows are compared with (×etcd).
    pub fn reference(self) -> Self {
        match self {
            Self::BatonElection | Self::EtcdV3election => Self::EtcdV3election,
            _ => Self::EtcdV3lock,
        }
    }

    /// The target a report row names.
    pub fn by_name(name: &str) -> Option<Self> {
        Self::value_variants()
            .iter()
            .copied()
            .find(|k| k.name() == name)
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
    /// A lock entry's index.
    Baton(u64),
    /// A candidate's name in an election.
    BatonCandidate(String),
    /// What etcd handed back, and the lease it rides on.
    Etcd(EtcdHold, EtcdLease),
}

/// An etcd hold: a v3lock key, or a v3election leader key.
#[derive(Clone, Debug)]
enum EtcdHold {
    Lock(Vec<u8>),
    Leader(etcd_client::LeaderKey),
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
    /// The primary gateway, for targets with a follower in front of it.
    primary: Option<Proc>,
    /// Where the target's journal counters are scraped (`/metrics` of the
    /// baton that commits), for baton targets.
    metrics_url: Option<String>,
    _dir: tempfile::TempDir,
}

impl Target {
    /// A new connection to the target's gRPC endpoint (baton targets), for
    /// scenarios that use baton's API beyond [`Session`].
    pub async fn channel(&self) -> Result<Channel> {
        Ok(Channel::from_shared(self.url.clone())?.connect().await?)
    }

    /// Starts the processes the target needs.
    pub async fn start(kind: TargetKind) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data").display().to_string();
        let mut primary = None;
        let mut commit_url = None;
        let (procs, url) = match kind {
            TargetKind::Memory | TargetKind::BatonElection => {
                let (p, url) = start_baton(&["--memory".into()])?;
                (vec![p], url)
            }
            TargetKind::MemoryModv2 => {
                // Every waiting curl is a connection of its own.
                let (p, url) = start_baton(&[
                    "--memory".into(),
                    "--max-connections".into(),
                    "15000".into(),
                ])?;
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
            TargetKind::BatonEtcdFollower => {
                let (etcd, etcd_url) = start_etcd(&dir.path().join("etcd"))?;
                let args = [
                    "--backend".into(),
                    "etcd".into(),
                    "--etcd-endpoints".into(),
                    etcd_url,
                ];
                // The first gateway must lead before the second starts, so
                // that the second follows.
                let (p, primary_url) = start_baton(&args)?;
                wait_for_role(&primary_url, "primary").await?;
                let (f, url) = start_baton(&args)?;
                wait_for_role(&url, "follower").await?;
                primary = Some(p);
                commit_url = Some(primary_url.clone());
                (vec![f, etcd], url)
            }
            TargetKind::EtcdV3lock | TargetKind::EtcdV3election => {
                let (etcd, etcd_url) = start_etcd(&dir.path().join("etcd"))?;
                (vec![etcd], etcd_url)
            }
        };
        let metrics_url = match kind {
            TargetKind::EtcdV3lock | TargetKind::EtcdV3election => None,
            _ => Some(commit_url.unwrap_or_else(|| url.clone())),
        };
        Ok(Self {
            kind,
            url,
            procs,
            primary,
            metrics_url,
            _dir: dir,
        })
    }

    /// Kills the primary gateway with SIGKILL (`kill -9`), for the
    /// fail-over scenario. False if the target has no separate primary.
    pub fn kill_primary(&mut self) -> bool {
        self.primary.take().is_some()
    }

    /// The journal counters of the baton that commits (commits, records,
    /// busy seconds), from its `/metrics`; `None` for etcd's own targets or
    /// when the scrape fails (a scenario that killed it).
    pub async fn journal_counters(&self) -> Option<(f64, f64, f64)> {
        use http_body_util::BodyExt;
        let url = self.metrics_url.as_deref()?;
        let authority = url.trim_start_matches("http://").trim_end_matches('/');
        let scrape = async {
            let tcp = tokio::net::TcpStream::connect(authority).await.ok()?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .ok()?;
            tokio::spawn(conn);
            let req = hyper::Request::builder()
                .uri("/metrics")
                .header(hyper::header::HOST, authority)
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .ok()?;
            let body = sender.send_request(req).await.ok()?.into_body();
            let bytes = body.collect().await.ok()?.to_bytes();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        };
        let text = tokio::time::timeout(Duration::from_secs(5), scrape)
            .await
            .ok()??;
        let sample = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        };
        Some((
            sample("baton_journal_commits_total")?,
            sample("baton_journal_records_total")?,
            sample("baton_journal_commit_seconds_total")?,
        ))
    }

    /// The URL sessions connect to.
    pub fn url(&self) -> &str {
        &self.url
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
        self.procs
            .iter()
            .chain(&self.primary)
            .map(Proc::rss_kib)
            .sum()
    }

    /// Opens a session on a connection of its own.
    pub async fn session(&self) -> Result<std::sync::Arc<dyn Session>> {
        let channel = Channel::from_shared(self.url.clone())?
            .connect()
            .await
            .with_context(|| format!("connecting to {}", self.url))?;
        Ok(match self.kind {
            TargetKind::EtcdV3lock | TargetKind::EtcdV3election => {
                let client = etcd_client::Client::connect([self.url.as_str()], None).await?;
                std::sync::Arc::new(EtcdSession {
                    client,
                    health: HealthClient::new(channel),
                    idle: std::sync::Mutex::new(Vec::new()),
                    election: self.kind == TargetKind::EtcdV3election,
                })
            }
            TargetKind::MemoryModv2 => std::sync::Arc::new(ModV2Session {
                authority: self
                    .url
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned(),
                health: HealthClient::new(channel),
            }),
            _ => std::sync::Arc::new(BatonSession {
                lock: LockClient::new(channel.clone()),
                election: (self.kind == TargetKind::BatonElection)
                    .then(|| ElectionClient::new(channel.clone())),
                health: HealthClient::new(channel),
            }),
        })
    }
}

/// baton's `/mod/v2` lock module over HTTP/1.1, one connection per request
/// (a waiting request holds its connection, as a waiting curl does).
struct ModV2Session {
    /// `host:port`.
    authority: String,
    health: HealthClient<Channel>,
}

impl ModV2Session {
    /// Sends one request on a new connection and returns the body.
    async fn call(&self, method: hyper::Method, path: &str) -> Result<String> {
        use http_body_util::BodyExt;
        let tcp = tokio::net::TcpStream::connect(&self.authority).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .body(http_body_util::Empty::<bytes::Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if !status.is_success() {
            bail!("{path}: {status} {body}");
        }
        Ok(body)
    }
}

#[async_trait]
impl Session for ModV2Session {
    async fn acquire(&self, key: &str, ttl_ms: u64) -> Result<Held> {
        // /mod/v2 counts ttls in seconds and needs one; 0 here is "long".
        let ttl = if ttl_ms == 0 {
            3600
        } else {
            ttl_ms.div_ceil(1000)
        };
        let body = self
            .call(
                hyper::Method::POST,
                &format!("/mod/v2/lock/{key}?ttl={ttl}"),
            )
            .await?;
        let index = body
            .trim()
            .parse()
            .with_context(|| format!("not an index: {body:?}"))?;
        Ok(Held {
            deadline_ms: None,
            token: Token::Baton(index),
        })
    }

    async fn release(&self, key: &str, held: Held) -> Result<()> {
        let Token::Baton(index) = held.token else {
            bail!("a /mod/v2 hold is released by index");
        };
        self.call(
            hyper::Method::DELETE,
            &format!("/mod/v2/lock/{key}?index={index}"),
        )
        .await
        .map(drop)
    }

    async fn ping(&self) -> Result<()> {
        self.health
            .clone()
            .check(HealthCheckRequest::default())
            .await
            .map(drop)
            .map_err(Into::into)
    }
}

/// A connection to baton: through the Lock API, or through the Election
/// API when `election` is set.
struct BatonSession {
    lock: LockClient<Channel>,
    election: Option<ElectionClient<Channel>>,
    health: HealthClient<Channel>,
}

/// Candidate names unique within the run: a campaign is an acquire only if
/// its name is not already queued (same names join one entry).
static CANDIDATES: AtomicU64 = AtomicU64::new(0);

impl BatonSession {
    async fn campaign(
        &self,
        mut election: ElectionClient<Channel>,
        key: &str,
        ttl_ms: u64,
    ) -> Result<Held> {
        let name = format!("c{}", CANDIDATES.fetch_add(1, Ordering::Relaxed));
        let mut s = election
            .campaign(pb::CampaignRequest {
                election: key.into(),
                name: name.clone(),
                ttl_ms,
                timeout_ms: None,
                ..Default::default()
            })
            .await?
            .into_inner();
        while let Some(ev) = s.message().await? {
            if let Some(campaign_event::Event::Elected(a)) = ev.event {
                return Ok(Held {
                    deadline_ms: (a.deadline_unix_ms > 0).then_some(a.deadline_unix_ms),
                    token: Token::BatonCandidate(name),
                });
            }
        }
        bail!("campaign stream ended before election")
    }
}

#[async_trait]
impl Session for BatonSession {
    async fn acquire(&self, key: &str, ttl_ms: u64) -> Result<Held> {
        if let Some(election) = &self.election {
            return self.campaign(election.clone(), key, ttl_ms).await;
        }
        let mut s = self
            .lock
            .clone()
            .wait(pb::WaitRequest {
                key: key.into(),
                value: String::new(),
                ttl_ms,
                timeout_ms: None,
                ..Default::default()
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
        let index = match (held.token, &self.election) {
            (Token::Baton(index), None) => index,
            (Token::BatonCandidate(name), Some(election)) => {
                election
                    .clone()
                    .resign(pb::ResignRequest {
                        election: key.into(),
                        name,
                    })
                    .await?;
                return Ok(());
            }
            _ => bail!("not a hold of this session"),
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
    /// v3election (campaign, resign) instead of v3lock (lock, unlock); its
    /// keys are named after the lease too.
    election: bool,
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
        let hold = if self.election {
            let r = client.campaign(key, "bench", id).await?;
            let leader = r
                .leader()
                .cloned()
                .ok_or_else(|| anyhow!("etcd elected without a leader key"))?;
            EtcdHold::Leader(leader)
        } else {
            let r = client
                .lock(key, Some(etcd_client::LockOptions::new().with_lease(id)))
                .await?;
            EtcdHold::Lock(r.key().to_vec())
        };
        Ok(Held {
            deadline_ms,
            token: Token::Etcd(hold, lease),
        })
    }

    async fn release(&self, _key: &str, held: Held) -> Result<()> {
        let Token::Etcd(hold, lease) = held.token else {
            bail!("not an etcd hold");
        };
        let mut client = self.client.clone();
        match hold {
            EtcdHold::Lock(key) => {
                client.unlock(key).await?;
            }
            EtcdHold::Leader(leader) => {
                client
                    .resign(Some(etcd_client::ResignOptions::new().with_leader(leader)))
                    .await?;
            }
        }
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

/// Waits (30 s at most) until the baton at `url` reports `role` through
/// `baton.v1.Status/Get`.
async fn wait_for_role(url: &str, role: &str) -> Result<()> {
    let start = std::time::Instant::now();
    loop {
        let asked = async {
            let channel = Channel::from_shared(url.to_owned())?.connect().await?;
            let st = pb::status_client::StatusClient::new(channel)
                .get(pb::StatusRequest {})
                .await?
                .into_inner();
            Ok::<_, anyhow::Error>(st.role)
        };
        if let Ok(Ok(now)) = tokio::time::timeout(Duration::from_secs(2), asked).await
            && now == role
        {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("{url} did not become {role} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
