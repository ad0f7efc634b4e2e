//! The command line and environment: `baton [serve] [flags]`. Every flag can
//! also be set as `BATON_<FLAG>` in the environment (clap's `env`).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::{embedded::EmbeddedConfig, table::TableLimits};
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
    Serve(ServeArgs),
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
    /// Allowed CORS origins, comma-separated, `*` for any; none by default.
    #[arg(long, env = "BATON_CORS", value_delimiter = ',')]
    pub cors: Vec<String>,
    /// Longest key (lock or election name), in bytes.
    #[arg(long, env = "BATON_MAX_KEY_BYTES", default_value_t = ServiceLimits::default().max_key_bytes)]
    pub max_key_bytes: usize,
    /// Longest value (or candidate name), in bytes.
    #[arg(long, env = "BATON_MAX_VALUE_BYTES", default_value_t = ServiceLimits::default().max_value_bytes)]
    pub max_value_bytes: usize,
    /// Longest ttl, in seconds.
    #[arg(long, env = "BATON_MAX_TTL_SECS", default_value_t = ServiceLimits::default().max_ttl_ms / 1000)]
    pub max_ttl_secs: u64,
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
}

impl ServeArgs {
    /// The service layer's limits.
    pub fn service_limits(&self) -> ServiceLimits {
        ServiceLimits {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            max_ttl_ms: self.max_ttl_secs.saturating_mul(1000),
            max_streams: self.max_streams,
        }
    }

    /// The embedded engine's settings.
    pub fn embedded_config(&self) -> EmbeddedConfig {
        EmbeddedConfig {
            limits: TableLimits {
                max_entries_per_key: self.max_entries_per_key,
                max_entries: self.max_entries,
                max_waiters: self.max_waiters,
            },
            watch_buffer: self.watch_buffer,
        }
    }
}
