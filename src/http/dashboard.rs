//! The dashboard at `/mod/dashboard/`. `/mod/dashboard` redirects there, as
//! etcd's did.

use axum::{Router, response::Html, routing::get};
use http::{StatusCode, header};

use crate::service::Service;

/// The dashboard's routes.
pub fn router() -> Router<Service> {
    Router::new()
        .route(
            "/mod/dashboard",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/mod/dashboard/")]) }),
        )
        .route("/mod/dashboard/", get(index))
}

async fn index() -> Html<&'static str> {
    Html(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>baton</title></head>\
         <body><h1>baton</h1><p>The dashboard is not built yet.</p></body></html>",
    )
}
