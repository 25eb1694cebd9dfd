//! The console's Live page: the latest decisions, from the same tap as WatchDecisions. A
//! collector subscribes while somebody looks (it stops a minute after the last view, so an
//! unwatched console costs the data plane nothing) and keeps the last [`KEPT`] decisions, and
//! for the overview each key's latest quota state (the keys nearest their quota) and samples
//! of the decision counter (decisions per second).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use crate::clock::{Clock, NANOS_PER_SEC, Nanos};
use crate::metrics::{Metrics, Watched};

/// Decisions kept for the page.
pub const KEPT: usize = 200;

/// How long the collector runs after the last view.
const LINGER: Nanos = 60 * NANOS_PER_SEC;

/// Keys whose quota state the collector keeps at most (the lower half by share remaining is
/// kept when it is full).
pub const MAX_NEAR: usize = 10_000;

/// A key's quota in a plan, as its latest decision left it.
#[derive(Debug, Clone, PartialEq)]
pub struct Near {
    pub key: Arc<str>,
    pub plan: Arc<str>,
    pub remaining: u64,
    pub limit: u64,
    /// When the period ends.
    pub resets: Nanos,
}

type NearMap = HashMap<(Arc<str>, Arc<str>), (u64, u64, Nanos)>;

#[derive(Default)]
pub struct Live {
    recent: parking_lot::Mutex<VecDeque<Arc<Watched>>>,
    near: parking_lot::Mutex<NearMap>,
    /// (time, decisions since start) at the overview's last views, for a rate.
    samples: parking_lot::Mutex<VecDeque<(Nanos, u64)>>,
    last_view: AtomicI64,
    running: AtomicBool,
    /// Decisions the collector missed (it fell behind the tap).
    pub lost: std::sync::atomic::AtomicU64,
}

impl Live {
    /// The latest decisions, newest first; starts the collector if it is not running. `None`
    /// when no watcher is free (WatchDecisions' cap is reached).
    pub fn view(
        self: &Arc<Self>,
        metrics: &Arc<Metrics>,
        clock: Arc<dyn Clock>,
        max_watchers: usize,
    ) -> Option<Vec<Arc<Watched>>> {
        self.last_view.store(clock.now(), Ordering::Relaxed);
        if !self.running.swap(true, Ordering::AcqRel) {
            let Some(mut watcher) = metrics.watch_at_most(max_watchers) else {
                self.running.store(false, Ordering::Release);
                return None;
            };
            let live = self.clone();
            tokio::spawn(async move {
                loop {
                    match tokio::time::timeout(Duration::from_secs(5), watcher.recv()).await {
                        Ok(Ok(w)) => {
                            live.note_quota(&w);
                            let mut recent = live.recent.lock();
                            if recent.len() == KEPT {
                                recent.pop_back();
                            }
                            recent.push_front(w);
                        }
                        Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                            live.lost.fetch_add(n, Ordering::Relaxed);
                        }
                        Ok(Err(_)) => break,
                        Err(_) => {}
                    }
                    if clock.now() - live.last_view.load(Ordering::Relaxed) > LINGER {
                        break;
                    }
                }
                live.running.store(false, Ordering::Release);
            });
        }
        Some(self.recent.lock().iter().cloned().collect())
    }
}

impl Live {
    /// Keeps the quota state a decision left (of its plan's quota, when it has one).
    fn note_quota(&self, w: &Watched) {
        let d = &w.decision;
        let (Some(key), Some(plan)) = (&d.key_id, &d.plan_id) else {
            return;
        };
        for l in &d.limits {
            if let (
                crate::engine::LimitKind::PlanQuota,
                crate::engine::LimitConfig::Quota {
                    limit, window_end, ..
                },
            ) = (l.kind, l.config)
            {
                let mut near = self.near.lock();
                near.insert(
                    (key.clone(), plan.clone()),
                    (l.state.remaining, limit, window_end),
                );
                if near.len() > MAX_NEAR {
                    keep_lowest(&mut near, MAX_NEAR / 2);
                }
            }
        }
    }

    /// The `n` keys with the least of their quota left (as a share of it), in periods not yet
    /// over at `now`, among the keys seen since the collector started.
    pub fn nearest(&self, n: usize, now: Nanos) -> Vec<Near> {
        let near = self.near.lock();
        let mut all: Vec<Near> = near
            .iter()
            .filter(|(_, (_, _, end))| *end > now)
            .map(|((key, plan), &(remaining, limit, resets))| Near {
                key: key.clone(),
                plan: plan.clone(),
                remaining,
                limit,
                resets,
            })
            .collect();
        all.sort_by(|a, b| {
            share(a.remaining, a.limit)
                .total_cmp(&share(b.remaining, b.limit))
                .then_with(|| a.key.cmp(&b.key))
        });
        all.truncate(n);
        all
    }

    /// Decisions per second over the last minute of views (the overview's), with `total` the
    /// decisions since start at `now`; `None` until two views a second apart.
    pub fn rate(&self, now: Nanos, total: u64) -> Option<f64> {
        let mut samples = self.samples.lock();
        while samples
            .front()
            .is_some_and(|(t, _)| now - t > 60 * NANOS_PER_SEC)
        {
            samples.pop_front();
        }
        let rate = samples.front().and_then(|&(t, n)| {
            let secs = (now - t) as f64 / NANOS_PER_SEC as f64;
            (secs >= 1.0).then(|| total.saturating_sub(n) as f64 / secs)
        });
        if samples.len() >= 600 {
            samples.pop_front();
        }
        samples.push_back((now, total));
        rate
    }
}

fn share(remaining: u64, limit: u64) -> f64 {
    if limit == 0 {
        0.0
    } else {
        remaining as f64 / limit as f64
    }
}

/// Keeps the `n` entries with the least share remaining.
fn keep_lowest(near: &mut NearMap, n: usize) {
    let mut shares: Vec<f64> = near.values().map(|&(r, l, _)| share(r, l)).collect();
    if shares.len() <= n {
        return;
    }
    shares.select_nth_unstable_by(n, f64::total_cmp);
    let cut = shares[n];
    near.retain(|_, &mut (r, l, _)| share(r, l) < cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_needs_a_second_and_forgets_after_a_minute() {
        let live = Live::default();
        assert_eq!(live.rate(0, 100), None);
        assert_eq!(live.rate(NANOS_PER_SEC / 2, 150), None);
        assert_eq!(live.rate(2 * NANOS_PER_SEC, 300), Some(100.0));
        assert_eq!(
            live.rate(200 * NANOS_PER_SEC, 400),
            None,
            "the old samples are gone"
        );
    }

    #[test]
    fn the_nearest_keep_the_lowest_share() {
        let mut near = NearMap::new();
        for i in 0..100u64 {
            near.insert((Arc::from(format!("k{i}")), Arc::from("p")), (i, 100, 10));
        }
        keep_lowest(&mut near, 10);
        assert_eq!(near.len(), 10);
        assert!(near.values().all(|&(r, _, _)| r < 10));
        let live = Live::default();
        *live.near.lock() = near;
        let top = live.nearest(3, 0);
        assert_eq!(
            top.iter().map(|n| n.remaining).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(live.nearest(3, 10).is_empty(), "the period is over");
    }
}
