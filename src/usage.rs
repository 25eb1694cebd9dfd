//! Usage of usage plans: the AWS GetUsage report (per key, per day, `[used, remaining]`), the
//! current period of one key, and AWS UpdateUsage (set the remaining quota of the current
//! period). Shared by the admin API and `plangate usage`.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use serde::Serialize;

use crate::clock::{NANOS_PER_SEC, Nanos, format_rfc3339};
use crate::config::file::Period;
use crate::engine::Engine;
use crate::engine::explain::period_name;
use crate::engine::quota::{QuotaSpec, Window, effective_limit, midnight, window};
use crate::snapshot::{Plan, Snapshot};
use crate::store::{LimitKey, LimitRef, LimitSpec, StoreError};

/// The longest report, in days.
pub const MAX_REPORT_DAYS: u64 = 366;

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("unknown usage plan `{0}`")]
    UnknownPlan(String),
    #[error("unknown API key id `{0}`")]
    UnknownKey(String),
    #[error("API key `{key}` is not in usage plan `{plan}`")]
    KeyNotInPlan { key: String, plan: String },
    #[error("usage plan `{0}` has no quota")]
    NoQuota(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// AWS GetUsage's shape.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub usage_plan_id: String,
    pub start_date: String,
    pub end_date: String,
    /// Key id → one `[used, remaining]` per day from start to end; `remaining` is null without
    /// a quota.
    pub items: BTreeMap<String, Vec<(u64, Option<u64>)>>,
}

/// One key's current quota period.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Current {
    pub usage_plan_id: String,
    pub key_id: String,
    pub limit: u64,
    pub used: u64,
    pub remaining: u64,
    pub period: &'static str,
    pub period_start: String,
    pub period_end: String,
}

fn plan<'a>(snap: &'a Snapshot, plan_id: &str) -> Result<&'a Plan, UsageError> {
    snap.plan_index
        .get(plan_id)
        .map(|&i| &snap.plans[i as usize])
        .ok_or_else(|| UsageError::UnknownPlan(plan_id.to_owned()))
}

fn check_key(snap: &Snapshot, plan_id: &str, key_id: &str) -> Result<(), UsageError> {
    let key = snap
        .keys
        .iter()
        .find(|k| &*k.id == key_id)
        .ok_or_else(|| UsageError::UnknownKey(key_id.to_owned()))?;
    let pi = snap.plan_index.get(plan_id).copied();
    if !key.plans.iter().any(|&p| Some(p) == pi) {
        return Err(UsageError::KeyNotInPlan {
            key: key_id.to_owned(),
            plan: plan_id.to_owned(),
        });
    }
    Ok(())
}

/// The quota counter of one key in one plan at one time.
struct Target {
    counter: LimitRef,
    limit: u64,
    period: Period,
    window: Window,
}

/// Resolves plan, key and the quota period containing `now`, with its effective limit.
fn target(snap: &Snapshot, plan_id: &str, key_id: &str, now: Nanos) -> Result<Target, UsageError> {
    let p = plan(snap, plan_id)?;
    check_key(snap, plan_id, key_id)?;
    let q = p
        .quota
        .ok_or_else(|| UsageError::NoQuota(plan_id.to_owned()))?;
    let window = window(q.period, snap.week_start, now);
    let limit = effective_limit(q.limit, q.offset, q.starts_at, window);
    Ok(Target {
        counter: LimitRef {
            key: LimitKey::Quota {
                plan: p.id.clone(),
                key: key_id.into(),
                window_start: window.start,
            },
            spec: LimitSpec::Quota(QuotaSpec { limit, window }),
        },
        limit,
        period: q.period,
        window,
    })
}

/// Reads a target's counter (a check of 0 units charges nothing).
async fn read(
    engine: &Engine,
    t: &Target,
    plan_id: &str,
    key_id: &str,
    now: Nanos,
) -> Result<Current, UsageError> {
    let charge = engine
        .store()
        .check_and_charge(std::slice::from_ref(&t.counter), 0, now)
        .await?;
    let remaining = charge.states.first().map_or(t.limit, |s| s.remaining);
    Ok(Current {
        usage_plan_id: plan_id.to_owned(),
        key_id: key_id.to_owned(),
        limit: t.limit,
        used: t.limit.saturating_sub(remaining),
        remaining,
        period: period_name(t.period),
        period_start: format_rfc3339(t.window.start),
        period_end: format_rfc3339(t.window.end),
    })
}

/// The current period of one key.
pub async fn current(
    engine: &Engine,
    plan_id: &str,
    key_id: &str,
    now: Nanos,
) -> Result<Current, UsageError> {
    let t = target(&engine.snapshot(), plan_id, key_id, now)?;
    read(engine, &t, plan_id, key_id, now).await
}

/// AWS UpdateUsage: after this, exactly `remaining` more units are admitted in this period.
pub async fn update(
    engine: &Engine,
    plan_id: &str,
    key_id: &str,
    remaining: u64,
    now: Nanos,
) -> Result<Current, UsageError> {
    let t = target(&engine.snapshot(), plan_id, key_id, now)?;
    if remaining > t.limit {
        return Err(UsageError::BadRequest(format!(
            "remaining {remaining} is above the period's limit {}",
            t.limit
        )));
    }
    engine
        .store()
        .set_used(&t.counter, t.limit - remaining, now)
        .await?;
    read(engine, &t, plan_id, key_id, now).await
}

/// Parses an AWS date (`2026-11-25`).
pub fn parse_date(s: &str) -> Result<NaiveDate, UsageError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| UsageError::BadRequest(format!("`{s}` is not a date (YYYY-MM-DD)")))
}

/// AWS GetUsage: daily usage of a plan from `start` to `end` (inclusive), for one key or all.
pub async fn report(
    engine: &Engine,
    plan_id: &str,
    start: NaiveDate,
    end: NaiveDate,
    key_id: Option<&str>,
) -> Result<Report, UsageError> {
    let snap = engine.snapshot();
    let p = plan(&snap, plan_id)?;
    if let Some(k) = key_id {
        check_key(&snap, plan_id, k)?;
    }
    if end < start {
        return Err(UsageError::BadRequest("endDate is before startDate".into()));
    }
    let days = (end - start).num_days() as u64 + 1;
    if days > MAX_REPORT_DAYS {
        return Err(UsageError::BadRequest(format!(
            "at most {MAX_REPORT_DAYS} days per report"
        )));
    }
    let first = midnight(start);
    // Remaining needs the usage since the start of the first day's quota period.
    let from = match p.quota {
        Some(q) => window(q.period, snap.week_start, first).start,
        None => first,
    };
    let to = midnight(end + Days::new(1));
    let rows = engine.store().usage(plan_id, from, to).await?;
    let mut per_key: BTreeMap<String, BTreeMap<Nanos, u64>> = BTreeMap::new();
    for r in rows {
        if key_id.is_none_or(|k| k == r.key) {
            *per_key
                .entry(r.key)
                .or_default()
                .entry(r.day_start)
                .or_default() += r.used;
        }
    }
    if let Some(k) = key_id {
        per_key.entry(k.to_owned()).or_default();
    }
    let day_ns = 86_400 * NANOS_PER_SEC;
    let mut items = BTreeMap::new();
    for (key, by_day) in per_key {
        // Keys whose only usage is before the range are not listed.
        if key_id.is_none() && by_day.range(first..to).next().is_none() {
            continue;
        }
        let mut out = Vec::with_capacity(days as usize);
        for i in 0..days as i64 {
            let day = first + i * day_ns;
            let used = by_day.get(&day).copied().unwrap_or(0);
            let remaining = p.quota.map(|q| {
                let w = window(q.period, snap.week_start, day);
                let limit = effective_limit(q.limit, q.offset, q.starts_at, w);
                let so_far: u64 = by_day.range(w.start..=day).map(|(_, u)| *u).sum();
                limit.saturating_sub(so_far)
            });
            out.push((used, remaining));
        }
        items.insert(key, out);
    }
    Ok(Report {
        usage_plan_id: plan_id.to_owned(),
        start_date: start.to_string(),
        end_date: end.to_string(),
        items,
    })
}

/// Fetches a report from a running plangate's admin API (`http://host:port`), for the CLI.
pub fn fetch_report(
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
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let items = v["items"]
        .as_object()
        .ok_or("no items in the answer")?
        .iter()
        .map(|(k, days)| {
            let days = days
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|d| (d[0].as_u64().unwrap_or(0), d[1].as_u64()))
                        .collect()
                })
                .unwrap_or_default();
            (k.clone(), days)
        })
        .collect();
    Ok(Report {
        usage_plan_id: v["usagePlanId"].as_str().unwrap_or(plan_id).to_owned(),
        start_date: v["startDate"].as_str().unwrap_or(start).to_owned(),
        end_date: v["endDate"].as_str().unwrap_or(end).to_owned(),
        items,
    })
}

impl Report {
    /// One row per key and day: `key_id,date,used,remaining`.
    pub fn rows(&self) -> Vec<(String, String, u64, Option<u64>)> {
        let Ok(start) = NaiveDate::parse_from_str(&self.start_date, "%Y-%m-%d") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, days) in &self.items {
            for (i, (used, remaining)) in days.iter().enumerate() {
                let day = start + Days::new(i as u64);
                out.push((key.clone(), day.to_string(), *used, *remaining));
            }
        }
        out
    }

    pub fn to_csv(&self) -> String {
        let mut s = String::from("usage_plan_id,key_id,date,used,remaining\n");
        for (key, day, used, remaining) in self.rows() {
            let rem = remaining.map_or(String::new(), |r| r.to_string());
            s.push_str(&format!(
                "{},{key},{day},{used},{rem}\n",
                self.usage_plan_id
            ));
        }
        s
    }

    pub fn to_table(&self) -> String {
        let mut s = format!(
            "usage plan {} from {} to {}\n{:<24} {:<10} {:>12} {:>12}\n",
            self.usage_plan_id,
            self.start_date,
            self.end_date,
            "key id",
            "date",
            "used",
            "remaining"
        );
        let mut total = 0;
        for (key, day, used, remaining) in self.rows() {
            total += used;
            let rem = remaining.map_or("-".to_owned(), |r| r.to_string());
            s.push_str(&format!("{key:<24} {day:<10} {used:>12} {rem:>12}\n"));
        }
        s.push_str(&format!("{:<24} {:<10} {total:>12}\n", "total", ""));
        s
    }
}
