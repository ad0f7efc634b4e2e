//! Compiles `proto/` into Rust with no system `protoc`: `protox` parses the
//! protos in pure Rust, `tonic-prost-build` generates messages and services
//! from the descriptor set, and `pbjson-build` generates the canonical proto3
//! JSON mapping the HTTP gateway speaks. The encoded descriptor set is kept
//! for gRPC reflection and the OpenAPI document.
//!
//! The client build (no `server` feature) generates messages and clients
//! only: no service stubs (they need tonic's server) and no JSON mapping
//! (serde and pbjson), which only the server speaks.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "baton/v1/lock.proto",
    "baton/v1/election.proto",
    "baton/v1/status.proto",
    "baton/v1/forward.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let fds = protox::compile(PROTOS, ["proto"])?;
    let descriptor_bytes = fds.encode_to_vec();
    fs::write(out_dir.join("baton_descriptor.bin"), &descriptor_bytes)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(cfg!(feature = "server"))
        // Small per-call buffers: see src/proto/codec.rs.
        .codec_path("crate::proto::codec::LeanCodec")
        .compile_fds(fds)?;

    #[cfg(feature = "server")]
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .build(&[".baton.v1"])?;
    Ok(())
}
