//! Property tests of the table's semaphores and lock-delay over random
//! histories, checked against the rules themselves rather than a model:
//!
//! - never more than `limit` holders of a key, and the holders are the
//!   oldest entries (FIFO: a key's grants come in index order);
//! - a key with room and no delay has no entry waiting (nobody waits for
//!   nothing);
//! - a lock-delay never grants early: no grant on a key before the latest
//!   `deadline + lock_delay` of a hold of it that expired;
//! - and never late by more than the timer slack: once time reaches the
//!   end of the delay, the next operation (the driver's timer is one) finds
//!   the waiting entries granted, with the grant stamped at that moment.

use std::collections::HashMap;

use baton::engine::{
    AcquireSpec, EventKind, Target,
    table::{Admission, Departure, LockTable, TableLimits, WaiterId},
};
use baton::store::HeldRecord;
use proptest::prelude::*;

/// The keys of a history and their limits: a lock and two semaphores.
const LIMITS: [u32; 3] = [1, 2, 3];

#[derive(Clone, Debug)]
enum Op {
    Acquire {
        key: usize,
        value: Option<u8>,
        ttl: u64,
        delay: u64,
        timeout: Option<u64>,
    },
    Withdraw(usize, bool),
    Renew {
        key: usize,
        nth: usize,
        ttl: u64,
    },
    Release {
        key: usize,
        nth: usize,
    },
    Advance(u64),
    /// Jump to exactly the table's next timer (a punctual driver).
    NextTimer,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            0..LIMITS.len(),
            proptest::option::weighted(0.3, 0u8..4),
            prop_oneof![Just(0u64), 20u64..200],
            prop_oneof![Just(0u64), 10u64..300],
            proptest::option::weighted(0.3, 0u64..150),
        )
            .prop_map(|(key, value, ttl, delay, timeout)| Op::Acquire {
                key,
                value,
                ttl,
                delay,
                timeout
            }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(n, i)| Op::Withdraw(n, i)),
        1 => (0..LIMITS.len(), any::<usize>(), 0u64..200)
            .prop_map(|(key, nth, ttl)| Op::Renew { key, nth, ttl }),
        1 => (0..LIMITS.len(), any::<usize>()).prop_map(|(key, nth)| Op::Release { key, nth }),
        2 => (1u64..120).prop_map(Op::Advance),
        2 => Just(Op::NextTimer),
    ]
}

fn key(k: usize) -> String {
    format!("k{k}")
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut t = LockTable::new(TableLimits::default());
    let mut now = 0u64;
    let mut stored: std::collections::BTreeMap<u64, HeldRecord> = std::collections::BTreeMap::new();
    let mut waiters: Vec<WaiterId> = Vec::new();
    let mut indexes: Vec<Vec<u64>> = vec![Vec::new(); LIMITS.len()];
    // The lock-delay each index was created with.
    let mut delay_of: HashMap<u64, u64> = HashMap::new();
    // Per key: the end of the latest delay started by an expiry.
    let mut delayed_until: Vec<u64> = vec![0; LIMITS.len()];
    // Per key: the last index granted.
    let mut last_grant: Vec<u64> = vec![0; LIMITS.len()];
    for op in ops {
        match op {
            Op::Acquire {
                key: k,
                value,
                ttl,
                delay,
                timeout,
            } => {
                let spec = AcquireSpec {
                    key: key(k),
                    value: value.map(|v| format!("v{v}")),
                    ttl_ms: ttl,
                    timeout_ms: timeout,
                    limit: LIMITS[k],
                    lock_delay_ms: delay,
                };
                if let Ok((w, admission)) = t.acquire(spec, now) {
                    waiters.push(w);
                    let index = match admission {
                        Admission::Granted(g) => g.index,
                        Admission::Queued { index, .. } => index,
                    };
                    if !indexes[k].contains(&index) {
                        indexes[k].push(index);
                        delay_of.insert(index, delay);
                    }
                }
            }
            Op::Withdraw(n, informed) => {
                if !waiters.is_empty() {
                    let w = waiters.remove(n % waiters.len());
                    let d = if informed {
                        Departure::Informed
                    } else {
                        Departure::Uninformed
                    };
                    t.withdraw(w, d, now);
                }
            }
            Op::Renew { key: k, nth, ttl } => {
                if let Some(&i) = indexes[k].get(nth % indexes[k].len().max(1)) {
                    let _ = t.renew(&key(k), &Target::Index(i), ttl, now);
                }
            }
            Op::Release { key: k, nth } => {
                if let Some(&i) = indexes[k].get(nth % indexes[k].len().max(1)) {
                    let _ = t.release(&key(k), &Target::Index(i), now);
                }
            }
            Op::Advance(dt) => {
                now += dt;
                t.advance(now);
            }
            Op::NextTimer => {
                if let Some(at) = t.next_timer() {
                    now = now.max(at);
                    t.advance(now);
                }
            }
        }
        let out = t.take_output();
        // What a journal replaying the records holds is what the table
        // says is stored (what a compaction writes).
        for r in out.records {
            r.apply_to(&mut stored);
        }
        let mut snapshot = t.stored();
        snapshot.sort_by_key(|h| h.index);
        prop_assert_eq!(&snapshot, &stored.values().cloned().collect::<Vec<_>>());
        for ev in out.events {
            let k: usize = ev.key[1..].parse().unwrap();
            match ev.kind {
                EventKind::Expired => {
                    let d = delay_of.get(&ev.index).copied().unwrap_or(0);
                    if d > 0 {
                        // An expiry is reported at the hold's deadline.
                        delayed_until[k] = delayed_until[k].max(ev.at + d);
                        prop_assert_eq!(ev.delayed_until, Some(delayed_until[k]));
                    }
                }
                EventKind::DelayEnded => {
                    prop_assert_eq!(
                        ev.at,
                        delayed_until[k],
                        "{} delay ended early or late",
                        ev.key
                    );
                    prop_assert_eq!(ev.delayed_until, None);
                }
                EventKind::Acquired => {
                    prop_assert!(
                        ev.at >= delayed_until[k],
                        "{} granted at {} inside a delay until {}",
                        ev.key,
                        ev.at,
                        delayed_until[k]
                    );
                    prop_assert!(
                        ev.index > last_grant[k],
                        "{} granted {} after {}: not FIFO",
                        ev.key,
                        ev.index,
                        last_grant[k]
                    );
                    last_grant[k] = ev.index;
                }
                _ => {}
            }
        }
        for (k, &limit) in LIMITS.iter().enumerate() {
            let view = t.get(&key(k), now);
            prop_assert!(
                view.holders.len() <= limit as usize,
                "{} has {} holders, limit {}",
                key(k),
                view.holders.len(),
                limit
            );
            // Holders are the oldest entries.
            if let (Some(h), Some(q)) = (view.holders.last(), view.queue.first()) {
                prop_assert!(h.index < q.index);
            }
            // Never late: past the delay, a key with room has nobody
            // waiting.
            if now >= delayed_until[k] {
                prop_assert_eq!(
                    view.delayed_until,
                    None,
                    "{} still delayed at {}",
                    key(k),
                    now
                );
            } else {
                prop_assert_eq!(view.delayed_until, Some(delayed_until[k]));
            }
            if view.delayed_until.is_none() && view.holders.len() < limit as usize {
                prop_assert!(
                    view.queue.is_empty(),
                    "{} waits with room: {:?}",
                    key(k),
                    view
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn semaphores_and_lock_delay_keep_their_rules(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
