//! Several plangate replicas sharing limits through a real redis-server.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use plangate::clock::Stopwatch;

use common::{Plangate, RedisServer, authz_client, check_request, check_status};

const KEY: &str = "replica-key-0123456789abcdef";
const BURSTY: &str = "bursty-key-0123456789abcdefg";

fn config() -> String {
    common::petstore(
        common::FAST_ACCOUNT,
        &[("prod", "{}")],
        &[
            ("quota1000", "quota: { limit: 1000, period: MONTH }"),
            // One token per ~11.6 days: nothing refills during the test.
            ("burst300", "throttle: { rate: 0.000001, burst: 300 }"),
        ],
        &[
            ("q", KEY, "usage_plans: [quota1000]"),
            ("b", BURSTY, "usage_plans: [burst300]"),
        ],
    )
}

struct Fleet {
    _dir: tempfile::TempDir,
    redis: RedisServer,
    replicas: Vec<Plangate>,
}

fn fleet(n: usize, extra: &[&str]) -> Fleet {
    let (dir, path) = common::plans_dir(config());
    let redis = RedisServer::start();
    let url = redis.url();
    let replicas = (0..n)
        .map(|i| {
            let mut args = vec!["--store", url.as_str()];
            args.extend_from_slice(extra);
            Plangate::start(&path, &args, dir.path().join(format!("plangate-{i}.log")))
        })
        .collect();
    Fleet {
        _dir: dir,
        redis,
        replicas,
    }
}

/// 200 concurrent clients split over two replicas, 10 attempts each on one key.
async fn admitted_across_replicas(f: &Fleet, key: &'static str) -> u64 {
    let ports: Vec<u16> = f.replicas.iter().map(|r| r.grpc).collect();
    common::admitted_by_200_clients(&ports, move || check_request(key, "/pets")).await
}

/// Exactness needs every decision to reach Redis: a generous timeout, and a closed policy so
/// that a store error would show (as a 503) instead of admitting.
const EXACT: &[&str] = &["--store-timeout-ms", "10000", "--store-failure", "closed"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_is_exact_across_two_replicas() {
    let f = fleet(2, EXACT);
    assert_eq!(admitted_across_replicas(&f, KEY).await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_is_exact_across_two_replicas() {
    let f = fleet(2, EXACT);
    assert_eq!(admitted_across_replicas(&f, BURSTY).await, 300);
}

/// One decision is one Redis round trip: MONITOR shows every command a client sends (commands
/// run inside a script are shown apart, as `lua`), so the client-sent ones are counted.
#[tokio::test]
async fn one_round_trip_per_decision() {
    use std::io::{BufRead, BufReader, Write};
    let f = fleet(1, EXACT);
    let mut c = authz_client(f.replicas[0].grpc).await;
    // Warm up: the first call may load the script (NOSCRIPT → EVAL).
    c.check(check_request(KEY, "/pets")).await.unwrap();
    let mut monitor = std::net::TcpStream::connect(("127.0.0.1", f.redis.port)).unwrap();
    monitor.write_all(b"*1\r\n$7\r\nMONITOR\r\n").unwrap();
    let mut lines = BufReader::new(monitor.try_clone().unwrap());
    let mut ok = String::new();
    lines.read_line(&mut ok).unwrap();
    assert_eq!(ok.trim(), "+OK");
    for _ in 0..100 {
        c.check(check_request(KEY, "/pets")).await.unwrap();
    }
    // A marker command from this test ends the capture.
    let mut marker = std::net::TcpStream::connect(("127.0.0.1", f.redis.port)).unwrap();
    marker
        .write_all(b"*2\r\n$4\r\nECHO\r\n$3\r\nend\r\n")
        .unwrap();
    monitor
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut client_commands, mut script_commands, mut evalsha) = (0, 0, 0);
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.contains("\"ECHO\" \"end\"") {
            break;
        }
        // The runtime catalog's poll (one GET every 200 ms per replica), not a decision's.
        if line.contains("|catalog|") {
            continue;
        }
        if line.contains(" lua] ") {
            script_commands += 1;
        } else {
            client_commands += 1;
            if line.to_ascii_uppercase().contains("\"EVALSHA\"") {
                evalsha += 1;
            }
        }
    }
    assert_eq!((client_commands, evalsha), (100, 100));
    eprintln!(
        "100 decisions: {client_commands} round trips (EVALSHA), {script_commands} commands inside the script"
    );
}

/// Redis stops during load and comes back: no crash, the failure policy answers meanwhile,
/// `/readyz` says not ready, store errors are counted, and normal answers resume by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_follows_the_policy_and_recovers() {
    let mut f = fleet(
        1,
        &["--store-failure", "closed", "--store-timeout-ms", "100"],
    );
    let port = f.replicas[0].grpc;
    let admin = f.replicas[0].admin;
    let mut c = authz_client(port).await;
    let ok = |r: &envoy_types::ext_authz::v3::pb::CheckResponse| check_status(r);
    assert_eq!(
        ok(&c
            .check(check_request(KEY, "/pets"))
            .await
            .unwrap()
            .into_inner()),
        200
    );
    assert_eq!(common::http(admin, "GET", "/readyz", &[]).status, 200);

    // Load from 8 clients throughout the outage.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counts = Arc::new(parking_lot::Mutex::new(std::collections::BTreeMap::<
        i32,
        u64,
    >::new()));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (mut c, stop, counts) = (c.clone(), stop.clone(), counts.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .check(check_request(KEY, "/pets"))
                    .await
                    .unwrap()
                    .into_inner();
                *counts.lock().entry(check_status(&r)).or_default() += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.redis.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    counts.lock().clear();
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        // While Redis is down, every answer is the closed policy's 503.
        let during = counts.lock().clone();
        assert!(during.get(&503).copied().unwrap_or(0) > 0, "{during:?}");
        assert_eq!(
            during.keys().copied().collect::<Vec<_>>(),
            vec![503],
            "{during:?}"
        );
    }
    // Identity needs no store: an unknown key is still a 403.
    let r = c
        .check(check_request("unknown-key-0123456789abcdef", "/pets"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok(&r), 403);
    assert_eq!(common::http(admin, "GET", "/readyz", &[]).status, 503);
    assert!(f.replicas[0].metric("plangate_store_errors_total").unwrap() >= 1.0);
    let policy = |result: &str| {
        f.replicas[0].metric(&format!(
            "plangate_failure_policy_decisions_total{{grpc_service=\"ext_authz\",result=\"{result}\"}}"
        ))
    };
    assert!(policy("refused").unwrap() >= 1.0);
    assert_eq!(policy("admitted"), Some(0.0));
    assert_eq!(f.replicas[0].metric("plangate_store_up"), Some(0.0));

    f.redis.restart();
    let back = Stopwatch::start();
    let mut recovered = None;
    while back.elapsed() < Duration::from_secs(15) {
        let r = c
            .check(check_request(KEY, "/pets"))
            .await
            .unwrap()
            .into_inner();
        if ok(&r) == 200 {
            recovered = Some(back.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = recovered.expect("no normal answer after Redis came back");
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    eprintln!("normal answers {recovered:?} after redis-server was back");
    assert!(f.replicas[0].alive(), "plangate crashed");
    // Decisions that were in flight while Redis was down may still fail after the first normal
    // answer; readiness follows the decisions, so it comes back once they succeed.
    common::wait_until("ready after Redis came back", || {
        common::http(admin, "GET", "/readyz", &[]).status == 200
    });
    // `plangate_store_up` is the last decision's: one that was in flight may have failed after
    // the load stopped; the next one succeeds and says so.
    let r = c
        .check(check_request(KEY, "/pets"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok(&r), 200);
    assert_eq!(f.replicas[0].metric("plangate_store_up"), Some(1.0));
}

#[tokio::test]
async fn open_policy_admits_during_an_outage() {
    let mut f = fleet(1, &["--store-timeout-ms", "100"]);
    let mut c = authz_client(f.replicas[0].grpc).await;
    f.redis.stop();
    assert_eq!(common::status(&mut c, KEY, "/pets").await, 200);
    assert!(f.replicas[0].alive());
}

/// A wrong or missing Redis password is named as such at start (not "did not answer").
#[test]
fn redis_authentication_errors_are_named_at_start() {
    let r = common::RedisServer::start();
    assert!(
        r.command(&["CONFIG", "SET", "requirepass", "s3cret-pass"])
            .starts_with("+OK")
    );
    let (_dir, config) = common::plans_dir(common::MINIMAL);
    let serve = |url: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_plangate"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .env("PLANGATE_STORE", url)
            .output()
            .unwrap()
    };
    let wrong = serve(format!("redis://:wrong-pass@127.0.0.1:{}", r.port));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(
        !stderr.contains("wrong-pass"),
        "the password in an error: {stderr}"
    );
    let none = serve(format!("redis://127.0.0.1:{}", r.port));
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(stderr.contains("authentication required"), "{stderr}");
}

/// The store URL, password included, can come from a file (a mounted Secret).
#[test]
fn the_store_url_can_come_from_a_file() {
    let r = common::RedisServer::start();
    assert!(
        r.command(&["CONFIG", "SET", "requirepass", "file-pass-123"])
            .starts_with("+OK")
    );
    let (dir, config) = common::plans_dir(common::MINIMAL);
    let url_file = dir.path().join("store-url");
    std::fs::write(
        &url_file,
        format!("redis://:file-pass-123@127.0.0.1:{}\n", r.port),
    )
    .unwrap();
    let p = Plangate::start(
        &config,
        &["--store-file", url_file.to_str().unwrap()],
        dir.path().join("plangate.log"),
    );
    assert_eq!(common::http(p.admin, "GET", "/readyz", &[]).status, 200);
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(log.contains("counters in Redis"), "{log}");
    assert!(!log.contains("file-pass-123"), "the password in the log");
}

/// Four Redis commands per decision with the shared buckets leased (EVALSHA, and inside the
/// script TIME, one read, one HSET), counted by Redis itself (`INFO commandstats`): the account
/// bucket costs none while its lease lasts.
#[tokio::test]
async fn four_redis_commands_per_decision_with_leased_shared_buckets() {
    let f = fleet(1, &["--store-shared", "leased"]);
    let mut c = authz_client(f.replicas[0].grpc).await;
    // Warm up: the script loaded, the key's hash and the account's lease made.
    for _ in 0..5 {
        c.check(check_request(KEY, "/pets")).await.unwrap();
    }
    f.redis.command(&["CONFIG", "RESETSTAT"]);
    const N: u64 = 300;
    for _ in 0..N {
        let r = c.check(check_request(KEY, "/pets")).await.unwrap();
        assert_eq!(check_status(&r.into_inner()), 200);
    }
    let stats = f.redis.command(&["INFO", "commandstats"]);
    let calls: u64 = stats
        .lines()
        .filter(|l| !l.starts_with("cmdstat_info") && !l.starts_with("cmdstat_config"))
        // GET: the runtime catalog's poll (one every 200 ms); a warm decision sends none.
        .filter(|l| !l.starts_with("cmdstat_get:"))
        .filter_map(|l| {
            let calls = l.split("calls=").nth(1)?;
            calls.split(',').next()?.parse::<u64>().ok()
        })
        .sum();
    eprintln!("{N} decisions: {calls} Redis commands\n{stats}");
    // A lease request (3 commands) may come when the warm-up's lease was given back idle, and
    // one TIME when the lane reads its node's clock again (every 30 s: a slow run crosses it).
    assert!(calls <= 4 * N + 3 + 1, "{calls} commands for {N} decisions");
    assert!(
        calls >= 4 * N,
        "{calls} commands for {N} decisions: some not counted?"
    );
}

/// `/readyz` follows what decisions see (issue 25, item 18): a Redis out of memory answers PING
/// but refuses every script; after three failed decisions the replica says not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_decisions_not_ping() {
    let redis = common::RedisServer::start();
    let (dir, path) = common::plans_dir(readiness_config());
    let p = common::Plangate::start(
        &path,
        // A generous store timeout: on a loaded machine a 50 ms PING can time out, and this
        // test is about decisions that fail, not slow ones.
        &[
            "--store",
            &redis.url(),
            "--store-failure",
            "closed",
            "--store-timeout-ms",
            "2000",
        ],
        dir.path().join("plangate.log"),
    );
    let c = common::authz_client(p.grpc).await;
    let status = || {
        let mut c = c.clone();
        async move {
            let r = c
                .check(common::check_request(
                    "ready-key-0123456789abcdefg",
                    "/pets",
                ))
                .await
                .unwrap();
            common::check_status(&r.into_inner())
        }
    };
    assert_eq!(status().await, 200);
    assert_eq!(common::http(p.admin, "GET", "/readyz", &[]).status, 200);
    // Out of memory: writes (and scripts that may write) are refused; PING still answers.
    assert!(
        redis
            .command(&["CONFIG", "SET", "maxmemory", "1"])
            .starts_with("+OK")
    );
    for _ in 0..5 {
        assert_eq!(status().await, 503);
    }
    let r = common::http(p.admin, "GET", "/readyz", &[]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("failed the last"), "{}", r.body);
    // Memory back: decisions work and readiness returns with them.
    assert!(
        redis
            .command(&["CONFIG", "SET", "maxmemory", "0"])
            .starts_with("+OK")
    );
    assert_eq!(status().await, 200);
    assert_eq!(common::http(p.admin, "GET", "/readyz", &[]).status, 200);
}

fn readiness_config() -> String {
    format!(
        r#"
version: 1
defaults: {{ api: petstore, stage: prod }}
apis:
  petstore:
    stages:
      prod: {{}}
usage_plans:
  p:
    quota: {{ limit: 1000, period: DAY }}
    api_stages: [{{ api: petstore, stage: prod }}]
api_keys:
  - {{ id: r1, value_sha256: {}, usage_plans: [p] }}
"#,
        common::sha("ready-key-0123456789abcdefg")
    )
}

/// Redis down at boot: plangate serves unready (`/readyz` 503, gRPC health NOT_SERVING, every
/// decision by the store failure policy) instead of exiting, and becomes ready — deciding from
/// Redis — once Redis answers, without a restart.
#[test]
fn redis_down_at_boot_serves_unready_then_ready() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let port = common::free_port();
    let (dir, path) = common::plans_dir(config());
    let mut p = Plangate::start(
        &path,
        &[
            "--store",
            &format!("redis://127.0.0.1:{port}"),
            "--store-failure",
            "closed",
        ],
        dir.path().join("plangate.log"),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let health = |grpc: u16| {
        rt.block_on(async {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            HealthClient::new(ch)
                .check(HealthCheckRequest {
                    service: "envoy.service.auth.v3.Authorization".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status
        })
    };
    let decide = |grpc: u16| {
        rt.block_on(async {
            let mut c = authz_client(grpc).await;
            let r = c.check(check_request(KEY, "/pets")).await.unwrap();
            check_status(&r.into_inner())
        })
    };
    let ready = common::http(p.admin, "GET", "/readyz", &[]);
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        ready.body.contains("not answered since start"),
        "{}",
        ready.body
    );
    assert_eq!(health(p.grpc), 2, "NOT_SERVING");
    assert_eq!(decide(p.grpc), 503, "the failure policy (closed) answers");
    // Redis comes up where the URL points.
    let r = RedisServer::start_on(port, &[]);
    common::wait_until("ready once Redis answers", || {
        common::http(p.admin, "GET", "/readyz", &[]).status == 200
    });
    common::wait_until("gRPC health SERVING", || health(p.grpc) == 1);
    assert_eq!(decide(p.grpc), 200);
    assert!(
        r.command(&["DBSIZE"])
            .trim_start_matches(':')
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
            > 0,
        "the decision counted in Redis"
    );
    assert!(p.alive(), "the same process");
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(log.contains("serving unready"), "{log}");
    assert!(log.contains("the counter store answers: ready"), "{log}");
}
