//! The hand-written encoding held to prost's: every answer shape (admitted, each refusal,
//! shadow mode, gateway responses, each header style, metadata on and off, a key header
//! removed) is built a second time as prost messages through envoy-types' builders — the way
//! plangate built them before it wrote them by hand — and must decode to the same message and
//! encode to the same bytes.

use std::path::Path;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{CheckResponse, HeaderAppendAction, HttpStatusCode};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus as PbStatus, RateLimit,
};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, Struct, Value, value::Kind};
use prost::Message;
use tonic::Status;

use super::*;
use crate::engine::{LimitKind, LimitReport};
use crate::limit::LimitState;

fn snapshot(responses: &str) -> Snapshot {
    let text = format!(
        r#"
version: 1
{responses}
gateway_responses:
  DEFAULT_4XX:
    headers: {{ Access-Control-Allow-Origin: "*" }}
  QUOTA_EXCEEDED:
    status: 402
    headers: {{ content-type: application/json; charset=utf-8 }}
    body: '{{"error":$context.error.messageString}}'
  THROTTLED:
    status: 409
    body: slow down
apis:
  petstore:
    stages:
      prod: {{ methods: {{ "/pets/GET": {{}} }} }}
"#
    );
    crate::config::load_str(&text, None, Path::new("."))
        .expect("a valid config")
        .snapshot
}

fn report(kind: LimitKind, admitted: bool, remaining: u64) -> LimitReport {
    let config = if kind == LimitKind::PlanQuota {
        LimitConfig::Quota {
            limit: 1000,
            period: Period::Month,
            window_start: 0,
            window_end: 1,
        }
    } else {
        LimitConfig::Throttle {
            rate: 0.5,
            burst: 20,
        }
    };
    LimitReport {
        kind,
        config,
        state: LimitState {
            admitted,
            remaining,
            reset_after: Some(2_500_000_000),
            retry_after: (!admitted).then_some(1_200_000_000),
        },
    }
}

fn decisions() -> Vec<Decision> {
    let s = |v: &str| Some(Arc::<str>::from(v));
    let base = Decision {
        outcome: Outcome::Admitted,
        reason: None,
        decided_by: None,
        api: s("petstore"),
        stage: s("prod"),
        method: s("/pets/GET"),
        key_id: s("k1"),
        plan_id: s("gold"),
        customer_id: s("acme"),
        limits: vec![
            report(LimitKind::PlanThrottle, true, 7),
            report(LimitKind::PlanQuota, true, 900),
            report(LimitKind::AccountThrottle, true, 300),
        ],
        retry_after_secs: None,
        generation: 1,
        store_error: None,
        store_seconds: None,
        shadow: false,
    };
    let refused = |outcome, decided_by, at: usize| {
        let mut d = base.clone();
        d.outcome = outcome;
        d.decided_by = Some(decided_by);
        d.limits[at].state = report(decided_by, false, 0).state;
        d.retry_after_secs = Some(2);
        d
    };
    let mut shadowed = refused(Outcome::Throttled, LimitKind::PlanThrottle, 0);
    shadowed.shadow = true;
    let mut no_customer = base.clone();
    no_customer.customer_id = None;
    no_customer.limits.truncate(1);
    let mut unknown_key = Decision::new(Outcome::Forbidden, 1);
    unknown_key.reason = Some(DenyReason::UnknownKey);
    unknown_key.api = s("");
    let mut unavailable = base.clone();
    unavailable.outcome = Outcome::Unavailable;
    let mut missing = Decision::new(Outcome::MissingAuthenticationToken, 1);
    missing.reason = Some(DenyReason::UnknownMethod);
    let mut big = base.clone();
    big.limits[0].state.remaining = u64::MAX;
    big.limits[1].config = LimitConfig::Quota {
        limit: u64::MAX,
        period: Period::Week,
        window_start: 0,
        window_end: 1,
    };
    big.limits[2].config = LimitConfig::Throttle {
        rate: 1e-9,
        burst: u64::MAX,
    };
    big.limits[2].state.reset_after = Some(i64::MAX);
    vec![
        base.clone(),
        refused(Outcome::Throttled, LimitKind::PlanThrottle, 0),
        refused(Outcome::Throttled, LimitKind::AccountThrottle, 2),
        refused(Outcome::QuotaExceeded, LimitKind::PlanQuota, 1),
        shadowed,
        no_customer,
        unknown_key,
        unavailable,
        missing,
        big,
    ]
}

const STYLES: [&str; 4] = [
    "",
    "responses: { rate_limit_headers: x-ratelimit }",
    "responses: { rate_limit_headers: none, dynamic_metadata: false }",
    "responses: { forward_api_key: false }",
];

// ---- the reference: prost messages through envoy-types' builders ----

fn pb_metadata(d: &Decision) -> Struct {
    Struct {
        fields: metadata_fields(d)
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    Value {
                        kind: Some(Kind::StringValue(v.to_owned())),
                    },
                )
            })
            .collect(),
    }
}

fn pb_check(
    a: &Answer<'_>,
    meta: Option<&Decision>,
    identity: &[&str],
    key: Option<&str>,
) -> CheckResponse {
    let mut resp = CheckResponse::new();
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    if a.http_status == 200 {
        let mut ok = OkHttpResponseBuilder::new();
        for h in identity {
            if !a.upstream_headers.iter().any(|(k, _)| k == h) {
                ok.remove_header(*h);
            }
        }
        for (k, v) in &a.upstream_headers {
            ok.add_header(*k, v.to_string(), overwrite, false);
        }
        if let Some(h) = key {
            ok.remove_header(h);
        }
        for (k, v) in &a.client_headers {
            ok.add_response_header(*k, v.to_string(), overwrite, false);
        }
        resp.set_status(Status::ok(""));
        resp.set_http_response(ok.build());
    } else {
        let mut denied = DeniedHttpResponseBuilder::new();
        denied.set_http_status(
            HttpStatusCode::try_from(i32::from(a.http_status)).unwrap_or(HttpStatusCode::Forbidden),
        );
        for (k, v) in &a.client_headers {
            denied.add_header(*k, v.to_string(), overwrite, false);
        }
        if let Some(b) = &a.body {
            denied.set_body(b.to_string());
        }
        resp.set_status(match a.http_status {
            400 => Status::invalid_argument("bad request"),
            429 => Status::resource_exhausted("rate limited"),
            503 => Status::unavailable("counter store unavailable"),
            _ => Status::permission_denied("forbidden"),
        });
        resp.set_http_response(denied.build());
    }
    if let Some(d) = meta {
        resp.set_dynamic_metadata(Some(pb_metadata(d)));
    }
    resp
}

fn pb_rls(decisions: &[Decision], snap: &Snapshot) -> RateLimitResponse {
    let statuses = decisions
        .iter()
        .map(|d| {
            let s = DescriptorStatus::of(d);
            PbStatus {
                code: s.code as i32,
                current_limit: s.limit.map(|(n, unit, name)| RateLimit {
                    name: name.to_owned(),
                    requests_per_unit: n,
                    unit: unit as i32,
                }),
                limit_remaining: s.remaining,
                duration_until_reset: s.reset_secs.map(|seconds| PbDuration { seconds, nanos: 0 }),
                ..Default::default()
            }
        })
        .collect();
    let over = decisions.iter().any(|d| !through(d));
    let mut resp = RateLimitResponse {
        overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
        statuses,
        ..Default::default()
    };
    let deciding = decisions
        .iter()
        .find(|d| !through(d))
        .or_else(|| decisions.iter().find(|d| d.shadow))
        .or(decisions.first());
    let hv = |k: &str, v: &Text<'_>| HeaderValue {
        key: k.to_owned(),
        value: v.to_string(),
        raw_value: Vec::new(),
    };
    if let Some(d) = deciding {
        let a = answer(d, snap);
        resp.response_headers_to_add = a.client_headers.iter().map(|(k, v)| hv(k, v)).collect();
        if over {
            resp.raw_body = a
                .body
                .map(|b| b.to_string().into_bytes())
                .unwrap_or_default();
        } else {
            resp.request_headers_to_add =
                a.upstream_headers.iter().map(|(k, v)| hv(k, v)).collect();
        }
    }
    resp
}

// ---- the comparisons ----

fn written(m: &impl crate::grpc::wire::Message) -> Vec<u8> {
    let buf = m.to_vec();
    assert_eq!(
        buf.len(),
        m.encoded_len(),
        "encoded_len is the length written"
    );
    buf
}

#[test]
fn check_answers_are_what_prost_writes() {
    let identity = ["x-plangate-api-key-id", "x-plangate-extra"];
    let mut shapes = 0;
    for style in STYLES {
        let snap = snapshot(style);
        for d in decisions() {
            let w = CheckWire::new(&d, &snap, identity.iter().copied(), Some("x-api-key"));
            let bytes = written(&w);
            let key = (!snap.forward_api_key).then_some("x-api-key");
            let meta = snap.dynamic_metadata.then_some(&d);
            let want = pb_check(&answer(&d, &snap), meta, &identity, key);
            let got = CheckResponse::decode(bytes.as_slice()).expect("decodes");
            assert_eq!(got, want, "{style} / {d:?}");
            // Without the metadata map (a hash map, whose order prost does not fix), the bytes
            // are prost's.
            let mut plain = want.clone();
            if plain.dynamic_metadata.take().is_some() {
                let mut got = got.clone();
                got.dynamic_metadata = None;
                assert_eq!(got.encode_to_vec(), plain.encode_to_vec());
            } else {
                assert_eq!(bytes, want.encode_to_vec(), "{style} / {d:?}");
            }
            shapes += 1;
        }
    }
    assert_eq!(shapes, STYLES.len() * decisions().len());
    let bad = CheckWire::bad_request();
    let bytes = written(&bad);
    assert_eq!(
        bytes,
        pb_check(&Answer::bad_request(), None, &[], None).encode_to_vec()
    );
}

#[test]
fn rls_answers_are_what_prost_writes() {
    let all = decisions();
    for style in STYLES {
        let snap = snapshot(style);
        let mut cases: Vec<&[Decision]> = all.chunks(1).collect();
        cases.push(&all[..]);
        cases.push(&all[4..6]);
        cases.push(&[]);
        for ds in cases {
            let w = RlsWire::new(ds, &snap);
            let bytes = written(&w);
            assert_eq!(bytes, pb_rls(ds, &snap).encode_to_vec(), "{style} / {ds:?}");
        }
    }
    for n in [0, 1, 3] {
        let w = RlsWire::unknown_domain(n);
        let bytes = written(&w);
        let want = RateLimitResponse {
            overall_code: Code::Ok as i32,
            statuses: vec![
                PbStatus {
                    code: Code::Ok as i32,
                    ..Default::default()
                };
                n
            ],
            ..Default::default()
        };
        assert_eq!(bytes, want.encode_to_vec());
    }
}

#[test]
fn texts_know_their_length() {
    let limits = [
        report(LimitKind::PlanThrottle, true, 1),
        report(LimitKind::PlanQuota, true, 1),
    ];
    for t in [
        Text::Str("abc"),
        Text::Owned("héllo".into()),
        Text::num(0),
        Text::num(u64::MAX),
        Text::policies(&limits),
        Text::policies(&[]),
        Text::rate_limit("plan_throttle", 3, 10),
    ] {
        let s = t.to_string();
        assert_eq!(t.len(), s.len(), "{s}");
        let mut out = Vec::new();
        t.put(&mut out);
        assert_eq!(out, s.as_bytes());
    }
}
