//! `plangate serve` as a process: gRPC health reports SERVING once the config is loaded, a bad
//! config exits 1 listing its errors, SIGTERM stops it cleanly.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use plangate::clock::Stopwatch;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn example() -> std::path::PathBuf {
    common::root().join("envoy/plans.example.yaml")
}

#[tokio::test]
async fn health_serving_then_clean_shutdown_on_sigterm() {
    let port = common::free_port();
    let admin = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args(["serve", "--no-persist", "--config"])
        .arg(example())
        .args(["--grpc-addr", &format!("127.0.0.1:{port}")])
        .args(["--shutdown-grace", "1"])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waited = Stopwatch::start();
    let mut client = loop {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        match endpoint.connect().await {
            Ok(c) => break HealthClient::new(c),
            Err(_) if waited.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("plangate did not come up: {e}"),
        }
    };
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let r = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, 1, "{service:?} not SERVING"); // 1 = SERVING
    }
    for path in ["/healthz", "/readyz"] {
        let r = common::http(admin, "GET", path, &[]);
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
    assert!(
        common::http(admin, "GET", "/readyz", &[])
            .body
            .contains("3 API keys")
    );
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("shutdown signal received"), "{err}");
}

#[test]
fn bad_config_exits_1_with_every_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args(["serve", "--no-persist", "--config"])
        .arg(common::root().join("tests/fixtures/invalid/many_errors.yaml"))
        .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("many_errors.yaml:").count(), 4, "{err}");
}

/// A 4 MiB RLS request of two million empty descriptors is refused from its length prefix,
/// before it is decoded, and the server answers normally after it.
#[tokio::test]
async fn an_oversized_request_is_refused_before_decoding() {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
    use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;

    let (dir, config) = common::plans_dir(common::MINIMAL);
    let p = common::Plangate::start(&config, &[], dir.path().join("plangate.log"));
    let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", p.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = RateLimitServiceClient::new(ch).max_encoding_message_size(64 << 20);
    let huge = RateLimitRequest {
        domain: "plangate".into(),
        descriptors: vec![RateLimitDescriptor::default(); 2_100_000],
        hits_addend: 1,
    };
    let err = c.should_rate_limit(huge).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    // Still serving.
    let ok = c
        .should_rate_limit(RateLimitRequest {
            domain: "plangate".into(),
            descriptors: vec![RateLimitDescriptor::default()],
            hits_addend: 1,
        })
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}

/// SIGTERM with a drain delay: at once gRPC health says NOT_SERVING and /readyz 503, while
/// requests are still answered; after the delay the server stops by itself, exit 0.
#[tokio::test]
async fn sigterm_drains_before_stopping() {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

    let dir = tempfile::tempdir().unwrap();
    let mut p = common::Plangate::start(
        &example(),
        &["--drain-delay", "3", "--shutdown-grace", "1"],
        dir.path().join("plangate.log"),
    );
    let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", p.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(ch.clone());
    let mut authz = AuthorizationClient::new(ch);
    let status = async |h: &mut HealthClient<tonic::transport::Channel>| {
        h.check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
    };
    assert_eq!(status(&mut health).await, 1);
    assert_eq!(common::http(p.admin, "GET", "/readyz", &[]).status, 200);

    Command::new("kill")
        .args(["-TERM", &p.pid().to_string()])
        .status()
        .unwrap();
    // Not ready at once (polled: the signal takes a moment to arrive)…
    let waited = Stopwatch::start();
    while common::http(p.admin, "GET", "/readyz", &[]).status != 503 {
        assert!(
            waited.elapsed() < Duration::from_secs(2),
            "/readyz still 200 while draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status(&mut health).await,
        2,
        "gRPC health NOT_SERVING while draining"
    ); // 2 = NOT_SERVING
    // …while requests are still answered (a denial for an unknown key is an answer).
    let r = authz
        .check(envoy_types::ext_authz::v3::pb::CheckRequest::default())
        .await;
    assert!(r.is_ok(), "a call during the drain failed: {r:?}");
    // Then it stops by itself, cleanly.
    let waited = Stopwatch::start();
    while p.alive() {
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "did not stop after the drain"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(p.wait().success());
}

/// A corrupt counters file is a clear refusal to start (redb panics on some: not a crash, not a
/// silent reset); `--data-recover` moves it aside and starts empty, loudly; a 0-byte file is
/// started from with a warning.
#[test]
fn a_corrupt_counters_file_is_refused_or_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        // A real counters file, then 8 KiB of noise inside it.
        let p = plangate::store::persist::Persistence::open(&data).unwrap();
        drop(p);
    }
    let file = data.join("counters.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    if bytes.len() < 4096 + 8192 {
        bytes.resize(4096 + 8192, 0);
    }
    let mut x: u32 = 0x9e37_79b9;
    for b in &mut bytes[4096..4096 + 8192] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    std::fs::write(&file, &bytes).unwrap();
    let serve = |extra: &[&str]| {
        let child = Command::new(env!("CARGO_BIN_EXE_plangate"))
            .args(["serve", "--config"])
            .arg(example())
            .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .args(extra)
            .env("PLANGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Started (or refused) within a few seconds; then stopped.
        std::thread::sleep(Duration::from_millis(1500));
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = serve(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("is corrupt") || stderr.contains("cannot be read"),
        "{stderr}"
    );
    assert!(stderr.contains("--data-recover"), "{stderr}");
    let (code, stderr) = serve(&["--data-recover"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("START FROM ZERO"), "{stderr}");
    let aside: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("counters.redb.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the bad file is kept aside");
    // A 0-byte file: a warning.
    std::fs::write(&file, b"").unwrap();
    let (_, stderr) = serve(&[]);
    assert!(stderr.contains("the counters file is empty"), "{stderr}");
}

/// A call stuck in the store is answered (CANCELLED) once `call_timeout` has passed,
/// instead of holding its stream (and memory) forever.
#[tokio::test]
async fn a_stuck_call_is_answered_when_its_time_is_up() {
    let c = plangate::config::load_str(
        &common::petstore(
            common::DEFAULTS,
            &[("prod", "{}")],
            &[("gold", "")],
            &[("k", "stuck-key-0123456789abcdefgh", "usage_plans: [gold]")],
        ),
        None,
        std::path::Path::new("."),
    )
    .unwrap();
    let engine = std::sync::Arc::new(plangate::engine::Engine::new(
        c.snapshot,
        std::sync::Arc::new(common::BrokenStore::Hung),
        std::sync::Arc::new(plangate::clock::FakeClock::new(common::T0)),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let limits = plangate::server::RequestLimits {
        call_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    tokio::spawn(plangate::server::run_with(
        engine,
        Default::default(),
        listener.into(),
        std::future::pending(),
        std::time::Duration::from_secs(1),
        limits,
        Default::default(),
    ));
    let mut client = common::authz_client(port).await;
    let call = client.check(common::check_request(
        "stuck-key-0123456789abcdefgh",
        "/pets",
    ));
    let answered = tokio::time::timeout(std::time::Duration::from_secs(5), call)
        .await
        .expect("the stuck call was not answered within 5 s");
    let status = answered.expect_err("a stuck call cannot have decided");
    // tonic's own answer for a server-side timeout: CANCELLED, "Timeout expired".
    assert_eq!(status.code(), tonic::Code::Cancelled, "{status:?}");
    assert!(status.message().contains("Timeout"), "{status:?}");
}

/// Check and ShouldRateLimit are answered ahead of tonic's router; any other method of their
/// services is UNIMPLEMENTED, as from tonic's generated servers, and the router still serves
/// the rest (gRPC health).
#[tokio::test]
async fn other_methods_of_the_envoy_services_are_unimplemented() {
    let c = plangate::config::load_str(
        &common::petstore(common::DEFAULTS, &[("prod", "{}")], &[], &[]),
        None,
        std::path::Path::new("."),
    )
    .unwrap();
    let engine = std::sync::Arc::new(common::engine_of(c.snapshot));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(plangate::server::run(
        engine,
        Default::default(),
        listener,
        std::future::pending(),
        std::time::Duration::from_secs(1),
    ));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for path in [
        "/envoy.service.auth.v3.Authorization/Nope",
        "/envoy.service.ratelimit.v3.RateLimitService/Nope",
        "/envoy.service.auth.v3.Authorization/check",
    ] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let status = grpc
            .unary::<(), (), _>(
                tonic::Request::new(()),
                path.parse().unwrap(),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .expect_err("no such method");
        assert_eq!(
            status.code(),
            tonic::Code::Unimplemented,
            "{path}: {status:?}"
        );
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let r = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("the router still serves health");
    assert_eq!(r.into_inner().status, 1, "SERVING");
}
