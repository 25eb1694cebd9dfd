//! `plangate check`: the decision for one request, limit by limit, as one JSON object per
//! attempt, on a fresh in-memory store. Local: it reads the file, not a running plangate.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use plangate::clock::{Clock, FakeClock, SystemClock, parse_rfc3339};
use plangate::config;
use plangate::engine::{Engine, Request};
use plangate::store::MemoryStore;

use super::error::CliError;
use super::out::Out;
use super::runtime;

/// Arguments of `plangate check`.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
    /// The API key value presented.
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    api: Option<String>,
    #[arg(long)]
    stage: Option<String>,
    /// The host the request is sent to (`api.example.com`), for custom domain names; used
    /// when --api and --stage are not given.
    #[arg(long)]
    host: Option<String>,
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
}

/// Runs `plangate check`.
pub fn run(a: Args) -> Result<ExitCode, CliError> {
    let compiled = match config::load_file(&a.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let clock: Arc<dyn Clock> = match &a.at {
        Some(t) => Arc::new(FakeClock::new(parse_rfc3339(t).map_err(|reason| {
            CliError::Flag {
                flag: "--at",
                reason,
            }
        })?)),
        None => Arc::new(SystemClock),
    };
    let engine = Engine::new(compiled.snapshot, Arc::new(MemoryStore::new()), clock);
    let req = Request::new(&a.method, &a.path, a.key.as_deref(), a.hits)
        .stage(a.api.as_deref(), a.stage.as_deref())
        .host(a.host.as_deref());
    let rt = runtime::current_thread()?;
    let mut out = Out::stdout();
    for attempt in 1..=a.repeat {
        let d = rt.block_on(engine.decide(&req));
        let mut v = d.explain();
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("attempt".into(), attempt.into());
        }
        out.line(v);
    }
    Ok(ExitCode::SUCCESS)
}
