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

use super::conn::{RedisTls, client, manager, store_error, timeout_error};
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
}

impl Lane {
    /// A lane over `conn`, sending `script` (by hash; loaded again when the node answers
    /// NOSCRIPT).
    pub fn spawn(conn: ConnectionManager, script: redis::Script) -> Lane {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(conn, script, rx));
        Lane { tx }
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

/// The masters of a cluster by slot, each with its lane.
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
                        None => Lane::spawn(self.connect(&addr).await?, self.script.clone()),
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
    fn slots_follow_redis_cluster() {
        // Values from Redis's CLUSTER KEYSLOT.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(
            slot_of("{user1000}.following"),
            slot_of("{user1000}.followers")
        );
        assert_eq!(slot_of("{plangate|k0}"), slot_of("plangate|k0"));
        assert_eq!(slot_of("foo{}{bar}"), slot_of("foo{}{bar}"));
    }
}
