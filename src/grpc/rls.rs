//! Envoy's RateLimitService: `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`.
//!
//! Each descriptor names one request through its entries (`api`, `stage`, `api_key`, `method`,
//! `path`; the keys are configurable) and is decided by the same engine as ext_authz, on the same
//! counters. Envoy quirks handled here: request-level `hits_addend` 0 means 1; a descriptor's own
//! `hits_addend` (when present) wins, and 0 there means "check without charging"; `overall_code`
//! must be OK or OVER_LIMIT (Envoy treats UNKNOWN as an error); `:path` includes the query string.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit, rate_limit::Unit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use tonic::{Request, Response, Status};

use super::answer;
use crate::config::file::Period;
use crate::engine::{self, Decision, Engine, LimitConfig, LimitReport};
use crate::metrics::{Metrics, Service};
use crate::snapshot::Snapshot;

/// The RLS service over an engine.
pub struct RlsService {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
}

impl RlsService {
    pub fn new(engine: Arc<Engine>, metrics: Arc<Metrics>) -> Self {
        RlsService { engine, metrics }
    }
}

/// A token bucket's rate as `requests_per_unit` per `unit`: the smallest unit in which the rate
/// is a whole number (10/s → 10 per SECOND, 0.5/s → 30 per MINUTE), else per DAY, rounded.
pub fn rate_unit(rate: f64) -> (u32, Unit) {
    const UNITS: [(f64, Unit); 4] = [
        (1.0, Unit::Second),
        (60.0, Unit::Minute),
        (3600.0, Unit::Hour),
        (86400.0, Unit::Day),
    ];
    for (secs, unit) in UNITS {
        let n = rate * secs;
        if n >= 1.0 && (n - n.round()).abs() < 1e-6 {
            return (clamp_u32(n.round()), unit);
        }
    }
    (clamp_u32((rate * 86400.0).round()), Unit::Day)
}

fn clamp_u32(n: f64) -> u32 {
    if n >= u32::MAX as f64 {
        u32::MAX
    } else if n > 0.0 {
        n as u32
    } else {
        0
    }
}

fn current_limit(l: &LimitReport) -> RateLimit {
    let (requests_per_unit, unit) = match l.config {
        LimitConfig::Throttle { rate, .. } => rate_unit(rate),
        LimitConfig::Quota { limit, period, .. } => (
            u32::try_from(limit).unwrap_or(u32::MAX),
            match period {
                Period::Day => Unit::Day,
                Period::Week => Unit::Week,
                Period::Month => Unit::Month,
            },
        ),
    };
    RateLimit {
        name: l.kind.as_str().to_owned(),
        requests_per_unit,
        unit: unit as i32,
    }
}

/// Whole seconds, rounded up: Envoy truncates `duration_until_reset` to seconds for
/// `X-RateLimit-Reset`, and "0" would tell a client to retry at once when it must not.
fn duration(ns: i64) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(u64::try_from(ns).unwrap_or(0).div_ceil(1_000_000_000))
            .unwrap_or(i64::MAX),
        nanos: 0,
    }
}

/// One descriptor's status: the refusing limit, else the limit with the fewest units left.
fn status(d: &Decision) -> DescriptorStatus {
    let code = if d.admitted() {
        Code::Ok
    } else {
        Code::OverLimit
    };
    let Some(l) = answer::tightest(d.limits.iter()) else {
        return DescriptorStatus {
            code: code as i32,
            ..Default::default()
        };
    };
    let until = if l.state.admitted {
        l.state.reset_after
    } else {
        l.state.retry_after.or(l.state.reset_after)
    };
    DescriptorStatus {
        code: code as i32,
        current_limit: Some(current_limit(l)),
        limit_remaining: if d.admitted() {
            u32::try_from(l.state.remaining).unwrap_or(u32::MAX)
        } else {
            0
        },
        duration_until_reset: until.map(duration),
        ..Default::default()
    }
}

fn header(k: impl Into<String>, v: impl Into<String>) -> HeaderValue {
    HeaderValue {
        key: k.into(),
        value: v.into(),
        raw_value: Vec::new(),
    }
}

/// The engine request a descriptor names.
fn descriptor_request<'a>(
    snap: &Snapshot,
    entries: &'a [envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry],
    hits: u64,
) -> engine::Request<'a> {
    let rls = &snap.rls;
    let get = |k: &str| {
        entries
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.as_str())
    };
    let path = get(&rls.path).unwrap_or("");
    engine::Request {
        api: get(&rls.api),
        stage: get(&rls.stage),
        method: get(&rls.method).unwrap_or(""),
        path: path.split_once('?').map_or(path, |(p, _)| p),
        key: get(&rls.api_key).filter(|k| k.len() <= crate::config::compile::KEY_MAX_CHARS * 4),
        hits,
    }
}

#[tonic::async_trait]
impl RateLimitService for RlsService {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let req = request.into_inner();
        let snap = self.engine.snapshot();
        if req.domain != snap.rls.domain {
            self.metrics.rls_unknown_domain.inc();
            tracing::warn!(
                domain = %req.domain,
                expected = %snap.rls.domain,
                "RLS: unknown domain; answering OK without limits"
            );
            return Ok(Response::new(RateLimitResponse {
                overall_code: Code::Ok as i32,
                statuses: req
                    .descriptors
                    .iter()
                    .map(|_| DescriptorStatus {
                        code: Code::Ok as i32,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }));
        }
        // Request-level hits_addend: 0 (unset) means 1.
        let request_hits = u64::from(req.hits_addend.max(1));
        let now = self.engine.clock().now();
        let mut decisions = Vec::with_capacity(req.descriptors.len());
        for desc in &req.descriptors {
            // A descriptor's own hits_addend wins; there 0 means check without charging.
            // Negative hits (refunds) are not supported: such a descriptor only checks.
            let hits = match (&desc.hits_addend, desc.is_negative_hits) {
                (_, true) => 0,
                (Some(h), false) => h.value,
                (None, false) => request_hits,
            };
            let er = descriptor_request(&snap, &desc.entries, hits);
            let d = super::decide(&self.engine, &self.metrics, Service::Rls, &snap, &er, now).await;
            decisions.push(d);
        }
        let statuses: Vec<DescriptorStatus> = decisions.iter().map(status).collect();
        // The answer follows the first refused descriptor, else the first one.
        let deciding = decisions
            .iter()
            .find(|d| !d.admitted())
            .or(decisions.first());
        let over = decisions.iter().any(|d| !d.admitted());
        let mut resp = RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            ..Default::default()
        };
        if let Some(d) = deciding {
            let a = answer::answer(d, snap.rate_limit_headers);
            resp.response_headers_to_add = a
                .client_headers
                .iter()
                .map(|(k, v)| header(k.clone(), v.clone()))
                .collect();
            if over {
                resp.raw_body = a.body.unwrap_or_default().as_bytes().to_vec();
            } else {
                resp.request_headers_to_add = a
                    .upstream_headers
                    .iter()
                    .map(|(k, v)| header(*k, v.clone()))
                    .collect();
            }
        }
        Ok(Response::new(resp))
    }
}
