//! `plangate usage`: a usage plan's daily usage per key (AWS GetUsage) from a running plangate's
//! management API (gRPC on the admin address), printed as a table, CSV (billing exports) or JSON.

use std::collections::BTreeMap;
use std::process::ExitCode;

use plangate::management::pb;
use plangate::usage::Report;

use super::admin::{AdminArgs, status};
use super::error::CliError;
use super::out::Out;
use super::runtime;

/// Arguments of `plangate usage`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    admin: AdminArgs,
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
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

/// Runs `plangate usage`.
pub fn run(a: Args) -> Result<ExitCode, CliError> {
    let report = runtime::current_thread()?.block_on(fetch_report(&a))?;
    let mut out = Out::stdout();
    match a.format {
        Format::Table => out.text(to_table(&report)),
        Format::Csv => out.text(plangate::usage::to_csv(&report)),
        Format::Json => out.line(serde_json::to_string_pretty(&report)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// Fetches a report, every page of it, from a running plangate's management API.
async fn fetch_report(a: &Args) -> Result<Report, CliError> {
    let mut admin = a.admin.connect().await?;
    let mut items = BTreeMap::new();
    let mut page_token = String::new();
    let (start_date, end_date) = loop {
        let req = admin.request(pb::GetUsageRequest {
            usage_plan_id: a.plan.clone(),
            start_date: a.start.clone(),
            end_date: a.end.clone(),
            key_id: a.key_id.clone().unwrap_or_default(),
            page_size: 500,
            page_token: page_token.clone(),
        });
        let page = admin
            .client()
            .get_usage(req)
            .await
            .map_err(status)?
            .into_inner();
        for (key, usage) in page.items {
            let days = usage.days.iter().map(|d| (d.used, d.remaining)).collect();
            items.insert(key, days);
        }
        if page.next_page_token.is_empty() {
            break (page.start_date, page.end_date);
        }
        page_token = page.next_page_token;
    };
    Ok(Report {
        usage_plan_id: a.plan.clone(),
        start_date,
        end_date,
        items,
        position: None,
    })
}

/// The report as a table, with a total.
fn to_table(report: &Report) -> String {
    let mut s = format!(
        "usage plan {} from {} to {}\n{:<24} {:<10} {:>12} {:>12}\n",
        report.usage_plan_id,
        report.start_date,
        report.end_date,
        "key id",
        "date",
        "used",
        "remaining"
    );
    let mut total = 0;
    for (key, day, used, remaining) in plangate::usage::rows(report) {
        total += used;
        let rem = remaining.map_or("-".to_owned(), |r| r.to_string());
        s.push_str(&format!("{key:<24} {day:<10} {used:>12} {rem:>12}\n"));
    }
    s.push_str(&format!("{:<24} {:<10} {total:>12}\n", "total", ""));
    s
}
