//! The contract at the engine's own interface (`Arc<dyn Engine>`, what the
//! service layer calls), on every backend: for the forwarded and etcd
//! backends that is the follower's forwarding engine, a gRPC client.

use std::time::Duration;

use baton::engine::{AcquireSpec, EngineStats, Target, WaitUpdate};
use futures::{FutureExt, StreamExt};

use crate::common::eventually;
use crate::fixture::{Backend, Fixture, Options};

fn spec(key: &str, value: Option<&str>, ttl_ms: u64) -> AcquireSpec {
    AcquireSpec {
        key: key.into(),
        value: value.map(str::to_owned),
        ttl_ms,
        timeout_ms: None,
        limit: 1,
        lock_delay_ms: 0,
    }
}

/// A hold expires at its deadline: held just before, gone just after (to
/// the millisecond on paused time; within a margin in real time).
pub async fn a_hold_expires_at_its_deadline(backend: Backend) {
    let fx = Fixture::start(backend, Options::default()).await;
    let engine = fx.engine();
    let margin = fx.margin();
    let ttl = 1_000;
    let before = fx.now_ms();
    let mut s = engine.wait(spec("exp", None, ttl)).await.expect("wait");
    let Some(Ok(WaitUpdate::Acquired(g))) = next(&mut s).await else {
        panic!("not granted");
    };
    let after = fx.now_ms();
    let deadline = g.deadline.expect("a deadline");
    assert!(
        (before..=after).contains(&(deadline - ttl)),
        "deadline {deadline} is not ttl after the grant, between {before} and {after}"
    );
    tokio::time::sleep_until(fx.instant_at(deadline) - margin - Duration::from_millis(1)).await;
    let view = engine.get("exp").await.expect("get");
    assert_eq!(view.holder.map(|h| h.index), Some(g.index), "expired early");
    tokio::time::sleep_until(fx.instant_at(deadline) + margin + Duration::from_millis(1)).await;
    let view = engine.get("exp").await.expect("get");
    assert_eq!(view.holder, None, "did not expire at {deadline}");
    // The holder, still listening, is told.
    match next(&mut s).await {
        Some(Ok(WaitUpdate::Ended { index, .. })) => assert_eq!(index, g.index),
        other => panic!("expected ended, got {other:?}"),
    }
}

/// The next step of a wait stream, 30 s at most (virtual time on paused
/// backends, so a stuck wait fails at once instead of hanging).
async fn next(
    s: &mut baton::engine::WaitStream,
) -> Option<Result<WaitUpdate, baton::engine::EngineError>> {
    tokio::time::timeout(Duration::from_secs(30), s.next())
        .await
        .expect("the wait stalled")
}

/// A request abandoned at any stage leaves nothing that nobody waits on:
/// dropped before its first reply, while queued, and granted but dropped
/// before it read the grant: that grant is undone and the next entry holds.
/// Through a follower too: the follower tells the primary when it hands a
/// grant on, and the primary's engine counts a forwarded grant as heard only
/// then (`Engine::wait_confirmed`).
pub async fn abandoned_requests_leave_nothing_behind(backend: Backend) {
    let fx = Fixture::start(backend, Options::default()).await;
    let engine = fx.engine();
    let mut holder = engine.wait(spec("gone", None, 0)).await.expect("wait");
    let Some(Ok(WaitUpdate::Acquired(first))) = next(&mut holder).await else {
        panic!("not granted");
    };
    // Dropped before the first reply: the future is polled once (the
    // request is sent) and dropped.
    let _ = engine.wait(spec("gone", Some("early"), 0)).now_or_never();
    // Dropped while queued.
    let mut queued = engine
        .wait(spec("gone", Some("queued"), 0))
        .await
        .expect("wait");
    assert!(matches!(
        next(&mut queued).await,
        Some(Ok(WaitUpdate::Queued { .. }))
    ));
    drop(queued);
    // Granted on the release below but dropped unread.
    let mut unread = engine
        .wait(spec("gone", Some("unread"), 0))
        .await
        .expect("wait");
    assert!(matches!(
        next(&mut unread).await,
        Some(Ok(WaitUpdate::Queued { .. }))
    ));
    // And one that stays, behind it.
    let mut last = engine
        .wait(spec("gone", Some("last"), 0))
        .await
        .expect("wait");
    let Some(Ok(WaitUpdate::Queued {
        index: last_index, ..
    })) = next(&mut last).await
    else {
        panic!("not queued");
    };
    engine
        .release("gone", Target::Index(first.index))
        .await
        .expect("release");
    drop(holder);
    drop(unread);
    // Nothing abandoned holds or waits: `last` holds.
    match next(&mut last).await {
        Some(Ok(WaitUpdate::Acquired(g))) => assert_eq!(g.index, last_index),
        other => panic!("expected acquired, got {other:?}"),
    }
    let settled = eventually(Duration::from_secs(10), || {
        let engine = engine.clone();
        async move {
            let view = engine.get("gone").await.expect("get");
            view.queue.is_empty() && view.holders.len() == 1
        }
    })
    .await;
    let view = engine.get("gone").await.expect("get");
    assert!(settled, "left behind: {view:?}");
    assert_eq!(view.holder.map(|h| h.index), Some(last_index));
    drop(last);
    engine
        .release("gone", Target::Index(last_index))
        .await
        .expect("release");
    let stats = engine.stats().await.expect("stats");
    assert_eq!(
        stats,
        EngineStats {
            keys: 0,
            entries: 0,
            waiters: 0
        }
    );
}
