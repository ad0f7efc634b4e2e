//! `baton status [KEY]`: a lock's holder and queue, or, without a key, the
//! server itself (backend, role among gateways over etcd, primary's URL).

use std::{process::ExitCode, time::SystemTime};

use clap::Args;

use super::{ClientArgs, fail, human, print_lines};
use crate::client::{Holder, LockStatus, ServerStatus, Waiting};

/// `baton status`: show a lock's holder and queue, or the server's role.
#[derive(Clone, Debug, Args)]
pub struct StatusArgs {
    /// The lock's key (or election's name). Without it: the server's
    /// backend, role (embedded, primary, follower) and primary's URL.
    pub key: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub(super) async fn run(args: StatusArgs) -> ExitCode {
    let client = match args.client.client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let Some(key) = args.key else {
        return match client.server_status().await {
            Ok(status) => {
                let _ = print_lines(render_server(&status));
                ExitCode::SUCCESS
            }
            Err(e) => fail(format_args!("cannot read the server's status: {e}")),
        };
    };
    match client.status(key.clone()).await {
        Ok(status) => {
            let _ = print_lines(render(&status, SystemTime::now()));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format_args!("cannot read {key:?}: {e}")),
    }
}

/// The server's report:
///
/// ```text
/// baton 0.1.0, backend etcd, role follower
/// primary: http://10.0.0.1:4001
/// keys 3, entries 5, waiters 2, up 1h02m
/// ```
fn render_server(s: &ServerStatus) -> Vec<String> {
    let mut lines = vec![format!(
        "baton {}, backend {}, role {}",
        s.version, s.backend, s.role
    )];
    if !s.primary_url.is_empty() {
        lines.push(format!("primary: {}", s.primary_url));
    }
    lines.push(format!(
        "keys {}, entries {}, waiters {}, up {}",
        s.keys,
        s.entries,
        s.waiters,
        human(s.uptime)
    ));
    lines
}

/// The report, one line each:
///
/// ```text
/// lock "jobs/a"
/// holder: index 5, value "w1", ttl 1m00s, expires in 42.3s, held 17.7s
/// queue: 2 waiting
///   1. index 7, value "w2", ttl 1m00s, waiting 3.2s
///   2. index 9, ttl 1m00s, waiting 1s, 2 waiters
/// ```
fn render(status: &LockStatus, now: SystemTime) -> Vec<String> {
    let mut lines = vec![format!("lock {:?}", status.key)];
    if status.limit > 1 {
        lines[0] = format!("semaphore {:?}, limit {}", status.key, status.limit);
        lines.push(format!("holders: {}", status.holders.len()));
        for (i, h) in status.holders.iter().enumerate() {
            lines.push(format!("  {}. {}", i + 1, holder(h, now)));
        }
    } else {
        match &status.holder {
            Some(h) => lines.push(format!("holder: {}", holder(h, now))),
            None => lines.push("holder: none (free)".into()),
        }
    }
    if let Some(until) = status.delayed_until
        && let Ok(left) = until.duration_since(now)
    {
        lines.push(format!(
            "lock-delay: a hold expired; nobody is granted for {}",
            human(left)
        ));
    }
    if status.queue.is_empty() {
        lines.push("queue: empty".into());
    } else {
        lines.push(format!("queue: {} waiting", status.queue.len()));
        for (i, w) in status.queue.iter().enumerate() {
            lines.push(format!("  {}. {}", i + 1, waiting(w, now)));
        }
    }
    lines
}

fn holder(h: &Holder, now: SystemTime) -> String {
    let mut parts = vec![format!("index {}", h.index)];
    if !h.value.is_empty() {
        parts.push(format!("value {:?}", h.value));
    }
    match (h.ttl, h.remaining) {
        (Some(ttl), Some(left)) => {
            parts.push(format!("ttl {}", human(ttl)));
            parts.push(format!("expires in {}", human(left)));
        }
        _ => parts.push("never expires".into()),
    }
    if let Ok(held) = now.duration_since(h.acquired_at) {
        parts.push(format!("held {}", human(held)));
    }
    parts.join(", ")
}

fn waiting(w: &Waiting, now: SystemTime) -> String {
    let mut parts = vec![format!("index {}", w.index)];
    if !w.value.is_empty() {
        parts.push(format!("value {:?}", w.value));
    }
    parts.push(match w.ttl {
        Some(ttl) => format!("ttl {}", human(ttl)),
        None => "no ttl".into(),
    });
    if let Ok(waited) = now.duration_since(w.queued_at) {
        parts.push(format!("waiting {}", human(waited)));
    }
    if w.waiters > 1 {
        parts.push(format!("{} waiters", w.waiters));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn renders_the_server_and_its_role() {
        let status = ServerStatus {
            version: "0.1.0".into(),
            backend: "etcd".into(),
            role: "follower".into(),
            primary_url: "http://10.0.0.1:4001".into(),
            keys: 3,
            entries: 5,
            waiters: 2,
            uptime: Duration::from_secs(62),
        };
        let lines = render_server(&status);
        assert_eq!(lines[0], "baton 0.1.0, backend etcd, role follower");
        assert_eq!(lines[1], "primary: http://10.0.0.1:4001");
        assert!(lines[2].starts_with("keys 3, entries 5, waiters 2, up "));
        let embedded = ServerStatus {
            role: "embedded".into(),
            primary_url: String::new(),
            ..status
        };
        assert_eq!(render_server(&embedded).len(), 2);
    }

    #[test]
    fn renders_holder_and_queue() {
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        let status = LockStatus {
            key: "jobs/a".into(),
            holder: Some(Holder {
                index: 5,
                value: "w1".into(),
                ttl: Some(Duration::from_secs(60)),
                acquired_at: at(100),
                deadline: Some(at(160)),
                remaining: Some(Duration::from_secs(42)),
                lock_delay: None,
            }),
            queue: vec![Waiting {
                index: 9,
                value: String::new(),
                ttl: None,
                queued_at: at(110),
                waiters: 2,
            }],
            holders: vec![],
            limit: 1,
            delayed_until: None,
        };
        assert_eq!(
            render(&status, at(118)),
            [
                "lock \"jobs/a\"",
                "holder: index 5, value \"w1\", ttl 1m00s, expires in 42s, held 18s",
                "queue: 1 waiting",
                "  1. index 9, no ttl, waiting 8s, 2 waiters",
            ]
        );
        let free = LockStatus {
            key: "k".into(),
            holder: None,
            queue: vec![],
            holders: vec![],
            limit: 0,
            delayed_until: Some(at(5)),
        };
        assert_eq!(
            render(&free, at(0)),
            [
                "lock \"k\"",
                "holder: none (free)",
                "lock-delay: a hold expired; nobody is granted for 5s",
                "queue: empty"
            ]
        );
    }
}
