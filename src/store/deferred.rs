//! A store that did not answer at start: plangate serves anyway — unready (`/readyz` 503, gRPC
//! health NOT_SERVING), every decision answered by the store failure policy — and connects in
//! the background (`server`); from then on this delegates every call to the store it reached.
//! A Redis restart during a rollout thus never crash-loops the new pods.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use super::backend::{Decided, Mode, Store, Units, UsageRow};
use super::catalog::{Changes, Record, Written};
use super::error::{StoreError, StoreErrorKind};
use crate::clock::Nanos;
use crate::limit::{LimitRef, LimitState};

/// The store once reached.
#[derive(Default)]
pub struct Deferred {
    inner: OnceLock<Arc<dyn Store>>,
    /// `--usage-retention-days`, passed on when the store is reached.
    retention_days: std::sync::atomic::AtomicU32,
}

impl Deferred {
    /// From now on, calls go to `store` (the first one set stays).
    pub fn set(&self, store: Arc<dyn Store>) {
        let days = self
            .retention_days
            .load(std::sync::atomic::Ordering::Relaxed);
        if days > 0 {
            store.set_usage_retention_days(days);
        }
        let _ = self.inner.set(store);
    }

    fn get(&self) -> Result<&Arc<dyn Store>, StoreError> {
        self.inner.get().ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::Unavailable,
                "the counter store has not answered since start (connecting in the background)",
            )
        })
    }
}

#[async_trait]
impl Store for Deferred {
    async fn decide(
        &self,
        limits: &[LimitRef],
        units: Units<'_>,
        mode: Mode,
        now: Nanos,
    ) -> Decided {
        self.get()?.decide(limits, units, mode, now).await
    }

    async fn read(&self, limits: &[LimitRef], now: Nanos) -> Result<Vec<LimitState>, StoreError> {
        self.get()?.read(limits, now).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.get()?.ping().await
    }

    fn connected(&self) -> bool {
        self.inner.get().is_some()
    }

    async fn usage(
        &self,
        plan: &str,
        keys: &[Arc<str>],
        from: Nanos,
        to: Nanos,
    ) -> Result<Vec<UsageRow>, StoreError> {
        self.get()?.usage(plan, keys, from, to).await
    }

    fn set_usage_retention_days(&self, days: u32) {
        self.retention_days
            .store(days, std::sync::atomic::Ordering::Relaxed);
        if let Some(s) = self.inner.get() {
            s.set_usage_retention_days(days);
        }
    }

    async fn set_used(&self, limit: &LimitRef, used: i64, now: Nanos) -> Result<(), StoreError> {
        self.get()?.set_used(limit, used, now).await
    }

    async fn initial_period(&self, name: &str, start: Nanos) -> Result<Nanos, StoreError> {
        self.get()?.initial_period(name, start).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        match self.inner.get() {
            Some(s) => s.flush().await,
            None => Ok(()),
        }
    }

    fn persists(&self) -> bool {
        self.inner.get().is_some_and(|s| s.persists())
    }

    async fn catalog_write(
        &self,
        expected: u64,
        records: &[Record],
    ) -> Result<Written, StoreError> {
        self.get()?.catalog_write(expected, records).await
    }

    async fn catalog_read(&self, after: u64) -> Result<Changes, StoreError> {
        self.get()?.catalog_read(after).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn unavailable_until_set_then_the_store_itself() {
        let d = Deferred::default();
        assert!(!d.connected());
        let e = d.ping().await.unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Unavailable);
        assert!(d.catalog_read(0).await.is_err());
        d.set(Arc::new(MemoryStore::new()));
        assert!(d.connected());
        d.ping().await.unwrap();
        assert_eq!(d.initial_period("p|DAY", 5).await.unwrap(), 5);
    }
}
