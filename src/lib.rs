//! baton: a fair lock and leader-election service.
//!
//! Layers, top to bottom (nothing calls upward): the transport
//! ([`server`], with [`tls`] when asked) serves the surfaces [`grpc`] and [`http`] on one port; they
//! call the [`service`] layer, which validates requests and maps them onto
//! the [`engine`], whose embedded backend is made durable by [`store`].
//! Clients sit on top: [`client`] is the Rust client library, [`cli`] the
//! client subcommands of the `baton` binary built on it. [`auth`] decides
//! who may touch which keys, for every surface alike.

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod engine;
pub mod etcd;
pub mod grpc;
pub mod http;
pub mod proto;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
