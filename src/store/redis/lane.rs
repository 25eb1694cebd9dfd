//! Decision scripts sent in pipelines: one lane per Redis node (per master in a cluster), with at
//! most one pipeline in flight. Scripts that arrive while a pipeline is out wait for it and leave
//! together in the next one — one write, one Redis read for all of them — without ever waiting
//! for a batch to fill: an idle lane sends a lone script at once.
//!
//! Why: Redis spends several µs of system calls per read and write. On one node, requests from
//! many callers already coalesced (10 decisions per read measured); on a cluster each master gets
//! a share of the load and, through the cluster client, only 2.8 decisions per read — 13–14 µs of
//! Redis CPU per decision. With lanes a loaded 3-master cluster reads 11.4 per read and spends
//! 8.7 µs (docs/benchmarks.md).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use super::conn::{RedisTls, at_start, client, manager, store_error, timeout_error};
use crate::clock::Stopwatch;
use crate::store::error::{StoreError, StoreErrorKind};

/// A script call waiting for its lane.
struct Job {
    cmd: redis::Cmd,
    reply: oneshot::Sender<Result<Vec<i64>, StoreError>>,
}

/// The most scripts in one pipeline.
const MAX_BATCH: usize = 512;

/// One node's lane.
#[derive(Clone)]
pub struct Lane {
    tx: mpsc::Sender<Job>,
    clock: Arc<Clock>,
}

/// A node's own clock (`TIME`), as last read, and the monotonic time since: the scripts sent to
/// that node get their deadlines in its time — never another node's, whose clock may differ.
struct Clock {
    conn: ConnectionManager,
    reading: parking_lot::Mutex<Option<(i64, Stopwatch)>>,
    refreshing: std::sync::atomic::AtomicBool,
}

/// How often a node's clock is read again (drift, a failover to another host).
const CLOCK_REFRESH: Duration = Duration::from_secs(30);

impl Clock {
    /// Reads the node's clock again; half the round trip had passed when it answered.
    async fn read(&self, timeout: Duration) {
        let mut conn = self.conn.clone();
        let started = Stopwatch::start();
        if let Ok(Ok(ms)) = tokio::time::timeout(timeout, redis_time(&mut conn)).await {
            let half_rtt = i64::try_from(started.elapsed().as_millis() / 2).unwrap_or(0);
            *self.reading.lock() = Some((ms + half_rtt, started));
        }
    }
}

/// Reads a node's clock: `TIME` in ms.
pub async fn redis_time<C: redis::aio::ConnectionLike>(conn: &mut C) -> redis::RedisResult<i64> {
    let (s, us): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(s * 1000 + us / 1000)
}

impl Lane {
    /// A lane over `conn`, sending `script` (by hash; loaded again when the node answers
    /// NOSCRIPT). Its node's clock is read at once, in the background.
    pub fn spawn(conn: ConnectionManager, script: redis::Script) -> Lane {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let clock = Arc::new(Clock {
            conn: conn.clone(),
            reading: parking_lot::Mutex::new(None),
            refreshing: std::sync::atomic::AtomicBool::new(true),
        });
        let first = clock.clone();
        tokio::spawn(async move {
            first.read(Duration::from_secs(2)).await;
            first
                .refreshing
                .store(false, std::sync::atomic::Ordering::Release);
        });
        tokio::spawn(run(conn, script, rx));
        Lane { tx, clock }
    }

    /// The deadline of a script sent now on this lane, in its node's time: `ahead` from now.
    /// 0 (no deadline) while the node's clock is not known yet. The clock is read again every
    /// [`CLOCK_REFRESH`] (one caller waits for it; the others use the last reading).
    pub async fn deadline_ms(&self, ahead: Duration, timeout: Duration) -> i64 {
        use std::sync::atomic::Ordering;
        let stale = self
            .clock
            .reading
            .lock()
            .as_ref()
            .is_none_or(|(_, since)| since.elapsed() >= CLOCK_REFRESH);
        if stale && !self.clock.refreshing.swap(true, Ordering::AcqRel) {
            self.clock.read(timeout).await;
            self.clock.refreshing.store(false, Ordering::Release);
        }
        let Some((base, since)) = self.clock.reading.lock().as_ref().map(|(b, s)| {
            (
                *b,
                i64::try_from(s.elapsed().as_millis()).unwrap_or(i64::MAX),
            )
        }) else {
            return 0;
        };
        let ahead = i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX).max(1);
        base.saturating_add(since).saturating_add(ahead)
    }

    /// Sends one EVALSHA (`cmd`) and waits for its reply.
    pub async fn call(&self, cmd: redis::Cmd) -> Result<Vec<i64>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { cmd, reply })
            .await
            .map_err(|_| StoreError::new(StoreErrorKind::Unavailable, "the Redis lane stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::new(StoreErrorKind::Unavailable, "the Redis lane stopped"))?
    }
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        || e.to_string().contains("NOSCRIPT")
}

async fn run(mut conn: ConnectionManager, script: redis::Script, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut results = send(&mut conn, &jobs).await;
        // A node that lost its scripts (a restart, a new master): load, then send those again.
        let lost: Vec<usize> = match &results {
            Ok(r) => (0..r.len())
                .filter(|&i| matches!(&r[i], Err(e) if is_noscript(e)))
                .collect(),
            Err(_) => Vec::new(),
        };
        if !lost.is_empty() {
            let loaded: redis::RedisResult<String> =
                script.prepare_invoke().load_async(&mut conn).await;
            if loaded.is_ok() {
                let again: Vec<&Job> = lost.iter().map(|&i| &jobs[i]).collect();
                if let (Ok(retried), Ok(r)) = (send_refs(&mut conn, &again).await, &mut results) {
                    for (&i, res) in lost.iter().zip(retried) {
                        r[i] = res;
                    }
                }
            }
        }
        match results {
            Ok(r) => {
                for (job, res) in jobs.into_iter().zip(r) {
                    let _ = job.reply.send(res.map_err(store_error));
                }
            }
            Err(e) => {
                let e = store_error(e);
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

type Replies = redis::RedisResult<Vec<redis::RedisResult<Vec<i64>>>>;

async fn send(conn: &mut ConnectionManager, jobs: &[Job]) -> Replies {
    let refs: Vec<&Job> = jobs.iter().collect();
    send_refs(conn, &refs).await
}

async fn send_refs(conn: &mut ConnectionManager, jobs: &[&Job]) -> Replies {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for job in jobs {
        pipe.add_command(job.cmd.clone());
    }
    pipe.query_async(conn).await
}

/// The oldest Redis the scripts run on: `PEXPIRE … NX` came with 7.0.
pub const MIN_REDIS: (u32, u32) = (7, 0);

/// Whether `INFO server`'s `redis_version` is at least [`MIN_REDIS`].
pub fn check_version(info: &str) -> Result<(), String> {
    let Some(v) = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("redis_version:"))
    else {
        return Err("INFO server names no redis_version".to_owned());
    };
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < MIN_REDIS {
        return Err(format!(
            "Redis {v}: plangate needs Redis {}.{} or newer (its scripts use PEXPIRE … NX)",
            MIN_REDIS.0, MIN_REDIS.1
        ));
    }
    Ok(())
}

/// The masters of a cluster by slot, each with its lane.
///
/// Why a slot map of our own next to the redis crate's cluster client: the lanes pipeline every
/// script bound for one master into one write (11.4 decisions per Redis read on a loaded
/// 3-master cluster, against 2.8 through the cluster client, which routes command by command);
/// the crate has no per-node pipeline to hand them to. The cluster client still serves
/// everything else (usage reads, leases) and follows MOVED/ASK for a redirected script.
#[derive(Clone)]
pub struct Masters {
    /// `redis://[auth@]` or `rediss://[auth@]`: a node's URL without its address.
    url_head: String,
    tls: RedisTls,
    timeout: Duration,
    script: redis::Script,
    map: Arc<ArcSwap<SlotMap>>,
    refreshing: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Default)]
struct SlotMap {
    /// (first slot, last slot, index into `lanes`), sorted.
    ranges: Vec<(u16, u16, usize)>,
    lanes: Vec<(String, Lane)>,
}

/// The cluster slot of a key: CRC16 (XMODEM) of its hash tag, modulo 16,384 (Redis Cluster's
/// rule).
pub fn slot_of(key: &str) -> u16 {
    let k = key.as_bytes();
    let tag = k
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let close = k[open + 1..].iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &k[open + 1..open + 1 + close])
        })
        .unwrap_or(k);
    crc16::State::<crc16::XMODEM>::calculate(tag) % 16_384
}

impl Masters {
    /// For a cluster whose first node URL is `first_node` (its scheme and credentials are those
    /// of every node).
    pub fn new(first_node: &str, tls: RedisTls, timeout: Duration, script: redis::Script) -> Self {
        let url_head = match first_node.rsplit_once('@') {
            Some((head, _)) => format!("{head}@"),
            None => first_node.split_once("://").map_or_else(
                || "redis://".to_owned(),
                |(scheme, _)| format!("{scheme}://"),
            ),
        };
        Masters {
            url_head,
            tls,
            timeout,
            script,
            map: Arc::new(ArcSwap::from_pointee(SlotMap::default())),
            refreshing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// The lane of the master of `key`'s slot, if known.
    pub fn lane_for(&self, key: &str) -> Option<Lane> {
        let slot = slot_of(key);
        let map = self.map.load();
        let i = map.ranges.partition_point(|r| r.1 < slot);
        let &(first, last, lane) = map.ranges.get(i)?;
        (first <= slot && slot <= last).then(|| map.lanes[lane].1.clone())
    }

    /// Reads the slots (`CLUSTER SLOTS`, through `cluster`) and opens lanes to masters not
    /// known yet.
    pub async fn refresh<C: redis::aio::ConnectionLike + Clone + Send + Sync>(
        &self,
        cluster: &C,
    ) -> Result<(), StoreError> {
        let mut conn = cluster.clone();
        let t = self.timeout.max(Duration::from_secs(1));
        let reply: Vec<Vec<redis::Value>> =
            tokio::time::timeout(t, redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn))
                .await
                .map_err(|_| timeout_error(t))?
                .map_err(store_error)?;
        let bad = |e: redis::ParsingError| {
            StoreError::new(StoreErrorKind::Protocol, format!("CLUSTER SLOTS: {e}"))
        };
        let old = self.map.load_full();
        let known: HashMap<&str, &Lane> = old.lanes.iter().map(|(a, l)| (a.as_str(), l)).collect();
        let mut next = SlotMap::default();
        for entry in reply {
            let (Some(first), Some(last), Some(redis::Value::Array(master))) =
                (entry.first(), entry.get(1), entry.get(2))
            else {
                continue;
            };
            let (Some(host), Some(port)) = (master.first(), master.get(1)) else {
                continue;
            };
            let first: i64 = redis::from_redis_value_ref(first).map_err(bad)?;
            let last: i64 = redis::from_redis_value_ref(last).map_err(bad)?;
            let host: String = redis::from_redis_value_ref(host).map_err(bad)?;
            let port: i64 = redis::from_redis_value_ref(port).map_err(bad)?;
            let addr = format!("{host}:{port}");
            let index = match next.lanes.iter().position(|(a, _)| *a == addr) {
                Some(i) => i,
                None => {
                    let lane = match known.get(addr.as_str()) {
                        Some(l) => (*l).clone(),
                        None => {
                            let mut conn = self.connect(&addr).await?;
                            let info: String = at_start(
                                t,
                                redis::cmd("INFO").arg("server").query_async(&mut conn),
                            )
                            .await?;
                            check_version(&info).map_err(|e| {
                                StoreError::new(StoreErrorKind::Config, format!("{addr}: {e}"))
                            })?;
                            Lane::spawn(conn, self.script.clone())
                        }
                    };
                    next.lanes.push((addr, lane));
                    next.lanes.len() - 1
                }
            };
            if let (Ok(first), Ok(last)) = (u16::try_from(first), u16::try_from(last)) {
                next.ranges.push((first, last, index));
            }
        }
        next.ranges.sort_unstable();
        self.map.store(Arc::new(next));
        Ok(())
    }

    async fn connect(&self, addr: &str) -> Result<ConnectionManager, StoreError> {
        let url = format!("{}{addr}", self.url_head);
        manager(client(&url, &self.tls)?, self.timeout).await
    }

    /// [`Masters::refresh`] in the background (after a failover or a resharding), once at a
    /// time.
    pub fn refresh_soon<C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static>(
        &self,
        cluster: &C,
    ) {
        use std::sync::atomic::Ordering;
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (this, cluster) = (self.clone(), cluster.clone());
        tokio::spawn(async move {
            // A failover takes the cluster a moment.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Err(e) = this.refresh(&cluster).await {
                tracing::warn!(error = %e, "reading the cluster's slots failed");
            }
            this.refreshing.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_older_than_7_is_refused() {
        assert!(check_version("# Server\r\nredis_version:7.0.15\r\n").is_ok());
        assert!(check_version("redis_version:7.2.4\n").is_ok());
        assert!(check_version("redis_version:8.0.0\n").is_ok());
        let e = check_version("redis_version:6.2.14\n").unwrap_err();
        assert!(e.contains("6.2.14") && e.contains("7.0"), "{e}");
        assert!(check_version("redis_mode:standalone\n").is_err());
    }

    #[test]
    fn slots_follow_redis_cluster() {
        // Values from Redis's CLUSTER KEYSLOT.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(
            slot_of("{user1000}.following"),
            slot_of("{user1000}.followers")
        );
        assert_eq!(slot_of("{plangate|k0}"), slot_of("plangate|k0"));
        // An empty tag `{}` is no tag: the whole key is hashed, not `bar`.
        assert_eq!(
            slot_of("foo{}{bar}"),
            crc16::State::<crc16::XMODEM>::calculate(b"foo{}{bar}") % 16_384
        );
        assert_ne!(slot_of("foo{}{bar}"), slot_of("bar"));
    }
}
