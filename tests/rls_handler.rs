//! The RLS handler called directly, and RLS and ext_authz sharing one engine's counters.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, rate_limit::Unit};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use plangate::engine::Engine;
use plangate::grpc::answer::rate_unit;
use plangate::grpc::{AuthzService, RlsService};

const KEY: &str = "rls-key-0123456789abcdefgh";

fn engine() -> Arc<Engine> {
    let text = common::petstore(
        "",
        &[(
            "prod",
            r#"{ throttle: { rate: 0.5, burst: 1000 }, methods: { "/pets/GET": {} } }"#,
        )],
        &[(
            "gold",
            "throttle: { rate: 10, burst: 100 }, quota: { limit: 10, period: DAY }",
        )],
        &[("k1", KEY, "usage_plans: [gold]")],
    );
    let c = plangate::config::load_str(&text, None, Path::new(".")).unwrap();
    Arc::new(common::engine_of(c.snapshot))
}

fn descriptor(key: Option<&str>, hits: Option<u64>) -> RateLimitDescriptor {
    let mut entries = vec![
        ("api", "petstore"),
        ("stage", "prod"),
        ("method", "GET"),
        ("path", "/pets?page=2"),
    ];
    if let Some(k) = key {
        entries.push(("api_key", k));
    }
    RateLimitDescriptor {
        entries: entries
            .into_iter()
            .map(|(k, v)| Entry {
                key: k.into(),
                value: v.into(),
            })
            .collect(),
        hits_addend: hits.map(|value| UInt64Value { value }),
        ..Default::default()
    }
}

async fn rls(
    s: &RlsService,
    descriptors: Vec<RateLimitDescriptor>,
    hits: u32,
) -> RateLimitResponse {
    s.should_rate_limit(tonic::Request::new(RateLimitRequest {
        domain: "plangate".into(),
        descriptors,
        hits_addend: hits,
    }))
    .await
    .unwrap()
    .into_inner()
}

fn headers(r: &RateLimitResponse) -> HashMap<String, String> {
    r.response_headers_to_add
        .iter()
        .map(|h| (h.key.to_ascii_lowercase(), h.value.clone()))
        .collect()
}

fn quota_left(r: &RateLimitResponse) -> u64 {
    headers(r)["x-quota-remaining"].parse().unwrap()
}

#[tokio::test]
async fn admits_with_statuses_and_identity_headers() {
    let s = RlsService::new(engine(), Default::default());
    let r = rls(&s, vec![descriptor(Some(KEY), None)], 0).await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses.len(), 1);
    let st = &r.statuses[0];
    assert_eq!(st.code, Code::Ok as i32);
    // Tightest limit: the quota (9 left) — fewer than any bucket.
    let cl = st.current_limit.as_ref().unwrap();
    assert_eq!(
        (cl.requests_per_unit, cl.unit, cl.name.as_str()),
        (10, Unit::Day as i32, "plan_quota")
    );
    assert_eq!(st.limit_remaining, 9);
    assert!(st.duration_until_reset.is_some());
    let up: HashMap<_, _> = r
        .request_headers_to_add
        .iter()
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    assert_eq!(up["x-plangate-api-key-id"], "k1");
    assert_eq!(up["x-plangate-usage-plan"], "gold");
    assert!(r.raw_body.is_empty());
}

#[tokio::test]
async fn identity_failure_is_over_limit_with_the_403_body() {
    let s = RlsService::new(engine(), Default::default());
    for key in [None, Some("unknown-key-0123456789abcdef")] {
        let r = rls(&s, vec![descriptor(key, None)], 1).await;
        assert_eq!(r.overall_code, Code::OverLimit as i32);
        assert_eq!(r.raw_body, br#"{"message":"Forbidden"}"#);
        assert_eq!(headers(&r)["x-amzn-errortype"], "ForbiddenException");
    }
}

#[tokio::test]
async fn hits_addend_rules() {
    let s = RlsService::new(engine(), Default::default());
    // Request-level 0 means 1.
    let r = rls(&s, vec![descriptor(Some(KEY), None)], 0).await;
    assert_eq!(quota_left(&r), 9);
    // Request-level 3.
    let r = rls(&s, vec![descriptor(Some(KEY), None)], 3).await;
    assert_eq!(quota_left(&r), 6);
    // A descriptor's own hits_addend wins over the request's.
    let r = rls(&s, vec![descriptor(Some(KEY), Some(2))], 3).await;
    assert_eq!(quota_left(&r), 4);
    // Per-descriptor 0: check only, nothing charged.
    let r = rls(&s, vec![descriptor(Some(KEY), Some(0))], 5).await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(quota_left(&r), 4);
    // 5 do not fit in 4: refused with Limit Exceeded, nothing charged.
    let r = rls(&s, vec![descriptor(Some(KEY), Some(5))], 0).await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.raw_body, br#"{"message":"Limit Exceeded"}"#);
    assert_eq!(r.statuses[0].limit_remaining, 0);
    let r = rls(&s, vec![descriptor(Some(KEY), Some(4))], 0).await;
    assert_eq!(r.overall_code, Code::Ok as i32);
}

#[tokio::test]
async fn one_status_per_descriptor_never_unknown() {
    let s = RlsService::new(engine(), Default::default());
    let r = rls(
        &s,
        vec![
            descriptor(Some(KEY), None),
            descriptor(None, None),
            descriptor(Some(KEY), Some(0)),
        ],
        1,
    )
    .await;
    assert_eq!(r.statuses.len(), 3);
    let codes: Vec<i32> = r.statuses.iter().map(|s| s.code).collect();
    // The keyless descriptor refuses the request; the first, admitted on its own limits, is
    // refused with it (all or nothing); the check-only third reports its own answer.
    assert_eq!(
        codes,
        vec![
            Code::OverLimit as i32,
            Code::OverLimit as i32,
            Code::Ok as i32
        ]
    );
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    // No descriptor at all: OK.
    let r = rls(&s, vec![], 1).await;
    assert_eq!(r.overall_code, Code::Ok as i32);
}

#[tokio::test]
async fn unknown_domain_is_ok_and_counted() {
    let metrics = Arc::new(plangate::metrics::Metrics::new());
    let s = RlsService::new(engine(), metrics.clone());
    let r = s
        .should_rate_limit(tonic::Request::new(RateLimitRequest {
            domain: "elsewhere".into(),
            descriptors: vec![descriptor(None, None)],
            hits_addend: 1,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses.len(), 1);
    assert!(
        metrics
            .render()
            .lines()
            .any(|l| l == "plangate_rls_unknown_domain_total 1"),
        "{}",
        metrics.render()
    );
}

fn check_request() -> CheckRequest {
    common::check_request_to(KEY, "/pets", "petstore", "prod")
}

/// One key alternately through Check and ShouldRateLimit drains a single quota.
#[tokio::test]
async fn check_and_rls_share_one_quota() {
    let e = engine();
    let authz = AuthzService::new(e.clone(), Default::default());
    let rl = RlsService::new(e, Default::default());
    let mut admitted = 0;
    for i in 0..20 {
        let ok = if i % 2 == 0 {
            let r = authz
                .check(tonic::Request::new(check_request()))
                .await
                .unwrap()
                .into_inner();
            r.status.unwrap().code == 0
        } else {
            rls(&rl, vec![descriptor(Some(KEY), None)], 1)
                .await
                .overall_code
                == Code::Ok as i32
        };
        if ok {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10, "the quota of 10 is shared");
}

#[test]
fn rates_map_to_whole_units() {
    assert_eq!(rate_unit(10.0), (10, Unit::Second));
    assert_eq!(rate_unit(0.5), (30, Unit::Minute));
    assert_eq!(rate_unit(0.1), (6, Unit::Minute));
    assert_eq!(rate_unit(1.0 / 7200.0), (12, Unit::Day));
    // No unit makes 1/7 per second whole: per DAY, rounded.
    assert_eq!(rate_unit(1.0 / 7.0), (12343, Unit::Day));
    assert_eq!(rate_unit(0.0), (0, Unit::Day));
}

#[tokio::test]
async fn requests_envoy_would_never_send_are_refused_whole_and_charge_nothing() {
    let e = engine();
    let s =
        RlsService::new(e.clone(), Arc::new(plangate::metrics::Metrics::new())).with_limits(4, 6);
    let ask = |descriptors: Vec<RateLimitDescriptor>| {
        s.should_rate_limit(tonic::Request::new(RateLimitRequest {
            domain: "plangate".into(),
            descriptors,
            hits_addend: 1,
        }))
    };
    // Five descriptors, one over the bound: refused, none of them decided.
    let five = vec![descriptor(Some(KEY), None); 5];
    let err = ask(five).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("at most 4"), "{}", err.message());
    // A descriptor of seven entries.
    let mut long = descriptor(Some(KEY), None);
    long.entries
        .extend(long.entries.clone().into_iter().take(2));
    assert_eq!(long.entries.len(), 7);
    assert_eq!(
        ask(vec![long]).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    // Nothing was charged: the quota (10) is whole.
    let r = rls(&s, vec![descriptor(Some(KEY), None)], 1).await;
    assert_eq!(quota_left(&r), 9);
}

/// Shadow mode over RLS: a refusal is answered OK, its would-be outcome in an upstream header.
#[tokio::test]
async fn shadow_mode_answers_ok() {
    let text = format!(
        r#"
version: 1
apis:
  petstore:
    stages:
      prod: {{ methods: {{ "/pets/GET": {{}} }} }}
usage_plans:
  gold:
    enforce: false
    quota: {{ limit: 1, period: DAY }}
    api_stages: [{{ api: petstore, stage: prod }}]
api_keys:
  - {{ id: k1, value_sha256: {}, usage_plans: [gold] }}
"#,
        hex::encode(plangate::snapshot::hash_key(KEY))
    );
    let c = plangate::config::load_str(&text, None, Path::new(".")).unwrap();
    let engine = Arc::new(common::engine_of(c.snapshot));
    let s = RlsService::new(engine, Default::default());
    let r = rls(&s, vec![descriptor(Some(KEY), None)], 0).await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    let r = rls(&s, vec![descriptor(Some(KEY), None)], 0).await;
    assert_eq!(r.overall_code, Code::Ok as i32, "shadowed");
    assert_eq!(r.statuses[0].code, Code::Ok as i32);
    let upstream: HashMap<String, String> = r
        .request_headers_to_add
        .iter()
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    assert_eq!(upstream["x-plangate-shadow-outcome"], "quota_exceeded");
    assert!(r.raw_body.is_empty());
}

/// Several descriptors are one request: all charged or none, as one Check is. (Before, the
/// admitted ones were charged though the request was refused.)
#[tokio::test]
async fn several_descriptors_are_all_or_nothing() {
    let s = RlsService::new(engine(), Default::default());
    // The quota is 10 a day: 6 + 6 of it do not fit; neither is charged.
    let r = rls(
        &s,
        vec![
            descriptor(Some(KEY), Some(6)),
            descriptor(Some(KEY), Some(6)),
        ],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert!(
        r.statuses
            .iter()
            .all(|st| st.code == Code::OverLimit as i32)
    );
    // A descriptor refused for its key: the others are not charged either.
    let r = rls(
        &s,
        vec![
            descriptor(Some(KEY), Some(3)),
            descriptor(Some("unknown-key-0123456789abcdef"), Some(1)),
        ],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    // Nothing was charged: the whole quota is left (a check of one unit reports 10 before).
    let r = rls(&s, vec![descriptor(Some(KEY), Some(0))], 0).await;
    assert_eq!(quota_left(&r), 10, "{r:?}");
    // 4 + 6 fit, and both are charged.
    let r = rls(
        &s,
        vec![
            descriptor(Some(KEY), Some(4)),
            descriptor(Some(KEY), Some(6)),
        ],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    let r = rls(&s, vec![descriptor(Some(KEY), Some(1))], 0).await;
    assert_eq!(r.overall_code, Code::OverLimit as i32, "the quota is spent");
}

/// The request as bytes (what the server receives): a descriptor's `hits_addend` given twice
/// (a merge: the last value wins) is read as prost reads it; bytes prost cannot decode are
/// refused as tonic refuses them (INTERNAL), never a panic.
#[tokio::test]
async fn requests_in_any_encoding_mean_what_they_mean_to_prost() {
    use prost::Message;
    let s = RlsService::new(engine(), Default::default());
    let meta = tonic::metadata::MetadataMap::new();
    let quota = |r: &RateLimitResponse| r.statuses[0].limit_remaining;
    let request = |hits: u64| RateLimitRequest {
        domain: "plangate".into(),
        descriptors: vec![descriptor(Some(KEY), Some(hits))],
        hits_addend: 1,
    };
    let r = s
        .should_rate_limit_bytes(&meta, request(1).encode_to_vec().into())
        .await
        .unwrap()
        .to_message();
    assert_eq!(quota(&r), 9);
    // The descriptor's hits_addend twice: 5, then 2 (merged: 2 wins).
    let mut d = descriptor(Some(KEY), Some(5)).encode_to_vec();
    let two = UInt64Value { value: 2 }.encode_to_vec();
    d.extend([0x1a, two.len() as u8]);
    d.extend(two);
    let mut bytes = vec![0x0a, 8];
    bytes.extend(b"plangate");
    bytes.push(0x12);
    bytes.push(d.len() as u8);
    bytes.extend(&d);
    let typed = RateLimitRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(
        typed.descriptors[0].hits_addend,
        Some(UInt64Value { value: 2 })
    );
    let r = s
        .should_rate_limit_bytes(&meta, bytes.into())
        .await
        .unwrap()
        .to_message();
    assert_eq!(quota(&r), 7, "charged 2");
    for bytes in [vec![0x12, 0x05, 0x0a], vec![0x0a, 0x01, 0xff], vec![0x18]] {
        let e = s
            .should_rate_limit_bytes(&meta, bytes.into())
            .await
            .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::Internal, "{e:?}");
    }
}
