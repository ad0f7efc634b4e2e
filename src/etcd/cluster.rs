//! One gateway of several over etcd: the [`Engine`] that `--backend etcd`
//! serves, which is, at any moment, one of
//!
//! - **primary**: the embedded engine (the same table and driver as on one
//!   machine) with its journal in etcd ([`journal`](super::journal)),
//!   fenced by this gateway's term ([`primary`](super::primary));
//! - **follower**: a [`RemoteEngine`] forwarding every call to the
//!   primary's advertised URL;
//! - **electing**: between the two (at start, after the primary died, after
//!   stepping down); calls wait up to `--etcd-timeout-ms` for a role, then
//!   fail with UNAVAILABLE. Never a false grant: only the primary's engine
//!   grants, and it stops the moment its lease may have lapsed.
//!
//! No rule of the contract lives here: this file only decides which engine
//! answers.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    config::EtcdConfig,
    endpoints::Endpoints,
    error::EtcdError,
    journal::EtcdJournal,
    primary::{Election, Leadership, Validity},
};
use crate::engine::{
    AcquireSpec, ClusterView, Engine, EngineError, EngineStats, EventStream, KeySummary, KeyView,
    Release, Renewal, Target, WaitStream,
    embedded::{EmbeddedConfig, EmbeddedEngine},
    remote::{RemoteEngine, RemoteOptions},
};

/// What this gateway is now.
#[derive(Clone)]
enum Role {
    /// No primary is known yet; the reason says why.
    Electing(String),
    /// This gateway runs the engine, for as long as its term is valid.
    Primary(Arc<EmbeddedEngine>, Validity),
    /// Another gateway does; calls go there.
    Follower(String),
}

/// Fails when `term` (this gateway's, as primary) may have ended: an
/// answer made without a commit is then not to be trusted. `None`: the
/// answer came from the primary through forwarding, which checked there.
fn still_primary(term: Option<&Validity>) -> Result<(), EngineError> {
    match term {
        Some(term) if !term.is_valid() => Err(EngineError::Unavailable(
            "this gateway's term as primary may have ended before the answer was made".into(),
        )),
        _ => Ok(()),
    }
}

/// Awaits `answer`, made without a commit (nothing fences it), and gives it
/// only if `term` still held once it was made: a primary frozen or cut off
/// while it read would otherwise answer from state a new primary may have
/// changed since.
async fn read_in_term<T>(
    term: Option<&Validity>,
    answer: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    let answer = answer.await?;
    still_primary(term)?;
    Ok(answer)
}

/// The etcd backend's engine. See the module docs.
#[derive(Clone)]
pub struct ClusterEngine {
    endpoints: Endpoints,
    role: watch::Receiver<Role>,
    remote: Arc<RemoteEngine>,
    timeout: Duration,
    advertise_url: String,
    stop: CancellationToken,
    stopped: Arc<tokio::sync::Notify>,
}

impl ClusterEngine {
    /// Connects to etcd and starts taking part in the election, as
    /// `advertise_url` (the URL other gateways forward to).
    pub fn start(
        config: &EtcdConfig,
        embedded: EmbeddedConfig,
        advertise_url: String,
    ) -> Result<Self, EtcdError> {
        let endpoints = config.endpoints()?;
        // Until a primary is known this points at ourselves; it is only
        // used while following.
        let forwarding = RemoteOptions {
            connect_timeout: config.timeout.min(RemoteOptions::default().connect_timeout),
            credential: config.forward_secret.clone(),
            tls: config.forward_tls()?,
            ..RemoteOptions::default()
        };
        let remote = Arc::new(
            RemoteEngine::new(&advertise_url, forwarding)
                .map_err(|e| EtcdError::Config(format!("--advertise-url: {e}")))?,
        );
        let (tx, role) = watch::channel(Role::Electing("connecting to etcd".into()));
        let stop = CancellationToken::new();
        let stopped = Arc::new(tokio::sync::Notify::new());
        let run = Runner {
            endpoints: endpoints.clone(),
            prefix: config.prefix.clone(),
            primary_ttl_secs: config.primary_ttl_secs,
            compaction_interval: config.compaction_interval,
            journal_depth: config.journal_depth,
            embedded,
            url: advertise_url.clone(),
            role: tx,
            remote: remote.clone(),
            stop: stop.clone(),
            stopped: stopped.clone(),
        };
        tokio::spawn(run.run());
        Ok(Self {
            endpoints,
            role,
            remote,
            timeout: config.timeout,
            advertise_url,
            stop,
            stopped,
        })
    }

    /// The engine that answers now, waiting up to the etcd timeout for the
    /// election to settle.
    async fn current(&self) -> Result<Arc<dyn Engine>, EngineError> {
        self.current_term().await.map(|(engine, _)| engine)
    }

    /// Answers a read here, or forwards it. A primary's read is answered
    /// only if its term still held once the answer was made: the answer
    /// shows the table as it was when the read was applied, which is
    /// authoritative only while no other primary can exist. A lease that
    /// has not lapsed by now had not lapsed then either (a lapsed lease
    /// never comes back), so checking after the answer closes the window
    /// between the check on arrival and the read being applied (a process
    /// frozen in between, by SIGSTOP or a long pause).
    async fn read<T, F, Fut>(&self, read: F) -> Result<T, EngineError>
    where
        F: FnOnce(Arc<dyn Engine>) -> Fut,
        Fut: Future<Output = Result<T, EngineError>>,
    {
        let (engine, term) = self.current_term().await?;
        read_in_term(term.as_ref(), read(engine)).await
    }

    /// [`current`](Self::current), with the term when this gateway is the
    /// primary.
    async fn current_term(&self) -> Result<(Arc<dyn Engine>, Option<Validity>), EngineError> {
        let mut role = self.role.clone();
        let wait = async {
            loop {
                let now = role.borrow_and_update().clone();
                match now {
                    // A term that may have lapsed answers nothing, even
                    // before the keep-alive task has noticed.
                    Role::Primary(engine, term) if term.is_valid() => {
                        return Ok((engine as Arc<dyn Engine>, Some(term)));
                    }
                    Role::Primary(..) => {}
                    Role::Follower(_) => {
                        return Ok((self.remote.clone() as Arc<dyn Engine>, None));
                    }
                    Role::Electing(_) => {}
                }
                if role.changed().await.is_err() {
                    return Err(EngineError::Unavailable(
                        "the gateway is shutting down".into(),
                    ));
                }
            }
        };
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(r) => r,
            Err(_) => {
                let why = match &*self.role.borrow() {
                    Role::Electing(why) => why.clone(),
                    _ => "the primary changed".into(),
                };
                Err(EngineError::Unavailable(format!(
                    "no primary within {:?}: {why}",
                    self.timeout
                )))
            }
        }
    }
}

#[async_trait]
impl Engine for ClusterEngine {
    async fn wait(&self, spec: AcquireSpec) -> Result<WaitStream, EngineError> {
        self.current().await?.wait(spec).await
    }

    async fn wait_confirmed(&self, spec: AcquireSpec) -> Result<WaitStream, EngineError> {
        self.current().await?.wait_confirmed(spec).await
    }

    async fn renew(&self, key: &str, target: Target, ttl_ms: u64) -> Result<Renewal, EngineError> {
        // A refusal (not held, wrong index) changes nothing and is not
        // stored: it is a read, checked as one. A renewal is stored behind
        // the term's fence, so the term held when it was made.
        let (engine, term) = self.current_term().await?;
        let renewed = engine.renew(key, target, ttl_ms).await;
        if renewed.is_err() {
            still_primary(term.as_ref())?;
        }
        renewed
    }

    async fn release(&self, key: &str, target: Target) -> Result<Release, EngineError> {
        // As for renew.
        let (engine, term) = self.current_term().await?;
        let released = engine.release(key, target).await;
        if released.is_err() {
            still_primary(term.as_ref())?;
        }
        released
    }

    async fn get(&self, key: &str) -> Result<KeyView, EngineError> {
        self.read(|e| async move { e.get(key).await }).await
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeySummary>, EngineError> {
        self.read(|e| async move { e.list(prefix, after, limit).await })
            .await
    }

    async fn watch(&self, key: &str, prefix: bool) -> Result<EventStream, EngineError> {
        self.current().await?.watch(key, prefix).await
    }

    async fn stats(&self) -> Result<EngineStats, EngineError> {
        self.read(|e| async move { e.stats().await }).await
    }

    async fn shutdown(&self) {
        // A primary resigns, so another gateway takes over at once rather
        // than when the lease lapses.
        self.stop.cancel();
        let _ = tokio::time::timeout(self.timeout, self.stopped.notified()).await;
    }

    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn endpoints(&self) -> Vec<crate::engine::EndpointStats> {
        self.endpoints.stats()
    }

    /// The primary's journal counts, since this gateway became primary.
    fn journal_stats(&self) -> Option<crate::engine::journal_stats::JournalStats> {
        match &*self.role.borrow() {
            Role::Primary(engine, _) => engine.journal_stats(),
            _ => None,
        }
    }

    fn cluster(&self) -> ClusterView {
        match &*self.role.borrow() {
            Role::Primary(..) => ClusterView {
                role: "primary",
                primary_url: Some(self.advertise_url.clone()),
            },
            Role::Follower(url) => ClusterView {
                role: "follower",
                primary_url: Some(url.clone()),
            },
            Role::Electing(_) => ClusterView {
                role: "electing",
                primary_url: None,
            },
        }
    }
}

/// The task that takes part in the election and switches roles.
struct Runner {
    endpoints: Endpoints,
    prefix: String,
    primary_ttl_secs: u64,
    compaction_interval: Duration,
    journal_depth: usize,
    embedded: EmbeddedConfig,
    url: String,
    role: watch::Sender<Role>,
    remote: Arc<RemoteEngine>,
    stop: CancellationToken,
    stopped: Arc<tokio::sync::Notify>,
}

/// Pause before trying etcd again after a failure.
const RETRY: Duration = Duration::from_millis(200);

impl Runner {
    async fn run(self) {
        let election = Election::new(self.endpoints.clone(), &self.prefix, self.primary_ttl_secs);
        while !self.stop.is_cancelled() {
            if let Err(e) = self.round(&election).await {
                self.electing(e.to_string());
                tokio::select! {
                    () = self.stop.cancelled() => {}
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
        self.stopped.notify_waiters();
    }

    fn electing(&self, why: String) {
        tracing::debug!(%why, "no primary");
        self.role.send_replace(Role::Electing(why));
    }

    /// One turn: follow the primary until its key changes, or win and serve
    /// until the term ends.
    async fn round(&self, election: &Election) -> Result<(), EtcdError> {
        let (primary, revision) = election.current().await?;
        match primary {
            Some(p) if p.url == self.url => {
                // Our own key from an earlier life (a restart within the
                // lease's ttl): forwarding to ourselves would loop. Wait
                // for it to lapse.
                self.electing("an earlier term of this gateway has not lapsed yet".into());
                election.changed_after(revision, &self.stop).await
            }
            Some(p) => {
                if !matches!(&*self.role.borrow(), Role::Follower(u) if *u == p.url) {
                    tracing::info!(primary = %p.url, term = p.term, "following the primary");
                    if let Err(e) = self.remote.set_target(&p.url) {
                        // A primary advertised an unusable URL: nobody can
                        // follow it until its term ends.
                        self.electing(format!("the primary's URL is unusable: {e}"));
                        return election.changed_after(revision, &self.stop).await;
                    }
                    self.role.send_replace(Role::Follower(p.url.clone()));
                }
                election.changed_after(revision, &self.stop).await
            }
            None => match election.try_win(&self.url).await? {
                Some(term) => self.serve(election, term).await,
                None => Ok(()),
            },
        }
    }

    /// Serves as primary for one term.
    async fn serve(&self, election: &Election, term: Leadership) -> Result<(), EtcdError> {
        let opened = tokio::select! {
            o = EtcdJournal::open(self.endpoints.clone(), &self.prefix, term.fence.clone()) => o,
            () = term.lost() => return Ok(()),
        };
        let (journal, snapshot) = match opened {
            Ok(o) => o,
            Err(e) => {
                election.resign(&term).await;
                return Err(e);
            }
        };
        tracing::info!(
            holds = snapshot.holds.len(),
            ceiling = snapshot.index_ceiling,
            "restored from etcd; serving as primary"
        );
        let engine = Arc::new(EmbeddedEngine::durable(
            self.embedded,
            Box::new(journal.with_depth(self.journal_depth)),
            snapshot,
        ));
        self.role
            .send_replace(Role::Primary(engine.clone(), term.validity()));
        let compacting = CancellationToken::new();
        tokio::spawn(super::compaction::run(
            self.endpoints.clone(),
            election.key().to_owned(),
            self.compaction_interval,
            compacting.clone(),
        ));
        let _stop_compacting = compacting.drop_guard();
        tokio::select! {
            () = term.lost() => {}
            () = engine.stopped() => {
                tracing::warn!("the primary's engine stopped (a journal write failed); stepping down");
            }
            () = self.stop.cancelled() => {}
        }
        // Stop answering first, then give the term up.
        engine.halt();
        self.electing("the primary stepped down".into());
        election.resign(&term).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::{Instant, sleep};
    use tokio_util::sync::CancellationToken;

    use super::{Validity, read_in_term};
    use crate::engine::EngineError;

    /// A term that lapses `after` from now, and the token that ends it
    /// early.
    fn term(after: Duration) -> (Validity, CancellationToken) {
        let lost = CancellationToken::new();
        (Validity::new(lost.clone(), Instant::now() + after), lost)
    }

    /// A read that takes `took` to answer 7, checked against `term`.
    async fn read_taking(term: Option<&Validity>, took: Duration) -> Result<u32, EngineError> {
        read_in_term(term, async move {
            sleep(took).await;
            Ok(7)
        })
        .await
    }

    fn assert_refused(answer: Result<u32, EngineError>) {
        assert!(
            matches!(answer, Err(EngineError::Unavailable(_))),
            "{answer:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_made_within_the_term_is_answered() {
        let (term, _lost) = term(Duration::from_secs(2));
        let answer = read_taking(Some(&term), Duration::from_secs(1)).await;
        assert_eq!(answer.ok(), Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_made_while_the_lease_ran_out_is_refused() {
        // Valid when the read starts; the lease's deadline passes while
        // the answer is being made (a frozen process, a slow engine).
        let (term, _lost) = term(Duration::from_secs(2));
        assert!(term.is_valid());
        assert_refused(read_taking(Some(&term), Duration::from_secs(3)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_made_while_the_term_was_lost_is_refused() {
        let (term, lost) = term(Duration::from_secs(60));
        assert_refused(
            read_in_term(Some(&term), async {
                lost.cancel();
                Ok(7)
            })
            .await,
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_forwarded_read_is_the_primarys_to_check() {
        // No term here: the answer came from the primary, which checked.
        let answer = read_taking(None, Duration::from_secs(3)).await;
        assert_eq!(answer.ok(), Some(7));
    }
}
