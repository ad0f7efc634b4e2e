//! What [`LockTable::stored`] costs: the engine task builds every hold when
//! the etcd journal asks for a snapshot (once every `COMPACT_EVERY`
//! batches), and answers nothing meanwhile. Three calls each on tables of
//! 10,000 and 100,000 holds on as many keys, with the allocator the server
//! uses.
//!
//! ```text
//! cargo run --release --example stored_cost
//! ```
//!
//! Nothing here asserts speed (BENCHMARKS.md has the figures).

use std::time::Instant;

use baton::{
    engine::table::{LockTable, TableLimits},
    store::HeldRecord,
};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    for holds in [10_000u64, 100_000] {
        let records = (1..=holds).map(|i| HeldRecord {
            key: format!("jobs/worker-{i}"),
            index: i,
            value: Some(format!("host-{i}")),
            ttl_ms: 60_000,
            acquired_at: 1,
            deadline: Some(10_000_000),
            limit: 1,
            lock_delay_ms: 0,
        });
        let limits = TableLimits {
            max_entries: 1_000_000,
            max_entries_per_key: 100_000,
            ..Default::default()
        };
        let table = LockTable::restore(limits, holds + 1, records, 2);
        for _ in 0..3 {
            let start = Instant::now();
            let stored = table.stored();
            println!(
                "{holds} holds: stored() took {:.1} ms ({} records)",
                start.elapsed().as_secs_f64() * 1e3,
                stored.len()
            );
        }
    }
}
