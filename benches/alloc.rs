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
//! (`scripts/bench-instructions.sh`). With `--sites` as well, each measured allocation's stack
//! is captured, and the allocations per call are printed by the crate that asked for them
//! (`scripts/bench-attribution.sh`).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;

/// Counts the allocations of threads marked as the server's.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// Whether each counted allocation's stack is captured (`--sites`, in the measured window).
static CAPTURE: AtomicBool = AtomicBool::new(false);
/// The captured stacks, with each allocation's size.
static SITES: parking_lot::Mutex<Vec<(usize, std::backtrace::Backtrace)>> =
    parking_lot::Mutex::new(Vec::new());

thread_local! {
    static SERVER: Cell<bool> = const { Cell::new(false) };
    /// Set while a stack is captured: its own allocations are neither counted nor captured.
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
}

fn count(size: usize) {
    if !SERVER.try_with(Cell::get).unwrap_or(false) || CAPTURING.try_with(Cell::get).unwrap_or(true)
    {
        return;
    }
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
    if CAPTURE.load(Ordering::Relaxed) {
        CAPTURING.with(|c| c.set(true));
        let trace = std::backtrace::Backtrace::force_capture();
        SITES.lock().push((size, trace));
        CAPTURING.with(|c| c.set(false));
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

async fn measure(port: u16, api: &str, calls: usize, keys: usize, sites: bool) -> PerCall {
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
    CAPTURE.store(sites, Ordering::Relaxed);
    for i in 0..calls {
        one(calls + i).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    CAPTURE.store(false, Ordering::Relaxed);
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
    let mut sites = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--calls" => calls = args.next().and_then(|v| v.parse().ok()).unwrap_or(calls),
            "--keys" => keys = args.next().and_then(|v| v.parse().ok()).unwrap_or(keys),
            "--json" => json = true,
            "--only" => only = args.next().unwrap_or_default(),
            "--sites" => sites = true,
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
        let r = client.block_on(measure(port, api, calls, keys, sites));
        println!("{server} {api}: {:.1} allocations per call", r.allocations);
        if sites {
            print_sites(calls);
        }
        return;
    }
    let mut rows = Vec::new();
    for api in ["check", "rls"] {
        let base = client.block_on(measure(baseline_port, api, calls, keys, false));
        let ours = client.block_on(measure(plangate_port, api, calls, keys, false));
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

/// The crate of a frame, from its source path: a registry crate's name without its version,
/// the standard library's `std`, this package's `plangate` (the bench itself `alloc_bench`).
fn crate_of(path: &str) -> String {
    // The standard library, and the crates it vendors (its hashbrown).
    if path.starts_with("/rustc/") || path.starts_with("/rust/deps/") {
        return "std".into();
    }
    if path.starts_with("./benches/") {
        return "alloc_bench".into();
    }
    if path.starts_with("./src/") {
        return "plangate".into();
    }
    // …/index.crates.io-<hash>/<name>-<version>/src/…
    let Some((_, rest)) = path.split_once("/index.crates.io-") else {
        return "(unknown)".into();
    };
    let dir = rest.split('/').nth(1).unwrap_or(rest);
    // The name ends at the first dash before a digit: `hyper-util-0.1.3`, `foo-1.0.0-rc.1`.
    let end = dir
        .as_bytes()
        .windows(2)
        .position(|w| w[0] == b'-' && w[1].is_ascii_digit())
        .unwrap_or(dir.len());
    dir[..end].into()
}

/// Crates that allocate on behalf of their caller: an allocation belongs to the first frame
/// outside them.
const CONTAINERS: &[&str] = &[
    "std",
    "alloc_bench",
    "bytes",
    "hashbrown",
    "smallvec",
    "indexmap",
    "slab",
    "mimalloc",
];

/// `name<…>` as `name`: a function's name without its (often very long) type parameters.
fn without_generics(name: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    let mut last = ' ';
    for c in name.chars() {
        match c {
            '<' => depth += 1,
            // `fn(A) -> B` inside the parameters closes nothing.
            '>' if last != '-' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
        last = c;
    }
    out
}

/// A captured stack's frames as (function, source path and line), innermost first.
fn frames(trace: &str) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for line in trace.lines() {
        let line = line.trim_start();
        if let Some(at) = line.strip_prefix("at ") {
            if let Some(last) = out.last_mut() {
                last.1 = at;
            }
        } else if let Some((n, function)) = line.split_once(": ")
            && n.parse::<u32>().is_ok()
        {
            out.push((function.trim(), ""));
        }
    }
    out
}

/// Prints the captured allocations per call, by the crate (and function) that asked for them.
fn print_sites(calls: usize) {
    let sites = std::mem::take(&mut *SITES.lock());
    let mut by_function: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut by_crate: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for (size, trace) in &sites {
        let text = trace.to_string();
        let (krate, function) = frames(&text)
            .into_iter()
            .map(|(f, at)| (crate_of(at), f, at))
            // A frame without a source line (no line tables) says nothing of its crate.
            .find(|(c, _, at)| !at.is_empty() && !CONTAINERS.contains(&c.as_str()))
            .map(|(c, f, at)| {
                // The file, without its line and column: one row per function.
                let file = at.split(':').next().unwrap_or(at);
                let file = file.rsplit_once("/src/").map_or(file, |(_, f)| f);
                (c.clone(), format!("{c}: {} ({file})", without_generics(f)))
            })
            .unwrap_or_else(|| ("(unknown)".into(), "(unknown)".into()));
        for (map, name) in [(&mut by_crate, krate), (&mut by_function, function)] {
            let e = map.entry(name).or_default();
            e.0 += 1;
            e.1 += *size as u64;
        }
    }
    print_table("crate", by_crate, calls, |name| name.to_owned());
    println!();
    print_table("function that asked", by_function, calls, |name| {
        format!("`{name}`")
    });
}

/// Rows of (allocations, bytes) per call, most allocations first; under 0.01 a call left out.
fn print_table(
    what: &str,
    rows: std::collections::BTreeMap<String, (u64, u64)>,
    calls: usize,
    show: impl Fn(&str) -> String,
) {
    let per = |n: u64| n as f64 / calls as f64;
    println!("| {what} | allocations per call | bytes per call |");
    println!("|---|---|---|");
    let mut rows: Vec<_> = rows.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.0));
    for (name, (n, bytes)) in rows {
        if per(n) >= 0.01 {
            println!("| {} | {:.2} | {:.0} |", show(&name), per(n), per(bytes));
        }
    }
}
