//! `GET /health`: etcd's health check, for load balancers and probes that
//! speak HTTP rather than `grpc.health.v1`. Healthy means the backend
//! answers now (on the etcd backend: etcd is reachable through this
//! gateway), so a balancer stops sending clients to a gateway that has lost
//! etcd and would only tell them UNAVAILABLE.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use crate::service::Service;

/// The `/health` route.
pub fn router() -> Router<Service> {
    Router::new().route("/health", get(health))
}

async fn health(State(svc): State<Service>) -> Response {
    match svc.health().await {
        Ok(()) => Json(json!({"health": "true", "reason": ""})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"health": "false", "reason": e.to_string()})),
        )
            .into_response(),
    }
}
