//! The Redis store: counters shared by several plangate replicas, on one Redis node or a Redis
//! Cluster.
//!
//! One decision is one round trip: a Lua script (`redis/decide.lua`; EVALSHA, re-sent after a
//! NOSCRIPT) checks every limit and charges them all or none, atomically, inside Redis. State is
//! kept in hashes (see `layout`): one per API key, holding all of that key's buckets, quotas and
//! daily usage, so that a decision reads one hash with one HMGET and writes it with one HSET; in
//! a cluster, keys spread over all masters by their hash tag `{<prefix>|<key id>}`.
//!
//! The shared buckets (account, stage methods) are either fields of one more hash read and
//! written by the same script (single node, exact), or leased (`lease`): a replica takes a batch
//! of tokens in one call and spends it locally — the only way in a cluster, and optional on one
//! node (`--store-shared leased`).
//!
//! Exactness: Lua numbers are doubles, exact to 2^53. Each bucket therefore counts in its own
//! unit, 1/D token with D = 10¹⁵ / gcd(rate_micro, 10¹⁵), which makes the refill per nanosecond
//! (rate_micro / gcd) a whole number: the same rational arithmetic as the memory store, scaled,
//! so both stores give the same answers. That holds while burst × D < 2^53 — any rate with up to
//! three decimals and a burst up to 9,007, any whole rate with a burst up to 9,007,199 — beyond
//! that the bucket is approximated to within one part in 2^53.
//!
//! The script only keeps counters; what a level means (admitted, remaining, reset) is computed
//! back here by the same [`crate::limit`] functions the memory store calls.

mod catalog;
mod conn;
mod lane;
mod layout;
pub mod lease;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::backend::{Charge, Decided, Mode as Asked, Store, Units, UsageRow, quota_of};
use super::error::{StoreError, StoreErrorKind};
use crate::clock::{NANOS_PER_SEC, Nanos, Stopwatch};
use crate::limit::{BucketSpec, LimitKey, LimitRef, LimitSpec, LimitState, UNITS_PER_TOKEN};
pub use conn::RedisTls;
use conn::{store_error, timeout_error};
use lane::{Lane, Masters};
use layout::Home;
use layout::values::{
    BUCKET_PARAMS, LEASE_PARAMS, RECORD, RECORD_PARAMS, RECORD_V1, at, nth, pack_named,
};
use lease::{Leases, Local, Params};

const DECIDE: &str = include_str!("redis/decide.lua");
const MAX_EXACT: u128 = 1 << 53;
/// Days a key's hash is kept after its last new day of use, until the server says its usage
/// retention (`Store::set_usage_retention_days`): 90 days and one.
const DEFAULT_KEEP_DAYS: u64 = 91;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://host:port[/db]`, `rediss://` for TLS; or a Redis Cluster:
    /// `redis-cluster://host:port,host:port,…` (`rediss-cluster://` for TLS).
    pub url: String,
    /// Key prefix; becomes the hash tag `{prefix}`.
    pub prefix: String,
    /// Bound on one operation, connecting included.
    pub timeout: Duration,
    /// With `rediss://`: the CA and client certificate files, if not the system's roots and no
    /// client certificate.
    pub tls: RedisTls,
    /// How the shared buckets (account, stage methods) are kept.
    pub shared: SharedBuckets,
    /// How many replicas share the store (sizes the leases of shared buckets).
    pub replicas: u32,
}

/// How the shared buckets are kept in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SharedBuckets {
    /// In the decision's script, exactly (a single node only: a cluster cannot run one script
    /// over a key's hash and the shared hash, which are in different slots).
    #[default]
    Exact,
    /// Leased in batches and spent locally (see `lease`): never more admitted than the bucket
    /// allows, possibly fewer.
    Leased,
}

/// The default hold period of a lease: tokens not spent within it are given back.
pub const LEASE_HOLD: Duration = Duration::from_millis(100);

/// A bucket in the script's terms: (unit D, refill per ns, capacity, scale to memory units).
fn bucket_params(spec: &BucketSpec) -> (u128, u128, u128, u128) {
    if spec.rate_micro == 0 {
        // No refill: count whole tokens.
        return (1, 0, u128::from(spec.burst), UNITS_PER_TOKEN);
    }
    let rate = u128::from(spec.rate_micro);
    let g = gcd(rate, UNITS_PER_TOKEN);
    let d = UNITS_PER_TOKEN / g;
    let cap = u128::from(spec.burst) * d;
    if cap < MAX_EXACT {
        return (d, rate / g, cap, g);
    }
    // Too fine for doubles: a coarser unit (see the module doc).
    let burst = u128::from(spec.burst.max(1));
    let d2 = (MAX_EXACT / burst).max(1);
    let scale = UNITS_PER_TOKEN / d2;
    (
        d2,
        (rate / scale).max(1),
        u128::from(spec.burst) * d2,
        scale,
    )
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A connection to one node (reconnecting by itself) or to a cluster (following its slots,
/// failovers included).
#[derive(Clone)]
enum Conn {
    Node(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Counters in Redis.
pub struct RedisStore {
    conn: Conn,
    decide: redis::Script,
    catalog: catalog::RedisCatalog,
    prefix: String,
    timeout: Duration,
    /// The leases of shared buckets, when leased.
    leases: Option<Arc<Leases>>,
    /// One node: its lane (see `lane`). A cluster: its masters, each with a lane.
    lane: Option<Lane>,
    masters: Option<Masters>,
    /// The last `now` a caller gave, and the monotonic time since: when to give idle leases back.
    last_now: parking_lot::Mutex<(Nanos, Stopwatch)>,
    /// Days of usage kept: the key hashes' lifetime after their newest usage field.
    usage_keep_ms: std::sync::atomic::AtomicU64,
}

/// The nodes of a `redis-cluster://a:1,b:2` URL, as `redis://a:1` URLs (credentials, when given
/// once before the first host, apply to every node).
fn cluster_nodes(url: &str) -> Option<(Vec<String>, bool)> {
    let (rest, tls) = if let Some(r) = url.strip_prefix("redis-cluster://") {
        (r, false)
    } else {
        (url.strip_prefix("rediss-cluster://")?, true)
    };
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let scheme = if tls { "rediss" } else { "redis" };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{auth}{}", h.trim_end_matches('/')))
        .collect();
    (!nodes.is_empty()).then_some((nodes, tls))
}

/// One entry of a script call: a bucket, or a plan's record of one key (its throttle, quota and
/// daily usage, each optional), as decide.lua reads them.
struct Item {
    /// Index into the call's KEYS (1-based), and the field.
    key: usize,
    field: String,
    part: Part,
}

enum Part {
    /// A bucket: the limit's index.
    Bucket(usize),
    /// A record: the indices of its throttle, quota and usage limits, and the KEYS indices of
    /// the legacy quota and usage counters (0: none).
    Record {
        bucket: Option<usize>,
        quota: Option<usize>,
        usage: Option<usize>,
        legacy: (usize, usize),
    },
}

/// A script's mode (see decide.lua).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Charge,
    Probe,
    DryRun,
    Refund,
    /// Sets a record's quota used count (UpdateUsage).
    Set,
    /// Takes a lease of a shared bucket.
    Lease,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Charge => "c",
            Mode::Probe => "p",
            Mode::DryRun => "d",
            Mode::Refund => "r",
            Mode::Set => "s",
            Mode::Lease => "l",
        }
    }
}

impl RedisStore {
    /// Connects (within the timeout). The connection reconnects by itself afterwards.
    pub async fn connect(opts: &RedisOptions) -> Result<Self, StoreError> {
        let bad_url =
            |e| StoreError::caused_by(StoreErrorKind::Config, format!("bad Redis URL: {e}"), e);
        let setup = opts.timeout.max(Duration::from_secs(2));
        let cluster = cluster_nodes(&opts.url);
        let conn = match &cluster {
            Some((nodes, tls)) => {
                if opts.tls.is_set() && !tls {
                    return Err(StoreError::new(
                        StoreErrorKind::Config,
                        "Redis TLS files are given but the URL is not rediss-cluster://",
                    ));
                }
                let mut builder = redis::cluster::ClusterClient::builder(nodes.clone())
                    .connection_timeout(opts.timeout.max(Duration::from_millis(200)))
                    .response_timeout(opts.timeout)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(200);
                if opts.tls.is_set() {
                    builder = builder.certs(opts.tls.read()?);
                }
                let client = builder.build().map_err(bad_url)?;
                // Each master's version is checked as its lane opens (Masters::refresh).
                let conn = conn::at_start(setup, client.get_async_connection()).await?;
                Conn::Cluster(conn)
            }
            None => {
                if opts.tls.is_set() && !opts.url.starts_with("rediss://") {
                    return Err(StoreError::new(
                        StoreErrorKind::Config,
                        "Redis TLS files are given but the URL is not rediss://",
                    ));
                }
                let client = conn::client(&opts.url, &opts.tls)?;
                // One plain connection first, to name what is wrong at start: a wrong or missing
                // password (the reconnecting manager below would only retry until its timeout).
                let mut probe =
                    conn::at_start(setup, client.get_multiplexed_async_connection()).await?;
                let _: String =
                    conn::at_start(setup, redis::cmd("PING").query_async(&mut probe)).await?;
                let info: String = conn::at_start(
                    setup,
                    redis::cmd("INFO").arg("server").query_async(&mut probe),
                )
                .await?;
                lane::check_version(&info)
                    .map_err(|e| StoreError::new(StoreErrorKind::Config, e))?;
                drop(probe);
                let conn = conn::manager(client, opts.timeout).await?;
                Conn::Node(conn)
            }
        };
        let is_cluster = cluster.is_some();
        if is_cluster && opts.shared == SharedBuckets::Exact {
            tracing::info!(
                "Redis Cluster: shared buckets (account, stage methods) are leased, not exact"
            );
        }
        let leased = is_cluster || opts.shared == SharedBuckets::Leased;
        let hold = Nanos::try_from(LEASE_HOLD.as_nanos()).unwrap_or(Nanos::MAX);
        let decide = redis::Script::new(DECIDE);
        let lane = match &conn {
            Conn::Node(c) => Some(Lane::spawn(c.clone(), decide.clone())),
            Conn::Cluster(_) => None,
        };
        let mut store = RedisStore {
            conn,
            decide,
            catalog: catalog::RedisCatalog::new(&opts.prefix),
            prefix: opts.prefix.clone(),
            timeout: opts.timeout,
            leases: leased.then(|| Arc::new(Leases::new(hold, opts.replicas))),
            lane,
            masters: None,
            last_now: parking_lot::Mutex::new((0, Stopwatch::start())),
            usage_keep_ms: std::sync::atomic::AtomicU64::new(DEFAULT_KEEP_DAYS * 86_400_000),
        };
        if let Some((nodes, _)) = &cluster {
            let masters = Masters::new(
                &nodes[0],
                opts.tls.clone(),
                opts.timeout,
                store.decide.clone(),
            );
            masters.refresh(&store.conn).await?;
            store.masters = Some(masters);
        }
        Ok(store)
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.masters.is_some()
    }

    /// Whether shared buckets are leased.
    pub fn leases_shared(&self) -> bool {
        self.leases.is_some()
    }

    /// The deadline of a script for `first_key` sent now, in the time of the node that runs it
    /// (its lane's clock: on a cluster each master's own): half the timeout from now, so that a
    /// script that starts after it is one plangate has given up on (or is about to), and one
    /// that starts before it answers within the timeout. 0 (none) without a lane.
    async fn deadline_ms(&self, first_key: &str) -> i64 {
        match self.lane_for(first_key) {
            Some(lane) => lane.deadline_ms(self.timeout / 2, self.timeout).await,
            None => 0,
        }
    }

    /// The lane a script for `first_key` goes through, if one is known.
    fn lane_for(&self, first_key: &str) -> Option<Lane> {
        match (&self.masters, &self.lane) {
            (Some(m), _) => m.lane_for(first_key),
            (None, Some(lane)) => Some(lane.clone()),
            (None, None) => None,
        }
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        Self::within(self.timeout, f).await
    }

    /// `f`, bounded by `limit`: a timeout or a Redis error as a store error.
    async fn within<T>(
        limit: Duration,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        conn::bounded(limit, f, store_error).await
    }

    fn saw(&self, now: Nanos) {
        *self.last_now.lock() = (now, Stopwatch::start());
    }

    /// One call of the decision script over `items` (whose hashes are `keys`) for `limits`,
    /// each for its `units`: the admission and the level before the call of each limit named,
    /// in memory-store units.
    async fn call(
        &self,
        keys: &[String],
        items: &[Item],
        limits: &[LimitRef],
        units: &[u64],
        mode: Mode,
        now: Nanos,
    ) -> Result<(bool, Vec<(usize, u128)>), StoreError> {
        let deadline = if matches!(mode, Mode::Refund | Mode::Set) {
            0
        } else {
            self.deadline_ms(&keys[0]).await
        };
        let mut inv = self.decide_cmd(keys, mode, deadline, now);
        entry_args(&mut inv, items, limits, units, mode);
        let reply = self.send_decide(&keys[0], inv).await?;
        if reply.first() == Some(&-1) {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "redis ran the script after its deadline (it was queued behind something slow); nothing was charged",
            ));
        }
        let expected = 1 + items
            .iter()
            .map(|it| match it.part {
                Part::Bucket(_) => 1,
                Part::Record { .. } => 3,
            })
            .sum::<usize>();
        if reply.len() != expected {
            return Err(StoreError::new(
                StoreErrorKind::Protocol,
                format!("unexpected script reply of {} values", reply.len()),
            ));
        }
        Ok((reply[0] == 1, levels(&reply, items, limits)))
    }

    /// The decision script's call (EVALSHA) with `keys` and its header arguments (see
    /// decide.lua); the entries' arguments follow.
    fn decide_cmd(&self, keys: &[String], mode: Mode, deadline: i64, now: Nanos) -> redis::Cmd {
        let keep_ms = self
            .usage_keep_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let prune_before =
            now.div_euclid(NANOS_PER_SEC) - i64::try_from(keep_ms / 1000).unwrap_or(0) - 86_400;
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.decide.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(now.div_euclid(NANOS_PER_SEC))
            .arg(now.rem_euclid(NANOS_PER_SEC))
            .arg(mode.arg())
            .arg(deadline)
            .arg(keep_ms)
            .arg(prune_before);
        cmd
    }

    /// Sends a decision script call (`cmd`, whose first key is `first_key`): through the lane of
    /// its node (pipelined with the scripts of concurrent requests), or, for a slot whose master
    /// is not known yet, through the cluster client.
    async fn send_decide(&self, first_key: &str, cmd: redis::Cmd) -> Result<Vec<i64>, StoreError> {
        let watch = Stopwatch::start();
        // Kept for a redirection's second try (a cluster only: one node never redirects).
        let again = self.masters.is_some().then(|| cmd.clone());
        let mut result = match self.lane_for(first_key) {
            Some(lane) => tokio::time::timeout(self.timeout, lane.call(cmd))
                .await
                .map_err(|_| timeout_error(self.timeout))
                .and_then(|r| r),
            None => self.eval_routed(&cmd, self.timeout).await,
        };
        if result.is_err()
            && let Some(m) = &self.masters
        {
            // A failover or a resharding: learn the slots again (in the background, once).
            m.refresh_soon(&self.conn);
        }
        // A slot that moved (a planned reshard): the script did not run; sent again through the
        // cluster client, which follows MOVED and ASK, within what is left of the timeout — a
        // few times, further apart each time, while the masters still disagree about the new
        // owner.
        for pause_ms in [0, 5, 20, 50, 100, 200, 400] {
            let Err(e) = &result else { break };
            let Some(cmd) = &again else { break };
            if !e.message().starts_with(conn::REDIRECTED) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            let Some(left) = self.timeout.checked_sub(watch.elapsed()) else {
                break;
            };
            result = self.eval_routed(cmd, left).await;
        }
        result
    }

    /// The decision script `cmd` (an EVALSHA) as a whole EVAL — the node may not have loaded it —
    /// through the connection that routes by key (the cluster client follows redirections).
    async fn eval_routed(
        &self,
        cmd: &redis::Cmd,
        within: Duration,
    ) -> Result<Vec<i64>, StoreError> {
        let mut eval = redis::cmd("EVAL");
        eval.arg(DECIDE);
        for a in cmd.args_iter().skip(2) {
            if let redis::Arg::Simple(bytes) = a {
                eval.arg(bytes);
            }
        }
        let mut conn = self.conn();
        Self::within(within, eval.query_async(&mut conn)).await
    }

    /// The script's entries for the limits `which` (grouped into records per key and plan), for
    /// the hashes `group` of `homes`: KEYS and items.
    fn entries(
        &self,
        limits: &[LimitRef],
        which: &[usize],
        homes: &[Home],
        group: &[usize],
    ) -> (Vec<String>, Vec<Item>) {
        let mut keys: Vec<String> = group
            .iter()
            .map(|&h| layout::hash_name(&self.prefix, &homes[h]))
            .collect();
        let mut items: Vec<Item> = Vec::new();
        for &i in which {
            let (home, field) = layout::place(&limits[i].key);
            let Some(k) = group.iter().position(|&h| homes[h] == home) else {
                continue;
            };
            let existing = items
                .iter()
                .position(|it| it.key == k + 1 && it.field == field);
            let it = match existing {
                Some(n) => &mut items[n],
                None => {
                    let part = if layout::is_record(&limits[i].key) {
                        Part::Record {
                            bucket: None,
                            quota: None,
                            usage: None,
                            legacy: (0, 0),
                        }
                    } else {
                        Part::Bucket(i)
                    };
                    items.push(Item {
                        key: k + 1,
                        field,
                        part,
                    });
                    items.last_mut().expect("just pushed")
                }
            };
            if let Part::Record {
                bucket,
                quota,
                usage,
                legacy,
            } = &mut it.part
            {
                let mut legacy_key = || {
                    if self.is_cluster() {
                        return 0;
                    }
                    match layout::legacy_name(&self.prefix, &limits[i].key) {
                        Some(name) => {
                            keys.push(name);
                            keys.len()
                        }
                        None => 0,
                    }
                };
                match &limits[i].key {
                    LimitKey::Plan { .. } => *bucket = Some(i),
                    LimitKey::Quota { .. } => {
                        *quota = Some(i);
                        legacy.0 = legacy_key();
                    }
                    LimitKey::Usage { .. } => {
                        *usage = Some(i);
                        legacy.1 = legacy_key();
                    }
                    _ => {}
                }
            }
        }
        (keys, items)
    }

    /// Runs the script over the per-key (and, when exact, shared) limits `which` of `limits`:
    /// one call on a single node; in a cluster one call per key's hash, all-or-nothing across
    /// them by a dry run first and refunds if a charge is refused in between.
    async fn run_keyed(
        &self,
        limits: &[LimitRef],
        units: &[u64],
        which: &[usize],
        mode: Mode,
        now: Nanos,
    ) -> Result<(bool, Vec<(usize, u128)>), StoreError> {
        let mut homes: Vec<Home> = Vec::new();
        for &i in which {
            let (home, _) = layout::place(&limits[i].key);
            if !homes.contains(&home) {
                homes.push(home);
            }
        }
        let groups: Vec<Vec<usize>> = if self.is_cluster() {
            (0..homes.len()).map(|h| vec![h]).collect()
        } else {
            vec![(0..homes.len()).collect()]
        };
        if groups.len() == 1 {
            let (keys, items) = self.entries(limits, which, &homes, &groups[0]);
            return self.call(&keys, &items, limits, units, mode, now).await;
        }
        // Several keys' hashes in a cluster (an RLS request naming several API keys): check
        // all, then charge each; a refusal in between (a race) refunds what was charged.
        let built: Vec<_> = groups
            .iter()
            .map(|g| self.entries(limits, which, &homes, g))
            .collect();
        let first = if mode == Mode::Charge {
            Mode::DryRun
        } else {
            mode
        };
        let mut admitted = true;
        let mut out = Vec::with_capacity(which.len());
        for (keys, items) in &built {
            let (ok, levels) = self.call(keys, items, limits, units, first, now).await?;
            admitted &= ok;
            out.extend(levels);
        }
        if mode != Mode::Charge || !admitted {
            return Ok((admitted, out));
        }
        out.clear();
        for (n, (keys, items)) in built.iter().enumerate() {
            match self
                .call(keys, items, limits, units, Mode::Charge, now)
                .await
            {
                Ok((true, levels)) => out.extend(levels),
                other => {
                    for (keys, items) in &built[..n] {
                        if let Err(e) = self
                            .call(keys, items, limits, units, Mode::Refund, now)
                            .await
                        {
                            tracing::error!(error = %e, "refunding a partly charged request failed: its units stay charged");
                        }
                    }
                    let (_, levels) = other?;
                    out.extend(levels);
                    return Ok((false, out));
                }
            }
        }
        Ok((true, out))
    }

    /// One lease call (decide.lua's mode "l"): give back `give`, take up to `want` units of
    /// `field` of the shared hash. Goes out like any decision (the shared hash's lane).
    async fn lease_call(
        &self,
        field: &str,
        p: Params,
        want: u128,
        give: u128,
        now: Nanos,
    ) -> Result<(u128, u128), StoreError> {
        let keys = [layout::hash_name(&self.prefix, &Home::Shared)];
        let mut cmd = self.decide_cmd(&keys, Mode::Lease, 0, now);
        cmd.arg(1).arg(field).arg("b").arg(pack_named!(LEASE_PARAMS;
            unit: p.unit as f64,
            refill: p.refill as f64,
            capacity: p.capacity as f64,
            want: want as f64,
            give: give as f64,
        ));
        let reply = self.send_decide(&keys[0], cmd).await?;
        match reply.as_slice() {
            [grant, level] => Ok((
                u128::try_from(*grant).unwrap_or(0),
                u128::try_from(*level).unwrap_or(0),
            )),
            _ => Err(StoreError::new(
                StoreErrorKind::Protocol,
                format!("unexpected lease reply of {} values", reply.len()),
            )),
        }
    }

    /// Gives the units of idle leases back to Redis (see [`Leases::idle`]); called every hold
    /// period by [`RedisStore::spawn_lease_returns`].
    pub async fn return_idle_leases(&self) {
        let Some(leases) = &self.leases else { return };
        let now = {
            let (t, since) = *self.last_now.lock();
            t.saturating_add(Nanos::try_from(since.elapsed().as_nanos()).unwrap_or(0))
        };
        for (field, units, p) in leases.idle(now) {
            if self.lease_call(&field, p, 0, units, now).await.is_err() {
                leases.give_back(&field, units);
            }
        }
    }

    /// Starts giving idle leases back every hold period, while the store lives.
    pub fn spawn_lease_returns(self: &Arc<Self>) {
        if self.leases.is_none() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LEASE_HOLD);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { break };
                store.return_idle_leases().await;
            }
        });
    }

    /// The shared limits `which` of a request, from leases: spends them when charging, reads
    /// them otherwise. Each gets its state and the units spent (to give back on a refusal).
    async fn run_shared(
        &self,
        leases: &Leases,
        limits: &[LimitRef],
        units: &[u64],
        which: &[usize],
        mode: Mode,
        now: Nanos,
    ) -> Result<Vec<(usize, LimitState, u128)>, StoreError> {
        let mut out = Vec::with_capacity(which.len());
        for &i in which {
            let l = &limits[i];
            let LimitSpec::Bucket(spec) = &l.spec else {
                continue;
            };
            let (unit, refill, capacity, scale) = bucket_params(spec);
            let p = Params {
                unit,
                refill,
                capacity,
            };
            let need_tokens = units[i].max(1);
            let need = u128::from(need_tokens).saturating_mul(unit);
            let (_, field) = layout::place(&l.key);
            let to_mem = |level: u128| (level * scale).min(spec.capacity());
            if mode != Mode::Charge {
                let (level, _) = leases.peek(&field, p, need);
                let state = if mode == Mode::DryRun {
                    let mut s = l.spec.check(to_mem(level), need_tokens, now);
                    if s.admitted {
                        s = l.spec.charge(to_mem(level), need_tokens, now).state;
                    }
                    s
                } else {
                    l.spec.check(to_mem(level), need_tokens, now)
                };
                out.push((i, state, 0));
                continue;
            }
            let mut local = leases.spend(&field, p, need, now);
            if let Local::Fetch { .. } = local {
                // One request asks; the others wait for its batch, then spend from it.
                let asking = leases.asking(&field);
                let _asking = asking.lock().await;
                local = leases.spend(&field, p, need, now);
                if let Local::Fetch { want } = local {
                    let (grant, level) = match self.lease_call(&field, p, want, 0, now).await {
                        Ok(r) => r,
                        Err(e) => {
                            // Nothing is charged for a failed request: what this request
                            // already spent from other leases goes back to them.
                            for (j, _, units) in &out {
                                if *units > 0 {
                                    leases.give_back(&layout::place(&limits[*j].key).1, *units);
                                }
                            }
                            return Err(e);
                        }
                    };
                    local = leases.granted(&field, grant, level, need, now);
                }
            }
            match local {
                Local::Spent { before } => {
                    out.push((
                        i,
                        l.spec.charge(to_mem(before), need_tokens, now).state,
                        need,
                    ));
                }
                Local::Wait { retry_at, before } => {
                    let mut s = l.spec.check(to_mem(before), need_tokens, now);
                    s.admitted = false;
                    s.remaining = 0;
                    s.retry_after = (retry_at != Nanos::MAX).then(|| retry_at.saturating_sub(now));
                    out.push((i, s, 0));
                }
                Local::Fetch { .. } => {
                    return Err(StoreError::new(
                        StoreErrorKind::Protocol,
                        "a lease was asked for twice",
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Decides `limits`, each for its `units`, in `mode`.
    async fn run(
        &self,
        limits: &[LimitRef],
        units: &[u64],
        mode: Mode,
        now: Nanos,
    ) -> Result<Charge, StoreError> {
        if self.leases.is_some() {
            // For giving back idle leases (their clock is the callers').
            self.saw(now);
        }
        let (shared, keyed): (Vec<usize>, Vec<usize>) = match &self.leases {
            Some(_) => (0..limits.len()).partition(|&i| layout::is_shared(&limits[i].key)),
            None => (Vec::new(), (0..limits.len()).collect()),
        };
        let mut states: Vec<Option<LimitState>> = vec![None; limits.len()];
        let mut spent: Vec<(usize, u128)> = Vec::new();
        let mut admitted = true;
        if let Some(leases) = &self.leases {
            for (i, state, units) in self
                .run_shared(leases, limits, units, &shared, mode, now)
                .await?
            {
                admitted &= state.admitted;
                states[i] = Some(state);
                if units > 0 {
                    spent.push((i, units));
                }
            }
        }
        let give_back = |spent: &[(usize, u128)]| {
            if let Some(leases) = &self.leases {
                for &(i, units) in spent {
                    leases.give_back(&layout::place(&limits[i].key).1, units);
                }
            }
        };
        if !admitted && mode == Mode::Charge {
            // A shared bucket refused: nothing is charged, and the key's hash is not read (its
            // limits are reported as admitting, with nothing known of what is left).
            give_back(&spent);
            for &i in &keyed {
                states[i] = Some(LimitState {
                    admitted: true,
                    remaining: u64::MAX,
                    reset_after: None,
                    retry_after: None,
                });
            }
        } else if !keyed.is_empty() {
            let result = self.run_keyed(limits, units, &keyed, mode, now).await;
            let (ok, levels) = match result {
                Ok(r) => r,
                Err(e) => {
                    give_back(&spent);
                    return Err(e);
                }
            };
            if !ok && mode == Mode::Charge {
                give_back(&spent);
            }
            let charged = ok && admitted && matches!(mode, Mode::Charge | Mode::DryRun);
            for (i, level) in levels {
                let need = units[i].max(1);
                states[i] = Some(if charged {
                    limits[i].spec.charge(level, need, now).state
                } else {
                    limits[i].spec.check(level, need, now)
                });
            }
            admitted &= ok;
        }
        let states = states
            .into_iter()
            .map(|s| {
                s.ok_or_else(|| {
                    StoreError::new(StoreErrorKind::Protocol, "a limit was left undecided")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Charge { admitted, states })
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn decide(
        &self,
        limits: &[LimitRef],
        units: Units<'_>,
        mode: Asked,
        now: Nanos,
    ) -> Decided {
        let mode = match mode {
            Asked::Charge => Mode::Charge,
            Asked::Probe => Mode::Probe,
            Asked::DryRun => Mode::DryRun,
        };
        match units {
            Units::Same(n) => {
                self.run(limits, &vec![n.max(1); limits.len()], mode, now)
                    .await
            }
            Units::Each(units) => {
                let (merged, demand, slot) = super::backend::merge_demands(limits, units);
                let c = self.run(&merged, &demand, mode, now).await?;
                Ok(Charge {
                    admitted: c.admitted,
                    states: slot.iter().map(|&i| c.states[i]).collect(),
                })
            }
        }
    }

    async fn usage(
        &self,
        plan: &str,
        keys: &[Arc<str>],
        from: Nanos,
        to: Nanos,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let day = 86_400 * NANOS_PER_SEC;
        let first = from.div_euclid(day) * day;
        let days: Vec<Nanos> = (0..)
            .map(|n| first + n * day)
            .take_while(|d| *d < to)
            .filter(|d| *d >= from)
            .collect();
        let mut rows = Vec::new();
        if days.is_empty() {
            return Ok(rows);
        }
        // Past days' fields, then the plan's record (today's usage, or the last day's until
        // the record moves to a new day).
        let mut fields: Vec<String> = days
            .iter()
            .map(|d| layout::usage_field(plan, d.div_euclid(NANOS_PER_SEC)))
            .collect();
        fields.push(layout::record_field(plan));
        // A few keys at a time in flight: reports serve the admin API, not the request path.
        for chunk in keys.chunks(64) {
            let mut set = tokio::task::JoinSet::new();
            for (n, key) in chunk.iter().enumerate() {
                let mut conn = self.conn();
                let name = layout::hash_name(&self.prefix, &Home::Key(key.clone()));
                let cmd = redis::cmd("HMGET").arg(name).arg(&fields).clone();
                let timeout = self.timeout.max(Duration::from_secs(2));
                set.spawn(async move {
                    let r: redis::RedisResult<Vec<Option<Vec<u8>>>> =
                        match tokio::time::timeout(timeout, cmd.query_async(&mut conn)).await {
                            Ok(r) => r,
                            Err(_) => return (n, Err(timeout_error(timeout))),
                        };
                    (n, r.map_err(store_error))
                });
            }
            while let Some(joined) = set.join_next().await {
                let (n, values) = joined.map_err(|e| {
                    StoreError::caused_by(StoreErrorKind::Protocol, "usage read task failed", e)
                })?;
                let mut values = values?;
                let record = values.pop().flatten();
                let mut seen = Vec::new();
                for (d, used) in days.iter().zip(values) {
                    let used = used.and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok());
                    if let Some(used) = used {
                        seen.push(*d);
                        rows.push(UsageRow {
                            key: chunk[n].to_string(),
                            day_start: *d,
                            used,
                        });
                    }
                }
                // The record: today's usage and the day it counts.
                if let Some(r) =
                    record.filter(|r| [RECORD.len(), RECORD_V1.len()].contains(&(r.len() / 8)))
                {
                    let used = nth(&r, const { at(&RECORD, "used_today") });
                    let day = nth(&r, const { at(&RECORD, "day") }) as i64 * NANOS_PER_SEC;
                    if used > 0.0 && (from..to).contains(&day) && !seen.contains(&day) {
                        rows.push(UsageRow {
                            key: chunk[n].to_string(),
                            day_start: day,
                            used: used as u64,
                        });
                    }
                }
            }
        }
        if !self.is_cluster() {
            self.legacy_usage(plan, from, to, &mut rows).await?;
        }
        Ok(rows)
    }

    async fn set_used(&self, limit: &LimitRef, used: i64, now: Nanos) -> Result<(), StoreError> {
        quota_of(limit)?;
        let limits = std::slice::from_ref(limit);
        // The record's quota part only: its throttle and usage keep their values.
        let (keys, items) = self.entries(limits, &[0], &[layout::place(&limit.key).0], &[0]);
        let units = [used as u64];
        self.call(&keys, &items, limits, &units, Mode::Set, now)
            .await?;
        Ok(())
    }

    fn set_usage_retention_days(&self, days: u32) {
        self.usage_keep_ms.store(
            u64::from(days.saturating_add(1)) * 86_400_000,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    async fn initial_period(&self, name: &str, start: Nanos) -> Result<Nanos, StoreError> {
        // `{prefix}|initial|<plan>|<PERIOD>`, no expiry: the first replica's SET NX wins, and
        // every replica reads the winner's value.
        let key = format!("{{{}}}|initial|{name}", self.prefix);
        let mut conn = self.conn();
        let _: Option<String> = self
            .bounded(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(start)
                    .arg("NX")
                    .query_async(&mut conn),
            )
            .await?;
        let recorded: Option<i64> = self
            .bounded(redis::cmd("GET").arg(&key).query_async(&mut conn))
            .await?;
        recorded.ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::Protocol,
                format!("the initial period `{name}` vanished from Redis"),
            )
        })
    }

    async fn catalog_write(
        &self,
        expected: u64,
        records: &[super::catalog::Record],
    ) -> Result<super::catalog::Written, StoreError> {
        self.catalog
            .write(&mut self.conn(), expected, records)
            .await
    }

    async fn catalog_read(&self, after: u64) -> Result<super::catalog::Changes, StoreError> {
        self.catalog.read(&mut self.conn(), after).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let pong: String =
            tokio::time::timeout(self.timeout, redis::cmd("PING").query_async(&mut conn))
                .await
                .map_err(|_| timeout_error(self.timeout))?
                .map_err(store_error)?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::new(
                StoreErrorKind::Protocol,
                format!("PING answered {pong}"),
            ))
        }
    }
}

impl RedisStore {
    /// Daily usage still under the earlier layout's keys (`{prefix}|u|<plan>|<key>|<day>`), for
    /// the (key, day) pairs the hashes do not have: history from before an upgrade.
    async fn legacy_usage(
        &self,
        plan: &str,
        from: Nanos,
        to: Nanos,
        rows: &mut Vec<UsageRow>,
    ) -> Result<(), StoreError> {
        let pattern = format!("{{{}}}|u|{}|*", self.prefix, plan);
        let mut conn = self.conn();
        let mut cursor: u64 = 0;
        let mut names: Vec<String> = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .bounded(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn),
                )
                .await?;
            names.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let head = format!("{{{}}}|", self.prefix);
        let have: std::collections::HashSet<(String, Nanos)> =
            rows.iter().map(|r| (r.key.clone(), r.day_start)).collect();
        let keys: Vec<(String, String, Nanos)> = names
            .into_iter()
            .filter_map(|n| match LimitKey::parse_counter(n.strip_prefix(&head)?)? {
                LimitKey::Usage { key, day_start, .. }
                    if (from..to).contains(&day_start)
                        && !have.contains(&(key.to_string(), day_start)) =>
                {
                    Some((n, key.to_string(), day_start))
                }
                _ => None,
            })
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let values: Vec<Option<u64>> = self
            .bounded(
                redis::cmd("MGET")
                    .arg(keys.iter().map(|(n, _, _)| n.as_str()).collect::<Vec<_>>())
                    .query_async(&mut conn),
            )
            .await?;
        for ((_, key, day_start), v) in keys.into_iter().zip(values) {
            if let Some(used) = v {
                rows.push(UsageRow {
                    key,
                    day_start,
                    used,
                });
            }
        }
        Ok(())
    }
}

/// The decision script's arguments for `items`: each entry's key, field and packed parameters
/// (see decide.lua), each limit for its `units`.
fn entry_args(
    inv: &mut redis::Cmd,
    items: &[Item],
    limits: &[LimitRef],
    units: &[u64],
    mode: Mode,
) {
    let bucket = |i: Option<usize>| match i.map(|i| &limits[i].spec) {
        Some(LimitSpec::Bucket(spec)) => {
            let (d, refill, cap, _) = bucket_params(spec);
            [d as f64, refill as f64, cap as f64]
        }
        _ => [0.0; 3],
    };
    let units_of = |i: Option<usize>| i.map_or(0.0, |i| units[i] as f64);
    // Quota units are signed in a Set (the used count to set).
    let set_units = |i: Option<usize>| i.map_or(0.0, |i| units[i] as i64 as f64);
    for it in items {
        inv.arg(it.key).arg(&it.field);
        match &it.part {
            Part::Bucket(i) => {
                let [unit, refill, capacity] = bucket(Some(*i));
                inv.arg("b").arg(pack_named!(BUCKET_PARAMS;
                    unit: unit,
                    refill: refill,
                    capacity: capacity,
                    units: units[*i] as f64,
                ));
            }
            Part::Record {
                bucket: b,
                quota,
                usage,
                legacy,
            } => {
                let [d, refill, cap] = bucket(*b);
                let (limit, start, end) = match quota.map(|i| &limits[i].spec) {
                    Some(LimitSpec::Quota(q)) => (
                        q.limit as f64,
                        q.window.start.div_euclid(NANOS_PER_SEC) as f64,
                        q.window.end.div_euclid(NANOS_PER_SEC) as f64,
                    ),
                    _ => (-1.0, -1.0, -1.0),
                };
                let day = match usage.map(|i| &limits[i].key) {
                    Some(LimitKey::Usage { day_start, .. }) => {
                        day_start.div_euclid(NANOS_PER_SEC) as f64
                    }
                    _ => -1.0,
                };
                let qunits = if mode == Mode::Set {
                    set_units(*quota)
                } else {
                    units_of(*quota)
                };
                inv.arg("r").arg(pack_named!(RECORD_PARAMS;
                    unit: d,
                    refill: refill,
                    capacity: cap,
                    bucket_units: units_of(*b),
                    limit: limit,
                    window_start: start,
                    window_end: end,
                    quota_units: qunits,
                    quota_legacy: legacy.0 as f64,
                    day: day,
                    usage_units: units_of(*usage),
                    usage_legacy: legacy.1 as f64,
                ));
            }
        }
    }
}

/// The level before the call of each limit the script's `reply` names, in memory-store units.
fn levels(reply: &[i64], items: &[Item], limits: &[LimitRef]) -> Vec<(usize, u128)> {
    let bucket_level = |i: usize, raw: i64| match &limits[i].spec {
        LimitSpec::Bucket(spec) => {
            let (_, _, _, scale) = bucket_params(spec);
            (u128::try_from(raw.max(0)).unwrap_or(0) * scale).min(spec.capacity())
        }
        _ => 0,
    };
    let mut levels = Vec::with_capacity(limits.len());
    let mut at = 1;
    for it in items {
        match &it.part {
            Part::Bucket(i) => {
                levels.push((*i, bucket_level(*i, reply[at])));
                at += 1;
            }
            Part::Record {
                bucket: b,
                quota,
                usage,
                ..
            } => {
                if let Some(i) = b {
                    levels.push((*i, bucket_level(*i, reply[at])));
                }
                // A quota's used count is signed: below zero after a temporary extension.
                if let Some(i) = quota {
                    levels.push((*i, crate::limit::quota_level(reply[at + 1])));
                }
                if let Some(i) = usage {
                    levels.push((*i, u128::try_from(reply[at + 2].max(0)).unwrap_or(0)));
                }
                at += 3;
            }
        }
    }
    levels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_units_are_exact_for_common_rates() {
        // 1/s, burst 5: D = 10⁹, refill 1 per ns.
        assert_eq!(
            bucket_params(&BucketSpec {
                rate_micro: 1_000_000,
                burst: 5
            }),
            (1_000_000_000, 1, 5_000_000_000, 1_000_000)
        );
        // 0.1/s.
        let (d, refill, cap, scale) = bucket_params(&BucketSpec {
            rate_micro: 100_000,
            burst: 2,
        });
        assert_eq!((d * scale, refill * scale), (UNITS_PER_TOKEN, 100_000));
        assert!(cap < MAX_EXACT);
        // 10,000/s, burst 5,000 (AWS account default).
        let (d, _, cap, _) = bucket_params(&BucketSpec {
            rate_micro: 10_000_000_000,
            burst: 5000,
        });
        assert_eq!(d, 100_000);
        assert!(cap < MAX_EXACT);
    }
}
