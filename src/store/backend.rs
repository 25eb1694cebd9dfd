//! The counter store's contract: one semantic operation, [`Store::decide`], that checks
//! every limit of a request and charges them all only if all admit. One operation (not
//! get-then-set) is what lets a shared store do the whole decision atomically in one round trip.

use async_trait::async_trait;

use super::catalog::{Changes, Record, Written};
use super::error::StoreError;
use crate::clock::Nanos;
use crate::limit::{LimitRef, LimitState};

/// One day of one key's usage of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub key: String,
    pub day_start: Nanos,
    pub used: u64,
}

/// The store's answer for a whole request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// True only if every limit admitted; then every limit was charged.
    pub admitted: bool,
    /// One state per limit, in the order given.
    pub states: Vec<LimitState>,
}

/// What a decision does once every limit admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Charges every limit its units.
    Charge,
    /// Stores nothing and reports the states found (RLS `hits_addend: 0`: would the units be
    /// admitted?).
    Probe,
    /// Stores nothing and reports the states a charge would leave (Explain: exactly what
    /// `Charge` would answer).
    DryRun,
}

/// How many units of each limit a decision needs.
#[derive(Debug, Clone, Copy)]
pub enum Units<'a> {
    /// The same for every limit (0 counts as 1).
    Same(u64),
    /// `units[i]` for `limits[i]` (each at least 1); the same counter given twice is one demand
    /// of the sum (one RLS request of several descriptors).
    Each(&'a [u64]),
}

/// A decision's answer from the store.
pub type Decided = Result<Charge, StoreError>;

/// A place where counters live.
#[async_trait]
pub trait Store: Send + Sync {
    /// Decides `limits` at `now`, each for its [`Units`]. If any refuses, nothing is stored;
    /// once every limit admits, `mode` says what happens (see [`Mode`]). The one way to decide:
    /// ext_authz and RLS charge, RLS `hits_addend: 0` probes, Explain dry-runs.
    async fn decide(
        &self,
        limits: &[LimitRef],
        units: Units<'_>,
        mode: Mode,
        now: Nanos,
    ) -> Decided;

    /// The same as [`Store::decide`], for a store that decides without waiting (in memory):
    /// the answer path asks here first and saves `decide`'s boxed future. `None`: ask `decide`.
    fn decide_at_once(
        &self,
        _limits: &[LimitRef],
        _units: Units<'_>,
        _mode: Mode,
        _now: Nanos,
    ) -> Option<Decided> {
        None
    }

    /// Each limit's state at `now`, storing nothing (usage reports: a quota's remaining).
    async fn read(&self, limits: &[LimitRef], now: Nanos) -> Result<Vec<LimitState>, StoreError> {
        Ok(self
            .decide(limits, Units::Same(1), Mode::Probe, now)
            .await?
            .states)
    }

    /// Whether the store is reachable (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether the store has been reached since start (a store that did not answer at start is
    /// [`super::Deferred`] until it does): gRPC health says NOT_SERVING until then.
    fn connected(&self) -> bool {
        true
    }

    /// Daily usage of `plan` by `keys` (the plan's keys; a store may also report others), for
    /// days starting in `[from, to)`, in no particular order.
    async fn usage(
        &self,
        plan: &str,
        keys: &[std::sync::Arc<str>],
        from: Nanos,
        to: Nanos,
    ) -> Result<Vec<UsageRow>, StoreError>;

    /// How many days of daily usage are kept (stores that keep it by lifetime: Redis).
    fn set_usage_retention_days(&self, _days: u32) {}

    /// Sets a quota counter's used count (AWS UpdateUsage). `limit` must be a quota. Below zero
    /// when the remaining was set above the limit (AWS's temporary extension for the period).
    async fn set_used(&self, limit: &LimitRef, used: i64, now: Nanos) -> Result<(), StoreError>;

    /// The start of the initial period recorded under `name` (a plan's quota: see
    /// `engine::resolve_initial_periods`); when none is, records `start` and returns it. The
    /// first record wins for good: across replicas for a shared store, across restarts for a
    /// persisted one (written with the counters' next flush).
    async fn initial_period(&self, name: &str, start: Nanos) -> Result<Nanos, StoreError>;

    /// Writes what must survive a restart (persisted stores); a no-op elsewhere.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether [`Store::flush`] writes anything (a memory store with a data directory).
    fn persists(&self) -> bool {
        false
    }

    /// Applies `records` to the runtime catalog as one write, durably, if the catalog's head
    /// is still `expected` (see [`super::catalog`]).
    async fn catalog_write(
        &self,
        _expected: u64,
        _records: &[Record],
    ) -> Result<Written, StoreError> {
        Err(no_catalog())
    }

    /// The runtime catalog's writes after `after`, or all of it (`after` 0, or a log that no
    /// longer reaches back).
    async fn catalog_read(&self, _after: u64) -> Result<Changes, StoreError> {
        Err(no_catalog())
    }
}

fn no_catalog() -> StoreError {
    StoreError::new(
        super::error::StoreErrorKind::Unsupported,
        "this store keeps no runtime catalog",
    )
}

/// The quota of a limit, for operations that only take quotas.
pub(crate) fn quota_of(limit: &LimitRef) -> Result<&crate::limit::QuotaSpec, StoreError> {
    match &limit.spec {
        crate::limit::LimitSpec::Quota(q) => Ok(q),
        _ => Err(StoreError::new(
            super::error::StoreErrorKind::Unsupported,
            "set_used takes a quota",
        )),
    }
}

/// Limits with units for each, the same counter merged into one demand of the sum: (the
/// distinct limits, their units, the index in them of each given limit).
pub(crate) fn merge_demands(
    limits: &[LimitRef],
    units: &[u64],
) -> (Vec<LimitRef>, Vec<u64>, Vec<usize>) {
    let mut merged: Vec<LimitRef> = Vec::with_capacity(limits.len());
    let mut demand: Vec<u64> = Vec::with_capacity(limits.len());
    let mut slot = Vec::with_capacity(limits.len());
    for (l, &u) in limits.iter().zip(units) {
        match merged.iter().position(|m| m.key == l.key) {
            Some(i) => {
                demand[i] = demand[i].saturating_add(u.max(1));
                slot.push(i);
            }
            None => {
                slot.push(merged.len());
                merged.push(l.clone());
                demand.push(u.max(1));
            }
        }
    }
    (merged, demand, slot)
}
