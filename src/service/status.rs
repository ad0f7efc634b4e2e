//! The `baton.v1.Status` operation: what the server is and what it holds.
//! gRPC's `Status.Get`, the gateway's `/v1/status` and a follower's
//! forwarded `stats` all read it here, so they cannot disagree.

use super::{Rpc, Service, ServiceError};
use crate::proto::v1 as pb;

impl Service {
    /// Status.Get: version, backend, the engine's counts, open streams and
    /// uptime, and the process's role in its cluster (`embedded`, or over
    /// etcd `primary`, `follower` or `electing`) with the primary's URL.
    pub async fn status(
        &self,
        _req: pb::StatusRequest,
    ) -> Result<pb::StatusResponse, ServiceError> {
        // Any known caller may read it: it names no key.
        self.authenticated(Rpc::Status, "")?;
        let stats = self.stats().await?;
        let backend = self.backend();
        let cluster = self.cluster();
        Ok(pb::StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            backend: backend.to_owned(),
            keys: stats.keys,
            entries: stats.entries,
            waiters: stats.waiters,
            open_streams: self.open_streams() as u64,
            uptime_ms: self.uptime().as_millis() as u64,
            role: cluster.role.to_owned(),
            primary_url: cluster.primary_url.unwrap_or_default(),
        })
    }
}
