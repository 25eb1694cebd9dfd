//! One decide-and-record step for both gRPC services: the decision, its metrics, and a store
//! failure (which the engine's failure policy has already answered) counted and logged.

use crate::clock::{Nanos, Stopwatch};
use crate::engine::{self, Decision, Engine};
use crate::metrics::{Metrics, Service};
use crate::snapshot::Snapshot;

/// Decides `req` at `now` against `snap` for `service`, and records it.
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
    metrics.decided(service, &d, watch.seconds(), now);
    if let Some(e) = &d.store_error {
        metrics.store_failed();
        tracing::warn!(
            service = service.as_str(),
            error = %e,
            kind = e.kind().as_str(),
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
