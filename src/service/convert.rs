//! Engine types to API messages. Times become Unix milliseconds, absent
//! deadlines become 0, absent values become "".

use crate::engine::{EndReason, EventKind, Grant, HolderView, LockEvent, QueuedView, UnixMillis};
use crate::proto::v1 as pb;

/// A holder as the API shows it, with the time it has left at `now`.
pub fn holder(h: &HolderView, now: UnixMillis) -> pb::Holder {
    pb::Holder {
        index: h.index,
        value: h.value.clone().unwrap_or_default(),
        ttl_ms: h.ttl_ms,
        acquired_unix_ms: h.acquired_at,
        deadline_unix_ms: h.deadline.unwrap_or(0),
        remaining_ms: h.deadline.map_or(0, |d| d.saturating_sub(now)),
        lock_delay_ms: h.lock_delay_ms,
    }
}

/// A holder as an election's leader.
pub fn leader(h: &HolderView) -> pb::Leader {
    pb::Leader {
        name: h.value.clone().unwrap_or_default(),
        index: h.index,
        ttl_ms: h.ttl_ms,
        elected_unix_ms: h.acquired_at,
        deadline_unix_ms: h.deadline.unwrap_or(0),
    }
}

/// A queued entry.
pub fn queued_entry(q: &QueuedView) -> pb::QueuedEntry {
    pb::QueuedEntry {
        index: q.index,
        value: q.value.clone().unwrap_or_default(),
        ttl_ms: q.ttl_ms,
        queued_unix_ms: q.queued_at,
        waiters: q.waiters,
    }
}

/// A grant.
pub fn acquired(g: &Grant) -> pb::Acquired {
    pb::Acquired {
        index: g.index,
        ttl_ms: g.ttl_ms,
        deadline_unix_ms: g.deadline.unwrap_or(0),
    }
}

/// The end of a hold.
pub fn ended(index: u64, reason: EndReason) -> pb::Ended {
    pb::Ended {
        index,
        reason: match reason {
            EndReason::Released => pb::EndReason::Released,
            EndReason::Expired => pb::EndReason::Expired,
        } as i32,
    }
}

/// A watch event.
pub fn event(e: &LockEvent, now: UnixMillis) -> pb::LockEvent {
    pb::LockEvent {
        key: e.key.clone(),
        kind: match e.kind {
            EventKind::Queued => pb::EventKind::Queued,
            EventKind::Acquired => pb::EventKind::Acquired,
            EventKind::Renewed => pb::EventKind::Renewed,
            EventKind::Released => pb::EventKind::Released,
            EventKind::Expired => pb::EventKind::Expired,
            EventKind::Cancelled => pb::EventKind::Cancelled,
            EventKind::DelayEnded => pb::EventKind::DelayEnded,
        } as i32,
        index: e.index,
        value: e.value.clone().unwrap_or_default(),
        ttl_ms: e.ttl_ms,
        at_unix_ms: e.at,
        holder: e.holder.as_ref().map(|h| holder(h, now)),
        queue_length: e.queue_length,
        delayed_until_unix_ms: e.delayed_until.unwrap_or(0),
    }
}
