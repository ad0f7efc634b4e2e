//! A request generator for every HTTP route (issue 12's fuzzing, kept):
//! proptest makes methods, paths, keys, query strings, bodies and headers
//! (Host, Origin, Sec-Fetch-Site, Content-Type, Accept), sends them, and
//! checks what must hold for every input:
//!
//! - no 5xx, except `/mod/v2`'s documented 500 (a lock not acquired, plain
//!   text);
//! - a foreign `Host` gets 421, a foreign `Origin` or a cross-site
//!   `Sec-Fetch-Site` 403, before anything acts;
//! - the gateway's state-changing RPCs answer GET and HEAD with 405;
//! - every `/mod/v2` error but the 500 and the 421 is etcd's JSON body;
//! - the server is still healthy afterwards.
//!
//! `real_server` sends raw HTTP/1.1 to a real `baton` process
//! (`BATON_FUZZ_CASES` inputs, 1,000 by default: a few seconds, part of
//! `cargo test`). `in_process` drives the same router in process with
//! `tower::ServiceExt::oneshot`, fast enough for long runs
//! (`BATON_FUZZ_INPROC_CASES`, 2,000 by default; NOTES-issue12.md has the
//! count of the long run).

mod common;

use std::time::Duration;

use axum::body::Body;
use clap::Parser;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tower::ServiceExt;

/// Which `Host` a request names.
#[derive(Clone, Copy, Debug)]
enum HostKind {
    /// `127.0.0.1:PORT`.
    Ip,
    /// `localhost:PORT`.
    Localhost,
    /// A DNS-rebinding name.
    Foreign,
    /// No `Host` header at all.
    Missing,
}

/// Which browser headers a request carries.
#[derive(Clone, Copy, Debug)]
enum OriginKind {
    None,
    Own,
    Foreign,
    Null,
    CrossSite,
    SameSite,
    SameOrigin,
}

impl OriginKind {
    fn refused(self) -> bool {
        matches!(
            self,
            Self::Foreign | Self::Null | Self::CrossSite | Self::SameSite
        )
    }
}

/// One generated request.
#[derive(Clone, Debug)]
struct Gen {
    method: String,
    path: String,
    query: String,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    sse: bool,
    host: HostKind,
    origin: OriginKind,
}

const ROUTES: &[&str] = &[
    "/v1/lock/wait",
    "/v1/lock/renew",
    "/v1/lock/release",
    "/v1/lock/get",
    "/v1/lock/check",
    "/v1/lock/list",
    "/v1/lock/watch",
    "/v1/election/campaign",
    "/v1/election/leader",
    "/v1/election/observe",
    "/v1/election/resign",
    "/v1/election/list",
    "/v1/status/get",
    "/v1/status",
    "/v1/openapi.json",
    "/v1/",
    "/mod/v2/lock/",
    "/mod/v2/leader/",
    "/mod/v2",
    "/mod/v2/",
    "/mod/v2/keys/",
    "/mod/dashboard",
    "/mod/dashboard/",
    "/mod/dashboard/app.js",
    "/mod/dashboard/nope",
    "/metrics",
    "/health",
    "/",
    "/baton.v1.Lock/Get",
];

/// The gateway RPCs that change state: POST only.
const MUTATING: &[&str] = &[
    "/v1/lock/wait",
    "/v1/lock/renew",
    "/v1/lock/release",
    "/v1/election/campaign",
    "/v1/election/resign",
];

const FIELDS: &[&str] = &[
    "key",
    "value",
    "index",
    "ttl",
    "ttlMs",
    "ttl_ms",
    "timeout",
    "timeoutMs",
    "timeout_ms",
    "prefix",
    "field",
    "name",
    "election",
    "pageSize",
    "pageToken",
    "limit",
];

const VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "2",
    "-1",
    "60",
    "true",
    "false",
    "null",
    "1.5",
    "1e3",
    "abc",
    "k",
    "k/x",
    "99999999999999999999",
    "18446744073709551615",
    "-9223372036854775808",
    "index",
    "value",
    "\u{20ac}",
    "\u{0}",
    "a b",
    "%FF",
    "[]",
    "{}",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..8u8).prop_map(|i| format!("k{i}")),
        prop::sample::select(vec![
            "true",
            "false",
            "a/b",
            "%2F",
            "%FF",
            "%E2%82%AC",
            "..",
            "k%20x",
            "a%00b",
            "%",
        ])
        .prop_map(str::to_owned),
        "[a-z0-9/._~-]{0,12}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(VALUES).prop_map(str::to_owned),
        "[ -~]{0,10}",
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FIELDS).prop_map(str::to_owned),
        1 => "[a-zA-Z_]{0,6}",
    ]
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

fn form(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let pairs = || prop::collection::vec((name(), value()), 0..5);
    prop_oneof![
        Just(Vec::new()),
        // A JSON object, values as strings, numbers, bools, null or nested.
        prop::collection::vec((name(), value(), 0..5u8), 0..5).prop_map(|fields| {
            let mut m = serde_json::Map::new();
            for (k, v, kind) in fields {
                let v = match kind {
                    0 => serde_json::Value::String(v),
                    1 => v.parse::<i64>().map_or(serde_json::Value::Null, Into::into),
                    2 => serde_json::Value::Bool(v.len() % 2 == 0),
                    3 => serde_json::json!({ "index": v }),
                    _ => serde_json::Value::Null,
                };
                m.insert(k, v);
            }
            serde_json::to_vec(&m).unwrap_or_default()
        }),
        pairs().prop_map(|p| form(&p).into_bytes()),
        prop::collection::vec(any::<u8>(), 0..48),
    ]
}

fn request() -> impl Strategy<Value = Gen> {
    let method = prop_oneof![
        6 => prop::sample::select(vec!["GET", "POST", "PUT", "DELETE"]),
        1 => prop::sample::select(vec!["HEAD", "PATCH", "OPTIONS", "TRACE", "FOO"]),
    ];
    let route = (prop::sample::select(ROUTES), key(), 0..4u8).prop_map(|(r, k, junk)| {
        if r.ends_with("/lock/") || r.ends_with("/leader/") || r.ends_with("/keys/") {
            format!("{r}{k}")
        } else {
            match junk {
                0 => format!("{r}/"),
                1 => format!("{r}x"),
                _ => r.to_owned(),
            }
        }
    });
    let query = prop::collection::vec((name(), value()), 0..5).prop_map(|p| form(&p));
    let content_type = prop::option::of(prop::sample::select(vec![
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
    ]));
    let host = prop_oneof![
        6 => Just(HostKind::Ip),
        2 => Just(HostKind::Localhost),
        1 => Just(HostKind::Foreign),
        1 => Just(HostKind::Missing),
    ];
    let origin = prop_oneof![
        8 => Just(OriginKind::None),
        2 => Just(OriginKind::Own),
        1 => Just(OriginKind::Foreign),
        1 => Just(OriginKind::Null),
        1 => Just(OriginKind::CrossSite),
        1 => Just(OriginKind::SameSite),
        1 => Just(OriginKind::SameOrigin),
    ];
    (
        method,
        route,
        query,
        body(),
        content_type,
        any::<bool>(),
        host,
        origin,
    )
        .prop_map(
            |(method, path, query, body, content_type, sse, host, origin)| Gen {
                method: method.to_owned(),
                path,
                query,
                body,
                content_type,
                sse,
                host,
                origin,
            },
        )
}

impl Gen {
    fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    /// The headers, for a server whose own authority is `own`.
    fn headers(&self, own: &str) -> Vec<(String, String)> {
        let port = own.rsplit(':').next().unwrap_or("80");
        let mut h = Vec::new();
        match self.host {
            HostKind::Ip => h.push(("Host".into(), own.to_owned())),
            HostKind::Localhost => h.push(("Host".into(), format!("localhost:{port}"))),
            HostKind::Foreign => h.push(("Host".into(), format!("attacker.example:{port}"))),
            HostKind::Missing => {}
        }
        let own_origin = match self.host {
            HostKind::Localhost => format!("http://localhost:{port}"),
            _ => format!("http://{own}"),
        };
        match self.origin {
            OriginKind::None => {}
            OriginKind::Own => h.push(("Origin".into(), own_origin)),
            OriginKind::Foreign => h.push(("Origin".into(), "http://attacker.example".into())),
            OriginKind::Null => h.push(("Origin".into(), "null".into())),
            OriginKind::CrossSite => h.push(("Sec-Fetch-Site".into(), "cross-site".into())),
            OriginKind::SameSite => h.push(("Sec-Fetch-Site".into(), "same-site".into())),
            OriginKind::SameOrigin => h.push(("Sec-Fetch-Site".into(), "same-origin".into())),
        }
        if let Some(ct) = self.content_type {
            h.push(("Content-Type".into(), ct.into()));
        }
        if self.sse {
            h.push(("Accept".into(), "text/event-stream".into()));
        }
        h
    }

    /// Whether the guard must refuse it, and with what.
    fn refusal(&self) -> Option<u16> {
        match self.host {
            HostKind::Foreign => Some(421),
            // Own origin without a Host has no own origin to match.
            HostKind::Missing if matches!(self.origin, OriginKind::Own) => Some(403),
            _ if self.origin.refused() => Some(403),
            _ => None,
        }
    }
}

/// What came back: status, content type, and the body if it ended soon.
struct Answer {
    status: u16,
    content_type: String,
    body: Option<Vec<u8>>,
}

/// The properties every answer has.
fn check(req: &Gen, a: &Answer) -> Result<(), TestCaseError> {
    let modv2 = req.path == "/mod/v2" || req.path.starts_with("/mod/v2/");
    if let Some(status) = req.refusal() {
        prop_assert_eq!(a.status, status, "{:?}", req);
        return Ok(());
    }
    if a.status >= 500 {
        let documented = modv2 && a.status == 500 && a.content_type.starts_with("text/plain");
        prop_assert!(documented, "{} for {:?}", a.status, req);
    }
    if MUTATING.contains(&req.path.as_str()) && matches!(req.method.as_str(), "GET" | "HEAD") {
        prop_assert_eq!(a.status, 405, "{:?}", req);
    }
    if modv2 && a.status >= 400 && a.status != 500 && req.method != "HEAD" {
        prop_assert!(
            a.content_type == "application/json",
            "{} {:?} for {:?}",
            a.status,
            a.content_type,
            req
        );
        if let Some(body) = &a.body {
            let v: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| TestCaseError::fail(format!("{e}: {req:?}")))?;
            prop_assert!(v["errorCode"].is_u64(), "{:?} for {:?}", v, req);
        }
    }
    Ok(())
}

fn cases(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Sends `req` as raw HTTP/1.1 on a new connection. `None`: no answer head
/// within the wait (a blocking acquire, say); dropping the connection
/// withdraws it.
async fn send_raw(addr: &str, req: &Gen) -> Option<Answer> {
    let mut tcp = TcpStream::connect(addr).await.ok()?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target());
    for (k, v) in req.headers(addr) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        req.body.len()
    ));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&req.body);
    tcp.write_all(&bytes).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let end_of_head = loop {
        let n = tokio::time::timeout(Duration::from_millis(150), tcp.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break None;
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break Some(i + 4);
        }
    }?;
    let head = String::from_utf8_lossy(&got[..end_of_head]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let mut body = got[end_of_head..].to_vec();
    // Read the rest if the server ends it soon (Connection: close).
    let ended = loop {
        match tokio::time::timeout(Duration::from_millis(150), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => body.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    Some(Answer {
        status,
        content_type,
        body: (ended && !chunked).then_some(body),
    })
}

#[test]
fn real_server() {
    let s = common::Server::memory();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut runner = TestRunner::new(config(cases("BATON_FUZZ_CASES", 1_000)));
    let answered = std::cell::Cell::new(0u64);
    let result = runner.run(&request(), |req| {
        match rt.block_on(send_raw(&s.addr, &req)) {
            Some(a) => {
                answered.set(answered.get() + 1);
                check(&req, &a)
            }
            None => Ok(()),
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(answered.get() > 0, "nothing answered");
    // Still healthy, on a new connection.
    let r = common::curl(&s.addr, &["--max-time", "5", "http://ADDR/health"]);
    assert_eq!(r.status, 200, "{r:?}");
    let r = common::curl(&s.addr, &["--max-time", "5", "http://ADDR/v1/status"]);
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn in_process() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let own = "127.0.0.1:4001";
    let app = rt.block_on(async {
        let args = baton::config::Cli::parse_from(["baton", "--memory"]).serve;
        let engine = baton::server::engine(
            &args,
            own.parse().expect("addr"),
            false,
            &[],
            baton::engine::clock::Clock::system(),
        )
        .expect("engine");
        let service = baton::service::Service::new(
            engine,
            args.service_limits(),
            tokio_util::sync::CancellationToken::new(),
        );
        baton::server::app(&args, service, own.parse().expect("addr"), false, None).expect("app")
    });
    let n = cases("BATON_FUZZ_INPROC_CASES", 2_000);
    let mut runner = TestRunner::new(config(n));
    let answered = std::cell::Cell::new(0u64);
    let result = runner.run(&request(), |req| {
        let Ok(method) = http::Method::from_bytes(req.method.as_bytes()) else {
            return Ok(());
        };
        let mut builder = http::Request::builder().method(method).uri(req.target());
        for (k, v) in req.headers(own) {
            builder = builder.header(k, v);
        }
        let Ok(request) = builder.body(Body::from(req.body.clone())) else {
            return Ok(());
        };
        let answer = rt.block_on(async {
            let response =
                tokio::time::timeout(Duration::from_millis(20), app.clone().oneshot(request))
                    .await
                    .ok()?
                    .ok()?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let streaming =
                content_type.contains("ndjson") || content_type.contains("event-stream");
            let body = if streaming {
                None
            } else {
                tokio::time::timeout(
                    Duration::from_millis(20),
                    axum::body::to_bytes(response.into_body(), 1 << 20),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .map(|b| b.to_vec())
            };
            Some(Answer {
                status,
                content_type,
                body,
            })
        });
        match answer {
            Some(a) => {
                answered.set(answered.get() + 1);
                check(&req, &a)
            }
            None => Ok(()),
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    println!(
        "in-process fuzz: {n} inputs, {} answered in time",
        answered.get()
    );
    assert!(answered.get() > 0, "nothing answered");
    // Still healthy.
    let health = rt.block_on(async {
        let req = http::Request::builder()
            .uri("/health")
            .header("host", own)
            .body(Body::empty())
            .expect("request");
        app.clone().oneshot(req).await.map(|r| r.status().as_u16())
    });
    assert_eq!(health.ok(), Some(200));
}
