//! Issue 12's connection hygiene against a real server: slowloris and idle
//! connections are closed, `--max-connections` refuses the surplus while
//! the open connections are served, the open-files limit is raised at
//! start, and none of the timeouts cuts a long wait.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{Server, curl};

/// Connects to the server with a read timeout.
fn connect(s: &Server) -> TcpStream {
    let tcp = TcpStream::connect(&s.addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    tcp
}

/// Reads until the server closes the connection; how long that took.
fn time_to_close(tcp: &mut TcpStream, start: Instant) -> Duration {
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("the server kept the connection open for 20 s")
            }
            // A reset is a close too.
            Err(_) => return start.elapsed(),
        }
    }
}

/// Sends one HTTP/1.1 request on `tcp` and reads the head of its answer.
fn request(tcp: &mut TcpStream, path: &str) -> String {
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").expect("write");
    let mut buf = [0u8; 4096];
    let n = tcp.read(&mut buf).expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn slowloris_silent_and_idle_connections_are_closed() {
    let s = Server::start(&[
        "--memory",
        "--header-read-timeout-secs",
        "1",
        "--idle-timeout-secs",
        "1",
    ]);
    // A request head trickled in a header every 200 ms, never finished.
    let mut slow = connect(&s);
    let start = Instant::now();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .expect("write");
    let mut writer = slow.try_clone().expect("clone");
    let trickle = thread::spawn(move || {
        for i in 0..100 {
            if writer
                .write_all(format!("X-{i}: a\r\n").as_bytes())
                .is_err()
            {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    let took = time_to_close(&mut slow, start);
    assert!(took < Duration::from_secs(4), "slowloris held {took:?}");
    let _ = trickle.join();

    // A connection that never says anything.
    let mut silent = connect(&s);
    let took = time_to_close(&mut silent, Instant::now());
    assert!(
        took < Duration::from_secs(4),
        "silent connection held {took:?}"
    );

    // A keep-alive connection after its request: served, then closed idle.
    let mut idle = connect(&s);
    let head = request(&mut idle, "/health");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let took = time_to_close(&mut idle, Instant::now());
    assert!(
        took < Duration::from_secs(4),
        "idle connection held {took:?}"
    );

    // The server is fine.
    assert_eq!(curl(&s.addr, &["http://ADDR/health"]).status, 200);
}

#[test]
fn long_waits_outlive_every_timeout() {
    // Every timeout at 1 s; the waits below last 4 s.
    let s = every_timeout_at_one_second();
    let held = curl(
        &s.addr,
        &["-X", "POST", "http://ADDR/mod/v2/lock/long?ttl=60"],
    );
    assert_eq!((held.status, held.body.as_str()), (200, "1"), "{held:?}");
    let addr = s.addr.clone();
    let modv2 = thread::spawn(move || {
        curl(
            &addr,
            &[
                "-X",
                "POST",
                "http://ADDR/mod/v2/lock/long?ttl=60",
                "-d",
                "value=w",
            ],
        )
    });
    assert!(
        common::eventually_sync(Duration::from_secs(5), || common::queue_len(
            &s.addr, "long"
        ) == 1),
        "the /mod/v2 waiter did not queue"
    );
    let addr = s.addr.clone();
    let ndjson = thread::spawn(move || {
        curl(
            &addr,
            &[
                "-N",
                "--max-time",
                "30",
                "http://ADDR/v1/lock/wait",
                "-d",
                r#"{"key":"long","value":"g","ttlMs":"1"}"#,
            ],
        )
    });
    thread::sleep(Duration::from_secs(4));
    let released = curl(
        &s.addr,
        &["-X", "DELETE", "http://ADDR/mod/v2/lock/long?index=1"],
    );
    assert_eq!(released.status, 200, "{released:?}");
    let got = modv2.join().expect("waiter");
    assert_eq!((got.status, got.body.as_str()), (200, "2"), "{got:?}");
    // The /mod/v2 waiter holds index 2 for a minute; release it for the
    // gateway waiter, whose 1 ms hold then expires and ends its stream.
    let released = curl(
        &s.addr,
        &["-X", "DELETE", "http://ADDR/mod/v2/lock/long?index=2"],
    );
    assert_eq!(released.status, 200, "{released:?}");
    let stream = ndjson.join().expect("stream");
    let granted = stream.body.lines().any(|l| {
        serde_json::from_str::<serde_json::Value>(l)
            .is_ok_and(|v| v["result"]["acquired"]["index"] == "3")
    });
    assert!(granted, "the streamed wait got its grant: {stream:?}");
}

#[tokio::test]
async fn a_grpc_wait_outlives_the_keepalive_timeouts() {
    let s = every_timeout_at_one_second();
    let mut c = s.lock().await;
    let (_held, index) = common::acquire(&mut c, "g", "", 60_000).await;
    let mut w = s.lock().await;
    let mut waiting = common::wait(&mut w, common::wait_req("g", "", 60_000, None)).await;
    common::queued(&mut waiting).await;
    // A live client answers the PINGs; its wait stays.
    tokio::time::sleep(Duration::from_secs(4)).await;
    common::release(&mut c, "g", index).await;
    match common::next_event(&mut waiting).await {
        Ok(baton::proto::v1::wait_event::Event::Acquired(a)) => assert!(a.index > index),
        other => panic!("expected the grant, got {other:?}"),
    }
}

#[test]
fn max_connections_refuses_the_surplus_and_serves_the_rest() {
    let s = Server::start(&[
        "--memory",
        "--max-connections",
        "4",
        "--idle-timeout-secs",
        "60",
    ]);
    let mut open: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut tcp = connect(&s);
            let head = request(&mut tcp, "/health");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            tcp
        })
        .collect();
    // The fifth is accepted and closed at once.
    for _ in 0..3 {
        let mut extra = connect(&s);
        let _ = extra.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let took = time_to_close(&mut extra, Instant::now());
        assert!(
            took < Duration::from_secs(2),
            "refused connection took {took:?}"
        );
    }
    // The open ones are still served.
    for tcp in &mut open {
        let head = request(tcp, "/health");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    // One closes; a new connection gets its place.
    drop(open.pop());
    let served = common::eventually_sync(Duration::from_secs(5), || {
        let Ok(mut tcp) = TcpStream::connect(&s.addr) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = tcp.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let mut buf = [0u8; 64];
        matches!(tcp.read(&mut buf), Ok(n) if n > 0 && buf.starts_with(b"HTTP/1.1 200"))
    });
    assert!(served, "a freed slot was not reused");
}

#[test]
fn the_open_files_limit_is_raised_at_start() {
    let mut child = Command::new("bash")
        .args([
            "-c",
            &format!(
                "ulimit -Sn 1024; exec {} --memory --listen 127.0.0.1:0",
                env!("CARGO_BIN_EXE_baton")
            ),
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start baton under bash");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("open-files limit"))
        .unwrap_or_default();
    // What the process has now, as the kernel reports it.
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let hard: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|h| h.parse().ok())
        .expect("the hard limit in /proc/PID/limits");
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|h| h.parse().ok())
        .expect("the soft limit in /proc/PID/limits");
    assert_eq!(soft, hard, "{limits}");
    let plain = strip_ansi(&line);
    if hard > 1024 {
        assert!(plain.contains("raised the open-files limit"), "{plain}");
        assert!(plain.contains("from=1024"), "{plain}");
        assert!(plain.contains(&format!("to={hard}")), "{plain}");
    } else {
        // Nothing to raise: the limit is logged as it is.
        assert!(plain.contains("limit=Some(1024)"), "{plain}");
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn a_thousand_idle_connections_do_not_starve_the_server() {
    // The issue's setup: open-files limit 1024, hard too (nothing to raise),
    // 1,100 idle connections.
    let mut child = Command::new("bash")
        .args([
            "-c",
            &format!(
                "ulimit -n 1024; exec {} --memory --listen 127.0.0.1:0 \
                 --header-read-timeout-secs 1 --idle-timeout-secs 1",
                env!("CARGO_BIN_EXE_baton")
            ),
        ])
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start baton under bash");
    let stdout = child.stdout.take().expect("stdout");
    let addr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("baton listening on http://")
                .map(str::to_owned)
        })
        .expect("baton listening");
    let stderr = child.stderr.take().expect("stderr");
    let log = thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let idle: Vec<TcpStream> = (0..1100)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert!(idle.len() > 1024, "only {} connections opened", idle.len());
    // The silent ones are closed within the timeout, and the server answers.
    let healthy = common::eventually_sync(Duration::from_secs(6), || {
        curl(&addr, &["--max-time", "1", "http://ADDR/health"]).status == 200
    });
    let mut closed = 0;
    for mut tcp in idle {
        let _ = tcp.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = [0u8; 16];
        let open = match tcp.read(&mut buf) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        if !open {
            closed += 1;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = log.join().unwrap_or_default();
    assert!(healthy, "/health did not answer; log: {log:?}");
    assert!(
        closed >= 1000,
        "only {closed} of the idle connections were closed"
    );
    // Refusals are logged once per burst, not once per connection.
    assert!(log.len() < 10, "the log spun: {} lines", log.len());
}

#[test]
fn a_stalled_request_body_fails() {
    let s = Server::start(&["--memory", "--body-read-timeout-secs", "1"]);
    let mut tcp = connect(&s);
    let start = Instant::now();
    tcp.write_all(
        b"POST /mod/v2/lock/slow?ttl=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nvalue=",
    )
    .expect("write");
    // The body never finishes: the request fails instead of holding on.
    let mut buf = [0u8; 1024];
    let n = tcp.read(&mut buf).expect("an answer");
    let took = start.elapsed();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 4"), "{head}");
    assert!(
        took < Duration::from_secs(4),
        "a stalled body held {took:?}"
    );
    assert_eq!(common::queue_len(&s.addr, "slow"), 0);
    let r = curl(&s.addr, &["http://ADDR/mod/v2/lock/slow"]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, ""),
        "nothing was acquired: {r:?}"
    );
}

/// A server whose header-read, idle and keep-alive timeouts are all 1 s.
fn every_timeout_at_one_second() -> Server {
    Server::start(&[
        "--memory",
        "--header-read-timeout-secs",
        "1",
        "--idle-timeout-secs",
        "1",
        "--keepalive-interval-secs",
        "1",
        "--keepalive-timeout-secs",
        "1",
    ])
}
