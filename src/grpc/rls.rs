//! Envoy's RateLimitService: `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`.
//!
//! Each descriptor names one request through its entries (`api` and `stage`, or `host` for
//! custom domain names; `api_key`, `method`, `path`; the keys are configurable) and is decided
//! by the same engine as ext_authz, on the same counters. Envoy quirks handled here: request-level `hits_addend` 0 means 1; a descriptor's own
//! `hits_addend` (when present) wins, and 0 there means "check without charging"; `overall_code`
//! must be OK or OVER_LIMIT (Envoy treats UNKNOWN as an error); `:path` includes the query string.

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::{Request, Response, Status};

use super::answer;
use super::record;
use crate::engine::{self, Engine};
use crate::metrics::{Metrics, Service};
use crate::snapshot::Snapshot;

/// The RLS service over an engine.
pub struct RlsService {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    max_descriptors: usize,
    max_entries: usize,
}

/// Descriptors one request may carry, and entries one descriptor may carry, unless configured:
/// far above what Envoy sends (one descriptor per `rate_limits` entry of a route, a handful of
/// entries each), far below what a hostile client can pack into a request.
pub const DEFAULT_MAX_DESCRIPTORS: usize = 64;
pub const DEFAULT_MAX_DESCRIPTOR_ENTRIES: usize = 32;

impl RlsService {
    pub fn new(engine: Arc<Engine>, metrics: Arc<Metrics>) -> Self {
        RlsService {
            engine,
            metrics,
            max_descriptors: DEFAULT_MAX_DESCRIPTORS,
            max_entries: DEFAULT_MAX_DESCRIPTOR_ENTRIES,
        }
    }

    /// Bounds what one request may carry; beyond them it is refused (INVALID_ARGUMENT) before
    /// any decision.
    pub fn with_limits(mut self, max_descriptors: usize, max_entries: usize) -> Self {
        self.max_descriptors = max_descriptors;
        self.max_entries = max_entries;
        self
    }
}

/// The engine request a descriptor names.
fn descriptor_request<'a>(snap: &Snapshot, entries: &'a [Entry], hits: u64) -> engine::Request<'a> {
    let rls = &snap.rls;
    let get = |k: &str| {
        entries
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.as_str())
    };
    engine::Request::new(
        get(&rls.method).unwrap_or(""),
        get(&rls.path).unwrap_or(""),
        get(&rls.api_key),
        hits,
    )
    .stage(get(&rls.api), get(&rls.stage))
    .host(get(&rls.host))
}

#[tonic::async_trait]
impl RateLimitService for RlsService {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        // Envoy's request id, when it passes one in the call's metadata (for the log).
        let request_id = request
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // The caller's trace, when Envoy's tracing passes it in the call's metadata.
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let req = request.into_inner();
        // A request Envoy would never send is refused whole, before any decision or charge.
        if req.descriptors.len() > self.max_descriptors {
            return Err(Status::invalid_argument(format!(
                "{} descriptors; at most {} (--max-descriptors)",
                req.descriptors.len(),
                self.max_descriptors
            )));
        }
        if let Some(d) = req
            .descriptors
            .iter()
            .find(|d| d.entries.len() > self.max_entries)
        {
            return Err(Status::invalid_argument(format!(
                "a descriptor of {} entries; at most {} (--max-descriptor-entries)",
                d.entries.len(),
                self.max_entries
            )));
        }
        let snap = self.engine.snapshot();
        if req.domain != snap.rls.domain {
            self.metrics.rls_unknown_domain();
            tracing::warn!(
                domain = %req.domain,
                expected = %snap.rls.domain,
                "RLS: unknown domain; answering OK without limits"
            );
            return Ok(Response::new(answer::rls_unknown_domain(
                req.descriptors.len(),
            )));
        }
        // Request-level hits_addend: 0 (unset) means 1.
        let request_hits = u64::from(req.hits_addend.max(1));
        let now = self.engine.clock().now();
        let caller = record::Caller {
            request_id: request_id.as_deref(),
            traceparent: traceparent.as_deref(),
        };
        let reqs: Vec<engine::Request<'_>> = req
            .descriptors
            .iter()
            .map(|desc| {
                // A descriptor's own hits_addend wins; there 0 means check without charging.
                // Negative hits (refunds) are not supported: such a descriptor only checks.
                let hits = match (&desc.hits_addend, desc.is_negative_hits) {
                    (_, true) => 0,
                    (Some(h), false) => h.value,
                    (None, false) => request_hits,
                };
                descriptor_request(&snap, &desc.entries, hits)
            })
            .collect();
        // One descriptor (what Envoy's shipped configurations send) is one decision; several
        // are decided all or nothing, as one Check is.
        let decisions = match reqs.as_slice() {
            [one] => vec![
                record::decide(
                    &self.engine,
                    &self.metrics,
                    Service::Rls,
                    &snap,
                    one,
                    now,
                    caller,
                )
                .await,
            ],
            all => {
                record::decide_all(
                    &self.engine,
                    &self.metrics,
                    Service::Rls,
                    &snap,
                    all,
                    now,
                    caller,
                )
                .await
            }
        };
        Ok(Response::new(answer::rls_response(&decisions, &snap)))
    }
}
