//! The floor of a counted decision in Redis (issue 28, `scripts/bench-redis.sh`): what
//! envoyproxy/ratelimit sends for each descriptor — `INCRBY key hits` and `EXPIRE key window`,
//! pipelined — for `--counters` counters per decision (1: one quota per key; 5: a full plan's
//! account, stage method, plan throttle, quota and daily usage), one pipeline per decision,
//! `--concurrency` decisions in flight on one multiplexed connection (redis-rs, as plangate's
//! store uses it), for `--seconds`. Prints what `plangate bench --json` prints (requests, errors,
//! requests per second), so that the script measures both the same way: Redis's own CPU per
//! decision.
//!
//! `cargo bench --bench redis_floor -- --url redis://127.0.0.1:6379 --counters 1`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut url, mut counters, mut keys, mut seconds, mut concurrency) =
        (String::new(), 1usize, 1000usize, 10.0f64, 16usize);
    while let Some(a) = args.next() {
        let mut next = || args.next().unwrap_or_default();
        match a.as_str() {
            "--url" => url = next(),
            "--counters" => counters = next().parse().unwrap_or(counters),
            "--keys" => keys = next().parse().unwrap_or(keys),
            "--seconds" => seconds = next().parse().unwrap_or(seconds),
            "--concurrency" => concurrency = next().parse().unwrap_or(concurrency),
            _ => {} // cargo bench's own flags (--bench)
        }
    }
    if url.is_empty() {
        // `cargo test` and `cargo bench` without a Redis: nothing to measure.
        eprintln!("redis_floor: no --url; nothing measured");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let client = redis::Client::open(url.as_str()).expect("a Redis URL");
        let con = client
            .get_multiplexed_async_connection()
            .await
            .expect("Redis answers");
        let done = Arc::new(AtomicBool::new(false));
        let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let watch = plangate::clock::Stopwatch::start();
        let mut tasks = Vec::new();
        for t in 0..concurrency {
            let (mut con, done, ok, errors) =
                (con.clone(), done.clone(), ok.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = t;
                while !done.load(Ordering::Relaxed) {
                    let key = i % keys;
                    // The counters of one decision: the key's own, and (for a full plan) the
                    // shared account and stage-method counters.
                    let names = [
                        format!("floor:quota:{key}"),
                        format!("floor:usage:{key}"),
                        format!("floor:plan:{key}"),
                        "floor:account".to_owned(),
                        "floor:stage:/pets/GET".to_owned(),
                    ];
                    let mut p = redis::pipe();
                    for n in names.iter().take(counters) {
                        p.cmd("INCRBY")
                            .arg(n)
                            .arg(1)
                            .cmd("EXPIRE")
                            .arg(n)
                            .arg(60)
                            .ignore();
                    }
                    match p.query_async::<Vec<i64>>(&mut con).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                    i += concurrency;
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        done.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        let secs = watch.seconds();
        let n = ok.load(Ordering::Relaxed);
        println!(
            "{}",
            serde_json::json!({
                "requests": n,
                "errors": errors.load(Ordering::Relaxed),
                "requests_per_second": n as f64 / secs,
            })
        );
    });
}
