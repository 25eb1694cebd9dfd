//! `plangate watch`: a live tail of a running plangate's decisions (the management API's
//! WatchDecisions), one JSON object per line. Lossy by design: when this reader falls behind,
//! plangate drops events rather than slow its decisions, and the next line says how many.

use std::process::ExitCode;

use plangate::management::pb;
use serde_json::json;

use super::admin::{AdminArgs, status};
use super::error::CliError;
use super::out::Out;
use super::runtime;

/// Arguments of `plangate watch`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    admin: AdminArgs,
    /// Only decisions for this key id.
    #[arg(long)]
    key_id: Option<String>,
    /// Only decisions with this outcome (`admitted`, `forbidden`, `throttled`, …).
    #[arg(long)]
    outcome: Option<String>,
}

fn outcome_named(name: &str) -> Result<pb::Outcome, CliError> {
    let wanted = format!("OUTCOME_{}", name.to_ascii_uppercase());
    pb::Outcome::from_str_name(&wanted).ok_or_else(|| CliError::Flag {
        flag: "--outcome",
        reason: format!("`{name}` is not an outcome (admitted, forbidden, throttled, …)"),
    })
}

/// Runs `plangate watch` until the server or the reader goes away.
pub fn run(a: Args) -> Result<ExitCode, CliError> {
    let outcome = a.outcome.as_deref().map(outcome_named).transpose()?;
    runtime::current_thread()?.block_on(async {
        let mut admin = a.admin.connect().await?;
        let req = admin.request(pb::WatchDecisionsRequest {
            api_key_id: a.key_id.clone().unwrap_or_default(),
            outcome: outcome.unwrap_or(pb::Outcome::Unset) as i32,
        });
        let mut stream = admin
            .client()
            .watch_decisions(req)
            .await
            .map_err(status)?
            .into_inner();
        let mut out = Out::stdout();
        while let Some(e) = stream.message().await.map_err(status)? {
            let time = e
                .time
                .map(|t| plangate::clock::format_rfc3339(t.seconds.saturating_mul(1_000_000_000)));
            let name = pb::Outcome::try_from(e.outcome)
                .map(|o| {
                    o.as_str_name()
                        .trim_start_matches("OUTCOME_")
                        .to_ascii_lowercase()
                })
                .unwrap_or_default();
            out.line(json!({
                "time": time, "service": e.service, "outcome": name, "reason": e.reason,
                "decided_by": e.decided_by, "api": e.api, "stage": e.stage, "method": e.method,
                "api_key_id": e.api_key_id, "usage_plan_id": e.usage_plan_id, "dropped": e.dropped,
            }));
        }
        Ok::<_, CliError>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
