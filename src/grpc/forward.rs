//! `baton.v1.Forward` over gRPC: the primary's end of a follower's one
//! forwarding stream (the follower's end is `engine::remote::exchange`).
//!
//! Each call on the stream runs as a task of its own on the service layer,
//! for the caller the stream was opened by, exactly as if it had come on a
//! stream of its own: the same checks, limits, metrics and answers. A call
//! ends when it has answered, when the follower cancels it, or when the
//! exchange ends (the follower went away, or this server shuts down); the
//! last two drop the call's task, which withdraws a wait as a reset stream
//! would.

use std::{collections::HashMap, panic::AssertUnwindSafe};

use futures::{FutureExt, Stream, StreamExt};
use tokio::{
    sync::mpsc,
    task::{AbortHandle, JoinSet},
};
use tonic::{Request, Response, Status, Streaming};

use super::{GrpcStream, for_caller};
use crate::proto::v1::{self as pb, forward_reply::Reply, forward_request::Call};
use crate::service::{Service, ServiceError};

/// The path of the exchange: a request body that is quiet for as long as
/// the follower's clients only wait, so the listener's body-read timeout
/// (a slow-body defence for requests that should finish) must not apply to
/// it. A follower that vanished is found by HTTP/2 PINGs instead.
pub const EXCHANGE_PATH: &str = "/baton.v1.Forward/Exchange";

/// Replies waiting for the follower to read them. When it stops reading,
/// calls wait to send, and a watch's own buffer on the engine then decides
/// when it is cut off as lagging.
const REPLY_BUFFER: usize = 1024;

/// The tonic `Forward` service.
pub struct ForwardGrpc(pub Service);

#[tonic::async_trait]
impl pb::forward_server::Forward for ForwardGrpc {
    type ExchangeStream = GrpcStream<pb::ForwardReply>;

    async fn exchange(
        &self,
        req: Request<Streaming<pb::ForwardRequest>>,
    ) -> Result<Response<Self::ExchangeStream>, Status> {
        let service = for_caller(&self.0, &req);
        let (tx, rx) = mpsc::channel(REPLY_BUFFER);
        tokio::spawn(serve(service, req.into_inner(), tx));
        let replies = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(replies)))
    }
}

type Replies = mpsc::Sender<Result<pb::ForwardReply, Status>>;

/// A call open on the exchange.
struct Open {
    task: AbortHandle,
    /// A wait's signals from the follower (`heard`, `cancel`), in the order
    /// they came: a wait is never aborted from here, so a grant heard just
    /// before its client left is counted as heard first. `None` for other
    /// calls, which a cancel aborts.
    signals: Option<mpsc::UnboundedSender<Signal>>,
}

/// Starts every call the follower sends, until the follower goes away or
/// the server shuts down; then ends the calls still open.
async fn serve(service: Service, mut requests: Streaming<pb::ForwardRequest>, tx: Replies) {
    // Each call's task returns its id when it is over.
    let mut calls: JoinSet<u64> = JoinSet::new();
    let mut open: HashMap<u64, Open> = HashMap::new();
    let closing = service.closing();
    tokio::pin!(closing);
    loop {
        tokio::select! {
            () = &mut closing => {
                let _ = tx
                    .send(Err(Status::unavailable("the server is shutting down")))
                    .await;
                break;
            }
            () = tx.closed() => break,
            Some(done) = calls.join_next() => {
                // An aborted call was forgotten when it was aborted.
                if let Ok(id) = done {
                    open.remove(&id);
                }
            }
            next = requests.message() => match next {
                Ok(Some(pb::ForwardRequest { id, call: Some(Call::Cancel(_)) })) => {
                    match open.remove(&id) {
                        Some(Open { signals: Some(wait), .. }) => {
                            let _ = wait.send(Signal::Cancel);
                        }
                        Some(Open { task, signals: None }) => task.abort(),
                        None => {}
                    }
                }
                Ok(Some(pb::ForwardRequest { id, call: Some(Call::Heard(_)) })) => {
                    if let Some(Open { signals: Some(wait), .. }) = open.get(&id) {
                        let _ = wait.send(Signal::Heard);
                    }
                }
                Ok(Some(pb::ForwardRequest { id, call: Some(Call::Wait(req)) })) => {
                    let (signal, signals) = mpsc::unbounded_channel();
                    let task = start(&mut calls, id, &tx, wait(service.clone(), id, req, tx.clone(), signals));
                    open.insert(id, Open { task, signals: Some(signal) });
                }
                Ok(Some(pb::ForwardRequest { id, call: Some(call) })) => {
                    let task = start(&mut calls, id, &tx, run(service.clone(), id, call, tx.clone()));
                    open.insert(id, Open { task, signals: None });
                }
                Ok(Some(pb::ForwardRequest { id, call: None })) => {
                    let _ = tx.send(Ok(failed(id, &Status::invalid_argument("a forwarded request without a call")))).await;
                }
                // The follower closed its side or went away: its clients
                // are gone with it.
                Ok(None) | Err(_) => break,
            },
        }
    }
    // Dropping the set aborts every call still open.
    calls.shutdown().await;
}

/// Runs the call `id` as a task of `calls`. A call that panics is answered
/// INTERNAL, as tonic answers a handler that panics, so the follower's
/// caller is not left waiting.
fn start(
    calls: &mut JoinSet<u64>,
    id: u64,
    tx: &Replies,
    call: impl Future<Output = ()> + Send + 'static,
) -> AbortHandle {
    let tx = tx.clone();
    calls.spawn(async move {
        if AssertUnwindSafe(call).catch_unwind().await.is_err() {
            tracing::error!(id, "a forwarded call panicked");
            let _ = tx
                .send(Ok(failed(
                    id,
                    &Status::internal("the call failed on the primary"),
                )))
                .await;
        }
        id
    })
}

/// What the follower says of an open wait.
enum Signal {
    /// Its client took the grant.
    Heard,
    /// Its client went away.
    Cancel,
}

/// Sends `reply` to the call `id`; false once the exchange is gone.
async fn send(tx: &Replies, id: u64, reply: Reply) -> bool {
    tx.send(Ok(pb::ForwardReply {
        id,
        reply: Some(reply),
    }))
    .await
    .is_ok()
}

/// Runs one wait and sends its events. Its grant is heard (see
/// [`Service::confirming`]) only once the follower says its client took it:
/// until then the task does not ask its stream for more, so if the follower
/// cancels instead, dropping the stream undoes the grant.
async fn wait(
    service: Service,
    id: u64,
    req: pb::WaitRequest,
    tx: Replies,
    mut signals: mpsc::UnboundedReceiver<Signal>,
) {
    let events = match service.confirming().wait(req).await {
        Ok(events) => events,
        Err(e) => {
            send(&tx, id, failure(&Status::from(e))).await;
            return;
        }
    };
    let mut events = std::pin::pin!(events);
    let end = loop {
        // The stream first: after a grant the follower's client took, this
        // poll is what makes it heard, also when the follower's cancel is
        // already waiting behind `heard`.
        let item = tokio::select! {
            biased;
            item = events.next() => item,
            signal = signals.recv() => match signal {
                Some(Signal::Heard) => continue,
                // Withdrawn, or the exchange is over.
                Some(Signal::Cancel) | None => return,
            },
        };
        match item {
            None => break Reply::Ended(pb::ForwardEnded {}),
            Some(Err(e)) => break failure(&Status::from(e)),
            Some(Ok(event)) => {
                let granted = matches!(event.event, Some(pb::wait_event::Event::Acquired(_)));
                if !send(&tx, id, Reply::WaitEvent(event)).await {
                    // The follower is gone: the grant, if any, was never
                    // taken.
                    return;
                }
                // Ask for more (which makes the grant heard) only once the
                // follower's client took it.
                if granted {
                    match signals.recv().await {
                        Some(Signal::Heard) => {}
                        Some(Signal::Cancel) | None => return,
                    }
                }
            }
        }
    };
    send(&tx, id, end).await;
}

/// Runs one call other than a wait and sends its replies.
async fn run(service: Service, id: u64, call: Call, tx: Replies) {
    let send = |reply: Reply| {
        let tx = tx.clone();
        async move { send(&tx, id, reply).await }
    };
    let one = |r: Result<Reply, ServiceError>| match r {
        Ok(reply) => reply,
        Err(e) => failure(&Status::from(e)),
    };
    match call {
        Call::Watch(req) => match service.watch(req).await {
            Ok(events) => {
                if send(Reply::Opened(pb::ForwardOpened {})).await {
                    let end = forward(events, Reply::LockEvent, &send).await;
                    send(end).await;
                }
            }
            Err(e) => {
                send(failure(&Status::from(e))).await;
            }
        },
        Call::Renew(req) => {
            send(one(service.renew(req).await.map(Reply::Renew))).await;
        }
        Call::Release(req) => {
            send(one(service.release(req).await.map(Reply::Release))).await;
        }
        Call::Get(req) => {
            send(one(service.get(req).await.map(Reply::Get))).await;
        }
        Call::Check(req) => {
            send(one(service.check(req).await.map(Reply::Check))).await;
        }
        Call::List(req) => {
            send(one(service.list(req).await.map(Reply::List))).await;
        }
        Call::Status(req) => {
            send(one(service.status(req).await.map(Reply::Status))).await;
        }
        // Handled by `serve` (and waits by `wait`).
        Call::Wait(_) | Call::Cancel(_) | Call::Heard(_) => {}
    }
}

/// Sends each item of `events`; returns the reply that ends the call.
async fn forward<T, F, Fut>(
    events: impl Stream<Item = Result<T, ServiceError>>,
    wrap: impl Fn(T) -> Reply,
    send: &F,
) -> Reply
where
    F: Fn(Reply) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut events = std::pin::pin!(events);
    while let Some(item) = events.next().await {
        match item {
            Ok(event) => {
                if !send(wrap(event)).await {
                    // The exchange is gone; nobody hears the end either.
                    return Reply::Ended(pb::ForwardEnded {});
                }
            }
            Err(e) => return failure(&Status::from(e)),
        }
    }
    Reply::Ended(pb::ForwardEnded {})
}

fn failure(status: &Status) -> Reply {
    Reply::Failed(pb::ForwardFailure {
        code: status.code() as i32,
        message: status.message().to_owned(),
    })
}

fn failed(id: u64, status: &Status) -> pb::ForwardReply {
    pb::ForwardReply {
        id,
        reply: Some(failure(status)),
    }
}

#[cfg(test)]
mod tests {
    use tonic::server::NamedService;

    use super::*;

    #[test]
    fn the_exchange_path_is_the_generated_one() {
        let service = <pb::forward_server::ForwardServer<ForwardGrpc> as NamedService>::NAME;
        assert_eq!(EXCHANGE_PATH, format!("/{service}/Exchange"));
    }
}
