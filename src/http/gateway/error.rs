//! Gateway errors as grpc-gateway writes them: `{"code":5,"message":"...",
//! "details":[]}` with the HTTP status grpc-gateway maps each gRPC code to.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::Serialize;
use tonic::Code;

use crate::service::ServiceError;

/// An error answer of the JSON gateway.
#[derive(Clone, Debug, Serialize)]
pub struct GatewayError {
    /// The gRPC code, as its number.
    pub code: i32,
    /// What went wrong.
    pub message: String,
    /// Always empty; kept for grpc-gateway compatibility.
    pub details: Vec<serde_json::Value>,
}

impl GatewayError {
    /// An error with this code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code: code as i32,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// The HTTP status for the code, as grpc-gateway maps it.
    pub fn status(&self) -> StatusCode {
        match Code::from_i32(self.code) {
            Code::Ok => StatusCode::OK,
            Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ServiceError> for GatewayError {
    fn from(e: ServiceError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let challenge = self.code == Code::Unauthenticated as i32;
        let mut r = (self.status(), Json(self)).into_response();
        if challenge {
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static(crate::http::auth::BEARER_CHALLENGE),
            );
        }
        r
    }
}
