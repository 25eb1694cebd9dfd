//! One decide-and-record step for both gRPC services: the decision, its metrics, its log event,
//! and a store failure (which the engine's failure policy has already answered) counted and
//! logged.
//!
//! The log event (target `plangate::decision`): every refused request at `info` (with
//! `shadow=true` when shadow mode let it through), every admitted one at `debug` (or a sample of
//! them at `info`, `--log-admitted-sample`), with Envoy's request id and the decision's names —
//! never a key value.

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
    caller: Caller<'_>,
) -> Decision {
    let watch = Stopwatch::start();
    let d = engine.decide_in(snap, req, now).await;
    record(metrics, service, d, req, watch.seconds(), now, caller)
}

/// Who asked, for the log and the trace: Envoy's request id and the caller's W3C
/// `traceparent`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Caller<'a> {
    pub request_id: Option<&'a str>,
    pub traceparent: Option<&'a str>,
}

/// Decides the requests of one RLS call all or nothing ([`Engine::decide_all_in`]), and
/// records each.
pub(crate) async fn decide_all(
    engine: &Engine,
    metrics: &Metrics,
    service: Service,
    snap: &Snapshot,
    reqs: &[engine::Request<'_>],
    now: Nanos,
    caller: Caller<'_>,
) -> Vec<Decision> {
    let watch = Stopwatch::start();
    let decisions = engine.decide_all_in(snap, reqs, now).await;
    let seconds = watch.seconds();
    decisions
        .into_iter()
        .zip(reqs)
        .map(|(d, req)| record(metrics, service, d, req, seconds, now, caller))
        .collect()
}

/// Records one decision: metrics, its span (when traces are exported), the log event, a store
/// failure.
fn record(
    metrics: &Metrics,
    service: Service,
    d: Decision,
    req: &engine::Request<'_>,
    seconds: f64,
    now: Nanos,
    caller: Caller<'_>,
) -> Decision {
    let Caller {
        request_id,
        traceparent,
    } = caller;
    metrics.decided(service, &d, seconds, now);
    if crate::traces::enabled() {
        let started = std::time::UNIX_EPOCH
            + std::time::Duration::from_nanos(u64::try_from(now).unwrap_or(0));
        crate::traces::decision(service.as_str(), &d, request_id, traceparent, started);
    }
    if let Some(e) = &d.store_error
        && let Some(failures) = metrics.store_failed(now)
    {
        tracing::warn!(
            service = service.as_str(),
            error = %e,
            kind = e.kind().as_str(),
            outcome = d.outcome.as_str(),
            failures,
            "store errors; failure policy applied (one line a second at most)"
        );
    }
    // One event shape: every admitted decision at debug, or a sample at info; every refusal at
    // info, with why.
    macro_rules! decision_event {
        ($level:expr, $($rest:tt)*) => {
            tracing::event!(
                target: "plangate::decision",
                $level,
                service = service.as_str(),
                request_id,
                outcome = d.outcome.as_str(),
                api = d.api.as_deref(),
                stage = d.stage.as_deref(),
                method = d.method.as_deref(),
                key_id = d.key_id.as_deref(),
                plan = d.plan_id.as_deref(),
                hits = req.hits,
                $($rest)*
            )
        };
    }
    if !d.admitted() {
        decision_event!(
            tracing::Level::INFO,
            reason = d.reason.map(|r| r.as_str()),
            decided_by = d.decided_by.map(|k| k.as_str()),
            shadow = d.shadow,
            "{}",
            if d.shadow {
                "refused in shadow mode; let through"
            } else {
                "refused"
            }
        );
    } else if tracing::enabled!(target: "plangate::decision", tracing::Level::DEBUG) {
        decision_event!(tracing::Level::DEBUG, "admitted");
    } else if metrics.admitted_sampled() {
        decision_event!(tracing::Level::INFO, "admitted (sampled)");
    }
    d
}
