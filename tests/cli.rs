//! The command line as a shell uses it.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

fn plangate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_plangate"))
}

/// Runs `args` with standard output closed by the reader before anything is written (as `| head
/// -1` does once it has its line): the command must end with its own exit code, not a panic.
fn with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let mut child = plangate()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap().code(), stderr)
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_closed_pipe_ends_output_without_a_panic() {
    // Errors: exit 1, as when every line is read.
    let (code, stderr) = with_closed_stdout(&["validate", &fixture("invalid/many_errors.yaml")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Many lines of `check`: exit 0.
    let (code, stderr) = with_closed_stdout(&[
        "check",
        "--config",
        &fixture("../../envoy/plans.example.yaml"),
        "--repeat",
        "2000",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (code, stderr) = with_closed_stdout(&["hash-key", "a-key-value-of-twenty-chars"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn check_reads_a_request_like_the_services() {
    // The query string is cut off before matching (as ext_authz and RLS do).
    let out = plangate()
        .args([
            "check",
            "--config",
            &fixture("../../envoy/plans.example.yaml"),
        ])
        .args([
            "--api",
            "petstore",
            "--stage",
            "prod",
            "--path",
            "/health?probe=1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["method"], "/health/GET", "{v}");
    assert_eq!(v["outcome"], "admitted", "{v}");
}

#[test]
fn bad_flags_are_clear_errors() {
    let out = plangate()
        .args(["serve", "--config", "x.yaml", "--store", "postgres://db"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "--store: `postgres://db` is neither `memory` nor a redis://, rediss://, redis-cluster:// or rediss-cluster:// URL"
        ),
        "{stderr}"
    );
    let out = plangate()
        .args([
            "check",
            "--config",
            &fixture("../../envoy/plans.example.yaml"),
        ])
        .args(["--at", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--at: `yesterday`"));
}

#[test]
fn check_takes_a_host_for_custom_domain_names() {
    let (_dir, config) = common::plans_dir(
        r#"
version: 1
apis:
  petstore:
    stages:
      prod: { api_key_required: false, methods: { "/pets/GET": {} } }
domain_names:
  api.example.com:
    base_path_mappings: [{ base_path: v1, api: petstore, stage: prod }]
"#,
    );
    let run = |host: &str| {
        let out = plangate()
            .args(["check", "--config", config.to_str().unwrap()])
            .args(["--host", host, "--path", "/v1/pets"])
            .output()
            .unwrap();
        assert!(out.status.success());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let v = run("api.example.com");
    assert_eq!(
        (v["outcome"].as_str(), v["method"].as_str()),
        (Some("admitted"), Some("/pets/GET")),
        "{v}"
    );
    let v = run("other.example.com");
    assert_eq!(
        (v["outcome"].as_str(), v["reason"].as_str()),
        (Some("forbidden"), Some("unknown_domain")),
        "{v}"
    );
}

#[test]
fn a_byte_order_mark_starts_a_config_or_key_file_harmlessly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("keys.csv"),
        "\u{feff}Name,Key,Enabled,UsagePlanIds,Id\nacme,bom-key-0123456789abcdefgh,TRUE,gold,acme-1\n",
    )
    .unwrap();
    let config = dir.path().join("plans.yaml");
    std::fs::write(
        &config,
        "\u{feff}version: 1\napis: { petstore: { stages: { prod: {} } } }\nusage_plans:\n  gold: { api_stages: [{ api: petstore, stage: prod }] }\napi_keys_files: [keys.csv]\n",
    )
    .unwrap();
    let out = plangate().arg("validate").arg(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("1 API keys"), "{stdout}");
}

/// Free loopback ports for a server of the test.
fn ports() -> (u16, u16) {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    (free(), free())
}

#[test]
fn serve_takes_every_flag_from_the_environment_and_health_answers() {
    // --help names the variable of every flag (all of them: read from --help itself).
    let help = plangate().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| l.split([' ', '<']).next().unwrap_or(""))
        .filter(|f| !matches!(*f, "help" | "version"))
        .collect();
    assert!(flags.len() >= 20, "{flags:?}");
    for flag in flags {
        let env = format!("PLANGATE_{}", flag.to_uppercase().replace('-', "_"));
        assert!(
            help.contains(&format!("[env: {env}")),
            "--{flag} has no {env} in --help"
        );
    }
    // A server configured by the environment alone.
    let (_dir, config) = common::plans_dir(common::MINIMAL);
    let (grpc, admin) = ports();
    let mut child = plangate()
        .arg("serve")
        .env("PLANGATE_CONFIG", &config)
        .env("PLANGATE_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .env("PLANGATE_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
        .env("PLANGATE_NO_PERSIST", "true")
        .env("PLANGATE_NO_WATCH", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let health = |args: &[&str]| {
        plangate()
            .arg("health")
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .args(args)
            .output()
            .unwrap()
    };
    let waited = plangate::clock::Stopwatch::start();
    while !health(&[]).status.success() {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(20),
            "plangate did not come up from its environment"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let ready = health(&["--ready"]);
    assert!(ready.status.success());
    assert!(String::from_utf8_lossy(&ready.stdout).starts_with("ready"));
    let _ = child.kill();
    let _ = child.wait();
    // Nothing listening: exit 1, and why.
    let down = health(&[]);
    assert_eq!(down.status.code(), Some(1));
    assert!(!down.stderr.is_empty());
}

/// The bounds checked before parsing are flags (and env variables), for every command.
#[test]
fn config_bounds_are_configurable() {
    let (_dir, file) = common::plans_dir(
        "version: 1\napis: { a: { stages: { s: { methods: { \"/x/GET\": {} } } } } }\n",
    );
    let validate = |extra: &[&str]| {
        let o = plangate()
            .args(extra)
            .arg("validate")
            .arg(&file)
            .env_remove("PLANGATE_MAX_CONFIG_BYTES")
            .env_remove("PLANGATE_MAX_CONFIG_DEPTH")
            .output()
            .unwrap();
        (
            o.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    assert_eq!(validate(&[]).0, Some(0));
    let (code, out) = validate(&["--max-config-depth", "2"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("nested more than 2 deep (--max-config-depth)"),
        "{out}"
    );
    let (code, out) = validate(&["--max-config-bytes", "20"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("may have at most 20 (--max-config-bytes"),
        "{out}"
    );
}
