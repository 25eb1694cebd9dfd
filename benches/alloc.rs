//! Allocations per answer — a figure that does not move with the host (issue 28): a counting
//! global allocator around mimalloc (plangate's own) counts the allocations and bytes made by the
//! server's threads only, while a client on other threads makes calls one at a time over one
//! HTTP/2 connection, warm. Measured for plangate's Check and ShouldRateLimit (the configuration
//! of `scripts/gen-keys.py N --high-limits`: every call admitted and charged — stage, plan and
//! account throttles, the plan's quota — and counted in daily usage; 1,000 keys taken in turn)
//! and for the empty handler (`plangate::baseline`, a default tonic server) in the same process.
//!
//! `cargo bench --bench alloc` (or with `-- --calls N --keys K --json`). `--only plangate:check`
//! (or `baseline:rls`, …) measures that one server and call alone: under
//! `valgrind --tool=callgrind --separate-threads=yes`, the server thread's instructions per call
//! (`scripts/bench-instructions.sh`).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;

/// Counts the allocations of threads marked as the server's.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static SERVER: Cell<bool> = const { Cell::new(false) };
}

fn count(size: usize) {
    if SERVER.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to mimalloc unchanged; counting touches only atomics and a
// const-initialized thread-local (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A runtime whose threads are counted (the server's).
fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(|| SERVER.with(|s| s.set(true)))
        .enable_all()
        .build()
        .expect("a runtime")
}

fn key(i: usize) -> String {
    plangate::baseline::key_value(i)
}

fn check_request(key: &str) -> CheckRequest {
    plangate::baseline::check_request("petstore", "prod", "/pets", key)
}

fn rls_request(key: &str) -> RateLimitRequest {
    plangate::baseline::rls_request("petstore", "prod", "/pets", key)
}

/// Allocations and bytes per call of `calls` calls (after as many unmeasured), one at a time.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct PerCall {
    allocations: f64,
    bytes: f64,
}

async fn measure(port: u16, api: &str, calls: usize, keys: usize) -> PerCall {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("an address")
        .connect()
        .await
        .expect("the server answers");
    let mut authz = AuthorizationClient::new(ch.clone());
    let mut rls = RateLimitServiceClient::new(ch);
    let mut one = async |i: usize| match api {
        "check" => {
            let r = authz
                .check(check_request(&key(i % keys)))
                .await
                .expect("Check");
            let code = r.into_inner().status.map_or(0, |s| s.code);
            assert_eq!(code, 0, "every Check admitted");
        }
        _ => {
            let r = rls
                .should_rate_limit(rls_request(&key(i % keys)))
                .await
                .expect("ShouldRateLimit");
            assert_eq!(r.into_inner().overall_code, 1, "every call OK");
        }
    };
    for i in 0..calls {
        one(i).await;
    }
    // Whatever the server does after an answer (a connection's write) settles first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    for i in 0..calls {
        one(calls + i).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (a1, b1) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    PerCall {
        allocations: (a1 - a0) as f64 / calls as f64,
        bytes: (b1 - b0) as f64 / calls as f64,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    // `cargo bench` passes --bench; `cargo test` runs this too, without it: a short smoke run.
    let bench = std::env::args().any(|a| a == "--bench");
    let (mut calls, mut keys, mut json) =
        (if bench { 20_000usize } else { 500 }, 1_000usize, false);
    let mut only = String::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--calls" => calls = args.next().and_then(|v| v.parse().ok()).unwrap_or(calls),
            "--keys" => keys = args.next().and_then(|v| v.parse().ok()).unwrap_or(keys),
            "--json" => json = true,
            "--only" => only = args.next().unwrap_or_default(),
            _ => {} // cargo bench's own flags (--bench)
        }
    }
    // The configuration of scripts/gen-keys.py: every call admitted and charged.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let made = std::process::Command::new("python3")
        .arg(root.join("scripts/gen-keys.py"))
        .arg(keys.to_string())
        .arg(dir.path())
        .arg("--high-limits")
        .status()
        .expect("python3 scripts/gen-keys.py");
    assert!(made.success());
    let text = std::fs::read_to_string(dir.path().join("keys.yaml")).expect("keys.yaml");
    let compiled = plangate::config::load_str(&text, None, dir.path()).expect("a valid config");

    let servers = server_runtime();
    let (plangate_port, baseline_port) = servers.block_on(async {
        let store: Arc<dyn plangate::store::Store> = Arc::new(plangate::store::MemoryStore::new());
        let engine = Arc::new(plangate::engine::Engine::new(
            compiled.snapshot,
            store,
            Arc::new(plangate::clock::SystemClock),
        ));
        let metrics = Arc::new(plangate::metrics::Metrics::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let p = listener.local_addr().expect("an address").port();
        tokio::spawn(plangate::server::run(
            engine,
            metrics,
            listener,
            std::future::pending(),
            Duration::from_secs(1),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let b = listener.local_addr().expect("an address").port();
        tokio::spawn(plangate::baseline::serve(listener, std::future::pending()));
        (p, b)
    });
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    if let Some((server, api)) = only.split_once(':') {
        let port = if server == "plangate" {
            plangate_port
        } else {
            baseline_port
        };
        let r = client.block_on(measure(port, api, calls, keys));
        println!("{server} {api}: {:.1} allocations per call", r.allocations);
        return;
    }
    let mut rows = Vec::new();
    for api in ["check", "rls"] {
        let base = client.block_on(measure(baseline_port, api, calls, keys));
        let ours = client.block_on(measure(plangate_port, api, calls, keys));
        rows.push((api, ours, base));
    }
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(api, ours, base)| {
                serde_json::json!({ "api": api, "plangate": ours, "empty_handler": base })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    println!(
        "allocations and bytes allocated per call by the server ({calls} calls, {keys} keys, warm)"
    );
    println!(
        "| call | plangate: allocations | bytes | empty handler: allocations | bytes | plangate − empty: allocations | bytes |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (api, ours, base) in rows {
        let name = if api == "check" {
            "Check"
        } else {
            "ShouldRateLimit"
        };
        println!(
            "| {name} | {:.1} | {:.0} | {:.1} | {:.0} | **{:+.1}** | {:+.0} |",
            ours.allocations,
            ours.bytes,
            base.allocations,
            base.bytes,
            ours.allocations - base.allocations,
            ours.bytes - base.bytes
        );
    }
}
