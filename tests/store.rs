//! Store behaviour, written once and run against every store implementation.

use std::sync::Arc;

use plangate::engine::bucket::BucketSpec;
use plangate::engine::quota::{QuotaSpec, Window};
use plangate::store::{LimitKey, LimitRef, LimitSpec, MemoryStore, Store};

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

macro_rules! store_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn all_or_nothing() {
                super::all_or_nothing(&$make).await;
            }
            #[tokio::test]
            async fn probe_charges_nothing() {
                super::probe_charges_nothing(&$make).await;
            }
            #[tokio::test]
            async fn windows_are_separate_counters() {
                super::windows_are_separate_counters(&$make).await;
            }
            #[tokio::test]
            async fn buckets_refill() {
                super::buckets_refill(&$make).await;
            }
        }
    };
}

store_suite!(memory, MemoryStore::new());
