//! Leases of shared buckets: a replica takes a batch of tokens from a shared bucket in Redis (one
//! round trip per batch) and spends it locally.
//!
//! Bounds. A token is spent only after Redis granted it, so the replicas together never admit
//! more than the shared bucket allows, over any window. They may admit fewer: tokens held by one
//! replica are not available to another until spent or given back — at most one batch per
//! replica and bucket, and a batch is at most `capacity / (2 × replicas)` and at most what the
//! bucket refills in one hold period. Tokens not spent within a hold period are given back.

use std::collections::HashMap;

use crate::clock::Nanos;

/// A bucket in the scripts' units (see `bucket_params`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Script units per token.
    pub unit: u128,
    /// Script units refilled per nanosecond.
    pub refill: u128,
    pub capacity: u128,
}

/// What this replica holds of one shared bucket.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Units held locally, not yet spent.
    pub held: u128,
    /// The bucket's level in Redis after the last call.
    pub level: u128,
    /// No batch is asked for before this (the bucket was short: asking again at once would
    /// only make the shared field hot).
    pub retry_at: Nanos,
    /// When units were last spent (a lease unused for a hold period is given back).
    pub used_at: Nanos,
    pub params: Params,
    /// Held while a batch is asked for: one request per replica and bucket asks, the others
    /// wait for its answer instead of asking too.
    pub asking: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// The leases of one replica, by field of the shared hash.
#[derive(Debug)]
pub struct Leases {
    hold: Nanos,
    replicas: u128,
    map: parking_lot::Mutex<HashMap<String, Lease>>,
}

/// A local attempt to spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Spent from the lease: the level (Redis's last known plus held) before spending.
    Spent { before: u128 },
    /// Not enough held; ask Redis for this many units.
    Fetch { want: u128 },
    /// Not enough held, and the bucket is short until `retry_at`.
    Wait { retry_at: Nanos, before: u128 },
}

impl Leases {
    pub fn new(hold: Nanos, replicas: u32) -> Self {
        Leases {
            hold: hold.max(1),
            replicas: u128::from(replicas.max(1)),
            map: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The batch asked for: what the bucket refills in one hold period, at most
    /// `capacity / (2 × replicas)`, at least one token and at least `need`.
    pub fn batch(&self, p: &Params, need: u128) -> u128 {
        let per_hold = p.refill.saturating_mul(self.hold as u128);
        let share = p.capacity / (2 * self.replicas);
        per_hold.min(share).max(p.unit).max(need)
    }

    /// Spends `need` units of `field` if held; otherwise says what to do.
    pub fn spend(&self, field: &str, p: Params, need: u128, now: Nanos) -> Local {
        let mut map = self.map.lock();
        // No key allocated on the hot path: a lease is made once per bucket.
        if !map.contains_key(field) {
            map.insert(
                field.to_owned(),
                Lease {
                    held: 0,
                    level: p.capacity,
                    retry_at: Nanos::MIN,
                    used_at: now,
                    params: p,
                    asking: Default::default(),
                },
            );
        }
        let Some(lease) = map.get_mut(field) else {
            return Local::Fetch {
                want: self.batch(&p, need),
            };
        };
        lease.params = p;
        let before = lease.level.saturating_add(lease.held).min(p.capacity);
        if lease.held >= need {
            lease.held -= need;
            lease.used_at = now;
            return Local::Spent { before };
        }
        if now < lease.retry_at {
            return Local::Wait {
                retry_at: lease.retry_at,
                before,
            };
        }
        Local::Fetch {
            want: self.batch(&p, need).saturating_sub(lease.held),
        }
    }

    /// Records a batch granted by Redis (`level`: what it has left), then spends `need` units if
    /// now held. When it cannot, the bucket is short: no batch is asked for again before it can
    /// have refilled one.
    pub fn granted(&self, field: &str, grant: u128, level: u128, need: u128, now: Nanos) -> Local {
        let mut map = self.map.lock();
        let Some(lease) = map.get_mut(field) else {
            return Local::Wait {
                retry_at: now,
                before: 0,
            };
        };
        lease.held = lease.held.saturating_add(grant);
        lease.level = level;
        let before = level.saturating_add(lease.held).min(lease.params.capacity);
        if lease.held >= need {
            lease.held -= need;
            lease.used_at = now;
            return Local::Spent { before };
        }
        let p = lease.params;
        let missing = self
            .batch(&p, need)
            .saturating_sub(level.saturating_add(lease.held));
        lease.retry_at = if p.refill == 0 {
            Nanos::MAX
        } else {
            let ns = missing.div_ceil(p.refill).max(1);
            now.saturating_add(Nanos::try_from(ns).unwrap_or(Nanos::MAX))
        };
        Local::Wait {
            retry_at: lease.retry_at,
            before,
        }
    }

    /// Gives back `units` spent from `field` for a request that was refused after all.
    pub fn give_back(&self, field: &str, units: u128) {
        if let Some(lease) = self.map.lock().get_mut(field) {
            lease.held = lease.held.saturating_add(units);
        }
    }

    /// What a request of `need` units would find, without spending: the level (Redis's last
    /// known plus held) and whether it is held here.
    pub fn peek(&self, field: &str, p: Params, need: u128) -> (u128, bool) {
        let map = self.map.lock();
        match map.get(field) {
            Some(l) => (
                l.level.saturating_add(l.held).min(p.capacity),
                l.held >= need,
            ),
            None => (p.capacity, false),
        }
    }

    /// The lock to hold while asking Redis for a batch of `field` (see [`Lease::asking`]).
    pub fn asking(&self, field: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        self.map
            .lock()
            .get(field)
            .map(|l| l.asking.clone())
            .unwrap_or_default()
    }

    /// Takes out the units of leases not spent from for a hold period, to give back to Redis.
    pub fn idle(&self, now: Nanos) -> Vec<(String, u128, Params)> {
        let mut map = self.map.lock();
        let mut out = Vec::new();
        for (field, lease) in map.iter_mut() {
            if lease.held > 0 && now.saturating_sub(lease.used_at) >= self.hold {
                out.push((field.clone(), lease.held, lease.params));
                lease.held = 0;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Params = Params {
        unit: 1_000,
        refill: 1, // 1 unit per ns: 10^6 tokens per second
        capacity: 100_000,
    };

    #[test]
    fn spends_held_units_then_asks_for_a_batch() {
        let l = Leases::new(1_000, 2);
        // Nothing held: ask for a batch (one hold of refill = 1,000 units, under cap/4).
        assert_eq!(l.spend("a", P, 1_000, 0), Local::Fetch { want: 1_000 });
        assert_eq!(
            l.granted("a", 1_000, 50_000, 1_000, 0),
            Local::Spent { before: 51_000 }
        );
        // Spent: the next one asks again.
        assert_eq!(l.spend("a", P, 1_000, 1), Local::Fetch { want: 1_000 });
    }

    #[test]
    fn a_short_bucket_is_not_asked_again_before_it_refilled_a_batch() {
        let l = Leases::new(1_000, 2);
        assert!(matches!(l.spend("a", P, 1_000, 0), Local::Fetch { .. }));
        // Redis had 400 units: granted, not enough for one token.
        let Local::Wait { retry_at, .. } = l.granted("a", 400, 0, 1_000, 0) else {
            panic!("should wait")
        };
        assert_eq!(retry_at, 600, "600 more units at 1 per ns");
        assert!(matches!(l.spend("a", P, 1_000, 599), Local::Wait { .. }));
        assert_eq!(l.spend("a", P, 1_000, 600), Local::Fetch { want: 600 });
    }

    #[test]
    fn idle_units_are_given_back_after_a_hold() {
        let l = Leases::new(1_000, 2);
        let _ = l.spend("a", P, 1_000, 0);
        let _ = l.granted("a", 3_000, 0, 1_000, 0);
        assert!(l.idle(999).is_empty());
        // Spent from at 500: idle from 1,500 only.
        assert_eq!(l.spend("a", P, 1_000, 500), Local::Spent { before: 2_000 });
        assert!(l.idle(1_000).is_empty());
        assert_eq!(l.idle(1_500), vec![("a".to_owned(), 1_000, P)]);
        assert!(l.idle(5_000).is_empty());
    }
}
