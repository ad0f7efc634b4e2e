//! The client subcommands of the `baton` binary: `lock`, `elect`,
//! `acquire`, `renew`, `release`, `check`, `leader`, `observe` and
//! `status`, each a thin layer over [`crate::client`] talking gRPC to
//! `--endpoint`.
//!
//! Exit codes, so scripts can branch on them: 0 done; 3 not acquired
//! (busy with `--timeout 0`, timed out), no such entry (`renew`,
//! `release`) or not current (`check`); 1 any other error (unreachable,
//! refused, bad flags, lock lost), with one line on stderr; with a command,
//! the command's own exit code (128 + N if it died of signal N; 127 if it
//! could not be started); 128 + N when interrupted by signal N while
//! waiting.

mod acquire;
mod check;
mod elect;
mod hold;
mod leader;
mod lock;
mod observe;
mod release;
mod renew;
mod signals;
mod status;

use std::{
    io::{self, Write},
    process::ExitCode,
    time::Duration,
};

use clap::{Args, Subcommand};

use crate::client::{Client, ClientError, DEFAULT_ENDPOINT, Entry};

pub use acquire::AcquireArgs;
pub use check::CheckArgs;
pub use elect::ElectArgs;
pub use leader::LeaderArgs;
pub use lock::{LockArgs, LockRequest};
pub use observe::ObserveArgs;
pub use release::ReleaseArgs;
pub use renew::RenewArgs;
pub use status::StatusArgs;

/// The client subcommands (flattened into [`crate::config::Command`]).
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Wait for a lock, then run a command while holding it (or, without a
    /// command, print the index and hold until interrupted).
    Lock(LockArgs),
    /// Campaign in an election, then run a command while leading (or, without
    /// a command, print the index and lead until interrupted).
    Elect(ElectArgs),
    /// Acquire a lock, print its index and exit, leaving the hold to live
    /// by its ttl (exit 3 if not acquired).
    Acquire(AcquireArgs),
    /// Renew an entry by index or value (exit 3 if there is none).
    Renew(RenewArgs),
    /// Exit 0 if an index (fencing token) holds a lock now, 3 if not.
    Check(CheckArgs),
    /// Print an election's leader (`none` if nobody leads).
    Leader(LeaderArgs),
    /// Print an election's leader, then a line for each change.
    Observe(ObserveArgs),
    /// Release a lock entry (the holder or a waiting one) by index or value.
    Release(ReleaseArgs),
    /// Show a lock's holder and queue.
    Status(StatusArgs),
}

/// The entry a subcommand names: by its index or by its value (`renew`,
/// `release`; the subcommand makes one of them required).
#[derive(Clone, Debug, Args)]
pub struct EntryArgs {
    /// The entry's index (fencing token).
    #[arg(long, value_name = "I")]
    pub index: Option<u64>,
    /// The entry's value (or, in an election, the candidate's name).
    #[arg(long, value_name = "V")]
    pub value: Option<String>,
}

impl EntryArgs {
    /// The entry, and how to name it in messages.
    fn entry(&self) -> Result<(Entry, String), ExitCode> {
        match (self.index, &self.value) {
            (Some(i), _) => Ok((Entry::Index(i), format!("index {i}"))),
            (None, Some(v)) => Ok((Entry::Value(v.clone()), format!("value {v:?}"))),
            // clap requires one of them.
            (None, None) => Err(fail("give --index or --value")),
        }
    }
}

/// Where the client subcommands find baton.
#[derive(Clone, Debug, Args)]
pub struct ClientArgs {
    /// baton's gRPC endpoint; several, comma-separated, are tried in turn.
    #[arg(long, env = "BATON_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub endpoint: String,
    /// PEM CA certificate to trust for https:// endpoints instead of the
    /// system's roots.
    #[arg(long, env = "BATON_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate for a baton that requires one
    /// (--tls-client-ca-file), with --key-file.
    #[arg(long, env = "BATON_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM private key of --cert-file.
    #[arg(long, env = "BATON_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<std::path::PathBuf>,
    /// Token for a baton started with --auth-file (sent as
    /// `authorization: Bearer`); prefer BATON_TOKEN, which `ps` does not show.
    #[arg(long, env = "BATON_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ClientArgs {
    /// What a long-running subcommand (lock, acquire, elect, observe)
    /// starts with: its signal handlers, then a client. On failure, the
    /// exit code after the message was printed.
    fn client_and_signals(&self) -> Result<(Client, signals::Signals), ExitCode> {
        let signals =
            signals::Signals::new().map_err(|e| fail(format_args!("cannot catch signals: {e}")))?;
        let client = self.client().map_err(fail)?;
        Ok((client, signals))
    }

    /// A client for the endpoints (connections are made on first use).
    fn client(&self) -> Result<Client, ClientError> {
        let mut builder = Client::builder().endpoints([&self.endpoint]);
        if let Some(path) = &self.ca_file {
            builder = builder.ca_certificate(read_pem(path)?);
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            builder = builder.identity(read_pem(cert)?, read_pem(key)?);
        }
        if let Some(token) = &self.token {
            builder = builder.token(token.clone());
        }
        builder.build()
    }
}

/// A PEM file given on the command line.
fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::PemFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Runs a client subcommand to completion.
pub async fn run(command: ClientCommand) -> ExitCode {
    match command {
        ClientCommand::Lock(args) => lock::run(args).await,
        ClientCommand::Elect(args) => elect::run(args).await,
        ClientCommand::Acquire(args) => acquire::run(args).await,
        ClientCommand::Renew(args) => renew::run(args).await,
        ClientCommand::Check(args) => check::run(args).await,
        ClientCommand::Leader(args) => leader::run(args).await,
        ClientCommand::Observe(args) => observe::run(args).await,
        ClientCommand::Release(args) => release::run(args).await,
        ClientCommand::Status(args) => status::run(args).await,
    }
}

/// Any error but "not acquired": unreachable, refused, bad input, lost.
const FAILURE: u8 = 1;

/// Not acquired (busy, timed out), no such entry, or not current.
const NOT_ACQUIRED: u8 = 3;

/// Prints `baton: MESSAGE` on stderr and returns the failure exit code.
fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("baton: {message}");
    ExitCode::from(FAILURE)
}

/// Prints `baton: MESSAGE` on stderr and returns exit code 3.
fn not_acquired(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("baton: {message}");
    ExitCode::from(NOT_ACQUIRED)
}

/// Writes lines to stdout, flushing them at once (so pipes see each as it
/// happens). A closed stdout (`| head -1`) is not an error worth a panic.
fn print_lines<I, S>(lines: I) -> io::Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = io::stdout().lock();
    for line in lines {
        writeln!(out, "{}", line.as_ref())?;
    }
    out.flush()
}

/// Parses seconds (fractions allowed) for `--ttl` and `--timeout`.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if secs < 0.0 {
        return Err(format!("{s:?} is negative"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is out of range"))
}

/// A duration for people: `1.5s`, `2m03s`, `1h02m`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        let s = format!("{:.1}", d.as_secs_f64());
        format!("{}s", s.strip_suffix(".0").unwrap_or(&s))
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_secs("0"), Ok(Duration::ZERO));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
        assert!(parse_secs("NaN").is_err());
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_secs(60)), "1m00s");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_secs(3725)), "1h02m");
    }
}
