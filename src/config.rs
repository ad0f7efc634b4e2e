//! The command line and environment: `baton [serve] [flags]`. Every flag can
//! also be set as `BATON_<FLAG>` in the environment (clap's `env`). The
//! client subcommands' arguments live with them in [`crate::cli`].

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::{clock::Clock, embedded::EmbeddedConfig, table::TableLimits};
use crate::etcd::EtcdConfig;
use crate::server::accept::ConnLimits;
use crate::service::ServiceLimits;

/// baton: a fair lock and leader-election service (gRPC, JSON and etcd's
/// /mod/v2 API on one port).
#[derive(Debug, Parser)]
#[command(name = "baton", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; with none, baton serves.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server flags, when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// baton's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(Box<ServeArgs>),
    /// The client subcommands: lock, elect, leader, observe, release, status.
    #[command(flatten)]
    Client(Box<crate::cli::ClientCommand>),
}

/// Which engine backend keeps the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// This process, durable in --data-dir (or in memory with --memory).
    Embedded,
    /// An etcd v3 cluster, making this process a stateless gateway.
    Etcd,
}

/// How the server runs.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on for gRPC and HTTP alike.
    #[arg(long, env = "BATON_LISTEN", default_value = "127.0.0.1:4001")]
    pub listen: SocketAddr,
    /// Directory of the durable embedded store (created on first start).
    #[arg(long, env = "BATON_DATA_DIR", default_value = "baton.data")]
    pub data_dir: PathBuf,
    /// Keep state in memory only: everything is lost on exit.
    #[arg(long, env = "BATON_MEMORY")]
    pub memory: bool,
    /// Where state is kept.
    #[arg(long, env = "BATON_BACKEND", value_enum, default_value_t = Backend::Embedded)]
    pub backend: Backend,
    /// PEM certificate chain: serve gRPC and HTTP over TLS on --listen
    /// (with --tls-key-file).
    #[arg(long, env = "BATON_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "BATON_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificate(s): with TLS on, only clients presenting a
    /// certificate signed by one of them may connect.
    #[arg(long, env = "BATON_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// TOML file of tokens (`[[token]]` with name, secret or secret_sha256,
    /// prefixes, rights): with it, every call needs a token allowed to make
    /// it (see README "Tokens"). Re-read on SIGHUP.
    #[arg(long, env = "BATON_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// File holding the secret gateways share (`--backend etcd`): a
    /// follower forwards with it, and a primary accepts forwarded calls
    /// only with it. Required with --auth-file on the etcd backend. One
    /// secret per line: the first is sent, every one is accepted.
    #[arg(long, env = "BATON_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Allowed CORS origins, comma-separated, `*` for any; none by default.
    #[arg(long, env = "BATON_CORS", value_delimiter = ',')]
    pub cors: Vec<String>,
    /// Host names (or host:port) requests may be addressed to, comma-separated,
    /// `*` for any (a guard against DNS rebinding). Default on a loopback
    /// --listen: `localhost`, `127.0.0.1`, `[::1]` and the listen address, any
    /// port; on other addresses: any host.
    #[arg(long, env = "BATON_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Seconds a connection may take to send a complete request head
    /// (counted from when the server starts waiting for one), so slow or
    /// silent clients cannot hold connections open.
    #[arg(long, env = "BATON_HEADER_READ_TIMEOUT_SECS", default_value_t = ConnLimits::default().header_read_timeout.as_secs())]
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may go without sending anything before the
    /// request fails (a slow-body slowloris).
    #[arg(long, env = "BATON_BODY_READ_TIMEOUT_SECS", default_value_t = ConnLimits::default().body_read_timeout.as_secs())]
    pub body_read_timeout_secs: u64,
    /// Seconds an HTTP/1.1 keep-alive connection may stay open with no
    /// request in progress before it is closed.
    #[arg(long, env = "BATON_IDLE_TIMEOUT_SECS", default_value_t = ConnLimits::default().idle_timeout.as_secs())]
    pub idle_timeout_secs: u64,
    /// Open connections at most; beyond it new connections are closed at
    /// once (lowered at start to fit the open-files limit).
    #[arg(long, env = "BATON_MAX_CONNECTIONS", default_value_t = ConnLimits::default().max_connections)]
    pub max_connections: usize,
    /// Seconds of silence after which the server checks that a client is
    /// still there (HTTP/2 PING, TCP keep-alive probe).
    #[arg(long, env = "BATON_KEEPALIVE_INTERVAL_SECS", default_value_t = ConnLimits::default().keepalive_interval.as_secs())]
    pub keepalive_interval_secs: u64,
    /// Seconds a client has to answer that check before its connection (and
    /// every wait on it) is dropped.
    #[arg(long, env = "BATON_KEEPALIVE_TIMEOUT_SECS", default_value_t = ConnLimits::default().keepalive_timeout.as_secs())]
    pub keepalive_timeout_secs: u64,
    /// Longest key (lock or election name), in bytes.
    #[arg(long, env = "BATON_MAX_KEY_BYTES", default_value_t = ServiceLimits::default().max_key_bytes)]
    pub max_key_bytes: usize,
    /// Longest value (or candidate name), in bytes.
    #[arg(long, env = "BATON_MAX_VALUE_BYTES", default_value_t = ServiceLimits::default().max_value_bytes)]
    pub max_value_bytes: usize,
    /// Longest ttl, in seconds.
    #[arg(long, env = "BATON_MAX_TTL_SECS", default_value_t = ServiceLimits::default().max_ttl_ms / 1000)]
    pub max_ttl_secs: u64,
    /// Longest lock-delay a request may ask for, in seconds.
    #[arg(long, env = "BATON_MAX_LOCK_DELAY_SECS", default_value_t = ServiceLimits::default().max_lock_delay_ms / 1000)]
    pub max_lock_delay_secs: u64,
    /// Open server streams (waits, watches, observes, blocking HTTP requests).
    #[arg(long, env = "BATON_MAX_STREAMS", default_value_t = ServiceLimits::default().max_streams)]
    pub max_streams: usize,
    /// Entries (holder and queue) one key may have.
    #[arg(long, env = "BATON_MAX_ENTRIES_PER_KEY", default_value_t = TableLimits::default().max_entries_per_key)]
    pub max_entries_per_key: usize,
    /// Entries across all keys.
    #[arg(long, env = "BATON_MAX_ENTRIES", default_value_t = TableLimits::default().max_entries)]
    pub max_entries: usize,
    /// Waiting requests across all keys.
    #[arg(long, env = "BATON_MAX_WAITERS", default_value_t = TableLimits::default().max_waiters)]
    pub max_waiters: usize,
    /// Events buffered per watcher before a slow watcher is cut off.
    #[arg(long, env = "BATON_WATCH_BUFFER", default_value_t = EmbeddedConfig::default().watch_buffer)]
    pub watch_buffer: usize,
    /// etcd client URLs for `--backend etcd`, comma-separated.
    #[arg(
        long,
        env = "BATON_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,
    /// Prefix of every key baton writes to etcd.
    #[arg(long, env = "BATON_ETCD_PREFIX", default_value = "/baton/")]
    pub etcd_prefix: String,
    /// etcd user, when etcd has authentication enabled.
    #[arg(long, env = "BATON_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// Password of --etcd-user.
    #[arg(long, env = "BATON_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<String>,
    /// PEM CA bundle for etcd's server certificates (with https:// endpoints).
    #[arg(long, env = "BATON_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// PEM client certificate for etcd's client-certificate authentication.
    #[arg(long, env = "BATON_ETCD_CERT_FILE")]
    pub etcd_cert_file: Option<PathBuf>,
    /// PEM private key of --etcd-cert-file.
    #[arg(long, env = "BATON_ETCD_KEY_FILE")]
    pub etcd_key_file: Option<PathBuf>,
    /// How long one etcd request may take before the client gets
    /// UNAVAILABLE; also how long a call at a gateway waits for a primary
    /// to be elected.
    #[arg(long, env = "BATON_ETCD_TIMEOUT_MS", default_value_t = EtcdConfig::default().timeout.as_millis() as u64)]
    pub etcd_timeout_ms: u64,
    /// TTL of the lease the primary's election key is on: a primary that
    /// dies is replaced about this long after.
    #[arg(long, env = "BATON_ETCD_PRIMARY_TTL_SECS", default_value_t = EtcdConfig::default().primary_ttl_secs)]
    pub etcd_primary_ttl_secs: u64,
    /// How often the primary compacts etcd's history (as kube-apiserver
    /// does), in seconds; 0 leaves it to etcd's --auto-compaction-retention.
    #[arg(long, env = "BATON_ETCD_COMPACTION_INTERVAL_SECS", default_value_t = EtcdConfig::default().compaction_interval.as_secs())]
    pub etcd_compaction_interval_secs: u64,
    /// Journal commits the primary keeps in flight in etcd at once (1 to
    /// 16). Above 1, a batch goes to etcd while the one before it is still
    /// being replicated, so etcd can fsync several in one go; each is
    /// answered only once it and every batch before it are in.
    #[arg(long, env = "BATON_ETCD_JOURNAL_DEPTH", default_value_t = EtcdConfig::default().journal_depth)]
    pub etcd_journal_depth: usize,
    /// How long the first attempt of an etcd request at one member may
    /// take before it is tried on another member (a frozen member accepts
    /// connections but never answers); later attempts get twice as long,
    /// all within --etcd-timeout-ms. Keep it well below the primary's
    /// lease ttl.
    #[arg(long, env = "BATON_ETCD_ATTEMPT_TIMEOUT_MS", default_value_t = EtcdConfig::default().attempt_timeout.as_millis() as u64)]
    pub etcd_attempt_timeout_ms: u64,
    /// How often an etcd member out of rotation (it failed a request) is
    /// probed, to bring it back once it answers.
    #[arg(long, env = "BATON_ETCD_HEALTH_INTERVAL_MS", default_value_t = EtcdConfig::default().health_interval.as_millis() as u64)]
    pub etcd_health_interval_ms: u64,
    /// PEM CA bundle a gateway checks the primary's certificate against
    /// when it forwards over https:// (`--backend etcd` with TLS on the
    /// listeners). Default: the system's roots. As etcd's
    /// --peer-trusted-ca-file: gateways with certificates from a private CA
    /// set it to that CA.
    #[arg(long, env = "BATON_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// PEM client certificate a gateway presents to the primary when it
    /// forwards (for a primary with --tls-client-ca-file).
    #[arg(long, env = "BATON_PEER_CERT_FILE", requires = "peer_key_file")]
    pub peer_cert_file: Option<PathBuf>,
    /// PEM private key of --peer-cert-file.
    #[arg(long, env = "BATON_PEER_KEY_FILE", requires = "peer_cert_file")]
    pub peer_key_file: Option<PathBuf>,
    /// The gRPC URL other gateways reach this one at when it is primary
    /// (`--backend etcd`). Default: `http://` (or `https://` with TLS) and
    /// the listen address; required when listening on 0.0.0.0 or [::].
    #[arg(long, env = "BATON_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
}

impl ServeArgs {
    /// The service layer's limits.
    pub fn service_limits(&self) -> ServiceLimits {
        ServiceLimits {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            max_ttl_ms: self.max_ttl_secs.saturating_mul(1000),
            max_streams: self.max_streams,
            max_lock_delay_ms: self.max_lock_delay_secs.saturating_mul(1000),
        }
    }

    /// The transport's connection limits and timeouts.
    pub fn conn_limits(&self) -> ConnLimits {
        use std::time::Duration;
        ConnLimits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs.max(1)),
            body_read_timeout: Duration::from_secs(self.body_read_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
            max_connections: self.max_connections.max(1),
            keepalive_interval: Duration::from_secs(self.keepalive_interval_secs.max(1)),
            keepalive_timeout: Duration::from_secs(self.keepalive_timeout_secs.max(1)),
        }
    }

    /// The embedded engine's settings, on `clock`.
    pub fn embedded_config(&self, clock: Clock) -> EmbeddedConfig {
        EmbeddedConfig {
            clock,
            limits: TableLimits {
                max_entries_per_key: self.max_entries_per_key,
                max_entries: self.max_entries,
                max_waiters: self.max_waiters,
            },
            watch_buffer: self.watch_buffer,
        }
    }

    /// The etcd backend's settings.
    pub fn etcd_config(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: self
                .etcd_endpoints
                .iter()
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty())
                .collect(),
            prefix: self.etcd_prefix.clone(),
            user: self.etcd_user.clone(),
            password: self.etcd_password.clone(),
            ca_file: self.etcd_ca_file.clone(),
            cert_file: self.etcd_cert_file.clone(),
            key_file: self.etcd_key_file.clone(),
            timeout: std::time::Duration::from_millis(self.etcd_timeout_ms.max(1)),
            primary_ttl_secs: self.etcd_primary_ttl_secs,
            compaction_interval: std::time::Duration::from_secs(self.etcd_compaction_interval_secs),
            journal_depth: self.etcd_journal_depth,
            attempt_timeout: std::time::Duration::from_millis(self.etcd_attempt_timeout_ms),
            health_interval: std::time::Duration::from_millis(self.etcd_health_interval_ms),
            // Read from --cluster-secret-file by the server at start.
            forward_secret: None,
            peer_trusted_ca_file: self.peer_trusted_ca_file.clone(),
            peer_cert_file: self.peer_cert_file.clone(),
            peer_key_file: self.peer_key_file.clone(),
        }
    }
}
