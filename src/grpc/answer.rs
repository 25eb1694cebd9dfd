//! Decision → the wire (docs/semantics.md, "Answers"): what Envoy sends to the client and to the
//! upstream — status, JSON body, `x-amzn-ErrorType`, `Retry-After`, rate-limit and quota headers,
//! the `x-plangate-*` identity headers — as an ext_authz `CheckResponse` (with dynamic metadata
//! for access logs) or an RLS `RateLimitResponse`.
//!
//! This is the only module that builds responses, so that ext_authz and RLS answers cannot drift
//! apart: [`answer`] decides what a client sees, [`check_response`] and [`rls_response`] put it
//! on each wire. `authz` and `rls` only read requests.

use envoy_types::ext_authz::v3::pb::{CheckResponse, HeaderAppendAction, HttpStatusCode};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit, rate_limit::Unit,
};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, Struct, Value, value::Kind};
use tonic::Status;

use std::borrow::Cow;

use crate::engine::{Decision, DenyReason, LimitConfig, LimitReport, Outcome};
use crate::limit::Period;
use crate::snapshot::responses::{GatewayResponse, GatewayResponses, ResponseType};
use crate::snapshot::{RateLimitHeaders, Snapshot};

/// Headers plangate sets on admitted requests; any the client sent are removed first.
pub const IDENTITY_PREFIX: &str = "x-plangate-";
pub const KEY_ID_HEADER: &str = "x-plangate-api-key-id";
pub const PLAN_HEADER: &str = "x-plangate-usage-plan";
pub const CUSTOMER_HEADER: &str = "x-plangate-customer-id";
/// On a request let through in shadow mode: the outcome enforcement would have answered.
pub const SHADOW_HEADER: &str = "x-plangate-shadow-outcome";

/// The client-facing parts of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status the client gets (200 means: let the request through).
    pub http_status: u16,
    /// Body of a refusal (JSON unless a gateway response says otherwise).
    pub body: Option<Cow<'static, str>>,
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
            body: Some(Cow::Borrowed(r#"{"message":"Bad Request"}"#)),
            client_headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-amzn-ErrorType".into(), "BadRequestException".into()),
            ],
            upstream_headers: Vec::new(),
        }
    }
}

/// The answer for `d` decided against `snap`: built-in, or as the request's API or the
/// configuration customises it (gateway responses).
pub fn answer(d: &Decision, snap: &Snapshot) -> Answer {
    if d.shadow && !d.admitted() {
        // Shadow mode: the client and the upstream see an admitted request; the upstream is
        // told what enforcement would have answered.
        let mut through = d.clone();
        through.outcome = Outcome::Admitted;
        through.retry_after_secs = None;
        let mut a = builtin(&through, snap.rate_limit_headers);
        a.upstream_headers
            .push((SHADOW_HEADER, d.outcome.as_str().to_owned()));
        return a;
    }
    let mut a = builtin(d, snap.rate_limit_headers);
    if let Some((t, message)) = response_type(d) {
        let api = d
            .api
            .as_deref()
            .and_then(|name| snap.apis.get(name))
            .map(|api| &api.gateway_responses);
        if let Some(r) = GatewayResponses::resolve(api, &snap.gateway_responses, t, a.http_status) {
            customise(&mut a, r, t, message);
        }
    }
    a
}

/// A refusal's gateway response type and built-in message.
fn response_type(d: &Decision) -> Option<(ResponseType, &'static str)> {
    Some(match d.outcome {
        Outcome::Admitted => return None,
        Outcome::Throttled => (ResponseType::Throttled, "Too Many Requests"),
        Outcome::QuotaExceeded => (ResponseType::QuotaExceeded, "Limit Exceeded"),
        Outcome::MissingAuthenticationToken => (
            ResponseType::MissingAuthenticationToken,
            "Missing Authentication Token",
        ),
        Outcome::Forbidden => match d.reason {
            Some(
                DenyReason::MissingKey
                | DenyReason::UnknownKey
                | DenyReason::DisabledKey
                | DenyReason::KeyNotInPlan,
            ) => (ResponseType::InvalidApiKey, "Forbidden"),
            _ => (ResponseType::AccessDenied, "Forbidden"),
        },
        Outcome::Unavailable => (ResponseType::Default5xx, "Service Unavailable"),
    })
}

/// Applies a gateway response: its status, its body, its headers (replacing plangate's own of
/// the same name).
fn customise(a: &mut Answer, r: &GatewayResponse, t: ResponseType, message: &str) {
    if let Some(s) = r.status {
        a.http_status = s;
    }
    if let Some(b) = r.body_for(t, message) {
        a.body = Some(Cow::Owned(b));
    }
    for (k, v) in &r.headers {
        match a
            .client_headers
            .iter_mut()
            .find(|(h, _)| h.eq_ignore_ascii_case(k))
        {
            Some(h) => h.1.clone_from(v),
            None => a.client_headers.push((k.clone(), v.clone())),
        }
    }
}

/// plangate's built-in answer for `d`, with rate-limit headers in `style`.
fn builtin(d: &Decision, style: RateLimitHeaders) -> Answer {
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
    let body = body.map(Cow::Borrowed);
    // Room for every header an answer carries (error type, retry-after, three throttle and
    // three quota headers): one allocation, no regrowth.
    let mut client_headers: Vec<(String, String)> = Vec::with_capacity(9);
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
    let mut upstream_headers = Vec::with_capacity(if d.admitted() { 3 } else { 0 });
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
    // Walked twice (the tightest, then every policy): an iterator, not a collected vector.
    let throttles = d
        .limits
        .iter()
        .filter(|l| matches!(l.config, LimitConfig::Throttle { .. }));
    let Some(tight) = tightest(throttles.clone()) else {
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
            use std::fmt::Write as _;
            let mut policies = String::with_capacity(48 * d.limits.len());
            for (q, w, name) in
                throttles.filter_map(|l| policy(l).map(|(q, w)| (q, w, l.kind.as_str())))
            {
                if !policies.is_empty() {
                    policies.push_str(", ");
                }
                let _ = write!(policies, "\"{name}\";q={q};w={w}");
            }
            out.push(("ratelimit-policy".into(), policies));
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

// ---- ext_authz: CheckResponse ----

fn string_value(s: impl Into<String>) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

/// Dynamic metadata for access logs (namespace `envoy.filters.http.ext_authz`).
fn metadata(d: &Decision) -> Struct {
    let opt = [
        ("api_key_id", d.key_id.as_deref()),
        ("usage_plan", d.plan_id.as_deref()),
        ("customer_id", d.customer_id.as_deref()),
        ("api", d.api.as_deref()),
        ("stage", d.stage.as_deref()),
        ("method", d.method.as_deref()),
        ("decided_by", d.decided_by.map(|k| k.as_str())),
        ("reason", d.reason.map(|r| r.as_str())),
    ];
    let mut fields = std::collections::HashMap::with_capacity(1 + opt.len());
    fields.insert("outcome".to_owned(), string_value(d.outcome.as_str()));
    for (k, v) in opt {
        if let Some(v) = v {
            fields.insert(k.to_owned(), string_value(v));
        }
    }
    Struct { fields }
}

/// The ext_authz answer to a request plangate cannot read (no HTTP attributes, no path).
pub fn check_bad_request() -> CheckResponse {
    to_check_response(Answer::bad_request(), None, &[], None)
}

/// The ext_authz answer for `d`, decided against `snap`. `client_identity_headers`: the
/// `x-plangate-*` headers the client sent (removed unless overwritten); `key_header`: the header
/// the key was read from (removed when the config does not forward it).
pub fn check_response(
    d: &Decision,
    snap: &Snapshot,
    client_identity_headers: &[&str],
    key_header: Option<&str>,
) -> CheckResponse {
    let a = answer(d, snap);
    let drop_key = if snap.forward_api_key {
        None
    } else {
        key_header
    };
    let meta = snap.dynamic_metadata.then_some(d);
    to_check_response(a, meta, client_identity_headers, drop_key)
}

fn to_check_response(
    a: Answer,
    metadata_of: Option<&Decision>,
    client_identity_headers: &[&str],
    drop_key_header: Option<&str>,
) -> CheckResponse {
    let mut resp = CheckResponse::new();
    if a.http_status == 200 {
        let mut ok = OkHttpResponseBuilder::new();
        // Client-sent x-plangate-* headers that plangate does not overwrite are removed.
        for h in client_identity_headers {
            if !a.upstream_headers.iter().any(|(k, _)| k == h) {
                ok.remove_header(*h);
            }
        }
        for (k, v) in a.upstream_headers {
            ok.add_header(
                k,
                v,
                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                false,
            );
        }
        if let Some(h) = drop_key_header {
            ok.remove_header(h);
        }
        for (k, v) in a.client_headers {
            ok.add_response_header(
                k,
                v,
                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                false,
            );
        }
        resp.set_status(Status::ok(""));
        resp.set_http_response(ok.build());
    } else {
        let mut denied = DeniedHttpResponseBuilder::new();
        denied.set_http_status(
            HttpStatusCode::try_from(i32::from(a.http_status)).unwrap_or(HttpStatusCode::Forbidden),
        );
        for (k, v) in a.client_headers {
            denied.add_header(
                k,
                v,
                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                false,
            );
        }
        if let Some(b) = a.body {
            denied.set_body(b.into_owned());
        }
        let status = match a.http_status {
            400 => Status::invalid_argument("bad request"),
            429 => Status::resource_exhausted("rate limited"),
            503 => Status::unavailable("counter store unavailable"),
            _ => Status::permission_denied("forbidden"),
        };
        resp.set_status(status);
        resp.set_http_response(denied.build());
    }
    if let Some(d) = metadata_of {
        resp.set_dynamic_metadata(Some(metadata(d)));
    }
    resp
}

// ---- RLS: RateLimitResponse ----

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

/// Whether the request goes through: admitted, or refused in shadow mode.
fn through(d: &Decision) -> bool {
    d.admitted() || d.shadow
}

/// One descriptor's status: the refusing limit, else the limit with the fewest units left.
fn descriptor_status(d: &Decision) -> DescriptorStatus {
    let code = if through(d) {
        Code::Ok
    } else {
        Code::OverLimit
    };
    let Some(l) = tightest(d.limits.iter()) else {
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

fn header_value(k: impl Into<String>, v: impl Into<String>) -> HeaderValue {
    HeaderValue {
        key: k.into(),
        value: v.into(),
        raw_value: Vec::new(),
    }
}

/// The RLS answer for one decision per descriptor, in the request's order, decided against
/// `snap`. The overall code and the headers follow the first refused descriptor, else the
/// first one.
pub fn rls_response(decisions: &[Decision], snap: &Snapshot) -> RateLimitResponse {
    let statuses: Vec<DescriptorStatus> = decisions.iter().map(descriptor_status).collect();
    // The first refusal decides; else the first shadowed one (its upstream header); else the
    // first descriptor.
    let deciding = decisions
        .iter()
        .find(|d| !through(d))
        .or_else(|| decisions.iter().find(|d| d.shadow))
        .or(decisions.first());
    let over = decisions.iter().any(|d| !through(d));
    let mut resp = RateLimitResponse {
        overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
        statuses,
        ..Default::default()
    };
    if let Some(d) = deciding {
        let a = answer(d, snap);
        resp.response_headers_to_add = a
            .client_headers
            .iter()
            .map(|(k, v)| header_value(k.clone(), v.clone()))
            .collect();
        if over {
            resp.raw_body = a
                .body
                .map(|b| b.into_owned().into_bytes())
                .unwrap_or_default();
        } else {
            resp.request_headers_to_add = a
                .upstream_headers
                .iter()
                .map(|(k, v)| header_value(*k, v.clone()))
                .collect();
        }
    }
    resp
}

/// The RLS answer for a domain plangate does not serve: OK for each of `descriptors`, no limits.
pub fn rls_unknown_domain(descriptors: usize) -> RateLimitResponse {
    RateLimitResponse {
        overall_code: Code::Ok as i32,
        statuses: vec![
            DescriptorStatus {
                code: Code::Ok as i32,
                ..Default::default()
            };
            descriptors
        ],
        ..Default::default()
    }
}
