//! The follower's end of `baton.v1.Forward/Exchange`: every call of every
//! client, on one gRPC stream to the primary.
//!
//! A call is registered under a fresh id before its request is sent, so its
//! replies always find it; the reader task hands each reply to its call
//! and forgets the call on its last reply. A call whose caller goes away
//! (its [`Call`] dropped) is forgotten here and withdrawn on the primary
//! with a `cancel` message: the primary ends it exactly as it ends a call
//! whose own stream was reset. When the stream breaks (the primary died,
//! shut down, or the engine moved to another primary), every open call ends
//! with `Unavailable` and the next call opens a new stream.
//!
//! Why one stream: a gRPC call per forwarded call cost the follower a client
//! stream and the primary a server stream, headers and trailers each way,
//! for every lock and release. Over one stream a call is one small message
//! each way, and messages that are ready together leave in one write.
//!
//! Bounds: a stream call (a wait or a watch) buffers at most
//! [`STREAM_BUFFER`] replies its caller has not read; a watch whose caller
//! falls further behind ends with `Lagged` and is withdrawn on the primary,
//! as a slow watcher on the primary itself is cut off. A wait gets at most
//! three replies.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use futures::channel::mpsc as unbounded;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::engine::EngineError;
use crate::proto::v1::{self as pb, forward_reply::Reply, forward_request::Call as Request};

/// Replies a wait or watch buffers for a caller that has not read them.
pub const STREAM_BUFFER: usize = 4096;

/// How a call ended, when it did not end with a reply it was waiting for.
#[derive(Clone, Debug)]
pub enum Ending {
    /// A stream ended without error.
    Ended,
    /// The primary ended the call with this status.
    Failed(Status),
    /// The exchange broke, or the caller fell behind: the call is over on
    /// this side.
    Gone(EngineError),
}

/// Where a call's replies go.
enum Pending {
    /// A unary call: its one reply.
    Unary(oneshot::Sender<Result<Reply, Ending>>),
    /// A wait or watch: its replies, then its end.
    Stream(mpsc::Sender<Reply>, Arc<OnceLock<Ending>>),
}

/// The calls open on an exchange.
#[derive(Default)]
struct Calls {
    open: HashMap<u64, Pending>,
    /// Set once the exchange is over: no call can be opened any more.
    ended: Option<EngineError>,
}

/// One `Exchange` stream to the primary, shared by every call.
pub struct Exchange {
    url: String,
    requests: unbounded::UnboundedSender<pb::ForwardRequest>,
    calls: Mutex<Calls>,
    next_id: AtomicU64,
    /// Cancelled when the stream is over, whatever the reason.
    over: CancellationToken,
}

impl Exchange {
    /// Opens the stream on `channel` (with the cluster secret in
    /// `authorization`) and starts reading its replies. `gone` ends it: the
    /// engine moved to another primary.
    pub async fn open(
        url: &str,
        channel: tonic::transport::Channel,
        authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
        gone: CancellationToken,
    ) -> Result<Arc<Self>, EngineError> {
        let (requests, outbound) = unbounded::unbounded();
        let mut req = tonic::Request::new(outbound);
        if let Some(a) = authorization {
            req.metadata_mut().insert("authorization", a);
        }
        let mut client = pb::forward_client::ForwardClient::new(channel);
        let replies = match client.exchange(req).await {
            Ok(r) => r.into_inner(),
            Err(s) => return Err(super::status::engine_error(&s, None)),
        };
        let exchange = Arc::new(Self {
            url: url.to_owned(),
            requests,
            calls: Mutex::new(Calls::default()),
            next_id: AtomicU64::new(1),
            over: CancellationToken::new(),
        });
        tokio::spawn(read(exchange.clone(), replies, gone));
        Ok(exchange)
    }

    /// Whether the stream is over (a new call needs a new exchange).
    pub fn is_over(&self) -> bool {
        self.over.is_cancelled()
    }

    /// Sends a unary call; its reply comes on the receiver. Dropping the
    /// [`Call`] before the reply withdraws it.
    pub fn unary(
        self: &Arc<Self>,
        request: Request,
    ) -> Result<(Call, oneshot::Receiver<Result<Reply, Ending>>), EngineError> {
        let (tx, rx) = oneshot::channel();
        let call = self.start(Pending::Unary(tx), request)?;
        Ok((call, rx))
    }

    /// Sends a wait or a watch; its replies come on the receiver, and once
    /// the receiver is closed the [`StreamEnd`] says why.
    pub fn stream(
        self: &Arc<Self>,
        request: Request,
    ) -> Result<(Call, StreamReplies), EngineError> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let end = Arc::new(OnceLock::new());
        let call = self.start(Pending::Stream(tx, end.clone()), request)?;
        Ok((call, StreamReplies { rx, end }))
    }

    fn start(self: &Arc<Self>, pending: Pending, request: Request) -> Result<Call, EngineError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut calls = self.lock();
            if let Some(e) = &calls.ended {
                return Err(e.clone());
            }
            calls.open.insert(id, pending);
        }
        let sent = self.requests.unbounded_send(pb::ForwardRequest {
            id,
            call: Some(request),
        });
        if sent.is_err() {
            self.lock().open.remove(&id);
            return Err(closed(&self.url));
        }
        Ok(Call {
            id,
            exchange: self.clone(),
        })
    }

    /// Hands `reply` to its call; forgets the call on its last reply.
    fn deliver(&self, reply: pb::ForwardReply) {
        let Some(body) = reply.reply else {
            return;
        };
        let mut calls = self.lock();
        let id = reply.id;
        let last = match calls.open.get(&id) {
            // A call withdrawn here whose replies were already on the way.
            None => return,
            Some(Pending::Unary(_)) => true,
            Some(Pending::Stream(..)) => matches!(body, Reply::Failed(_) | Reply::Ended(_)),
        };
        if last {
            match calls.open.remove(&id) {
                Some(Pending::Unary(tx)) => {
                    let _ = tx.send(match body {
                        Reply::Failed(f) => Err(Ending::Failed(failure(f))),
                        other => Ok(other),
                    });
                }
                Some(Pending::Stream(_, end)) => {
                    let _ = end.set(match body {
                        Reply::Failed(f) => Ending::Failed(failure(f)),
                        _ => Ending::Ended,
                    });
                }
                None => {}
            }
            return;
        }
        let full = match calls.open.get(&id) {
            Some(Pending::Stream(tx, _)) => tx.try_send(body).is_err(),
            _ => false,
        };
        if full {
            // The caller stopped reading (or is gone): end the call here and
            // on the primary.
            if let Some(Pending::Stream(_, end)) = calls.open.remove(&id) {
                let _ = end.set(Ending::Gone(EngineError::Lagged(STREAM_BUFFER as u64)));
            }
            drop(calls);
            self.cancel(id);
        }
    }

    /// Ends every open call with `why`; no call can be opened after.
    fn end(&self, why: EngineError) {
        let open = {
            let mut calls = self.lock();
            if calls.ended.is_none() {
                calls.ended = Some(why.clone());
            }
            std::mem::take(&mut calls.open)
        };
        self.over.cancel();
        // Ends the request side too: the primary withdraws every call still
        // open there, as for a follower that went away.
        self.requests.close_channel();
        for (_, pending) in open {
            match pending {
                Pending::Unary(tx) => {
                    let _ = tx.send(Err(Ending::Gone(why.clone())));
                }
                Pending::Stream(_, end) => {
                    let _ = end.set(Ending::Gone(why.clone()));
                }
            }
        }
    }

    /// Withdraws the call `id` on the primary.
    fn cancel(&self, id: u64) {
        let _ = self.requests.unbounded_send(pb::ForwardRequest {
            id,
            call: Some(Request::Cancel(pb::ForwardCancel {})),
        });
    }

    fn lock(&self) -> MutexGuard<'_, Calls> {
        // Every change under the lock is a single map operation: a panic
        // elsewhere cannot leave the map half-changed.
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads replies until the stream ends, then ends every open call.
async fn read(
    exchange: Arc<Exchange>,
    mut replies: tonic::Streaming<pb::ForwardReply>,
    gone: CancellationToken,
) {
    let why = loop {
        let next = tokio::select! {
            m = replies.message() => m,
            () = gone.cancelled() => break super::moved(&exchange.url),
        };
        match next {
            Ok(Some(reply)) => exchange.deliver(reply),
            Ok(None) => break closed(&exchange.url),
            Err(s) => {
                break match super::status::engine_error(&s, None) {
                    EngineError::Unavailable(m) => EngineError::Unavailable(m),
                    other => EngineError::Unavailable(format!(
                        "the forwarding stream to the primary at {} failed: {other}",
                        exchange.url
                    )),
                };
            }
        }
    };
    tracing::debug!(url = %exchange.url, %why, "forwarding stream ended");
    exchange.end(why);
}

fn closed(url: &str) -> EngineError {
    EngineError::Unavailable(format!("the primary at {url} closed the stream"))
}

/// The status a `failed` reply carries.
fn failure(f: pb::ForwardFailure) -> Status {
    Status::new(Code::from(f.code), f.message)
}

/// A call open on an exchange. Dropping it before its last reply withdraws
/// it, here and on the primary.
pub struct Call {
    id: u64,
    exchange: Arc<Exchange>,
}

impl Call {
    /// Tells the primary that this wait's grant was handed on: it is heard
    /// there from now on.
    pub fn heard(&self) {
        let _ = self.exchange.requests.unbounded_send(pb::ForwardRequest {
            id: self.id,
            call: Some(Request::Heard(pb::ForwardHeard {})),
        });
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let open = self.exchange.lock().open.remove(&self.id).is_some();
        if open {
            self.exchange.cancel(self.id);
        }
    }
}

/// A wait's or watch's replies, then how it ended.
pub struct StreamReplies {
    rx: mpsc::Receiver<Reply>,
    end: Arc<OnceLock<Ending>>,
}

impl StreamReplies {
    /// The next reply, or how the stream ended.
    pub async fn next(&mut self) -> Result<Reply, Ending> {
        match self.rx.recv().await {
            Some(r) => Ok(r),
            // The sender is dropped only after the end is set.
            None => Err(self.end.get().cloned().unwrap_or(Ending::Ended)),
        }
    }
}
