//! `GET /metrics`: the service's metrics for Prometheus and its kin (see
//! [`service::metrics`](crate::service::metrics)).

use axum::{
    Router,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::auth::{Authed, BEARER_CHALLENGE};
use crate::service::{Service, ServiceError, metrics::CONTENT_TYPE};

/// The `/metrics` route.
pub fn router() -> Router<Service> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(Authed(svc): Authed) -> Response {
    let text = |status: StatusCode, body: String| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
    };
    match svc.metrics_text().await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        // With --auth-file, a token with the right `metrics` is needed
        // (Prometheus's `authorization` scrape setting sends it).
        Err(ServiceError::Unauthenticated(m)) => (
            [(header::WWW_AUTHENTICATE, BEARER_CHALLENGE)],
            text(StatusCode::UNAUTHORIZED, format!("{m}\n")),
        )
            .into_response(),
        Err(ServiceError::PermissionDenied(m)) => {
            text(StatusCode::FORBIDDEN, format!("{m}\n")).into_response()
        }
        // The engine could not be asked for its counts (etcd unreachable):
        // a scrape failure, which is what the status says.
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("metrics unavailable: {e}\n"),
        )
            .into_response(),
    }
}
