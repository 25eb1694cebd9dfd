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

use crate::clock::{Nanos, Stopwatch};
use crate::engine::{self, Decision, Engine};
use crate::metrics::{Metrics, Service};
use crate::snapshot::Snapshot;

/// Decides one request for a service and records it: decision metrics, and a store failure
/// (which the engine's failure policy has already answered) counted and logged.
pub(crate) async fn decide(
    engine: &Engine,
    metrics: &Metrics,
    service: Service,
    snap: &Snapshot,
    req: &engine::Request<'_>,
    now: Nanos,
) -> Decision {
    let watch = Stopwatch::start();
    let d = engine.decide_in(snap, req, now).await;
    metrics.decided(service, &d, watch.seconds());
    if let Some(e) = &d.store_error {
        metrics.store_errors.inc();
        tracing::warn!(
            service = service.as_str(),
            error = %e,
            outcome = d.outcome.as_str(),
            "store error; failure policy applied"
        );
    }
    tracing::debug!(
        service = service.as_str(),
        outcome = d.outcome.as_str(),
        reason = d.reason.map(|r| r.as_str()),
        decided_by = d.decided_by.map(|k| k.as_str()),
        key_id = d.key_id.as_deref(),
        api = d.api.as_deref(),
        stage = d.stage.as_deref(),
        hits = req.hits,
        "decision"
    );
    d
}
