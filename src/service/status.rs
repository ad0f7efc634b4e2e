//! The `baton.v1.Status` operation: what the server is and what it holds.
//! gRPC's `Status.Get`, the gateway's `/v1/status` and a follower's
//! forwarded `stats` all read it here, so they cannot disagree.

use super::{Service, ServiceError};
use crate::proto::v1 as pb;

impl Service {
    /// Status.Get: version, backend, the engine's counts, open streams and
    /// uptime. `role` says `embedded` for the embedded backend; the etcd
    /// backend's role and primary URL are left for it to fill.
    pub async fn status(
        &self,
        _req: pb::StatusRequest,
    ) -> Result<pb::StatusResponse, ServiceError> {
        let stats = self.stats().await?;
        let backend = self.backend();
        Ok(pb::StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            backend: backend.to_owned(),
            keys: stats.keys,
            entries: stats.entries,
            waiters: stats.waiters,
            open_streams: self.open_streams() as u64,
            uptime_ms: self.uptime().as_millis() as u64,
            role: if backend == "embedded" {
                "embedded".to_owned()
            } else {
                String::new()
            },
            primary_url: String::new(),
        })
    }
}
