//! The runtime catalog's durable form, as a store keeps it: named records (opaque text) and a
//! numbered log of the writes that changed them. What the records mean is `crate::catalog`'s.
//!
//! Writes are serialized by their sequence number: a write names the head it was prepared
//! against and is applied only if the head is still that one (optimistic concurrency over the
//! whole catalog). So every replica applies the same writes in the same order, and a write is
//! validated against everything written before it.
//!
//! The log holds the names a write changed, not their values: a reader takes the values as they
//! are when it reads (the same, or a later write's), so the log stays small whatever the
//! records weigh, and a reader that reads up to the head holds exactly the store's records.

use std::collections::{BTreeMap, VecDeque};

use super::error::{StoreError, StoreErrorKind};

/// One record set (`value: Some`) or removed (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub value: Option<String>,
}

/// A write's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Applied as write number `.0` (the new head).
    Applied(u64),
    /// Not applied: the head is `.0`, not the one the write was prepared against.
    Stale(u64),
}

/// What changed after a given write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// The writes after it, in order, each with its number and the records it changed — with
    /// their values as of the read (a later write may have changed them again; it follows).
    Since(Vec<(u64, Vec<Record>)>),
    /// The log no longer reaches back that far (or the whole catalog was asked for): every
    /// record, as of write `head`.
    Whole { head: u64, records: Vec<Record> },
}

impl Changes {
    /// The whole catalog: `records` as of write `head`.
    pub fn whole(head: u64, records: impl IntoIterator<Item = (String, String)>) -> Self {
        Changes::Whole {
            head,
            records: records
                .into_iter()
                .map(|(name, v)| Record {
                    name,
                    value: Some(v),
                })
                .collect(),
        }
    }
}

/// How many writes a log keeps for replicas that follow it (about: Redis trims in whole
/// nodes); one further behind reads the whole catalog.
pub const LOG_KEPT: usize = 1_000;

/// How many names the memory store's log keeps at most, over all its writes.
pub const LOG_KEPT_NAMES: usize = 100_000;

/// The largest write, in records (an import of AWS's CSV is one write).
pub const MAX_RECORDS: usize = 20_000;

/// The memory store's catalog log: its head and its latest writes (values included, at most
/// [`LOG_KEPT_NAMES`] records). The records themselves live in the one reader's catalog (this
/// process's) and, when the store persists, on disk: a whole read comes from the disk, or from
/// the log when it still reaches back to the first write.
#[derive(Debug, Default)]
pub struct MemoryCatalog {
    head: u64,
    log: VecDeque<(u64, Vec<Record>)>,
    /// Records in `log`.
    logged: usize,
}

impl MemoryCatalog {
    /// A catalog whose last write was number `head` (loaded from disk).
    pub fn at(head: u64) -> Self {
        MemoryCatalog {
            head,
            ..MemoryCatalog::default()
        }
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    /// Whether a write prepared against `expected` would apply, and its number if so.
    pub fn check(&self, expected: u64, records: &[Record]) -> Result<Written, StoreError> {
        check_size(records)?;
        Ok(if expected == self.head {
            Written::Applied(self.head + 1)
        } else {
            Written::Stale(self.head)
        })
    }

    /// Applies a write [`MemoryCatalog::check`] accepted.
    pub fn apply(&mut self, records: Vec<Record>) -> u64 {
        self.head += 1;
        self.logged += records.len();
        self.log.push_back((self.head, records));
        while self.log.len() > LOG_KEPT || (self.logged > LOG_KEPT_NAMES && self.log.len() > 1) {
            if let Some((_, gone)) = self.log.pop_front() {
                self.logged -= gone.len();
            }
        }
        self.head
    }

    /// The writes after `after` from the log; the whole catalog when the log holds every write
    /// (`after` 0, or a reader ahead of the head: it saw writes this catalog lost); `None`
    /// when the log no longer reaches back that far (read the disk).
    pub fn since(&self, after: u64) -> Option<Changes> {
        let from_first = self.log.front().map_or(self.head + 1, |(n, _)| *n);
        if after > 0 && after <= self.head && from_first <= after + 1 {
            return Some(Changes::Since(
                self.log
                    .iter()
                    .filter(|(n, _)| *n > after)
                    .cloned()
                    .collect(),
            ));
        }
        if from_first > 1 {
            return None;
        }
        let mut records = BTreeMap::new();
        for (_, write) in &self.log {
            for r in write {
                match &r.value {
                    Some(v) => records.insert(r.name.clone(), v.clone()),
                    None => records.remove(&r.name),
                };
            }
        }
        Some(Changes::whole(self.head, records))
    }
}

/// Refuses a write of more records than a store takes at once, or an empty value (the Redis
/// log's mark of a removal).
pub fn check_size(records: &[Record]) -> Result<(), StoreError> {
    if records.iter().any(|r| r.value.as_deref() == Some("")) {
        return Err(StoreError::new(
            StoreErrorKind::Config,
            "a catalog record with an empty value",
        ));
    }
    if records.len() > MAX_RECORDS {
        return Err(StoreError::new(
            StoreErrorKind::Config,
            format!(
                "a catalog write of {} records; at most {MAX_RECORDS} at once",
                records.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(name: &str, v: &str) -> Record {
        Record {
            name: name.into(),
            value: Some(v.into()),
        }
    }

    #[test]
    fn writes_apply_in_order_and_stale_ones_do_not() {
        let mut c = MemoryCatalog::default();
        assert_eq!(c.check(0, &[put("a", "1")]).unwrap(), Written::Applied(1));
        c.apply(vec![put("a", "1")]);
        assert_eq!(c.check(0, &[put("a", "2")]).unwrap(), Written::Stale(1));
        let remove_a = Record {
            name: "a".into(),
            value: None,
        };
        c.apply(vec![put("b", "2"), remove_a.clone()]);
        assert_eq!(
            c.since(1),
            Some(Changes::Since(vec![(2, vec![put("b", "2"), remove_a])]))
        );
        assert_eq!(c.since(2), Some(Changes::Since(vec![])));
        // The log holds every write: the whole catalog from it.
        assert_eq!(
            c.since(0),
            Some(Changes::Whole {
                head: 2,
                records: vec![put("b", "2")]
            })
        );
    }

    #[test]
    fn a_reader_behind_the_log_reads_the_disk() {
        let mut c = MemoryCatalog::at(50);
        c.apply(vec![put("y", "2")]);
        // The log starts at 51: a reader at 10, or one reading everything, needs the disk.
        assert_eq!(c.since(10), None);
        assert_eq!(c.since(0), None);
        assert_eq!(
            c.since(50),
            Some(Changes::Since(vec![(51, vec![put("y", "2")])]))
        );
        // A reader ahead of the catalog (it lost writes) reads everything too.
        assert_eq!(c.since(60), None);
        let mut big = MemoryCatalog::default();
        for i in 0..(LOG_KEPT + 5) {
            big.apply(vec![put(&format!("k{i}"), "v")]);
        }
        assert_eq!(big.since(0), None, "the log was trimmed");
        assert!(matches!(big.since(big.head() - 1), Some(Changes::Since(w)) if w.len() == 1));
    }
}
