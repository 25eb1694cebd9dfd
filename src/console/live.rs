//! The console's Live page: the latest decisions, from the same tap as WatchDecisions. A
//! collector subscribes while somebody looks (it stops a minute after the last view, so an
//! unwatched console costs the data plane nothing) and keeps the last [`KEPT`] decisions.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use crate::clock::{Clock, NANOS_PER_SEC, Nanos};
use crate::metrics::{Metrics, Watched};

/// Decisions kept for the page.
pub const KEPT: usize = 200;

/// How long the collector runs after the last view.
const LINGER: Nanos = 60 * NANOS_PER_SEC;

#[derive(Default)]
pub struct Live {
    recent: parking_lot::Mutex<VecDeque<Arc<Watched>>>,
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
