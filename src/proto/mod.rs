//! The generated API types: prost messages, tonic clients and servers, and
//! their canonical proto3 JSON (serde) mapping, from `proto/baton/v1`.
//!
//! The client build (`--no-default-features --features client`) gets the
//! messages and clients only: the servers and the JSON mapping are the
//! server's (its gRPC services and HTTP gateway), and they would bring tonic's
//! server, serde and pbjson into a program that only speaks gRPC to baton.

/// `baton.v1`: the Lock and Election services and their messages.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("baton.v1");
    #[cfg(feature = "server")]
    include!(concat!(env!("OUT_DIR"), "/baton.v1.serde.rs"));
}

/// The encoded `FileDescriptorSet` of every baton proto, for gRPC reflection
/// and for generating the gateway's OpenAPI document.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/baton_descriptor.bin"));

pub mod codec;
