//! Store behaviour, written once and run against every store implementation: memory, and Redis
//! (a real redis-server started on a free port).

mod common;

use std::sync::Arc;

use plangate::limit::{BucketSpec, LimitKey, LimitRef, LimitSpec, QuotaSpec, Window};
use plangate::store::{Charge, MemoryStore, Mode, RedisOptions, RedisStore, Store, Units};

const SEC: i64 = 1_000_000_000;

fn bucket(key: &str, rate: u64, burst: u64) -> LimitRef {
    LimitRef {
        key: LimitKey::Plan {
            plan: Arc::from("plan"),
            key: Arc::from(key),
        },
        spec: LimitSpec::Bucket(BucketSpec {
            rate_micro: rate * 1_000_000,
            burst,
        }),
    }
}

fn quota(key: &str, limit: u64, start: i64, end: i64) -> LimitRef {
    LimitRef {
        key: LimitKey::Quota {
            plan: Arc::from("plan"),
            key: Arc::from(key),
            window_start: start,
        },
        spec: LimitSpec::Quota(QuotaSpec {
            limit,
            window: Window { start, end },
        }),
    }
}

async fn charge(store: &dyn Store, limits: &[LimitRef], units: u64, now: i64) -> Charge {
    store
        .decide(limits, Units::Same(units), Mode::Charge, now)
        .await
        .unwrap()
}

async fn charge_each(store: &dyn Store, limits: &[LimitRef], units: &[u64], now: i64) -> Charge {
    store
        .decide(limits, Units::Each(units), Mode::Charge, now)
        .await
        .unwrap()
}

async fn probe(store: &dyn Store, limits: &[LimitRef], now: i64) -> Charge {
    store
        .decide(limits, Units::Same(1), Mode::Probe, now)
        .await
        .unwrap()
}

async fn dry_run(store: &dyn Store, limits: &[LimitRef], units: u64, now: i64) -> Charge {
    store
        .decide(limits, Units::Same(units), Mode::DryRun, now)
        .await
        .unwrap()
}

async fn all_or_nothing(store: &dyn Store) {
    let limits = [bucket("a", 1, 5), quota("a", 2, 0, 100 * SEC)];
    assert!(charge(store, &limits, 1, SEC).await.admitted);
    assert!(charge(store, &limits, 1, SEC).await.admitted);
    // The quota refuses; the bucket (3 left) must not be charged.
    let c = charge(store, &limits, 1, SEC).await;
    assert!(!c.admitted);
    assert!(c.states[0].admitted && !c.states[1].admitted);
    assert_eq!(c.states[0].remaining, 3);
    let c = store
        .decide(&[bucket("a", 1, 5)], Units::Same(3), Mode::Charge, SEC)
        .await
        .unwrap();
    assert!(c.admitted, "the refused request consumed bucket tokens");
}

async fn probe_charges_nothing(store: &dyn Store) {
    let limits = [bucket("p", 1, 1)];
    for _ in 0..3 {
        let c = probe(store, &limits, 0).await;
        assert!(c.admitted);
        assert_eq!(c.states[0].remaining, 1);
    }
    assert!(charge(store, &limits, 1, 0).await.admitted);
    assert!(!probe(store, &limits, 0).await.admitted);
}

async fn windows_are_separate_counters(store: &dyn Store) {
    let first = [quota("w", 1, 0, 10 * SEC)];
    let second = [quota("w", 1, 10 * SEC, 20 * SEC)];
    assert!(charge(store, &first, 1, SEC).await.admitted);
    let c = charge(store, &first, 1, 2 * SEC).await;
    assert!(!c.admitted);
    assert_eq!(c.states[0].retry_after, Some(8 * SEC));
    assert!(charge(store, &second, 1, 11 * SEC).await.admitted);
}

async fn buckets_refill(store: &dyn Store) {
    let limits = [bucket("r", 2, 2)];
    assert!(charge(store, &limits, 2, 0).await.admitted);
    let c = charge(store, &limits, 1, SEC / 4).await;
    assert!(!c.admitted);
    assert_eq!(c.states[0].retry_after, Some(SEC / 4));
    assert!(charge(store, &limits, 1, SEC / 2).await.admitted);
    let c = probe(store, &limits, 10 * SEC).await;
    assert_eq!(c.states[0].remaining, 2);
}

async fn fractional_rates_agree_with_the_memory_store(store: &dyn Store) {
    // 0.3/s with burst 7, and an odd arrival pattern: the store must answer exactly as the
    // memory store's arithmetic does.
    let reference = MemoryStore::new();
    let spec = LimitSpec::Bucket(BucketSpec {
        rate_micro: 300_000,
        burst: 7,
    });
    let limits = [LimitRef {
        key: LimitKey::Account,
        spec,
    }];
    let mut t = 5 * SEC;
    for i in 0..200i64 {
        t += (i * 7_919_731) % (3 * SEC);
        let hits = 1 + (i as u64 % 3);
        let want = charge(&reference, &limits, hits, t).await;
        let got = charge(store, &limits, hits, t).await;
        assert_eq!(got, want, "attempt {i} at {t}");
    }
}

async fn usage_counts_admitted_units(store: &dyn Store) {
    let day = 86_400 * SEC;
    let usage = |key: &str, d: i64| LimitRef {
        key: LimitKey::Usage {
            plan: Arc::from("plan"),
            key: Arc::from(key),
            day_start: d * day,
        },
        spec: LimitSpec::Usage {
            retain_until: (d + 90) * day,
        },
    };
    let q = quota("uk", 3, 0, 100 * day);
    // 3 admitted (one of 2 units), then a refusal that must not count.
    for (hits, ok) in [(1, true), (2, true), (1, false)] {
        let c = store
            .decide(
                &[q.clone(), usage("uk", 0)],
                Units::Same(hits),
                Mode::Charge,
                SEC,
            )
            .await
            .unwrap();
        assert_eq!(c.admitted, ok);
    }
    store
        .decide(&[usage("uk", 1)], Units::Same(4), Mode::Charge, day + SEC)
        .await
        .unwrap();
    store
        .decide(
            &[usage("other", 1)],
            Units::Same(1),
            Mode::Charge,
            day + SEC,
        )
        .await
        .unwrap();
    let keys: Vec<Arc<str>> = vec![Arc::from("uk"), Arc::from("other")];
    let mut rows = store.usage("plan", &keys, 0, 2 * day).await.unwrap();
    rows.sort_by(|a, b| (&a.key, a.day_start).cmp(&(&b.key, b.day_start)));
    let got: Vec<(String, i64, u64)> = rows
        .into_iter()
        .map(|r| (r.key, r.day_start / day, r.used))
        .collect();
    assert_eq!(
        got,
        vec![
            ("other".into(), 1, 1),
            ("uk".into(), 0, 3),
            ("uk".into(), 1, 4)
        ]
    );
    assert_eq!(
        store
            .usage("plan", &keys, day, 2 * day)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        store
            .usage("nope", &keys, 0, 2 * day)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn set_used_sets_the_quota(store: &dyn Store) {
    let q = quota("su", 10, 0, 100 * SEC);
    store.set_used(&q, 8, SEC).await.unwrap();
    let c = probe(store, std::slice::from_ref(&q), SEC).await;
    assert_eq!(c.states[0].remaining, 2);
    assert!(
        charge(store, std::slice::from_ref(&q), 2, SEC)
            .await
            .admitted
    );
    assert!(!charge(store, &[q], 1, SEC).await.admitted);
}

/// A used count below zero (AWS's temporary extension: remaining above the limit) admits that
/// many more, and reports the remaining above the limit.
async fn a_quota_extended_above_its_limit(store: &dyn Store) {
    let q = quota("ext", 10, 0, 100 * SEC);
    store.set_used(&q, -5, SEC).await.unwrap();
    let c = probe(store, std::slice::from_ref(&q), SEC).await;
    assert_eq!(c.states[0].remaining, 15);
    let c = charge(store, std::slice::from_ref(&q), 12, SEC).await;
    assert!(c.admitted);
    assert_eq!(c.states[0].remaining, 3);
    assert!(
        !charge(store, std::slice::from_ref(&q), 4, SEC)
            .await
            .admitted
    );
    assert!(charge(store, &[q], 3, SEC).await.admitted);
}

/// Replicas' clocks differ, and a request's `now` is taken before it waits for the store: a
/// charge can arrive with an earlier time than one already stored. It refills nothing, and the
/// stored time stays the later one — else the next charge refills the same interval again (a
/// leased account bucket over-admitted by 0.3% this way in CI).
async fn time_running_backwards_refills_nothing_twice(store: &dyn Store) {
    let account = LimitRef {
        key: LimitKey::Account,
        ..bucket("", 1, 3)
    };
    let cases: [(&str, Vec<LimitRef>); 3] = [
        ("a key's bucket", vec![bucket("tb", 1, 3)]),
        ("a shared bucket", vec![account]),
        (
            "a key's bucket and quota",
            vec![bucket("tq", 1, 3), quota("tq", 100, 0, 100 * SEC)],
        ),
    ];
    for (what, limits) in cases {
        assert!(charge(store, &limits, 1, 10 * SEC).await.admitted, "{what}");
        // Full again at 12 s: 2 left after this one.
        assert!(charge(store, &limits, 1, 12 * SEC).await.admitted, "{what}");
        // From a clock 1 s behind: no refill, 1 left.
        let c = charge(store, &limits, 1, 11 * SEC).await;
        assert!(c.admitted, "{what}");
        assert_eq!(c.states[0].remaining, 1, "{what}");
        let c = probe(store, &limits, 12 * SEC).await;
        assert_eq!(
            c.states[0].remaining, 1,
            "{what}: the second behind was refilled again"
        );
    }
}

/// A request from a clock behind, at a quota window's change: counted, and the later window's
/// count is not restarted by it (it was, on Redis: one record holds one window's count, and each
/// clock restarted the other's). A window that starts before the request's ends is a changed
/// period instead: its count starts anew.
async fn a_clock_behind_at_a_window_change_restarts_no_count(store: &dyn Store) {
    let old = [quota("wb", 2, 0, 10 * SEC)];
    let new = [quota("wb", 2, 10 * SEC, 20 * SEC)];
    assert!(charge(store, &new, 1, 11 * SEC).await.admitted);
    // 1 ms before the change, on a replica behind: counted in one window or the other.
    assert!(charge(store, &old, 1, 10 * SEC - SEC / 1000).await.admitted);
    let _ = charge(store, &new, 1, 11 * SEC).await;
    assert!(
        !charge(store, &new, 1, 11 * SEC).await.admitted,
        "the new window admitted more than its limit"
    );
    // The plan's period lengthened (a window of 100 s containing the last one): a new count.
    let longer = [quota("wb", 2, 0, 100 * SEC)];
    assert!(charge(store, &longer, 1, 12 * SEC).await.admitted);
}

/// The same at a day's change for usage: every admitted unit stays counted on some day (Redis
/// once wrote the earlier day's total over with what the clock behind had counted).
async fn a_clock_behind_at_midnight_loses_no_usage(store: &dyn Store) {
    let day = 86_400 * SEC;
    let usage = |d: i64| {
        [LimitRef {
            key: LimitKey::Usage {
                plan: Arc::from("plan"),
                key: Arc::from("mu"),
                day_start: d * day,
            },
            spec: LimitSpec::Usage {
                retain_until: (d + 90) * day,
            },
        }]
    };
    charge(store, &usage(0), 3, SEC).await;
    charge(store, &usage(1), 1, day + SEC).await;
    charge(store, &usage(0), 1, day - SEC / 1000).await;
    charge(store, &usage(1), 1, day + 2 * SEC).await;
    charge(store, &usage(2), 1, 2 * day + SEC).await;
    let keys: Vec<Arc<str>> = vec![Arc::from("mu")];
    let rows = store.usage("plan", &keys, 0, 3 * day).await.unwrap();
    let total: u64 = rows.iter().map(|r| r.used).sum();
    assert_eq!(total, 7, "units lost: {rows:?}");
    let day0: u64 = rows
        .iter()
        .filter(|r| r.day_start == 0)
        .map(|r| r.used)
        .sum();
    assert!(day0 >= 3, "the first day's count was overwritten: {rows:?}");
}

/// A store to test, and what keeps it alive (a redis-server).
struct Subject {
    store: Box<dyn Store>,
    _redis: Option<common::RedisServer>,
    _dir: Option<tempfile::TempDir>,
}

fn memory() -> Subject {
    Subject {
        store: Box::new(MemoryStore::new()),
        _redis: None,
        _dir: None,
    }
}

/// A memory store with persistence: it must behave exactly like the plain one.
fn persisted() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let p = Arc::new(plangate::store::persist::Persistence::open(dir.path()).unwrap());
    Subject {
        store: Box::new(MemoryStore::with_persistence(p, 0).unwrap()),
        _redis: None,
        _dir: Some(dir),
    }
}

/// A store on `server` under `prefix`, as two replicas would run it (2 s timeout).
fn options(
    server: &common::RedisServer,
    prefix: &str,
    shared: plangate::store::SharedBuckets,
) -> RedisOptions {
    RedisOptions {
        tls: Default::default(),
        shared,
        replicas: 2,
        url: server.url(),
        prefix: prefix.into(),
        timeout: std::time::Duration::from_secs(2),
    }
}

async fn redis() -> Subject {
    let server = common::RedisServer::start();
    let store = RedisStore::connect(&options(&server, "test", Default::default()))
        .await
        .unwrap();
    Subject {
        store: Box::new(store),
        _redis: Some(server),
        _dir: None,
    }
}

/// The first recorded initial period wins; later callers (other replicas, later reloads) read it.
async fn the_first_initial_period_wins(store: &dyn Store) {
    assert_eq!(
        store.initial_period("gold|DAY", 10 * SEC).await.unwrap(),
        10 * SEC
    );
    assert_eq!(
        store.initial_period("gold|DAY", 20 * SEC).await.unwrap(),
        10 * SEC
    );
    assert_eq!(
        store.initial_period("gold|MONTH", 30 * SEC).await.unwrap(),
        30 * SEC
    );
}

/// A dry run answers for N units as a charge would — the states after the charge — and
/// charges nothing.
async fn check_answers_for_n_units_and_charges_nothing(store: &dyn Store) {
    let limits = [bucket("n", 1, 5), quota("n", 4, 0, 100 * SEC)];
    for _ in 0..3 {
        let c = dry_run(store, &limits, 4, SEC).await;
        assert!(c.admitted);
        assert_eq!((c.states[0].remaining, c.states[1].remaining), (1, 0));
    }
    // Five units: the quota (4) refuses; a charge of five would too.
    let c = dry_run(store, &limits, 5, SEC).await;
    assert!(!c.admitted);
    assert!(c.states[0].admitted && !c.states[1].admitted);
    assert!(!charge(store, &limits, 5, SEC).await.admitted);
    // Nothing was charged: four units still go through, once — with the states `check` said.
    let dry = dry_run(store, &limits, 4, SEC).await;
    let c = charge(store, &limits, 4, SEC).await;
    assert!(c.admitted);
    assert_eq!(c, dry);
    assert!(!dry_run(store, &limits, 1, SEC).await.admitted);
}

/// Several requests' limits with their own units, one call: all charged or none; a counter
/// given twice is one demand of the sum.
async fn several_demands_are_all_or_nothing(store: &dyn Store) {
    let shared = bucket("shared", 1, 5);
    let (q1, q2) = (
        quota("one", 3, 0, 100 * SEC),
        quota("two", 10, 0, 100 * SEC),
    );
    let limits = [shared.clone(), q1.clone(), shared.clone(), q2.clone()];
    // 2 + 2 of the shared bucket (5), 2 of quota one (3), 2 of quota two: admitted.
    let c = charge_each(store, &limits, &[2, 2, 2, 2], SEC).await;
    assert!(c.admitted);
    assert_eq!(c.states.len(), 4);
    assert_eq!((c.states[0].remaining, c.states[2].remaining), (1, 1));
    assert_eq!(c.states[1].remaining, 1);
    // Quota one has 1 left: asking 2 of it refuses everything; nothing is charged, not even
    // quota two or the bucket.
    let c = store
        .decide(
            &[q2.clone(), q1.clone()],
            Units::Each(&[1, 2]),
            Mode::Charge,
            SEC,
        )
        .await
        .unwrap();
    assert!(!c.admitted);
    assert!(c.states[0].admitted && !c.states[1].admitted);
    let probe = store
        .decide(&[q2, q1], Units::Same(1), Mode::Probe, SEC)
        .await
        .unwrap();
    assert_eq!(
        (probe.states[0].remaining, probe.states[1].remaining),
        (8, 1)
    );
    // The shared bucket (1 left) refuses 1 + 1 from two requests.
    let c = store
        .decide(
            &[shared.clone(), shared],
            Units::Each(&[1, 1]),
            Mode::Charge,
            SEC,
        )
        .await
        .unwrap();
    assert!(!c.admitted);
}

macro_rules! store_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn several_demands_are_all_or_nothing() {
                super::several_demands_are_all_or_nothing(&*$make.store).await;
            }

            #[tokio::test]
            async fn all_or_nothing() {
                super::all_or_nothing(&*$make.store).await;
            }
            #[tokio::test]
            async fn probe_charges_nothing() {
                super::probe_charges_nothing(&*$make.store).await;
            }
            #[tokio::test]
            async fn a_quota_extended_above_its_limit() {
                super::a_quota_extended_above_its_limit(&*$make.store).await;
            }
            #[tokio::test]
            async fn the_first_initial_period_wins() {
                super::the_first_initial_period_wins(&*$make.store).await;
            }
            #[tokio::test]
            async fn check_answers_for_n_units_and_charges_nothing() {
                super::check_answers_for_n_units_and_charges_nothing(&*$make.store).await;
            }
            #[tokio::test]
            async fn windows_are_separate_counters() {
                super::windows_are_separate_counters(&*$make.store).await;
            }
            #[tokio::test]
            async fn buckets_refill() {
                super::buckets_refill(&*$make.store).await;
            }
            #[tokio::test]
            async fn usage_counts_admitted_units() {
                super::usage_counts_admitted_units(&*$make.store).await;
            }
            #[tokio::test]
            async fn set_used_sets_the_quota() {
                super::set_used_sets_the_quota(&*$make.store).await;
            }
            #[tokio::test]
            async fn time_running_backwards_refills_nothing_twice() {
                super::time_running_backwards_refills_nothing_twice(&*$make.store).await;
            }
            #[tokio::test]
            async fn a_clock_behind_at_a_window_change_restarts_no_count() {
                super::a_clock_behind_at_a_window_change_restarts_no_count(&*$make.store).await;
            }
            #[tokio::test]
            async fn a_clock_behind_at_midnight_loses_no_usage() {
                super::a_clock_behind_at_midnight_loses_no_usage(&*$make.store).await;
            }
            #[tokio::test]
            async fn fractional_rates_agree_with_the_memory_store() {
                super::fractional_rates_agree_with_the_memory_store(&*$make.store).await;
            }
        }
    };
}

store_suite!(memory_store, memory());
store_suite!(persisted_memory_store, persisted());
store_suite!(redis_store, redis().await);

/// A script queued behind a slow Redis command runs after plangate gave up on it (and answered
/// by its failure policy): it must charge nothing. Measured before the deadline: all 20 such
/// requests were charged when Redis woke.
#[tokio::test]
async fn a_script_that_runs_after_its_deadline_charges_nothing() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let server = common::RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let store = RedisStore::connect(&RedisOptions {
        timeout: Duration::from_millis(300),
        ..options(&server, "late", Default::default())
    })
    .await
    .unwrap();
    let limits = [quota("late", 1000, 0, 100 * SEC)];
    // Loaded once (a script Redis does not know yet would fail NOSCRIPT, not run late).
    assert!(probe(&store, &limits, SEC).await.admitted);
    // Redis busy for 1.5 s.
    let port = server.port;
    let sleeper = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$3\r\n1.5\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let tries = (0..20).map(|_| store.decide(&limits, Units::Same(1), Mode::Charge, SEC));
    let results = futures_join(tries).await;
    assert!(
        results.iter().all(Result::is_err),
        "answered while Redis slept: {results:?}"
    );
    assert_eq!(sleeper.join().unwrap().trim(), "+OK");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Redis is back and has run the queued scripts: none charged.
    let probe = probe(&store, &limits, SEC).await;
    assert_eq!(probe.states[0].remaining, 1000, "late scripts charged");
    // And it works again.
    assert!(charge(&store, &limits, 1, SEC).await.admitted);
}

/// Runs futures concurrently, in order.
async fn futures_join<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = fs.map(Box::pin).collect();
    let mut out = Vec::with_capacity(handles.len());
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> = handles.into_iter().map(Some).collect();
    let mut done: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        done[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    for d in done {
        out.push(d.expect("every future finished"));
    }
    out
}

/// Counters of the earlier one-key-per-counter layout are read once, so that an upgrade loses
/// no count: a quota used 2 of 3 before the upgrade admits one more, and the day's usage and
/// the days before stay in the report.
#[tokio::test]
async fn an_upgrade_from_the_earlier_redis_layout_loses_no_count() {
    let server = common::RedisServer::start();
    let day = 86_400 * SEC;
    // As the earlier layout wrote them: `{prefix}|q|<plan>|<key>|<window start s>`,
    // `{prefix}|u|<plan>|<key>|<day start s>`.
    server.command(&["SET", "{up}|q|plan|uk|86400", "2"]);
    server.command(&["SET", "{up}|u|plan|uk|86400", "2"]);
    server.command(&["SET", "{up}|u|plan|uk|0", "7"]);
    let store = RedisStore::connect(&options(&server, "up", Default::default()))
        .await
        .unwrap();
    let usage = LimitRef {
        key: LimitKey::Usage {
            plan: Arc::from("plan"),
            key: Arc::from("uk"),
            day_start: day,
        },
        spec: LimitSpec::Usage {
            retain_until: 90 * day,
        },
    };
    let limits = [quota("uk", 3, day, 2 * day), usage];
    let now = day + SEC;
    assert!(charge(&store, &limits, 1, now).await.admitted);
    assert!(!charge(&store, &limits, 1, now).await.admitted);
    let mut rows = store
        .usage("plan", &[Arc::from("uk")], 0, 2 * day)
        .await
        .unwrap();
    rows.sort_by_key(|r| r.day_start);
    let got: Vec<(i64, u64)> = rows.iter().map(|r| (r.day_start / day, r.used)).collect();
    assert_eq!(got, [(0, 7), (1, 3)]);
}

/// The shared buckets keep one format whether exact or leased: a deployment can switch
/// `--store-shared` between restarts (the lease once read its own text format and failed on what
/// the exact mode had written).
#[tokio::test]
async fn shared_buckets_survive_a_switch_between_exact_and_leased() {
    let server = common::RedisServer::start();
    let opts = |shared| options(&server, "sw", shared);
    let account = LimitRef {
        key: LimitKey::Account,
        spec: LimitSpec::Bucket(BucketSpec {
            rate_micro: 0,
            burst: 10,
        }),
    };
    let limits = [account];
    let exact = RedisStore::connect(&opts(plangate::store::SharedBuckets::Exact))
        .await
        .unwrap();
    assert!(charge(&exact, &limits, 4, SEC).await.admitted);
    drop(exact);
    let leased = RedisStore::connect(&opts(plangate::store::SharedBuckets::Leased))
        .await
        .unwrap();
    // 6 tokens left, no refill: 6 admitted, then refused.
    let mut admitted = 0;
    for _ in 0..8 {
        if charge(&leased, &limits, 1, SEC).await.admitted {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 6);
}

/// A lease taken with an earlier time than the bucket's stored one (another replica's clock is
/// ahead) refills nothing and leaves the stored time alone.
#[tokio::test]
async fn a_lease_from_a_clock_behind_refills_nothing_twice() {
    let server = common::RedisServer::start();
    let leased = RedisStore::connect(&options(
        &server,
        "lb",
        plangate::store::SharedBuckets::Leased,
    ))
    .await
    .unwrap();
    // 1/s, burst 4, two replicas: a batch is one token, so every charge takes a lease.
    let limits = [LimitRef {
        key: LimitKey::Account,
        ..bucket("", 1, 4)
    }];
    for at in [10, 12, 11] {
        assert!(
            charge(&leased, &limits, 1, at * SEC).await.admitted,
            "at {at} s"
        );
    }
    // Full at 12 s, then 2 taken: 2 left.
    let mut admitted = 0;
    for _ in 0..4 {
        if charge(&leased, &limits, 1, 12 * SEC).await.admitted {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 2, "the second behind was refilled again");
}
