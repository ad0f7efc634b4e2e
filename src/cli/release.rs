//! `baton release KEY --index I | --value V`.

use std::process::ExitCode;

use clap::Args;

use super::{ClientArgs, fail, not_acquired, print_lines};
use crate::client::{ClientError, Entry};

/// `baton release`: remove an entry from a lock's queue.
#[derive(Clone, Debug, Args)]
#[command(group(clap::ArgGroup::new("entry").required(true).args(["index", "value"])))]
pub struct ReleaseArgs {
    /// The lock's key (or election's name).
    pub key: String,
    /// The entry's index (fencing token).
    #[arg(long, value_name = "I")]
    pub index: Option<u64>,
    /// The entry's value (or, in an election, the candidate's name).
    #[arg(long, value_name = "V")]
    pub value: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub(super) async fn run(args: ReleaseArgs) -> ExitCode {
    let client = match args.client.client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let (entry, which) = match (args.index, args.value) {
        (Some(i), _) => (Entry::Index(i), format!("index {i}")),
        (None, Some(v)) => (Entry::Value(v.clone()), format!("value {v:?}")),
        // clap requires one of them.
        (None, None) => return fail("give --index or --value"),
    };
    match client.release(args.key.clone(), entry).await {
        Ok(r) => {
            let role = if r.was_holder {
                "it held the lock"
            } else {
                "it was waiting"
            };
            let _ = print_lines([format!("released index {} ({role})", r.index)]);
            ExitCode::SUCCESS
        }
        Err(ClientError::NotFound(_)) => {
            not_acquired(format_args!("{:?} has no entry with {which}", args.key))
        }
        Err(e) => fail(format_args!(
            "cannot release {which} of {:?}: {e}",
            args.key
        )),
    }
}
