//! `baton.v1.Election` over gRPC: a thin adapter onto the service layer.

use tonic::{Request, Response, Status};

use super::{GrpcStream, for_caller, stream_response};
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
        Ok(stream_response(
            for_caller(&self.0, &req).campaign(req.into_inner()).await?,
        ))
    }

    async fn leader(
        &self,
        req: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        Ok(Response::new(
            for_caller(&self.0, &req).leader(req.into_inner()).await?,
        ))
    }

    async fn observe(
        &self,
        req: Request<pb::ObserveRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        Ok(stream_response(
            for_caller(&self.0, &req).observe(req.into_inner()).await?,
        ))
    }

    async fn resign(
        &self,
        req: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        Ok(Response::new(
            for_caller(&self.0, &req).resign(req.into_inner()).await?,
        ))
    }

    async fn list(
        &self,
        req: Request<pb::ListElectionsRequest>,
    ) -> Result<Response<pb::ListElectionsResponse>, Status> {
        Ok(Response::new(
            for_caller(&self.0, &req)
                .list_elections(req.into_inner())
                .await?,
        ))
    }
}
