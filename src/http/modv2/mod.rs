//! etcd 0.3/0.4's `/mod/v2` lock and leader API, translated into the same
//! service calls the gRPC API uses. A blocking `POST` consumes `Lock.Wait`
//! until acquisition; a client that hangs up drops the stream, which
//! withdraws its request. No lock semantics live here.

pub mod error;
pub mod params;

use axum::{
    Router,
    body::Bytes,
    extract::rejection::BytesRejection,
    response::{IntoResponse, Response},
    routing::any,
};
use futures::StreamExt;
use http::{Method, StatusCode, Uri, header};

use super::auth::Authed;
use crate::proto::v1::{self as pb, campaign_event, release_request, renew_request, wait_event};
use crate::service::{Rpc, Service, ServiceError, ServiceStream};
use error::{Cause, ModError};
use params::Params;

/// The `/mod/v2` routes.
pub fn router() -> Router<Service> {
    Router::new()
        .route("/mod/v2/lock/{*key}", any(lock))
        .route("/mod/v2/leader/{*key}", any(leader))
        .route("/mod/v2", any(no_route))
        .route("/mod/v2/", any(no_route))
        .route("/mod/v2/{*rest}", any(no_route))
}

/// Methods of `/mod/v2/lock/K`.
const LOCK_METHODS: &str = "GET, HEAD, POST, PUT, DELETE";
/// Methods of `/mod/v2/leader/K`.
const LEADER_METHODS: &str = "GET, HEAD, PUT, DELETE";

/// Anything under `/mod/v2` that is no lock or leader route: etcd's
/// "Key not found", as JSON like every other error here.
async fn no_route(uri: Uri) -> Response {
    ModError::no_route(uri.path()).into_response()
}

/// The request body, or the error body saying why it could not be read
/// (413 past the body limit).
fn read_body(body: Result<Bytes, BytesRejection>, cause: Cause) -> Result<Bytes, ModError> {
    body.map_err(|e| ModError::body(cause, e.status(), &e.body_text()))
}

/// A success: `text/plain; charset=utf-8`, no trailing newline.
fn text(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn key_of(uri: &Uri, prefix: &str, cause: Cause) -> Result<String, ModError> {
    let raw = uri.path().strip_prefix(prefix).unwrap_or_default();
    params::decode_path(raw.as_bytes(), cause)
}

async fn lock(
    Authed(svc): Authed,
    method: Method,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let cause = match method {
        Method::POST => Cause::Acquire,
        Method::PUT => Cause::Renew,
        Method::DELETE => Cause::Release,
        Method::GET | Method::HEAD => Cause::Get,
        _ => {
            return ModError::method_not_allowed(&method, uri.path(), LOCK_METHODS).into_response();
        }
    };
    let result = async {
        let body = read_body(body, cause)?;
        let key = key_of(&uri, "/mod/v2/lock/", cause)?;
        let rpc = match cause {
            Cause::Acquire => Rpc::Wait,
            Cause::Renew => Rpc::Renew,
            Cause::Release => Rpc::Release,
            _ => Rpc::Get,
        };
        // Credentials first, as etcd checked them: an unknown caller learns
        // nothing from the request's validation.
        svc.authenticated(rpc, &key)
            .map_err(|e| ModError::from_service(e, cause))?;
        let p = Params::parse(uri.query(), &body, cause)?;
        match cause {
            Cause::Acquire => acquire(&svc, key, &p).await,
            Cause::Renew => renew(&svc, key, &p).await,
            Cause::Release => release(&svc, key, &p).await,
            _ => get_lock(&svc, key, &p).await,
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn leader(
    Authed(svc): Authed,
    method: Method,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let cause = match method {
        Method::PUT => Cause::Set,
        Method::DELETE => Cause::Delete,
        Method::GET | Method::HEAD => Cause::Get,
        _ => {
            return ModError::method_not_allowed(&method, uri.path(), LEADER_METHODS)
                .into_response();
        }
    };
    let result = async {
        let body = read_body(body, cause)?;
        let key = key_of(&uri, "/mod/v2/leader/", cause)?;
        let rpc = match cause {
            Cause::Set => Rpc::Campaign,
            Cause::Delete => Rpc::Resign,
            _ => Rpc::Leader,
        };
        svc.authenticated(rpc, &key)
            .map_err(|e| ModError::from_service(e, cause))?;
        let p = Params::parse(uri.query(), &body, cause)?;
        match cause {
            Cause::Set => campaign(&svc, key, &p).await,
            Cause::Delete => resign(&svc, key, &p).await,
            _ => get_leader(&svc, key).await,
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `ttl` in seconds: required, an integer ≥ 0, at most the configured bound.
fn ttl_ms(svc: &Service, p: &Params, cause: Cause) -> Result<u64, ModError> {
    let secs: i128 = p
        .get("ttl")
        .and_then(|t| t.trim().parse().ok())
        .filter(|&t: &i128| t >= 0)
        .ok_or(ModError::ttl_nan(cause))?;
    let max_secs = svc.limits().max_ttl_ms / 1000;
    if secs > i128::from(max_secs) {
        return Err(ModError::ttl_too_large(cause, max_secs));
    }
    Ok(secs as u64 * 1000)
}

/// `timeout` in seconds: absent or negative = forever, 0 = try once.
fn timeout_ms(p: &Params, cause: Cause) -> Result<Option<u64>, ModError> {
    match p.non_empty("timeout") {
        None => Ok(None),
        Some(t) => {
            let secs: i128 = t.trim().parse().map_err(|_| ModError::timeout_nan(cause))?;
            Ok((secs >= 0).then(|| u64::try_from(secs).unwrap_or(u64::MAX).saturating_mul(1000)))
        }
    }
}

/// `index` xor `value`.
enum Which {
    Index(u64),
    Value(String),
}

fn which(p: &Params, cause: Cause) -> Result<Which, ModError> {
    match (p.non_empty("index"), p.non_empty("value")) {
        (Some(_), Some(_)) => Err(ModError::index_and_value(cause)),
        (Some(i), None) => i
            .trim()
            .parse()
            .map(Which::Index)
            .map_err(|_| ModError::index_nan(cause)),
        (None, Some(v)) => Ok(Which::Value(v.to_owned())),
        (None, None) => Err(ModError::index_or_value_required(cause)),
    }
}

async fn acquire(svc: &Service, key: String, p: &Params) -> Result<Response, ModError> {
    let cause = Cause::Acquire;
    let req = pb::WaitRequest {
        key,
        value: p.get("value").unwrap_or_default().to_owned(),
        ttl_ms: ttl_ms(svc, p, cause)?,
        timeout_ms: timeout_ms(p, cause)?,
        // The seed's lock module has locks only.
        limit: 1,
        lock_delay_ms: 0,
    };
    let stream = svc.wait(req).await;
    answer_on_grant(stream, cause, |e| match e.event {
        Some(wait_event::Event::Acquired(a)) => Some(a.index),
        _ => None,
    })
    .await
}

/// Follows a wait until `granted` finds the index in a step, and answers
/// with it. Dropping the stream early (the client hung up) withdraws it.
async fn answer_on_grant<T>(
    stream: Result<ServiceStream<T>, ServiceError>,
    cause: Cause,
    granted: impl Fn(T) -> Option<u64>,
) -> Result<Response, ModError> {
    let mut stream = stream.map_err(|e| ModError::from_service(e, cause))?;
    while let Some(item) = stream.next().await {
        let step = item.map_err(|e| ModError::from_service(e, cause))?;
        if let Some(index) = granted(step) {
            return Ok(text(index.to_string()));
        }
    }
    Err(ModError::NotAcquired(
        "the wait ended before the lock was acquired".into(),
    ))
}

async fn renew(svc: &Service, key: String, p: &Params) -> Result<Response, ModError> {
    let cause = Cause::Renew;
    let ttl_ms = ttl_ms(svc, p, cause)?;
    let target = match which(p, cause)? {
        Which::Index(i) => renew_request::Target::Index(i),
        Which::Value(v) => renew_request::Target::Value(v),
    };
    svc.renew(pb::RenewRequest {
        key,
        target: Some(target),
        ttl_ms,
    })
    .await
    .map_err(|e| ModError::from_service(e, cause))?;
    Ok(text(String::new()))
}

async fn release(svc: &Service, key: String, p: &Params) -> Result<Response, ModError> {
    let cause = Cause::Release;
    let target = match which(p, cause)? {
        Which::Index(i) => release_request::Target::Index(i),
        Which::Value(v) => release_request::Target::Value(v),
    };
    svc.release(pb::ReleaseRequest {
        key,
        target: Some(target),
    })
    .await
    .map_err(|e| ModError::from_service(e, cause))?;
    Ok(text(String::new()))
}

async fn get_lock(svc: &Service, key: String, p: &Params) -> Result<Response, ModError> {
    let cause = Cause::Get;
    let want_index = match p.get("field") {
        None | Some("") | Some("value") => false,
        Some("index") => true,
        Some(_) => return Err(ModError::invalid_field(cause)),
    };
    let got = svc
        .get(pb::GetRequest { key })
        .await
        .map_err(|e| ModError::from_service(e, cause))?;
    Ok(text(match got.holder {
        None => String::new(),
        Some(h) if want_index => h.index.to_string(),
        Some(h) => h.value,
    }))
}

async fn campaign(svc: &Service, election: String, p: &Params) -> Result<Response, ModError> {
    let cause = Cause::Set;
    let ttl_ms = ttl_ms(svc, p, cause)?;
    let name = p.non_empty("name").ok_or(ModError::name_required(cause))?;
    let req = pb::CampaignRequest {
        election,
        name: name.to_owned(),
        ttl_ms,
        timeout_ms: timeout_ms(p, cause)?,
        lock_delay_ms: 0,
    };
    let stream = svc.campaign(req).await;
    answer_on_grant(stream, cause, |e| match e.event {
        Some(campaign_event::Event::Elected(a)) => Some(a.index),
        _ => None,
    })
    .await
}

async fn resign(svc: &Service, election: String, p: &Params) -> Result<Response, ModError> {
    let cause = Cause::Delete;
    let name = p.non_empty("name").ok_or(ModError::name_required(cause))?;
    svc.resign(pb::ResignRequest {
        election,
        name: name.to_owned(),
    })
    .await
    .map_err(|e| ModError::from_service(e, cause))?;
    Ok(text(String::new()))
}

async fn get_leader(svc: &Service, election: String) -> Result<Response, ModError> {
    let got = svc
        .leader(pb::LeaderRequest { election })
        .await
        .map_err(|e| ModError::from_service(e, Cause::Get))?;
    Ok(text(got.leader.map(|l| l.name).unwrap_or_default()))
}
