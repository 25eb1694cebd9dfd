//! Calendar quota windows, in UTC: DAY from 00:00, WEEK from 00:00 of the configured weekday,
//! MONTH from 00:00 of the 1st (AWS usage plan quota periods), and the limit in force in each.

use chrono::{Datelike, Days, Months, NaiveDate, NaiveTime};
use serde::{Deserialize, Serialize};

use crate::clock::{NANOS_PER_SEC, Nanos};

/// A quota period (AWS `QuotaSettings.period`). The config file spells it as here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    /// As AWS and the config file spell it: `DAY`, `WEEK`, `MONTH`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "DAY",
            Period::Week => "WEEK",
            Period::Month => "MONTH",
        }
    }
}

/// A usage plan's quota as configured: `limit` units per `period`, less `offset` in the plan's
/// initial period: the one that contains `starts_at` when configured, else the one that contains
/// `initial` (the period the counter store first saw the plan, recorded there: see
/// `engine::resolve_initial_periods`). Neither known: no offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub period: Period,
    pub offset: u64,
    pub starts_at: Option<NaiveDate>,
    /// Without `starts_at`: the first day of the initial period, as the store recorded it.
    pub initial: Option<NaiveDate>,
}

/// A quota's parameters, as the store sees them: the limit of the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuotaSpec {
    pub limit: u64,
    pub window: Window,
}

/// A half-open window `[start, end)` in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    pub start: Nanos,
    pub end: Nanos,
}

impl Window {
    pub fn contains(&self, t: Nanos) -> bool {
        self.start <= t && t < self.end
    }
}

impl Quota {
    /// The window that contains `now` and the limit in force in it.
    pub fn spec_at(&self, week_start: chrono::Weekday, now: Nanos) -> QuotaSpec {
        let window = window(self.period, week_start, now);
        QuotaSpec {
            limit: effective_limit(
                self.limit,
                self.offset,
                self.starts_at.or(self.initial),
                window,
            ),
            window,
        }
    }
}

impl QuotaSpec {
    /// Whether a counter at `used` admits `need` more units: the one admission test of a quota.
    /// `used` is below zero after an UpdateUsage set the remaining above the limit.
    pub fn admits(&self, used: i64, need: u64) -> bool {
        i128::from(used) + i128::from(need) <= i128::from(self.limit)
    }

    /// What is left at `used`: `limit - used`, at least 0 (above the limit after an extension).
    pub fn remaining(&self, used: i64) -> u64 {
        let left = i128::from(self.limit) - i128::from(used);
        u64::try_from(left.max(0)).unwrap_or(u64::MAX)
    }
}

/// The window of `period` that contains `now`.
pub fn window(period: Period, week_start: chrono::Weekday, now: Nanos) -> Window {
    let date = chrono::DateTime::from_timestamp_nanos(now).date_naive();
    let (start, end) = match period {
        Period::Day => (date, date + Days::new(1)),
        Period::Week => {
            let back =
                (7 + date.weekday().num_days_from_monday() - week_start.num_days_from_monday()) % 7;
            let start = date - Days::new(u64::from(back));
            (start, start + Days::new(7))
        }
        Period::Month => {
            let start = date.with_day(1).unwrap_or(date);
            (start, start + Months::new(1))
        }
    };
    Window {
        start: midnight(start),
        end: midnight(end),
    }
}

/// 00:00 UTC of `date`.
pub fn midnight(date: NaiveDate) -> Nanos {
    date.and_time(NaiveTime::MIN)
        .and_utc()
        .timestamp()
        .saturating_mul(NANOS_PER_SEC)
}

/// The limit in force in `window`: `limit - offset` in the window that contains `initial_day`
/// (AWS: the offset is subtracted in the initial period), `limit` otherwise.
pub fn effective_limit(
    limit: u64,
    offset: u64,
    initial_day: Option<NaiveDate>,
    window: Window,
) -> u64 {
    match initial_day {
        Some(day) if window.contains(midnight(day)) => limit.saturating_sub(offset),
        _ => limit,
    }
}

#[cfg(test)]
mod tests;
