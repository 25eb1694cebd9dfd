//! Generates plangate's own gRPC API (proto/plangate/v1/management.proto) at build time.
//!
//! The .proto files are compiled by protox, a protobuf compiler written in Rust, so that a fresh
//! clone builds with `cargo build` alone: no system `protoc` to install, and no generated code in
//! the repository. The encoded descriptor set is written next to the code for gRPC server
//! reflection. (Envoy's APIs come generated from the `envoy-types` crate.)

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &["proto/plangate/v1/management.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("plangate_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
