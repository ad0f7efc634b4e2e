//! `baton acquire KEY [--ttl S] [--value V] [--timeout S] [--limit N]
//! [--lock-delay S]`: take a lock, print its index and exit, for shell
//! scripts and cron jobs that hold a lock across several steps (etcd issue
//! 2855). The hold lives by its ttl; `baton renew` extends it and `baton
//! release` ends it.

use std::process::ExitCode;

use clap::Args;

use super::{ClientArgs, lock::LockRequest, print_lines};

/// `baton acquire`: acquire, print the index, exit 0 (3 if not acquired).
#[derive(Clone, Debug, Args)]
pub struct AcquireArgs {
    #[command(flatten)]
    pub request: LockRequest,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub(super) async fn run(args: AcquireArgs) -> ExitCode {
    let (client, mut signals) = match args.client.client_and_signals() {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let guard = match args.request.take(&client, &mut signals).await {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    // The grant was heard: the hold now lives by its ttl alone.
    let index = guard.detach();
    if let Err(e) = print_lines([index.to_string()]) {
        tracing::debug!(error = %e, "stdout is closed");
    }
    ExitCode::SUCCESS
}
