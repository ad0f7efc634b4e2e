//! Why an engine operation failed, in the words the service layer maps to
//! gRPC statuses and HTTP errors.

use thiserror::Error;

use super::table::TableError;

/// An engine failure. Each variant corresponds to one client-visible class
/// of error, so surfaces never need to parse messages.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum EngineError {
    /// Renew or release named an entry that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// `timeout = 0` and the lock is held by someone else.
    #[error("{0}")]
    NotAcquired(String),
    /// The wait's timeout passed before acquisition.
    #[error("lock not acquired within the timeout")]
    TimedOut,
    /// The queued entry was released by someone else before acquisition.
    #[error("the queued request (index {0}) was released before it acquired the lock")]
    ReleasedWhileQueued(u64),
    /// The request's semaphore limit differs from the key's.
    #[error("{0}")]
    LimitMismatch(String),
    /// A configured bound was reached.
    #[error("{0}")]
    LimitReached(String),
    /// The backend cannot serve now (shutting down, storage or etcd lost).
    #[error("{0}")]
    Unavailable(String),
    /// A watcher fell too far behind the event stream.
    #[error("watch fell behind by {0} events; read the state again and re-watch")]
    Lagged(u64),
    /// Something that should not happen; the message says what.
    #[error("{0}")]
    Internal(String),
}

impl From<TableError> for EngineError {
    fn from(e: TableError) -> Self {
        match e {
            TableError::NotFound(_) => Self::NotFound(e.to_string()),
            TableError::NotImmediatelyAvailable { .. } | TableError::Delayed { .. } => {
                Self::NotAcquired(e.to_string())
            }
            TableError::LimitMismatch { .. } => Self::LimitMismatch(e.to_string()),
            TableError::LimitReached(m) => Self::LimitReached(m),
        }
    }
}
