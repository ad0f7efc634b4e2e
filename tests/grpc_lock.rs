//! The Lock and Election gRPC services against a real `baton` process: what
//! the service layer does whatever the backend (validation, limits,
//! shutdown). The lock-queue contract itself is `tests/conformance`, run
//! in process on every backend.

mod common;

use std::time::Duration;

use baton::proto::v1::{self as pb, wait_event};
use common::{Server, acquire, next_event, wait_req};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument() {
    let server = Server::start(&["--memory", "--max-key-bytes", "16", "--max-ttl-secs", "60"]);
    let mut c = server.lock().await;
    for req in [
        wait_req("", "", 0, None),
        wait_req(&"k".repeat(17), "", 0, None),
        wait_req("k", "", 61_000, None),
        wait_req("k", &"v".repeat(5000), 0, None),
    ] {
        let err = c.wait(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    let err = c
        .release(pb::ReleaseRequest {
            key: "k".into(),
            target: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limit_is_resource_exhausted() {
    let server = Server::start(&["--memory", "--max-streams", "1"]);
    let mut c = server.lock().await;
    let (_h, _) = acquire(&mut c, "lim", "", 0).await;
    let err = c.wait(wait_req("lim2", "", 0, None)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_streams_and_exits_zero() {
    let mut server = Server::memory();
    let mut c = server.lock().await;
    let (_h, _) = acquire(&mut c, "bye", "", 0).await;
    let mut s = c
        .wait(wait_req("bye", "", 0, None))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        next_event(&mut s).await.unwrap(),
        wait_event::Event::Queued(_)
    ));
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate(Duration::from_secs(10));
        (server, status)
    });
    let err = next_event(&mut s).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let (_server, status) = status.await.unwrap();
    assert!(status.expect("baton did not exit").success());
}
