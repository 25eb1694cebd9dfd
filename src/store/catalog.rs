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

/// How many writes a log keeps for replicas that follow it (about: Redis trims in whole
/// nodes); one further behind reads the whole catalog.
pub const LOG_KEPT: usize = 1_000;

/// How many names the memory store's log keeps at most, over all its writes.
pub const LOG_KEPT_NAMES: usize = 100_000;

/// The largest write, in records (an import of AWS's CSV is one write).
pub const MAX_RECORDS: usize = 20_000;

/// A catalog in this process's memory (the memory store's; persisted with its counters when
/// those are).
#[derive(Debug, Default)]
pub struct MemoryCatalog {
    head: u64,
    records: BTreeMap<String, String>,
    /// Each write's number and the names it changed.
    log: VecDeque<(u64, Vec<String>)>,
    /// Names in `log`.
    logged: usize,
}

impl MemoryCatalog {
    /// A catalog holding `records` as of write `head` (loaded from disk).
    pub fn loaded(head: u64, records: impl IntoIterator<Item = (String, String)>) -> Self {
        MemoryCatalog {
            head,
            records: records.into_iter().collect(),
            log: VecDeque::new(),
            logged: 0,
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
        let mut names = Vec::with_capacity(records.len());
        for r in records {
            match r.value {
                Some(v) => self.records.insert(r.name.clone(), v),
                None => self.records.remove(&r.name),
            };
            names.push(r.name);
        }
        self.logged += names.len();
        self.log.push_back((self.head, names));
        while self.log.len() > LOG_KEPT || (self.logged > LOG_KEPT_NAMES && self.log.len() > 1) {
            if let Some((_, gone)) = self.log.pop_front() {
                self.logged -= gone.len();
            }
        }
        self.head
    }

    /// The writes after `after`, or the whole catalog when the log does not reach back to it.
    pub fn since(&self, after: u64) -> Changes {
        // A reader ahead of the head saw writes this catalog lost: it reads everything.
        let reaches = after <= self.head
            && (after == self.head
                || self
                    .log
                    .front()
                    .is_some_and(|(first, _)| *first <= after + 1));
        if after > 0 && reaches {
            let value = |name: &String| Record {
                name: name.clone(),
                value: self.records.get(name).cloned(),
            };
            return Changes::Since(
                self.log
                    .iter()
                    .filter(|(n, _)| *n > after)
                    .map(|(n, names)| (*n, names.iter().map(value).collect()))
                    .collect(),
            );
        }
        Changes::Whole {
            head: self.head,
            records: self
                .records
                .iter()
                .map(|(name, v)| Record {
                    name: name.clone(),
                    value: Some(v.clone()),
                })
                .collect(),
        }
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
        c.apply(vec![
            put("b", "2"),
            Record {
                name: "a".into(),
                value: None,
            },
        ]);
        assert_eq!(
            c.since(1),
            Changes::Since(vec![(
                2,
                vec![
                    put("b", "2"),
                    Record {
                        name: "a".into(),
                        value: None
                    }
                ]
            )])
        );
        assert_eq!(c.since(2), Changes::Since(vec![]));
        assert_eq!(
            c.since(0),
            Changes::Whole {
                head: 2,
                records: vec![put("b", "2")]
            }
        );
    }

    #[test]
    fn a_reader_behind_the_log_reads_everything() {
        let mut c = MemoryCatalog::loaded(50, [("x".to_owned(), "1".to_owned())]);
        c.apply(vec![put("y", "2")]);
        // The log starts at 51: a reader at 10 missed writes it cannot see.
        assert!(matches!(c.since(10), Changes::Whole { head: 51, .. }));
        assert_eq!(c.since(50), Changes::Since(vec![(51, vec![put("y", "2")])]));
        // A reader ahead of the catalog (it lost writes): everything.
        assert!(matches!(c.since(60), Changes::Whole { head: 51, .. }));
    }
}
