//! A history checker for lock clients: every client records, with its own
//! clock, when it sent a request and when it heard the answer; the checker
//! then verifies what the contract promises, whatever the backend:
//!
//! - **never two holders**: no two grants of one key are *believed* at the
//!   same instant. A client believes it holds from the moment it hears the
//!   grant until it sends its release (or hears that the hold ended), and
//!   at most until the earliest deadline the server could have set: the
//!   moment it *sent* the acquire (or an acknowledged renew) plus the ttl,
//!   since the server cannot have granted before the request left;
//! - **fencing tokens**: per key, indexes rise in the order the grants were
//!   believed, and no index is handed to two different grants.
//!
//! It knows nothing of baton's internals, so the embedded and the etcd
//! backends can feed it alike. All times come from one process's monotonic
//! clock ([`Instant`]).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

/// Something one client saw.
#[derive(Clone, Debug)]
pub enum Event {
    /// `client` sent an acquire of `key` with `ttl_ms` at `sent` and heard
    /// at `heard` that it holds `index`.
    Granted {
        client: usize,
        key: String,
        index: u64,
        ttl_ms: u64,
        sent: Instant,
        heard: Instant,
    },
    /// The holder of `index` sent a renew with `ttl_ms` at `sent` and heard
    /// at `acked` that it was applied.
    Renewed {
        index: u64,
        ttl_ms: u64,
        sent: Instant,
        acked: Instant,
    },
    /// The holder of `index` stopped believing it holds at `at`: it is about
    /// to send its release, or it heard that the hold ended.
    Stopped { index: u64, at: Instant },
}

/// The events of one run, recorded concurrently.
#[derive(Debug, Default)]
pub struct History {
    events: Mutex<Vec<Event>>,
}

impl History {
    /// Records one event.
    pub fn record(&self, e: Event) {
        self.events.lock().expect("history lock").push(e);
    }

    /// How many grants were recorded.
    pub fn grants(&self) -> usize {
        self.events
            .lock()
            .expect("history lock")
            .iter()
            .filter(|e| matches!(e, Event::Granted { .. }))
            .count()
    }

    /// Checks the history; on a violation, says which grants and when.
    pub fn check(&self) -> Result<Summary, String> {
        check(&self.events.lock().expect("history lock"))
    }
}

/// What a checked history held.
#[derive(Debug)]
pub struct Summary {
    /// Grants heard.
    pub grants: usize,
    /// Grants whose belief interval was not empty.
    pub believed: usize,
}

/// One grant and the intervals its client believed it held.
#[derive(Debug)]
struct Belief {
    client: usize,
    index: u64,
    heard: Instant,
    spans: Vec<(Instant, Instant)>,
}

/// Far enough in the future to stand for "no deadline".
fn forever(from: Instant) -> Instant {
    from + Duration::from_secs(365 * 24 * 3600)
}

fn until(sent: Instant, ttl_ms: u64) -> Instant {
    if ttl_ms == 0 {
        forever(sent)
    } else {
        sent + Duration::from_millis(ttl_ms)
    }
}

/// Checks `events` (see the module docs).
pub fn check(events: &[Event]) -> Result<Summary, String> {
    let mut stopped: HashMap<u64, Instant> = HashMap::new();
    let mut renewals: HashMap<u64, Vec<(Instant, Instant)>> = HashMap::new();
    for e in events {
        match e {
            Event::Stopped { index, at } => {
                let t = stopped.entry(*index).or_insert(*at);
                *t = (*t).min(*at);
            }
            Event::Renewed {
                index,
                ttl_ms,
                sent,
                acked,
            } => renewals
                .entry(*index)
                .or_default()
                .push((*acked, until(*sent, *ttl_ms))),
            Event::Granted { .. } => {}
        }
    }
    let mut by_key: BTreeMap<&str, Vec<Belief>> = BTreeMap::new();
    let mut owner: HashMap<u64, (usize, &str)> = HashMap::new();
    let mut grants = 0;
    for e in events {
        let Event::Granted {
            client,
            key,
            index,
            ttl_ms,
            sent,
            heard,
        } = e
        else {
            continue;
        };
        grants += 1;
        if let Some((other, other_key)) = owner.insert(*index, (*client, key))
            && (other != *client || other_key != key)
        {
            return Err(format!(
                "index {index} was granted twice: to client {other} on {other_key:?} and to client {client} on {key:?}"
            ));
        }
        let stop = stopped.get(index).copied();
        let clip = |(a, b): (Instant, Instant)| {
            let b = stop.map_or(b, |s| b.min(s));
            (a < b).then_some((a, b))
        };
        let mut spans: Vec<(Instant, Instant)> = Vec::new();
        spans.extend(clip((*heard, until(*sent, *ttl_ms))));
        for &r in renewals.get(index).into_iter().flatten() {
            spans.extend(clip(r));
        }
        by_key.entry(key).or_default().push(Belief {
            client: *client,
            index: *index,
            heard: *heard,
            spans,
        });
    }
    let mut believed = 0;
    for (key, beliefs) in &mut by_key {
        beliefs.retain(|b| !b.spans.is_empty());
        believed += beliefs.len();
        for (i, a) in beliefs.iter().enumerate() {
            for b in &beliefs[i + 1..] {
                if a.index == b.index {
                    continue;
                }
                for &(a0, a1) in &a.spans {
                    for &(b0, b1) in &b.spans {
                        if a0 < b1 && b0 < a1 {
                            return Err(format!(
                                "two holders of {key:?}: client {} believed index {} from {:?} to {:?} \
                                 while client {} believed index {} from {:?} to {:?} (times since the first)",
                                a.client,
                                a.index,
                                a0 - a.heard.min(b.heard),
                                a1 - a.heard.min(b.heard),
                                b.client,
                                b.index,
                                b0 - a.heard.min(b.heard),
                                b1 - a.heard.min(b.heard),
                            ));
                        }
                    }
                }
            }
        }
        // Beliefs do not overlap, so their order is the grant order, and
        // fencing tokens must rise along it.
        beliefs.sort_by_key(|b| b.spans.iter().map(|s| s.0).min());
        for w in beliefs.windows(2) {
            if w[1].index <= w[0].index {
                return Err(format!(
                    "fencing tokens of {key:?} went backwards: index {} was believed after index {}",
                    w[1].index, w[0].index
                ));
            }
        }
    }
    Ok(Summary { grants, believed })
}
