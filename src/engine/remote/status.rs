//! gRPC statuses back to [`EngineError`]s: the inverse of
//! `service::error`, so that a follower's clients see the code and the
//! message the primary's clients see.

use tonic::{Code, Status};

use crate::engine::EngineError;

/// The engine error a status from the primary stands for.
///
/// A status made on this side of the wire (a refused or broken connection,
/// a reset stream: tonic attaches the transport error as its source) is
/// `Unavailable`, whatever code tonic gave it, and so are `UNKNOWN` and
/// `CANCELLED`, which baton never sends. `INVALID_ARGUMENT` cannot come back
/// for a request this side validated unless the primary runs with tighter
/// limits; it is `Internal` with the primary's message.
pub fn engine_error(status: &Status, queued_index: Option<u64>) -> EngineError {
    let m = status.message().to_owned();
    if let Some(mut cause) = std::error::Error::source(status) {
        let mut why = m;
        loop {
            why = format!("{why}: {cause}");
            match cause.source() {
                Some(c) => cause = c,
                None => break,
            }
        }
        return EngineError::Unavailable(format!("the primary is unreachable: {why}"));
    }
    match status.code() {
        Code::NotFound => EngineError::NotFound(m),
        // A limit mismatch's message says so (TableError::LimitMismatch).
        Code::FailedPrecondition if m.starts_with("limit mismatch") => {
            EngineError::LimitMismatch(m)
        }
        Code::FailedPrecondition => EngineError::NotAcquired(m),
        Code::DeadlineExceeded => EngineError::TimedOut,
        Code::Aborted => match queued_index.or_else(|| index_in(&m)) {
            Some(i) => EngineError::ReleasedWhileQueued(i),
            None => EngineError::Internal(m),
        },
        Code::ResourceExhausted => match lag_in(&m) {
            Some(n) => EngineError::Lagged(n),
            None => EngineError::LimitReached(m),
        },
        Code::Unavailable | Code::Unknown | Code::Cancelled => EngineError::Unavailable(m),
        // The primary refused this gateway's credential: its clients can do
        // nothing about it, the operator can.
        Code::Unauthenticated | Code::PermissionDenied => EngineError::Unavailable(format!(
            "the primary refused this gateway's forwarded call (is --cluster-secret-file the same on every gateway?): {m}"
        )),
        _ => EngineError::Internal(m),
    }
}

/// The index in `ReleasedWhileQueued`'s message, "… (index N) …".
fn index_in(m: &str) -> Option<u64> {
    let rest = m.split_once("(index ")?.1;
    rest.split_once(')')?.0.parse().ok()
}

/// The count in `Lagged`'s message, "watch fell behind by N events…".
fn lag_in(m: &str) -> Option<u64> {
    let rest = m.strip_prefix("watch fell behind by ")?;
    rest.split_once(' ')?.0.parse().ok()
}
