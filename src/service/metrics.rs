//! What an operator scrapes at `GET /metrics`: how many calls of each kind
//! succeeded or failed, how waits ended and how long they took to be
//! granted, and the engine's counts at the moment of the scrape.
//!
//! Counting happens here, in the service layer, because every surface (gRPC,
//! the JSON gateway, `/mod/v2`, the dashboard) calls it: one request is
//! counted once, whichever way it came in. The format is OpenMetrics text,
//! which Prometheus and its kin read, through the `prometheus-client` crate
//! (the Prometheus project's own Rust client).

use std::{
    sync::{Arc, atomic::AtomicI64},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::Registry,
};
use tonic::Code;

use super::ServiceError;
use crate::engine::{EndpointStats, EngineStats, journal_stats::JournalStats};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of one call counter: which RPC, and the gRPC code it ended with
/// (`Ok` for success; a stream counts as `Ok` once it has started).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: &'static str,
    method: &'static str,
    code: &'static str,
}

/// Labels of one etcd member's health gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

/// Labels of one etcd retry counter: the member a request failed on, and
/// why it was tried again elsewhere.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    endpoint: String,
    cause: &'static str,
}

/// Labels of one refusal counter: the call refused, why, and the token's
/// name (empty when the caller was not known).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    service: &'static str,
    method: &'static str,
    reason: &'static str,
    token: String,
}

/// Labels of one wait counter: how the wait ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WaitLabels {
    outcome: &'static str,
}

/// Which RPC a call was, for the `service` and `method` labels.
#[derive(Clone, Copy, Debug)]
pub enum Rpc {
    /// `baton.v1.Lock/Wait`.
    Wait,
    /// `baton.v1.Lock/Renew`.
    Renew,
    /// `baton.v1.Lock/Release`.
    Release,
    /// `baton.v1.Lock/Get`.
    Get,
    /// `baton.v1.Lock/Check`.
    Check,
    /// `baton.v1.Lock/List`.
    List,
    /// `baton.v1.Lock/Watch`.
    Watch,
    /// `baton.v1.Election/Campaign`.
    Campaign,
    /// `baton.v1.Election/Leader`.
    Leader,
    /// `baton.v1.Election/Observe`.
    Observe,
    /// `baton.v1.Election/Resign`.
    Resign,
    /// `baton.v1.Election/List`.
    ListElections,
    /// `baton.v1.Status/Get` (and the gateway's `/v1/status`).
    Status,
    /// `GET /metrics`.
    Metrics,
}

impl Rpc {
    /// The `service` and `method` labels (the gRPC names).
    pub fn labels(self) -> (&'static str, &'static str) {
        const LOCK: &str = "baton.v1.Lock";
        const ELECTION: &str = "baton.v1.Election";
        match self {
            Self::Wait => (LOCK, "Wait"),
            Self::Renew => (LOCK, "Renew"),
            Self::Release => (LOCK, "Release"),
            Self::Get => (LOCK, "Get"),
            Self::Check => (LOCK, "Check"),
            Self::List => (LOCK, "List"),
            Self::Watch => (LOCK, "Watch"),
            Self::Campaign => (ELECTION, "Campaign"),
            Self::Leader => (ELECTION, "Leader"),
            Self::Observe => (ELECTION, "Observe"),
            Self::Resign => (ELECTION, "Resign"),
            Self::ListElections => (ELECTION, "List"),
            Self::Status => ("baton.v1.Status", "Get"),
            Self::Metrics => ("http", "/metrics"),
        }
    }
}

/// The service's metrics (see the module docs).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    waits: Family<WaitLabels, Counter>,
    wait_seconds: Histogram,
    keys: Gauge<i64, AtomicI64>,
    entries: Gauge<i64, AtomicI64>,
    waiters: Gauge<i64, AtomicI64>,
    open_streams: Gauge<i64, AtomicI64>,
    uptime_seconds: Gauge<i64, AtomicI64>,
    endpoint_healthy: Family<EndpointLabels, Gauge<i64, AtomicI64>>,
    endpoint_retries: Family<RetryLabels, Counter>,
    journal_commits: Counter,
    journal_records: Counter,
    journal_commit_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
}

impl Metrics {
    /// Fresh metrics for a server on `backend`.
    pub fn new(backend: &'static str) -> Self {
        let mut registry = Registry::with_prefix("baton");
        let calls = Family::<CallLabels, Counter>::default();
        let refusals = Family::<RefusalLabels, Counter>::default();
        let waits = Family::<WaitLabels, Counter>::default();
        // 1 ms to about 4.4 minutes, a factor of 4 apart.
        let wait_seconds = Histogram::new(exponential_buckets(0.001, 4.0, 10));
        let (keys, entries, waiters, open_streams, uptime_seconds) = Default::default();
        registry.register(
            "build",
            "The running baton: its version and backend",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("backend", backend),
            ]),
        );
        registry.register(
            "calls",
            "Calls of each RPC, from every surface (gRPC, JSON gateway, /mod/v2), by the gRPC code they ended with; a stream counts as Ok once started",
            calls.clone(),
        );
        registry.register(
            "auth_refusals",
            "Calls refused by --auth-file, by RPC, reason (unauthenticated or permission_denied) and token name",
            refusals.clone(),
        );
        registry.register(
            "waits",
            "Lock waits and campaigns by how they ended: acquired, withdrawn (the client went away first), or the gRPC code of their failure",
            waits.clone(),
        );
        registry.register(
            "wait_seconds",
            "Time from a lock wait or campaign arriving to its grant",
            wait_seconds.clone(),
        );
        registry.register("keys", "Keys with at least one entry", Gauge::clone(&keys));
        registry.register(
            "entries",
            "Entries (holders and queued) over all keys",
            Gauge::clone(&entries),
        );
        registry.register(
            "waiters",
            "Requests waiting on queued entries (on the etcd backend: this gateway's)",
            Gauge::clone(&waiters),
        );
        registry.register(
            "open_streams",
            "Open server streams (waits, campaigns, watches, observes)",
            Gauge::clone(&open_streams),
        );
        registry.register(
            "uptime_seconds",
            "Seconds since the server started",
            Gauge::clone(&uptime_seconds),
        );
        let endpoint_healthy = Family::<EndpointLabels, Gauge<i64, AtomicI64>>::default();
        let endpoint_retries = Family::<RetryLabels, Counter>::default();
        registry.register(
            "etcd_endpoint_healthy",
            "Whether an etcd member is in rotation (1) or out of it after failing, until it answers a probe again (0); etcd backend only",
            endpoint_healthy.clone(),
        );
        registry.register(
            "etcd_retries",
            "etcd requests tried again on another member after failing on this one, by cause: connect (never sent), no_leader (refused), timeout and broken (may have reached it; only requests safe to repeat), watch (a watch reopened)",
            endpoint_retries.clone(),
        );
        let (journal_commits, journal_records) = (Counter::default(), Counter::default());
        let journal_commit_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "journal_commits",
            "Batches the engine made durable (one fsync on the embedded store, one etcd transaction on an etcd primary); 0 in memory and on a follower",
            journal_commits.clone(),
        );
        registry.register(
            "journal_records",
            "Records (holds created, renewed or removed) in those commits: records per commit is the mean batch",
            journal_records.clone(),
        );
        registry.register(
            "journal_commit_seconds",
            "Time from a batch going to the journal to its being durable, summed: per commit, the mean commit time",
            journal_commit_seconds.clone(),
        );
        Self {
            journal_commits,
            journal_records,
            journal_commit_seconds,
            endpoint_healthy,
            endpoint_retries,
            registry,
            calls,
            refusals,
            waits,
            wait_seconds,
            keys,
            entries,
            waiters,
            open_streams,
            uptime_seconds,
        }
    }

    /// Counts one call of `rpc` that ended with `result`.
    pub fn call<T>(&self, rpc: Rpc, result: &Result<T, ServiceError>) {
        let (service, method) = rpc.labels();
        let code = match result {
            Ok(_) => Code::Ok,
            Err(e) => e.code(),
        };
        self.calls
            .get_or_create(&CallLabels {
                service,
                method,
                code: code_name(code),
            })
            .inc();
    }

    /// Counts one call of `rpc` refused for `reason` (see
    /// [`crate::auth::Refusal::reason`]) to the token named `token`.
    pub fn refused(&self, rpc: Rpc, reason: &'static str, token: &str) {
        let (service, method) = rpc.labels();
        self.refusals
            .get_or_create(&RefusalLabels {
                service,
                method,
                reason,
                token: token.to_owned(),
            })
            .inc();
    }

    /// Starts timing a wait that arrived now; tell the tracker how it ends.
    pub fn wait_started(self: &Arc<Self>) -> WaitTracker {
        WaitTracker {
            metrics: self.clone(),
            started: Instant::now(),
            done: false,
        }
    }

    fn wait_ended(&self, outcome: &'static str, waited: Option<Duration>) {
        self.waits.get_or_create(&WaitLabels { outcome }).inc();
        if let Some(d) = waited {
            self.wait_seconds.observe(d.as_secs_f64());
        }
    }

    /// The metrics as OpenMetrics text, with the gauges set from `stats`
    /// and the etcd members' from `endpoints` (the backend counts; these
    /// are copies of its counts as of now).
    pub fn render(
        &self,
        stats: &EngineStats,
        endpoints: &[EndpointStats],
        journal: Option<JournalStats>,
        open_streams: usize,
        uptime: Duration,
    ) -> String {
        // Copies of the engine's counts as of now (they restart when an etcd
        // gateway becomes primary again, as counters may).
        let j = journal.unwrap_or_default();
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        self.journal_commits.inner().store(j.commits, relaxed);
        self.journal_records.inner().store(j.records, relaxed);
        self.journal_commit_seconds
            .inner()
            .store(j.busy.as_secs_f64().to_bits(), relaxed);
        for e in endpoints {
            self.endpoint_healthy
                .get_or_create(&EndpointLabels {
                    endpoint: e.endpoint.clone(),
                })
                .set(i64::from(e.healthy));
            for &(cause, n) in &e.retries {
                self.endpoint_retries
                    .get_or_create(&RetryLabels {
                        endpoint: e.endpoint.clone(),
                        cause,
                    })
                    .inner()
                    .store(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.keys.set(gauge(stats.keys));
        self.entries.set(gauge(stats.entries));
        self.waiters.set(gauge(stats.waiters));
        self.open_streams.set(gauge(open_streams as u64));
        self.uptime_seconds.set(gauge(uptime.as_secs()));
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; say so if it ever does.
            out = format!("# baton: encoding the metrics failed: {e}\n# EOF\n");
        }
        out
    }
}

/// A gRPC code's name as a label value, without allocating on every call
/// (the names of `tonic::Code`'s variants).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Follows one wait to its end; a wait dropped before it ended (the client
/// hung up, or its stream was cancelled) counts as `withdrawn`.
#[derive(Debug)]
pub struct WaitTracker {
    metrics: Arc<Metrics>,
    started: Instant,
    done: bool,
}

impl WaitTracker {
    /// The wait was granted.
    pub fn acquired(&mut self) {
        self.end("acquired", Some(self.started.elapsed()));
    }

    /// The wait failed with `e` before it was granted.
    pub fn failed(&mut self, e: &ServiceError) {
        self.end(code_name(e.code()), None);
    }

    fn end(&mut self, outcome: &'static str, waited: Option<Duration>) {
        if !self.done {
            self.done = true;
            self.metrics.wait_ended(outcome, waited);
        }
    }
}

impl Drop for WaitTracker {
    fn drop(&mut self) {
        self.end("withdrawn", None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> EngineStats {
        EngineStats {
            keys: 2,
            entries: 3,
            waiters: 1,
        }
    }

    #[test]
    fn calls_waits_and_gauges_are_rendered() {
        let m = Arc::new(Metrics::new("embedded"));
        m.call(Rpc::Renew, &Ok::<(), ServiceError>(()));
        m.call(Rpc::Renew, &Ok::<(), ServiceError>(()));
        m.call::<()>(Rpc::Release, &Err(ServiceError::NotFound("no".into())));
        m.wait_started().acquired();
        m.wait_started()
            .failed(&ServiceError::TimedOut("late".into()));
        drop(m.wait_started());
        let endpoints = [EndpointStats {
            endpoint: "http://127.0.0.1:2379".into(),
            healthy: false,
            retries: vec![("connect", 3), ("timeout", 0)],
        }];
        let journal = JournalStats {
            commits: 5,
            records: 12,
            busy: Duration::from_millis(2500),
        };
        let text = m.render(
            &stats(),
            &endpoints,
            Some(journal),
            4,
            Duration::from_secs(7),
        );
        for line in [
            "baton_journal_commits_total 5",
            "baton_journal_records_total 12",
            "baton_journal_commit_seconds_total 2.5",
            r#"baton_calls_total{service="baton.v1.Lock",method="Renew",code="Ok"} 2"#,
            r#"baton_calls_total{service="baton.v1.Lock",method="Release",code="NotFound"} 1"#,
            r#"baton_waits_total{outcome="acquired"} 1"#,
            r#"baton_waits_total{outcome="DeadlineExceeded"} 1"#,
            r#"baton_waits_total{outcome="withdrawn"} 1"#,
            "baton_wait_seconds_count 1",
            "baton_keys 2",
            "baton_entries 3",
            "baton_waiters 1",
            "baton_open_streams 4",
            "baton_uptime_seconds 7",
            r#"baton_etcd_endpoint_healthy{endpoint="http://127.0.0.1:2379"} 0"#,
            r#"baton_etcd_retries_total{endpoint="http://127.0.0.1:2379",cause="connect"} 3"#,
            r#"baton_etcd_retries_total{endpoint="http://127.0.0.1:2379",cause="timeout"} 0"#,
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        assert!(text.contains(r#"baton_build_info{version=""#), "{text}");
    }

    #[test]
    fn code_labels_are_the_names_of_the_codes() {
        for n in 0..=16 {
            let code = Code::from_i32(n);
            assert_eq!(code_name(code), format!("{code:?}"));
        }
    }

    #[test]
    fn a_wait_counts_once_however_it_ends() {
        let m = Arc::new(Metrics::new("embedded"));
        let mut t = m.wait_started();
        t.acquired();
        t.failed(&ServiceError::Unavailable("later".into()));
        drop(t);
        let text = m.render(&stats(), &[], None, 0, Duration::ZERO);
        assert!(
            text.contains(r#"baton_waits_total{outcome="acquired"} 1"#),
            "{text}"
        );
        let waits: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with("baton_waits_total"))
            .collect();
        assert_eq!(
            waits,
            [r#"baton_waits_total{outcome="acquired"} 1"#],
            "{text}"
        );
    }
}
