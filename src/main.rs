//! The `baton` binary: serves by default; client subcommands talk gRPC.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use baton::config::{Cli, Command};

/// The server's allocator. glibc's malloc keeps what a burst of waiters
/// freed: after 100,000 waiting streams left, RSS stayed at 45× its level
/// before them. mimalloc returns freed pages to the system (and packs small
/// allocations tighter); the measurements are in BENCHMARKS.md, "many
/// waiters".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start: a background thread returns
/// freed pages within about a second, whether or not the server is busy.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs what it does; a client subcommand only what goes wrong.
    let default_level = match cli.command {
        Some(Command::Client(_)) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match cli.command {
        Some(Command::Serve(args)) => *args,
        Some(Command::Client(command)) => return baton::cli::run(*command).await,
        None => cli.serve,
    };
    let shutdown = CancellationToken::new();
    let signalled = shutdown.clone();
    tokio::spawn(async move {
        baton::server::signal().await;
        signalled.cancel();
    });
    match baton::server::serve(args, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baton: {e}");
            ExitCode::FAILURE
        }
    }
}
