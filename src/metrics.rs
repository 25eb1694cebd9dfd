//! Prometheus metrics on an explicit registry (no global state: each server, and each test, has
//! its own). Labels are bounded by the configuration — api, stage, plan, outcome — never a key.
//!
//! Also the decision tap: every decision, as a [`Watched`] record, to whoever watches (the
//! management API's WatchDecisions). Nothing is built or sent while nobody watches, and a slow
//! watcher loses records rather than slowing decisions (a bounded broadcast channel).

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use crate::clock::{NANOS_PER_SEC, Nanos};
use crate::transport::ReloadingTls;

/// At most one log line about store failures per this interval (with their count).
const STORE_ERROR_LOG_INTERVAL: Nanos = NANOS_PER_SEC;
use crate::engine::{Decision, LimitConfig, LimitKind};
use crate::snapshot::Snapshot;

/// Records the tap holds for a watcher that falls behind; older ones are dropped (and counted
/// by the watcher).
const TAP_CAPACITY: usize = 4096;

/// One decision, as a watcher sees it (a decision holds no key value, the key by its id).
#[derive(Debug, Clone)]
pub struct Watched {
    pub time: Nanos,
    pub service: Service,
    pub decision: Decision,
}

/// Store failures in a row after which `/readyz` says not ready (see
/// [`Metrics::decisions_failing`]).
pub const FAILING_DECISIONS: u64 = 3;
/// How recent the last failed decision must be for `/readyz` to count it: with no traffic (a
/// load balancer took the replica out) readiness comes back after it, and is lost again at
/// once if decisions still fail.
pub const FAILING_WINDOW: Nanos = 10 * crate::clock::NANOS_PER_SEC;

/// Every metric plangate exports. Fields are private: each event has one method, so that a
/// metric is updated in one way only.
pub struct Metrics {
    /// This instance among those of the process (see [`Metrics::decision_counter`]).
    id: u64,
    registry: Registry,
    decisions: IntCounterVec,
    config_generation: IntGauge,
    config_fingerprint: IntGauge,
    config_reloads: IntCounterVec,
    config_last_success: Gauge,
    api_keys: IntGauge,
    usage_plans: IntGauge,
    store_errors: IntCounter,
    persist_errors: IntCounter,
    persist_last_success: Gauge,
    /// Since when persisting has failed, and the last error (for `/readyz`).
    persist_failing: parking_lot::Mutex<Option<(Nanos, String)>>,
    /// Per service (indexed by `Service as usize`), resolved once: no label lookup per call.
    decision_duration_of: [prometheus::Histogram; 2],
    store_duration_of: [prometheus::Histogram; 2],
    store_up: IntGauge,
    near_limit: IntCounterVec,
    failure_policy: IntCounterVec,
    rls_unknown_domain: IntCounter,
    console_signins: IntCounterVec,
    tls_handshake_failures: IntCounterVec,
    tls_reloads: IntCounterVec,
    /// TLS listeners whose counters are copied into the two above at each scrape.
    tls: parking_lot::Mutex<Vec<(&'static str, Arc<ReloadingTls>)>>,
    /// The runtime catalog and its gauges, once watched.
    catalog: parking_lot::Mutex<Option<CatalogMetrics>>,
    tap: tokio::sync::broadcast::Sender<Arc<Watched>>,
    /// Watchers alive: read on every decision with one relaxed load (the channel's own
    /// `receiver_count` takes a lock).
    watchers: Arc<AtomicUsize>,
    /// Admitted decisions logged at info: one in `admitted_every` (0: none), counted in
    /// `admitted_seen` (`--log-admitted-sample`).
    admitted_every: AtomicU64,
    admitted_seen: AtomicU64,
    /// Store failures not yet logged, and when the last log line about them was written.
    store_errors_unlogged: AtomicU64,
    /// Decisions in a row whose store call failed, and when the last one did (for `/readyz`).
    failing_decisions: AtomicU64,
    failing_since: AtomicI64,
    failing_last: AtomicI64,
    store_error_logged_at: AtomicI64,
}

/// A `decisions` counter and its labels (see [`Metrics::decision_counter`]).
struct Resolved {
    metrics: u64,
    service: Service,
    api: Option<Arc<str>>,
    stage: Option<Arc<str>>,
    plan: Option<Arc<str>>,
    outcome: crate::engine::Outcome,
    decided_by: Option<LimitKind>,
    shadow: bool,
    counter: IntCounter,
}

/// Counters resolved per thread: a few plans × outcomes on a busy gateway.
const RESOLVED_SLOTS: usize = 64;

thread_local! {
    static RESOLVED: std::cell::RefCell<Vec<Option<Resolved>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Tells one `Metrics` from another in the per-thread cache (an address could be reused).
static NEXT_METRICS_ID: AtomicU64 = AtomicU64::new(0);

/// A watcher of decisions (see [`Metrics::watch`]); counted while it lives.
pub struct Watcher {
    rx: tokio::sync::broadcast::Receiver<Arc<Watched>>,
    watchers: Arc<AtomicUsize>,
}

impl Watcher {
    /// The next decision; `Lagged(n)` when `n` were lost because this watcher fell behind.
    pub async fn recv(&mut self) -> Result<Arc<Watched>, tokio::sync::broadcast::error::RecvError> {
        self.rx.recv().await
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Which gRPC service decided.
#[derive(Debug, Clone, Copy)]
pub enum Service {
    ExtAuthz = 0,
    Rls = 1,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::ExtAuthz => "ext_authz",
            Service::Rls => "rls",
        }
    }
}

/// The labels of `plangate_decisions_total`: `grpc_service`, not `service` (a ServiceMonitor
/// adds a `service` target label).
const DECISION_LABELS: &[&str] = &[
    "grpc_service",
    "api",
    "stage",
    "plan",
    "outcome",
    "limit",
    "shadow",
];

/// Seconds: from 5 µs (an answer from memory) to 100 ms.
const DECISION_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1,
];

/// Seconds: as [`DECISION_BUCKETS`], up to 1 s (a Redis round trip under load).
const STORE_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Defines metrics on a registry, each registered as it is made. Definitions are constants: a
/// failure is a programming error every test would catch, never a runtime condition.
struct Definer(Registry);

impl Definer {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, m: prometheus::Result<M>) -> M {
        let m = m.expect("metric definition");
        self.0
            .register(Box::new(m.clone()))
            .expect("metric registration");
        m
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help))
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help))
    }

    fn float_gauge(&self, name: &str, help: &str) -> Gauge {
        self.add(Gauge::new(name, help))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels))
    }

    fn histograms(&self, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels))
    }
}

impl Metrics {
    /// Creates the metrics on a new registry.
    pub fn new() -> Self {
        let r = Definer(Registry::new());
        let decisions = r.counters(
            "plangate_decisions_total",
            "Decisions made, by gRPC service (ext_authz, rls), api, stage, usage plan, outcome, \
                 the limit that refused (empty unless throttled or over quota), and shadow \
                 (true: a refusal let through in shadow mode; the outcome is enforcement's).",
            DECISION_LABELS,
        );
        let decision_duration = r.histograms(
            "plangate_decision_duration_seconds",
            "Time to decide one request (engine and store), by gRPC service.",
            DECISION_BUCKETS,
            &["grpc_service"],
        );
        let config_generation = r.gauge(
            "plangate_config_generation",
            "Generation of the configuration in force (1 at start, +1 per reload that changed it).",
        );
        let build_info = r.gauges(
            "plangate_build_info",
            "Always 1; the version and source revision of this binary as labels.",
            &["version", "revision"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("PLANGATE_REVISION")])
            .set(1);
        let config_fingerprint = r.gauge(
            "plangate_config_fingerprint",
            "The first 48 bits of the SHA-256 of the configuration files in force: replicas \
             serving the same content show the same value.",
        );
        let config_reloads = r.counters(
            "plangate_config_reloads_total",
            "Configuration reloads, by result (success, error).",
            &["result"],
        );
        let config_last_success = r.float_gauge(
            "plangate_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
        );
        let api_keys = r.gauge("plangate_api_keys", "API keys loaded.");
        let usage_plans = r.gauge("plangate_usage_plans", "Usage plans loaded.");
        let store_errors = r.counter(
            "plangate_store_errors_total",
            "Counter store operations that failed.",
        );
        let store_duration = r.histograms(
            "plangate_store_duration_seconds",
            "Time the counter store took to check and charge one decision's limits, by gRPC \
                 service (the Redis round trip with a Redis store).",
            STORE_BUCKETS,
            &["grpc_service"],
        );
        let persist_errors = r.counter(
            "plangate_persist_errors_total",
            "Failed writes of the counters file (memory store with --data-dir): the counts stay \
             in memory and are written by the next flush that succeeds.",
        );
        let persist_last_success = r.float_gauge(
            "plangate_persist_last_success_timestamp_seconds",
            "Unix time of the last flush after which the counters file held every count.",
        );
        let store_up = r.gauge(
            "plangate_store_up",
            "1 when the counter store's last operation succeeded, 0 when it failed.",
        );
        store_up.set(1);
        let near_limit = r.counters(
            "plangate_near_limit_total",
            "Admitted decisions that left 10% or less of a limit (a bucket's burst, a \
                 quota's limit), by gRPC service and limit kind: who is about to be refused.",
            &["grpc_service", "limit"],
        );
        let failure_policy = r.counters(
            "plangate_failure_policy_decisions_total",
            "Decisions made by the store failure policy (the store failed), by gRPC service \
                 and result (admitted: --store-failure open, refused: closed).",
            &["grpc_service", "result"],
        );
        let rls_unknown_domain = r.counter(
            "plangate_rls_unknown_domain_total",
            "RLS requests for a domain plangate does not serve (answered OK without limits).",
        );
        let console_signins = r.counters(
            "plangate_console_signins_total",
            "Sign-ins to the console, by result: ok, failed (a wrong token or access key), \
                 throttled (refused unread: too many failures from the address).",
            &["result"],
        );
        for result in ["ok", "failed", "throttled"] {
            console_signins.with_label_values(&[result]);
        }
        let tls_handshake_failures = r.counters(
            "plangate_tls_handshake_failures_total",
            "TLS handshakes that failed or timed out, by listener (grpc, admin): a client \
                 without a valid certificate under mTLS, a plain-text client, a wrong CA.",
            &["listener"],
        );
        let tls_reloads = r.counters(
            "plangate_tls_reloads_total",
            "Certificate files that changed and were taken (success) or rejected, the \
                 certificates in force kept (error), by listener.",
            &["listener", "result"],
        );
        // Both results exist from the start, so a rate() over them works before the first error.
        config_reloads.with_label_values(&["success"]);
        config_reloads.with_label_values(&["error"]);
        for service in [Service::ExtAuthz, Service::Rls] {
            for result in ["admitted", "refused"] {
                failure_policy.with_label_values(&[service.as_str(), result]);
            }
        }
        // The process: CPU, memory, file descriptors, start time (Linux).
        #[cfg(target_os = "linux")]
        r.0.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("metric registration");
        let per_service = |h: &HistogramVec| {
            [Service::ExtAuthz, Service::Rls].map(|s| h.with_label_values(&[s.as_str()]))
        };
        let decision_duration_of = per_service(&decision_duration);
        let store_duration_of = per_service(&store_duration);
        Metrics {
            id: NEXT_METRICS_ID.fetch_add(1, Ordering::Relaxed),
            tap: tokio::sync::broadcast::channel(TAP_CAPACITY).0,
            watchers: Arc::new(AtomicUsize::new(0)),
            admitted_every: AtomicU64::new(0),
            admitted_seen: AtomicU64::new(0),
            store_errors_unlogged: AtomicU64::new(0),
            failing_decisions: AtomicU64::new(0),
            failing_since: AtomicI64::new(0),
            failing_last: AtomicI64::new(0),
            store_error_logged_at: AtomicI64::new(i64::MIN),
            registry: r.0,
            decisions,
            config_generation,
            config_fingerprint,
            config_reloads,
            config_last_success,
            api_keys,
            usage_plans,
            store_errors,
            decision_duration_of,
            store_duration_of,
            store_up,
            persist_errors,
            persist_last_success,
            persist_failing: parking_lot::Mutex::new(None),
            near_limit,
            failure_policy,
            rls_unknown_domain,
            console_signins,
            tls_handshake_failures,
            tls_reloads,
            tls: parking_lot::Mutex::new(Vec::new()),
            catalog: parking_lot::Mutex::new(None),
        }
    }

    /// Reports the TLS counters of these listeners (those that have TLS).
    pub fn watch_tls(&self, grpc: Option<Arc<ReloadingTls>>, admin: Option<Arc<ReloadingTls>>) {
        let mut tls = self.tls.lock();
        for (name, listener) in [("grpc", grpc), ("admin", admin)] {
            if let Some(l) = listener {
                self.tls_handshake_failures.with_label_values(&[name]);
                for result in ["success", "error"] {
                    self.tls_reloads.with_label_values(&[name, result]);
                }
                tls.push((name, l));
            }
        }
    }

    /// Reports `catalog` (sizes, changes applied, lag behind the store) from now on.
    pub fn watch_catalog(&self, catalog: Arc<crate::catalog::Catalog>) {
        let r = Definer(self.registry.clone());
        *self.catalog.lock() = Some(CatalogMetrics {
            keys: r.gauge(
                "plangate_catalog_api_keys",
                "API keys in the runtime catalog (made through the control plane; the file's are plangate_api_keys).",
            ),
            plans: r.gauge(
                "plangate_catalog_usage_plans",
                "Usage plans in the runtime catalog.",
            ),
            applied: r.counter(
                "plangate_catalog_changes_applied_total",
                "Catalog writes applied by this replica (its own and other replicas').",
            ),
            head: r.gauge(
                "plangate_catalog_head",
                "The number of the last catalog write this replica applied.",
            ),
            lag: r.gauge(
                "plangate_catalog_lag_changes",
                "Catalog writes the store has that this replica has not applied yet.",
            ),
            synced: r.float_gauge(
                "plangate_catalog_synced_timestamp_seconds",
                "Unix time this replica last read the store's catalog changes successfully \
                 (every 200 ms while the store answers).",
            ),
            catalog,
        });
    }

    fn copy_catalog(&self) {
        let guard = self.catalog.lock();
        let Some(m) = guard.as_ref() else { return };
        let (keys, plans) = {
            let state = m.catalog.read();
            (state.keys.len(), state.plans.len())
        };
        m.keys.set(keys as i64);
        m.plans.set(plans as i64);
        m.head.set(m.catalog.head() as i64);
        m.lag.set(m.catalog.lag() as i64);
        m.applied
            .inc_by(m.catalog.applied_changes().saturating_sub(m.applied.get()));
        m.synced
            .set(m.catalog.synced_at() as f64 / crate::clock::NANOS_PER_SEC as f64);
    }

    fn copy_tls_counters(&self) {
        let follow = |c: &IntCounter, now: u64| c.inc_by(now.saturating_sub(c.get()));
        for (name, l) in self.tls.lock().iter() {
            follow(
                &self.tls_handshake_failures.with_label_values(&[name]),
                l.handshake_failures.load(Ordering::Relaxed),
            );
            follow(
                &self.tls_reloads.with_label_values(&[name, "success"]),
                l.reloads.load(Ordering::Relaxed),
            );
            follow(
                &self.tls_reloads.with_label_values(&[name, "error"]),
                l.reload_failures.load(Ordering::Relaxed),
            );
        }
    }

    /// Records one decision, made at `now`, and how long it took; and hands it to watchers, if
    /// any.
    pub fn decided(&self, service: Service, d: &Decision, seconds: f64, now: Nanos) {
        if d.store_error.is_some() {
            let result = if d.admitted() { "admitted" } else { "refused" };
            self.failure_policy
                .with_label_values(&[service.as_str(), result])
                .inc();
        }
        if self.watchers.load(Ordering::Relaxed) > 0 {
            // A send fails only when the last watcher has just gone: nothing to do then.
            let _ = self.tap.send(Arc::new(Watched {
                time: now,
                service,
                decision: d.clone(),
            }));
        }
        self.decision_counter(service, d).inc();
        self.decision_duration_of[service as usize].observe(seconds);
        if let Some(store) = d.store_seconds {
            self.store_duration_of[service as usize].observe(store);
            self.store_up.set(i64::from(d.store_error.is_none()));
            if d.store_error.is_some() {
                if self.failing_decisions.fetch_add(1, Ordering::Relaxed) == 0 {
                    self.failing_since.store(now, Ordering::Relaxed);
                }
                self.failing_last.store(now, Ordering::Relaxed);
            } else if self.failing_decisions.load(Ordering::Relaxed) != 0 {
                self.failing_decisions.store(0, Ordering::Relaxed);
            }
        }
        if d.admitted() {
            for l in &d.limits {
                let capacity = match l.config {
                    LimitConfig::Throttle { burst, .. } => burst,
                    LimitConfig::Quota { limit, .. } => limit,
                };
                if capacity > 0 && l.state.remaining.saturating_mul(10) <= capacity {
                    self.near_limit
                        .with_label_values(&[service.as_str(), l.kind.as_str()])
                        .inc();
                }
            }
        }
    }

    /// The `decisions` counter of `d`'s labels: from this thread's cache of the counters
    /// resolved lately (a Vec lookup hashes seven strings and takes a lock), else resolved and
    /// remembered. The cache holds the label strings it compares (so that an address cannot be
    /// reused by another string while it is there).
    fn decision_counter(&self, service: Service, d: &Decision) -> IntCounter {
        let slot = {
            let addr = |s: &Option<Arc<str>>| s.as_ref().map_or(0, |s| s.as_ptr() as usize);
            let h = foldhash::fast::FixedState::default().hash_one((
                self.id,
                addr(&d.api),
                addr(&d.stage),
                addr(&d.plan_id),
                d.outcome as u8,
                d.decided_by.map_or(u8::MAX, |k| k as u8),
                (service as u8) << 1 | u8::from(d.shadow),
            ));
            (h as usize) % RESOLVED_SLOTS
        };
        let same = |r: &Resolved| {
            r.metrics == self.id
                && r.service as u8 == service as u8
                && r.outcome == d.outcome
                && r.decided_by == d.decided_by
                && r.shadow == d.shadow
                && r.api == d.api
                && r.stage == d.stage
                && r.plan == d.plan_id
        };
        let cached = RESOLVED.with(|c| {
            let c = c.try_borrow().ok()?;
            c.get(slot)?
                .as_ref()
                .filter(|r| same(r))
                .map(|r| r.counter.clone())
        });
        if let Some(counter) = cached {
            return counter;
        }
        let counter = self.decisions.with_label_values(&[
            service.as_str(),
            d.api.as_deref().unwrap_or(""),
            d.stage.as_deref().unwrap_or(""),
            d.plan_id.as_deref().unwrap_or(""),
            d.outcome.as_str(),
            d.decided_by.map_or("", LimitKind::as_str),
            if d.shadow { "true" } else { "false" },
        ]);
        RESOLVED.with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                if c.is_empty() {
                    c.resize_with(RESOLVED_SLOTS, || None);
                }
                c[slot] = Some(Resolved {
                    metrics: self.id,
                    service,
                    api: d.api.clone(),
                    stage: d.stage.clone(),
                    plan: d.plan_id.clone(),
                    outcome: d.outcome,
                    decided_by: d.decided_by,
                    shadow: d.shadow,
                    counter: counter.clone(),
                });
            }
        });
        counter
    }

    /// Logs a share `rate` (0 to 1) of admitted decisions at info: one in round(1 / rate),
    /// counted, not drawn, so that the share is exact and costs one atomic add.
    pub fn set_admitted_sample(&self, rate: f64) {
        let every = if rate > 0.0 && rate.is_finite() {
            (1.0 / rate.min(1.0)).round().max(1.0) as u64
        } else {
            0
        };
        self.admitted_every.store(every, Ordering::Relaxed);
    }

    /// Whether this admitted decision is one of the sampled ones.
    pub fn admitted_sampled(&self) -> bool {
        match self.admitted_every.load(Ordering::Relaxed) {
            0 => false,
            every => self
                .admitted_seen
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(every),
        }
    }

    /// A flush left the counters file holding every count, at `now`. `true` when persisting
    /// had been failing (it recovered).
    pub fn persisted(&self, now: Nanos) -> bool {
        self.persist_last_success.set(now as f64 / 1e9);
        self.persist_failing.lock().take().is_some()
    }

    /// A flush failed at `now` with `error`. `true` on the first failure of a run of them.
    pub fn persist_failed(&self, now: Nanos, error: &str) -> bool {
        self.persist_errors.inc();
        let mut f = self.persist_failing.lock();
        let first = f.is_none();
        let since = f.as_ref().map_or(now, |(t, _)| *t);
        *f = Some((since, error.to_owned()));
        first
    }

    /// Since when persisting has been failing, and the last error; `None` when it works.
    pub fn persist_failing(&self) -> Option<(Nanos, String)> {
        self.persist_failing.lock().clone()
    }

    /// A counter store operation failed at `now`. Counted always; `Some(n)` when a log line is
    /// due — at most one per second, for the `n` failures since the last one — so that an outage
    /// does not write a line per request.
    pub fn store_failed(&self, now: Nanos) -> Option<u64> {
        self.store_errors.inc();
        self.store_errors_unlogged.fetch_add(1, Ordering::Relaxed);
        let last = self.store_error_logged_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < STORE_ERROR_LOG_INTERVAL
            || self
                .store_error_logged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        Some(self.store_errors_unlogged.swap(0, Ordering::Relaxed))
    }

    /// An RLS request named a domain plangate does not serve.
    /// The configuration fingerprint as the metric shows it (the first 6 bytes of its SHA-256).
    pub fn config_fingerprint(&self) -> i64 {
        self.config_fingerprint.get()
    }

    /// Decisions since start, summed by (outcome, the limit that refused — empty when none),
    /// over every service, API, stage and plan (the console's overview).
    pub fn decision_counts(&self) -> Vec<(String, String, u64)> {
        use prometheus::core::Collector;
        let mut out: std::collections::BTreeMap<(String, String), u64> = Default::default();
        for family in self.decisions.collect() {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default()
                };
                *out.entry((label("outcome"), label("limit"))).or_default() +=
                    m.get_counter().get_value() as u64;
            }
        }
        out.into_iter().map(|((o, l), n)| (o, l, n)).collect()
    }

    /// Counts a console sign-in: `ok`, `failed` or `throttled`.
    pub fn console_signin(&self, result: &str) {
        self.console_signins.with_label_values(&[result]).inc();
    }

    pub fn rls_unknown_domain(&self) {
        self.rls_unknown_domain.inc();
    }

    /// A reload put `snap`, built from files of SHA-256 `fingerprint`, in force at `unix_seconds`.
    pub fn reloaded(&self, snap: &Snapshot, fingerprint: &[u8; 32], unix_seconds: f64) {
        self.loaded(snap, fingerprint, unix_seconds);
        self.config_reloads.with_label_values(&["success"]).inc();
    }

    /// A reload was rejected; the previous configuration keeps serving.
    pub fn reload_failed(&self) {
        self.config_reloads.with_label_values(&["error"]).inc();
    }

    /// Records a snapshot now in force, loaded at `unix_seconds` (at start; reloads call
    /// [`Metrics::reloaded`]).
    pub fn loaded(&self, snap: &Snapshot, fingerprint: &[u8; 32], unix_seconds: f64) {
        self.config_generation
            .set(i64::try_from(snap.generation).unwrap_or(i64::MAX));
        // 48 bits: exact in the float64 a Prometheus sample is.
        let mut top = [0u8; 8];
        top[2..].copy_from_slice(&fingerprint[..6]);
        self.config_fingerprint.set(i64::from_be_bytes(top));
        self.api_keys.set(snap.keys.len() as i64);
        self.usage_plans.set(snap.plans.len() as i64);
        self.config_last_success.set(unix_seconds);
    }

    /// When the counter store has failed every decision that asked it lately — at least
    /// [`FAILING_DECISIONS`] in a row, the last within [`FAILING_WINDOW`] of `now` — how many
    /// and since when. A store can answer PING and still fail every script (out of memory, a
    /// slot mid-migration): readiness follows what decisions see.
    pub fn decisions_failing(&self, now: Nanos) -> Option<(u64, Nanos)> {
        let n = self.failing_decisions.load(Ordering::Relaxed);
        let last = self.failing_last.load(Ordering::Relaxed);
        (n >= FAILING_DECISIONS && now.saturating_sub(last) <= FAILING_WINDOW)
            .then(|| (n, self.failing_since.load(Ordering::Relaxed)))
    }

    /// A new watcher of decisions: every decision from now on, while it keeps up.
    pub fn watch(&self) -> Watcher {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Watcher {
            rx: self.tap.subscribe(),
            watchers: self.watchers.clone(),
        }
    }

    /// [`Metrics::watch`], unless `max` watchers are watching already: each costs the data
    /// plane a copy of every decision.
    pub fn watch_at_most(&self, max: usize) -> Option<Watcher> {
        self.watchers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Watcher {
            rx: self.tap.subscribe(),
            watchers: self.watchers.clone(),
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.copy_tls_counters();
        self.copy_catalog();
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The runtime catalog's metrics, read from it at each scrape.
struct CatalogMetrics {
    catalog: Arc<crate::catalog::Catalog>,
    keys: IntGauge,
    plans: IntGauge,
    applied: IntCounter,
    head: IntGauge,
    lag: IntGauge,
    synced: prometheus::Gauge,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_are_logged_once_a_second_with_their_count() {
        let m = Metrics::new();
        let t0 = 1_000 * NANOS_PER_SEC;
        assert_eq!(
            m.store_failed(t0),
            Some(1),
            "the first failure is logged at once"
        );
        for i in 1..1000 {
            assert_eq!(m.store_failed(t0 + i * 1_000_000), None);
        }
        // A second later, one line for the 999 since.
        assert_eq!(m.store_failed(t0 + NANOS_PER_SEC), Some(1000));
        assert!(m.render().contains("plangate_store_errors_total 1001"));
    }

    #[test]
    fn each_decision_is_counted_under_its_own_labels_in_its_own_registry() {
        use crate::engine::Outcome;
        let (a, b) = (Metrics::new(), Metrics::new());
        let decision = |plan: &str, outcome| {
            let mut d = Decision::new(outcome, 1);
            d.api = Some(Arc::from("petstore"));
            d.stage = Some(Arc::from("prod"));
            d.plan_id = Some(Arc::from(plan));
            d
        };
        let gold = decision("gold", Outcome::Admitted);
        for _ in 0..3 {
            a.decided(Service::ExtAuthz, &gold, 0.0, 0);
        }
        b.decided(Service::ExtAuthz, &gold, 0.0, 0);
        // The same labels in other strings; then other labels.
        a.decided(
            Service::ExtAuthz,
            &decision("gold", Outcome::Admitted),
            0.0,
            0,
        );
        a.decided(Service::Rls, &gold, 0.0, 0);
        a.decided(
            Service::ExtAuthz,
            &decision("silver", Outcome::Admitted),
            0.0,
            0,
        );
        let mut shadowed = decision("gold", Outcome::Throttled);
        a.decided(Service::ExtAuthz, &shadowed, 0.0, 0);
        shadowed.shadow = true;
        a.decided(Service::ExtAuthz, &shadowed, 0.0, 0);
        let series = |m: &Metrics, service: &str, plan: &str, outcome: &str, shadow: &str| {
            let line = format!(
                "plangate_decisions_total{{api=\"petstore\",grpc_service=\"{service}\",limit=\"\",outcome=\"{outcome}\",plan=\"{plan}\",shadow=\"{shadow}\",stage=\"prod\"}} "
            );
            let text = m.render();
            let at = text
                .find(&line)
                .unwrap_or_else(|| panic!("no {line} in\n{text}"));
            text[at + line.len()..].lines().next().unwrap().to_string()
        };
        assert_eq!(series(&a, "ext_authz", "gold", "admitted", "false"), "4");
        assert_eq!(series(&b, "ext_authz", "gold", "admitted", "false"), "1");
        assert_eq!(series(&a, "rls", "gold", "admitted", "false"), "1");
        assert_eq!(series(&a, "ext_authz", "silver", "admitted", "false"), "1");
        assert_eq!(series(&a, "ext_authz", "gold", "throttled", "false"), "1");
        assert_eq!(series(&a, "ext_authz", "gold", "throttled", "true"), "1");
    }
}
