//! plangate on a real Redis Cluster (3 masters, started by the test with `cluster-enabled yes`
//! and `redis-cli --cluster create`): exact per-key quotas across two replicas, keys spread over
//! every master, shared buckets leased within their bound, and a master failover under load.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use plangate::clock::Stopwatch;

use common::{Plangate, RedisCluster, authz_client, check_request, check_status, sha};

/// `n` keys `k0…`, with values `cluster-key-<i>-…`.
fn key(i: usize) -> String {
    format!("cluster-key-{i:04}-0123456789abcdef")
}

fn config(account: &str, keys: usize, plan: &str) -> String {
    let mut s = format!(
        r#"
version: 1
{account}
defaults: {{ api: petstore, stage: prod }}
apis:
  petstore:
    stages:
      prod: {{}}
usage_plans:
  five:
    quota: {{ limit: 5, period: DAY }}
    api_stages: [{{ api: petstore, stage: prod }}]
  hundred:
    quota: {{ limit: 100, period: DAY }}
    api_stages: [{{ api: petstore, stage: prod }}]
  open:
    quota: {{ limit: 1000000000, period: DAY }}
    api_stages: [{{ api: petstore, stage: prod }}]
api_keys:
  - {{ id: hot, value_sha256: {hot}, usage_plans: [hundred] }}
"#,
        hot = sha(&key(9999))
    );
    for i in 0..keys {
        s.push_str(&format!(
            "  - {{ id: k{i}, value_sha256: {}, usage_plans: [{plan}] }}\n",
            sha(&key(i))
        ));
    }
    s
}

struct Fleet {
    dir: tempfile::TempDir,
    cluster: RedisCluster,
    replicas: Vec<Plangate>,
}

fn fleet(cluster: RedisCluster, config: &str, extra: &[&str]) -> Fleet {
    let (dir, path) = common::plans_dir(config);
    let url = cluster.url();
    let replicas = (0..2)
        .map(|i| {
            let mut args = vec!["--store", url.as_str()];
            args.extend_from_slice(extra);
            Plangate::start(&path, &args, dir.path().join(format!("plangate-{i}.log")))
        })
        .collect();
    Fleet {
        dir,
        cluster,
        replicas,
    }
}

/// `per_key` concurrent attempts for each of `keys`, alternating replicas: admitted per key.
async fn admitted(f: &Fleet, keys: &[String], per_key: usize) -> Vec<u64> {
    let mut clients = Vec::new();
    for r in &f.replicas {
        clients.push(authz_client(r.grpc).await);
    }
    let counts: Arc<Vec<AtomicU64>> = Arc::new(keys.iter().map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for n in 0..per_key {
        for (k, key) in keys.iter().enumerate() {
            let mut c = clients[(n + k) % clients.len()].clone();
            let (counts, key) = (counts.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let r = c
                    .check(check_request(&key, "/pets"))
                    .await
                    .unwrap()
                    .into_inner();
                match check_status(&r) {
                    200 => {
                        counts[k].fetch_add(1, Ordering::Relaxed);
                    }
                    429 => {}
                    other => panic!("unexpected status {other}"),
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

const EXACT: &[&str] = &["--store-timeout-ms", "10000", "--store-failure", "closed"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_are_exact_across_two_replicas_and_keys_spread_over_every_master() {
    let f = fleet(RedisCluster::start(3, 0), &config("", 60, "five"), EXACT);
    // One hot key: 300 concurrent attempts on a quota of 100.
    assert_eq!(admitted(&f, &[key(9999)], 300).await, [100]);
    // 60 keys, 8 concurrent attempts each on a quota of 5.
    let keys: Vec<String> = (0..60).map(key).collect();
    assert!(admitted(&f, &keys, 8).await.iter().all(|&n| n == 5));
    // Every master holds some of the keys' hashes.
    let masters = f.cluster.masters();
    assert_eq!(masters.len(), 3);
    for m in masters {
        let size = common::info_field(&m.command(&["INFO", "keyspace"]), "db0");
        let keys = m.command(&["DBSIZE"]);
        assert!(
            keys.trim_start_matches(':')
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
                > 0,
            "master on port {} holds no key ({size})",
            m.port
        );
    }
}

/// Shared buckets are leased: two replicas at twice the account rate for 10 s admit no more
/// than the bucket allows (rate × elapsed + burst), and at least 90% of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_account_bucket_admits_within_its_bound() {
    const RATE: f64 = 100.0;
    const BURST: f64 = 50.0;
    let account = format!("account:\n  throttle: {{ rate: {RATE}, burst: {BURST} }}");
    let f = fleet(
        RedisCluster::start(3, 0),
        &config(&account, 20, "open"),
        EXACT,
    );
    let mut clients = Vec::new();
    for r in &f.replicas {
        clients.push(authz_client(r.grpc).await);
    }
    let (admitted, sent) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clock = Stopwatch::start();
    let mut pacers = Vec::new();
    // Each replica gets the account rate: twice the rate in all.
    for (n, client) in clients.into_iter().enumerate() {
        let (admitted, sent) = (admitted.clone(), sent.clone());
        pacers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / RATE));
            let mut inflight = Vec::new();
            for i in 0..(RATE as usize * 10) {
                tick.tick().await;
                let mut c = client.clone();
                let (admitted, sent) = (admitted.clone(), sent.clone());
                let k = key((i + n) % 20);
                inflight.push(tokio::spawn(async move {
                    sent.fetch_add(1, Ordering::Relaxed);
                    let r = c.check(check_request(&k, "/pets")).await.unwrap();
                    match check_status(&r.into_inner()) {
                        200 => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        429 => {}
                        other => panic!("unexpected status {other}"),
                    }
                }));
            }
            for t in inflight {
                t.await.unwrap();
            }
        }));
    }
    for p in pacers {
        p.await.unwrap();
    }
    let elapsed = clock.elapsed().as_secs_f64();
    let (admitted, sent) = (
        admitted.load(Ordering::Relaxed) as f64,
        sent.load(Ordering::Relaxed) as f64,
    );
    let allowed = RATE * elapsed + BURST;
    eprintln!(
        "{sent} sent in {elapsed:.2} s, {admitted} admitted, the bucket allowed {allowed:.0} ({:.1}%)",
        100.0 * admitted / allowed
    );
    assert!(sent >= 1.5 * allowed, "the load was not twice the rate");
    assert!(admitted <= allowed, "over-admitted: {admitted} > {allowed}");
    assert!(
        admitted >= 0.9 * allowed,
        "under-admitted: {admitted} < 90% of {allowed}"
    );
}

/// A master is killed under load: its replica takes over; meanwhile the failure policy answers
/// (503 with `closed`), nothing crashes, and decisions come back after the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_under_load_is_survived() {
    let mut f = fleet(
        RedisCluster::start(3, 1),
        &config("", 60, "open"),
        &["--store-timeout-ms", "200", "--store-failure", "closed"],
    );
    let mut clients = Vec::new();
    for r in &f.replicas {
        clients.push(authz_client(r.grpc).await);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let statuses = Arc::new(parking_lot::Mutex::new(Vec::<(f64, i32)>::new()));
    let clock = Arc::new(Stopwatch::start());
    let mut load = Vec::new();
    for (n, client) in clients.into_iter().enumerate() {
        let (stop, statuses, clock) = (stop.clone(), statuses.clone(), clock.clone());
        load.push(tokio::spawn(async move {
            let mut i = n;
            while !stop.load(Ordering::Relaxed) {
                let mut c = client.clone();
                // Keys with quota to spare: 200 means decided by Redis.
                let r = c.check(check_request(&key(i % 60), "/pets")).await;
                let status = match r {
                    Ok(r) => check_status(&r.into_inner()),
                    Err(e) => panic!("gRPC call failed: {e}"),
                };
                statuses
                    .lock()
                    .push((clock.elapsed().as_secs_f64(), status));
                i += 2;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Kill the master that holds k0's hash.
    let any = &f.cluster.nodes[0];
    let slot: u64 = any
        .command(&["CLUSTER", "KEYSLOT", "{plangate|k0}"])
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    let owner = cluster_owner(any, slot);
    let victim = f
        .cluster
        .nodes
        .iter()
        .position(|n| n.port == owner)
        .expect("the master of k0");
    let killed_at = clock.elapsed().as_secs_f64();
    f.cluster.nodes[victim].kill();
    // Load goes on through the failover and after it.
    let waited = Stopwatch::start();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let recovered = {
            let s = statuses.lock();
            let since = killed_at + 1.0;
            s.iter().filter(|(t, st)| *t > since && *st == 200).count() > 20
                && s.iter()
                    .rev()
                    .take(20)
                    .all(|(_, st)| *st == 200 || *st == 429)
        };
        if recovered {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "decisions did not come back after the failover:\n{}",
            std::fs::read_to_string(f.dir.path().join("plangate-0.log")).unwrap_or_default()
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let s = statuses.lock();
    let during = s.iter().filter(|(_, st)| *st == 503).count();
    let other = s
        .iter()
        .filter(|(_, st)| ![200, 429, 503].contains(st))
        .count();
    eprintln!(
        "{} answers; {during} by the failure policy during the failover",
        s.len()
    );
    assert_eq!(other, 0, "only decisions and the failure policy answer");
    for r in &mut f.replicas {
        assert!(r.alive(), "a replica crashed");
    }
}

/// The port of the master that owns `slot`, as `n` sees the cluster.
fn cluster_owner(n: &common::RedisServer, slot: u64) -> u16 {
    // CLUSTER NODES lines: id addr:port@bus flags master - ping pong epoch state slots…
    for line in n.command(&["CLUSTER", "NODES"]).lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() < 9 || !parts[2].contains("master") {
            continue;
        }
        let port: u16 = parts[1]
            .split('@')
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        for range in &parts[8..] {
            let (lo, hi) = match range.split_once('-') {
                Some((lo, hi)) => (lo.parse().unwrap_or(u64::MAX), hi.parse().unwrap_or(0)),
                None => {
                    let v = range.parse().unwrap_or(u64::MAX);
                    (v, v)
                }
            };
            if (lo..=hi).contains(&slot) {
                return port;
            }
        }
    }
    0
}

/// The node id of `n` (`CLUSTER MYID`).
fn node_id(n: &common::RedisServer) -> String {
    n.command(&["CLUSTER", "MYID"])
        .lines()
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// The slot of key k0's record (`{plangate|k0}`), the port of the master that holds it, and the
/// port of another master.
fn k0_slot(cluster: &RedisCluster) -> (u64, u16, u16) {
    let masters = cluster.masters();
    let slot: u64 = masters[0]
        .command(&["CLUSTER", "KEYSLOT", "{plangate|k0}"])
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    let home = cluster_owner(masters[0], slot);
    let other = masters.iter().map(|m| m.port).find(|p| *p != home).unwrap();
    (slot, home, other)
}

/// Moves `slot` from the master on `from` to the master on `to`, as `redis-cli --cluster
/// reshard` does: importing/migrating, MIGRATE of its keys, then the new owner on every master.
fn move_slot(cluster: &RedisCluster, slot: u64, from: u16, to: u16) {
    let node = |port: u16| cluster.nodes.iter().find(|n| n.port == port).unwrap();
    let (src, dst) = (node(from), node(to));
    let (src_id, dst_id) = (node_id(src), node_id(dst));
    let s = slot.to_string();
    assert!(
        dst.command(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &src_id])
            .starts_with("+OK")
    );
    assert!(
        src.command(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &dst_id])
            .starts_with("+OK")
    );
    let keys = src.command(&["CLUSTER", "GETKEYSINSLOT", &s, "1000"]);
    for key in keys
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
    {
        let r = src.command(&["MIGRATE", "127.0.0.1", &to.to_string(), key, "0", "5000"]);
        assert!(r.starts_with("+OK"), "MIGRATE {key}: {r}");
    }
    for m in cluster.masters() {
        m.command(&["CLUSTER", "SETSLOT", &s, "NODE", &dst_id]);
    }
}

/// A planned reshard (a slot moved to another master) is invisible to clients (issue 25, item
/// 18): a script sent to the old master gets MOVED, and is sent again where the slot is now,
/// instead of answering 503 under the closed policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_by_a_reshard_is_followed() {
    let cluster = RedisCluster::start(3, 0);
    let f = fleet(cluster, &config("", 1, "open"), EXACT);
    let k = key(0);
    let mut clients = Vec::new();
    for r in &f.replicas {
        clients.push(authz_client(r.grpc).await);
    }
    for c in &mut clients {
        assert_eq!(common::status(c, &k, "/pets").await, 200);
    }
    // Key k0's hash is `{plangate|k0}`.
    let (slot, from, to) = k0_slot(&f.cluster);
    move_slot(&f.cluster, slot, from, to);
    assert_eq!(cluster_owner(f.cluster.masters()[0], slot), to);
    // Every decision right after the move is a decision, and the quota kept counting where the
    // key moved.
    for _ in 0..10 {
        for c in &mut clients {
            let r = c
                .check(check_request(&k, "/pets"))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                check_status(&r),
                200,
                "a decision failed after the slot moved"
            );
        }
    }
    let used = f
        .cluster
        .nodes
        .iter()
        .find(|n| n.port == to)
        .unwrap()
        .command(&["EXISTS", "{plangate|k0}"]);
    assert!(
        used.contains(":1"),
        "the key's record is on the new owner: {used}"
    );
}

/// A slot moved back and forth 20 times while two replicas decide under load (issue 25, item
/// 18): every answer is a decision (no 503 under the closed policy) — scripts that meet MOVED
/// (the slot moved) or ASK (mid-migration) are sent again where the key is — the replicas stay
/// ready, and the quota counted across all moves is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshards_under_load_stay_invisible() {
    let (f, ok, refused, other) = reshard_under_load(EXACT, 20).await;
    if !other.is_empty() {
        let logs: Vec<String> = (0..2)
            .map(|i| {
                std::fs::read_to_string(f.dir.path().join(format!("plangate-{i}.log")))
                    .unwrap_or_default()
            })
            .collect();
        let errors: Vec<&str> = logs
            .iter()
            .flat_map(|l| l.lines())
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(20)
            .collect();
        panic!(
            "answers other than decisions: {other:?}\n{}",
            errors.join("\n")
        );
    }
    // Exact across every move: 100 admitted a day, the rest refused.
    assert_eq!(ok, 100, "admitted");
    assert!(refused > 0);
    for r in &f.replicas {
        let ready = common::http(r.admin, "GET", "/readyz", &[]);
        assert_eq!(ready.status, 200, "{}", ready.body);
    }
}

/// With the default 50 ms store timeout a loaded reshard may fail some decisions (closed: 503);
/// afterwards every replica is ready again and decides lone requests within seconds — never
/// stuck timing out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_recover_after_reshards_under_load_with_the_default_timeout() {
    let (f, _, _, _) = reshard_under_load(&["--store-failure", "closed"], 30).await;
    for r in &f.replicas {
        let mut c = authz_client(r.grpc).await;
        let waited = Stopwatch::start();
        loop {
            let ready = common::http(r.admin, "GET", "/readyz", &[]).status == 200;
            let decided = matches!(common::status(&mut c, &key(0), "/pets").await, 200 | 429);
            if ready && decided {
                break;
            }
            assert!(
                waited.elapsed() < Duration::from_secs(15),
                "replica {} still not deciding 15 s after the reshards",
                r.grpc
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Two replicas under load by 4 tasks on key 0 while its slot moves `moves` times between two
/// masters: the fleet, then the admitted and refused counts and any other status seen.
async fn reshard_under_load(extra: &[&str], moves: usize) -> (Fleet, u64, u64, Vec<i32>) {
    let cluster = RedisCluster::start(3, 0);
    let f = fleet(cluster, &config("", 1, "hundred"), extra);
    let k = key(0);
    let mut clients = Vec::new();
    for r in &f.replicas {
        clients.push(authz_client(r.grpc).await);
    }
    let (slot, home, away) = k0_slot(&f.cluster);
    // The load: 4 tasks, each a request at a time, until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let mut c = clients[t % 2].clone();
        let (stop, ok, refused, k) = (stop.clone(), ok.clone(), refused.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            let mut other = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .check(check_request(&k, "/pets"))
                    .await
                    .unwrap()
                    .into_inner();
                match check_status(&r) {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    429 => refused.fetch_add(1, Ordering::Relaxed),
                    s => {
                        other.push(s);
                        0
                    }
                };
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            other
        }));
    }
    for i in 0..moves {
        let (from, to) = if i % 2 == 0 {
            (home, away)
        } else {
            (away, home)
        };
        move_slot(&f.cluster, slot, from, to);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut other = Vec::new();
    for t in tasks {
        other.extend(t.await.unwrap());
    }
    let (ok, refused) = (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    (f, ok, refused, other)
}

/// Each master's own clock sets its scripts' deadlines: with masters whose wall clocks run
/// 0, 5 and 10 s ahead of the machine's (a preloaded library moves each redis-server's clock),
/// every decision on every master is made, and quotas stay exact. With one clock for all
/// masters, whichever master it was read from, another runs seconds ahead of it and refuses
/// every script sent to it as past its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_with_skewed_clocks_each_decide_in_their_own_time() {
    const SKEWS_MS: [i64; 3] = [0, 5_000, 10_000];
    let cluster = RedisCluster::start_skewed(3, 0, &SKEWS_MS);
    // The premise: each node's TIME is its skew ahead of this machine's clock.
    for (node, skew) in cluster.nodes.iter().zip(SKEWS_MS) {
        let reply = node.command(&["TIME"]);
        let secs: i64 = reply
            .lines()
            .find_map(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("TIME answered {reply:?}"));
        use plangate::clock::Clock;
        let ours = plangate::clock::SystemClock.now() / plangate::clock::NANOS_PER_SEC;
        let ahead = secs - ours;
        assert!(
            (ahead - skew / 1000).abs() <= 1,
            "node {} runs {ahead} s ahead, not {skew} ms",
            node.port
        );
    }
    // Deadlines are 1 s ahead (half the timeout): far less than the skews.
    let args = ["--store-timeout-ms", "2000", "--store-failure", "closed"];
    let f = fleet(cluster, &config("", 60, "five"), &args);
    let keys: Vec<String> = (0..60).map(key).collect();
    assert!(admitted(&f, &keys, 8).await.iter().all(|&n| n == 5));
    for m in f.cluster.masters() {
        let keys = m.command(&["DBSIZE"]);
        assert_ne!(
            keys.trim_start_matches(':').trim(),
            "0",
            "master {} holds no key",
            m.port
        );
    }
}
