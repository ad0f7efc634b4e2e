//! `baton.v1.Status` over gRPC: a thin adapter onto the service layer.

use tonic::{Request, Response, Status};

use super::for_caller;
use crate::proto::v1 as pb;
use crate::service::Service;

/// The tonic `Status` service.
pub struct StatusGrpc(pub Service);

#[tonic::async_trait]
impl pb::status_server::Status for StatusGrpc {
    async fn get(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(
            for_caller(&self.0, &req).status(req.into_inner()).await?,
        ))
    }
}
