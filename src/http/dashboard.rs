//! The dashboard at `/mod/dashboard/`: the static page in `dashboard/`,
//! compiled into the binary so that it needs no files next to it and no
//! internet (no CDN, no web fonts). The page talks to the JSON gateway like
//! any other client; this module only serves its files. `/mod/dashboard`
//! redirects to `/mod/dashboard/`, as etcd's did.
//!
//! For development, `BATON_DASHBOARD_DIR=dashboard` serves the files from
//! disk instead, read again on every request (etcd's `ETCD_DASHBOARD_DIR`).
//!
//! Caching: every answer carries `Cache-Control: no-cache` and a strong
//! `ETag` (a hash of the bytes), so a browser revalidates each time and gets
//! `304 Not Modified` until the page changes, and a new binary never serves
//! a stale page.

use std::{
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use axum::{
    Router,
    body::Body,
    extract::Path as UrlPath,
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::service::Service;

/// The environment variable that serves the dashboard from a directory.
pub const DIR_ENV: &str = "BATON_DASHBOARD_DIR";

/// One file of the page, compiled in.
struct Asset {
    /// Its name under `/mod/dashboard/`.
    name: &'static str,
    body: &'static [u8],
    /// A hash of `body`, computed at compile time, for the `ETag`.
    hash: u64,
}

macro_rules! asset {
    ($name:literal) => {
        Asset {
            name: $name,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboard/", $name)),
            hash: fnv1a(include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/dashboard/",
                $name
            ))),
        }
    };
}

/// The page's files. Adding one to `dashboard/` means adding it here.
static ASSETS: &[Asset] = &[
    asset!("index.html"),
    asset!("app.js"),
    asset!("style.css"),
    asset!("favicon.svg"),
];

/// The page served for `/mod/dashboard/`.
const INDEX: &str = "index.html";

/// The policy for the HTML page: only its own files and the same-origin API.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes.
pub fn router() -> Router<Service> {
    let dir: Option<Arc<PathBuf>> = std::env::var_os(DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(|d| Arc::new(PathBuf::from(d)));
    if let Some(dir) = &dir {
        tracing::info!(dir = %dir.display(), "serving the dashboard from disk ({DIR_ENV})");
    }
    let index_dir = dir.clone();
    Router::new()
        .route(
            "/mod/dashboard",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/mod/dashboard/")]) }),
        )
        .route(
            "/mod/dashboard/",
            get(move |headers: HeaderMap| {
                let dir = index_dir.clone();
                async move { serve(dir.as_deref(), INDEX, &headers).await }
            }),
        )
        .route(
            "/mod/dashboard/{*path}",
            get(move |UrlPath(path): UrlPath<String>, headers: HeaderMap| {
                let dir = dir.clone();
                async move { serve(dir.as_deref(), &path, &headers).await }
            }),
        )
}

/// Answers one file: compiled in, or read from `dir` when it is set.
async fn serve(dir: Option<&PathBuf>, name: &str, headers: &HeaderMap) -> Response {
    let Some(content_type) = content_type(name) else {
        return not_found();
    };
    let (body, hash) = match dir {
        None => match ASSETS.iter().find(|a| a.name == name) {
            Some(asset) => (Body::from(asset.body), asset.hash),
            None => return not_found(),
        },
        Some(dir) => {
            let Some(path) = safe_join(dir, name) else {
                return not_found();
            };
            match tokio::fs::read(&path).await {
                Ok(bytes) => {
                    let hash = fnv1a(&bytes);
                    (Body::from(bytes), hash)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return not_found(),
                // A directory, or unreadable: nothing to serve under that name.
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "dashboard file unreadable");
                    return not_found();
                }
            }
        }
    };
    let etag = format!("\"{hash:016x}\"");
    let mut response = if if_none_match(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(body);
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if content_type.starts_with("text/html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        "not found\n",
    )
        .into_response()
}

/// The `Content-Type` of a dashboard file, by extension; `None` for kinds
/// the dashboard does not serve.
fn content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1;
    Some(match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => return None,
    })
}

/// `dir/name` if `name` is a plain relative path (no `..`, no absolute or
/// hidden parts), so a request can never leave the directory.
fn safe_join(dir: &Path, name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('\\') || name.contains('\0') {
        return None;
    }
    let rel = Path::new(name);
    let mut parts = 0;
    for c in rel.components() {
        match c {
            Component::Normal(part) if !part.to_string_lossy().starts_with('.') => parts += 1,
            _ => return None,
        }
    }
    (parts > 0).then(|| dir.join(rel))
}

/// True if `If-None-Match` names `etag` (weak comparison, as RFC 9110 asks
/// for this header) or is `*`.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// 64-bit FNV-1a: a small, stable hash, usable at compile time.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_compiled_asset_has_a_content_type_and_is_not_empty() {
        for asset in ASSETS {
            assert!(content_type(asset.name).is_some(), "{}", asset.name);
            assert!(!asset.body.is_empty(), "{}", asset.name);
            assert_eq!(asset.hash, fnv1a(asset.body), "{}", asset.name);
        }
        assert!(ASSETS.iter().any(|a| a.name == INDEX));
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("index.html"), Some("text/html; charset=utf-8"));
        assert_eq!(
            content_type("app.js"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(content_type("style.css"), Some("text/css; charset=utf-8"));
        assert_eq!(content_type("favicon.svg"), Some("image/svg+xml"));
        assert_eq!(content_type("README.md"), None);
        assert_eq!(content_type("Makefile"), None);
    }

    #[test]
    fn safe_join_stays_inside_the_directory() {
        let dir = Path::new("/srv/dash");
        assert_eq!(
            safe_join(dir, "app.js"),
            Some(PathBuf::from("/srv/dash/app.js"))
        );
        assert_eq!(
            safe_join(dir, "img/logo.svg"),
            Some(PathBuf::from("/srv/dash/img/logo.svg"))
        );
        for bad in [
            "",
            "../secret.html",
            "a/../../b.js",
            "/etc/passwd",
            ".git/config",
            "a\\..\\b.js",
            "./app.js",
        ] {
            assert_eq!(safe_join(dir, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn if_none_match_forms() {
        let etag = "\"00000000000000ab\"";
        let mut h = HeaderMap::new();
        assert!(!if_none_match(&h, etag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert!(!if_none_match(&h, etag));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"other\", W/\"00000000000000ab\""),
        );
        assert!(if_none_match(&h, etag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(&h, etag));
    }

    #[test]
    fn fnv1a_known_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
