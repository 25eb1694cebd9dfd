//! Store behaviour, written once and run against every store implementation: memory, and Redis
//! (a real redis-server started on a free port).

mod common;

use std::sync::Arc;

use plangate::engine::bucket::BucketSpec;
use plangate::engine::quota::{QuotaSpec, Window};
use plangate::store::{
    LimitKey, LimitRef, LimitSpec, MemoryStore, RedisOptions, RedisStore, Store,
};

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

async fn all_or_nothing(store: &dyn Store) {
    let limits = [bucket("a", 1, 5), quota("a", 2, 0, 100 * SEC)];
    assert!(
        store
            .check_and_charge(&limits, 1, SEC)
            .await
            .unwrap()
            .admitted
    );
    assert!(
        store
            .check_and_charge(&limits, 1, SEC)
            .await
            .unwrap()
            .admitted
    );
    // The quota refuses; the bucket (3 left) must not be charged.
    let c = store.check_and_charge(&limits, 1, SEC).await.unwrap();
    assert!(!c.admitted);
    assert!(c.states[0].admitted && !c.states[1].admitted);
    assert_eq!(c.states[0].remaining, 3);
    let c = store
        .check_and_charge(&[bucket("a", 1, 5)], 3, SEC)
        .await
        .unwrap();
    assert!(c.admitted, "the refused request consumed bucket tokens");
}

async fn probe_charges_nothing(store: &dyn Store) {
    let limits = [bucket("p", 1, 1)];
    for _ in 0..3 {
        let c = store.check_and_charge(&limits, 0, 0).await.unwrap();
        assert!(c.admitted);
        assert_eq!(c.states[0].remaining, 1);
    }
    assert!(
        store
            .check_and_charge(&limits, 1, 0)
            .await
            .unwrap()
            .admitted
    );
    assert!(
        !store
            .check_and_charge(&limits, 0, 0)
            .await
            .unwrap()
            .admitted
    );
}

async fn windows_are_separate_counters(store: &dyn Store) {
    let first = [quota("w", 1, 0, 10 * SEC)];
    let second = [quota("w", 1, 10 * SEC, 20 * SEC)];
    assert!(
        store
            .check_and_charge(&first, 1, SEC)
            .await
            .unwrap()
            .admitted
    );
    let c = store.check_and_charge(&first, 1, 2 * SEC).await.unwrap();
    assert!(!c.admitted);
    assert_eq!(c.states[0].retry_after, Some(8 * SEC));
    assert!(
        store
            .check_and_charge(&second, 1, 11 * SEC)
            .await
            .unwrap()
            .admitted
    );
}

async fn buckets_refill(store: &dyn Store) {
    let limits = [bucket("r", 2, 2)];
    assert!(
        store
            .check_and_charge(&limits, 2, 0)
            .await
            .unwrap()
            .admitted
    );
    let c = store.check_and_charge(&limits, 1, SEC / 4).await.unwrap();
    assert!(!c.admitted);
    assert_eq!(c.states[0].retry_after, Some(SEC / 4));
    assert!(
        store
            .check_and_charge(&limits, 1, SEC / 2)
            .await
            .unwrap()
            .admitted
    );
    let c = store.check_and_charge(&limits, 0, 10 * SEC).await.unwrap();
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
        let want = reference.check_and_charge(&limits, hits, t).await.unwrap();
        let got = store.check_and_charge(&limits, hits, t).await.unwrap();
        assert_eq!(got, want, "attempt {i} at {t}");
    }
}

/// A store to test, and what keeps it alive (a redis-server).
struct Subject {
    store: Box<dyn Store>,
    _redis: Option<common::RedisServer>,
}

fn memory() -> Subject {
    Subject {
        store: Box::new(MemoryStore::new()),
        _redis: None,
    }
}

async fn redis() -> Subject {
    let server = common::RedisServer::start();
    let store = RedisStore::connect(&RedisOptions {
        url: server.url(),
        prefix: "test".into(),
        timeout: std::time::Duration::from_secs(2),
    })
    .await
    .unwrap();
    Subject {
        store: Box::new(store),
        _redis: Some(server),
    }
}

macro_rules! store_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn all_or_nothing() {
                super::all_or_nothing(&*$make.store).await;
            }
            #[tokio::test]
            async fn probe_charges_nothing() {
                super::probe_charges_nothing(&*$make.store).await;
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
            async fn fractional_rates_agree_with_the_memory_store() {
                super::fractional_rates_agree_with_the_memory_store(&*$make.store).await;
            }
        }
    };
}

store_suite!(memory_store, memory());
store_suite!(redis_store, redis().await);
