//! The `baton.v1.Election` operations: the lock contract with value = the
//! candidate's name, on the same keys.

use futures::StreamExt;

use super::{Rpc, Service, ServiceError, ServiceStream, WaitStep, convert};
use crate::auth::Right;
use crate::engine::{AcquireSpec, HolderView, Target};
use crate::proto::v1::{self as pb, campaign_event::Event};

impl Service {
    /// Election.Campaign.
    pub async fn campaign(
        &self,
        req: pb::CampaignRequest,
    ) -> Result<ServiceStream<pb::CampaignEvent>, ServiceError> {
        let spec = || {
            self.allow_key(Rpc::Campaign, Right::Write, &req.election)?;
            Ok(AcquireSpec {
                key: self.key("election", &req.election)?,
                value: Some(self.name(&req.name)?),
                ttl_ms: self.ttl(req.ttl_ms)?,
                timeout_ms: req.timeout_ms,
                limit: 1,
                lock_delay_ms: self.lock_delay(req.lock_delay_ms)?,
            })
        };
        self.wait_as(Rpc::Campaign, spec, |step| pb::CampaignEvent {
            event: Some(match step {
                WaitStep::Queued(q) => Event::Queued(q),
                WaitStep::Acquired(a) => Event::Elected(a),
                WaitStep::Ended(e) => Event::Ended(e),
            }),
        })
        .await
    }

    /// Election.Leader.
    pub async fn leader(&self, req: pb::LeaderRequest) -> Result<pb::LeaderResponse, ServiceError> {
        self.counted(Rpc::Leader, async {
            self.allow_key(Rpc::Leader, Right::Read, &req.election)?;
            let election = self.key("election", &req.election)?;
            let view = self.engine.get(&election).await?;
            Ok(leader_response(election, view.holder.as_ref()))
        })
        .await
    }

    /// Election.Observe: the leader now, then every change of leader.
    pub async fn observe(
        &self,
        req: pb::ObserveRequest,
    ) -> Result<ServiceStream<pb::LeaderResponse>, ServiceError> {
        self.counted(Rpc::Observe, async {
            self.allow_key(Rpc::Observe, Right::Read, &req.election)?;
            let election = self.key("election", &req.election)?;
            let permit = self.stream_permit()?;
            // Watch first, then read, so no change falls between the two.
            let events = self.engine.watch(&election, false).await?;
            let now = self.engine.get(&election).await?;
            let first = leader_response(election.clone(), now.holder.as_ref());
            let mut last = now.holder.map(|h| h.index);
            let changes = events.filter_map(move |e| {
                let out = match e {
                    Ok(e) => {
                        let index = e.holder.as_ref().map(|h| h.index);
                        (index != last).then(|| {
                            last = index;
                            Ok(leader_response(election.clone(), e.holder.as_ref()))
                        })
                    }
                    Err(e) => Some(Err(ServiceError::from(e))),
                };
                futures::future::ready(out)
            });
            let stream = futures::stream::once(futures::future::ready(Ok(first))).chain(changes);
            Ok(self.guard(stream, permit))
        })
        .await
    }

    /// Election.Resign.
    pub async fn resign(&self, req: pb::ResignRequest) -> Result<pb::ResignResponse, ServiceError> {
        self.counted(Rpc::Resign, async {
            self.allow_key(Rpc::Resign, Right::Write, &req.election)?;
            let election = self.key("election", &req.election)?;
            let name = self.name(&req.name)?;
            let r = self.engine.release(&election, Target::Value(name)).await?;
            Ok(pb::ResignResponse {
                index: r.index,
                was_leader: r.was_holder,
            })
        })
        .await
    }

    /// Election.List.
    pub async fn list_elections(
        &self,
        req: pb::ListElectionsRequest,
    ) -> Result<pb::ListElectionsResponse, ServiceError> {
        self.counted(Rpc::ListElections, async {
            self.allow_prefix(Rpc::ListElections, Right::Read, &req.prefix)?;
            let (keys, next_page_token) = self
                .list_page(&req.prefix, req.page_size, &req.page_token)
                .await?;
            Ok(pb::ListElectionsResponse {
                elections: keys
                    .into_iter()
                    .map(|k| leader_response(k.key, k.holder.as_ref()))
                    .collect(),
                next_page_token,
            })
        })
        .await
    }

    fn name(&self, name: &str) -> Result<String, ServiceError> {
        self.value("name", name)?
            .ok_or_else(|| ServiceError::InvalidArgument("name is required".into()))
    }
}

fn leader_response(election: String, holder: Option<&HolderView>) -> pb::LeaderResponse {
    pb::LeaderResponse {
        election,
        leader: holder.map(convert::leader),
    }
}
