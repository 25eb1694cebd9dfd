//! `plangate import-aws` on an AWS-shaped export (tests/fixtures/aws/export, written from the
//! shapes the AWS CLI prints): the imported configuration validates, holds no key value in clear,
//! and `plangate check` answers each case as Amazon API Gateway would.

use std::path::{Path, PathBuf};
use std::process::Command;

const GOLD: &str = "gold-secret-value-0123456789abcdef";
const FREE: &str = "free-secret-value-0123456789abcdef";
const OFF: &str = "off-secret-value-0123456789abcdef";
const PETS: &str = "a1b2c3d4e5";
const FILES: &str = "f6g7h8i9j0";

fn plangate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_plangate"))
}

fn export() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aws/export")
}

/// Runs `import-aws --from from --out out`: (success, stderr).
fn import(from: &Path, out: &Path) -> (bool, String) {
    let o = plangate()
        .arg("import-aws")
        .arg("--from")
        .arg(from)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn imported() -> (tempfile::TempDir, PathBuf) {
    let out = tempfile::tempdir().unwrap();
    let (ok, stderr) = import(&export(), out.path());
    assert!(ok, "{stderr}");
    let file = out.path().join("plans.yaml");
    (out, file)
}

/// `plangate check` `repeat` times on fresh counters: the last attempt's decision.
fn check(
    config: &Path,
    api: &str,
    stage: &str,
    key: Option<&str>,
    method: &str,
    path: &str,
    repeat: u32,
) -> serde_json::Value {
    let mut cmd = plangate();
    cmd.arg("check")
        .arg("--config")
        .arg(config)
        .args([
            "--api", api, "--stage", stage, "--method", method, "--path", path,
        ])
        .args(["--repeat", &repeat.to_string()])
        .args(["--at", "2026-11-26T10:00:00Z"]);
    if let Some(k) = key {
        cmd.args(["--key", k]);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn field<'a>(d: &'a serde_json::Value, name: &str) -> &'a str {
    d[name].as_str().unwrap_or("")
}

#[test]
fn the_import_validates_and_holds_no_key_value() {
    let (_dir, file) = imported();
    let text = std::fs::read_to_string(&file).unwrap();
    for value in [GOLD, FREE, OFF] {
        assert!(!text.contains(value), "a key value in clear");
        assert!(text.contains(&hex_sha(value)), "the digest of {value}");
    }
    // Customised gateway responses come along (static headers, the JSON template); AWS's
    // defaults and types plangate does not answer with do not.
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let responses = &config["apis"][PETS]["gateway_responses"];
    assert_eq!(responses["THROTTLED"]["status"], 429, "{text}");
    assert_eq!(
        responses["THROTTLED"]["headers"]["Access-Control-Allow-Origin"],
        "*"
    );
    assert!(responses["THROTTLED"]["headers"]["x-request-origin"].is_null());
    assert_eq!(
        responses["THROTTLED"]["body"],
        r#"{"message":$context.error.messageString,"hint":"slow down"}"#
    );
    assert!(responses["QUOTA_EXCEEDED"].is_null());
    assert!(responses["WAF_FILTERED"].is_null());
    assert!(responses["DEFAULT_4XX"].is_mapping());
    let o = plangate().arg("validate").arg(&file).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("2 APIs, 3 stages, 2 usage plans, 3 API keys")
    );
}

fn hex_sha(value: &str) -> String {
    plangate::snapshot::hash_key(value)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn the_import_decides_as_aws() {
    let (_dir, cfg) = imported();
    let c = |key, method, path, repeat| check(&cfg, PETS, "prod", key, method, path, repeat);

    // Keys keep their AWS ids, plans theirs, customers theirs.
    let d = c(Some(GOLD), "GET", "/pets", 1);
    assert_eq!(field(&d, "outcome"), "admitted");
    assert_eq!(field(&d, "key_id"), "kgold00001");
    assert_eq!(field(&d, "usage_plan"), "gold00001a");
    assert_eq!(field(&d, "customer_id"), "acme");
    assert_eq!(field(&d, "method"), "/pets/GET");

    // The plan throttle (burst 2), the plan's per-method throttle (POST /pets, burst 1), the
    // stage's method setting (`~1pets~1{petId}/GET`, burst 1), the plan quota (3 a day).
    let d = c(Some(GOLD), "GET", "/pets", 3);
    assert_eq!(
        (field(&d, "outcome"), field(&d, "decided_by")),
        ("throttled", "plan_throttle")
    );
    let d = c(Some(GOLD), "POST", "/pets", 2);
    assert_eq!(
        (field(&d, "outcome"), field(&d, "decided_by")),
        ("throttled", "plan_method_throttle")
    );
    let d = c(Some(FREE), "GET", "/pets/7", 2);
    assert_eq!(
        (field(&d, "outcome"), field(&d, "decided_by")),
        ("throttled", "stage_method_throttle")
    );
    let d = c(Some(FREE), "GET", "/pets", 4);
    assert_eq!(
        (field(&d, "outcome"), field(&d, "decided_by")),
        ("quota_exceeded", "plan_quota")
    );
    // The stage default (`*/*`) applies to methods without their own setting.
    let d = c(Some(FREE), "GET", "/pets", 1);
    let stage_limit = d["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["limit"] == "stage_method_throttle")
        .cloned()
        .unwrap();
    assert_eq!(stage_limit["burst"], 100, "{stage_limit}");

    // Resources AWS does not have: Missing Authentication Token, key or no key; a resource
    // without methods (`/store`) too.
    for (method, path) in [("DELETE", "/pets"), ("GET", "/nope"), ("GET", "/store")] {
        let d = c(Some(GOLD), method, path, 1);
        assert_eq!(
            field(&d, "outcome"),
            "missing_authentication_token",
            "{method} {path}"
        );
    }
    // apiKeyRequired: false needs no key; true does; a disabled key is refused.
    assert_eq!(field(&c(None, "GET", "/health", 1), "outcome"), "admitted");
    assert_eq!(field(&c(None, "GET", "/", 1), "outcome"), "admitted");
    let d = c(None, "GET", "/pets", 1);
    assert_eq!(
        (field(&d, "outcome"), field(&d, "reason")),
        ("forbidden", "missing_key")
    );
    let d = c(Some(OFF), "GET", "/pets", 1);
    assert_eq!(
        (field(&d, "outcome"), field(&d, "reason")),
        ("forbidden", "disabled_key")
    );

    // The second API: a greedy proxy with ANY, on a stage only a usage plan names.
    let f = |key, method, path| check(&cfg, FILES, "v1", key, method, path, 1);
    for method in ["GET", "PUT", "DELETE"] {
        let d = f(Some(FREE), method, "/a/b/c");
        assert_eq!(field(&d, "outcome"), "admitted", "{method}");
        assert_eq!(field(&d, "method"), "/{proxy+}/ANY");
    }
    let d = f(Some(GOLD), "GET", "/a");
    assert_eq!(
        (field(&d, "outcome"), field(&d, "reason")),
        ("forbidden", "key_not_in_plan")
    );
}

#[test]
fn a_dry_run_prints_and_writes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let o = plangate()
        .arg("import-aws")
        .arg("--from")
        .arg(export())
        .arg("--out")
        .arg(out.path())
        .arg("--check")
        .output()
        .unwrap();
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("gold00001a:"), "{stdout}");
    assert!(!out.path().join("plans.yaml").exists());
    // Missing optional files and settings left behind are warnings, not errors.
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("get-stages/f6g7h8i9j0.json is missing"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`/old/GET` is not in get-resources"),
        "{stderr}"
    );
    assert!(
        stderr.contains("gateway response WAF_FILTERED is not one plangate answers with"),
        "{stderr}"
    );
    assert!(
        stderr.contains("only static ('quoted') header values are imported"),
        "{stderr}"
    );
}

/// A copy of the export with `file` replaced by `text`.
fn broken(file: &str, edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in [
        "",
        "get-resources",
        "get-stages",
        "get-usage-plan-keys",
        "get-gateway-responses",
    ] {
        let from = export().join(sub);
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(&from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
            }
        }
    }
    let path = dir.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
    dir
}

#[test]
fn a_broken_export_is_refused_with_the_file_and_the_json_path() {
    // (file, text, replaced by, what the errors must say); the first occurrence is replaced.
    let cases: [(&str, &str, &str, &[&str]); 6] = [
        (
            "get-usage-plans.json",
            "{",
            "{ oops",
            &["get-usage-plans.json: not valid JSON"],
        ),
        (
            "get-usage-plans.json",
            "\"f6g7h8i9j0\"",
            "\"zzzzzzzzzz\"",
            &[
                "get-usage-plans.json: $.items[1].apiStages[1].apiId",
                "API `zzzzzzzzzz` is not in get-rest-apis.json",
            ],
        ),
        (
            "get-usage-plans.json",
            "\"stage\": \"prod\"",
            "\"stage\": \"qa\"",
            &[
                "$.items[0].apiStages[0].stage",
                "stage `qa` is not in get-stages/a1b2c3d4e5.json",
            ],
        ),
        (
            "get-api-keys.json",
            "\"value\": \"gold-secret-value-0123456789abcdef\",",
            "",
            &["get-api-keys.json: $.items[0].value", "--include-values"],
        ),
        (
            "get-usage-plan-keys/free00001b.json",
            "\"kfree00001\"",
            "\"kgone00001\"",
            &["key `kgone00001` is not in get-api-keys.json"],
        ),
        (
            "get-usage-plans.json",
            "\"/pets/POST\"",
            "\"/pets/PATCH\"",
            &[
                "$.items[0].apiStages[0].throttle[\"/pets/PATCH\"]",
                "method `/pets/PATCH` is not in get-resources/a1b2c3d4e5.json",
            ],
        ),
    ];
    for (file, from, to, wanted) in cases {
        let dir = broken(file, |t| t.replacen(from, to, 1));
        let out = tempfile::tempdir().unwrap();
        let (ok, stderr) = import(dir.path(), out.path());
        assert!(!ok, "{file}: accepted");
        for w in wanted.iter() {
            assert!(stderr.contains(w), "{file}: `{w}` not in:\n{stderr}");
        }
        assert!(!out.path().join("plans.yaml").exists(), "{file}: written");
        assert!(!stderr.contains("secret-value"), "a key value in an error");
    }
    // The three top-level files are required.
    let dir = broken("get-api-keys.json", |t| t);
    std::fs::remove_file(dir.path().join("get-api-keys.json")).unwrap();
    let (ok, stderr) = import(dir.path(), dir.path());
    assert!(!ok);
    assert!(
        stderr.contains("get-api-keys.json: cannot read"),
        "{stderr}"
    );
}
