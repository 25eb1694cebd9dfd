//! `plangate explain`: the decision a running plangate would make for a request — on its live
//! counters, charging nothing — through the management API. Prints the same JSON as `check`
//! (which decides locally, on a fresh store).

use std::process::ExitCode;

use plangate::management::pb;

use super::admin::{AdminArgs, status};
use super::error::CliError;
use super::out::Out;
use super::request::RequestArgs;
use super::runtime;

/// Arguments of `plangate explain`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    admin: AdminArgs,
    #[command(flatten)]
    request: RequestArgs,
}

/// Runs `plangate explain`.
pub fn run(a: Args) -> Result<ExitCode, CliError> {
    let r = &a.request;
    let at = r.at()?.map(|ns| prost_types::Timestamp {
        seconds: ns.div_euclid(1_000_000_000),
        nanos: i32::try_from(ns.rem_euclid(1_000_000_000)).unwrap_or(0),
    });
    let request = pb::ExplainRequest {
        api: r.api.clone().unwrap_or_default(),
        stage: r.stage.clone().unwrap_or_default(),
        host: r.host.clone().unwrap_or_default(),
        method: r.method.clone(),
        path: r.path.clone(),
        api_key: r.key()?.unwrap_or_default(),
        hits: r.hits,
        at,
    };
    let answer = runtime::current_thread()?.block_on(async {
        let mut admin = a.admin.connect().await?;
        let req = admin.request(request);
        admin.client().explain(req).await.map_err(status)
    })?;
    // The server renders the decision as `check` does (one rendering, engine/explain.rs).
    let json: serde_json::Value = serde_json::from_str(&answer.get_ref().json)
        .map_err(|e| CliError::Admin(format!("management API: Explain answered no JSON: {e}")))?;
    Out::stdout().line(json);
    Ok(ExitCode::SUCCESS)
}
