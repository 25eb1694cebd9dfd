//! The control plane's REST face through Amazon's own clients: boto3 and the AWS CLI, installed
//! from PyPI by scripts/aws-venv.sh, pointed at a running plangate with `endpoint_url`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Plangate, Succeeds};

fn aws_bin() -> PathBuf {
    let out = Command::new(common::root().join("scripts/aws-venv.sh")).succeeds();
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn served() -> (tempfile::TempDir, Plangate) {
    let plans = common::petstore(
        "",
        &[
            (
                "prod",
                r#"{ throttle: { rate: 50, burst: 100 }, methods: { "/pets/{petId}/GET": { throttle: { rate: 2.5, burst: 5 } }, "/pets/GET": {} } }"#,
            ),
            ("beta", "{}"),
        ],
        &[("gold", "")],
        &[("k1", "control-key-0123456789abcdef", "usage_plans: [gold]")],
    );
    let (dir, path) = common::plans_dir(plans);
    let p = Plangate::start(&path, &[], dir.path().join("plangate.log"));
    (dir, p)
}

/// boto3, unsigned, against the admin address: its answer as JSON (a `default=str` dump).
fn boto3(admin: u16, script: &str) -> serde_json::Value {
    let program = format!(
        r#"
import json, boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
c = boto3.client("apigateway", endpoint_url="http://127.0.0.1:{admin}", region_name="us-east-1",
                 config=Config(signature_version=UNSIGNED))
def error(call):
    try:
        call()
        return None
    except ClientError as e:
        return {{"code": e.response["Error"]["Code"], "status": e.response["ResponseMetadata"]["HTTPStatusCode"], "message": e.response["Error"]["Message"]}}
out = {{}}
{script}
print(json.dumps(out, default=str))
"#
    );
    let out = Command::new(aws_bin().join("python"))
        .arg("-c")
        .arg(program)
        .succeeds();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn boto3_lists_the_apis_and_stages_of_the_configuration() {
    let (_dir, p) = served();
    let out = boto3(
        p.admin,
        r#"
out["apis"] = c.get_rest_apis()["items"]
out["stages"] = c.get_stages(restApiId="petstore")["item"]
out["missing"] = error(lambda: c.get_stages(restApiId="nope"))
"#,
    );
    let apis = out["apis"].as_array().unwrap();
    assert_eq!(apis.len(), 1, "{out}");
    assert_eq!(apis[0]["id"], "petstore");
    assert_eq!(apis[0]["apiKeySource"], "HEADER");
    let stages = out["stages"].as_array().unwrap();
    let names: Vec<&str> = stages
        .iter()
        .map(|s| s["stageName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["beta", "prod"]);
    let prod = &stages[1]["methodSettings"];
    assert_eq!(prod["*/*"]["throttlingRateLimit"], 50.0);
    assert_eq!(prod["*/*"]["throttlingBurstLimit"], 100);
    assert_eq!(prod["~1pets~1{petId}/GET"]["throttlingRateLimit"], 2.5);
    assert_eq!(prod["~1pets~1{petId}/GET"]["throttlingBurstLimit"], 5);
    // A known difference: the compiled model folds the stage's throttle into each method, so a
    // method without one of its own is listed with the stage's (AWS lists only its own).
    assert_eq!(prod["~1pets/GET"]["throttlingBurstLimit"], 100);
    assert_eq!(out["missing"]["code"], "NotFoundException", "{out}");
    assert_eq!(out["missing"]["status"], 404);
}

#[test]
fn the_aws_cli_reads_the_same() {
    let (_dir, p) = served();
    let out = Command::new(aws_bin().join("aws"))
        .args(["apigateway", "get-stages", "--rest-api-id", "petstore"])
        .args(["--endpoint-url", &format!("http://127.0.0.1:{}", p.admin)])
        .args([
            "--region",
            "us-east-1",
            "--no-sign-request",
            "--output",
            "json",
        ])
        .succeeds();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["item"][1]["stageName"], "prod", "{v}");
    let missing = Command::new(aws_bin().join("aws"))
        .args(["apigateway", "get-stages", "--rest-api-id", "nope"])
        .args(["--endpoint-url", &format!("http://127.0.0.1:{}", p.admin)])
        .args(["--region", "us-east-1", "--no-sign-request"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("NotFoundException"), "{err}");
}
