//! `baton leader ELECTION`.

use std::process::ExitCode;

use clap::Args;

use super::{ClientArgs, fail, print_lines};
use crate::client::Leader;

/// `baton leader`: print who leads.
#[derive(Clone, Debug, Args)]
pub struct LeaderArgs {
    /// The election's name.
    pub election: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// How `leader` and `observe` print a leader: the name, or `none`.
pub(super) fn line(leader: Option<&Leader>) -> &str {
    leader.map_or("none", |l| l.name.as_str())
}

pub(super) async fn run(args: LeaderArgs) -> ExitCode {
    let client = match args.client.client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match client.leader(args.election.clone()).await {
        Ok(leader) => {
            let _ = print_lines([line(leader.as_ref())]);
            ExitCode::SUCCESS
        }
        Err(e) => fail(format_args!(
            "cannot read the leader of {:?}: {e}",
            args.election
        )),
    }
}
