//! `plangate check`: the decision for one request, limit by limit, as one JSON object per
//! attempt, on a fresh in-memory store. Local: it reads the file, not a running plangate.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use plangate::clock::{Clock, FakeClock, SystemClock};
use plangate::config;
use plangate::engine::{Engine, Request};
use plangate::store::MemoryStore;

use super::error::CliError;
use super::out::Out;
use super::request::RequestArgs;
use super::runtime;

/// Arguments of `plangate check`.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
    #[command(flatten)]
    request: RequestArgs,
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
    let r = &a.request;
    // With --at, the clock stays there for every attempt.
    let clock: Arc<dyn Clock> = match r.at()? {
        Some(at) => Arc::new(FakeClock::new(at)),
        None => Arc::new(SystemClock),
    };
    let rt = runtime::current_thread()?;
    // A fresh store: a quota offset without `starts_at` is in force in the period of the first
    // attempt, as for a plan the counter store has not seen before.
    let engine = rt
        .block_on(Engine::start(
            compiled.snapshot,
            Arc::new(MemoryStore::new()),
            clock,
        ))
        .map_err(|e| CliError::Flag {
            flag: "--config",
            reason: e.to_string(),
        })?;
    let key = r.key()?;
    let req = Request::new(&r.method, &r.path, key.as_deref(), r.hits)
        .stage(r.api.as_deref(), r.stage.as_deref())
        .host(r.host.as_deref());
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
