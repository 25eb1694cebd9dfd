//! What the third hostile review broke (issue 25), one test (or more) per finding, each red
//! before its fix. The numbers in the section titles are the issue's.

mod common;

use std::path::PathBuf;

use common::{Plangate, http, sha};

const KEY: &str = "fail-closed-key-0123456789ab";

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn plans() -> String {
    common::petstore(
        common::DEFAULTS,
        &[("prod", "{}")],
        &[("billed", "quota: { limit: 100, period: DAY }")],
        &[("k1", KEY, "usage_plans: [billed]")],
    )
}

fn serve(dir: &tempfile::TempDir, config: &str, extra: &[&str]) -> Plangate {
    let cfg = write(dir, "plans.yaml", config);
    Plangate::start(&cfg, extra, dir.path().join("plangate.log"))
}

// 12. GetUsage with a year like `+262142` panicked a worker; unknown admin paths answered 200.

#[test]
fn admin_answers_bad_dates_and_unknown_paths_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = serve(&dir, &plans(), &[]);
    for (start, end) in [
        ("%2B262142-01-01", "%2B262142-01-02"),
        ("2026-01-01", "%2B262142-01-02"),
        ("2026-01-01", "9999-12-31"),
        ("-0001-01-01", "2026-01-01"),
        ("2026-1-1", "2026-01-02"),
        ("0000-01-01", "2026-01-02"),
    ] {
        let r = http(
            p.admin,
            "GET",
            &format!("/v1/usageplans/billed/usage?startDate={start}&endDate={end}"),
            &[],
        );
        assert_eq!(r.status, 400, "{start}..{end}: {}", r.body);
        assert!(r.body.contains("message"), "{}", r.body);
    }
    for path in ["/", "/nope", "/v1/nope", "/v2/config", "/metricsx"] {
        let r = http(p.admin, "GET", path, &[]);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
    }
    // Still serving.
    assert!(p.alive());
    assert_eq!(http(p.admin, "GET", "/healthz", &[]).status, 200);
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

/// Runs `plangate serve` that must refuse to start; its stderr.
fn refused_start(config: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_plangate"));
    cmd.args(["serve", "--no-watch", "--config"])
        .arg(config)
        .args(if extra.contains(&"--data-dir") {
            &[][..]
        } else {
            &["--no-persist"][..]
        })
        .args(["--grpc-addr", "127.0.0.1:0"])
        .args(extra)
        .env_remove("PLANGATE_ADMIN_TOKEN")
        .env_remove("PLANGATE_ADMIN_ADDR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let watch = plangate::clock::Stopwatch::start();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if watch.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("plangate serve {extra:?} {env:?} started; it must refuse");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// 11. An empty admin token opened the admin API; a non-loopback admin address needed no token.

#[test]
fn an_empty_token_or_an_open_admin_address_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(&dir, "plans.yaml", &plans());
    let err = refused_start(
        &cfg,
        &["--admin-addr", "127.0.0.1:0"],
        &[("PLANGATE_ADMIN_TOKEN", "")],
    );
    assert!(
        err.contains("admin token") && err.contains("empty"),
        "{err}"
    );
    assert!(err.contains("--admin-unauthenticated"), "{err}");
    let err = refused_start(
        &cfg,
        &["--admin-addr", "127.0.0.1:0", "--admin-token", "  "],
        &[],
    );
    assert!(err.contains("empty"), "{err}");
    let err = refused_start(&cfg, &["--admin-addr", "0.0.0.0:0"], &[]);
    assert!(err.contains("reachable from other hosts"), "{err}");
    // Said on purpose: it starts, and /v1/* answers without a token.
    let p = Plangate::start(
        &cfg,
        &["--admin-unauthenticated"],
        dir.path().join("open.log"),
    );
    assert_eq!(http(p.admin, "GET", "/v1/config", &[]).status, 200);
    // With a token, /v1/* needs it.
    let p = Plangate::start(
        &cfg,
        &["--admin-token", "a-real-token-0123"],
        dir.path().join("token.log"),
    );
    assert_eq!(http(p.admin, "GET", "/v1/config", &[]).status, 401);
}

/// `plangate validate FILE`: (exit success, output).
fn validate(path: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plangate"))
        .arg("validate")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

// 14. A customer id with CR/LF, NUL or 100 KB validated, then broke every answer of its key.

#[test]
fn customer_ids_that_cannot_be_header_values_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let long = "c".repeat(100 * 1024);
    for (what, yaml_value) in [
        ("CR LF", "\"acme\\r\\nx-evil: 1\""),
        ("NUL", "\"acme\\0\""),
        ("100 KB", long.as_str()),
        ("a tab", "\"acme\\tcorp\""),
        ("non-ASCII", "\"acm\\u00e9\""),
    ] {
        let cfg = plans().replace(
            "usage_plans: [billed] }",
            &format!("usage_plans: [billed], customer_id: {yaml_value} }}"),
        );
        let p = write(&dir, "plans.yaml", &cfg);
        let (ok, out) = validate(&p);
        assert!(!ok, "{what}: validated");
        assert!(out.contains("customer id"), "{what}: {out}");
    }
    // From a CSV key file too.
    let csv = write(
        &dir,
        "keys.csv",
        "name,key,customerId,usagePlanIds\nk2,csv-key-0123456789abcdefgh,\"acme\rcorp\",billed\n",
    );
    let cfg = plans() + &format!("api_keys_files: [{}]\n", csv.display());
    let p = write(&dir, "plans.yaml", &cfg);
    let (ok, out) = validate(&p);
    assert!(!ok, "CSV: validated");
    assert!(out.contains("customer id"), "CSV: {out}");
    // An ordinary one is fine.
    let cfg = plans().replace(
        "usage_plans: [billed] }",
        "usage_plans: [billed], customer_id: \"acme corp:42/eu\" }",
    );
    let (ok, out) = validate(&write(&dir, "plans.yaml", &cfg));
    assert!(ok, "{out}");
}

// 7. `--data-recover` moved a live, locked database aside (and the lock error advised it).

#[test]
fn a_database_in_use_is_named_and_never_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(&dir, "plans.yaml", &plans());
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let first = Plangate::start(&cfg, &["--data-dir", data_s], dir.path().join("first.log"));
    for extra in [
        &["--data-dir", data_s][..],
        &["--data-dir", data_s, "--data-recover"][..],
    ] {
        let mut args = vec!["--admin-addr", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let err = refused_start(&cfg, &args, &[]);
        assert!(err.contains("in use"), "{extra:?}: {err}");
        assert!(
            err.contains(&format!("pid {}", first.pid())),
            "{extra:?}: the holder is not named: {err}"
        );
        assert!(!err.contains("--data-recover"), "{extra:?}: {err}");
    }
    let files: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.contains(&"counters.redb".to_owned()), "{files:?}");
    assert!(
        !files.iter().any(|f| f.contains("corrupt")),
        "a file in use was moved aside: {files:?}"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The AWS-shaped export of tests/import_aws.rs, copied to `dir/export` to be changed.
fn aws_export(dir: &tempfile::TempDir) -> PathBuf {
    let to = dir.path().join("export");
    copy_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aws/export"),
        &to,
    );
    to
}

// 3. Methods exported without `--embed methods` were imported as keyless.

#[test]
fn import_refuses_methods_without_their_settings() {
    let dir = tempfile::tempdir().unwrap();
    let export = aws_export(&dir);
    let file = export.join("get-resources/f6g7h8i9j0.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    // What `get-resources` prints without `--embed methods`.
    v["items"][1]["resourceMethods"]["ANY"] = serde_json::json!({});
    std::fs::write(&file, v.to_string()).unwrap();
    let (ok, err) = import_aws(&export, &dir);
    assert!(!ok, "imported: {err}");
    assert!(err.contains("--embed methods"), "{err}");
    assert!(err.contains("apiKeyRequired"), "{err}");
    assert!(!dir.path().join("out/plans.yaml").exists());
}

/// `plangate check` on `config` `repeat` times at one instant: the last decision.
fn check(config: &std::path::Path, args: &[&str], repeat: u32) -> serde_json::Value {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_plangate"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .args(args)
        .args(["--repeat", &repeat.to_string()])
        .args(["--at", "2026-11-26T10:00:00Z"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

// 5. Per-verb stage throttles on an ANY-only resource were dropped (the stage default applied).

#[test]
fn per_verb_settings_on_an_any_resource_throttle_that_verb() {
    let dir = tempfile::tempdir().unwrap();
    let export = aws_export(&dir);
    std::fs::write(
        export.join("get-stages/f6g7h8i9j0.json"),
        r#"{"item": [{"stageName": "v1", "deploymentId": "d1", "methodSettings": {
            "*/*": {"throttlingBurstLimit": 100, "throttlingRateLimit": 50.0},
            "~1{proxy+}/GET": {"throttlingBurstLimit": 1, "throttlingRateLimit": 0.001}
        }}]}"#,
    )
    .unwrap();
    let (ok, err) = import_aws(&export, &dir);
    assert!(ok, "{err}");
    assert!(err.contains("ANY"), "the warning says where it went: {err}");
    let cfg = dir.path().join("out/plans.yaml");
    let key = "free-secret-value-0123456789abcdef";
    let at = |method: &str, repeat| {
        check(
            &cfg,
            &[
                "--api",
                "f6g7h8i9j0",
                "--stage",
                "v1",
                "--key",
                key,
                "--method",
                method,
                "--path",
                "/a/b",
            ],
            repeat,
        )
    };
    let d = at("GET", 2);
    assert_eq!(d["outcome"], "throttled", "{d}");
    assert_eq!(d["decided_by"], "stage_method_throttle", "{d}");
    // Other verbs keep the stage default (burst 100), and the key requirement of ANY holds.
    assert_eq!(at("POST", 2)["outcome"], "admitted");
    let keyless = check(
        &cfg,
        &[
            "--api",
            "f6g7h8i9j0",
            "--stage",
            "v1",
            "--method",
            "GET",
            "--path",
            "/a/b",
        ],
        1,
    );
    assert_eq!(keyless["outcome"], "forbidden", "{keyless}");
}

fn engine(yaml: &str) -> plangate::engine::Engine {
    let c = plangate::config::load_str(yaml, None, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    plangate::engine::Engine::new(
        c.snapshot,
        std::sync::Arc::new(plangate::store::MemoryStore::new()),
        std::sync::Arc::new(plangate::clock::SystemClock),
    )
}

/// (outcome, reason) of one request.
async fn decide(e: &plangate::engine::Engine, r: plangate::engine::Request<'_>) -> String {
    let d = e.decide(&r).await;
    format!(
        "{}{}",
        d.outcome.as_str(),
        d.reason
            .map(|r| format!(" {}", r.as_str()))
            .unwrap_or_default()
    )
}

// 2. Path parameters escaped a method's throttle.

const ADMIN_CLOSED: &str = r#"
version: 1
defaults: { api: petstore, stage: prod }
apis:
  petstore:
    stages:
      prod:
        api_key_required: false
        methods:
          "/admin/{proxy+}/ANY": { throttle: { rate: 0, burst: 0 } }
          "/{proxy+}/ANY": {}
"#;

#[tokio::test]
async fn path_parameters_are_stripped_before_matching_or_refused() {
    use plangate::engine::Request;
    let e = engine(ADMIN_CLOSED);
    for path in [
        "/admin/x",
        "/admin;jsessionid=1/x",
        "/admin;a=1;b=2/x;c=3",
        "/admin;jsessionid=1/x?q=;",
        "//admin;x/./x",
    ] {
        assert_eq!(
            decide(&e, Request::new("GET", path, None, 1)).await,
            "throttled",
            "{path}"
        );
    }
    assert_eq!(
        decide(&e, Request::new("GET", "/other;x=1/y", None, 1)).await,
        "admitted"
    );
    // An encoded semicolon is part of the segment, not a parameter (as servlet containers read it).
    assert_eq!(
        decide(&e, Request::new("GET", "/admin%3Bx/y", None, 1)).await,
        "admitted"
    );
    let e = engine(&ADMIN_CLOSED.replace("version: 1\n", "version: 1\npath_parameters: refuse\n"));
    assert_eq!(
        decide(&e, Request::new("GET", "/admin;jsessionid=1/x", None, 1)).await,
        "forbidden path_parameters"
    );
    assert_eq!(
        decide(&e, Request::new("GET", "/other/y?a=;", None, 1)).await,
        "admitted"
    );
}

// 1. The Host header picked the stage: unknown and malformed hosts, and the workload identity.

const BY_HOST: &str = r#"
version: 1
defaults: { api: petstore, stage: open }
apis:
  petstore:
    stages:
      prod: {}
      open: { api_key_required: false }
domain_names:
  api.example.com:
    base_path_mappings: [{ api: petstore, stage: prod }]
  "*.tenants.example.net":
    base_path_mappings: [{ api: petstore, stage: open }]
workloads:
  "spiffe://cluster.local/ns/petstore/sa/petstore": { api: petstore, stage: prod }
"#;

#[tokio::test]
async fn hosts_cannot_choose_a_stage_they_do_not_name() {
    use plangate::engine::Request;
    let e = engine(BY_HOST);
    let at = |host: &'static str| Request::new("GET", "/pets", None, 1).host(Some(host));
    assert_eq!(
        decide(&e, at("api.example.com")).await,
        "forbidden missing_key"
    );
    assert_eq!(decide(&e, at("x.tenants.example.net")).await, "admitted");
    // Not a host: refused, never suffix-matched.
    for bad in [
        "api.example.com,x.tenants.example.net",
        "evil@x.tenants.example.net",
        "x.tenants.example.net:99999",
        "x.tenants.example.net:80:80",
        "x.tenants.example.net:",
        "x.tenants.example.net/pets",
        "x.tenants.example.net ",
    ] {
        assert_eq!(decide(&e, at(bad)).await, "forbidden invalid_host", "{bad}");
    }
    assert_eq!(
        decide(&e, at("x.tenants.example.net:8080")).await,
        "admitted"
    );
    assert_eq!(
        decide(&e, at("[::1]:8080")).await,
        "forbidden unknown_domain"
    );
    // A host no domain claims does not take the defaults unless the file says so.
    assert_eq!(
        decide(&e, at("other.example.org")).await,
        "forbidden unknown_domain"
    );
    let open = engine(&BY_HOST.replace("version: 1\n", "version: 1\nunknown_hosts: defaults\n"));
    assert_eq!(decide(&open, at("other.example.org")).await, "admitted");
    // The workload's identity decides before any host.
    let sidecar = |host: &'static str| {
        Request::new("GET", "/pets", None, 1)
            .host(Some(host))
            .principal(Some("spiffe://cluster.local/ns/petstore/sa/petstore"))
    };
    assert_eq!(
        decide(&e, sidecar("x.tenants.example.net")).await,
        "forbidden missing_key"
    );
    assert_eq!(decide(&e, sidecar("a,b")).await, "forbidden missing_key");
    // An identity the file does not list: the host decides.
    let other = Request::new("GET", "/pets", None, 1)
        .host(Some("x.tenants.example.net"))
        .principal(Some("spiffe://cluster.local/ns/other/sa/default"));
    assert_eq!(decide(&e, other).await, "admitted");
}

// 6. YAML merge keys nested a few levels expanded an 11 KB file into gigabytes.

/// `levels` of `<<: [*a, *a, …]` (`fanout` aliases each) over a map of 100 keys, in unknown fields.
fn merge_bomb(levels: usize, fanout: usize) -> String {
    let mut text = String::from("version: 1\nx0: &a0 {");
    text.push_str(
        &(0..100)
            .map(|i| format!("k{i}: {i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    text.push_str("}\n");
    for l in 1..=levels {
        let refs = vec![format!("*a{}", l - 1); fanout].join(", ");
        text.push_str(&format!("x{l}: &a{l} {{<<: [{refs}], z: 1}}\n"));
    }
    text
}

#[test]
fn nested_merge_keys_are_refused_before_they_expand() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = merge_bomb(4, 30);
    assert!(bomb.len() < 2_000);
    let (ok, out) = validate(&write(&dir, "bomb.yaml", &bomb));
    assert!(!ok);
    assert!(out.contains("aliases expand"), "{out}");
    // Anchors a configuration really uses are fine.
    let shared = plans().replace(
        "quota: { limit: 100, period: DAY }",
        "quota: &q { limit: 100, period: DAY }, throttle: &t { rate: 5, burst: 5 }",
    ) + "  - { id: k2, value_sha256: "
        + &sha("fail-closed-other-0123456789")
        + ", usage_plans: [billed] }\n";
    let (ok, out) = validate(&write(&dir, "shared.yaml", &shared));
    assert!(ok, "{out}");
    // A live reload of the bomb is refused; the server keeps serving what it had.
    let mut p = serve(&dir, &plans(), &[]);
    std::fs::write(dir.path().join("plans.yaml"), &bomb).unwrap();
    let r = http(p.admin, "POST", "/v1/reload", &[]);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("aliases expand"), "{}", r.body);
    assert!(p.alive());
    assert_eq!(http(p.admin, "GET", "/readyz", &[]).status, 200);
}

// 10. Abandoned reloads piled up (each trigger started another load), and SIGTERM waited.

#[test]
fn one_load_at_a_time_and_a_stop_never_waits_for_a_hung_one() {
    let dir = tempfile::tempdir().unwrap();
    let keys = write(
        &dir,
        "keys.csv",
        "name,key,usagePlanIds\ncsv,csv-key-0123456789abcdefgh,billed\n",
    );
    let cfg = plans() + "api_keys_files: [keys.csv]\n";
    let mut p = serve(&dir, &cfg, &["--reload-timeout", "1"]);
    // Unchanged files: nothing to do.
    let r = http(p.admin, "POST", "/v1/reload", &[]);
    assert!(r.body.contains("unchanged"), "{}", r.body);
    // A key file that never finishes reading (a FIFO no one writes: a hung file system).
    std::fs::remove_file(&keys).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&keys)
        .status()
        .unwrap();
    assert!(made.success());
    // Not the files' fault: 503 (422 is for a configuration with errors).
    let r = http(p.admin, "POST", "/v1/reload", &[]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("--reload-timeout"), "{}", r.body);
    // While it hangs, no other load starts.
    for _ in 0..3 {
        let r = http(p.admin, "POST", "/v1/reload", &[]);
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.body.contains("still running"), "{}", r.body);
    }
    assert_eq!(http(p.admin, "GET", "/readyz", &[]).status, 200);
    // SIGTERM stops it although a load is blocked.
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let watch = plangate::clock::Stopwatch::start();
    while p.alive() {
        assert!(
            watch.elapsed() < std::time::Duration::from_secs(30),
            "SIGTERM waits for the hung load"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(p.wait().success());
}

// 20. Bounds the docs promise; methods that can never match; keys in `ps`; a start with no budget.

#[test]
fn bounds_templates_and_error_counts_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |what: &str, cfg: String, says: &str| {
        let (ok, out) = validate(&write(&dir, "bad.yaml", &cfg));
        assert!(!ok, "{what}: validated");
        assert!(out.contains(says), "{what}: {out}");
    };
    refused(
        "burst 2e9",
        plans().replace(
            "quota: { limit: 100, period: DAY }",
            "throttle: { rate: 10, burst: 2000000000 }",
        ),
        "throttle burst",
    );
    refused(
        "limit 3e9",
        plans().replace("limit: 100", "limit: 3000000000"),
        "quota limit",
    );
    for template in ["/a/./b", "/a/../b", "/a%2Fb", "/a%20b", "/a;x=1", "/a b"] {
        refused(
            template,
            plans().replace(
                "      prod: {}",
                &format!("      prod:\n        methods:\n          \"{template}/GET\": {{}}"),
            ),
            "never",
        );
    }
    // A plan listing thousands of unknown stages: the first 1,000 errors, and a count.
    let extra: String = (0..3_000)
        .map(|i| format!(", {{ api: petstore, stage: x{i} }}"))
        .collect();
    let many = plans().replace(
        "api_stages: [{ api: petstore, stage: prod }]",
        &format!("api_stages: [{{ api: petstore, stage: prod }}{extra}]"),
    );
    let (ok, out) = validate(&write(&dir, "many.yaml", &many));
    assert!(!ok);
    assert!(
        out.contains("more error(s)"),
        "{}",
        &out[out.len().saturating_sub(500)..]
    );
    assert!(out.lines().count() < 1_100, "{} lines", out.lines().count());
}

#[test]
fn check_reads_the_key_from_stdin_or_the_environment() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(&dir, "plans.yaml", &plans());
    let run = |key_arg: &[&str], env: Option<&str>, stdin: &str| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_plangate"));
        cmd.arg("check").arg("--config").arg(&cfg).args(key_arg);
        match env {
            Some(v) => cmd.env("PLANGATE_KEY", v),
            None => cmd.env_remove("PLANGATE_KEY"),
        };
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
        v["outcome"].as_str().unwrap().to_owned()
    };
    assert_eq!(run(&["--key", "-"], None, &format!("{KEY}\n")), "admitted");
    assert_eq!(run(&[], Some(KEY), ""), "admitted");
    assert_eq!(
        run(&["--key", "-"], None, "wrong-key-0123456789abcd\n"),
        "forbidden"
    );
}

#[test]
fn the_first_load_has_a_time_budget() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.csv");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&keys)
            .status()
            .unwrap()
            .success()
    );
    let cfg = write(
        &dir,
        "plans.yaml",
        &(plans() + "api_keys_files: [keys.csv]\n"),
    );
    let err = refused_start(
        &cfg,
        &["--admin-addr", "127.0.0.1:0", "--start-timeout", "1"],
        &[],
    );
    assert!(err.contains("took longer than"), "{err}");
    assert!(err.contains("--start-timeout"), "{err}");
}

// 21. Gateway response templates sent AWS's other `$context` variables as written.

#[tokio::test]
async fn gateway_response_variables_are_filled_in_or_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    for v in [
        "$context.requestId",
        "$context.stage",
        "${context.error.message}",
        "$stageVariables.name",
        "$input.body",
        "$util.escapeJavaScript(x)",
    ] {
        let cfg = plans()
            + &format!(
                "gateway_responses:\n  THROTTLED:\n    body: '{{\"message\": $context.error.messageString, \"x\": \"{v}\"}}'\n"
            );
        let (ok, out) = validate(&write(&dir, "bad.yaml", &cfg));
        assert!(!ok, "{v}: validated");
        assert!(out.contains("not filled in"), "{v}: {out}");
    }
    // The ones plangate fills in, the response type among them (a DEFAULT_4XX answering a
    // quota refusal says QUOTA_EXCEEDED).
    let cfg = plans().replace("limit: 100", "limit: 1")
        + "gateway_responses:\n  DEFAULT_4XX:\n    body: '{\"m\": $context.error.messageString, \"t\": \"$context.error.responseType\", \"raw\": \"$context.error.message\"}'\n";
    let e = engine(&cfg);
    let snap = e.snapshot();
    let req = plangate::engine::Request::new("GET", "/pets", Some(KEY), 1);
    assert!(e.decide(&req).await.admitted());
    let d = e.decide(&req).await;
    let a = plangate::grpc::answer::check_response(&d, &snap, &[], Some("x-api-key"));
    let body = format!("{a:?}");
    assert!(
        body.contains(
            r#"{\"m\": \"Limit Exceeded\", \"t\": \"QUOTA_EXCEEDED\", \"raw\": \"Limit Exceeded\"}"#
        ),
        "{body}"
    );
}

/// `plangate serve` under `ulimit -n files`, on free ports: (child, gRPC port, admin port).
fn serve_with_files(
    dir: &tempfile::TempDir,
    files: u32,
    extra: &[&str],
) -> (std::process::Child, u16, u16) {
    let cfg = write(dir, "plans.yaml", &plans());
    let (grpc, admin) = (common::free_port(), common::free_port());
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {files} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_plangate"))
        .args(["serve", "--no-watch", "--no-persist", "--config"])
        .arg(&cfg)
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    common::wait_for_port(admin, "plangate", &mut child);
    common::wait_for_port(grpc, "plangate", &mut child);
    (child, grpc, admin)
}

// 8. Silent plain-text connections exhausted the descriptors: Checks hung, /healthz failed.

#[tokio::test(flavor = "multi_thread")]
async fn silent_connections_cannot_exhaust_the_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, grpc, admin) = serve_with_files(&dir, 256, &[]);
    // Envoy's connection, open before the flood.
    let mut envoy = common::authz_client(grpc).await;
    let check = plangate_check_request();
    envoy.check(check.clone()).await.unwrap();
    // 400 clients that connect and say nothing, on both ports.
    let mut silent = Vec::new();
    for i in 0..400 {
        let port = if i % 4 == 0 { admin } else { grpc };
        // A full backlog drops SYNs: such a connect would wait minutes.
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        if let Ok(s) =
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300))
        {
            silent.push(s);
        }
    }
    // The open connection keeps deciding, and the admin port answers.
    for _ in 0..20 {
        envoy.check(check.clone()).await.unwrap();
    }
    let health = tokio::task::spawn_blocking(move || {
        let watch = plangate::clock::Stopwatch::start();
        loop {
            let r = std::panic::catch_unwind(|| http(admin, "GET", "/healthz", &[]));
            match r {
                Ok(r) if r.status == 200 => return true,
                _ if watch.elapsed() > std::time::Duration::from_secs(30) => return false,
                _ => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        }
    })
    .await
    .unwrap();
    assert!(health, "/healthz did not answer during the flood");
    // Silent clients are closed within the first-byte bound, and new clients are served.
    let fresh = tokio::time::timeout(std::time::Duration::from_secs(40), async {
        loop {
            if let Ok(mut c) = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                common::authz_client(grpc),
            )
            .await
                && c.check(check.clone()).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    })
    .await;
    assert!(
        fresh.is_ok(),
        "no new connection was served after the flood"
    );
    assert!(matches!(child.try_wait(), Ok(None)), "plangate exited");
    drop(silent);
    let _ = child.kill();
    let _ = child.wait();
}

fn plangate_check_request() -> envoy_types::ext_authz::v3::pb::CheckRequest {
    common::check_request_to(KEY, "/pets", "petstore", "prod")
}

// 19. One connection could hold 10,000 streams: the data plane advertises its bound.

#[test]
fn the_data_plane_advertises_its_stream_bound() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (mut child, grpc, _) = serve_with_files(&dir, 4096, &["--max-concurrent-streams", "8"]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", grpc)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // The client preface and an empty SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[3], 4, "the server's first frame is SETTINGS");
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    let settings: Vec<(u16, u32)> = payload
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    // SETTINGS_MAX_CONCURRENT_STREAMS (0x3).
    assert!(settings.contains(&(3, 8)), "{settings:?}");
    let _ = child.kill();
    let _ = child.wait();
}

// 13. An acknowledged UpdateUsage reverted after a crash within the flush interval.

#[test]
fn an_acknowledged_update_usage_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = [
        "--data-dir",
        data.to_str().unwrap(),
        "--flush-interval",
        "3600",
    ];
    let mut p = serve(&dir, &plans(), &args);
    let path = "/v1/usageplans/billed/keys/k1/usage";
    let r = common::http_with_body(
        p.admin,
        "PATCH",
        path,
        &[("content-type", "application/json")],
        r#"{"patchOperations": [{"op": "replace", "path": "/remaining", "value": "50"}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // A crash right after the answer (SIGKILL: no final flush).
    std::process::Command::new("kill")
        .args(["-KILL", &p.pid().to_string()])
        .status()
        .unwrap();
    p.wait();
    let p = Plangate::start(
        &dir.path().join("plans.yaml"),
        &args,
        dir.path().join("again.log"),
    );
    let r = http(p.admin, "GET", path, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["remaining"], 50, "{v}");
}

// 15. import-aws: unbounded reads, FIFOs, ids with `../`, a planted link at the temp file,
// UTF-16 exports.

/// `plangate import-aws --from from --out dir/out`, which must end within 30 s (a FIFO must
/// not hang it): (success, stderr).
fn import_aws(from: &std::path::Path, dir: &tempfile::TempDir) -> (bool, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_plangate"))
        .arg("import-aws")
        .arg("--from")
        .arg(from)
        .arg("--out")
        .arg(dir.path().join("out"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let watch = plangate::clock::Stopwatch::start();
    while child.try_wait().unwrap().is_none() {
        if watch.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("import-aws hangs");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn import_aws_reads_only_bounded_regular_files_inside_the_export() {
    // A device behind a link, and a FIFO.
    for (name, make) in [("/dev/zero", "link"), ("fifo", "fifo")] {
        let dir = tempfile::tempdir().unwrap();
        let export = aws_export(&dir);
        let target = export.join("get-usage-plans.json");
        std::fs::remove_file(&target).unwrap();
        if make == "link" {
            std::os::unix::fs::symlink(name, &target).unwrap();
        } else {
            assert!(
                std::process::Command::new("mkfifo")
                    .arg(&target)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let (ok, err) = import_aws(&export, &dir);
        assert!(!ok, "{name}: imported");
        assert!(err.contains("not a regular file"), "{name}: {err}");
    }
    // An id that climbs out of the export.
    let dir = tempfile::tempdir().unwrap();
    let export = aws_export(&dir);
    let apis = export.join("get-rest-apis.json");
    let text =
        std::fs::read_to_string(&apis)
            .unwrap()
            .replacen("\"a1b2c3d4e5\"", "\"../../../etc/x\"", 1);
    std::fs::write(&apis, text).unwrap();
    let (ok, err) = import_aws(&export, &dir);
    assert!(!ok);
    assert!(err.contains("not a plain name"), "{err}");
    // UTF-16, as PowerShell's `>` writes it.
    let dir = tempfile::tempdir().unwrap();
    let export = aws_export(&dir);
    let plans = export.join("get-usage-plans.json");
    let text = std::fs::read_to_string(&plans).unwrap();
    let mut utf16 = vec![0xFF, 0xFE];
    for u in text.encode_utf16() {
        utf16.extend_from_slice(&u.to_le_bytes());
    }
    std::fs::write(&plans, utf16).unwrap();
    let (ok, err) = import_aws(&export, &dir);
    assert!(!ok);
    assert!(err.contains("UTF-16"), "{err}");
}

#[test]
fn import_aws_never_writes_through_a_planted_link() {
    let dir = tempfile::tempdir().unwrap();
    let export = aws_export(&dir);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    // The temp name the import used to write through.
    std::os::unix::fs::symlink(&victim, out.join(".plans.yaml.tmp")).unwrap();
    let (ok, err) = import_aws(&export, &dir);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(
        std::fs::read_to_string(out.join("plans.yaml"))
            .unwrap()
            .contains("usage_plans")
    );
}
