//! Check and RLS answers pinned byte for byte: admitted, throttled and quota-exceeded, as encoded
//! on the wire today (tests/fixtures/answers/). Work on speed must not change what Envoy and the
//! client get. `PLANGATE_BLESS=1 cargo test --test answers_pinned` rewrites the files after an
//! intended change of the answers (review the diff).
//!
//! The wire bytes are the protobuf encoding of the response; its dynamic metadata is a
//! `google.protobuf.Struct`, a map whose encoding order is the hash map's (random per process), so
//! it is pinned field by field, in key order.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use plangate::clock::{FakeClock, parse_rfc3339};
use plangate::engine::Engine;
use plangate::grpc::{AuthzService, RlsService};
use plangate::store::MemoryStore;
use prost::Message;

const TIGHT: &str = "pinned-tight-key-0123456789";
const SMALL: &str = "pinned-small-key-0123456789";

fn engine() -> Arc<Engine> {
    let sha = |k: &str| hex::encode(plangate::snapshot::hash_key(k));
    let text = format!(
        r#"
version: 1
account:
  throttle: {{ rate: 1000, burst: 500 }}
apis:
  petstore:
    stages:
      prod:
        throttle: {{ rate: 100, burst: 200 }}
        methods:
          "/pets/GET": {{}}
          "/pets/{{petId}}/GET": {{ throttle: {{ rate: 50, burst: 60 }} }}
usage_plans:
  tight:
    throttle: {{ rate: 0.5, burst: 2 }}
    api_stages:
      - api: petstore
        stage: prod
        throttle:
          "/pets/{{petId}}/GET": {{ rate: 1, burst: 5 }}
  small:
    throttle: {{ rate: 10, burst: 20 }}
    quota: {{ limit: 2, period: MONTH }}
    api_stages: [{{ api: petstore, stage: prod }}]
api_keys:
  - {{ id: tight-1, value_sha256: {}, usage_plans: [tight], customer_id: acme }}
  - {{ id: small-1, value_sha256: {}, usage_plans: [small] }}
"#,
        sha(TIGHT),
        sha(SMALL)
    );
    let c = plangate::config::load_str(&text, None, Path::new(".")).unwrap();
    Arc::new(Engine::new(
        c.snapshot,
        Arc::new(MemoryStore::new()),
        Arc::new(FakeClock::new(
            parse_rfc3339("2026-11-26T10:00:00.25Z").unwrap(),
        )),
    ))
}

/// A Check for `key` and `path` on petstore/prod, with identity headers a client made up.
fn check_request(key: &str, path: &str) -> CheckRequest {
    let r = common::check_request_to(key, path, "petstore", "prod");
    let r = common::with_header(r, "x-plangate-api-key-id", "spoofed");
    common::with_header(r, "x-plangate-extra", "spoofed")
}

fn rls_request(key: &str, path: &str) -> RateLimitRequest {
    let entries = [
        ("api", "petstore"),
        ("stage", "prod"),
        ("api_key", key),
        ("method", "GET"),
        ("path", path),
    ];
    RateLimitRequest {
        domain: "plangate".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
            ..Default::default()
        }],
        hits_addend: 1,
    }
}

/// The wire bytes of a CheckResponse, with its dynamic metadata in key order.
fn check_bytes(mut r: CheckResponse) -> String {
    let meta = r.dynamic_metadata.take();
    let mut out = format!("response {}\n", hex::encode(r.encode_to_vec()));
    if let Some(m) = meta {
        let mut fields: Vec<_> = m.fields.into_iter().collect();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in fields {
            out.push_str(&format!(
                "metadata {k} {}\n",
                hex::encode(v.encode_to_vec())
            ));
        }
    }
    out
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/answers")
        .join(name)
}

fn pinned(name: &str, got: &str) {
    let path = fixture(name);
    if std::env::var_os("PLANGATE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (PLANGATE_BLESS=1 writes it)", path.display()));
    assert_eq!(got, want, "the answer `{name}` changed on the wire");
}

#[tokio::test]
async fn check_answers_are_pinned() {
    let s = AuthzService::new(engine(), Arc::new(plangate::metrics::Metrics::new()));
    let call = async |key: &str, path: &str| {
        check_bytes(
            s.check(tonic::Request::new(check_request(key, path)))
                .await
                .unwrap()
                .into_inner(),
        )
    };
    // tight: burst 2 on the plan; admitted twice, then throttled.
    pinned("check-admitted.txt", &call(TIGHT, "/pets/7?x=1").await);
    call(TIGHT, "/pets/7").await;
    pinned("check-throttled.txt", &call(TIGHT, "/pets/7").await);
    // small: quota 2 a month.
    call(SMALL, "/pets").await;
    call(SMALL, "/pets").await;
    pinned("check-quota.txt", &call(SMALL, "/pets").await);
    pinned(
        "check-forbidden.txt",
        &call("no-such-key-0123456789ab", "/pets").await,
    );
}

#[tokio::test]
async fn rls_answers_are_pinned() {
    let s = RlsService::new(engine(), Arc::new(plangate::metrics::Metrics::new()));
    let call = async |key: &str, path: &str| {
        let r = s
            .should_rate_limit(tonic::Request::new(rls_request(key, path)))
            .await
            .unwrap()
            .into_inner();
        format!("response {}\n", hex::encode(r.encode_to_vec()))
    };
    pinned("rls-admitted.txt", &call(TIGHT, "/pets/7?x=1").await);
    call(TIGHT, "/pets/7").await;
    pinned("rls-throttled.txt", &call(TIGHT, "/pets/7").await);
    call(SMALL, "/pets").await;
    call(SMALL, "/pets").await;
    pinned("rls-quota.txt", &call(SMALL, "/pets").await);
    pinned(
        "rls-forbidden.txt",
        &call("no-such-key-0123456789ab", "/pets").await,
    );
}
