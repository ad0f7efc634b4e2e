//! The open-files limit. Every connection is a file descriptor, and a soft
//! limit of 1024 (the usual default) lets a thousand idle connections starve
//! the listener. At start baton raises the soft limit to the hard limit, as
//! Go's runtime does, and keeps `--max-connections` below what is left.

/// Descriptors kept back from connections for the store, logs, etcd
/// clients and the listener itself.
pub const RESERVED_FDS: u64 = 128;

/// Raises the soft open-files limit to the hard limit and returns the soft
/// limit now in effect (`None` when it cannot be read, or is unlimited).
#[cfg(unix)]
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    // An unlimited hard limit cannot be the soft limit of NOFILE; the
    // kernel's ceiling is fs.nr_open.
    let target = before.maximum.or_else(nr_open);
    match (before.current, target) {
        (Some(current), Some(target)) if target > current => {
            let raised = Rlimit {
                current: Some(target),
                maximum: before.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => {
                    tracing::info!(from = current, to = target, "raised the open-files limit");
                    Some(target)
                }
                Err(e) => {
                    tracing::warn!(limit = current, error = %e, "cannot raise the open-files limit");
                    Some(current)
                }
            }
        }
        (current, _) => {
            tracing::info!(limit = ?current, "open-files limit");
            current
        }
    }
}

/// Without rlimits there is nothing to raise.
#[cfg(not(unix))]
pub fn raise_open_files_limit() -> Option<u64> {
    None
}

#[cfg(unix)]
fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `--max-connections`, lowered to fit `open_files` with
/// [`RESERVED_FDS`] to spare.
pub fn fit_connections(max_connections: usize, open_files: Option<u64>) -> usize {
    match open_files {
        Some(limit) => {
            let room = limit.saturating_sub(RESERVED_FDS).max(1);
            let room = usize::try_from(room).unwrap_or(usize::MAX);
            if max_connections > room {
                tracing::warn!(
                    max_connections,
                    open_files = limit,
                    lowered_to = room,
                    "--max-connections does not fit the open-files limit; lowering it"
                );
                room
            } else {
                max_connections
            }
        }
        None => max_connections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_the_limit() {
        assert_eq!(
            fit_connections(10_000, Some(1024)),
            1024 - RESERVED_FDS as usize
        );
        assert_eq!(fit_connections(100, Some(1024)), 100);
        assert_eq!(fit_connections(100, None), 100);
        assert_eq!(fit_connections(100, Some(10)), 1);
    }
}
