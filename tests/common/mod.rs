//! Test support: a real `baton` process on an ephemeral loopback port.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

pub mod auth;
pub mod etcd;
pub mod history;

use baton::proto::v1::{
    self as pb, election_client::ElectionClient, lock_client::LockClient, release_request,
    renew_request, wait_event,
};
use tonic::{Streaming, transport::Channel};

/// A running `baton` server, killed on drop.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Server {
    /// Starts `baton --memory` on port 0.
    pub fn memory() -> Self {
        Self::start(&["--memory"])
    }

    /// Starts `baton --listen 127.0.0.1:0 ARGS...` and waits for it to listen.
    pub fn start(args: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", args)
    }

    /// Starts `baton --listen LISTEN ARGS...` and waits for it to listen.
    pub fn start_on(listen: &str, args: &[&str]) -> Self {
        Self::spawn(listen, args, None)
    }

    /// Starts `baton --listen 127.0.0.1:0 ARGS...` logging at `info`, and
    /// collects its log lines (stderr) for the test to read; each is also
    /// passed on to the test's stderr.
    pub fn start_logged(args: &[&str]) -> (Self, Log) {
        let log = Log::default();
        (Self::spawn("127.0.0.1:0", args, Some(log.clone())), log)
    }

    fn spawn(listen: &str, args: &[&str], log: Option<Log>) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["--listen", listen])
            .args(args)
            .env("RUST_LOG", if log.is_some() { "info" } else { "warn" })
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(if log.is_some() {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("start baton");
        if let (Some(log), Some(stderr)) = (log, child.stderr.take()) {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    log.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("baton listening on ") {
                        break url.to_owned();
                    }
                }
                _ => panic!("baton exited before listening"),
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let addr = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned();
        Self {
            child: Some(child),
            url,
            addr,
        }
    }

    /// A gRPC channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }

    /// A Lock client on its own connection.
    pub async fn lock(&self) -> LockClient<Channel> {
        LockClient::new(self.channel().await)
    }

    /// An Election client on its own connection.
    pub async fn election(&self) -> ElectionClient<Channel> {
        ElectionClient::new(self.channel().await)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) with the `kill` command.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &pid.to_string()])
                .status();
        }
    }

    /// Kills the process with SIGKILL (`kill -9`) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit status, at most `within`.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = std::time::Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A server's log lines, as [`Server::start_logged`] collects them.
#[derive(Clone, Default)]
pub struct Log(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Log {
    /// Whether some line contains every one of `parts`.
    pub fn has(&self, parts: &[&str]) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|l| parts.iter().all(|p| l.contains(p)))
    }
}

/// Polls `check` every 20 ms until it is true or `within` passes, on
/// tokio's clock (so under paused time `within` is virtual time).
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while start.elapsed() < within {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// What curl saw.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
    pub headers: String,
}

const MARK: &str = "\n@@curl@@";

/// Runs `curl -s ARGS` (the URL with `ADDR` replaced by the server's).
pub fn curl(addr: &str, args: &[&str]) -> Reply {
    let head = tempfile::NamedTempFile::new().expect("temp file");
    let out = Command::new("curl")
        .arg("-s")
        .arg("-D")
        .arg(head.path())
        .args(["-w", &format!("{MARK}%{{http_code}} %{{content_type}}")])
        .args(args.iter().map(|a| a.replace("ADDR", addr)))
        .output()
        .expect("curl must be installed (scripts/install-test-deps.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, meta) = text.rsplit_once(MARK).expect("curl output");
    let (status, content_type) = meta.split_once(' ').unwrap_or((meta, ""));
    Reply {
        status: status.parse().unwrap_or(0),
        content_type: content_type.to_owned(),
        body: body.to_owned(),
        headers: std::fs::read_to_string(head.path()).unwrap_or_default(),
    }
}

/// A Wait request.
pub fn wait_req(key: &str, value: &str, ttl_ms: u64, timeout_ms: Option<u64>) -> pb::WaitRequest {
    pb::WaitRequest {
        key: key.into(),
        value: value.into(),
        ttl_ms,
        timeout_ms,
        ..Default::default()
    }
}

/// A Renew request for the hold with `index` (the fencing token).
pub fn renew_index(key: &str, index: u64, ttl_ms: u64) -> pb::RenewRequest {
    pb::RenewRequest {
        key: key.into(),
        target: Some(renew_request::Target::Index(index)),
        ttl_ms,
    }
}

/// A Renew request for the hold with `value`.
pub fn renew_value(key: &str, value: &str, ttl_ms: u64) -> pb::RenewRequest {
    pb::RenewRequest {
        key: key.into(),
        target: Some(renew_request::Target::Value(value.into())),
        ttl_ms,
    }
}

/// The next event of a Wait stream (30 s at most), or its error status.
pub async fn next_event(
    s: &mut Streaming<pb::WaitEvent>,
) -> Result<wait_event::Event, tonic::Status> {
    let item = tokio::time::timeout(Duration::from_secs(30), s.message())
        .await
        .expect("stream stalled")?;
    Ok(item.expect("stream ended").event.expect("event"))
}

/// Opens a Wait stream.
pub async fn wait(c: &mut LockClient<Channel>, req: pb::WaitRequest) -> Streaming<pb::WaitEvent> {
    c.wait(req).await.expect("wait").into_inner()
}

/// Takes the lock at once; returns the stream and the index.
pub async fn acquire(
    c: &mut LockClient<Channel>,
    key: &str,
    value: &str,
    ttl_ms: u64,
) -> (Streaming<pb::WaitEvent>, u64) {
    let mut s = wait(c, wait_req(key, value, ttl_ms, None)).await;
    match next_event(&mut s).await.expect("an event") {
        wait_event::Event::Acquired(a) => (s, a.index),
        other => panic!("expected acquired, got {other:?}"),
    }
}

/// Opens a Wait stream with `req` and expects the grant at once; returns
/// the stream (dropping it ends the hold) and the grant.
pub async fn acquired(
    c: &mut LockClient<Channel>,
    req: pb::WaitRequest,
) -> (Streaming<pb::WaitEvent>, pb::Acquired) {
    let mut s = wait(c, req).await;
    match next_event(&mut s).await.expect("an event") {
        wait_event::Event::Acquired(a) => (s, a),
        other => panic!("expected acquired, got {other:?}"),
    }
}

/// Wall-clock Unix milliseconds, as the server stamps deadlines.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Polls `key` until its hold has expired (10 s at most) and checks that the
/// lock delay then runs to `until`.
pub async fn expect_delay_until(c: &mut LockClient<Channel>, key: &str, until: u64) {
    let started = std::time::Instant::now();
    loop {
        let got = view(c, key).await;
        if got.holder.is_none() {
            assert_eq!(got.delayed_until_unix_ms, until);
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never expired");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Reads a Wait stream past `queued` events to its grant, and checks the
/// grant came no earlier than `until` (a lock delay's end).
pub async fn expect_granted_from(w: &mut Streaming<pb::WaitEvent>, until: u64) {
    loop {
        match next_event(w).await.expect("an event") {
            wait_event::Event::Queued(_) => {}
            wait_event::Event::Acquired(a) => {
                let granted_at = a.deadline_unix_ms - a.ttl_ms;
                assert!(
                    granted_at >= until,
                    "granted {} ms before the delay ended",
                    until - granted_at
                );
                return;
            }
            other => panic!("{other:?}"),
        }
    }
}

/// The next event of a Wait stream, which must be `queued`.
pub async fn queued(s: &mut Streaming<pb::WaitEvent>) -> pb::Queued {
    match next_event(s).await.expect("an event") {
        wait_event::Event::Queued(q) => q,
        other => panic!("expected queued, got {other:?}"),
    }
}

/// Lock.Get of `key`.
pub async fn view(c: &mut LockClient<Channel>, key: &str) -> pb::GetResponse {
    c.get(pb::GetRequest { key: key.into() })
        .await
        .expect("get")
        .into_inner()
}

/// Lock.Release of entry `index` of `key`.
pub async fn release(c: &mut LockClient<Channel>, key: &str, index: u64) -> pb::ReleaseResponse {
    c.release(pb::ReleaseRequest {
        key: key.into(),
        target: Some(release_request::Target::Index(index)),
    })
    .await
    .expect("release")
    .into_inner()
}

/// The next leader an Observe stream reports (30 s at most); `None` for
/// nobody.
pub async fn next_leader(o: &mut Streaming<pb::LeaderResponse>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(30), o.message())
        .await
        .expect("observe stalled")
        .expect("observe failed")
        .expect("observe ended")
        .leader
        .map(|l| l.name)
}

/// Opens a Lock.Watch stream on `key` (or every key under it, with `prefix`).
pub async fn watch(
    c: &mut LockClient<Channel>,
    key: &str,
    prefix: bool,
) -> Streaming<pb::LockEvent> {
    c.watch(pb::WatchRequest {
        key: key.into(),
        prefix,
    })
    .await
    .expect("watch")
    .into_inner()
}

/// Polls `check` every 20 ms, without an async runtime, until it is true or
/// `within` passes.
pub fn eventually_sync(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// How many entries wait behind the holder of `key` (`/v1/lock/get`).
pub fn queue_len(addr: &str, key: &str) -> usize {
    let r = curl(addr, &[&format!("http://ADDR/v1/lock/get?key={key}")]);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    v["queue"].as_array().map_or(0, Vec::len)
}
