//! The HTTP surface on the shared port: etcd's `/mod/v2` API, the JSON
//! gateway, the dashboard, `/metrics`, `/health`. It never re-implements lock semantics: every
//! handler calls the service layer, acting for the caller [`auth`] found in
//! the request (the service decides what that caller may do).

pub mod auth;
pub mod cors;
pub mod dashboard;
pub mod gateway;
pub mod health;
pub mod metrics;
pub mod modv2;
pub mod origin;

use axum::Router;

use crate::service::Service;

/// Everything served over plain HTTP, with CORS as configured.
pub fn router(service: Service, cors_origins: &[String]) -> Result<Router, cors::CorsError> {
    let router = Router::new()
        .merge(modv2::router())
        .merge(gateway::router())
        .merge(dashboard::router())
        .merge(metrics::router())
        .merge(health::router())
        .with_state(service);
    Ok(match cors::layer(cors_origins)? {
        Some(layer) => router.layer(layer),
        None => router,
    })
}
