//! The ext_authz handler called directly: answers for well-formed and malformed requests.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use plangate::clock::FakeClock;
use plangate::engine::Engine;
use plangate::grpc::AuthzService;

const KEY: &str = "handler-key-0123456789abcdef";

fn service() -> AuthzService {
    service_with("")
}

fn service_with(extra: &str) -> AuthzService {
    let text = common::petstore(
        extra,
        &[("prod", r#"{ methods: { "/pets/GET": {} } }"#)],
        &[("gold", "")],
        &[("k1", KEY, "usage_plans: [gold]")],
    );
    let c = plangate::config::load_str(&text, None, Path::new(".")).unwrap();
    let engine = common::engine_of(c.snapshot);
    AuthzService::new(Arc::new(engine), Default::default())
}

fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    ext: &[(&str, &str)],
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: ext
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            ..Default::default()
        }),
    }
}

async fn check(s: &AuthzService, r: CheckRequest) -> CheckResponse {
    s.check(tonic::Request::new(r))
        .await
        .expect("an answer, not an RPC error")
        .into_inner()
}

/// (gRPC code, HTTP status of a denial, body of a denial).
fn summary(r: &CheckResponse) -> (i32, Option<i32>, String) {
    let code = r.status.as_ref().map_or(-1, |s| s.code);
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            (code, d.status.as_ref().map(|s| s.code), d.body.clone())
        }
        _ => (code, None, String::new()),
    }
}

const EXT: &[(&str, &str)] = &[("api", "petstore"), ("stage", "prod")];

#[tokio::test]
async fn admits_with_query_string_in_path() {
    let s = service();
    let r = check(
        &s,
        request("GET", "/pets?limit=10", &[("x-api-key", KEY)], EXT),
    )
    .await;
    assert_eq!(summary(&r).0, 0);
    let meta = r.dynamic_metadata.unwrap();
    assert!(meta.fields.contains_key("api_key_id"));
}

#[tokio::test]
async fn dynamic_metadata_can_be_turned_off() {
    let s = service_with("responses: { dynamic_metadata: false }");
    let r = check(&s, request("GET", "/pets", &[("x-api-key", KEY)], EXT)).await;
    assert_eq!(summary(&r).0, 0);
    assert!(r.dynamic_metadata.is_none());
}

/// With `encode_raw_headers`, Envoy sends `header_map` instead of `headers`: the key is read
/// from it, and client-sent identity headers in it are removed too.
#[tokio::test]
async fn raw_header_map_is_read() {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let s = service();
    let mut r = request("GET", "/pets", &[], EXT);
    let http = common::http_of(&mut r);
    http.header_map = Some(HeaderMap {
        headers: [("x-api-key", KEY), ("x-plangate-extra", "spoof")]
            .into_iter()
            .map(|(k, v)| HeaderValue {
                key: k.into(),
                value: String::new(),
                raw_value: v.as_bytes().to_vec(),
            })
            .collect(),
    });
    let resp = check(&s, r).await;
    assert_eq!(summary(&resp).0, 0);
    let Some(HttpResponse::OkResponse(ok)) = &resp.http_response else {
        panic!("not admitted")
    };
    assert!(
        ok.headers_to_remove.iter().any(|h| h == "x-plangate-extra"),
        "{ok:?}"
    );
}

/// AWS AUTHORIZER key source: the key comes from dynamic metadata set by an earlier filter.
#[tokio::test]
async fn key_from_metadata_context() {
    use envoy_types::pb::envoy::config::core::v3::Metadata;
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    let s = service_with(
        "api_key_source: { metadata: { namespace: envoy.filters.http.jwt_authn, path: [payload, usage_key] } }",
    );
    let string = |v: &str| Value {
        kind: Some(Kind::StringValue(v.into())),
    };
    let payload = Struct {
        fields: [("usage_key".to_string(), string(KEY))].into(),
    };
    let ns = Struct {
        fields: [(
            "payload".to_string(),
            Value {
                kind: Some(Kind::StructValue(payload)),
            },
        )]
        .into(),
    };
    // The header is ignored with a metadata source.
    let mut r = request(
        "GET",
        "/pets",
        &[("x-api-key", "ignored-header-value-0000")],
        EXT,
    );
    r.attributes.as_mut().unwrap().metadata_context = Some(Metadata {
        filter_metadata: [("envoy.filters.http.jwt_authn".to_string(), ns)].into(),
        ..Default::default()
    });
    assert_eq!(summary(&check(&s, r).await).0, 0);
    // No metadata: no key.
    let r = request("GET", "/pets", &[("x-api-key", KEY)], EXT);
    assert_eq!(summary(&check(&s, r).await).1, Some(403));
}

#[tokio::test]
async fn no_attributes_is_400() {
    let s = service();
    let r = check(&s, CheckRequest { attributes: None }).await;
    assert_eq!(
        summary(&r),
        (3, Some(400), r#"{"message":"Bad Request"}"#.into())
    );
}

#[tokio::test]
async fn no_http_request_is_400() {
    let s = service();
    let r = check(
        &s,
        CheckRequest {
            attributes: Some(AttributeContext::default()),
        },
    )
    .await;
    assert_eq!(summary(&r).1, Some(400));
}

#[tokio::test]
async fn empty_path_is_400() {
    let s = service();
    let r = check(&s, request("GET", "", &[("x-api-key", KEY)], EXT)).await;
    assert_eq!(summary(&r).1, Some(400));
}

#[tokio::test]
async fn unknown_api_or_stage_is_403() {
    let s = service();
    for ext in [
        &[("api", "bookstore"), ("stage", "prod")][..],
        &[("api", "petstore"), ("stage", "qa")][..],
        &[][..],
    ] {
        let r = check(&s, request("GET", "/pets", &[("x-api-key", KEY)], ext)).await;
        assert_eq!(
            summary(&r),
            (7, Some(403), r#"{"message":"Forbidden"}"#.into()),
            "{ext:?}"
        );
    }
}

#[tokio::test]
async fn huge_and_odd_header_values_are_refused_cleanly() {
    let s = service();
    let huge = "k".repeat(64 * 1024);
    let odd = "ke\u{0}y\u{7f}\u{fffd}€-0123456789abcdefgh";
    for v in [huge.as_str(), odd, "", ",", "\u{2028}"] {
        let r = check(&s, request("GET", "/pets", &[("x-api-key", v)], EXT)).await;
        assert_eq!(summary(&r).1, Some(403));
    }
    // A huge path is just an unknown method (stage defaults: no key → 403).
    let path = format!("/{}", "p/".repeat(30_000));
    let r = check(&s, request("GET", &path, &[], EXT)).await;
    assert_eq!(summary(&r).1, Some(403));
}

/// AWS's `apiKeySource` is a property of each API: an API's own `api_key_source` wins over the
/// top-level one, for that API only; the header removed upstream is the one the key came from.
#[tokio::test]
async fn an_api_reads_its_key_from_its_own_source() {
    let text = format!(
        r#"
version: 1
responses: {{ forward_api_key: false }}
apis:
  petstore:
    stages:
      prod: {{ methods: {{ "/pets/GET": {{}} }} }}
  partner:
    api_key_source: {{ header: X-Partner-Key }}
    stages:
      prod: {{ methods: {{ "/pets/GET": {{}} }} }}
usage_plans:
  gold:
    api_stages: [{{ api: petstore, stage: prod }}, {{ api: partner, stage: prod }}]
api_keys:
  - {{ id: k1, value_sha256: {}, usage_plans: [gold] }}
"#,
        hex::encode(plangate::snapshot::hash_key(KEY))
    );
    let c = plangate::config::load_str(&text, None, Path::new(".")).unwrap();
    let s = AuthzService::new(Arc::new(common::engine_of(c.snapshot)), Default::default());
    let partner: &[(&str, &str)] = &[("api", "partner"), ("stage", "prod")];
    // petstore: the top-level source (x-api-key).
    let r = check(&s, request("GET", "/pets", &[("x-api-key", KEY)], EXT)).await;
    assert_eq!(summary(&r).0, 0);
    // partner: its own header, not x-api-key.
    let r = check(&s, request("GET", "/pets", &[("x-api-key", KEY)], partner)).await;
    assert_eq!(summary(&r).1, Some(403));
    let r = check(
        &s,
        request("GET", "/pets", &[("x-partner-key", KEY)], partner),
    )
    .await;
    assert_eq!(summary(&r).0, 0);
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        panic!("not OK: {r:?}");
    };
    assert!(
        ok.headers_to_remove.iter().any(|h| h == "x-partner-key"),
        "{:?}",
        ok.headers_to_remove
    );
    assert!(!ok.headers_to_remove.iter().any(|h| h == "x-api-key"));
}

/// AWS gateway responses: a refusal's status, body and headers customised by response type,
/// the API's own before the top level, a type before its DEFAULT_4XX/5XX.
#[tokio::test]
async fn gateway_responses_customise_refusals() {
    let text = format!(
        r#"
version: 1
gateway_responses:
  DEFAULT_4XX:
    headers: {{ Access-Control-Allow-Origin: "*" }}
  QUOTA_EXCEEDED:
    status: 402
    headers: {{ content-type: application/json; charset=utf-8 }}
    body: '{{"error":$context.error.messageString,"upgrade":"https://example.com/plans"}}'
apis:
  petstore:
    gateway_responses:
      THROTTLED:
        body: slow down
        headers: {{ content-type: text/plain }}
    stages:
      prod: {{ methods: {{ "/pets/GET": {{}} }} }}
usage_plans:
  gold:
    throttle: {{ rate: 0.001, burst: 1 }}
    api_stages: [{{ api: petstore, stage: prod }}]
  tiny:
    quota: {{ limit: 1, period: DAY }}
    api_stages: [{{ api: petstore, stage: prod }}]
api_keys:
  - {{ id: k1, value_sha256: {}, usage_plans: [gold] }}
  - {{ id: k2, value_sha256: {}, usage_plans: [tiny] }}
"#,
        hex::encode(plangate::snapshot::hash_key(KEY)),
        hex::encode(plangate::snapshot::hash_key(OTHER_KEY)),
    );
    let c = plangate::config::load_str(&text, None, Path::new(".")).unwrap();
    let s = AuthzService::new(Arc::new(common::engine_of(c.snapshot)), Default::default());
    let denied = |r: &CheckResponse| match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            let headers: HashMap<String, String> = d
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.to_ascii_lowercase(), h.value.clone()))
                .collect();
            (
                d.status.as_ref().map_or(0, |s| s.code),
                d.body.clone(),
                headers,
            )
        }
        _ => panic!("not denied: {r:?}"),
    };
    // THROTTLED of the API: its body and content type, not the top-level default's header.
    check(&s, request("GET", "/pets", &[("x-api-key", KEY)], EXT)).await;
    let r = check(&s, request("GET", "/pets", &[("x-api-key", KEY)], EXT)).await;
    let (status, body, headers) = denied(&r);
    assert_eq!((status, body.as_str()), (429, "slow down"));
    assert_eq!(headers["content-type"], "text/plain");
    assert!(!headers.contains_key("access-control-allow-origin"));
    assert!(
        headers.contains_key("retry-after"),
        "plangate's own headers stay"
    );
    // QUOTA_EXCEEDED at the top level: status, templated body, header replaced.
    check(
        &s,
        request("GET", "/pets", &[("x-api-key", OTHER_KEY)], EXT),
    )
    .await;
    let r = check(
        &s,
        request("GET", "/pets", &[("x-api-key", OTHER_KEY)], EXT),
    )
    .await;
    let (status, body, headers) = denied(&r);
    assert_eq!(status, 402);
    assert_eq!(
        body,
        r#"{"error":"Limit Exceeded","upgrade":"https://example.com/plans"}"#
    );
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    // A missing key (INVALID_API_KEY, not configured) falls back to DEFAULT_4XX: its header,
    // the built-in status and body.
    let r = check(&s, request("GET", "/pets", &[], EXT)).await;
    let (status, body, headers) = denied(&r);
    assert_eq!((status, body.as_str()), (403, r#"{"message":"Forbidden"}"#));
    assert_eq!(headers["access-control-allow-origin"], "*");
}

const OTHER_KEY: &str = "handler-other-0123456789abcdef";

/// Shadow mode (`enforce: false` on a plan or stage, `--shadow` for all): decided and charged as
/// if enforced, let through, the would-be outcome told to the upstream.
#[tokio::test]
async fn shadow_mode_lets_refusals_through_and_says_so() {
    let text = |plan_enforce: &str, stage_enforce: &str| {
        let stage = format!(r#"{{ {stage_enforce} methods: {{ "/pets/GET": {{}} }} }}"#);
        let plan = format!("{plan_enforce} throttle: {{ rate: 0.001, burst: 1 }}");
        common::petstore(
            "",
            &[("prod", &stage)],
            &[("gold", &plan)],
            &[("k1", KEY, "usage_plans: [gold]")],
        )
    };
    let service = |text: &str, shadow: bool| {
        let c = plangate::config::load_str(text, None, Path::new(".")).unwrap();
        let engine = Arc::new(common::engine_of(c.snapshot).with_shadow(shadow));
        let metrics: Arc<plangate::metrics::Metrics> = Default::default();
        (AuthzService::new(engine, metrics.clone()), metrics)
    };
    let upstream = |r: &CheckResponse| -> HashMap<String, String> {
        match &r.http_response {
            Some(HttpResponse::OkResponse(ok)) => ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
            _ => panic!("not let through: {r:?}"),
        }
    };
    for (plan, stage, global) in [
        ("enforce: false,", "", false),
        ("", "enforce: false,", false),
        ("", "", true),
    ] {
        let (s, metrics) = service(&text(plan, stage), global);
        let first = check(&s, request("GET", "/pets", &[("x-api-key", KEY)], EXT)).await;
        assert_eq!(summary(&first).0, 0);
        assert!(!upstream(&first).contains_key("x-plangate-shadow-outcome"));
        // Throttled as enforced (burst 1), let through, and said so upstream; a client-sent
        // shadow header is not trusted.
        let second = check(
            &s,
            request(
                "GET",
                "/pets",
                &[
                    ("x-api-key", KEY),
                    ("x-plangate-shadow-outcome", "admitted"),
                ],
                EXT,
            ),
        )
        .await;
        assert_eq!(summary(&second).0, 0, "{plan}{stage}{global}");
        let h = upstream(&second);
        assert_eq!(h["x-plangate-shadow-outcome"], "throttled");
        assert_eq!(h["x-plangate-api-key-id"], "k1");
        // An unknown key belongs to no plan: shadowed by the stage or globally, not by a plan.
        let third = check(
            &s,
            request(
                "GET",
                "/pets",
                &[("x-api-key", "nope-0123456789abcdefghij")],
                EXT,
            ),
        )
        .await;
        if plan.is_empty() {
            assert_eq!(summary(&third).0, 0);
            assert_eq!(upstream(&third)["x-plangate-shadow-outcome"], "forbidden");
        } else {
            assert_eq!(summary(&third).1, Some(403));
        }
        let text = metrics.render();
        assert!(
            text.contains(r#"outcome="throttled",plan="gold",shadow="true""#),
            "{text}"
        );
    }
    // Enforced: the same second request is refused.
    let (s, _) = service(&text("", ""), false);
    check(&s, request("GET", "/pets", &[("x-api-key", KEY)], EXT)).await;
    let r = check(&s, request("GET", "/pets", &[("x-api-key", KEY)], EXT)).await;
    assert_eq!(summary(&r).1, Some(429));
}

/// In shadow mode the answer is always OK: a store failure that `closed` refuses is let
/// through too, with its would-be outcome.
#[tokio::test]
async fn shadow_mode_lets_a_store_failure_through_too() {
    let text = format!(
        "version: 1\napis: {{ petstore: {{ stages: {{ prod: {{ methods: {{ \"/pets/GET\": {{}} }} }} }} }} }}\nusage_plans:\n  gold: {{ api_stages: [{{ api: petstore, stage: prod }}] }}\napi_keys:\n  - {{ id: k1, value_sha256: {}, usage_plans: [gold] }}\n",
        hex::encode(plangate::snapshot::hash_key(KEY))
    );
    let engine = |shadow| {
        let c = plangate::config::load_str(&text, None, Path::new(".")).unwrap();
        Arc::new(
            Engine::new(
                c.snapshot,
                Arc::new(common::BrokenStore::Down),
                Arc::new(FakeClock::new(1_700_000_000_000_000_000)),
            )
            .with_failure_policy(plangate::engine::FailurePolicy::Closed)
            .with_shadow(shadow),
        )
    };
    let s = AuthzService::new(engine(false), Default::default());
    let r = check(&s, request("GET", "/pets", &[("x-api-key", KEY)], EXT)).await;
    assert_eq!(summary(&r).1, Some(503));
    let s = AuthzService::new(engine(true), Default::default());
    let r = check(&s, request("GET", "/pets", &[("x-api-key", KEY)], EXT)).await;
    assert_eq!(summary(&r).0, 0, "{r:?}");
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        panic!("not OK: {r:?}");
    };
    let shadow = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == "x-plangate-shadow-outcome")
        .map(|h| h.value.as_str());
    assert_eq!(shadow, Some("unavailable"));
}

/// The request as bytes (what the server receives): a request in a form the in-place reader
/// leaves to prost — the same singular message given twice, which protobuf merges; a field of
/// an unexpected wire type prost skips — is answered as its canonical form is; bytes prost
/// cannot decode are refused as tonic refuses them (INTERNAL), never a panic.
#[tokio::test]
async fn requests_in_any_encoding_mean_what_they_mean_to_prost() {
    use prost::Message;
    let s = service();
    let canonical = request("GET", "/pets", &[("x-api-key", KEY)], EXT);
    let answer = |bytes: Vec<u8>| {
        let s = &s;
        async move {
            s.check_bytes(bytes.into())
                .await
                .map(|a| summary(&a.to_message()))
        }
    };
    let want = answer(canonical.encode_to_vec()).await.unwrap();
    assert_eq!(want.0, 0, "admitted: {want:?}");

    // `attributes` given twice: the HTTP request in the first, the context extensions in the
    // second (a merge).
    let mut first = canonical.clone();
    first
        .attributes
        .as_mut()
        .unwrap()
        .context_extensions
        .clear();
    let mut second = canonical.clone();
    second.attributes.as_mut().unwrap().request = None;
    let mut split = first.encode_to_vec();
    split.extend(second.encode_to_vec());
    assert_eq!(CheckRequest::decode(split.as_slice()).unwrap(), canonical);
    // A second request is charged too: the plan's bucket is deep enough for both.
    assert_eq!(answer(split).await.unwrap().0, 0);

    // An unknown field of every wire type, before the attributes: skipped by both readers (a
    // group, by prost only).
    let mut unknown = vec![0xf8, 0x07, 0x01, 0xfd, 0x07, 0, 0, 0, 0, 0xf9, 0x07];
    unknown.extend([0u8; 8]);
    unknown.extend([0xfb, 0x07, 0xfc, 0x07]);
    unknown.extend(canonical.encode_to_vec());
    assert_eq!(answer(unknown).await.unwrap().0, 0);

    // Truncated, a bad length, invalid UTF-8 in a header value: INTERNAL, as from tonic.
    let mut bad_utf8 = request("GET", "/pets", &[("x-api-key", "\u{e9}")], EXT).encode_to_vec();
    let at = bad_utf8.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
    bad_utf8[at] = 0xff;
    for bytes in [
        canonical.encode_to_vec()[..10].to_vec(),
        vec![0x0a, 0x7f],
        bad_utf8,
    ] {
        let e = answer(bytes).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::Internal, "{e:?}");
    }
}
