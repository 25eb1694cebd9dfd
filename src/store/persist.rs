//! Embedded persistence for the memory store: quota and usage counters in a redb file
//! (`<data-dir>/counters.redb`), so that a restart loses nothing (graceful stop: a final flush)
//! or at most one flush interval of counts (crash). redb is crash-safe (copy-on-write B-trees,
//! atomic commits): a flush is wholly on disk or not at all.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::error::{StoreError, StoreErrorKind};
use crate::clock::Nanos;
use crate::limit::LimitKey;

/// Counter name → (used, until).
const COUNTERS: TableDefinition<&str, (u64, i64)> = TableDefinition::new("counters");

/// Initial period name (`<plan>|<PERIOD>`) → its start: recorded once, kept forever (see
/// [`crate::store::Store::initial_period`]).
const INITIAL: TableDefinition<&str, i64> = TableDefinition::new("initial_periods");

/// The runtime catalog's records (see [`super::catalog`]): name → value.
const CATALOG: TableDefinition<&str, &str> = TableDefinition::new("catalog");

/// The runtime catalog's head: `head` → the number of its last write.
const CATALOG_HEAD: TableDefinition<&str, u64> = TableDefinition::new("catalog_head");

/// What the file holds: counters still current, and initial periods.
pub struct Loaded {
    pub counters: Vec<(LimitKey, u64, Nanos)>,
    pub initial: Vec<(String, Nanos)>,
}

/// The counters file's name in the data directory.
pub const FILE_NAME: &str = "counters.redb";

/// Beside the counters file: who holds it (pid, host, since), written when plangate opens it,
/// so that a second process refused by the file's lock can name the first.
pub const HOLDER_FILE: &str = "counters.redb.holder";

/// Moves `<dir>/counters.redb` aside to `counters.redb.corrupt-<unix seconds>`; returns where.
/// A file another process holds (its lock is taken) is never moved: it is in use, not corrupt,
/// and moving it would make two processes count apart.
pub fn move_aside(dir: &Path, now: Nanos) -> Result<std::path::PathBuf, StoreError> {
    let from = dir.join(FILE_NAME);
    if let Ok(f) = std::fs::File::open(&from) {
        match f.try_lock() {
            Ok(()) => drop(f),
            Err(std::fs::TryLockError::WouldBlock) => return Err(in_use(&from)),
            // No locks on this file system: go on (the open just failed for another reason).
            Err(std::fs::TryLockError::Error(_)) => {}
        }
    }
    let to = dir.join(format!(
        "{FILE_NAME}.corrupt-{}",
        now.div_euclid(crate::clock::NANOS_PER_SEC)
    ));
    std::fs::rename(&from, &to)
        .map_err(|e| err(&format!("cannot move {} aside", from.display()), e))?;
    Ok(to)
}

/// The counters file.
pub struct Persistence {
    /// `None` after a failed write: redb refuses every later transaction after an I/O error
    /// ("Previous I/O error occurred. Please close and re-open the database"), so the next
    /// write reopens the file.
    db: parking_lot::Mutex<Option<Database>>,
    path: std::path::PathBuf,
}

/// The error for a counters file whose lock another process holds, naming that process when
/// the holder file says which.
fn in_use(path: &Path) -> StoreError {
    let holder = std::fs::read_to_string(path.with_file_name(HOLDER_FILE))
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() < 512)
        .map_or_else(
            || "another process".to_owned(),
            |h| format!("another plangate ({h})"),
        );
    StoreError::new(
        StoreErrorKind::InUse,
        format!(
            "{} is in use by {holder}: two processes cannot count in one file. Stop the other \
             process, or give this one its own --data-dir (or a Redis --store to share counters \
             between replicas)",
            path.display()
        ),
    )
}

/// Records who holds the counters file; best effort (the lock is what protects it).
fn write_holder(path: &Path) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "this host".to_owned());
    let since = crate::clock::format_rfc3339(crate::clock::Clock::now(&crate::clock::SystemClock));
    let text = format!("pid {} on {host}, since {since}\n", std::process::id());
    let _ = std::fs::write(path.with_file_name(HOLDER_FILE), text);
}

fn err(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::caused_by(StoreErrorKind::Disk, format!("{what}: {e}"), e)
}

impl Persistence {
    /// Opens (or creates) `<dir>/counters.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(&format!("cannot create {}", dir.display()), e))?;
        let path = dir.join(FILE_NAME);
        let db = Self::open_file(&path)?;
        Ok(Persistence {
            db: parking_lot::Mutex::new(Some(db)),
            path,
        })
    }

    fn open_file(path: &Path) -> Result<Database, StoreError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => in_use(path),
            e => err(&format!("cannot open {}", path.display()), e),
        })?;
        write_holder(path);
        // Make sure the table exists, so that reads of a new file succeed.
        let tx = db.begin_write().map_err(|e| err("write", e))?;
        tx.open_table(COUNTERS).map_err(|e| err("table", e))?;
        tx.open_table(INITIAL).map_err(|e| err("table", e))?;
        tx.open_table(CATALOG).map_err(|e| err("table", e))?;
        tx.open_table(CATALOG_HEAD).map_err(|e| err("table", e))?;
        tx.commit().map_err(|e| err("commit", e))?;
        Ok(db)
    }

    /// Every counter still current at `now` (expired ones are deleted), and the initial
    /// periods.
    pub fn load(&self, now: Nanos) -> Result<Loaded, StoreError> {
        let mut out = Vec::new();
        let mut initial = Vec::new();
        let mut expired = Vec::new();
        {
            let guard = self.db.lock();
            let db = guard
                .as_ref()
                .ok_or_else(|| StoreError::new(StoreErrorKind::Disk, "counters file not open"))?;
            let tx = db.begin_read().map_err(|e| err("read", e))?;
            let table = tx.open_table(COUNTERS).map_err(|e| err("table", e))?;
            for row in table.iter().map_err(|e| err("scan", e))? {
                let (k, v) = row.map_err(|e| err("scan", e))?;
                let (used, until) = v.value();
                let name = k.value().to_owned();
                match LimitKey::parse_counter(&name) {
                    Some(key) if until > now => out.push((key, used, until)),
                    _ => expired.push(name),
                }
            }
            let table = tx.open_table(INITIAL).map_err(|e| err("table", e))?;
            for row in table.iter().map_err(|e| err("scan", e))? {
                let (k, v) = row.map_err(|e| err("scan", e))?;
                initial.push((k.value().to_owned(), v.value()));
            }
        }
        if !expired.is_empty() {
            let guard = self.db.lock();
            let db = guard
                .as_ref()
                .ok_or_else(|| StoreError::new(StoreErrorKind::Disk, "counters file not open"))?;
            let tx = db.begin_write().map_err(|e| err("write", e))?;
            {
                let mut table = tx.open_table(COUNTERS).map_err(|e| err("table", e))?;
                for name in &expired {
                    table.remove(name.as_str()).map_err(|e| err("remove", e))?;
                }
            }
            tx.commit().map_err(|e| err("commit", e))?;
        }
        Ok(Loaded {
            counters: out,
            initial,
        })
    }

    /// A read transaction on the file.
    fn reading(&self) -> Result<redb::ReadTransaction, StoreError> {
        let guard = self.db.lock();
        let db = guard
            .as_ref()
            .ok_or_else(|| StoreError::new(StoreErrorKind::Disk, "counters file not open"))?;
        db.begin_read().map_err(|e| err("read", e))
    }

    /// The runtime catalog's head: the number of its last write.
    pub fn catalog_head(&self) -> Result<u64, StoreError> {
        let tx = self.reading()?;
        Ok(tx
            .open_table(CATALOG_HEAD)
            .map_err(|e| err("table", e))?
            .get("head")
            .map_err(|e| err("read", e))?
            .map_or(0, |v| v.value()))
    }

    /// The runtime catalog: its head and records.
    pub fn load_catalog(&self) -> Result<(u64, Vec<(String, String)>), StoreError> {
        let head = self.catalog_head()?;
        let tx = self.reading()?;
        let table = tx.open_table(CATALOG).map_err(|e| err("table", e))?;
        let mut records = Vec::new();
        for row in table.iter().map_err(|e| err("scan", e))? {
            let (k, v) = row.map_err(|e| err("scan", e))?;
            records.push((k.value().to_owned(), v.value().to_owned()));
        }
        Ok((head, records))
    }

    /// Writes one catalog write as write number `head`, durably (committed before it returns).
    pub fn write_catalog(
        &self,
        head: u64,
        records: &[super::catalog::Record],
    ) -> Result<(), StoreError> {
        self.writing(|db| {
            let tx = db.begin_write().map_err(|e| err("write", e))?;
            {
                let mut table = tx.open_table(CATALOG).map_err(|e| err("table", e))?;
                for r in records {
                    match &r.value {
                        Some(v) => table.insert(r.name.as_str(), v.as_str()).map(drop),
                        None => table.remove(r.name.as_str()).map(drop),
                    }
                    .map_err(|e| err("catalog", e))?;
                }
                let mut h = tx.open_table(CATALOG_HEAD).map_err(|e| err("table", e))?;
                h.insert("head", head).map_err(|e| err("catalog", e))?;
            }
            tx.commit().map_err(|e| err("commit", e))
        })
    }

    /// Runs `write` on the file, opening it again first if an earlier failure closed it; a
    /// failure closes it (redb refuses every later transaction after an I/O error), and the
    /// next write reopens it.
    fn writing(
        &self,
        write: impl FnOnce(&Database) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut guard = self.db.lock();
        if guard.is_none() {
            *guard = Some(Self::open_file(&self.path)?);
        }
        let Some(db) = guard.as_ref() else {
            return Err(StoreError::new(
                StoreErrorKind::Disk,
                "counters file not open",
            ));
        };
        let result = write(db);
        if result.is_err() {
            *guard = None;
        }
        result
    }

    /// Writes counters' current values, and new initial periods, in one transaction. After a
    /// failure the file is closed, and reopened by the next write (the counts stay in memory
    /// meanwhile: see the store).
    pub fn write(
        &self,
        rows: &[(LimitKey, u64, Nanos)],
        initial: &[(String, Nanos)],
    ) -> Result<(), StoreError> {
        // On a failure the file is closed; reopened (and written whole) at the next flush.
        self.writing(|db| Self::write_to(db, rows, initial))
    }

    fn write_to(
        db: &Database,
        rows: &[(LimitKey, u64, Nanos)],
        initial: &[(String, Nanos)],
    ) -> Result<(), StoreError> {
        let tx = db.begin_write().map_err(|e| err("write", e))?;
        {
            let mut table = tx.open_table(INITIAL).map_err(|e| err("table", e))?;
            for (name, start) in initial {
                table
                    .insert(name.as_str(), *start)
                    .map_err(|e| err("insert", e))?;
            }
        }
        {
            let mut table = tx.open_table(COUNTERS).map_err(|e| err("table", e))?;
            for (key, used, until) in rows {
                table
                    .insert(key.name().as_str(), (*used, *until))
                    .map_err(|e| err("insert", e))?;
            }
        }
        tx.commit().map_err(|e| err("commit", e))
    }
}
