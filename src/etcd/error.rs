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
    /// The gateway has no etcd session (not connected yet, or lost).
    #[error("not connected to etcd: {0}")]
    NoSession(String),
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
    /// Every one of the gateway's etcd request slots stayed taken for the
    /// whole request timeout (see [`pacer`](super::pacer)).
    #[error(
        "etcd is busy: all {inflight} request slots of this gateway stayed taken for {waited:?}"
    )]
    Busy {
        /// `--etcd-max-inflight`.
        inflight: usize,
        /// How long the request waited for a slot.
        waited: Duration,
    },
    /// A watcher fell too far behind etcd's events and was cut off.
    #[error("the watch fell behind etcd's events; read the state again and re-watch")]
    Lagged,
    /// Transactions kept losing races; the caller may retry.
    #[error("{0}")]
    Contention(String),
}

impl EtcdError {
    /// Whether this failure suggests the connection itself is broken, so the
    /// session should be checked at once.
    pub fn is_connectivity(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::NoSession(_) | Self::WatchLost(_) => true,
            Self::Client(e) => matches!(
                e,
                etcd_client::Error::TransportError(_)
                    | etcd_client::Error::IoError(_)
                    | etcd_client::Error::GRpcStatus(_)
            ),
            _ => false,
        }
    }

    /// Whether etcd said a lease used in the request does not exist.
    pub fn is_lease_not_found(&self) -> bool {
        match self {
            Self::Client(etcd_client::Error::GRpcStatus(s)) => {
                s.message().contains("requested lease not found")
            }
            _ => false,
        }
    }
}

impl From<EtcdError> for EngineError {
    fn from(e: EtcdError) -> Self {
        match e {
            EtcdError::Corrupt { .. } => EngineError::Internal(e.to_string()),
            EtcdError::Lagged => EngineError::Lagged(0),
            _ => EngineError::Unavailable(e.to_string()),
        }
    }
}
