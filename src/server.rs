//! The transport: one listener for gRPC (h2c, or h2 over [`tls`]) and
//! HTTP/1.1 alike, clean shutdown on SIGINT/SIGTERM. [`accept`] serves the
//! connections with their limits; [`fdlimit`] raises the open-files limit.

pub mod accept;
pub mod fdlimit;

use std::{sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Backend, ServeArgs},
    engine::{Engine, embedded::EmbeddedEngine},
    etcd::ClusterEngine,
    grpc, http,
    service::Service,
    store::redb_journal::RedbJournal,
    tls,
};

/// How long open connections get to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The gRPC services could not be set up.
    #[error(transparent)]
    Grpc(#[from] grpc::GrpcSetupError),
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// `--cors` was malformed.
    #[error(transparent)]
    Cors(#[from] http::cors::CorsError),
    /// `--allowed-hosts` was malformed.
    #[error(transparent)]
    Hosts(#[from] http::origin::HostListError),
    /// The chosen backend or store could not start.
    #[error("{0}")]
    Backend(String),
    /// Serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Builds the engine the flags ask for; `local` is the bound address (a
/// gateway over etcd advertises it unless told otherwise).
pub fn engine(
    args: &ServeArgs,
    local: std::net::SocketAddr,
    tls: bool,
) -> Result<Arc<dyn Engine>, ServerError> {
    match args.backend {
        Backend::Embedded if args.memory => {
            Ok(Arc::new(EmbeddedEngine::in_memory(args.embedded_config())))
        }
        Backend::Embedded => {
            let (journal, snapshot) = RedbJournal::open(&args.data_dir)
                .map_err(|e| ServerError::Backend(e.to_string()))?;
            tracing::info!(
                dir = %args.data_dir.display(),
                holds = snapshot.holds.len(),
                "opened the durable store"
            );
            Ok(Arc::new(EmbeddedEngine::durable(
                args.embedded_config(),
                Box::new(journal),
                snapshot,
            )))
        }
        Backend::Etcd => {
            let config = args.etcd_config();
            let url = advertise_url(args, local, tls)?;
            let engine = ClusterEngine::start(&config, args.embedded_config(), url.clone())
                .map_err(|e| ServerError::Backend(e.to_string()))?;
            tracing::info!(endpoints = ?config.endpoints, prefix = %config.prefix, advertise = %url, "using etcd");
            Ok(Arc::new(engine))
        }
    }
}

/// Everything the port serves: gRPC, and HTTP as its fallback, behind the
/// Host and Origin guard, for a server listening on `local`. Public so that
/// tests can drive the same stack in process.
/// The URL other gateways forward to when this one is primary.
fn advertise_url(
    args: &ServeArgs,
    local: std::net::SocketAddr,
    tls: bool,
) -> Result<String, ServerError> {
    if let Some(url) = &args.advertise_url {
        return Ok(url.clone());
    }
    if local.ip().is_unspecified() {
        return Err(ServerError::Backend(format!(
            "--backend etcd listening on {local} needs --advertise-url: the address other gateways reach this one at"
        )));
    }
    let scheme = if tls { "https" } else { "http" };
    Ok(format!("{scheme}://{local}"))
}

pub fn app(
    args: &ServeArgs,
    service: Service,
    local: std::net::SocketAddr,
    tls: bool,
) -> Result<axum::Router, ServerError> {
    let http = http::router(service.clone(), &args.cors)?;
    let app = grpc::routes(service)?
        .prepare()
        .into_axum_router()
        .fallback_service(http);
    // The Host and Origin checks come first, for gRPC and HTTP alike.
    let guard = http::origin::Guard::new(&args.allowed_hosts, &args.cors, local, tls)?;
    Ok(app.layer(axum::middleware::from_fn_with_state(
        Arc::new(guard),
        http::origin::guard,
    )))
}

/// Serves until `shutdown` is cancelled, then ends open streams and stops.
pub async fn serve(args: ServeArgs, shutdown: CancellationToken) -> Result<(), ServerError> {
    // Before anything opens files: every connection is one.
    let open_files = fdlimit::raise_open_files_limit();
    let mut limits = args.conn_limits();
    limits.max_connections = fdlimit::fit_connections(limits.max_connections, open_files);
    // Checked before binding, so a bad file stops the server at start.
    let tls = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => Some(tls::server_config(
            cert,
            key,
            args.tls_client_ca_file.as_deref(),
        )?),
        _ => None,
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: args.listen,
            source,
        })?;
    let local = listener.local_addr()?;
    // After binding: a gateway over etcd advertises the address it got.
    let engine = engine(&args, local, tls.is_some())?;
    let service = Service::new(engine.clone(), args.service_limits(), shutdown.clone());
    let app = app(&args, service, local, tls.is_some())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        %local,
        backend = ?args.backend,
        %scheme,
        max_connections = limits.max_connections,
        "baton listening"
    );
    // A line for scripts and tests that start baton on port 0.
    println!("baton listening on {scheme}://{local}");

    let served = accept::run(
        listener,
        tls.map(TlsAcceptor::from),
        app,
        limits,
        shutdown.clone(),
        SHUTDOWN_GRACE,
    )
    .await
    .map_err(ServerError::from);
    // Open streams have ended by now; let the backend give up what only
    // they needed (the etcd backend's queued entries).
    if tokio::time::timeout(SHUTDOWN_GRACE, engine.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("the backend did not finish shutting down in time");
    }
    served
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
