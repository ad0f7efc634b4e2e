//! The generated API types: prost messages, tonic clients and servers, and
//! their canonical proto3 JSON (serde) mapping, from `proto/baton/v1`.

/// `baton.v1`: the Lock and Election services and their messages.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("baton.v1");
    include!(concat!(env!("OUT_DIR"), "/baton.v1.serde.rs"));
}

/// The encoded `FileDescriptorSet` of every baton proto, for gRPC reflection
/// and for generating the gateway's OpenAPI document.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/baton_descriptor.bin"));

pub mod codec;
