//! `baton renew KEY (--index I | --value V) [--ttl S]`: extend a hold taken
//! with `baton acquire` (or any entry) from a script.

use std::{process::ExitCode, time::Duration};

use clap::Args;

use super::{ClientArgs, EntryArgs, fail, human, not_acquired, parse_secs, print_lines};
use crate::client::ClientError;

/// `baton renew`: reset an entry's deadline to now + ttl.
#[derive(Clone, Debug, Args)]
#[command(group(clap::ArgGroup::new("entry").required(true).args(["index", "value"])))]
pub struct RenewArgs {
    /// The lock's key (or election's name).
    pub key: String,
    #[command(flatten)]
    pub entry: EntryArgs,
    /// The new ttl in seconds, from now (0: never expires).
    #[arg(long, value_name = "S", default_value = "60", value_parser = parse_secs)]
    pub ttl: Duration,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub(super) async fn run(args: RenewArgs) -> ExitCode {
    let client = match args.client.client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let (entry, which) = match args.entry.entry() {
        Ok(e) => e,
        Err(code) => return code,
    };
    match client.renew(args.key.clone(), entry, args.ttl).await {
        Ok(held) => {
            let line = match (held, args.ttl.is_zero()) {
                (true, true) => format!("renewed {which}: holds, never expires"),
                (true, false) => format!("renewed {which}: holds for {}", human(args.ttl)),
                (false, _) => format!("renewed {which}: still waiting"),
            };
            let _ = print_lines([line]);
            ExitCode::SUCCESS
        }
        Err(ClientError::NotFound(_)) => {
            not_acquired(format_args!("{:?} has no entry with {which}", args.key))
        }
        Err(e) => fail(format_args!("cannot renew {which} of {:?}: {e}", args.key)),
    }
}
