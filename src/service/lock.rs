//! The `baton.v1.Lock` operations.

use futures::StreamExt;

use super::{Rpc, Service, ServiceError, ServiceStream, WaitStep, convert};
use crate::auth::Right;
use crate::engine::AcquireSpec;
use crate::proto::v1::{self as pb, wait_event::Event};

impl Service {
    /// Lock.Wait: queue for a key and stream progress.
    pub async fn wait(
        &self,
        req: pb::WaitRequest,
    ) -> Result<ServiceStream<pb::WaitEvent>, ServiceError> {
        let spec = || {
            self.allow_key(Rpc::Wait, Right::Write, &req.key)?;
            Ok(AcquireSpec {
                key: self.key("key", &req.key)?,
                value: self.value("value", &req.value)?,
                ttl_ms: self.ttl(req.ttl_ms)?,
                timeout_ms: req.timeout_ms,
                limit: req.limit.max(1),
                lock_delay_ms: self.lock_delay(req.lock_delay_ms)?,
            })
        };
        self.wait_as(Rpc::Wait, spec, |step| pb::WaitEvent {
            event: Some(match step {
                WaitStep::Queued(q) => Event::Queued(q),
                WaitStep::Acquired(a) => Event::Acquired(a),
                WaitStep::Ended(e) => Event::Ended(e),
            }),
        })
        .await
    }

    /// Lock.Renew.
    pub async fn renew(&self, req: pb::RenewRequest) -> Result<pb::RenewResponse, ServiceError> {
        self.counted(Rpc::Renew, async {
            self.allow_key(Rpc::Renew, Right::Write, &req.key)?;
            use pb::renew_request::Target as T;
            let key = self.key("key", &req.key)?;
            let target = match &req.target {
                Some(T::Index(i)) => self.target(Some(*i), None)?,
                Some(T::Value(v)) => self.target(None, Some(v))?,
                None => self.target(None, None)?,
            };
            let r = self
                .engine
                .renew(&key, target, self.ttl(req.ttl_ms)?)
                .await?;
            Ok(pb::RenewResponse {
                index: r.index,
                held: r.held,
                deadline_unix_ms: r.deadline.unwrap_or(0),
            })
        })
        .await
    }

    /// Lock.Release.
    pub async fn release(
        &self,
        req: pb::ReleaseRequest,
    ) -> Result<pb::ReleaseResponse, ServiceError> {
        self.counted(Rpc::Release, async {
            self.allow_key(Rpc::Release, Right::Write, &req.key)?;
            use pb::release_request::Target as T;
            let key = self.key("key", &req.key)?;
            let target = match &req.target {
                Some(T::Index(i)) => self.target(Some(*i), None)?,
                Some(T::Value(v)) => self.target(None, Some(v))?,
                None => self.target(None, None)?,
            };
            let r = self.engine.release(&key, target).await?;
            Ok(pb::ReleaseResponse {
                index: r.index,
                was_holder: r.was_holder,
            })
        })
        .await
    }

    /// Lock.Get.
    pub async fn get(&self, req: pb::GetRequest) -> Result<pb::GetResponse, ServiceError> {
        self.counted(Rpc::Get, async {
            self.allow_key(Rpc::Get, Right::Read, &req.key)?;
            let key = self.key("key", &req.key)?;
            let view = self.engine.get(&key).await?;
            let now = self.now_ms();
            Ok(pb::GetResponse {
                key,
                holder: view.holder.as_ref().map(|h| convert::holder(h, now)),
                queue: view.queue.iter().map(convert::queued_entry).collect(),
                holders: view
                    .holders
                    .iter()
                    .map(|h| convert::holder(h, now))
                    .collect(),
                limit: view.limit,
                delayed_until_unix_ms: view.delayed_until.unwrap_or(0),
            })
        })
        .await
    }

    /// Lock.List.
    pub async fn list(&self, req: pb::ListRequest) -> Result<pb::ListResponse, ServiceError> {
        self.counted(Rpc::List, async {
            self.allow_prefix(Rpc::List, Right::Read, &req.prefix)?;
            let (keys, next_page_token) = self
                .list_page(&req.prefix, req.page_size, &req.page_token)
                .await?;
            let now = self.now_ms();
            Ok(pb::ListResponse {
                keys: keys
                    .iter()
                    .map(|k| pb::KeySummary {
                        key: k.key.clone(),
                        holder: k.holder.as_ref().map(|h| convert::holder(h, now)),
                        queue_length: k.queue_length,
                        delayed_until_unix_ms: k.delayed_until.unwrap_or(0),
                    })
                    .collect(),
                next_page_token,
            })
        })
        .await
    }

    /// Lock.Check: whether `index` holds `key` now. A read: a resource
    /// server checking the tokens it is handed needs only read rights.
    pub async fn check(&self, req: pb::CheckRequest) -> Result<pb::CheckResponse, ServiceError> {
        self.counted(Rpc::Check, async {
            self.allow_key(Rpc::Check, Right::Read, &req.key)?;
            let key = self.key("key", &req.key)?;
            let check = self.engine.check_token(&key, req.index).await?;
            let now = self.now_ms();
            Ok(pb::CheckResponse {
                current: check.current,
                holders: check
                    .holders
                    .iter()
                    .map(|h| convert::holder(h, now))
                    .collect(),
            })
        })
        .await
    }

    /// Lock.Watch.
    pub async fn watch(
        &self,
        req: pb::WatchRequest,
    ) -> Result<ServiceStream<pb::LockEvent>, ServiceError> {
        self.counted(Rpc::Watch, async {
            if req.prefix {
                self.allow_prefix(Rpc::Watch, Right::Read, &req.key)?;
            } else {
                self.allow_key(Rpc::Watch, Right::Read, &req.key)?;
                self.key("key", &req.key)?;
            }
            let permit = self.stream_permit()?;
            let events = self.engine.watch(&req.key, req.prefix).await?;
            // A prefix watch shows only the keys the caller may read.
            let caller = self.caller.clone();
            let clock = self.clock;
            let events = events
                .filter(move |e| {
                    let show = match e {
                        Ok(e) => caller.may(Right::Read, &e.key),
                        Err(_) => true,
                    };
                    futures::future::ready(show)
                })
                .map(move |e| Ok(convert::event(&e?, clock.now_ms())));
            Ok(self.guard(events, permit))
        })
        .await
    }
}
