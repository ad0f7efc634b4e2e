//! Compacting etcd's history, as kube-apiserver does: etcd keeps every
//! revision of every key until it is compacted, and the primary's journal
//! writes at least one revision per batch, so at thousands of batches a
//! second an uncompacted etcd fills its quota and refuses writes (NOSPACE).
//!
//! Every `--etcd-compaction-interval-secs` the primary compacts etcd up to
//! the revision it saw one interval earlier, so watchers always have at
//! least one interval of history, and nothing older piles up. An operator
//! who runs etcd with `--auto-compaction-retention` can turn this off
//! with 0.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{
    endpoints::{Call, Endpoints},
    error::EtcdError,
};

/// Compacts etcd every `interval` until `stop`; see the module docs.
pub async fn run(endpoints: Endpoints, key: String, interval: Duration, stop: CancellationToken) {
    if interval.is_zero() {
        return;
    }
    let mut seen: Option<i64> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Some(rev) = seen
            && rev > 0
        {
            // Safe to send again: compacting to a revision twice is
            // compacting once (the second is told it is already done).
            let compact = endpoints
                .call(
                    Call::safe(),
                    |mut c| async move { c.compact(rev, None).await },
                )
                .await;
            match compact {
                Ok(_) => tracing::debug!(revision = rev, "compacted etcd"),
                // Already compacted that far (by etcd itself, an earlier
                // primary, or an attempt of ours whose answer was lost).
                Err(EtcdError::Client(e))
                    if e.to_string()
                        .contains("required revision has been compacted") => {}
                Err(e) => tracing::warn!(error = %e, revision = rev, "could not compact etcd"),
            }
        }
        // The revision now, to compact to one interval from now (a read:
        // safe to send again).
        seen = endpoints
            .call(Call::safe(), |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await
            .ok()
            .and_then(|r| r.header().map(|h| h.revision()));
    }
}
