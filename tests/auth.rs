//! `--auth-file` against a real server, on every surface: gRPC (tonic and
//! grpcurl), the JSON gateway with Bearer, `/mod/v2` with HTTP Basic,
//! `/metrics`, the CLI and the Rust client; refusals with their codes, List
//! and Watch filtered to what the token may read, and a SIGHUP reload that
//! adds and removes tokens while a hold stays held, and refuses a bad file.

mod common;

use std::{path::Path, process::Command, time::Duration};

use baton::client::{Client, ClientError};
use baton::proto::v1::{
    self as pb, election_client::ElectionClient, lock_client::LockClient, release_request,
    wait_event,
};
use common::{
    Server,
    auth::{basic, bearer, get, req, write_private},
    curl, eventually,
};
use tonic::{Code, transport::Channel};

const DEPLOYER: &str = "deployer-secret-0001";
const READER: &str = "reader-secret-000001";
const OPS: &str = "ops-secret-000000001";
const PROM: &str = "prom-secret-00000001";
const NEWBIE: &str = "newbie-secret-000001";

/// sha256 of PROM: the file need not hold the scraper's secret.
fn prom_sha256() -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("printf %s {PROM} | sha256sum")])
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)[..64].to_owned()
}

fn auth_file(extra: &str) -> String {
    format!(
        r#"# tokens for the test
[[token]]
name = "deployer"
secret = "{DEPLOYER}"
prefixes = ["jobs/", "leader/web"]
rights = ["read", "write"]

[[token]]
name = "reader"
secret = "{READER}"
prefixes = [""]
rights = ["read"]

[[token]]
name = "ops"
secret = "{OPS}"
prefixes = [""]
rights = ["read", "write"]

[[token]]
name = "prom"
secret_sha256 = "{}"
rights = ["metrics"]
{extra}"#,
        prom_sha256()
    )
}

struct Authed {
    server: Server,
    log: common::Log,
    file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn start() -> Authed {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("auth.toml");
    write_private(&file, &auth_file(""));
    let (server, log) = Server::start_logged(&["--memory", "--auth-file", file.to_str().unwrap()]);
    Authed {
        server,
        log,
        file,
        _dir: dir,
    }
}

/// Takes `key` through gRPC as `secret`; returns the stream and the index.
async fn hold(
    c: &mut LockClient<Channel>,
    key: &str,
    secret: &str,
) -> (tonic::Streaming<pb::WaitEvent>, u64) {
    let mut s = c
        .wait(req(common::wait_req(key, "", 0, None), Some(secret)))
        .await
        .expect("wait")
        .into_inner();
    match common::next_event(&mut s).await.expect("event") {
        wait_event::Event::Acquired(a) => (s, a.index),
        other => panic!("expected acquired, got {other:?}"),
    }
}

#[tokio::test]
async fn grpc_refuses_missing_unknown_and_out_of_bounds_tokens() {
    let a = start();
    let mut lock = a.server.lock().await;
    let mut election = ElectionClient::new(a.server.channel().await);

    let none = get(&mut lock, "jobs/a", None).await.unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated, "{none:?}");
    let wrong = get(&mut lock, "jobs/a", Some("not-a-token-at-all-x"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    let outside = get(&mut lock, "web/a", Some(DEPLOYER)).await.unwrap_err();
    assert_eq!(outside.code(), Code::PermissionDenied, "{outside:?}");

    // Within its prefixes the deployer may lock; the reader may look.
    let (_held, index) = hold(&mut lock, "jobs/a", DEPLOYER).await;
    let seen = get(&mut lock, "jobs/a", Some(READER))
        .await
        .expect("reader reads");
    assert_eq!(seen.holder.map(|h| h.index), Some(index));

    // A read-only token, each write RPC.
    let wait = lock
        .wait(req(common::wait_req("jobs/b", "", 0, None), Some(READER)))
        .await
        .unwrap_err();
    let renew = lock
        .renew(req(
            common::renew_index("jobs/a", index, 1000),
            Some(READER),
        ))
        .await
        .unwrap_err();
    let release = lock
        .release(req(
            pb::ReleaseRequest {
                key: "jobs/a".into(),
                target: Some(release_request::Target::Index(index)),
            },
            Some(READER),
        ))
        .await
        .unwrap_err();
    let campaign = election
        .campaign(req(
            pb::CampaignRequest {
                election: "leader/web".into(),
                name: "r".into(),
                ttl_ms: 0,
                timeout_ms: None,
                ..Default::default()
            },
            Some(READER),
        ))
        .await
        .unwrap_err();
    let resign = election
        .resign(req(
            pb::ResignRequest {
                election: "leader/web".into(),
                name: "r".into(),
            },
            Some(READER),
        ))
        .await
        .unwrap_err();
    for (rpc, e) in [
        ("Wait", wait),
        ("Renew", renew),
        ("Release", release),
        ("Campaign", campaign),
        ("Resign", resign),
    ] {
        assert_eq!(e.code(), Code::PermissionDenied, "{rpc}: {e:?}");
        assert!(e.message().contains("reader"), "{rpc}: {e:?}");
    }
    // The hold is untouched.
    let seen = get(&mut lock, "jobs/a", Some(OPS)).await.expect("get");
    assert_eq!(seen.holder.map(|h| h.index), Some(index));

    // Each refusal is logged with the token, the RPC and the key.
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.log
                .has(&["refused", "reader", "baton.v1.Lock/Release", "jobs/a"])
        })
        .await,
        "no audit line for the reader's release"
    );
}

#[tokio::test]
async fn check_is_a_read_refused_without_a_token_or_outside_the_prefixes() {
    let a = start();
    let mut c = a.server.lock().await;
    let (_held, index) = hold(&mut c, "jobs/fenced", DEPLOYER).await;
    let check = |key: &str, secret| {
        let mut c = c.clone();
        let message = pb::CheckRequest {
            key: key.into(),
            index,
        };
        async move {
            c.check(req(message, secret))
                .await
                .map(tonic::Response::into_inner)
        }
    };
    // The read right is enough: a resource server needs no write right.
    assert!(
        check("jobs/fenced", Some(READER))
            .await
            .expect("reader")
            .current
    );
    assert!(
        check("jobs/fenced", Some(DEPLOYER))
            .await
            .expect("deployer")
            .current
    );
    let err = check("jobs/fenced", None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = check("other/fenced", Some(DEPLOYER)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = check("jobs/fenced", Some(PROM)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
}

#[tokio::test]
async fn health_and_reflection_stay_open_and_grpcurl_sends_the_token() {
    let a = start();
    let mut health = tonic_health::pb::health_client::HealthClient::new(a.server.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health needs no token")
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let grpcurl = |args: &[&str]| {
        let out = Command::new("grpcurl")
            .arg("-plaintext")
            .args(args)
            .output()
            .expect("grpcurl must be installed (scripts/install-test-deps.sh installs it)");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = grpcurl(&[&a.server.addr, "list"]);
    assert!(ok && out.contains("baton.v1.Lock"), "reflection: {out}");
    let (ok, out) = grpcurl(&[
        "-d",
        r#"{"key":"jobs/g"}"#,
        &a.server.addr,
        "baton.v1.Lock/Get",
    ]);
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    let bearer_header = format!("authorization: Bearer {DEPLOYER}");
    let (ok, out) = grpcurl(&[
        "-H",
        &bearer_header,
        "-d",
        r#"{"key":"jobs/g"}"#,
        &a.server.addr,
        "baton.v1.Lock/Get",
    ]);
    assert!(ok && out.contains("jobs/g"), "{out}");
    let (ok, out) = grpcurl(&[
        "-H",
        &bearer_header,
        "-d",
        r#"{"key":"web/g"}"#,
        &a.server.addr,
        "baton.v1.Lock/Get",
    ]);
    assert!(!ok && out.contains("PermissionDenied"), "{out}");
}

#[tokio::test]
async fn modv2_takes_http_basic_and_answers_etcd_error_110() {
    let a = start();
    let addr = &a.server.addr;
    let r = curl(
        addr,
        &["-X", "POST", "http://ADDR/mod/v2/lock/jobs/m?ttl=60"],
    );
    assert_eq!(r.status, 401, "{r:?}");
    let body: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(body["errorCode"], 110, "{r:?}");
    assert_eq!(body["message"], "The request requires user authentication");
    assert_eq!(body["cause"], "Acquire");
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{}",
        r.headers
    );

    let wrong = basic(
        addr,
        "deployer:wrong-secret-000000",
        "GET",
        "http://ADDR/mod/v2/lock/jobs/m",
    );
    assert_eq!(wrong.status, 401, "{wrong:?}");

    let user = format!("deployer:{DEPLOYER}");
    let r = basic(addr, &user, "POST", "http://ADDR/mod/v2/lock/jobs/m?ttl=60");
    assert_eq!(r.status, 200, "{r:?}");
    let index: u64 = r.body.parse().expect("index");
    let r = basic(
        addr,
        &user,
        "GET",
        "http://ADDR/mod/v2/lock/jobs/m?field=index",
    );
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, index.to_string().as_str())
    );
    // Bearer works here too.
    let r = bearer(
        addr,
        READER,
        "GET",
        "http://ADDR/mod/v2/lock/jobs/m?field=index",
    );
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, index.to_string().as_str())
    );

    // Outside the prefixes, or a right the token lacks: 403, code 110.
    let r = basic(addr, &user, "POST", "http://ADDR/mod/v2/lock/web/m?ttl=60");
    assert_eq!(r.status, 403, "{r:?}");
    let body: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(body["errorCode"], 110, "{r:?}");
    let reader = format!("reader:{READER}");
    let r = basic(
        addr,
        &reader,
        "DELETE",
        &format!("http://ADDR/mod/v2/lock/jobs/m?index={index}"),
    );
    assert_eq!(r.status, 403, "{r:?}");
    let r = basic(
        addr,
        &reader,
        "PUT",
        "http://ADDR/mod/v2/leader/leader/web?ttl=5&name=x",
    );
    assert_eq!(r.status, 403, "{r:?}");
    // The deployer's prefix "leader/web" covers the election.
    let r = basic(
        addr,
        &user,
        "PUT",
        "http://ADDR/mod/v2/leader/leader/web?ttl=5&name=x",
    );
    assert_eq!(r.status, 200, "{r:?}");
}

/// The keys of one `/v1/lock/list` page, in order.
fn page_keys(page: &serde_json::Value) -> Vec<&str> {
    page["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn json_gateway_takes_bearer_and_filters_lists() {
    let a = start();
    let addr = &a.server.addr;
    for key in ["jobs/1", "web/1", "jobs/2"] {
        let r = bearer(
            addr,
            OPS,
            "POST",
            &format!("http://ADDR/mod/v2/lock/{key}?ttl=60"),
        );
        assert_eq!(r.status, 200, "{r:?}");
    }
    let r = curl(addr, &["http://ADDR/v1/lock/list"]);
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{}",
        r.headers
    );
    let body: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(body["code"], Code::Unauthenticated as i32);
    // Basic is for /mod/v2 only.
    let basic_user = format!("deployer:{DEPLOYER}");
    let r = basic(addr, &basic_user, "GET", "http://ADDR/v1/lock/list");
    assert_eq!(r.status, 401, "{r:?}");

    let r = bearer(addr, DEPLOYER, "GET", "http://ADDR/v1/lock/list?pageSize=1");
    assert_eq!(r.status, 200, "{r:?}");
    let page: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    let keys = page_keys(&page);
    assert_eq!(keys, ["jobs/1"], "{page}");
    let token = page["nextPageToken"].as_str().unwrap();
    let r = bearer(
        addr,
        DEPLOYER,
        "GET",
        &format!("http://ADDR/v1/lock/list?pageSize=1&pageToken={token}"),
    );
    let page: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    let keys = page_keys(&page);
    assert_eq!(keys, ["jobs/2"], "web/1 is skipped: {page}");
    assert_eq!(
        page["nextPageToken"].as_str().unwrap_or_default(),
        "",
        "{page}"
    );
    // A prefix the token has nothing under: 403.
    let r = bearer(
        addr,
        DEPLOYER,
        "GET",
        "http://ADDR/v1/lock/list?prefix=web/",
    );
    assert_eq!(r.status, 403, "{r:?}");
    // The reader sees every key.
    let r = bearer(addr, READER, "GET", "http://ADDR/v1/lock/list");
    let page: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(page["keys"].as_array().unwrap().len(), 3, "{page}");
    // A write through the gateway as a read-only token: 403.
    let r = curl(
        addr,
        &[
            "-H",
            &format!("Authorization: Bearer {READER}"),
            "-d",
            r#"{"key":"jobs/1","index":"1"}"#,
            "http://ADDR/v1/lock/release",
        ],
    );
    assert_eq!(r.status, 403, "{r:?}");
}

#[tokio::test]
async fn a_prefix_watch_shows_only_readable_keys() {
    let a = start();
    let mut lock = a.server.lock().await;
    let mut events = lock
        .watch(req(
            pb::WatchRequest {
                key: String::new(),
                prefix: true,
            },
            Some(DEPLOYER),
        ))
        .await
        .expect("watch")
        .into_inner();
    let denied = lock
        .watch(req(
            pb::WatchRequest {
                key: "web/".into(),
                prefix: true,
            },
            Some(DEPLOYER),
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let (_w, _) = hold(&mut lock, "web/w", OPS).await;
    let (_j, j) = hold(&mut lock, "jobs/w", OPS).await;
    let first = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("watch stalled")
        .expect("watch")
        .expect("an event");
    assert_eq!(
        (first.key.as_str(), first.index),
        ("jobs/w", j),
        "web/w must not show"
    );
}

#[tokio::test]
async fn metrics_need_the_metrics_right_and_count_refusals() {
    let a = start();
    let addr = &a.server.addr;
    assert_eq!(curl(addr, &["http://ADDR/health"]).status, 200);
    let r = curl(addr, &["http://ADDR/metrics"]);
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{}",
        r.headers
    );
    let r = bearer(addr, DEPLOYER, "GET", "http://ADDR/metrics");
    assert_eq!(r.status, 403, "{r:?}");
    let r = bearer(addr, READER, "POST", "http://ADDR/mod/v2/lock/jobs/x?ttl=1");
    assert_eq!(r.status, 403, "{r:?}");
    // A name only claimed (HTTP Basic, wrong secret) mints no label value.
    let r = basic(
        addr,
        "made-up-name:made-up-secret-0000",
        "GET",
        "http://ADDR/mod/v2/lock/jobs/x",
    );
    assert_eq!(r.status, 401, "{r:?}");
    let r = bearer(addr, PROM, "GET", "http://ADDR/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    for line in [
        r#"baton_auth_refusals_total{service="http",method="/metrics",reason="unauthenticated",token=""} 1"#,
        r#"baton_auth_refusals_total{service="http",method="/metrics",reason="permission_denied",token="deployer"} 1"#,
        r#"baton_auth_refusals_total{service="baton.v1.Lock",method="Wait",reason="permission_denied",token="reader"} 1"#,
    ] {
        assert!(
            r.body.lines().any(|l| l == line),
            "no {line} in\n{}",
            r.body
        );
    }
    assert!(!r.body.contains("made-up-name"), "{}", r.body);
}

#[tokio::test]
async fn sighup_reloads_tokens_keeps_holds_and_refuses_a_bad_file() {
    let a = start();
    let mut lock = a.server.lock().await;
    let (mut held, index) = hold(&mut lock, "jobs/h", DEPLOYER).await;
    // Streams open before the reload: the deployer's (removed) and the
    // reader's (unchanged).
    let mut deployer_watch = lock
        .watch(req(
            pb::WatchRequest {
                key: "jobs/".into(),
                prefix: true,
            },
            Some(DEPLOYER),
        ))
        .await
        .expect("watch")
        .into_inner();
    let mut reader_watch = lock
        .watch(req(
            pb::WatchRequest {
                key: "jobs/".into(),
                prefix: true,
            },
            Some(READER),
        ))
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(
        get(&mut lock, "jobs/h", Some(NEWBIE))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    // Remove the deployer, add the newbie.
    let without_deployer = auth_file(&format!(
        "\n[[token]]\nname = \"newbie\"\nsecret = \"{NEWBIE}\"\nprefixes = [\"jobs/\"]\nrights = [\"read\"]\n"
    ))
    .replace(&format!("name = \"deployer\"\nsecret = \"{DEPLOYER}\""), "name = \"gone\"\nsecret = \"gone-secret-00000000001\"");
    write_private(&a.file, &without_deployer);
    a.server.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || async {
            let mut l = lock.clone();
            get(&mut l, "jobs/h", Some(NEWBIE)).await.is_ok()
        })
        .await,
        "the new token was not loaded"
    );
    assert_eq!(
        get(&mut lock, "jobs/h", Some(DEPLOYER))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    // The removed token's streams end, UNAUTHENTICATED...
    for (what, s) in [
        ("watch", deployer_watch.message().await.map(|_| ())),
        ("wait", held.message().await.map(|_| ())),
    ] {
        let e = s.expect_err(what);
        assert_eq!(e.code(), Code::Unauthenticated, "{what}: {e:?}");
    }
    // ...but its hold stays held (a hold lives by its ttl alone).
    let seen = get(&mut lock, "jobs/h", Some(NEWBIE)).await.expect("get");
    assert_eq!(seen.holder.map(|h| h.index), Some(index));
    // An unchanged token's stream goes on.
    let (_other, other) = hold(&mut lock, "jobs/after-reload", OPS).await;
    let ev = tokio::time::timeout(Duration::from_secs(10), reader_watch.message())
        .await
        .expect("the reader's watch stalled")
        .expect("the reader's watch goes on")
        .expect("an event");
    assert_eq!((ev.key.as_str(), ev.index), ("jobs/after-reload", other));

    // A bad file (line 3) is refused, with its line; the rules stay.
    write_private(
        &a.file,
        "[[token]]\nname = \"x\"\nsecret = \"short\"\nrights = [\"read\"]\n",
    );
    a.server.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.log.has(&["auth file refused", "line 3"])
        })
        .await,
        "no message naming the bad line"
    );
    get(&mut lock, "jobs/h", Some(NEWBIE))
        .await
        .expect("the old rules stay in force");
}

#[tokio::test]
async fn a_world_readable_file_is_warned_about_and_a_bad_one_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.toml");
    std::fs::write(&file, auth_file("")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (_server, log) = Server::start_logged(&["--memory", "--auth-file", file.to_str().unwrap()]);
    assert!(
        eventually(Duration::from_secs(5), || async {
            log.has(&["readable by other users"])
        })
        .await,
        "no warning for a 0644 auth file"
    );

    std::fs::write(&file, "[[token]]\nname = \"a\"\nrights = [\"read\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "--memory",
            "--listen",
            "127.0.0.1:0",
            "--auth-file",
            file.to_str().unwrap(),
        ])
        .output()
        .expect("run baton");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("line 1") && err.contains("secret"), "{err}");
}

#[tokio::test]
async fn the_rust_client_and_the_cli_send_a_token() {
    let a = start();
    let url = a.server.url.clone();
    let anonymous = Client::builder().endpoints([&url]).build().unwrap();
    match anonymous.status("jobs/c").await {
        Err(ClientError::Unauthenticated(_)) => {}
        other => panic!("expected unauthenticated, got {other:?}"),
    }
    let client = Client::builder()
        .endpoints([&url])
        .token(DEPLOYER)
        .connect()
        .await
        .expect("connect with a token");
    let guard = client
        .lock("jobs/c")
        .ttl(Duration::from_secs(30))
        .acquire()
        .await
        .expect("lock");
    let status = client.status("jobs/c").await.expect("status");
    assert_eq!(status.holder.map(|h| h.index), Some(guard.index()));
    match client.lock("web/c").timeout(Duration::ZERO).acquire().await {
        Err(ClientError::PermissionDenied(m)) => assert!(m.contains("deployer"), "{m}"),
        other => panic!("expected permission denied, got {other:?}"),
    }
    guard.release().await.expect("release");

    let baton = |envs: &[(&str, &str)], args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(args)
            .args(["--endpoint", &url])
            .env_remove("BATON_TOKEN")
            .envs(envs.iter().copied())
            .output()
            .expect("run baton");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = baton(&[], &["status", "jobs/c"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unauthenticated"), "{err}");
    let (code, err) = baton(&[], &["status", "jobs/c", "--token", READER]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = baton(&[("BATON_TOKEN", READER)], &["status", "jobs/c"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = baton(
        &[("BATON_TOKEN", READER)],
        &["release", "jobs/c", "--index", "1"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("permission denied"), "{err}");
}

#[test]
fn the_readme_example_file_is_a_valid_auth_file() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme.split_once("### Tokens").expect("a Tokens section").1;
    let example = section
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a toml block")
        .0;
    let tokens = baton::auth::file::parse(Path::new("README.md"), example).expect("it parses");
    let names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["deployer", "oncall", "prometheus"]);
}
