//! `--cors ORIGINS`, as etcd's `-cors`: off unless asked for; `*` allows any
//! origin; otherwise a list of exact origins.

use http::{HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// An origin given to `--cors` is not a valid header value.
#[derive(Debug, thiserror::Error)]
#[error("invalid --cors origin {0:?}")]
pub struct CorsError(String);

/// The CORS layer for `origins`, or `None` when CORS is off.
pub fn layer(origins: &[String]) -> Result<Option<CorsLayer>, CorsError> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|o| HeaderValue::from_str(o).map_err(|_| CorsError((*o).to_owned())))
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([header::CONTENT_TYPE, header::ACCEPT, header::AUTHORIZATION])
            .expose_headers([header::HeaderName::from_static("x-etcd-index")])
            .max_age(std::time::Duration::from_secs(600)),
    ))
}
