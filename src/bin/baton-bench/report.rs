//! Rows of results, printed as JSON and as a markdown table with ratios.

use std::{collections::BTreeMap, fmt::Write, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::target::TargetKind;

/// One measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Which scenario.
    pub scenario: &'static str,
    /// Which system.
    pub target: &'static str,
    /// Clients, waiters or holders.
    pub concurrency: usize,
    /// Operations (pairs, pings, grants) per second; 0 where not a rate.
    pub ops_per_sec: f64,
    /// Latency percentiles in microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Samples behind the percentiles.
    pub samples: u64,
    /// Server memory per waiting request, in bytes (many-waiters only).
    pub bytes_per_waiter: Option<f64>,
    /// Server RSS before, at the peak of, and after a burst of waiters, in
    /// KiB (many-waiters only).
    pub rss_kib: Option<RssBurst>,
    /// Why the measurement failed, if it did.
    pub failed: Option<String>,
    /// What the target's journal did during the scenario (durable and etcd
    /// baton targets), read from its `/metrics`.
    pub journal: Option<JournalFigures>,
    /// With `--rounds` above 1: the rates of every round (this row is the
    /// median one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub round_rates: Vec<f64>,
}

/// A durable target's journal commits over one scenario (warm-up
/// included), from the `baton_journal_*` counters before and after.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct JournalFigures {
    /// Commits per second over the scenario.
    pub commits_per_sec: f64,
    /// Records per commit: the mean batch.
    pub records_per_commit: f64,
    /// Mean time from a batch going to the journal to its being durable, in
    /// microseconds.
    pub mean_commit_us: f64,
}

/// Server memory around a burst of waiters, in KiB.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct RssBurst {
    /// Before the waiters arrived (the holders of their keys in place).
    pub before: u64,
    /// With every waiter waiting.
    pub peak: u64,
    /// After every waiter was granted and left, once RSS settled.
    pub after: u64,
}

impl Row {
    /// A latency row.
    pub fn latency(
        scenario: &'static str,
        target: TargetKind,
        concurrency: usize,
        ops_per_sec: f64,
        h: &Histogram<u64>,
    ) -> Self {
        Self {
            scenario,
            target: target.name(),
            concurrency,
            ops_per_sec,
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            samples: h.len(),
            bytes_per_waiter: None,
            rss_kib: None,
            failed: None,
            journal: None,
            round_rates: Vec::new(),
        }
    }

    /// A measurement that could not be completed, and why.
    pub fn failed(
        scenario: &'static str,
        target: TargetKind,
        concurrency: usize,
        why: String,
    ) -> Self {
        Self {
            scenario,
            target: target.name(),
            concurrency,
            ops_per_sec: 0.0,
            p50_us: 0,
            p99_us: 0,
            p999_us: 0,
            samples: 0,
            bytes_per_waiter: None,
            rss_kib: None,
            failed: Some(why),
            journal: None,
            round_rates: Vec::new(),
        }
    }

    /// A many-waiters row: memory per waiter and time to grant them all.
    pub fn waiters(target: TargetKind, waiters: usize, rss: RssBurst, drain: Duration) -> Self {
        let bytes_per_waiter =
            (rss.peak.saturating_sub(rss.before) * 1024) as f64 / waiters.max(1) as f64;
        Self {
            scenario: "many waiters",
            target: target.name(),
            concurrency: waiters,
            ops_per_sec: waiters as f64 / drain.as_secs_f64().max(1e-9),
            p50_us: 0,
            p99_us: 0,
            p999_us: 0,
            samples: waiters as u64,
            bytes_per_waiter: Some(bytes_per_waiter),
            rss_kib: Some(rss),
            failed: None,
            journal: None,
            round_rates: Vec::new(),
        }
    }
}

/// One row per measurement out of several rounds of the same ones: the
/// median round's row (by rate; by p50 where there is no rate), carrying
/// every round's rate. A measurement that failed in any round is reported
/// as that failure, so that no failure hides behind a median.
pub fn median_of_rounds(rows: Vec<Row>) -> Vec<Row> {
    let mut groups: Vec<Vec<Row>> = Vec::new();
    for row in rows {
        match groups.iter_mut().find(|g| {
            let first = &g[0];
            first.scenario == row.scenario
                && first.target == row.target
                && first.concurrency == row.concurrency
        }) {
            Some(g) => g.push(row),
            None => groups.push(vec![row]),
        }
    }
    groups
        .into_iter()
        .filter_map(|mut g| {
            if g.len() == 1 {
                return g.pop();
            }
            if let Some(i) = g.iter().position(|r| r.failed.is_some()) {
                return Some(g.swap_remove(i));
            }
            let rates: Vec<f64> = g.iter().map(|r| r.ops_per_sec).collect();
            if rates.iter().all(|r| *r > 0.0) {
                g.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
            } else {
                g.sort_by_key(|r| r.p50_us);
            }
            let mid = g.len() / 2;
            let mut median = g.swap_remove(mid);
            median.round_rates = rates;
            Some(median)
        })
        .collect()
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// The markdown table: one section per scenario, with each row's rate
/// against etcd at the same concurrency (v3lock for lock targets, v3election
/// for election targets) and against the floor.
pub fn markdown(rows: &[Row]) -> String {
    let mut by_scenario: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by_scenario.entry(r.scenario).or_default().push(r);
    }
    let find = |scenario: &str, target: &str, c: usize| {
        rows.iter()
            .find(|r| r.scenario == scenario && r.target == target && r.concurrency == c)
    };
    let mut out = String::new();
    for (scenario, rows) in by_scenario {
        let _ = writeln!(out, "### {scenario}\n");
        let (failed, rows): (Vec<&Row>, Vec<&Row>) =
            rows.into_iter().partition(|r| r.failed.is_some());
        let notes: Vec<String> = rows
            .iter()
            .filter_map(|r| {
                let j = r.journal?;
                Some(format!(
                    "{} × {}: {:.0} commits/s, {:.1} records per commit, {:.2} ms per commit",
                    r.target,
                    r.concurrency,
                    j.commits_per_sec,
                    j.records_per_commit,
                    j.mean_commit_us / 1000.0
                ))
            })
            .collect();
        if scenario == "many waiters" {
            let _ = writeln!(
                out,
                "| target | waiters | server bytes/waiter | grants/s (drain) | RSS before | peak | after (×before) |\n|---|---:|---:|---:|---:|---:|---:|"
            );
            for r in rows {
                let rss = r.rss_kib.unwrap_or_default();
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.0} | {:.0} | {:.1} MiB | {:.1} MiB | {:.1} MiB ({:.2}×) |",
                    r.target,
                    r.concurrency,
                    r.bytes_per_waiter.unwrap_or(0.0),
                    r.ops_per_sec,
                    rss.before as f64 / 1024.0,
                    rss.peak as f64 / 1024.0,
                    rss.after as f64 / 1024.0,
                    rss.after as f64 / rss.before.max(1) as f64,
                );
            }
        } else {
            let _ = writeln!(
                out,
                "| target | concurrency | ops/s | p50 ms | p99 ms | p99.9 ms | ×etcd | ×floor |\n|---|---:|---:|---:|---:|---:|---:|---:|"
            );
            for r in rows {
                let ratio = |other: Option<&Row>| {
                    other
                        .filter(|o| o.ops_per_sec > 0.0 && r.ops_per_sec > 0.0)
                        .map_or("–".to_owned(), |o| {
                            format!("{:.2}", r.ops_per_sec / o.ops_per_sec)
                        })
                };
                let reference = TargetKind::by_name(r.target)
                    .map_or(TargetKind::EtcdV3lock, TargetKind::reference);
                let vs_etcd = ratio(find(scenario, reference.name(), r.concurrency));
                let vs_floor = ratio(find("floor (health check)", r.target, r.concurrency));
                let rate = if r.ops_per_sec > 0.0 {
                    let (lo, hi) = r
                        .round_rates
                        .iter()
                        .fold((f64::MAX, 0.0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
                    if r.round_rates.len() > 1 {
                        format!("{:.0} ({lo:.0}–{hi:.0})", r.ops_per_sec)
                    } else {
                        format!("{:.0}", r.ops_per_sec)
                    }
                } else {
                    "–".to_owned()
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.target,
                    r.concurrency,
                    rate,
                    ms(r.p50_us),
                    ms(r.p99_us),
                    ms(r.p999_us),
                    vs_etcd,
                    vs_floor
                );
            }
        }
        if !notes.is_empty() {
            let _ = writeln!(out, "\nJournal commits during the scenario:\n");
            for n in notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        for r in failed {
            let _ = writeln!(
                out,
                "\n**{} × {} failed:** {}",
                r.target,
                r.concurrency,
                r.failed.as_deref().unwrap_or_default()
            );
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: TargetKind, rate: f64) -> Row {
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        let _ = h.record(100);
        Row::latency("uncontended", target, 64, rate, &h)
    }

    #[test]
    fn rounds_collapse_to_the_median_round_and_keep_every_rate() {
        let rows = vec![
            row(TargetKind::Memory, 300.0),
            row(TargetKind::EtcdV3lock, 10.0),
            row(TargetKind::Memory, 100.0),
            row(TargetKind::EtcdV3lock, 30.0),
            row(TargetKind::Memory, 200.0),
            row(TargetKind::EtcdV3lock, 20.0),
        ];
        let out = median_of_rounds(rows);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].ops_per_sec, 200.0);
        assert_eq!(out[0].round_rates, vec![300.0, 100.0, 200.0]);
        assert_eq!(out[1].ops_per_sec, 20.0);
        assert!(markdown(&out).contains("200 (100–300)"));
    }

    #[test]
    fn a_failure_in_any_round_is_reported() {
        let rows = vec![
            row(TargetKind::Memory, 300.0),
            Row::failed("uncontended", TargetKind::Memory, 64, "boom".into()),
            row(TargetKind::Memory, 200.0),
        ];
        let out = median_of_rounds(rows);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].failed.as_deref(), Some("boom"));
    }
}
