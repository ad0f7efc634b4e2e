//! `--auth-file` on the etcd backend's gateways: the gateway that receives
//! a call checks the caller, and forwards to the primary with the cluster
//! secret; the primary takes forwarded calls only with that secret, so a
//! follower cannot be used to get round its rules, and a gateway with
//! another secret is refused.

mod common;

use std::{process::Command, time::Duration};

use baton::proto::v1::wait_event;
use common::{
    Server,
    auth::{get, req, write_private},
    curl,
    etcd::Etcd,
};
use tonic::Code;

const DEPLOYER: &str = "deployer-secret-0001";
const READER: &str = "reader-secret-000001";
const CLUSTER: &str = "cluster-secret-0123456789abcdef";

fn files(dir: &std::path::Path) -> (String, String, String) {
    let auth = dir.join("auth.toml");
    write_private(
        &auth,
        &format!(
            "[[token]]\nname = \"deployer\"\nsecret = \"{DEPLOYER}\"\nprefixes = [\"jobs/\"]\nrights = [\"read\", \"write\"]\n\n[[token]]\nname = \"reader\"\nsecret = \"{READER}\"\nprefixes = [\"\"]\nrights = [\"read\"]\n"
        ),
    );
    let cluster = dir.join("cluster");
    write_private(&cluster, &format!("{CLUSTER}\n"));
    let other = dir.join("other-cluster");
    write_private(&other, "another-secret-0123456789abcdef\n");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    (s(&auth), s(&cluster), s(&other))
}

/// The role `/v1/status` reports, asked with the reader's token.
fn wait_for_role(server: &Server, want: &str) {
    let bearer = format!("Authorization: Bearer {READER}");
    let ok = common::eventually_sync(Duration::from_secs(15), || {
        let r = curl(
            &server.addr,
            &["--max-time", "5", "-H", &bearer, "http://ADDR/v1/status"],
        );
        serde_json::from_str::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| v["role"].as_str().map(str::to_owned))
            .as_deref()
            == Some(want)
    });
    assert!(ok, "{} did not become {want}", server.addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_check_their_callers_and_forward_with_the_cluster_secret() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let (auth, cluster, other) = files(dir.path());
    let flags = |secret: &str| {
        vec![
            "--auth-file".to_owned(),
            auth.clone(),
            "--cluster-secret-file".to_owned(),
            secret.to_owned(),
        ]
    };
    let good = flags(&cluster);
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let primary = Server::etcd(&etcd, "/auth/", &good);
    wait_for_role(&primary, "primary");
    let follower = Server::etcd(&etcd, "/auth/", &good);
    wait_for_role(&follower, "follower");

    // A call at the follower, with a token: checked there, forwarded.
    let mut at_follower = follower.lock().await;
    let mut s = at_follower
        .wait(req(
            common::wait_req("jobs/e", "via-follower", 0, None),
            Some(DEPLOYER),
        ))
        .await
        .expect("wait through the follower")
        .into_inner();
    let index = match common::next_event(&mut s).await.expect("event") {
        wait_event::Event::Acquired(a) => a.index,
        other => panic!("expected acquired, got {other:?}"),
    };
    let mut at_primary = primary.lock().await;
    let seen = get(&mut at_primary, "jobs/e", Some(READER))
        .await
        .expect("get");
    assert_eq!(seen.holder.map(|h| h.index), Some(index));
    // The follower enforces the token's prefixes itself.
    let e = get(&mut at_follower, "web/e", Some(DEPLOYER))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = get(&mut at_follower, "jobs/e", None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // The primary's API, which followers forward to, refuses a call
    // without the cluster secret, or with another secret...
    let e = get(&mut at_primary, "jobs/e", None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = get(
        &mut at_primary,
        "jobs/e",
        Some("another-secret-0123456789abcdef"),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // ...and takes it with the secret, as from a gateway.
    get(&mut at_primary, "web/anything", Some(CLUSTER))
        .await
        .expect("the cluster secret forwards");

    // A gateway with another cluster secret cannot get its callers' calls
    // through, however good their tokens.
    let bad = flags(&other);
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    let stranger = Server::etcd(&etcd, "/auth/", &bad);
    let mut at_stranger = stranger.lock().await;
    let e = get(&mut at_stranger, "jobs/e", Some(READER))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("cluster-secret-file"), "{e:?}");
}

#[test]
fn auth_on_the_etcd_backend_needs_a_cluster_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (auth, _, _) = files(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "etcd",
            "--etcd-endpoints",
            "http://127.0.0.1:1",
            "--auth-file",
            &auth,
        ])
        .output()
        .expect("run baton");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--cluster-secret-file"), "{err}");
}
