//! etcd's `/mod/v2` lock and leader API, driven by real `curl` against a
//! real `baton`: every curl line of the seed document, the original
//! module's test scenarios, and the errors etcd users parse.

mod common;

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{Reply, Server, curl};

/// `curl -X METHOD http://ADDR{path}` with each of `form` as a `-d` field,
/// exactly as the seed's lines are written.
fn req(s: &Server, method: &str, path: &str, form: &[&str]) -> Reply {
    let url = format!("http://ADDR{path}");
    let mut args = vec!["-X", method, url.as_str()];
    for f in form {
        args.extend(["-d", f]);
    }
    curl(&s.addr, &args)
}

fn ok(r: &Reply, body: &str) {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.content_type, "text/plain; charset=utf-8", "{r:?}");
    assert_eq!(r.body, body, "{r:?}");
}

fn etcd_error(r: &Reply, status: u16, code: u32, cause: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.content_type, "application/json", "{r:?}");
    assert!(r.body.ends_with("}\n"), "one trailing newline: {r:?}");
    let v: serde_json::Value = serde_json::from_str(r.body.trim_end()).expect("JSON body");
    assert_eq!(v["errorCode"], code, "{r:?}");
    assert_eq!(v["cause"], cause, "{r:?}");
    assert_eq!(v["index"], 0, "{r:?}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(
        r.headers.to_ascii_lowercase().contains("x-etcd-index: 0"),
        "{r:?}"
    );
}

#[test]
fn every_seed_curl_line_works_as_documented() {
    let s = Server::memory();
    // Acquire a lock (with no value) for "customer1": the first index is 1.
    ok(&req(&s, "POST", "/mod/v2/lock/customer1?ttl=60", &[]), "1");
    ok(
        &req(&s, "DELETE", "/mod/v2/lock/customer1?index=1", &[]),
        "",
    );
    // Acquire with the value "bar": index 2, as the seed's renew lines expect.
    ok(
        &req(&s, "POST", "/mod/v2/lock/customer1?ttl=60", &["value=bar"]),
        "2",
    );
    ok(
        &req(&s, "PUT", "/mod/v2/lock/customer1?ttl=60", &["index=2"]),
        "",
    );
    ok(
        &req(&s, "PUT", "/mod/v2/lock/customer1?ttl=60", &["value=bar"]),
        "",
    );
    ok(
        &curl(&s.addr, &["http://ADDR/mod/v2/lock/customer1"]),
        "bar",
    );
    ok(
        &curl(&s.addr, &["http://ADDR/mod/v2/lock/customer1?field=index"]),
        "2",
    );
    // The holder re-posting its value with a timeout gets its index at once.
    ok(
        &req(
            &s,
            "POST",
            "/mod/v2/lock/customer1?ttl=60",
            &["value=bar", "timeout=2"],
        ),
        "2",
    );
    ok(
        &req(&s, "DELETE", "/mod/v2/lock/customer1?index=2", &[]),
        "",
    );
    ok(&curl(&s.addr, &["http://ADDR/mod/v2/lock/customer1"]), "");
    ok(
        &req(
            &s,
            "POST",
            "/mod/v2/lock/customer1?ttl=60",
            &["value=bar", "timeout=2"],
        ),
        "3",
    );
    ok(
        &req(&s, "DELETE", "/mod/v2/lock/customer1?value=bar", &[]),
        "",
    );
    ok(
        &curl(&s.addr, &["http://ADDR/mod/v2/lock/customer1?field=index"]),
        "",
    );

    // Leader election.
    ok(
        &req(
            &s,
            "PUT",
            "/mod/v2/leader/order_processing?ttl=60",
            &["name=myserver1.foo.com"],
        ),
        "4",
    );
    ok(
        &curl(&s.addr, &["http://ADDR/mod/v2/leader/order_processing"]),
        "myserver1.foo.com",
    );
    // Elections share the locks' namespace: the leader's fencing token.
    ok(
        &curl(
            &s.addr,
            &["http://ADDR/mod/v2/lock/order_processing?field=index"],
        ),
        "4",
    );
    // Re-issuing the same PUT renews and answers at once with the same index.
    ok(
        &req(
            &s,
            "PUT",
            "/mod/v2/leader/order_processing?ttl=60",
            &["name=myserver1.foo.com"],
        ),
        "4",
    );
    ok(
        &req(
            &s,
            "DELETE",
            "/mod/v2/leader/order_processing?name=myserver1.foo.com",
            &[],
        ),
        "",
    );
    ok(
        &curl(&s.addr, &["http://ADDR/mod/v2/leader/order_processing"]),
        "",
    );

    // The dashboard's address.
    let r = curl(&s.addr, &["http://ADDR/mod/dashboard"]);
    assert_eq!(r.status, 302, "{r:?}");
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("location: /mod/dashboard/")
    );
    let r = curl(&s.addr, &["http://ADDR/mod/dashboard/"]);
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("text/html"), "{r:?}");
}

/// Starts a blocking curl on another thread.
fn background(server: &Server, args: &[&str]) -> thread::JoinHandle<(Reply, Duration)> {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("ADDR", &server.addr))
        .collect();
    let addr = server.addr.clone();
    thread::spawn(move || {
        let start = Instant::now();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = curl(&addr, &refs);
        (r, start.elapsed())
    })
}

fn queue_len(s: &Server, key: &str) -> usize {
    let r = Command::new("curl")
        .args(["-s", &format!("http://{}/v1/lock/get?key={key}", s.addr)])
        .output()
        .expect("curl");
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).expect("JSON");
    v["queue"].as_array().map_or(0, Vec::len)
}

#[test]
fn a_second_acquirer_blocks_until_the_first_releases() {
    let s = Server::memory();
    ok(&req(&s, "POST", "/mod/v2/lock/foo?ttl=10", &[]), "1");
    let second = background(&s, &["-X", "POST", "http://ADDR/mod/v2/lock/foo?ttl=10"]);
    thread::sleep(Duration::from_millis(1000));
    assert!(!second.is_finished(), "second acquirer did not block");
    assert_eq!(queue_len(&s, "foo"), 1);
    ok(&req(&s, "DELETE", "/mod/v2/lock/foo?index=1", &[]), "");
    let (r, _) = second.join().unwrap();
    ok(&r, "2");
    ok(
        &curl(&s.addr, &["http://ADDR/mod/v2/lock/foo?field=index"]),
        "2",
    );
}

#[test]
fn expiry_hands_the_lock_on_and_renew_keeps_it() {
    let s = Server::memory();
    ok(&req(&s, "POST", "/mod/v2/lock/foo?ttl=2", &[]), "1");
    let second = background(&s, &["-X", "POST", "http://ADDR/mod/v2/lock/foo?ttl=10"]);
    // Renew every 500 ms for 3 s: the waiter must not get the lock.
    for _ in 0..6 {
        ok(&req(&s, "PUT", "/mod/v2/lock/foo?ttl=2", &["index=1"]), "");
        thread::sleep(Duration::from_millis(500));
    }
    assert!(!second.is_finished(), "renewed lock was handed on");
    ok(
        &curl(&s.addr, &["http://ADDR/mod/v2/lock/foo?field=index"]),
        "1",
    );
    // Stop renewing: it expires and the waiter gets it.
    let (r, waited) = second.join().unwrap();
    ok(&r, "2");
    assert!(waited >= Duration::from_secs(3), "{waited:?}");
}

#[test]
fn acquire_and_release_by_value() {
    let s = Server::memory();
    ok(
        &req(&s, "POST", "/mod/v2/lock/foo?ttl=10", &["value=XXX"]),
        "1",
    );
    ok(&curl(&s.addr, &["http://ADDR/mod/v2/lock/foo"]), "XXX");
    let second = background(
        &s,
        &[
            "-X",
            "POST",
            "http://ADDR/mod/v2/lock/foo?ttl=10",
            "-d",
            "value=YYY",
        ],
    );
    thread::sleep(Duration::from_millis(500));
    ok(&req(&s, "DELETE", "/mod/v2/lock/foo?value=XXX", &[]), "");
    ok(&second.join().unwrap().0, "2");
    ok(&curl(&s.addr, &["http://ADDR/mod/v2/lock/foo"]), "YYY");
}

#[test]
fn same_value_from_two_sessions_returns_together() {
    let s = Server::memory();
    ok(&req(&s, "POST", "/mod/v2/lock/foo?ttl=10", &[]), "1");
    let a = background(
        &s,
        &[
            "-X",
            "POST",
            "http://ADDR/mod/v2/lock/foo?ttl=10",
            "-d",
            "value=same",
        ],
    );
    let b = background(
        &s,
        &[
            "-X",
            "POST",
            "http://ADDR/mod/v2/lock/foo?ttl=10",
            "-d",
            "value=same",
        ],
    );
    thread::sleep(Duration::from_millis(800));
    assert_eq!(queue_len(&s, "foo"), 1, "same value must join one entry");
    ok(&req(&s, "DELETE", "/mod/v2/lock/foo?index=1", &[]), "");
    ok(&a.join().unwrap().0, "2");
    ok(&b.join().unwrap().0, "2");
}

#[test]
fn timeouts_fail_with_500_and_leave_nothing_queued() {
    let s = Server::memory();
    // timeout=0 on a free lock succeeds.
    ok(
        &req(&s, "POST", "/mod/v2/lock/foo?ttl=30&timeout=0", &[]),
        "1",
    );
    // timeout=0 on a held lock fails at once.
    let start = Instant::now();
    let r = req(&s, "POST", "/mod/v2/lock/foo?ttl=30&timeout=0", &[]);
    assert_eq!(r.status, 500, "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // timeout=1 fails after about a second.
    let start = Instant::now();
    let r = req(&s, "POST", "/mod/v2/lock/foo?ttl=30", &["timeout=1"]);
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.body.contains("timeout"), "{r:?}");
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert_eq!(queue_len(&s, "foo"), 0);
    // A negative timeout waits forever (here: until released).
    let w = background(
        &s,
        &[
            "-X",
            "POST",
            "http://ADDR/mod/v2/lock/foo?ttl=30&timeout=-1",
        ],
    );
    thread::sleep(Duration::from_millis(1500));
    assert!(!w.is_finished());
    ok(&req(&s, "DELETE", "/mod/v2/lock/foo?index=1", &[]), "");
    // timeout=0 created no entry, timeout=1 took index 2.
    ok(&w.join().unwrap().0, "3");
}

#[test]
fn a_waiter_released_by_someone_else_is_told_so() {
    let s = Server::memory();
    ok(&req(&s, "POST", "/mod/v2/lock/foo?ttl=30", &[]), "1");
    let w = background(
        &s,
        &[
            "-X",
            "POST",
            "http://ADDR/mod/v2/lock/foo?ttl=30",
            "-d",
            "value=w",
        ],
    );
    thread::sleep(Duration::from_millis(500));
    ok(&req(&s, "DELETE", "/mod/v2/lock/foo?value=w", &[]), "");
    let (r, _) = w.join().unwrap();
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.body.contains("released"), "{r:?}");
    ok(
        &curl(&s.addr, &["http://ADDR/mod/v2/lock/foo?field=index"]),
        "1",
    );
}

#[test]
fn a_client_that_hangs_up_leaves_no_entry() {
    let s = Server::memory();
    ok(&req(&s, "POST", "/mod/v2/lock/foo?ttl=30", &[]), "1");
    let r = curl(
        &s.addr,
        &[
            "--max-time",
            "1",
            "-X",
            "POST",
            "http://ADDR/mod/v2/lock/foo?ttl=30",
        ],
    );
    assert_eq!(r.status, 0, "curl should have given up: {r:?}");
    let start = Instant::now();
    while queue_len(&s, "foo") != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "entry left behind"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn leader_set_get_renew_delete() {
    let s = Server::memory();
    ok(
        &req(&s, "PUT", "/mod/v2/leader/foo?ttl=2", &["name=xxx"]),
        "1",
    );
    ok(&curl(&s.addr, &["http://ADDR/mod/v2/leader/foo"]), "xxx");
    let other = background(
        &s,
        &[
            "-X",
            "PUT",
            "http://ADDR/mod/v2/leader/foo?ttl=10",
            "-d",
            "name=yyy",
        ],
    );
    // Re-PUT renews; the other candidate keeps waiting.
    for _ in 0..4 {
        thread::sleep(Duration::from_millis(700));
        ok(
            &req(&s, "PUT", "/mod/v2/leader/foo?ttl=2", &["name=xxx"]),
            "1",
        );
    }
    assert!(!other.is_finished());
    ok(&req(&s, "DELETE", "/mod/v2/leader/foo?name=xxx", &[]), "");
    ok(&other.join().unwrap().0, "2");
    ok(&curl(&s.addr, &["http://ADDR/mod/v2/leader/foo"]), "yyy");
}

#[test]
fn client_mistakes_get_etcd_errors_never_500() {
    let s = Server::start(&["--memory", "--max-value-bytes", "64"]);
    let lock = "http://ADDR/mod/v2/lock/foo";
    etcd_error(&curl(&s.addr, &["-X", "POST", lock]), 400, 202, "Acquire");
    etcd_error(
        &req(&s, "POST", "/mod/v2/lock/foo?ttl=abc", &[]),
        400,
        202,
        "Acquire",
    );
    etcd_error(
        &req(&s, "POST", "/mod/v2/lock/foo?ttl=-5", &[]),
        400,
        202,
        "Acquire",
    );
    etcd_error(
        &req(
            &s,
            "POST",
            "/mod/v2/lock/foo?ttl=99999999999999999999999999",
            &[],
        ),
        400,
        202,
        "Acquire",
    );
    etcd_error(
        &req(&s, "POST", "/mod/v2/lock/foo?ttl=5&timeout=soon", &[]),
        400,
        205,
        "Acquire",
    );
    etcd_error(
        &req(&s, "POST", "/mod/v2/lock/foo?ttl=5&value=%FF%FE", &[]),
        400,
        210,
        "Acquire",
    );
    let big = format!("value={}", "v".repeat(65));
    etcd_error(
        &curl(
            &s.addr,
            &[
                "-X",
                "POST",
                "http://ADDR/mod/v2/lock/foo?ttl=5",
                "-d",
                &big,
            ],
        ),
        400,
        210,
        "Acquire",
    );
    etcd_error(
        &req(&s, "PUT", "/mod/v2/lock/foo?ttl=5", &[]),
        400,
        207,
        "Renew",
    );
    etcd_error(
        &req(&s, "PUT", "/mod/v2/lock/foo?index=1", &[]),
        400,
        202,
        "Renew",
    );
    etcd_error(
        &req(&s, "PUT", "/mod/v2/lock/foo?ttl=5&index=1&value=x", &[]),
        400,
        208,
        "Renew",
    );
    etcd_error(
        &req(&s, "PUT", "/mod/v2/lock/foo?ttl=5&index=x", &[]),
        400,
        203,
        "Renew",
    );
    etcd_error(
        &req(&s, "PUT", "/mod/v2/lock/foo?ttl=5&index=99", &[]),
        404,
        100,
        "Renew",
    );
    etcd_error(&curl(&s.addr, &["-X", "DELETE", lock]), 400, 207, "Release");
    etcd_error(
        &req(&s, "DELETE", "/mod/v2/lock/foo?index=42", &[]),
        404,
        100,
        "Release",
    );
    etcd_error(
        &req(&s, "DELETE", "/mod/v2/lock/foo?value=nobody", &[]),
        404,
        100,
        "Release",
    );
    etcd_error(
        &curl(&s.addr, &["http://ADDR/mod/v2/lock/foo?field=owner"]),
        400,
        209,
        "Get",
    );
    etcd_error(
        &req(&s, "PUT", "/mod/v2/leader/foo?ttl=5", &[]),
        400,
        206,
        "Set",
    );
    etcd_error(
        &req(&s, "PUT", "/mod/v2/leader/foo?name=a", &[]),
        400,
        202,
        "Set",
    );
    etcd_error(
        &req(&s, "DELETE", "/mod/v2/leader/foo", &[]),
        400,
        206,
        "Delete",
    );
    etcd_error(
        &req(&s, "DELETE", "/mod/v2/leader/foo?name=zzz", &[]),
        404,
        100,
        "Delete",
    );
    // A lock never used reads as free.
    ok(&curl(&s.addr, &["http://ADDR/mod/v2/lock/never-used"]), "");
    ok(
        &curl(&s.addr, &["http://ADDR/mod/v2/leader/never-used"]),
        "",
    );
    // Keys may hold slashes and percent-encoded characters.
    ok(&req(&s, "POST", "/mod/v2/lock/a/b%20c?ttl=5", &[]), "1");
    ok(
        &curl(&s.addr, &["http://ADDR/mod/v2/lock/a/b%20c?field=index"]),
        "1",
    );
}
