//! What can go wrong talking to baton, as one typed error.

use std::time::Duration;

use thiserror::Error;
use tonic::Code;

use super::hold::Lost;

/// Why a client call failed.
///
/// The variants a program usually branches on are [`Timeout`](Self::Timeout)
/// (the lock was not acquired in time), [`Aborted`](Self::Aborted) (a waiting
/// request was released by someone else), [`NotFound`](Self::NotFound) and
/// [`Unavailable`](Self::Unavailable) (no endpoint answered).
///
/// ```
/// use baton::client::ClientError;
///
/// fn explain(e: &ClientError) -> &'static str {
///     match e {
///         ClientError::Timeout { .. } => "somebody else holds it",
///         ClientError::Unavailable { .. } => "baton is down",
///         _ => "something else",
///     }
/// }
/// # let _ = explain;
/// ```
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// No endpoint was given.
    #[error("no baton endpoint given")]
    NoEndpoints,
    /// An endpoint is not a usable URI.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A PEM file for https:// endpoints (CA, certificate, key) could not
    /// be read.
    #[error("cannot read {path}: {reason}")]
    PemFile {
        /// The file.
        path: String,
        /// Why not.
        reason: String,
    },
    /// A duration does not fit the API (negative, NaN or too large).
    #[error("invalid {what}: {reason}")]
    InvalidDuration {
        /// Which setting.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Every endpoint was tried and none answered.
    #[error("cannot reach baton at {endpoints}: {message}")]
    Unavailable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The last failure.
        message: String,
    },
    /// The lock (or leadership) was not acquired within the timeout; nothing
    /// was left queued.
    #[error("{key:?} was not acquired within {}", fmt_timeout(.timeout))]
    Timeout {
        /// The lock or election.
        key: String,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The waiting request was released by someone else before it acquired.
    #[error("the request for {key:?} was released while it waited: {message}")]
    Aborted {
        /// The lock or election.
        key: String,
        /// The server's message.
        message: String,
    },
    /// The key is a semaphore (or a lock) with another limit than the
    /// request's, while it has entries.
    #[error("limit mismatch: {0}")]
    LimitMismatch(String),
    /// No entry matches the index, value or name.
    #[error("not found: {0}")]
    NotFound(String),
    /// The server rejected the request as malformed or out of bounds.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The server requires a token and got none, or one it does not know
    /// (see [`ClientBuilder::token`](super::ClientBuilder::token)).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token may not do this on this key (outside its prefixes, or
    /// without the right).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The hold was lost before the operation: its index is no longer valid.
    #[error("the hold was lost: {0}")]
    Lost(Lost),
    /// The server broke the protocol (e.g. closed a wait before answering).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Any other gRPC failure.
    #[error("{code:?}: {message}")]
    Rpc {
        /// The gRPC status code.
        code: Code,
        /// The server's message.
        message: String,
    },
}

fn fmt_timeout(d: &Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

impl ClientError {
    /// Maps a status from a call that is not a wait (renew, release, get...).
    pub(crate) fn from_status(status: &tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::NotFound => Self::NotFound(message),
            Code::InvalidArgument => Self::InvalidArgument(message),
            Code::Unauthenticated => Self::Unauthenticated(message),
            Code::PermissionDenied => Self::PermissionDenied(message),
            code => Self::Rpc { code, message },
        }
    }

    /// Maps a status from a wait (Lock.Wait, Election.Campaign) for `key`.
    pub(crate) fn from_wait_status(
        status: &tonic::Status,
        key: &str,
        timeout: Option<Duration>,
    ) -> Self {
        match status.code() {
            Code::FailedPrecondition if status.message().starts_with("limit mismatch") => {
                Self::LimitMismatch(status.message().to_owned())
            }
            Code::DeadlineExceeded | Code::FailedPrecondition => Self::Timeout {
                key: key.to_owned(),
                timeout: timeout.unwrap_or_default(),
            },
            Code::Aborted => Self::Aborted {
                key: key.to_owned(),
                message: status.message().to_owned(),
            },
            _ => Self::from_status(status),
        }
    }
}

/// Converts a client-side duration to the API's milliseconds. A non-zero
/// duration below a millisecond rounds up to 1 ms, so it never means "zero".
pub(crate) fn millis(what: &'static str, d: Duration) -> Result<u64, ClientError> {
    let ms = u64::try_from(d.as_millis()).map_err(|_| ClientError::InvalidDuration {
        what,
        reason: format!("{d:?} is too long"),
    })?;
    Ok(if ms == 0 && !d.is_zero() { 1 } else { ms })
}
