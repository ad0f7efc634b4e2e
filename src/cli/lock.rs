//! `baton lock KEY [--ttl S] [--value V] [--timeout S] [-- CMD ARGS...]`.

use std::{process::ExitCode, time::Duration};

use clap::Args;

use super::{ClientArgs, fail, hold, human, parse_secs, signals::Signals};
use crate::client::ClientError;

/// `baton lock`: wait for a lock, then run a command while holding it.
#[derive(Clone, Debug, Args)]
pub struct LockArgs {
    /// The lock's key.
    pub key: String,
    /// Seconds the hold lasts without a renew; baton renews it every third
    /// of that while it holds (0: never expires).
    #[arg(long, value_name = "S", default_value = "60", value_parser = parse_secs)]
    pub ttl: Duration,
    /// A value for the entry: requests with the same value share it.
    #[arg(long, value_name = "V")]
    pub value: Option<String>,
    /// Seconds to wait for the lock (0: only if it is free now); without it,
    /// wait forever.
    #[arg(long, value_name = "S", value_parser = parse_secs)]
    pub timeout: Option<Duration>,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The command to run while holding the lock, after `--`; it gets
    /// BATON_INDEX (the fencing token) and BATON_KEY in its environment.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub(super) async fn run(args: LockArgs) -> ExitCode {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => return fail(format_args!("cannot catch signals: {e}")),
    };
    let client = match args.client.client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let what = format!("lock {:?}", args.key);
    let mut request = client.lock(args.key.clone()).ttl(args.ttl);
    if let Some(value) = &args.value {
        request = request.value(value.clone());
    }
    if let Some(timeout) = args.timeout {
        request = request.timeout(timeout);
    }
    let guard = tokio::select! {
        got = request.acquire() => match got {
            Ok(guard) => guard,
            Err(ClientError::Timeout { timeout, .. }) if timeout.is_zero() => {
                return fail(format_args!("{what} is held (timed out at once: --timeout 0)"));
            }
            Err(ClientError::Timeout { timeout, .. }) => {
                return fail(format_args!("timed out after {} waiting for {what}", human(timeout)));
            }
            Err(e) => return fail(format_args!("cannot take {what}: {e}")),
        },
        sig = signals.recv() => {
            eprintln!("baton: interrupted while waiting for {what}");
            return ExitCode::from(sig.exit_code());
        }
    };
    tracing::debug!(key = %args.key, index = guard.index(), "holding");
    let env = [
        ("BATON_INDEX", guard.index().to_string()),
        ("BATON_KEY", args.key.clone()),
    ];
    hold::hold(guard, &what, &args.command, &env, &mut signals).await
}
