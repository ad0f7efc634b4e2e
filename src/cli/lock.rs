//! `baton lock KEY [--ttl S] [--value V] [--timeout S] [--limit N]
//! [--lock-delay S] [-- CMD ARGS...]`.

use std::{process::ExitCode, time::Duration};

use clap::Args;

use super::{ClientArgs, fail, hold, human, not_acquired, parse_secs, signals::Signals};
use crate::client::{Client, ClientError, LockGuard};

/// How to ask for a lock: what `baton lock` and `baton acquire` share.
#[derive(Clone, Debug, Args)]
pub struct LockRequest {
    /// The lock's key.
    pub key: String,
    /// Seconds the hold lasts without a renew (0: never expires).
    #[arg(long, value_name = "S", default_value = "60", value_parser = parse_secs)]
    pub ttl: Duration,
    /// A value for the entry: requests with the same value share it, and
    /// `baton renew`/`release --value` name it.
    #[arg(long, value_name = "V")]
    pub value: Option<String>,
    /// Seconds to wait for the lock (0: only if it is free now); without it,
    /// wait forever.
    #[arg(long, value_name = "S", value_parser = parse_secs)]
    pub timeout: Option<Duration>,
    /// Up to N holders at once (a semaphore); the key's first entry fixes
    /// it, and another limit while it is in use is refused.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub limit: u32,
    /// Seconds nobody else is granted the key after this hold expires
    /// (not after a release), so in-flight writes drain first.
    #[arg(long, value_name = "S", value_parser = parse_secs)]
    pub lock_delay: Option<Duration>,
}

impl LockRequest {
    /// What the messages call it.
    pub(super) fn what(&self) -> String {
        if self.limit > 1 {
            format!("semaphore {:?}", self.key)
        } else {
            format!("lock {:?}", self.key)
        }
    }

    /// Waits for the lock; on failure, the exit code (3 when it was not
    /// acquired, 1 for any other error) with the reason on stderr.
    pub(super) async fn take(
        &self,
        client: &Client,
        signals: &mut Signals,
    ) -> Result<LockGuard, ExitCode> {
        let what = self.what();
        let mut request = client
            .lock(self.key.clone())
            .ttl(self.ttl)
            .limit(self.limit);
        if let Some(value) = &self.value {
            request = request.value(value.clone());
        }
        if let Some(timeout) = self.timeout {
            request = request.timeout(timeout);
        }
        if let Some(delay) = self.lock_delay {
            request = request.lock_delay(delay);
        }
        tokio::select! {
            got = request.acquire() => match got {
                Ok(guard) => Ok(guard),
                Err(ClientError::Timeout { timeout, .. }) if timeout.is_zero() => {
                    Err(not_acquired(format_args!("{what} is held (timed out at once: --timeout 0)")))
                }
                Err(ClientError::Timeout { timeout, .. }) => {
                    Err(not_acquired(format_args!("timed out after {} waiting for {what}", human(timeout))))
                }
                Err(e) => Err(fail(format_args!("cannot take {what}: {e}"))),
            },
            sig = signals.recv() => {
                eprintln!("baton: interrupted while waiting for {what}");
                Err(ExitCode::from(sig.exit_code()))
            }
        }
    }
}

/// `baton lock`: wait for a lock, then run a command while holding it.
#[derive(Clone, Debug, Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub request: LockRequest,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The command to run while holding the lock, after `--`; it gets
    /// BATON_INDEX (the fencing token) and BATON_KEY in its environment.
    /// baton renews the hold every third of its ttl meanwhile.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub(super) async fn run(args: LockArgs) -> ExitCode {
    let (client, mut signals) = match args.client.client_and_signals() {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let guard = match args.request.take(&client, &mut signals).await {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    let key = &args.request.key;
    tracing::debug!(%key, index = guard.index(), "holding");
    let env = [
        ("BATON_INDEX", guard.index().to_string()),
        ("BATON_KEY", key.clone()),
    ];
    let what = args.request.what();
    hold::hold(guard, &what, &args.command, &env, &mut signals).await
}
