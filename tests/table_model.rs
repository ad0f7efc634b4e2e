//! Property tests of the clock-free lock table against a small reference
//! model: random histories of acquire / join / renew / release / withdraw /
//! advance-time, compared step by step.
//!
//! The model is written for obviousness (vectors, linear scans, one timer
//! at a time); the table for speed (ordered maps, a timer set). After every
//! step the two must agree on the answer, on what every waiter was told and
//! on every key's holder and queue, and the contract's invariants must hold:
//! never two holders, FIFO grants, strictly rising indexes, joined requests
//! told the same index, expiry exactly at the deadline, withdrawn requests
//! leaving nothing behind.

use std::collections::BTreeMap;

use baton::engine::{
    AcquireSpec, EndReason, FailReason, Grant, Target,
    table::{Admission, Departure, LockTable, Notice, TableError, TableLimits, WaiterId},
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Acquire {
        key: u8,
        value: Option<u8>,
        ttl: u64,
        timeout: Option<u64>,
    },
    /// Withdraw the n-th live waiter (mod count); `true` if it heard
    /// its grant.
    Withdraw(usize, bool),
    Renew {
        key: u8,
        target: ModelTarget,
        ttl: u64,
    },
    Release {
        key: u8,
        target: ModelTarget,
    },
    Advance(u64),
}

#[derive(Clone, Debug)]
enum ModelTarget {
    /// The n-th index ever handed out (mod count), so targets usually exist.
    Nth(usize),
    Value(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..3;
    let value = prop_oneof![Just(None), (0u8..3).prop_map(Some)];
    let ttl = prop_oneof![Just(0u64), Just(5), Just(10), Just(20)];
    let timeout = prop_oneof![Just(None), Just(Some(0u64)), Just(Some(5)), Just(Some(15))];
    let target = prop_oneof![
        (0usize..64).prop_map(ModelTarget::Nth),
        (0u8..3).prop_map(ModelTarget::Value)
    ];
    prop_oneof![
        4 => (key.clone(), value, ttl.clone(), timeout)
            .prop_map(|(key, value, ttl, timeout)| Op::Acquire { key, value, ttl, timeout }),
        2 => (0usize..64, any::<bool>()).prop_map(|(n, informed)| Op::Withdraw(n, informed)),
        1 => (key.clone(), target.clone(), ttl).prop_map(|(key, target, ttl)| Op::Renew { key, target, ttl }),
        2 => (key, target).prop_map(|(key, target)| Op::Release { key, target }),
        3 => (0u64..15).prop_map(Op::Advance),
    ]
}

#[derive(Clone, Debug)]
struct MEntry {
    index: u64,
    value: Option<String>,
    ttl: u64,
    held: bool,
    deadline: Option<u64>,
    waiters: Vec<u64>,
    /// A waiter heard its grant, or a renew named it.
    heard: bool,
}

#[derive(Clone, Debug)]
struct MWaiter {
    key: String,
    index: u64,
    timeout_at: Option<u64>,
}

#[derive(Default)]
struct Model {
    keys: BTreeMap<String, Vec<MEntry>>,
    waiters: BTreeMap<u64, MWaiter>,
    next_index: u64,
    next_waiter: u64,
    now: u64,
    notices: Vec<(u64, Notice)>,
}

fn deadline(now: u64, ttl: u64) -> Option<u64> {
    (ttl > 0).then_some(now + ttl)
}

impl Model {
    fn new() -> Self {
        Self {
            next_index: 1,
            next_waiter: 1,
            ..Self::default()
        }
    }

    fn advance(&mut self, now: u64) {
        self.now = self.now.max(now);
        loop {
            // The earliest due timer: expiries before timeouts at the same
            // millisecond, then by index / waiter id.
            let mut due: Option<(u64, u8, u64)> = None;
            for q in self.keys.values() {
                if let Some(e) = q.first()
                    && let Some(d) = e.deadline
                    && d <= self.now
                {
                    let c = (d, 0, e.index);
                    due = Some(due.map_or(c, |x| x.min(c)));
                }
            }
            for (&w, mw) in &self.waiters {
                if let Some(t) = mw.timeout_at
                    && t <= self.now
                {
                    let c = (t, 1, w);
                    due = Some(due.map_or(c, |d| d.min(c)));
                }
            }
            let Some((at, kind, id)) = due else { break };
            if kind == 0 {
                let key = self.key_of(id).unwrap();
                // The next holder counts its ttl from now, not from the
                // deadline that fired late.
                let now = self.now;
                self.remove(&key, id, Some(EndReason::Expired), now);
            } else {
                let w = self.waiters.remove(&id).unwrap();
                self.notices.push((
                    id,
                    Notice::Failed {
                        index: w.index,
                        reason: FailReason::TimedOut,
                    },
                ));
                self.detach(&w.key, w.index, id, at);
            }
        }
    }

    fn key_of(&self, index: u64) -> Option<String> {
        self.keys
            .iter()
            .find(|(_, q)| q.iter().any(|e| e.index == index))
            .map(|(k, _)| k.clone())
    }

    fn detach(&mut self, key: &str, index: u64, waiter: u64, now: u64) {
        let q = self.keys.get_mut(key).unwrap();
        let e = q.iter_mut().find(|e| e.index == index).unwrap();
        e.waiters.retain(|&w| w != waiter);
        // A queued entry, or a hold nobody heard of, dies with its last
        // waiter.
        if (!e.held || !e.heard) && e.waiters.is_empty() {
            self.remove(key, index, None, now);
        }
    }

    /// Removes an entry. `reason` is None for a withdrawn queued entry.
    fn remove(&mut self, key: &str, index: u64, reason: Option<EndReason>, now: u64) {
        let q = self.keys.get_mut(key).unwrap();
        let pos = q.iter().position(|e| e.index == index).unwrap();
        let e = q.remove(pos);
        for w in &e.waiters {
            self.waiters.remove(w);
            let notice = if e.held {
                Notice::Ended {
                    index,
                    reason: reason.unwrap_or(EndReason::Released),
                }
            } else {
                Notice::Failed {
                    index,
                    reason: FailReason::Released,
                }
            };
            self.notices.push((*w, notice));
        }
        if pos == 0
            && let Some(next) = q.first_mut()
        {
            next.held = true;
            next.deadline = deadline(now, next.ttl);
            let grant = Grant {
                index: next.index,
                ttl_ms: next.ttl,
                deadline: next.deadline,
            };
            for w in next.waiters.clone() {
                self.waiters.get_mut(&w).unwrap().timeout_at = None;
                self.notices.push((w, Notice::Granted(grant)));
            }
        }
        if q.is_empty() {
            self.keys.remove(key);
        }
    }

    fn add_waiter(&mut self, key: &str, index: u64, timeout_at: Option<u64>) -> u64 {
        let id = self.next_waiter;
        self.next_waiter += 1;
        self.waiters.insert(
            id,
            MWaiter {
                key: key.into(),
                index,
                timeout_at,
            },
        );
        let e = self
            .keys
            .get_mut(key)
            .unwrap()
            .iter_mut()
            .find(|e| e.index == index)
            .unwrap();
        e.waiters.push(id);
        id
    }

    fn acquire(&mut self, s: &AcquireSpec, now: u64) -> Result<(u64, Admission), ()> {
        self.advance(now);
        let now = self.now;
        let q = self.keys.get(&s.key).cloned().unwrap_or_default();
        let same = s
            .value
            .as_ref()
            .and_then(|v| q.iter().position(|e| e.value.as_ref() == Some(v)));
        if let Some(pos) = same {
            let index = q[pos].index;
            if pos != 0 && s.timeout_ms == Some(0) {
                return Err(());
            }
            let timeout_at = if pos == 0 {
                None
            } else {
                s.timeout_ms.map(|t| now + t)
            };
            let id = self.add_waiter(&s.key, index, timeout_at);
            let e = &mut self.keys.get_mut(&s.key).unwrap()[pos];
            e.ttl = s.ttl_ms;
            if pos == 0 {
                e.deadline = deadline(now, s.ttl_ms);
                return Ok((
                    id,
                    Admission::Granted(Grant {
                        index,
                        ttl_ms: s.ttl_ms,
                        deadline: e.deadline,
                    }),
                ));
            }
            return Ok((id, self.queued(&s.key, index, pos)));
        }
        if !q.is_empty() && s.timeout_ms == Some(0) {
            return Err(());
        }
        let index = self.next_index;
        self.next_index += 1;
        let held = q.is_empty();
        self.keys.entry(s.key.clone()).or_default().push(MEntry {
            index,
            value: s.value.clone(),
            ttl: s.ttl_ms,
            held,
            deadline: if held { deadline(now, s.ttl_ms) } else { None },
            waiters: vec![],
            heard: false,
        });
        let timeout_at = if held {
            None
        } else {
            s.timeout_ms.map(|t| now + t)
        };
        let id = self.add_waiter(&s.key, index, timeout_at);
        if held {
            Ok((
                id,
                Admission::Granted(Grant {
                    index,
                    ttl_ms: s.ttl_ms,
                    deadline: deadline(now, s.ttl_ms),
                }),
            ))
        } else {
            Ok((id, self.queued(&s.key, index, q.len())))
        }
    }

    fn queued(&self, _key: &str, index: u64, position: usize) -> Admission {
        Admission::Queued {
            index,
            position: position as u64,
            holder: None, // compared separately
        }
    }

    fn find(&self, key: &str, target: &Target) -> Option<u64> {
        let q = self.keys.get(key)?;
        q.iter()
            .find(|e| match target {
                Target::Index(i) => e.index == *i,
                Target::Value(v) => e.value.as_ref() == Some(v),
            })
            .map(|e| e.index)
    }

    fn renew(&mut self, key: &str, target: &Target, ttl: u64, now: u64) -> Option<u64> {
        self.advance(now);
        let now = self.now;
        let index = self.find(key, target)?;
        let e = self
            .keys
            .get_mut(key)?
            .iter_mut()
            .find(|e| e.index == index)?;
        e.ttl = ttl;
        e.heard = true;
        if e.held {
            e.deadline = deadline(now, ttl);
        }
        Some(index)
    }

    fn release(&mut self, key: &str, target: &Target, now: u64) -> Option<u64> {
        self.advance(now);
        let index = self.find(key, target)?;
        self.remove(key, index, Some(EndReason::Released), self.now);
        Some(index)
    }

    fn withdraw(&mut self, waiter: u64, informed: bool, now: u64) {
        self.advance(now);
        if let Some(w) = self.waiters.remove(&waiter) {
            let e = self
                .keys
                .get_mut(&w.key)
                .unwrap()
                .iter_mut()
                .find(|e| e.index == w.index)
                .unwrap();
            if informed && e.held {
                e.heard = true;
            }
            self.detach(&w.key, w.index, waiter, self.now);
        }
    }
}

fn strip_holder(a: Admission) -> Admission {
    match a {
        Admission::Queued {
            index, position, ..
        } => Admission::Queued {
            index,
            position,
            holder: None,
        },
        g => g,
    }
}

fn sorted(mut v: Vec<(u64, Notice)>) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = v.drain(..).map(|(w, n)| (w, format!("{n:?}"))).collect();
    out.sort();
    out
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut table = LockTable::new(TableLimits::default());
    let mut model = Model::new();
    let mut now = 0u64;
    let mut handed_out: Vec<u64> = Vec::new();
    // index -> the grant every joined waiter was told, to check they agree.
    let mut grants: BTreeMap<u64, Grant> = BTreeMap::new();
    let keys = ["a", "b/c", "b/d"];
    for op in ops {
        match &op {
            Op::Acquire {
                key,
                value,
                ttl,
                timeout,
            } => {
                let spec = AcquireSpec {
                    key: keys[*key as usize].into(),
                    value: value.map(|v| format!("v{v}")),
                    ttl_ms: *ttl,
                    timeout_ms: *timeout,
                    limit: 1,
                    lock_delay_ms: 0,
                };
                let got = table.acquire(spec.clone(), now);
                let want = model.acquire(&spec, now);
                match (got, want) {
                    (Ok((w, a)), Ok((mw, ma))) => {
                        prop_assert_eq!(w, WaiterId(mw));
                        let (Admission::Granted(Grant { index, .. })
                        | Admission::Queued { index, .. }) = &a;
                        if !handed_out.contains(index) {
                            if let Some(last) = handed_out.last() {
                                prop_assert!(index > last, "indexes must rise");
                            }
                            handed_out.push(*index);
                        }
                        if let Admission::Queued { holder, .. } = &a {
                            prop_assert_eq!(
                                holder.as_ref().map(|h| h.index),
                                model.keys[&spec.key].first().map(|e| e.index)
                            );
                        }
                        prop_assert_eq!(strip_holder(a), ma);
                    }
                    (Err(TableError::NotImmediatelyAvailable { .. }), Err(())) => {}
                    (g, w) => prop_assert!(false, "{op:?}: table {g:?}, model {w:?}"),
                }
            }
            Op::Withdraw(i, informed) => {
                let live: Vec<u64> = model.waiters.keys().copied().collect();
                if !live.is_empty() {
                    let w = live[i % live.len()];
                    let departure = if *informed {
                        Departure::Informed
                    } else {
                        Departure::Uninformed
                    };
                    table.withdraw(WaiterId(w), departure, now);
                    model.withdraw(w, *informed, now);
                }
            }
            Op::Renew { key, target, ttl } => {
                let key = keys[*key as usize];
                let target = resolve(target, &handed_out);
                let got = table.renew(key, &target, *ttl, now).ok().map(|r| r.index);
                prop_assert_eq!(got, model.renew(key, &target, *ttl, now));
            }
            Op::Release { key, target } => {
                let key = keys[*key as usize];
                let target = resolve(target, &handed_out);
                let got = table.release(key, &target, now).ok().map(|r| r.index);
                prop_assert_eq!(got, model.release(key, &target, now));
            }
            Op::Advance(dt) => {
                now += dt;
                table.advance(now);
                model.advance(now);
            }
        }
        let out = table.take_output();
        for (_, n) in &out.notices {
            if let Notice::Granted(g) = n {
                // Everyone joined to one entry hears the same grant.
                let first = *grants.entry(g.index).or_insert(*g);
                prop_assert_eq!(first, *g);
            }
        }
        let got_notices: Vec<(u64, Notice)> =
            out.notices.into_iter().map(|(w, n)| (w.0, n)).collect();
        prop_assert_eq!(
            sorted(got_notices),
            sorted(std::mem::take(&mut model.notices)),
            "notices after {:?}",
            op
        );

        // Same holders and queues; at most one holder per key, at the head.
        for key in keys {
            let view = table.get(key, now);
            let mq = model.keys.get(key).cloned().unwrap_or_default();
            let mholder = mq.first().filter(|e| e.held);
            prop_assert_eq!(
                view.holder.as_ref().map(|h| (h.index, h.deadline)),
                mholder.map(|e| (e.index, e.deadline)),
                "holder of {} after {:?}",
                key,
                op
            );
            prop_assert_eq!(mq.iter().filter(|e| e.held).count() <= 1, true);
            let queue: Vec<u64> = view.queue.iter().map(|q| q.index).collect();
            let mqueue: Vec<u64> = mq.iter().skip(1).map(|e| e.index).collect();
            prop_assert_eq!(&queue, &mqueue);
            prop_assert!(queue.windows(2).all(|w| w[0] < w[1]), "FIFO order");
            // Expiry exactly at the deadline: a holder never outlives it.
            if let Some(h) = &view.holder
                && let Some(d) = h.deadline
            {
                prop_assert!(d > now);
            }
            // No queued entry without a waiter (withdrawn requests leave
            // nothing behind).
            prop_assert!(view.queue.iter().all(|q| q.waiters > 0));
        }
        prop_assert_eq!(table.waiter_count(), model.waiters.len());
    }
    Ok(())
}

fn resolve(t: &ModelTarget, handed_out: &[u64]) -> Target {
    match t {
        ModelTarget::Nth(n) if !handed_out.is_empty() => {
            Target::Index(handed_out[n % handed_out.len()])
        }
        ModelTarget::Nth(_) => Target::Index(1),
        ModelTarget::Value(v) => Target::Value(format!("v{v}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    #[test]
    fn table_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}

/// What a client can observe of a key, minus the indexes (which differ
/// between two tables when one handed out extra ones).
fn shape(t: &mut LockTable, key: &str, now: u64) -> String {
    let v = t.get(key, now);
    let holder = v
        .holder
        .map(|h| (h.value, h.ttl_ms, h.acquired_at, h.deadline));
    let queue: Vec<_> = v
        .queue
        .iter()
        .map(|q| (&q.value, q.ttl_ms, q.waiters))
        .collect();
    format!("{holder:?} {queue:?}")
}

/// The withdraw-after-apply order: a request whose caller went away right
/// after the table applied it (before the reply reached anyone) and that is
/// then withdrawn as uninformed leaves the table as if it had never come,
/// whether it was queued, granted at once, or joined another entry.
fn abandoned_requests_leave_no_trace(
    ops: Vec<Op>,
    extra: Vec<(usize, u8, Option<u8>, u64)>,
) -> Result<(), TestCaseError> {
    let mut plain = LockTable::new(TableLimits::default());
    let mut with_ghosts = LockTable::new(TableLimits::default());
    let keys = ["a", "b/c", "b/d"];
    let mut now = 0u64;
    // Waiters of the two tables differ in id; pair them up by creation.
    let mut pairs: Vec<(WaiterId, WaiterId)> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        for &(at, key, value, ttl) in &extra {
            if at == step {
                let spec = AcquireSpec {
                    key: keys[key as usize].into(),
                    // A value of its own: joining another request's entry
                    // would change that entry's ttl, a trace by design.
                    value: value.map(|v| format!("ghost{v}")),
                    ttl_ms: ttl,
                    timeout_ms: None,
                    limit: 1,
                    lock_delay_ms: 0,
                };
                if let Ok((ghost, _)) = with_ghosts.acquire(spec, now) {
                    with_ghosts.withdraw(ghost, Departure::Uninformed, now);
                }
            }
        }
        match op {
            Op::Acquire {
                key,
                value,
                ttl,
                timeout,
            } => {
                let spec = AcquireSpec {
                    key: keys[*key as usize].into(),
                    value: value.map(|v| format!("v{v}")),
                    ttl_ms: *ttl,
                    timeout_ms: *timeout,
                    limit: 1,
                    lock_delay_ms: 0,
                };
                let a = plain.acquire(spec.clone(), now).map(|(w, _)| w);
                let b = with_ghosts.acquire(spec, now).map(|(w, _)| w);
                prop_assert_eq!(a.is_ok(), b.is_ok(), "{:?}", op);
                if let (Ok(a), Ok(b)) = (a, b) {
                    pairs.push((a, b));
                }
            }
            Op::Withdraw(i, informed) if !pairs.is_empty() => {
                let (a, b) = pairs[i % pairs.len()];
                let d = if *informed {
                    Departure::Informed
                } else {
                    Departure::Uninformed
                };
                plain.withdraw(a, d, now);
                with_ghosts.withdraw(b, d, now);
            }
            Op::Withdraw(..) => {}
            // Renew and release by value only: indexes differ between the two.
            Op::Renew {
                key,
                target: ModelTarget::Value(v),
                ttl,
            } => {
                let target = Target::Value(format!("v{v}"));
                let key = keys[*key as usize];
                let a = plain.renew(key, &target, *ttl, now).is_ok();
                let b = with_ghosts.renew(key, &target, *ttl, now).is_ok();
                prop_assert_eq!(a, b, "{:?}", op);
            }
            Op::Release {
                key,
                target: ModelTarget::Value(v),
            } => {
                let target = Target::Value(format!("v{v}"));
                let key = keys[*key as usize];
                let a = plain.release(key, &target, now).is_ok();
                let b = with_ghosts.release(key, &target, now).is_ok();
                prop_assert_eq!(a, b, "{:?}", op);
            }
            Op::Renew { .. } | Op::Release { .. } => {}
            Op::Advance(dt) => {
                now += dt;
                plain.advance(now);
                with_ghosts.advance(now);
            }
        }
        for key in keys {
            prop_assert_eq!(
                shape(&mut plain, key, now),
                shape(&mut with_ghosts, key, now),
                "{} after {:?}",
                key,
                op
            );
        }
        prop_assert_eq!(plain.waiter_count(), with_ghosts.waiter_count());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
    #[test]
    fn uninformed_withdrawal_undoes_an_unheard_request(
        ops in proptest::collection::vec(op(), 1..60),
        extra in proptest::collection::vec((0usize..60, 0u8..3, prop_oneof![Just(None), (0u8..3).prop_map(Some)], prop_oneof![Just(0u64), Just(10)]), 1..6),
    ) {
        abandoned_requests_leave_no_trace(ops, extra)?;
    }
}
