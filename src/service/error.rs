//! The service layer's error: one variant per client-visible class, each
//! with a gRPC code. gRPC returns it as a status, the JSON gateway as
//! `{"code","message"}`, `/mod/v2` as etcd's error body.

use thiserror::Error;
use tonic::Code;

use crate::engine::EngineError;

/// Why a request failed, with a message meant for the client.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ServiceError {
    /// The request is malformed or out of bounds.
    #[error("{0}")]
    InvalidArgument(String),
    /// No entry matches the index or value.
    #[error("{0}")]
    NotFound(String),
    /// `timeout = 0` and the lock is held.
    #[error("{0}")]
    NotAcquired(String),
    /// The request's semaphore limit differs from the key's.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The wait's timeout passed before acquisition.
    #[error("{0}")]
    TimedOut(String),
    /// The queued request was released by someone else.
    #[error("{0}")]
    Aborted(String),
    /// A configured limit was reached.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The server cannot serve now (shutting down, backend lost).
    #[error("{0}")]
    Unavailable(String),
    /// No valid credential (see [`crate::auth`]).
    #[error("{0}")]
    Unauthenticated(String),
    /// The credential's token may not do this on this key.
    #[error("{0}")]
    PermissionDenied(String),
    /// A bug or a broken invariant.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// The gRPC status code this error is reported with.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::NotAcquired(_) | Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::TimedOut(_) => Code::DeadlineExceeded,
            Self::Aborted(_) => Code::Aborted,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<EngineError> for ServiceError {
    fn from(e: EngineError) -> Self {
        let m = e.to_string();
        match e {
            EngineError::NotFound(_) => Self::NotFound(m),
            EngineError::NotAcquired(_) => Self::NotAcquired(m),
            EngineError::LimitMismatch(_) => Self::FailedPrecondition(m),
            EngineError::TimedOut => Self::TimedOut(m),
            EngineError::ReleasedWhileQueued(_) => Self::Aborted(m),
            EngineError::LimitReached(_) | EngineError::Lagged(_) => Self::ResourceExhausted(m),
            EngineError::Unavailable(_) => Self::Unavailable(m),
            EngineError::Internal(_) => Self::Internal(m),
        }
    }
}

impl From<ServiceError> for tonic::Status {
    fn from(e: ServiceError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

impl From<crate::auth::Refusal> for ServiceError {
    fn from(r: crate::auth::Refusal) -> Self {
        match r {
            crate::auth::Refusal::Unauthenticated(m) => Self::Unauthenticated(m),
            crate::auth::Refusal::PermissionDenied(m) => Self::PermissionDenied(m),
        }
    }
}
