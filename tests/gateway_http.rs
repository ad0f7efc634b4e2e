//! The HTTP/JSON gateway and CORS, with real `curl` against a real `baton`.

mod common;

use std::{thread, time::Duration};

use common::{Server, curl};
use serde_json::Value;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

#[test]
fn unary_calls_by_post_and_get() {
    let s = Server::memory();
    // A Wait stream to take the lock (its first line is the grant).
    let r = curl(
        &s.addr,
        &[
            "--max-time",
            "2",
            "http://ADDR/v1/lock/wait",
            "-d",
            r#"{"key":"g","value":"me","ttlMs":"60000"}"#,
        ],
    );
    let first = json(r.body.lines().next().unwrap_or_default());
    assert_eq!(first["result"]["acquired"]["index"], "1", "{r:?}");
    assert_eq!(r.content_type, "application/x-ndjson");

    let r = curl(
        &s.addr,
        &["http://ADDR/v1/lock/get", "-d", r#"{"key":"g"}"#],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.content_type, "application/json");
    let v = json(&r.body);
    assert_eq!(v["holder"]["index"], "1");
    assert_eq!(v["holder"]["value"], "me");
    assert_eq!(v["holder"]["ttlMs"], "60000");

    let r = curl(&s.addr, &["http://ADDR/v1/lock/get?key=g"]);
    assert_eq!(json(&r.body)["holder"]["value"], "me");

    let r = curl(
        &s.addr,
        &[
            "http://ADDR/v1/lock/renew",
            "-d",
            r#"{"key":"g","value":"me","ttlMs":"1000"}"#,
        ],
    );
    assert_eq!(json(&r.body)["held"], true, "{r:?}");
    let r = curl(&s.addr, &["http://ADDR/v1/election/leader?election=g"]);
    assert_eq!(json(&r.body)["leader"]["name"], "me");
    let r = curl(
        &s.addr,
        &[
            "http://ADDR/v1/lock/release",
            "-d",
            r#"{"key":"g","index":"1"}"#,
        ],
    );
    assert_eq!(json(&r.body)["wasHolder"], true, "{r:?}");
    let r = curl(&s.addr, &["http://ADDR/v1/lock/list", "-d", "{}"]);
    assert_eq!(json(&r.body)["keys"], Value::Null, "{r:?}");
}

#[test]
fn streams_as_ndjson_and_as_sse() {
    let s = Server::memory();
    let addr = s.addr.clone();
    // A holder with a 1.5 s ttl, and a waiter streaming NDJSON behind it.
    let holder = thread::spawn(move || {
        curl(
            &addr,
            &[
                "--max-time",
                "20",
                "http://ADDR/v1/lock/wait",
                "-d",
                r#"{"key":"s","ttlMs":"1500"}"#,
            ],
        )
    });
    thread::sleep(Duration::from_millis(300));
    let addr = s.addr.clone();
    let sse = thread::spawn(move || {
        curl(
            &addr,
            &[
                "-N",
                "--max-time",
                "20",
                "-H",
                "Accept: text/event-stream",
                "http://ADDR/v1/lock/wait",
                "-d",
                r#"{"key":"s","ttl_ms":"500"}"#,
            ],
        )
    });
    let holder = holder.join().unwrap();
    let lines: Vec<Value> = holder.body.lines().map(json).collect();
    assert_eq!(lines.len(), 2, "{holder:?}");
    assert_eq!(lines[0]["result"]["acquired"]["index"], "1");
    assert_eq!(lines[1]["result"]["ended"]["reason"], "END_REASON_EXPIRED");

    let sse = sse.join().unwrap();
    assert!(sse.content_type.starts_with("text/event-stream"), "{sse:?}");
    let data: Vec<Value> = sse
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(json)
        .collect();
    assert_eq!(data.len(), 3, "{sse:?}");
    assert_eq!(data[0]["queued"]["index"], "2");
    assert_eq!(data[1]["acquired"]["index"], "2");
    assert_eq!(data[2]["ended"]["reason"], "END_REASON_EXPIRED");
}

#[test]
fn errors_use_grpc_gateway_codes_and_statuses() {
    let s = Server::memory();
    let r = curl(&s.addr, &["http://ADDR/v1/lock/get", "-d", "{}"]);
    assert_eq!(
        (r.status, json(&r.body)["code"].clone()),
        (400, Value::from(3)),
        "{r:?}"
    );
    let r = curl(
        &s.addr,
        &[
            "http://ADDR/v1/lock/release",
            "-d",
            r#"{"key":"x","index":"9"}"#,
        ],
    );
    assert_eq!(
        (r.status, json(&r.body)["code"].clone()),
        (404, Value::from(5)),
        "{r:?}"
    );
    let r = curl(&s.addr, &["http://ADDR/v1/lock/get", "-d", "{not json"]);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        json(&r.body)["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON")
    );
    // A wait that times out mid-stream ends with an error line.
    let r = curl(
        &s.addr,
        &[
            "--max-time",
            "5",
            "http://ADDR/v1/lock/wait",
            "-d",
            r#"{"key":"t","ttlMs":"0"}"#,
        ],
    );
    // The holder's stream stays open until curl gives up; the hold stays.
    assert!(r.body.contains("acquired"), "{r:?}");
    let r = curl(
        &s.addr,
        &[
            "http://ADDR/v1/lock/wait",
            "-d",
            r#"{"key":"t","timeoutMs":"300"}"#,
        ],
    );
    let lines: Vec<Value> = r.body.lines().map(json).collect();
    assert!(lines[0]["result"]["queued"].is_object(), "{r:?}");
    assert_eq!(lines[1]["error"]["code"], 4, "{r:?}");
}

#[test]
fn every_openapi_path_is_served() {
    let s = Server::memory();
    let r = curl(&s.addr, &["http://ADDR/v1/openapi.json"]);
    assert_eq!(r.status, 200);
    let doc = json(&r.body);
    let paths = doc["paths"].as_object().expect("paths");
    assert_eq!(paths.len(), 13);
    for path in paths.keys() {
        // An empty request: every RPC answers in JSON (an error for a
        // missing key), never the router's bare 404.
        let r = curl(
            &s.addr,
            &["--max-time", "2", &format!("http://ADDR{path}"), "-d", "{}"],
        );
        assert_ne!(r.status, 404, "{path}: {r:?}");
        assert!(r.content_type.starts_with("application/"), "{path}: {r:?}");
    }
    let r = curl(&s.addr, &["http://ADDR/v1/status"]);
    let v = json(&r.body);
    assert_eq!(v["backend"], "embedded");
    assert!(v["uptimeMs"].is_number());
}

#[test]
fn cors_only_with_the_flag() {
    let preflight = [
        "-X",
        "OPTIONS",
        "-H",
        "Origin: http://example.test",
        "-H",
        "Access-Control-Request-Method: POST",
        "http://ADDR/v1/lock/get",
    ];
    let plain = Server::memory();
    let r = curl(&plain.addr, &preflight);
    assert!(
        !r.headers
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{r:?}"
    );
    let r = curl(
        &plain.addr,
        &[
            "-H",
            "Origin: http://example.test",
            "http://ADDR/mod/v2/lock/x",
        ],
    );
    assert!(
        !r.headers
            .to_ascii_lowercase()
            .contains("access-control-allow-origin")
    );

    let any = Server::start(&["--memory", "--cors", "*"]);
    let r = curl(&any.addr, &preflight);
    let h = r.headers.to_ascii_lowercase();
    assert!(r.status < 300, "{r:?}");
    assert!(h.contains("access-control-allow-origin: *"), "{r:?}");
    assert!(h.contains("access-control-allow-methods"), "{r:?}");
    let r = curl(
        &any.addr,
        &[
            "-H",
            "Origin: http://example.test",
            "http://ADDR/mod/v2/lock/x",
        ],
    );
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("access-control-allow-origin: *")
    );

    let listed = Server::start(&["--memory", "--cors", "http://a.test,http://b.test"]);
    let r = curl(
        &listed.addr,
        &["-H", "Origin: http://b.test", "http://ADDR/mod/v2/lock/x"],
    );
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("access-control-allow-origin: http://b.test"),
        "{r:?}"
    );
    let r = curl(
        &listed.addr,
        &[
            "-H",
            "Origin: http://evil.test",
            "http://ADDR/mod/v2/lock/x",
        ],
    );
    assert!(
        !r.headers
            .to_ascii_lowercase()
            .contains("access-control-allow-origin")
    );
}

/// Lock.Check over the JSON gateway (moved here from the process contract
/// suite; the rule itself is checked on every backend in
/// tests/conformance): `POST /v1/lock/check`, status 200 either way.
#[tokio::test]
async fn check_answers_over_json() {
    let s = Server::memory();
    let mut c = s.lock().await;
    let (_held, index) = common::acquire(&mut c, "fence", "", 0).await;
    let check = |index: u64| {
        let body = format!(r#"{{"key":"fence","index":"{index}"}}"#);
        curl(
            &s.addr,
            &["-X", "POST", "-d", &body, "http://ADDR/v1/lock/check"],
        )
    };
    let r = check(index + 1);
    assert_eq!(r.status, 200, "{}", r.body);
    // proto3 JSON leaves out a false bool.
    assert!(
        !json(&r.body)["current"].as_bool().unwrap_or(false),
        "{}",
        r.body
    );
    let r = check(index);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = json(&r.body);
    assert_eq!(v["current"], Value::Bool(true), "{}", r.body);
    assert_eq!(v["holders"].as_array().map(Vec::len), Some(1), "{}", r.body);
}
