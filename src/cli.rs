//! The command line: one file per command under `cli/`, each with its `Args` and `run`. The
//! service itself is the `plangate` library; commands only read flags, call it and print.

use plangate::config::load::{
    DEFAULT_MAX_CONFIG_BYTES as MAX_BYTES, DEFAULT_MAX_FLOW_DEPTH as MAX_DEPTH,
};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin;
mod bench;
mod bench_catalog;
mod catalog;
mod check;
mod error;
mod explain;
mod hash_key;
mod health;
mod import_aws;
mod out;
mod request;
mod runtime;
mod serve;
mod usage;
mod validate;
mod watch;

/// Amazon API Gateway usage plans for Envoy.
#[derive(Parser)]
#[command(name = "plangate", version)]
pub struct Cli {
    /// Log lines as `text` (coloured on a terminal only) or `json` (one object per line).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "PLANGATE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    /// The largest configuration file read, in bytes (checked before reading it).
    #[arg(long, global = true, env = "PLANGATE_MAX_CONFIG_BYTES", default_value_t = MAX_BYTES)]
    max_config_bytes: u64,
    /// The deepest nesting of YAML flow collections (`[`, `{`) accepted (checked before
    /// parsing).
    #[arg(long, global = true, env = "PLANGATE_MAX_CONFIG_DEPTH", default_value_t = MAX_DEPTH)]
    max_config_depth: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration file: exit 0, or print every error and exit 1.
    Validate(validate::Args),
    /// Import an Amazon API Gateway export (the AWS CLI's JSON, one command per file) as
    /// OUT/plans.yaml: APIs, stages, methods, usage plans, keys (values as SHA-256 only).
    ImportAws(import_aws::Args),
    /// Explain the decision for a request, limit by limit, as one JSON object per attempt (local:
    /// the file, a fresh store).
    Check(check::Args),
    /// Explain the decision a running plangate would make for a request, on its live counters,
    /// charging nothing (the management API's Explain); the same JSON as `check`.
    Explain(explain::Args),
    /// Serve ext_authz, RLS and gRPC health to Envoy, and the admin HTTP API.
    Serve(Box<serve::Args>),
    /// Print a usage plan's daily usage per key (AWS GetUsage) from a running plangate, as a
    /// table or CSV (for billing exports).
    Usage(usage::Args),
    /// Load a running plangate over gRPC (Check or ShouldRateLimit) and report throughput and
    /// latency; with --baseline, also the ratio to a baseline server measured in the same run.
    Bench(bench::Args),
    /// Measure the runtime catalog of two running replicas on one store: keys created per
    /// second on one, and how long the other takes to know a new key (p50, p99).
    BenchCatalog(bench_catalog::Args),
    /// Tail a running plangate's decisions, one JSON object per line (lossy: a slow reader is
    /// told how many it missed, never slows plangate).
    Watch(watch::Args),
    /// Ask a running plangate whether it is alive (or, with --ready, ready): exit 0 or 1, for
    /// container HEALTHCHECKs and exec probes.
    Health(health::Args),
    /// Create, list, enable, disable and delete API keys of a running plangate's runtime catalog
    /// (its management API; the same operations as AWS's CLI against its REST face).
    Keys(catalog::KeysArgs),
    /// Create, list, change and delete usage plans of a running plangate's runtime catalog, and
    /// add keys to plans or take them out.
    Plans(catalog::PlansArgs),
    /// Write the configuration in force and the runtime catalog of a running plangate as one
    /// configuration file (key values as SHA-256 only): from API-managed to files.
    Export(catalog::ExportArgs),
    /// Print the SHA-256 of a key value, for `value_sha256` (`-` reads the value from stdin).
    HashKey(hash_key::Args),
}

impl Cli {
    /// Logs to stderr, filtered by `PLANGATE_LOG` (default `warn,plangate=info`: plangate's own
    /// events at info, its dependencies' — h2, hyper, tonic — only when they warn; debug
    /// plangate with `PLANGATE_LOG=plangate=debug`).
    pub fn init_logging(&self) {
        use std::io::IsTerminal;
        let filter = tracing_subscriber::EnvFilter::try_from_env("PLANGATE_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,plangate=info"));
        let fmt = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
            LogFormat::Json => fmt
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .init(),
        }
    }

    /// Runs the command. Exit codes: 0 success, 1 a rejected configuration, 2 any other error.
    pub fn run(self) -> ExitCode {
        plangate::config::load::set_bounds(self.max_config_bytes, self.max_config_depth);
        let result = match self.command {
            Command::Validate(a) => validate::run(a),
            Command::ImportAws(a) => import_aws::run(a),
            Command::Check(a) => check::run(a),
            Command::Explain(a) => explain::run(a),
            Command::Serve(a) => serve::run(*a),
            Command::Usage(a) => usage::run(a),
            Command::Bench(a) => bench::run(a),
            Command::BenchCatalog(a) => bench_catalog::run(a),
            Command::HashKey(a) => hash_key::run(a),
            Command::Health(a) => health::run(a),
            Command::Watch(a) => watch::run(a),
            Command::Keys(a) => catalog::run_keys(a),
            Command::Plans(a) => catalog::run_plans(a),
            Command::Export(a) => catalog::run_export(a),
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        }
    }
}
