//! `baton.v1.Lock` over gRPC: a thin adapter onto the service layer.

use tonic::{Request, Response, Status};

use super::{GrpcStream, for_caller, stream_response};
use crate::proto::v1 as pb;
use crate::service::Service;

/// The tonic `Lock` service.
pub struct LockGrpc(pub Service);

#[tonic::async_trait]
impl pb::lock_server::Lock for LockGrpc {
    type WaitStream = GrpcStream<pb::WaitEvent>;
    type WatchStream = GrpcStream<pb::LockEvent>;

    async fn wait(
        &self,
        req: Request<pb::WaitRequest>,
    ) -> Result<Response<Self::WaitStream>, Status> {
        Ok(stream_response(
            for_caller(&self.0, &req).wait(req.into_inner()).await?,
        ))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        Ok(Response::new(
            for_caller(&self.0, &req).renew(req.into_inner()).await?,
        ))
    }

    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        Ok(Response::new(
            for_caller(&self.0, &req).release(req.into_inner()).await?,
        ))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        Ok(Response::new(
            for_caller(&self.0, &req).get(req.into_inner()).await?,
        ))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        Ok(Response::new(
            for_caller(&self.0, &req).list(req.into_inner()).await?,
        ))
    }

    async fn check(
        &self,
        req: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        Ok(Response::new(
            for_caller(&self.0, &req).check(req.into_inner()).await?,
        ))
    }

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Ok(stream_response(
            for_caller(&self.0, &req).watch(req.into_inner()).await?,
        ))
    }
}
