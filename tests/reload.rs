//! Hot reload under load, the admin API and metrics.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use plangate::admin::{self, AdminState};
use plangate::clock::{Stopwatch, SystemClock};
use plangate::engine::Engine;
use plangate::metrics::Metrics;
use plangate::reload::{Reloaded, Reloader};
use plangate::store::MemoryStore;

const KEY: &str = "reload-key-0123456789abcdef";
const OTHER: &str = "other-key-0123456789abcdefg";

/// A config whose plan id and plan burst identify it: plan `p{n}` has burst 1,000,000 + n.
fn config(n: u32, quota: u64, other_enabled: bool) -> String {
    let plan = format!(
        "throttle: {{ rate: 1000000, burst: {} }}, quota: {{ limit: {quota}, period: DAY }}",
        1_000_000 + n
    );
    let (mine, other) = (
        format!("usage_plans: [p{n}]"),
        format!("usage_plans: [p{n}], enabled: {other_enabled}"),
    );
    common::petstore(
        common::FAST_ACCOUNT,
        &[("prod", "{}")],
        &[(&format!("p{n}"), &plan)],
        &[("k1", KEY, &mine), ("k2", OTHER, &other)],
    )
}

struct Served {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    reloader: Arc<Reloader>,
    path: PathBuf,
    grpc: u16,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn serve(text: &str) -> Served {
    let (dir, path) = common::plans_dir(text);
    let compiled = plangate::config::load_file(&path).unwrap();
    let mut snap = compiled.snapshot;
    snap.generation = 1;
    let metrics = Arc::new(Metrics::new());
    let fingerprint = plangate::reload::fingerprint(&compiled.sources);
    metrics.loaded(&snap, &fingerprint, 0.0);
    let engine = Arc::new(Engine::new(
        snap,
        Arc::new(MemoryStore::new()),
        Arc::new(SystemClock),
    ));
    let reloader = Arc::new(Reloader::new(
        path.clone(),
        engine.clone(),
        metrics.clone(),
        compiled.sources,
        fingerprint,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(plangate::server::run(
        engine.clone(),
        metrics.clone(),
        listener,
        async {
            let _ = rx.await;
        },
        Duration::from_secs(1),
    ));
    Served {
        engine,
        metrics,
        reloader,
        path,
        grpc,
        _dir: dir,
        stop: Some(tx),
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn check_request(key: &str) -> envoy_types::ext_authz::v3::pb::CheckRequest {
    common::check_request(key, "/pets")
}

/// The gRPC status code plangate answers a Check for `key` with (0: admitted).
async fn code(c: &mut AuthorizationClient<tonic::transport::Channel>, key: &str) -> i32 {
    let r = c.check(check_request(key)).await.unwrap().into_inner();
    r.status.map_or(-1, |s| s.code)
}

async fn client(port: u16) -> AuthorizationClient<tonic::transport::Channel> {
    common::authz_client(port).await
}

/// The plan named upstream and the plan burst in the rate-limit policy: both must come from one
/// snapshot.
fn plan_and_burst(r: &envoy_types::ext_authz::v3::pb::CheckResponse) -> (String, String) {
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        panic!("not admitted: {r:?}");
    };
    let header = |list: &[envoy_types::ext_authz::v3::pb::HeaderValueOption], name: &str| {
        list.iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == name)
            .map(|h| h.value.clone())
            .unwrap_or_default()
    };
    let plan = header(&ok.headers, "x-plangate-usage-plan");
    let policy = header(&ok.response_headers_to_add, "ratelimit-policy");
    let burst = policy
        .split(", ")
        .find(|p| p.starts_with("\"plan_throttle\""))
        .and_then(|p| p.split(";q=").nth(1))
        .and_then(|q| q.split(';').next())
        .unwrap_or_default()
        .to_owned();
    (plan, burst)
}

/// 50 reloads (some of them of an invalid file) during 20,000 concurrent Check calls: no call
/// fails, and every answer comes wholly from one snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_answer_from_one_snapshot() {
    let s = serve(&config(0, 1_000_000, true)).await;
    let c = client(s.grpc).await;
    let failures = Arc::new(AtomicU64::new(0));
    let seen_plans = Arc::new(parking_lot::Mutex::new(std::collections::BTreeSet::new()));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let mut c = c.clone();
        let failures = failures.clone();
        let seen = seen_plans.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..625 {
                match c.check(check_request(KEY)).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        if r.status.as_ref().map(|s| s.code) != Some(0) {
                            failures.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let (plan, burst) = plan_and_burst(&r);
                        let n: u64 = plan.trim_start_matches('p').parse().unwrap();
                        assert_eq!(
                            burst,
                            (1_000_000 + n).to_string(),
                            "mixed snapshots: {plan} with burst {burst}"
                        );
                        seen.lock().insert(n);
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut swapped = 0;
    let mut rejected = 0;
    for i in 1..=50u32 {
        let text = if i % 10 == 5 {
            "version: 1\napis: [broken\n".to_owned()
        } else {
            config(i, 1_000_000, true)
        };
        std::fs::write(&s.path, text).unwrap();
        match s.reloader.reload("test").await {
            Ok(Reloaded::Swapped { .. }) => swapped += 1,
            Ok(Reloaded::Unchanged) => unreachable!(),
            Err(_) => rejected += 1,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert_eq!((swapped, rejected), (45, 5));
    assert_eq!(s.engine.snapshot().generation, 46);
    assert!(
        seen_plans.lock().len() > 1,
        "the load did not overlap the reloads"
    );
    let exposition = s.metrics.render();
    assert_eq!(
        get_metric(
            &exposition,
            r#"plangate_config_reloads_total{result="error"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        get_metric(&exposition, "plangate_config_generation"),
        Some(46.0)
    );
}

#[tokio::test]
async fn invalid_file_keeps_the_old_snapshot_and_counters_survive() {
    let s = serve(&config(1, 5, true)).await;
    let mut c = client(s.grpc).await;
    for _ in 0..3 {
        assert_eq!(code(&mut c, KEY).await, 0);
    }
    std::fs::write(&s.path, "version: 1\nnope: true\n").unwrap();
    assert!(s.reloader.reload("test").await.is_err());
    assert_eq!(code(&mut c, KEY).await, 0, "the old snapshot keeps serving");
    // Raise the quota 5 → 6: the 4 used stay used, 2 remain.
    std::fs::write(&s.path, config(1, 6, true)).unwrap();
    assert!(matches!(
        s.reloader.reload("test").await,
        Ok(Reloaded::Swapped { .. })
    ));
    let mut admitted = 0;
    for _ in 0..5 {
        if code(&mut c, KEY).await == 0 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 2);
    // Disable k2: refused from the next request.
    assert_eq!(code(&mut c, OTHER).await, 0);
    std::fs::write(&s.path, config(1, 6, false)).unwrap();
    s.reloader.reload("test").await.unwrap();
    assert_eq!(code(&mut c, OTHER).await, 7);
}

/// An engine serving the file at `path`, and its reloader watching it (100 ms debounce).
async fn watching(path: &std::path::Path) -> (Arc<Engine>, Arc<Reloader>) {
    let compiled = plangate::config::load_file(path).unwrap();
    let engine = Arc::new(Engine::new(
        compiled.snapshot,
        Arc::new(MemoryStore::new()),
        Arc::new(SystemClock),
    ));
    let fingerprint = plangate::reload::fingerprint(&compiled.sources);
    let reloader = Arc::new(Reloader::new(
        path.to_path_buf(),
        engine.clone(),
        Arc::new(Metrics::new()),
        compiled.sources,
        fingerprint,
    ));
    reloader.watch(Duration::from_millis(100)).await.unwrap();
    (engine, reloader)
}

/// Kubernetes ConfigMap update: `plans.yaml → ..data/plans.yaml`, `..data` swapped atomically.
#[tokio::test]
async fn configmap_symlink_swap_triggers_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..v1")).unwrap();
    std::fs::write(d.join("..v1/plans.yaml"), config(1, 100, true)).unwrap();
    std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/plans.yaml", d.join("plans.yaml")).unwrap();
    let (engine, _reloader) = watching(&d.join("plans.yaml")).await;

    std::fs::create_dir(d.join("..v2")).unwrap();
    std::fs::write(d.join("..v2/plans.yaml"), config(2, 100, true)).unwrap();
    std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..v1")).unwrap();

    let waited = Stopwatch::start();
    while !engine.snapshot().plan_index.contains_key("p2") {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "no reload after the symlink swap"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn get_metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn sighup_reloads_and_admin_api_works() {
    let (dir, path) = common::plans_dir(config(1, 100, true));
    let (grpc, admin) = (common::free_port(), common::free_port());
    // Its log, to say why if it does not come up (a port taken in between, say).
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args(["serve", "--no-watch", "--no-persist", "--config"])
        .arg(&path)
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .env("PLANGATE_ADMIN_TOKEN", "s3cret-token")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let metrics = || common::http(admin, "GET", "/metrics", &[]).body;
    if let Err(e) = common::try_wait_for_port(admin, "plangate admin", &mut child) {
        panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    assert_eq!(
        get_metric(&metrics(), "plangate_config_generation"),
        Some(1.0)
    );
    std::fs::write(&path, config(2, 100, true)).unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    common::wait_until("generation 2 after SIGHUP", || {
        get_metric(&metrics(), "plangate_config_generation") == Some(2.0)
    });
    // /v1/* needs the token.
    let r = common::http(admin, "GET", "/v1/config", &[]);
    assert_eq!(r.status, 401);
    let auth = [("authorization", "Bearer s3cret-token")];
    let r = common::http(admin, "GET", "/v1/config", &auth);
    assert_eq!(r.status, 200);
    // Redacted: ids yes, key values and key hashes no.
    assert!(r.body.contains("\"k1\""));
    for secret in [
        KEY.to_owned(),
        OTHER.to_owned(),
        common::sha(KEY),
        common::sha(OTHER),
    ] {
        assert!(!r.body.contains(&secret), "/v1/config leaks {secret}");
    }
    // POST /v1/reload: an invalid file is refused with its errors, the old config serves on.
    std::fs::write(&path, "version: 1\nnope: 1\n").unwrap();
    let r = common::http(admin, "POST", "/v1/reload", &auth);
    assert_eq!(r.status, 422, "{r:?}");
    assert!(r.body.contains("unknown field `nope`"), "{}", r.body);
    let m = metrics();
    assert_eq!(get_metric(&m, "plangate_config_generation"), Some(2.0));
    let print2 = get_metric(&m, "plangate_config_fingerprint");
    assert!(print2.is_some_and(|p| p > 0.0), "{m}");
    assert_eq!(
        get_metric(&m, "plangate_config_reloads_total{result=\"error\"}"),
        Some(1.0)
    );
    std::fs::write(&path, config(3, 100, true)).unwrap();
    let r = common::http(admin, "POST", "/v1/reload", &auth);
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"result":"success","generation":3}"#)
    );
    let m = metrics();
    let print3 = get_metric(&m, "plangate_config_fingerprint");
    assert_ne!(print3, print2);
    let swaps = get_metric(&m, "plangate_config_reloads_total{result=\"success\"}");
    // The same files again: nothing swapped, the generation and fingerprint kept.
    let r = common::http(admin, "POST", "/v1/reload", &auth);
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"result":"unchanged","generation":3}"#)
    );
    // Back to the content of generation 2 after a rejected file: a change, so generation 4,
    // and the fingerprint of generation 2 again.
    std::fs::write(&path, "version: 1\nnope: 1\n").unwrap();
    assert_eq!(common::http(admin, "POST", "/v1/reload", &auth).status, 422);
    std::fs::write(&path, config(2, 100, true)).unwrap();
    let r = common::http(admin, "POST", "/v1/reload", &auth);
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"result":"success","generation":4}"#)
    );
    let m = metrics();
    assert_eq!(get_metric(&m, "plangate_config_fingerprint"), print2);
    assert_eq!(
        get_metric(&m, "plangate_config_reloads_total{result=\"success\"}"),
        swaps.map(|n| n + 1.0)
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Every sample line of the exposition parses; decision counters match the decisions made.
#[tokio::test]
async fn metrics_text_parses_and_counts_decisions() {
    let s = serve(&config(1, 3, true)).await;
    s.metrics.watch_catalog(s.engine.catalog().clone());
    let mut c = client(s.grpc).await;
    for _ in 0..5 {
        c.check(check_request(KEY)).await.unwrap();
    }
    for _ in 0..2 {
        c.check(check_request("unknown-key-0123456789abcdef"))
            .await
            .unwrap();
    }
    let router = admin::router(AdminState {
        engine: s.engine.clone(),
        metrics: s.metrics.clone(),
        reloader: None,
        token: Default::default(),
        draining: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let text = tokio::task::spawn_blocking(move || common::http(port, "GET", "/metrics", &[]).body)
        .await
        .unwrap();
    let mut samples = 0;
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end].starts_with("plangate_")
                || series[..name_end].starts_with("process_"),
            "{line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "{line}");
        }
        samples += 1;
    }
    assert!(samples > 10);
    // The binary's version and the revision it was built from (git's HEAD in a checkout).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8(o.stdout).unwrap().trim().to_owned(),
        );
    let info = format!(
        "plangate_build_info{{revision=\"{head}\",version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(get_metric(&text, &info), Some(1.0), "{info} in\n{text}");
    let count = |labels: &str| {
        get_metric(&text, &format!("plangate_decisions_total{{{labels}}}")).unwrap_or(0.0)
    };
    assert_eq!(
        count(
            r#"api="petstore",grpc_service="ext_authz",limit="",outcome="admitted",plan="p1",shadow="false",stage="prod""#
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        count(
            r#"api="petstore",grpc_service="ext_authz",limit="plan_quota",outcome="quota_exceeded",plan="p1",shadow="false",stage="prod""#
        ),
        2.0
    );
    assert_eq!(
        count(
            r#"api="petstore",grpc_service="ext_authz",limit="",outcome="forbidden",plan="",shadow="false",stage="prod""#
        ),
        2.0
    );
    assert_eq!(
        get_metric(
            &text,
            "plangate_decision_duration_seconds_count{grpc_service=\"ext_authz\"}"
        ),
        Some(7.0)
    );
    assert_eq!(get_metric(&text, "plangate_api_keys"), Some(2.0));
    assert!(!text.contains("k1"), "no per-key label");
    // The families and their label names, pinned: dashboards and alerts are built on them.
    let mut families: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter(|l| l.starts_with("plangate_"))
        .map(str::to_owned)
        .collect();
    families.sort();
    assert_eq!(
        families,
        [
            "plangate_api_keys gauge",
            "plangate_build_info gauge",
            "plangate_catalog_api_keys gauge",
            "plangate_catalog_changes_applied_total counter",
            "plangate_catalog_head gauge",
            "plangate_catalog_lag_changes gauge",
            "plangate_catalog_synced_timestamp_seconds gauge",
            "plangate_catalog_usage_plans gauge",
            "plangate_config_fingerprint gauge",
            "plangate_config_generation gauge",
            "plangate_config_last_reload_success_timestamp_seconds gauge",
            "plangate_config_reloads_total counter",
            "plangate_console_signins_total counter",
            "plangate_decision_duration_seconds histogram",
            "plangate_decisions_total counter",
            "plangate_failure_policy_decisions_total counter",
            "plangate_near_limit_total counter",
            "plangate_persist_errors_total counter",
            "plangate_persist_last_success_timestamp_seconds gauge",
            "plangate_rls_unknown_domain_total counter",
            "plangate_store_duration_seconds histogram",
            "plangate_store_errors_total counter",
            "plangate_store_up gauge",
            "plangate_usage_plans gauge",
        ],
        "{text}"
    );
    let labels = |family: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{family}{{")))
            .unwrap_or_else(|| panic!("no {family} sample"));
        let inside = &line[family.len() + 1..line.rfind('}').unwrap()];
        inside
            .split(',')
            .map(|kv| kv.split('=').next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        labels("plangate_decisions_total"),
        [
            "api",
            "grpc_service",
            "limit",
            "outcome",
            "plan",
            "shadow",
            "stage"
        ]
    );
    assert_eq!(
        labels("plangate_near_limit_total"),
        ["grpc_service", "limit"]
    );
    assert_eq!(
        labels("plangate_failure_policy_decisions_total"),
        ["grpc_service", "result"]
    );
    assert_eq!(
        labels("plangate_store_duration_seconds_bucket"),
        ["grpc_service", "le"]
    );
    assert_eq!(labels("plangate_build_info"), ["revision", "version"]);
    // The store: every decision that reached it timed, and up.
    assert_eq!(
        get_metric(
            &text,
            "plangate_store_duration_seconds_count{grpc_service=\"ext_authz\"}"
        ),
        Some(5.0)
    );
    assert_eq!(get_metric(&text, "plangate_store_up"), Some(1.0));
    // Near the limit: of the three admitted against a quota of 3, the third left 0 (≤ 10%).
    assert_eq!(
        get_metric(
            &text,
            "plangate_near_limit_total{grpc_service=\"ext_authz\",limit=\"plan_quota\"}"
        ),
        Some(1.0),
        "{text}"
    );
    // The process (Linux).
    #[cfg(target_os = "linux")]
    {
        assert!(
            get_metric(&text, "process_cpu_seconds_total").is_some(),
            "{text}"
        );
        assert!(get_metric(&text, "process_resident_memory_bytes").unwrap_or(0.0) > 0.0);
        assert!(get_metric(&text, "process_open_fds").unwrap_or(0.0) > 0.0);
    }
}

/// `GET /v1/config` spells every setting as the file does, so that it can be read back.
#[test]
fn config_in_force_reads_like_the_file() {
    let text = r#"
version: 1
quota_week_start: SUNDAY
responses: { rate_limit_headers: x-ratelimit }
apis:
  petstore:
    stages:
      prod:
        unknown_methods: forbid
        methods: { "/pets/GET": {} }
domain_names:
  "*.Example.com":
    base_path_mappings: [{ base_path: v1, api: petstore, stage: prod }, { api: petstore, stage: prod }]
usage_plans:
  gold:
    quota: { limit: 10, period: WEEK }
    api_stages: [{ api: petstore, stage: prod }]
"#;
    let c = plangate::config::load_str(text, None, std::path::Path::new(".")).unwrap();
    let v = plangate::config::render::redacted(&c.snapshot);
    assert_eq!(v["quota_week_start"], "SUNDAY");
    assert_eq!(v["responses"]["rate_limit_headers"], "x-ratelimit");
    assert_eq!(
        v["apis"]["petstore"]["stages"]["prod"]["unknown_methods"],
        "forbid"
    );
    assert_eq!(v["usage_plans"]["gold"]["quota"]["period"], "WEEK");
    assert_eq!(v["usage_plans"]["gold"]["api_stages"][0]["stage"], "prod");
    let m = &v["domain_names"]["*.example.com"]["base_path_mappings"];
    assert_eq!(m[0]["base_path"], "v1");
    assert_eq!(m[1]["base_path"], "(none)");
    assert_eq!(m[1]["stage"], "prod");
    // What it prints is a valid value for the file.
    let week: plangate::config::file::Weekday =
        serde_json::from_value(v["quota_week_start"].clone()).unwrap();
    assert_eq!(week, plangate::config::file::Weekday::Sunday);
    let style: plangate::snapshot::RateLimitHeaders =
        serde_json::from_value(v["responses"]["rate_limit_headers"].clone()).unwrap();
    assert_eq!(style, plangate::snapshot::RateLimitHeaders::XRatelimit);
}

/// A writer that truncates the file, writes half, pauses, then writes the rest: the half is never
/// loaded (it is valid YAML on its own, with fewer keys), only the finished file.
#[tokio::test]
async fn a_file_is_reloaded_when_its_writer_is_done_not_half_written() {
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plans.yaml");
    let keys = |n: usize| -> String {
        (1..=n)
            .map(|i| {
                format!(
                    "  - {{ id: k{i}, value_sha256: {}, usage_plans: [gold] }}\n",
                    common::sha(&format!("slow-writer-key-{i:04}-0123456789"))
                )
            })
            .collect()
    };
    let head = "version: 1\napis: { petstore: { stages: { prod: {} } } }\nusage_plans:\n  gold: { api_stages: [{ api: petstore, stage: prod }] }\napi_keys:\n";
    std::fs::write(&path, format!("{head}{}", keys(2))).unwrap();
    let (engine, _reloader) = watching(&path).await;

    // The new file has 3 keys; its first half ends after key 1: a valid config of 1 key.
    let full = format!("{head}{}", keys(3));
    let cut = full.find("  - { id: k2").unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.write_all(&full.as_bytes()[..cut]).unwrap();
    f.flush().unwrap();
    // Well past the debounce: the half-written file must not be in force.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        engine.snapshot().keys.len(),
        2,
        "the half-written file was loaded"
    );
    f.write_all(&full.as_bytes()[cut..]).unwrap();
    drop(f);
    let waited = Stopwatch::start();
    while engine.snapshot().keys.len() != 3 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the finished file was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A reload has a time budget (`--reload-timeout`): a load over it is abandoned, reported and
/// counted, and the configuration in force stays. (20,000 keys to hash against a 1 ms budget.)
#[test]
fn a_reload_over_its_time_budget_keeps_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plans.yaml");
    let mut csv = String::from("Name,Key,UsagePlanIds\n");
    for i in 0..20_000 {
        csv.push_str(&format!("n{i},budget-key-{i:020},p1\n"));
    }
    std::fs::write(dir.path().join("keys.csv"), csv).unwrap();
    let with_keys = |quota| format!("{}api_keys_files: [keys.csv]\n", config(1, quota, true));
    std::fs::write(&path, with_keys(100)).unwrap();
    let (grpc, admin) = (common::free_port(), common::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args([
            "serve",
            "--no-watch",
            "--no-persist",
            "--reload-timeout",
            "0",
            "--config",
        ])
        .arg(&path)
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_until("admin listener", || {
        std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok()
    });
    std::fs::write(&path, with_keys(101)).unwrap();
    let r = common::http(admin, "POST", "/v1/reload", &[]);
    assert_ne!(r.status, 200, "{r:?}");
    assert!(r.body.contains("--reload-timeout"), "{}", r.body);
    let m = common::http(admin, "GET", "/metrics", &[]).body;
    assert_eq!(get_metric(&m, "plangate_config_generation"), Some(1.0));
    assert_eq!(
        get_metric(&m, "plangate_config_reloads_total{result=\"error\"}"),
        Some(1.0)
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// What `GET /v1/config` shows is a file: written as YAML and loaded again it means the same,
/// and it names what the file set (shadow mode, key sources, gateway responses, workloads).
#[test]
fn config_in_force_loads_back_as_the_same_configuration() {
    let text = r#"
version: 1
api_key_source: { metadata: { namespace: envoy.filters.http.jwt_authn, path: [claims, key] } }
workloads:
  spiffe://cluster.local/ns/petstore/sa/petstore: { api: petstore, stage: prod }
path_parameters: refuse
gateway_responses: { THROTTLED: { status: 429, headers: { retry-after: "1" }, body: '{"m":$context.error.messageString}' } }
apis:
  petstore:
    api_key_source: { header: x-petstore-key }
    gateway_responses: { QUOTA_EXCEEDED: { status: 402 } }
    stages:
      prod:
        enforce: false
        throttle: { rate: 2.5, burst: 5 }
        methods: { "/pets/GET": { throttle: { rate: 1, burst: 1 } }, "/health/GET": { api_key_required: false } }
usage_plans:
  gold:
    enforce: false
    name: Gold
    throttle: { rate: 10, burst: 20 }
    quota: { limit: 10, period: MONTH, offset: 2, starts_at: 2026-11-03 }
    api_stages: [{ api: petstore, stage: prod, throttle: { "/pets/GET": { rate: 0.5, burst: 1 } } }]
"#;
    let first = plangate::config::load_str(text, None, std::path::Path::new(".")).unwrap();
    let mut shown = plangate::config::render::redacted(&first.snapshot);
    assert_eq!(
        shown["apis"]["petstore"]["stages"]["prod"]["enforce"],
        false
    );
    assert_eq!(shown["usage_plans"]["gold"]["enforce"], false);
    assert_eq!(
        shown["apis"]["petstore"]["api_key_source"]["header"],
        "x-petstore-key"
    );
    assert_eq!(
        shown["api_key_source"]["metadata"]["path"],
        serde_json::json!(["claims", "key"])
    );
    assert_eq!(shown["gateway_responses"]["THROTTLED"]["status"], 429);
    assert_eq!(
        shown["apis"]["petstore"]["gateway_responses"]["QUOTA_EXCEEDED"]["status"],
        402
    );
    shown.as_object_mut().unwrap().remove("generation");
    let yaml = serde_yaml_ng::to_string(&shown).unwrap();
    let second = plangate::config::load_str(&yaml, None, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(
        plangate::config::render::redacted(&second.snapshot),
        plangate::config::render::redacted(&first.snapshot)
    );
}
