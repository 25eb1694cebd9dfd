//! Counter stores: where the counters of limits live, behind one trait ([`Store`]). A store keeps
//! counters and charges them atomically; what a counter means (admission, what is left, when it
//! resets) comes from [`crate::limit`], so that every store answers alike.
//!
//! - `memory`: this process's memory, exact, bounded; optionally `persist`ed to an embedded
//!   database so that quotas and usage survive a restart.
//! - `redis`: shared by several replicas; one script per decision.
//!
//! [`open`] builds the store the options name.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Nanos;

pub mod backend;
pub mod catalog;
pub mod deferred;
pub mod error;
pub mod memory;
pub mod persist;
pub mod redis;

pub use backend::{Charge, Mode, Store, Units, UsageRow};
pub use deferred::Deferred;
pub use error::{StoreError, StoreErrorKind};
pub use memory::MemoryStore;
pub use redis::{RedisOptions, RedisStore, RedisTls, SharedBuckets};

/// Where counters live, and how to reach them.
#[derive(Debug, Clone)]
pub enum StoreOptions {
    /// In this process's memory; quota and usage counters persisted under `data_dir` when set.
    /// `recover`: a counters file that cannot be read is moved aside and plangate starts with
    /// empty counters (otherwise it refuses to start).
    Memory {
        data_dir: Option<PathBuf>,
        recover: bool,
    },
    /// In Redis, shared between replicas.
    Redis(RedisOptions),
}

impl StoreOptions {
    /// From a `--store` value: `memory`, or a `redis://host:port[/db]` URL (then `prefix` and
    /// `timeout` apply). `data_dir` applies to the memory store only.
    pub fn parse(
        store: &str,
        data_dir: Option<PathBuf>,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        match store {
            "memory" => Ok(StoreOptions::Memory {
                data_dir,
                recover: false,
            }),
            url if [
                "redis://",
                "rediss://",
                "redis-cluster://",
                "rediss-cluster://",
            ]
            .iter()
            .any(|s| url.starts_with(s)) =>
            {
                Ok(StoreOptions::Redis(RedisOptions {
                    url: url.to_owned(),
                    prefix: prefix.to_owned(),
                    timeout: timeout.max(Duration::from_millis(1)),
                    tls: Default::default(),
                    shared: Default::default(),
                    replicas: 2,
                }))
            }
            other => Err(StoreError::new(
                StoreErrorKind::Config,
                format!(
                    "`{}` is neither `memory` nor a redis://, rediss://, redis-cluster:// or rediss-cluster:// URL",
                    redact_url(other)
                ),
            )),
        }
    }
}

/// Opens the store `opts` names: loads persisted counters (as of `now`), or connects to Redis.
pub async fn open(opts: &StoreOptions, now: Nanos) -> Result<Arc<dyn Store>, StoreError> {
    match opts {
        StoreOptions::Memory { data_dir: None, .. } => {
            tracing::info!("counters in memory, not persisted");
            Ok(Arc::new(MemoryStore::new()))
        }
        StoreOptions::Memory {
            data_dir: Some(dir),
            recover,
        } => {
            let (dir, recover) = (dir.clone(), *recover);
            // Opening and reading the database is file I/O: off the async workers.
            let store = tokio::task::spawn_blocking(move || {
                let store = match load_persisted(&dir, now) {
                    Ok(store) => store,
                    // A file in use is never "recovered": that is two processes counting apart.
                    Err(e) if recover && e.kind() != StoreErrorKind::InUse => {
                        let aside = persist::move_aside(&dir, now)?;
                        tracing::error!(
                            error = %e,
                            moved_to = %aside.display(),
                            "the counters file could not be read: moved aside (--data-recover); \
                             quotas and usage START FROM ZERO"
                        );
                        load_persisted(&dir, now)?
                    }
                    Err(e) => return Err(e),
                };
                tracing::info!(dir = %dir.display(), "counters in memory, persisted");
                Ok::<_, StoreError>(store)
            })
            .await
            .map_err(|e| {
                StoreError::caused_by(StoreErrorKind::Disk, "loading counters failed", e)
            })??;
            Ok(Arc::new(store))
        }
        StoreOptions::Redis(r) => {
            let store = Arc::new(RedisStore::connect(r).await?);
            store.spawn_lease_returns();
            tracing::info!(
                url = %redact_url(&r.url),
                prefix = %r.prefix,
                cluster = store.is_cluster(),
                shared_buckets = if store.leases_shared() { "leased" } else { "exact" },
                "counters in Redis"
            );
            Ok(store)
        }
    }
}

/// The memory store with the counters persisted under `dir`. The database is read under
/// `catch_unwind`: redb panics on some corrupt files, and that must be an error that names the
/// file, not a crash.
fn load_persisted(dir: &std::path::Path, now: Nanos) -> Result<MemoryStore, StoreError> {
    let file = dir.join(persist::FILE_NAME);
    if std::fs::metadata(&file).is_ok_and(|m| m.len() == 0) {
        tracing::warn!(file = %file.display(), "the counters file is empty: quotas and usage start from zero");
    }
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let p = Arc::new(persist::Persistence::open(dir)?);
        MemoryStore::with_persistence(p, now)
    }));
    let advice = "start with --data-recover to move it aside and start with empty counters";
    match opened {
        Ok(Err(e)) if e.kind() == StoreErrorKind::InUse => Err(e),
        Ok(result) => result.map_err(|e| {
            StoreError::new(
                StoreErrorKind::Disk,
                format!("{} cannot be read ({e}); {advice}", file.display()),
            )
        }),
        Err(_) => Err(StoreError::new(
            StoreErrorKind::Disk,
            format!(
                "{} is corrupt (reading it failed); {advice}",
                file.display()
            ),
        )),
    }
}

/// A URL without its password, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(i), Some(j)) if j > i => format!("{}://…@{}", &url[..i], &url[j + 1..]),
        _ => url.to_owned(),
    }
}
