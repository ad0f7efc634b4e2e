//! etcd's error body for `/mod/v2`: `{"errorCode":202,"message":"...",
//! "cause":"Acquire","index":0}` plus a newline, `application/json`,
//! `X-Etcd-Index: 0`, with the status etcd gave each code.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::service::ServiceError;

/// The operation an error came from, named as etcd's `cause` field names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// `POST /mod/v2/lock/K`.
    Acquire,
    /// `PUT /mod/v2/lock/K`.
    Renew,
    /// `DELETE /mod/v2/lock/K`.
    Release,
    /// `GET /mod/v2/lock/K` and `GET /mod/v2/leader/K`.
    Get,
    /// `PUT /mod/v2/leader/K`.
    Set,
    /// `DELETE /mod/v2/leader/K`.
    Delete,
}

impl Cause {
    /// The operation a request to `path` by `method` asks for; `Get` for
    /// anything that names none (used by answers given before routing, such
    /// as the cross-origin guard's).
    pub fn of(method: &http::Method, path: &str) -> Self {
        use http::Method;
        let leader = path.starts_with("/mod/v2/leader/");
        match *method {
            Method::POST if !leader => Self::Acquire,
            Method::PUT if leader => Self::Set,
            Method::PUT => Self::Renew,
            Method::DELETE if leader => Self::Delete,
            Method::DELETE => Self::Release,
            _ => Self::Get,
        }
    }

    /// The name etcd's `cause` field gives the operation.
    pub fn name(self) -> &'static str {
        match self {
            Self::Acquire => "Acquire",
            Self::Renew => "Renew",
            Self::Release => "Release",
            Self::Get => "Get",
            Self::Set => "Set",
            Self::Delete => "Delete",
        }
    }
}

/// An error answer of the `/mod/v2` API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModError {
    /// An etcd-coded error: JSON body.
    Etcd {
        /// etcd's error code.
        code: u32,
        /// The message.
        message: String,
        /// The operation.
        cause: Cause,
        /// The HTTP status.
        status: StatusCode,
    },
    /// A lock not acquired (timeout, or released while queued): status 500
    /// with a plain-text message, as the original module answered.
    NotAcquired(String),
    /// An etcd-coded error about the request itself rather than an
    /// operation (an unknown route, a method the route does not have), whose
    /// `cause` is the request path, as etcd gives the key in its errors.
    Request {
        /// etcd's error code.
        code: u32,
        /// The message.
        message: String,
        /// The request path.
        cause: String,
        /// The HTTP status.
        status: StatusCode,
        /// The `Allow` header of a 405.
        allow: Option<&'static str>,
    },
}

impl ModError {
    fn etcd(code: u32, message: impl Into<String>, cause: Cause, status: StatusCode) -> Self {
        Self::Etcd {
            code,
            message: message.into(),
            cause,
            status,
        }
    }

    /// 100: no entry with that index or value.
    pub fn key_not_found(cause: Cause) -> Self {
        Self::etcd(100, "Key not found", cause, StatusCode::NOT_FOUND)
    }
    /// 202: ttl missing or not a non-negative integer.
    pub fn ttl_nan(cause: Cause) -> Self {
        Self::etcd(
            202,
            "The given TTL in POST form is not a number",
            cause,
            StatusCode::BAD_REQUEST,
        )
    }
    /// 202 with the bound: ttl too large.
    pub fn ttl_too_large(cause: Cause, max_secs: u64) -> Self {
        Self::etcd(
            202,
            format!("The given TTL in POST form is out of range (at most {max_secs} seconds)"),
            cause,
            StatusCode::BAD_REQUEST,
        )
    }
    /// 203: index is not a number.
    pub fn index_nan(cause: Cause) -> Self {
        Self::etcd(
            203,
            "The given index in POST form is not a number",
            cause,
            StatusCode::BAD_REQUEST,
        )
    }
    /// 205: timeout is not a number.
    pub fn timeout_nan(cause: Cause) -> Self {
        Self::etcd(
            205,
            "The given timeout in POST form is not a number",
            cause,
            StatusCode::BAD_REQUEST,
        )
    }
    /// 206: leader name missing.
    pub fn name_required(cause: Cause) -> Self {
        Self::etcd(
            206,
            "Name is required in POST form",
            cause,
            StatusCode::BAD_REQUEST,
        )
    }
    /// 207: neither index nor value.
    pub fn index_or_value_required(cause: Cause) -> Self {
        Self::etcd(
            207,
            "Index or value is required",
            cause,
            StatusCode::BAD_REQUEST,
        )
    }
    /// 208: both index and value.
    pub fn index_and_value(cause: Cause) -> Self {
        Self::etcd(
            208,
            "Index and value cannot both be specified",
            cause,
            StatusCode::BAD_REQUEST,
        )
    }
    /// 209: unknown `field`.
    pub fn invalid_field(cause: Cause) -> Self {
        Self::etcd(209, "Invalid field", cause, StatusCode::BAD_REQUEST)
    }
    /// 210: anything else wrong with the request (bad encoding, sizes).
    pub fn invalid_form(cause: Cause, detail: &str) -> Self {
        Self::etcd(
            210,
            format!("Invalid POST form: {detail}"),
            cause,
            StatusCode::BAD_REQUEST,
        )
    }

    /// 100 for a path under `/mod/v2` that is no lock or leader route.
    pub fn no_route(path: &str) -> Self {
        Self::Request {
            code: 100,
            message: "Key not found".into(),
            cause: path.to_owned(),
            status: StatusCode::NOT_FOUND,
            allow: None,
        }
    }

    /// 405 with `Allow`: the route has no such method. etcd has no code for
    /// it; 210 (invalid request) is the closest.
    pub fn method_not_allowed(method: &http::Method, path: &str, allow: &'static str) -> Self {
        Self::Request {
            code: 210,
            message: format!("Method {method} is not allowed here (allowed: {allow})"),
            cause: path.to_owned(),
            status: StatusCode::METHOD_NOT_ALLOWED,
            allow: Some(allow),
        }
    }

    /// A body that could not be read: 413 when it is too large, else 400.
    pub fn body(cause: Cause, status: StatusCode, detail: &str) -> Self {
        Self::etcd(210, format!("Invalid POST form: {detail}"), cause, status)
    }

    /// 403: a cross-origin request (a web page the user visits) refused
    /// before it acts. etcd's code for a request it will not serve is 110.
    pub fn forbidden(cause: Cause, reason: &str) -> Self {
        Self::etcd(110, reason, cause, StatusCode::FORBIDDEN)
    }

    /// Maps a service error onto the API's errors.
    pub fn from_service(e: ServiceError, cause: Cause) -> Self {
        match e {
            ServiceError::InvalidArgument(m) => Self::invalid_form(cause, &m),
            ServiceError::NotFound(_) => Self::key_not_found(cause),
            // A semaphore key asked for as a lock is not acquired either.
            ServiceError::NotAcquired(m)
            | ServiceError::FailedPrecondition(m)
            | ServiceError::TimedOut(m)
            | ServiceError::Aborted(m) => Self::NotAcquired(m),
            // etcd's 300 was its internal-error code; the status says which.
            ServiceError::ResourceExhausted(m) => {
                Self::etcd(300, m, cause, StatusCode::TOO_MANY_REQUESTS)
            }
            ServiceError::Unavailable(m) => {
                Self::etcd(300, m, cause, StatusCode::SERVICE_UNAVAILABLE)
            }
            // etcd v2's auth: 110 with 401, and the challenge (see
            // `into_response`); a token outside its rights: 110 with 403.
            ServiceError::Unauthenticated(_) => Self::etcd(
                110,
                "The request requires user authentication",
                cause,
                StatusCode::UNAUTHORIZED,
            ),
            ServiceError::PermissionDenied(m) => Self::forbidden(cause, &m),
            ServiceError::Internal(m) => {
                Self::etcd(300, m, cause, StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    error_code: u32,
    message: &'a str,
    cause: &'a str,
    index: u64,
}

impl IntoResponse for ModError {
    fn into_response(self) -> Response {
        match self {
            Self::Etcd {
                code,
                message,
                cause,
                status,
            } => {
                let mut r = etcd_body(code, &message, cause.name(), status);
                if status == StatusCode::UNAUTHORIZED {
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(crate::http::auth::BASIC_CHALLENGE),
                    );
                }
                r
            }
            Self::Request {
                code,
                message,
                cause,
                status,
                allow,
            } => {
                let mut r = etcd_body(code, &message, &cause, status);
                if let Some(allow) = allow {
                    r.headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static(allow));
                }
                r
            }
            Self::NotAcquired(message) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{message}\n"),
            )
                .into_response(),
        }
    }
}

/// etcd's JSON error body and headers.
fn etcd_body(code: u32, message: &str, cause: &str, status: StatusCode) -> Response {
    let mut body = serde_json::to_string(&Body {
        error_code: code,
        message,
        cause,
        index: 0,
    })
    .unwrap_or_default();
    body.push('\n');
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("x-etcd-index", HeaderValue::from_static("0"));
    r
}
