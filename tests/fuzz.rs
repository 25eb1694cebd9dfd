//! Hostile input, generated: the ext_authz and RLS handlers fed arbitrary requests (structured,
//! and decoded from raw bytes), the YAML and CSV loaders fed arbitrary and mutated text. Nothing
//! may panic; every Check gets an answer with a status; every RLS request an answer or a clear
//! gRPC error; every load a configuration or errors.
//!
//! The suite runs a short pass (`PLANGATE_FUZZ_CASES`, default 200 cases per target);
//! `scripts/fuzz.sh` runs long passes. proptest shrinks a failure to a small case and keeps it
//! in `tests/fuzz.proptest-regressions` as the seed of later runs.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::google::protobuf::UInt64Value;
use plangate::engine::Engine;
use plangate::grpc::{AuthzService, RlsService};
use proptest::prelude::*;
use prost::Message;

const KEY: &str = "fuzz-key-0123456789abcdefgh";

const CONFIG: &str = r#"
version: 1
apis:
  petstore:
    gateway_responses:
      THROTTLED: { body: '{"m":$context.error.messageString}' }
    stages:
      prod:
        throttle: { rate: 5, burst: 3 }
        unknown_methods: forbid
        methods:
          "/pets/GET": {}
          "/pets/{id}/GET": { throttle: { rate: 1, burst: 1 } }
          "/admin/{proxy+}/ANY": { throttle: { rate: 0, burst: 0 } }
          "//GET": { api_key_required: false }
      dev: { enforce: false }
domain_names:
  api.example.com: { base_path_mappings: [{ base_path: v1, api: petstore, stage: prod }] }
usage_plans:
  gold:
    throttle: { rate: 2, burst: 2 }
    quota: { limit: 5, period: DAY }
    api_stages: [{ api: petstore, stage: prod }, { api: petstore, stage: dev }]
api_keys:
  - { id: k1, value_sha256: KEYHASH, usage_plans: [gold] }
"#;

fn config() -> String {
    CONFIG.replace("KEYHASH", &hex::encode(plangate::snapshot::hash_key(KEY)))
}

fn engine() -> Arc<Engine> {
    let c = plangate::config::load_str(&config(), None, Path::new(".")).unwrap();
    Arc::new(common::engine_of(c.snapshot))
}

fn cases() -> u32 {
    std::env::var("PLANGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Strings a hostile client would send: path pieces, escapes, dots, unicode, long runs.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        prop::collection::vec(
            prop_oneof![
                Just("/".to_owned()),
                Just("//".to_owned()),
                Just("..".to_owned()),
                Just(".".to_owned()),
                Just("%".to_owned()),
                Just("%2F".to_owned()),
                Just("%2e".to_owned()),
                Just("%zz".to_owned()),
                Just("\\".to_owned()),
                Just("?".to_owned()),
                Just("pets".to_owned()),
                Just("admin".to_owned()),
                Just("{id}".to_owned()),
                Just("é".to_owned()),
                Just("\u{0}".to_owned()),
                "[a-z0-9]{1,8}",
            ],
            0..12
        )
        .prop_map(|v| v.concat()),
        "x{0,2000}",
    ]
}

fn check_request(
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    ext: Vec<(String, String)>,
    host: String,
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method,
                    path,
                    host,
                    headers: headers.into_iter().collect::<HashMap<_, _>>(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: ext.into_iter().collect(),
            ..Default::default()
        }),
    }
}

fn header() -> impl Strategy<Value = (String, String)> {
    (
        prop_oneof![
            Just("x-api-key".to_owned()),
            Just("x-plangate-shadow-outcome".to_owned()),
            Just("x-plangate-api-key-id".to_owned()),
            Just("x-request-id".to_owned()),
            "[a-z-]{1,12}",
        ],
        prop_oneof![Just(KEY.to_owned()), hostile()],
    )
}

fn extension() -> impl Strategy<Value = (String, String)> {
    (
        prop_oneof![
            Just("api".to_owned()),
            Just("stage".to_owned()),
            Just("hits".to_owned()),
            "[a-z]{1,6}",
        ],
        prop_oneof![
            Just("petstore".to_owned()),
            Just("prod".to_owned()),
            Just("dev".to_owned()),
            Just("0".to_owned()),
            Just("18446744073709551615".to_owned()),
            Just("-1".to_owned()),
            hostile(),
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Every Check gets an answer with a status; none panics.
    #[test]
    fn check_answers_anything(
        method in prop_oneof![Just("GET".to_owned()), Just("get".to_owned()), Just("BREW".to_owned()), Just(String::new()), "[A-Z]{1,10}"],
        path in hostile(),
        headers in prop::collection::vec(header(), 0..6),
        ext in prop::collection::vec(extension(), 0..4),
        host in prop_oneof![Just("api.example.com".to_owned()), Just(String::new()), hostile()],
        repeat in 1usize..4,
    ) {
        let s = AuthzService::new(engine(), Default::default());
        rt().block_on(async {
            for _ in 0..repeat {
                let req = check_request(method.clone(), path.clone(), headers.clone(), ext.clone(), host.clone());
                let r = s.check(tonic::Request::new(req)).await;
                let r = r.expect("an answer, not an RPC error").into_inner();
                prop_assert!(r.status.is_some(), "no status: {r:?}");
            }
            Ok(())
        })?;
    }

    /// Bytes off the wire: whatever decodes as a CheckRequest is answered.
    #[test]
    fn check_answers_any_decodable_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(req) = CheckRequest::decode(bytes.as_slice()) {
            let s = AuthzService::new(engine(), Default::default());
            let r = rt().block_on(s.check(tonic::Request::new(req)));
            prop_assert!(r.is_ok());
        }
    }

    /// Every RLS request gets an answer with one status per descriptor, or a clear error.
    #[test]
    fn rls_answers_anything(
        descriptors in prop::collection::vec(
            (
                prop::collection::vec(
                    (
                        prop_oneof![Just("api".to_owned()), Just("stage".to_owned()), Just("api_key".to_owned()), Just("method".to_owned()), Just("path".to_owned()), Just("host".to_owned()), "[a-z]{1,6}"],
                        prop_oneof![Just("petstore".to_owned()), Just("prod".to_owned()), Just(KEY.to_owned()), Just("GET".to_owned()), hostile()],
                    ),
                    0..8,
                ),
                prop::option::of(any::<u64>()),
                any::<bool>(),
            ),
            0..5,
        ),
        hits in any::<u32>(),
        domain in prop_oneof![Just("plangate".to_owned()), hostile()],
    ) {
        let s = RlsService::new(engine(), Default::default());
        let n = descriptors.len();
        let req = RateLimitRequest {
            domain,
            descriptors: descriptors
                .into_iter()
                .map(|(entries, hits, negative)| RateLimitDescriptor {
                    entries: entries.into_iter().map(|(key, value)| Entry { key, value }).collect(),
                    hits_addend: hits.map(|value| UInt64Value { value }),
                    is_negative_hits: negative,
                    ..Default::default()
                })
                .collect(),
            hits_addend: hits,
        };
        match rt().block_on(s.should_rate_limit(tonic::Request::new(req))) {
            Ok(r) => prop_assert_eq!(r.into_inner().statuses.len(), n),
            Err(status) => prop_assert_eq!(status.code(), tonic::Code::InvalidArgument),
        }
    }

    /// Bytes off the wire: whatever decodes as a RateLimitRequest is answered.
    #[test]
    fn rls_answers_any_decodable_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(req) = RateLimitRequest::decode(bytes.as_slice()) {
            let s = RlsService::new(engine(), Default::default());
            let _ = rt().block_on(s.should_rate_limit(tonic::Request::new(req)));
        }
    }

    /// Arbitrary text, and the valid configuration with a piece cut out or a byte changed:
    /// a configuration or errors, never a panic.
    #[test]
    fn the_yaml_loader_takes_anything(
        text in ".{0,400}",
        cut in any::<prop::sample::Index>(),
        len in 0usize..40,
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let _ = plangate::config::load_str(&text, None, Path::new("."));
        let valid = config();
        let start = cut.index(valid.len());
        let end = (start + len).min(valid.len());
        if valid.is_char_boundary(start) && valid.is_char_boundary(end) {
            let mutated = format!("{}{}", &valid[..start], &valid[end..]);
            let _ = plangate::config::load_str(&mutated, None, Path::new("."));
        }
        let mut bytes = valid.into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(text) = String::from_utf8(bytes) {
            let _ = plangate::config::load_str(&text, None, Path::new("."));
        }
    }

    /// Arbitrary CSV key files: keys or errors naming lines, never a panic, never a cell.
    #[test]
    fn the_csv_loader_takes_anything(
        header in prop_oneof![Just("Name,Key,UsagePlanIds".to_owned()), Just("Key".to_owned()), ".{0,40}"],
        rows in prop::collection::vec(".{0,60}", 0..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = header;
        for r in &rows {
            csv.push('\n');
            csv.push_str(r);
        }
        std::fs::write(dir.path().join("keys.csv"), &csv).unwrap();
        let text = "version: 1\napis: { petstore: { stages: { prod: {} } } }\nusage_plans:\n  gold: { api_stages: [{ api: petstore, stage: prod }] }\napi_keys_files: [keys.csv]\n";
        let _ = plangate::config::load_str(text, None, dir.path());
    }
}
