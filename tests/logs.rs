//! The log as operators read it: `--log-format json` gives one JSON object per line; a refused
//! request is one `plangate::decision` event at info with Envoy's request id and the decision's
//! names, never a key value; no terminal colours in a file; dependencies quiet by default.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::sha;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

const KEY: &str = "logged-key-0123456789abcdef";
const WRONG: &str = "wrong-key-0123456789abcdefg";

fn check(key: &str, request_id: &str) -> envoy_types::ext_authz::v3::pb::CheckRequest {
    let r = common::check_request_to(key, "/pets", "petstore", "prod");
    common::with_header(r, "x-request-id", request_id)
}

/// Serves `config` with JSON logs (plus `extra` flags), sends each (key, request id) as a
/// Check, stops, and returns the log and the gRPC port.
async fn serve_and_check(
    config: &std::path::Path,
    extra: &[&str],
    checks: &[(&str, String)],
) -> (String, u16) {
    let log = config.with_file_name("plangate.log");
    let (grpc, admin) = (common::free_port(), common::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args(["serve", "--no-persist", "--no-watch", "--config"])
        .arg(config)
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--log-format", "json"])
        .args(extra)
        .env_remove("PLANGATE_LOG")
        .env_remove("PLANGATE_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    common::wait_for_port(grpc, "plangate", &mut child);
    let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = AuthorizationClient::new(ch);
    for (key, id) in checks {
        c.check(check(key, id)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = child.kill();
    let _ = child.wait();
    (std::fs::read_to_string(&log).unwrap(), grpc)
}

#[tokio::test]
async fn refusals_are_json_decision_events_without_key_values() {
    let (_dir, config) = common::plans_dir(common::petstore(
        "",
        &[("prod", r#"{ methods: { "/pets/GET": {} } }"#)],
        &[("gold", "quota: { limit: 1, period: DAY }")],
        &[("k1", KEY, "usage_plans: [gold]")],
    ));
    let checks = [
        (KEY, "req-admitted".to_owned()),
        (KEY, "req-over-quota".to_owned()),
        (WRONG, "req-unknown".to_owned()),
    ];
    let (text, grpc) = serve_and_check(&config, &[], &checks).await;
    assert!(
        !text.contains('\u{1b}'),
        "terminal colours in a log file:\n{text}"
    );
    assert!(
        !text.contains(KEY) && !text.contains(WRONG),
        "a key value in the log"
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // Dependencies (h2, hyper, tonic) stay quiet by default; plangate's own events are at info.
    for l in &lines {
        let target = l["target"].as_str().unwrap_or("");
        assert!(
            target.starts_with("plangate"),
            "a dependency logged at info by default: {l}"
        );
    }
    let events: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "plangate::decision")
        .collect();
    // Refusals only (admitted decisions are at debug).
    assert_eq!(events.len(), 2, "{events:?}");
    let over = events
        .iter()
        .find(|e| e["request_id"] == "req-over-quota")
        .unwrap();
    assert_eq!(over["level"], "INFO");
    assert_eq!(over["message"], "refused");
    assert_eq!(over["service"], "ext_authz");
    assert_eq!(over["outcome"], "quota_exceeded");
    assert_eq!(over["decided_by"], "plan_quota");
    assert_eq!(over["key_id"], "k1");
    assert_eq!(over["plan"], "gold");
    assert_eq!(
        (over["api"].as_str(), over["stage"].as_str()),
        (Some("petstore"), Some("prod"))
    );
    assert_eq!(over["method"], "/pets/GET");
    let unknown = events
        .iter()
        .find(|e| e["request_id"] == "req-unknown")
        .unwrap();
    assert_eq!(
        (unknown["outcome"].as_str(), unknown["reason"].as_str()),
        (Some("forbidden"), Some("unknown_key"))
    );
    // The startup lines read as they should (no `Some(…)` around an address).
    assert!(
        lines.iter().any(
            |l| l["message"] == "gRPC listening (ext_authz, RLS, health)"
                && l["addr"] == format!("127.0.0.1:{grpc}")
        ),
        "{text}"
    );
}

/// `--log-admitted-sample 0.5`: one admitted decision in two is logged at info, exactly.
#[tokio::test]
async fn a_share_of_admitted_decisions_is_logged() {
    let (_dir, config) = common::plans_dir(format!(
        "version: 1\napis: {{ petstore: {{ stages: {{ prod: {{ methods: {{ \"/pets/GET\": {{}} }} }} }} }} }}\nusage_plans:\n  gold: {{ api_stages: [{{ api: petstore, stage: prod }}] }}\napi_keys:\n  - {{ id: k1, value_sha256: {}, usage_plans: [gold] }}\n",
        sha(KEY)
    ));
    // A share outside 0..=1 is refused at once.
    let out = Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args([
            "serve",
            "--no-persist",
            "--log-admitted-sample",
            "2",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a share from 0 to 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let checks: Vec<(&str, String)> = (0..10).map(|i| (KEY, format!("req-{i}"))).collect();
    let (text, _) = serve_and_check(&config, &["--log-admitted-sample", "0.5"], &checks).await;
    let sampled: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "admitted (sampled)")
        .collect();
    assert_eq!(sampled.len(), 5, "{text}");
    assert!(
        sampled
            .iter()
            .all(|e| e["level"] == "INFO" && e["key_id"] == "k1")
    );
    assert!(!text.contains(KEY));
}
