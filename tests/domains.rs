//! Custom domain names: a request's host and base path name its API stage, through ext_authz
//! (the `host` attribute) and RLS (a `host` descriptor entry) alike — Istio can set neither
//! context extensions nor per-route descriptors.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use plangate::engine::{DenyReason, Engine, Outcome};
use plangate::grpc::{AuthzService, RlsService};

const KEY: &str = "domain-key-0123456789abcdef";

fn config(extra: &str) -> String {
    format!(
        r#"
version: 1
{extra}
apis:
  petstore:
    stages:
      prod:
        methods:
          "/pets/GET": {{ throttle: {{ rate: 1, burst: 3 }} }}
      beta:
        methods:
          "/pets/GET": {{}}
domain_names:
  api.example.com:
    base_path_mappings:
      - {{ base_path: v1, api: petstore, stage: prod }}
      - {{ base_path: "(none)", api: petstore, stage: beta }}
  "*.tenants.example.net":
    base_path_mappings:
      - {{ api: petstore, stage: prod }}
  only-v2.example.com:
    base_path_mappings:
      - {{ base_path: v2, api: petstore, stage: prod }}
usage_plans:
  gold:
    api_stages:
      - {{ api: petstore, stage: prod }}
      - {{ api: petstore, stage: beta }}
api_keys:
  - {{ id: k1, value_sha256: {}, usage_plans: [gold] }}
"#,
        hex::encode(plangate::snapshot::hash_key(KEY))
    )
}

fn engine(extra: &str) -> Arc<Engine> {
    let c = plangate::config::load_str(&config(extra), None, Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(common::engine_of(c.snapshot))
}

async fn decide(
    e: &Engine,
    host: &str,
    path: &str,
    ext: Option<(&str, &str)>,
) -> plangate::engine::Decision {
    let req = plangate::engine::Request::new("GET", path, Some(KEY), 1)
        .stage(ext.map(|x| x.0), ext.map(|x| x.1))
        .host(Some(host));
    e.decide(&req).await
}

#[tokio::test]
async fn the_host_and_base_path_name_the_stage() {
    let e = engine("");
    let cases = [
        ("api.example.com", "/v1/pets", "prod"),
        ("API.example.com:443", "/v1/pets?x=1", "prod"),
        ("api.example.com", "/pets", "beta"),
        ("acme.tenants.example.net", "/pets", "prod"),
    ];
    for (host, path, stage) in cases {
        let d = decide(&e, host, path, None).await;
        assert_eq!(d.outcome, Outcome::Admitted, "{host}{path}: {:?}", d.reason);
        assert_eq!(d.stage.as_deref(), Some(stage), "{host}{path}");
        // The base path is stripped before the method match.
        assert_eq!(d.method.as_deref(), Some("/pets/GET"), "{host}{path}");
    }
}

#[tokio::test]
async fn a_host_or_base_path_that_maps_to_nothing_is_forbidden() {
    let e = engine("");
    let d = decide(&e, "unknown.example.org", "/v1/pets", None).await;
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Forbidden, Some(DenyReason::UnknownDomain))
    );
    let d = decide(&e, "only-v2.example.com", "/v1/pets", None).await;
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Forbidden, Some(DenyReason::UnknownBasePath))
    );
    // Under the mapped base path, the stage's own rules apply (an unlisted method here).
    let d = decide(&e, "only-v2.example.com", "/v2/pets", None).await;
    assert_eq!(d.outcome, Outcome::Admitted);
}

#[tokio::test]
async fn context_extensions_come_first_then_the_domain_then_defaults_if_the_file_says_so() {
    let e = engine("defaults: { api: petstore, stage: beta }");
    // Context extensions win over the host.
    let d = decide(&e, "api.example.com", "/pets", Some(("petstore", "prod"))).await;
    assert_eq!(d.stage.as_deref(), Some("prod"));
    // The domain wins over the defaults.
    let d = decide(&e, "api.example.com", "/v1/pets", None).await;
    assert_eq!(d.stage.as_deref(), Some("prod"));
    // A host no domain claims is refused even with defaults (a client chooses its Host)...
    let d = decide(&e, "unknown.example.org", "/pets", None).await;
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Forbidden, Some(DenyReason::UnknownDomain))
    );
    // ... unless the file says it takes the defaults.
    let e = engine("defaults: { api: petstore, stage: beta }\nunknown_hosts: defaults");
    let d = decide(&e, "unknown.example.org", "/pets", None).await;
    assert_eq!(
        (d.outcome, d.stage.as_deref()),
        (Outcome::Admitted, Some("beta"))
    );
    // A domain that claims the host but not the base path does not fall back.
    let d = decide(&e, "only-v2.example.com", "/pets", None).await;
    assert_eq!(d.reason, Some(DenyReason::UnknownBasePath));
}

#[tokio::test]
async fn stages_reached_through_domains_share_their_counters() {
    // prod's /pets/GET has a burst of 3, whatever host leads there.
    let e = engine("");
    let hosts = [
        "api.example.com",
        "a.tenants.example.net",
        "b.tenants.example.net",
    ];
    let mut admitted = 0;
    for i in 0..6 {
        let host = hosts[i % hosts.len()];
        let path = if host == "api.example.com" {
            "/v1/pets"
        } else {
            "/pets"
        };
        if decide(&e, host, path, None).await.admitted() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3);
}

fn check_request(host: &str, path: &str, host_as_header: bool) -> CheckRequest {
    let mut headers: HashMap<String, String> = [("x-api-key".to_owned(), KEY.to_owned())].into();
    if host_as_header {
        headers.insert(":authority".into(), host.into());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    host: if host_as_header {
                        String::new()
                    } else {
                        host.into()
                    },
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn denied_body(r: &CheckResponse) -> Option<String> {
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => Some(d.body.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn ext_authz_reads_the_host() {
    let e = engine("");
    let s = AuthzService::new(e, Arc::new(plangate::metrics::Metrics::new()));
    let check = |r| async { s.check(tonic::Request::new(r)).await.unwrap().into_inner() };
    for as_header in [false, true] {
        let r = check(check_request("api.example.com", "/v1/pets", as_header)).await;
        assert_eq!(r.status.map(|s| s.code), Some(0), "as header: {as_header}");
    }
    let r = check(check_request("elsewhere.example.org", "/v1/pets", false)).await;
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(7));
    assert_eq!(
        denied_body(&r).as_deref(),
        Some(r#"{"message":"Forbidden"}"#)
    );
}

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn rls_reads_the_host_entry_and_its_key_is_configurable() {
    for (extra, host_key) in [
        ("", "host"),
        (
            "rate_limit_service: { descriptor_keys: { host: authority } }",
            "authority",
        ),
    ] {
        let e = engine(extra);
        let s = RlsService::new(e, Arc::new(plangate::metrics::Metrics::new()));
        let ask = |host: &'static str, path: &'static str| {
            let d = descriptor(&[
                (host_key, host),
                ("api_key", KEY),
                ("method", "GET"),
                ("path", path),
            ]);
            let r = RateLimitRequest {
                domain: "plangate".into(),
                descriptors: vec![d],
                hits_addend: 1,
            };
            let s = &s;
            async move {
                s.should_rate_limit(tonic::Request::new(r))
                    .await
                    .unwrap()
                    .into_inner()
            }
        };
        // Burst 3 on prod's /pets/GET, reached at /v1/pets.
        for _ in 0..3 {
            assert_eq!(
                ask("api.example.com", "/v1/pets").await.overall_code,
                Code::Ok as i32
            );
        }
        let r = ask("api.example.com", "/v1/pets").await;
        assert_eq!(r.overall_code, Code::OverLimit as i32);
        assert_eq!(
            String::from_utf8_lossy(&r.raw_body),
            r#"{"message":"Too Many Requests"}"#
        );
        // beta, through (none): its own counters.
        assert_eq!(
            ask("api.example.com", "/pets").await.overall_code,
            Code::Ok as i32
        );
        let r = ask("nowhere.example.org", "/pets").await;
        assert_eq!(r.overall_code, Code::OverLimit as i32);
        assert_eq!(
            String::from_utf8_lossy(&r.raw_body),
            r#"{"message":"Forbidden"}"#
        );
    }
}
