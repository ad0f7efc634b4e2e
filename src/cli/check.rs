//! `baton check KEY --index I`: is this fencing token current? For a
//! resource (or a script in front of one) that was handed a token and must
//! refuse writes from a holder that lost the lock (Chubby's sequencer
//! check).

use std::process::ExitCode;

use clap::Args;

use super::{ClientArgs, NOT_ACQUIRED, fail, print_lines};

/// `baton check`: exit 0 if the index holds the key now, 3 if not.
#[derive(Clone, Debug, Args)]
pub struct CheckArgs {
    /// The lock's key (or election's name).
    pub key: String,
    /// The fencing token to check.
    #[arg(long, value_name = "I")]
    pub index: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub(super) async fn run(args: CheckArgs) -> ExitCode {
    let client = match args.client.client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match client.check(args.key.clone(), args.index).await {
        Ok(check) => {
            let holders: Vec<String> = check.holders.iter().map(|h| h.index.to_string()).collect();
            let holders = if holders.is_empty() {
                "none".to_owned()
            } else {
                holders.join(", ")
            };
            let (line, code) = if check.current {
                (format!("current (holders: {holders})"), ExitCode::SUCCESS)
            } else {
                (
                    format!("not current (holders: {holders})"),
                    ExitCode::from(NOT_ACQUIRED),
                )
            };
            let _ = print_lines([line]);
            code
        }
        Err(e) => fail(format_args!(
            "cannot check index {} of {:?}: {e}",
            args.index, args.key
        )),
    }
}
