//! The Redis store: counters shared by several plangate replicas.
//!
//! One decision is one round trip: a Lua script (EVALSHA, re-sent with EVAL after a NOSCRIPT)
//! checks every limit and charges them all or none, atomically, inside Redis.
//!
//! Exactness: Lua numbers are doubles, exact to 2^53. Each bucket therefore counts in its own
//! unit, 1/D token with D = 10¹⁵ / gcd(rate_micro, 10¹⁵), which makes the refill per nanosecond
//! (rate_micro / gcd) a whole number: the same rational arithmetic as the memory store, scaled,
//! so both stores give the same answers. That holds while burst × D < 2^53 — any rate with up to
//! three decimals and a burst up to 9,007, any whole rate with a burst up to 9,007,199 — beyond
//! that the bucket is approximated to within one part in 2^53.
//!
//! Keys (names from [`LimitKey::name`]): `{prefix}|b|…` for buckets (a hash: level, seconds,
//! nanoseconds), `{prefix}|q|<plan>|<key>|<window start>` for quota counters and
//! `{prefix}|u|<plan>|<key>|<day start>` for daily usage counters (plain integers; starts in Unix
//! seconds). The braces are a Redis Cluster hash tag: every key of plangate lives in one slot,
//! because one decision touches the account bucket, which every request shares. Buckets expire
//! when they would be full again, quota counters when their window ends, usage counters after
//! their retention.
//!
//! The script only keeps counters; what a level means (admitted, remaining, reset) is computed
//! back here by the same [`crate::limit`] functions the memory store calls.

use std::time::Duration;

use std::path::PathBuf;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::backend::{Charge, Store, UsageRow, quota_of};
use super::error::{StoreError, StoreErrorKind};
use crate::clock::{NANOS_PER_SEC, Nanos, Stopwatch};
use crate::limit::{BucketSpec, LimitKey, LimitRef, LimitSpec, UNITS_PER_TOKEN};

const SCRIPT: &str = include_str!("redis/check_and_charge.lua");
const MAX_EXACT: u128 = 1 << 53;
/// Extra lifetime of keys past the moment they stop mattering, in ms.
const TTL_SLACK_MS: u64 = 60_000;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// Key prefix; becomes the hash tag `{prefix}`.
    pub prefix: String,
    /// Bound on one operation, connecting included.
    pub timeout: Duration,
    /// With `rediss://`: the CA and client certificate files, if not the system's roots and no
    /// client certificate.
    pub tls: RedisTls,
}

/// The certificate files of a `rediss://` connection (PEM).
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    /// CA certificates that verify Redis's certificate (default: the system's roots).
    pub ca: Option<PathBuf>,
    /// A client certificate and its key, for `tls-auth-clients yes`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl RedisTls {
    /// Whether any file is given.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    fn read(&self) -> Result<redis::TlsCertificates, StoreError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| {
                StoreError::caused_by(
                    StoreErrorKind::Config,
                    format!("cannot read {}: {e}", p.display()),
                    e,
                )
            })
        };
        let client_tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            (None, None) => None,
            _ => {
                return Err(StoreError::new(
                    StoreErrorKind::Config,
                    "a Redis client certificate needs both its certificate and its key",
                ));
            }
        };
        Ok(redis::TlsCertificates {
            client_tls,
            root_cert: self.ca.as_ref().map(read).transpose()?,
        })
    }
}

/// Counters in Redis.
pub struct RedisStore {
    conn: ConnectionManager,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    /// Redis's clock, as last read (`TIME`, in ms) and the monotonic time since: what Redis's
    /// clock says now, for the scripts' deadlines — independent of plangate's own clock.
    redis_clock: parking_lot::Mutex<(i64, Stopwatch)>,
    refreshing: std::sync::atomic::AtomicBool,
}

/// How often Redis's clock is read again (drift, a failover to another host).
const CLOCK_REFRESH: Duration = Duration::from_secs(30);

/// Reads Redis's clock: `TIME` in ms.
async fn redis_time<C: redis::aio::ConnectionLike>(conn: &mut C) -> redis::RedisResult<i64> {
    let (s, us): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(s * 1000 + us / 1000)
}

fn store_error(e: redis::RedisError) -> StoreError {
    let kind = if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
    {
        StoreErrorKind::Unavailable
    } else {
        StoreErrorKind::Protocol
    };
    StoreError::caused_by(kind, e.to_string(), e)
}

/// A connection or PING error, with authentication failures named as such.
fn auth_error(e: redis::RedisError) -> StoreError {
    let text = e.to_string();
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("invalid password")
    {
        StoreError::caused_by(
            StoreErrorKind::Config,
            "authentication failed: check the password (and user) in the Redis URL",
            e,
        )
    } else if text.contains("NOAUTH") {
        StoreError::caused_by(
            StoreErrorKind::Config,
            "authentication required: Redis asks for a password the URL does not give",
            e,
        )
    } else {
        store_error(e)
    }
}

fn timeout_error(t: Duration) -> StoreError {
    StoreError::new(
        StoreErrorKind::Unavailable,
        format!("redis did not answer within {t:?}"),
    )
}

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

impl RedisStore {
    /// Connects (within the timeout). The connection reconnects by itself afterwards.
    pub async fn connect(opts: &RedisOptions) -> Result<Self, StoreError> {
        let bad_url =
            |e| StoreError::caused_by(StoreErrorKind::Config, format!("bad Redis URL: {e}"), e);
        let client = if opts.tls.is_set() {
            if !opts.url.starts_with("rediss://") {
                return Err(StoreError::new(
                    StoreErrorKind::Config,
                    "Redis TLS files are given but the URL is not rediss://",
                ));
            }
            redis::Client::build_with_tls(opts.url.as_str(), opts.tls.read()?).map_err(bad_url)?
        } else {
            redis::Client::open(opts.url.as_str()).map_err(bad_url)?
        };
        // One plain connection first, to name what is wrong at start: a wrong or missing
        // password (the reconnecting manager below would only retry until its timeout).
        let setup = opts.timeout.max(Duration::from_secs(2));
        let mut probe = tokio::time::timeout(setup, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| timeout_error(setup))?
            .map_err(auth_error)?;
        let _: String = tokio::time::timeout(setup, redis::cmd("PING").query_async(&mut probe))
            .await
            .map_err(|_| timeout_error(setup))?
            .map_err(auth_error)?;
        let clock = Stopwatch::start();
        let redis_ms = tokio::time::timeout(setup, redis_time(&mut probe))
            .await
            .map_err(|_| timeout_error(setup))?
            .map_err(auth_error)?;
        drop(probe);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.timeout))
            .set_response_timeout(Some(opts.timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            opts.timeout.max(Duration::from_secs(2)),
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| timeout_error(opts.timeout))?
        .map_err(store_error)?;
        Ok(RedisStore {
            conn,
            script: redis::Script::new(SCRIPT),
            prefix: opts.prefix.clone(),
            timeout: opts.timeout,
            redis_clock: parking_lot::Mutex::new((redis_ms, clock)),
            refreshing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The deadline of a script sent now, in Redis's time: half the timeout from now, so that a
    /// script that starts after it is one plangate has given up on (or is about to), and one
    /// that starts before it answers within the timeout. Re-reads Redis's clock every
    /// [`CLOCK_REFRESH`] (one caller waits for it; the others use the last reading).
    async fn deadline_ms(&self) -> i64 {
        use std::sync::atomic::Ordering;
        let stale = self.redis_clock.lock().1.elapsed() >= CLOCK_REFRESH;
        if stale && !self.refreshing.swap(true, Ordering::AcqRel) {
            let mut conn = self.conn();
            let started = Stopwatch::start();
            if let Ok(Ok(ms)) = tokio::time::timeout(self.timeout, redis_time(&mut conn)).await {
                // Half the round trip had passed when Redis read its clock.
                let half_rtt = i64::try_from(started.elapsed().as_millis() / 2).unwrap_or(0);
                *self.redis_clock.lock() = (ms + half_rtt, started);
            }
            self.refreshing.store(false, Ordering::Release);
        }
        let (base, since) = {
            let c = self.redis_clock.lock();
            (
                c.0,
                i64::try_from(c.1.elapsed().as_millis()).unwrap_or(i64::MAX),
            )
        };
        let half = i64::try_from(self.timeout.as_millis() / 2).unwrap_or(i64::MAX);
        base.saturating_add(since).saturating_add(half.max(1))
    }

    /// The Redis key of a counter: `{prefix}|<name>` (see [`LimitKey::name`]).
    pub fn key_name(&self, key: &LimitKey) -> String {
        format!("{{{}}}|{}", self.prefix, key.name())
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| timeout_error(self.timeout))?
            .map_err(store_error)
    }
}

impl RedisStore {
    /// One run of the script: check `need` units of every limit, and if all admit, charge
    /// them (`charge`), or report the states a charge would leave (`!charge`, a dry run: the
    /// script takes it as negative hits and stores nothing). `need == 0` is a probe of one unit
    /// that reports the states found.
    async fn run(
        &self,
        limits: &[LimitRef],
        need: u64,
        charge: bool,
        now: Nanos,
    ) -> Result<Charge, StoreError> {
        self.run_each(limits, None, need, charge, now).await
    }

    /// [`RedisStore::run`] with, when `units` is given, its own units for each limit (the
    /// limits distinct: see `merge_demands`).
    async fn run_each(
        &self,
        limits: &[LimitRef],
        units: Option<&[u64]>,
        need: u64,
        charge: bool,
        now: Nanos,
    ) -> Result<Charge, StoreError> {
        let hits_arg: i128 = if charge {
            i128::from(need)
        } else {
            -i128::from(need.max(1))
        };
        let mut inv = self.script.prepare_invoke();
        let deadline = self.deadline_ms().await;
        inv.arg(now.div_euclid(NANOS_PER_SEC))
            .arg(now.rem_euclid(NANOS_PER_SEC))
            .arg(hits_arg.to_string())
            .arg(TTL_SLACK_MS)
            .arg(deadline);
        let mut params = Vec::with_capacity(limits.len());
        for (i, l) in limits.iter().enumerate() {
            let own = units.and_then(|u| u.get(i)).copied().unwrap_or(0);
            inv.key(self.key_name(&l.key));
            match &l.spec {
                LimitSpec::Bucket(spec) => {
                    let (d, refill, cap, scale) = bucket_params(spec);
                    inv.arg("b")
                        .arg(d.to_string())
                        .arg(refill.to_string())
                        .arg(cap.to_string())
                        .arg(own);
                    params.push(scale);
                }
                LimitSpec::Quota(q) => {
                    inv.arg("q")
                        .arg(q.limit)
                        .arg((q.window.end.saturating_sub(now) / 1_000_000).max(0))
                        .arg(0)
                        .arg(own);
                    params.push(1);
                }
                LimitSpec::Usage { retain_until } => {
                    inv.arg("u")
                        .arg(0)
                        .arg((retain_until.saturating_sub(now) / 1_000_000).max(1))
                        .arg(0)
                        .arg(own);
                    params.push(1);
                }
            }
        }
        let mut conn = self.conn();
        let reply: Vec<i64> = self.bounded(inv.invoke_async(&mut conn)).await?;
        if reply.first() == Some(&-1) {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "redis ran the script after its deadline (it was queued behind something slow); nothing was charged",
            ));
        }
        if reply.len() != limits.len() + 1 {
            return Err(StoreError::new(
                StoreErrorKind::Protocol,
                format!("unexpected script reply of {} values", reply.len()),
            ));
        }
        let admitted = reply[0] == 1;
        // A probe reports what it found; a charge or a dry run, what the charge leaves.
        let after = admitted && need > 0;
        let need = need.max(1);
        let mut states = Vec::with_capacity(limits.len());
        for (i, ((l, &raw), scale)) in limits.iter().zip(&reply[1..]).zip(params).enumerate() {
            let need = units.and_then(|u| u.get(i)).copied().unwrap_or(need).max(1);
            // The level before this request, back in the memory store's units (a quota's used
            // count is signed: below zero after a temporary extension).
            let level = match &l.spec {
                LimitSpec::Bucket(spec) => {
                    (u128::try_from(raw.max(0)).unwrap_or(0) * scale).min(spec.capacity())
                }
                LimitSpec::Quota(_) => crate::limit::quota_level(raw),
                LimitSpec::Usage { .. } => u128::try_from(raw.max(0)).unwrap_or(0),
            };
            states.push(if after {
                l.spec.charge(level, need, now).state
            } else {
                l.spec.check(level, need, now)
            });
        }
        Ok(Charge { admitted, states })
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn check_and_charge(
        &self,
        limits: &[LimitRef],
        hits: u64,
        now: Nanos,
    ) -> Result<Charge, StoreError> {
        // `hits == 0` is a probe: the script checks one unit and charges nothing.
        self.run(limits, hits, true, now).await
    }

    async fn check_and_charge_each(
        &self,
        limits: &[LimitRef],
        units: &[u64],
        now: Nanos,
    ) -> Result<Charge, StoreError> {
        let (merged, demand, slot) = super::backend::merge_demands(limits, units);
        let c = self.run_each(&merged, Some(&demand), 1, true, now).await?;
        Ok(Charge {
            admitted: c.admitted,
            states: slot.iter().map(|&i| c.states[i]).collect(),
        })
    }

    async fn check(
        &self,
        limits: &[LimitRef],
        need: u64,
        now: Nanos,
    ) -> Result<Charge, StoreError> {
        self.run(limits, need.max(1), false, now).await
    }

    async fn usage(&self, plan: &str, from: Nanos, to: Nanos) -> Result<Vec<UsageRow>, StoreError> {
        // Usage keys of a plan: `{prefix}|u|<plan>|<key>|<day>`. SCAN walks them without
        // blocking Redis; this serves the admin API, not the request path.
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
        let keys: Vec<(String, LimitKey)> = names
            .into_iter()
            .filter_map(|n| {
                let k = LimitKey::parse_counter(n.strip_prefix(&head)?)?;
                match &k {
                    LimitKey::Usage { day_start, .. } if (from..to).contains(day_start) => {
                        Some((n, k))
                    }
                    _ => None,
                }
            })
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<u64>> = self
            .bounded(
                redis::cmd("MGET")
                    .arg(keys.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())
                    .query_async(&mut conn),
            )
            .await?;
        Ok(keys
            .into_iter()
            .zip(values)
            .filter_map(|((_, k), v)| match (k, v) {
                (LimitKey::Usage { key, day_start, .. }, Some(used)) => Some(UsageRow {
                    key: key.to_string(),
                    day_start,
                    used,
                }),
                _ => None,
            })
            .collect())
    }

    async fn set_used(&self, limit: &LimitRef, used: i64, now: Nanos) -> Result<(), StoreError> {
        let q = quota_of(limit)?;
        let ttl = (q.window.end.saturating_sub(now) / 1_000_000).max(1) + TTL_SLACK_MS as i64;
        let mut conn = self.conn();
        let _: () = self
            .bounded(
                redis::cmd("SET")
                    .arg(self.key_name(&limit.key))
                    .arg(used)
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
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

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
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
