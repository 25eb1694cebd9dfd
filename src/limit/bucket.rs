//! Token bucket arithmetic in exact integers.
//!
//! A bucket holds up to `burst` tokens and refills at `rate` tokens per second. Levels are kept in
//! units of 10⁻¹⁵ token, so that a rate given with six decimals (`rate_micro` = rate × 10⁶) refills
//! exactly `rate_micro` units per nanosecond: no floating point, no drift, and the same answer on
//! every replica. `u128` holds any level (a burst of 10¹² tokens is 10²⁷ units).

use crate::clock::Nanos;

/// Units of one token.
pub const UNITS_PER_TOKEN: u128 = 1_000_000_000_000_000;

/// A bucket's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BucketSpec {
    /// Refill rate in millionths of a token per second (= units per nanosecond).
    pub rate_micro: u64,
    /// Capacity in whole tokens.
    pub burst: u64,
}

/// A bucket's stored state: its level at time `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    pub level: u128,
    pub last: Nanos,
}

/// `tokens` in units.
pub fn units(tokens: u64) -> u128 {
    u128::from(tokens) * UNITS_PER_TOKEN
}

impl BucketSpec {
    pub fn capacity(&self) -> u128 {
        units(self.burst)
    }

    /// The level at `now` of a bucket last seen as `state` (a bucket never seen is full). Time
    /// running backwards (replicas with skewed clocks) refills nothing.
    pub fn level_at(&self, state: Option<BucketState>, now: Nanos) -> u128 {
        let cap = self.capacity();
        match state {
            None => cap,
            Some(s) => {
                let elapsed = u128::try_from(now.saturating_sub(s.last).max(0)).unwrap_or(0);
                let refill = elapsed.saturating_mul(u128::from(self.rate_micro));
                s.level.saturating_add(refill).min(cap)
            }
        }
    }

    /// Whether a bucket at `level` holds `need` tokens: the one admission test of a bucket.
    pub fn admits(level: u128, need: u64) -> bool {
        level >= units(need)
    }

    /// The level after taking `hits` tokens from `level`. Call only when admitted.
    pub fn take(level: u128, hits: u64) -> u128 {
        level.saturating_sub(units(hits))
    }

    /// Whole tokens in `level`.
    pub fn remaining(level: u128) -> u64 {
        u64::try_from(level / UNITS_PER_TOKEN).unwrap_or(u64::MAX)
    }

    /// Nanoseconds until `level` reaches `target` units; `None` if it never will (no refill, or a
    /// target above capacity).
    pub fn time_to(&self, level: u128, target: u128) -> Option<Nanos> {
        if level >= target {
            return Some(0);
        }
        if target > self.capacity() || self.rate_micro == 0 {
            return None;
        }
        let missing = target - level;
        let rate = u128::from(self.rate_micro);
        i64::try_from(missing.div_ceil(rate)).ok()
    }

    /// Nanoseconds until `need` tokens are available.
    pub fn retry_after(&self, level: u128, need: u64) -> Option<Nanos> {
        self.time_to(level, units(need))
    }

    /// Nanoseconds until the bucket is full again.
    pub fn time_to_full(&self, level: u128) -> Option<Nanos> {
        self.time_to(level, self.capacity())
    }
}
