//! The etcd client options of `--backend etcd` against a real etcd: a user
//! with a password (and permissions on baton's prefix only), TLS with a
//! client certificate, and what a client sees when they are wrong.

mod common;

use std::time::Duration;

use baton::proto::v1::{self as pb, lock_client::LockClient, wait_event};
use common::{Server, etcd::Etcd};
use etcd_client::{Client, Permission};
use tonic::{Code, Streaming, transport::Channel};

fn wait_req(key: &str, ttl_ms: u64) -> pb::WaitRequest {
    pb::WaitRequest {
        key: key.into(),
        value: String::new(),
        ttl_ms,
        timeout_ms: None,
        ..Default::default()
    }
}

async fn acquire(c: &mut LockClient<Channel>, key: &str) -> (Streaming<pb::WaitEvent>, u64) {
    let mut s = c.wait(wait_req(key, 5_000)).await.unwrap().into_inner();
    let ev = tokio::time::timeout(Duration::from_secs(30), s.message())
        .await
        .expect("stalled")
        .unwrap()
        .unwrap()
        .event
        .unwrap();
    match ev {
        wait_event::Event::Acquired(a) => (s, a.index),
        other => panic!("expected acquired, got {other:?}"),
    }
}

/// A queue with a holder and a waiter, released: what every option must
/// carry (KV, transactions, leases, watches).
async fn exercise(server: &Server) {
    let mut c = server.lock().await;
    let (_h, first) = acquire(&mut c, "opt").await;
    let mut w = server.lock().await;
    let mut s = w.wait(wait_req("opt", 0)).await.unwrap().into_inner();
    let queued = s.message().await.unwrap().unwrap().event.unwrap();
    assert!(matches!(queued, wait_event::Event::Queued(_)), "{queued:?}");
    c.release(pb::ReleaseRequest {
        key: "opt".into(),
        target: Some(pb::release_request::Target::Index(first)),
    })
    .await
    .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), s.message())
        .await
        .expect("stalled")
        .unwrap()
        .unwrap()
        .event
        .unwrap();
    match next {
        wait_event::Event::Acquired(a) => assert!(a.index > first),
        other => panic!("expected acquired, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_a_password_and_rights_on_the_prefix_only() {
    let etcd = Etcd::start();
    let mut admin = Client::connect([etcd.url.as_str()], None).await.unwrap();
    admin.user_add("root", "root-pw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.role_add("baton").await.unwrap();
    admin
        .role_grant_permission("baton", Permission::read_write("/auth/").with_prefix())
        .await
        .unwrap();
    admin.user_add("baton", "baton-pw", None).await.unwrap();
    admin.user_grant_role("baton", "baton").await.unwrap();
    admin.auth_enable().await.unwrap();

    let good = Server::etcd(
        &etcd,
        "/auth/",
        &["--etcd-user", "baton", "--etcd-password", "baton-pw"],
    );
    exercise(&good).await;

    // A wrong password: requests fail with UNAVAILABLE saying why.
    let bad = Server::etcd(
        &etcd,
        "/auth/",
        &[
            "--etcd-user",
            "baton",
            "--etcd-password",
            "wrong",
            "--etcd-timeout-ms",
            "1500",
        ],
    );
    let mut c = bad.lock().await;
    let err = c.wait(wait_req("opt2", 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("authentication"), "{err:?}");

    // No rights outside the prefix: a clear UNAVAILABLE too.
    let outside = Server::etcd(
        &etcd,
        "/elsewhere/",
        &["--etcd-user", "baton", "--etcd-password", "baton-pw"],
    );
    let mut c = outside.lock().await;
    let err = c.wait(wait_req("opt3", 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("permission denied"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let etcd = Etcd::start_tls();
    let certs = etcd.certs().expect("certs").clone();
    let path = |p: &std::path::PathBuf| p.to_str().expect("utf-8 path").to_owned();
    let (ca, cert, key) = (
        path(&certs.ca),
        path(&certs.client_cert),
        path(&certs.client_key),
    );
    let server = Server::etcd(
        &etcd,
        "/tls/",
        &[
            "--etcd-ca-file",
            &ca,
            "--etcd-cert-file",
            &cert,
            "--etcd-key-file",
            &key,
        ],
    );
    exercise(&server).await;

    // Without a client certificate etcd refuses the connection.
    let anonymous = Server::etcd(
        &etcd,
        "/tls/",
        &["--etcd-ca-file", &ca, "--etcd-timeout-ms", "1500"],
    );
    let mut c = anonymous.lock().await;
    let err = c.wait(wait_req("tls2", 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

#[test]
fn flags_that_cannot_work_stop_the_server_at_start() {
    for (args, says) in [
        (
            vec![
                "--etcd-endpoints",
                "http://127.0.0.1:1",
                "--etcd-ca-file",
                "/nonexistent/ca.pem",
            ],
            "cannot read /nonexistent/ca.pem",
        ),
        (
            vec![
                "--etcd-endpoints",
                "http://127.0.0.1:1",
                "--etcd-password",
                "x",
            ],
            "--etcd-password needs --etcd-user",
        ),
        (vec!["--etcd-endpoints", "not a url"], "bad etcd endpoint"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["--listen", "127.0.0.1:0", "--backend", "etcd"])
            .args(&args)
            .output()
            .expect("run baton");
        assert!(!out.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
