//! The in-memory store: exact under any concurrency, bounded in memory, optionally persisted.
//!
//! One mutex guards all counters. Every request charges the account bucket, and most charge a
//! shared stage-method bucket too, so requests serialize on those counters whatever the locking
//! scheme; one lock makes all-or-nothing charging trivially atomic and costs a few tens of
//! nanoseconds uncontended.
//!
//! Memory stays bounded without changing any answer: a bucket that has refilled to capacity is
//! the same as a bucket never seen, and a quota counter of a window that has ended is never read
//! again, so both can be dropped (usage counters are kept for their retention). A sweep runs
//! whenever the map has doubled since the last one, which keeps its cost amortized O(1) per
//! insert and the map at most twice the live set, and at least every 10 s of traffic, so that
//! memory falls again after a peak.
//!
//! Persistence (`with_persistence`): quota and usage counters are written to an embedded
//! database (see `persist`) every flush interval and at shutdown, and read back at start.
//! Buckets are not persisted: after a restart they start full, which AWS's own throttles do too.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::backend::{Charge, Decided, Mode, Store, Units, UsageRow, quota_of};
use super::catalog::{Changes, MemoryCatalog, Record, Written};
use super::error::{StoreError, StoreErrorKind};
use super::persist::Persistence;
use crate::clock::{NANOS_PER_SEC, Nanos};
use crate::limit::{BucketState, FastMap, FastSet, LimitKey, LimitRef, LimitSpec, count};

const MIN_SWEEP: usize = 4096;
/// Requests with up to this many limits keep their levels on the stack.
const STACK_LIMITS: usize = 8;
/// Also sweep this often (when there is anything to sweep), so memory falls after a peak.
const SWEEP_INTERVAL: Nanos = 10 * crate::clock::NANOS_PER_SEC;

/// Counters in this process's memory.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    persistence: Option<Arc<Persistence>>,
    /// The runtime catalog; its writes are on disk before they are applied here.
    catalog: Mutex<MemoryCatalog>,
}

struct Inner {
    cells: FastMap<LimitKey, Cell>,
    sweep_at: usize,
    last_sweep: Nanos,
    /// Persisted counters changed since the last flush (only with persistence).
    dirty: FastSet<LimitKey>,
    /// Initial periods (see [`Store::initial_period`]), and those not yet written.
    initial: HashMap<String, Nanos>,
    initial_dirty: Vec<(String, Nanos)>,
}

/// A counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cell {
    /// A bucket and the time it will be full again if nothing charges it (`Nanos::MAX`: never).
    Bucket { state: BucketState, full_at: Nanos },
    /// A quota or usage counter, and when it stops mattering.
    Count { used: u64, until: Nanos },
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            inner: Mutex::new(Inner {
                cells: FastMap::default(),
                sweep_at: MIN_SWEEP,
                last_sweep: 0,
                dirty: FastSet::default(),
                initial: HashMap::new(),
                initial_dirty: Vec::new(),
            }),
            persistence: None,
            catalog: Mutex::new(MemoryCatalog::default()),
        }
    }

    /// A store whose quota and usage counters live on in `persistence`; loads what it holds.
    pub fn with_persistence(persistence: Arc<Persistence>, now: Nanos) -> Result<Self, StoreError> {
        let store = MemoryStore {
            persistence: Some(persistence.clone()),
            ..MemoryStore::new()
        };
        let loaded = persistence.load(now)?;
        *store.catalog.lock() = MemoryCatalog::at(persistence.catalog_head()?);
        let mut inner = store.inner.lock();
        for (key, used, until) in loaded.counters {
            inner.cells.insert(key, Cell::Count { used, until });
        }
        inner.initial.extend(loaded.initial);
        drop(inner);
        Ok(store)
    }

    /// The synchronous core of [`Store::decide`].
    pub fn decide_now(
        &self,
        limits: &[LimitRef],
        units: Units<'_>,
        mode: Mode,
        now: Nanos,
    ) -> Charge {
        match units {
            Units::Same(n) => self.run(limits, |_| n.max(1), mode, now),
            Units::Each(units) => {
                // The same counter twice is one demand of the sum: merged first.
                let (merged, demand, slot) = super::backend::merge_demands(limits, units);
                let c = self.run(&merged, |i| demand[i], mode, now);
                Charge {
                    admitted: c.admitted,
                    states: slot.iter().map(|&i| c.states[i]).collect(),
                }
            }
        }
    }

    /// Checks `units_of(i)` units of each limit `i`; if all admit, charges them (or, in a dry
    /// run, reports the states a charge would leave, storing nothing).
    fn run(
        &self,
        limits: &[LimitRef],
        units_of: impl Fn(usize) -> u64,
        mode: Mode,
        now: Nanos,
    ) -> Charge {
        // The levels found, kept for the charge: on the stack for the usual handful of limits
        // (a request has at most six), which saves an allocation per decision.
        let mut on_stack = [0u128; STACK_LIMITS];
        let mut on_heap = Vec::new();
        let levels: &mut [u128] = if limits.len() <= STACK_LIMITS {
            &mut on_stack[..limits.len()]
        } else {
            on_heap.resize(limits.len(), 0);
            &mut on_heap
        };
        let mut inner = self.inner.lock();
        let mut states = Vec::with_capacity(limits.len());
        let mut admitted = true;
        for (i, (limit, slot)) in limits.iter().zip(levels.iter_mut()).enumerate() {
            let need = units_of(i);
            let level = match (&limit.spec, inner.cells.get(&limit.key)) {
                (LimitSpec::Bucket(spec), Some(Cell::Bucket { state, .. })) => {
                    spec.level_at(Some(*state), now)
                }
                (LimitSpec::Bucket(spec), _) => spec.level_at(None, now),
                (_, Some(Cell::Count { used, .. })) => u128::from(*used),
                (_, _) => 0,
            };
            let state = limit.spec.check(level, need, now);
            admitted &= state.admitted;
            states.push(state);
            *slot = level;
        }
        if admitted && mode == Mode::DryRun {
            for (i, ((limit, &level), state)) in limits
                .iter()
                .zip(levels.iter())
                .zip(states.iter_mut())
                .enumerate()
            {
                *state = limit.spec.charge(level, units_of(i), now).state;
            }
        }
        if admitted && mode == Mode::Charge {
            let persist = self.persistence.is_some();
            for (i, ((limit, &level), state)) in limits
                .iter()
                .zip(levels.iter())
                .zip(states.iter_mut())
                .enumerate()
            {
                let charged = limit.spec.charge(level, units_of(i), now);
                *state = charged.state;
                let (after, until) = (charged.level, charged.expires_at.unwrap_or(Nanos::MAX));
                let cell = match limit.spec {
                    LimitSpec::Bucket(_) => Cell::Bucket {
                        state: BucketState {
                            level: after,
                            last: now,
                        },
                        full_at: until,
                    },
                    LimitSpec::Quota(_) | LimitSpec::Usage { .. } => Cell::Count {
                        used: count(after),
                        until,
                    },
                };
                put(&mut inner.cells, &limit.key, cell);
                if persist && matches!(cell, Cell::Count { .. }) {
                    inner.dirty.insert(limit.key.clone());
                }
            }
            let len = inner.cells.len();
            if len >= inner.sweep_at
                || (len > MIN_SWEEP && now.saturating_sub(inner.last_sweep) >= SWEEP_INTERVAL)
            {
                inner.sweep(now);
            }
        }
        Charge { admitted, states }
    }

    /// Number of counters held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner.lock().cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The changed persisted counters and the new initial periods, taken out of the dirty sets.
    fn take_dirty(&self) -> (Vec<PersistedCount>, Vec<(String, Nanos)>) {
        let mut inner = self.inner.lock();
        // The next set starts at this one's size: a set grown from empty again would rehash
        // on the request path (several times per flush interval under load).
        let size = inner.dirty.len();
        let dirty = std::mem::replace(
            &mut inner.dirty,
            FastSet::with_capacity_and_hasher(size, Default::default()),
        );
        let counters = dirty
            .into_iter()
            .filter_map(|k| match inner.cells.get(&k) {
                Some(Cell::Count { used, until }) => Some((k, *used, *until)),
                _ => None,
            })
            .collect();
        (counters, std::mem::take(&mut inner.initial_dirty))
    }
}

/// A persisted counter: its key, used count, and when it stops mattering.
type PersistedCount = (LimitKey, u64, Nanos);

/// Sets a cell, in place when it exists (no key clone, one lookup). A bucket's time never runs
/// backwards: a request whose `now` was taken before another's that charged first (threads,
/// replicas' clocks) refilled nothing, and storing its earlier time would refill that interval
/// a second time.
fn put(cells: &mut FastMap<LimitKey, Cell>, key: &LimitKey, mut cell: Cell) {
    match cells.get_mut(key) {
        Some(c) => {
            if let (
                Cell::Bucket {
                    state: new,
                    full_at,
                },
                Cell::Bucket { state: old, .. },
            ) = (&mut cell, &*c)
                && old.last > new.last
            {
                *full_at = full_at.saturating_add(old.last - new.last);
                new.last = old.last;
            }
            *c = cell
        }
        None => {
            cells.insert(key.clone(), cell);
        }
    }
}

impl Inner {
    /// Drops every counter whose absence means the same as its presence: buckets that are full
    /// again, quota counters of windows that have ended, usage past its retention. (A bucket's
    /// refill time is computed with the parameters of its last charge; after a reload that
    /// lowers a rate, an idle bucket is forgotten at the old refill time, which can only err
    /// towards a full bucket.)
    fn sweep(&mut self, now: Nanos) {
        self.cells.retain(|_, cell| match cell {
            Cell::Bucket { full_at, .. } => *full_at > now,
            Cell::Count { until, .. } => *until > now,
        });
        self.sweep_at = (self.cells.len() * 2).max(MIN_SWEEP);
        self.last_sweep = now;
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn decide(
        &self,
        limits: &[LimitRef],
        units: Units<'_>,
        mode: Mode,
        now: Nanos,
    ) -> Decided {
        Ok(self.decide_now(limits, units, mode, now))
    }

    fn decide_at_once(
        &self,
        limits: &[LimitRef],
        units: Units<'_>,
        mode: Mode,
        now: Nanos,
    ) -> Option<Decided> {
        Some(Ok(self.decide_now(limits, units, mode, now)))
    }

    async fn usage(
        &self,
        plan: &str,
        keys: &[Arc<str>],
        from: Nanos,
        to: Nanos,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let inner = self.inner.lock();
        // A few keys' days are looked up one by one; many keys' found by one pass over every
        // counter (a key's page at a million keys must not read them all).
        let day = 86_400 * NANOS_PER_SEC;
        let first = from.div_euclid(day) * day;
        let days = ((to - first).max(0) / day + 1) as usize;
        if keys.len().saturating_mul(days) <= inner.cells.len() / 8 {
            let plan: Arc<str> = Arc::from(plan);
            let mut rows = Vec::new();
            for key in keys {
                for d in (0..days as i64).map(|n| first + n * day) {
                    if !(from..to).contains(&d) {
                        continue;
                    }
                    let k = LimitKey::Usage {
                        plan: plan.clone(),
                        key: key.clone(),
                        day_start: d,
                    };
                    if let Some(Cell::Count { used, .. }) = inner.cells.get(&k) {
                        rows.push(UsageRow {
                            key: key.to_string(),
                            day_start: d,
                            used: *used,
                        });
                    }
                }
            }
            return Ok(rows);
        }
        Ok(inner
            .cells
            .iter()
            .filter_map(|(k, c)| match (k, c) {
                (
                    LimitKey::Usage {
                        plan: p,
                        key,
                        day_start,
                    },
                    Cell::Count { used, .. },
                ) if &**p == plan && (from..to).contains(day_start) => Some(UsageRow {
                    key: key.to_string(),
                    day_start: *day_start,
                    used: *used,
                }),
                _ => None,
            })
            .collect())
    }

    async fn set_used(&self, limit: &LimitRef, used: i64, _now: Nanos) -> Result<(), StoreError> {
        let q = quota_of(limit)?;
        let mut inner = self.inner.lock();
        inner.cells.insert(
            limit.key.clone(),
            Cell::Count {
                // Below zero: kept as its two's complement (see `limit::quota_used`).
                used: count(crate::limit::quota_level(used)),
                until: q.window.end,
            },
        );
        if self.persistence.is_some() {
            inner.dirty.insert(limit.key.clone());
        }
        Ok(())
    }

    fn persists(&self) -> bool {
        self.persistence.is_some()
    }

    async fn catalog_write(
        &self,
        expected: u64,
        records: &[Record],
    ) -> Result<Written, StoreError> {
        let mut catalog = self.catalog.lock();
        let written = catalog.check(expected, records)?;
        if let (Written::Applied(head), Some(p)) = (written, &self.persistence) {
            // On disk first (a commit of one small transaction, under the catalog's lock: writes
            // are serialized anyway).
            p.write_catalog(head, records)?;
        }
        if let Written::Applied(_) = written {
            catalog.apply(records.to_vec());
        }
        Ok(written)
    }

    async fn catalog_read(&self, after: u64) -> Result<Changes, StoreError> {
        if let Some(changes) = self.catalog.lock().since(after) {
            return Ok(changes);
        }
        // Behind the log: the records on disk (written before each write was applied).
        let Some(p) = &self.persistence else {
            return Err(StoreError::new(
                StoreErrorKind::Unsupported,
                "the in-memory catalog's log no longer reaches back that far (one catalog reads a memory store)",
            ));
        };
        let (head, records) = p.load_catalog()?;
        Ok(Changes::whole(head, records))
    }

    async fn initial_period(&self, name: &str, start: Nanos) -> Result<Nanos, StoreError> {
        let mut inner = self.inner.lock();
        if let Some(&recorded) = inner.initial.get(name) {
            return Ok(recorded);
        }
        inner.initial.insert(name.to_owned(), start);
        if self.persistence.is_some() {
            // Written with the next flush, as the counters are.
            inner.initial_dirty.push((name.to_owned(), start));
        }
        Ok(start)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let Some(p) = &self.persistence else {
            return Ok(());
        };
        let (dirty, initial) = self.take_dirty();
        if dirty.is_empty() && initial.is_empty() {
            return Ok(());
        }
        let keys: Vec<LimitKey> = dirty.iter().map(|(k, _, _)| k.clone()).collect();
        let p = p.clone();
        let result = tokio::task::spawn_blocking(move || {
            let r = p.write(&dirty, &initial);
            (r, initial)
        })
        .await
        .map_err(|e| StoreError::caused_by(StoreErrorKind::Disk, "flush task failed", e))?;
        let (result, initial) = result;
        if result.is_err() {
            // Written values are absolute counts: marking the keys dirty again makes the next
            // flush write their current values, so a failed flush loses nothing.
            let mut inner = self.inner.lock();
            inner.dirty.extend(keys);
            inner.initial_dirty.extend(initial);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::limit::BucketSpec;

    fn bucket(name: &str, rate_micro: u64, burst: u64) -> LimitRef {
        LimitRef {
            key: LimitKey::Plan {
                plan: Arc::from("p"),
                key: Arc::from(name),
            },
            spec: LimitSpec::Bucket(BucketSpec { rate_micro, burst }),
        }
    }

    #[test]
    fn idle_buckets_are_evicted_and_memory_stays_bounded() {
        let store = MemoryStore::new();
        let sec = 1_000_000_000i64;
        // 100,000 distinct keys, one request each, one per 10 µs: at 1 token/s with burst 1,
        // each bucket is full again 1 s after its request.
        for i in 0..100_000i64 {
            let l = [bucket(&format!("k{i}"), 1_000_000, 1)];
            assert!(
                store
                    .decide_now(&l, Units::Same(1), Mode::Charge, i * 10_000)
                    .admitted
            );
        }
        // At most 1 s of keys (100,000 here) are live; the map never held more than twice the
        // live set plus the sweep floor.
        assert!(store.len() <= 2 * 100_000 + MIN_SWEEP);
        // Later traffic sweeps the idle ones away.
        let t = 20 * sec;
        for i in 0..(MIN_SWEEP as i64 * 2) {
            let l = [bucket(&format!("late{i}"), 1_000_000, 1)];
            store.decide_now(&l, Units::Same(1), Mode::Charge, t + i);
        }
        assert!(store.len() < 3 * MIN_SWEEP, "{} cells", store.len());
    }

    #[test]
    fn eviction_changes_no_answer() {
        let store = MemoryStore::new();
        let l = [bucket("a", 1_000_000, 2)];
        assert!(
            store
                .decide_now(&l, Units::Same(2), Mode::Charge, 0)
                .admitted
        );
        assert!(
            !store
                .decide_now(&l, Units::Same(1), Mode::Charge, 0)
                .admitted
        );
        // Full again after 2 s: whether or not the cell was dropped, 2 tokens are there.
        let mut inner = store.inner.lock();
        inner.sweep(2_000_000_000);
        assert!(inner.cells.is_empty());
        drop(inner);
        assert!(
            store
                .decide_now(&l, Units::Same(2), Mode::Charge, 2_000_000_000)
                .admitted
        );
    }
}
