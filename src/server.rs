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
    auth::{self, Authorizer, Caller},
    config::{Backend, ServeArgs},
    engine::{Engine, clock::Clock, embedded::EmbeddedEngine},
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
    /// The auth file or the cluster secret file cannot be used, or is
    /// missing where it must be.
    #[error("{0}")]
    Auth(String),
    /// The chosen backend or store could not start.
    #[error("{0}")]
    Backend(String),
    /// Serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Builds the engine the flags ask for, reading time from `clock`; `local`
/// is the bound address (a gateway over etcd advertises it unless told
/// otherwise).
pub fn engine(
    args: &ServeArgs,
    local: std::net::SocketAddr,
    tls: bool,
    cluster_secrets: &[String],
    clock: Clock,
) -> Result<Arc<dyn Engine>, ServerError> {
    match args.backend {
        Backend::Embedded if args.memory => Ok(Arc::new(EmbeddedEngine::in_memory(
            args.embedded_config(clock),
        ))),
        Backend::Embedded => {
            let (journal, snapshot) = RedbJournal::open(&args.data_dir)
                .map_err(|e| ServerError::Backend(e.to_string()))?;
            tracing::info!(
                dir = %args.data_dir.display(),
                holds = snapshot.holds.len(),
                "opened the durable store"
            );
            Ok(Arc::new(EmbeddedEngine::durable(
                args.embedded_config(clock),
                Box::new(journal),
                snapshot,
            )))
        }
        Backend::Etcd => {
            let mut config = args.etcd_config();
            config.forward_secret = cluster_secrets
                .first()
                .map(|s| crate::engine::remote::ForwardSecret(s.clone()));
            let url = advertise_url(args, local, tls)?;
            let engine = ClusterEngine::start(&config, args.embedded_config(clock), url.clone())
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
    authorizer: Option<Arc<Authorizer>>,
) -> Result<axum::Router, ServerError> {
    // With tokens, a request whose credential was never looked at acts as
    // nobody: refused, not let through.
    let service = match &authorizer {
        Some(_) => service.with_caller(Caller::Anonymous),
        None => service,
    };
    let http = http::router(service.clone(), &args.cors)?;
    let mut app = grpc::routes(service)?
        .prepare()
        .into_axum_router()
        .fallback_service(http);
    // Who is calling, for gRPC and HTTP alike; the service layer decides.
    if let Some(authorizer) = authorizer {
        app = app.layer(axum::middleware::from_fn_with_state(
            authorizer,
            http::auth::authenticate,
        ));
    }
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
    let (authorizer, cluster_secrets) = authorizer(&args)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: args.listen,
            source,
        })?;
    let local = listener.local_addr()?;
    // One clock for the engine's driver and the service layer, so the times
    // the service reports are the times the driver decides by.
    let clock = Clock::system();
    // After binding: a gateway over etcd advertises the address it got.
    let engine = engine(&args, local, tls.is_some(), &cluster_secrets, clock)?;
    let service =
        Service::new(engine.clone(), args.service_limits(), shutdown.clone()).with_clock(clock);
    if let Some(a) = &authorizer {
        reload_on_sighup(a.clone(), shutdown.clone());
    }
    let app = app(&args, service, local, tls.is_some(), authorizer)?;
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

/// The tokens of `--auth-file` and the secrets of `--cluster-secret-file`,
/// read before the server binds so a bad file stops it at start.
fn authorizer(args: &ServeArgs) -> Result<(Option<Arc<Authorizer>>, Vec<String>), ServerError> {
    let cluster_secrets = match &args.cluster_secret_file {
        Some(path) => {
            auth::file::warn_if_exposed(path);
            auth::file::load_cluster_secrets(path)
                .map_err(|e| ServerError::Auth(format!("--cluster-secret-file: {e}")))?
        }
        None => Vec::new(),
    };
    let Some(path) = &args.auth_file else {
        return Ok((None, cluster_secrets));
    };
    // Safe by default: without a shared secret a primary would have to
    // accept forwarded calls from anyone, or refuse every follower.
    if args.backend == Backend::Etcd && cluster_secrets.is_empty() {
        return Err(ServerError::Auth(
            "--backend etcd with --auth-file needs --cluster-secret-file: the secret gateways forward calls to the primary with (the same file on every gateway)".into(),
        ));
    }
    let authorizer = Authorizer::load(path, &cluster_secrets)
        .map_err(|e| ServerError::Auth(format!("--auth-file: {e}")))?;
    tracing::info!(file = %path.display(), "tokens required (--auth-file)");
    if args.tls_cert_file.is_none() && !args.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %args.listen,
            "tokens will cross the network in plaintext: serve TLS (--tls-cert-file) beyond loopback"
        );
    }
    Ok((Some(Arc::new(authorizer)), cluster_secrets))
}

/// Re-reads the auth file on every SIGHUP until shutdown. A file that does
/// not parse is refused with its line and the rules in force stay.
fn reload_on_sighup(authorizer: Arc<Authorizer>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: the auth file will not be reloaded");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    got = hup.recv() => if got.is_none() { return },
                }
                match authorizer.reload() {
                    Ok(n) => tracing::info!(
                        file = %authorizer.path().display(),
                        tokens = n,
                        "reloaded the auth file"
                    ),
                    Err(e) => {
                        tracing::error!("auth file refused, the previous rules stay in force: {e}")
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (authorizer, shutdown);
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
