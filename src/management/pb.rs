//! The code build.rs generates from proto/plangate/v1/management.proto (never committed), and
//! the encoded descriptor set for gRPC server reflection.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("plangate.v1");

/// The encoded descriptor set of plangate's protos.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/plangate_descriptor.bin"));
