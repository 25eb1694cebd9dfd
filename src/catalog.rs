//! The runtime catalog: API keys, usage plans and plan memberships made through the control
//! plane (AWS's `CreateApiKey`, `CreateUsagePlan`, `CreateUsagePlanKey`, …), beside those of
//! the configuration file.
//!
//! Where it lives: in the counter store ([`crate::store::catalog`]) — the embedded store's file,
//! Redis, Redis Cluster — as records and a numbered log of writes. Every replica holds the whole
//! catalog in memory and follows the log ([`Catalog::follow`]): a change made on one replica is
//! applied by the others within one poll interval, and one that starts or reconnects reads what
//! it missed (the whole catalog when the log no longer reaches back).
//!
//! Order: writes are serialized by the store (each names the head it was validated against;
//! a stale one is validated again on the newer catalog), so every replica applies the same
//! writes in the same order, and two replicas changing one object at once both apply, one
//! after the other (the later patch sees the earlier's result).
//!
//! Cost: a change touches only the objects it names (O(1) in the number of keys); a decision
//! looks a runtime key up in a concurrent map after the file's keys, and a runtime plan in a
//! small table rebuilt when a plan changes.

pub mod error;
pub mod ops;
pub mod records;
pub mod views;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;

use crate::limit::quota::{Period, Quota};
use crate::snapshot::{KeyHash, Plan, Throttle};
use crate::store::catalog::{Changes, Record, Written};
use crate::store::{Store, StoreError};
pub use error::{CatalogError, ErrorKind};
use records::{ApiKeyRecord, Named, UsagePlanRecord, parse_name};

/// A runtime key, as decisions need it: held in the map by value hash itself (no allocation of
/// its own), its first plan inline (most keys have one), so that a decision reads one entry.
#[derive(Debug)]
pub struct RuntimeKey {
    pub id: Arc<str>,
    pub enabled: bool,
    pub customer_id: Option<Arc<str>>,
    /// The plans it is in (runtime or file plans), by id: the first, and any others.
    first_plan: Option<Arc<str>>,
    more_plans: Box<[Arc<str>]>,
}

impl RuntimeKey {
    /// The ids of its plans.
    pub fn plans(&self) -> impl Iterator<Item = &Arc<str>> {
        self.first_plan.iter().chain(self.more_plans.iter())
    }
}

/// A runtime plan, as decisions need it: its limits, and its stages by name (so that a reload
/// that renumbers stages needs no recompile of runtime plans).
#[derive(Debug)]
pub struct RuntimePlan {
    /// Id, name, throttle, quota; `stages` empty (see `stages` here).
    pub plan: Plan,
    pub stages: Vec<RuntimeStage>,
}

#[derive(Debug)]
pub struct RuntimeStage {
    pub api: Arc<str>,
    pub stage: Arc<str>,
    /// Per-method throttles by method key (`/pets/GET`).
    pub methods: Vec<(Arc<str>, Throttle)>,
}

impl RuntimePlan {
    /// This plan's per-method throttles on `api`/`stage`, when it covers that stage.
    pub fn on_stage(&self, api: &str, stage: &str) -> Option<&RuntimeStage> {
        self.stages
            .iter()
            .find(|s| &*s.api == api && &*s.stage == stage)
    }
}

/// The catalog's objects, as of write `head`.
#[derive(Default)]
pub struct State {
    pub head: u64,
    pub keys: BTreeMap<String, ApiKeyRecord>,
    pub plans: BTreeMap<String, UsagePlanRecord>,
    /// (plan id, key id).
    pub members: BTreeSet<(String, String)>,
    /// (key id, plan id): the same, by key.
    pub key_plans: BTreeSet<(String, String)>,
    /// (name, key id) and (customer id, key id) of the keys that have one: the console's
    /// searches by name prefix and by customer, a page at a time at any number of keys.
    pub by_name: BTreeSet<(String, String)>,
    pub by_customer: BTreeSet<(String, String)>,
    /// The runtime keys as decisions see them, by value hash (the map [`Catalog::key`] reads):
    /// also how a value already taken is found.
    pub by_hash: Arc<KeyMap>,
}

impl State {
    /// The plans of runtime key `key`.
    pub fn plans_of<'s>(&'s self, key: &str) -> impl Iterator<Item = &'s str> + 's {
        let key = key.to_owned();
        let from = (key.clone(), String::new());
        self.key_plans
            .range(from..)
            .take_while(move |(k, _)| *k == key)
            .map(|(_, p)| p.as_str())
    }

    /// The runtime keys in plan `plan`.
    pub fn keys_of<'s>(&'s self, plan: &str) -> impl Iterator<Item = &'s str> + 's {
        let plan = plan.to_owned();
        let from = (plan.clone(), String::new());
        self.members
            .range(from..)
            .take_while(move |(p, _)| *p == plan)
            .map(|(_, k)| k.as_str())
    }
}

pub type KeyMap = DashMap<KeyHash, RuntimeKey, foldhash::fast::RandomState>;
type PlanMap = HashMap<Arc<str>, Arc<RuntimePlan>, foldhash::fast::RandomState>;

/// The runtime catalog of one replica.
pub struct Catalog {
    store: Arc<dyn Store>,
    state: parking_lot::RwLock<State>,
    /// For decisions: runtime keys by value hash (replaced whole only when the whole catalog is
    /// read again).
    keys: ArcSwap<KeyMap>,
    plans: ArcSwap<PlanMap>,
    /// One write or catch-up at a time on this replica.
    sync: tokio::sync::Mutex<()>,
    /// The newest head the store reported.
    seen: AtomicU64,
    applied_changes: AtomicU64,
    /// When the store's changes were last read successfully (nanoseconds, Unix).
    synced_at: std::sync::atomic::AtomicI64,
    /// Plan ids as the keys' plan lists share them.
    plan_ids: parking_lot::Mutex<HashMap<String, Arc<str>>>,
}

/// How often a replica asks the store for writes it has not applied.
pub const POLL: Duration = Duration::from_millis(200);

/// How often a stale write is prepared again before the caller is told to retry.
const ATTEMPTS: usize = 16;

impl Catalog {
    /// An empty catalog on `store` (see [`Catalog::load`]).
    pub fn new(store: Arc<dyn Store>) -> Self {
        let state = State::default();
        Catalog {
            store,
            keys: ArcSwap::new(state.by_hash.clone()),
            state: parking_lot::RwLock::new(state),
            plans: ArcSwap::from_pointee(PlanMap::default()),
            sync: tokio::sync::Mutex::new(()),
            seen: AtomicU64::new(0),
            applied_changes: AtomicU64::new(0),
            synced_at: std::sync::atomic::AtomicI64::new(0),
            plan_ids: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The catalog `store` holds, read whole. A store without a catalog gives an empty one.
    pub async fn load(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let catalog = Catalog::new(store);
        match catalog.catch_up().await {
            Err(e) if e.kind() == crate::store::StoreErrorKind::Unsupported => {}
            other => other?,
        }
        Ok(catalog)
    }

    /// `f` of the runtime key whose value hashes to `hash`, if there is one (run while the key
    /// is read: keep `f` short, and never call back into the catalog's writes from it).
    pub fn with_key<R>(&self, hash: &KeyHash, f: impl FnOnce(&RuntimeKey) -> R) -> Option<R> {
        self.keys.load().get(hash).map(|k| f(&k))
    }

    /// The runtime plan `id`.
    pub fn plan(&self, id: &str) -> Option<Arc<RuntimePlan>> {
        self.plans.load().get(id).cloned()
    }

    /// Reads the catalog's objects.
    pub fn read(&self) -> parking_lot::RwLockReadGuard<'_, State> {
        self.state.read()
    }

    /// The number of the last write applied here.
    pub fn head(&self) -> u64 {
        self.state.read().head
    }

    /// How many writes this replica is behind the newest the store reported.
    pub fn lag(&self) -> u64 {
        self.seen
            .load(Ordering::Relaxed)
            .saturating_sub(self.head())
    }

    /// When the store's changes were last read (nanoseconds since the epoch; 0: never).
    pub fn synced_at(&self) -> i64 {
        self.synced_at.load(Ordering::Relaxed)
    }

    /// Writes applied here since start (own and others').
    pub fn applied_changes(&self) -> u64 {
        self.applied_changes.load(Ordering::Relaxed)
    }

    /// Makes one change: `prepare` validates it against the catalog as it is and gives the
    /// records to write (and what to answer); the store applies them only on that same
    /// catalog, or the change is prepared again on the newer one. Nothing is applied here
    /// before the store has it.
    pub async fn write<T>(
        &self,
        prepare: impl Fn(&State) -> Result<(Vec<Record>, T), CatalogError>,
    ) -> Result<T, CatalogError> {
        let _one = self.sync.lock().await;
        for _ in 0..ATTEMPTS {
            let (head, records, out) = {
                let state = self.state.read();
                let (records, out) = prepare(&state)?;
                (state.head, records, out)
            };
            if records.is_empty() {
                return Ok(out);
            }
            match self.store.catalog_write(head, &records).await {
                Ok(Written::Applied(n)) => {
                    self.apply(n, records);
                    return Ok(out);
                }
                Ok(Written::Stale(n)) => {
                    self.seen.fetch_max(n, Ordering::Relaxed);
                    self.catch_up_locked().await.map_err(CatalogError::store)?;
                }
                Err(e) => return Err(CatalogError::store(e)),
            }
        }
        Err(CatalogError::new(
            ErrorKind::Unavailable,
            "the catalog is changing too fast on other replicas; try again",
        ))
    }

    /// Applies every write this replica has not.
    pub async fn catch_up(&self) -> Result<(), StoreError> {
        let _one = self.sync.lock().await;
        self.catch_up_locked().await
    }

    async fn catch_up_locked(&self) -> Result<(), StoreError> {
        let head = self.head();
        match self.store.catalog_read(head).await? {
            Changes::Since(writes) => {
                for (n, records) in writes {
                    if n > self.head() {
                        self.seen.fetch_max(n, Ordering::Relaxed);
                        self.apply(n, records);
                    }
                }
            }
            Changes::Whole { head, records } => {
                self.seen.fetch_max(head, Ordering::Relaxed);
                self.replace(head, records);
            }
        }
        self.synced_at.store(
            crate::clock::Clock::now(&crate::clock::SystemClock),
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// Follows the store's log until `stop`: every [`POLL`], the writes made elsewhere.
    pub async fn follow(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => return,
            }
            match self.catch_up().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(head = self.head(), "runtime catalog: caught up again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "runtime catalog: cannot read the store's changes; retrying");
                }
                Err(_) => {}
            }
        }
    }

    /// Applies write `n` (the next one).
    fn apply(&self, n: u64, records: Vec<Record>) {
        let mut state = self.state.write();
        if n <= state.head {
            return;
        }
        let keys = state.by_hash.clone();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut plans_changed = false;
        for r in records {
            match parse_name(&r.name) {
                Named::Key(id) => {
                    set_key(&mut state, &keys, id, r.value.as_deref());
                    touched.insert(id.to_owned());
                }
                Named::Plan(id) => {
                    set_plan(&mut state, id, r.value.as_deref());
                    plans_changed = true;
                }
                Named::Member { plan, key } => {
                    let (p, k) = (plan.to_owned(), key.to_owned());
                    if r.value.is_some() {
                        state.members.insert((p.clone(), k.clone()));
                        state.key_plans.insert((k.clone(), p));
                    } else {
                        state.members.remove(&(p.clone(), k.clone()));
                        state.key_plans.remove(&(k.clone(), p));
                    }
                    touched.insert(k);
                }
                Named::Other => {
                    tracing::warn!(record = %r.name, "runtime catalog: a record of no known kind, ignored");
                }
            }
        }
        for id in &touched {
            index_key(&state, &keys, id, &mut self.plan_ids.lock());
        }
        if plans_changed {
            self.plans.store(Arc::new(compile_plans(&state)));
        }
        state.head = n;
        self.applied_changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Replaces everything with `records`, as of write `head`.
    fn replace(&self, head: u64, records: Vec<Record>) {
        let mut fresh = State {
            head,
            ..State::default()
        };
        let keys = fresh.by_hash.clone();
        let mut members = Vec::new();
        for r in records {
            match parse_name(&r.name) {
                Named::Key(id) => set_key(&mut fresh, &keys, id, r.value.as_deref()),
                Named::Plan(id) => set_plan(&mut fresh, id, r.value.as_deref()),
                Named::Member { plan, key } => members.push((plan.to_owned(), key.to_owned())),
                Named::Other => {}
            }
        }
        for (p, k) in members {
            fresh.key_plans.insert((k.clone(), p.clone()));
            fresh.members.insert((p, k));
        }
        let ids: Vec<String> = fresh.keys.keys().cloned().collect();
        for id in &ids {
            index_key(&fresh, &keys, id, &mut self.plan_ids.lock());
        }
        let plans = compile_plans(&fresh);
        let mut state = self.state.write();
        *state = fresh;
        self.keys.store(keys);
        self.plans.store(Arc::new(plans));
        self.applied_changes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sets (or removes) key `id`'s record; keeps the value-hash index in step.
/// A changed key stays in the decisions' map until [`index_key`] replaces it: a request never
/// misses a key that is only being updated.
fn set_key(state: &mut State, keys: &KeyMap, id: &str, value: Option<&str>) {
    let new = value.and_then(|v| match serde_json::from_str::<ApiKeyRecord>(v) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::error!(key = id, error = %e, "runtime catalog: an unreadable key record, ignored");
            None
        }
    });
    let new_hash = new.as_ref().map(|r| r.value_sha256);
    if let Some(old) = state.keys.remove(id) {
        if Some(old.value_sha256) != new_hash {
            keys.remove(&old.value_sha256);
        }
        if let Some(n) = old.name {
            state.by_name.remove(&(n, id.to_owned()));
        }
        if let Some(c) = old.customer_id {
            state.by_customer.remove(&(c, id.to_owned()));
        }
    }
    if let Some(record) = new {
        if let Some(n) = &record.name {
            state.by_name.insert((n.clone(), id.to_owned()));
        }
        if let Some(c) = &record.customer_id {
            state.by_customer.insert((c.clone(), id.to_owned()));
        }
        state.keys.insert(id.to_owned(), record);
    }
}

fn set_plan(state: &mut State, id: &str, value: Option<&str>) {
    state.plans.remove(id);
    let Some(value) = value else { return };
    match serde_json::from_str::<UsagePlanRecord>(value) {
        Ok(record) => {
            state.plans.insert(id.to_owned(), record);
        }
        Err(e) => {
            tracing::error!(plan = id, error = %e, "runtime catalog: an unreadable plan record, ignored")
        }
    }
}

/// Puts key `id` as decisions see it into `keys` (or takes it out when it is gone).
fn index_key(state: &State, keys: &KeyMap, id: &str, plan_ids: &mut HashMap<String, Arc<str>>) {
    let Some(record) = state.keys.get(id) else {
        return;
    };
    // One allocation per plan id, shared by its keys.
    let mut plans = state.plans_of(id).map(|p| match plan_ids.get(p) {
        Some(shared) => shared.clone(),
        None => plan_ids.entry(p.to_owned()).or_insert(Arc::from(p)).clone(),
    });
    let first_plan = plans.next();
    let more_plans = plans.collect();
    keys.insert(
        record.value_sha256,
        RuntimeKey {
            id: id.into(),
            enabled: record.enabled,
            customer_id: record.customer_id.as_deref().map(Arc::from),
            first_plan,
            more_plans,
        },
    );
}

/// Every runtime plan, as decisions need it. A plan whose record no longer compiles (it was
/// valid when written) keeps no limits and is logged.
fn compile_plans(state: &State) -> PlanMap {
    state
        .plans
        .values()
        .filter_map(|p| match compile_plan(p) {
            Ok(plan) => Some((Arc::from(p.id.as_str()), Arc::new(plan))),
            Err(e) => {
                tracing::error!(plan = %p.id, error = %e, "runtime catalog: a plan that does not compile, ignored");
                None
            }
        })
        .collect()
}

/// A throttle from AWS's settings, as the configuration reads it.
pub fn throttle_of(t: &records::ThrottleSettings) -> Result<Throttle, String> {
    crate::config::compile::resolve_throttle(t.rate_limit, t.burst_limit).map_err(|errors| {
        errors
            .into_iter()
            .map(|(field, _, message)| {
                let field = match field {
                    "rate" => "rateLimit",
                    "burst" => "burstLimit",
                    _ => "throttle",
                };
                format!("{field}: {message}")
            })
            .collect::<Vec<_>>()
            .join("; ")
    })
}

pub fn period_of(p: &str) -> Option<Period> {
    match p {
        "DAY" => Some(Period::Day),
        "WEEK" => Some(Period::Week),
        "MONTH" => Some(Period::Month),
        _ => None,
    }
}

/// A plan record as decisions need it.
pub fn compile_plan(p: &UsagePlanRecord) -> Result<RuntimePlan, String> {
    let throttle = p.throttle.as_ref().map(throttle_of).transpose()?;
    let quota = match &p.quota {
        None => None,
        Some(q) => Some(Quota {
            limit: u64::try_from(q.limit).map_err(|_| "quota limit below 0".to_owned())?,
            period: period_of(&q.period)
                .ok_or_else(|| format!("quota period `{}` is not DAY, WEEK or MONTH", q.period))?,
            offset: u64::try_from(q.offset).map_err(|_| "quota offset below 0".to_owned())?,
            starts_at: None,
            initial: p.initial_period,
        }),
    };
    let mut stages = Vec::with_capacity(p.api_stages.len());
    for s in &p.api_stages {
        let mut methods = Vec::with_capacity(s.throttle.len());
        for (m, t) in &s.throttle {
            methods.push((Arc::from(m.as_str()), throttle_of(t)?));
        }
        stages.push(RuntimeStage {
            api: s.api_id.as_str().into(),
            stage: s.stage.as_str().into(),
            methods,
        });
    }
    Ok(RuntimePlan {
        plan: Plan {
            id: p.id.as_str().into(),
            name: Some(p.name.clone()),
            description: p.description.clone(),
            throttle,
            quota,
            stages: Vec::new(),
            enforce: true,
        },
        stages,
    })
}

#[cfg(test)]
mod tests;
