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
    served_with(&[])
}

const ADMIN_KEY: (&str, &str) = ("AKIDPLANGATEADMIN", "admin-secret-0123456789");
const READ_KEY: (&str, &str) = ("AKIDPLANGATEREAD", "read-secret-0123456789");

/// Served with `--aws-credentials` naming an admin and a read key (in a directory of its own).
fn signed_served() -> ((tempfile::TempDir, tempfile::TempDir), Plangate) {
    let (creds, file) = common::file_in_new_dir(
        "credentials.csv",
        format!(
            "access_key_id,secret_access_key,role\n{},{},admin\n{},{},read\n",
            ADMIN_KEY.0, ADMIN_KEY.1, READ_KEY.0, READ_KEY.1
        ),
    );
    let (dir, p) = served_with(&["--aws-credentials", file.to_str().unwrap()]);
    ((dir, creds), p)
}

fn served_with(args: &[&str]) -> (tempfile::TempDir, Plangate) {
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
    let p = Plangate::start(&path, args, dir.path().join("plangate.log"));
    (dir, p)
}

/// boto3 against the admin address — unsigned, or signing with `key` — running `script`: the
/// `out` it fills, as JSON (a `default=str` dump). `client(id, secret)` makes another client.
fn boto3(admin: u16, key: Option<(&str, &str)>, script: &str) -> serde_json::Value {
    let (id, secret) = key.unwrap_or(("", ""));
    let program = format!(
        r#"
import json, boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
def client(id, secret):
    if not id:
        return boto3.client("apigateway", endpoint_url="http://127.0.0.1:{admin}",
                            region_name="us-east-1", config=Config(signature_version=UNSIGNED))
    return boto3.client("apigateway", endpoint_url="http://127.0.0.1:{admin}",
                        region_name="eu-west-3", aws_access_key_id=id, aws_secret_access_key=secret)
c = client("{id}", "{secret}")
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
        None,
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

/// Signature Version 4 as AWS's clients make it, checked against `--aws-credentials`: boto3 and
/// the CLI with a known key are answered; a wrong secret, an unknown key, no signature, and a
/// signature made 20 minutes ago are each refused with AWS's error type.
#[test]
fn aws_clients_sign_their_calls() {
    let (_dir, p) = signed_served();
    let out = boto3(
        p.admin,
        Some(ADMIN_KEY),
        &format!(
            r#"
out["apis"] = c.get_rest_apis()["items"]
out["read"] = client("{read}", "{read_secret}").get_stages(restApiId="petstore")["item"]
out["wrong_secret"] = error(lambda: client("{admin}", "not-the-secret").get_rest_apis())
out["unknown_key"] = error(lambda: client("AKIDNOBODY", "x").get_rest_apis())
out["unsigned"] = error(lambda: client("", "").get_rest_apis())
# A signature made 20 minutes ago (botocore reads the time through datetime).
import datetime as _dt, botocore.auth
_Real = _dt.datetime
class _Past(_Real):
    @classmethod
    def utcnow(cls):
        return _Real.utcnow() - _dt.timedelta(minutes=20)
    @classmethod
    def now(cls, tz=None):
        return _Real.now(tz) - _dt.timedelta(minutes=20)
botocore.auth.datetime.datetime = _Past
out["stale"] = error(lambda: client("{admin}", "{admin_secret}").get_rest_apis())
"#,
            read = READ_KEY.0,
            read_secret = READ_KEY.1,
            admin = ADMIN_KEY.0,
            admin_secret = ADMIN_KEY.1,
        ),
    );
    assert_eq!(out["apis"][0]["id"], "petstore", "{out}");
    assert_eq!(out["read"][1]["stageName"], "prod", "{out}");
    for (case, code) in [
        ("wrong_secret", "InvalidSignatureException"),
        ("unknown_key", "UnrecognizedClientException"),
        ("unsigned", "MissingAuthenticationTokenException"),
        ("stale", "InvalidSignatureException"),
    ] {
        assert_eq!(out[case]["code"], code, "{case}: {out}");
        assert_eq!(out[case]["status"], 403, "{case}: {out}");
    }
    // The AWS CLI, signing from its environment.
    let cli = Command::new(aws_bin().join("aws"))
        .args(["apigateway", "get-rest-apis", "--output", "json"])
        .args(["--endpoint-url", &format!("http://127.0.0.1:{}", p.admin)])
        .args(["--region", "ap-south-1"])
        .env("AWS_ACCESS_KEY_ID", ADMIN_KEY.0)
        .env("AWS_SECRET_ACCESS_KEY", ADMIN_KEY.1)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .succeeds();
    let v: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(v["items"][0]["id"], "petstore", "{v}");
}

/// `GetApiKeys` pages through the file's keys (boto3's paginator follows `position`), filters by
/// name prefix and customer, and never shows a value; `GetApiKey` finds one by id.
#[test]
fn boto3_pages_and_filters_the_keys_of_the_configuration() {
    let plans = common::petstore(
        "",
        &[("prod", "{}")],
        &[("gold", "")],
        &[
            (
                "k1",
                "pages-key-one-0123456789ab",
                "name: acme-prod, usage_plans: [gold], customer_id: acme",
            ),
            (
                "k2",
                "pages-key-two-0123456789ab",
                "name: acme-test, usage_plans: [gold], customer_id: acme",
            ),
            (
                "k3",
                "pages-key-three-0123456789",
                "name: globex, usage_plans: [gold], enabled: false",
            ),
        ],
    );
    let (dir, path) = common::plans_dir(plans);
    let p = Plangate::start(&path, &[], dir.path().join("plangate.log"));
    let out = boto3(
        p.admin,
        None,
        r#"
pages = c.get_paginator("get_api_keys").paginate(PaginationConfig={"PageSize": 2}, includeValues=True)
out["pages"] = [[k["id"] for k in page["items"]] for page in pages]
first = c.get_api_keys(limit=1)
out["first"] = [[k["id"] for k in first["items"]], first.get("position")]
out["acme"] = [k["id"] for k in c.get_api_keys(nameQuery="acme")["items"]]
out["customer"] = [k["id"] for k in c.get_api_keys(customerId="acme")["items"]]
out["k3"] = c.get_api_key(apiKey="k3", includeValue=True)
out["missing"] = error(lambda: c.get_api_key(apiKey="nobody"))
out["bad_limit"] = error(lambda: c.get_api_keys(limit=501))
"#,
    );
    assert_eq!(
        out["pages"],
        serde_json::json!([["k1", "k2"], ["k3"]]),
        "{out}"
    );
    assert_eq!(out["first"], serde_json::json!([["k1"], "k2"]), "{out}");
    assert_eq!(out["acme"], serde_json::json!(["k1", "k2"]));
    assert_eq!(out["customer"], serde_json::json!(["k1", "k2"]));
    assert_eq!(out["k3"]["name"], "globex");
    assert_eq!(out["k3"]["enabled"], false);
    assert!(out["k3"].get("value").is_none(), "a value shown: {out}");
    assert_eq!(out["missing"]["code"], "NotFoundException");
    assert_eq!(out["bad_limit"]["code"], "BadRequestException");
    assert_eq!(out["bad_limit"]["status"], 400);
}

/// The runtime workflow with boto3, decided over gRPC: a plan on a stage of the file, a key,
/// the key in the plan → admitted; its quota spent → 429; `update_usage` → admitted again;
/// disabled → 403; back on, then out of the plan → 403. Every object listed and read back as
/// AWS's shapes, and the errors AWS gives for bad input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_creates_a_plan_and_a_key_that_decisions_follow() {
    let (_dir, p) = served();
    let admin = p.admin;
    let made = tokio::task::spawn_blocking(move || {
        boto3(
            admin,
            None,
            r#"
plan = c.create_usage_plan(name="starter", description="<b>trial</b>",
    apiStages=[{"apiId": "petstore", "stage": "prod"}],
    throttle={"rateLimit": 100.0, "burstLimit": 200},
    quota={"limit": 3, "period": "DAY"})
key = c.create_api_key(name="acme", customerId="acme-co", enabled=True)
out["plan"] = plan
out["key"] = key
out["member"] = c.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
out["plans"] = c.get_usage_plans(keyId=key["id"])["items"]
out["plan_keys"] = c.get_usage_plan_keys(usagePlanId=plan["id"])["items"]
out["read"] = c.get_api_key(apiKey=key["id"])
out["again"] = error(lambda: c.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY"))
out["file_plan_too"] = error(lambda: c.create_usage_plan_key(usagePlanId="gold", keyId=key["id"], keyType="API_KEY"))
out["no_stage"] = error(lambda: c.create_usage_plan(name="x", apiStages=[{"apiId": "petstore", "stage": "nope"}]))
out["no_plan"] = error(lambda: c.get_usage_plan(usagePlanId="nope"))
out["file_key"] = error(lambda: c.update_api_key(apiKey="k1", patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}]))
out["file_plan"] = error(lambda: c.delete_usage_plan(usagePlanId="gold"))
out["bad_path"] = error(lambda: c.update_api_key(apiKey=key["id"], patchOperations=[{"op": "replace", "path": "/value", "value": "x"}]))
out["short_value"] = error(lambda: c.create_api_key(name="x", value="short"))
out["imported"] = c.import_api_keys(body=b"Name,Key,UsagePlanIds\nimp,imported-by-boto3-0123456789,\nbad,short,\n", format="csv")
out["import_refused"] = error(lambda: c.import_api_keys(body=b"Name,Key\nbad,short\n", format="csv", failOnWarnings=True))
"#,
        )
    })
    .await
    .unwrap();
    let key = made["key"]["value"].as_str().unwrap().to_owned();
    assert!(
        key.len() >= 30 && key.chars().all(|c| c.is_ascii_alphanumeric()),
        "{made}"
    );
    let key_id = made["key"]["id"].as_str().unwrap().to_owned();
    let plan_id = made["plan"]["id"].as_str().unwrap().to_owned();
    assert_eq!(made["plan"]["quota"]["limit"], 3, "{made}");
    assert_eq!(made["plan"]["apiStages"][0]["stage"], "prod");
    assert!(made["key"]["createdDate"].is_string(), "a date: {made}");
    assert_eq!(made["member"]["id"], key_id.as_str());
    assert_eq!(made["member"]["type"], "API_KEY");
    assert_eq!(made["plans"][0]["id"], plan_id.as_str(), "{made}");
    assert_eq!(made["plan_keys"][0]["name"], "acme", "{made}");
    assert!(
        made["read"].get("value").is_none(),
        "a value read back: {made}"
    );
    assert_eq!(made["read"]["customerId"], "acme-co");
    for (case, code) in [
        ("again", "ConflictException"),
        ("file_plan_too", "ConflictException"),
        ("no_stage", "BadRequestException"),
        ("no_plan", "NotFoundException"),
        ("file_key", "ConflictException"),
        ("file_plan", "ConflictException"),
        ("bad_path", "BadRequestException"),
        ("short_value", "BadRequestException"),
    ] {
        assert_eq!(made[case]["code"], code, "{case}: {made}");
    }
    assert!(
        made["file_key"]["message"]
            .as_str()
            .unwrap()
            .contains("plans.yaml"),
        "names the file: {made}"
    );
    // ImportApiKeys through boto3: the CSV as the body, a warning for the bad row; with
    // failOnWarnings, refused.
    assert_eq!(
        made["imported"]["ids"].as_array().unwrap().len(),
        1,
        "{made}"
    );
    assert_eq!(
        made["imported"]["warnings"].as_array().unwrap().len(),
        1,
        "{made}"
    );
    assert_eq!(
        made["import_refused"]["code"], "BadRequestException",
        "{made}"
    );

    let mut c = common::authz_client(p.grpc).await;
    for _ in 0..3 {
        assert_eq!(prod(&mut c, &key).await, 200);
    }
    assert_eq!(prod(&mut c, &key).await, 429);

    let (k, pl) = (key_id.clone(), plan_id.clone());
    let usage = tokio::task::spawn_blocking(move || {
        boto3(
            admin,
            None,
            &format!(
                r#"
import datetime
today = datetime.date.today().isoformat()
out["usage"] = c.get_usage(usagePlanId="{pl}", startDate=today, endDate=today)
out["updated"] = c.update_usage(usagePlanId="{pl}", keyId="{k}", patchOperations=[{{"op": "replace", "path": "/remaining", "value": "2"}}])
"#
            ),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        usage["usage"]["items"][&key_id],
        serde_json::json!([[3, 0]]),
        "{usage}"
    );
    assert_eq!(
        usage["updated"]["items"][&key_id],
        serde_json::json!([[1, 2]]),
        "{usage}"
    );
    assert_eq!(prod(&mut c, &key).await, 200);

    let k = &key_id;
    boto3_off(
        admin,
        format!(
            r#"c.update_api_key(apiKey="{k}", patchOperations=[{{"op": "replace", "path": "/enabled", "value": "false"}}])"#
        ),
    )
    .await;
    assert_eq!(prod(&mut c, &key).await, 403);
    boto3_off(
        admin,
        format!(
            r#"
c.update_api_key(apiKey="{k}", patchOperations=[{{"op": "replace", "path": "/enabled", "value": "true"}}])
c.delete_usage_plan_key(usagePlanId="{plan_id}", keyId="{k}")
"#
        ),
    )
    .await;
    assert_eq!(prod(&mut c, &key).await, 403);
}

/// [`boto3`], unsigned, off the async workers.
async fn boto3_off(admin: u16, script: String) -> serde_json::Value {
    tokio::task::spawn_blocking(move || boto3(admin, None, &script))
        .await
        .unwrap()
}

/// A GET of `/pets` with `key`, on petstore's prod stage: its status.
async fn prod(
    c: &mut envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<
        tonic::transport::Channel,
    >,
    key: &str,
) -> i32 {
    let r = c
        .check(common::check_request_to(key, "/pets", "petstore", "prod"))
        .await
        .unwrap();
    common::check_status(&r.into_inner())
}

/// A call of the REST face, unsigned (no token, no credentials): status, error type, JSON.
fn rest(admin: u16, method: &str, path: &str, body: &str) -> (u16, String, serde_json::Value) {
    let r = common::http_with_body(
        admin,
        method,
        path,
        &[("content-type", "application/json")],
        body,
    );
    let kind = r.header("x-amzn-errortype").unwrap_or("").to_owned();
    (
        r.status,
        kind,
        serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null),
    )
}

/// Hostile and malformed input: each refused with AWS's status and type, nothing half applied.
#[test]
fn bad_input_is_refused_as_aws_refuses_it() {
    let (_dir, p) = served();
    let a = p.admin;
    let count = |path: &str| rest(a, "GET", path, "").2["item"].as_array().unwrap().len();
    let (s, _, plan) = rest(
        a,
        "POST",
        "/usageplans",
        r#"{"name":"one","apiStages":[{"apiId":"petstore","stage":"prod"}]}"#,
    );
    assert_eq!(s, 201, "{plan}");
    let plan = plan["id"].as_str().unwrap().to_owned();
    let (_, _, plan2) = rest(
        a,
        "POST",
        "/usageplans",
        r#"{"name":"two","apiStages":[{"apiId":"petstore","stage":"prod"},{"apiId":"petstore","stage":"beta"}]}"#,
    );
    let plan2 = plan2["id"].as_str().unwrap().to_owned();
    let (_, _, key) = rest(a, "POST", "/apikeys", r#"{"name":"k","enabled":true}"#);
    let key = key["id"].as_str().unwrap().to_owned();
    let member = format!(r#"{{"keyId":"{key}","keyType":"API_KEY"}}"#);
    assert_eq!(
        rest(a, "POST", &format!("/usageplans/{plan}/keys"), &member).0,
        201
    );
    let keys_before = count("/apikeys");
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        // A key in two plans on one stage.
        ("POST", format!("/usageplans/{plan2}/keys"), member.clone(), 409, "ConflictException"),
        // A stage added to a plan that one of its keys already has through another plan.
        (
            "PATCH",
            format!("/usageplans/{plan2}"),
            r#"{"patchOperations":[{"op":"remove","path":"/apiStages","value":"petstore:prod"}]}"#.into(),
            200,
            "",
        ),
        ("POST", format!("/usageplans/{plan2}/keys"), member.clone(), 201, ""),
        (
            "PATCH",
            format!("/usageplans/{plan2}"),
            r#"{"patchOperations":[{"op":"add","path":"/apiStages","value":"petstore:prod"}]}"#.into(),
            409,
            "ConflictException",
        ),
        // Unknown ids.
        ("GET", "/apikeys/nope".into(), String::new(), 404, "NotFoundException"),
        ("PATCH", "/apikeys/nope".into(), r#"{"patchOperations":[]}"#.into(), 404, "NotFoundException"),
        ("DELETE", "/usageplans/nope".into(), String::new(), 404, "NotFoundException"),
        ("POST", "/usageplans/nope/keys".into(), member.clone(), 404, "NotFoundException"),
        (
            "POST",
            format!("/usageplans/{plan}/keys"),
            r#"{"keyId":"nope","keyType":"API_KEY"}"#.into(),
            404,
            "NotFoundException",
        ),
        // A stage that does not exist, a method that does not, fine-grained without a plan throttle.
        (
            "POST",
            "/usageplans".into(),
            r#"{"name":"x","apiStages":[{"apiId":"nope","stage":"prod"}]}"#.into(),
            400,
            "BadRequestException",
        ),
        (
            "POST",
            "/usageplans".into(),
            r#"{"name":"x","throttle":{"rateLimit":1,"burstLimit":1},"apiStages":[{"apiId":"petstore","stage":"prod","throttle":{"/nope/GET":{"rateLimit":1,"burstLimit":1}}}]}"#.into(),
            400,
            "BadRequestException",
        ),
        (
            "POST",
            "/usageplans".into(),
            r#"{"name":"x","apiStages":[{"apiId":"petstore","stage":"prod","throttle":{"/pets/GET":{"rateLimit":1,"burstLimit":1}}}]}"#.into(),
            400,
            "BadRequestException",
        ),
        // Numbers out of bounds, a period AWS does not have, a name missing.
        (
            "POST",
            "/usageplans".into(),
            r#"{"name":"x","quota":{"limit":5,"offset":6,"period":"DAY"}}"#.into(),
            400,
            "BadRequestException",
        ),
        ("POST", "/usageplans".into(), r#"{"name":"x","quota":{"limit":5,"period":"YEAR"}}"#.into(), 400, "BadRequestException"),
        ("POST", "/usageplans".into(), r#"{"name":"x","throttle":{"rateLimit":-1}}"#.into(), 400, "BadRequestException"),
        ("POST", "/usageplans".into(), r#"{"description":"no name"}"#.into(), 400, "BadRequestException"),
        // Malformed patches and bodies.
        (
            "PATCH",
            format!("/usageplans/{plan}"),
            r#"{"patchOperations":[{"op":"replace","path":"/apiStages/petstore:prod/throttle/~1pets/GET/bogus","value":"1"}]}"#.into(),
            400,
            "BadRequestException",
        ),
        (
            "PATCH",
            format!("/usageplans/{plan}"),
            r#"{"patchOperations":[{"op":"replace","path":"/throttle/rateLimit","value":"fast"}]}"#.into(),
            400,
            "BadRequestException",
        ),
        ("PATCH", format!("/apikeys/{key}"), r#"{"patchOperations":[{"op":"move","path":"/name"}]}"#.into(), 400, "BadRequestException"),
        ("PATCH", format!("/apikeys/{key}"), r#"{"patchOperations":[{"op":"replace","path":"/enabled","value":"yes"}]}"#.into(), 400, "BadRequestException"),
        ("POST", "/apikeys".into(), "{not json".into(), 400, "BadRequestException"),
        ("POST", "/apikeys".into(), r#"{"name":7}"#.into(), 400, "BadRequestException"),
        ("POST", "/apikeys".into(), r#"{"value":"short"}"#.into(), 400, "BadRequestException"),
        ("POST", "/apikeys".into(), format!(r#"{{"name":"{}"}}"#, "n".repeat(1025)), 400, "BadRequestException"),
        ("POST", "/apikeys".into(), format!(r#"{{"name":"{}"}}"#, "n".repeat(1 << 20)), 413, "RequestEntityTooLargeException"),
        ("GET", "/apikeys?limit=abc".into(), String::new(), 400, "BadRequestException"),
    ];
    for (method, path, body, status, kind) in &cases {
        let (s, k, v) = rest(a, method, path, body);
        assert_eq!(
            (s, k.as_str()),
            (*status, *kind),
            "{method} {path} {body:.120}: {v}"
        );
        if *status >= 400 {
            assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        }
    }
    assert_eq!(
        count("/apikeys"),
        keys_before,
        "a refused create made a key"
    );
    // A value given twice: the second is refused.
    let value = r#"{"value":"a-caller-given-value-0123456789"}"#;
    assert_eq!(rest(a, "POST", "/apikeys", value).0, 201);
    assert_eq!(rest(a, "POST", "/apikeys", value).1, "ConflictException");
    // The value of a file key is taken too.
    let file_value = r#"{"value":"control-key-0123456789abcdef"}"#;
    assert_eq!(
        rest(a, "POST", "/apikeys", file_value).1,
        "ConflictException"
    );
}

/// ImportApiKeys with AWS's CSV: 10,000 rows with bad ones among them — warnings, the good
/// rows imported; with `failonwarnings`, nothing imported at all.
#[test]
fn a_large_csv_import_with_bad_rows() {
    let (_dir, p) = served();
    let a = p.admin;
    let (_, _, plan) = rest(
        a,
        "POST",
        "/usageplans",
        r#"{"name":"imports","apiStages":[{"apiId":"petstore","stage":"beta"}]}"#,
    );
    let plan = plan["id"].as_str().unwrap().to_owned();
    let mut csv = String::from("Name,key,Description,Enabled,UsagePlanIds\n");
    for i in 0..10_000 {
        match i % 1000 {
            // A short value, a bad Enabled, an unknown plan: three bad rows per thousand.
            1 => csv.push_str(&format!("bad{i},short,,TRUE,\n")),
            2 => csv.push_str(&format!("bad{i},imported-key-{i:08}-abcdefghijk,,maybe,\n")),
            3 => csv.push_str(&format!(
                "bad{i},imported-key-{i:08}-abcdefghijk,,TRUE,nope\n"
            )),
            _ => csv.push_str(&format!(
                "cust{i},imported-key-{i:08}-abcdefghijk,imported,{},\"{plan}\"\n",
                if i % 2 == 0 { "TRUE" } else { "false" }
            )),
        }
    }
    let keys = |a| {
        let r = common::http(a, "GET", "/apikeys?limit=500&name=cust", &[]);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        v["item"].as_array().unwrap().len()
    };
    let import = |query: &str| {
        common::http_with_body(
            a,
            "POST",
            &format!("/apikeys?mode=import&format=csv{query}"),
            &[("content-type", "text/csv")],
            &csv,
        )
    };
    let refused = import("&failonwarnings=true");
    assert_eq!(
        refused.status,
        400,
        "{}",
        &refused.body[..200.min(refused.body.len())]
    );
    assert_eq!(
        refused.header("x-amzn-errortype"),
        Some("BadRequestException")
    );
    assert_eq!(keys(a), 0, "a refused import added keys");
    let done = import("");
    assert_eq!(
        done.status,
        201,
        "{}",
        &done.body[..200.min(done.body.len())]
    );
    let v: serde_json::Value = serde_json::from_str(&done.body).unwrap();
    assert_eq!(v["ids"].as_array().unwrap().len(), 9_970);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 30);
    assert!(
        v["warnings"][0].as_str().unwrap().contains("line 3"),
        "{v:.300}"
    );
    assert_eq!(keys(a), 500, "a page of them");
    // Imported again: the same keys, updated, no new ones.
    let again: serde_json::Value = serde_json::from_str(&import("").body).unwrap();
    assert_eq!(again["ids"].as_array().unwrap().len(), 9_970);
    assert_eq!(again["ids"][0], v["ids"][0]);
    // The plan has the enabled and disabled ones alike.
    let r = common::http(a, "GET", &format!("/usageplans/{plan}/keys?limit=500"), &[]);
    let listed: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(listed["item"].as_array().unwrap().len(), 500);
    assert!(listed["position"].is_string());
}

/// `plangate export` writes the file and the runtime catalog as one configuration file that
/// decides the same on a fresh plangate; a reload of the file keeps the runtime catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_gives_a_file_that_decides_the_same_and_reloads_keep_the_catalog() {
    let (dir, p) = served();
    let a = p.admin;
    let (plan, key, value) = tokio::task::spawn_blocking(move || {
        let (_, _, plan) = rest(
            a,
            "POST",
            "/usageplans",
            r#"{"name":"runtime","apiStages":[{"apiId":"petstore","stage":"prod","throttle":{"/pets/GET":{"rateLimit":5,"burstLimit":5}}}],"throttle":{"rateLimit":10,"burstLimit":10},"quota":{"limit":100,"offset":10,"period":"MONTH"}}"#,
        );
        let plan = plan["id"].as_str().unwrap().to_owned();
        let (_, _, key) = rest(
            a,
            "POST",
            "/apikeys",
            r#"{"name":"exported","customerId":"c-1","enabled":true}"#,
        );
        let (id, value) = (
            key["id"].as_str().unwrap().to_owned(),
            key["value"].as_str().unwrap().to_owned(),
        );
        let member = format!(r#"{{"keyId":"{id}","keyType":"API_KEY"}}"#);
        assert_eq!(
            rest(a, "POST", &format!("/usageplans/{plan}/keys"), &member).0,
            201
        );
        (plan, id, value)
    })
    .await
    .unwrap();
    let mut c = common::authz_client(p.grpc).await;
    assert_eq!(prod(&mut c, &value).await, 200);

    // A reload (the file changed) keeps the runtime catalog.
    let path = dir.path().join("plans.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("gold: {", "gold: { description: edited, "),
    )
    .unwrap();
    let r = common::http(a, "POST", "/v1/reload", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        prod(&mut c, &value).await,
        200,
        "the runtime key after a reload"
    );

    let out = dir.path().join("exported.yaml");
    std::process::Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args(["export", "--admin", &format!("127.0.0.1:{a}"), "--out"])
        .arg(&out)
        .succeeds();
    let yaml = std::fs::read_to_string(&out).unwrap();
    assert!(yaml.contains(&common::sha(&value)), "{yaml}");
    assert!(!yaml.contains(&value), "a key value in the export");
    assert!(yaml.contains("description: edited"), "{yaml}");
    // A fresh plangate on the exported file alone decides the runtime key as before.
    let q = Plangate::start(&out, &[], dir.path().join("exported.log"));
    let mut c = common::authz_client(q.grpc).await;
    let r = c
        .check(common::check_request_to(
            &value, "/pets", "petstore", "prod",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(common::check_status(&r), 200);
    let got = common::http(q.admin, "GET", &format!("/apikeys/{key}"), &[]);
    let got: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(got["customerId"], "c-1", "{got}");
    let plan_now = common::http(q.admin, "GET", &format!("/usageplans/{plan}"), &[]);
    let plan_now: serde_json::Value = serde_json::from_str(&plan_now.body).unwrap();
    assert_eq!(plan_now["quota"]["offset"], 10, "{plan_now}");
    assert_eq!(
        plan_now["apiStages"][0]["throttle"]["/pets/GET"]["burstLimit"], 5,
        "{plan_now}"
    );
    assert_eq!(prod(&mut c, "control-key-0123456789abcdef").await, 200);
}
