//! The counter store: one semantic operation, [`Store::check_and_charge`], that checks every limit
//! of a request and charges them all only if all admit. One operation (not get-then-set) is what
//! lets a shared store do the whole decision atomically in one round trip.

use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::{NANOS_PER_SEC, Nanos};
use crate::engine::bucket::BucketSpec;
use crate::engine::quota::QuotaSpec;

pub mod memory;
pub mod persist;
pub mod redis;

pub use memory::MemoryStore;
pub use redis::{RedisOptions, RedisStore};

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

/// One day of one key's usage of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub key: String,
    pub day_start: Nanos,
    pub used: u64,
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

/// One limit of a request.
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

/// The store's answer for a whole request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// True only if every limit admitted; then every limit was charged.
    pub admitted: bool,
    /// One state per limit, in the order given.
    pub states: Vec<LimitState>,
}

/// A store failure. `transient` says whether retrying may help (a connection drop) or not (a
/// script error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("counter store error: {message}")]
pub struct StoreError {
    pub message: String,
    pub transient: bool,
}

/// A place where counters live.
#[async_trait]
pub trait Store: Send + Sync {
    /// Checks every limit at `now` for `hits` units. If all admit, charges them all; if any
    /// refuses, charges nothing. `hits == 0` asks whether one unit would be admitted, charging
    /// nothing (RLS `hits_addend: 0`).
    async fn check_and_charge(
        &self,
        limits: &[LimitRef],
        hits: u64,
        now: Nanos,
    ) -> Result<Charge, StoreError>;

    /// Whether the store is reachable (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Daily usage of `plan`, for days starting in `[from, to)`, in no particular order.
    async fn usage(&self, plan: &str, from: Nanos, to: Nanos) -> Result<Vec<UsageRow>, StoreError>;

    /// Sets a quota counter's used count (AWS UpdateUsage). `limit` must be a quota.
    async fn set_used(&self, limit: &LimitRef, used: u64, now: Nanos) -> Result<(), StoreError>;

    /// Writes what must survive a restart (persisted stores); a no-op elsewhere.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The quota of a limit, for operations that only take quotas.
pub(crate) fn quota_of(limit: &LimitRef) -> Result<&QuotaSpec, StoreError> {
    match &limit.spec {
        LimitSpec::Quota(q) => Ok(q),
        _ => Err(StoreError {
            message: "set_used takes a quota".into(),
            transient: false,
        }),
    }
}

/// The state of a quota counter with `used` units counted, for `need` more.
pub(crate) fn quota_state(spec: &QuotaSpec, used: u64, need: u64, now: Nanos) -> LimitState {
    let admitted = used.saturating_add(need) <= spec.limit;
    let left = spec.limit.saturating_sub(used);
    LimitState {
        admitted,
        remaining: left,
        reset_after: Some(spec.window.end.saturating_sub(now).max(0)),
        retry_after: (!admitted).then(|| spec.window.end.saturating_sub(now).max(0)),
    }
}

/// The state of a bucket at `level` units, for `need` tokens.
pub(crate) fn bucket_state(spec: &BucketSpec, level: u128, need: u64) -> LimitState {
    let admitted = level >= u128::from(need) * crate::engine::bucket::UNITS_PER_TOKEN;
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
