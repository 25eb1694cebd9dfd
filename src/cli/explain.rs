//! `plangate explain`: the decision a running plangate would make for a request — on its live
//! counters, charging nothing — through the management API. Prints the same JSON as `check`
//! (which decides locally, on a fresh store).

use std::process::ExitCode;

use plangate::clock::format_rfc3339;
use plangate::management::pb;
use serde_json::{Value, json};

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

fn seconds(d: &Option<prost_types::Duration>) -> Value {
    d.as_ref().map_or(Value::Null, |d| {
        json!(d.seconds as f64 + f64::from(d.nanos) / 1e9)
    })
}

fn instant(t: &Option<prost_types::Timestamp>) -> Value {
    t.as_ref().map_or(Value::Null, |t| {
        json!(format_rfc3339(
            t.seconds.saturating_mul(1_000_000_000) + i64::from(t.nanos)
        ))
    })
}

fn text(s: &str) -> Value {
    if s.is_empty() { Value::Null } else { json!(s) }
}

/// `check`'s JSON for an Explain answer.
fn as_check_json(e: &pb::ExplainResponse) -> Value {
    let limits: Vec<Value> = e
        .limits
        .iter()
        .map(|l| {
            let mut v = match &l.config {
                Some(pb::limit_report::Config::Throttle(t)) => {
                    json!({"limit": l.limit, "rate": t.rate, "burst": t.burst})
                }
                Some(pb::limit_report::Config::Quota(q)) => json!({
                    "limit": l.limit, "quota": q.limit, "period": q.period,
                    "period_start": instant(&q.period_start), "period_end": instant(&q.period_end),
                }),
                None => json!({"limit": l.limit}),
            };
            if let Value::Object(m) = &mut v {
                m.insert("admitted".into(), json!(l.admitted));
                m.insert("remaining".into(), json!(l.remaining));
                m.insert("reset_seconds".into(), seconds(&l.reset_after));
                if !l.admitted {
                    m.insert("retry_after_seconds".into(), seconds(&l.retry_after));
                }
            }
            v
        })
        .collect();
    json!({
        "outcome": e.outcome_name,
        "reason": text(&e.reason),
        "decided_by": text(&e.decided_by),
        "api": text(&e.api),
        "stage": text(&e.stage),
        "method": text(&e.method),
        "key_id": text(&e.api_key_id),
        "usage_plan": text(&e.usage_plan_id),
        "customer_id": text(&e.customer_id),
        "retry_after_seconds": e.retry_after_seconds,
        "limits": limits,
    })
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
    Out::stdout().line(as_check_json(answer.get_ref()));
    Ok(ExitCode::SUCCESS)
}
