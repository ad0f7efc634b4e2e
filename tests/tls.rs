//! TLS on baton's listener: a real `baton --tls-cert-file/--tls-key-file`
//! with a throw-away CA, reached by curl (HTTP/1.1 and HTTP/2), by the Rust
//! client and by the `baton` client subcommands.

mod common;

use std::{path::Path, process::Command};

use baton::client::Client;
use common::{Server, curl, etcd::Certs};

const BATON: &str = env!("CARGO_BIN_EXE_baton");

fn tls_server(certs: &Certs) -> Server {
    Server::start(&[
        "--memory",
        "--tls-cert-file",
        &certs.server_cert.display().to_string(),
        "--tls-key-file",
        &certs.server_key.display().to_string(),
    ])
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn curl_speaks_http1_and_http2_over_tls_and_plain_http_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Certs::make(dir.path());
    let s = tls_server(&certs);
    assert!(s.url.starts_with("https://"), "{}", s.url);
    let ca = path(&certs.ca);

    let r = curl(
        &s.addr,
        &[
            "--cacert",
            &ca,
            "--http1.1",
            "-X",
            "POST",
            "https://ADDR/mod/v2/lock/t?ttl=10",
        ],
    );
    assert_eq!((r.status, r.body.as_str()), (200, "1"), "{r:?}");
    assert!(r.headers.starts_with("HTTP/1.1 200"), "{r:?}");

    // HTTP/2 by ALPN, as gRPC clients use it.
    let r = curl(
        &s.addr,
        &[
            "--cacert",
            &ca,
            "--http2",
            "https://ADDR/mod/v2/lock/t?field=index",
        ],
    );
    assert_eq!((r.status, r.body.as_str()), (200, "1"), "{r:?}");
    assert!(r.headers.starts_with("HTTP/2 200"), "{r:?}");

    // Without the CA curl refuses the certificate; plain HTTP gets nothing.
    let r = curl(&s.addr, &["https://ADDR/mod/v2/lock/t"]);
    assert_eq!(r.status, 0, "an unknown CA must fail verification: {r:?}");
    let r = curl(&s.addr, &["--max-time", "5", "http://ADDR/mod/v2/lock/t"]);
    assert_ne!(r.status, 200, "plain HTTP must not be served: {r:?}");

    // The server is unharmed by both.
    let r = curl(
        &s.addr,
        &["--cacert", &ca, "https://ADDR/mod/v2/lock/t?field=index"],
    );
    assert_eq!((r.status, r.body.as_str()), (200, "1"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_locks_over_tls_with_the_ca_and_fails_without_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Certs::make(dir.path());
    let s = tls_server(&certs);
    let pem = std::fs::read(&certs.ca).expect("read CA");

    let client = Client::builder()
        .endpoints([&s.url])
        .ca_certificate(pem)
        .connect()
        .await
        .expect("connect over TLS");
    let guard = client
        .lock("tls")
        .value("me")
        .acquire()
        .await
        .expect("lock");
    assert!(guard.index() > 0);
    let status = client.status("tls").await.expect("status");
    assert_eq!(status.holder.map(|h| h.index), Some(guard.index()));
    guard.release().await.expect("release");

    // The system's roots do not know the throw-away CA.
    let untrusted = Client::builder().endpoints([&s.url]).connect().await;
    assert!(untrusted.is_err(), "connected without trusting the CA");
}

#[test]
fn the_client_subcommands_take_a_ca_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Certs::make(dir.path());
    let s = tls_server(&certs);
    let out = Command::new(BATON)
        .args(["lock", "cli", "--endpoint", &s.url, "--ca-file"])
        .arg(&certs.ca)
        .args(["--", "sh", "-c", "echo held $BATON_INDEX"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run baton lock");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("held 1"), "{out:?}");

    let missing = dir.path().join("missing.pem");
    let out = Command::new(BATON)
        .args(["status", "cli", "--endpoint", &s.url, "--ca-file"])
        .arg(&missing)
        .output()
        .expect("run baton status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(&path(&missing)),
        "{out:?}"
    );
}

#[test]
fn unusable_certificate_files_stop_the_server_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Certs::make(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").expect("write");
    for (cert, key, named) in [
        (&garbage, &certs.server_key, &garbage),
        (&certs.server_cert, &garbage, &garbage),
        // A key that does not belong to the certificate.
        (&certs.server_cert, &certs.client_key, &certs.client_key),
    ] {
        let out = Command::new(BATON)
            .args(["--memory", "--listen", "127.0.0.1:0", "--tls-cert-file"])
            .arg(cert)
            .arg("--tls-key-file")
            .arg(key)
            .output()
            .expect("run baton");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(&path(named)),
            "cert {cert:?} key {key:?}: {out:?}"
        );
    }
    // A client CA file with no certificate in it.
    let out = Command::new(BATON)
        .args(["--memory", "--listen", "127.0.0.1:0", "--tls-cert-file"])
        .arg(&certs.server_cert)
        .arg("--tls-key-file")
        .arg(&certs.server_key)
        .arg("--tls-client-ca-file")
        .arg(&garbage)
        .output()
        .expect("run baton");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(&path(&garbage)),
        "{out:?}"
    );
    // One of the pair alone is a usage error.
    let out = Command::new(BATON)
        .args(["--memory", "--listen", "127.0.0.1:0", "--tls-cert-file"])
        .arg(&certs.server_cert)
        .output()
        .expect("run baton");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-key-file"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_clients_with_a_certificate_get_in() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Certs::make(dir.path());
    let s = Server::start(&[
        "--memory",
        "--tls-cert-file",
        &path(&certs.server_cert),
        "--tls-key-file",
        &path(&certs.server_key),
        "--tls-client-ca-file",
        &path(&certs.ca),
    ]);
    let (ca, cert, key) = (
        path(&certs.ca),
        path(&certs.client_cert),
        path(&certs.client_key),
    );

    let with_cert = certs.curl(
        &s.addr,
        &["-X", "POST", "https://ADDR/mod/v2/lock/m?ttl=10"],
    );
    assert_eq!(
        (with_cert.status, with_cert.body.as_str()),
        (200, "1"),
        "{with_cert:?}"
    );
    let without = curl(&s.addr, &["--cacert", &ca, "https://ADDR/mod/v2/lock/m"]);
    assert_eq!(
        without.status, 0,
        "a client without a certificate got in: {without:?}"
    );

    let ca_pem = std::fs::read(&certs.ca).expect("read CA");
    let client = Client::builder()
        .endpoints([&s.url])
        .ca_certificate(ca_pem.clone())
        .identity(
            std::fs::read(&certs.client_cert).expect("read cert"),
            std::fs::read(&certs.client_key).expect("read key"),
        )
        .connect()
        .await
        .expect("connect with a client certificate");
    let status = client.status("m").await.expect("status");
    assert_eq!(status.holder.map(|h| h.index), Some(1));
    let anonymous = Client::builder()
        .endpoints([&s.url])
        .ca_certificate(ca_pem)
        .connect()
        .await;
    assert!(anonymous.is_err(), "connected without a client certificate");

    let out = Command::new(BATON)
        .args(["status", "m", "--endpoint", &s.url])
        .args(["--ca-file", &ca, "--cert-file", &cert, "--key-file", &key])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run baton status");
    assert!(out.status.success(), "{out:?}");
}
