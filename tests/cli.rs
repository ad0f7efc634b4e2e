//! The client subcommands (`baton lock`, `elect`, `acquire`, `renew`,
//! `check`, `leader`, `observe`, `release`, `status`) run as processes
//! against a real `baton` server, with their exit codes.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::Server;

/// Generous bound for anything that should happen "at once".
const SOON: Duration = Duration::from_secs(10);

const BATON: &str = env!("CARGO_BIN_EXE_baton");

/// `baton ARGS...` aimed at `server`.
fn baton(server: &Server, args: &[&str]) -> Command {
    let mut c = Command::new(BATON);
    c.args(args)
        .env("BATON_ENDPOINT", &server.url)
        .env("BATON_BIN", BATON)
        .env("RUST_LOG", "warn");
    c
}

fn run(server: &Server, args: &[&str]) -> Output {
    baton(server, args).output().expect("run baton")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A background `baton` whose stdout lines arrive on a channel.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Background {
    fn spawn(server: &Server, args: &[&str]) -> Self {
        let mut child = baton(server, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn baton");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn line(&self) -> String {
        self.lines.recv_timeout(SOON).expect("no line from baton")
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the exit, at most `SOON`; returns the code and stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return (status.code(), err);
            }
            assert!(start.elapsed() < SOON, "baton did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The holder's index from `baton status`, if the lock is held.
fn holder(server: &Server, key: &str) -> Option<u64> {
    let o = run(server, &["status", key]);
    assert!(o.status.success(), "status failed: {}", stderr(&o));
    let text = stdout(&o);
    let line = text.lines().find(|l| l.starts_with("holder: "))?;
    line.strip_prefix("holder: index ")?
        .split(',')
        .next()?
        .parse()
        .ok()
}

fn until(mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < SOON {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn wait_for_file(path: &Path) {
    assert!(until(|| path.exists()), "{} never appeared", path.display());
}

#[test]
fn lock_runs_the_command_with_its_index_and_key_and_exits_with_its_code() {
    let server = Server::memory();
    let o = run(
        &server,
        &[
            "lock",
            "jobs/a",
            "--",
            "sh",
            "-c",
            "echo $BATON_INDEX $BATON_KEY; exit 3",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let mut words = out.split_whitespace();
    let index: u64 = words.next().expect("index").parse().expect("a number");
    assert!(index > 0);
    assert_eq!(words.next(), Some("jobs/a"));
    assert_eq!(holder(&server, "jobs/a"), None, "the lock stayed held");
}

#[test]
fn concurrent_locks_run_one_after_the_other() {
    let server = Server::memory();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let script = format!(
        "echo \"start $(date +%s%N)\" >> {log}; sleep 1; echo \"end $(date +%s%N)\" >> {log}",
        log = log.display()
    );
    let spawn = || {
        baton(&server, &["lock", "serial", "--", "sh", "-c", &script])
            .spawn()
            .expect("spawn")
    };
    let (mut a, mut b) = (spawn(), spawn());
    assert!(a.wait().expect("wait").success());
    assert!(b.wait().expect("wait").success());
    let text = std::fs::read_to_string(&log).expect("log");
    let events: Vec<(&str, u128)> = text
        .lines()
        .map(|l| {
            let (what, at) = l.split_once(' ').expect("line");
            (what, at.parse().expect("nanoseconds"))
        })
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.0).collect();
    assert_eq!(kinds, ["start", "end", "start", "end"], "{text}");
    assert!(
        events[2].1 >= events[1].1,
        "the second ran before the first ended: {text}"
    );
}

#[test]
fn timeout_on_a_held_lock_fails_with_a_message() {
    let server = Server::memory();
    let holder_proc = Background::spawn(&server, &["lock", "held"]);
    let index: u64 = holder_proc.line().parse().expect("index");
    assert_eq!(holder(&server, "held"), Some(index));

    let start = Instant::now();
    let o = run(&server, &["lock", "held", "--timeout", "1", "--", "true"]);
    assert_eq!(o.status.code(), Some(3), "not acquired exits 3");
    assert!(start.elapsed() < SOON, "took {:?}", start.elapsed());
    assert!(stderr(&o).contains("timed out"), "stderr: {}", stderr(&o));
    assert_eq!(
        holder(&server, "held"),
        Some(index),
        "the holder was disturbed"
    );

    // Interrupting the holder releases the lock and exits 0.
    holder_proc.signal("INT");
    let (code, err) = holder_proc.finish();
    assert_eq!(code, Some(0), "stderr: {err}");
    assert_eq!(holder(&server, "held"), None);
}

#[test]
fn sigterm_is_forwarded_to_the_command_and_the_lock_released() {
    let server = Server::memory();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ready, got) = (dir.path().join("ready"), dir.path().join("got"));
    let script = format!(
        "trap 'kill $!; echo term > {got}; exit 7' TERM; touch {ready}; sleep 30 & wait",
        got = got.display(),
        ready = ready.display()
    );
    let proc = Background::spawn(&server, &["lock", "fwd", "--", "sh", "-c", &script]);
    wait_for_file(&ready);
    assert!(holder(&server, "fwd").is_some());
    proc.signal("TERM");
    let (code, err) = proc.finish();
    assert_eq!(code, Some(7), "stderr: {err}");
    assert_eq!(
        std::fs::read_to_string(&got).expect("the child saw no SIGTERM"),
        "term\n"
    );
    assert_eq!(holder(&server, "fwd"), None);
}

#[test]
fn losing_the_lock_stops_the_command_and_fails() {
    let server = Server::memory();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ready, got) = (dir.path().join("ready"), dir.path().join("got"));
    let script = format!(
        "trap 'kill $!; echo term > {got}; exit 0' TERM; touch {ready}; sleep 30 & wait",
        got = got.display(),
        ready = ready.display()
    );
    let proc = Background::spawn(&server, &["lock", "lose", "--", "sh", "-c", &script]);
    wait_for_file(&ready);
    let index = holder(&server, "lose").expect("held");
    let o = run(&server, &["release", "lose", "--index", &index.to_string()]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let (code, err) = proc.finish();
    assert_eq!(code, Some(1), "stderr: {err}");
    assert!(err.contains("lost"), "stderr: {err}");
    assert!(got.exists(), "the command was not sent SIGTERM");
}

#[test]
fn status_without_a_key_describes_the_server() {
    let server = Server::memory();
    let o = run(&server, &["status"]);
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    assert!(text.starts_with("baton "), "{text}");
    assert!(text.contains("backend embedded, role embedded"), "{text}");
    assert!(!text.contains("primary:"), "{text}");
}

#[test]
fn release_by_value_and_index_and_status_output() {
    let server = Server::memory();
    let first = Background::spawn(&server, &["lock", "st", "--value", "w1"]);
    let index: u64 = first.line().parse().expect("index");
    let waiter = Background::spawn(&server, &["lock", "st", "--value", "w2", "--ttl", "30"]);
    assert!(until(
        || stdout(&run(&server, &["status", "st"])).contains("queue: 1 waiting")
    ));

    let text = stdout(&run(&server, &["status", "st"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "lock \"st\"", "{text}");
    assert!(
        lines[1].starts_with(&format!(
            "holder: index {index}, value \"w1\", ttl 1m00s, expires in "
        )),
        "{text}"
    );
    assert!(lines[3].starts_with("  1. index "), "{text}");
    assert!(
        lines[3].contains("value \"w2\", ttl 30s, waiting "),
        "{text}"
    );

    // Releasing the holder by value hands the lock to the waiter; the first
    // process learns it lost the lock.
    let o = run(&server, &["release", "st", "--value", "w1"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("released index {index} (it held the lock)\n")
    );
    let (code, err) = first.finish();
    assert_eq!(code, Some(1));
    assert!(err.contains("lost"), "stderr: {err}");
    let next: u64 = waiter.line().parse().expect("index");
    assert!(next > index);

    let o = run(&server, &["release", "st", "--index", &next.to_string()]);
    assert_eq!(
        stdout(&o),
        format!("released index {next} (it held the lock)\n")
    );
    let text = stdout(&run(&server, &["status", "st"]));
    assert_eq!(text, "lock \"st\"\nholder: none (free)\nqueue: empty\n");

    let o = run(&server, &["release", "st", "--index", "12345"]);
    assert_eq!(o.status.code(), Some(3), "no such entry exits 3");
    assert!(
        stderr(&o).contains("no entry with index 12345"),
        "{}",
        stderr(&o)
    );
    let o = run(&server, &["release", "st"]);
    assert!(
        !o.status.success(),
        "release without --index/--value succeeded"
    );
}

#[test]
fn elect_leader_and_observe() {
    let server = Server::memory();
    let o = run(&server, &["leader", "svc"]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "none\n");

    let observer = Background::spawn(&server, &["observe", "svc"]);
    assert_eq!(observer.line(), "none");

    let o = run(
        &server,
        &[
            "elect",
            "svc",
            "--name",
            "alice",
            "--",
            "sh",
            "-c",
            "echo $BATON_INDEX $BATON_ELECTION $BATON_NAME; $BATON_BIN leader svc",
        ],
    );
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    let words: Vec<&str> = lines[0].split_whitespace().collect();
    assert!(words[0].parse::<u64>().is_ok(), "{out}");
    assert_eq!(&words[1..], ["svc", "alice"], "{out}");
    assert_eq!(lines[1], "alice", "{out}");

    assert_eq!(observer.line(), "alice");
    assert_eq!(observer.line(), "none");
    assert_eq!(stdout(&run(&server, &["leader", "svc"])), "none\n");

    observer.signal("TERM");
    let (code, err) = observer.finish();
    assert_eq!(code, Some(0), "stderr: {err}");
}

#[test]
fn unreachable_endpoint_fails_clearly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let o = Command::new(BATON)
        .args(["leader", "svc", "--endpoint", &dead])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot reach baton"), "{}", stderr(&o));

    // With a live endpoint after it, the dead one is skipped.
    let server = Server::memory();
    let o = Command::new(BATON)
        .args([
            "leader",
            "svc",
            "--endpoint",
            &format!("{dead},{}", server.url),
        ])
        .output()
        .expect("run");
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "none\n");
}

#[test]
fn acquire_renew_check_and_release_from_a_script() {
    let server = Server::memory();
    // Acquire prints the index and exits 0; the hold outlives the process.
    let o = run(
        &server,
        &["acquire", "cron/job", "--ttl", "30", "--value", "host-1"],
    );
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let index: u64 = stdout(&o).trim().parse().expect("an index");
    assert_eq!(holder(&server, "cron/job"), Some(index));
    let i = index.to_string();

    // Check: 0 while current.
    let o = run(&server, &["check", "cron/job", "--index", &i]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(stdout(&o).starts_with("current"), "{}", stdout(&o));

    // Busy: --timeout 0 exits 3 at once; a timeout exits 3 too.
    let o = run(&server, &["acquire", "cron/job", "--timeout", "0"]);
    assert_eq!(o.status.code(), Some(3), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("is held"), "{}", stderr(&o));
    let o = run(&server, &["acquire", "cron/job", "--timeout", "0.3"]);
    assert_eq!(o.status.code(), Some(3), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    // The same value re-acquires (renews) the hold at once.
    let o = run(
        &server,
        &["acquire", "cron/job", "--value", "host-1", "--timeout", "0"],
    );
    assert_eq!(stdout(&o).trim(), i, "stderr: {}", stderr(&o));

    // Renew by index and by value: 0; an unknown entry: 3.
    let o = run(
        &server,
        &["renew", "cron/job", "--index", &i, "--ttl", "120"],
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let o = run(&server, &["renew", "cron/job", "--value", "host-1"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let o = run(&server, &["renew", "cron/job", "--index", "99999"]);
    assert_eq!(o.status.code(), Some(3), "stderr: {}", stderr(&o));
    assert!(
        stderr(&o).contains("no entry with index 99999"),
        "{}",
        stderr(&o)
    );
    // Neither --index nor --value: a usage error, not "not found".
    let o = run(&server, &["renew", "cron/job"]);
    assert_ne!(o.status.code(), Some(0));
    assert_ne!(o.status.code(), Some(3));

    // Released: the token is no longer current (3) and the lock is free.
    let o = run(&server, &["release", "cron/job", "--index", &i]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let o = run(&server, &["check", "cron/job", "--index", &i]);
    assert_eq!(o.status.code(), Some(3), "stderr: {}", stderr(&o));
    assert!(stdout(&o).starts_with("not current"), "{}", stdout(&o));
    assert_eq!(holder(&server, "cron/job"), None);

    // A ttl hold ends by itself after its owner has exited.
    let o = run(&server, &["acquire", "short", "--ttl", "0.5"]);
    let short: u64 = stdout(&o).trim().parse().expect("an index");
    let o = run(&server, &["acquire", "short", "--timeout", "20"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let next: u64 = stdout(&o).trim().parse().expect("an index");
    assert!(next > short);

    // Any other error exits 1: here a lock-delay over the server's cap.
    let o = run(&server, &["acquire", "capped", "--lock-delay", "61"]);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("lock_delay"), "{}", stderr(&o));
}

#[test]
fn lock_takes_a_limit_for_a_semaphore() {
    let server = Server::memory();
    // `baton lock pool --limit 2 ARGS...`
    let lock_pool_of_2 = |args: &[&str]| {
        run(
            &server,
            &[&["lock", "pool", "--limit", "2"][..], args].concat(),
        )
    };
    let a = run(&server, &["acquire", "pool", "--limit", "2", "--ttl", "30"]);
    let b = run(&server, &["acquire", "pool", "--limit", "2", "--ttl", "30"]);
    assert!(a.status.success() && b.status.success(), "{}", stderr(&b));
    let (a, b) = (stdout(&a), stdout(&b));
    // Both hold: both tokens are current.
    for i in [a.trim(), b.trim()] {
        let o = run(&server, &["check", "pool", "--index", i]);
        assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    }
    // Full: a third waits, here not at all.
    let o = lock_pool_of_2(&["--timeout", "0", "--", "true"]);
    assert_eq!(o.status.code(), Some(3), "stderr: {}", stderr(&o));
    // Another limit on a busy key: refused (1), naming the key's limit.
    let o = run(&server, &["lock", "pool", "--limit", "3", "--", "true"]);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("limit 2"), "{}", stderr(&o));
    let text = stdout(&run(&server, &["status", "pool"]));
    assert!(
        text.starts_with("semaphore \"pool\", limit 2\nholders: 2\n"),
        "{text}"
    );
    // One leaves: the lock command runs with its own token, and its exit
    // code is the command's.
    let o = run(&server, &["release", "pool", "--index", a.trim()]);
    assert!(o.status.success());
    let o = lock_pool_of_2(&["--lock-delay", "1", "--", "sh", "-c", "exit 5"]);
    assert_eq!(o.status.code(), Some(5), "stderr: {}", stderr(&o));
}
