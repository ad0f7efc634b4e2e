//! `baton observe ELECTION`.

use std::process::ExitCode;

use clap::Args;
use futures::StreamExt;

use super::{ClientArgs, fail, leader::line, print_lines};

/// `baton observe`: print the leader, then each change, until interrupted.
#[derive(Clone, Debug, Args)]
pub struct ObserveArgs {
    /// The election's name.
    pub election: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub(super) async fn run(args: ObserveArgs) -> ExitCode {
    let (client, mut signals) = match args.client.client_and_signals() {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let leaders = client.observe(args.election.clone());
    tokio::pin!(leaders);
    loop {
        tokio::select! {
            next = leaders.next() => match next {
                Some(Ok(leader)) => {
                    if print_lines([line(leader.as_ref())]).is_err() {
                        // Nobody reads any more (`| head -1`).
                        return ExitCode::SUCCESS;
                    }
                }
                Some(Err(e)) => {
                    return fail(format_args!("cannot observe {:?}: {e}", args.election));
                }
                None => return ExitCode::SUCCESS,
            },
            _ = signals.recv() => return ExitCode::SUCCESS,
        }
    }
}
