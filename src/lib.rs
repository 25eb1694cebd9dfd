//! plangate: Amazon API Gateway usage plans for Envoy and Istio.
//!
//! A request flows one way: the gRPC layer builds an [`engine::Request`], the [`engine::Engine`]
//! reads the current [`snapshot::Snapshot`], lists the limits that apply and has the
//! [`store::Store`] check and charge them all at once, and the resulting [`engine::Decision`] is
//! mapped back onto the wire.

pub mod admin;
pub mod bench;
pub mod clock;
pub mod config;
pub mod engine;
pub mod grpc;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod usage;
