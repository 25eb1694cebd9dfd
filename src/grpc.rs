//! The gRPC face of plangate: Envoy's ext_authz `Check` (`authz`) and RateLimitService
//! `ShouldRateLimit` (`rls`) read requests; `record` decides and records one request for
//! either; `answer`, the one module that builds responses, maps a
//! [`Decision`](crate::engine::Decision) onto each wire. All deciding happens in the engine.

pub mod answer;
pub mod authz;
mod record;
pub mod rls;
pub mod serve;
mod wire;

pub use authz::AuthzService;
pub use rls::RlsService;
pub use serve::Served;
