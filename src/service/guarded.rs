//! A server stream tied to its stream slot, to shutdown and to the caller's
//! token, as one allocation.
//!
//! Every wait, watch and observe stream of every surface goes through it,
//! and a server may hold 100,000 of them for hours. Written as a plain
//! `Stream` rather than an `unfold` over a `select!`, it keeps no boxed
//! inner stream and no per-item future: about 250 bytes less per waiting
//! request (BENCHMARKS.md, many waiters).

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use futures::Stream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::ServiceError;

pin_project_lite::pin_project! {
    /// `inner`, until it ends, the server shuts down (one UNAVAILABLE item),
    /// or a reload revokes the caller's token (one UNAUTHENTICATED item).
    /// The slot is freed when the stream ends or is dropped.
    pub struct Guarded<S> {
        #[pin]
        inner: S,
        #[pin]
        shutdown: WaitForCancellationFutureOwned,
        #[pin]
        revoked: Option<WaitForCancellationFutureOwned>,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<S> Guarded<S> {
    /// Guards `inner` with `permit` (its stream slot), ending it on
    /// `shutdown` and, if the caller has a token, on `revoked`.
    pub fn new(
        inner: S,
        permit: OwnedSemaphorePermit,
        shutdown: WaitForCancellationFutureOwned,
        revoked: Option<WaitForCancellationFutureOwned>,
    ) -> Self {
        Self {
            inner,
            shutdown,
            revoked,
            permit: Some(permit),
        }
    }
}

impl<S, T> Stream for Guarded<S>
where
    S: Stream<Item = Result<T, ServiceError>>,
{
    type Item = Result<T, ServiceError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if this.permit.is_none() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = this.inner.poll_next(cx) {
            if item.is_none() {
                *this.permit = None;
            }
            return Poll::Ready(item);
        }
        if this.shutdown.poll(cx).is_ready() {
            *this.permit = None;
            return Poll::Ready(Some(Err(super::shutting_down())));
        }
        if let Some(revoked) = this.revoked.as_mut().as_pin_mut()
            && revoked.poll(cx).is_ready()
        {
            *this.permit = None;
            return Poll::Ready(Some(Err(ServiceError::Unauthenticated(
                "the auth file was reloaded and this token was removed or changed: call again with a valid token".into(),
            ))));
        }
        Poll::Pending
    }
}
