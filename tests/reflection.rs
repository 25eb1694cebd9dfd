//! gRPC server reflection, from a client that knows no plangate types: Python's grpcio with
//! grpcio-reflection and protobuf's dynamic messages (installed by scripts/grpc-venv.sh). It lists
//! the services of both ports and calls Explain and GetUsage through descriptors obtained by
//! reflection; the answers must equal `plangate check` and the HTTP usage API.

mod common;

use std::process::Command;

use common::{Plangate, Succeeds};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

const TOKEN: &str = "reflection-token-0123456789";
const USED: &str = "reflection-used-0123456789a";
const FRESH: &str = "reflection-fresh-012345678";

fn config() -> String {
    common::petstore(
        "",
        &[(
            "prod",
            r#"{ throttle: { rate: 5, burst: 10 }, methods: { "/pets/GET": {} } }"#,
        )],
        &[(
            "gold",
            "throttle: { rate: 2, burst: 4 }, quota: { limit: 50, period: MONTH }",
        )],
        &[
            ("used", USED, "usage_plans: [gold]"),
            ("fresh", FRESH, "usage_plans: [gold], customer_id: acme"),
        ],
    )
}

fn python() -> String {
    let out = Command::new(common::root().join("scripts/grpc-venv.sh")).succeeds();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn check_request(key: &str) -> envoy_types::ext_authz::v3::pb::CheckRequest {
    common::check_request_to(key, "/pets", "petstore", "prod")
}

#[tokio::test]
async fn a_client_without_plangate_types_discovers_and_calls_the_management_api() {
    let python = python();
    let (dir, path) = common::plans_dir(config());
    let p = Plangate::start(
        &path,
        &["--admin-token", TOKEN],
        dir.path().join("plangate.log"),
    );
    let today = chrono::DateTime::from_timestamp_nanos(plangate::clock::Clock::now(
        &plangate::clock::SystemClock,
    ))
    .date_naive()
    .to_string();
    let client = || {
        let out = Command::new(&python)
            .arg(common::root().join("tests/clients/reflection_client.py"))
            .args([
                &format!("127.0.0.1:{}", p.admin),
                &format!("127.0.0.1:{}", p.grpc),
                TOKEN,
                FRESH,
                "gold",
                &today,
            ])
            .succeeds();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // Before any traffic, so that every counter (shared ones too) is as fresh as `check`'s.
    let before = client();
    // Usage to report: three admitted requests of `used`.
    let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", p.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut authz = AuthorizationClient::new(ch);
    for _ in 0..3 {
        let r = authz.check(check_request(USED)).await.unwrap().into_inner();
        assert_eq!(r.status.map(|s| s.code), Some(0));
    }
    let v = client();

    let names = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let admin = names("admin_services");
    for s in [
        "plangate.v1.Management",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            admin.contains(&s.to_owned()),
            "admin port lacks {s}: {admin:?}"
        );
    }
    let data = names("data_plane_services");
    assert!(
        data.contains(&"grpc.health.v1.Health".to_owned()),
        "{data:?}"
    );
    assert!(
        !data.contains(&"plangate.v1.Management".to_owned()),
        "{data:?}"
    );
    assert_eq!(v["explain_without_token"]["error"], "UNAUTHENTICATED");

    // Explain for the fresh key equals `plangate check` on the same file (nothing charged yet).
    let check = Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args(["check", "--config", path.to_str().unwrap()])
        .args([
            "--api", "petstore", "--stage", "prod", "--path", "/pets", "--key", FRESH,
        ])
        .output()
        .unwrap();
    let check: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let e = &before["explain"];
    assert_eq!(e["outcome"], "OUTCOME_ADMITTED", "{e}");
    assert_eq!(e["outcome_name"], check["outcome"]);
    assert_eq!(e["api_key_id"], check["key_id"]);
    assert_eq!(e["usage_plan_id"], check["usage_plan"]);
    assert_eq!(e["customer_id"], check["customer_id"]);
    assert_eq!(e["method"], check["method"]);
    let limits = e["limits"].as_array().unwrap();
    let expected = check["limits"].as_array().unwrap();
    assert_eq!(limits.len(), expected.len());
    for (l, x) in limits.iter().zip(expected) {
        assert_eq!(l["limit"], x["limit"]);
        assert_eq!(l["admitted"], x["admitted"]);
        // proto3 JSON writes uint64 as a string.
        assert_eq!(
            l["remaining"].as_str().unwrap(),
            x["remaining"].to_string(),
            "{l} vs {x}"
        );
    }

    // GetUsage equals the HTTP usage API's report.
    let http = common::http(
        p.admin,
        "GET",
        &format!("/v1/usageplans/gold/usage?startDate={today}&endDate={today}"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(http.status, 200, "{http:?}");
    let http: serde_json::Value = serde_json::from_str(&http.body).unwrap();
    let day = &v["usage"]["items"]["used"]["days"][0];
    assert_eq!(
        day["used"].as_str().unwrap(),
        http["items"]["used"][0][0].to_string()
    );
    assert_eq!(
        day["remaining"].as_str().unwrap(),
        http["items"]["used"][0][1].to_string()
    );
    assert_eq!(day["used"], "3");
}
