//! The runtime catalog in Redis: `{<prefix>}|catalog|head` (the number of the last write),
//! `{<prefix>}|catalog|records` (a hash: record name → value) and `{<prefix>}|catalog|log` (a
//! stream: one entry per write, its id `<number>-0`, holding the names the write changed; about
//! [`LOG_KEPT`] kept). One hash tag, so on a cluster all three live on one master and a write
//! is one script there. A reader takes the log's names, then their values with HMGET.

use std::collections::BTreeMap;
use std::time::Duration;

use super::conn::{bounded, store_error};
use crate::store::catalog::{Changes, LOG_KEPT, Record, Written, check_size};
use crate::store::error::{StoreError, StoreErrorKind};

const SCRIPT: &str = include_str!("catalog.lua");

/// How long a catalog call may take: longer than a decision's timeout (an import is one
/// write of thousands of records).
const TIMEOUT: Duration = Duration::from_secs(10);

/// Records read per HSCAN and log entries per XRANGE.
const PAGE: usize = 1000;

fn protocol(what: impl Into<String>) -> StoreError {
    StoreError::new(StoreErrorKind::Protocol, what.into())
}

/// A write as its log entry: the names it changes, `["key/…", …]`.
fn encode(records: &[Record]) -> String {
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    serde_json::to_string(&names).unwrap_or_default()
}

fn decode(entry: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(entry)
        .map_err(|e| protocol(format!("an unreadable catalog log entry: {e}")))
}

/// The catalog's keys under one prefix, and its write script.
pub(super) struct RedisCatalog {
    prefix: String,
    script: redis::Script,
}

async fn within<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    bounded(TIMEOUT, f, store_error).await
}

impl RedisCatalog {
    pub(super) fn new(prefix: &str) -> Self {
        RedisCatalog {
            prefix: prefix.to_owned(),
            script: redis::Script::new(SCRIPT),
        }
    }

    fn catalog_key(&self, part: &str) -> String {
        format!("{{{}}}|catalog|{part}", self.prefix)
    }

    pub(super) async fn write<C: redis::aio::ConnectionLike + Send>(
        &self,
        conn: &mut C,
        expected: u64,
        records: &[Record],
    ) -> Result<Written, StoreError> {
        check_size(records)?;
        let mut inv = self.script.prepare_invoke();
        inv.key(self.catalog_key("head"))
            .key(self.catalog_key("records"))
            .key(self.catalog_key("log"))
            .arg(expected)
            .arg(LOG_KEPT)
            .arg(encode(records));
        for r in records {
            inv.arg(&r.name).arg(r.value.as_deref().unwrap_or(""));
        }
        let (applied, head): (i64, u64) = within(inv.invoke_async(conn)).await?;
        Ok(if applied == 1 {
            Written::Applied(head)
        } else {
            Written::Stale(head)
        })
    }

    async fn head<C: redis::aio::ConnectionLike + Send>(
        &self,
        conn: &mut C,
    ) -> Result<u64, StoreError> {
        let head: Option<u64> = within(
            redis::cmd("GET")
                .arg(self.catalog_key("head"))
                .query_async(conn),
        )
        .await?;
        Ok(head.unwrap_or(0))
    }

    /// The log's writes after `after`, up to `head`; `None` when the log no longer holds the
    /// first of them.
    async fn log_after<C: redis::aio::ConnectionLike + Send>(
        &self,
        conn: &mut C,
        after: u64,
        head: u64,
    ) -> Result<Option<Vec<(u64, Vec<String>)>>, StoreError> {
        let mut out: Vec<(u64, Vec<String>)> = Vec::new();
        let mut from = after + 1;
        while from <= head {
            let page: Vec<(String, Vec<String>)> = within(
                redis::cmd("XRANGE")
                    .arg(self.catalog_key("log"))
                    .arg(format!("{from}-0"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(PAGE)
                    .query_async(conn),
            )
            .await?;
            if page.is_empty() {
                break;
            }
            for (id, fields) in page {
                let n: u64 = id
                    .split_once('-')
                    .and_then(|(n, _)| n.parse().ok())
                    .ok_or_else(|| protocol(format!("a catalog log entry with id {id}")))?;
                if n != from {
                    // A gap: trimmed (or written by something else).
                    return Ok(None);
                }
                let entry = match fields.as_slice() {
                    [f, v] if f == "w" => v,
                    _ => return Err(protocol(format!("catalog log entry {id} has no write"))),
                };
                out.push((n, decode(entry)?));
                from += 1;
            }
        }
        Ok((from > head).then_some(out))
    }

    /// The current values of `names` (`None`: removed), `PAGE` names per HMGET.
    async fn values<C: redis::aio::ConnectionLike + Send>(
        &self,
        conn: &mut C,
        names: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(PAGE) {
            let values: Vec<Option<String>> = within(
                redis::cmd("HMGET")
                    .arg(self.catalog_key("records"))
                    .arg(chunk)
                    .query_async(conn),
            )
            .await?;
            if values.len() != chunk.len() {
                return Err(protocol("HMGET answered another number of values"));
            }
            out.extend(values);
        }
        Ok(out)
    }

    pub(super) async fn read<C: redis::aio::ConnectionLike + Send>(
        &self,
        conn: &mut C,
        after: u64,
    ) -> Result<Changes, StoreError> {
        let head = self.head(conn).await?;
        if after == head {
            return Ok(Changes::Since(Vec::new()));
        }
        if after > 0
            && after < head
            && let Some(writes) = self.log_after(conn, after, head).await?
        {
            let names: Vec<String> = writes.iter().flat_map(|(_, n)| n.iter().cloned()).collect();
            let mut values = self.values(conn, &names).await?.into_iter();
            let changes = writes
                .into_iter()
                .map(|(n, names)| {
                    let records = names
                        .into_iter()
                        .map(|name| Record {
                            name,
                            value: values.next().flatten(),
                        })
                        .collect();
                    (n, records)
                })
                .collect();
            return Ok(Changes::Since(changes));
        }
        self.whole(conn).await
    }

    /// Every record: a scan of the hash from head `h0`, then the log's writes after `h0`
    /// replayed over it (a record the scan saw changed is set again to its final value). Tried
    /// again if the log was trimmed past `h0` meanwhile.
    async fn whole<C: redis::aio::ConnectionLike + Send>(
        &self,
        conn: &mut C,
    ) -> Result<Changes, StoreError> {
        for _ in 0..5 {
            let h0 = self.head(conn).await?;
            let mut records: BTreeMap<String, String> = BTreeMap::new();
            let mut cursor = "0".to_owned();
            loop {
                let (next, flat): (String, Vec<String>) = within(
                    redis::cmd("HSCAN")
                        .arg(self.catalog_key("records"))
                        .arg(&cursor)
                        .arg("COUNT")
                        .arg(PAGE)
                        .query_async(conn),
                )
                .await?;
                let mut it = flat.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    records.insert(k, v);
                }
                if next == "0" {
                    break;
                }
                cursor = next;
            }
            let head = self.head(conn).await?;
            let Some(writes) = self.log_after(conn, h0, head).await? else {
                continue;
            };
            // Every name changed since the scan began, at its value now.
            let names: Vec<String> = writes.into_iter().flat_map(|(_, n)| n).collect();
            let values = self.values(conn, &names).await?;
            for (name, value) in names.into_iter().zip(values) {
                match value {
                    Some(v) => records.insert(name, v),
                    None => records.remove(&name),
                };
            }
            return Ok(Changes::whole(head, records));
        }
        Err(StoreError::new(
            StoreErrorKind::Unavailable,
            "the runtime catalog changed too fast to be read whole; try again",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_hold_the_names() {
        let w = vec![
            Record {
                name: "key/a".into(),
                value: Some("{\"x\":1}".into()),
            },
            Record {
                name: "member/p|\"q/b".into(),
                value: None,
            },
        ];
        assert_eq!(decode(&encode(&w)).unwrap(), ["key/a", "member/p|\"q/b"]);
        assert!(decode("[[1]]").is_err());
    }
}
