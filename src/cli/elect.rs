//! `baton elect ELECTION --name N [--ttl S] [--timeout S] [-- CMD ARGS...]`.

use std::{process::ExitCode, time::Duration};

use clap::Args;

use super::{ClientArgs, fail, hold, human, not_acquired, parse_secs};
use crate::client::ClientError;

/// `baton elect`: campaign, then run a command while leading.
#[derive(Clone, Debug, Args)]
pub struct ElectArgs {
    /// The election's name.
    pub election: String,
    /// This candidate's name (what `baton leader` prints while it leads).
    #[arg(long, value_name = "N")]
    pub name: String,
    /// Seconds the leadership lasts without a renew; baton renews it every
    /// third of that while it leads (0: never expires).
    #[arg(long, value_name = "S", default_value = "60", value_parser = parse_secs)]
    pub ttl: Duration,
    /// Seconds to wait to be elected (0: only if nobody leads now); without
    /// it, wait forever.
    #[arg(long, value_name = "S", value_parser = parse_secs)]
    pub timeout: Option<Duration>,
    /// Seconds nobody else is elected after this leadership expires (not
    /// after a resign), so the old leader's in-flight writes drain first.
    /// (An election has one leader: no --limit.)
    #[arg(long, value_name = "S", value_parser = parse_secs)]
    pub lock_delay: Option<Duration>,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The command to run while leading, after `--`; it gets BATON_INDEX
    /// (the fencing token), BATON_ELECTION, BATON_KEY (the same) and
    /// BATON_NAME in its environment.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub(super) async fn run(args: ElectArgs) -> ExitCode {
    let (client, mut signals) = match args.client.client_and_signals() {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let what = format!("the leadership of {:?}", args.election);
    let mut campaign = client
        .campaign(args.election.clone(), args.name.clone())
        .ttl(args.ttl);
    if let Some(timeout) = args.timeout {
        campaign = campaign.timeout(timeout);
    }
    if let Some(delay) = args.lock_delay {
        campaign = campaign.lock_delay(delay);
    }
    let leadership = tokio::select! {
        got = campaign.elected() => match got {
            Ok(l) => l,
            Err(ClientError::Timeout { timeout, .. }) if timeout.is_zero() => {
                return not_acquired(format_args!(
                    "{:?} has a leader (timed out at once: --timeout 0)", args.election
                ));
            }
            Err(ClientError::Timeout { timeout, .. }) => {
                return not_acquired(format_args!(
                    "timed out after {} waiting to lead {:?}", human(timeout), args.election
                ));
            }
            Err(e) => return fail(format_args!("cannot campaign in {:?}: {e}", args.election)),
        },
        sig = signals.recv() => {
            eprintln!("baton: interrupted while campaigning in {:?}", args.election);
            return ExitCode::from(sig.exit_code());
        }
    };
    tracing::debug!(election = %args.election, index = leadership.index(), "leading");
    let env = [
        ("BATON_INDEX", leadership.index().to_string()),
        ("BATON_ELECTION", args.election.clone()),
        ("BATON_KEY", args.election.clone()),
        ("BATON_NAME", args.name.clone()),
    ];
    hold::hold(leadership, &what, &args.command, &env, &mut signals).await
}
