//! The transport's half of `--auth-file`: reads each request's credential
//! (gRPC and HTTP alike, since both are HTTP requests on the shared port)
//! and attaches the [`Caller`] it stands for to the request. It refuses
//! nothing itself: the service layer decides per RPC and key (see
//! [`crate::auth`]), so `/health`, the health and reflection services, the
//! dashboard's files and the OpenAPI document, which never reach the
//! service's checks, stay open.

use std::{convert::Infallible, sync::Arc};

use axum::{
    extract::{FromRequestParts, Request, State},
    middleware::Next,
    response::Response,
};
use http::request::Parts;

use crate::auth::{Authorizer, Caller, Credential};
use crate::service::Service;

/// `WWW-Authenticate` of a 401 outside `/mod/v2`.
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"baton\"";
/// `WWW-Authenticate` of a 401 on `/mod/v2`, where HTTP Basic works too.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"baton\"";

/// The middleware: authenticates the request's credential and stores the
/// caller in its extensions.
pub async fn authenticate(
    State(authorizer): State<Arc<Authorizer>>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let basic = path == "/mod/v2" || path.starts_with("/mod/v2/");
    let caller = authorizer.authenticate(Credential::from_headers(req.headers(), basic));
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The service acting for the request's caller: what HTTP handlers take
/// instead of `State<Service>`.
pub struct Authed(pub Service);

impl FromRequestParts<Service> for Authed {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, svc: &Service) -> Result<Self, Infallible> {
        Ok(Self(match parts.extensions.get::<Caller>() {
            Some(caller) => svc.with_caller(caller.clone()),
            None => svc.clone(),
        }))
    }
}
