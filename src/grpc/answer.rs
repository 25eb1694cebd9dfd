//! Decision → the wire (docs/semantics.md, "Answers"): what Envoy sends to the client and to the
//! upstream — status, JSON body, `x-amzn-ErrorType`, `Retry-After`, rate-limit and quota headers,
//! the `x-plangate-*` identity headers — as an ext_authz `CheckResponse` (with dynamic metadata
//! for access logs) or an RLS `RateLimitResponse`.
//!
//! This is the only module that builds responses, so that ext_authz and RLS answers cannot drift
//! apart: [`answer`] decides what a client sees, [`CheckWire`] and [`RlsWire`] put it on each
//! wire. `authz` and `rls` only read requests.
//!
//! An answer costs no allocation: its texts borrow from the decision and the snapshot, numbers
//! and rate-limit policies are rendered where they are written, and the protobuf is written
//! straight into the response buffer (`grpc::wire`), byte for byte what prost would write for
//! the same message (the tests below hold it to prost, `tests/answers_pinned.rs` to the bytes).

use std::fmt;

use envoy_types::ext_authz::v3::pb::{CheckResponse, HeaderAppendAction, HttpStatusCode};
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, rate_limit::Unit};
use prost::Message as _;
use smallvec::SmallVec;

use super::wire::{
    Message, Out, int32, len_field, put_len, put_str, put_varint_field, str_field, varint_field,
};
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

/// A header value or a body. Numbers are rendered once, rate-limit policies where they are
/// written; every length is known without rendering (a length prefix precedes each string).
#[derive(Debug, Clone, PartialEq)]
pub enum Text<'a> {
    Str(&'a str),
    /// A gateway response's body with its template variables filled in.
    Owned(String),
    Num(Digits),
    /// IETF `RateLimit-Policy`: each throttle of the limits as `"name";q=…;w=…`; its length.
    Policies(&'a [LimitReport], usize),
    /// IETF `RateLimit`: `"name";r=…;t=…`.
    RateLimit {
        name: &'static str,
        remaining: u64,
        reset: u64,
        len: usize,
    },
}

/// A number's decimal digits, rendered once.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digits {
    buf: [u8; 20],
    len: u8,
}

impl Digits {
    pub fn new(n: u64) -> Self {
        let mut b = itoa::Buffer::new();
        let s = b.format(n).as_bytes();
        let mut buf = [0; 20];
        buf[..s.len()].copy_from_slice(s);
        Digits {
            buf,
            len: s.len() as u8,
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The digits, as written (no UTF-8 check: they are ASCII).
    fn as_bytes(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl fmt::Debug for Digits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'a> Text<'a> {
    pub fn num(n: u64) -> Self {
        Text::Num(Digits::new(n))
    }

    pub fn policies(limits: &'a [LimitReport]) -> Self {
        let mut len = 0;
        Text::Policies(limits, 0).each(&mut |s| len += s.len());
        Text::Policies(limits, len)
    }

    pub fn rate_limit(name: &'static str, remaining: u64, reset: u64) -> Self {
        let mut t = Text::RateLimit {
            name,
            remaining,
            reset,
            len: 0,
        };
        let mut n = 0;
        t.each(&mut |s| n += s.len());
        if let Text::RateLimit { len, .. } = &mut t {
            *len = n;
        }
        t
    }

    /// Hands its text to `emit` piece by piece: numbers through `itoa`, no `fmt` machinery
    /// and no allocation.
    fn each(&self, emit: &mut impl FnMut(&str)) {
        match self {
            Text::Str(s) => emit(s),
            Text::Owned(s) => emit(s),
            Text::Num(d) => emit(d.as_str()),
            Text::Policies(limits, _) => {
                let mut first = true;
                for l in limits.iter() {
                    let Some((q, w)) = policy(l) else { continue };
                    if !first {
                        emit(", ");
                    }
                    first = false;
                    emit("\"");
                    emit(l.kind.as_str());
                    emit("\";q=");
                    emit(itoa::Buffer::new().format(q));
                    emit(";w=");
                    emit(itoa::Buffer::new().format(w));
                }
            }
            Text::RateLimit {
                name,
                remaining,
                reset,
                ..
            } => {
                emit("\"");
                emit(name);
                emit("\";r=");
                emit(itoa::Buffer::new().format(*remaining));
                emit(";t=");
                emit(itoa::Buffer::new().format(*reset));
            }
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Text::Str(s) => s.len(),
            Text::Owned(s) => s.len(),
            Text::Num(d) => usize::from(d.len),
            Text::Policies(_, len) | Text::RateLimit { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes it into `out`.
    fn put(&self, out: &mut impl Out) {
        match self {
            Text::Str(s) => out.put_slice(s.as_bytes()),
            Text::Owned(s) => out.put_slice(s.as_bytes()),
            Text::Num(d) => out.put_slice(d.as_bytes()),
            _ => self.each(&mut |s| out.put_slice(s.as_bytes())),
        }
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut r = Ok(());
        self.each(&mut |s| {
            if r.is_ok() {
                r = f.write_str(s);
            }
        });
        r
    }
}

/// A string field holding `t`, left out when empty.
fn text_field(tag: u32, t: &Text<'_>) -> usize {
    let n = t.len();
    if n == 0 { 0 } else { len_field(tag, n) }
}

fn put_text(out: &mut impl Out, tag: u32, t: &Text<'_>) {
    let n = t.len();
    if n > 0 {
        put_len(out, tag, n);
        t.put(out);
    }
}

/// The client-facing parts of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<'a> {
    /// HTTP status the client gets (200 means: let the request through).
    pub http_status: u16,
    /// Body of a refusal (JSON unless a gateway response says otherwise).
    pub body: Option<Text<'a>>,
    /// Headers to the client (on refusal and on success): room for every header of a built-in
    /// answer (error type, retry-after, three throttle and three quota headers).
    pub client_headers: SmallVec<[(&'a str, Text<'a>); 9]>,
    /// Headers to the upstream (admitted requests only).
    pub upstream_headers: SmallVec<[(&'static str, Text<'a>); 4]>,
}

impl Answer<'_> {
    /// A request plangate cannot read (no HTTP attributes, no path).
    pub fn bad_request() -> Self {
        Answer {
            http_status: 400,
            body: Some(Text::Str(r#"{"message":"Bad Request"}"#)),
            client_headers: [
                ("content-type", Text::Str("application/json")),
                ("x-amzn-ErrorType", Text::Str("BadRequestException")),
            ]
            .into_iter()
            .collect(),
            upstream_headers: SmallVec::new(),
        }
    }
}

/// The answer for `d` decided against `snap`: built-in, or as the request's API or the
/// configuration customises it (gateway responses).
pub fn answer<'a>(d: &'a Decision, snap: &'a Snapshot) -> Answer<'a> {
    if d.shadow && !d.admitted() {
        // Shadow mode: the client and the upstream see an admitted request; the upstream is
        // told what enforcement would have answered.
        let mut a = builtin(d, Outcome::Admitted, None, snap.rate_limit_headers);
        a.upstream_headers
            .push((SHADOW_HEADER, Text::Str(d.outcome.as_str())));
        return a;
    }
    let mut a = builtin(d, d.outcome, d.retry_after_secs, snap.rate_limit_headers);
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
fn customise<'a>(a: &mut Answer<'a>, r: &'a GatewayResponse, t: ResponseType, message: &str) {
    if let Some(s) = r.status {
        a.http_status = s;
    }
    if let Some(b) = r.body_for(t, message) {
        a.body = Some(match b {
            std::borrow::Cow::Borrowed(b) => Text::Str(b),
            std::borrow::Cow::Owned(b) => Text::Owned(b),
        });
    }
    for (k, v) in &r.headers {
        match a
            .client_headers
            .iter_mut()
            .find(|(h, _)| h.eq_ignore_ascii_case(k))
        {
            Some(h) => h.1 = Text::Str(v),
            None => a.client_headers.push((k, Text::Str(v))),
        }
    }
}

/// plangate's built-in answer for `d` as `outcome` (its own, or admitted in shadow mode), with
/// rate-limit headers in `style`.
fn builtin(
    d: &Decision,
    outcome: Outcome,
    retry_after_secs: Option<u64>,
    style: RateLimitHeaders,
) -> Answer<'_> {
    let (http_status, body, error_type) = match outcome {
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
    let mut client_headers = SmallVec::new();
    if let Some(t) = error_type {
        client_headers.push(("content-type", Text::Str("application/json")));
        client_headers.push(("x-amzn-ErrorType", Text::Str(t)));
    }
    if let Some(secs) = retry_after_secs {
        client_headers.push(("retry-after", Text::num(secs)));
    }
    // Throttle headers: the evaluated throttles, the tightest one named (not on a quota refusal,
    // where the quota is what matters).
    if outcome != Outcome::QuotaExceeded {
        rate_limit_headers(d, retry_after_secs, style, &mut client_headers);
    }
    if let Some(q) = d.quota() {
        quota_headers(q, &mut client_headers);
    }
    let mut upstream_headers = SmallVec::new();
    if outcome == Outcome::Admitted {
        if let Some(k) = &d.key_id {
            upstream_headers.push((KEY_ID_HEADER, Text::Str(k)));
        }
        if let Some(p) = &d.plan_id {
            upstream_headers.push((PLAN_HEADER, Text::Str(p)));
        }
        if let Some(c) = &d.customer_id {
            upstream_headers.push((CUSTOMER_HEADER, Text::Str(c)));
        }
    }
    Answer {
        http_status,
        body: body.map(Text::Str),
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

type Headers<'a> = SmallVec<[(&'a str, Text<'a>); 9]>;

fn rate_limit_headers<'a>(
    d: &'a Decision,
    retry_after_secs: Option<u64>,
    style: RateLimitHeaders,
    out: &mut Headers<'a>,
) {
    let throttles = d
        .limits
        .iter()
        .filter(|l| matches!(l.config, LimitConfig::Throttle { .. }));
    let Some(tight) = tightest(throttles) else {
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
        retry_after_secs.unwrap_or(w)
    };
    match style {
        RateLimitHeaders::None => {}
        RateLimitHeaders::Ietf => {
            out.push(("ratelimit-policy", Text::policies(&d.limits)));
            out.push((
                "ratelimit",
                Text::rate_limit(tight.kind.as_str(), remaining, reset),
            ));
        }
        RateLimitHeaders::XRatelimit => {
            out.push(("x-ratelimit-limit", Text::num(q)));
            out.push(("x-ratelimit-remaining", Text::num(remaining)));
            out.push(("x-ratelimit-reset", Text::num(reset)));
        }
    }
}

fn quota_headers<'a>(q: &LimitReport, out: &mut Headers<'a>) {
    if let LimitConfig::Quota { limit, .. } = q.config {
        out.push(("x-quota-limit", Text::num(limit)));
        out.push(("x-quota-remaining", Text::num(q.state.remaining)));
        out.push(("x-quota-reset", Text::num(secs_ceil(q.state.reset_after))));
    }
}

// ---- ext_authz: CheckResponse ----

/// `append_action` of every header plangate sets: `OVERWRITE_IF_EXISTS_OR_ADD`.
const OVERWRITE: u64 = HeaderAppendAction::OverwriteIfExistsOrAdd as u64;

/// A `HeaderValue` (`key` 1, `value` 2).
fn header_value_len(k: &str, v: &Text<'_>) -> usize {
    str_field(1, k.as_bytes()) + text_field(2, v)
}

fn put_header_value(out: &mut impl Out, tag: u32, k: &str, v: &Text<'_>) {
    put_header_value_of_len(out, tag, header_value_len(k, v), k, v);
}

/// [`put_header_value`] with its length known.
fn put_header_value_of_len(out: &mut impl Out, tag: u32, len: usize, k: &str, v: &Text<'_>) {
    put_len(out, tag, len);
    put_str(out, 1, k.as_bytes());
    put_text(out, 2, v);
}

/// A `HeaderValueOption` (`header` 1, `append_action` 3) that overwrites, around a
/// `HeaderValue` of `value_len` bytes.
fn option_len(value_len: usize) -> usize {
    len_field(1, value_len) + varint_field(3, OVERWRITE)
}

fn header_option_len(k: &str, v: &Text<'_>) -> usize {
    option_len(header_value_len(k, v))
}

fn put_header_option(out: &mut impl Out, tag: u32, k: &str, v: &Text<'_>) {
    let value = header_value_len(k, v);
    put_len(out, tag, option_len(value));
    put_header_value_of_len(out, 1, value, k, v);
    put_varint_field(out, 3, OVERWRITE);
}

/// The dynamic metadata fields of `d` (namespace `envoy.filters.http.ext_authz`, for access
/// logs): the outcome, then what is known.
fn metadata_fields(d: &Decision) -> impl Iterator<Item = (&'static str, &str)> + Clone {
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
    std::iter::once(("outcome", d.outcome.as_str()))
        .chain(opt.into_iter().filter_map(|(k, v)| Some((k, v?))))
}

/// A `Struct` map entry: `key` 1, `value` 2 (a `Value` whose `string_value` is 3, written even
/// when empty: it is a set `oneof`).
fn metadata_entry_len(k: &str, v: &str) -> usize {
    str_field(1, k.as_bytes()) + len_field(2, len_field(3, v.len()))
}

fn metadata_len(d: &Decision) -> usize {
    metadata_fields(d)
        .map(|(k, v)| len_field(1, metadata_entry_len(k, v)))
        .sum()
}

fn put_metadata(out: &mut impl Out, tag: u32, d: &Decision, len: usize) {
    put_len(out, tag, len);
    for (k, v) in metadata_fields(d) {
        put_len(out, 1, metadata_entry_len(k, v));
        put_str(out, 1, k.as_bytes());
        put_len(out, 2, len_field(3, v.len()));
        put_len(out, 3, v.len());
        out.put_slice(v.as_bytes());
    }
}

/// An ext_authz `CheckResponse` ready to be written: the answer, the headers to remove from
/// the request, the decision for dynamic metadata (when configured).
#[derive(Debug)]
pub struct CheckWire<'a> {
    answer: Answer<'a>,
    /// Client-sent `x-plangate-*` headers plangate does not overwrite, then the key's header
    /// when the config does not forward it.
    removed: SmallVec<[&'a str; 4]>,
    metadata: Option<&'a Decision>,
    /// The lengths of `ok_response` or `denied_response`, and of the metadata (each needed
    /// twice: for the message's length and for the field's own).
    body_len: usize,
    metadata_len: usize,
}

impl<'a> CheckWire<'a> {
    fn sized(mut self) -> Self {
        self.body_len = if self.answer.http_status == 200 {
            self.ok_len()
        } else {
            self.denied_len()
        };
        self.metadata_len = self.metadata.map_or(0, metadata_len);
        self
    }

    /// The answer for `d`, decided against `snap`. `client_identity_headers`: the
    /// `x-plangate-*` header names the client sent (removed unless overwritten; repeats are
    /// removed once); `key_header`: the header the key was read from (removed when the config
    /// does not forward it).
    pub fn new(
        d: &'a Decision,
        snap: &'a Snapshot,
        client_identity_headers: impl Iterator<Item = &'a str>,
        key_header: Option<&'a str>,
    ) -> Self {
        let answer = answer(d, snap);
        let mut removed = SmallVec::new();
        if answer.http_status == 200 {
            for h in client_identity_headers {
                if !answer.upstream_headers.iter().any(|(k, _)| *k == h) && !removed.contains(&h) {
                    removed.push(h);
                }
            }
            if !snap.forward_api_key
                && let Some(h) = key_header
            {
                removed.push(h);
            }
        }
        CheckWire {
            answer,
            removed,
            metadata: snap.dynamic_metadata.then_some(d),
            body_len: 0,
            metadata_len: 0,
        }
        .sized()
    }

    /// The answer to a request plangate cannot read (no HTTP attributes, no path).
    pub fn bad_request() -> Self {
        CheckWire {
            answer: Answer::bad_request(),
            removed: SmallVec::new(),
            metadata: None,
            body_len: 0,
            metadata_len: 0,
        }
        .sized()
    }

    /// `google.rpc.Status` of the call: OK, or a refusal's code and message.
    fn status(&self) -> (tonic::Code, &'static str) {
        match self.answer.http_status {
            200 => (tonic::Code::Ok, ""),
            400 => (tonic::Code::InvalidArgument, "bad request"),
            429 => (tonic::Code::ResourceExhausted, "rate limited"),
            503 => (tonic::Code::Unavailable, "counter store unavailable"),
            _ => (tonic::Code::PermissionDenied, "forbidden"),
        }
    }

    fn status_len(&self) -> usize {
        let (code, message) = self.status();
        varint_field(1, int32(code as i32)) + str_field(2, message.as_bytes())
    }

    /// `OkHttpResponse`: `headers` 2, `headers_to_remove` 5, `response_headers_to_add` 6.
    fn ok_len(&self) -> usize {
        let a = &self.answer;
        let up: usize = a
            .upstream_headers
            .iter()
            .map(|(k, v)| len_field(2, header_option_len(k, v)))
            .sum();
        let removed: usize = self.removed.iter().map(|h| len_field(5, h.len())).sum();
        let client: usize = a
            .client_headers
            .iter()
            .map(|(k, v)| len_field(6, header_option_len(k, v)))
            .sum();
        up + removed + client
    }

    /// The status Envoy gives the client: the answer's, if Envoy's `StatusCode` has it, else 403.
    fn http_status(&self) -> u64 {
        let s = HttpStatusCode::try_from(i32::from(self.answer.http_status))
            .unwrap_or(HttpStatusCode::Forbidden);
        int32(s as i32)
    }

    /// `DeniedHttpResponse`: `status` 1 (an `HttpStatus`, `code` 1), `headers` 2, `body` 3.
    fn denied_len(&self) -> usize {
        let a = &self.answer;
        len_field(1, varint_field(1, self.http_status()))
            + a.client_headers
                .iter()
                .map(|(k, v)| len_field(2, header_option_len(k, v)))
                .sum::<usize>()
            + a.body.as_ref().map_or(0, |b| text_field(3, b))
    }

    /// The same answer as prost's message (tests, and callers of the typed service).
    pub fn to_message(&self) -> CheckResponse {
        CheckResponse::decode(self.to_vec().as_slice()).expect("plangate's own encoding decodes")
    }
}

impl Message for CheckWire<'_> {
    /// The length of the encoded `CheckResponse`.
    fn encoded_len(&self) -> usize {
        let body_tag = if self.answer.http_status == 200 { 3 } else { 2 };
        len_field(1, self.status_len())
            + len_field(body_tag, self.body_len)
            + self.metadata.map_or(0, |_| len_field(4, self.metadata_len))
    }

    /// Writes the `CheckResponse`: `status` 1, `denied_response` 2 or `ok_response` 3,
    /// `dynamic_metadata` 4.
    fn encode(&self, out: &mut impl Out) {
        let a = &self.answer;
        let (code, message) = self.status();
        put_len(out, 1, self.status_len());
        put_varint_field(out, 1, int32(code as i32));
        put_str(out, 2, message.as_bytes());
        if a.http_status == 200 {
            put_len(out, 3, self.body_len);
            for (k, v) in &a.upstream_headers {
                put_header_option(out, 2, k, v);
            }
            for h in &self.removed {
                put_str_always(out, 5, h);
            }
            for (k, v) in &a.client_headers {
                put_header_option(out, 6, k, v);
            }
        } else {
            put_len(out, 2, self.body_len);
            put_len(out, 1, varint_field(1, self.http_status()));
            put_varint_field(out, 1, self.http_status());
            for (k, v) in &a.client_headers {
                put_header_option(out, 2, k, v);
            }
            if let Some(b) = &a.body {
                put_text(out, 3, b);
            }
        }
        if let Some(d) = self.metadata {
            put_metadata(out, 4, d, self.metadata_len);
        }
    }
}

/// An element of a `repeated string`: written even when empty (prost writes every element).
fn put_str_always(out: &mut impl Out, tag: u32, s: &str) {
    put_len(out, tag, s.len());
    out.put_slice(s.as_bytes());
}

/// The ext_authz answer for `d`, decided against `snap`, as prost's message: see
/// [`CheckWire::new`].
pub fn check_response(
    d: &Decision,
    snap: &Snapshot,
    client_identity_headers: &[&str],
    key_header: Option<&str>,
) -> CheckResponse {
    CheckWire::new(d, snap, client_identity_headers.iter().copied(), key_header).to_message()
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

/// Whether the request goes through: admitted, or refused in shadow mode.
fn through(d: &Decision) -> bool {
    d.admitted() || d.shadow
}

/// One descriptor's status: the refusing limit, else the limit with the fewest units left.
#[derive(Debug, Clone, Copy)]
struct DescriptorStatus {
    code: Code,
    /// `RateLimit`: `requests_per_unit` 1, `unit` 2, `name` 3.
    limit: Option<(u32, Unit, &'static str)>,
    remaining: u32,
    /// `duration_until_reset`, whole seconds rounded up: Envoy truncates it to seconds for
    /// `X-RateLimit-Reset`, and "0" would tell a client to retry at once when it must not.
    reset_secs: Option<i64>,
}

impl DescriptorStatus {
    fn of(d: &Decision) -> Self {
        let code = if through(d) {
            Code::Ok
        } else {
            Code::OverLimit
        };
        let Some(l) = tightest(d.limits.iter()) else {
            return DescriptorStatus {
                code,
                limit: None,
                remaining: 0,
                reset_secs: None,
            };
        };
        let until = if l.state.admitted {
            l.state.reset_after
        } else {
            l.state.retry_after.or(l.state.reset_after)
        };
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
        DescriptorStatus {
            code,
            limit: Some((requests_per_unit, unit, l.kind.as_str())),
            remaining: if d.admitted() {
                u32::try_from(l.state.remaining).unwrap_or(u32::MAX)
            } else {
                0
            },
            reset_secs: until.map(|ns| {
                i64::try_from(u64::try_from(ns).unwrap_or(0).div_ceil(1_000_000_000))
                    .unwrap_or(i64::MAX)
            }),
        }
    }

    fn limit_len(&self) -> usize {
        self.limit.map_or(0, |(n, unit, name)| {
            varint_field(1, u64::from(n))
                + varint_field(2, int32(unit as i32))
                + str_field(3, name.as_bytes())
        })
    }

    /// `code` 1, `current_limit` 2, `limit_remaining` 3, `duration_until_reset` 4 (a
    /// `Duration`: `seconds` 1).
    fn len(&self) -> usize {
        varint_field(1, int32(self.code as i32))
            + self.limit.map_or(0, |_| len_field(2, self.limit_len()))
            + varint_field(3, u64::from(self.remaining))
            + self
                .reset_secs
                .map_or(0, |s| len_field(4, varint_field(1, int32_64(s))))
    }

    fn put(&self, out: &mut impl Out, tag: u32) {
        put_len(out, tag, self.len());
        put_varint_field(out, 1, int32(self.code as i32));
        if let Some((n, unit, name)) = self.limit {
            put_len(out, 2, self.limit_len());
            put_varint_field(out, 1, u64::from(n));
            put_varint_field(out, 2, int32(unit as i32));
            put_str(out, 3, name.as_bytes());
        }
        put_varint_field(out, 3, u64::from(self.remaining));
        if let Some(s) = self.reset_secs {
            put_len(out, 4, varint_field(1, int32_64(s)));
            put_varint_field(out, 1, int32_64(s));
        }
    }
}

/// An `int64` as protobuf writes it.
fn int32_64(v: i64) -> u64 {
    v as u64
}

/// An RLS `RateLimitResponse` ready to be written.
#[derive(Debug)]
pub struct RlsWire<'a> {
    over: bool,
    statuses: SmallVec<[DescriptorStatus; 1]>,
    /// The deciding descriptor's answer: the first refusal, else the first shadowed one (its
    /// upstream header), else the first descriptor.
    answer: Option<Answer<'a>>,
}

impl<'a> RlsWire<'a> {
    /// The answer for one decision per descriptor, in the request's order, decided against
    /// `snap`. The overall code and the headers follow the first refused descriptor, else the
    /// first one.
    pub fn new(decisions: &'a [Decision], snap: &'a Snapshot) -> Self {
        let deciding = decisions
            .iter()
            .find(|d| !through(d))
            .or_else(|| decisions.iter().find(|d| d.shadow))
            .or(decisions.first());
        RlsWire {
            over: decisions.iter().any(|d| !through(d)),
            statuses: decisions.iter().map(DescriptorStatus::of).collect(),
            answer: deciding.map(|d| answer(d, snap)),
        }
    }

    /// The answer for a domain plangate does not serve: OK for each of `descriptors`, no
    /// limits.
    pub fn unknown_domain(descriptors: usize) -> Self {
        RlsWire {
            over: false,
            statuses: (0..descriptors)
                .map(|_| DescriptorStatus {
                    code: Code::Ok,
                    limit: None,
                    remaining: 0,
                    reset_secs: None,
                })
                .collect(),
            answer: None,
        }
    }

    fn code(&self) -> Code {
        if self.over { Code::OverLimit } else { Code::Ok }
    }

    /// The same answer as prost's message (tests, and callers of the typed service).
    pub fn to_message(&self) -> RateLimitResponse {
        RateLimitResponse::decode(self.to_vec().as_slice())
            .expect("plangate's own encoding decodes")
    }
}

impl Message for RlsWire<'_> {
    /// The length of the encoded `RateLimitResponse`.
    fn encoded_len(&self) -> usize {
        let mut n = varint_field(1, int32(self.code() as i32))
            + self
                .statuses
                .iter()
                .map(|s| len_field(2, s.len()))
                .sum::<usize>();
        if let Some(a) = &self.answer {
            n += a
                .client_headers
                .iter()
                .map(|(k, v)| len_field(3, header_value_len(k, v)))
                .sum::<usize>();
            if self.over {
                n += a.body.as_ref().map_or(0, |b| text_field(5, b));
            } else {
                n += a
                    .upstream_headers
                    .iter()
                    .map(|(k, v)| len_field(4, header_value_len(k, v)))
                    .sum::<usize>();
            }
        }
        n
    }

    /// Writes the `RateLimitResponse`: `overall_code` 1, `statuses` 2,
    /// `response_headers_to_add` 3, `request_headers_to_add` 4, `raw_body` 5.
    fn encode(&self, out: &mut impl Out) {
        put_varint_field(out, 1, int32(self.code() as i32));
        for s in &self.statuses {
            s.put(out, 2);
        }
        if let Some(a) = &self.answer {
            for (k, v) in &a.client_headers {
                put_header_value(out, 3, k, v);
            }
            if !self.over {
                for (k, v) in &a.upstream_headers {
                    put_header_value(out, 4, k, v);
                }
            } else if let Some(b) = &a.body {
                put_text(out, 5, b);
            }
        }
    }
}

#[cfg(test)]
mod tests;
