//! baton: a fair lock and leader-election service.
//!
//! Layers, top to bottom (nothing calls upward): the transport
//! ([`server`], with [`tls`] when asked) serves the surfaces [`grpc`] and [`http`] on one port; they
//! call the [`service`] layer, which validates requests and maps them onto
//! the [`engine`], whose embedded backend is made durable by [`store`]; the
//! [`etcd`] backend runs the same engine beside it, its journal in etcd.
//! The records a journal keeps ([`store::Record`]) live in `store`, the
//! lowest of these layers, so the engine that produces them and both
//! journals that write them import downward only.
//! Clients sit on top: [`client`] is the Rust client library, [`cli`] the
//! client subcommands of the `baton` binary built on it. [`auth`] decides
//! who may touch which keys, for every surface alike. [`proto`], the
//! generated API, is shared and low. `tests/layering.rs` checks that no
//! module imports a layer above its own.
//!
//! Two builds: the default feature `server` is all of it; `client`
//! (`default-features = false, features = ["client"]`) is [`client`] and
//! [`proto`] alone, on tonic and prost, for programs that only talk to a
//! baton server.

// In the client build the server's modules do not exist, so the links
// above to them cannot resolve there.
#![cfg_attr(not(feature = "server"), allow(rustdoc::broken_intra_doc_links))]

// The client build: the Rust client library and the API it speaks.
pub mod client;
pub mod proto;

// The server build (the default): everything else.
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod engine;
#[cfg(feature = "server")]
pub mod etcd;
#[cfg(feature = "server")]
pub mod grpc;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod service;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod tls;
