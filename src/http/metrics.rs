//! `GET /metrics`: the service's metrics for Prometheus and its kin (see
//! [`service::metrics`](crate::service::metrics)).

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::service::{Service, metrics::CONTENT_TYPE};

/// The `/metrics` route.
pub fn router() -> Router<Service> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(svc): State<Service>) -> Response {
    match svc.metrics_text().await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
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
