//! `plangate bench-catalog`: the runtime catalog under load, through the management API of two
//! running replicas on one store — how many keys one replica creates per second (CreateApiKey,
//! N concurrent callers), and how long a key made on the first takes to be known by the second
//! (create, then ask the second every millisecond; p50, p99, max). A client of the service, as
//! `plangate bench` is.

use std::process::ExitCode;
use std::time::Duration;

use hdrhistogram::Histogram;
use plangate::clock::Stopwatch;
use plangate::management::pb;
use serde_json::json;

use super::admin::{AdminArgs, status};
use super::error::CliError;
use super::out::Out;
use super::runtime;

#[derive(clap::Args)]
pub struct Args {
    /// The replica keys are created on.
    #[command(flatten)]
    admin: AdminArgs,
    /// A second replica on the same store (`host:port` of its admin address).
    #[arg(long)]
    follower: String,
    /// Keys created for the throughput.
    #[arg(long, default_value_t = 20_000)]
    creates: u64,
    /// Concurrent CreateApiKey calls.
    #[arg(long, default_value_t = 16)]
    concurrency: u64,
    /// Keys timed from creation on the first replica to being known on the second.
    #[arg(long, default_value_t = 200)]
    samples: u64,
}

/// Runs `plangate bench-catalog`.
pub fn run(a: Args) -> Result<ExitCode, CliError> {
    let report = runtime::multi_thread()?.block_on(measure(&a))?;
    Out::stdout().line(report);
    Ok(ExitCode::SUCCESS)
}

fn create(name: String) -> pb::CreateApiKeyRequest {
    pb::CreateApiKeyRequest {
        name,
        enabled: true,
        ..Default::default()
    }
}

async fn measure(a: &Args) -> Result<serde_json::Value, CliError> {
    // Throughput: `concurrency` callers, each on its own connection.
    let mut tasks = Vec::new();
    let per = a.creates.div_ceil(a.concurrency.max(1));
    let watch = Stopwatch::start();
    for t in 0..a.concurrency.max(1) {
        let mut admin = a.admin.connect().await?;
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let req = admin.request(create(format!("bench-{t}-{i}")));
                admin.client().create_api_key(req).await.map_err(status)?;
            }
            Ok::<_, CliError>(per)
        }));
    }
    let mut made = 0;
    for t in tasks {
        made += t
            .await
            .map_err(|e| CliError::Bench(format!("a caller failed: {e}")))??;
    }
    let seconds = watch.seconds();

    // Propagation: one key at a time, asked of the follower until it knows it.
    let mut leader = a.admin.connect().await?;
    // The follower: the same client settings at its own address.
    let mut follower = AdminArgs {
        admin: Some(a.follower.clone()),
        ..a.admin.clone()
    }
    .connect()
    .await?;
    let mut h = Histogram::<u64>::new(3).map_err(|e| CliError::Bench(e.to_string()))?;
    for i in 0..a.samples {
        // Spread the creates over the follower's poll interval (a create made right after each
        // answer would fall at the same point of it every time).
        tokio::time::sleep(Duration::from_millis(i * 37 % 211)).await;
        let req = leader.request(create(format!("propagation-{i}")));
        let id = leader
            .client()
            .create_api_key(req)
            .await
            .map_err(status)?
            .into_inner()
            .api_key
            .map(|k| k.id)
            .unwrap_or_default();
        let since = Stopwatch::start();
        loop {
            let req = follower.request(pb::GetApiKeyRequest { id: id.clone() });
            match follower.client().get_api_key(req).await {
                Ok(_) => break,
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(status(s)),
            }
            if since.elapsed() > Duration::from_secs(30) {
                return Err(CliError::Bench(format!(
                    "key {id} not known by the follower after 30 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _ = h.record(since.elapsed().as_micros() as u64);
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({
        "creates": made,
        "seconds": seconds,
        "creates_per_second": made as f64 / seconds,
        "concurrency": a.concurrency,
        "propagation_samples": a.samples,
        "propagation_ms": { "p50": ms(0.5), "p99": ms(0.99), "max": h.max() as f64 / 1000.0 },
    }))
}
