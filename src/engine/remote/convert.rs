//! API messages back to engine types: the inverse of
//! `service::convert`. Unix milliseconds become times, a 0 deadline becomes
//! "never", an empty value becomes `None`.

use crate::engine::{
    EndReason, EngineError, EventKind, Grant, HolderView, KeySummary, KeyView, LockEvent,
    QueuedView, WaitUpdate,
};
use crate::proto::v1::{self as pb, wait_event::Event};

fn value(v: String) -> Option<String> {
    (!v.is_empty()).then_some(v)
}

fn deadline(d: u64) -> Option<u64> {
    (d != 0).then_some(d)
}

/// A holder as the engine describes it (`remaining_ms` is recomputed by
/// whoever shows it).
pub fn holder(h: pb::Holder) -> HolderView {
    HolderView {
        index: h.index,
        value: value(h.value),
        ttl_ms: h.ttl_ms,
        acquired_at: h.acquired_unix_ms,
        deadline: deadline(h.deadline_unix_ms),
        lock_delay_ms: h.lock_delay_ms,
    }
}

/// A queued entry.
pub fn queued_entry(q: pb::QueuedEntry) -> QueuedView {
    QueuedView {
        index: q.index,
        value: value(q.value),
        ttl_ms: q.ttl_ms,
        queued_at: q.queued_unix_ms,
        waiters: q.waiters,
    }
}

/// A key's state from `Lock.Get`.
pub fn key_view(r: pb::GetResponse) -> KeyView {
    KeyView {
        holder: r.holder.map(holder),
        holders: r.holders.into_iter().map(holder).collect(),
        queue: r.queue.into_iter().map(queued_entry).collect(),
        limit: r.limit,
        delayed_until: deadline(r.delayed_until_unix_ms),
    }
}

/// One key of a `Lock.List` page.
pub fn key_summary(k: pb::KeySummary) -> KeySummary {
    KeySummary {
        key: k.key,
        holder: k.holder.map(holder),
        queue_length: k.queue_length,
        delayed_until: deadline(k.delayed_until_unix_ms),
    }
}

/// One step of a `Lock.Wait` stream. A message with no step, or an end
/// reason this build does not know, is a broken primary: `Internal`.
pub fn wait_update(e: pb::WaitEvent) -> Result<WaitUpdate, EngineError> {
    match e.event {
        Some(Event::Queued(q)) => Ok(WaitUpdate::Queued {
            index: q.index,
            position: q.position,
            holder: q.holder.map(holder),
        }),
        Some(Event::Acquired(a)) => Ok(WaitUpdate::Acquired(Grant {
            index: a.index,
            ttl_ms: a.ttl_ms,
            deadline: deadline(a.deadline_unix_ms),
        })),
        Some(Event::Ended(end)) => {
            let reason = match pb::EndReason::try_from(end.reason) {
                Ok(pb::EndReason::Released) => EndReason::Released,
                Ok(pb::EndReason::Expired) => EndReason::Expired,
                _ => {
                    return Err(EngineError::Internal(format!(
                        "the primary sent an unknown end reason {}",
                        end.reason
                    )));
                }
            };
            Ok(WaitUpdate::Ended {
                index: end.index,
                reason,
            })
        }
        None => Err(EngineError::Internal(
            "the primary sent an empty wait event".into(),
        )),
    }
}

/// One `Lock.Watch` event.
pub fn lock_event(e: pb::LockEvent) -> Result<LockEvent, EngineError> {
    let kind = match pb::EventKind::try_from(e.kind) {
        Ok(pb::EventKind::Queued) => EventKind::Queued,
        Ok(pb::EventKind::Acquired) => EventKind::Acquired,
        Ok(pb::EventKind::Renewed) => EventKind::Renewed,
        Ok(pb::EventKind::Released) => EventKind::Released,
        Ok(pb::EventKind::Expired) => EventKind::Expired,
        Ok(pb::EventKind::Cancelled) => EventKind::Cancelled,
        Ok(pb::EventKind::DelayEnded) => EventKind::DelayEnded,
        _ => {
            return Err(EngineError::Internal(format!(
                "the primary sent an unknown event kind {}",
                e.kind
            )));
        }
    };
    Ok(LockEvent {
        key: e.key,
        kind,
        index: e.index,
        value: value(e.value),
        ttl_ms: e.ttl_ms,
        at: e.at_unix_ms,
        holder: e.holder.map(holder),
        queue_length: e.queue_length,
        delayed_until: deadline(e.delayed_until_unix_ms),
    })
}
