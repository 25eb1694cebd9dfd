//! Usage of usage plans: the AWS GetUsage report (per key, per day, `[used, remaining]`), the
//! current period of one key, and AWS UpdateUsage (set the remaining quota of the current
//! period). The admin API serves them; `plangate usage` prints the report.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::clock::{NANOS_PER_SEC, Nanos, format_rfc3339};
use crate::engine::Engine;
use crate::limit::quota::{midnight, window};
use crate::limit::{LimitRef, Period, Window};
use crate::snapshot::Snapshot;
use crate::store::StoreError;

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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub usage_plan_id: String,
    pub start_date: String,
    pub end_date: String,
    /// Key id → one `[used, remaining]` per day from start to end; `remaining` is null without
    /// a quota.
    pub items: BTreeMap<String, Vec<(u64, Option<u64>)>>,
    /// With paging: where the next page starts (pass it back as `position`); absent on the
    /// last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
}

/// A page of a report (AWS GetUsage `limit` and `position`): at most `limit` keys, starting at
/// the key `position` names. Without a limit, every key.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: Option<usize>,
    pub position: Option<String>,
}

impl Page {
    /// This page of `keys` (in order): those from `position` on, at most `limit`; and the
    /// position of the next page, if any.
    fn of<'a>(&self, keys: impl Iterator<Item = &'a String>) -> (Vec<String>, Option<String>) {
        let mut keys: Vec<String> = keys
            .filter(|k| self.position.as_deref().is_none_or(|p| k.as_str() >= p))
            .cloned()
            .collect();
        let mut next = None;
        if let Some(l) = self.limit
            && keys.len() > l
        {
            next = Some(keys[l].clone());
            keys.truncate(l);
        }
        (keys, next)
    }
}

/// The most keys one page holds (AWS: 500).
pub const MAX_PAGE: usize = 500;

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
    /// The period's bounds: RFC 3339 in JSON, nanoseconds here.
    #[serde(serialize_with = "rfc3339")]
    pub period_start: Nanos,
    #[serde(serialize_with = "rfc3339")]
    pub period_end: Nanos,
}

fn rfc3339<S: serde::Serializer>(t: &Nanos, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_rfc3339(*t))
}

/// What a usage report needs of a plan, the file's or the runtime catalog's.
struct PlanInfo {
    id: Arc<str>,
    quota: Option<crate::limit::quota::Quota>,
}

fn plan(engine: &Engine, snap: &Snapshot, plan_id: &str) -> Result<PlanInfo, UsageError> {
    if let Some(p) = snap.plan_by_id(plan_id) {
        return Ok(PlanInfo {
            id: p.id.clone(),
            quota: p.quota,
        });
    }
    let rp = engine
        .catalog()
        .plan(plan_id)
        .ok_or_else(|| UsageError::UnknownPlan(plan_id.to_owned()))?;
    Ok(PlanInfo {
        id: rp.plan.id.clone(),
        quota: rp.plan.quota,
    })
}

fn check_key(
    engine: &Engine,
    snap: &Snapshot,
    plan_id: &str,
    key_id: &str,
) -> Result<(), UsageError> {
    let in_plan = match snap.key_by_id(key_id) {
        Some(key) => {
            let pi = snap.plan_index.get(plan_id).copied();
            key.plans.iter().any(|&p| Some(p) == pi)
        }
        None => {
            let catalog = engine.catalog().read();
            if !catalog.keys.contains_key(key_id) {
                return Err(UsageError::UnknownKey(key_id.to_owned()));
            }
            catalog
                .members
                .contains(&(plan_id.to_owned(), key_id.to_owned()))
        }
    };
    if !in_plan {
        return Err(UsageError::KeyNotInPlan {
            key: key_id.to_owned(),
            plan: plan_id.to_owned(),
        });
    }
    Ok(())
}

/// The largest remaining an UpdateUsage may set: what Redis counts exactly (2^53, Lua numbers).
pub const MAX_REMAINING: u64 = 1 << 53;

/// The quota counter of one key in one plan at one time.
struct Target {
    counter: LimitRef,
    limit: u64,
    period: Period,
    window: Window,
}

/// Resolves plan, key and the quota period containing `now`, with its effective limit.
fn target(
    engine: &Engine,
    snap: &Snapshot,
    plan_id: &str,
    key_id: &str,
    now: Nanos,
) -> Result<Target, UsageError> {
    let p = plan(engine, snap, plan_id)?;
    check_key(engine, snap, plan_id, key_id)?;
    let q = p
        .quota
        .ok_or_else(|| UsageError::NoQuota(plan_id.to_owned()))?;
    let spec = q.spec_at(snap.week_start, now);
    Ok(Target {
        counter: LimitRef::quota(p.id.clone(), key_id.into(), spec),
        limit: spec.limit,
        period: q.period,
        window: spec.window,
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
    let states = engine
        .store()
        .read(std::slice::from_ref(&t.counter), now)
        .await?;
    let remaining = states.first().map_or(t.limit, |s| s.remaining);
    Ok(Current {
        usage_plan_id: plan_id.to_owned(),
        key_id: key_id.to_owned(),
        limit: t.limit,
        used: t.limit.saturating_sub(remaining),
        remaining,
        period: t.period.as_str(),
        period_start: t.window.start,
        period_end: t.window.end,
    })
}

/// The current period of one key.
pub async fn current(
    engine: &Engine,
    plan_id: &str,
    key_id: &str,
    now: Nanos,
) -> Result<Current, UsageError> {
    let t = target(engine, &engine.snapshot(), plan_id, key_id, now)?;
    read(engine, &t, plan_id, key_id, now).await
}

/// AWS UpdateUsage: after this, exactly `remaining` more units are admitted in this period.
/// A `remaining` above the limit is AWS's temporary extension: the key gets that many in this
/// period only; the next period starts from the limit again.
pub async fn update(
    engine: &Engine,
    plan_id: &str,
    key_id: &str,
    remaining: u64,
    now: Nanos,
) -> Result<Current, UsageError> {
    let t = target(engine, &engine.snapshot(), plan_id, key_id, now)?;
    let used = i64::try_from(i128::from(t.limit) - i128::from(remaining))
        .ok()
        .filter(|_| remaining <= MAX_REMAINING)
        .ok_or_else(|| {
            UsageError::BadRequest(format!(
                "remaining {remaining} is more than plangate can count (at most {MAX_REMAINING})"
            ))
        })?;
    engine.store().set_used(&t.counter, used, now).await?;
    // Durable before it is acknowledged: a persisted store writes it now, not at the next
    // flush (a crash in between would give a customer cut to 50 their 1,000 back). Redis
    // has it already.
    if engine.store().persists() {
        engine.store().flush().await?;
    }
    read(engine, &t, plan_id, key_id, now).await
}

/// Reads a report date: exactly `YYYY-MM-DD` (four-digit year, no sign), from 1970-01-01 to
/// 2261-12-31 — the days whose instants the counters can hold (nanoseconds in an `i64`). chrono
/// alone accepts `+262142-01-01`, a day whose arithmetic overflows.
pub fn parse_date(s: &str) -> Result<NaiveDate, UsageError> {
    let bad = || UsageError::BadRequest(format!("`{s}` is not a date (YYYY-MM-DD)"));
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return Err(bad());
    }
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad())?;
    if !(FIRST_DATE..=LAST_DATE).contains(&date) {
        return Err(UsageError::BadRequest(format!(
            "`{s}` is outside {FIRST_DATE} to {LAST_DATE}"
        )));
    }
    Ok(date)
}

/// The first and last days a report can name.
const FIRST_DATE: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
const LAST_DATE: NaiveDate = NaiveDate::from_ymd_opt(2261, 12, 31).expect("a valid date");

/// Whose usage a report holds.
#[derive(Debug, Clone, Copy)]
pub enum Keys<'a> {
    /// One key (checked to be in the plan), listed even without usage.
    One(&'a str),
    /// These keys of the plan (a page of them), each listed even without usage.
    These(&'a [Arc<str>]),
    /// Every key of the plan with usage in the range.
    All,
}

/// The plan's usage per key (of `which`) and day, from `from` to `to`.
async fn usage_by_key(
    engine: &Engine,
    snap: &Snapshot,
    plan_id: &str,
    which: Keys<'_>,
    from: Nanos,
    to: Nanos,
) -> Result<BTreeMap<String, BTreeMap<Nanos, u64>>, UsageError> {
    // The plan's keys (a store that keeps usage per key reads theirs).
    let keys: Vec<Arc<str>> = match which {
        Keys::One(k) => vec![Arc::from(k)],
        Keys::These(keys) => keys.to_vec(),
        Keys::All => {
            let index = snap.plan_index.get(plan_id).copied();
            let mut keys: Vec<Arc<str>> = snap
                .keys
                .iter()
                .filter(|k| index.is_some_and(|i| k.plans.contains(&i)))
                .map(|k| k.id.clone())
                .collect();
            keys.extend(engine.catalog().read().keys_of(plan_id).map(Arc::from));
            keys
        }
    };
    let wanted: Option<std::collections::HashSet<&str>> = match which {
        Keys::All => None,
        _ => Some(keys.iter().map(|k| &**k).collect()),
    };
    let rows = engine.store().usage(plan_id, &keys, from, to).await?;
    let mut per_key: BTreeMap<String, BTreeMap<Nanos, u64>> = BTreeMap::new();
    for r in rows {
        if wanted.as_ref().is_none_or(|w| w.contains(r.key.as_str())) {
            *per_key
                .entry(r.key)
                .or_default()
                .entry(r.day_start)
                .or_default() += r.used;
        }
    }
    if wanted.is_some() {
        for k in &keys {
            per_key.entry(k.to_string()).or_default();
        }
    }
    Ok(per_key)
}

/// Requests per day of keys `keys` in plan `plan_id`, summed, for `days` days from `start`
/// (the console's plan chart: a page of keys, not every key of a plan of a million).
pub async fn daily_total(
    engine: &Engine,
    plan_id: &str,
    keys: &[Arc<str>],
    start: NaiveDate,
    days: u64,
) -> Result<Vec<u64>, UsageError> {
    let days = days.clamp(1, MAX_REPORT_DAYS);
    let first = midnight(start);
    let to = midnight(start + Days::new(days));
    let rows = engine.store().usage(plan_id, keys, first, to).await?;
    let mut out = vec![0u64; days as usize];
    for r in rows {
        if let Some(slot) = usize::try_from((r.day_start - first) / (86_400 * NANOS_PER_SEC))
            .ok()
            .and_then(|i| out.get_mut(i))
        {
            *slot += r.used;
        }
    }
    Ok(out)
}

/// The days from `start` to `end`, both included: at least one, at most [`MAX_REPORT_DAYS`].
fn days_between(start: NaiveDate, end: NaiveDate) -> Result<u64, UsageError> {
    if end < start {
        return Err(UsageError::BadRequest("endDate is before startDate".into()));
    }
    let days = (end - start).num_days() as u64 + 1;
    if days > MAX_REPORT_DAYS {
        return Err(UsageError::BadRequest(format!(
            "at most {MAX_REPORT_DAYS} days per report"
        )));
    }
    Ok(days)
}

/// AWS GetUsage: daily usage of a plan from `start` to `end` (inclusive), for one key or all.
pub async fn report(
    engine: &Engine,
    plan_id: &str,
    start: NaiveDate,
    end: NaiveDate,
    key_id: Option<&str>,
) -> Result<Report, UsageError> {
    let now = engine.clock().now();
    report_page(engine, plan_id, start, end, key_id, now, &Page::default()).await
}

/// [`report`] at `now`, one page of keys. The remaining quota of today and later days of the
/// current period is the live counter's (what UpdateUsage sets); earlier days are computed
/// from the daily usage.
pub async fn report_page(
    engine: &Engine,
    plan_id: &str,
    start: NaiveDate,
    end: NaiveDate,
    key_id: Option<&str>,
    now: Nanos,
    page: &Page,
) -> Result<Report, UsageError> {
    let which = match key_id {
        Some(k) => Keys::One(k),
        None => Keys::All,
    };
    report_of(engine, plan_id, start, end, which, now, page).await
}

/// [`report_page`] of `which` keys.
pub async fn report_of(
    engine: &Engine,
    plan_id: &str,
    start: NaiveDate,
    end: NaiveDate,
    which: Keys<'_>,
    now: Nanos,
    page: &Page,
) -> Result<Report, UsageError> {
    if let Some(l) = page.limit
        && !(1..=MAX_PAGE).contains(&l)
    {
        return Err(UsageError::BadRequest(format!(
            "limit must be from 1 to {MAX_PAGE}"
        )));
    }
    let snap = engine.snapshot();
    let p = plan(engine, &snap, plan_id)?;
    if let Keys::One(k) = which {
        check_key(engine, &snap, plan_id, k)?;
    }
    let days = days_between(start, end)?;
    let first = midnight(start);
    // Remaining needs the usage since the start of the first day's quota period.
    let from = match p.quota {
        Some(q) => window(q.period, snap.week_start, first).start,
        None => first,
    };
    let to = midnight(end + Days::new(1));
    let mut per_key = usage_by_key(engine, &snap, plan_id, which, from, to).await?;
    // Keys whose only usage is before the range are not listed.
    let all = matches!(which, Keys::All);
    per_key.retain(|_, by_day| !all || by_day.range(first..to).next().is_some());
    let (keys, position) = page.of(per_key.keys());
    // Today's period, and the first day of it the report shows from the live counter.
    let today = midnight(chrono::DateTime::from_timestamp_nanos(now).date_naive());
    let current = p.quota.map(|q| (q, q.spec_at(snap.week_start, now)));
    let mut items = BTreeMap::new();
    for key in keys {
        let by_day = per_key.remove(&key).unwrap_or_default();
        let live = match current {
            Some((_, spec)) if to > today => {
                let counter = LimitRef::quota(p.id.clone(), key.as_str().into(), spec);
                let states = engine
                    .store()
                    .read(std::slice::from_ref(&counter), now)
                    .await?;
                Some((spec, states.first().map_or(spec.limit, |s| s.remaining)))
            }
            _ => None,
        };
        let out = (0..days as i64).map(|i| {
            let day = first + i * 86_400 * NANOS_PER_SEC;
            let used = by_day.get(&day).copied().unwrap_or(0);
            let remaining = p.quota.map(|q| match live {
                Some((spec, remaining))
                    if day >= today && day >= spec.window.start && day < spec.window.end =>
                {
                    remaining
                }
                _ => {
                    let spec = q.spec_at(snap.week_start, day);
                    let so_far: u64 = by_day.range(spec.window.start..=day).map(|(_, u)| *u).sum();
                    spec.limit.saturating_sub(so_far)
                }
            });
            (used, remaining)
        });
        items.insert(key, out.collect());
    }
    Ok(Report {
        usage_plan_id: plan_id.to_owned(),
        start_date: start.to_string(),
        end_date: end.to_string(),
        items,
        position,
    })
}

/// The `remaining` of an UpdateUsage body: AWS's `{"patchOperations": [{"op": "replace",
/// "path": "/remaining", "value": "N"}]}`, or `{"remaining": N}`.
pub fn remaining_of(body: &serde_json::Value) -> Result<u64, String> {
    if let Some(n) = body.get("remaining") {
        return n
            .as_u64()
            .ok_or_else(|| "`remaining` must be a whole number".to_owned());
    }
    let Some(ops) = body
        .get("patchOperations")
        .and_then(serde_json::Value::as_array)
    else {
        return Err(
            "body must be {\"remaining\": N} or {\"patchOperations\": [{\"op\": \"replace\", \"path\": \"/remaining\", \"value\": \"N\"}]}"
                .to_owned(),
        );
    };
    let [op] = ops.as_slice() else {
        return Err("patchOperations must hold exactly one operation".to_owned());
    };
    let field = |k: &str| op.get(k).and_then(serde_json::Value::as_str);
    if field("op") != Some("replace") || field("path") != Some("/remaining") {
        return Err(
            "the only patch operation is {\"op\": \"replace\", \"path\": \"/remaining\"}"
                .to_owned(),
        );
    }
    // AWS sends the value as a string; a number is accepted too.
    match op.get("value") {
        Some(serde_json::Value::String(v)) => v.parse::<u64>().ok(),
        Some(v) => v.as_u64(),
        None => None,
    }
    .ok_or_else(|| {
        "the patch `value` must be a whole number (as a string, as AWS sends it)".to_owned()
    })
}

/// A report as AWS's `Usage` on the wire: the per-key days under `values`.
pub fn aws_usage(r: &Report) -> serde_json::Value {
    let mut v = serde_json::json!({
        "usagePlanId": r.usage_plan_id,
        "startDate": r.start_date,
        "endDate": r.end_date,
        "values": r.items,
    });
    if let Some(p) = &r.position {
        v["position"] = serde_json::json!(p);
    }
    v
}

/// One key's current period as AWS's `Usage` (UpdateUsage's answer): that period, one
/// `[used, remaining]`.
pub fn aws_current(c: &Current) -> serde_json::Value {
    let day = |t: Nanos| chrono::DateTime::from_timestamp_nanos(t).date_naive();
    let last = day(c.period_end - 1);
    serde_json::json!({
        "usagePlanId": c.usage_plan_id,
        "startDate": day(c.period_start).to_string(),
        "endDate": last.to_string(),
        "values": { c.key_id.as_str(): [[c.used, c.remaining]] },
    })
}

/// One row per key and day: `key_id,date,used,remaining`.
pub fn rows(report: &Report) -> Vec<(String, String, u64, Option<u64>)> {
    let Ok(start) = chrono::NaiveDate::parse_from_str(&report.start_date, "%Y-%m-%d") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, days) in &report.items {
        for (i, (used, remaining)) in days.iter().enumerate() {
            let day = start + chrono::Days::new(i as u64);
            out.push((key.clone(), day.to_string(), *used, *remaining));
        }
    }
    out
}

/// The report as CSV, one row per key and day (fields quoted where CSV needs it).
pub fn to_csv(report: &Report) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut write = |record: [&str; 5]| {
        // Writing to memory cannot fail.
        let _ = w.write_record(record);
    };
    write(["usage_plan_id", "key_id", "date", "used", "remaining"]);
    for (key, day, used, remaining) in rows(report) {
        let rem = remaining.map_or(String::new(), |r| r.to_string());
        write([&report.usage_plan_id, &key, &day, &used.to_string(), &rem]);
    }
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}
