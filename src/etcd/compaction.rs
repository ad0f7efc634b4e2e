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

use etcd_client::Client;
use tokio_util::sync::CancellationToken;

/// Compacts etcd every `interval` until `stop`; see the module docs.
pub async fn run(client: Client, key: String, interval: Duration, stop: CancellationToken) {
    if interval.is_zero() {
        return;
    }
    let mut kv = client.kv_client();
    let mut seen: Option<i64> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Some(rev) = seen
            && rev > 0
        {
            match tokio::time::timeout(interval, kv.compact(rev, None)).await {
                Ok(Ok(_)) => tracing::debug!(revision = rev, "compacted etcd"),
                // Already compacted that far (by etcd itself or an earlier
                // primary): nothing to do.
                Ok(Err(e))
                    if e.to_string()
                        .contains("required revision has been compacted") => {}
                Ok(Err(e)) => tracing::warn!(error = %e, revision = rev, "could not compact etcd"),
                Err(_) => tracing::warn!(revision = rev, "etcd did not answer a compaction"),
            }
        }
        // The revision now, to compact to one interval from now.
        seen = match tokio::time::timeout(interval, kv.get(key.clone(), None)).await {
            Ok(Ok(r)) => r.header().map(|h| h.revision()),
            _ => None,
        };
    }
}
