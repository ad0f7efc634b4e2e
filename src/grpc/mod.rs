//! The gRPC surface: tonic services for `baton.v1.Lock`,
//! `baton.v1.Election` and `baton.v1.Status`, `baton.v1.Forward` (how
//! follower gateways reach the primary), plus server reflection (v1 and v1alpha, so grpcurl
//! of any age lists the API) and the standard health service.

mod election;
mod forward;
mod lock;
mod status;

pub use forward::EXCHANGE_PATH;

use futures::StreamExt;
use tonic::{Response, Status};

use crate::proto::{FILE_DESCRIPTOR_SET, v1 as pb};
use crate::service::{Service, ServiceStream};

/// A tonic server stream.
pub type GrpcStream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// Every gRPC service baton serves, ready to mount on the shared listener.
pub fn routes(service: Service) -> Result<tonic::service::Routes, GrpcSetupError> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        health_reporter
            .set_serving::<pb::lock_server::LockServer<lock::LockGrpc>>()
            .await;
        health_reporter
            .set_serving::<pb::election_server::ElectionServer<election::ElectionGrpc>>()
            .await;
        health_reporter
            .set_serving::<pb::status_server::StatusServer<status::StatusGrpc>>()
            .await;
        health_reporter
            .set_serving::<pb::forward_server::ForwardServer<forward::ForwardGrpc>>()
            .await;
    });
    let mut routes = tonic::service::Routes::default();
    routes = routes
        .add_service(pb::lock_server::LockServer::new(lock::LockGrpc(
            service.clone(),
        )))
        .add_service(pb::election_server::ElectionServer::new(
            election::ElectionGrpc(service.clone()),
        ))
        .add_service(pb::status_server::StatusServer::new(status::StatusGrpc(
            service.clone(),
        )))
        .add_service(pb::forward_server::ForwardServer::new(
            forward::ForwardGrpc(service),
        ))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok(routes)
}

/// The reflection service could not be built from the embedded descriptors.
#[derive(Debug, thiserror::Error)]
#[error("gRPC reflection setup failed: {0}")]
pub struct GrpcSetupError(#[from] tonic_reflection::server::Error);

fn stream_response<T: Send + 'static>(s: ServiceStream<T>) -> Response<GrpcStream<T>> {
    Response::new(Box::pin(s.map(|item| item.map_err(Status::from))))
}

/// The service acting for the caller the transport authenticated (see
/// [`crate::http::auth`]); without one, the service's own caller (open
/// without `--auth-file`, anonymous with it).
fn for_caller<T>(service: &Service, req: &tonic::Request<T>) -> Service {
    match req.extensions().get::<crate::auth::Caller>() {
        Some(caller) => service.with_caller(caller.clone()),
        None => service.clone(),
    }
}
