//! `baton release KEY --index I | --value V`.

use std::process::ExitCode;

use clap::Args;

use super::{ClientArgs, EntryArgs, fail, not_acquired, print_lines};
use crate::client::ClientError;

/// `baton release`: remove an entry from a lock's queue.
#[derive(Clone, Debug, Args)]
#[command(group(clap::ArgGroup::new("entry").required(true).args(["index", "value"])))]
pub struct ReleaseArgs {
    /// The lock's key (or election's name).
    pub key: String,
    #[command(flatten)]
    pub entry: EntryArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub(super) async fn run(args: ReleaseArgs) -> ExitCode {
    let client = match args.client.client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let (entry, which) = match args.entry.entry() {
        Ok(e) => e,
        Err(code) => return code,
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
