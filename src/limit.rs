//! Limits, the layer below both the engine and the counter stores: token-bucket and calendar-quota
//! arithmetic (`bucket`, `quota`), the identity of a counter ([`LimitKey`]), what kind of counter
//! it is ([`LimitSpec`]), and the two functions every store calls to turn what it found into an
//! answer: [`LimitSpec::check`] (before a charge) and [`LimitSpec::charge`] (a charge).
//!
//! The engine decides which limits apply; a store keeps their counters, atomically; what a counter
//! *means* — when it admits, what is left, when it resets — is written here, once.

use std::collections::HashMap;
use std::sync::Arc;

use crate::clock::{NANOS_PER_SEC, Nanos};

pub mod bucket;
pub mod quota;

pub use bucket::{BucketSpec, BucketState, UNITS_PER_TOKEN};
pub use quota::{Period, Quota, QuotaSpec, Window};

/// A hash map with a fast hasher (foldhash, randomly seeded per process) for the request path:
/// SipHash, std's default, costs several times more per lookup.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A set hashed as [`FastMap`] is.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// The identity of a counter. Names are stable across reloads (ids from the config, not
/// positions), so counters survive a reload that reorders or edits the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// A plan's throttle for one method of one stage, per key.
    PlanMethod {
        plan: Arc<str>,
        key: Arc<str>,
        method: Arc<str>,
    },
    /// A plan's throttle, per key, shared by every stage and method of the plan.
    Plan { plan: Arc<str>, key: Arc<str> },
    /// A plan's quota, per key, for the window starting at `window_start`.
    Quota {
        plan: Arc<str>,
        key: Arc<str>,
        window_start: Nanos,
    },
    /// A stage method's throttle, shared by all callers. `method` names api, stage and method.
    StageMethod { method: Arc<str> },
    /// The account-wide throttle.
    Account,
    /// Daily usage of a plan by a key (for usage reports), for the UTC day starting at
    /// `day_start`. Never refuses.
    Usage {
        plan: Arc<str>,
        key: Arc<str>,
        day_start: Nanos,
    },
}

impl LimitKey {
    /// A stable text name, used for Redis keys and persisted counters. `|` cannot occur in plan
    /// or key ids; a method name, which may contain anything, always comes last.
    pub fn name(&self) -> String {
        match self {
            LimitKey::PlanMethod { plan, key, method } => format!("b|pm|{plan}|{key}|{method}"),
            LimitKey::Plan { plan, key } => format!("b|p|{plan}|{key}"),
            LimitKey::Quota {
                plan,
                key,
                window_start,
            } => format!("q|{plan}|{key}|{}", window_start.div_euclid(NANOS_PER_SEC)),
            LimitKey::StageMethod { method } => format!("b|s|{method}"),
            LimitKey::Account => "b|a".to_owned(),
            LimitKey::Usage {
                plan,
                key,
                day_start,
            } => format!("u|{plan}|{key}|{}", day_start.div_euclid(NANOS_PER_SEC)),
        }
    }

    /// Reads back a quota or usage counter's name (the persisted kinds).
    pub fn parse_counter(name: &str) -> Option<LimitKey> {
        let mut parts = name.split('|');
        let kind = parts.next()?;
        let plan: Arc<str> = Arc::from(parts.next()?);
        let key: Arc<str> = Arc::from(parts.next()?);
        let secs: i64 = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        let start = secs.checked_mul(NANOS_PER_SEC)?;
        match kind {
            "q" => Some(LimitKey::Quota {
                plan,
                key,
                window_start: start,
            }),
            "u" => Some(LimitKey::Usage {
                plan,
                key,
                day_start: start,
            }),
            _ => None,
        }
    }
}

/// What kind of counter a limit is and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitSpec {
    Bucket(BucketSpec),
    Quota(QuotaSpec),
    /// A usage counter, kept until `retain_until`.
    Usage {
        retain_until: Nanos,
    },
}

/// One limit of a request: which counter, and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitRef {
    pub key: LimitKey,
    pub spec: LimitSpec,
}

/// The state of one limit as the store saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    /// Whether this limit alone would admit the request.
    pub admitted: bool,
    /// Units left after this request (if the request was admitted) or now (if refused).
    pub remaining: u64,
    /// Nanoseconds until the limit is whole again: a bucket full, a quota window over. `None`:
    /// never (a bucket that does not refill).
    pub reset_after: Option<Nanos>,
    /// When refused: nanoseconds until the request could be admitted by this limit (`None`:
    /// never, e.g. more hits than the burst).
    pub retry_after: Option<Nanos>,
}

impl LimitRef {
    /// The quota counter of `key` in `plan` for the window of `spec`.
    pub fn quota(plan: Arc<str>, key: Arc<str>, spec: QuotaSpec) -> LimitRef {
        LimitRef {
            key: LimitKey::Quota {
                plan,
                key,
                window_start: spec.window.start,
            },
            spec: LimitSpec::Quota(spec),
        }
    }

    /// The daily usage counter of `key` in `plan` for the UTC day containing `now`, kept for
    /// `retention_days` after that day.
    pub fn usage(plan: Arc<str>, key: Arc<str>, now: Nanos, retention_days: u32) -> LimitRef {
        // A day does not depend on the week's first day.
        let day = quota::window(Period::Day, chrono::Weekday::Mon, now);
        let keep = i64::from(retention_days).saturating_mul(86_400 * NANOS_PER_SEC);
        LimitRef {
            key: LimitKey::Usage {
                plan,
                key,
                day_start: day.start,
            },
            spec: LimitSpec::Usage {
                retain_until: day.end.saturating_add(keep),
            },
        }
    }
}

/// A count kept as a level (quota and usage counters count whole units).
pub fn count(level: u128) -> u64 {
    u64::try_from(level).unwrap_or(u64::MAX)
}

/// A quota counter's used count, which is signed: below zero after an UpdateUsage that granted
/// more than the limit (AWS's temporary extension). Stores keep it as a 64-bit two's complement
/// in the unsigned level (memory, the persisted file) or as Redis's signed integer.
pub fn quota_used(level: u128) -> i64 {
    count(level) as i64
}

/// The level that stores keep for a quota counter's used count.
pub fn quota_level(used: i64) -> u128 {
    u128::from(used as u64)
}

impl LimitSpec {
    /// The state of a counter found at `level` — a bucket's level in units, refilled up to
    /// `now`, or a count of units — for a request of `need` units (at least 1), before any
    /// charge.
    #[inline] // Called per limit in every store's loop.
    pub fn check(&self, level: u128, need: u64, now: Nanos) -> LimitState {
        match self {
            LimitSpec::Bucket(spec) => {
                let admitted = BucketSpec::admits(level, need);
                LimitState {
                    admitted,
                    remaining: BucketSpec::remaining(level),
                    reset_after: spec.time_to_full(level),
                    retry_after: if admitted {
                        None
                    } else {
                        spec.retry_after(level, need)
                    },
                }
            }
            LimitSpec::Quota(spec) => {
                let used = quota_used(level);
                let admitted = spec.admits(used, need);
                let until_end = spec.window.end.saturating_sub(now).max(0);
                LimitState {
                    admitted,
                    remaining: spec.remaining(used),
                    reset_after: Some(until_end),
                    retry_after: (!admitted).then_some(until_end),
                }
            }
            // A usage counter never refuses; `remaining` reports the count.
            LimitSpec::Usage { .. } => LimitState {
                admitted: true,
                remaining: count(level),
                reset_after: None,
                retry_after: None,
            },
        }
    }

    /// Charges `hits` units to a counter found at `level`: the level to keep, the state to
    /// report, and when the kept counter stops mattering. Call only when every limit of the
    /// request admitted it.
    #[inline] // Called per limit in every store's loop.
    pub fn charge(&self, level: u128, hits: u64, now: Nanos) -> Charged {
        let admitted = |remaining, reset_after| LimitState {
            admitted: true,
            remaining,
            reset_after,
            retry_after: None,
        };
        match self {
            LimitSpec::Bucket(spec) => {
                let after = BucketSpec::take(level, hits);
                let to_full = spec.time_to_full(after);
                Charged {
                    level: after,
                    state: admitted(BucketSpec::remaining(after), to_full),
                    // Full again, it is the same as a bucket never seen.
                    expires_at: to_full.map(|t| now.saturating_add(t)),
                }
            }
            LimitSpec::Quota(spec) => {
                let used =
                    quota_used(level).saturating_add(i64::try_from(hits).unwrap_or(i64::MAX));
                let until_end = spec.window.end.saturating_sub(now).max(0);
                Charged {
                    level: quota_level(used),
                    state: admitted(spec.remaining(used), Some(until_end)),
                    // A window that has ended is never read again.
                    expires_at: Some(spec.window.end),
                }
            }
            LimitSpec::Usage { retain_until } => {
                let used = count(level).saturating_add(hits);
                Charged {
                    level: u128::from(used),
                    state: admitted(used, None),
                    expires_at: Some(*retain_until),
                }
            }
        }
    }
}

/// A counter after a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charged {
    /// The level to keep.
    pub level: u128,
    /// What the limit reports.
    pub state: LimitState,
    /// When the kept counter stops mattering and may be forgotten without changing any answer:
    /// a bucket once full again, a quota once its window ends, a usage count after its
    /// retention. `None`: never (a bucket that does not refill).
    pub expires_at: Option<Nanos>,
}

#[cfg(test)]
mod tests;
