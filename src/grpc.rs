//! The gRPC face of plangate: Envoy's ext_authz `Check` (`authz`) and
//! RateLimitService `ShouldRateLimit` (`rls`), and the one module that maps a
//! [`Decision`](crate::engine::Decision) onto the wire (`answer`). The services only translate;
//! all deciding happens in the engine.

pub mod answer;
pub mod authz;
pub mod baseline;
pub mod rls;

pub use authz::AuthzService;
pub use rls::RlsService;
