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
}

/// Command line of baton-bench.
#[derive(Debug, Parser)]
#[command(
    name = "baton-bench",
    about = "Benchmarks baton next to etcd on this machine"
)]
struct Args {
    /// Systems to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [TargetKind::Memory, TargetKind::Durable, TargetKind::BatonEtcd, TargetKind::EtcdV3lock])]
    targets: Vec<TargetKind>,
    /// Scenarios to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Scenario::Floor, Scenario::Uncontended, Scenario::Handoff, Scenario::Waiters, Scenario::Expiry])]
    scenarios: Vec<Scenario>,
    /// Client counts for the uncontended and floor scenarios.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64, 256])]
    clients: Vec<usize>,
    /// Clients contending for one key in the handoff scenario.
    #[arg(long, default_value_t = 32)]
    handoff_clients: usize,
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
            println!("bench: {} measurements", rows.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("baton-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<Vec<report::Row>> {
    let phase = Phase {
        warmup: Duration::from_secs_f64(args.warmup_secs),
        duration: Duration::from_secs_f64(args.duration_secs),
    };
    let mut rows = Vec::new();
    if args.targets.contains(&TargetKind::Durable) {
        rows.push(scenarios::disk_fsync(phase)?);
    }
    let mut run = 0u64;
    for &kind in &args.targets {
        eprintln!("== {}", kind.name());
        let target = Target::start(kind)?;
        target.ready().await?;
        for &scenario in &args.scenarios {
            run += 1;
            match scenario {
                Scenario::Floor => {
                    for &c in &args.clients {
                        rows.push(scenarios::floor(&target, c, phase).await?);
                    }
                }
                Scenario::Uncontended => {
                    for &c in &args.clients {
                        rows.push(scenarios::uncontended(&target, c, phase, run).await?);
                        run += 1;
                    }
                }
                Scenario::Handoff => {
                    rows.push(scenarios::handoff(&target, args.handoff_clients, phase, run).await?);
                }
                Scenario::Waiters => {
                    rows.push(
                        scenarios::many_waiters(&target, args.waiters, args.waiter_keys, run)
                            .await?,
                    );
                }
                Scenario::Expiry => {
                    rows.push(
                        scenarios::expiry(&target, args.expiry_holders, args.expiry_ttl_ms, run)
                            .await?,
                    );
                }
            }
            if let Some(last) = rows.last() {
                eprintln!(
                    "   {} x{}: {:.0} ops/s p50 {} us p99 {} us",
                    last.scenario, last.concurrency, last.ops_per_sec, last.p50_us, last.p99_us
                );
            }
        }
    }
    Ok(rows)
}
