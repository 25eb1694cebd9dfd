//! Decision → what Envoy sends to the client and to the upstream (shared/SPEC.md §3): status,
//! JSON body, `x-amzn-ErrorType`, `Retry-After`, rate-limit and quota headers, the `x-plangate-*`
//! identity headers, and dynamic metadata for access logs.
//!
//! This is the only place that knows what an outcome looks like on the wire, so that ext_authz
//! and RLS answers cannot drift apart.

use crate::config::file::RateLimitHeaders;
use crate::engine::{Decision, LimitConfig, LimitReport, Outcome};

/// Headers plangate sets on admitted requests; any the client sent are removed first.
pub const IDENTITY_PREFIX: &str = "x-plangate-";
pub const KEY_ID_HEADER: &str = "x-plangate-api-key-id";
pub const PLAN_HEADER: &str = "x-plangate-usage-plan";
pub const CUSTOMER_HEADER: &str = "x-plangate-customer-id";

/// The client-facing parts of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status the client gets (200 means: let the request through).
    pub http_status: u16,
    /// JSON body of a refusal.
    pub body: Option<&'static str>,
    /// Headers to the client (on refusal and on success).
    pub client_headers: Vec<(String, String)>,
    /// Headers to the upstream (admitted requests only).
    pub upstream_headers: Vec<(&'static str, String)>,
}

impl Answer {
    /// A request plangate cannot read (no HTTP attributes, no path).
    pub fn bad_request() -> Self {
        Answer {
            http_status: 400,
            body: Some(r#"{"message":"Bad Request"}"#),
            client_headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-amzn-ErrorType".into(), "BadRequestException".into()),
            ],
            upstream_headers: Vec::new(),
        }
    }
}

/// The answer for `d`, with rate-limit headers in `style`.
pub fn answer(d: &Decision, style: RateLimitHeaders) -> Answer {
    let (http_status, body, error_type) = match d.outcome {
        Outcome::Admitted => (200, None, None),
        Outcome::Forbidden => (
            403,
            Some(r#"{"message":"Forbidden"}"#),
            Some("ForbiddenException"),
        ),
        Outcome::MissingAuthenticationToken => (
            403,
            Some(r#"{"message":"Missing Authentication Token"}"#),
            Some("MissingAuthenticationTokenException"),
        ),
        Outcome::Throttled => (
            429,
            Some(r#"{"message":"Too Many Requests"}"#),
            Some("TooManyRequestsException"),
        ),
        Outcome::QuotaExceeded => (
            429,
            Some(r#"{"message":"Limit Exceeded"}"#),
            Some("LimitExceededException"),
        ),
        Outcome::Unavailable => (
            503,
            Some(r#"{"message":"Service Unavailable"}"#),
            Some("ServiceUnavailableException"),
        ),
    };
    let mut client_headers: Vec<(String, String)> = Vec::new();
    if let Some(t) = error_type {
        client_headers.push(("content-type".into(), "application/json".into()));
        client_headers.push(("x-amzn-ErrorType".into(), t.into()));
    }
    if let Some(secs) = d.retry_after_secs {
        client_headers.push(("retry-after".into(), secs.to_string()));
    }
    // Throttle headers: the evaluated throttles, the tightest one named (not on a quota refusal,
    // where the quota is what matters).
    if d.outcome != Outcome::QuotaExceeded {
        rate_limit_headers(d, style, &mut client_headers);
    }
    if let Some(q) = d.quota() {
        quota_headers(q, &mut client_headers);
    }
    let mut upstream_headers = Vec::new();
    if d.admitted() {
        if let Some(k) = &d.key_id {
            upstream_headers.push((KEY_ID_HEADER, k.to_string()));
        }
        if let Some(p) = &d.plan_id {
            upstream_headers.push((PLAN_HEADER, p.to_string()));
        }
        if let Some(c) = &d.customer_id {
            upstream_headers.push((CUSTOMER_HEADER, c.to_string()));
        }
    }
    Answer {
        http_status,
        body,
        client_headers,
        upstream_headers,
    }
}

/// The limit to show a client: the first that refused, else the one with the fewest units left
/// (the first of those on a tie).
pub fn tightest<'a>(
    limits: impl Iterator<Item = &'a LimitReport> + Clone,
) -> Option<&'a LimitReport> {
    limits
        .clone()
        .find(|l| !l.state.admitted)
        .or_else(|| limits.min_by_key(|l| l.state.remaining))
}

/// A throttle as a rate-limit policy: `q` requests (the burst) per window `w`, the seconds an
/// empty bucket takes to refill.
fn policy(l: &LimitReport) -> Option<(u64, u64)> {
    match l.config {
        LimitConfig::Throttle { rate, burst } => {
            let w = if rate > 0.0 {
                ((burst as f64 / rate).ceil() as u64).max(1)
            } else {
                0
            };
            Some((burst, w))
        }
        LimitConfig::Quota { .. } => None,
    }
}

fn secs_ceil(ns: Option<i64>) -> u64 {
    ns.map_or(0, |n| u64::try_from(n).unwrap_or(0).div_ceil(1_000_000_000))
}

fn rate_limit_headers(d: &Decision, style: RateLimitHeaders, out: &mut Vec<(String, String)>) {
    let throttles: Vec<&LimitReport> = d
        .limits
        .iter()
        .filter(|l| matches!(l.config, LimitConfig::Throttle { .. }))
        .collect();
    let Some(tight) = tightest(throttles.iter().copied()) else {
        return;
    };
    let Some((q, w)) = policy(tight) else {
        return;
    };
    let remaining = if tight.state.admitted {
        tight.state.remaining
    } else {
        0
    };
    let reset = if tight.state.admitted {
        secs_ceil(tight.state.reset_after)
    } else {
        d.retry_after_secs.unwrap_or(w)
    };
    match style {
        RateLimitHeaders::None => {}
        RateLimitHeaders::Ietf => {
            let policies: Vec<String> = throttles
                .iter()
                .filter_map(|l| {
                    policy(l).map(|(q, w)| format!("\"{}\";q={q};w={w}", l.kind.as_str()))
                })
                .collect();
            out.push(("ratelimit-policy".into(), policies.join(", ")));
            out.push((
                "ratelimit".into(),
                format!("\"{}\";r={remaining};t={reset}", tight.kind.as_str()),
            ));
        }
        RateLimitHeaders::XRatelimit => {
            out.push(("x-ratelimit-limit".into(), q.to_string()));
            out.push(("x-ratelimit-remaining".into(), remaining.to_string()));
            out.push(("x-ratelimit-reset".into(), reset.to_string()));
        }
    }
}

fn quota_headers(q: &LimitReport, out: &mut Vec<(String, String)>) {
    if let LimitConfig::Quota { limit, .. } = q.config {
        out.push(("x-quota-limit".into(), limit.to_string()));
        out.push(("x-quota-remaining".into(), q.state.remaining.to_string()));
        out.push((
            "x-quota-reset".into(),
            secs_ceil(q.state.reset_after).to_string(),
        ));
    }
}
