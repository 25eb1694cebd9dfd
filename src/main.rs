//! The `plangate` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use plangate::clock::{Clock, FakeClock, SystemClock, parse_rfc3339};
use plangate::config;
use plangate::engine::{Engine, Request};
use plangate::store::MemoryStore;

#[derive(Parser)]
#[command(
    name = "plangate",
    version,
    about = "Amazon API Gateway usage plans for Envoy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration file: exit 0, or print every error and exit 1.
    Validate {
        /// The configuration file.
        file: PathBuf,
    },
    /// Explain the decision for a request, limit by limit, as one JSON object per attempt.
    Check {
        #[arg(long)]
        config: PathBuf,
        /// The API key value presented.
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        api: Option<String>,
        #[arg(long)]
        stage: Option<String>,
        /// HTTP verb.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Request path (a query string is ignored).
        #[arg(long, default_value = "/")]
        path: String,
        /// Units to charge per attempt.
        #[arg(long, default_value_t = 1)]
        hits: u64,
        /// Decide at this time (RFC 3339) instead of now; the clock stays there.
        #[arg(long)]
        at: Option<String>,
        /// Attempts to make, one after the other, on the same counters.
        #[arg(long, default_value_t = 1)]
        repeat: u64,
    },
    /// Serve ext_authz (and gRPC health) to Envoy.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// gRPC listen address.
        #[arg(long, default_value = "0.0.0.0:50051")]
        grpc_addr: std::net::SocketAddr,
        /// Admin HTTP listen address (`/healthz`, `/readyz`).
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_addr: std::net::SocketAddr,
        /// Bearer token for the admin `/v1/*` endpoints (or PLANGATE_ADMIN_TOKEN).
        #[arg(long, env = "PLANGATE_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Do not watch the configuration files (reload on SIGHUP or POST /v1/reload only).
        #[arg(long)]
        no_watch: bool,
        /// Seconds file events settle before a reload.
        #[arg(long, default_value_t = 1.0)]
        watch_debounce: f64,
        /// Where counters live: `memory` (default), or `redis://host:port[/db]` to share them
        /// between replicas.
        #[arg(long, default_value = "memory")]
        store: String,
        /// Redis key prefix (and Cluster hash tag).
        #[arg(long, default_value = "plangate")]
        store_prefix: String,
        /// Bound on one Redis operation, in milliseconds.
        #[arg(long, default_value_t = 50)]
        store_timeout_ms: u64,
        /// When the store fails: `open` admits without limits, `closed` refuses with 503.
        #[arg(long, value_enum, default_value = "open")]
        store_failure: StoreFailure,
        /// Memory store: where quota counters and daily usage are persisted.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Memory store: keep counters in memory only (a restart forgets them).
        #[arg(long)]
        no_persist: bool,
        /// Seconds between writes of the persisted counters: the most a crash can lose.
        #[arg(long, default_value_t = 1.0)]
        flush_interval: f64,
        /// Days of daily usage kept for usage reports.
        #[arg(long, default_value_t = plangate::engine::DEFAULT_USAGE_RETENTION_DAYS)]
        usage_retention_days: u32,
        /// Seconds in-flight calls get to finish after SIGTERM/SIGINT.
        #[arg(long, default_value_t = 5.0)]
        shutdown_grace: f64,
    },
    /// Print a usage plan's daily usage per key (AWS GetUsage) from a running plangate, as a
    /// table or CSV (for billing exports).
    Usage {
        /// The admin address of a running plangate.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: String,
        #[arg(long)]
        plan: String,
        /// First day, YYYY-MM-DD.
        #[arg(long)]
        start: String,
        /// Last day, YYYY-MM-DD (inclusive).
        #[arg(long)]
        end: String,
        /// Only this key id.
        #[arg(long)]
        key_id: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: UsageFormat,
        /// Bearer token of the admin API (or PLANGATE_ADMIN_TOKEN).
        #[arg(long, env = "PLANGATE_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Load a running plangate over gRPC (Check or ShouldRateLimit) and report throughput and
    /// latency; with --baseline, also the ratio to a baseline server measured in the same run.
    Bench {
        /// plangate's gRPC address.
        #[arg(long, default_value = "127.0.0.1:50051")]
        target: String,
        /// A `plangate baseline` address to compare with.
        #[arg(long)]
        baseline: Option<String>,
        #[arg(long, value_enum, default_value = "check")]
        api: BenchApi,
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
    },
    /// Serve ext_authz and RLS answering OK without any engine: the transport's cost, for
    /// `plangate bench --baseline`.
    Baseline {
        #[arg(long, default_value = "127.0.0.1:50052")]
        grpc_addr: std::net::SocketAddr,
    },
    /// Print the SHA-256 of a key value, for `value_sha256` (`-` reads the value from stdin).
    HashKey { value: String },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchApi {
    Check,
    Rls,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum UsageFormat {
    Table,
    Csv,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StoreFailure {
    Open,
    Closed,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLANGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { file } => Ok(validate(&file)),
        Command::Check {
            config,
            key,
            api,
            stage,
            method,
            path,
            hits,
            at,
            repeat,
        } => {
            let compiled = match config::load_file(&config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let clock: Arc<dyn Clock> = match at {
                Some(t) => Arc::new(FakeClock::new(
                    parse_rfc3339(&t)
                        .map_err(anyhow::Error::msg)
                        .context("--at")?,
                )),
                None => Arc::new(SystemClock),
            };
            let engine = Engine::new(compiled.snapshot, Arc::new(MemoryStore::new()), clock);
            let path = path.split_once('?').map_or(path.as_str(), |(p, _)| p);
            let req = Request {
                api: api.as_deref(),
                stage: stage.as_deref(),
                method: &method,
                path,
                key: key.as_deref(),
                hits,
            };
            let rt = tokio::runtime::Builder::new_current_thread().build()?;
            for attempt in 1..=repeat {
                let d = rt.block_on(engine.decide(&req));
                let mut v = d.explain();
                if let serde_json::Value::Object(m) = &mut v {
                    m.insert("attempt".into(), attempt.into());
                }
                println!("{v}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            config,
            grpc_addr,
            admin_addr,
            admin_token,
            no_watch,
            watch_debounce,
            store,
            store_prefix,
            store_timeout_ms,
            store_failure,
            data_dir,
            no_persist,
            flush_interval,
            usage_retention_days,
            shutdown_grace,
        } => {
            let flush_interval = std::time::Duration::try_from_secs_f64(flush_interval)
                .context("--flush-interval")?;
            let redis = match store.as_str() {
                "memory" => None,
                url if url.starts_with("redis://") || url.starts_with("rediss://") => {
                    Some(plangate::store::RedisOptions {
                        url: url.to_owned(),
                        prefix: store_prefix,
                        timeout: std::time::Duration::from_millis(store_timeout_ms.max(1)),
                    })
                }
                other => anyhow::bail!("--store: `{other}` is neither `memory` nor a redis:// URL"),
            };
            let watch_debounce = std::time::Duration::try_from_secs_f64(watch_debounce)
                .context("--watch-debounce")?;
            let shutdown_grace = std::time::Duration::try_from_secs_f64(shutdown_grace)
                .context("--shutdown-grace")?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            match rt.block_on(plangate::server::serve(plangate::server::ServeOptions {
                config,
                grpc_addr,
                admin_addr,
                admin_token,
                watch: !no_watch,
                redis,
                data_dir: (!no_persist).then_some(data_dir),
                flush_interval,
                usage_retention_days,
                store_failure: match store_failure {
                    StoreFailure::Open => plangate::engine::FailurePolicy::Open,
                    StoreFailure::Closed => plangate::engine::FailurePolicy::Closed,
                },
                watch_debounce,
                shutdown_grace,
            })) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(plangate::server::ServeError::Config(errors)) => {
                    eprintln!("{errors}");
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Usage {
            admin,
            plan,
            start,
            end,
            key_id,
            format,
            token,
        } => {
            let report = plangate::usage::fetch_report(
                &admin,
                &plan,
                &start,
                &end,
                key_id.as_deref(),
                token.as_deref(),
            )
            .map_err(anyhow::Error::msg)?;
            match format {
                UsageFormat::Table => print!("{}", report.to_table()),
                UsageFormat::Csv => print!("{}", report.to_csv()),
                UsageFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            target,
            baseline,
            api,
            connections,
            concurrency,
            duration,
            requests,
            warmup,
            keys,
            rounds,
            api_name,
            stage,
            path,
            json,
        } => {
            use plangate::bench;
            let o = bench::BenchOptions {
                api: match api {
                    BenchApi::Check => bench::Api::Check,
                    BenchApi::Rls => bench::Api::Rls,
                },
                connections,
                concurrency,
                duration: std::time::Duration::try_from_secs_f64(duration).context("--duration")?,
                requests,
                warmup: std::time::Duration::try_from_secs_f64(warmup).context("--warmup")?,
                keys,
                api_name,
                stage,
                path,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            match baseline {
                None => {
                    let r = rt
                        .block_on(bench::run(&target, &o))
                        .map_err(anyhow::Error::msg)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&r)?);
                    } else {
                        println!("{}", r.line());
                    }
                }
                Some(b) => {
                    let c = rt
                        .block_on(bench::compare(&b, &target, &o, rounds))
                        .map_err(anyhow::Error::msg)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&c)?);
                    } else {
                        for (i, (b, t)) in c.rounds.iter().enumerate() {
                            println!("round {}: baseline {}", i + 1, b.line());
                            println!("round {}: plangate {}", i + 1, t.line());
                        }
                        println!(
                            "median: baseline {:.0} req/s, plangate {:.0} req/s, ratio {:.3}",
                            c.baseline_rps_median, c.target_rps_median, c.ratio
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Baseline { grpc_addr } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let l = tokio::net::TcpListener::bind(grpc_addr).await?;
                tracing::info!(addr = %grpc_addr, "baseline gRPC server (answers OK, no engine)");
                plangate::grpc::baseline::serve(l, plangate::server::shutdown_signal()).await?;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::HashKey { value } => {
            let value = if value == "-" {
                let mut s = String::new();
                std::io::stdin().read_line(&mut s)?;
                s.trim_end_matches(['\n', '\r']).to_owned()
            } else {
                value
            };
            println!("{}", hex::encode(plangate::snapshot::hash_key(&value)));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn validate(file: &std::path::Path) -> ExitCode {
    match config::load_file(file) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            let s = &c.snapshot;
            let stages: usize = s.apis.values().map(|a| a.stages.len()).sum();
            println!(
                "{}: OK ({} APIs, {} stages, {} usage plans, {} API keys)",
                file.display(),
                s.apis.len(),
                stages,
                s.plans.len(),
                s.keys.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            println!("{errors}");
            println!("{}: {} error(s)", file.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}
