//! `plangate bench`, the load generator: drives Check or ShouldRateLimit over gRPC with
//! N connections × M concurrent calls, for a duration or a count, over K distinct keys, and
//! reports throughput and latency percentiles (HdrHistogram). With a baseline target it runs
//! both in alternating rounds and reports plangate's throughput as a ratio to the baseline's,
//! measured in the same run. A client of the service, not part of it: it lives in the CLI.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use hdrhistogram::Histogram;
use plangate::clock::Stopwatch;
use serde::Serialize;
use tonic::transport::Channel;

use super::error::CliError;
use super::out::Out;
use super::runtime;

/// Arguments of `plangate bench`.
#[derive(clap::Args)]
pub struct Args {
    /// plangate's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    target: String,
    /// A `plangate-baseline` address to compare with (the empty handler).
    #[arg(long)]
    baseline: Option<String>,
    #[arg(long, value_enum, default_value = "check")]
    api: Api,
    /// gRPC connections (HTTP/2).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Concurrent calls per connection.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stop each run after this many requests instead.
    #[arg(long)]
    requests: Option<u64>,
    /// Offer this many requests per second in all, paced (default: as many as answered).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of unmeasured warm-up per run.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Distinct keys (`bench-key-%012d`, as scripts/gen-keys.py writes them).
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Alternating rounds (baseline, target) when comparing.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value = "petstore")]
    api_name: String,
    #[arg(long, default_value = "prod")]
    stage: String,
    #[arg(long, default_value = "/pets")]
    path: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `plangate bench`.
pub fn run(a: Args) -> Result<ExitCode, CliError> {
    let o = BenchOptions {
        api: a.api,
        connections: a.connections,
        concurrency: a.concurrency,
        duration: runtime::seconds("--duration", a.duration)?,
        requests: a.requests,
        rate: a.rate,
        warmup: runtime::seconds("--warmup", a.warmup)?,
        keys: a.keys,
        api_name: a.api_name,
        stage: a.stage,
        path: a.path,
    };
    let rt = runtime::multi_thread()?;
    let mut out = Out::stdout();
    match a.baseline {
        None => {
            let r = rt.block_on(load(&a.target, &o)).map_err(CliError::Bench)?;
            if a.json {
                out.line(serde_json::to_string_pretty(&r)?);
            } else {
                out.line(r.line());
            }
        }
        Some(b) => {
            let c = rt
                .block_on(compare(&b, &a.target, &o, a.rounds))
                .map_err(CliError::Bench)?;
            if a.json {
                out.line(serde_json::to_string_pretty(&c)?);
            } else {
                for (i, (b, t)) in c.rounds.iter().enumerate() {
                    out.line(format!("round {}: baseline {}", i + 1, b.line()));
                    out.line(format!("round {}: plangate {}", i + 1, t.line()));
                }
                out.line(format!(
                    "median: baseline {:.0} req/s, plangate {:.0} req/s, ratio {:.3}",
                    c.baseline_rps_median, c.target_rps_median, c.ratio
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Which API to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    Check,
    Rls,
}

/// How to load.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub api: Api,
    pub connections: usize,
    pub concurrency: usize,
    /// Run for this long (unless `requests` is set).
    pub duration: Duration,
    /// Stop after this many requests in all.
    pub requests: Option<u64>,
    pub warmup: Duration,
    /// Requests per second offered in all (paced per worker); `None`: closed loop.
    pub rate: Option<f64>,
    /// Keys `bench-key-000000000000` … (as `scripts/gen-keys.py` writes them).
    pub keys: usize,
    pub api_name: String,
    pub stage: String,
    pub path: String,
}

/// One run's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub target: String,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub latency_us: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

pub use plangate::baseline::key_value;

fn check_request(o: &BenchOptions, key: &str) -> CheckRequest {
    plangate::baseline::check_request(&o.api_name, &o.stage, &o.path, key)
}

fn rls_request(o: &BenchOptions, key: &str) -> RateLimitRequest {
    plangate::baseline::rls_request(&o.api_name, &o.stage, &o.path, key)
}

/// Loads `target` (`host:port`) once.
pub async fn load(target: &str, o: &BenchOptions) -> Result<RunResult, String> {
    let mut channels = Vec::with_capacity(o.connections);
    for _ in 0..o.connections.max(1) {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("{target}: {e}"))?;
        channels.push(ch);
    }
    let keys: Arc<Vec<String>> = Arc::new((0..o.keys.max(1)).map(key_value).collect());
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (c, ch) in channels.iter().enumerate() {
        for m in 0..o.concurrency.max(1) {
            let (ch, o, keys) = (ch.clone(), o.clone(), keys.clone());
            let (measuring, stop, issued) = (measuring.clone(), stop.clone(), issued.clone());
            let offset = c * o.concurrency + m;
            tasks.push(tokio::spawn(async move {
                worker(ch, o, keys, offset, measuring, stop, issued).await
            }));
        }
    }
    tokio::time::sleep(o.warmup).await;
    issued.store(0, Ordering::SeqCst);
    measuring.store(true, Ordering::SeqCst);
    let started = Stopwatch::start();
    match o.requests {
        Some(n) => {
            while issued.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        None => tokio::time::sleep(o.duration).await,
    }
    stop.store(true, Ordering::SeqCst);
    let seconds = started.seconds();
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let (mut requests, mut errors) = (0, 0);
    for t in tasks {
        let (h, r, e) = t.await.map_err(|e| e.to_string())?;
        hist.add(&h).map_err(|e| e.to_string())?;
        requests += r;
        errors += e;
    }
    Ok(RunResult {
        target: target.to_owned(),
        requests,
        errors,
        seconds,
        requests_per_second: requests as f64 / seconds,
        latency_us: Percentiles {
            p50: hist.value_at_quantile(0.5),
            p90: hist.value_at_quantile(0.9),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
        },
    })
}

async fn worker(
    ch: Channel,
    o: BenchOptions,
    keys: Arc<Vec<String>>,
    offset: usize,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    issued: Arc<AtomicU64>,
) -> (Histogram<u64>, u64, u64) {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut authz = AuthorizationClient::new(ch.clone());
    let mut rls = RateLimitServiceClient::new(ch);
    let (mut requests, mut errors) = (0u64, 0u64);
    let mut i = offset;
    // Paced: each of the workers offers its share of the rate.
    let mut pace = o.rate.filter(|r| *r > 0.0).map(|r| {
        let workers = (o.connections.max(1) * o.concurrency.max(1)) as f64;
        let mut t = tokio::time::interval(Duration::from_secs_f64(workers / r));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    while !stop.load(Ordering::Relaxed) {
        if let Some(t) = pace.as_mut() {
            t.tick().await;
        }
        let key = &keys[i % keys.len()];
        i = i.wrapping_add(7919);
        let t = Stopwatch::start();
        let ok = match o.api {
            Api::Check => authz.check(check_request(&o, key)).await.is_ok(),
            Api::Rls => rls.should_rate_limit(rls_request(&o, key)).await.is_ok(),
        };
        if measuring.load(Ordering::Relaxed) {
            let us = ((t.seconds() * 1e6) as u64).max(1);
            let _ = hist.record(us.min(60_000_000));
            requests += 1;
            if !ok {
                errors += 1;
            }
            issued.fetch_add(1, Ordering::Relaxed);
        }
    }
    (hist, requests, errors)
}

/// Several alternating rounds against the baseline and the target.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub api: Api,
    pub rounds: Vec<(RunResult, RunResult)>,
    pub baseline_rps_median: f64,
    pub target_rps_median: f64,
    /// Target throughput / baseline throughput (medians).
    pub ratio: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Runs baseline and target alternately, `rounds` times each.
pub async fn compare(
    baseline: &str,
    target: &str,
    o: &BenchOptions,
    rounds: usize,
) -> Result<Comparison, String> {
    let mut out = Vec::new();
    for _ in 0..rounds.max(1) {
        let b = load(baseline, o).await?;
        let t = load(target, o).await?;
        out.push((b, t));
    }
    let b = median(out.iter().map(|r| r.0.requests_per_second).collect());
    let t = median(out.iter().map(|r| r.1.requests_per_second).collect());
    Ok(Comparison {
        api: o.api,
        rounds: out,
        baseline_rps_median: b,
        target_rps_median: t,
        ratio: if b > 0.0 { t / b } else { 0.0 },
    })
}

impl RunResult {
    pub fn line(&self) -> String {
        let l = &self.latency_us;
        format!(
            "{:<22} {:>10.0} req/s  p50 {:>6} µs  p90 {:>6} µs  p99 {:>6} µs  p99.9 {:>6} µs  errors {}",
            self.target, self.requests_per_second, l.p50, l.p90, l.p99, l.p999, self.errors
        )
    }
}
