//! `baton-bench`: baton next to etcd on this machine, in one run.
//!
//! Starts each target itself on loopback (baton `--memory`, baton durable,
//! baton over etcd, etcd's own v3lock API), runs the scenarios (uncontended
//! pairs, one-key handoff, many waiters, expiry accuracy, and a health-check
//! floor), and prints a markdown table with ratios; `--json FILE` keeps the
//! raw rows. `--smoke` is a seconds-long configuration that proves the
//! harness works (the test suite runs it) without timing anything.
//!
//! Build and run: `cargo build --release --bins && target/release/baton-bench`.

mod procs;
mod report;
mod scenarios;
mod semaphore;
mod target;

use std::{process::ExitCode, time::Duration};

use clap::{Parser, ValueEnum};

use scenarios::Phase;
use target::{Target, TargetKind};

/// A scenario to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Uncontended,
    Handoff,
    Waiters,
    Expiry,
    Floor,
    /// kill -9 of the primary gateway (targets with a follower only).
    Failover,
    /// Handoff on one semaphore key (baton targets with the Lock API only).
    Semaphore,
}

impl Scenario {
    /// The name its rows carry.
    fn name(self) -> &'static str {
        match self {
            Self::Uncontended => "uncontended",
            Self::Handoff => "handoff (one key)",
            Self::Waiters => "many waiters",
            Self::Expiry => "expiry lateness",
            Self::Floor => "floor (health check)",
            Self::Failover => "fail-over",
            Self::Semaphore => semaphore::NAME,
        }
    }
}

/// Command line of baton-bench.
#[derive(Debug, Parser)]
#[command(
    name = "baton-bench",
    about = "Benchmarks baton next to etcd on this machine"
)]
struct Args {
    /// Systems to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [TargetKind::Memory, TargetKind::Durable, TargetKind::BatonEtcd, TargetKind::BatonEtcdFollower, TargetKind::EtcdV3lock, TargetKind::BatonElection, TargetKind::EtcdV3election])]
    targets: Vec<TargetKind>,
    /// Scenarios to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Scenario::Floor, Scenario::Uncontended, Scenario::Handoff, Scenario::Waiters, Scenario::Expiry, Scenario::Failover, Scenario::Semaphore])]
    scenarios: Vec<Scenario>,
    /// Client counts for the uncontended and floor scenarios.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64, 256])]
    clients: Vec<usize>,
    /// Clients contending for one key in the handoff scenario.
    #[arg(long, default_value_t = 32)]
    handoff_clients: usize,
    /// Clients contending for one key in the semaphore scenario.
    #[arg(long, default_value_t = 32)]
    semaphore_clients: usize,
    /// The key's limit (holders at once) in the semaphore scenario.
    #[arg(long, default_value_t = 4)]
    semaphore_limit: u32,
    /// Waiting requests in the many-waiters scenario.
    #[arg(long, default_value_t = 20_000)]
    waiters: usize,
    /// Keys the waiters queue on.
    #[arg(long, default_value_t = 4)]
    waiter_keys: usize,
    /// Holders with a ttl in the expiry scenario.
    #[arg(long, default_value_t = 10_000)]
    expiry_holders: usize,
    /// The holders' ttl in the expiry scenario, in ms.
    #[arg(long, default_value_t = 5_000)]
    expiry_ttl_ms: u64,
    /// Unmeasured warm-up per measurement, in seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Measured time per measurement, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Rounds: every target runs every scenario once a round, the targets
    /// taking turns, so a slow spell of the machine (a disk whose fsyncs
    /// slow down for a while) falls on all of them alike. Each row is then
    /// the median round (by rate; by p50 where a row has no rate), and the
    /// table lists each rate's range over the rounds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Write the rows as JSON here too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// A tiny configuration that only proves the harness works.
    #[arg(long)]
    smoke: bool,
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.smoke {
        args.clients = vec![1, 4];
        args.handoff_clients = 4;
        args.semaphore_clients = 8;
        args.waiters = 200;
        args.expiry_holders = 20;
        args.expiry_ttl_ms = 1000;
        args.warmup_secs = 0.1;
        args.duration_secs = 0.5;
    }
    match run(&args).await {
        Ok(rows) => {
            println!("{}", report::markdown(&rows));
            if let Some(path) = &args.json {
                let json = serde_json::to_string_pretty(&rows).unwrap_or_default();
                if let Err(e) = std::fs::write(path, json) {
                    eprintln!("baton-bench: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            let failed = rows.iter().filter(|r| r.failed.is_some()).count();
            println!("bench: {} measurements, {failed} failed", rows.len());
            // The smoke run proves the harness works: any failure fails it.
            if args.smoke && failed > 0 {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("baton-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<Vec<report::Row>> {
    let mut rows = Vec::new();
    let mut run = 0u64;
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            eprintln!("=== round {round} of {}", args.rounds);
        }
        rows.extend(run_round(args, &mut run).await?);
    }
    Ok(report::median_of_rounds(rows))
}

/// One round: the reference rows, then every target through every scenario.
async fn run_round(args: &Args, run: &mut u64) -> anyhow::Result<Vec<report::Row>> {
    let phase = Phase {
        warmup: Duration::from_secs_f64(args.warmup_secs),
        duration: Duration::from_secs_f64(args.duration_secs),
    };
    let mut rows = Vec::new();
    if args.targets.contains(&TargetKind::Durable) {
        rows.push(scenarios::disk_fsync(phase)?);
    }
    if args.targets.iter().any(|t| {
        matches!(
            t,
            TargetKind::BatonEtcd | TargetKind::BatonEtcdFollower | TargetKind::EtcdV3lock
        )
    }) && args.scenarios.contains(&Scenario::Handoff)
    {
        rows.push(scenarios::etcd_put(phase).await?);
    }
    for &kind in &args.targets {
        eprintln!("== {}", kind.name());
        for &scenario in &args.scenarios {
            // A fresh target per scenario, so one that a scenario overwhelms
            // does not spoil the next; a failure is reported, not fatal.
            if scenario == Scenario::Failover && kind != TargetKind::BatonEtcdFollower {
                continue;
            }
            if scenario == Scenario::Semaphore && !semaphore::applies(kind) {
                continue;
            }
            let mut target = Target::start(kind).await?;
            target.ready().await?;
            if scenario == Scenario::Failover {
                *run += 1;
                let got = scenarios::failover(&mut target, *run)
                    .await
                    .unwrap_or_else(|e| {
                        vec![report::Row::failed("fail-over", kind, 1, format!("{e:#}"))]
                    });
                for row in got {
                    match &row.failed {
                        Some(why) => eprintln!("   {}: FAILED: {why}", row.scenario),
                        None => eprintln!(
                            "   {}: p50 {} us p99 {} us ({} samples)",
                            row.scenario, row.p50_us, row.p99_us, row.samples
                        ),
                    }
                    rows.push(row);
                }
                continue;
            }
            let counts: Vec<usize> = match scenario {
                Scenario::Floor | Scenario::Uncontended => args.clients.clone(),
                Scenario::Handoff => vec![args.handoff_clients],
                Scenario::Waiters => vec![args.waiters],
                Scenario::Expiry => vec![args.expiry_holders],
                Scenario::Semaphore => vec![args.semaphore_clients],
                Scenario::Failover => vec![],
            };
            for c in counts {
                *run += 1;
                let run = *run;
                let journal_before = target.journal_counters().await;
                let began = std::time::Instant::now();
                let result = match scenario {
                    Scenario::Floor => scenarios::floor(&target, c, phase).await,
                    Scenario::Uncontended => scenarios::uncontended(&target, c, phase, run).await,
                    Scenario::Handoff => scenarios::handoff(&target, c, phase, run).await,
                    Scenario::Waiters => {
                        scenarios::many_waiters(&target, c, args.waiter_keys, run).await
                    }
                    Scenario::Expiry => {
                        scenarios::expiry(&target, c, args.expiry_ttl_ms, run).await
                    }
                    Scenario::Semaphore => {
                        semaphore::handoff(&target, c, args.semaphore_limit, phase, run).await
                    }
                    Scenario::Failover => continue,
                };
                let mut row = result.unwrap_or_else(|e| {
                    report::Row::failed(scenario.name(), kind, c, format!("{e:#}"))
                });
                let secs = began.elapsed().as_secs_f64();
                if let (Some(b), Some(a)) = (journal_before, target.journal_counters().await) {
                    let commits = a.0 - b.0;
                    if commits > 0.0 {
                        row.journal = Some(report::JournalFigures {
                            commits_per_sec: commits / secs,
                            records_per_commit: (a.1 - b.1) / commits,
                            mean_commit_us: (a.2 - b.2) * 1e6 / commits,
                        });
                    }
                }
                match &row.failed {
                    Some(why) => eprintln!("   {} x{}: FAILED: {why}", row.scenario, c),
                    None => eprintln!(
                        "   {} x{}: {:.0} ops/s p50 {} us p99 {} us",
                        row.scenario, row.concurrency, row.ops_per_sec, row.p50_us, row.p99_us
                    ),
                }
                rows.push(row);
            }
        }
    }
    Ok(rows)
}
