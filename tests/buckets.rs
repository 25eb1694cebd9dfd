//! Token-bucket properties, through the path production runs: limits as the engine builds them,
//! checked and charged by the memory store (`decide_now`, the core of its
//! `Store::decide`), which calls the same `limit` functions as the Redis store.

use std::sync::Arc;

use plangate::limit::{BucketSpec, LimitKey, LimitRef, LimitSpec, UNITS_PER_TOKEN};
use plangate::store::{MemoryStore, Mode, Units};
use proptest::prelude::*;

const SEC: i64 = 1_000_000_000;

fn limit(spec: BucketSpec) -> [LimitRef; 1] {
    [LimitRef {
        key: LimitKey::Plan {
            plan: Arc::from("p"),
            key: Arc::from("k"),
        },
        spec: LimitSpec::Bucket(spec),
    }]
}

/// Runs arrivals (gaps in ns, each with a hit count) through one bucket of a fresh store;
/// returns (time, hits) of each admitted request, and the store with the time reached.
fn run(spec: BucketSpec, gaps: &[(i64, u64)]) -> (Vec<(i64, u64)>, MemoryStore, i64) {
    let store = MemoryStore::new();
    let l = limit(spec);
    let mut now = 0;
    let mut admitted = Vec::new();
    for &(gap, hits) in gaps {
        now += gap;
        if store
            .decide_now(&l, Units::Same(hits), Mode::Charge, now)
            .admitted
        {
            admitted.push((now, hits));
        }
    }
    (admitted, store, now)
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
        let (admitted, _, _) = run(spec, &gaps);
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
        prop_assert_eq!(run(spec, &gaps).0.len(), n + 1);
    }

    /// After an idle time ≥ burst/rate the whole burst is available again.
    #[test]
    fn full_burst_after_idle(
        spec in spec_strategy(),
        gaps in prop::collection::vec((0i64..SEC, 1u64..4), 0..100),
    ) {
        let (_, store, now) = run(spec, &gaps);
        let idle = i64::try_from(spec.capacity().div_ceil(u128::from(spec.rate_micro))).unwrap();
        // A check (0 hits) reports the level without charging; then the whole burst is taken.
        let c = store.decide_now(&limit(spec), Units::Same(0), Mode::Probe, now + idle);
        prop_assert_eq!(c.states[0].remaining, spec.burst);
        if spec.burst > 0 {
            let c = store.decide_now(&limit(spec), Units::Same(spec.burst), Mode::Charge, now + idle);
            prop_assert!(c.admitted);
            prop_assert_eq!(c.states[0].remaining, 0);
        }
    }
}
