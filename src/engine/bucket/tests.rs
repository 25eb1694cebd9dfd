use proptest::prelude::*;

use super::*;

const SEC: i64 = 1_000_000_000;

/// Runs arrivals (gaps in ns, each with a hit count) through one bucket; returns (time, hits)
/// of each admitted request.
fn run(spec: BucketSpec, gaps: &[(i64, u64)]) -> Vec<(i64, u64)> {
    let mut state = None;
    let mut now = 0;
    let mut admitted = Vec::new();
    for &(gap, hits) in gaps {
        now += gap;
        let c = spec.check(state, hits, now);
        if c.admitted {
            state = Some(spec.charge(c.level, hits, now));
            admitted.push((now, hits));
        }
    }
    admitted
}

fn spec_strategy() -> impl Strategy<Value = BucketSpec> {
    // Rates from 0.000001 to 100,000 per second, bursts from 0 to 1,000.
    (1u64..100_000_000_000, 0u64..1_000)
        .prop_map(|(rate_micro, burst)| BucketSpec { rate_micro, burst })
}

proptest! {
    /// Admitted hits over any interval [a, b] never exceed burst + rate·(b − a).
    #[test]
    fn never_more_than_burst_plus_rate(
        spec in spec_strategy(),
        gaps in prop::collection::vec((0i64..2 * SEC, 1u64..4), 1..300),
    ) {
        let admitted = run(spec, &gaps);
        for i in 0..admitted.len() {
            let mut sum: u128 = 0;
            for j in i..admitted.len() {
                sum += u128::from(admitted[j].1);
                let span = u128::try_from(admitted[j].0 - admitted[i].0).unwrap();
                // In units: sum·U ≤ burst·U + span·rate_micro.
                let allowed = spec.capacity() + span * u128::from(spec.rate_micro);
                prop_assert!(sum * UNITS_PER_TOKEN <= allowed,
                    "{} hits in {} ns with {:?}", sum, span, spec);
            }
        }
    }

    /// A client sending one request every 1/rate seconds is never throttled (burst ≥ 1).
    #[test]
    fn pacing_at_rate_is_never_throttled(
        rate_micro in 1u64..100_000_000_000,
        burst in 1u64..100,
        n in 1usize..500,
        start_offset in 0i64..SEC,
    ) {
        let spec = BucketSpec { rate_micro, burst };
        // One token's worth of refill, rounded up to a whole nanosecond.
        let interval = i64::try_from(UNITS_PER_TOKEN.div_ceil(u128::from(rate_micro))).unwrap();
        let mut gaps = vec![(start_offset, 1)];
        gaps.extend(std::iter::repeat_n((interval, 1), n));
        prop_assert_eq!(run(spec, &gaps).len(), n + 1);
    }

    /// After an idle time ≥ burst/rate the whole burst is available again.
    #[test]
    fn full_burst_after_idle(
        spec in spec_strategy(),
        gaps in prop::collection::vec((0i64..SEC, 1u64..4), 0..100),
    ) {
        let mut state = None;
        let mut now = 0;
        for &(gap, hits) in &gaps {
            now += gap;
            let c = spec.check(state, hits, now);
            if c.admitted {
                state = Some(spec.charge(c.level, hits, now));
            }
        }
        let idle = i64::try_from(spec.capacity().div_ceil(u128::from(spec.rate_micro))).unwrap();
        let c = spec.check(state, spec.burst, now + idle);
        prop_assert!(c.admitted);
        prop_assert_eq!(BucketSpec::remaining(c.level), spec.burst);
    }
}

#[test]
fn fractional_rate() {
    // 0.1 request per second, burst 1: one now, the next after 10 s, not before.
    let spec = BucketSpec {
        rate_micro: 100_000,
        burst: 1,
    };
    let c = spec.check(None, 1, 0);
    assert!(c.admitted);
    let s = spec.charge(c.level, 1, 0);
    assert!(!spec.check(Some(s), 1, 10 * SEC - 1).admitted);
    assert_eq!(
        spec.retry_after(spec.level_at(Some(s), 0), 1),
        Some(10 * SEC)
    );
    assert!(spec.check(Some(s), 1, 10 * SEC).admitted);
}

#[test]
fn disabled_bucket_never_admits() {
    let spec = BucketSpec {
        rate_micro: 0,
        burst: 0,
    };
    assert!(!spec.check(None, 1, 0).admitted);
    assert_eq!(spec.retry_after(0, 1), None);
}

#[test]
fn clock_going_back_refills_nothing() {
    let spec = BucketSpec {
        rate_micro: 1_000_000,
        burst: 5,
    };
    let s = BucketState {
        level: 0,
        last: 100 * SEC,
    };
    assert_eq!(spec.level_at(Some(s), 50 * SEC), 0);
}
