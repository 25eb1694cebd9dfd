//! Usage reports, UpdateUsage, and durable quotas across restarts (graceful and kill -9).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Plangate, Succeeds, authz_client, check_request, check_status};
use plangate::clock::{Clock, FakeClock, Stopwatch, SystemClock, parse_rfc3339};
use plangate::engine::{Engine, Request};
use plangate::store::MemoryStore;
use plangate::usage;

const KEY: &str = "usage-key-0123456789abcdefg";
const OTHER: &str = "usage-other-0123456789abcde";

fn config(daily_limit: u64) -> String {
    let quota = format!("quota: {{ limit: {daily_limit}, period: DAY }}");
    common::petstore(
        common::FAST_ACCOUNT,
        &[("prod", "{}")],
        &[("billed", &quota)],
        &[
            ("k1", KEY, "usage_plans: [billed]"),
            ("k2", OTHER, "usage_plans: [billed]"),
        ],
    )
}

fn engine(limit: u64, at: &str) -> (Engine, Arc<FakeClock>) {
    let c = plangate::config::load_str(&config(limit), None, Path::new(".")).unwrap();
    let clock = Arc::new(FakeClock::new(parse_rfc3339(at).unwrap()));
    (
        Engine::new(c.snapshot, Arc::new(MemoryStore::new()), clock.clone()),
        clock,
    )
}

fn req(key: &str) -> Request<'_> {
    Request::new("GET", "/pets", Some(key), 1)
}

async fn admit(e: &Engine, key: &str, n: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..n {
        if e.decide(&req(key)).await.admitted() {
            admitted += 1;
        }
    }
    admitted
}

/// The report equals what was admitted, per key and per UTC day, across midnight.
#[tokio::test]
async fn report_equals_admitted_per_day_across_midnight() {
    let (e, clock) = engine(10, "2026-11-24T23:58:00Z");
    assert_eq!(admit(&e, KEY, 4).await, 4);
    assert_eq!(admit(&e, OTHER, 2).await, 2);
    clock.set(parse_rfc3339("2026-11-24T23:59:59.999Z").unwrap());
    // 12 tries against the rest of the daily quota: 6 more fit.
    assert_eq!(admit(&e, KEY, 12).await, 6);
    clock.set(parse_rfc3339("2026-11-25T00:00:00Z").unwrap());
    assert_eq!(admit(&e, KEY, 3).await, 3);
    clock.set(parse_rfc3339("2026-11-26T12:00:00Z").unwrap());
    let mut hits = req(KEY);
    hits.hits = 5;
    assert!(e.decide(&hits).await.admitted());

    let d = |s| usage::parse_date(s).unwrap();
    let r = usage::report(&e, "billed", d("2026-11-23"), d("2026-11-26"), None)
        .await
        .unwrap();
    assert_eq!(r.usage_plan_id, "billed");
    assert_eq!(
        r.items["k1"],
        vec![(0, Some(10)), (10, Some(0)), (3, Some(7)), (5, Some(5))]
    );
    assert_eq!(
        r.items["k2"],
        vec![(0, Some(10)), (2, Some(8)), (0, Some(10)), (0, Some(10))]
    );
    // One key only.
    let r = usage::report(&e, "billed", d("2026-11-25"), d("2026-11-25"), Some("k2"))
        .await
        .unwrap();
    assert_eq!(r.items.len(), 1);
    assert_eq!(r.items["k2"], vec![(0, Some(10))]);
    // The AWS shape.
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["usagePlanId"], "billed");
    assert_eq!(v["startDate"], "2026-11-25");
    assert_eq!(v["items"]["k2"][0], serde_json::json!([0, 10]));
    // Bad input.
    assert!(
        usage::report(&e, "nope", d("2026-11-25"), d("2026-11-25"), None)
            .await
            .is_err()
    );
    assert!(
        usage::report(&e, "billed", d("2026-11-26"), d("2026-11-25"), None)
            .await
            .is_err()
    );
}

/// After UpdateUsage sets remaining to N, exactly N more requests are admitted in the period.
#[tokio::test]
async fn update_usage_sets_what_remains() {
    let (e, _) = engine(100, "2026-11-25T10:00:00Z");
    assert_eq!(admit(&e, KEY, 30).await, 30);
    let now = e.clock().now();
    let c = usage::current(&e, "billed", "k1", now).await.unwrap();
    assert_eq!((c.used, c.remaining, c.limit), (30, 70, 100));
    assert_eq!(
        serde_json::to_value(&c).unwrap()["periodStart"],
        "2026-11-25T00:00:00Z"
    );
    for n in [5u64, 0, 40] {
        let c = usage::update(&e, "billed", "k1", n, now).await.unwrap();
        assert_eq!(c.remaining, n);
        assert_eq!(admit(&e, KEY, 60).await as u64, n, "after remaining = {n}");
    }
    // Above the limit: AWS's temporary extension, exactly that many in this period.
    let c = usage::update(&e, "billed", "k1", 101, now).await.unwrap();
    assert_eq!((c.used, c.remaining), (0, 101));
    assert_eq!(admit(&e, KEY, 110).await, 101);
    // More than plangate can count exactly: refused.
    assert!(
        usage::update(&e, "billed", "k1", u64::MAX, now)
            .await
            .is_err()
    );
    assert!(usage::update(&e, "billed", "nobody", 1, now).await.is_err());
}

/// Concurrent clients of the load in the persistence tests.
const LOAD_CLIENTS: u64 = 8;

struct Load {
    stop: Arc<AtomicBool>,
    admitted: Arc<AtomicU64>,
    /// When each admission happened (time since `clock` started), for the crash bound.
    times: Arc<parking_lot::Mutex<Vec<Duration>>>,
    clock: Stopwatch,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_load(port: u16) -> Load {
    let c = authz_client(port).await;
    let stop = Arc::new(AtomicBool::new(false));
    let admitted = Arc::new(AtomicU64::new(0));
    let times = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let clock = Stopwatch::start();
    let mut tasks = Vec::new();
    for _ in 0..LOAD_CLIENTS {
        let (mut c, stop, admitted, times) =
            (c.clone(), stop.clone(), admitted.clone(), times.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.check(check_request(KEY, "/pets")).await {
                    Ok(r) if check_status(r.get_ref()) == 200 => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        times.lock().push(clock.elapsed());
                    }
                    Ok(_) => {}
                    // The server went away: this load is over.
                    Err(_) => break,
                }
            }
        }));
    }
    Load {
        stop,
        admitted,
        times,
        clock,
        tasks,
    }
}

impl Load {
    async fn finish(self) -> (u64, Vec<Duration>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let times = self.times.lock().clone();
        (self.admitted.load(Ordering::Relaxed), times)
    }
}

fn used_after_restart(dir: &Path, config: &Path) -> u64 {
    let p = Plangate::start(
        config,
        &["--data-dir", dir.to_str().unwrap()],
        dir.join("after.log"),
    );
    let r = common::http(p.admin, "GET", "/v1/usageplans/billed/keys/k1/usage", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    v["used"].as_u64().unwrap()
}

/// SIGTERM during load, restart: the quota's used count equals what was admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_loses_nothing() {
    let (dir, config) = common::plans_dir(config_text());
    let data = dir.path().join("data");
    // A long flush interval: only the final flush at shutdown can save the counts.
    let p = Plangate::start(
        &config,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--flush-interval",
            "3600",
        ],
        dir.path().join("before.log"),
    );
    let load = start_load(p.grpc).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    Command::new("kill")
        .args(["-TERM", &p.pid().to_string()])
        .status()
        .unwrap();
    let (admitted, _) = load.finish().await;
    let mut p = p;
    let status = p.wait();
    assert!(status.success(), "{status}");
    assert!(admitted > 0);
    let used = used_after_restart(&data, &config);
    assert_eq!(used, admitted, "graceful stop lost counts");
    // The daily usage survived too.
    let today = chrono::DateTime::from_timestamp_nanos(SystemClock.now())
        .date_naive()
        .to_string();
    let p2 = Plangate::start(
        &config,
        &["--data-dir", data.to_str().unwrap()],
        dir.path().join("r.log"),
    );
    let r = common::http(
        p2.admin,
        "GET",
        &format!("/v1/usageplans/billed/usage?startDate={today}&endDate={today}&keyId=k1"),
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v["items"]["k1"][0][0].as_u64(),
        Some(admitted),
        "{}",
        r.body
    );
}

/// kill -9 during load, restart: the loss is at most what was admitted in the last flush
/// interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loses_at_most_one_flush_interval() {
    let (dir, config) = common::plans_dir(config_text());
    let data = dir.path().join("data");
    let interval = Duration::from_millis(500);
    let p = Plangate::start(
        &config,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--flush-interval",
            "0.5",
        ],
        dir.path().join("before.log"),
    );
    let load = start_load(p.grpc).await;
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let killed_at = load.clock.elapsed();
    Command::new("kill")
        .args(["-KILL", &p.pid().to_string()])
        .status()
        .unwrap();
    let (admitted, times) = load.finish().await;
    drop(p);
    let used = used_after_restart(&data, &config);
    // A call in flight at the kill may have been charged (and flushed) while its answer died
    // with the process: counted, never seen as admitted. At most one per client.
    assert!(
        used <= admitted + LOAD_CLIENTS,
        "{used} counted, {admitted} admitted by {LOAD_CLIENTS} clients"
    );
    let lost = admitted.saturating_sub(used);
    // Admissions that a flush may not have covered: the last interval, plus the time a flush
    // takes to reach the disk (generous, so that a slow disk does not fail the test).
    let window = interval + Duration::from_millis(500);
    let at_risk = times
        .iter()
        .filter(|t| killed_at.saturating_sub(**t) <= window)
        .count() as u64;
    eprintln!(
        "kill -9: {admitted} admitted, {used} persisted, {lost} lost, {at_risk} admitted in the last {window:?}"
    );
    assert!(
        lost <= at_risk,
        "lost {lost} > {at_risk} admitted in the last flush interval"
    );
}

fn config_text() -> String {
    config(1_000_000)
}

#[test]
fn usage_cli_prints_table_and_csv() {
    let (dir, config) = common::plans_dir(config_text());
    let p = Plangate::start(&config, &[], dir.path().join("p.log"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = authz_client(p.grpc).await;
        for _ in 0..7 {
            c.check(check_request(KEY, "/pets")).await.unwrap();
        }
    });
    // UpdateUsage through the admin API: set remaining to 999,993 (= 7 used).
    let json = [("content-type", "application/json")];
    let url = "/v1/usageplans/billed/keys/k1/usage";
    let r = common::http_with_body(p.admin, "PATCH", url, &json, r#"{"remaining":"x"}"#);
    assert_eq!(r.status, 400, "{r:?}");
    let r = common::http_with_body(p.admin, "PATCH", url, &json, r#"{"remaining":999993}"#);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains(r#""used":7"#), "{}", r.body);
    let r = common::http(p.admin, "GET", url, &[]);
    assert!(r.body.contains(r#""remaining":999993"#), "{}", r.body);
    let today = chrono::DateTime::from_timestamp_nanos(SystemClock.now())
        .date_naive()
        .to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args(["usage", "--admin", &format!("http://127.0.0.1:{}", p.admin)])
        .args([
            "--plan", "billed", "--start", &today, "--end", &today, "--format", "csv",
        ])
        .succeeds();
    let csv = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        csv,
        format!("usage_plan_id,key_id,date,used,remaining\nbilled,k1,{today},7,999993\n")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args(["usage", "--admin", &format!("http://127.0.0.1:{}", p.admin)])
        .args(["--plan", "billed", "--start", &today, "--end", &today])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("k1") && table.contains("999993"), "{table}");

    // AWS's UpdateUsage body: one `replace` of `/remaining`, the value a string. The report
    // shows the new remaining for today (it once kept the usage-computed one).
    let patch = |value: &str| {
        format!(
            r#"{{"patchOperations":[{{"op":"replace","path":"/remaining","value":"{value}"}}]}}"#
        )
    };
    let r = common::http_with_body(p.admin, "PATCH", url, &json, &patch("5"));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains(r#""remaining":5"#), "{}", r.body);
    let report = format!("/v1/usageplans/billed/usage?startDate={today}&endDate={today}");
    let r = common::http(p.admin, "GET", &report, &[]);
    assert!(r.body.contains(r#""k1":[[7,5]]"#), "{}", r.body);
    for bad in [
        r#"{"patchOperations":[{"op":"add","path":"/remaining","value":"5"}]}"#.to_owned(),
        r#"{"patchOperations":[{"op":"replace","path":"/limit","value":"5"}]}"#.to_owned(),
        patch("five"),
        r#"{"patchOperations":[]}"#.to_owned(),
    ] {
        let r = common::http_with_body(p.admin, "PATCH", url, &json, &bad);
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(r.body.contains("message"), "{}", r.body);
    }

    // AWS paging: `limit` keys a page, `position` where the next one starts.
    rt.block_on(async {
        let mut c = authz_client(p.grpc).await;
        c.check(check_request(OTHER, "/pets")).await.unwrap();
    });
    let r = common::http(p.admin, "GET", &format!("{report}&limit=1"), &[]);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["items"].as_object().unwrap().len(), 1, "{v}");
    assert!(v["items"]["k1"].is_array(), "{v}");
    let position = v["position"]
        .as_str()
        .unwrap_or_else(|| panic!("no position: {v}"));
    let r = common::http(
        p.admin,
        "GET",
        &format!("{report}&limit=1&position={position}"),
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(v["items"]["k2"].is_array(), "{v}");
    assert!(
        v.get("position").is_none(),
        "the last page has no position: {v}"
    );
    let r = common::http(p.admin, "GET", &format!("{report}&limit=0"), &[]);
    assert_eq!(r.status, 400, "{r:?}");
}

/// Disk full (real redb on a 256 KiB tmpfs): flushes fail, the counts stay in memory, /readyz
/// and the metrics say so; once space returns the file is reopened and written, and a restart
/// finds every admitted request. (Before: after one ENOSPC redb refused every later write,
/// and a restart lost everything since.) Skipped where the harness cannot mount a tmpfs.
#[test]
fn a_full_disk_loses_nothing_once_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&data)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(data.clone());
    let config = dir.path().join("plans.yaml");
    std::fs::write(&config, config_text()).unwrap();
    let data_arg = data.to_str().unwrap();
    let mut p = Plangate::start(
        &config,
        &["--data-dir", data_arg, "--flush-interval", "0.1"],
        dir.path().join("p.log"),
    );
    // Fill the disk.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(data.join("filler")).unwrap();
        while f.write_all(&[0u8; 4096]).is_ok() {}
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admit = |n: usize| {
        rt.block_on(async {
            let mut c = authz_client(p.grpc).await;
            for _ in 0..n {
                assert_eq!(common::status(&mut c, KEY, "/pets").await, 200);
            }
        })
    };
    admit(30);
    std::thread::sleep(Duration::from_millis(600));
    assert!(p.metric("plangate_persist_errors_total").unwrap_or(0.0) >= 1.0);
    let ready = common::http(p.admin, "GET", "/readyz", &[]);
    assert_eq!(ready.status, 200, "still serving: {ready:?}");
    assert!(
        ready.body.contains("persistence: failing since"),
        "{}",
        ready.body
    );
    assert!(
        ready.body.contains("No space left on device"),
        "{}",
        ready.body
    );
    // Space returns: the next flush writes everything.
    std::fs::remove_file(data.join("filler")).unwrap();
    admit(20);
    std::thread::sleep(Duration::from_millis(600));
    let ready = common::http(p.admin, "GET", "/readyz", &[]);
    assert!(!ready.body.contains("persistence"), "{}", ready.body);
    Command::new("kill")
        .args(["-TERM", &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(p.wait().success());
    let after = Plangate::start(
        &config,
        &["--data-dir", data_arg],
        dir.path().join("after.log"),
    );
    let r = common::http(
        after.admin,
        "GET",
        "/v1/usageplans/billed/keys/k1/usage",
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["used"].as_u64(), Some(50), "{r:?}");
}
