//! plangate: Amazon API Gateway usage plans for Envoy and Istio — the service.
//!
//! A request flows one way: the gRPC layer (`grpc`) builds an [`engine::Request`], the
//! [`engine::Engine`] reads the current [`snapshot::Snapshot`], lists the limits that apply and
//! has the [`store::Store`] check and charge them all at once, and the resulting
//! [`engine::Decision`] is mapped back onto the wire by `grpc::answer`.
//!
//! Layers, highest first: a module imports only from the layers below its own, and the modules on
//! one line are independent of each other. This table is the one source of the order:
//! `tests/layers.rs` reads it and fails on an upward import or on a module missing from it.
//!
//! ```text
//! server                   serve: listeners, wiring
//! console                  the operator console (HTML at /ui/)
//! management, control      the typed gRPC management API (proto/plangate/v1); AWS's REST API
//! admin                    the admin HTTP API
//! grpc, reload             the wire (ext_authz, RLS); hot reload
//! usage, metrics, traces   usage reports; Prometheus; OpenTelemetry spans
//! engine, migrate          the decision in AWS order; import from AWS
//! catalog                  keys and plans made at runtime, kept in the store, shared
//! store, config            counters (memory, persisted, Redis); file → compile → snapshot
//! snapshot                 the compiled model
//! limit, transport         bucket and quota arithmetic, counter identities; TCP/TLS connections
//! clock, baseline          time as a parameter; the benchmarks' empty handler
//! ```
//!
//! The contract (concepts, decision order, answers, operations) is docs/semantics.md.

pub mod admin;
pub mod baseline;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod console;
pub mod control;
pub mod engine;
pub mod grpc;
pub mod limit;
pub mod management;
pub mod metrics;
pub mod migrate;
pub mod reload;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod traces;
pub mod transport;
pub mod usage;
