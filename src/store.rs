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
pub mod error;
pub mod memory;
pub mod persist;
pub mod redis;

pub use backend::{Charge, Store, UsageRow};
pub use error::{StoreError, StoreErrorKind};
pub use memory::MemoryStore;
pub use redis::{RedisOptions, RedisStore};

/// Where counters live, and how to reach them.
#[derive(Debug, Clone)]
pub enum StoreOptions {
    /// In this process's memory; quota and usage counters persisted under `data_dir` when set.
    Memory { data_dir: Option<PathBuf> },
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
            "memory" => Ok(StoreOptions::Memory { data_dir }),
            url if url.starts_with("redis://") || url.starts_with("rediss://") => {
                Ok(StoreOptions::Redis(RedisOptions {
                    url: url.to_owned(),
                    prefix: prefix.to_owned(),
                    timeout: timeout.max(Duration::from_millis(1)),
                }))
            }
            other => Err(StoreError::new(
                StoreErrorKind::Config,
                format!(
                    "`{}` is neither `memory` nor a redis:// URL",
                    redact_url(other)
                ),
            )),
        }
    }
}

/// Opens the store `opts` names: loads persisted counters (as of `now`), or connects to Redis.
pub async fn open(opts: &StoreOptions, now: Nanos) -> Result<Arc<dyn Store>, StoreError> {
    match opts {
        StoreOptions::Memory { data_dir: None } => {
            tracing::info!("counters in memory, not persisted");
            Ok(Arc::new(MemoryStore::new()))
        }
        StoreOptions::Memory {
            data_dir: Some(dir),
        } => {
            let dir = dir.clone();
            // Opening and reading the database is file I/O: off the async workers.
            let store = tokio::task::spawn_blocking(move || {
                let p = Arc::new(persist::Persistence::open(&dir)?);
                let store = MemoryStore::with_persistence(p, now)?;
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
            let store = RedisStore::connect(r).await?;
            tracing::info!(url = %redact_url(&r.url), prefix = %r.prefix, "counters in Redis");
            Ok(Arc::new(store))
        }
    }
}

/// A URL without its password, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(i), Some(j)) if j > i => format!("{}://…@{}", &url[..i], &url[j + 1..]),
        _ => url.to_owned(),
    }
}
