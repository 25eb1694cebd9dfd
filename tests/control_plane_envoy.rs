//! A SaaS team's seed workflow at runtime, end to end through a real Envoy 1.40 (ext_authz):
//! a usage plan on a stage of the file, a customer's key, the key in the plan → admitted;
//! its quota spent → 429; UpdateUsage → admitted again; disabled → 403; out of the plan → 403.
//! Driven by Amazon's own clients signing with Signature Version 4 (the AWS CLI and boto3), and
//! again by plangate's CLI and typed gRPC API.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Stack, Succeeds};
use plangate::management::pb;
use plangate::management::pb::management_client::ManagementClient;

const ADMIN_KEY: (&str, &str) = ("AKIDSEEDADMIN", "seed-admin-secret-0123456789");

fn plans() -> String {
    common::petstore(
        "",
        &[("prod", "{ throttle: { rate: 1000, burst: 1000 } }")],
        &[("gold", "throttle: { rate: 100, burst: 100 }")],
        &[("file-1", "file-key-0123456789abcdef", "usage_plans: [gold]")],
    )
}

/// Envoy + plangate with `--aws-credentials` (an admin key) and the admin token `token`.
fn stack(token: &str) -> (tempfile::TempDir, Stack) {
    let (creds, file) = common::file_in_new_dir(
        "credentials.csv",
        format!(
            "access_key_id,secret_access_key,role\n{},{},admin\n",
            ADMIN_KEY.0, ADMIN_KEY.1
        ),
    );
    let args = [
        "--aws-credentials".to_owned(),
        file.display().to_string(),
        "--admin-token".to_owned(),
        token.to_owned(),
    ];
    let s = Stack::start_custom(&plans(), "ext_authz.yaml", &args, &[]);
    (creds, s)
}

fn aws_bin() -> PathBuf {
    let out = Command::new(common::root().join("scripts/aws-venv.sh")).succeeds();
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `aws apigateway <args>` against plangate, signed with the admin key: its JSON answer.
fn aws(admin: u16, args: &[&str]) -> serde_json::Value {
    let out = Command::new(aws_bin().join("aws"))
        .arg("apigateway")
        .args(args)
        .args(["--endpoint-url", &format!("http://127.0.0.1:{admin}")])
        .args(["--region", "eu-central-1", "--output", "json"])
        .env("AWS_ACCESS_KEY_ID", ADMIN_KEY.0)
        .env("AWS_SECRET_ACCESS_KEY", ADMIN_KEY.1)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .succeeds();
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `aws apigateway update-usage`: `remaining` left of the key's current period.
fn update_usage(admin: u16, plan: &str, key: &str, remaining: u64) -> serde_json::Value {
    let op = format!("op=replace,path=/remaining,value={remaining}");
    aws(
        admin,
        &[
            "update-usage",
            "--usage-plan-id",
            plan,
            "--key-id",
            key,
            "--patch-operations",
            &op,
        ],
    )
}

/// boto3, signed with the admin key, running `script` (which fills `out`).
fn boto3(admin: u16, script: &str) -> serde_json::Value {
    let program = format!(
        r#"
import json, boto3
c = boto3.client("apigateway", endpoint_url="http://127.0.0.1:{admin}", region_name="us-west-2",
                 aws_access_key_id="{id}", aws_secret_access_key="{secret}")
out = {{}}
{script}
print(json.dumps(out, default=str))
"#,
        id = ADMIN_KEY.0,
        secret = ADMIN_KEY.1,
    );
    let out = Command::new(aws_bin().join("python"))
        .arg("-c")
        .arg(program)
        .succeeds();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn through_envoy(s: &Stack, key: &str) -> u16 {
    s.get("GET", "/pets", &[("x-api-key", key)]).status
}

/// Waits until Envoy answers `want` for `key` (a change applies before its answer on this
/// replica; the wait only absorbs nothing else).
#[track_caller]
fn answers(s: &Stack, key: &str, want: u16) {
    common::wait_until(&format!("{want} through Envoy"), || {
        through_envoy(s, key) == want
    });
}

#[test]
fn the_aws_cli_and_boto3_seed_a_customer_through_envoy() {
    let (_creds, s) = stack("seed-token-0123456789abcdef");
    let admin = s.plangate_admin;
    // The CLI creates the plan on a stage of the file.
    let plan = aws(
        admin,
        &[
            "create-usage-plan",
            "--name",
            "starter",
            "--api-stages",
            "apiId=petstore,stage=prod",
            "--throttle",
            "rateLimit=100,burstLimit=100",
            "--quota",
            "limit=2,period=DAY",
        ],
    );
    let plan_id = plan["id"].as_str().unwrap().to_owned();
    // boto3 creates the key, as a signup service would, and puts it in the plan.
    let made = boto3(
        admin,
        &format!(
            r#"
key = c.create_api_key(name="acme", customerId="acme-co", enabled=True)
c.create_usage_plan_key(usagePlanId="{plan_id}", keyId=key["id"], keyType="API_KEY")
out["key"] = key
"#
        ),
    );
    let key = made["key"]["value"].as_str().unwrap().to_owned();
    let key_id = made["key"]["id"].as_str().unwrap().to_owned();
    let r = s.get("GET", "/pets", &[("x-api-key", &key)]);
    assert_eq!(r.status, 200, "{r:?}\n{}", s.log("plangate.log"));
    r.assert_identity(&key_id, &plan_id);
    assert_eq!(through_envoy(&s, &key), 200);
    assert_eq!(through_envoy(&s, &key), 429, "the quota of 2 is spent");
    // UpdateUsage gives one more.
    let usage = update_usage(admin, &plan_id, &key_id, 1);
    assert_eq!(
        usage["items"][&key_id],
        serde_json::json!([[1, 1]]),
        "{usage}"
    );
    assert_eq!(through_envoy(&s, &key), 200);
    assert_eq!(through_envoy(&s, &key), 429);
    update_usage(admin, &plan_id, &key_id, 100);
    // Disabled: 403.
    aws(
        admin,
        &[
            "update-api-key",
            "--api-key",
            &key_id,
            "--patch-operations",
            "op=replace,path=/enabled,value=false",
        ],
    );
    answers(&s, &key, 403);
    aws(
        admin,
        &[
            "update-api-key",
            "--api-key",
            &key_id,
            "--patch-operations",
            "op=replace,path=/enabled,value=true",
        ],
    );
    answers(&s, &key, 200);
    // Out of the plan: 403.
    aws(
        admin,
        &[
            "delete-usage-plan-key",
            "--usage-plan-id",
            &plan_id,
            "--key-id",
            &key_id,
        ],
    );
    answers(&s, &key, 403);
    // The file's key decided as before, all along.
    assert_eq!(through_envoy(&s, "file-key-0123456789abcdef"), 200);
    let log = s.log("plangate.log");
    assert!(log.contains("API key created"), "{log}");
    assert!(!log.contains(&key), "a key value in the log");
}

fn authorized<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        "Bearer seed-token-0123456789abcdef".parse().unwrap(),
    );
    r
}

fn plangate(admin: u16, token: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args(args)
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .env("PLANGATE_ADMIN_TOKEN", token)
        .succeeds();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn plangate_cli_and_grpc_seed_a_customer_through_envoy() {
    const TOKEN: &str = "seed-token-0123456789abcdef";
    let (_creds, s) = stack(TOKEN);
    let admin = s.plangate_admin;
    // The CLI: a plan, and a key made in it.
    let plan = plangate(
        admin,
        TOKEN,
        &[
            "plans",
            "create",
            "--name",
            "starter",
            "--stage",
            "petstore:prod",
            "--rate",
            "100",
            "--burst",
            "100",
            "--quota",
            "2",
            "--period",
            "DAY",
        ],
    );
    let plan_id = plan[0]["id"].as_str().unwrap().to_owned();
    let made = plangate(
        admin,
        TOKEN,
        &[
            "keys",
            "create",
            "--name",
            "acme",
            "--customer-id",
            "acme-co",
            "--plan",
            &plan_id,
        ],
    );
    let key_id = made[0]["id"].as_str().unwrap().to_owned();
    let key = made[0]["value"].as_str().unwrap().to_owned();
    let listed = plangate(admin, TOKEN, &["plans", "keys", &plan_id]);
    assert_eq!(listed[0]["name"], "acme", "{listed:?}");
    let statuses: Vec<u16> = (0..3).map(|_| through_envoy(&s, &key)).collect();
    assert_eq!(statuses, [200, 200, 429]);

    // The typed gRPC API: UpdateUsage, a key disabled, a key out of its plan.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut m = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{admin}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        ManagementClient::new(channel)
    });
    rt.block_on(m.update_usage(authorized(pb::UpdateUsageRequest {
        usage_plan_id: plan_id.clone(),
        key_id: key_id.clone(),
        remaining: 5,
    })))
    .unwrap();
    assert_eq!(through_envoy(&s, &key), 200);
    let k = rt
        .block_on(m.update_api_key(authorized(pb::UpdateApiKeyRequest {
            id: key_id.clone(),
            patch_operations: vec![pb::PatchOperation {
                op: "replace".into(),
                path: "/enabled".into(),
                value: "false".into(),
            }],
        })))
        .unwrap()
        .into_inner();
    assert!(!k.enabled);
    assert_eq!(k.source, pb::Source::Runtime as i32);
    answers(&s, &key, 403);
    // The CLI turns it back on; gRPC takes it out of the plan.
    plangate(admin, TOKEN, &["keys", "enable", &key_id]);
    answers(&s, &key, 200);
    rt.block_on(
        m.delete_usage_plan_key(authorized(pb::DeleteUsagePlanKeyRequest {
            usage_plan_id: plan_id.clone(),
            key_id: key_id.clone(),
        })),
    )
    .unwrap();
    answers(&s, &key, 403);
    // A file object through gRPC: refused, naming the file.
    let refused = rt
        .block_on(m.delete_usage_plan(authorized(pb::DeleteUsagePlanRequest { id: "gold".into() })))
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("plans.yaml"), "{refused:?}");
}
