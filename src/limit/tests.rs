//! The arithmetic both stores run: `check` then `charge`, on a level refilled by `level_at`.
//! (The property tests run the same arrivals through the memory store: tests/buckets.rs.)

use super::*;

const SEC: i64 = 1_000_000_000;

fn bucket(rate_micro: u64, burst: u64) -> (BucketSpec, LimitSpec) {
    let spec = BucketSpec { rate_micro, burst };
    (spec, LimitSpec::Bucket(spec))
}

#[test]
fn fractional_rate() {
    // 0.1 request per second, burst 1: one now, the next after 10 s, not before.
    let (spec, limit) = bucket(100_000, 1);
    let level = spec.level_at(None, 0);
    assert!(limit.check(level, 1, 0).admitted);
    let c = limit.charge(level, 1, 0);
    let (after, state) = (c.level, c.state);
    assert_eq!((state.remaining, state.reset_after), (0, Some(10 * SEC)));
    assert_eq!(c.expires_at, Some(10 * SEC));
    let kept = Some(BucketState {
        level: after,
        last: 0,
    });
    let early = limit.check(spec.level_at(kept, 10 * SEC - 1), 1, 10 * SEC - 1);
    assert!(!early.admitted);
    assert_eq!(early.retry_after, Some(1));
    assert_eq!(limit.check(after, 1, 0).retry_after, Some(10 * SEC));
    assert!(
        limit
            .check(spec.level_at(kept, 10 * SEC), 1, 10 * SEC)
            .admitted
    );
}

#[test]
fn disabled_bucket_never_admits() {
    let (spec, limit) = bucket(0, 0);
    let s = limit.check(spec.level_at(None, 0), 1, 0);
    assert!(!s.admitted);
    assert_eq!(s.retry_after, None);
    assert_eq!(
        limit.charge(0, 0, 5).expires_at,
        Some(5),
        "a bucket of 0 is always full"
    );
}

#[test]
fn a_bucket_that_never_refills_never_expires() {
    let (spec, limit) = bucket(0, 3);
    let c = limit.charge(spec.level_at(None, 0), 1, 0);
    assert_eq!(c.state.remaining, 2);
    assert_eq!(c.state.reset_after, None);
    assert_eq!(c.expires_at, None);
}

#[test]
fn more_hits_than_the_burst_can_never_be_admitted() {
    let (spec, limit) = bucket(1_000_000, 5);
    let s = limit.check(spec.level_at(None, 0), 6, 0);
    assert!(!s.admitted);
    assert_eq!(s.retry_after, None);
    assert_eq!(s.remaining, 5);
}

#[test]
fn clock_going_back_refills_nothing() {
    let (spec, _) = bucket(1_000_000, 5);
    let s = BucketState {
        level: 0,
        last: 100 * SEC,
    };
    assert_eq!(spec.level_at(Some(s), 50 * SEC), 0);
}

#[test]
fn quota_admits_up_to_its_limit_and_resets_at_the_window_end() {
    let limit = LimitSpec::Quota(QuotaSpec {
        limit: 3,
        window: Window {
            start: 0,
            end: 100 * SEC,
        },
    });
    let now = 40 * SEC;
    let s = limit.check(2, 1, now);
    assert!(s.admitted);
    assert_eq!(
        (s.remaining, s.reset_after, s.retry_after),
        (1, Some(60 * SEC), None)
    );
    let c = limit.charge(2, 1, now);
    assert_eq!((c.level, c.state.remaining), (3, 0));
    let s = limit.check(3, 1, now);
    assert!(!s.admitted);
    assert_eq!(s.retry_after, Some(60 * SEC));
    // Two units on one left: refused whole.
    assert!(!limit.check(2, 2, now).admitted);
    assert_eq!(c.expires_at, Some(100 * SEC));
}

#[test]
fn usage_never_refuses_and_reports_its_count() {
    let limit = LimitSpec::Usage { retain_until: 7 };
    let s = limit.check(u128::from(u64::MAX), 1, 0);
    assert!(s.admitted);
    assert_eq!(s.remaining, u64::MAX);
    let c = limit.charge(5, 2, 0);
    assert_eq!((c.level, c.state.remaining), (7, 7));
    assert_eq!(c.expires_at, Some(7));
}

#[test]
fn counter_names_read_back() {
    let q = LimitRef::quota(
        Arc::from("gold"),
        Arc::from("k-1"),
        QuotaSpec {
            limit: 1,
            window: Window {
                start: 86_400 * SEC,
                end: 2 * 86_400 * SEC,
            },
        },
    );
    assert_eq!(q.key.name(), "q|gold|k-1|86400");
    assert_eq!(LimitKey::parse_counter(&q.key.name()), Some(q.key));
    let u = LimitRef::usage(Arc::from("gold"), Arc::from("k-1"), 86_400 * SEC + 5, 2);
    assert_eq!(u.key.name(), "u|gold|k-1|86400");
    assert_eq!(
        u.spec,
        LimitSpec::Usage {
            retain_until: 4 * 86_400 * SEC
        }
    );
    assert_eq!(LimitKey::parse_counter(&u.key.name()), Some(u.key));
    assert_eq!(LimitKey::parse_counter("b|a"), None);
    assert_eq!(LimitKey::parse_counter("q|p|k|1|extra"), None);
}
