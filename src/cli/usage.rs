//! `plangate usage`: a usage plan's daily usage per key (AWS GetUsage) from a running plangate's
//! admin API, printed as a table, CSV (billing exports) or JSON.

use std::process::ExitCode;

use chrono::{Days, NaiveDate};
use plangate::usage::Report;

use super::error::CliError;
use super::out::Out;

/// Arguments of `plangate usage`.
#[derive(clap::Args)]
pub struct Args {
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
    format: Format,
    /// Bearer token of the admin API (or PLANGATE_ADMIN_TOKEN).
    #[arg(long, env = "PLANGATE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

/// Runs `plangate usage`.
pub fn run(a: Args) -> Result<ExitCode, CliError> {
    let report = fetch_report(
        &a.admin,
        &a.plan,
        &a.start,
        &a.end,
        a.key_id.as_deref(),
        a.token.as_deref(),
    )
    .map_err(CliError::Admin)?;
    let mut out = Out::stdout();
    match a.format {
        Format::Table => out.text(to_table(&report)),
        Format::Csv => out.text(to_csv(&report)),
        Format::Json => out.line(serde_json::to_string_pretty(&report)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// Fetches a report from a running plangate's admin API (`http://host:port`).
fn fetch_report(
    admin: &str,
    plan_id: &str,
    start: &str,
    end: &str,
    key_id: Option<&str>,
    token: Option<&str>,
) -> Result<Report, String> {
    use std::io::{Read, Write};
    let hostport = admin
        .strip_prefix("http://")
        .ok_or("--admin must be an http:// address")?
        .trim_end_matches('/');
    let mut path = format!("/v1/usageplans/{plan_id}/usage?startDate={start}&endDate={end}");
    if let Some(k) = key_id {
        path.push_str(&format!("&keyId={k}"));
    }
    let mut s = std::net::TcpStream::connect(hostport).map_err(|e| format!("{hostport}: {e}"))?;
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {hostport}\r\n{auth}connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("malformed HTTP answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("admin API answered {status}: {body}"));
    }
    serde_json::from_str(body).map_err(|e| format!("unreadable answer from the admin API: {e}"))
}

/// One row per key and day: `key_id,date,used,remaining`.
fn rows(report: &Report) -> Vec<(String, String, u64, Option<u64>)> {
    let Ok(start) = NaiveDate::parse_from_str(&report.start_date, "%Y-%m-%d") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, days) in &report.items {
        for (i, (used, remaining)) in days.iter().enumerate() {
            let day = start + Days::new(i as u64);
            out.push((key.clone(), day.to_string(), *used, *remaining));
        }
    }
    out
}

/// The report as CSV, one row per key and day.
fn to_csv(report: &Report) -> String {
    let mut s = String::from("usage_plan_id,key_id,date,used,remaining\n");
    for (key, day, used, remaining) in rows(report) {
        let rem = remaining.map_or(String::new(), |r| r.to_string());
        s.push_str(&format!(
            "{},{key},{day},{used},{rem}\n",
            report.usage_plan_id
        ));
    }
    s
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
    for (key, day, used, remaining) in rows(report) {
        total += used;
        let rem = remaining.map_or("-".to_owned(), |r| r.to_string());
        s.push_str(&format!("{key:<24} {day:<10} {used:>12} {rem:>12}\n"));
    }
    s.push_str(&format!("{:<24} {:<10} {total:>12}\n", "total", ""));
    s
}
