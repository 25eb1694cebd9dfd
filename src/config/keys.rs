//! API keys as written, before cross-checks: entries from the YAML `api_keys` list and from CSV
//! key files in AWS's import format, each with its origin (for errors), and the checks of a key
//! value, a hash and an id. `compile` cross-checks the entries against plans and each other.
//!
//! CSV files: `Name,Key,Description,Enabled,UsagePlanIds`, plus optional `Id` and `CustomerId`
//! columns. Headers are case-insensitive; `UsagePlanIds` may hold several ids, comma-separated
//! inside quotes. Records are read as plain strings (not through serde) so that no error message
//! can quote a field: the `Key` column holds secrets.

use std::path::Path as FsPath;
use std::sync::Arc;

use super::error::{ConfigError, ErrorKind};
use super::file::ConfigFile;
use super::location::{LineCol, Path};
use crate::snapshot::{KEY_MAX_CHARS, KEY_MIN_CHARS, KeyHash, hash_key};

/// One API key from the YAML file or a CSV file, before checks.
pub(crate) struct KeyEntry {
    pub id: String,
    pub name: Option<String>,
    pub hash: Result<KeyHash, String>,
    pub enabled: bool,
    pub customer_id: Option<String>,
    pub plans: Vec<String>,
    pub origin: Origin,
}

/// Where a key was written.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    Yaml(usize),
    Csv {
        file: Arc<std::path::PathBuf>,
        line: u64,
    },
}

impl Origin {
    pub(crate) fn describe(&self) -> String {
        match self {
            Origin::Yaml(i) => format!("api_keys[{i}]"),
            Origin::Csv { file, line } => format!("{}:{line}", file.display()),
        }
    }

    /// An error about this key; `sub` is the field and index within a YAML key (`usage_plans`, 2).
    pub(crate) fn error(&self, sub: Option<(&str, Option<usize>)>, kind: ErrorKind) -> ConfigError {
        match self {
            Origin::Yaml(i) => {
                let mut p = Path::root().key("api_keys").index(*i);
                if let Some((field, index)) = sub {
                    p = p.key(field);
                    if let Some(j) = index {
                        p = p.index(j);
                    }
                }
                ConfigError::new(p, kind)
            }
            Origin::Csv { file, line } => ConfigError {
                file: Some(file.to_path_buf()),
                at: Some(LineCol {
                    line: usize::try_from(*line).unwrap_or(usize::MAX),
                    col: 1,
                }),
                path: Path::root(),
                kind,
            },
        }
    }
}

/// The keys of the YAML `api_keys` list, and the ids of those given as plain-text `value`.
pub(crate) fn yaml_entries(file: &ConfigFile) -> (Vec<KeyEntry>, Vec<String>) {
    let mut entries = Vec::with_capacity(file.api_keys.len());
    let mut plain = Vec::new();
    for (i, k) in file.api_keys.iter().enumerate() {
        let hash = match (&k.value, &k.value_sha256) {
            (Some(_), Some(_)) => Err("has both `value` and `value_sha256`; give one".to_owned()),
            (None, None) => Err("has neither `value` nor `value_sha256`".to_owned()),
            (Some(v), None) => {
                plain.push(k.id.clone());
                check_value(v.expose()).map(|()| hash_key(v.expose()))
            }
            (None, Some(h)) => parse_sha256(h),
        };
        entries.push(KeyEntry {
            id: k.id.clone(),
            name: k.name.clone(),
            hash,
            enabled: k.enabled,
            customer_id: k.customer_id.clone(),
            plans: k.usage_plans.clone(),
            origin: Origin::Yaml(i),
        });
    }
    (entries, plain)
}

/// Checks a plain-text key value's length (never quoting it).
pub(crate) fn check_value(v: &str) -> Result<(), String> {
    let n = v.chars().count();
    if !(KEY_MIN_CHARS..=KEY_MAX_CHARS).contains(&n) {
        return Err(format!(
            "key value has {n} characters; {KEY_MIN_CHARS} to {KEY_MAX_CHARS} are required"
        ));
    }
    if v.chars().any(|c| c.is_control()) {
        return Err("key value contains control characters".to_owned());
    }
    if is_placeholder(v) {
        return Err(
            "key value is the example's placeholder (`replace-me…`): put the customer's key there \
             (20 to 128 characters), or remove the row"
                .to_owned(),
        );
    }
    Ok(())
}

/// The shipped examples' placeholders (`replace-me…`), which must never work as a key or token.
pub fn is_placeholder(v: &str) -> bool {
    v.trim()
        .get(..10)
        .is_some_and(|p| p.eq_ignore_ascii_case("replace-me"))
}

fn parse_sha256(h: &str) -> Result<KeyHash, String> {
    let mut out = [0u8; 32];
    if h.len() != 64 {
        return Err(format!(
            "`value_sha256` must be 64 hex digits, found {} characters",
            h.len()
        ));
    }
    hex::decode_to_slice(h, &mut out)
        .map_err(|_| "`value_sha256` must be 64 hex digits".to_owned())?;
    Ok(out)
}

/// Key ids: like names, plus `:` and `@` (customer-style ids).
pub(crate) fn check_key_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err("key id must be 1 to 128 characters".to_owned());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@')))
    {
        return Err(format!(
            "key id `{id}` contains `{c}`; use letters, digits, `-`, `_`, `.`, `:` and `@`"
        ));
    }
    Ok(())
}

/// The longest customer id, in bytes.
pub(crate) const MAX_CUSTOMER_ID: usize = 1024;

/// Customer ids go upstream as the `x-plangate-customer-id` header: printable ASCII and inner
/// spaces only, so that no value can break a header (CR, LF, NUL) or make Envoy refuse the
/// answer — which would turn every request of the key into a 5xx, and charge it.
pub(crate) fn check_customer_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_CUSTOMER_ID {
        return Err(format!(
            "a customer id must be 1 to {MAX_CUSTOMER_ID} bytes, found {}",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|c| !matches!(c, ' '..='~')) {
        return Err(format!(
            "a customer id becomes a header value: printable ASCII only, found {}",
            c.escape_unicode()
        ));
    }
    if id.starts_with(' ') || id.ends_with(' ') {
        return Err("a customer id may not start or end with a space".to_owned());
    }
    Ok(())
}

#[derive(Default)]
struct Columns {
    name: Option<usize>,
    key: Option<usize>,
    description: Option<usize>,
    enabled: Option<usize>,
    plans: Option<usize>,
    id: Option<usize>,
    customer: Option<usize>,
}

/// What reading one key file gave: the keys it could read, the errors (with file and line) it
/// found, and warnings (ignored columns, a key given twice).
pub(crate) struct CsvKeys {
    pub keys: Vec<KeyEntry>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
}

/// Reads one key file in AWS's `import-api-keys` format: `Name` and `Key` columns required,
/// `Description`, `Enabled`, `UsagePlanIds` optional (plus plangate's `Id` and `CustomerId`),
/// headers in any case and order, other columns ignored; several plan ids in one cell are
/// enclosed in double or single quotes; a key value given again overwrites the earlier row
/// (AWS's overwrite mode), with a warning.
pub(crate) fn read_csv(path: &FsPath) -> CsvKeys {
    let mut warnings = Vec::new();
    match read_inner(path, &mut warnings) {
        Ok((keys, errors)) => CsvKeys {
            keys,
            errors,
            warnings,
        },
        Err(errors) => CsvKeys {
            keys: Vec::new(),
            errors,
            warnings,
        },
    }
}

/// Merges cells that a single-quoted list was split into (`'p1`, `p2'` → `'p1,p2'`): AWS lets
/// `UsagePlanIds` be enclosed in single quotes, which CSV does not know as quotes.
fn merge_single_quoted(record: &csv::StringRecord) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(record.len());
    let mut open = false;
    for cell in record.iter() {
        if open {
            if let Some(last) = out.last_mut() {
                last.push(',');
                last.push_str(cell);
            }
            if cell.ends_with('\'') {
                open = false;
            }
        } else {
            open = cell.starts_with('\'') && (cell.len() == 1 || !cell.ends_with('\''));
            out.push(cell.to_owned());
        }
    }
    out
}

#[allow(clippy::type_complexity)]
fn read_inner(
    path: &FsPath,
    warnings: &mut Vec<String>,
) -> Result<(Vec<KeyEntry>, Vec<ConfigError>), Vec<ConfigError>> {
    let file = Arc::new(path.to_path_buf());
    let io_err = |reason: String| {
        vec![ConfigError::new(
            Path::root(),
            ErrorKind::Io {
                file: path.display().to_string(),
                reason,
            },
        )]
    };
    let data = std::fs::read(path).map_err(|e| io_err(e.to_string()))?;
    // A UTF-8 byte order mark (spreadsheets write one) is not part of the first column's name.
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&data);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        // Records are checked against the header below, after single-quoted lists are merged.
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(data);
    let at = |line: u64, kind: ErrorKind| at(path, line, kind);
    let headers = rdr
        .headers()
        .map_err(|e| vec![at(1, invalid(csv_reason(&e)))])?
        .clone();
    let (cols, key_col, mut errors) = columns(path, &headers, warnings)?;
    let mut out: Vec<KeyEntry> = Vec::new();
    // Key hash → index in `out`, for a value given twice.
    let mut seen: std::collections::HashMap<KeyHash, usize> = std::collections::HashMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(at(line, invalid(csv_reason(&e))));
                // A malformed record may leave the reader unable to continue.
                break;
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        let cells = if record.len() > headers.len() {
            merge_single_quoted(&record)
        } else {
            record.iter().map(str::to_owned).collect()
        };
        if cells.len() != headers.len() {
            errors.push(at(
                line,
                invalid(format!(
                    "record has {} fields, the header has {}",
                    cells.len(),
                    headers.len()
                )),
            ));
            continue;
        }
        let entry = row(&cells, &cols, key_col, (&file, line), &mut errors);
        // The same value again: the later row wins (AWS: "the most recent version overwriting
        // the previous one"). Rows are named by line, never by value.
        if let Ok(h) = &entry.hash
            && let Some(&i) = seen.get(h)
        {
            if let Origin::Csv { line: first, .. } = &out[i].origin {
                warnings.push(format!(
                    "{}:{line}: the key of line {first} again; line {line} replaces it, as AWS's import does",
                    path.display()
                ));
            }
            out[i] = entry;
            continue;
        }
        if let Ok(h) = &entry.hash {
            seen.insert(*h, out.len());
        }
        out.push(entry);
    }
    Ok((out, errors))
}

/// An error at `line` of key file `path`.
fn at(path: &FsPath, line: u64, kind: ErrorKind) -> ConfigError {
    ConfigError {
        file: Some(path.to_path_buf()),
        at: Some(LineCol {
            line: usize::try_from(line).unwrap_or(usize::MAX),
            col: 1,
        }),
        path: Path::root(),
        kind,
    }
}

fn invalid(reason: String) -> ErrorKind {
    ErrorKind::Invalid {
        what: "API key file",
        reason,
    }
}

/// The columns of a key file's header line (AWS's names, any case) and the key column; errors
/// that still let rows be read (a column twice) come back with them.
#[allow(clippy::type_complexity)]
fn columns(
    path: &FsPath,
    headers: &csv::StringRecord,
    warnings: &mut Vec<String>,
) -> Result<(Columns, usize, Vec<ConfigError>), Vec<ConfigError>> {
    let at = |line: u64, kind: ErrorKind| at(path, line, kind);
    let mut cols = Columns::default();
    let mut errors = Vec::new();
    let mut ignored = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        let slot = match h.to_ascii_lowercase().as_str() {
            "name" => &mut cols.name,
            "key" => &mut cols.key,
            "description" => &mut cols.description,
            "enabled" => &mut cols.enabled,
            "usageplanids" => &mut cols.plans,
            "id" => &mut cols.id,
            "customerid" => &mut cols.customer,
            // AWS ignores columns it does not know. Named by position only: in a file without
            // a header line, the first line is a key row, and its "header" cells are values.
            _ => {
                ignored.push((i + 1).to_string());
                continue;
            }
        };
        if slot.is_some() {
            errors.push(at(1, invalid(format!("column `{h}` appears twice"))));
        }
        *slot = Some(i);
    }
    let (Some(key_col), Some(_)) = (cols.key, cols.name) else {
        let missing = match (cols.key, cols.name) {
            (None, None) => "no `Name` and no `Key` column",
            (None, Some(_)) => "no `Key` column",
            _ => "no `Name` column",
        };
        errors.push(at(
            1,
            invalid(format!(
                "{missing}; AWS's key file format requires both (is the header line missing?)"
            )),
        ));
        return Err(errors);
    };
    if !ignored.is_empty() {
        warnings.push(format!(
            "{}: column(s) {} of the header line are not key file columns; ignored, as AWS does",
            path.display(),
            ignored.join(", ")
        ));
    }
    Ok((cols, key_col, errors))
}

/// One row of a key file (its cells, at `line`) as a key entry.
fn row(
    cells: &[String],
    cols: &Columns,
    key_col: usize,
    (file, line): (&Arc<std::path::PathBuf>, u64),
    errors: &mut Vec<ConfigError>,
) -> KeyEntry {
    let get = |c: Option<usize>| {
        c.and_then(|i| cells.get(i))
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    };
    let value = cells.get(key_col).map_or("", String::as_str);
    let hash = check_value(value).map(|()| hash_key(value));
    let id = match get(cols.id) {
        Some(id) => id.to_owned(),
        None => match &hash {
            Ok(h) => format!("k-{}", &hex::encode(h)[..12]),
            Err(_) => format!("line-{line}"),
        },
    };
    let enabled = match get(cols.enabled).map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(_) => {
            errors.push(at(
                file,
                line,
                invalid("the Enabled column must be TRUE or FALSE".to_owned()),
            ));
            true
        }
    };
    let plans = get(cols.plans)
        .map(|s| {
            // `"p1,p2"` arrives unquoted from the CSV reader; `'p1,p2'` with its quotes.
            let s = s
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .unwrap_or(s);
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    KeyEntry {
        id,
        name: get(cols.name).map(str::to_owned),
        hash,
        enabled,
        customer_id: get(cols.customer).map(str::to_owned),
        plans,
        origin: Origin::Csv {
            file: file.clone(),
            line,
        },
    }
}

/// A CSV error's description without any field content.
fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "a field is not valid UTF-8".to_owned(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("record has {len} fields, the header has {expected_len}"),
        csv::ErrorKind::Io(err) => err.to_string(),
        _ => "malformed CSV".to_owned(),
    }
}
