//! `baton.v1.Election` over gRPC: a thin adapter onto the service layer.

use tonic::{Request, Response, Status};

use super::{GrpcStream, stream_response};
use crate::proto::v1 as pb;
use crate::service::Service;

/// The tonic `Election` service.
pub struct ElectionGrpc(pub Service);

#[tonic::async_trait]
impl pb::election_server::Election for ElectionGrpc {
    type CampaignStream = GrpcStream<pb::CampaignEvent>;
    type ObserveStream = GrpcStream<pb::LeaderResponse>;

    async fn campaign(
        &self,
        req: Request<pb::CampaignRequest>,
    ) -> Result<Response<Self::CampaignStream>, Status> {
        Ok(stream_response(self.0.campaign(req.into_inner()).await?))
    }

    async fn leader(
        &self,
        req: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        Ok(Response::new(self.0.leader(req.into_inner()).await?))
    }

    async fn observe(
        &self,
        req: Request<pb::ObserveRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        Ok(stream_response(self.0.observe(req.into_inner()).await?))
    }

    async fn resign(
        &self,
        req: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        Ok(Response::new(self.0.resign(req.into_inner()).await?))
    }

    async fn list(
        &self,
        req: Request<pb::ListElectionsRequest>,
    ) -> Result<Response<pb::ListElectionsResponse>, Status> {
        Ok(Response::new(
            self.0.list_elections(req.into_inner()).await?,
        ))
    }
}
