//! What one durable commit costs, and how much of it is the hop to the
//! blocking thread: redb called directly on one thread, next to the redb
//! journal as the engine calls it (a future that runs the commit on
//! tokio's blocking pool), each 3,000 commits in a row. For scale, the
//! same batches appended to a preallocated log file and fdatasync'd: what
//! a write-ahead log of our own could save over redb's B-tree commit (CPU
//! per commit from `/proc/self/stat`, bytes from `/proc/self/io`).
//!
//! ```text
//! cargo run --release --example redb_commit_cost [-- DIR]
//! ```
//!
//! `DIR` (default: the system temp dir) holds the temporary databases; a
//! tmpfs such as `/dev/shm` takes the fsync out of the figures. Nothing
//! here asserts speed (BENCHMARKS.md has the figures).

use std::time::{Duration, Instant};

use baton::store::{HeldRecord, Journal, Record, redb_journal::RedbJournal};
use redb::{Database, TableDefinition};

type Error = Box<dyn std::error::Error + Send + Sync>;

const COMMITS: u64 = 3_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(std::env::temp_dir, Into::into);
    let (per_commit, cost) = measured(|| direct(&dir))?;
    println!(
        "{}: redb directly, 9 inserts + 9 removes a commit: {:.1} us/commit, {cost}",
        dir.display(),
        micros(per_commit)
    );
    let (per_commit, cost) = measured(|| append_log(&dir))?;
    println!(
        "{}: a preallocated log, the same batch appended and fdatasync'd: {:.1} us/commit, {cost}",
        dir.display(),
        micros(per_commit)
    );
    for holds in [1u64, 9, 30] {
        let per_commit = through_journal(&dir, holds).await?;
        println!(
            "{}: the redb journal, {holds} holds + removes a commit: {:.1} us/commit",
            dir.display(),
            micros(per_commit)
        );
    }
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// redb on this thread: one write transaction per commit, as the journal
/// writes it (JSON values of about the size of a hold).
fn direct(dir: &std::path::Path) -> Result<Duration, Error> {
    const HOLDS: TableDefinition<u64, &[u8]> = TableDefinition::new("holds");
    let tmp = tempfile::tempdir_in(dir)?;
    let db = Database::create(tmp.path().join("probe.redb"))?;
    let value = br#"{"key":"bench/k","value":null,"ttl_ms":10000,"acquired_at":1,"deadline":2}"#;
    let mut index = 1u64;
    let start = Instant::now();
    for _ in 0..COMMITS {
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(HOLDS)?;
            for _ in 0..9 {
                table.insert(index, value.as_slice())?;
                if index > 9 {
                    table.remove(index - 9)?;
                }
                index += 1;
            }
        }
        txn.commit()?;
    }
    Ok(start.elapsed() / COMMITS as u32)
}

/// The same batches as [`direct`] (18 records of about 60 bytes), each
/// written after the last in a file preallocated so that no commit changes
/// its size, then fdatasync'd.
fn append_log(dir: &std::path::Path) -> Result<Duration, Error> {
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::tempdir_in(dir)?;
    let file = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(tmp.path().join("probe.log"))?;
    let batch = vec![b'x'; 18 * 60];
    file.set_len(batch.len() as u64 * COMMITS)?;
    file.sync_all()?;
    let mut offset = 0;
    let start = Instant::now();
    for _ in 0..COMMITS {
        file.write_all_at(&batch, offset)?;
        offset += batch.len() as u64;
        file.sync_data()?;
    }
    Ok(start.elapsed() / COMMITS as u32)
}

/// Runs `f` (which makes [`COMMITS`] commits) and says what the process
/// spent on each: CPU time, user and kernel, and bytes written to storage.
fn measured(f: impl FnOnce() -> Result<Duration, Error>) -> Result<(Duration, String), Error> {
    let (cpu_before, bytes_before) = (cpu_ticks()?, written_bytes()?);
    let per_commit = f()?;
    let cpu = (cpu_ticks()? - cpu_before) as f64 / 100.0; // USER_HZ
    let bytes = written_bytes()? - bytes_before;
    Ok((
        per_commit,
        format!(
            "{:.0} us CPU/commit, {} bytes written/commit",
            cpu / COMMITS as f64 * 1e6,
            bytes / COMMITS
        ),
    ))
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> Result<u64, Error> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').ok_or("odd /proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64, Error> {
        Ok(fields.get(i).ok_or("short /proc/self/stat")?.parse()?)
    };
    // utime and stime are fields 14 and 15, 12 and 13 after the name.
    Ok(field(11)? + field(12)?)
}

/// Bytes this process caused to be written to storage.
fn written_bytes() -> Result<u64, Error> {
    let io = std::fs::read_to_string("/proc/self/io")?;
    let line = io
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .ok_or("no write_bytes in /proc/self/io")?;
    Ok(line.trim().parse()?)
}

/// The journal as the engine's driver uses it.
async fn through_journal(dir: &std::path::Path, holds: u64) -> Result<Duration, Error> {
    let tmp = tempfile::tempdir_in(dir)?;
    let (mut journal, _) = RedbJournal::open(tmp.path())?;
    let mut index = 1u64;
    let start = Instant::now();
    for _ in 0..COMMITS {
        let mut records = Vec::new();
        for _ in 0..holds {
            records.push(Record::Held(HeldRecord {
                key: format!("bench/k{index}"),
                index,
                value: None,
                ttl_ms: 10_000,
                acquired_at: 1,
                deadline: Some(2),
                limit: 1,
                lock_delay_ms: 0,
            }));
            if index > holds {
                records.push(Record::Removed {
                    index: index - holds,
                });
            }
            index += 1;
        }
        journal.commit(records, 1_000_000, None).await?;
    }
    Ok(start.elapsed() / COMMITS as u32)
}
