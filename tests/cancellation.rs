//! Going away is total, on the wire: a real durable `baton`, and thousands
//! of waits on every surface (gRPC, the JSON gateway, `/mod/v2`), each
//! abandoned at a random moment from 0 to 10 ms after it was sent, mixed
//! with renews and releases. Afterwards every key's entries are only holds
//! or entries still awaited by a connected client, `waiters` equals the open
//! streams, and a lock handed on finds no phantom to give itself to.
//!
//! The HTTP clients are raw TCP connections that hang up (what curl -m
//! does), the gRPC ones cancel their stream (what a dropped future does).

mod common;

use std::time::Duration;

use baton::proto::v1::{self as pb, lock_client::LockClient};
use common::{Server, acquire, eventually, release, view, wait_req};
use futures::StreamExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::transport::Channel;

/// Requests per surface.
const PER_SURFACE: usize = 600;
/// Requests in flight at once.
const WAVE: usize = 100;
const KEYS: [&str; 3] = ["busy", "free/a", "free/b"];

#[derive(Clone, Copy, Debug)]
enum Surface {
    Grpc,
    Gateway,
    ModV2,
}

/// Sends one HTTP/1.1 request on a new connection, reads whatever comes
/// within `give_up`, then hangs up.
async fn http_and_hang_up(addr: &str, head: String, body: String, give_up: Duration) {
    let Ok(mut conn) = TcpStream::connect(addr).await else {
        return;
    };
    let request = format!(
        "{head} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let work = async {
        conn.write_all(request.as_bytes()).await?;
        let mut buf = [0u8; 4096];
        loop {
            if conn.read(&mut buf).await? == 0 {
                return Ok::<_, std::io::Error>(());
            }
        }
    };
    let _ = tokio::time::timeout(give_up, work).await;
}

async fn one_request(
    surface: Surface,
    addr: String,
    mut grpc: LockClient<Channel>,
    rng: &mut fastrand::Rng,
) {
    let key = KEYS[rng.usize(..KEYS.len())];
    let with_value = rng.u8(..4) == 0;
    let value = if with_value {
        format!("v{}", rng.u8(..3))
    } else {
        String::new()
    };
    let ttl_s = [0u64, 60][rng.usize(..2)];
    let give_up = Duration::from_micros(rng.u64(..10_000));
    match surface {
        Surface::Grpc => {
            let req = wait_req(key, &value, ttl_s * 1000, None);
            let _ = tokio::time::timeout(give_up, async move {
                if let Ok(s) = grpc.wait(req).await {
                    let mut s = s.into_inner();
                    while let Some(Ok(_)) = s.next().await {}
                }
            })
            .await;
        }
        Surface::Gateway => {
            let body = format!(
                r#"{{"key":"{key}","value":"{value}","ttlMs":"{}"}}"#,
                ttl_s * 1000
            );
            http_and_hang_up(&addr, "POST /v1/lock/wait".into(), body, give_up).await;
        }
        Surface::ModV2 => {
            let mut q = format!("ttl={ttl_s}");
            if with_value {
                q.push_str(&format!("&value={value}"));
            }
            http_and_hang_up(
                &addr,
                format!("POST /mod/v2/lock/{key}?{q}"),
                String::new(),
                give_up,
            )
            .await;
        }
    }
}

async fn status(addr: &str) -> serde_json::Value {
    let r = common::curl(addr, &["http://ADDR/v1/status"]);
    serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_requests_on_every_surface_leave_nothing_behind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let server = Server::start(&["--data-dir", data_dir.to_str().expect("utf-8 path")]);
    let mut c = server.lock().await;
    // "busy" stays held by a connected holder and is renewed all the time,
    // so waits on it queue and the engine is never idle.
    let (holder, busy) = acquire(&mut c, "busy", "", 0).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let renewer = {
        let mut c = server.lock().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut renews = 0u64;
            while !stop.is_cancelled() {
                c.renew(common::renew_index("busy", busy, 0))
                    .await
                    .expect("renew the busy holder");
                renews += 1;
            }
            renews
        })
    };

    let mut rng = fastrand::Rng::with_seed(11);
    let mut surfaces = Vec::new();
    for s in [Surface::Grpc, Surface::Gateway, Surface::ModV2] {
        surfaces.extend(std::iter::repeat_n(s, PER_SURFACE));
    }
    rng.shuffle(&mut surfaces);
    let grpc = server.lock().await;
    for wave in surfaces.chunks(WAVE) {
        let mut tasks = Vec::new();
        for &surface in wave {
            let mut task_rng = fastrand::Rng::with_seed(rng.u64(..));
            let addr = server.addr.clone();
            let grpc = grpc.clone();
            let mut other = grpc.clone();
            // Now and then release or renew the free keys' holders by value,
            // as other clients would.
            let extra = task_rng.u8(..8);
            tasks.push(tokio::spawn(async move {
                one_request(surface, addr, grpc, &mut task_rng).await;
                let key = KEYS[1 + task_rng.usize(..2)];
                let value = format!("v{}", task_rng.u8(..3));
                match extra {
                    0 => {
                        let _ = other
                            .release(pb::ReleaseRequest {
                                key: key.into(),
                                target: Some(pb::release_request::Target::Value(value)),
                            })
                            .await;
                    }
                    1 => {
                        let _ = other.renew(common::renew_value(key, &value, 60_000)).await;
                    }
                    _ => {}
                }
            }));
        }
        for t in tasks {
            t.await.expect("request task");
        }
    }
    stop.cancel();
    let renews = renewer.await.expect("renewer");
    assert!(renews > 0, "the busy holder was never renewed");

    // Every client but the busy holder is gone: once the server has seen
    // every hang-up, nothing is queued anywhere and the one waiter left is
    // the holder's open stream.
    let settled = eventually(Duration::from_secs(10), || async {
        let st = status(&server.addr).await;
        st["waiters"] == 1 && st["openStreams"] == 1
    })
    .await;
    let st = status(&server.addr).await;
    assert!(
        settled,
        "waiters must equal open streams (1, the holder): {st}"
    );
    for key in KEYS {
        let v = view(&mut c, key).await;
        assert!(
            v.queue.is_empty(),
            "{key} has queued entries nobody waits on: {:?}",
            v.queue
        );
    }

    // The holder hands the lock on: nobody is behind it, so nobody holds.
    drop(holder);
    release(&mut c, "busy", busy).await;
    let v = view(&mut c, "busy").await;
    assert!(v.holder.is_none(), "a phantom holds busy: {:?}", v.holder);
}
