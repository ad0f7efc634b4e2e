//! Why an etcd operation failed, and how that reaches clients: everything
//! that means "etcd cannot answer now" becomes [`EngineError::Unavailable`]
//! (gRPC UNAVAILABLE, HTTP 503), so clients retry, possibly elsewhere.

use std::time::Duration;

use thiserror::Error;

use crate::engine::EngineError;

/// A failure of the etcd backend.
#[derive(Debug, Error)]
pub enum EtcdError {
    /// The flags do not describe a usable etcd connection.
    #[error("etcd backend configuration: {0}")]
    Config(String),
    /// etcd answered with an error or could not be reached.
    #[error("etcd is unavailable: {0}")]
    Client(#[from] etcd_client::Error),
    /// etcd did not answer in time.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    /// A watch ended (connection lost, compacted, or cancelled by etcd).
    #[error("etcd watch ended: {0}")]
    WatchLost(String),
    /// A key under the prefix holds something this version cannot read.
    #[error("unreadable data in etcd at {key}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A journal write was refused: another primary was elected.
    #[error("{0}")]
    Fenced(String),
}

impl From<EtcdError> for EngineError {
    fn from(e: EtcdError) -> Self {
        match e {
            EtcdError::Corrupt { .. } => EngineError::Internal(e.to_string()),
            _ => EngineError::Unavailable(e.to_string()),
        }
    }
}
