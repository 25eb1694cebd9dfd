//! The decision, in AWS order (docs/semantics.md, "Decisions"): resolve the stage and method,
//! check the key, then ask the store to check and charge, all or nothing, every limit that
//! applies:
//!
//! 1. plan per-method throttle (plan, key, method)
//! 2. plan throttle (plan, key)
//! 3. plan quota (plan, key, period)
//! 4. stage method throttle (api, stage, method)
//! 5. account throttle
//!
//! The engine knows nothing of protobuf; `grpc` turns a [`Decision`] into an answer.

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::catalog::Catalog;
use crate::clock::{Clock, Nanos};
use crate::limit::{LimitKey, LimitRef, LimitSpec, LimitState, Period};
use crate::snapshot::{
    HostMatch, MAX_KEY_BYTES, MethodMatch, PathParameters, Snapshot, Stage, Throttle, UnknownHosts,
    UnknownMethods, seen,
};
use crate::store::{Charge, Mode, Store, StoreError, Units};

pub mod explain;

/// A request to decide. Build it with [`Request::new`] (then [`Request::stage`] and
/// [`Request::host`]), which every caller uses — ext_authz, RLS, `plangate check` — so that all
/// read a request alike.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// From Envoy `context_extensions` (or RLS entries). When both are `None`, the host's custom
    /// domain name decides, else the config's defaults.
    pub api: Option<&'a str>,
    pub stage: Option<&'a str>,
    /// The host the request was sent to (`:authority`), for custom domain names.
    pub host: Option<&'a str>,
    /// The workload's own identity (Envoy's `destination.principal`), for `workloads`.
    pub principal: Option<&'a str>,
    /// Whether the path as sent had `;` parameters (stripped from `path`).
    pub path_parameters: bool,
    /// HTTP verb.
    pub method: &'a str,
    /// Request path, without the query string, canonical ([`canonical_path`]).
    pub path: Cow<'a, str>,
    /// The presented API key value, if any, read from the config's `api_key_source`.
    pub key: Option<&'a str>,
    /// Reads the key from another source, for an API with its own `api_key_source` (ext_authz
    /// sets it; without it, `key` is used for every API).
    pub key_lookup: Option<&'a dyn KeyLookup>,
    /// Units to charge (`0`: check only).
    pub hits: u64,
}

/// Reads a request's key from a given source (a header, Envoy metadata).
pub trait KeyLookup: Sync + std::fmt::Debug {
    fn key(&self, source: &crate::snapshot::KeySource) -> Option<&str>;
}

impl<'a> Request<'a> {
    /// A request as it arrives: `path` may carry a query string, which is cut off (Envoy's
    /// `:path` includes it; methods match on the path alone). A `key` longer than any
    /// configurable key ([`MAX_KEY_BYTES`]) is taken as absent: it cannot match, and hashing a
    /// 64 KiB header per request is what an attacker would want.
    pub fn new(method: &'a str, path: &'a str, key: Option<&'a str>, hits: u64) -> Self {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        Request {
            api: None,
            stage: None,
            host: None,
            principal: None,
            path_parameters: path.contains(';'),
            method,
            path: canonical_path(path),
            key: key.filter(|k| k.len() <= MAX_KEY_BYTES),
            key_lookup: None,
            hits,
        }
    }

    /// Where to read the key for an API with its own key source.
    pub fn key_lookup(self, lookup: &'a dyn KeyLookup) -> Self {
        Request {
            key_lookup: Some(lookup),
            ..self
        }
    }

    /// The key presented for `api`: from the API's own source when it has one and the
    /// request can read it, else `key`.
    fn key_for(&self, snap: &Snapshot, api: &str) -> Option<&'a str> {
        match (
            self.key_lookup,
            snap.apis.get(api).and_then(|a| a.key_source.as_ref()),
        ) {
            (Some(l), Some(src)) => l.key(src).filter(|k| k.len() <= MAX_KEY_BYTES),
            _ => self.key,
        }
    }

    /// Names the API and stage (Envoy `context_extensions`, RLS descriptor entries).
    pub fn stage(self, api: Option<&'a str>, stage: Option<&'a str>) -> Self {
        Request { api, stage, ..self }
    }

    /// The host the request was sent to, for custom domain names (empty counts as none).
    pub fn host(self, host: Option<&'a str>) -> Self {
        Request {
            host: host.filter(|h| !h.is_empty()),
            ..self
        }
    }

    /// The workload's identity, for `workloads` (empty counts as none).
    pub fn principal(self, principal: Option<&'a str>) -> Self {
        Request {
            principal: principal.filter(|p| !p.is_empty()),
            ..self
        }
    }
}

/// The path methods are matched on, canonical as an upstream reads it (RFC 3986): runs of
/// slashes merged (`//admin` is `/admin`), dot segments removed (`/pets/../admin` is `/admin`),
/// percent-encoded unreserved characters decoded (`/%61dmin` is `/admin`) and an encoded slash
/// (`%2F`) or backslash (`%5C`) decoded to `/` — so that no spelling of a refused method's
/// path passes as another. `;` parameters are removed from each segment (`/admin;jsessionid=1/x`
/// is `/admin/x`, as servlet containers serve it). Other escapes stay, their hex digits
/// upper-cased. A path that needs none of this is borrowed as it is.
pub fn canonical_path(path: &str) -> Cow<'_, str> {
    let b = path.as_bytes();
    let simple = !path.contains('%')
        && !path.contains(';')
        && !path.contains("//")
        && !path.contains('\\')
        && !b
            .split(|&c| c == b'/')
            .any(|seg| seg == b"." || seg == b"..");
    if simple {
        return Cow::Borrowed(path);
    }
    // 1. Decode what may be decoded; a backslash is a slash.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            let v = h * 16 + l;
            match v {
                b'/' | b'\\' => decoded.push('/'),
                v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                    decoded.push(char::from(v))
                }
                _ => {
                    decoded.push('%');
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
                }
            }
            i += 3;
            continue;
        }
        if c == b';' {
            // A segment's parameters, to the next (literal) slash.
            i = b[i..]
                .iter()
                .position(|&c| c == b'/')
                .map_or(b.len(), |p| i + p);
            continue;
        }
        if c == b'\\' {
            decoded.push('/');
        } else {
            // A byte of the original string: whole characters are copied below.
            let ch_len = utf8_len(c);
            decoded.push_str(&path[i..(i + ch_len).min(path.len())]);
            i += ch_len;
            continue;
        }
        i += 1;
    }
    // 2. Merge slashes and remove dot segments.
    let mut segs: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let trailing = decoded.ends_with('/') && !segs.is_empty()
        || decoded.ends_with("/.")
        || decoded.ends_with("/..");
    let mut out = String::with_capacity(decoded.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Cow::Owned(out)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The length of the UTF-8 character that starts with byte `c`.
fn utf8_len(c: u8) -> usize {
    match c {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// How a request ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Admitted,
    /// 403 `Forbidden`.
    Forbidden,
    /// 403 `Missing Authentication Token`: an unknown method under `unknown_methods: forbid`.
    MissingAuthenticationToken,
    /// 429 `Too Many Requests`: a throttle refused.
    Throttled,
    /// 429 `Limit Exceeded`: the quota refused.
    QuotaExceeded,
    /// 503: the counter store failed and the failure policy is `closed`.
    Unavailable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Admitted => "admitted",
            Outcome::Forbidden => "forbidden",
            Outcome::MissingAuthenticationToken => "missing_authentication_token",
            Outcome::Throttled => "throttled",
            Outcome::QuotaExceeded => "quota_exceeded",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// Why a request was refused before any limit was evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    UnknownApi,
    UnknownStage,
    /// No custom domain name for the request's host (and no defaults).
    UnknownDomain,
    /// The host's custom domain name maps none of the path's base paths.
    UnknownBasePath,
    UnknownMethod,
    MissingKey,
    UnknownKey,
    DisabledKey,
    KeyNotInPlan,
    /// The Host header is not a host (`a,b`, `user@host`, a bad port).
    InvalidHost,
    /// The path has `;` parameters and the config says `path_parameters: refuse`.
    PathParameters,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::UnknownApi => "unknown_api",
            DenyReason::UnknownStage => "unknown_stage",
            DenyReason::UnknownDomain => "unknown_domain",
            DenyReason::UnknownBasePath => "unknown_base_path",
            DenyReason::UnknownMethod => "unknown_method",
            DenyReason::MissingKey => "missing_key",
            DenyReason::UnknownKey => "unknown_key",
            DenyReason::DisabledKey => "disabled_key",
            DenyReason::KeyNotInPlan => "key_not_in_plan",
            DenyReason::InvalidHost => "invalid_host",
            DenyReason::PathParameters => "path_parameters",
        }
    }
}

/// The kinds of limit, in evaluation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LimitKind {
    PlanMethodThrottle,
    PlanThrottle,
    PlanQuota,
    StageMethodThrottle,
    AccountThrottle,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::PlanMethodThrottle => "plan_method_throttle",
            LimitKind::PlanThrottle => "plan_throttle",
            LimitKind::PlanQuota => "plan_quota",
            LimitKind::StageMethodThrottle => "stage_method_throttle",
            LimitKind::AccountThrottle => "account_throttle",
        }
    }
}

/// A limit's configuration, for reports and headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LimitConfig {
    Throttle {
        rate: f64,
        burst: u64,
    },
    Quota {
        limit: u64,
        period: Period,
        window_start: Nanos,
        window_end: Nanos,
    },
}

/// One evaluated limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitReport {
    pub kind: LimitKind,
    pub config: LimitConfig,
    pub state: LimitState,
}

/// The engine's answer.
#[derive(Debug, Clone)]
pub struct Decision {
    pub outcome: Outcome,
    pub reason: Option<DenyReason>,
    /// The limit that refused (the first in evaluation order).
    pub decided_by: Option<LimitKind>,
    pub api: Option<Arc<str>>,
    pub stage: Option<Arc<str>>,
    /// The configured method that matched (`/pets/{petId}/GET`).
    pub method: Option<Arc<str>>,
    pub key_id: Option<Arc<str>>,
    pub plan_id: Option<Arc<str>>,
    pub customer_id: Option<Arc<str>>,
    /// Every limit evaluated, in evaluation order.
    pub limits: Vec<LimitReport>,
    /// Seconds before a retry can succeed, for refused requests when known.
    pub retry_after_secs: Option<u64>,
    /// The snapshot generation that decided.
    pub generation: u64,
    /// Set when the counter store failed and the failure policy decided instead.
    pub store_error: Option<StoreError>,
    /// How long the counter store took, when it was asked.
    pub store_seconds: Option<f64>,
    /// Shadow mode: the outcome is what enforcement would answer, but the request is let through
    /// (`--shadow`, or `enforce: false` on its stage or plan). Only refusals are shadowed.
    pub shadow: bool,
}

impl Decision {
    fn deny(outcome: Outcome, reason: DenyReason, generation: u64) -> Self {
        Decision {
            reason: Some(reason),
            ..Decision::new(outcome, generation)
        }
    }

    /// A decision with nothing resolved yet.
    pub(crate) fn new(outcome: Outcome, generation: u64) -> Self {
        Decision {
            outcome,
            reason: None,
            decided_by: None,
            api: None,
            stage: None,
            method: None,
            key_id: None,
            plan_id: None,
            customer_id: None,
            limits: Vec::new(),
            retry_after_secs: None,
            generation,
            store_error: None,
            store_seconds: None,
            shadow: false,
        }
    }

    pub fn admitted(&self) -> bool {
        self.outcome == Outcome::Admitted
    }

    /// The quota report, if a quota applied.
    pub fn quota(&self) -> Option<&LimitReport> {
        self.limits.iter().find(|l| l.kind == LimitKind::PlanQuota)
    }
}

/// What a request gets when the counter store fails (times out, is unreachable).
///
/// Decided here, in one place. Identity checks (key known, enabled, in a plan) never need the
/// store, so they hold under either policy; only the limits are at stake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Admit, without limits: an outage of the counter store does not take the API down. The
    /// default — see docs/redis.md for why, and for how it combines with Envoy's failure modes.
    #[default]
    Open,
    /// Refuse with 503: no request goes unmetered.
    Closed,
}

/// The decision engine: the current snapshot, a counter store and a clock.
pub struct Engine {
    snapshot: ArcSwap<Snapshot>,
    /// Keys and plans made at runtime, beside the snapshot's.
    catalog: Arc<Catalog>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    failure: FailurePolicy,
    usage_retention_days: u32,
    /// `--shadow`: every refusal is shadowed.
    shadow: bool,
}

/// Gives every quota with an `offset` but no `starts_at` its initial period: the period in which
/// the counter store first saw the plan (with this quota period), as the store recorded it —
/// once for good, shared by replicas on Redis, kept across restarts by a persisted memory store.
/// So the offset is subtracted in that one period, as AWS subtracts it in a plan's initial period.
/// Call before a snapshot is served (at start and at every reload).
pub async fn resolve_initial_periods(
    snapshot: &mut Snapshot,
    store: &dyn Store,
    now: Nanos,
) -> Result<(), StoreError> {
    let week_start = snapshot.week_start;
    for plan in &mut snapshot.plans {
        let Some(q) = plan.quota.as_mut() else {
            continue;
        };
        if q.offset == 0 || q.starts_at.is_some() {
            continue;
        }
        let current = crate::limit::quota::window(q.period, week_start, now);
        let name = format!("{}|{}", plan.id, q.period.as_str());
        let start = store.initial_period(&name, current.start).await?;
        q.initial = Some(chrono::DateTime::from_timestamp_nanos(start).date_naive());
    }
    Ok(())
}

/// Days of daily usage kept for reports, unless configured.
pub const DEFAULT_USAGE_RETENTION_DAYS: u32 = 90;

impl Engine {
    pub fn new(snapshot: Snapshot, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Engine {
            snapshot: {
                let snapshot = Arc::new(snapshot);
                warm_key_search(&snapshot);
                ArcSwap::new(snapshot)
            },
            catalog: Arc::new(Catalog::new(store.clone())),
            store,
            clock,
            failure: FailurePolicy::default(),
            usage_retention_days: DEFAULT_USAGE_RETENTION_DAYS,
            shadow: false,
        }
    }

    /// Shadow mode for everything (`--shadow`): decisions are made and charged as enforced, and
    /// every refusal is answered OK and reported.
    pub fn with_shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Whether refusal `d` is shadowed: globally, or by `enforce: false` on its stage or plan.
    /// Any refusal is — a store failure the `closed` policy refuses too: in shadow mode the
    /// answer is always OK. A request that names no API stage plangate knows is shadowed only
    /// when shadowing is global.
    fn shadowed(&self, snap: &Snapshot, d: &Decision) -> bool {
        if d.admitted() {
            return false;
        }
        if self.shadow {
            return true;
        }
        let stage = d
            .api
            .as_deref()
            .zip(d.stage.as_deref())
            .and_then(|(a, s)| snap.apis.get(a)?.stages.get(s));
        let plan = d
            .plan_id
            .as_deref()
            .and_then(|p| snap.plan_index.get(p))
            .and_then(|&i| snap.plans.get(i as usize));
        stage.is_some_and(|s| !s.enforce) || plan.is_some_and(|p| !p.enforce)
    }

    /// Sets how many days of daily usage the store keeps.
    pub fn with_usage_retention_days(mut self, days: u32) -> Self {
        self.usage_retention_days = days;
        self.store.set_usage_retention_days(days);
        self
    }

    /// Sets what happens when the store fails.
    pub fn with_failure_policy(mut self, failure: FailurePolicy) -> Self {
        self.failure = failure;
        self
    }

    /// Uses `catalog` for runtime keys and plans (an empty one by default).
    pub fn with_catalog(mut self, catalog: Arc<Catalog>) -> Self {
        self.catalog = catalog;
        self
    }

    /// The runtime catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Makes one change to the runtime catalog: `op` validates it against the catalog, the
    /// snapshot in force and the time now, and gives the records to write (see
    /// [`Catalog::write`]). The one way every face (REST, gRPC) changes the catalog.
    pub async fn change<T>(
        &self,
        op: impl Fn(
            &crate::catalog::State,
            &Snapshot,
            Nanos,
        )
            -> Result<(Vec<crate::store::catalog::Record>, T), crate::catalog::CatalogError>,
    ) -> Result<T, crate::catalog::CatalogError> {
        let snap = self.snapshot();
        let now = self.clock.now();
        self.catalog.write(|st| op(st, &snap, now)).await
    }

    /// The counter store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// An engine over `snapshot`, once the store has said where its quota offsets apply
    /// ([`resolve_initial_periods`]).
    pub async fn start(
        mut snapshot: Snapshot,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        resolve_initial_periods(&mut snapshot, &*store, clock.now()).await?;
        Ok(Engine::new(snapshot, store, clock))
    }

    /// Replaces the snapshot, once the store has said where its quota offsets apply; on a store
    /// error the snapshot in force stays. Counters are untouched.
    pub async fn install(&self, mut snapshot: Snapshot) -> Result<(), StoreError> {
        resolve_initial_periods(&mut snapshot, &*self.store, self.clock.now()).await?;
        self.swap(snapshot);
        Ok(())
    }

    /// Replaces the snapshot as it is; counters are untouched.
    pub fn swap(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        warm_key_search(&snapshot);
        self.snapshot.store(snapshot);
    }

    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Decides `req` now, against the snapshot in force.
    pub async fn decide(&self, req: &Request<'_>) -> Decision {
        let now = self.clock.now();
        let snap = self.snapshot.load_full();
        self.decide_in(&snap, req, now).await
    }

    /// Decides `req` at `now` against `snap` (a caller that read the snapshot already, e.g. for
    /// the key source, decides with that same snapshot across a reload).
    pub async fn decide_in(&self, snap: &Snapshot, req: &Request<'_>, now: Nanos) -> Decision {
        let mut d = self.decide_enforced(snap, req, now).await;
        if !d.admitted() {
            d.shadow = self.shadowed(snap, &d);
        }
        d
    }

    /// Decides the requests of one RLS call (its descriptors) all or nothing: those that
    /// charge are admitted and charged together, or none is charged — the same counter in
    /// several is one demand of the sum. A descriptor whose own limits admit but that is refused
    /// with the others takes the first refusal's outcome. Check-only descriptors (`hits: 0`)
    /// charge nothing and are decided on their own.
    pub async fn decide_all_in(
        &self,
        snap: &Snapshot,
        reqs: &[Request<'_>],
        now: Nanos,
    ) -> Vec<Decision> {
        let mut out: Vec<Option<Decision>> = (0..reqs.len()).map(|_| None).collect();
        let mut charging: Vec<(usize, Planned)> = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            if r.hits == 0 {
                out[i] = Some(self.decide_in(snap, r, now).await);
                continue;
            }
            match plan(snap, &self.catalog, r, now, self.usage_retention_days) {
                Ok(p) => charging.push((i, p)),
                Err(d) => out[i] = Some(d),
            }
        }
        let refused_early = out
            .iter()
            .enumerate()
            .any(|(i, d)| reqs[i].hits > 0 && d.as_ref().is_some_and(|d| !d.admitted()));
        if refused_early {
            // Nothing is charged: the others are checked only, to report their limits.
            for (i, p) in charging {
                let c = self
                    .store
                    .decide(&p.refs, Units::Same(reqs[i].hits), Mode::DryRun, now)
                    .await;
                out[i] = Some(self.settle(p, c));
            }
        } else if !charging.is_empty() {
            let mut refs = Vec::new();
            let mut units = Vec::new();
            for (i, p) in &charging {
                refs.extend(p.refs.iter().cloned());
                units.extend(std::iter::repeat_n(reqs[*i].hits, p.refs.len()));
            }
            let watch = crate::clock::Stopwatch::start();
            let charge = self
                .store
                .decide(&refs, Units::Each(&units), Mode::Charge, now)
                .await;
            let seconds = watch.seconds();
            let mut at = 0;
            for (i, p) in charging {
                let n = p.refs.len();
                let own = charge.as_ref().map(|c| Charge {
                    admitted: c.admitted,
                    // One state per limit, from the store; never a panic if it gave fewer.
                    states: c
                        .states
                        .get(at..at + n)
                        .map(<[_]>::to_vec)
                        .unwrap_or_default(),
                });
                at += n;
                let mut d = self.settle(p, own.map_err(|e| e.clone()));
                d.store_seconds = Some(seconds);
                out[i] = Some(d);
            }
        }
        // Refused together: a descriptor admitted on its own limits shares the refusal.
        let first_refusal = out
            .iter()
            .enumerate()
            .filter(|(i, _)| reqs[*i].hits > 0)
            .filter_map(|(_, d)| d.as_ref())
            .find(|d| !d.admitted())
            .map(|d| (d.outcome, d.reason, d.decided_by));
        let mut decisions: Vec<Decision> = out.into_iter().flatten().collect();
        if let Some((outcome, reason, decided_by)) = first_refusal {
            for (d, r) in decisions.iter_mut().zip(reqs) {
                if r.hits > 0 && d.admitted() {
                    (d.outcome, d.reason, d.decided_by) = (outcome, reason, decided_by);
                }
            }
        }
        for d in &mut decisions {
            if !d.admitted() && !d.shadow {
                d.shadow = self.shadowed(snap, d);
            }
        }
        decisions
    }

    /// The decision as enforcement makes it (and charges it).
    async fn decide_enforced(&self, snap: &Snapshot, req: &Request<'_>, now: Nanos) -> Decision {
        let planned = match plan(snap, &self.catalog, req, now, self.usage_retention_days) {
            Ok(p) => p,
            Err(d) => return d,
        };
        let watch = crate::clock::Stopwatch::start();
        // `hits: 0` asks whether one unit would be admitted (RLS `hits_addend: 0`).
        let mode = if req.hits == 0 {
            Mode::Probe
        } else {
            Mode::Charge
        };
        let units = Units::Same(req.hits);
        let charge = match self.store.decide_at_once(&planned.refs, units, mode, now) {
            Some(c) => c,
            None => self.store.decide(&planned.refs, units, mode, now).await,
        };
        let mut d = self.settle(planned, charge);
        d.store_seconds = Some(watch.seconds());
        d
    }

    /// The decision `decide_in` would make for `req` at `now` against `snap` — for `req.hits`
    /// units, 0 meaning 1 — on the same counters, charging nothing (`plangate check`, the
    /// management API's Explain).
    pub async fn explain_in(&self, snap: &Snapshot, req: &Request<'_>, now: Nanos) -> Decision {
        let planned = match plan(snap, &self.catalog, req, now, self.usage_retention_days) {
            Ok(p) => p,
            Err(d) => return d,
        };
        let charge = self
            .store
            .decide(&planned.refs, Units::Same(req.hits), Mode::DryRun, now)
            .await;
        self.settle(planned, charge)
    }

    /// The decision from the store's answer, or from the failure policy when the store failed.
    fn settle(&self, mut planned: Planned, charge: Result<Charge, StoreError>) -> Decision {
        match charge {
            Ok(charge) => {
                planned.finish(&charge.states, charge.admitted);
                planned.decision
            }
            Err(e) => {
                let mut d = planned.decision;
                if self.failure == FailurePolicy::Closed {
                    d.outcome = Outcome::Unavailable;
                }
                d.store_error = Some(e);
                d
            }
        }
    }
}

/// A request resolved up to its limits, waiting for the store.
#[derive(Debug)]
pub struct Planned {
    pub decision: Decision,
    /// The limits to check and charge, in evaluation order, then the usage counter (which has
    /// no entry in `meta`).
    pub refs: Vec<LimitRef>,
    /// What each limit is, for the report: the first `kinds` entries (one per kind at most, so
    /// a fixed array, not an allocation per request).
    meta: [(LimitKind, LimitConfig); LIMIT_KINDS],
    kinds: usize,
}

/// How many kinds of limit there are: the most a request meets.
const LIMIT_KINDS: usize = 5;

impl Planned {
    fn push(&mut self, (r, kind, config): (LimitRef, LimitKind, LimitConfig)) {
        self.refs.push(r);
        // Each kind is pushed at most once (see `plan`), so there is always room.
        if let Some(slot) = self.meta.get_mut(self.kinds) {
            *slot = (kind, config);
            self.kinds += 1;
        }
    }

    /// What each limit is, in evaluation order.
    pub fn meta(&self) -> &[(LimitKind, LimitConfig)] {
        &self.meta[..self.kinds]
    }
}

/// Resolves everything up to the list of limits; `Err` is a final answer (no limit involved).
#[allow(clippy::result_large_err)]
pub fn plan(
    snap: &Snapshot,
    catalog: &Catalog,
    req: &Request<'_>,
    now: Nanos,
    usage_retention_days: u32,
) -> Result<Planned, Decision> {
    let generation = snap.generation;
    if req.path_parameters && snap.path_parameters == PathParameters::Refuse {
        return Err(Decision::deny(
            Outcome::Forbidden,
            DenyReason::PathParameters,
            generation,
        ));
    }
    let (stage, path) = resolve_stage(snap, req)?;

    let matched = stage.match_method(req.method, path);
    let method = match matched {
        MethodMatch::Known(i) => Some(&stage.methods[i]),
        MethodMatch::Unknown if stage.unknown_methods == UnknownMethods::Forbid => {
            let mut d = Decision::deny(
                Outcome::MissingAuthenticationToken,
                DenyReason::UnknownMethod,
                generation,
            );
            d.api = Some(stage.api.clone());
            d.stage = Some(stage.name.clone());
            return Err(d);
        }
        MethodMatch::Unknown => None,
    };
    let key_required = method.map_or(stage.api_key_required, |m| m.api_key_required);
    let stage_throttle = method.map_or(stage.throttle, |m| m.throttle);

    let decision = Decision {
        api: Some(stage.api.clone()),
        stage: Some(stage.name.clone()),
        method: method.map(|m| m.name.clone()),
        ..Decision::new(Outcome::Admitted, generation)
    };
    let deny = |mut d: Decision, reason: DenyReason| {
        d.outcome = Outcome::Forbidden;
        d.reason = Some(reason);
        d
    };

    let mut planned = Planned {
        decision,
        // Every kind of limit, and the usage counter.
        refs: Vec::with_capacity(LIMIT_KINDS + 1),
        meta: [(
            LimitKind::AccountThrottle,
            LimitConfig::Throttle {
                rate: 0.0,
                burst: 0,
            },
        ); LIMIT_KINDS],
        kinds: 0,
    };
    if key_required
        && let Err(reason) = key_limits(&mut planned, snap, catalog, req, stage, matched, now)
    {
        return Err(deny(planned.decision, reason));
    }
    // 4. The stage method's throttle.
    if let Some(t) = &stage_throttle {
        let counter = method_counter(stage, method, req.method);
        planned.push(throttle_limit(
            LimitKey::StageMethod { method: counter },
            LimitKind::StageMethodThrottle,
            t,
        ));
    }
    // 5. The account's throttle.
    if let Some(t) = &snap.account {
        planned.push(throttle_limit(
            LimitKey::Account,
            LimitKind::AccountThrottle,
            t,
        ));
    }
    // Last, and not a limit: the day's usage of the plan by the key, for usage reports. It
    // never refuses and is charged with the rest, so it counts exactly the admitted units.
    if let (Some(plan), Some(key)) = (&planned.decision.plan_id, &planned.decision.key_id) {
        planned.refs.push(LimitRef::usage(
            plan.clone(),
            key.clone(),
            now,
            usage_retention_days,
        ));
    }
    Ok(planned)
}

/// The plan a key uses on a stage, as a decision needs it.
struct PlanUse {
    id: Arc<str>,
    throttle: Option<Throttle>,
    quota: Option<crate::limit::quota::Quota>,
    /// The plan's throttle of the matched method, when it has one.
    method: Option<Throttle>,
}

impl PlanUse {
    fn of_file(
        plan: &crate::snapshot::Plan,
        methods: &[(usize, Throttle)],
        matched: MethodMatch,
    ) -> Self {
        let method = match matched {
            MethodMatch::Known(mi) => methods.iter().find(|(i, _)| *i == mi).map(|(_, t)| *t),
            MethodMatch::Unknown => None,
        };
        PlanUse {
            id: plan.id.clone(),
            throttle: plan.throttle,
            quota: plan.quota,
            method,
        }
    }
}

/// The first of `plans` (ids of file or runtime plans) that covers `stage`.
/// Sorts a large configuration's keys for the console's searches on a thread of their own (a
/// few hundred milliseconds at a million keys), so that no page waits for it; a small one's
/// are sorted by the first search that needs them.
fn warm_key_search(snapshot: &Arc<Snapshot>) {
    if snapshot.keys.len() < 10_000 {
        return;
    }
    let snapshot = snapshot.clone();
    let spawned = std::thread::Builder::new()
        .name("key-search".into())
        .spawn(move || {
            snapshot.key_search();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not sort the keys for the console in the background");
    }
}

fn runtime_key_plan<'p>(
    snap: &Snapshot,
    catalog: &Catalog,
    mut plans: impl Iterator<Item = &'p Arc<str>>,
    stage: &Stage,
    matched: MethodMatch,
) -> Option<PlanUse> {
    plans.find_map(|id| {
        if let Some(plan) = snap.plan_by_id(id) {
            let (_, methods) = plan.stages.iter().find(|(s, _)| *s == stage.id)?;
            return Some(PlanUse::of_file(plan, methods, matched));
        }
        let rp = catalog.plan(id)?;
        let on = rp.on_stage(&stage.api, &stage.name)?;
        let method = match matched {
            MethodMatch::Known(mi) => on
                .methods
                .iter()
                .find(|(m, _)| **m == *stage.methods[mi].name)
                .map(|(_, t)| *t),
            MethodMatch::Unknown => None,
        };
        Some(PlanUse {
            id: rp.plan.id.clone(),
            throttle: rp.plan.throttle,
            quota: rp.plan.quota,
            method,
        })
    })
}

/// For a stage that needs a key: the key (its id, customer, plan on the decision) and the
/// plan's limits, in AWS's order; the reason to refuse when there is no usable key. The key is
/// the file's, or else the runtime catalog's.
fn key_limits(
    planned: &mut Planned,
    snap: &Snapshot,
    catalog: &Catalog,
    req: &Request<'_>,
    stage: &Stage,
    matched: MethodMatch,
    now: Nanos,
) -> Result<(), DenyReason> {
    let decision = &mut planned.decision;
    let Some(value) = req.key_for(snap, &stage.api).filter(|k| !k.is_empty()) else {
        return Err(DenyReason::MissingKey);
    };
    let (hash, seen) = seen::key_hash(value);
    // A value that names a key, file or runtime, is remembered (disabled or not).
    let known = || {
        if !seen {
            seen::remember(value, &hash);
        }
    };
    let (key_id, used) = if let Some(key) = snap.key_by_hash(&hash) {
        known();
        decision.key_id = Some(key.id.clone());
        decision.customer_id = key.customer_id.clone();
        if !key.enabled {
            return Err(DenyReason::DisabledKey);
        }
        let used = snap
            .plan_for(key, stage.id)
            .map(|(plan, methods)| PlanUse::of_file(plan, methods, matched));
        (key.id.clone(), used)
    } else if let Some((id, customer, enabled, used)) = catalog.with_key(&hash, |key| {
        let used = key
            .enabled
            .then(|| runtime_key_plan(snap, catalog, key.plans(), stage, matched))
            .flatten();
        (key.id.clone(), key.customer_id.clone(), key.enabled, used)
    }) {
        known();
        decision.key_id = Some(id.clone());
        decision.customer_id = customer;
        if !enabled {
            return Err(DenyReason::DisabledKey);
        }
        (id, used)
    } else {
        return Err(DenyReason::UnknownKey);
    };
    let Some(plan) = used else {
        return Err(DenyReason::KeyNotInPlan);
    };
    decision.plan_id = Some(plan.id.clone());

    // 1. The plan's per-method throttle.
    if let (MethodMatch::Known(mi), Some(t)) = (matched, &plan.method) {
        planned.push(throttle_limit(
            LimitKey::PlanMethod {
                plan: plan.id.clone(),
                key: key_id.clone(),
                method: stage.methods[mi].counter.clone(),
            },
            LimitKind::PlanMethodThrottle,
            t,
        ));
    }
    // 2. The plan's throttle.
    if let Some(t) = &plan.throttle {
        planned.push(throttle_limit(
            LimitKey::Plan {
                plan: plan.id.clone(),
                key: key_id.clone(),
            },
            LimitKind::PlanThrottle,
            t,
        ));
    }
    // 3. The plan's quota.
    if let Some(q) = &plan.quota {
        let spec = q.spec_at(snap.week_start, now);
        planned.push((
            LimitRef::quota(plan.id.clone(), key_id, spec),
            LimitKind::PlanQuota,
            LimitConfig::Quota {
                limit: spec.limit,
                period: q.period,
                window_start: spec.window.start,
                window_end: spec.window.end,
            },
        ));
    }
    Ok(())
}

/// The counter of a stage method's throttle: the method's own, or for an unlisted method of a
/// stage that allows them, one bucket of the stage default per verb, shared by every unlisted
/// path — a bucket per path would give each new path (`/nope/1`, `/nope/2`, …) a fresh burst,
/// and the counters no bound. Verbs other than the standard ones share one bucket too (a client
/// chooses the verb).
fn method_counter(stage: &Stage, method: Option<&crate::snapshot::Method>, verb: &str) -> Arc<str> {
    match method {
        Some(m) => m.counter.clone(),
        None => Arc::from(format!(
            "{}/{} unlisted {}",
            stage.api,
            stage.name,
            unlisted_verb(verb)
        )),
    }
}

/// The verb an unlisted method's bucket is kept under: a standard HTTP method as sent
/// (case-sensitive, as matching is), any other verb as `*`.
fn unlisted_verb(verb: &str) -> &str {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    if STANDARD.contains(&verb) { verb } else { "*" }
}

/// The stage a request is for, and the path its methods match: from the request's API and
/// stage names (Envoy context extensions, RLS entries) when it has them; else from the
/// workload's identity (`workloads`), which no client can choose; else from its host's custom
/// domain name, the base path stripped; else from the config's defaults. `Err` is a 403.
#[allow(clippy::result_large_err)]
fn resolve_stage<'s, 'q>(
    snap: &'s Snapshot,
    req: &'q Request<'_>,
) -> Result<(&'s Stage, &'q str), Decision> {
    let generation = snap.generation;
    let deny = |reason| Decision::deny(Outcome::Forbidden, reason, generation);
    if req.api.is_none() && req.stage.is_none() {
        if let Some(p) = req.principal
            && let Some(stage) = snap.workloads.get(p)
        {
            return Ok((stage, &req.path));
        }
        if let Some(host) = req.host
            && !snap.domains.is_empty()
        {
            // A joined duplicate (`a.example.com,b.example.net`), userinfo or a bad port is no
            // host: refused, never matched by suffix.
            if !valid_host(host) {
                return Err(deny(DenyReason::InvalidHost));
            }
            match snap.domains.resolve(host, &req.path) {
                HostMatch::Stage { stage, path } => return Ok((stage, path)),
                HostMatch::NoBasePath => return Err(deny(DenyReason::UnknownBasePath)),
                // A host no domain claims takes the defaults only when the file says so.
                HostMatch::NoDomain
                    if snap.unknown_hosts == UnknownHosts::Refuse
                        || snap.default_api.is_none() && snap.default_stage.is_none() =>
                {
                    return Err(deny(DenyReason::UnknownDomain));
                }
                HostMatch::NoDomain => {}
            }
        }
    }
    let api_name = req.api.or(snap.default_api.as_deref());
    let stage_name = req.stage.or(snap.default_stage.as_deref());
    let Some(api) = api_name.and_then(|a| snap.apis.get(a)) else {
        return Err(deny(DenyReason::UnknownApi));
    };
    let Some(stage) = stage_name.and_then(|s| api.stages.get(s)) else {
        let mut d = deny(DenyReason::UnknownStage);
        d.api = Some(Arc::from(api_name.unwrap_or("")));
        return Err(d);
    };
    Ok((stage, &req.path))
}

/// Whether `host` is a host as an `:authority` carries it (RFC 3986 `host [ ":" port ]`, no
/// userinfo): a name of letters, digits, `-`, `_` and `.`, an IPv4 address, or a bracketed IPv6
/// literal, then at most a port of 1 to 5 digits up to 65535.
pub fn valid_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 255 {
        return false;
    }
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, after)) => {
                if v6.is_empty()
                    || !v6
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                {
                    return false;
                }
                match after {
                    "" => return true,
                    a => match a.strip_prefix(':') {
                        Some(p) => ("v6", Some(p)),
                        None => return false,
                    },
                }
            }
            None => return false,
        },
        None => match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        },
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| n <= 65535)
    });
    name_ok && port_ok
}

fn throttle_limit(
    key: LimitKey,
    kind: LimitKind,
    t: &Throttle,
) -> (LimitRef, LimitKind, LimitConfig) {
    (
        LimitRef {
            key,
            spec: LimitSpec::Bucket(t.spec),
        },
        kind,
        LimitConfig::Throttle {
            rate: t.rate,
            burst: t.spec.burst,
        },
    )
}

impl Planned {
    /// Completes the decision from the store's answer (one state per limit).
    pub fn finish(&mut self, states: &[LimitState], admitted: bool) {
        let decision = &mut self.decision;
        decision.limits = self.meta[..self.kinds]
            .iter()
            .zip(states)
            .map(|((kind, config), state)| LimitReport {
                kind: *kind,
                config: *config,
                state: *state,
            })
            .collect();
        if admitted {
            return;
        }
        let Some(refusing) = decision.limits.iter().find(|l| !l.state.admitted) else {
            return;
        };
        decision.decided_by = Some(refusing.kind);
        decision.outcome = if refusing.kind == LimitKind::PlanQuota {
            Outcome::QuotaExceeded
        } else {
            Outcome::Throttled
        };
        // A retry succeeds only when every refusing limit admits again.
        let mut wait: Option<Nanos> = Some(0);
        for l in decision.limits.iter().filter(|l| !l.state.admitted) {
            wait = match (wait, l.state.retry_after) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        decision.retry_after_secs = wait.map(|ns| {
            let secs = u64::try_from(ns).unwrap_or(0).div_ceil(1_000_000_000);
            secs.max(1)
        });
    }
}

#[cfg(test)]
mod tests;
