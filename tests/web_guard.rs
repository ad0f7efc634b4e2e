//! Issue 12: a web page must not be able to change anything on a loopback
//! baton. Real `curl` against a real server with the headers a browser
//! sends: forged `Origin` and `Sec-Fetch-Site`, foreign `Host` (DNS
//! rebinding), and state-changing routes by GET and HEAD.

mod common;

use common::{Reply, Server, curl};
use serde_json::Value;

fn json(r: &Reply) -> Value {
    serde_json::from_str(r.body.trim_end()).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

/// The holder's index of `key` through the gateway (`None`: free).
fn holder(s: &Server, key: &str) -> Option<String> {
    let r = curl(
        &s.addr,
        &[
            "http://ADDR/v1/lock/get",
            "-d",
            &format!(r#"{{"key":"{key}"}}"#),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    json(&r)["holder"]["index"].as_str().map(str::to_owned)
}

/// Takes `key` for a minute by `/mod/v2`; returns the index.
fn take(s: &Server, key: &str) -> String {
    let r = curl(
        &s.addr,
        &[
            "-X",
            "POST",
            &format!("http://ADDR/mod/v2/lock/{key}?ttl=60"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

/// Every state-changing request a web page could make, as curl arguments
/// for a held `key` with index `index`.
fn mutations(key: &str, index: &str) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let release = format!(r#"{{"key":"{key}","index":"{index}"}}"#);
    vec![
        // text/plain and form POSTs to the gateway (simple requests: no
        // preflight in a browser).
        v(&[
            "-H",
            "Content-Type: text/plain",
            "http://ADDR/v1/lock/release",
            "-d",
            &release,
        ]),
        v(&["http://ADDR/v1/lock/release", "-d", &release]),
        v(&[
            "-H",
            "Content-Type: text/plain",
            "http://ADDR/v1/election/resign",
            "-d",
            &format!(r#"{{"election":"{key}","name":""}}"#),
        ]),
        v(&[
            "-H",
            "Content-Type: text/plain",
            "http://ADDR/v1/lock/renew",
            "-d",
            &format!(r#"{{"key":"{key}","index":"{index}","ttlMs":"1"}}"#),
        ]),
        // /mod/v2 by form POST, DELETE and PUT.
        v(&[
            "-X",
            "DELETE",
            &format!("http://ADDR/mod/v2/lock/{key}?index={index}"),
        ]),
        v(&[
            "-X",
            "PUT",
            &format!("http://ADDR/mod/v2/lock/{key}?ttl=0&index={index}"),
        ]),
        v(&[
            "-X",
            "POST",
            &format!("http://ADDR/mod/v2/lock/{key}-other?ttl=60&timeout=0"),
        ]),
        v(&[
            "-X",
            "POST",
            "http://ADDR/v1/lock/wait",
            "-d",
            &format!(r#"{{"key":"{key}-other2","ttlMs":"60000","timeoutMs":"0"}}"#),
        ]),
    ]
}

#[test]
fn foreign_origins_are_refused_before_they_act() {
    let s = Server::memory();
    let key = "guarded";
    let index = take(&s, key);
    let forged: &[&[&str]] = &[
        &["-H", "Origin: http://attacker.example"],
        &["-H", "Origin: null"],
        &["-H", "Origin: http://localhost.attacker.example"],
        // Right host, wrong port or scheme: another origin.
        &["-H", "Origin: http://127.0.0.1:1"],
        &["-H", "Origin: https://ADDR"],
        &["-H", "Sec-Fetch-Site: cross-site"],
        &["-H", "Sec-Fetch-Site: same-site"],
        &[
            "-H",
            "Origin: http://attacker.example",
            "-H",
            "Sec-Fetch-Site: same-origin",
        ],
    ];
    for headers in forged {
        for m in mutations(key, &index) {
            let mut args: Vec<&str> = headers.to_vec();
            args.extend(m.iter().map(String::as_str));
            let r = curl(&s.addr, &args);
            assert_eq!(r.status, 403, "{args:?}: {r:?}");
            let body = json(&r);
            if m.iter().any(|a| a.contains("/mod/v2/")) {
                // etcd's error body.
                assert_eq!(body["errorCode"], 110, "{r:?}");
                assert!(r.headers.to_ascii_lowercase().contains("x-etcd-index: 0"));
            } else {
                assert_eq!(body["code"], 7, "{r:?}");
            }
        }
        // Reads are refused too (the page must not read state either).
        let mut args: Vec<&str> = headers.to_vec();
        args.push("http://ADDR/v1/status");
        assert_eq!(curl(&s.addr, &args).status, 403, "{args:?}");
    }
    // Nothing changed: same holder, and the other keys were never taken.
    assert_eq!(holder(&s, key).as_deref(), Some(index.as_str()));
    assert_eq!(holder(&s, "guarded-other"), None);
    assert_eq!(holder(&s, "guarded-other2"), None);
}

#[test]
fn own_origin_and_plain_clients_are_served() {
    let s = Server::memory();
    let key = "own";
    let index = take(&s, key);
    // The dashboard: Origin = its own origin, Sec-Fetch-Site: same-origin.
    let own = format!("Origin: http://{}", s.addr);
    let r = curl(
        &s.addr,
        &[
            "-H",
            &own,
            "-H",
            "Sec-Fetch-Site: same-origin",
            "http://ADDR/v1/status",
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    // Same origin, spelled with localhost: a browser on http://localhost:PORT.
    let port = s.addr.rsplit(':').next().unwrap_or_default();
    let r = curl(
        &s.addr,
        &[
            "-H",
            &format!("Host: localhost:{port}"),
            "-H",
            &format!("Origin: http://LOCALHOST:{port}"),
            "http://ADDR/v1/lock/release",
            "-d",
            &format!(r#"{{"key":"{key}","index":"{index}"}}"#),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(holder(&s, key), None);
    // A user typing the URL: Sec-Fetch-Site: none.
    let r = curl(
        &s.addr,
        &["-H", "Sec-Fetch-Site: none", "http://ADDR/mod/dashboard/"],
    );
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn listed_cors_origins_work_preflight_included() {
    let s = Server::start(&["--memory", "--cors", "http://app.example"]);
    let r = curl(
        &s.addr,
        &[
            "-X",
            "OPTIONS",
            "-H",
            "Origin: http://app.example",
            "-H",
            "Access-Control-Request-Method: POST",
            "-H",
            "Sec-Fetch-Site: cross-site",
            "http://ADDR/v1/lock/wait",
        ],
    );
    assert!((200..300).contains(&r.status), "{r:?}");
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("access-control-allow-origin: http://app.example"),
        "{r:?}"
    );
    let r = curl(
        &s.addr,
        &[
            "-H",
            "Origin: http://app.example",
            "-H",
            "Sec-Fetch-Site: cross-site",
            "-X",
            "POST",
            "http://ADDR/mod/v2/lock/cors?ttl=60",
        ],
    );
    assert_eq!((r.status, r.body.as_str()), (200, "1"), "{r:?}");
    // Another origin is still refused, preflight included.
    let r = curl(
        &s.addr,
        &[
            "-X",
            "OPTIONS",
            "-H",
            "Origin: http://other.example",
            "-H",
            "Access-Control-Request-Method: POST",
            "http://ADDR/v1/lock/wait",
        ],
    );
    assert_eq!(r.status, 403, "{r:?}");
}

#[test]
fn state_changing_routes_refuse_get_and_head() {
    let s = Server::memory();
    let key = "methods";
    let index = take(&s, key);
    let mutating = [
        format!("/v1/lock/release?key={key}&index={index}"),
        format!("/v1/lock/renew?key={key}&index={index}&ttlMs=1"),
        format!("/v1/lock/wait?key={key}&ttlMs=0"),
        format!("/v1/lock/wait?key={key}-new&ttlMs=60000&timeoutMs=0"),
        format!("/v1/election/campaign?election={key}-e&name=n&ttlMs=60000"),
        format!("/v1/election/resign?election={key}&name="),
    ];
    for path in &mutating {
        let url = format!("http://ADDR{path}");
        for method in [
            &["-G"][..],
            &["-I"][..],
            &["-X", "PUT"][..],
            &["-X", "DELETE"][..],
        ] {
            let mut args = method.to_vec();
            args.push(&url);
            let r = curl(&s.addr, &args);
            assert_eq!(r.status, 405, "{args:?}: {r:?}");
            let allow = r
                .headers
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("allow: ")
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| panic!("no Allow header: {r:?}"));
            assert_eq!(allow.trim(), "post", "{r:?}");
            if method != ["-I"] {
                assert_eq!(json(&r)["code"], 12, "the gateway's error body: {r:?}");
            }
        }
    }
    assert_eq!(holder(&s, key).as_deref(), Some(index.as_str()));
    assert_eq!(holder(&s, "methods-new"), None);
    assert_eq!(holder(&s, "methods-e"), None);
    // The reads keep GET, and query values are typed by field: a key
    // spelled "true" is a string, as by POST; `prefix=true` is a bool.
    let r = curl(&s.addr, &["http://ADDR/v1/lock/get?key=true"]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(json(&r)["key"], "true");
    let r = curl(&s.addr, &["http://ADDR/v1/lock/list?prefix=true"]);
    assert_eq!(r.status, 200, "{r:?}");
    let r = curl(&s.addr, &["http://ADDR/v1/election/leader?election=false"]);
    assert_eq!(r.status, 200, "{r:?}");
    let r = curl(
        &s.addr,
        &[
            "--max-time",
            "1",
            "http://ADDR/v1/lock/watch?key=true&prefix=false",
        ],
    );
    assert!(r.content_type.starts_with("application/x-ndjson"), "{r:?}");
    // /mod/v2's GET reads; its other methods keep working, and an unknown
    // method is etcd's JSON error with Allow.
    let r = curl(
        &s.addr,
        &[&format!("http://ADDR/mod/v2/lock/{key}?field=index")],
    );
    assert_eq!((r.status, r.body.as_str()), (200, index.as_str()), "{r:?}");
    let r = curl(
        &s.addr,
        &["-X", "PATCH", &format!("http://ADDR/mod/v2/lock/{key}")],
    );
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(json(&r)["errorCode"], 210);
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("allow: get, head, post, put, delete"),
        "{r:?}"
    );
    let r = curl(
        &s.addr,
        &["-X", "POST", "http://ADDR/mod/v2/leader/x?ttl=1&name=a"],
    );
    assert_eq!(r.status, 405, "{r:?}");
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("allow: get, head, put, delete")
    );
    for path in ["/mod/v2", "/mod/v2/", "/mod/v2/keys/x", "/mod/v2/lock/"] {
        let r = curl(&s.addr, &[&format!("http://ADDR{path}")]);
        assert_eq!(r.status, 404, "{path}: {r:?}");
        assert_eq!(json(&r)["errorCode"], 100, "{r:?}");
    }
    // A body past the limit: 413 with etcd's body.
    let big = "value=".to_owned() + &"a".repeat(3 << 20);
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), big).expect("write");
    let r = curl(
        &s.addr,
        &[
            "-X",
            "POST",
            "http://ADDR/mod/v2/lock/big?ttl=1",
            "--data-binary",
            &format!("@{}", file.path().display()),
        ],
    );
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(json(&r)["errorCode"], 210);
    assert_eq!(json(&r)["cause"], "Acquire");
}

#[test]
fn foreign_hosts_are_misdirected() {
    let s = Server::memory();
    let port = s.addr.rsplit(':').next().unwrap_or_default().to_owned();
    for host in [
        "attacker.example",
        &format!("attacker.example:{port}"),
        "127.0.0.2",
        "10.0.0.1:80",
    ] {
        for path in ["/v1/status", "/mod/dashboard/", "/mod/v2/lock/x", "/health"] {
            let r = curl(
                &s.addr,
                &[
                    "-H",
                    &format!("Host: {host}"),
                    &format!("http://ADDR{path}"),
                ],
            );
            assert_eq!(r.status, 421, "{host} {path}: {r:?}");
            assert_eq!(r.body.lines().count(), 1, "one line: {r:?}");
        }
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_owned(),
    ] {
        let r = curl(
            &s.addr,
            &["-H", &format!("Host: {host}"), "http://ADDR/v1/status"],
        );
        assert_eq!(r.status, 200, "{host}: {r:?}");
    }
    // --allowed-hosts names them; * allows any.
    let s = Server::start(&["--memory", "--allowed-hosts", "baton.internal"]);
    let ok = curl(
        &s.addr,
        &["-H", "Host: baton.internal:1", "http://ADDR/v1/status"],
    );
    assert_eq!(ok.status, 200, "{ok:?}");
    let no = curl(&s.addr, &["-H", "Host: localhost", "http://ADDR/v1/status"]);
    assert_eq!(no.status, 421, "{no:?}");
    let s = Server::start(&["--memory", "--allowed-hosts", "*"]);
    let ok = curl(
        &s.addr,
        &["-H", "Host: anything.example", "http://ADDR/v1/status"],
    );
    assert_eq!(ok.status, 200, "{ok:?}");
}

#[tokio::test]
async fn grpc_clients_by_ip_and_by_localhost_are_served() {
    let s = Server::memory();
    let mut by_ip = s.lock().await;
    common::view(&mut by_ip, "g").await;
    let port = s.addr.rsplit(':').next().unwrap_or_default();
    let channel = tonic::transport::Channel::from_shared(format!("http://localhost:{port}"))
        .expect("url")
        .connect()
        .await
        .expect("connect by localhost");
    let mut by_name = baton::proto::v1::lock_client::LockClient::new(channel);
    common::view(&mut by_name, "g").await;
    // And an authority that is not allowed is refused.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", s.addr))
        .expect("url")
        .origin(
            format!("http://attacker.example:{port}")
                .parse()
                .expect("origin"),
        )
        .connect()
        .await
        .expect("connect");
    let mut foreign = baton::proto::v1::lock_client::LockClient::new(channel);
    let refused = foreign
        .get(baton::proto::v1::GetRequest { key: "g".into() })
        .await;
    let status = refused.expect_err("a foreign authority must be refused");
    assert!(status.message().contains("421"), "{status:?}");
}

#[test]
fn grpcurl_by_ip_and_by_localhost_is_served_and_a_foreign_authority_is_not() {
    let s = Server::memory();
    let port = s.addr.rsplit(':').next().unwrap_or_default().to_owned();
    let grpcurl = |args: &[&str]| {
        std::process::Command::new("grpcurl")
            .args(args)
            .output()
            .expect("grpcurl must be installed (scripts/install-test-deps.sh installs it)")
    };
    for target in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let out = grpcurl(&["-plaintext", &target, "list"]);
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(listed.contains("baton.v1.Lock"), "{target}: {out:?}");
    }
    let out = grpcurl(&[
        "-plaintext",
        "-authority",
        "attacker.example",
        &s.addr,
        "list",
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("421"),
        "{out:?}"
    );
}
